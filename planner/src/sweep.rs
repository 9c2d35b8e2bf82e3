//! Many solves of one scenario: parameter sweeps (`path=lo..hi:steps`, solved in parallel on
//! worker threads, reporting progress through a callback so the binary can draw a bar), the
//! quality-vs-cost frontier, and the capex shortfall used by `compare`.

use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::report::StageHours;
use crate::scenario::{Objective, PerPeriod, Scenario};
use crate::{Error, Result, SolverChoice, plan};

/// One swept parameter: a path into the scenario and an evenly spaced range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vary {
    /// Dotted path: `economics.capex_budget_musd`, `gpus.H100.price_usd` (arrays by index or
    /// by `name`), `services[1].demand.elasticity`.
    pub path: String,
    /// First value.
    pub low: f64,
    /// Last value.
    pub high: f64,
    /// Number of values (≥ 1).
    pub steps: usize,
}

impl FromStr for Vary {
    type Err = Error;

    /// Parses `path=lo..hi:steps`.
    fn from_str(spec: &str) -> Result<Self> {
        let problem = |problem: &str| Error::SweepSpecification {
            spec: spec.into(),
            problem: problem.into(),
        };
        let (path, range) = spec
            .split_once('=')
            .ok_or_else(|| problem("expected path=lo..hi:steps"))?;
        let (bounds, steps) = range
            .split_once(':')
            .ok_or_else(|| problem("missing `:steps` after the range"))?;
        let (low, high) = bounds
            .split_once("..")
            .ok_or_else(|| problem("expected `lo..hi`"))?;
        let number = |text: &str| {
            text.trim()
                .parse::<f64>()
                .map_err(|_| problem(&format!("`{text}` is not a number")))
        };
        let steps: usize = steps
            .trim()
            .parse()
            .map_err(|_| problem("steps must be a whole number ≥ 1"))?;
        if steps == 0 {
            return Err(problem("steps must be ≥ 1"));
        }
        Ok(Self {
            path: path.trim().to_string(),
            low: number(low)?,
            high: number(high)?,
            steps,
        })
    }
}

impl Vary {
    /// The values of this parameter.
    pub fn values(&self) -> Vec<f64> {
        if self.steps == 1 {
            return vec![self.low];
        }
        (0..self.steps)
            .map(|index| self.low + (self.high - self.low) * index as f64 / (self.steps - 1) as f64)
            .collect()
    }
}

/// A copy of `scenario` with the number at `path` set to `value`, validated.
pub fn apply(scenario: &Scenario, path: &str, value: f64) -> Result<Scenario> {
    let problem = |problem: String| Error::SweepSpecification {
        spec: path.into(),
        problem,
    };
    let mut tree = serde_json::to_value(scenario).map_err(Error::SerialisePlan)?;
    let mut node = &mut tree;
    let segments: Vec<String> = path
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|part| !part.is_empty())
        .map(String::from)
        .collect();
    for segment in &segments {
        node = match node {
            Value::Object(map) => {
                if !map.contains_key(segment.as_str()) {
                    let keys: Vec<&String> = map.keys().collect();
                    return Err(problem(format!(
                        "no field `{segment}`; fields here: {keys:?}"
                    )));
                }
                map.get_mut(segment.as_str())
                    .ok_or_else(|| problem(format!("no field `{segment}`")))?
            }
            Value::Array(items) => {
                let index = match segment.parse::<usize>() {
                    Ok(index) => index,
                    Err(_) => items
                        .iter()
                        .position(|item| {
                            item.get("name").and_then(Value::as_str) == Some(segment.as_str())
                        })
                        .ok_or_else(|| problem(format!("no element named `{segment}`")))?,
                };
                let length = items.len();
                items
                    .get_mut(index)
                    .ok_or_else(|| problem(format!("index {index} out of {length}")))?
            }
            _ => {
                return Err(problem(format!(
                    "`{segment}` is below a number; the path is too long"
                )));
            }
        };
    }
    match node {
        Value::Number(_) | Value::Null | Value::Array(_) => {
            *node = serde_json::Number::from_f64(value)
                .map(Value::Number)
                .ok_or_else(|| problem(format!("{value} is not finite")))?;
        }
        other => return Err(problem(format!("the path leads to {other}, not a number"))),
    }
    let changed: Scenario =
        serde_json::from_value(tree).map_err(|error| problem(error.to_string()))?;
    changed.validate()?;
    Ok(changed)
}

