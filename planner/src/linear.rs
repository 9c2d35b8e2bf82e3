//! A small linear-programming layer over good_lp that keeps the model's data: variables with
//! bounds and names, rows in named constraint groups, the objective. Keeping the data lets the
//! planner check every answer independently of the solver (residuals, bounds, complementary
//! slackness), name the constraint group behind an infeasibility, and report duals by group.
//!
//! [`solve`] is the one place that picks a solver.

use std::ops::{Add, AddAssign, Mul, Sub};

use good_lp::solvers::{DualValues, SolutionWithDual};
use good_lp::{Expression, ProblemVariables, Solution, Solver, SolverModel, variable};
use serde::Serialize;

use crate::{Error, Result};

/// Index of a variable in a [`LinearProgram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct VariableId(pub usize);

/// Index of a row in a [`LinearProgram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RowId(pub usize);

/// A sparse linear expression Σ coefficient·variable + constant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinearExpression {
    /// The terms; a variable may appear more than once (they add up).
    pub terms: Vec<(VariableId, f64)>,
    /// The constant.
    pub constant: f64,
}

impl LinearExpression {
    /// The empty expression, 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `coefficient · variable`.
    pub fn add_term(&mut self, variable: VariableId, coefficient: f64) {
        if coefficient != 0.0 {
            self.terms.push((variable, coefficient));
        }
    }

    /// Value at `values`.
    pub fn evaluate(&self, values: &[f64]) -> f64 {
        self.constant
            + self
                .terms
                .iter()
                .map(|(variable, coefficient)| coefficient * values[variable.0])
                .sum::<f64>()
    }

    /// Σ |coefficient · value| + |constant|, the scale of the expression at `values`.
    fn magnitude(&self, values: &[f64]) -> f64 {
        self.constant.abs()
            + self
                .terms
                .iter()
                .map(|(variable, coefficient)| (coefficient * values[variable.0]).abs())
                .sum::<f64>()
    }
}

impl From<VariableId> for LinearExpression {
    fn from(variable: VariableId) -> Self {
        Self {
            terms: vec![(variable, 1.0)],
            constant: 0.0,
        }
    }
}

impl Add for LinearExpression {
    type Output = Self;
    fn add(mut self, other: Self) -> Self {
        self += other;
        self
    }
}

impl AddAssign for LinearExpression {
    fn add_assign(&mut self, other: Self) {
        self.terms.extend(other.terms);
        self.constant += other.constant;
    }
}

impl Sub for LinearExpression {
    type Output = Self;
    fn sub(self, other: Self) -> Self {
        self + other * -1.0
    }
}

impl Mul<f64> for LinearExpression {
    type Output = Self;
    fn mul(mut self, factor: f64) -> Self {
        for (_, coefficient) in &mut self.terms {
            *coefficient *= factor;
        }
        self.constant *= factor;
        self
    }
}

impl Mul<LinearExpression> for f64 {
    type Output = LinearExpression;
    fn mul(self, expression: LinearExpression) -> LinearExpression {
        expression * self
    }
}

impl Mul<VariableId> for f64 {
    type Output = LinearExpression;
    fn mul(self, variable: VariableId) -> LinearExpression {
        LinearExpression {
            terms: vec![(variable, self)],
            constant: 0.0,
        }
    }
}

/// A family of rows that mean one thing (e.g. "power", "capex budget"), so that duals,
/// binding constraints and infeasibilities are reported by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ConstraintGroup {
    /// Name shown to users.
    pub name: &'static str,
    /// Whether the group is a limit or target that can be relaxed to diagnose an
    /// infeasibility (a budget, a power limit), rather than an accounting identity.
    pub relaxable: bool,
    /// What relaxing it means, shown in diagnoses.
    pub remedy: &'static str,
}

/// Direction of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Sense {
    /// expression ≤ rhs
    AtMost,
    /// expression ≥ rhs
    AtLeast,
    /// expression = rhs
    Equal,
}

/// One constraint row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its group.
    pub group: ConstraintGroup,
    /// Which member of the group (`H100 2025Q3`).
    pub label: String,
    /// Left-hand side (its constant is moved to the right-hand side when solving).
    pub expression: LinearExpression,
    /// Direction.
    pub sense: Sense,
    /// Right-hand side.
    pub rhs: f64,
}

