//! Results of a solve, in the users' units, and their renderings (table, Markdown, CSV,
//! JSON, side-by-side comparison, explanation of duals).
//!
//! [`Plan::from_solution`] reads the LP's values and duals, then recomputes the objective
//! from the scenario's prices and the decisions (not from the LP's coefficients) and refuses
//! the plan if the two disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::linear::{Direction, LinearSolution, Sense};
use crate::model::{Derived, FleetModel, PricedRow};
use crate::scenario::{Objective, Scenario};
use crate::{Error, Result};

/// GPU-hours by stage, millions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageHours {
    /// Pre-training.
    pub pretraining: f64,
    /// Post-training (RL).
    pub post_training: f64,
    /// Test-time inference (including reasoning tokens).
    pub inference: f64,
}

impl StageHours {
    /// All stages.
    pub fn total(&self) -> f64 {
        self.pretraining + self.post_training + self.inference
    }
}

/// One period of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodResult {
    /// Label (`2025Q1`).
    pub label: String,
    /// Thousand GPUs bought, by type.
    pub bought: BTreeMap<String, f64>,
    /// Thousand GPUs rented, by type.
    pub rented: BTreeMap<String, f64>,
    /// Thousand GPUs owned and in service, by type.
    pub owned: BTreeMap<String, f64>,
    /// MW started.
    pub built_mw: f64,
    /// MW available.
    pub available_mw: f64,
    /// MW drawn by owned GPUs.
    pub used_mw: f64,
    /// Capex on GPUs, $M.
    pub capex_gpus_musd: f64,
    /// Capex on data-centre builds, $M.
    pub capex_buildings_musd: f64,
    /// Rental, $M.
    pub rent_musd: f64,
    /// Electricity, $M.
    pub energy_musd: f64,
    /// Running cost of used GPU-hours, $M.
    pub operations_musd: f64,
    /// Straight-line depreciation of owned GPUs, $M.
    pub depreciation_musd: f64,
    /// GPU-hours used by stage, millions.
    pub hours: StageHours,
    /// GPU-hours available (owned + rented), millions.
    pub available_hours: f64,
    /// Used ÷ available.
    pub utilisation: f64,
    /// Owned GPU-hours left idle, millions.
    pub stranded_hours: f64,
    /// Queries served, billions.
    pub queries_b: f64,
    /// Tokens processed for those queries, trillions.
    pub tokens_t: f64,
    /// Query-weighted accuracy.
    pub mean_accuracy: f64,
    /// Value of queries served (max_value), $M.
    pub value_musd: f64,
    /// (Depreciation + rent + energy + operations) × inference share ÷ queries, $.
    pub cost_per_query_usd: f64,
    /// The same per million tokens, $.
    pub cost_per_million_tokens_usd: f64,
}

/// A purchase cohort: bought together, in service together, retired together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// GPU type.
    pub gpu: String,
    /// Period paid.
    pub bought: String,
    /// Thousand GPUs.
    pub thousands: f64,
    /// First period in service.
    pub in_service: String,
    /// Period retired (after the depreciation life), possibly past the horizon.
    pub retires: String,
}

/// A trained model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelResult {
    /// Name.
    pub name: String,
    /// Parameters, billions (sized by the scaling law for a target loss).
    pub parameters_b: f64,
    /// Tokens, trillions.
    pub tokens_t: f64,
    /// Chinchilla loss of that size.
    pub loss: f64,
    /// Required pre-training compute, ZFLOP (after algorithmic efficiency).
    pub required_zflop: f64,
    /// Compute planned, ZFLOP.
    pub planned_zflop: f64,
    /// Loss the LP credits for the planned compute (tangent cuts; max_value with loss value).
    pub planned_loss: Option<f64>,
    /// Pre-training GPU-hours, millions.
    pub pretraining_hours: f64,
    /// Post-training GPU-hours, millions.
    pub post_training_hours: f64,
}

/// A service over the horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceResult {
    /// Name.
    pub name: String,
    /// Queries served, billions.
    pub queries_b: f64,
    /// Query-weighted accuracy.
    pub mean_accuracy: f64,
    /// Share of queries at each reasoning level.
    pub level_mix: BTreeMap<String, f64>,
    /// Inference GPU-hours, millions.
    pub inference_hours: f64,
}

/// A shadow price: what one more unit of a limit is worth (≤ rows), or what one more unit of
/// a requirement costs (≥ rows), in present value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowPrice {
    /// What is priced (`GPU-hour`, `MW`, `capex dollar`, `query`, `training ZFLOP`).
    pub kind: &'static str,
    /// Which one (`H100 2025Q3`).
    pub label: String,
    /// The price.
    pub price: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The raw dual: change of the objective per unit increase of the right-hand side.
    pub dual: f64,
}

/// A constraint group with rows at their limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingGroup {
    /// Group name.
    pub group: &'static str,
    /// Rows at their limit with a non-zero dual.
    pub rows: usize,
    /// Of how many.
    pub of: usize,
    /// The row with the largest |dual|.
    pub strongest: String,
    /// Its dual.
    pub strongest_dual: f64,
}