/// What a sweep keeps of each solve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSummary {
    /// Objective, $M.
    pub objective_musd: f64,
    /// Capex spent, $M.
    pub capex_spent_musd: f64,
    /// Rental, $M.
    pub rent_musd: f64,
    /// GPU-hours by stage, millions.
    pub hours: StageHours,
    /// Queries served, billions.
    pub queries_b: f64,
    /// Peak MW.
    pub peak_mw: f64,
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// (path, value) for each swept parameter.
    pub values: Vec<(String, f64)>,
    /// The summary, or why the point failed (e.g. infeasible, with the group named).
    pub outcome: std::result::Result<SweepSummary, String>,
}

/// Every combination of the swept values (the Cartesian product), in order.
pub fn grid(varies: &[Vary]) -> Vec<Vec<(String, f64)>> {
    let mut points: Vec<Vec<(String, f64)>> = vec![Vec::new()];
    for vary in varies {
        points = points
            .into_iter()
            .flat_map(|point| {
                vary.values().into_iter().map(move |value| {
                    let mut next = point.clone();
                    next.push((vary.path.clone(), value));
                    next
                })
            })
            .collect();
    }
    points
}

/// Solves every point of the grid on `threads` worker threads, calling `progress` after each.
/// A point that fails keeps its error; a bad path fails the whole sweep before any solve.
pub fn run(
    scenario: &Scenario,
    varies: &[Vary],
    solver: SolverChoice,
    threads: usize,
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<SweepPoint>> {
    for vary in varies {
        apply(scenario, &vary.path, vary.low)?;
    }
    let points = grid(varies);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SweepPoint>>> = Mutex::new(vec![None; points.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(values) = points.get(index) else {
                        break;
                    };
                    let outcome =
                        solve_point(scenario, values, solver).map_err(|error| error.to_string());
                    if let Ok(mut results) = results.lock() {
                        results[index] = Some(SweepPoint {
                            values: values.clone(),
                            outcome,
                        });
                    }
                    progress();
                }
            });
        }
    });
    let results = results.into_inner().map_err(|_| Error::Solve {
        solver: solver.name(),
        message: "a sweep worker panicked".into(),
    })?;
    Ok(results.into_iter().flatten().collect())
}

fn solve_point(
    scenario: &Scenario,
    values: &[(String, f64)],
    solver: SolverChoice,
) -> Result<SweepSummary> {
    let mut changed = scenario.clone();
    for (path, value) in values {
        changed = apply(&changed, path, *value)?;
    }
    let plan = plan(&changed, solver)?;
    Ok(SweepSummary {
        objective_musd: plan.objective_musd,
        capex_spent_musd: plan.totals.capex_spent_musd,
        rent_musd: plan.totals.rent_musd,
        hours: plan.totals.hours,
        queries_b: plan.totals.queries_b,
        peak_mw: plan.totals.peak_mw,
    })
}

/// One point of the quality-vs-cost frontier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontierPoint {
    /// Position along the frontier, 0 (no floor) to 1 (best level everywhere).
    pub min_accuracy: f64,
    /// Query-weighted accuracy reached.
    pub accuracy: f64,
    /// Cost: the objective for `min_cost`; total spend (capex + rent + electricity) for
    /// `max_value`, $M.
    pub cost_musd: f64,
}

/// The quality-vs-cost frontier: raises every multi-level service's minimum accuracy from
/// its lowest level to (just under) its best in `points` steps and re-plans. Infeasible
/// points (the fleet cannot afford that accuracy) end the frontier.
pub fn frontier(scenario: &Scenario, solver: SolverChoice, points: usize) -> Vec<FrontierPoint> {
    let points = points.max(2);
    let mut frontier = Vec::new();
    for index in 0..points {
        let position = index as f64 / (points - 1) as f64;
        let mut changed = scenario.clone();
        for service in &mut changed.services {
            let levels = service.levels();
            let low = levels
                .iter()
                .map(|level| level.accuracy)
                .fold(f64::INFINITY, f64::min);
            let high = levels
                .iter()
                .map(|level| level.accuracy)
                .fold(f64::NEG_INFINITY, f64::max);
            if high > low {
                service.min_accuracy = Some(low + (high - low) * position * 0.999);
            }
        }
        let Ok(plan) = plan(&changed, solver) else {
            break;
        };
        let accuracy = if plan.totals.queries_b > 0.0 {
            plan.services
                .iter()
                .map(|service| service.mean_accuracy * service.queries_b)
                .sum::<f64>()
                / plan.totals.queries_b
        } else {
            0.0
        };
        let cost_musd = match scenario.objective {
            Objective::MinCost => plan.objective_musd,
            Objective::MaxValue => {
                plan.totals.capex_spent_musd
                    + plan.totals.rent_musd
                    + plan.totals.energy_musd
                    + plan.totals.operations_musd
            }
        };
        frontier.push(FrontierPoint {
            min_accuracy: position,
            accuracy,
            cost_musd,
        });
    }
    frontier
}