/// A variable's name and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableInfo {
    /// Name for diagnostics.
    pub name: String,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound (may be infinite).
    pub upper: f64,
}

/// Whether the objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    /// Minimise.
    Minimise,
    /// Maximise.
    Maximise,
}

/// The model data, independent of any solver.
#[derive(Debug, Clone)]
pub struct LinearProgram {
    /// Variables.
    pub variables: Vec<VariableInfo>,
    /// Rows.
    pub rows: Vec<Row>,
    /// Objective.
    pub objective: LinearExpression,
    /// Its direction.
    pub direction: Direction,
}

/// Which solver to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum SolverChoice {
    /// Clarabel, pure-Rust interior point; reports duals. The default.
    #[default]
    Clarabel,
    /// microlp, pure-Rust simplex; no duals.
    Microlp,
    /// HiGHS (C++), behind the `highs` feature; reports duals.
    Highs,
}

impl SolverChoice {
    /// Name for users.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clarabel => "clarabel",
            Self::Microlp => "microlp",
            Self::Highs => "highs",
        }
    }

    /// Parses `clarabel`, `microlp` or `highs`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "clarabel" => Ok(Self::Clarabel),
            "microlp" => Ok(Self::Microlp),
            "highs" => Ok(Self::Highs),
            other => Err(Error::SolverUnavailable(
                other.into(),
                "use clarabel, microlp or highs".into(),
            )),
        }
    }
}

/// A solution: values, duals (when the solver gives them) and the objective at the values.
#[derive(Debug, Clone, Serialize)]
pub struct LinearSolution {
    /// Which solver found it.
    pub solver: SolverChoice,
    /// Variable values, by index.
    pub values: Vec<f64>,
    /// Row duals, by index: change of the objective per unit increase of the row's
    /// right-hand side (good_lp's convention). `None` for solvers without duals.
    pub duals: Option<Vec<f64>>,
    /// Objective at `values`.
    pub objective: f64,
}

/// One constraint group that had to be relaxed for an infeasible program to become feasible.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Relaxation {
    /// Group name.
    pub group: &'static str,
    /// What relaxing it means.
    pub remedy: &'static str,
    /// Total violation needed, in the rows' units.
    pub amount: f64,
    /// Rows that needed it.
    pub rows: usize,
    /// The row that needed most.
    pub worst_row: String,
}

impl LinearProgram {
    /// An empty program.
    pub fn new(direction: Direction) -> Self {
        Self {
            variables: Vec::new(),
            rows: Vec::new(),
            objective: LinearExpression::new(),
            direction,
        }
    }

    /// Adds a variable with bounds.
    pub fn add_variable(&mut self, name: impl Into<String>, lower: f64, upper: f64) -> VariableId {
        self.variables.push(VariableInfo {
            name: name.into(),
            lower,
            upper,
        });
        VariableId(self.variables.len() - 1)
    }

    /// Adds a row `expression sense rhs` to `group`.
    pub fn add_constraint(
        &mut self,
        group: ConstraintGroup,
        label: impl Into<String>,
        expression: LinearExpression,
        sense: Sense,
        rhs: f64,
    ) -> RowId {
        let rhs = rhs - expression.constant;
        let expression = LinearExpression {
            terms: expression.terms,
            constant: 0.0,
        };
        self.rows.push(Row {
            group,
            label: label.into(),
            expression,
            sense,
            rhs,
        });
        RowId(self.rows.len() - 1)
    }

    /// Number of non-zero coefficients in the rows.
    pub fn nonzeros(&self) -> usize {
        self.rows.iter().map(|row| row.expression.terms.len()).sum()
    }

    fn to_good_lp(&self) -> (ProblemVariables, Vec<good_lp::Variable>, Expression) {
        let mut problem = ProblemVariables::new();
        let handles: Vec<good_lp::Variable> = self
            .variables
            .iter()
            .map(|info| {
                let mut definition = variable();
                if info.lower.is_finite() {
                    definition = definition.min(info.lower);
                }
                if info.upper.is_finite() {
                    definition = definition.max(info.upper);
                }
                problem.add(definition)
            })
            .collect();
        let objective = expression(&self.objective, &handles);
        (problem, handles, objective)
    }

