//! The fleet as the engine sees it, built from Nodes, GpuNodes and gpufleet's Pods (pure).
//!
//! A node with a GpuNode contributes its agent's inventory, telemetry and health; a GPU node
//! without one (no agent yet) contributes what its labels and allocatable say, with no
//! telemetry, so the engine accounts requests only and penalises the missing telemetry.

use std::collections::BTreeMap;

use gpufleet_api::GpuNode;
use gpufleet_api::conditions::node_ready;
use gpufleet_api::gpu_node::{GpuDevice, HealthState};
use gpufleet_api::labels::{GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, NVIDIA_GPU_RESOURCE};
use gpufleet_placement::{
    ComputeCapability, ExistingPlacement, FleetSnapshot, GpuHealth, GpuSnapshot, NodeSnapshot,
};
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::replica::{cpu_millis, memory_mib};

/// How old a GpuNode heartbeat may be before the node's GPUs count as unknown.
pub const DEFAULT_HEARTBEAT_STALE_AFTER_MS: u64 = 90_000;

/// Milliseconds since the Unix epoch of a Kubernetes time.
#[must_use]
pub fn time_ms(time: &Time) -> u64 {
    u64::try_from(time.0.as_millisecond()).unwrap_or(0)
}

/// Whether a GpuNode's heartbeat is recent enough at `now_ms`.
#[must_use]
pub fn heartbeat_fresh(gpu_node: &GpuNode, now_ms: u64, stale_after_ms: u64) -> bool {
    gpu_node
        .status
        .as_ref()
        .and_then(|status| status.last_heartbeat_time.as_ref())
        .is_some_and(|beat| now_ms.saturating_sub(time_ms(beat)) <= stale_after_ms)
}

fn health_of(state: HealthState) -> GpuHealth {
    match state {
        HealthState::Healthy => GpuHealth::Healthy,
        HealthState::Degraded => GpuHealth::Degraded,
        HealthState::Unhealthy => GpuHealth::Unhealthy,
    }
}

fn gpu_from_device(device: &GpuDevice) -> GpuSnapshot {
    let telemetry = &device.telemetry;
    let headroom = match (telemetry.power_limit_watts, telemetry.power_watts) {
        (Some(limit), Some(draw)) if limit >= draw => Some((limit - draw).round() as u32),
        (Some(_), Some(_)) => Some(0),
        _ => None,
    };
    GpuSnapshot {
        index: device.index,
        uuid: device.uuid.clone(),
        product: device.product.clone(),
        memory_mib: device.memory_total_mib,
        compute_capability: device
            .compute_capability
            .as_deref()
            .and_then(ComputeCapability::parse),
        observed_free_mib: telemetry.memory_free_mib,
        utilisation_percent: telemetry.utilization_percent,
        temperature_celsius: telemetry.temperature_celsius,
        power_headroom_watts: headroom,
        throttling: !telemetry.throttle_reasons.is_empty(),
        health: health_of(device.health.state),
        nvlink_group: device.nvlink_group,
        numa_node: device.numa_node.and_then(|numa| u32::try_from(numa).ok()),
    }
}

/// GPUs of a node known only through its GFD labels and allocatable `nvidia.com/gpu`.
fn gpus_from_labels(node: &Node) -> Vec<GpuSnapshot> {
    let count = node
        .status
        .as_ref()
        .and_then(|status| status.allocatable.as_ref())
        .and_then(|allocatable| allocatable.get(NVIDIA_GPU_RESOURCE))
        .and_then(|quantity| quantity.0.parse::<u32>().ok())
        .unwrap_or(0);
    let labels = node.labels();
    let product = labels
        .get(GPU_PRODUCT_LABEL)
        .cloned()
        .unwrap_or_else(|| "unknown".to_owned());
    // Without the memory size no request can be accounted on these GPUs: leave the node out
    // rather than guess (GFD always writes the label; the agent's GpuNode replaces it).
    let Some(memory) = labels
        .get(GPU_MEMORY_LABEL)
        .and_then(|m| m.parse::<u64>().ok())
        .filter(|m| *m > 0)
    else {
        return Vec::new();
    };
    let capability = match (
        labels.get("nvidia.com/gpu.compute.major"),
        labels.get("nvidia.com/gpu.compute.minor"),
    ) {
        (Some(major), Some(minor)) => ComputeCapability::parse(&format!("{major}.{minor}")),
        _ => None,
    };
    (0..count)
        .map(|index| GpuSnapshot {
            index,
            uuid: format!("{}-gpu{index}", node.name_any()),
            product: product.clone(),
            memory_mib: memory,
            compute_capability: capability,
            observed_free_mib: None,
            utilisation_percent: None,
            temperature_celsius: None,
            power_headroom_watts: None,
            throttling: false,
            health: GpuHealth::Healthy,
            // Without the agent the NVLink topology is unknown; a GFD-labelled SXM node is one
            // NVSwitch domain, which is what one group means.
            nvlink_group: Some(0),
            numa_node: None,
        })
        .collect()
}

