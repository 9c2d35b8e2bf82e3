//! The scenario file: everything the planner needs to know about one question, in YAML.
//!
//! Field by field documentation is on the types below and in `planner/SCENARIOS.md`. Values
//! are written in natural units (dollars per GPU, TFLOP/s, billions of parameters, trillions
//! of tokens, billions of queries per period, $M of budget); the model rescales them.
//! [`Scenario::validate`] rejects anything the model cannot use with the path of the field
//! (`gpus[1].rent_usd_per_hour`) and the fix.

use serde::{Deserialize, Serialize};

use crate::scaling::{ConstantSet, ReasoningCurve};
use crate::{Error, Result, invalid};

/// One planning question: a fleet, its economics, the models to train and the services to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in tables (`baseline`, `deepseek-shock`).
    pub name: String,
    /// One paragraph: what question the scenario asks.
    #[serde(default)]
    pub description: String,
    /// Where the numbers come from (papers, filings, price sheets).
    #[serde(default)]
    pub sources: Vec<String>,
    /// What the LP optimises.
    #[serde(default)]
    pub objective: Objective,
    /// The planning horizon.
    pub periods: Periods,
    /// Which published scaling-law constants turn compute into loss.
    #[serde(default)]
    pub scaling: ScalingSettings,
    /// The accelerator catalogue: what can be bought or rented, when, at what price.
    pub gpus: Vec<GpuType>,
    /// Budget, depreciation, power and discounting.
    pub economics: Economics,
    /// Model-FLOP utilisation and the models to train.
    pub training: Training,
    /// How inference throughput is derived from a GPU's FLOP/s and memory bandwidth.
    #[serde(default)]
    pub inference: InferenceSettings,
    /// The services that answer queries, with their demand curves.
    pub services: Vec<Service>,
}

/// What the plan optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Minimise discounted cost while training every model by its release and serving each
    /// service's required demand.
    #[default]
    MinCost,
    /// Maximise discounted value (queries served × willingness to pay, quality) minus cost,
    /// under the capex budget; demand beyond what pays for itself is left unserved.
    MaxValue,
}

/// The planning horizon: `count` periods of `hours` each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Periods {
    /// Label of the first period, e.g. `2025Q1` (quarters are numbered on from it).
    pub first: String,
    /// Number of periods.
    pub count: usize,
    /// Hours in one period (2190 for a quarter).
    #[serde(default = "default_hours")]
    pub hours: f64,
    /// Periods per year (4 for quarters); used for depreciation and discounting.
    #[serde(default = "default_periods_per_year")]
    pub per_year: f64,
}

fn default_hours() -> f64 {
    2190.0
}
fn default_periods_per_year() -> f64 {
    4.0
}

impl Periods {
    /// The label of period `index`, counting quarters from `first` when it looks like `YYYYQn`.
    pub fn label(&self, index: usize) -> String {
        let parsed = self.first.split_once('Q').and_then(|(year, quarter)| {
            Some((year.parse::<usize>().ok()?, quarter.parse::<usize>().ok()?))
        });
        match parsed {
            Some((year, quarter)) if (1..=4).contains(&quarter) && self.per_year == 4.0 => {
                let absolute = year * 4 + quarter - 1 + index;
                format!("{}Q{}", absolute / 4, absolute % 4 + 1)
            }
            _ => format!("{}+{index}", self.first),
        }
    }
}

/// Scaling-law settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSettings {
    /// Constant set for Chinchilla's parametric loss: `hoffmann`, `hoffmann-tex` or `epoch`.
    #[serde(default)]
    pub constants: ConstantSet,
    /// Tangent cuts used to approximate the loss-vs-compute curve in the LP (≥ 2).
    #[serde(default = "default_tangent_cuts")]
    pub tangent_cuts: usize,
}

fn default_tangent_cuts() -> usize {
    8
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self {
            constants: ConstantSet::default(),
            tangent_cuts: default_tangent_cuts(),
        }
    }
}

/// A number that is either the same in every period or given period by period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerPeriod {
    /// The same value every period.
    Constant(f64),
    /// One value per period (the list must cover every period).
    Each(Vec<f64>),
}

impl PerPeriod {
    /// The value in period `index` (the last listed value if the list is short).
    pub fn at(&self, index: usize) -> f64 {
        match self {
            Self::Constant(value) => *value,
            Self::Each(values) => values.get(index).or(values.last()).copied().unwrap_or(0.0),
        }
    }

    fn validate(&self, field: &str, periods: usize, minimum: f64) -> Result<()> {
        if let Self::Each(values) = self
            && values.len() != periods
        {
            return Err(invalid(
                field,
                format!("lists {} values for {periods} periods", values.len()),
                "give one value per period, or a single number for all periods",
            ));
        }
        for index in 0..periods {
            let value = self.at(index);
            if !value.is_finite() || value < minimum {
                return Err(invalid(
                    format!("{field}[{index}]"),
                    format!("{value} is below {minimum} or not finite"),
                    format!("use a finite number ≥ {minimum}"),
                ));
            }
        }
        Ok(())
    }
}

/// Which peak FLOP/s a phase runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Dense BF16 peak.
    #[default]
    Bf16,
    /// Dense FP8 peak (falls back to BF16 for GPUs without FP8).
    Fp8,
}

