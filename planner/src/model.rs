//! The fleet LP, written like the maths.
//!
//! Indices: g GPU type, t period, m trained model, s service, l reasoning level, k demand
//! segment. Units: thousand GPUs, million GPU-hours, zettaFLOP (1e21), billion queries, MW, $M.
//!
//! ```text
//! variables   buy[g,t] ≥ 0, rent[g,t] ≥ 0, build[t] ≥ 0 (MW),
//!             pretrain[g,t,m], posttrain[g,t,m] (M GPU-h), compute[m] (ZFLOP),
//!             serve[s,l,t,g] (B queries at level l on g), segment[s,k,t], loss[m]
//! stock[g,t]  = installed[g,t] + Σ_{τ : τ+lead ≤ t < τ+lead+life} buy[g,τ]   (cohorts)
//! gpu_hours   Σ_m pretrain + posttrain + Σ_{s,l} hours(g,s,l)·serve ≤ H/1000·(stock + rent)
//! power       Σ_g kW_g·PUE·stock[g,t] ≤ MW_0 + Σ_{τ ≤ t−lead} build[τ]
//! capex       Σ_g price_g·buy[g,t] + cost_MW·build[t] ≤ budget[t]
//! pretraining Σ_{g,t∈window} ZFLOP(g)·pretrain[g,t,m] ≥ compute[m] ≥ required[m]
//! posttrain   Σ ZFLOP(g)·posttrain[g,t,m] ≥ fraction·compute[m]
//! demand      min_cost: Σ_{l,g} serve[s,l,t,g] ≥ required[s,t];
//!             max_value: Σ_{l,g} serve = Σ_k segment[s,k,t], segment ≤ size[s,k,t]
//! accuracy    Σ (accuracy_l − min)·serve ≥ 0
//! quality     loss[m] ≥ slope_c·compute[m] + intercept_c for each tangent cut c
//! objective   min Σ_t d_t·(capex + rent + energy + operations) − salvage, or
//!             max Σ_t d_t·(value − capex − rent − energy − operations) + salvage − loss value
//! ```

use crate::linear::{
    Direction, LinearExpression, LinearProgram, LinearSolution, RowId, Sense, VariableId,
};
use crate::report::Plan;
use crate::scaling::{
    INFERENCE_FLOP_PER_PARAMETER_TOKEN, TRAINING_FLOP_PER_PARAMETER_TOKEN, TangentCuts,
};
use crate::scenario::{Objective, Scenario};
use crate::{Result, SolverChoice};

/// The constraint groups of the fleet model.
pub mod groups {
    use crate::linear::ConstraintGroup;

    /// GPU-hours used ≤ GPU-hours owned and rented, by GPU type and period.
    pub const GPU_HOURS: ConstraintGroup = ConstraintGroup {
        name: "gpu_hours",
        relaxable: false,
        remedy: "more GPUs",
    };
    /// Power drawn by owned GPUs ≤ MW built, by period.
    pub const POWER: ConstraintGroup = ConstraintGroup {
        name: "power",
        relaxable: true,
        remedy: "raise economics.installed_mw or build earlier (build_lead_time_periods)",
    };
    /// Total MW ≤ the site/grid limit.
    pub const SITE_LIMIT: ConstraintGroup = ConstraintGroup {
        name: "site_limit",
        relaxable: true,
        remedy: "raise economics.mw_limit",
    };
    /// MW started per period ≤ the build rate.
    pub const BUILD_RATE: ConstraintGroup = ConstraintGroup {
        name: "build_rate",
        relaxable: true,
        remedy: "raise economics.build_limit_mw_per_period",
    };
    /// Capex per period ≤ budget.
    pub const CAPEX_BUDGET: ConstraintGroup = ConstraintGroup {
        name: "capex_budget",
        relaxable: true,
        remedy: "raise economics.capex_budget_musd",
    };
    /// GPUs bought per period ≤ the supply limit.
    pub const GPU_SUPPLY: ConstraintGroup = ConstraintGroup {
        name: "gpu_supply",
        relaxable: true,
        remedy: "raise gpus[].buy_limit_thousands",
    };
    /// GPUs rented per period ≤ the rental market.
    pub const RENTAL_MARKET: ConstraintGroup = ConstraintGroup {
        name: "rental_market",
        relaxable: true,
        remedy: "raise gpus[].rent_limit_thousands",
    };
    /// Pre-training compute ≥ what the model needs.
    pub const TRAINING_TARGET: ConstraintGroup = ConstraintGroup {
        name: "training_target",
        relaxable: true,
        remedy: "shrink the model, lengthen training_periods or release later",
    };
    /// Pre-training GPU-hours deliver the compute.
    pub const PRETRAINING: ConstraintGroup = ConstraintGroup {
        name: "pretraining",
        relaxable: false,
        remedy: "",
    };
    /// Post-training GPU-hours deliver the RL compute.
    pub const POST_TRAINING: ConstraintGroup = ConstraintGroup {
        name: "post_training",
        relaxable: true,
        remedy: "lower post_training_fraction",
    };
    /// Served queries ≥ required demand (min_cost).
    pub const DEMAND_TARGET: ConstraintGroup = ConstraintGroup {
        name: "demand_target",
        relaxable: true,
        remedy: "lower services[].demand.required_fraction or growth",
    };
    /// Served queries = Σ segments (max_value).
    pub const SERVED: ConstraintGroup = ConstraintGroup {
        name: "served",
        relaxable: false,
        remedy: "",
    };
    /// Queries served in a demand segment ≤ its size.
    pub const DEMAND_SEGMENT: ConstraintGroup = ConstraintGroup {
        name: "demand_segment",
        relaxable: false,
        remedy: "",
    };
    /// Average accuracy ≥ the service's minimum.
    pub const ACCURACY: ConstraintGroup = ConstraintGroup {
        name: "accuracy",
        relaxable: true,
        remedy: "lower services[].min_accuracy",
    };
    /// Loss ≥ each tangent cut of the loss-vs-compute curve.
    pub const QUALITY_CUT: ConstraintGroup = ConstraintGroup {
        name: "quality_cut",
        relaxable: false,
        remedy: "",
    };
}

