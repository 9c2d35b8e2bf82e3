//! Planner runs from the dashboard: a shipped scenario (or YAML text) plus a few parameters
//! changed, solved by gpufleet-planner next to the scenario as written, so the page can show
//! the spend split of the changed plan and compare both.
//!
//! Pure and blocking: the API runs [`solve`] on a blocking thread under a time limit and a
//! one-run-at-a-time gate. Inputs are bounded here (YAML size, periods, catalogue sizes) so a
//! request cannot build an LP that runs for hours.

use std::time::{Duration, Instant};

use gpufleet_planner::scenario::PerPeriod;
use gpufleet_planner::{Plan, Scenario, SolverChoice, library};
use serde::{Deserialize, Serialize};

/// Bounds on what one run may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Largest scenario YAML, bytes.
    pub max_yaml_bytes: usize,
    /// Most periods.
    pub max_periods: usize,
    /// Most GPU types, models and services (each).
    pub max_entries: usize,
    /// Wall-clock limit of a run (both solves).
    pub time_limit: Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_yaml_bytes: 64 * 1024,
            max_periods: 40,
            max_entries: 16,
            time_limit: Duration::from_secs(60),
        }
    }
}

/// Parameters a user may change on the planner page; absent ones keep the scenario's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parameters {
    /// Capex budget per period, $M (replaces the scenario's budget in every period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capex_budget_musd: Option<f64>,
    /// Yearly discount rate, e.g. 0.08.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_rate: Option<f64>,
    /// Electricity price, $/kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub electricity_usd_per_kwh: Option<f64>,
    /// Training model-FLOP utilisation, (0, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// Multiplies every service's yearly demand growth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand_growth_scale: Option<f64>,
}

impl Parameters {
    /// Whether any parameter is set.
    #[must_use]
    pub fn any(&self) -> bool {
        self.capex_budget_musd.is_some()
            || self.discount_rate.is_some()
            || self.electricity_usd_per_kwh.is_some()
            || self.mfu.is_some()
            || self.demand_growth_scale.is_some()
    }

    /// Writes the set parameters into `scenario`; the scenario's own validation checks them
    /// afterwards, except the growth scale, checked here.
    ///
    /// # Errors
    /// [`RunError::Parameter`] for a non-finite or negative growth scale.
    pub fn apply(&self, scenario: &mut Scenario) -> Result<(), RunError> {
        if let Some(budget) = self.capex_budget_musd {
            scenario.economics.capex_budget_musd = PerPeriod::Constant(budget);
        }
        if let Some(rate) = self.discount_rate {
            scenario.economics.discount_rate = rate;
        }
        if let Some(price) = self.electricity_usd_per_kwh {
            scenario.economics.electricity_usd_per_kwh = price;
        }
        if let Some(mfu) = self.mfu {
            scenario.training.mfu = mfu;
        }
        if let Some(scale) = self.demand_growth_scale {
            if !scale.is_finite() || !(0.0..=10.0).contains(&scale) {
                return Err(RunError::Parameter {
                    field: "parameters.demandGrowthScale",
                    problem: format!("{scale} is outside 0–10; 1 keeps the scenario's growth"),
                });
            }
            for service in &mut scenario.services {
                service.demand.growth_per_year *= scale;
            }
        }
        Ok(())
    }
}

/// What the planner page posts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// A shipped scenario's name.
    #[serde(default)]
    pub scenario: Option<String>,
    /// Or a whole scenario as YAML.
    #[serde(default)]
    pub yaml: Option<String>,
    /// Parameters changed.
    #[serde(default)]
    pub parameters: Parameters,
}

