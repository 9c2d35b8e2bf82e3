//! Telemetry history: the samples the dashboard records every tick, the queries the history
//! charts ask (one GPU or one node, one metric, a time range and a step) and the downsampling
//! both stores share the meaning of.
//!
//! A query's answer is one point per step-wide bucket (aligned to the Unix epoch) with the
//! sample-weighted mean, the minimum and the maximum, so a chart can draw a line with a band.
//! Rolled-up samples (see [`crate::store::Store::downsample`]) carry the number of raw samples
//! they stand for, and weigh that much.

use serde::{Deserialize, Serialize};

use crate::fleet::FleetView;

/// The most points one history query may return; a smaller step must narrow the range.
pub const MAX_POINTS: i64 = 5_000;

/// The smallest step, milliseconds.
pub const MIN_STEP_MS: i64 = 1_000;

/// One GPU's readings at one instant (or, once rolled up, the mean of `samples` readings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySample {
    /// When, Unix milliseconds (the bucket start for rolled-up samples).
    pub at_ms: i64,
    /// Node name.
    pub node: String,
    /// GPU UUID.
    pub gpu_uuid: String,
    /// NVML index on the node.
    pub gpu_index: i32,
    /// Used memory, MiB.
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: Option<f32>,
    /// Total memory, MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: Option<f32>,
    /// Utilisation, percent.
    pub utilization_percent: Option<f32>,
    /// Temperature, °C.
    pub temperature_celsius: Option<f32>,
    /// Power draw, W.
    pub power_watts: Option<f32>,
    /// Health grade: 0 Healthy, 1 Degraded, 2 Unhealthy (the worst, once rolled up).
    pub health: i16,
    /// Raw samples this one stands for (1 unless rolled up).
    pub samples: i32,
    /// Bucket width it was rolled up to, milliseconds (0 for raw samples).
    pub resolution_ms: i64,
}

impl TelemetrySample {
    /// The value of `metric` in this sample.
    #[must_use]
    pub fn value(&self, metric: Metric) -> Option<f32> {
        match metric {
            Metric::MemoryUsed => self.memory_used_mib,
            Metric::Utilization => self.utilization_percent,
            Metric::Temperature => self.temperature_celsius,
            Metric::Power => self.power_watts,
            Metric::Health => Some(f32::from(self.health)),
        }
    }
}

/// The samples of every GPU of a fleet view, as recorded on a tick.
#[must_use]
pub fn samples_of(fleet: &FleetView) -> Vec<TelemetrySample> {
    #[expect(
        clippy::cast_precision_loss,
        reason = "telemetry values are far below f32's exact-integer range or are rounded readings"
    )]
    fleet
        .gpus()
        .map(|gpu| TelemetrySample {
            at_ms: fleet.observed_at_ms,
            node: gpu.node.clone(),
            gpu_uuid: gpu.uuid.clone(),
            gpu_index: i32::try_from(gpu.index).unwrap_or(i32::MAX),
            memory_used_mib: gpu.memory_used_mib.map(|value| value as f32),
            memory_total_mib: Some(gpu.memory_total_mib as f32),
            utilization_percent: gpu.utilization_percent.map(|value| value as f32),
            temperature_celsius: gpu.temperature_celsius.map(|value| value as f32),
            #[expect(
                clippy::cast_possible_truncation,
                reason = "watts need no more than f32 precision"
            )]
            power_watts: gpu.power_watts.map(|value| value as f32),
            health: health_code(gpu.health),
            samples: 1,
            resolution_ms: 0,
        })
        .collect()
}

/// The stored code of a health grade (ordered, so the worst of a bucket is its maximum).
#[must_use]
pub fn health_code(state: gpufleet_api::gpu_node::HealthState) -> i16 {
    match state {
        gpufleet_api::gpu_node::HealthState::Healthy => 0,
        gpufleet_api::gpu_node::HealthState::Degraded => 1,
        gpufleet_api::gpu_node::HealthState::Unhealthy => 2,
    }
}