/// Numbers derived once from the scenario and shared by the model and the report.
#[derive(Debug, Clone)]
pub struct Derived {
    /// Periods in the horizon.
    pub periods: usize,
    /// Thousand-GPU-periods → million GPU-hours.
    pub million_hours_per_thousand_gpus: f64,
    /// GPU life in periods.
    pub life_periods: usize,
    /// Building life in periods.
    pub building_life_periods: usize,
    /// Discount factor of each period, and of the horizon end at index `periods`.
    pub discount: Vec<f64>,
    /// Training ZFLOP per million GPU-hours, by GPU.
    pub training_zflop_per_million_hours: Vec<f64>,
    /// Installed GPUs still in service, by GPU and period, thousands.
    pub installed: Vec<Vec<f64>>,
    /// Energy $M per thousand GPUs per period, by GPU.
    pub energy_musd_per_thousand: Vec<f64>,
    /// MW per thousand GPUs (all-in × PUE), by GPU.
    pub mw_per_thousand: Vec<f64>,
    /// $M per thousand GPUs bought, by GPU.
    pub price_musd_per_thousand: Vec<Option<f64>>,
    /// Rental $M per thousand GPUs per period, by GPU.
    pub rent_musd_per_thousand: Vec<Option<f64>>,
    /// Required pre-training ZFLOP (physical, after algorithmic efficiency), by model.
    pub required_zflop: Vec<f64>,
    /// Parameters and tokens of each model (sized by the scaling law for a target loss).
    pub model_sizes: Vec<(f64, f64)>,
    /// Active parameters used for inference, by service.
    pub service_active_parameters: Vec<f64>,
    /// First period each service can serve, by service.
    pub service_start: Vec<usize>,
    /// M GPU-hours per billion queries, by service, level and GPU.
    pub hours_per_billion_queries: Vec<Vec<Vec<f64>>>,
    /// Tokens per query, by service and level.
    pub tokens_per_query: Vec<Vec<f64>>,
    /// Tangent cuts of loss vs. compute, by model (when quality has a value).
    pub quality_cuts: Vec<Option<TangentCuts>>,
}

