//! Synthetic scenarios of a chosen size, for benchmarks: an interactive one (≈ 8 GPU types ×
//! 40 quarters × 6 services × 10 demand segments, 20–60k variables) and a hyperscaler one
//! (250k+ variables). Deterministic: the same size always gives the same scenario.

use crate::scaling::ReasoningCurve;
use crate::scenario::{
    Demand, Economics, GpuType, InferenceSettings, Objective, PerPeriod, Periods, ScalingSettings,
    Scenario, Service, TrainedModel, Training,
};

/// The dimensions of a generated scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// GPU types.
    pub gpus: usize,
    /// Quarters.
    pub periods: usize,
    /// Services.
    pub services: usize,
    /// Reasoning levels per service.
    pub levels: usize,
    /// Demand segments per service.
    pub segments: usize,
    /// Models trained.
    pub models: usize,
}

impl Size {
    /// ≈ 8 GPU types × 40 quarters × 6 services × 10 demand segments, 12 reasoning levels
    /// (≈ 24k variables).
    pub const INTERACTIVE: Size = Size {
        gpus: 8,
        periods: 40,
        services: 6,
        levels: 12,
        segments: 10,
        models: 6,
    };
    /// A hyperscaler: 16 GPU types × 80 quarters × 24 services × 10 levels × 20 segments
    /// (≈ 268k variables).
    pub const HYPERSCALE: Size = Size {
        gpus: 16,
        periods: 80,
        services: 24,
        levels: 10,
        segments: 20,
        models: 12,
    };
}