/// The engine's snapshot, and the nodes left out of it because the engine cannot use them.
#[derive(Debug)]
pub struct Built {
    /// Every usable GPU node and the placements on them.
    pub fleet: FleetSnapshot,
    /// Nodes left out, with the object to report each on and why.
    pub left_out: Vec<LeftOut>,
}

/// A node left out of placement: a malformed GpuNode (two GPUs with one index, a GPU of size 0
/// where the agent should have left it out) must cost only its own node, never every
/// deployment's placement.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    /// The node's name.
    pub node: String,
    /// The GpuNode that describes it (or its Node, without one): where the Event goes.
    pub reference: ObjectReference,
    /// What is wrong, naming the field.
    pub why: String,
}

/// Builds the engine's snapshot of every GPU node.
#[must_use]
pub fn build(
    nodes: &[std::sync::Arc<Node>],
    gpu_nodes: &BTreeMap<String, std::sync::Arc<GpuNode>>,
    placements: Vec<ExistingPlacement>,
    now_ms: u64,
    stale_after_ms: u64,
) -> Built {
    let mut snapshot_nodes: Vec<NodeSnapshot> = nodes
        .iter()
        .filter_map(|node| {
            let name = node.name_any();
            let gpu_node = gpu_nodes.get(&name);
            let (gpus, fresh, observed_at) = match gpu_node.and_then(|g| g.status.as_ref()) {
                Some(status) if !status.gpus.is_empty() => {
                    let observed_at = status
                        .gpus
                        .iter()
                        .filter_map(|gpu| gpu.telemetry.sampled_at.as_ref().map(time_ms))
                        .min()
                        .or_else(|| status.last_heartbeat_time.as_ref().map(time_ms));
                    let fresh =
                        gpu_node.is_some_and(|g| heartbeat_fresh(g, now_ms, stale_after_ms));
                    (
                        // A GPU whose size the agent could not read cannot be accounted.
                        status
                            .gpus
                            .iter()
                            .filter(|gpu| gpu.memory_total_mib > 0)
                            .map(gpu_from_device)
                            .collect(),
                        fresh,
                        observed_at,
                    )
                }
                _ => (gpus_from_labels(node), true, None),
            };
            if gpus.is_empty() {
                return None;
            }
            let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
            Some(NodeSnapshot {
                name,
                labels: node.labels().clone(),
                ready: node_ready(node),
                heartbeat_fresh: fresh,
                cpu_milli: allocatable.and_then(|a| a.get("cpu")).and_then(cpu_millis),
                memory_mib: allocatable
                    .and_then(|a| a.get("memory"))
                    .and_then(memory_mib),
                telemetry_observed_at_ms: observed_at,
                gpus,
            })
        })
        .collect();
    snapshot_nodes.sort_by(|a, b| a.name.cmp(&b.name));
    // A placement the engine cannot account (its node vanished, a GPU of it is no longer
    // reported, or its annotations were edited into nonsense) holds nothing: leave it out, so
    // one odd Pod never stops the operator from placing anything. `failure_of` still sees the
    // replica and replaces it.
    let placements = placements
        .into_iter()
        .filter(|placement| {
            snapshot_nodes
                .iter()
                .find(|node| node.name == placement.node)
                .is_some_and(|node| accountable(placement, node))
        })
        .collect();
    let mut fleet = FleetSnapshot {
        nodes: snapshot_nodes,
        placements,
    };
    let left_out = fleet
        .take_unusable_nodes()
        .into_iter()
        .map(|unusable| {
            let reference = gpu_nodes.get(&unusable.name).map_or_else(
                || {
                    nodes
                        .iter()
                        .find(|node| node.name_any() == unusable.name)
                        .map(|node| node.object_ref(&()))
                        .unwrap_or_default()
                },
                |gpu_node| gpu_node.object_ref(&()),
            );
            LeftOut {
                node: unusable.name,
                reference,
                why: unusable.problem.to_string(),
            }
        })
        .collect();
    Built { fleet, left_out }
}

/// Whether the engine can account `placement` on `node`: a share of 1–1000 thousandths on at
/// least one GPU, every one of which the node reports.
fn accountable(placement: &ExistingPlacement, node: &NodeSnapshot) -> bool {
    (1..=1000).contains(&placement.gpu_milli)
        && !placement.gpus.is_empty()
        && placement
            .gpus
            .iter()
            .all(|index| node.gpus.iter().any(|gpu| gpu.index == *index))
}