/// Plain-number answers over the horizon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Capex budget, $M.
    pub capex_budget_musd: f64,
    /// Capex spent, $M.
    pub capex_spent_musd: f64,
    /// Budget left unspent, $M.
    pub capex_unspent_musd: f64,
    /// Depreciation of owned GPUs while idle (capital stranded), $M.
    pub capex_stranded_musd: f64,
    /// Depreciation of GPUs installed before the horizon while idle, $M.
    pub installed_stranded_musd: f64,
    /// Extra capex an unbudgeted plan would spend (filled in by `compare`), $M.
    pub capex_short_musd: Option<f64>,
    /// Rental, $M.
    pub rent_musd: f64,
    /// Electricity, $M.
    pub energy_musd: f64,
    /// Running cost of used GPU-hours, $M.
    pub operations_musd: f64,
    /// GPU-hours by stage, millions.
    pub hours: StageHours,
    /// Share of used GPU-hours on rented GPUs (upper bound: rented hours ÷ used hours).
    pub rented_share: f64,
    /// Queries served, billions.
    pub queries_b: f64,
    /// Mean cost per query, $.
    pub cost_per_query_usd: f64,
    /// Mean utilisation of GPU-hours available.
    pub utilisation: f64,
    /// Peak MW used.
    pub peak_mw: f64,
    /// Value served (max_value), $M undiscounted.
    pub value_musd: f64,
}

/// The answer to a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Scenario name.
    pub scenario: String,
    /// What was optimised.
    pub objective: Objective,
    /// Solver used.
    pub solver: &'static str,
    /// Variables, rows and non-zeros of the LP.
    pub size: (usize, usize, usize),
    /// Objective, $M present value.
    pub objective_musd: f64,
    /// Objective recomputed from the scenario's prices and the decisions, $M.
    pub recomputed_objective_musd: f64,
    /// Per period.
    pub periods: Vec<PeriodResult>,
    /// Purchase cohorts.
    pub cohorts: Vec<Cohort>,
    /// Trained models.
    pub models: Vec<ModelResult>,
    /// Services.
    pub services: Vec<ServiceResult>,
    /// Shadow prices (empty when the solver gives no duals).
    pub shadow_prices: Vec<ShadowPrice>,
    /// Constraint groups with rows at their limit.
    pub binding: Vec<BindingGroup>,
    /// Totals.
    pub totals: Totals,
    /// Approximations used and their bounded error.
    pub approximations: Vec<String>,
}

