//! Scaling-law calculators: Chinchilla's parametric loss and its compute-optimal allocation,
//! inference-aware sizing (Sardana et al.), test-time accuracy curves, the accounting of a
//! training run (DeepSeek-V3), and tangent-cut approximations of convex curves whose maximum
//! error is computed, not assumed.
//!
//! All functions take and return plain numbers in natural units (parameters, tokens, FLOP);
//! the LP model rescales them.

use serde::{Deserialize, Serialize};

use crate::{Result, invalid};

/// FLOP per parameter per training token (forward + backward), the usual 6·N·D convention.
pub const TRAINING_FLOP_PER_PARAMETER_TOKEN: f64 = 6.0;
/// FLOP per active parameter per generated or read token at inference, the 2·N convention.
pub const INFERENCE_FLOP_PER_PARAMETER_TOKEN: f64 = 2.0;

/// A published set of constants for Chinchilla's parametric loss
/// L(N, D) = E + A / N^α + B / D^β. Optimal model sizes move by several × between sets, so a
/// scenario must name the one it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConstantSet {
    /// Hoffmann et al. 2022 (arXiv 2203.15556), Eq. 10 as printed: α = 0.34, β = 0.28.
    #[default]
    Hoffmann,
    /// The same paper's TeX source, with more digits: α = 0.3392, β = 0.2849.
    HoffmannTex,
    /// Epoch AI's replication (Besiroglu et al. 2024, arXiv 2404.10102).
    Epoch,
}

impl ConstantSet {
    /// Every set, for listings and tests.
    pub const ALL: [ConstantSet; 3] = [Self::Hoffmann, Self::HoffmannTex, Self::Epoch];

    /// The numeric constants of this set.
    pub fn constants(self) -> ChinchillaConstants {
        match self {
            Self::Hoffmann => ChinchillaConstants {
                irreducible: 1.69,
                parameter_coefficient: 406.4,
                data_coefficient: 410.7,
                parameter_exponent: 0.34,
                data_exponent: 0.28,
            },
            Self::HoffmannTex => ChinchillaConstants {
                irreducible: 1.69,
                parameter_coefficient: 406.4,
                data_coefficient: 410.7,
                parameter_exponent: 0.3392,
                data_exponent: 0.2849,
            },
            Self::Epoch => ChinchillaConstants {
                irreducible: 1.8172,
                parameter_coefficient: 482.01,
                data_coefficient: 2085.43,
                parameter_exponent: 0.3478,
                data_exponent: 0.3658,
            },
        }
    }

    /// The name used in scenario files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hoffmann => "hoffmann",
            Self::HoffmannTex => "hoffmann-tex",
            Self::Epoch => "epoch",
        }
    }

    /// Parses a name as written in scenario files (`hoffmann`, `hoffmann-tex`, `epoch`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|set| set.name() == name)
    }
}

/// The constants of L(N, D) = E + A / N^α + B / D^β (N parameters, D training tokens).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChinchillaConstants {
    /// E: the loss no model size or data can remove.
    pub irreducible: f64,
    /// A.
    pub parameter_coefficient: f64,
    /// B.
    pub data_coefficient: f64,
    /// α.
    pub parameter_exponent: f64,
    /// β.
    pub data_exponent: f64,
}

/// A model size and its training tokens, with the compute and loss they imply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Allocation {
    /// Parameters N.
    pub parameters: f64,
    /// Training tokens D.
    pub tokens: f64,
    /// Training FLOP, 6·N·D.
    pub training_flop: f64,
    /// L(N, D).
    pub loss: f64,
}

impl ChinchillaConstants {
    /// Chinchilla's parametric loss L(N, D).
    pub fn loss(&self, parameters: f64, tokens: f64) -> f64 {
        self.irreducible
            + self.parameter_coefficient / parameters.powf(self.parameter_exponent)
            + self.data_coefficient / tokens.powf(self.data_exponent)
    }