/// Extra capex ($M, summed over periods) that the plan would spend if the capex budget were
/// unlimited: the part of the budget that is short.
pub fn capex_short(scenario: &Scenario, solver: SolverChoice) -> Result<f64> {
    let mut unlimited = scenario.clone();
    let periods = scenario.periods.count;
    let budgets: Vec<f64> = (0..periods)
        .map(|t| scenario.economics.capex_budget_musd.at(t))
        .collect();
    let largest = budgets.iter().copied().fold(0.0, f64::max);
    unlimited.economics.capex_budget_musd = PerPeriod::Constant((largest * 100.0).max(1e6));
    let plan = plan(&unlimited, solver)?;
    Ok(plan
        .periods
        .iter()
        .zip(&budgets)
        .map(|(period, budget)| {
            (period.capex_gpus_musd + period.capex_buildings_musd - budget).max(0.0)
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library;

    fn baseline() -> Scenario {
        Scenario::from_yaml(library::text("baseline").unwrap()).unwrap()
    }

    #[test]
    fn vary_specifications_parse_and_reject_mistakes() {
        let vary: Vary = "economics.capex_budget_musd=1000..3000:5".parse().unwrap();
        assert_eq!(vary.values(), vec![1000.0, 1500.0, 2000.0, 2500.0, 3000.0]);
        for bad in ["economics.pue", "x=1..2", "x=1:3", "x=a..2:3", "x=1..2:0"] {
            assert!(bad.parse::<Vary>().is_err(), "{bad}");
        }
    }

    #[test]
    fn apply_reaches_fields_by_index_and_by_name() {
        let scenario = baseline();
        let changed = apply(&scenario, "gpus.H100.price_usd", 20000.0).unwrap();
        assert_eq!(changed.gpus[1].price_usd, Some(20000.0));
        let changed = apply(&scenario, "services[1].demand.elasticity", 1.7).unwrap();
        assert_eq!(changed.services[1].demand.elasticity, 1.7);
        let changed = apply(&scenario, "economics.capex_budget_musd", 1234.0).unwrap();
        assert_eq!(changed.economics.capex_budget_musd.at(3), 1234.0);
        let message = apply(&scenario, "economics.pew", 1.0)
            .unwrap_err()
            .to_string();
        assert!(message.contains("pew"), "{message}");
        let message = apply(&scenario, "economics.pue", 0.5)
            .unwrap_err()
            .to_string();
        assert!(message.contains("economics.pue"), "{message}");
    }

    #[test]
    fn sweep_runs_in_parallel_and_reports_progress() {
        let scenario = baseline();
        let varies = vec![
            "economics.capex_budget_musd=2000..4000:3".parse().unwrap(),
            "gpus.H100.price_usd=20000..30000:2".parse().unwrap(),
        ];
        let done = AtomicUsize::new(0);
        let points = run(&scenario, &varies, SolverChoice::Clarabel, 2, &|| {
            done.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(points.len(), 6);
        assert_eq!(done.load(Ordering::Relaxed), 6);
        assert_eq!(
            points[0].values,
            vec![
                ("economics.capex_budget_musd".to_string(), 2000.0),
                ("gpus.H100.price_usd".to_string(), 20000.0)
            ]
        );
        // Cheaper H100s never make the min-cost plan dearer.
        for pair in points.chunks(2) {
            let (cheap, dear) = (
                pair[0].outcome.as_ref().unwrap(),
                pair[1].outcome.as_ref().unwrap(),
            );
            assert!(cheap.objective_musd <= dear.objective_musd + 1e-6 * dear.objective_musd.abs());
        }
    }
}