    fn constraints(&self, handles: &[good_lp::Variable]) -> Vec<good_lp::Constraint> {
        self.rows
            .iter()
            .map(|row| {
                let left = expression(&row.expression, handles);
                match row.sense {
                    Sense::AtMost => left.leq(row.rhs),
                    Sense::AtLeast => left.geq(row.rhs),
                    Sense::Equal => left.eq(row.rhs),
                }
            })
            .collect()
    }

    fn build<S: Solver>(
        &self,
        solver: S,
    ) -> (
        S::Model,
        Vec<good_lp::Variable>,
        Vec<good_lp::constraint::ConstraintReference>,
    ) {
        let (problem, handles, objective) = self.to_good_lp();
        let unsolved = match self.direction {
            Direction::Minimise => problem.minimise(objective),
            Direction::Maximise => problem.maximise(objective),
        };
        let mut model = unsolved.using(solver);
        let references = self
            .constraints(&handles)
            .into_iter()
            .map(|constraint| model.add_constraint(constraint))
            .collect();
        (model, handles, references)
    }

    fn solve_with_duals<S>(&self, solver: S, choice: SolverChoice) -> Result<LinearSolution>
    where
        S: Solver,
        for<'a> <<S as Solver>::Model as SolverModel>::Solution: SolutionWithDual<'a>,
    {
        let (model, handles, references) = self.build(solver);
        let mut solution = model
            .solve()
            .map_err(|error| solve_error(choice, &error.to_string()))?;
        let values = self.polish(
            handles
                .iter()
                .map(|handle| solution.value(*handle))
                .collect(),
        );
        let dual_values = solution.compute_dual();
        let duals = references
            .iter()
            .map(|reference| dual_values.dual(reference.clone()))
            .collect();
        let objective = self.objective.evaluate(&values);
        Ok(LinearSolution {
            solver: choice,
            values,
            duals: Some(duals),
            objective,
        })
    }

    fn solve_without_duals<S: Solver>(
        &self,
        solver: S,
        choice: SolverChoice,
    ) -> Result<LinearSolution> {
        let (model, handles, _) = self.build(solver);
        let solution = model
            .solve()
            .map_err(|error| solve_error(choice, &error.to_string()))?;
        let values = self.polish(
            handles
                .iter()
                .map(|handle| solution.value(*handle))
                .collect(),
        );
        let objective = self.objective.evaluate(&values);
        Ok(LinearSolution {
            solver: choice,
            values,
            duals: None,
            objective,
        })
    }

    /// Moves values that an interior-point solver left a hair outside their bounds (within
    /// 1e-4 of the bound's scale) onto the bound. Larger violations are left for
    /// [`Self::check`] to refuse; the rows are checked after this, so polishing cannot hide a
    /// real violation.
    fn polish(&self, mut values: Vec<f64>) -> Vec<f64> {
        for (value, info) in values.iter_mut().zip(&self.variables) {
            if *value < info.lower && info.lower - *value <= 1e-4 * (1.0 + info.lower.abs()) {
                *value = info.lower;
            }
            if *value > info.upper && *value - info.upper <= 1e-4 * (1.0 + info.upper.abs()) {
                *value = info.upper;
            }
        }
        values
    }

    /// Solves with the chosen solver, checks the answer independently ([`Self::check`]) and
    /// refuses it if the check fails. An infeasible program is diagnosed: the error names the
    /// constraint groups that must be relaxed.
    pub fn solve(&self, choice: SolverChoice) -> Result<LinearSolution> {
        let solution = self.solve_unchecked(choice);
        match solution {
            Ok(solution) => {
                self.check(&solution)?;
                Ok(solution)
            }
            Err(Error::Solve { message, .. }) if message.to_lowercase().contains("infeasible") => {
                Err(self.diagnose_infeasibility(choice))
            }
            Err(other) => Err(other),
        }
    }

    fn solve_unchecked(&self, choice: SolverChoice) -> Result<LinearSolution> {
        match choice {
            SolverChoice::Clarabel => self.solve_with_duals(good_lp::clarabel, choice),
            SolverChoice::Microlp => self.solve_without_duals(good_lp::microlp, choice),
            #[cfg(feature = "highs")]
            SolverChoice::Highs => self.solve_with_duals(good_lp::highs, choice),
            #[cfg(not(feature = "highs"))]
            SolverChoice::Highs => Err(Error::SolverUnavailable(
                "highs".into(),
                "rebuild with `--features highs` (needs cmake, a C++ compiler and libclang)".into(),
            )),
        }
    }