    fn allocation(&self, parameters: f64, tokens: f64) -> Allocation {
        Allocation {
            parameters,
            tokens,
            training_flop: TRAINING_FLOP_PER_PARAMETER_TOKEN * parameters * tokens,
            loss: self.loss(parameters, tokens),
        }
    }

    /// Compute-optimal N and D for a training budget of `compute` FLOP, from the closed form of
    /// Hoffmann et al. Eq. 4: N = G·(C/6)^a, D = G⁻¹·(C/6)^b, G = (αA/βB)^(1/(α+β)),
    /// a = β/(α+β), b = α/(α+β).
    pub fn compute_optimal(&self, compute: f64) -> Allocation {
        let (alpha, beta) = (self.parameter_exponent, self.data_exponent);
        let g = ((alpha * self.parameter_coefficient) / (beta * self.data_coefficient))
            .powf(1.0 / (alpha + beta));
        let scaled = compute / TRAINING_FLOP_PER_PARAMETER_TOKEN;
        let parameters = g * scaled.powf(beta / (alpha + beta));
        let tokens = scaled.powf(alpha / (alpha + beta)) / g;
        self.allocation(parameters, tokens)
    }

    /// The same optimum found numerically (golden-section search of L(N, C/6N) over log N):
    /// an independent check of [`Self::compute_optimal`].
    pub fn compute_optimal_numeric(&self, compute: f64) -> Allocation {
        let tokens_for = |log_parameters: f64| {
            compute / (TRAINING_FLOP_PER_PARAMETER_TOKEN * log_parameters.exp())
        };
        let objective =
            |log_parameters: f64| self.loss(log_parameters.exp(), tokens_for(log_parameters));
        let log_parameters = golden_section_minimum(objective, 0.0, compute.ln());
        self.allocation(log_parameters.exp(), tokens_for(log_parameters))
    }

    /// Exponent γ of the compute-optimal loss curve L*(C) = E + K·C^(−γ), γ = αβ/(α+β).
    pub fn optimal_loss_exponent(&self) -> f64 {
        let (alpha, beta) = (self.parameter_exponent, self.data_exponent);
        alpha * beta / (alpha + beta)
    }

    /// Loss of the compute-optimal model for `compute` FLOP, L*(C).
    pub fn optimal_loss(&self, compute: f64) -> f64 {
        self.compute_optimal(compute).loss
    }

    /// FLOP needed to reach `target_loss` with a compute-optimal model (inverse of L*(C)).
    pub fn compute_for_loss(&self, target_loss: f64) -> Result<f64> {
        let reducible = target_loss - self.irreducible;
        if reducible <= 0.0 {
            return Err(invalid(
                "target_loss",
                format!(
                    "{target_loss} is not above the irreducible loss E = {}",
                    self.irreducible
                ),
                "choose a target loss above E for the constant set in use",
            ));
        }
        // L*(C) − E = K·C^(−γ); K from one evaluation at C = 1e24.
        let reference = 1e24;
        let k = (self.optimal_loss(reference) - self.irreducible)
            * reference.powf(self.optimal_loss_exponent());
        Ok((k / reducible).powf(1.0 / self.optimal_loss_exponent()))
    }

    /// Tokens D needed for a model of `parameters` to reach `target_loss`, if it can.
    fn tokens_for_loss(&self, parameters: f64, target_loss: f64) -> Option<f64> {
        let left = target_loss
            - self.irreducible
            - self.parameter_coefficient / parameters.powf(self.parameter_exponent);
        (left > 0.0).then(|| (self.data_coefficient / left).powf(1.0 / self.data_exponent))
    }

