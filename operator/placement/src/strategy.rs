//! How candidates are ranked: the strategy, the penalty weights and the expected workload mix
//! that fragmentation-aware scoring measures fragmentation against.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::request::{GpuRequest, MemoryNeed, ReplicaRequest};
use crate::{Error, Result};

/// The ranking rule among feasible candidates. Every strategy's cost is in GPU-equivalents so
/// the telemetry penalties of [`ScoreWeights`] mean the same under each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// FGD-style (Weng et al., ATC '23): choose the node and GPUs whose use increases the node's
    /// fragmentation (the free GPU capacity the expected workload mix can no longer use) least.
    /// Cost = fragmentation after − before, in GPUs.
    FragmentationAware,
    /// Pack by least remaining: cost = free GPU capacity left on the node afterwards, in GPUs;
    /// within the node, the GPU left with the least free share.
    BestFit,
    /// kube-scheduler's MostAllocated: cost = −(allocated share of the node afterwards); within
    /// the node, the most allocated GPU. Differs from best-fit on nodes of different sizes.
    Pack,
    /// LeastAllocated: cost = allocated share of the node afterwards; within the node, the least
    /// allocated GPU.
    Spread,
}

impl Strategy {
    /// Every strategy, in the order reports list them.
    pub const ALL: [Strategy; 4] = [
        Strategy::FragmentationAware,
        Strategy::BestFit,
        Strategy::Pack,
        Strategy::Spread,
    ];

    /// The strategy's command-line name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Strategy::FragmentationAware => "fragmentation-aware",
            Strategy::BestFit => "best-fit",
            Strategy::Pack => "pack",
            Strategy::Spread => "spread",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    /// Reads a strategy's name; `fgd` also names the fragmentation-aware one.
    fn from_str(text: &str) -> Result<Self> {
        if text == "fgd" {
            return Ok(Strategy::FragmentationAware);
        }
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.name() == text)
            .ok_or_else(|| Error::UnknownStrategy {
                given: text.to_owned(),
            })
    }
}

/// Weights of the telemetry penalties added to a strategy's cost, in GPU-equivalents: a
/// Degraded GPU with the default weight loses to a healthy one unless choosing the healthy one
/// strands more than half a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoreWeights {
    /// Added for a Degraded GPU.
    pub degraded: f64,
    /// Added for a GPU at or above [`EngineConfig::hot_temperature_celsius`].
    pub hot: f64,
    /// Added for a throttling GPU.
    pub throttling: f64,
    /// Added for a GPU with less power headroom than [`EngineConfig::low_power_headroom_watts`].
    pub low_power_headroom: f64,
    /// Multiplied by the utilisation fraction (0–1).
    pub utilisation: f64,
    /// Added for a GPU without telemetry.
    pub missing_telemetry: f64,
    /// Added when a multi-GPU placement spans NUMA nodes.
    pub numa_split: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            degraded: 0.5,
            hot: 0.25,
            throttling: 0.25,
            low_power_headroom: 0.1,
            utilisation: 0.2,
            missing_telemetry: 0.05,
            numa_split: 0.05,
        }
    }
}

/// Everything that tunes the engine besides its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineConfig {
    /// The ranking rule.
    pub strategy: Strategy,
    /// The expected workload, for fragmentation-aware scoring and the fragmentation metric.
    pub mix: WorkloadMix,
    /// Penalty weights.
    pub weights: ScoreWeights,
    /// Headroom, MiB, kept free by telemetry on each chosen GPU when a request gives none.
    pub default_memory_headroom_mib: u64,
    /// How long after a placement its memory may still be missing from telemetry. A placement
    /// made less than this before the node's telemetry sample is in flight and shadow-accounted.
    pub telemetry_settle_ms: u64,
    /// Temperature from which a GPU counts as hot.
    pub hot_temperature_celsius: u32,
    /// Power headroom below which a GPU is penalised.
    pub low_power_headroom_watts: u32,
}