/// A metric the history charts can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    /// Used memory, MiB.
    MemoryUsed,
    /// Utilisation, percent.
    Utilization,
    /// Temperature, °C.
    Temperature,
    /// Power draw, W.
    Power,
    /// Health code (0 Healthy, 1 Degraded, 2 Unhealthy).
    Health,
}

impl Metric {
    /// Every metric, as the API names them.
    pub const ALL: [Metric; 5] = [
        Metric::MemoryUsed,
        Metric::Utilization,
        Metric::Temperature,
        Metric::Power,
        Metric::Health,
    ];

    /// The API name (also what the PostgreSQL query's `CASE` matches).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Metric::MemoryUsed => "memoryUsed",
            Metric::Utilization => "utilization",
            Metric::Temperature => "temperature",
            Metric::Power => "power",
            Metric::Health => "health",
        }
    }

    /// The unit of the values.
    #[must_use]
    pub fn unit(self) -> &'static str {
        match self {
            Metric::MemoryUsed => "MiB",
            Metric::Utilization => "%",
            Metric::Temperature => "°C",
            Metric::Power => "W",
            Metric::Health => "grade",
        }
    }

    /// The metric with this API name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|metric| metric.name() == name)
    }
}

/// Whose history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum Subject {
    /// One GPU, by UUID.
    Gpu(String),
    /// Every GPU of one node, by node name.
    Node(String),
}

/// A validated history query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    /// Whose.
    pub subject: Subject,
    /// Which metric.
    pub metric: Metric,
    /// Start, Unix milliseconds (inclusive).
    pub from_ms: i64,
    /// End, Unix milliseconds (exclusive).
    pub to_ms: i64,
    /// Bucket width, milliseconds.
    pub step_ms: i64,
}

/// One bucket of a history answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    /// Bucket start, Unix milliseconds.
    pub at_ms: i64,
    /// Sample-weighted mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Raw samples behind the point.
    pub samples: i64,
}

/// Why a history query was refused; each names the parameter and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryProblem {
    /// Neither or both of `gpu` and `node`.
    #[error("give exactly one of `gpu` (a GPU UUID) or `node` (a node name)")]
    Subject,
    /// An unknown metric.
    #[error(
        "`metric` {0:?} is unknown; use one of memoryUsed, utilization, temperature, power, health"
    )]
    Metric(String),
    /// `from` not before `to`.
    #[error("`from` ({from}) must be before `to` ({to}), both Unix milliseconds")]
    Range {
        /// Given start.
        from: i64,
        /// Given end.
        to: i64,
    },
    /// A step below the minimum or one that yields too many points.
    #[error(
        "`step` {step} ms gives {points} points; use a step of at least {minimum} ms (at most {MAX_POINTS} points, steps of at least {MIN_STEP_MS} ms)"
    )]
    Step {
        /// Given step.
        step: i64,
        /// Points it would give.
        points: i64,
        /// The smallest acceptable step.
        minimum: i64,
    },
}

impl HistoryQuery {
    /// Validates raw query parameters. Without `step`, the range is cut into about 300 points.
    ///
    /// # Errors
    /// A [`QueryProblem`] naming the parameter to fix.
    pub fn new(
        gpu: Option<String>,
        node: Option<String>,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        step_ms: Option<i64>,
    ) -> Result<Self, QueryProblem> {
        let subject = match (gpu, node) {
            (Some(gpu), None) if !gpu.is_empty() => Subject::Gpu(gpu),
            (None, Some(node)) if !node.is_empty() => Subject::Node(node),
            _ => return Err(QueryProblem::Subject),
        };
        let metric =
            Metric::from_name(metric).ok_or_else(|| QueryProblem::Metric(metric.to_owned()))?;
        if from_ms >= to_ms {
            return Err(QueryProblem::Range {
                from: from_ms,
                to: to_ms,
            });
        }
        let span = to_ms - from_ms;
        let minimum = ((span + MAX_POINTS - 1) / MAX_POINTS).max(MIN_STEP_MS);
        let step_ms = step_ms.unwrap_or_else(|| (span / 300).max(minimum));
        if step_ms < minimum {
            return Err(QueryProblem::Step {
                step: step_ms,
                points: span / step_ms.max(1),
                minimum,
            });
        }
        Ok(HistoryQuery {
            subject,
            metric,
            from_ms,
            to_ms,
            step_ms,
        })
    }