    /// Inference-aware sizing (Sardana et al., "Beyond Chinchilla-Optimal", arXiv 2401.00448):
    /// minimise `training_weight`·6·N·D + `inference_weight`·2·N·D_inference subject to
    /// L(N, D) = `target_loss`. With weights of 1 this minimises total FLOP; with $/FLOP ÷ MFU
    /// for each phase it minimises cost. Returns the optimum and, for comparison, the
    /// Chinchilla-optimal model for the same loss.
    pub fn inference_aware(
        &self,
        target_loss: f64,
        inference_tokens: f64,
        weights: PhaseWeights,
    ) -> Result<InferenceAwareSizing> {
        let training_only = self.compute_for_loss(target_loss)?;
        let chinchilla = self.compute_optimal(training_only);
        let smallest = (self.parameter_coefficient / (target_loss - self.irreducible))
            .powf(1.0 / self.parameter_exponent);
        let cost = |log_parameters: f64| -> f64 {
            let parameters = log_parameters.exp();
            match self.tokens_for_loss(parameters, target_loss) {
                Some(tokens) => {
                    weights.training * TRAINING_FLOP_PER_PARAMETER_TOKEN * parameters * tokens
                        + weights.inference
                            * INFERENCE_FLOP_PER_PARAMETER_TOKEN
                            * parameters
                            * inference_tokens
                }
                None => f64::INFINITY,
            }
        };
        // A coarse grid brackets the minimum; golden-section search refines it.
        let low = smallest.ln() + 1e-9;
        let high = smallest.ln() + 30.0;
        let steps = 600;
        let width = (high - low) / steps as f64;
        let best = (0..=steps)
            .map(|index| low + width * index as f64)
            .min_by(|left, right| cost(*left).total_cmp(&cost(*right)))
            .unwrap_or(low);
        let log_parameters = golden_section_minimum(cost, (best - width).max(low), best + width);
        let parameters = log_parameters.exp();
        let tokens = self
            .tokens_for_loss(parameters, target_loss)
            .ok_or_else(|| {
                invalid(
                    "target_loss",
                    "no finite token count reaches it",
                    "raise the target loss",
                )
            })?;
        let optimum = self.allocation(parameters, tokens);
        let inference_flop = INFERENCE_FLOP_PER_PARAMETER_TOKEN * parameters * inference_tokens;
        let chinchilla_inference_flop =
            INFERENCE_FLOP_PER_PARAMETER_TOKEN * chinchilla.parameters * inference_tokens;
        Ok(InferenceAwareSizing {
            optimum,
            inference_flop,
            weighted_cost: cost(log_parameters),
            chinchilla,
            chinchilla_inference_flop,
            chinchilla_weighted_cost: weights.training * chinchilla.training_flop
                + weights.inference * chinchilla_inference_flop,
        })
    }
}

/// Relative cost of one FLOP in each phase (e.g. $/FLOP ÷ MFU); `{1, 1}` counts FLOP only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseWeights {
    /// Weight of a training FLOP.
    pub training: f64,
    /// Weight of an inference FLOP.
    pub inference: f64,
}

impl Default for PhaseWeights {
    fn default() -> Self {
        Self {
            training: 1.0,
            inference: 1.0,
        }
    }
}

/// The result of [`ChinchillaConstants::inference_aware`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InferenceAwareSizing {
    /// The inference-aware model (smaller N, more tokens when inference demand is large).
    pub optimum: Allocation,
    /// Inference FLOP of the inference-aware model over its expected demand.
    pub inference_flop: f64,
    /// Weighted training + inference cost of the optimum.
    pub weighted_cost: f64,
    /// The Chinchilla-optimal model reaching the same loss.
    pub chinchilla: Allocation,
    /// Its inference FLOP over the same demand.
    pub chinchilla_inference_flop: f64,
    /// Its weighted cost.
    pub chinchilla_weighted_cost: f64,
}

/// Golden-section search for the minimum of a unimodal function on `[low, high]`.
fn golden_section_minimum(function: impl Fn(f64) -> f64, mut low: f64, mut high: f64) -> f64 {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut left = high - ratio * (high - low);
    let mut right = low + ratio * (high - low);
    let (mut left_value, mut right_value) = (function(left), function(right));
    for _ in 0..200 {
        if (high - low).abs() < 1e-12 * (1.0 + low.abs()) {
            break;
        }
        if left_value < right_value {
            high = right;
            right = left;
            right_value = left_value;
            left = high - ratio * (high - low);
            left_value = function(left);
        } else {
            low = left;
            left = right;
            left_value = right_value;
            right = low + ratio * (high - low);
            right_value = function(right);
        }
    }
    (low + high) / 2.0
}