/// Why a run was refused or failed; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Neither or both of `scenario` and `yaml`.
    #[error(
        "give exactly one of `scenario` (a shipped name: {names}) or `yaml` (a scenario file's text)"
    )]
    Source {
        /// Shipped names.
        names: String,
    },
    /// Unknown shipped scenario.
    #[error("`scenario` {given:?} is not shipped; use one of: {names}")]
    UnknownScenario {
        /// What was given.
        given: String,
        /// Shipped names.
        names: String,
    },
    /// A bound of [`RunLimits`] exceeded.
    #[error(
        "`{field}` is {value}, above the dashboard's limit of {limit}; run larger scenarios with `gpufleet plan run`"
    )]
    TooLarge {
        /// Which input.
        field: &'static str,
        /// Its size.
        value: usize,
        /// The limit.
        limit: usize,
    },
    /// A parameter outside its range.
    #[error("`{field}`: {problem}")]
    Parameter {
        /// Which parameter.
        field: &'static str,
        /// What is wrong and the fix.
        problem: String,
    },
    /// The scenario does not parse or validate (after the parameters were applied).
    #[error("{0}")]
    Scenario(#[source] gpufleet_planner::Error),
    /// The solve failed (infeasible, solver error).
    #[error("{0}")]
    Plan(#[source] gpufleet_planner::Error),
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// The plan with the parameters applied.
    pub plan: Plan,
    /// The plan of the scenario as written, when parameters were changed.
    pub baseline: Option<Plan>,
    /// Wall time of the solves.
    pub duration: Duration,
}

/// One line of the comparison between the scenario as written and as changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComparisonRow {
    /// Stable id (`capexSpent`).
    pub id: &'static str,
    /// Label with unit.
    pub label: &'static str,
    /// As written.
    pub baseline: f64,
    /// As changed.
    pub changed: f64,
}

/// Reads one figure of a plan.
type Figure = fn(&Plan) -> f64;

/// The figures the comparison chart shows, as written vs as changed.
#[must_use]
pub fn comparison(baseline: &Plan, changed: &Plan) -> Vec<ComparisonRow> {
    let rows: [(&'static str, &'static str, Figure); 8] = [
        ("objective", "objective, $M PV", |plan| plan.objective_musd),
        ("capexSpent", "capex spent, $M", |plan| {
            plan.totals.capex_spent_musd
        }),
        ("rent", "rental, $M", |plan| plan.totals.rent_musd),
        ("energy", "electricity, $M", |plan| plan.totals.energy_musd),
        ("operations", "operations, $M", |plan| {
            plan.totals.operations_musd
        }),
        ("pretrainingHours", "pre-training, M GPU-h", |plan| {
            plan.totals.hours.pretraining
        }),
        ("inferenceHours", "inference, M GPU-h", |plan| {
            plan.totals.hours.inference
        }),
        ("queries", "queries served, B", |plan| plan.totals.queries_b),
    ];
    rows.into_iter()
        .map(|(id, label, pick)| ComparisonRow {
            id,
            label,
            baseline: pick(baseline),
            changed: pick(changed),
        })
        .collect()
}

/// A shipped scenario with the values of the parameters the page can change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioInfo {
    /// Name.
    pub name: String,
    /// What it asks.
    pub description: String,
    /// Periods planned.
    pub periods: usize,
    /// The parameters as written (capex budget of the first period).
    pub parameters: Parameters,
}

/// Every shipped scenario that parses (all of them, by the planner's own tests).
#[must_use]
pub fn shipped_scenarios() -> Vec<ScenarioInfo> {
    library::SHIPPED
        .iter()
        .filter_map(|(_, text)| Scenario::from_yaml(text).ok())
        .map(|scenario| ScenarioInfo {
            parameters: Parameters {
                capex_budget_musd: Some(scenario.economics.capex_budget_musd.at(0)),
                discount_rate: Some(scenario.economics.discount_rate),
                electricity_usd_per_kwh: Some(scenario.economics.electricity_usd_per_kwh),
                mfu: Some(scenario.training.mfu),
                demand_growth_scale: Some(1.0),
            },
            name: scenario.name,
            description: scenario.description.trim().to_owned(),
            periods: scenario.periods.count,
        })
        .collect()
}

fn check_size(field: &'static str, value: usize, limit: usize) -> Result<(), RunError> {
    if value > limit {
        return Err(RunError::TooLarge {
            field,
            value,
            limit,
        });
    }
    Ok(())
}