    /// Whether a sample belongs to this query's subject and range.
    #[must_use]
    pub fn selects(&self, sample: &TelemetrySample) -> bool {
        let subject = match &self.subject {
            Subject::Gpu(uuid) => sample.gpu_uuid == *uuid,
            Subject::Node(node) => sample.node == *node,
        };
        subject && sample.at_ms >= self.from_ms && sample.at_ms < self.to_ms
    }
}

/// The start of the step-wide bucket holding `at_ms` (aligned to the epoch, like PostgreSQL's
/// `date_bin(step, at, 'epoch')`).
#[must_use]
pub fn bucket_start(at_ms: i64, step_ms: i64) -> i64 {
    at_ms.div_euclid(step_ms) * step_ms
}

/// Buckets `(at_ms, value, weight)` readings into history points, in time order.
#[must_use]
pub fn downsample(
    readings: impl IntoIterator<Item = (i64, f64, i64)>,
    step_ms: i64,
) -> Vec<HistoryPoint> {
    let mut buckets: std::collections::BTreeMap<i64, (f64, f64, f64, i64)> =
        std::collections::BTreeMap::new();
    for (at_ms, value, weight) in readings {
        let entry = buckets.entry(bucket_start(at_ms, step_ms)).or_insert((
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0,
        ));
        #[expect(
            clippy::cast_precision_loss,
            reason = "sample counts are far below 2^52"
        )]
        let weighted = value * weight as f64;
        entry.0 += weighted;
        entry.1 = entry.1.min(value);
        entry.2 = entry.2.max(value);
        entry.3 += weight;
    }
    buckets
        .into_iter()
        .map(|(at_ms, (sum, min, max, samples))| {
            #[expect(
                clippy::cast_precision_loss,
                reason = "sample counts are far below 2^52"
            )]
            let mean = sum / samples.max(1) as f64;
            HistoryPoint {
                at_ms,
                mean,
                min,
                max,
                samples,
            }
        })
        .collect()
}

