//! How candidates are ranked: the strategy, the penalty weights and the expected workload mix
//! that fragmentation-aware scoring measures fragmentation against.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fragmentation::FragmentationMeasure;
use crate::request::{GpuRequest, MemoryNeed, ReplicaRequest};
use crate::{Error, Result};

/// The ranking rule among feasible candidates. gpufleet's own strategies' costs are in
/// GPU-equivalents so the telemetry penalties of [`ScoreWeights`] mean the same under each; the
/// FGD paper's baselines ([`Strategy::PAPER`]) keep the paper's scores, as costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// gpufleet's fragmentation-aware placement: choose the node and GPUs whose use increases
    /// the node's fragmentation (the free GPU capacity the expected workload can no longer
    /// use, by [`EngineConfig::fragmentation_measure`]: by default counting what tasks can
    /// really take, CPU and host memory included) least, exactly, CPU and memory of the
    /// replica included. Cost = fragmentation after − before, in GPUs.
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
    /// The FGD paper's own method (Weng et al., ATC '23), as its artifact scores it: the paper's
    /// fragmentation measure (CPU-only host check, the 95% most popular task types), the score
    /// ⌊100·σ(−Δ/1000)⌋, equal scores tied and broken by a seeded node order. A reference to
    /// hold gpufleet's strategies against in the same run.
    Fgd,
    /// The paper's random baseline: a uniformly random feasible node (seeded).
    Random,
    /// The paper's dot-product baseline (Tetris): the smallest dot product of the node's free
    /// [CPU, GPU] and the request, each over the largest node's (128 cores, 8 GPUs).
    DotProduct,
    /// The paper's GPU-clustering baseline (Gandiva): nodes already running Pods of the same kind
    /// (CPU-only, shared GPU, k whole GPUs) first, then fuller nodes.
    GpuClustering,
    /// The paper's GPU-packing baseline: shared GPUs first, then free GPUs on used nodes, then
    /// idle nodes.
    GpuPacking,
    /// The paper's best-fit baseline: the least free CPU and GPU left, equally weighted.
    BestFitCpuGpu,
}

impl Strategy {
    /// gpufleet's strategies, in the order reports list them.
    pub const ALL: [Strategy; 4] = [
        Strategy::FragmentationAware,
        Strategy::BestFit,
        Strategy::Pack,
        Strategy::Spread,
    ];

    /// The FGD paper's method and baselines, by its definitions.
    pub const PAPER: [Strategy; 6] = [
        Strategy::Fgd,
        Strategy::BestFitCpuGpu,
        Strategy::GpuPacking,
        Strategy::GpuClustering,
        Strategy::DotProduct,
        Strategy::Random,
    ];

    /// The strategy's command-line name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Strategy::FragmentationAware => "fragmentation-aware",
            Strategy::BestFit => "best-fit",
            Strategy::Pack => "pack",
            Strategy::Spread => "spread",
            Strategy::Fgd => "fgd",
            Strategy::Random => "random",
            Strategy::DotProduct => "dot-product",
            Strategy::GpuClustering => "gpu-clustering",
            Strategy::GpuPacking => "gpu-packing",
            Strategy::BestFitCpuGpu => "best-fit-cpu-gpu",
        }
    }

    /// Whether the engine's ranking of this strategy depends on the request's CPU and memory
    /// (then the shape index is kept per host need too).
    pub(crate) fn ranks_by_host_need(self) -> bool {
        matches!(self, Strategy::Fgd | Strategy::DotProduct)
    }

    /// Whether this is one of the FGD paper's method and baselines ([`Strategy::PAPER`]):
    /// reproduced as published, without gpufleet's soft spreading.
    #[must_use]
    pub fn is_paper(self) -> bool {
        Strategy::PAPER.contains(&self)
    }

    /// Whether ties between nodes go to a seeded random node order (the paper's artifact renames
    /// nodes in a random order) rather than to the node that sorts first by name.
    pub(crate) fn breaks_ties_at_random(self) -> bool {
        self.is_paper()
    }

    /// Whether the walk adds the replica's own CPU and memory to the ranking key (the key is a
    /// lower bound of the exact cost).
    pub(crate) fn refines_with_host(self) -> bool {
        matches!(self, Strategy::FragmentationAware)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    /// Reads a strategy's name.
    fn from_str(text: &str) -> Result<Self> {
        Strategy::ALL
            .into_iter()
            .chain(Strategy::PAPER)
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
    /// How fragmentation-aware scoring counts the capacity the workload can use.
    #[serde(default)]
    pub fragmentation_measure: FragmentationMeasure,
    /// Weight of the capacity measure's CPU-balance term, per GPU of free capacity a node's
    /// free CPU cannot feed at the workload's CPU per GPU. On the openb trace (seeds 42–45,
    /// the paper's protocol) GPU allocation at 130% rose with it to 1 (95.76%) and 8 (95.93%)
    /// and stayed flat to 200: CPU stranding is avoided first, fragmentation minimised second.
    #[serde(default = "default_cpu_balance_weight")]
    pub cpu_balance_weight: f64,
    /// Soft spreading of a group's replicas, in GPU-equivalents per replica of the group already
    /// on the node (half that per replica elsewhere in its zone) when the request gives none:
    /// placing a second replica on a node must save more than this much fragmentation. 0 packs
    /// purely.
    #[serde(default = "default_spread_weight")]
    pub spread_weight: f64,
    /// Seed of the random baselines and of the FGD reference's tie-breaking.
    #[serde(default)]
    pub seed: u64,
    /// Learning the workload mix from what arrives, on top of [`EngineConfig::mix`] as a prior;
    /// `None` keeps the mix fixed.
    #[serde(default)]
    pub learning: Option<MixLearning>,
}

fn default_spread_weight() -> f64 {
    1.0
}

fn default_cpu_balance_weight() -> f64 {
    8.0
}

/// How the engine learns the workload mix from the replicas it is asked to place.
///
/// The mix fragmentation is measured against is `prior_weight × mix + learned`, where each
/// arrival adds 1 to its shape's count and every count decays with the half-life; the engine
/// switches to the new mix (rescoring every node) only when it has drifted from the one in use
/// by more than `refresh_drift` in total variation, so a steady workload costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MixLearning {
    /// Arrivals after which an arrival's weight halves.
    pub half_life_arrivals: f64,
    /// Weight of the prior, in arrivals.
    pub prior_weight: f64,
    /// Total-variation distance from the mix in use beyond which the engine switches.
    pub refresh_drift: f64,
}