/// A concave test-time-scaling curve: accuracy grows with the log of reasoning tokens until it
/// saturates, acc(t) = min(max, base + gain·log2(1 + t/unit)) (o1, DeepSeek-R1 and s1 reports).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningCurve {
    /// Accuracy with no reasoning tokens (0–1).
    pub base_accuracy: f64,
    /// Accuracy gained per doubling of (1 + tokens/unit).
    pub gain_per_doubling: f64,
    /// Saturation accuracy (0–1).
    pub max_accuracy: f64,
    /// Reasoning tokens at which the first doubling completes.
    pub token_unit: f64,
}

impl ReasoningCurve {
    /// Accuracy at `tokens` reasoning tokens per query.
    pub fn accuracy(&self, tokens: f64) -> f64 {
        (self.base_accuracy + self.gain_per_doubling * (1.0 + tokens / self.token_unit).log2())
            .min(self.max_accuracy)
    }
}

/// One cut of an outer linear approximation: y ≥ slope·x + intercept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TangentCut {
    /// Slope of the tangent.
    pub slope: f64,
    /// Intercept of the tangent.
    pub intercept: f64,
    /// Point where it touches the curve.
    pub touch: f64,
}

/// Tangent cuts of a convex function on `[low, high]`, with the largest gap between the curve
/// and the maximum of the cuts. An LP that writes y ≥ every cut under-states y by at most
/// `max_error`; the planner reports it next to every result that uses the cuts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TangentCuts {
    /// The cuts, in increasing order of touching point.
    pub cuts: Vec<TangentCut>,
    /// Largest f(x) − max_k cut_k(x) over the interval (attained where adjacent cuts cross).
    pub max_error: f64,
    /// Where that largest gap is.
    pub max_error_at: f64,
}

impl TangentCuts {
    /// Builds `count` (≥ 2) tangents of the convex function `function` (derivative
    /// `derivative`), touching at geometrically spaced points from `low` to `high` (> 0).
    pub fn of_convex(
        function: impl Fn(f64) -> f64,
        derivative: impl Fn(f64) -> f64,
        low: f64,
        high: f64,
        count: usize,
    ) -> Self {
        let count = count.max(2);
        let ratio = (high / low).powf(1.0 / (count - 1) as f64);
        let cuts: Vec<TangentCut> = (0..count)
            .map(|index| {
                let touch = if index + 1 == count {
                    high
                } else {
                    low * ratio.powi(index as i32)
                };
                let slope = derivative(touch);
                TangentCut {
                    slope,
                    intercept: function(touch) - slope * touch,
                    touch,
                }
            })
            .collect();
        // f convex minus a line is convex, so on each piece where one cut is the maximum the gap
        // peaks at the piece's ends: the crossings of adjacent cuts (the touch points have gap 0).
        let mut max_error = 0.0;
        let mut max_error_at = low;
        for pair in cuts.windows(2) {
            let (left, right) = (pair[0], pair[1]);
            if (left.slope - right.slope).abs()
                <= f64::EPSILON * left.slope.abs().max(right.slope.abs())
            {
                continue;
            }
            let crossing = (right.intercept - left.intercept) / (left.slope - right.slope);
            let below = cuts
                .iter()
                .map(|cut| cut.slope * crossing + cut.intercept)
                .fold(f64::NEG_INFINITY, f64::max);
            let gap = function(crossing) - below;
            if gap > max_error {
                max_error = gap;
                max_error_at = crossing;
            }
        }
        Self {
            cuts,
            max_error,
            max_error_at,
        }
    }
}

/// GPU-hours of a training run by stage, as a lab reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingRunAccounting {
    /// Name of the run.
    pub name: String,
    /// (stage, GPU-hours), pre-training first.
    pub stages: Vec<(String, f64)>,
    /// Pre-training tokens, in trillions.
    pub pretraining_tokens_trillions: f64,
    /// Rental price assumed, $ per GPU-hour.
    pub usd_per_gpu_hour: f64,
}