/// One accelerator type. Store dense peaks (no sparsity) and put efficiency in the MFUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuType {
    /// Name (`H100`, `H800`, `H20`, `B200` …).
    pub name: String,
    /// Dense BF16 peak, TFLOP/s.
    pub bf16_tflops: f64,
    /// Dense FP8 peak, TFLOP/s (absent: no FP8, BF16 is used).
    #[serde(default)]
    pub fp8_tflops: Option<f64>,
    /// Memory, GB (reported; decode throughput uses bandwidth).
    pub memory_gb: f64,
    /// Memory bandwidth, TB/s (bounds decode throughput).
    pub bandwidth_tb_s: f64,
    /// Board power, W.
    pub watts: f64,
    /// All-in server power per GPU (CPU, network share), kW; default 1.85 × board power.
    #[serde(default)]
    pub server_kw: Option<f64>,
    /// Purchase price per GPU including its share of the server, $ (absent: cannot be bought).
    #[serde(default)]
    pub price_usd: Option<f64>,
    /// Rental price, $ per GPU-hour (absent: cannot be rented).
    #[serde(default)]
    pub rent_usd_per_hour: Option<f64>,
    /// Most GPUs that can be rented in a period, thousands (absent: unlimited).
    #[serde(default)]
    pub rent_limit_thousands: Option<PerPeriod>,
    /// Most GPUs that can be bought in a period, thousands (absent: unlimited).
    #[serde(default)]
    pub buy_limit_thousands: Option<PerPeriod>,
    /// First period (0-based) in which it can be bought or rented.
    #[serde(default)]
    pub available_from: usize,
    /// First period in which it can no longer be bought or rented (export controls); absent:
    /// available to the end.
    #[serde(default)]
    pub available_until: Option<usize>,
    /// GPUs already installed at the start, thousands.
    #[serde(default)]
    pub installed_thousands: f64,
    /// Age of the installed GPUs at the start, periods.
    #[serde(default)]
    pub installed_age_periods: usize,
    /// Periods between paying for a GPU and using it.
    #[serde(default = "default_lead_time")]
    pub lead_time_periods: usize,
}

fn default_lead_time() -> usize {
    1
}

impl GpuType {
    /// Peak FLOP/s at a precision.
    pub fn peak_flop_per_second(&self, precision: Precision) -> f64 {
        let tflops = match precision {
            Precision::Bf16 => self.bf16_tflops,
            Precision::Fp8 => self.fp8_tflops.unwrap_or(self.bf16_tflops),
        };
        tflops * 1e12
    }

    /// All-in kW per GPU at the server.
    pub fn server_kilowatts(&self) -> f64 {
        self.server_kw.unwrap_or(self.watts * 1.85 / 1000.0)
    }

    /// Whether the GPU can be bought or rented in `period`.
    pub fn available_in(&self, period: usize) -> bool {
        period >= self.available_from && self.available_until.is_none_or(|until| period < until)
    }
}

/// Money, depreciation, power and discounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Economics {
    /// Capital budget per period for GPUs and data-centre builds, $M.
    pub capex_budget_musd: PerPeriod,
    /// Useful life of a GPU, years; it retires after it (Microsoft/Alphabet 6, Meta 5.5).
    pub depreciation_years: f64,
    /// Electricity price, $ per kWh.
    pub electricity_usd_per_kwh: f64,
    /// Power usage effectiveness (facility power ÷ IT power), ≥ 1.
    pub pue: f64,
    /// Cost to build one MW of critical load, $M.
    pub build_cost_musd_per_mw: f64,
    /// Periods between paying for a build and using it.
    pub build_lead_time_periods: usize,
    /// MW of critical load available at the start.
    pub installed_mw: f64,
    /// Most MW that can be started in one period (absent: unlimited).
    #[serde(default)]
    pub build_limit_mw_per_period: Option<f64>,
    /// Most MW the organisation can have in total (grid, sites); absent: unlimited.
    #[serde(default)]
    pub mw_limit: Option<f64>,
    /// Life of a data-centre build, years (for the value left at the horizon).
    #[serde(default = "default_building_life")]
    pub building_life_years: f64,
    /// Annual discount rate (0.08 = 8%).
    pub discount_rate: f64,
    /// Running cost of a used GPU-hour beyond electricity (network, staff, maintenance), $.
    /// It also makes the LP prefer not to burn GPU-hours that nothing needs.
    #[serde(default = "default_operations_cost")]
    pub operations_usd_per_gpu_hour: f64,
}

fn default_operations_cost() -> f64 {
    0.1
}

fn default_building_life() -> f64 {
    15.0
}

/// How training compute is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Model-FLOP utilisation of pre-training and post-training (DeepSeek-V3 ≈ 0.35 of BF16).
    pub mfu: f64,
    /// Peak used for training.
    #[serde(default)]
    pub precision: Precision,
    /// Multiplier on effective compute from algorithmic progress (10 = a tenth of the FLOP
    /// for the same loss); the `deepseek-shock` lever.
    #[serde(default = "one")]
    pub algorithmic_efficiency: f64,
    /// Post-training (RL) FLOP as a fraction of pre-training FLOP, unless a model overrides it.
    #[serde(default = "default_post_training_fraction")]
    pub post_training_fraction: f64,
    /// The models to train.
    #[serde(default)]
    pub models: Vec<TrainedModel>,
}

fn one() -> f64 {
    1.0
}
fn default_post_training_fraction() -> f64 {
    0.05
}