/// One catalogue entry: (name, BF16, FP8, memory GB, TB/s, W, price $, rent $/h).
type CatalogueEntry = (&'static str, f64, f64, f64, f64, f64, f64, f64);

/// A base catalogue to vary.
const CATALOGUE: [CatalogueEntry; 8] = [
    ("A100", 312.0, 312.0, 80.0, 2.04, 400.0, 12_500.0, 1.2),
    ("H100", 989.0, 1979.0, 80.0, 3.35, 700.0, 27_500.0, 2.5),
    ("H200", 989.0, 1979.0, 141.0, 4.8, 700.0, 35_000.0, 3.4),
    ("H20", 148.0, 296.0, 96.0, 4.0, 400.0, 13_500.0, 1.3),
    ("B200", 2250.0, 4500.0, 180.0, 8.0, 1000.0, 37_500.0, 4.9),
    ("GB200", 2500.0, 5000.0, 186.0, 8.0, 1200.0, 45_000.0, 6.0),
    ("MI300X", 1307.0, 2615.0, 192.0, 5.3, 750.0, 15_000.0, 1.75),
    ("H800", 989.0, 1979.0, 80.0, 3.35, 700.0, 27_500.0, 2.0),
];

/// Generates a `max_value` scenario of the given size.
pub fn scenario(size: Size) -> Scenario {
    let gpus = (0..size.gpus)
        .map(|index| {
            let (name, bf16, fp8, memory, bandwidth, watts, price, rent) =
                CATALOGUE[index % CATALOGUE.len()];
            let generation = (index / CATALOGUE.len()) as f64;
            // Later "generations" of the same part are faster and arrive later.
            let speedup = 1.0 + 0.6 * generation;
            GpuType {
                name: if generation > 0.0 {
                    format!("{name}-gen{}", generation + 1.0)
                } else {
                    name.to_string()
                },
                bf16_tflops: bf16 * speedup,
                fp8_tflops: Some(fp8 * speedup),
                memory_gb: memory,
                bandwidth_tb_s: bandwidth * speedup,
                watts,
                server_kw: Some(watts * 1.85 / 1000.0),
                price_usd: Some(price * (1.0 + 0.3 * generation)),
                rent_usd_per_hour: Some(rent * (1.0 + 0.3 * generation)),
                rent_limit_thousands: Some(PerPeriod::Constant(20.0 + 5.0 * (index % 3) as f64)),
                buy_limit_thousands: Some(PerPeriod::Constant(60.0)),
                available_from: (index % CATALOGUE.len()) % 3 + (generation as usize) * 12,
                available_until: None,
                installed_thousands: if index == 1 { 40.0 } else { 0.0 },
                installed_age_periods: 2,
                lead_time_periods: 1,
            }
        })
        .collect();
    let models = (0..size.models)
        .map(|index| {
            let release = (3 + index * (size.periods.saturating_sub(4)) / size.models.max(1))
                .min(size.periods - 1);
            TrainedModel {
                name: format!("model-{index}"),
                parameters_b: Some(200.0 * (1.0 + index as f64)),
                tokens_t: Some(10.0 * (1.0 + 0.5 * index as f64)),
                active_parameters_b: None,
                target_loss: None,
                expected_inference_tokens_t: None,
                release_period: release,
                training_periods: 3.min(release),
                post_training_fraction: Some(0.02 + 0.02 * (index % 3) as f64),
                loss_value_musd: 50.0,
                max_compute_multiple: 3.0,
            }
        })
        .collect();
    let services = (0..size.services)
        .map(|index| Service {
            name: format!("service-{index}"),
            // Even services run a model trained in the plan (from its release), odd ones an
            // existing model.
            model: (index % 2 == 0 && size.models > 0)
                .then(|| format!("model-{}", (index / 2) % size.models)),
            active_parameters_b: (index % 2 == 1 || size.models == 0)
                .then_some(30.0 + 10.0 * (index % 4) as f64),
            prompt_tokens: 800.0 + 200.0 * (index % 4) as f64,
            output_tokens: 300.0 + 100.0 * (index % 3) as f64,
            reasoning_levels: Vec::new(),
            reasoning_curve: Some(ReasoningCurve {
                base_accuracy: 0.55,
                gain_per_doubling: 0.03,
                max_accuracy: 0.9,
                token_unit: 500.0,
            }),
            curve_tokens: (0..size.levels)
                .map(|level| {
                    if level == 0 {
                        0.0
                    } else {
                        250.0 * 2f64.powi(level as i32)
                    }
                })
                .collect(),
            min_accuracy: Some(0.58),
            accuracy_value_usd: 0.002,
            demand: Demand {
                reference_queries_b: 5.0 + 3.0 * (index % 5) as f64,
                reference_price_usd: 0.01 * (1.0 + (index % 3) as f64),
                elasticity: 0.6 + 0.2 * (index % 6) as f64,
                segments: size.segments,
                explicit_segments: Vec::new(),
                growth_per_year: 0.4 + 0.1 * (index % 4) as f64,
                required_fraction: 1.0,
            },
        })
        .collect();
    Scenario {
        name: format!(
            "generated-{}g-{}p-{}s",
            size.gpus, size.periods, size.services
        ),
        description: "synthetic benchmark scenario".into(),
        sources: vec!["generated by gpufleet_planner::generator from the shipped catalogue".into()],
        objective: Objective::MaxValue,
        periods: Periods {
            first: "2025Q1".into(),
            count: size.periods,
            hours: 2190.0,
            per_year: 4.0,
        },
        scaling: ScalingSettings::default(),
        gpus,
        economics: Economics {
            capex_budget_musd: PerPeriod::Constant(4000.0 * (size.services as f64 / 6.0)),
            depreciation_years: 6.0,
            electricity_usd_per_kwh: 0.08,
            pue: 1.2,
            build_cost_musd_per_mw: 11.7,
            build_lead_time_periods: 6,
            installed_mw: 400.0,
            build_limit_mw_per_period: Some(200.0),
            mw_limit: Some(20_000.0),
            building_life_years: 15.0,
            discount_rate: 0.08,
            operations_usd_per_gpu_hour: 0.1,
        },
        training: Training {
            mfu: 0.35,
            precision: Default::default(),
            algorithmic_efficiency: 1.0,
            post_training_fraction: 0.05,
            models,
        },
        inference: InferenceSettings::default(),
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FleetModel;

    #[test]
    fn interactive_size_is_in_the_20_to_60k_range() {
        let scenario = scenario(Size::INTERACTIVE);
        scenario.validate().unwrap();
        let model = FleetModel::build(&scenario).unwrap();
        let variables = model.program.variables.len();
        assert!((20_000..=60_000).contains(&variables), "{variables}");
    }

    #[test]
    fn small_generated_scenario_solves() {
        let size = Size {
            gpus: 3,
            periods: 8,
            services: 2,
            levels: 3,
            segments: 4,
            models: 1,
        };
        let scenario = scenario(size);
        let plan = crate::plan(&scenario, crate::SolverChoice::Clarabel).unwrap();
        assert!(plan.totals.queries_b > 0.0);
    }
}