/// Reads the request's scenario, applies its parameters and checks every limit.
///
/// # Errors
/// A [`RunError`] saying what to change.
pub fn prepare(request: &RunRequest, limits: &RunLimits) -> Result<(Scenario, Scenario), RunError> {
    let text = match (&request.scenario, &request.yaml) {
        (Some(name), None) => library::text(name).ok_or_else(|| RunError::UnknownScenario {
            given: name.clone(),
            names: library::names(),
        })?,
        (None, Some(yaml)) => {
            check_size("yaml", yaml.len(), limits.max_yaml_bytes)?;
            yaml.as_str()
        }
        _ => {
            return Err(RunError::Source {
                names: library::names(),
            });
        }
    };
    let written = Scenario::from_yaml(text).map_err(RunError::Scenario)?;
    check_size("periods.count", written.periods.count, limits.max_periods)?;
    check_size("gpus", written.gpus.len(), limits.max_entries)?;
    check_size("services", written.services.len(), limits.max_entries)?;
    check_size(
        "training.models",
        written.training.models.len(),
        limits.max_entries,
    )?;
    let mut changed = written.clone();
    request.parameters.apply(&mut changed)?;
    changed.validate().map_err(RunError::Scenario)?;
    Ok((written, changed))
}

/// Solves the changed scenario and, when parameters changed, the scenario as written.
///
/// # Errors
/// A [`RunError`] saying what to change.
pub fn solve(request: &RunRequest, limits: &RunLimits) -> Result<RunResult, RunError> {
    let started = Instant::now();
    let (written, changed) = prepare(request, limits)?;
    let plan = gpufleet_planner::plan(&changed, SolverChoice::Clarabel).map_err(RunError::Plan)?;
    let baseline = if request.parameters.any() {
        Some(gpufleet_planner::plan(&written, SolverChoice::Clarabel).map_err(RunError::Plan)?)
    } else {
        None
    };
    Ok(RunResult {
        scenario: changed.name,
        plan,
        baseline,
        duration: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_list_their_parameters() {
        let scenarios = shipped_scenarios();
        assert_eq!(scenarios.len(), library::SHIPPED.len());
        let baseline = scenarios
            .iter()
            .find(|scenario| scenario.name == "baseline")
            .expect("baseline");
        assert_eq!(baseline.parameters.capex_budget_musd, Some(3000.0));
        assert_eq!(baseline.periods, 12);
    }

    #[test]
    fn requests_are_checked_before_anything_is_solved() {
        let limits = RunLimits::default();
        let both = RunRequest {
            scenario: Some("baseline".into()),
            yaml: Some("name: x".into()),
            ..RunRequest::default()
        };
        assert!(matches!(
            prepare(&both, &limits),
            Err(RunError::Source { .. })
        ));
        let unknown = RunRequest {
            scenario: Some("nope".into()),
            ..RunRequest::default()
        };
        let error = prepare(&unknown, &limits).expect_err("unknown");
        assert!(error.to_string().contains("baseline"), "{error}");
        let huge = RunRequest {
            yaml: Some("#".repeat(limits.max_yaml_bytes + 1)),
            ..RunRequest::default()
        };
        assert!(matches!(
            prepare(&huge, &limits),
            Err(RunError::TooLarge { field: "yaml", .. })
        ));
        let negative_rate = RunRequest {
            scenario: Some("baseline".into()),
            parameters: Parameters {
                mfu: Some(-1.0),
                ..Parameters::default()
            },
            ..RunRequest::default()
        };
        let error = prepare(&negative_rate, &limits).expect_err("negative mfu");
        assert!(error.to_string().contains("mfu"), "{error}");
        let tight = RunLimits {
            max_periods: 4,
            ..limits
        };
        let baseline = RunRequest {
            scenario: Some("baseline".into()),
            ..RunRequest::default()
        };
        assert!(matches!(
            prepare(&baseline, &tight),
            Err(RunError::TooLarge {
                field: "periods.count",
                value: 12,
                ..
            })
        ));
    }

    #[test]
    fn parameters_change_the_plan_and_the_comparison_shows_it() {
        let request = RunRequest {
            scenario: Some("baseline".into()),
            parameters: Parameters {
                electricity_usd_per_kwh: Some(0.32),
                ..Parameters::default()
            },
            ..RunRequest::default()
        };
        let result = solve(&request, &RunLimits::default()).expect("solve");
        let baseline = result.baseline.as_ref().expect("baseline solved too");
        let rows = comparison(baseline, &result.plan);
        let energy = rows.iter().find(|row| row.id == "energy").expect("energy");
        assert!(
            energy.changed > 2.0 * energy.baseline,
            "4× the price should more than double the electricity bill: {energy:?}"
        );
    }
}