/// A model to train: a fixed size (`parameters_b` and `tokens_t`) or a `target_loss`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedModel {
    /// Name, referred to by services.
    pub name: String,
    /// Parameters, billions (fixed-size model).
    #[serde(default)]
    pub parameters_b: Option<f64>,
    /// Pre-training tokens, trillions (fixed-size model).
    #[serde(default)]
    pub tokens_t: Option<f64>,
    /// Active parameters per token for inference, billions (MoE); default: all parameters.
    #[serde(default)]
    pub active_parameters_b: Option<f64>,
    /// Target loss instead of a fixed size: the model is sized by the scaling law (and by
    /// inference-aware sizing when `expected_inference_tokens_t` is set).
    #[serde(default)]
    pub target_loss: Option<f64>,
    /// Tokens the model is expected to serve over its life, trillions (inference-aware sizing).
    #[serde(default)]
    pub expected_inference_tokens_t: Option<f64>,
    /// Period (0-based) by which pre- and post-training must be done; services using the model
    /// answer queries from this period on.
    pub release_period: usize,
    /// Periods before release in which pre-training can run.
    #[serde(default = "default_training_periods")]
    pub training_periods: usize,
    /// Post-training fraction for this model (overrides `training.post_training_fraction`).
    #[serde(default)]
    pub post_training_fraction: Option<f64>,
    /// `max_value` only: $M of value per 0.01 of loss below the target/fixed-size loss. The
    /// LP may then spend more compute than required, up to `max_compute_multiple` ×.
    #[serde(default)]
    pub loss_value_musd: f64,
    /// Upper limit on pre-training compute as a multiple of the required compute.
    #[serde(default = "default_max_compute_multiple")]
    pub max_compute_multiple: f64,
}

fn default_training_periods() -> usize {
    2
}
fn default_max_compute_multiple() -> f64 {
    4.0
}

/// Inference throughput: decode is memory-bandwidth-bound, prefill compute-bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    /// Peak used for inference.
    #[serde(default = "fp8")]
    pub precision: Precision,
    /// MFU of prefill (prompt tokens).
    #[serde(default = "default_prefill_mfu")]
    pub prefill_mfu: f64,
    /// Cap on the MFU of decode.
    #[serde(default = "default_decode_mfu")]
    pub decode_mfu: f64,
    /// Sequences decoded together; decode FLOP/s ≤ 2·batch·bandwidth·efficiency ÷ bytes per
    /// parameter.
    #[serde(default = "default_decode_batch")]
    pub decode_batch: f64,
    /// Fraction of peak bandwidth reached.
    #[serde(default = "default_bandwidth_efficiency")]
    pub bandwidth_efficiency: f64,
    /// Bytes per weight (1 for FP8, 2 for BF16).
    #[serde(default = "one")]
    pub bytes_per_parameter: f64,
}

fn fp8() -> Precision {
    Precision::Fp8
}
fn default_prefill_mfu() -> f64 {
    0.5
}
fn default_decode_mfu() -> f64 {
    0.5
}
fn default_decode_batch() -> f64 {
    64.0
}
fn default_bandwidth_efficiency() -> f64 {
    0.7
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            precision: fp8(),
            prefill_mfu: default_prefill_mfu(),
            decode_mfu: default_decode_mfu(),
            decode_batch: default_decode_batch(),
            bandwidth_efficiency: default_bandwidth_efficiency(),
            bytes_per_parameter: 1.0,
        }
    }
}

impl InferenceSettings {
    /// Effective decode FLOP/s of one GPU: the lower of its compute cap and its bandwidth bound.
    pub fn decode_flop_per_second(&self, gpu: &GpuType) -> f64 {
        let compute = gpu.peak_flop_per_second(self.precision) * self.decode_mfu;
        let bandwidth =
            2.0 * self.decode_batch * gpu.bandwidth_tb_s * 1e12 * self.bandwidth_efficiency
                / self.bytes_per_parameter;
        compute.min(bandwidth)
    }

    /// Effective prefill FLOP/s of one GPU.
    pub fn prefill_flop_per_second(&self, gpu: &GpuType) -> f64 {
        gpu.peak_flop_per_second(self.precision) * self.prefill_mfu
    }
}

/// A service answering queries with a model, at one of several reasoning levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name.
    pub name: String,
    /// A model from `training.models`; the service runs from its release. Absent: an existing
    /// model with `active_parameters_b`.
    #[serde(default)]
    pub model: Option<String>,
    /// Active parameters, billions, when `model` is absent.
    #[serde(default)]
    pub active_parameters_b: Option<f64>,
    /// Prompt tokens per query (prefill).
    pub prompt_tokens: f64,
    /// Answer tokens per query, before any reasoning tokens (decode).
    pub output_tokens: f64,
    /// Reasoning levels: reasoning tokens per query and the accuracy they buy. Accuracy must
    /// be concave in tokens (test-time scaling has diminishing returns); mixing levels then
    /// traces the concave curve exactly.
    #[serde(default)]
    pub reasoning_levels: Vec<ReasoningLevel>,
    /// Alternative to `reasoning_levels`: a log-saturating curve sampled at `curve_tokens`.
    #[serde(default)]
    pub reasoning_curve: Option<ReasoningCurve>,
    /// Reasoning tokens at which `reasoning_curve` is sampled.
    #[serde(default)]
    pub curve_tokens: Vec<f64>,
    /// Least average accuracy served in a period (0–1).
    #[serde(default)]
    pub min_accuracy: Option<f64>,
    /// `max_value` only: $ of value per query per unit of accuracy (on top of the segment's
    /// willingness to pay).
    #[serde(default)]
    pub accuracy_value_usd: f64,
    /// The demand curve.
    pub demand: Demand,
}