impl EngineConfig {
    /// Defaults with the given strategy and mix.
    #[must_use]
    pub fn new(strategy: Strategy, mix: WorkloadMix) -> Self {
        EngineConfig {
            strategy,
            mix,
            weights: ScoreWeights::default(),
            default_memory_headroom_mib: 1024,
            telemetry_settle_ms: 120_000,
            hot_temperature_celsius: 85,
            low_power_headroom_watts: 30,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::new(
            Strategy::FragmentationAware,
            WorkloadMix::inference_default(),
        )
    }
}

/// The distribution of typical requests the fleet expects, against which fragmentation is
/// measured: a GPU share counts as fragmented for a request type when that type cannot use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadMix {
    /// Request types with their relative frequency.
    pub entries: Vec<MixEntry>,
}

/// One request type of a [`WorkloadMix`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MixEntry {
    /// The GPU request.
    pub gpu: GpuRequest,
    /// Products it may use; empty = any.
    #[serde(default)]
    pub allowed_products: Vec<String>,
    /// Relative frequency (any positive scale; normalised by the engine).
    pub weight: f64,
}

impl WorkloadMix {
    /// A mix typical of LLM inference fleets: many small shared replicas, single-GPU models and a
    /// tail of tensor-parallel 2/4/8-GPU replicas.
    #[must_use]
    pub fn inference_default() -> Self {
        let share = |milli, weight| MixEntry {
            gpu: GpuRequest::Fraction {
                milli,
                memory: MemoryNeed::ShareOfCapacity,
            },
            allowed_products: Vec::new(),
            weight,
        };
        let whole = |count, weight| MixEntry {
            gpu: GpuRequest::Whole {
                count,
                memory: MemoryNeed::Mib(30_000),
            },
            allowed_products: Vec::new(),
            weight,
        };
        WorkloadMix {
            entries: vec![
                share(100, 0.25),
                share(250, 0.20),
                share(500, 0.15),
                whole(1, 0.25),
                whole(2, 0.08),
                whole(4, 0.05),
                whole(8, 0.02),
            ],
        }
    }

    /// The mix a workload itself shows: its `max_entries` most frequent request types (GPU
    /// request and allowed products), weighted by how many replicas ask for each. FGD uses the
    /// trace's own distribution the same way.
    #[must_use]
    pub fn from_requests(requests: &[ReplicaRequest], max_entries: usize) -> Self {
        let mut counts: BTreeMap<(GpuRequest, Vec<String>), u64> = BTreeMap::new();
        for request in requests {
            let mut products = request.allowed_products.clone();
            products.sort();
            *counts.entry((request.gpu, products)).or_default() += 1;
        }
        let mut ranked: Vec<_> = counts.into_iter().collect();
        // Most frequent first; the BTreeMap order breaks ties deterministically.
        ranked.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        ranked.truncate(max_entries.max(1));
        WorkloadMix {
            entries: ranked
                .into_iter()
                .map(|((gpu, allowed_products), count)| MixEntry {
                    gpu,
                    allowed_products,
                    weight: count as f64,
                })
                .collect(),
        }
    }

    /// Rejects mixes the engine cannot use.
    ///
    /// # Errors
    /// [`Error::InvalidMix`] when empty, or an entry has a non-positive weight or invalid request.
    pub fn validate(&self) -> Result<()> {
        if self.entries.is_empty() {
            return Err(Error::InvalidMix {
                problem: "the workload mix has no entries; give at least one request type"
                    .to_owned(),
            });
        }
        for (position, entry) in self.entries.iter().enumerate() {
            if !(entry.weight.is_finite() && entry.weight > 0.0) {
                return Err(Error::InvalidMix {
                    problem: format!(
                        "entry {position} has weight {}; weights must be positive numbers",
                        entry.weight
                    ),
                });
            }
            entry
                .gpu
                .validate(&format!("workload mix entry {position}"))?;
        }
        Ok(())
    }
}