impl Derived {
    /// Derives the model's coefficients from a validated scenario.
    pub fn new(scenario: &Scenario) -> Result<Self> {
        let periods = scenario.periods.count;
        let per_year = scenario.periods.per_year;
        let economics = &scenario.economics;
        let life_periods = ((economics.depreciation_years * per_year).round() as usize).max(1);
        let building_life_periods =
            ((economics.building_life_years * per_year).round() as usize).max(1);
        let discount = (0..=periods)
            .map(|period| (1.0 + economics.discount_rate).powf(-(period as f64) / per_year))
            .collect();
        let hours = scenario.periods.hours;
        let constants = scenario.scaling.constants.constants();
        let efficiency = scenario.training.algorithmic_efficiency;
        let mut model_sizes = Vec::new();
        let mut required_zflop = Vec::new();
        for model in &scenario.training.models {
            let (parameters, tokens) = match (model.parameters_b, model.tokens_t, model.target_loss)
            {
                (Some(parameters), Some(tokens), _) => (parameters * 1e9, tokens * 1e12),
                (_, _, Some(loss)) => {
                    let inference_tokens = model.expected_inference_tokens_t.unwrap_or(0.0) * 1e12;
                    let sizing =
                        constants.inference_aware(loss, inference_tokens, Default::default())?;
                    (sizing.optimum.parameters, sizing.optimum.tokens)
                }
                _ => (0.0, 0.0),
            };
            model_sizes.push((parameters, tokens));
            // 6·N·D with N the parameters active per token (all of them for a dense model).
            let active = model
                .active_parameters_b
                .map_or(parameters, |active| active * 1e9);
            required_zflop
                .push(TRAINING_FLOP_PER_PARAMETER_TOKEN * active * tokens / efficiency / 1e21);
        }
        let quality_cuts = scenario
            .training
            .models
            .iter()
            .zip(&required_zflop)
            .map(|(model, required)| {
                (scenario.objective == Objective::MaxValue && model.loss_value_musd > 0.0).then(
                    || {
                        let gamma = constants.optimal_loss_exponent();
                        let loss = |zflop: f64| constants.optimal_loss(zflop * 1e21 * efficiency);
                        let slope =
                            |zflop: f64| -gamma * (loss(zflop) - constants.irreducible) / zflop;
                        TangentCuts::of_convex(
                            loss,
                            slope,
                            *required,
                            required * model.max_compute_multiple,
                            scenario.scaling.tangent_cuts,
                        )
                    },
                )
            })
            .collect();
        let mut service_active_parameters = Vec::new();
        let mut service_start = Vec::new();
        for service in &scenario.services {
            match service
                .model
                .as_deref()
                .and_then(|name| scenario.model_index(name))
            {
                Some(index) => {
                    let model = &scenario.training.models[index];
                    let active = model
                        .active_parameters_b
                        .map_or(model_sizes[index].0, |active| active * 1e9);
                    service_active_parameters.push(active);
                    service_start.push(model.release_period);
                }
                None => {
                    service_active_parameters
                        .push(service.active_parameters_b.unwrap_or(0.0) * 1e9);
                    service_start.push(0);
                }
            }
        }
        let mut hours_per_billion_queries = Vec::new();
        let mut tokens_per_query = Vec::new();
        for (service, active) in scenario.services.iter().zip(&service_active_parameters) {
            let levels = service.levels();
            tokens_per_query.push(
                levels
                    .iter()
                    .map(|level| {
                        service.prompt_tokens + service.output_tokens + level.reasoning_tokens
                    })
                    .collect(),
            );
            hours_per_billion_queries.push(
                levels
                    .iter()
                    .map(|level| {
                        scenario
                            .gpus
                            .iter()
                            .map(|gpu| {
                                let prefill = INFERENCE_FLOP_PER_PARAMETER_TOKEN
                                    * active
                                    * service.prompt_tokens
                                    / scenario.inference.prefill_flop_per_second(gpu);
                                let decode = INFERENCE_FLOP_PER_PARAMETER_TOKEN
                                    * active
                                    * (service.output_tokens + level.reasoning_tokens)
                                    / scenario.inference.decode_flop_per_second(gpu);
                                // seconds per query × 1e9 queries ÷ 3600 ÷ 1e6 → M GPU-h per B queries
                                (prefill + decode) * 1e9 / 3600.0 / 1e6
                            })
                            .collect()
                    })
                    .collect(),
            );
        }
        let pue = economics.pue;
        Ok(Self {
            periods,
            million_hours_per_thousand_gpus: hours / 1000.0,
            life_periods,
            building_life_periods,
            discount,
            training_zflop_per_million_hours: scenario
                .gpus
                .iter()
                .map(|gpu| {
                    gpu.peak_flop_per_second(scenario.training.precision)
                        * scenario.training.mfu
                        * 3600.0
                        * 1e6
                        / 1e21
                })
                .collect(),
            installed: scenario
                .gpus
                .iter()
                .map(|gpu| {
                    (0..periods)
                        .map(|period| {
                            if period + gpu.installed_age_periods < life_periods {
                                gpu.installed_thousands
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect(),
            energy_musd_per_thousand: scenario
                .gpus
                .iter()
                .map(|gpu| {
                    gpu.server_kilowatts() * pue * hours * economics.electricity_usd_per_kwh
                        / 1000.0
                })
                .collect(),
            mw_per_thousand: scenario
                .gpus
                .iter()
                .map(|gpu| gpu.server_kilowatts() * pue)
                .collect(),
            price_musd_per_thousand: scenario
                .gpus
                .iter()
                .map(|gpu| gpu.price_usd.map(|price| price / 1000.0))
                .collect(),
            rent_musd_per_thousand: scenario
                .gpus
                .iter()
                .map(|gpu| gpu.rent_usd_per_hour.map(|rent| rent * hours / 1000.0))
                .collect(),
            required_zflop,
            model_sizes,
            service_active_parameters,
            service_start,
            hours_per_billion_queries,
            tokens_per_query,
            quality_cuts,
        })
    }

    /// Fraction of a GPU bought in `period` (lead time `lead`) still unused at the horizon end.
    pub fn gpu_salvage_fraction(&self, period: usize, lead: usize) -> f64 {
        let retire = period + lead + self.life_periods;
        (retire.saturating_sub(self.periods) as f64 / self.life_periods as f64).min(1.0)
    }

    /// Fraction of a build started in `period` left at the horizon end.
    pub fn building_salvage_fraction(&self, period: usize, lead: usize) -> f64 {
        let retire = period + lead + self.building_life_periods;
        (retire.saturating_sub(self.periods) as f64 / self.building_life_periods as f64).min(1.0)
    }

    /// Demand segment sizes (B queries) and values ($ per query) of a service in a period.
    pub fn segments(scenario: &Scenario, service: usize, period: usize) -> Vec<(f64, f64)> {
        let demand = &scenario.services[service].demand;
        let growth = demand.growth(period, scenario.periods.per_year);
        demand
            .segments_at_start()
            .into_iter()
            .map(|segment| (segment.queries_b * growth, segment.value_usd))
            .collect()
    }

    /// Queries a service must serve in a period (min_cost), B.
    pub fn required_queries(scenario: &Scenario, service: usize, period: usize) -> f64 {
        let demand = &scenario.services[service].demand;
        demand.reference_queries_b
            * demand.required_fraction
            * demand.growth(period, scenario.periods.per_year)
    }
}

/// The decision variables, kept by index for reading the solution.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// buy[g][t].
    pub buy: Vec<Vec<Option<VariableId>>>,
    /// rent[g][t].
    pub rent: Vec<Vec<Option<VariableId>>>,
    /// build[t].
    pub build: Vec<VariableId>,
    /// pretrain[m] as (g, t, variable).
    pub pretrain: Vec<Vec<(usize, usize, VariableId)>>,
    /// posttrain[m] as (g, t, variable).
    pub posttrain: Vec<Vec<(usize, usize, VariableId)>>,
    /// compute[m].
    pub compute: Vec<VariableId>,
    /// loss[m] when quality has a value.
    pub loss: Vec<Option<VariableId>>,
    /// serve[s] as (l, t, g, variable).
    pub serve: Vec<Vec<(usize, usize, usize, VariableId)>>,
    /// segment[s] as (k, t, variable, value $ per query).
    pub segment: Vec<Vec<(usize, usize, VariableId, f64)>>,
    /// Rows whose duals are reported: (row, what it prices).
    pub priced_rows: Vec<(RowId, PricedRow)>,
}

/// What a reported dual prices.
#[derive(Debug, Clone, PartialEq)]
pub enum PricedRow {
    /// A million GPU-hours of type g in period t ($M per M GPU-h = $ per GPU-hour).
    GpuHour(usize, usize),
    /// A MW in period t.
    Megawatt(usize),
    /// A capex $M in period t.
    Capex(usize),
    /// A billion queries of service s in period t.
    Query(usize, usize),
    /// A ZFLOP of training for model m.
    TrainingCompute(usize),
}

/// The fleet LP: the scenario, its derived coefficients, the program and its variables.
pub struct FleetModel<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// Derived coefficients.
    pub derived: Derived,
    /// The LP.
    pub program: LinearProgram,
    /// Its variables.
    pub decisions: Decisions,
}

impl<'a> FleetModel<'a> {
    /// Builds the whole LP from a validated scenario.
    pub fn build(scenario: &'a Scenario) -> Result<Self> {
        let derived = Derived::new(scenario)?;
        let direction = match scenario.objective {
            Objective::MinCost => Direction::Minimise,
            Objective::MaxValue => Direction::Maximise,
        };
        let mut model = Self {
            scenario,
            derived,
            program: LinearProgram::new(direction),
            decisions: Decisions::default(),
        };
        model.add_fleet();
        model.add_builds();
        model.add_training();
        model.add_services();
        model.add_gpu_hours();
        model.add_power();
        model.add_capex_budget();
        Ok(model)
    }

    /// Adds `cost` ($M, in period `period`'s money) to the objective with the right sign and
    /// discount; `value` terms are costs with a minus sign.
    fn add_cost(&mut self, variable: VariableId, cost: f64, period: usize) {
        let sign = match self.program.direction {
            Direction::Minimise => 1.0,
            Direction::Maximise => -1.0,
        };
        self.program
            .objective
            .add_term(variable, sign * cost * self.derived.discount[period]);
    }

    fn add_cost_constant(&mut self, cost: f64, period: usize) {
        let sign = match self.program.direction {
            Direction::Minimise => 1.0,
            Direction::Maximise => -1.0,
        };
        self.program.objective.constant += sign * cost * self.derived.discount[period];
    }

    /// buy[g,t] and rent[g,t] with their costs, limits and energy.
    fn add_fleet(&mut self) {
        let scenario = self.scenario;
        let periods = self.derived.periods;
        for (g, gpu) in scenario.gpus.iter().enumerate() {
            let mut buys = Vec::new();
            let mut rents = Vec::new();
            for t in 0..periods {
                let label = format!("{} {}", gpu.name, scenario.periods.label(t));
                let buy = match self.derived.price_musd_per_thousand[g] {
                    Some(price) if gpu.available_in(t) => {
                        let buy =
                            self.program
                                .add_variable(format!("buy {label}"), 0.0, f64::INFINITY);
                        // Cash at purchase; the value left after the horizon comes back.
                        self.add_cost(buy, price, t);
                        let salvage = self.derived.gpu_salvage_fraction(t, gpu.lead_time_periods);
                        self.add_cost(
                            buy,
                            -price * salvage * self.derived.discount[periods]
                                / self.derived.discount[t],
                            t,
                        );
                        // Owned GPUs draw power around the clock while in service.
                        let arrival = t + gpu.lead_time_periods;
                        for service_period in
                            arrival..(arrival + self.derived.life_periods).min(periods)
                        {
                            self.add_cost(
                                buy,
                                self.derived.energy_musd_per_thousand[g],
                                service_period,
                            );
                        }
                        if let Some(limit) = &gpu.buy_limit_thousands {
                            self.program.add_constraint(
                                groups::GPU_SUPPLY,
                                label.clone(),
                                buy.into(),
                                Sense::AtMost,
                                limit.at(t),
                            );
                        }
                        Some(buy)
                    }
                    _ => None,
                };
                let rent = match self.derived.rent_musd_per_thousand[g] {
                    Some(rent_cost) if gpu.available_in(t) => {
                        let rent =
                            self.program
                                .add_variable(format!("rent {label}"), 0.0, f64::INFINITY);
                        self.add_cost(rent, rent_cost, t);
                        if let Some(limit) = &gpu.rent_limit_thousands {
                            self.program.add_constraint(
                                groups::RENTAL_MARKET,
                                label.clone(),
                                rent.into(),
                                Sense::AtMost,
                                limit.at(t),
                            );
                        }
                        Some(rent)
                    }
                    _ => None,
                };
                buys.push(buy);
                rents.push(rent);
                let installed = self.derived.installed[g][t];
                self.add_cost_constant(installed * self.derived.energy_musd_per_thousand[g], t);
            }
            self.decisions.buy.push(buys);
            self.decisions.rent.push(rents);
        }
    }

    /// Whether GPU type g can have any capacity in period t (installed, rentable, or a cohort
    /// that can be in service); usage variables exist only where it can.
    fn capacity_possible(&self, g: usize, t: usize) -> bool {
        self.derived.installed[g][t] > 0.0
            || self.decisions.rent[g][t].is_some()
            || !self.stock(g, t).terms.is_empty()
    }

    /// stock[g,t]: purchased cohorts in service in period t (installed GPUs are a constant).
    pub fn stock(&self, g: usize, t: usize) -> LinearExpression {
        let lead = self.scenario.gpus[g].lead_time_periods;
        let mut stock = LinearExpression::new();
        for (bought, buy) in self.decisions.buy[g].iter().enumerate() {
            if let Some(buy) = buy
                && bought + lead <= t
                && t < bought + lead + self.derived.life_periods
            {
                stock.add_term(*buy, 1.0);
            }
        }
        stock.constant = self.derived.installed[g][t];
        stock
    }

    /// build[t] MW with cost, salvage, rate and site limits.
    fn add_builds(&mut self) {
        let scenario = self.scenario;
        let economics = &scenario.economics;
        let periods = self.derived.periods;
        let mut total = LinearExpression::new();
        for t in 0..periods {
            let label = scenario.periods.label(t);
            let build = self
                .program
                .add_variable(format!("build {label}"), 0.0, f64::INFINITY);
            let salvage = self
                .derived
                .building_salvage_fraction(t, economics.build_lead_time_periods);
            let cost = economics.build_cost_musd_per_mw;
            self.add_cost(
                build,
                cost - cost * salvage * self.derived.discount[periods] / self.derived.discount[t],
                t,
            );
            if let Some(limit) = economics.build_limit_mw_per_period {
                self.program.add_constraint(
                    groups::BUILD_RATE,
                    label,
                    build.into(),
                    Sense::AtMost,
                    limit,
                );
            }
            total.add_term(build, 1.0);
            self.decisions.build.push(build);
        }
        if let Some(limit) = economics.mw_limit {
            self.program.add_constraint(
                groups::SITE_LIMIT,
                "total",
                total,
                Sense::AtMost,
                limit - economics.installed_mw,
            );
        }
    }

    /// pretrain/posttrain GPU-hours, compute[m] and, when quality has a value, loss[m].
    fn add_training(&mut self) {
        let scenario = self.scenario;
        for (m, trained) in scenario.training.models.iter().enumerate() {
            let required = self.derived.required_zflop[m];
            let compute = self.program.add_variable(
                format!("compute {}", trained.name),
                0.0,
                required * trained.max_compute_multiple,
            );
            let target_row = self.program.add_constraint(
                groups::TRAINING_TARGET,
                trained.name.clone(),
                compute.into(),
                Sense::AtLeast,
                required,
            );
            let window = trained.release_period - trained.training_periods..trained.release_period;
            let mut delivered = LinearExpression::new();
            let mut delivered_post = LinearExpression::new();
            let mut pretrain = Vec::new();
            let mut posttrain = Vec::new();
            for t in window {
                for (g, gpu) in scenario.gpus.iter().enumerate() {
                    if !self.capacity_possible(g, t) {
                        continue;
                    }
                    let label = format!(
                        "{} {} {}",
                        trained.name,
                        gpu.name,
                        scenario.periods.label(t)
                    );
                    let pre =
                        self.program
                            .add_variable(format!("pretrain {label}"), 0.0, f64::INFINITY);
                    let post =
                        self.program
                            .add_variable(format!("posttrain {label}"), 0.0, f64::INFINITY);
                    delivered.add_term(pre, self.derived.training_zflop_per_million_hours[g]);
                    delivered_post.add_term(post, self.derived.training_zflop_per_million_hours[g]);
                    pretrain.push((g, t, pre));
                    posttrain.push((g, t, post));
                }
            }
            let fraction = trained
                .post_training_fraction
                .unwrap_or(scenario.training.post_training_fraction);
            self.program.add_constraint(
                groups::PRETRAINING,
                trained.name.clone(),
                delivered - compute.into(),
                Sense::AtLeast,
                0.0,
            );
            self.program.add_constraint(
                groups::POST_TRAINING,
                trained.name.clone(),
                delivered_post - fraction * compute,
                Sense::AtLeast,
                0.0,
            );
            self.decisions
                .priced_rows
                .push((target_row, PricedRow::TrainingCompute(m)));
            let loss = self.derived.quality_cuts[m].clone().map(|cuts| {
                let loss =
                    self.program
                        .add_variable(format!("loss {}", trained.name), 0.0, f64::INFINITY);
                for (index, cut) in cuts.cuts.iter().enumerate() {
                    self.program.add_constraint(
                        groups::QUALITY_CUT,
                        format!("{} cut {index}", trained.name),
                        LinearExpression::from(loss) - cut.slope * compute,
                        Sense::AtLeast,
                        cut.intercept,
                    );
                }
                // $M per 0.01 of loss, counted at release, relative to the required compute's loss.
                let reference = cuts
                    .cuts
                    .first()
                    .map_or(0.0, |cut| cut.slope * cut.touch + cut.intercept);
                let value = trained.loss_value_musd * 100.0;
                self.add_cost(loss, value, trained.release_period);
                self.add_cost_constant(-value * reference, trained.release_period);
                loss
            });
            self.decisions.compute.push(compute);
            self.decisions.loss.push(loss);
            self.decisions.pretrain.push(pretrain);
            self.decisions.posttrain.push(posttrain);
        }
    }

    /// serve[s,l,t,g], demand targets or segments, accuracy floors and query value.
    fn add_services(&mut self) {
        let scenario = self.scenario;
        for (s, service) in scenario.services.iter().enumerate() {
            let levels = service.levels();
            let mut serves = Vec::new();
            let mut segments = Vec::new();
            for t in self.derived.service_start[s]..self.derived.periods {
                let label = format!("{} {}", service.name, scenario.periods.label(t));
                let mut served = LinearExpression::new();
                let mut accuracy = LinearExpression::new();
                for (l, level) in levels.iter().enumerate() {
                    for (g, gpu) in scenario.gpus.iter().enumerate() {
                        if !self.capacity_possible(g, t) {
                            continue;
                        }
                        let serve = self.program.add_variable(
                            format!("serve {label} {} {}", level.name, gpu.name),
                            0.0,
                            f64::INFINITY,
                        );
                        served.add_term(serve, 1.0);
                        if let Some(minimum) = service.min_accuracy {
                            accuracy.add_term(serve, level.accuracy - minimum);
                        }
                        if scenario.objective == Objective::MaxValue
                            && service.accuracy_value_usd > 0.0
                        {
                            self.add_cost(
                                serve,
                                -service.accuracy_value_usd * level.accuracy * 1000.0,
                                t,
                            );
                        }
                        serves.push((l, t, g, serve));
                    }
                }
                if service.min_accuracy.is_some() {
                    self.program.add_constraint(
                        groups::ACCURACY,
                        label.clone(),
                        accuracy,
                        Sense::AtLeast,
                        0.0,
                    );
                }
                match scenario.objective {
                    Objective::MinCost => {
                        let row = self.program.add_constraint(
                            groups::DEMAND_TARGET,
                            label.clone(),
                            served,
                            Sense::AtLeast,
                            Derived::required_queries(scenario, s, t),
                        );
                        self.decisions
                            .priced_rows
                            .push((row, PricedRow::Query(s, t)));
                    }
                    Objective::MaxValue => {
                        let mut in_segments = LinearExpression::new();
                        for (k, (size, value)) in
                            Derived::segments(scenario, s, t).into_iter().enumerate()
                        {
                            let segment = self.program.add_variable(
                                format!("segment {label} {k}"),
                                0.0,
                                f64::INFINITY,
                            );
                            // $ per query × B queries = $1000M per unit.
                            self.add_cost(segment, -value * 1000.0, t);
                            let row = self.program.add_constraint(
                                groups::DEMAND_SEGMENT,
                                format!("{label} segment {k}"),
                                segment.into(),
                                Sense::AtMost,
                                size,
                            );
                            if k == 0 {
                                self.decisions
                                    .priced_rows
                                    .push((row, PricedRow::Query(s, t)));
                            }
                            in_segments.add_term(segment, 1.0);
                            segments.push((k, t, segment, value));
                        }
                        self.program.add_constraint(
                            groups::SERVED,
                            label.clone(),
                            served - in_segments,
                            Sense::Equal,
                            0.0,
                        );
                    }
                }
            }
            self.decisions.serve.push(serves);
            self.decisions.segment.push(segments);
        }
    }

    /// GPU-hours used ≤ GPU-hours available, by GPU type and period.
    fn add_gpu_hours(&mut self) {
        let scenario = self.scenario;
        let periods = self.derived.periods;
        let mut used: Vec<Vec<LinearExpression>> =
            vec![vec![LinearExpression::new(); periods]; scenario.gpus.len()];
        for stage in [&self.decisions.pretrain, &self.decisions.posttrain] {
            for model in stage.iter() {
                for (g, t, variable) in model {
                    used[*g][*t].add_term(*variable, 1.0);
                }
            }
        }
        for (s, serves) in self.decisions.serve.iter().enumerate() {
            for (l, t, g, variable) in serves {
                used[*g][*t].add_term(*variable, self.derived.hours_per_billion_queries[s][*l][*g]);
            }
        }
        // Every used GPU-hour pays the running cost ($ per GPU-hour × M GPU-h = $M).
        let operations = scenario.economics.operations_usd_per_gpu_hour;
        for used_by_period in &used {
            for (t, expression) in used_by_period.iter().enumerate() {
                for (variable, hours) in expression.terms.clone() {
                    self.add_cost(variable, operations * hours, t);
                }
            }
        }
        for (g, gpu) in scenario.gpus.iter().enumerate() {
            for (t, used) in used[g].iter_mut().enumerate() {
                if !self.capacity_possible(g, t) {
                    continue;
                }
                let mut available = self.stock(g, t);
                if let Some(rent) = self.decisions.rent[g][t] {
                    available.add_term(rent, 1.0);
                }
                let expression =
                    std::mem::take(used) - self.derived.million_hours_per_thousand_gpus * available;
                let row = self.program.add_constraint(
                    groups::GPU_HOURS,
                    format!("{} {}", gpu.name, scenario.periods.label(t)),
                    expression,
                    Sense::AtMost,
                    0.0,
                );
                self.decisions
                    .priced_rows
                    .push((row, PricedRow::GpuHour(g, t)));
            }
        }
    }

    /// Power of owned GPUs ≤ MW built, by period.
    fn add_power(&mut self) {
        let scenario = self.scenario;
        let lead = scenario.economics.build_lead_time_periods;
        for t in 0..self.derived.periods {
            let mut drawn = LinearExpression::new();
            for g in 0..scenario.gpus.len() {
                drawn += self.derived.mw_per_thousand[g] * self.stock(g, t);
            }
            for (started, build) in self.decisions.build.iter().enumerate() {
                if started + lead <= t {
                    drawn.add_term(*build, -1.0);
                }
            }
            let row = self.program.add_constraint(
                groups::POWER,
                scenario.periods.label(t),
                drawn,
                Sense::AtMost,
                scenario.economics.installed_mw,
            );
            self.decisions
                .priced_rows
                .push((row, PricedRow::Megawatt(t)));
        }
    }

    /// Capex per period ≤ budget.
    fn add_capex_budget(&mut self) {
        let scenario = self.scenario;
        for t in 0..self.derived.periods {
            let mut spent = LinearExpression::new();
            for (g, buys) in self.decisions.buy.iter().enumerate() {
                if let (Some(buy), Some(price)) = (buys[t], self.derived.price_musd_per_thousand[g])
                {
                    spent.add_term(buy, price);
                }
            }
            spent.add_term(
                self.decisions.build[t],
                scenario.economics.build_cost_musd_per_mw,
            );
            let row = self.program.add_constraint(
                groups::CAPEX_BUDGET,
                scenario.periods.label(t),
                spent,
                Sense::AtMost,
                scenario.economics.capex_budget_musd.at(t),
            );
            self.decisions.priced_rows.push((row, PricedRow::Capex(t)));
        }
    }
}

/// Plans a scenario: builds the LP, solves it with `solver`, checks the answer and reports.
pub fn plan(scenario: &Scenario, solver: SolverChoice) -> Result<Plan> {
    scenario.validate()?;
    let model = FleetModel::build(scenario)?;
    let solution: LinearSolution = model.program.solve(solver)?;
    Plan::from_solution(&model, &solution)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::scenario::PerPeriod;
    use crate::{Error, library};

    fn shipped(name: &str) -> Scenario {
        Scenario::from_yaml(library::text(name).unwrap()).unwrap()
    }

    fn with_budget(mut scenario: Scenario, budget: f64) -> Scenario {
        scenario.economics.capex_budget_musd = PerPeriod::Constant(budget);
        scenario
    }

    #[test]
    fn an_untrainable_model_is_diagnosed_as_its_training_target() {
        let mut scenario = shipped("baseline");
        scenario.training.models[1].parameters_b = Some(100_000.0);
        match plan(&scenario, SolverChoice::Clarabel) {
            Err(Error::Infeasible { diagnosis, groups }) => {
                assert_eq!(diagnosis[0].group, "training_target", "{groups}");
                assert_eq!(diagnosis[0].worst_row, "frontier-2026", "{groups}");
                assert!(groups.contains("release later"), "{groups}");
            }
            other => panic!(
                "expected an infeasible plan, got {:?}",
                other.map(|plan| plan.objective_musd)
            ),
        }
    }

    #[test]
    fn installed_gpus_beyond_the_power_available_are_diagnosed_as_power() {
        // 70k installed GPUs draw ≈ 96 MW; with 10 MW and builds two years away, only the
        // power group can give.
        let mut scenario = shipped("baseline");
        scenario.economics.installed_mw = 10.0;
        match plan(&scenario, SolverChoice::Clarabel) {
            Err(Error::Infeasible { diagnosis, groups }) => {
                assert_eq!(diagnosis[0].group, "power", "{groups}");
                assert!(groups.contains("installed_mw"), "{groups}");
                assert!(!groups.contains("capex_budget"), "{groups}");
            }
            other => panic!(
                "expected an infeasible plan, got {:?}",
                other.map(|plan| plan.objective_musd)
            ),
        }
    }

    #[test]
    fn a_budget_that_is_not_binding_is_never_blamed() {
        let mut scenario = shipped("baseline");
        for gpu in &mut scenario.gpus {
            gpu.rent_usd_per_hour = None;
            gpu.rent_limit_thousands = None;
        }
        scenario.economics.build_limit_mw_per_period = Some(0.0);
        scenario.economics.capex_budget_musd = PerPeriod::Constant(1e6);
        match plan(&scenario, SolverChoice::Clarabel) {
            Err(Error::Infeasible { diagnosis, groups }) => {
                assert!(!diagnosis.is_empty(), "{groups}");
                assert!(
                    diagnosis
                        .iter()
                        .all(|relaxation| relaxation.group != "capex_budget"),
                    "{groups}"
                );
            }
            other => panic!(
                "expected an infeasible plan, got {:?}",
                other.map(|plan| plan.objective_musd)
            ),
        }
    }

    #[test]
    fn min_cost_plan_meets_every_target_exactly_and_prices_them() {
        let scenario = shipped("baseline");
        let plan = plan(&scenario, SolverChoice::Clarabel).unwrap();
        for (model, result) in scenario.training.models.iter().zip(&plan.models) {
            assert!(
                (result.planned_zflop - result.required_zflop).abs() < 1e-4 * result.required_zflop,
                "{}",
                model.name
            );
        }
        let required: f64 = (0..scenario.periods.count)
            .map(|t| {
                (0..scenario.services.len())
                    .filter(|s| t >= Derived::new(&scenario).unwrap().service_start[*s])
                    .map(|s| Derived::required_queries(&scenario, s, t))
                    .sum::<f64>()
            })
            .sum();
        assert!(
            (plan.totals.queries_b - required).abs() < 1e-4 * required,
            "{} vs {required}",
            plan.totals.queries_b
        );
        assert!(
            plan.shadow_prices
                .iter()
                .any(|price| price.kind == "query" && price.price > 0.0)
        );
        assert!(
            plan.shadow_prices
                .iter()
                .any(|price| price.kind == "GPU-hour" && price.price > 0.0)
        );
        assert!(
            plan.binding
                .iter()
                .any(|group| group.group == "demand_target")
        );
    }

    #[test]
    fn deepseek_shock_cuts_training_hours_tenfold_or_more() {
        let baseline = plan(&shipped("baseline"), SolverChoice::Clarabel).unwrap();
        let shock = plan(&shipped("deepseek-shock"), SolverChoice::Clarabel).unwrap();
        assert!(shock.totals.hours.pretraining * 10.0 <= baseline.totals.hours.pretraining);
        assert!(shock.totals.capex_spent_musd <= baseline.totals.capex_spent_musd);
    }

    #[test]
    fn microlp_and_clarabel_agree_on_a_shipped_scenario() {
        let scenario = shipped("export-controls");
        let clarabel = plan(&scenario, SolverChoice::Clarabel).unwrap();
        let microlp = plan(&scenario, SolverChoice::Microlp).unwrap();
        assert!(
            (clarabel.objective_musd - microlp.objective_musd).abs()
                < 1e-5 * clarabel.objective_musd.abs()
        );
        assert!(microlp.shadow_prices.is_empty());
    }

    #[cfg(feature = "highs")]
    #[test]
    fn highs_and_clarabel_agree_on_every_shipped_scenario() {
        for (name, _) in library::SHIPPED {
            let scenario = shipped(name);
            let clarabel = plan(&scenario, SolverChoice::Clarabel).unwrap();
            let highs = plan(&scenario, SolverChoice::Highs).unwrap();
            let scale = 1.0 + clarabel.objective_musd.abs();
            assert!(
                (clarabel.objective_musd - highs.objective_musd).abs() < 1e-5 * scale,
                "{name}"
            );
        }
    }

    #[cfg(feature = "highs")]
    #[test]
    fn highs_and_clarabel_agree_on_capex_shadow_prices_when_the_budget_binds() {
        let scenario = with_budget(shipped("jevons"), 400.0);
        let clarabel = plan(&scenario, SolverChoice::Clarabel).unwrap();
        let highs = plan(&scenario, SolverChoice::Highs).unwrap();
        let capex = |plan: &Plan| -> Vec<(String, f64)> {
            plan.shadow_prices
                .iter()
                .filter(|price| price.kind == "capex dollar")
                .map(|price| (price.label.clone(), price.price))
                .collect()
        };
        let (clarabel_prices, highs_prices) = (capex(&clarabel), capex(&highs));
        assert!(!clarabel_prices.is_empty(), "the budget should bind");
        for (label, price) in &clarabel_prices {
            let other = highs_prices
                .iter()
                .find(|(other, _)| other == label)
                .map_or(0.0, |(_, price)| *price);
            assert!(
                (price - other).abs() < 1e-3 * (1.0 + price.abs()),
                "{label}: clarabel {price}, highs {other}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// More capex budget never lowers the value-maximising optimum.
        #[test]
        fn more_budget_never_lowers_max_value(budget in 500.0f64..6000.0, extra in 0.0f64..3000.0) {
            let scenario = shipped("jevons");
            let lower = plan(&with_budget(scenario.clone(), budget), SolverChoice::Clarabel).unwrap();
            let higher = plan(&with_budget(scenario, budget + extra), SolverChoice::Clarabel).unwrap();
            prop_assert!(higher.objective_musd >= lower.objective_musd - 1e-6 * (1.0 + lower.objective_musd.abs()));
        }

        /// More capex budget never raises the minimum cost.
        #[test]
        fn more_budget_never_raises_min_cost(budget in 1500.0f64..6000.0, extra in 0.0f64..3000.0) {
            let scenario = shipped("baseline");
            let lower = plan(&with_budget(scenario.clone(), budget), SolverChoice::Clarabel);
            let higher = plan(&with_budget(scenario, budget + extra), SolverChoice::Clarabel).unwrap();
            if let Ok(lower) = lower {
                prop_assert!(higher.objective_musd <= lower.objective_musd + 1e-6 * (1.0 + lower.objective_musd.abs()));
            }
        }
    }
}