    /// Checks a solution against the model data, not the solver: bounds and row residuals
    /// (relative tolerance 1e-6 of each row's scale plus 1e-5 in the model's units), finite values, and — when duals are
    /// given — their signs and complementary slackness.
    pub fn check(&self, solution: &LinearSolution) -> Result<()> {
        let solver = solution.solver.name();
        let refuse = |problem: String| Error::CheckSolution { solver, problem };
        let tolerance = 1e-6;
        // Absolute slack in the model's scaled units (1e-5 M GPU-hours = 10 GPU-hours, $10,
        // 10 W): far below anything a plan reports, above interior-point round-off.
        let absolute = 1e-5;
        if solution.values.len() != self.variables.len() {
            return Err(refuse(format!(
                "{} values for {} variables",
                solution.values.len(),
                self.variables.len()
            )));
        }
        for (info, value) in self.variables.iter().zip(&solution.values) {
            if !value.is_finite() {
                return Err(refuse(format!("variable {} is {value}", info.name)));
            }
            let scale = absolute + tolerance * (1.0 + value.abs());
            if *value < info.lower - scale || *value > info.upper + scale {
                return Err(refuse(format!(
                    "variable {} = {value} outside [{}, {}]",
                    info.name, info.lower, info.upper
                )));
            }
        }
        let sign = match self.direction {
            Direction::Minimise => 1.0,
            Direction::Maximise => -1.0,
        };
        let largest_dual = solution.duals.as_ref().map_or(0.0, |duals| {
            duals
                .iter()
                .fold(0.0, |max, dual| f64::max(max, dual.abs()))
        });
        for (index, row) in self.rows.iter().enumerate() {
            let activity = row.expression.evaluate(&solution.values);
            let scale = 1.0 + row.rhs.abs() + row.expression.magnitude(&solution.values);
            let violation = match row.sense {
                Sense::AtMost => activity - row.rhs,
                Sense::AtLeast => row.rhs - activity,
                Sense::Equal => (activity - row.rhs).abs(),
            };
            if violation > absolute + tolerance * scale {
                return Err(refuse(format!(
                    "{} row `{}` violated by {violation:.3e} (activity {activity}, rhs {})",
                    row.group.name, row.label, row.rhs
                )));
            }
            if let Some(duals) = &solution.duals {
                let dual = duals[index];
                if !dual.is_finite() {
                    return Err(refuse(format!(
                        "dual of {} row `{}` is {dual}",
                        row.group.name, row.label
                    )));
                }
                let dual_tolerance = 1e-5 * (1.0 + largest_dual);
                // Relaxing a ≤ row (raising its rhs) can only help: the objective falls
                // (minimise) or rises (maximise); the reverse for ≥ rows.
                let wrong_sign = match row.sense {
                    Sense::AtMost => sign * dual > dual_tolerance,
                    Sense::AtLeast => sign * dual < -dual_tolerance,
                    Sense::Equal => false,
                };
                if wrong_sign {
                    return Err(refuse(format!(
                        "dual {dual} of {} row `{}` has the wrong sign",
                        row.group.name, row.label
                    )));
                }
                let slack = (activity - row.rhs).abs();
                if row.sense != Sense::Equal && dual.abs() > dual_tolerance && slack > 1e-4 * scale
                {
                    return Err(refuse(format!(
                        "{} row `{}` has slack {slack:.3e} but dual {dual:.3e} (complementary slackness)",
                        row.group.name, row.label
                    )));
                }
            }
        }
        let objective = self.objective.evaluate(&solution.values);
        if !objective.is_finite()
            || (objective - solution.objective).abs() > tolerance * (1.0 + objective.abs())
        {
            return Err(refuse(format!(
                "objective {} does not match the model's {objective}",
                solution.objective
            )));
        }
        Ok(())
    }