impl TrainingRunAccounting {
    /// DeepSeek-V3 technical report: 2,664K pre-training + 119K context extension + 5K
    /// post-training H800 GPU-hours, 14.8T tokens, $2 per GPU-hour.
    pub fn deepseek_v3() -> Self {
        Self {
            name: "DeepSeek-V3 (H800)".into(),
            stages: vec![
                ("pre-training".into(), 2_664_000.0),
                ("context extension".into(), 119_000.0),
                ("post-training".into(), 5_000.0),
            ],
            pretraining_tokens_trillions: 14.8,
            usd_per_gpu_hour: 2.0,
        }
    }

    /// GPU-hours of all stages.
    pub fn total_gpu_hours(&self) -> f64 {
        self.stages.iter().map(|(_, hours)| hours).sum()
    }

    /// Dollars at the assumed rental price (the figure covers the final run only: no research,
    /// ablations, staff or hardware purchase).
    pub fn cost_usd(&self) -> f64 {
        self.total_gpu_hours() * self.usd_per_gpu_hour
    }

    /// Pre-training GPU-hours per trillion tokens.
    pub fn gpu_hours_per_trillion_tokens(&self) -> f64 {
        self.stages.first().map_or(0.0, |(_, hours)| *hours) / self.pretraining_tokens_trillions
    }