/// Rolls raw (or finer) samples up into one sample per GPU and `bucket_ms` bucket: means
/// weighted by `samples`, the worst health, the summed sample count. Shared by the memory store
/// and the PostgreSQL tests' expectations.
#[must_use]
pub fn roll_up(samples: &[TelemetrySample], bucket_ms: i64) -> Vec<TelemetrySample> {
    #[derive(Default)]
    struct Sums {
        node: String,
        index: i32,
        values: [(f64, i64); 5],
        health: i16,
        samples: i32,
    }
    let mut groups: std::collections::BTreeMap<(String, i64), Sums> =
        std::collections::BTreeMap::new();
    for sample in samples {
        let sums = groups
            .entry((
                sample.gpu_uuid.clone(),
                bucket_start(sample.at_ms, bucket_ms),
            ))
            .or_default();
        sums.node.clone_from(&sample.node);
        sums.index = sample.gpu_index;
        sums.health = sums.health.max(sample.health);
        sums.samples += sample.samples;
        let fields = [
            sample.memory_used_mib,
            sample.memory_total_mib,
            sample.utilization_percent,
            sample.temperature_celsius,
            sample.power_watts,
        ];
        for (slot, field) in sums.values.iter_mut().zip(fields) {
            if let Some(value) = field {
                slot.0 += f64::from(value) * f64::from(sample.samples);
                slot.1 += i64::from(sample.samples);
            }
        }
    }
    groups
        .into_iter()
        .map(|((gpu_uuid, at_ms), sums)| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_precision_loss,
                reason = "means of f32 readings fit f32; counts are far below 2^52"
            )]
            let mean = |(sum, count): (f64, i64)| (count > 0).then(|| (sum / count as f64) as f32);
            TelemetrySample {
                at_ms,
                node: sums.node,
                gpu_uuid,
                gpu_index: sums.index,
                memory_used_mib: mean(sums.values[0]),
                memory_total_mib: mean(sums.values[1]),
                utilization_percent: mean(sums.values[2]),
                temperature_celsius: mean(sums.values[3]),
                power_watts: mean(sums.values[4]),
                health: sums.health,
                samples: sums.samples,
                resolution_ms: bucket_ms,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(at_ms: i64, uuid: &str, utilisation: f32) -> TelemetrySample {
        TelemetrySample {
            at_ms,
            node: "n".to_owned(),
            gpu_uuid: uuid.to_owned(),
            gpu_index: 0,
            memory_used_mib: Some(1000.0),
            memory_total_mib: Some(80_000.0),
            utilization_percent: Some(utilisation),
            temperature_celsius: None,
            power_watts: Some(100.0),
            health: 0,
            samples: 1,
            resolution_ms: 0,
        }
    }

    #[test]
    fn query_validation_names_the_parameter_to_fix() {
        let ok = HistoryQuery::new(Some("GPU-1".into()), None, "utilization", 0, 60_000, None)
            .expect("valid");
        assert_eq!(ok.step_ms, MIN_STEP_MS);
        assert_eq!(
            HistoryQuery::new(None, None, "utilization", 0, 1, None),
            Err(QueryProblem::Subject)
        );
        assert!(matches!(
            HistoryQuery::new(Some("g".into()), None, "heat", 0, 1, None),
            Err(QueryProblem::Metric(_))
        ));
        assert!(matches!(
            HistoryQuery::new(Some("g".into()), None, "power", 5, 5, None),
            Err(QueryProblem::Range { .. })
        ));
        let too_fine =
            HistoryQuery::new(None, Some("n".into()), "power", 0, 86_400_000, Some(1_000));
        let Err(QueryProblem::Step { minimum, .. }) = too_fine else {
            panic!("expected a step problem, got {too_fine:?}");
        };
        assert_eq!(minimum, 86_400_000 / MAX_POINTS);
        assert!(too_fine.expect_err("step").to_string().contains("step"));
    }

    #[test]
    fn downsampling_weights_rolled_up_samples_and_aligns_buckets_to_the_epoch() {
        let points = downsample(
            vec![(1_500, 10.0, 1), (1_900, 40.0, 3), (2_100, 5.0, 1)],
            1_000,
        );
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].at_ms, 1_000);
        assert!((points[0].mean - 32.5).abs() < 1e-9);
        assert_eq!((points[0].min, points[0].max), (10.0, 40.0));
        assert_eq!(points[0].samples, 4);
        assert_eq!(points[1].at_ms, 2_000);
        assert_eq!(bucket_start(-1, 1_000), -1_000);
    }

    #[test]
    fn roll_up_keeps_one_sample_per_gpu_and_bucket_with_worst_health() {
        let mut unhealthy = sample(59_000, "a", 30.0);
        unhealthy.health = 2;
        let rolled = roll_up(
            &[
                sample(1_000, "a", 10.0),
                unhealthy,
                sample(61_000, "a", 90.0),
                sample(2_000, "b", 50.0),
            ],
            60_000,
        );
        assert_eq!(rolled.len(), 3);
        let first = &rolled[0];
        assert_eq!((first.gpu_uuid.as_str(), first.at_ms), ("a", 0));
        assert_eq!(first.utilization_percent, Some(20.0));
        assert_eq!(first.temperature_celsius, None);
        assert_eq!((first.health, first.samples), (2, 2));
        assert_eq!(first.resolution_ms, 60_000);
        // Rolling the roll-up up again keeps the raw-sample weights.
        let again = roll_up(&rolled[..2], 3_600_000);
        assert_eq!(again[0].samples, 3);
        assert!((again[0].utilization_percent.expect("value") - 130.0 / 3.0).abs() < 1e-3);
    }
}