impl Plan {
    /// Reads the solution of `model` into a plan and cross-checks its objective.
    pub fn from_solution(model: &FleetModel<'_>, solution: &LinearSolution) -> Result<Self> {
        let scenario = model.scenario;
        let derived = &model.derived;
        let decisions = &model.decisions;
        let values = &solution.values;
        let value = |variable: crate::linear::VariableId| values[variable.0].max(0.0);
        let periods = derived.periods;
        let gpu_names: Vec<&str> = scenario.gpus.iter().map(|gpu| gpu.name.as_str()).collect();

        let mut results = Vec::new();
        // Depreciation of GPUs bought within the horizon, by period (the rest is the installed
        // base), to split stranded capital between this plan's capex and sunk capex.
        let mut purchased_depreciation = vec![0.0; periods];
        for (t, purchased) in purchased_depreciation.iter_mut().enumerate() {
            let mut result = PeriodResult {
                label: scenario.periods.label(t),
                bought: BTreeMap::new(),
                rented: BTreeMap::new(),
                owned: BTreeMap::new(),
                built_mw: value(decisions.build[t]),
                available_mw: scenario.economics.installed_mw
                    + (0..=t)
                        .filter(|started| started + scenario.economics.build_lead_time_periods <= t)
                        .map(|started| value(decisions.build[started]))
                        .sum::<f64>(),
                used_mw: 0.0,
                capex_gpus_musd: 0.0,
                capex_buildings_musd: value(decisions.build[t])
                    * scenario.economics.build_cost_musd_per_mw,
                rent_musd: 0.0,
                energy_musd: 0.0,
                operations_musd: 0.0,
                depreciation_musd: 0.0,
                hours: StageHours::default(),
                available_hours: 0.0,
                utilisation: 0.0,
                stranded_hours: 0.0,
                queries_b: 0.0,
                tokens_t: 0.0,
                mean_accuracy: 0.0,
                value_musd: 0.0,
                cost_per_query_usd: 0.0,
                cost_per_million_tokens_usd: 0.0,
            };
            for (g, gpu) in scenario.gpus.iter().enumerate() {
                let bought = decisions.buy[g][t].map_or(0.0, value);
                let rented = decisions.rent[g][t].map_or(0.0, value);
                let owned = model.stock(g, t).evaluate(values).max(0.0);
                result.bought.insert(gpu_names[g].into(), bought);
                result.rented.insert(gpu_names[g].into(), rented);
                result.owned.insert(gpu_names[g].into(), owned);
                // Natural units from the scenario: $ per GPU × thousands ÷ 1000 = $M.
                let price = gpu.price_usd.unwrap_or(0.0);
                result.capex_gpus_musd += bought * price / 1000.0;
                result.rent_musd +=
                    rented * gpu.rent_usd_per_hour.unwrap_or(0.0) * scenario.periods.hours / 1000.0;
                let kilowatts = gpu.server_kilowatts() * scenario.economics.pue;
                result.used_mw += owned * kilowatts;
                result.energy_musd += owned
                    * kilowatts
                    * scenario.periods.hours
                    * scenario.economics.electricity_usd_per_kwh
                    / 1000.0;
                result.depreciation_musd += owned * price / 1000.0 / derived.life_periods as f64;
                *purchased += (owned - derived.installed[g][t]).max(0.0) * price
                    / 1000.0
                    / derived.life_periods as f64;
                result.available_hours += (owned + rented) * scenario.periods.hours / 1000.0;
            }
            results.push(result);
        }
        let mut models = Vec::new();
        for (m, trained) in scenario.training.models.iter().enumerate() {
            let mut pretraining_hours = 0.0;
            let mut post_training_hours = 0.0;
            for (_, t, variable) in &decisions.pretrain[m] {
                results[*t].hours.pretraining += value(*variable);
                pretraining_hours += value(*variable);
            }
            for (_, t, variable) in &decisions.posttrain[m] {
                results[*t].hours.post_training += value(*variable);
                post_training_hours += value(*variable);
            }
            let (parameters, tokens) = derived.model_sizes[m];
            models.push(ModelResult {
                name: trained.name.clone(),
                parameters_b: parameters / 1e9,
                tokens_t: tokens / 1e12,
                loss: scenario
                    .scaling
                    .constants
                    .constants()
                    .loss(parameters, tokens),
                required_zflop: derived.required_zflop[m],
                planned_zflop: value(decisions.compute[m]),
                planned_loss: decisions.loss[m].map(value),
                pretraining_hours,
                post_training_hours,
            });
        }
        let mut services = Vec::new();
        let mut accuracy_sum = vec![0.0; periods];
        for (s, service) in scenario.services.iter().enumerate() {
            let levels = service.levels();
            let mut by_level = vec![0.0; levels.len()];
            let mut inference_hours = 0.0;
            for (l, t, g, variable) in &decisions.serve[s] {
                let queries = value(*variable);
                let hours = queries * derived.hours_per_billion_queries[s][*l][*g];
                by_level[*l] += queries;
                inference_hours += hours;
                results[*t].hours.inference += hours;
                results[*t].queries_b += queries;
                results[*t].tokens_t += queries * derived.tokens_per_query[s][*l] / 1000.0;
                accuracy_sum[*t] += queries * levels[*l].accuracy;
                if scenario.objective == Objective::MaxValue {
                    results[*t].value_musd +=
                        queries * levels[*l].accuracy * service.accuracy_value_usd * 1000.0;
                }
            }
            for (_, t, variable, segment_value) in &decisions.segment[s] {
                results[*t].value_musd += value(*variable) * segment_value * 1000.0;
            }
            let queries: f64 = by_level.iter().sum();
            let accuracy: f64 = by_level
                .iter()
                .zip(&levels)
                .map(|(count, level)| count * level.accuracy)
                .sum();
            services.push(ServiceResult {
                name: service.name.clone(),
                queries_b: queries,
                mean_accuracy: if queries > 0.0 {
                    accuracy / queries
                } else {
                    0.0
                },
                level_mix: levels
                    .iter()
                    .zip(&by_level)
                    .map(|(level, count)| {
                        (
                            level.name.clone(),
                            if queries > 0.0 { count / queries } else { 0.0 },
                        )
                    })
                    .collect(),
                inference_hours,
            });
        }
        for (t, result) in results.iter_mut().enumerate() {
            let used = result.hours.total();
            result.operations_musd = used * scenario.economics.operations_usd_per_gpu_hour;
            result.utilisation = if result.available_hours > 0.0 {
                used / result.available_hours
            } else {
                0.0
            };
            let rented_hours: f64 =
                result.rented.values().sum::<f64>() * scenario.periods.hours / 1000.0;
            result.stranded_hours = (result.available_hours - used)
                .clamp(0.0, (result.available_hours - rented_hours).max(0.0));
            result.mean_accuracy = if result.queries_b > 0.0 {
                accuracy_sum[t] / result.queries_b
            } else {
                0.0
            };
            let period_cost = result.depreciation_musd
                + result.rent_musd
                + result.energy_musd
                + result.operations_musd;
            let inference_cost = if used > 0.0 {
                period_cost * result.hours.inference / used
            } else {
                0.0
            };
            if result.queries_b > 0.0 {
                result.cost_per_query_usd = inference_cost * 1e6 / (result.queries_b * 1e9);
                result.cost_per_million_tokens_usd = inference_cost * 1e6 / (result.tokens_t * 1e6);
            }
        }
        let mut cohorts = Vec::new();
        for (g, gpu) in scenario.gpus.iter().enumerate() {
            for (t, buy) in decisions.buy[g].iter().enumerate() {
                let thousands = buy.map_or(0.0, value);
                if thousands > 1e-6 {
                    cohorts.push(Cohort {
                        gpu: gpu.name.clone(),
                        bought: scenario.periods.label(t),
                        thousands,
                        in_service: scenario.periods.label(t + gpu.lead_time_periods),
                        retires: scenario
                            .periods
                            .label(t + gpu.lead_time_periods + derived.life_periods),
                    });
                }
            }
        }

        let recomputed = recompute_objective(scenario, derived, model, values, &results, &models);
        let scale = 1.0 + recomputed.1;
        if (recomputed.0 - solution.objective).abs() > 1e-6 * scale {
            return Err(Error::CheckSolution {
                solver: solution.solver.name(),
                problem: format!(
                    "objective {:.6} from the LP differs from {:.6} recomputed from the scenario's prices",
                    solution.objective, recomputed.0
                ),
            });
        }

        let (shadow_prices, binding) = duals(model, solution);
        let mut totals = Totals {
            capex_budget_musd: (0..periods)
                .map(|t| scenario.economics.capex_budget_musd.at(t))
                .sum(),
            ..Totals::default()
        };
        let mut stranded = 0.0;
        let mut installed_stranded = 0.0;
        let mut cost = 0.0;
        for (t, result) in results.iter().enumerate() {
            totals.capex_spent_musd += result.capex_gpus_musd + result.capex_buildings_musd;
            totals.rent_musd += result.rent_musd;
            totals.energy_musd += result.energy_musd;
            totals.operations_musd += result.operations_musd;
            totals.hours.pretraining += result.hours.pretraining;
            totals.hours.post_training += result.hours.post_training;
            totals.hours.inference += result.hours.inference;
            totals.queries_b += result.queries_b;
            totals.value_musd += result.value_musd;
            totals.peak_mw = totals.peak_mw.max(result.used_mw);
            let owned_hours: f64 =
                result.owned.values().sum::<f64>() * scenario.periods.hours / 1000.0;
            if owned_hours > 0.0 {
                let idle = result.stranded_hours / owned_hours;
                stranded += purchased_depreciation[t] * idle;
                installed_stranded += (result.depreciation_musd - purchased_depreciation[t]) * idle;
            }
            cost += result.cost_per_query_usd * result.queries_b;
        }
        totals.capex_unspent_musd = (totals.capex_budget_musd - totals.capex_spent_musd).max(0.0);
        totals.capex_stranded_musd = stranded;
        totals.installed_stranded_musd = installed_stranded;
        let used = totals.hours.total();
        let available: f64 = results.iter().map(|result| result.available_hours).sum();
        let rented_hours: f64 = results
            .iter()
            .map(|result| result.rented.values().sum::<f64>() * scenario.periods.hours / 1000.0)
            .sum();
        totals.rented_share = if used > 0.0 {
            (rented_hours / used).min(1.0)
        } else {
            0.0
        };
        totals.utilisation = if available > 0.0 {
            used / available
        } else {
            0.0
        };
        totals.cost_per_query_usd = if totals.queries_b > 0.0 {
            cost / totals.queries_b
        } else {
            0.0
        };

        let approximations = derived
            .quality_cuts
            .iter()
            .zip(&scenario.training.models)
            .filter_map(|(cuts, trained)| {
                cuts.as_ref().map(|cuts| {
                    format!(
                        "{}: loss vs. compute by {} tangent cuts on [{:.1}, {:.1}] ZFLOP; the LP under-states loss by at most {:.2e} (at {:.1} ZFLOP)",
                        trained.name,
                        cuts.cuts.len(),
                        cuts.cuts.first().map_or(0.0, |cut| cut.touch),
                        cuts.cuts.last().map_or(0.0, |cut| cut.touch),
                        cuts.max_error,
                        cuts.max_error_at
                    )
                })
            })
            .chain(std::iter::once(
                "reasoning levels: exact (levels are vertices of the concave accuracy curve; mixes lie on its hull)".to_string(),
            ))
            .collect();

        Ok(Self {
            scenario: scenario.name.clone(),
            objective: scenario.objective,
            solver: solution.solver.name(),
            size: (
                model.program.variables.len(),
                model.program.rows.len(),
                model.program.nonzeros(),
            ),
            objective_musd: solution.objective,
            recomputed_objective_musd: recomputed.0,
            periods: results,
            cohorts,
            models,
            services,
            shadow_prices,
            binding,
            totals,
            approximations,
        })
    }