    /// Model FLOP utilisation implied by the pre-training stage: 6·N_active·D over
    /// GPU-seconds × peak FLOP/s.
    pub fn implied_mfu(&self, active_parameters: f64, peak_flop_per_second: f64) -> f64 {
        let hours = self.stages.first().map_or(0.0, |(_, hours)| *hours);
        TRAINING_FLOP_PER_PARAMETER_TOKEN
            * active_parameters
            * self.pretraining_tokens_trillions
            * 1e12
            / (hours * 3600.0 * peak_flop_per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    #[test]
    fn compute_optimal_closed_form_matches_numeric_minimum_for_several_budgets() {
        for set in ConstantSet::ALL {
            let constants = set.constants();
            for compute in [1e21, 5.76e23, 1e24, 3.8e25, 1e27] {
                let closed = constants.compute_optimal(compute);
                let numeric = constants.compute_optimal_numeric(compute);
                assert!(
                    relative(closed.parameters, numeric.parameters) < 1e-3,
                    "{set:?} {compute}"
                );
                assert!(
                    relative(closed.tokens, numeric.tokens) < 1e-3,
                    "{set:?} {compute}"
                );
                assert!(relative(closed.training_flop, compute) < 1e-9);
            }
        }
    }

    #[test]
    fn compute_optimal_known_answers_hoffmann() {
        // Eq. 4 evaluated by hand: G = (0.34·406.4 / (0.28·410.7))^(1/0.62) = 1.3447…,
        // a = 0.28/0.62, b = 0.34/0.62.
        let constants = ConstantSet::Hoffmann.constants();
        let g: f64 = (0.34f64 * 406.4 / (0.28 * 410.7)).powf(1.0 / 0.62);
        assert!(relative(g, 1.3447) < 1e-3, "G = {g}");
        for (compute, parameters, tokens) in [
            (
                1e24,
                g * (1e24f64 / 6.0).powf(0.28 / 0.62),
                (1e24f64 / 6.0).powf(0.34 / 0.62) / g,
            ),
            (
                1e22,
                g * (1e22f64 / 6.0).powf(0.28 / 0.62),
                (1e22f64 / 6.0).powf(0.34 / 0.62) / g,
            ),
        ] {
            let allocation = constants.compute_optimal(compute);
            assert!(relative(allocation.parameters, parameters) < 1e-3);
            assert!(relative(allocation.tokens, tokens) < 1e-3);
        }
        // At 1e24 FLOP the printed constants give N ≈ 4.13e10 and D ≈ 4.04e12 (hand-computed).
        let allocation = constants.compute_optimal(1e24);
        assert!(
            relative(allocation.parameters, 4.130e10) < 0.001,
            "{}",
            allocation.parameters
        );
        assert!(
            relative(allocation.tokens, 4.036e12) < 0.001,
            "{}",
            allocation.tokens
        );
    }

    #[test]
    fn constant_sets_disagree_noticeably() {
        let hoffmann = ConstantSet::Hoffmann.constants().compute_optimal(1e25);
        let epoch = ConstantSet::Epoch.constants().compute_optimal(1e25);
        assert!(relative(hoffmann.parameters, epoch.parameters) > 0.2);
    }

    #[test]
    fn compute_for_loss_inverts_optimal_loss() {
        for set in ConstantSet::ALL {
            let constants = set.constants();
            let compute = constants
                .compute_for_loss(constants.irreducible + 0.3)
                .unwrap();
            assert!((constants.optimal_loss(compute) - (constants.irreducible + 0.3)).abs() < 1e-9);
        }
        assert!(
            ConstantSet::Hoffmann
                .constants()
                .compute_for_loss(1.5)
                .is_err()
        );
    }

    #[test]
    fn inference_aware_model_is_smaller_when_demand_is_large() {
        let constants = ConstantSet::Hoffmann.constants();
        let target = 2.0;
        let none = constants
            .inference_aware(target, 0.0, PhaseWeights::default())
            .unwrap();
        assert!(relative(none.optimum.parameters, none.chinchilla.parameters) < 1e-3);
        let heavy = constants
            .inference_aware(target, 1e15, PhaseWeights::default())
            .unwrap();
        assert!(heavy.optimum.parameters < 0.8 * heavy.chinchilla.parameters);
        assert!(heavy.optimum.tokens > heavy.chinchilla.tokens);
        assert!((heavy.optimum.loss - target).abs() < 1e-9);
        assert!(heavy.weighted_cost <= heavy.chinchilla_weighted_cost);
    }

    #[test]
    fn deepseek_v3_accounting_is_exact() {
        let run = TrainingRunAccounting::deepseek_v3();
        assert_eq!(run.total_gpu_hours(), 2_788_000.0);
        assert_eq!(run.cost_usd(), 5_576_000.0);
        assert!((run.gpu_hours_per_trillion_tokens() - 180_000.0).abs() < 1e-6);
        let mfu = run.implied_mfu(37e9, 989e12);
        assert!((0.33..0.37).contains(&mfu), "{mfu}");
    }

    #[test]
    fn tangent_cuts_bound_their_error() {
        let constants = ConstantSet::Hoffmann.constants();
        let gamma = constants.optimal_loss_exponent();
        let loss = |compute: f64| constants.optimal_loss(compute);
        let derivative = |compute: f64| -gamma * (loss(compute) - constants.irreducible) / compute;
        let coarse = TangentCuts::of_convex(loss, derivative, 1e23, 1e27, 3);
        let fine = TangentCuts::of_convex(loss, derivative, 1e23, 1e27, 12);
        assert!(fine.max_error < coarse.max_error, "{coarse:?} {fine:?}");
        // The bound holds on a dense grid: no point is further below the curve.
        for index in 0..=1000 {
            let compute = 1e23 * 10f64.powf(4.0 * index as f64 / 1000.0);
            let below = fine
                .cuts
                .iter()
                .map(|cut| cut.slope * compute + cut.intercept)
                .fold(f64::MIN, f64::max);
            let gap = loss(compute) - below;
            assert!(gap >= -1e-12);
            assert!(gap <= fine.max_error + 1e-12);
        }
    }

    #[test]
    fn reasoning_curve_is_concave_and_saturates() {
        let curve = ReasoningCurve {
            base_accuracy: 0.5,
            gain_per_doubling: 0.05,
            max_accuracy: 0.9,
            token_unit: 500.0,
        };
        let points: Vec<f64> = (0..20)
            .map(|index| curve.accuracy(1000.0 * index as f64))
            .collect();
        for triple in points.windows(3) {
            assert!(triple[2] - triple[1] <= triple[1] - triple[0] + 1e-12);
        }
        assert!((curve.accuracy(1e12) - 0.9).abs() < 1e-12);
    }
}