    /// Finds which relaxable constraint groups make the program infeasible: every relaxable
    /// row gets a non-negative slack, the total slack (each row scaled by its right-hand side)
    /// is minimised, and the groups whose slack is needed are reported, worst first.
    pub fn diagnose_infeasibility(&self, choice: SolverChoice) -> Error {
        let mut elastic = LinearProgram::new(Direction::Minimise);
        elastic.variables = self.variables.clone();
        let mut slacks = Vec::new();
        for (index, row) in self.rows.iter().enumerate() {
            let mut expression = row.expression.clone();
            if row.group.relaxable {
                let weight = 1.0 / (1.0 + row.rhs.abs());
                if matches!(row.sense, Sense::AtMost | Sense::Equal) {
                    let slack =
                        elastic.add_variable(format!("relax {}", row.label), 0.0, f64::INFINITY);
                    expression.add_term(slack, -1.0);
                    elastic.objective.add_term(slack, weight);
                    slacks.push((index, slack));
                }
                if matches!(row.sense, Sense::AtLeast | Sense::Equal) {
                    let slack =
                        elastic.add_variable(format!("relax {}", row.label), 0.0, f64::INFINITY);
                    expression.add_term(slack, 1.0);
                    elastic.objective.add_term(slack, weight);
                    slacks.push((index, slack));
                }
            }
            elastic.add_constraint(row.group, row.label.clone(), expression, row.sense, row.rhs);
        }
        let solution = match elastic.solve_unchecked(choice) {
            Ok(solution) => solution,
            Err(_) => {
                return Error::Infeasible {
                    groups: "even with every budget, limit and target relaxed (an accounting identity or bound conflicts)".into(),
                    diagnosis: Vec::new(),
                };
            }
        };
        let mut relaxations: Vec<Relaxation> = Vec::new();
        for (row_index, slack) in slacks {
            let row = &self.rows[row_index];
            // Only a row the relaxed solution actually violates needs relaxing (a slack on a
            // row far from its limit is solver noise, not a cause).
            let activity = row.expression.evaluate(&solution.values);
            let violation = match row.sense {
                Sense::AtMost => activity - row.rhs,
                Sense::AtLeast => row.rhs - activity,
                Sense::Equal => (activity - row.rhs).abs(),
            };
            let amount = violation.min(solution.values[slack.0]);
            if amount <= 1e-6 * (1.0 + row.rhs.abs()) {
                continue;
            }
            match relaxations
                .iter_mut()
                .find(|relaxation| relaxation.group == row.group.name)
            {
                Some(relaxation) => {
                    relaxation.rows += 1;
                    relaxation.amount += amount;
                }
                None => relaxations.push(Relaxation {
                    group: row.group.name,
                    remedy: row.group.remedy,
                    amount,
                    rows: 1,
                    worst_row: row.label.clone(),
                }),
            }
        }
        relaxations.sort_by(|left, right| right.amount.total_cmp(&left.amount));
        let groups = if relaxations.is_empty() {
            "the solver reported infeasibility but relaxing limits found none needed; try another solver".to_string()
        } else {
            relaxations
                .iter()
                .map(|relaxation| {
                    format!(
                        "`{}` short by {:.4} over {} row(s), worst `{}` ({})",
                        relaxation.group,
                        relaxation.amount,
                        relaxation.rows,
                        relaxation.worst_row,
                        relaxation.remedy
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        Error::Infeasible {
            groups,
            diagnosis: relaxations,
        }
    }
}

fn expression(linear: &LinearExpression, handles: &[good_lp::Variable]) -> Expression {
    let mut result = Expression::with_capacity(linear.terms.len());
    for (variable, coefficient) in &linear.terms {
        result.add_mul(*coefficient, handles[variable.0]);
    }
    result + linear.constant
}

fn solve_error(choice: SolverChoice, message: &str) -> Error {
    Error::Solve {
        solver: choice.name(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: ConstraintGroup = ConstraintGroup {
        name: "limit",
        relaxable: true,
        remedy: "raise the limit",
    };
    const TARGET: ConstraintGroup = ConstraintGroup {
        name: "target",
        relaxable: true,
        remedy: "lower the target",
    };

    /// max 3x + 2y s.t. x + y ≤ 4, x + 3y ≤ 7, x ≤ 3. By hand: vertices (3, 1) → 11,
    /// (2.5, 1.5) → 10.5, (0, 7/3) → 4.67, so the optimum is x = 3, y = 1, objective 11, with
    /// x + 3y = 6 < 7 slack; duals: row 1 = 2 (y's price), row 2 = 0, x ≤ 3 = 1 (3 − 2).
    fn small_program() -> (LinearProgram, [RowId; 3]) {
        let mut program = LinearProgram::new(Direction::Maximise);
        let x = program.add_variable("x", 0.0, f64::INFINITY);
        let y = program.add_variable("y", 0.0, f64::INFINITY);
        program.objective = 3.0 * x + 2.0 * y;
        let first = program.add_constraint(
            LIMIT,
            "x+y",
            LinearExpression::from(x) + y.into(),
            Sense::AtMost,
            4.0,
        );
        let second = program.add_constraint(
            LIMIT,
            "x+3y",
            LinearExpression::from(x) + 3.0 * y,
            Sense::AtMost,
            7.0,
        );
        let third = program.add_constraint(LIMIT, "x", x.into(), Sense::AtMost, 3.0);
        (program, [first, second, third])
    }

    #[test]
    fn small_program_has_hand_checked_optimum_and_duals() {
        let (program, rows) = small_program();
        let solution = program.solve(SolverChoice::Clarabel).unwrap();
        assert!((solution.objective - 11.0).abs() < 1e-6);
        assert!((solution.values[0] - 3.0).abs() < 1e-6);
        assert!((solution.values[1] - 1.0).abs() < 1e-6);
        let duals = solution.duals.unwrap();
        assert!((duals[rows[0].0] - 2.0).abs() < 1e-5, "{duals:?}");
        assert!(duals[rows[1].0].abs() < 1e-5, "{duals:?}");
        assert!((duals[rows[2].0] - 1.0).abs() < 1e-5, "{duals:?}");
    }

    #[test]
    fn microlp_agrees_on_the_optimum() {
        let (program, _) = small_program();
        let solution = program.solve(SolverChoice::Microlp).unwrap();
        assert!((solution.objective - 11.0).abs() < 1e-6);
        assert!(solution.duals.is_none());
    }

    #[test]
    fn the_check_refuses_a_wrong_answer() {
        let (program, _) = small_program();
        let mut solution = program.solve(SolverChoice::Clarabel).unwrap();
        solution.values[1] = 2.0;
        solution.objective = program.objective.evaluate(&solution.values);
        let message = program.check(&solution).unwrap_err().to_string();
        assert!(message.contains("x+y"), "{message}");
        let mut solution = program.solve(SolverChoice::Clarabel).unwrap();
        solution.objective += 1.0;
        assert!(program.check(&solution).is_err());
    }

    #[test]
    fn polishing_moves_only_hairline_bound_violations() {
        let (program, _) = small_program();
        assert_eq!(program.polish(vec![-1e-7, 1.0]), vec![0.0, 1.0]);
        assert_eq!(program.polish(vec![-0.5, 1.0]), vec![-0.5, 1.0]);
        let solution = LinearSolution {
            solver: SolverChoice::Clarabel,
            values: vec![-0.5, 1.0],
            duals: None,
            objective: 0.5,
        };
        assert!(program.check(&solution).is_err());
    }

    #[test]
    fn infeasibility_names_the_group() {
        let (mut program, _) = small_program();
        let x = VariableId(0);
        let y = VariableId(1);
        program.add_constraint(
            TARGET,
            "x+y at least 5",
            LinearExpression::from(x) + y.into(),
            Sense::AtLeast,
            5.0,
        );
        match program.solve(SolverChoice::Clarabel) {
            Err(Error::Infeasible { diagnosis, groups }) => {
                assert!(!diagnosis.is_empty(), "{groups}");
                let total: f64 = diagnosis.iter().map(|relaxation| relaxation.amount).sum();
                assert!((total - 1.0).abs() < 1e-4, "{groups}");
            }
            other => panic!("expected infeasible, got {other:?}"),
        }
    }

    #[cfg(feature = "highs")]
    #[test]
    fn highs_agrees_with_clarabel_on_duals() {
        let (program, _) = small_program();
        let clarabel = program.solve(SolverChoice::Clarabel).unwrap();
        let highs = program.solve(SolverChoice::Highs).unwrap();
        assert!((clarabel.objective - highs.objective).abs() < 1e-6);
        for (left, right) in clarabel.duals.unwrap().iter().zip(highs.duals.unwrap()) {
            assert!((left - right).abs() < 1e-5);
        }
    }
}