/// Why a placed replica must move, or `None` while its node and GPUs are fine: the node is gone
/// or NotReady, its GpuNode heartbeat is stale, one of its GPUs is Unhealthy, or one is no
/// longer reported (an agent cannot read a GPU that fell off the bus).
#[must_use]
pub fn failure_of(placement: &ExistingPlacement, snapshot: &FleetSnapshot) -> Option<String> {
    let Some(node) = snapshot
        .nodes
        .iter()
        .find(|node| node.name == placement.node)
    else {
        return Some(format!("node {} is gone", placement.node));
    };
    if !node.ready {
        return Some(format!("node {} is NotReady", node.name));
    }
    if !node.heartbeat_fresh {
        return Some(format!("GpuNode {} heartbeat is stale", node.name));
    }
    if let Some(index) = placement
        .gpus
        .iter()
        .find(|index| !node.gpus.iter().any(|gpu| gpu.index == **index))
    {
        return Some(format!(
            "GPU {index} on {} is no longer reported by its agent",
            node.name
        ));
    }
    placement.gpus.iter().find_map(|index| {
        node.gpus
            .iter()
            .find(|gpu| gpu.index == *index && gpu.health == GpuHealth::Unhealthy)
            .map(|gpu| {
                format!(
                    "GPU {} ({}) on {} is Unhealthy",
                    gpu.index, gpu.uuid, node.name
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn node(name: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {
                    "nvidia.com/gpu.product": "NVIDIA-L40S", "nvidia.com/gpu.memory": "46068",
                    "nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "9"}},
                "status": {"allocatable": {"nvidia.com/gpu": "4", "cpu": "64", "memory": "512Gi"},
                           "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .expect("node"),
        )
    }

    fn gpu_node(name: &str, heartbeat: &str, unhealthy: u32) -> Arc<GpuNode> {
        let gpus: Vec<_> = (0..2)
            .map(|index| json!({"index": index, "uuid": format!("GPU-{index}"),
                "product": "NVIDIA-H100-80GB-HBM3", "memoryTotalMiB": 81559,
                "computeCapability": "9.0",
                "telemetry": {"memoryFreeMiB": 70000, "powerWatts": 650.0, "powerLimitWatts": 700.0},
                "health": {"state": if index == unhealthy {"Unhealthy"} else {"Healthy"}}}))
            .collect();
        Arc::new(
            serde_json::from_value(
                json!({"apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
                "metadata": {"name": name}, "spec": {"nodeName": name},
                "status": {"gpus": gpus, "lastHeartbeatTime": heartbeat}}),
            )
            .expect("gpunode"),
        )
    }

    fn placement(node: &str, gpus: Vec<u32>) -> ExistingPlacement {
        ExistingPlacement {
            id: "p".into(),
            group: "g".into(),
            node: node.into(),
            gpus,
            gpu_milli: 1000,
            gpu_memory_mib: 1,
            cpu_milli: 0,
            memory_mib: 0,
            placed_at_ms: 0,
        }
    }

    const NOW: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn gpu_nodes_give_telemetry_and_labels_fill_in_for_nodes_without_agent() {
        let nodes = vec![node("a", true), node("b", true)];
        let gpu_nodes =
            BTreeMap::from([("a".to_owned(), gpu_node("a", "2026-01-01T00:00:00Z", 9))]);
        let snapshot = build(
            &nodes,
            &gpu_nodes,
            vec![],
            NOW,
            DEFAULT_HEARTBEAT_STALE_AFTER_MS,
        )
        .fleet;
        assert_eq!(snapshot.nodes.len(), 2);
        let a = &snapshot.nodes[0];
        assert_eq!(a.gpus.len(), 2);
        assert_eq!(a.gpus[0].observed_free_mib, Some(70_000));
        assert_eq!(a.gpus[0].power_headroom_watts, Some(50));
        assert!(a.heartbeat_fresh);
        assert_eq!((a.cpu_milli, a.memory_mib), (Some(64_000), Some(524_288)));
        let b = &snapshot.nodes[1];
        assert_eq!(b.gpus.len(), 4);
        // A node whose GPU size is unknown is left out instead of failing every placement.
        let mut unsized_node = (*node("c", true)).clone();
        unsized_node
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .remove("nvidia.com/gpu.memory");
        let with_unknown = vec![Arc::new(unsized_node), node("b", true)];
        let snapshot = build(
            &with_unknown,
            &BTreeMap::new(),
            vec![],
            NOW,
            DEFAULT_HEARTBEAT_STALE_AFTER_MS,
        )
        .fleet;
        assert_eq!(snapshot.nodes.len(), 1);
        assert_eq!(b.gpus[3].memory_mib, 46_068);
        assert_eq!(b.gpus[3].observed_free_mib, None);
    }

    #[test]
    fn failures_name_the_node_or_gpu() {
        let nodes = vec![node("a", true), node("down", false)];
        let gpu_nodes =
            BTreeMap::from([("a".to_owned(), gpu_node("a", "2026-01-01T00:00:00Z", 1))]);
        let snapshot = build(
            &nodes,
            &gpu_nodes,
            vec![],
            NOW,
            DEFAULT_HEARTBEAT_STALE_AFTER_MS,
        )
        .fleet;
        assert_eq!(failure_of(&placement("a", vec![0]), &snapshot), None);
        assert!(
            failure_of(&placement("a", vec![0, 1]), &snapshot)
                .is_some_and(|why| why.contains("GPU 1") && why.contains("Unhealthy"))
        );
        assert!(
            failure_of(&placement("down", vec![0]), &snapshot)
                .is_some_and(|why| why.contains("NotReady"))
        );
        assert!(
            failure_of(&placement("gone", vec![0]), &snapshot)
                .is_some_and(|why| why.contains("gone"))
        );

        let stale = BTreeMap::from([("a".to_owned(), gpu_node("a", "2025-12-31T23:00:00Z", 9))]);
        let snapshot = build(
            &nodes,
            &stale,
            vec![],
            NOW,
            DEFAULT_HEARTBEAT_STALE_AFTER_MS,
        )
        .fleet;
        assert!(
            failure_of(&placement("a", vec![0]), &snapshot)
                .is_some_and(|why| why.contains("stale"))
        );
    }

    #[test]
    fn a_placement_the_engine_cannot_account_is_left_out_and_its_replica_replaced() {
        // The agent of "a" reports GPUs 0 and 1 only (a GPU that fell off the bus is gone from
        // its inventory); one Pod names GPU 5, another carries an edited share of 0.
        let nodes = vec![node("a", true)];
        let gpu_nodes =
            BTreeMap::from([("a".to_owned(), gpu_node("a", "2026-01-01T00:00:00Z", 9))]);
        let lost = placement("a", vec![5]);
        let mut zero_share = placement("a", vec![0]);
        zero_share.id = "ns/zero".to_owned();
        zero_share.gpu_milli = 0;
        let fine = ExistingPlacement {
            id: "ns/fine".to_owned(),
            ..placement("a", vec![1])
        };
        let snapshot = build(
            &nodes,
            &gpu_nodes,
            vec![lost.clone(), zero_share, fine],
            NOW,
            DEFAULT_HEARTBEAT_STALE_AFTER_MS,
        )
        .fleet;
        let kept: Vec<&str> = snapshot.placements.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(kept, ["ns/fine"]);
        assert!(
            gpufleet_placement::Engine::new(&snapshot, Default::default()).is_ok(),
            "the engine accepts what is left"
        );
        assert!(
            failure_of(&lost, &snapshot)
                .is_some_and(|why| why.contains("GPU 5") && why.contains("no longer reported"))
        );
    }

    /// Finding 4 of the hardening issue: a GpuNode listing one GPU index twice is left out,
    /// reported on that GpuNode, and every other node stays placeable.
    #[test]
    fn a_gpu_node_with_a_repeated_index_is_left_out_and_reported_on_itself() {
        let nodes = vec![node("a", true), node("b", true)];
        let mut twice = (*gpu_node("b", "2026-01-01T00:00:00Z", 9)).clone();
        if let Some(status) = twice.status.as_mut() {
            let first = status.gpus[0].clone();
            status.gpus[1].index = first.index;
        }
        let gpu_nodes = BTreeMap::from([
            ("a".to_owned(), gpu_node("a", "2026-01-01T00:00:00Z", 9)),
            ("b".to_owned(), Arc::new(twice)),
        ]);
        let built = build(
            &nodes,
            &gpu_nodes,
            vec![placement("a", vec![0]), placement("b", vec![0])],
            NOW,
            DEFAULT_HEARTBEAT_STALE_AFTER_MS,
        );
        let kept: Vec<&str> = built.fleet.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(kept, ["a"]);
        assert_eq!(built.fleet.placements.len(), 1);
        assert_eq!(built.left_out.len(), 1);
        let left_out = &built.left_out[0];
        assert_eq!(left_out.node, "b");
        assert_eq!(left_out.reference.kind.as_deref(), Some("GpuNode"));
        assert_eq!(left_out.reference.name.as_deref(), Some("b"));
        assert!(
            left_out.why.contains("gpus[1].index") && left_out.why.contains("appears twice"),
            "{}",
            left_out.why
        );
        assert!(gpufleet_placement::Engine::new(&built.fleet, Default::default()).is_ok());
    }
}
