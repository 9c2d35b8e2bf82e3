//! What the engine answers: a placement with the score that chose it, or why none was possible.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::strategy::Strategy;

/// The engine's answer for one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Outcome {
    /// Placed; the reconciler binds a Pod as the decision says.
    Placed(Decision),
    /// Not placeable now; the reconciler reports the reasons in a condition and an Event.
    Unplaceable(Unplaceable),
}

/// Where one replica goes, and why there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The replica (and placement) name.
    pub replica: String,
    /// The replica's group.
    pub group: String,
    /// The chosen node.
    pub node: String,
    /// The chosen GPUs, in device index order.
    pub gpus: Vec<ChosenGpu>,
    /// Compute share per GPU in thousandths.
    pub gpu_milli: u32,
    /// Memory reserved per GPU, MiB (the first GPU's when they differ in size).
    pub gpu_memory_mib: u64,
    /// How the chosen candidate scored; lower is better.
    pub score: ScoreBreakdown,
}

/// One GPU of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChosenGpu {
    /// Device index on the node.
    pub index: u32,
    /// Device UUID, for `NVIDIA_VISIBLE_DEVICES`.
    pub uuid: String,
}

/// The parts of a candidate's cost, in GPU-equivalents; the candidate with the lowest `total`
/// wins, ties going to the node that sorts first by name, then the lowest device index.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreBreakdown {
    /// The strategy that scored.
    pub strategy: Strategy,
    /// The strategy's own term (see [`Strategy`] for each one's meaning).
    pub strategy_cost: f64,
    /// For fragmentation-aware scoring: how many GPUs' worth of capacity the expected workload
    /// could no longer use on this node after the placement, minus before.
    pub fragmentation_delta_gpus: Option<f64>,
    /// Penalty for Degraded GPUs.
    pub health_penalty: f64,
    /// Penalty for hot or throttling GPUs.
    pub thermal_penalty: f64,
    /// Penalty for GPUs close to their power limit.
    pub power_penalty: f64,
    /// Penalty for GPUs already busy (utilisation, including foreign processes).
    pub utilisation_penalty: f64,
    /// Penalty for GPUs without telemetry (only requests could be checked).
    pub telemetry_penalty: f64,
    /// Penalty for a multi-GPU placement spanning NUMA nodes.
    pub numa_penalty: f64,
    /// Soft spreading: replicas of the same deployment already on the node (and in its zone),
    /// weighted by the request's spread weight.
    #[serde(default)]
    pub spread_penalty: f64,
    /// Sum of the above: what is minimised.
    pub total: f64,
}

/// Why a replica could not be placed: how many nodes were rejected for each reason, in the
/// spirit of kube-scheduler's `0/N nodes are available: …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unplaceable {
    /// The replica.
    pub replica: String,
    /// Its group.
    pub group: String,
    /// Nodes considered.
    pub nodes_total: u32,
    /// Nodes rejected per reason, most frequent first; each node counts once, for the first
    /// check it failed.
    pub rejections: Vec<Rejection>,
}

/// A count of nodes rejected for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The reason.
    pub reason: RejectReason,
    /// How many nodes it rejected.
    pub nodes: u32,
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "0/{} nodes are available", self.nodes_total)?;
        for (position, rejection) in self.rejections.iter().enumerate() {
            let separator = if position == 0 { ": " } else { ", " };
            write!(
                formatter,
                "{separator}{} {}",
                rejection.nodes, rejection.reason
            )?;
        }
        write!(formatter, ".")
    }
}

/// Why a node cannot take a replica. Checks run in declaration order; a node is counted under
/// the first it fails (for GPU checks: the reason of the GPU that came closest to fitting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RejectReason {
    /// The node's Ready condition is false.
    NodeNotReady,
    /// The node's GpuNode heartbeat is stale: its telemetry cannot be trusted.
    TelemetryStale,
    /// The node lacks a label of the replica's node selector.
    NodeSelectorMismatch,
    /// No GPU of an allowed product.
    GpuProductNotAllowed,
    /// No allowed GPU with the minimum compute capability.
    ComputeCapabilityTooLow,
    /// Every otherwise suitable GPU is Unhealthy.
    GpuUnhealthy,
    /// Not enough free compute share (or not enough unshared GPUs for a whole-GPU replica).
    InsufficientGpuCompute,
    /// Not enough memory left by the requests of placed replicas.
    InsufficientGpuMemory,
    /// Not enough memory free by telemetry (foreign processes, in-flight placements, headroom).
    InsufficientObservedGpuMemory,
    /// Enough free GPUs, but not within one NVLink group.
    NvlinkGroupTooSmall,
    /// Not enough allocatable CPU.
    InsufficientCpu,
    /// Not enough allocatable host memory.
    InsufficientHostMemory,
    /// The group already has its maximum number of replicas on the node.
    MaxReplicasPerNode,
    /// A replica of the group already runs in the node's anti-affinity domain.
    AntiAffinity,
    /// Placing here would exceed the topology spread's maximum skew.
    TopologySpreadSkew,
    /// The node lacks a topology spread key's label.
    MissingTopologyLabel,
}

impl RejectReason {
    /// Every reason, in check order.
    pub const ALL: [RejectReason; 16] = [
        RejectReason::NodeNotReady,
        RejectReason::TelemetryStale,
        RejectReason::NodeSelectorMismatch,
        RejectReason::GpuProductNotAllowed,
        RejectReason::ComputeCapabilityTooLow,
        RejectReason::GpuUnhealthy,
        RejectReason::InsufficientGpuCompute,
        RejectReason::InsufficientGpuMemory,
        RejectReason::InsufficientObservedGpuMemory,
        RejectReason::NvlinkGroupTooSmall,
        RejectReason::InsufficientCpu,
        RejectReason::InsufficientHostMemory,
        RejectReason::MaxReplicasPerNode,
        RejectReason::AntiAffinity,
        RejectReason::TopologySpreadSkew,
        RejectReason::MissingTopologyLabel,
    ];

    /// Position in [`RejectReason::ALL`], for counting arrays.
    #[must_use]
    pub fn position(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            RejectReason::NodeNotReady => "node(s) not ready",
            RejectReason::TelemetryStale => "node(s) with a stale GPU heartbeat",
            RejectReason::NodeSelectorMismatch => "node(s) didn't match the node selector",
            RejectReason::GpuProductNotAllowed => "node(s) without an allowed GPU product",
            RejectReason::ComputeCapabilityTooLow => "node(s) below the minimum compute capability",
            RejectReason::GpuUnhealthy => "node(s) whose suitable GPUs are unhealthy",
            RejectReason::InsufficientGpuCompute => "Insufficient GPU compute",
            RejectReason::InsufficientGpuMemory => "Insufficient GPU memory (requested)",
            RejectReason::InsufficientObservedGpuMemory => {
                "Insufficient GPU memory (observed free, incl. in-flight and headroom)"
            }
            RejectReason::NvlinkGroupTooSmall => {
                "node(s) without enough free GPUs in one NVLink group"
            }
            RejectReason::InsufficientCpu => "Insufficient cpu",
            RejectReason::InsufficientHostMemory => "Insufficient memory",
            RejectReason::MaxReplicasPerNode => "node(s) at the group's max replicas per node",
            RejectReason::AntiAffinity => "node(s) didn't satisfy the group's anti-affinity",
            RejectReason::TopologySpreadSkew => {
                "node(s) didn't satisfy the topology spread constraint"
            }
            RejectReason::MissingTopologyLabel => "node(s) missing a topology spread label",
        })
    }
}