/// One point of a test-time-scaling curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningLevel {
    /// Name (`none`, `low`, `high`).
    pub name: String,
    /// Reasoning tokens per query.
    pub reasoning_tokens: f64,
    /// Accuracy reached (0–1).
    pub accuracy: f64,
}

impl Service {
    /// The reasoning levels, from the explicit list or sampled from the curve.
    pub fn levels(&self) -> Vec<ReasoningLevel> {
        match &self.reasoning_curve {
            Some(curve) if self.reasoning_levels.is_empty() => self
                .curve_tokens
                .iter()
                .map(|tokens| ReasoningLevel {
                    name: format!("{tokens:.0} tok"),
                    reasoning_tokens: *tokens,
                    accuracy: curve.accuracy(*tokens),
                })
                .collect(),
            _ => self.reasoning_levels.clone(),
        }
    }
}

/// A stepwise demand curve: segments of queries with a willingness to pay, explicit or
/// generated from a constant price elasticity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demand {
    /// Queries per period at the reference price, billions, in period 0.
    pub reference_queries_b: f64,
    /// Willingness to pay of the marginal reference query, $ per query.
    pub reference_price_usd: f64,
    /// Price elasticity ε of Q(p) = Q_ref·(p/p_ref)^(−ε); > 1 means spend rises as unit cost
    /// falls (Jevons). No published value exists: it is a scenario lever.
    #[serde(default = "default_elasticity")]
    pub elasticity: f64,
    /// Segments generated from the elasticity (prices from 4× down to 1/16 of the reference).
    #[serde(default = "default_segments")]
    pub segments: usize,
    /// Explicit segments instead of generated ones (highest value first).
    #[serde(default)]
    pub explicit_segments: Vec<DemandSegment>,
    /// Demand growth per year (0.5 = +50%/yr).
    #[serde(default)]
    pub growth_per_year: f64,
    /// `min_cost` only: fraction of the reference demand that must be served.
    #[serde(default = "one")]
    pub required_fraction: f64,
}

fn default_elasticity() -> f64 {
    1.0
}
fn default_segments() -> usize {
    10
}

/// One step of the demand curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandSegment {
    /// Queries in this step per period in period 0, billions.
    pub queries_b: f64,
    /// Willingness to pay of these queries, $ per query.
    pub value_usd: f64,
}

impl Demand {
    /// The segments in period 0, highest willingness to pay first.
    pub fn segments_at_start(&self) -> Vec<DemandSegment> {
        if !self.explicit_segments.is_empty() {
            return self.explicit_segments.clone();
        }
        let count = self.segments.max(1);
        let demand_at = |price: f64| {
            self.reference_queries_b * (price / self.reference_price_usd).powf(-self.elasticity)
        };
        // Prices from 4× down to 1/16 of the reference, geometric; each segment holds the
        // queries willing to pay at least its price but not the previous one.
        let price_at = |index: usize| {
            let steps = (count.max(2) - 1) as f64;
            self.reference_price_usd * 4.0 * (1.0f64 / 64.0).powf(index as f64 / steps)
        };
        let mut previous = 0.0;
        (0..count)
            .map(|index| {
                let price = price_at(index);
                let cumulative = demand_at(price);
                let segment = DemandSegment {
                    queries_b: cumulative - previous,
                    value_usd: price,
                };
                previous = cumulative;
                segment
            })
            .collect()
    }

    /// Growth multiplier of demand in `period`.
    pub fn growth(&self, period: usize, periods_per_year: f64) -> f64 {
        (1.0 + self.growth_per_year).powf(period as f64 / periods_per_year)
    }
}

/// The most tangent cuts of the scaling law's piecewise-linear bound (each is one LP row per
/// stage and period).
pub const MAX_TANGENT_CUTS: usize = 64;
/// The longest lead time or age, in periods: the longest horizon (400) times ten.
pub const MAX_PERIOD_OFFSET: usize = 4_000;

fn check_periods(field: String, value: usize, hint: &str) -> Result<()> {
    if value > MAX_PERIOD_OFFSET {
        return Err(invalid(
            field,
            format!("{value}"),
            format!("use 0–{MAX_PERIOD_OFFSET} ({hint})"),
        ));
    }
    Ok(())
}

fn check_number(field: String, value: f64, low: f64, high: f64, fix: &str) -> Result<()> {
    if value.is_finite() && value >= low && value <= high {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} is outside [{low}, {high}]"),
            fix,
        ))
    }
}

