//! What the fleet looks like now: nodes, their GPUs with live telemetry, and the placements
//! gpufleet already made (some of which telemetry may not show yet).
//!
//! These are plain data, serialisable as the project's YAML fleet format, so the operator can
//! build them from GpuNode objects and `gpufleet simulate` can read them from a file.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The label Kubernetes puts on every node with its name; a topology key that is always defined.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A point-in-time view of the fleet, the engine's whole input besides the replicas to place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetSnapshot {
    /// Every GPU node the engine may consider.
    pub nodes: Vec<NodeSnapshot>,
    /// Replicas already placed by gpufleet, including in-flight ones.
    #[serde(default)]
    pub placements: Vec<ExistingPlacement>,
}

/// One Kubernetes node as the node agent and the API server describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSnapshot {
    /// The node's name; unique in the snapshot.
    pub name: String,
    /// Node labels: node selectors, anti-affinity and topology spread read them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The node's Ready condition; a NotReady node gets nothing new.
    #[serde(default = "default_true")]
    pub ready: bool,
    /// Whether the node's GpuNode heartbeat is recent enough to trust its telemetry.
    #[serde(default = "default_true")]
    pub heartbeat_fresh: bool,
    /// Allocatable CPU in millicores; `None` when CPU should not limit placement.
    #[serde(default)]
    pub cpu_milli: Option<u64>,
    /// Allocatable host memory in MiB; `None` when host memory should not limit placement.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// When the GPU telemetry below was sampled (milliseconds since the Unix epoch); `None` when
    /// the node reports no telemetry, in which case only requests are accounted.
    #[serde(default)]
    pub telemetry_observed_at_ms: Option<u64>,
    /// The node's GPUs.
    pub gpus: Vec<GpuSnapshot>,
}

fn default_true() -> bool {
    true
}

impl NodeSnapshot {
    /// Why the engine cannot use this node, naming the field to fix; `None` when it can.
    ///
    /// [`crate::Engine::new`] refuses a snapshot holding such a node, since a fleet file with a
    /// typo is its author's to fix. The operator instead leaves the node out
    /// ([`FleetSnapshot::take_unusable_nodes`]) and reports it: any agent may write its own
    /// GpuNode, and one bad object must not stop placement for every deployment.
    #[must_use]
    pub fn problem(&self) -> Option<crate::Error> {
        let invalid = |field: String, problem: String| {
            Some(crate::Error::InvalidNode {
                node: self.name.clone(),
                field,
                problem,
            })
        };
        if self.gpus.is_empty() {
            return invalid(
                "gpus".to_owned(),
                "is empty; list the node's GPUs, or leave CPU-only nodes out of the snapshot"
                    .to_owned(),
            );
        }
        if self.gpus.len() > crate::state::MAX_GPUS_PER_NODE {
            return invalid(
                "gpus".to_owned(),
                format!(
                    "has {} GPUs; at most {} are supported",
                    self.gpus.len(),
                    crate::state::MAX_GPUS_PER_NODE
                ),
            );
        }
        for (position, gpu) in self.gpus.iter().enumerate() {
            if self.gpus[..position]
                .iter()
                .any(|earlier| earlier.index == gpu.index)
            {
                return invalid(
                    format!("gpus[{position}].index"),
                    format!("{} appears twice; device indices must be unique", gpu.index),
                );
            }
            if gpu.memory_mib == 0 {
                return invalid(
                    format!("gpus[{position}].memoryMib"),
                    "is 0; give the GPU's framebuffer size in MiB".to_owned(),
                );
            }
        }
        None
    }
}

/// A node [`FleetSnapshot::take_unusable_nodes`] left out, and why.
#[derive(Debug)]
pub struct UnusableNode {
    /// The node's name.
    pub name: String,
    /// What is wrong with it, naming the field.
    pub problem: crate::Error,
}