    /// JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(Error::SerialisePlan)
    }

    fn period_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let header = vec![
            "period",
            "bought_kgpu",
            "rented_kgpu",
            "owned_kgpu",
            "mw_used",
            "mw_avail",
            "capex_musd",
            "rent_musd",
            "energy_musd",
            "pretrain_mgpuh",
            "posttrain_mgpuh",
            "inference_mgpuh",
            "util",
            "queries_b",
            "usd_per_1k_queries",
            "usd_per_mtok",
            "accuracy",
        ];
        let rows = self
            .periods
            .iter()
            .map(|period| {
                vec![
                    period.label.clone(),
                    format!("{:.2}", period.bought.values().sum::<f64>()),
                    format!("{:.2}", period.rented.values().sum::<f64>()),
                    format!("{:.2}", period.owned.values().sum::<f64>()),
                    format!("{:.1}", period.used_mw),
                    format!("{:.1}", period.available_mw),
                    format!(
                        "{:.1}",
                        period.capex_gpus_musd + period.capex_buildings_musd
                    ),
                    format!("{:.1}", period.rent_musd),
                    format!("{:.1}", period.energy_musd),
                    format!("{:.2}", period.hours.pretraining),
                    format!("{:.2}", period.hours.post_training),
                    format!("{:.2}", period.hours.inference),
                    format!("{:.2}", period.utilisation),
                    format!("{:.2}", period.queries_b),
                    format!("{:.3}", period.cost_per_query_usd * 1000.0),
                    format!("{:.3}", period.cost_per_million_tokens_usd),
                    format!("{:.3}", period.mean_accuracy),
                ]
            })
            .collect();
        (header, rows)
    }

    fn summary_lines(&self) -> Vec<String> {
        let totals = &self.totals;
        let hours = totals.hours.total().max(f64::MIN_POSITIVE);
        let mut lines = vec![
            format!(
                "scenario {} | objective {:?} = {:.1} $M (recomputed {:.1}) | solver {} | {} variables, {} constraints, {} non-zeros",
                self.scenario,
                self.objective,
                self.objective_musd,
                self.recomputed_objective_musd,
                self.solver,
                self.size.0,
                self.size.1,
                self.size.2
            ),
            format!(
                "capex: budget {:.0} $M, spent {:.0} $M ({:.0}%), unspent {:.0} $M, stranded (idle depreciation) {:.0} $M of this plan's GPUs and {:.0} $M of the installed base{}",
                totals.capex_budget_musd,
                totals.capex_spent_musd,
                100.0 * totals.capex_spent_musd / totals.capex_budget_musd.max(f64::MIN_POSITIVE),
                totals.capex_unspent_musd,
                totals.capex_stranded_musd,
                totals.installed_stranded_musd,
                totals
                    .capex_short_musd
                    .map_or(String::new(), |short| format!(", short {short:.0} $M"))
            ),
            format!(
                "GPU-hours: {:.1} M total — pre-training {:.1}%, post-training {:.1}%, test-time {:.1}%; {:.0}% on rented GPUs; utilisation {:.0}%",
                totals.hours.total(),
                100.0 * totals.hours.pretraining / hours,
                100.0 * totals.hours.post_training / hours,
                100.0 * totals.hours.inference / hours,
                100.0 * totals.rented_share,
                100.0 * totals.utilisation
            ),
            format!(
                "queries: {:.1} B at {:.3} $ per 1k; rent {:.0} $M; energy {:.0} $M; peak {:.0} MW",
                totals.queries_b,
                totals.cost_per_query_usd * 1000.0,
                totals.rent_musd,
                totals.energy_musd,
                totals.peak_mw
            ),
        ];
        for model in &self.models {
            lines.push(format!(
                "model {}: {:.0}B params, {:.1}T tokens, loss {:.4}, {:.0} ZFLOP required, {:.0} planned, {:.2} M GPU-h pre-train + {:.2} post-train{}",
                model.name,
                model.parameters_b,
                model.tokens_t,
                model.loss,
                model.required_zflop,
                model.planned_zflop,
                model.pretraining_hours,
                model.post_training_hours,
                model.planned_loss.map_or(String::new(), |loss| format!(", LP loss {loss:.4}"))
            ));
        }
        for service in &self.services {
            let mix: Vec<String> = service
                .level_mix
                .iter()
                .filter(|(_, share)| **share > 0.005)
                .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
                .collect();
            lines.push(format!(
                "service {}: {:.1} B queries, accuracy {:.3}, levels [{}], {:.1} M GPU-h",
                service.name,
                service.queries_b,
                service.mean_accuracy,
                mix.join(", "),
                service.inference_hours
            ));
        }
        lines
    }

    /// A plain-text report: summary lines and a per-period table.
    pub fn to_table(&self) -> String {
        let mut out = self.summary_lines().join("\n");
        out.push_str("\n\n");
        let (header, rows) = self.period_rows();
        out.push_str(&aligned_table(
            &header
                .iter()
                .map(|cell| cell.to_string())
                .collect::<Vec<_>>(),
            &rows,
        ));
        out
    }

    /// A Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("## Plan: {}\n\n", self.scenario);
        for line in self.summary_lines() {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
        let (header, rows) = self.period_rows();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for row in rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }

    /// CSV of the per-period table.
    pub fn to_csv(&self) -> String {
        let (header, rows) = self.period_rows();
        let mut out = header.join(",");
        out.push('\n');
        for row in rows {
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// Shadow prices, binding constraint groups and approximations, as text.
    pub fn explain(&self) -> String {
        let mut out = self.summary_lines().join("\n");
        out.push_str("\n\nbinding constraint groups (rows at their limit with a non-zero dual):\n");
        if self.binding.is_empty() {
            out.push_str("  none\n");
        }
        for group in &self.binding {
            let _ = writeln!(
                out,
                "  {:<16} {:>5} of {:<5} strongest `{}` (dual {:.4})",
                group.group, group.rows, group.of, group.strongest, group.strongest_dual
            );
        }
        out.push_str("\nshadow prices (present value; ≤ limits: worth of one more unit; ≥ requirements: cost of one more unit):\n");
        if self.shadow_prices.is_empty() {
            out.push_str("  none (the solver gives no duals, or nothing binds)\n");
        }
        let mut by_kind: BTreeMap<&str, Vec<&ShadowPrice>> = BTreeMap::new();
        for price in &self.shadow_prices {
            by_kind.entry(price.kind).or_default().push(price);
        }
        for (kind, prices) in by_kind {
            let _ = writeln!(out, "  {kind} ({}):", prices[0].unit);
            for price in prices.iter().take(24) {
                let _ = writeln!(out, "    {:<28} {:>12.4}", price.label, price.price);
            }
            if prices.len() > 24 {
                let _ = writeln!(out, "    … {} more (see --output json)", prices.len() - 24);
            }
        }
        out.push_str("\napproximations:\n");
        for note in &self.approximations {
            let _ = writeln!(out, "  {note}");
        }
        out
    }
}

/// The objective recomputed from the scenario's prices and the plan's decisions; returns it
/// and the sum of the absolute terms (the scale for the comparison).
fn recompute_objective(
    scenario: &Scenario,
    derived: &Derived,
    model: &FleetModel<'_>,
    values: &[f64],
    results: &[PeriodResult],
    models: &[ModelResult],
) -> (f64, f64) {
    let periods = derived.periods;
    let horizon_discount = (1.0 + scenario.economics.discount_rate)
        .powf(-(periods as f64) / scenario.periods.per_year);
    let mut costs = 0.0;
    let mut values_total = 0.0;
    let mut scale = 0.0;
    for (t, result) in results.iter().enumerate() {
        let discount =
            (1.0 + scenario.economics.discount_rate).powf(-(t as f64) / scenario.periods.per_year);
        let cost = result.capex_gpus_musd
            + result.capex_buildings_musd
            + result.rent_musd
            + result.energy_musd
            + result.operations_musd;
        costs += discount * cost;
        values_total += discount * result.value_musd;
        scale += discount * (cost + result.value_musd);
    }
    let mut salvage = 0.0;
    for (g, gpu) in scenario.gpus.iter().enumerate() {
        for (t, buy) in model.decisions.buy[g].iter().enumerate() {
            if let Some(buy) = buy {
                let remaining = derived.gpu_salvage_fraction(t, gpu.lead_time_periods);
                salvage += values[buy.0] * gpu.price_usd.unwrap_or(0.0) / 1000.0
                    * remaining
                    * horizon_discount;
            }
        }
    }
    for (t, build) in model.decisions.build.iter().enumerate() {
        let remaining =
            derived.building_salvage_fraction(t, scenario.economics.build_lead_time_periods);
        salvage += values[build.0]
            * scenario.economics.build_cost_musd_per_mw
            * remaining
            * horizon_discount;
    }
    let mut quality = 0.0;
    for ((trained, result), cuts) in scenario
        .training
        .models
        .iter()
        .zip(models)
        .zip(&derived.quality_cuts)
    {
        if let (Some(loss), Some(cuts)) = (result.planned_loss, cuts) {
            let reference = cuts
                .cuts
                .first()
                .map_or(0.0, |cut| cut.slope * cut.touch + cut.intercept);
            let discount = (1.0 + scenario.economics.discount_rate)
                .powf(-(trained.release_period as f64) / scenario.periods.per_year);
            quality += trained.loss_value_musd * 100.0 * (reference - loss) * discount;
        }
    }
    scale += salvage + quality.abs();
    let objective = match model.program.direction {
        Direction::Minimise => costs - salvage,
        Direction::Maximise => values_total - costs + salvage + quality,
    };
    (objective, scale)
}

fn duals(
    model: &FleetModel<'_>,
    solution: &LinearSolution,
) -> (Vec<ShadowPrice>, Vec<BindingGroup>) {
    let Some(duals) = &solution.duals else {
        return (Vec::new(), binding_without_duals(model, solution));
    };
    let scenario = model.scenario;
    let maximise = model.program.direction == Direction::Maximise;
    let normalise = |sense: Sense, dual: f64| {
        let gain = if maximise { dual } else { -dual };
        match sense {
            Sense::AtLeast => -gain,
            _ => gain,
        }
    };
    let mut prices = Vec::new();
    for (row, priced) in &model.decisions.priced_rows {
        let dual = duals[row.0];
        let price = normalise(model.program.rows[row.0].sense, dual);
        if price.abs() < 1e-7 {
            continue;
        }
        let (kind, label, unit) = match priced {
            PricedRow::GpuHour(g, t) => (
                "GPU-hour",
                format!("{} {}", scenario.gpus[*g].name, scenario.periods.label(*t)),
                "$ per GPU-hour",
            ),
            PricedRow::Megawatt(t) => ("MW", scenario.periods.label(*t), "$M per MW"),
            PricedRow::Capex(t) => ("capex dollar", scenario.periods.label(*t), "$ per $"),
            PricedRow::Query(s, t) => (
                "query",
                format!(
                    "{} {}",
                    scenario.services[*s].name,
                    scenario.periods.label(*t)
                ),
                "$ per 1k queries",
            ),
            PricedRow::TrainingCompute(m) => (
                "training ZFLOP",
                scenario.training.models[*m].name.clone(),
                "$M per ZFLOP",
            ),
        };
        prices.push(ShadowPrice {
            kind,
            label,
            price,
            unit,
            dual,
        });
    }
    let mut groups: Vec<BindingGroup> = Vec::new();
    for (index, row) in model.program.rows.iter().enumerate() {
        let count = |groups: &mut Vec<BindingGroup>| match groups
            .iter_mut()
            .find(|group| group.group == row.group.name)
        {
            Some(group) => group.of += 1,
            None => groups.push(BindingGroup {
                group: row.group.name,
                rows: 0,
                of: 1,
                strongest: String::new(),
                strongest_dual: 0.0,
            }),
        };
        count(&mut groups);
        let dual = duals[index];
        let activity = row.expression.evaluate(&solution.values);
        let at_limit = (activity - row.rhs).abs() <= 1e-5 * (1.0 + row.rhs.abs() + activity.abs());
        if at_limit
            && normalise(row.sense, dual).abs() > 1e-7
            && row.sense != Sense::Equal
            && let Some(group) = groups
                .iter_mut()
                .find(|group| group.group == row.group.name)
        {
            group.rows += 1;
            if dual.abs() > group.strongest_dual.abs() {
                group.strongest_dual = dual;
                group.strongest = row.label.clone();
            }
        }
    }
    groups.retain(|group| group.rows > 0);
    groups.sort_by_key(|group| std::cmp::Reverse(group.rows));
    (prices, groups)
}

fn binding_without_duals(model: &FleetModel<'_>, solution: &LinearSolution) -> Vec<BindingGroup> {
    let mut groups: Vec<BindingGroup> = Vec::new();
    for row in &model.program.rows {
        if row.sense == Sense::Equal {
            continue;
        }
        let activity = row.expression.evaluate(&solution.values);
        let at_limit = (activity - row.rhs).abs() <= 1e-7 * (1.0 + row.rhs.abs() + activity.abs())
            && activity.abs() > 1e-9;
        match groups
            .iter_mut()
            .find(|group| group.group == row.group.name)
        {
            Some(group) => {
                group.of += 1;
                if at_limit {
                    group.rows += 1;
                    group.strongest = row.label.clone();
                }
            }
            None => groups.push(BindingGroup {
                group: row.group.name,
                rows: usize::from(at_limit),
                of: 1,
                strongest: if at_limit {
                    row.label.clone()
                } else {
                    String::new()
                },
                strongest_dual: 0.0,
            }),
        }
    }
    groups.retain(|group| group.rows > 0);
    groups
}

/// Pads cells into aligned columns.
pub fn aligned_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if index < widths.len() {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                if index == 0 {
                    format!("{cell:<width$}", width = widths[index])
                } else {
                    format!("{cell:>width$}", width = widths[index])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(header);
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// Side-by-side comparison of plans, with plain-number answers: how much of the capex is
/// used, stranded or short, and where the GPU-hours go.
pub fn compare_table(plans: &[Plan]) -> String {
    let mut header = vec!["metric".to_string()];
    header.extend(plans.iter().map(|plan| plan.scenario.clone()));
    let metric = |name: &str, value: &dyn Fn(&Plan) -> String| {
        let mut row = vec![name.to_string()];
        row.extend(plans.iter().map(value));
        row
    };
    let share = |part: f64, whole: f64| {
        if whole > 0.0 {
            format!("{:.1}%", 100.0 * part / whole)
        } else {
            "-".into()
        }
    };
    let rows = vec![
        metric("objective", &|plan| format!("{:?}", plan.objective)),
        metric("objective $M (PV)", &|plan| {
            format!("{:.0}", plan.objective_musd)
        }),
        metric("capex budget $M", &|plan| {
            format!("{:.0}", plan.totals.capex_budget_musd)
        }),
        metric("capex spent $M", &|plan| {
            format!("{:.0}", plan.totals.capex_spent_musd)
        }),
        metric("capex used %", &|plan| {
            share(
                plan.totals.capex_spent_musd - plan.totals.capex_stranded_musd,
                plan.totals.capex_budget_musd,
            )
        }),
        metric("capex unspent $M", &|plan| {
            format!("{:.0}", plan.totals.capex_unspent_musd)
        }),
        metric("capex stranded $M", &|plan| {
            format!("{:.0}", plan.totals.capex_stranded_musd)
        }),
        metric("installed stranded $M", &|plan| {
            format!("{:.0}", plan.totals.installed_stranded_musd)
        }),
        metric("capex short $M", &|plan| {
            plan.totals
                .capex_short_musd
                .map_or("-".into(), |short| format!("{short:.0}"))
        }),
        metric("rent $M", &|plan| format!("{:.0}", plan.totals.rent_musd)),
        metric("GPU-hours M", &|plan| {
            format!("{:.0}", plan.totals.hours.total())
        }),
        metric("pre-training %", &|plan| {
            share(plan.totals.hours.pretraining, plan.totals.hours.total())
        }),
        metric("post-training %", &|plan| {
            share(plan.totals.hours.post_training, plan.totals.hours.total())
        }),
        metric("test-time %", &|plan| {
            share(plan.totals.hours.inference, plan.totals.hours.total())
        }),
        metric("rented share %", &|plan| {
            format!("{:.1}%", 100.0 * plan.totals.rented_share)
        }),
        metric("utilisation %", &|plan| {
            format!("{:.1}%", 100.0 * plan.totals.utilisation)
        }),
        metric("queries B", &|plan| format!("{:.0}", plan.totals.queries_b)),
        metric("$ per 1k queries", &|plan| {
            format!("{:.3}", plan.totals.cost_per_query_usd * 1000.0)
        }),
        metric("peak MW", &|plan| format!("{:.0}", plan.totals.peak_mw)),
        metric("binding limits", &|plan| {
            // Capacity and demand rows bind in every plan; name the limits that shape it.
            let names: Vec<&str> = plan
                .binding
                .iter()
                .map(|group| group.group)
                .filter(|name| {
                    !matches!(
                        *name,
                        "gpu_hours"
                            | "demand_segment"
                            | "demand_target"
                            | "pretraining"
                            | "post_training"
                            | "training_target"
                            | "quality_cut"
                    )
                })
                .take(2)
                .collect();
            if names.is_empty() {
                "-".into()
            } else {
                names.join("+")
            }
        }),
    ];
    let mut out = aligned_table(&header, &rows);
    out.push('\n');
    for plan in plans {
        let totals = &plan.totals;
        let hours = totals.hours.total().max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "{}: of {:.1} $B capex budget, {:.1} $B is spent and used, {:.1} $B stranded idle, {:.1} $B unspent{}; {:.1} $B of the installed base sits idle; GPU-hours go {:.0}% to pre-training, {:.0}% to post-training, {:.0}% to test-time inference.",
            plan.scenario,
            totals.capex_budget_musd / 1000.0,
            (totals.capex_spent_musd - totals.capex_stranded_musd) / 1000.0,
            totals.capex_stranded_musd / 1000.0,
            totals.capex_unspent_musd / 1000.0,
            totals
                .capex_short_musd
                .map_or(String::new(), |short| format!(
                    ", {:.1} $B short",
                    short / 1000.0
                )),
            totals.installed_stranded_musd / 1000.0,
            100.0 * totals.hours.pretraining / hours,
            100.0 * totals.hours.post_training / hours,
            100.0 * totals.hours.inference / hours,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SolverChoice, library, plan};

    fn shipped(name: &str) -> Plan {
        plan(
            &Scenario::from_yaml(library::text(name).unwrap()).unwrap(),
            SolverChoice::Clarabel,
        )
        .unwrap()
    }

    #[test]
    fn compare_puts_plans_side_by_side_with_plain_answers() {
        let mut plans = vec![shipped("baseline"), shipped("deepseek-shock")];
        plans[0].totals.capex_short_musd = Some(12.5);
        let table = compare_table(&plans);
        let header = table.lines().next().unwrap();
        assert!(
            header.contains("baseline") && header.contains("deepseek-shock"),
            "{table}"
        );
        for metric in [
            "capex used %",
            "capex stranded $M",
            "capex short $M",
            "pre-training %",
            "test-time %",
        ] {
            let line = table
                .lines()
                .find(|line| line.starts_with(metric))
                .unwrap_or_else(|| panic!("no {metric}"));
            assert!(line.split_whitespace().count() >= 3, "{line}");
        }
        let spent = format!("{:.0}", plans[1].totals.capex_spent_musd);
        assert!(
            table
                .lines()
                .any(|line| line.starts_with("capex spent $M") && line.contains(&spent)),
            "{table}"
        );
        assert!(
            table.contains("baseline: of 36.0 $B capex budget"),
            "{table}"
        );
        assert!(table.contains("0.0 $B short"), "{table}");
    }

    #[test]
    fn renderings_carry_the_same_numbers() {
        let plan = shipped("baseline");
        let csv = plan.to_csv();
        assert_eq!(csv.lines().count(), plan.periods.len() + 1);
        let first = csv.lines().nth(1).unwrap();
        assert!(first.starts_with(&plan.periods[0].label));
        let json: serde_json::Value = serde_json::from_str(&plan.to_json().unwrap()).unwrap();
        assert_eq!(
            json["periods"].as_array().unwrap().len(),
            plan.periods.len()
        );
        assert!(plan.to_markdown().contains("| period |"));
        assert!(plan.to_table().contains("GPU-hours:"));
        let explanation = plan.explain();
        assert!(
            explanation.contains("shadow prices") && explanation.contains("$ per GPU-hour"),
            "{explanation}"
        );
        assert!(explanation.contains("binding constraint groups"));
    }

    #[test]
    fn stage_hours_add_up_across_periods_models_and_services() {
        let plan = shipped("test-time-scaling");
        let by_models: f64 = plan
            .models
            .iter()
            .map(|model| model.pretraining_hours + model.post_training_hours)
            .sum();
        let by_services: f64 = plan
            .services
            .iter()
            .map(|service| service.inference_hours)
            .sum();
        let by_periods = plan.totals.hours.total();
        assert!((by_models + by_services - by_periods).abs() < 1e-6 * by_periods);
    }
}
