//! The optional defragmenter: finds the one replica of a deployment whose move to another node
//! lowers the fleet's fragmentation most (pure).
//!
//! Placement decisions are good when they are made, but a fleet drifts: replicas are deleted,
//! GPUs fail and come back, and whole nodes end up holding one small replica each, so a large
//! tensor-parallel replica no longer fits anywhere. Moving a replica is a disruption, so the
//! operator does it only when asked (`--defragment-interval-seconds`), at most one move per
//! interval across the whole operator, only for a deployment that is otherwise at rest, and
//! only through the rollout's surge-first replacement, which never breaks the deployment's
//! disruption budget. This module only decides which move is worth it.

use gpufleet_placement::{Engine, EngineConfig, FleetSnapshot, Outcome, ReplicaRequest};

use crate::Result;

/// Replicas evaluated per pass: the ones whose removal lowers their node's fragmentation most.
/// Each evaluation builds an engine from the snapshot, so the pass stays bounded on big fleets.
pub const MAX_CANDIDATES: usize = 8;

/// A move worth making.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// Placement id (`namespace/pod`) of the replica to move.
    pub placement: String,
    /// Node it is on.
    pub from_node: String,
    /// Node its replacement would go to.
    pub to_node: String,
    /// How much the fleet's fragmentation drops, in GPUs.
    pub gain_gpus: f64,
}

/// The best move of one of `group`'s replicas, if it lowers fragmentation by at least
/// `min_gain_gpus`. `replacement` is the request of the replica that would replace it (its
/// next free name); it is placed while the old replica still holds its GPUs, exactly as the
/// surge-first rollout will place it, so the decision here is the one the rollout repeats.
///
/// # Errors
/// An engine error for an invalid snapshot or request.
pub fn best_move(
    snapshot: &FleetSnapshot,
    config: &EngineConfig,
    group: &str,
    replacement: &ReplicaRequest,
    min_gain_gpus: f64,
) -> Result<Option<Move>> {
    let baseline = Engine::new(snapshot, config.clone())?;
    let before = baseline.summary().fragmented_milli;
    let candidates = Engine::new(snapshot, config.clone())?.scale_down(group, MAX_CANDIDATES);
    let mut best: Option<Move> = None;
    for candidate in candidates {
        let mut engine = Engine::new(snapshot, config.clone())?;
        let Outcome::Placed(decision) = engine.place(replacement)? else {
            continue;
        };
        if decision.node == candidate.node {
            continue;
        }
        engine.remove(&candidate.placement)?;
        let gain_gpus = (before - engine.summary().fragmented_milli) / 1000.0;
        if gain_gpus >= min_gain_gpus && best.as_ref().is_none_or(|b| gain_gpus > b.gain_gpus) {
            best = Some(Move {
                placement: candidate.placement,
                from_node: candidate.node,
                to_node: decision.node,
                gain_gpus,
            });
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_placement::{
        ExistingPlacement, GpuRequest, GpuSnapshot, MemoryNeed, NodeSnapshot, Strategy, WorkloadMix,
    };

    fn node(name: &str) -> NodeSnapshot {
        NodeSnapshot {
            name: name.to_owned(),
            labels: Default::default(),
            ready: true,
            heartbeat_fresh: true,
            cpu_milli: None,
            memory_mib: None,
            telemetry_observed_at_ms: None,
            gpus: (0..8)
                .map(|index| GpuSnapshot {
                    index,
                    uuid: format!("GPU-{name}-{index}"),
                    product: "NVIDIA-H100-80GB-HBM3".to_owned(),
                    memory_mib: 81_559,
                    compute_capability: None,
                    observed_free_mib: None,
                    utilisation_percent: None,
                    temperature_celsius: None,
                    power_headroom_watts: None,
                    throttling: false,
                    health: Default::default(),
                    nvlink_group: Some(0),
                    numa_node: None,
                })
                .collect(),
        }
    }

    fn placement(id: &str, group: &str, node: &str, gpus: Vec<u32>) -> ExistingPlacement {
        ExistingPlacement {
            id: id.to_owned(),
            group: group.to_owned(),
            node: node.to_owned(),
            gpus,
            gpu_milli: 1000,
            gpu_memory_mib: 40_000,
            cpu_milli: 0,
            memory_mib: 0,
            placed_at_ms: 0,
        }
    }

    fn one_gpu(name: &str) -> ReplicaRequest {
        ReplicaRequest::new(
            name,
            "ns/llm",
            GpuRequest::Whole {
                count: 1,
                memory: MemoryNeed::Mib(40_000),
            },
        )
    }

    fn config() -> EngineConfig {
        EngineConfig::new(
            Strategy::FragmentationAware,
            WorkloadMix::inference_default(),
        )
    }

    #[test]
    fn a_lone_replica_moves_next_to_the_others_and_frees_a_whole_node() {
        // Node a: one replica of llm. Node b: six GPUs of another deployment and one of llm.
        let mut placements = vec![placement("ns/llm-r0", "ns/llm", "a", vec![0])];
        placements.extend(
            (0..6).map(|gpu| placement(&format!("ns/big-r{gpu}"), "ns/big", "b", vec![gpu])),
        );
        placements.push(placement("ns/llm-r1", "ns/llm", "b", vec![6]));
        let snapshot = FleetSnapshot {
            nodes: vec![node("a"), node("b")],
            placements,
        };
        let chosen = best_move(&snapshot, &config(), "ns/llm", &one_gpu("ns/llm-r2"), 0.1)
            .expect("engine")
            .expect("a move worth making");
        assert_eq!(chosen.placement, "ns/llm-r0");
        assert_eq!(
            (chosen.from_node.as_str(), chosen.to_node.as_str()),
            ("a", "b")
        );
        assert!(chosen.gain_gpus > 0.1, "{chosen:?}");
    }

    #[test]
    fn nothing_moves_when_no_move_gains_enough() {
        // Both replicas already share one node; the other node is empty.
        let snapshot = FleetSnapshot {
            nodes: vec![node("a"), node("b")],
            placements: vec![
                placement("ns/llm-r0", "ns/llm", "a", vec![0]),
                placement("ns/llm-r1", "ns/llm", "a", vec![1]),
            ],
        };
        let chosen =
            best_move(&snapshot, &config(), "ns/llm", &one_gpu("ns/llm-r2"), 0.1).expect("engine");
        assert_eq!(chosen, None);
    }
}