impl FleetSnapshot {
    /// Takes out every node the engine cannot use ([`NodeSnapshot::problem`]) and every node
    /// whose name an earlier one already has, with the placements on them, and says why each
    /// went. What is left is a snapshot [`crate::Engine::new`] accepts, node-wise.
    pub fn take_unusable_nodes(&mut self) -> Vec<UnusableNode> {
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        let mut removed = std::collections::BTreeSet::new();
        self.nodes.retain(|node| {
            let problem = if names.contains(&node.name) {
                Some(crate::Error::InvalidNode {
                    node: node.name.clone(),
                    field: "name".to_owned(),
                    problem: "appears twice; node names must be unique".to_owned(),
                })
            } else {
                node.problem()
            };
            names.insert(node.name.clone());
            match problem {
                Some(problem) => {
                    removed.insert(node.name.clone());
                    problems.push(UnusableNode {
                        name: node.name.clone(),
                        problem,
                    });
                    false
                }
                None => true,
            }
        });
        if !removed.is_empty() {
            // A name seen twice is left out altogether: which of the two is the real node is
            // not for the engine to guess.
            self.nodes.retain(|node| !removed.contains(&node.name));
            self.placements
                .retain(|placement| !removed.contains(&placement.node));
        }
        problems
    }
}

/// One physical GPU with its inventory and the last telemetry sample.
///
/// A reading the agent could not take is `None`, never 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuSnapshot {
    /// The device index on the node (what `NVIDIA_VISIBLE_DEVICES` may name).
    pub index: u32,
    /// The device UUID (`GPU-…`), what decisions hand to the container runtime.
    pub uuid: String,
    /// The product name as GPU Feature Discovery labels it, e.g. `NVIDIA-H100-80GB-HBM3`.
    pub product: String,
    /// Total framebuffer memory in MiB.
    pub memory_mib: u64,
    /// CUDA compute capability, when known.
    #[serde(default)]
    pub compute_capability: Option<ComputeCapability>,
    /// Free framebuffer memory the driver reports, MiB. It already subtracts every process on the
    /// GPU, including ones gpufleet did not place.
    #[serde(default)]
    pub observed_free_mib: Option<u64>,
    /// SM utilisation in percent.
    #[serde(default)]
    pub utilisation_percent: Option<u32>,
    /// Core temperature in °C.
    #[serde(default)]
    pub temperature_celsius: Option<u32>,
    /// Enforced power limit minus current draw, watts.
    #[serde(default)]
    pub power_headroom_watts: Option<u32>,
    /// Whether the GPU reports a clock-throttling reason other than idle.
    #[serde(default)]
    pub throttling: bool,
    /// The node agent's health grade.
    #[serde(default)]
    pub health: GpuHealth,
    /// NVLink (NVSwitch) domain on the node; GPUs that report none form one PCIe domain.
    #[serde(default)]
    pub nvlink_group: Option<u32>,
    /// NUMA node the GPU hangs off.
    #[serde(default)]
    pub numa_node: Option<u32>,
}

/// Health grade of a GPU, from Xid/ECC history and remapping state.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "PascalCase")]
pub enum GpuHealth {
    /// No recent error: full candidate.
    #[default]
    Healthy,
    /// Usable but erroring (correctable ECC rate, remaps): placed on only when better GPUs are
    /// taken, through a score penalty.
    Degraded,
    /// Never chosen.
    Unhealthy,
}

/// CUDA compute capability `major.minor`; ordered so `8.0 < 8.6 < 9.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeCapability {
    /// Major version (9 for Hopper).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ComputeCapability {
    /// Parses `major.minor` (e.g. `9.0`), as the CRDs and GFD labels write it.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.split_once('.')?;
        Some(ComputeCapability {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.major, self.minor)
    }
}

/// A replica gpufleet placed earlier, as the operator reads it back from its Pods.
///
/// Shadow accounting: a placement made after (or shortly before) the node's telemetry sample is
/// *in flight*: its process has not yet allocated memory the driver could report, so the engine
/// subtracts its memory from the observed free memory. See [`crate::EngineConfig::telemetry_settle_ms`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExistingPlacement {
    /// Stable identifier (the Pod name); unique in the snapshot.
    pub id: String,
    /// The group the replica belongs to (its InferenceDeployment): caps, anti-affinity and spread
    /// count replicas of the same group.
    pub group: String,
    /// The node it is bound to.
    pub node: String,
    /// Device indices it holds on that node.
    pub gpus: Vec<u32>,
    /// Compute share per GPU in thousandths (1000 = whole GPU).
    pub gpu_milli: u32,
    /// Framebuffer memory reserved per GPU, MiB.
    pub gpu_memory_mib: u64,
    /// CPU request in millicores.
    #[serde(default)]
    pub cpu_milli: u64,
    /// Host memory request, MiB.
    #[serde(default)]
    pub memory_mib: u64,
    /// When gpufleet made the decision (milliseconds since the Unix epoch).
    #[serde(default)]
    pub placed_at_ms: u64,
}