impl Default for MixLearning {
    fn default() -> Self {
        MixLearning {
            half_life_arrivals: 2_000.0,
            prior_weight: 500.0,
            refresh_drift: 0.1,
        }
    }
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
            fragmentation_measure: FragmentationMeasure::default(),
            cpu_balance_weight: default_cpu_balance_weight(),
            spread_weight: default_spread_weight(),
            seed: 0,
            learning: None,
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
    /// CPU a task of the type needs, millicores (0: unknown or none).
    #[serde(default)]
    pub cpu_milli: u64,
    /// Host memory a task of the type needs, MiB (0: unknown or none).
    #[serde(default)]
    pub memory_mib: u64,
    /// Relative frequency (any positive scale; normalised by the engine).
    pub weight: f64,
}

/// What decides how a task can use a node: its GPU request, allowed products, CPU and memory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TaskShape {
    pub(crate) gpu: GpuRequest,
    pub(crate) allowed_products: Vec<String>,
    pub(crate) cpu_milli: u64,
    pub(crate) memory_mib: u64,
}

impl TaskShape {
    pub(crate) fn of(request: &ReplicaRequest) -> TaskShape {
        let mut allowed_products = request.allowed_products.clone();
        allowed_products.sort();
        TaskShape {
            gpu: request.gpu,
            allowed_products,
            cpu_milli: request.cpu_milli,
            memory_mib: request.memory_mib,
        }
    }

    pub(crate) fn of_entry(entry: &MixEntry) -> TaskShape {
        let mut allowed_products = entry.allowed_products.clone();
        allowed_products.sort();
        TaskShape {
            gpu: entry.gpu,
            allowed_products,
            cpu_milli: entry.cpu_milli,
            memory_mib: entry.memory_mib,
        }
    }

    pub(crate) fn entry(self, weight: f64) -> MixEntry {
        MixEntry {
            gpu: self.gpu,
            allowed_products: self.allowed_products,
            cpu_milli: self.cpu_milli,
            memory_mib: self.memory_mib,
            weight,
        }
    }
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
            cpu_milli: 0,
            memory_mib: 0,
            weight,
        };
        let whole = |count, weight| MixEntry {
            gpu: GpuRequest::Whole {
                count,
                memory: MemoryNeed::Mib(30_000),
            },
            allowed_products: Vec::new(),
            cpu_milli: 0,
            memory_mib: 0,
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

    /// The mix a workload itself shows: its `max_entries` most frequent task types (GPU
    /// request, allowed products, CPU and host memory), weighted by how many replicas ask for
    /// each. `usize::MAX` keeps every shape.
    #[must_use]
    pub fn from_requests(requests: &[ReplicaRequest], max_entries: usize) -> Self {
        let mut counts: BTreeMap<TaskShape, u64> = BTreeMap::new();
        for request in requests {
            *counts.entry(TaskShape::of(request)).or_default() += 1;
        }
        let mut ranked: Vec<_> = counts.into_iter().collect();
        // Most frequent first; the BTreeMap order breaks ties deterministically.
        ranked.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        ranked.truncate(max_entries.max(1));
        WorkloadMix {
            entries: ranked
                .into_iter()
                .map(|(shape, count)| shape.entry(count as f64))
                .collect(),
        }
    }

    /// The FGD artifact's target workload: task types by (CPU, GPU share, GPU count, allowed
    /// models), host memory left out, the most popular first (ties by CPU, share, count, models)
    /// until they cover 95% of the tasks, weighted by their counts.
    #[must_use]
    pub fn fgd_target(requests: &[ReplicaRequest]) -> Self {
        let mut counts: BTreeMap<TaskShape, u64> = BTreeMap::new();
        for request in requests {
            let mut shape = TaskShape::of(request);
            shape.memory_mib = 0;
            *counts.entry(shape).or_default() += 1;
        }
        let total: u64 = counts.values().sum();
        let mut ranked: Vec<(TaskShape, u64)> = counts.into_iter().collect();
        ranked.sort_by(|(left, left_count), (right, right_count)| {
            right_count
                .cmp(left_count)
                .then(left.cpu_milli.cmp(&right.cpu_milli))
                .then(left.gpu.milli_per_gpu().cmp(&right.gpu.milli_per_gpu()))
                .then(left.gpu.gpu_count().cmp(&right.gpu.gpu_count()))
                .then(left.allowed_products.cmp(&right.allowed_products))
        });
        let mut covered = 0;
        let mut entries = Vec::new();
        for (shape, count) in ranked {
            if covered * 100 >= total * 95 {
                break;
            }
            covered += count;
            entries.push(shape.entry(count as f64));
        }
        WorkloadMix { entries }
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
