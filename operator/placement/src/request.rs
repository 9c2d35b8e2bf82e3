//! What a replica asks for: GPUs (whole or a share), host resources and placement constraints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::ComputeCapability;
use crate::{Error, Result};

/// One replica to place. Replicas of one InferenceDeployment share `group` and usually the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaRequest {
    /// The replica's name (becomes the placement id).
    pub name: String,
    /// The group (deployment) it belongs to; per-node caps, anti-affinity and topology spread
    /// count replicas of this group.
    pub group: String,
    /// The GPUs it needs.
    pub gpu: GpuRequest,
    /// CPU request in millicores.
    #[serde(default)]
    pub cpu_milli: u64,
    /// Host memory request, MiB.
    #[serde(default)]
    pub memory_mib: u64,
    /// GPU products it may run on (GPU Feature Discovery names); empty = any.
    #[serde(default)]
    pub allowed_products: Vec<String>,
    /// Lowest CUDA compute capability it runs on.
    #[serde(default)]
    pub min_compute_capability: Option<ComputeCapability>,
    /// Labels a node must carry.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// At most this many replicas of the group on one node.
    #[serde(default)]
    pub max_replicas_per_node: Option<u32>,
    /// Topology keys (e.g. `kubernetes.io/hostname`, `topology.kubernetes.io/zone`) whose domains
    /// may hold at most one replica of the group.
    #[serde(default)]
    pub anti_affinity_keys: Vec<String>,
    /// Hard topology spread constraints over the group's replicas.
    #[serde(default)]
    pub topology_spread: Vec<TopologySpread>,
    /// Extra free memory, MiB, that must remain on each chosen GPU by its telemetry (protects
    /// against KV-cache growth and telemetry lag); `None` uses the engine's default.
    #[serde(default)]
    pub memory_headroom_mib: Option<u64>,
    /// Soft spreading of the group's replicas across nodes and zones, in GPU-equivalents per
    /// replica already there (see [`crate::EngineConfig::spread_weight`]); `None` uses the
    /// engine's default, 0 packs purely.
    #[serde(default)]
    pub spread_weight: Option<f64>,
}

/// The GPU part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum GpuRequest {
    /// No GPU: a CPU-only task (trace replays place them on GPU nodes, where they take CPU and
    /// host memory other tasks' GPUs may need). The operator never asks for one: an
    /// InferenceDeployment always names GPUs.
    #[serde(rename = "none")]
    NoGpu,
    /// `count` whole GPUs, all in one NVLink group, used exclusively.
    #[serde(rename_all = "camelCase")]
    Whole {
        /// How many GPUs.
        count: u32,
        /// Memory the model needs on each GPU.
        memory: MemoryNeed,
    },
    /// A share of one GPU, shared with other fractional replicas by compute and memory.
    #[serde(rename_all = "camelCase")]
    Fraction {
        /// Compute share in thousandths of a GPU (1–999).
        milli: u32,
        /// Memory the model needs on the GPU.
        memory: MemoryNeed,
    },
}

/// How much framebuffer memory a replica needs on each of its GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MemoryNeed {
    /// A fixed amount (weights + KV cache of the served model), MiB.
    Mib(u64),
    /// The same share of the GPU's memory as of its compute (a 250-milli share of an 80 GiB GPU
    /// needs 20 GiB; a whole GPU needs all of it). This is what trace replays use, where requests
    /// only say a share; a whole GPU then fits only where telemetry shows it entirely free.
    ShareOfCapacity,
}

/// A hard topology spread constraint (`whenUnsatisfiable: DoNotSchedule`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopologySpread {
    /// Node label whose values are the domains.
    pub key: String,
    /// The most a domain's replica count may exceed the least-loaded domain's after placement.
    pub max_skew: u32,
}

impl GpuRequest {
    /// Compute share per GPU in thousandths.
    #[must_use]
    pub fn milli_per_gpu(&self) -> u32 {
        match self {
            GpuRequest::NoGpu => 0,
            GpuRequest::Whole { .. } => 1000,
            GpuRequest::Fraction { milli, .. } => *milli,
        }
    }

    /// Number of GPUs the replica occupies.
    #[must_use]
    pub fn gpu_count(&self) -> u32 {
        match self {
            GpuRequest::NoGpu => 0,
            GpuRequest::Whole { count, .. } => *count,
            GpuRequest::Fraction { .. } => 1,
        }
    }

    /// The memory need per GPU; `None` for a request without GPUs.
    #[must_use]
    pub fn memory(&self) -> Option<MemoryNeed> {
        match self {
            GpuRequest::NoGpu => None,
            GpuRequest::Whole { memory, .. } | GpuRequest::Fraction { memory, .. } => Some(*memory),
        }
    }

    /// Total demand in thousandths of a GPU (a 4-GPU replica is 4000).
    #[must_use]
    pub fn total_milli(&self) -> u64 {
        u64::from(self.milli_per_gpu()) * u64::from(self.gpu_count())
    }

    /// Memory this request needs on a GPU of `capacity_mib`.
    #[must_use]
    pub fn memory_need_mib(&self, capacity_mib: u64) -> u64 {
        match self.memory() {
            None => 0,
            Some(MemoryNeed::Mib(mib)) => mib,
            Some(MemoryNeed::ShareOfCapacity) => {
                capacity_mib.saturating_mul(u64::from(self.milli_per_gpu())) / 1000
            }
        }
    }

    /// Rejects requests the engine cannot interpret, naming the field and the fix.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a zero count, a share outside 1–999 or a zero memory need.
    pub fn validate(&self, replica: &str) -> Result<()> {
        let invalid = |field: &str, problem: String| Error::InvalidRequest {
            replica: replica.to_owned(),
            field: field.to_owned(),
            problem,
        };
        match self {
            GpuRequest::Whole { count: 0, .. } => {
                return Err(invalid(
                    "gpu.count",
                    "is 0; ask for at least one whole GPU, or use kind: fraction".to_owned(),
                ));
            }
            GpuRequest::Whole { count, .. } if *count > 64 => {
                return Err(invalid(
                    "gpu.count",
                    format!("is {count}; no node has more than 64 GPUs"),
                ));
            }
            GpuRequest::Fraction { milli, .. } if *milli == 0 || *milli >= 1000 => {
                return Err(invalid(
                    "gpu.milli",
                    format!(
                        "is {milli}; a fractional share is 1–999 thousandths, use kind: whole for a full GPU"
                    ),
                ));
            }
            _ => {}
        }
        if self.memory() == Some(MemoryNeed::Mib(0)) {
            return Err(invalid(
                "gpu.memory",
                "is 0 MiB; give the model's memory need per GPU, or shareOfCapacity".to_owned(),
            ));
        }
        Ok(())
    }
}

impl ReplicaRequest {
    /// A request with no constraints besides the GPU part, for tests and generators.
    #[must_use]
    pub fn new(name: impl Into<String>, group: impl Into<String>, gpu: GpuRequest) -> Self {
        ReplicaRequest {
            name: name.into(),
            group: group.into(),
            gpu,
            cpu_milli: 0,
            memory_mib: 0,
            allowed_products: Vec::new(),
            min_compute_capability: None,
            node_selector: BTreeMap::new(),
            max_replicas_per_node: None,
            anti_affinity_keys: Vec::new(),
            topology_spread: Vec::new(),
            memory_headroom_mib: None,
            spread_weight: None,
        }
    }
}