impl Scenario {
    /// Parses YAML text and validates it.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let scenario: Scenario = serde_norway::from_str(text).map_err(Error::ParseScenario)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The scenario as YAML.
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(self).map_err(Error::ParseScenario)
    }

    /// Index of a trained model by name.
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.training
            .models
            .iter()
            .position(|model| model.name == name)
    }

    /// Checks every field the model relies on; the error names the field path and the fix.
    pub fn validate(&self) -> Result<()> {
        let periods = self.periods.count;
        if self.name.trim().is_empty() {
            return Err(invalid(
                "name",
                "is empty",
                "give the scenario a short name",
            ));
        }
        if periods == 0 || periods > 400 {
            return Err(invalid(
                "periods.count",
                format!("{periods}"),
                "plan 1–400 periods",
            ));
        }
        check_number(
            "periods.hours".into(),
            self.periods.hours,
            1.0,
            9000.0,
            "hours in one period, e.g. 2190 for a quarter",
        )?;
        check_number(
            "periods.per_year".into(),
            self.periods.per_year,
            0.1,
            366.0,
            "periods per year, e.g. 4",
        )?;
        if self.scaling.tangent_cuts < 2 || self.scaling.tangent_cuts > MAX_TANGENT_CUTS {
            return Err(invalid(
                "scaling.tangent_cuts",
                format!("{}", self.scaling.tangent_cuts),
                format!("use 2–{MAX_TANGENT_CUTS} cuts (8 is plenty)"),
            ));
        }
        if self.gpus.is_empty() {
            return Err(invalid("gpus", "is empty", "list at least one GPU type"));
        }
        for (index, gpu) in self.gpus.iter().enumerate() {
            let at = |field: &str| format!("gpus[{index}].{field}");
            if self.gpus[..index]
                .iter()
                .any(|other| other.name == gpu.name)
            {
                return Err(invalid(
                    at("name"),
                    format!("`{}` appears twice", gpu.name),
                    "give each GPU type a unique name",
                ));
            }
            check_number(
                at("bf16_tflops"),
                gpu.bf16_tflops,
                1.0,
                1e6,
                "dense BF16 TFLOP/s, e.g. 989 for an H100",
            )?;
            if let Some(fp8) = gpu.fp8_tflops {
                check_number(
                    at("fp8_tflops"),
                    fp8,
                    1.0,
                    1e6,
                    "dense FP8 TFLOP/s, or remove the field",
                )?;
            }
            check_number(
                at("memory_gb"),
                gpu.memory_gb,
                1.0,
                1e5,
                "memory in GB, e.g. 80",
            )?;
            check_number(
                at("bandwidth_tb_s"),
                gpu.bandwidth_tb_s,
                0.01,
                1e3,
                "memory bandwidth in TB/s, e.g. 3.35",
            )?;
            check_number(
                at("watts"),
                gpu.watts,
                1.0,
                1e5,
                "board power in W, e.g. 700",
            )?;
            if let Some(kw) = gpu.server_kw {
                check_number(
                    at("server_kw"),
                    kw,
                    0.01,
                    100.0,
                    "all-in kW per GPU, e.g. 1.3",
                )?;
            }
            if let Some(price) = gpu.price_usd {
                check_number(
                    at("price_usd"),
                    price,
                    1.0,
                    1e8,
                    "price per GPU in dollars, e.g. 27500 (not thousands)",
                )?;
            }
            if let Some(rent) = gpu.rent_usd_per_hour {
                check_number(
                    at("rent_usd_per_hour"),
                    rent,
                    0.01,
                    1000.0,
                    "dollars per GPU-hour, e.g. 2.5",
                )?;
            }
            if gpu.price_usd.is_none()
                && gpu.rent_usd_per_hour.is_none()
                && gpu.installed_thousands == 0.0
            {
                return Err(invalid(
                    at("price_usd"),
                    "the GPU can be neither bought, rented nor is installed",
                    "set price_usd, rent_usd_per_hour or installed_thousands",
                ));
            }
            if let Some(limit) = &gpu.rent_limit_thousands {
                limit.validate(&at("rent_limit_thousands"), periods, 0.0)?;
            }
            if let Some(limit) = &gpu.buy_limit_thousands {
                limit.validate(&at("buy_limit_thousands"), periods, 0.0)?;
            }
            if let Some(until) = gpu.available_until
                && until < gpu.available_from
            {
                return Err(invalid(
                    at("available_until"),
                    format!("{until} is before available_from {}", gpu.available_from),
                    "make available_until ≥ available_from, or remove it",
                ));
            }
            check_number(
                at("installed_thousands"),
                gpu.installed_thousands,
                0.0,
                1e5,
                "GPUs installed at the start, in thousands",
            )?;
            // Period arithmetic adds these to period numbers: bounded, they cannot wrap.
            check_periods(
                at("lead_time_periods"),
                gpu.lead_time_periods,
                "periods from order to service, e.g. 1",
            )?;
            check_periods(
                at("installed_age_periods"),
                gpu.installed_age_periods,
                "how many periods the installed GPUs have served, e.g. 2",
            )?;
        }
        check_periods(
            "economics.build_lead_time_periods".into(),
            self.economics.build_lead_time_periods,
            "periods from a build decision to power, e.g. 6",
        )?;
        let economics = &self.economics;
        economics
            .capex_budget_musd
            .validate("economics.capex_budget_musd", periods, 0.0)?;
        check_number(
            "economics.depreciation_years".into(),
            economics.depreciation_years,
            0.25,
            30.0,
            "GPU life in years, e.g. 6",
        )?;
        check_number(
            "economics.electricity_usd_per_kwh".into(),
            economics.electricity_usd_per_kwh,
            0.0,
            10.0,
            "dollars per kWh, e.g. 0.08",
        )?;
        check_number(
            "economics.pue".into(),
            economics.pue,
            1.0,
            5.0,
            "power usage effectiveness ≥ 1, e.g. 1.2",
        )?;
        check_number(
            "economics.build_cost_musd_per_mw".into(),
            economics.build_cost_musd_per_mw,
            0.0,
            1000.0,
            "$M per MW, e.g. 11.7",
        )?;
        check_number(
            "economics.installed_mw".into(),
            economics.installed_mw,
            0.0,
            1e6,
            "MW available at the start",
        )?;
        check_number(
            "economics.discount_rate".into(),
            economics.discount_rate,
            0.0,
            1.0,
            "an annual rate as a fraction, e.g. 0.08",
        )?;
        check_number(
            "economics.operations_usd_per_gpu_hour".into(),
            economics.operations_usd_per_gpu_hour,
            0.0,
            100.0,
            "dollars per used GPU-hour, e.g. 0.1",
        )?;
        check_number(
            "economics.building_life_years".into(),
            economics.building_life_years,
            1.0,
            100.0,
            "years, e.g. 15",
        )?;
        if let Some(limit) = economics.build_limit_mw_per_period {
            check_number(
                "economics.build_limit_mw_per_period".into(),
                limit,
                0.0,
                1e6,
                "MW per period, or remove the field",
            )?;
        }
        if let Some(limit) = economics.mw_limit {
            check_number(
                "economics.mw_limit".into(),
                limit,
                0.0,
                1e7,
                "total MW, or remove the field",
            )?;
        }
        let training = &self.training;
        check_number(
            "training.mfu".into(),
            training.mfu,
            0.01,
            1.0,
            "a fraction of peak, e.g. 0.35",
        )?;
        check_number(
            "training.algorithmic_efficiency".into(),
            training.algorithmic_efficiency,
            0.01,
            1e4,
            "a multiplier ≥ 0.01, e.g. 1 or 10",
        )?;
        check_number(
            "training.post_training_fraction".into(),
            training.post_training_fraction,
            0.0,
            10.0,
            "a fraction of pre-training FLOP, e.g. 0.05",
        )?;
        let constants = self.scaling.constants.constants();
        for (index, model) in training.models.iter().enumerate() {
            let at = |field: &str| format!("training.models[{index}].{field}");
            if training.models[..index]
                .iter()
                .any(|other| other.name == model.name)
            {
                return Err(invalid(
                    at("name"),
                    format!("`{}` appears twice", model.name),
                    "give each model a unique name",
                ));
            }
            match (model.parameters_b, model.tokens_t, model.target_loss) {
                (Some(parameters), Some(tokens), None) => {
                    check_number(
                        at("parameters_b"),
                        parameters,
                        0.001,
                        1e5,
                        "billions of parameters, e.g. 671",
                    )?;
                    check_number(
                        at("tokens_t"),
                        tokens,
                        0.001,
                        1e4,
                        "trillions of tokens, e.g. 14.8",
                    )?;
                }
                (None, None, Some(loss)) => {
                    if loss <= constants.irreducible + 1e-3 {
                        return Err(invalid(
                            at("target_loss"),
                            format!(
                                "{loss} is not above the irreducible loss {} of the `{}` constants",
                                constants.irreducible,
                                self.scaling.constants.name()
                            ),
                            "raise the target loss or change scaling.constants",
                        ));
                    }
                    check_number(
                        at("target_loss"),
                        loss,
                        0.0,
                        20.0,
                        "a loss in nats, e.g. 1.9",
                    )?;
                }
                _ => {
                    return Err(invalid(
                        at("target_loss"),
                        "give either parameters_b and tokens_t, or target_loss",
                        "set exactly one of: both parameters_b and tokens_t, or target_loss",
                    ));
                }
            }
            if let Some(active) = model.active_parameters_b {
                check_number(
                    at("active_parameters_b"),
                    active,
                    0.001,
                    model.parameters_b.unwrap_or(1e5),
                    "active billions ≤ parameters_b",
                )?;
            }
            if let Some(tokens) = model.expected_inference_tokens_t {
                check_number(
                    at("expected_inference_tokens_t"),
                    tokens,
                    0.0,
                    1e7,
                    "trillions of tokens served over the model's life",
                )?;
            }
            if model.release_period >= periods {
                return Err(invalid(
                    at("release_period"),
                    format!(
                        "{} is past the last period {}",
                        model.release_period,
                        periods - 1
                    ),
                    "release within the horizon",
                ));
            }
            if model.training_periods == 0 || model.training_periods > model.release_period {
                return Err(invalid(
                    at("training_periods"),
                    format!(
                        "{} periods do not fit before release period {}",
                        model.training_periods, model.release_period
                    ),
                    "use 1 ≤ training_periods ≤ release_period",
                ));
            }
            if let Some(fraction) = model.post_training_fraction {
                check_number(
                    at("post_training_fraction"),
                    fraction,
                    0.0,
                    10.0,
                    "a fraction of pre-training FLOP",
                )?;
            }
            check_number(
                at("loss_value_musd"),
                model.loss_value_musd,
                0.0,
                1e7,
                "$M per 0.01 of loss, ≥ 0",
            )?;
            check_number(
                at("max_compute_multiple"),
                model.max_compute_multiple,
                1.0,
                1000.0,
                "a multiple ≥ 1, e.g. 4",
            )?;
        }
        let inference = &self.inference;
        check_number(
            "inference.prefill_mfu".into(),
            inference.prefill_mfu,
            0.01,
            1.0,
            "a fraction of peak, e.g. 0.5",
        )?;
        check_number(
            "inference.decode_mfu".into(),
            inference.decode_mfu,
            0.01,
            1.0,
            "a fraction of peak, e.g. 0.5",
        )?;
        check_number(
            "inference.decode_batch".into(),
            inference.decode_batch,
            1.0,
            1e5,
            "sequences per decode step, e.g. 64",
        )?;
        check_number(
            "inference.bandwidth_efficiency".into(),
            inference.bandwidth_efficiency,
            0.01,
            1.0,
            "a fraction, e.g. 0.7",
        )?;
        check_number(
            "inference.bytes_per_parameter".into(),
            inference.bytes_per_parameter,
            0.25,
            8.0,
            "1 for FP8, 2 for BF16",
        )?;
        if self.services.is_empty() {
            return Err(invalid("services", "is empty", "list at least one service"));
        }
        for (index, service) in self.services.iter().enumerate() {
            let at = |field: &str| format!("services[{index}].{field}");
            if self.services[..index]
                .iter()
                .any(|other| other.name == service.name)
            {
                return Err(invalid(
                    at("name"),
                    format!("`{}` appears twice", service.name),
                    "give each service a unique name",
                ));
            }
            match (&service.model, service.active_parameters_b) {
                (Some(model), None) => {
                    if self.model_index(model).is_none() {
                        let known: Vec<&str> = training
                            .models
                            .iter()
                            .map(|model| model.name.as_str())
                            .collect();
                        return Err(invalid(
                            at("model"),
                            format!("`{model}` is not in training.models"),
                            format!(
                                "use one of [{}] or set active_parameters_b instead",
                                known.join(", ")
                            ),
                        ));
                    }
                }
                (None, Some(active)) => check_number(
                    at("active_parameters_b"),
                    active,
                    0.001,
                    1e5,
                    "active billions of parameters, e.g. 37",
                )?,
                _ => {
                    return Err(invalid(
                        at("model"),
                        "give either model or active_parameters_b",
                        "set exactly one of them",
                    ));
                }
            }
            check_number(
                at("prompt_tokens"),
                service.prompt_tokens,
                0.0,
                1e8,
                "tokens per query",
            )?;
            check_number(
                at("output_tokens"),
                service.output_tokens,
                0.0,
                1e8,
                "tokens per query",
            )?;
            let levels = service.levels();
            if levels.is_empty() {
                return Err(invalid(
                    at("reasoning_levels"),
                    "no levels",
                    "list at least one level (reasoning_tokens: 0 for none), or give reasoning_curve and curve_tokens",
                ));
            }
            for (level_index, level) in levels.iter().enumerate() {
                let level_at = format!("services[{index}].reasoning_levels[{level_index}]");
                check_number(
                    format!("{level_at}.reasoning_tokens"),
                    level.reasoning_tokens,
                    0.0,
                    1e8,
                    "tokens per query ≥ 0",
                )?;
                check_number(
                    format!("{level_at}.accuracy"),
                    level.accuracy,
                    0.0,
                    1.0,
                    "an accuracy in [0, 1]",
                )?;
                if level_index > 0 {
                    let previous = &levels[level_index - 1];
                    if level.reasoning_tokens <= previous.reasoning_tokens
                        || level.accuracy < previous.accuracy
                    {
                        return Err(invalid(
                            level_at,
                            "levels must have increasing tokens and non-decreasing accuracy",
                            "sort levels by reasoning_tokens; more tokens must not lower accuracy",
                        ));
                    }
                    if level_index > 1 {
                        let before = &levels[level_index - 2];
                        let slope = (level.accuracy - previous.accuracy)
                            / (level.reasoning_tokens - previous.reasoning_tokens);
                        let previous_slope = (previous.accuracy - before.accuracy)
                            / (previous.reasoning_tokens - before.reasoning_tokens);
                        if slope > previous_slope * (1.0 + 1e-9) + 1e-15 {
                            return Err(invalid(
                                format!("{level_at}.accuracy"),
                                "accuracy gain per token rises: the test-time curve must be concave",
                                "lower this level's accuracy or drop the level that lies below the curve",
                            ));
                        }
                    }
                }
            }
            if let Some(accuracy) = service.min_accuracy {
                let best = levels
                    .iter()
                    .map(|level| level.accuracy)
                    .fold(0.0, f64::max);
                check_number(
                    at("min_accuracy"),
                    accuracy,
                    0.0,
                    best,
                    "at most the best level's accuracy",
                )?;
            }
            check_number(
                at("accuracy_value_usd"),
                service.accuracy_value_usd,
                0.0,
                1e3,
                "$ per query per unit of accuracy, ≥ 0",
            )?;
            let demand = &service.demand;
            check_number(
                at("demand.reference_queries_b"),
                demand.reference_queries_b,
                0.0,
                1e7,
                "billions of queries per period",
            )?;
            check_number(
                at("demand.reference_price_usd"),
                demand.reference_price_usd,
                1e-9,
                1e4,
                "$ per query > 0, e.g. 0.01",
            )?;
            check_number(
                at("demand.elasticity"),
                demand.elasticity,
                0.0,
                10.0,
                "a price elasticity, e.g. 0.5 (inelastic) to 2 (Jevons)",
            )?;
            check_number(
                at("demand.segments"),
                demand.segments as f64,
                1.0,
                200.0,
                "1–200 segments",
            )?;
            check_number(
                at("demand.growth_per_year"),
                demand.growth_per_year,
                -0.99,
                100.0,
                "a yearly growth fraction, e.g. 0.5",
            )?;
            check_number(
                at("demand.required_fraction"),
                demand.required_fraction,
                0.0,
                4.0,
                "a fraction of the reference demand, e.g. 1",
            )?;
            for (segment_index, segment) in demand.explicit_segments.iter().enumerate() {
                let segment_at =
                    format!("services[{index}].demand.explicit_segments[{segment_index}]");
                check_number(
                    format!("{segment_at}.queries_b"),
                    segment.queries_b,
                    0.0,
                    1e7,
                    "billions of queries",
                )?;
                check_number(
                    format!("{segment_at}.value_usd"),
                    segment.value_usd,
                    0.0,
                    1e4,
                    "$ per query",
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hardening finding 3: lead times and ages near `usize::MAX` passed validation and
    /// wrapped in period arithmetic (infinite lead times made plans cheaper).
    #[test]
    fn lead_times_ages_and_cuts_beyond_their_bounds_are_refused_by_name() {
        let text = crate::library::text("baseline").unwrap();
        type Break = fn(&mut Scenario);
        let cases: [(&str, Break); 4] = [
            ("gpus[0].lead_time_periods", |s| {
                s.gpus[0].lead_time_periods = usize::MAX;
            }),
            ("gpus[0].installed_age_periods", |s| {
                s.gpus[0].installed_age_periods = usize::MAX - 1;
            }),
            ("economics.build_lead_time_periods", |s| {
                s.economics.build_lead_time_periods = usize::MAX;
            }),
            ("scaling.tangent_cuts", |s| s.scaling.tangent_cuts = 1 << 40),
        ];
        for (field, break_it) in cases {
            let mut scenario = Scenario::from_yaml(text).unwrap();
            break_it(&mut scenario);
            let message = scenario.validate().unwrap_err().to_string();
            assert!(message.contains(field), "{field}: {message}");
        }
    }

    #[test]
    fn every_error_names_the_field_and_a_fix() {
        let text = crate::library::text("baseline").unwrap();
        let mut scenario = Scenario::from_yaml(text).unwrap();
        scenario.gpus[0].bf16_tflops = -1.0;
        let message = scenario.validate().unwrap_err().to_string();
        assert!(message.contains("gpus[0].bf16_tflops"), "{message}");
        assert!(message.contains("fix:"), "{message}");

        let mut scenario = Scenario::from_yaml(text).unwrap();
        scenario.services[0].model = Some("no-such-model".into());
        let message = scenario.validate().unwrap_err().to_string();
        assert!(message.contains("services[0].model"), "{message}");

        let mut scenario = Scenario::from_yaml(text).unwrap();
        scenario.economics.capex_budget_musd = PerPeriod::Each(vec![1.0, 2.0]);
        let message = scenario.validate().unwrap_err().to_string();
        assert!(message.contains("economics.capex_budget_musd"), "{message}");
        assert!(message.contains("one value per period"), "{message}");
    }

    #[test]
    fn convex_reasoning_levels_are_rejected() {
        let text = crate::library::text("baseline").unwrap();
        let mut scenario = Scenario::from_yaml(text).unwrap();
        scenario.services[0].reasoning_curve = None;
        scenario.services[0].reasoning_levels = vec![
            ReasoningLevel {
                name: "none".into(),
                reasoning_tokens: 0.0,
                accuracy: 0.5,
            },
            ReasoningLevel {
                name: "low".into(),
                reasoning_tokens: 1000.0,
                accuracy: 0.51,
            },
            ReasoningLevel {
                name: "high".into(),
                reasoning_tokens: 2000.0,
                accuracy: 0.9,
            },
        ];
        let message = scenario.validate().unwrap_err().to_string();
        assert!(
            message.contains("reasoning_levels[2].accuracy"),
            "{message}"
        );
        assert!(message.contains("concave"), "{message}");
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_parser() {
        let text = crate::library::text("baseline")
            .unwrap()
            .replace("pue:", "power_usage:");
        let message = Scenario::from_yaml(&text).unwrap_err().to_string();
        assert!(message.contains("power_usage"), "{message}");
    }

    #[test]
    fn elastic_demand_segments_follow_the_curve() {
        let demand = Demand {
            reference_queries_b: 100.0,
            reference_price_usd: 0.01,
            elasticity: 1.5,
            segments: 10,
            explicit_segments: vec![],
            growth_per_year: 0.0,
            required_fraction: 1.0,
        };
        let segments = demand.segments_at_start();
        assert_eq!(segments.len(), 10);
        // Cumulative demand at each segment's price equals Q(p).
        let mut cumulative = 0.0;
        for segment in &segments {
            cumulative += segment.queries_b;
            let expected = 100.0 * (segment.value_usd / 0.01f64).powf(-1.5);
            assert!((cumulative - expected).abs() < 1e-9 * expected);
        }
        assert!(
            segments
                .windows(2)
                .all(|pair| pair[0].value_usd > pair[1].value_usd)
        );
    }

    #[test]
    fn quarter_labels_roll_over_years() {
        let periods = Periods {
            first: "2025Q3".into(),
            count: 8,
            hours: 2190.0,
            per_year: 4.0,
        };
        assert_eq!(periods.label(0), "2025Q3");
        assert_eq!(periods.label(2), "2026Q1");
        assert_eq!(periods.label(7), "2027Q2");
    }
}
