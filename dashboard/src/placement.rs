//! Where the dashboard's deployments sit and why: a thin shell over gpufleet-placement.
//!
//! ```text
//!  FleetView (live telemetry, health) ─► FleetSnapshot ─┐
//!  previous round's placements still on usable GPUs ────┼─► Engine (per deployment strategy)
//!  InferenceDeployment specs ─► ReplicaRequest ─────────┘        │
//!        DeploymentView (replica → node, GPUs, ScoreBreakdown) ◄─┘─► PlacementRecord + FleetEvent
//! ```
//!
//! A round keeps every replica whose node is ready and whose GPUs are all present and not
//! Unhealthy, and places only the rest, so a GPU falling off the bus moves exactly the replicas
//! on it. The live loop runs a round when the deployments or the set of usable GPUs change.

use std::collections::{BTreeMap, BTreeSet};

use gpufleet_api::InferenceDeployment;
use gpufleet_api::gpu_node::HealthState;

use gpufleet_placement::{
    ChosenGpu, ComputeCapability, Engine, EngineConfig, ExistingPlacement, FleetSnapshot,
    GpuHealth, GpuRequest, GpuSnapshot, HOSTNAME_LABEL, MemoryNeed, NodeSnapshot, Outcome,
    ReplicaRequest, ScoreBreakdown, WorkloadMix, strategy_of,
};
use serde::Serialize;

use crate::fleet::{FleetView, GpuView};
use crate::store::{FleetEvent, PlacementRecord};

/// One GPU a replica uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaGpu {
    /// Device index on the node. The operator's status names GPUs by UUID only, so for its
    /// placements the index is looked up in the watched GpuNodes: `None` when no watched GpuNode
    /// lists the UUID (any longer).
    pub index: Option<u32>,
    /// Device UUID.
    pub uuid: String,
}

impl From<ChosenGpu> for ReplicaGpu {
    fn from(gpu: ChosenGpu) -> Self {
        Self {
            index: Some(gpu.index),
            uuid: gpu.uuid,
        }
    }
}

/// One placed replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// Replica name: `<deployment>-<ordinal>` for a what-if placement, the Pod's name for the
    /// operator's.
    pub replica: String,
    /// Node it sits on.
    pub node: String,
    /// GPUs it uses.
    pub gpus: Vec<ReplicaGpu>,
    /// Compute share per GPU, thousandths (for the operator's placements: what the current spec
    /// asks for, as its status does not repeat it).
    pub gpu_milli: u32,
    /// Memory reserved per GPU, MiB (for the operator's placements: the current spec's need on
    /// the first GPU's capacity, as the engine computes it).
    #[serde(rename = "gpuMemoryMiB")]
    pub gpu_memory_mib: u64,
    /// Why there: the winning candidate's score, term by term; `None` when the operator
    /// reported no score for the replica.
    pub score: Option<ScoreBreakdown>,
    /// When it was placed, Unix milliseconds; `None` for the operator's placements, whose
    /// status carries no decision time (the recorder's history stamps first sightings).
    pub placed_at_ms: Option<i64>,
}

/// A replica the engine could not place, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnplacedView {
    /// Replica name.
    pub replica: String,
    /// kube-scheduler style reason (`0/36 nodes are available: …`).
    pub reason: String,
}

/// Who decided where a deployment's replicas are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PlacementSource {
    /// The dashboard's own engine, in a what-if round ([`place`]): what it would do with the
    /// fleet it is shown (`--simulate`, tests). Nothing runs there.
    #[default]
    WhatIf,
    /// The gpufleet operator: the view is the InferenceDeployment's `status`
    /// ([`crate::reported`]), what really runs (`--kubernetes`).
    Operator,
}

/// One condition of a deployment's status (`Available`, `Progressing`, `Degraded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// The condition's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason (`ReplicasUnplaceable`, …).
    pub reason: String,
    /// What a person should read.
    pub message: String,
    /// When the status last flipped, Unix milliseconds.
    pub last_transition_ms: Option<i64>,
    /// The deployment generation the condition describes.
    pub observed_generation: Option<i64>,
}

/// One InferenceDeployment with where its replicas are.
///
/// The first fields are the same in both modes; `placementSource` says who placed the replicas
/// and the fields after it carry what only the operator reports (conditions, Ready counts).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Replicas wanted.
    pub desired: u32,
    /// Placement strategy.
    pub strategy: String,
    /// What one replica needs, in words (`1 × GPU, 60000 MiB`).
    pub need: String,
    /// Placed replicas. The operator's status lists at most 100; `replicas` counts them all.
    pub placed: Vec<ReplicaView>,
    /// Replicas without a place, by name. Only a what-if round knows which replicas they are;
    /// the operator reports a count and a reason (`unplacedReplicas`, `unplacedReason`), so
    /// this stays empty for its placements.
    pub unplaced: Vec<UnplacedView>,
    /// Who placed the replicas.
    pub placement_source: PlacementSource,
    /// Replicas that exist: the operator's `status.replicas`, or the what-if round's placed
    /// replicas.
    pub replicas: u32,
    /// Replicas whose Pod is Ready (operator only: a what-if placement runs nothing).
    pub ready_replicas: Option<u32>,
    /// Replicas without a place.
    pub unplaced_replicas: u32,
    /// Why (the first of) them could not be placed, kube-scheduler style.
    pub unplaced_reason: Option<String>,
    /// The status's conditions (operator only).
    pub conditions: Vec<ConditionView>,
    /// The deployment's `metadata.generation` (operator only).
    pub generation: Option<i64>,
    /// The generation the operator's status describes; behind `generation` while it has not
    /// caught up with a changed spec.
    pub observed_generation: Option<i64>,
}

impl DeploymentView {
    /// A view with nothing placed yet, marked what-if: the fields the spec alone decides, which
    /// both a what-if round and the operator's status ([`crate::reported`]) start from.
    pub(crate) fn from_spec(deployment: &InferenceDeployment) -> Self {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        Self {
            key: deployment_key(deployment),
            namespace: deployment
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            desired: u32::try_from(deployment.spec.replicas.max(0)).unwrap_or(0),
            strategy: strategy_of(deployment.spec.placement.strategy)
                .name()
                .to_owned(),
            need: describe_need(&request_of(deployment, format!("{name}-0"))),
            name,
            placed: Vec::new(),
            unplaced: Vec::new(),
            placement_source: PlacementSource::WhatIf,
            replicas: 0,
            ready_replicas: None,
            unplaced_replicas: 0,
            unplaced_reason: None,
            conditions: Vec::new(),
            generation: None,
            observed_generation: None,
        }
    }
}

/// The result of one placement round.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlacementRound {
    /// Every deployment with its replicas.
    pub deployments: Vec<DeploymentView>,
    /// Decisions made this round (kept replicas make none).
    pub records: Vec<PlacementRecord>,
    /// Events users should see (placed, moved, unplaceable).
    pub events: Vec<FleetEvent>,
}

/// The key of a deployment, `namespace/name`.
#[must_use]
pub fn deployment_key(deployment: &InferenceDeployment) -> String {
    format!(
        "{}/{}",
        deployment
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default"),
        deployment.metadata.name.as_deref().unwrap_or("unnamed")
    )
}

/// The engine request of one replica of `deployment` (the operator asks the same question).
#[must_use]
pub fn request_of(deployment: &InferenceDeployment, replica: String) -> ReplicaRequest {
    gpufleet_placement::request_for(&deployment.spec, replica, deployment_key(deployment))
}

fn gpu_snapshot(gpu: &GpuView) -> GpuSnapshot {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "power headroom is clamped to [0, limit] watts, far below u32::MAX"
    )]
    let power_headroom_watts = gpu
        .power_limit_watts
        .zip(gpu.power_watts)
        .map(|(limit, draw)| (limit - draw).max(0.0) as u32);
    GpuSnapshot {
        index: gpu.index,
        uuid: gpu.uuid.clone(),
        product: gpu.product.clone(),
        memory_mib: gpu.memory_total_mib,
        compute_capability: gpu
            .compute_capability
            .as_deref()
            .and_then(ComputeCapability::parse),
        observed_free_mib: gpu.memory_free_mib,
        utilisation_percent: gpu.utilization_percent,
        temperature_celsius: gpu.temperature_celsius,
        power_headroom_watts,
        throttling: gpu.throttled,
        health: match gpu.health {
            HealthState::Healthy => GpuHealth::Healthy,
            HealthState::Degraded => GpuHealth::Degraded,
            HealthState::Unhealthy => GpuHealth::Unhealthy,
        },
        nvlink_group: gpu.nvlink_group,
        numa_node: gpu.numa_node.and_then(|node| u32::try_from(node).ok()),
    }
}

/// The engine's view of the fleet (without placements).
#[must_use]
pub fn snapshot_of(fleet: &FleetView) -> FleetSnapshot {
    FleetSnapshot {
        nodes: fleet
            .nodes
            .iter()
            .map(|node| {
                let mut labels = node.labels.clone();
                labels
                    .entry(HOSTNAME_LABEL.to_owned())
                    .or_insert_with(|| node.name.clone());
                NodeSnapshot {
                    name: node.name.clone(),
                    labels,
                    ready: node.ready,
                    heartbeat_fresh: true,
                    cpu_milli: None,
                    memory_mib: None,
                    telemetry_observed_at_ms: u64::try_from(fleet.observed_at_ms).ok(),
                    // A GPU without a known size (lost, fell off the bus) can take nothing
                    // and would make the snapshot invalid.
                    gpus: node
                        .gpus
                        .iter()
                        .filter(|gpu| gpu.memory_total_mib > 0)
                        .map(gpu_snapshot)
                        .collect(),
                }
            })
            .collect(),
        placements: Vec::new(),
    }
}

/// What decides whether a new round is needed: the deployments and the usable GPUs.
#[must_use]
pub fn round_key(fleet: &FleetView, deployments: &[InferenceDeployment]) -> String {
    let usable: Vec<&str> = fleet
        .nodes
        .iter()
        .filter(|node| node.ready)
        .flat_map(|node| node.gpus.iter())
        .filter(|gpu| gpu.health != HealthState::Unhealthy)
        .map(|gpu| gpu.uuid.as_str())
        .collect();
    let specs: Vec<(String, String)> = deployments
        .iter()
        .map(|deployment| {
            (
                deployment_key(deployment),
                serde_json::to_string(&deployment.spec).unwrap_or_default(),
            )
        })
        .collect();
    serde_json::json!({"usable": usable, "specs": specs}).to_string()
}

fn describe_need(request: &ReplicaRequest) -> String {
    let memory = match request.gpu.memory() {
        Some(MemoryNeed::Mib(mib)) => format!("{mib} MiB"),
        Some(MemoryNeed::ShareOfCapacity) => "its share of memory".to_owned(),
        None => "no GPU memory".to_owned(),
    };
    match request.gpu {
        GpuRequest::NoGpu => "no GPU".to_owned(),
        GpuRequest::Whole { count, .. } => format!("{count} × GPU, {memory} each"),
        GpuRequest::Fraction { milli, .. } => format!("{milli}/1000 of a GPU, {memory}"),
    }
}

/// Runs one placement round (see the module docs).
///
/// # Errors
/// gpufleet-placement's error when the snapshot or a request is malformed.
pub fn place(
    fleet: &FleetView,
    deployments: &[InferenceDeployment],
    previous: &[DeploymentView],
    now_ms: i64,
) -> Result<PlacementRound, gpufleet_placement::Error> {
    let usable: BTreeMap<&str, BTreeSet<&str>> = fleet
        .nodes
        .iter()
        .filter(|node| node.ready)
        .map(|node| {
            (
                node.name.as_str(),
                node.gpus
                    .iter()
                    .filter(|gpu| gpu.health != HealthState::Unhealthy)
                    .map(|gpu| gpu.uuid.as_str())
                    .collect(),
            )
        })
        .collect();
    let previous: BTreeMap<&str, &DeploymentView> = previous
        .iter()
        .map(|view| (view.key.as_str(), view))
        .collect();
    let mut snapshot = snapshot_of(fleet);
    let mut round = PlacementRound::default();
    // A malformed GpuNode costs its own node, not the round of every deployment.
    for unusable in snapshot.take_unusable_nodes() {
        round.events.push(FleetEvent {
            id: format!("left-out/{}@{now_ms}", unusable.name),
            at_ms: now_ms,
            severity: "Warning".to_owned(),
            reason: "LeftOutOfPlacement".to_owned(),
            object_kind: "GpuNode".to_owned(),
            object_name: unusable.name.clone(),
            gpu_uuid: None,
            message: format!(
                "nothing is placed on node {} until this is fixed: {}",
                unusable.name, unusable.problem
            ),
        });
    }
    // Replicas kept from the previous round, by deployment key then replica name.
    let mut kept: BTreeMap<String, BTreeMap<String, ReplicaView>> = BTreeMap::new();
    let mut moved_from: BTreeMap<String, String> = BTreeMap::new();
    for deployment in deployments {
        let key = deployment_key(deployment);
        let desired = u32::try_from(deployment.spec.replicas.max(0)).unwrap_or(0);
        let Some(view) = previous.get(key.as_str()) else {
            continue;
        };
        for replica in &view.placed {
            let ordinal_ok = replica
                .replica
                .rsplit_once('-')
                .and_then(|(_, ordinal)| ordinal.parse::<u32>().ok())
                .is_some_and(|ordinal| ordinal < desired);
            let gpus_ok = usable.get(replica.node.as_str()).is_some_and(|gpus| {
                replica
                    .gpus
                    .iter()
                    .all(|gpu| gpus.contains(gpu.uuid.as_str()))
            });
            if ordinal_ok && gpus_ok {
                snapshot.placements.push(ExistingPlacement {
                    id: replica.replica.clone(),
                    group: key.clone(),
                    node: replica.node.clone(),
                    gpus: replica.gpus.iter().filter_map(|gpu| gpu.index).collect(),
                    gpu_milli: replica.gpu_milli,
                    gpu_memory_mib: replica.gpu_memory_mib,
                    cpu_milli: 0,
                    memory_mib: 0,
                    placed_at_ms: replica
                        .placed_at_ms
                        .and_then(|at| u64::try_from(at).ok())
                        .unwrap_or(0),
                });
                kept.entry(key.clone())
                    .or_default()
                    .insert(replica.replica.clone(), replica.clone());
            } else if ordinal_ok {
                moved_from.insert(replica.replica.clone(), replica.node.clone());
            }
        }
    }
    for deployment in deployments {
        let key = deployment_key(deployment);
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let desired = u32::try_from(deployment.spec.replicas.max(0)).unwrap_or(0);
        let config = EngineConfig::new(
            strategy_of(deployment.spec.placement.strategy),
            WorkloadMix::inference_default(),
        );
        let mut engine = Engine::new(&snapshot, config)?;
        let mut kept_here = kept.remove(&key).unwrap_or_default();
        let mut view = DeploymentView::from_spec(deployment);
        for ordinal in 0..desired {
            let replica = format!("{name}-{ordinal}");
            if let Some(existing) = kept_here.remove(&replica) {
                view.placed.push(existing);
                continue;
            }
            let request = request_of(deployment, replica.clone());
            let id = format!("{key}/{replica}@{now_ms}");
            match engine.place(&request)? {
                Outcome::Placed(decision) => {
                    snapshot.placements.push(ExistingPlacement {
                        id: replica.clone(),
                        group: key.clone(),
                        node: decision.node.clone(),
                        gpus: decision.gpus.iter().map(|gpu| gpu.index).collect(),
                        gpu_milli: decision.gpu_milli,
                        gpu_memory_mib: decision.gpu_memory_mib,
                        cpu_milli: 0,
                        memory_mib: 0,
                        placed_at_ms: u64::try_from(now_ms).unwrap_or(0),
                    });
                    let (reason, message) = match moved_from.get(&replica) {
                        Some(from) => (
                            "Moved",
                            format!(
                                "{replica} moved from {from} to {} (its GPU became unusable), score {:.3}",
                                decision.node, decision.score.total
                            ),
                        ),
                        None => (
                            "Placed",
                            format!(
                                "{replica} placed on {} GPU {}, score {:.3}",
                                decision.node,
                                decision
                                    .gpus
                                    .iter()
                                    .map(|gpu| gpu.index.to_string())
                                    .collect::<Vec<_>>()
                                    .join(","),
                                decision.score.total
                            ),
                        ),
                    };
                    round.records.push(PlacementRecord {
                        id: id.clone(),
                        at_ms: now_ms,
                        deployment: key.clone(),
                        replica: replica.clone(),
                        outcome: "Placed".to_owned(),
                        node: Some(decision.node.clone()),
                        gpu_uuids: decision.gpus.iter().map(|gpu| gpu.uuid.clone()).collect(),
                        score_total: Some(decision.score.total),
                        detail: serde_json::to_value(decision.score).unwrap_or_default(),
                        message: message.clone(),
                    });
                    round.events.push(FleetEvent {
                        id,
                        at_ms: now_ms,
                        severity: "Normal".to_owned(),
                        reason: reason.to_owned(),
                        object_kind: "InferenceDeployment".to_owned(),
                        object_name: key.clone(),
                        gpu_uuid: decision.gpus.first().map(|gpu| gpu.uuid.clone()),
                        message,
                    });
                    view.placed.push(ReplicaView {
                        replica,
                        node: decision.node,
                        gpus: decision.gpus.into_iter().map(ReplicaGpu::from).collect(),
                        gpu_milli: decision.gpu_milli,
                        gpu_memory_mib: decision.gpu_memory_mib,
                        score: Some(decision.score),
                        placed_at_ms: Some(now_ms),
                    });
                }
                Outcome::Unplaceable(unplaceable) => {
                    let reason = unplaceable.to_string();
                    let message = format!("{replica} cannot be placed: {reason}");
                    round.records.push(PlacementRecord {
                        id: id.clone(),
                        at_ms: now_ms,
                        deployment: key.clone(),
                        replica: replica.clone(),
                        outcome: "Unplaceable".to_owned(),
                        node: None,
                        gpu_uuids: Vec::new(),
                        score_total: None,
                        detail: serde_json::to_value(&unplaceable).unwrap_or_default(),
                        message: message.clone(),
                    });
                    round.events.push(FleetEvent {
                        id,
                        at_ms: now_ms,
                        severity: "Warning".to_owned(),
                        reason: "Unplaceable".to_owned(),
                        object_kind: "InferenceDeployment".to_owned(),
                        object_name: key.clone(),
                        gpu_uuid: None,
                        message,
                    });
                    view.unplaced.push(UnplacedView { replica, reason });
                }
            }
        }
        view.replicas = u32::try_from(view.placed.len()).unwrap_or(u32::MAX);
        view.unplaced_replicas = u32::try_from(view.unplaced.len()).unwrap_or(u32::MAX);
        view.unplaced_reason = view
            .unplaced
            .first()
            .map(|unplaced| unplaced.reason.clone());
        round.deployments.push(view);
    }
    Ok(round)
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! InferenceDeployment builders for tests.
    use gpufleet_api::InferenceDeploymentSpec;
    use gpufleet_api::inference_deployment::{DisruptionBudget, GpuRequirement, PlacementPolicy};

    use super::*;

    /// A deployment of `replicas` replicas needing `count` whole GPUs with `memory_mib` each.
    pub(crate) fn deployment(
        name: &str,
        replicas: i32,
        count: u32,
        memory_mib: u64,
    ) -> InferenceDeployment {
        let mut deployment = InferenceDeployment::new(
            name,
            InferenceDeploymentSpec {
                replicas,
                gpu: GpuRequirement {
                    count: Some(count),
                    memory_mib: Some(memory_mib),
                    ..GpuRequirement::default()
                },
                placement: PlacementPolicy::default(),
                disruption: DisruptionBudget::default(),
                template: Default::default(),
            },
        );
        deployment.metadata.namespace = Some("default".to_owned());
        deployment
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::deployment;
    use super::*;
    use crate::fleet::fixtures::{device, node};

    fn fleet(unhealthy_on_a: bool, with_b: bool) -> FleetView {
        let health = if unhealthy_on_a {
            HealthState::Unhealthy
        } else {
            HealthState::Healthy
        };
        let mut nodes = vec![node(
            "a",
            vec![
                device(0, "H100", 81_559, 1_000, 5, health),
                device(1, "H100", 81_559, 1_000, 5, HealthState::Healthy),
            ],
        )];
        if unhealthy_on_a {
            // A GPU that fell off the bus reports no size at all.
            nodes[0].status.gpus[0].memory_total_mib = 0;
        }
        if with_b {
            nodes.push(node(
                "b",
                vec![device(0, "H100", 81_559, 1_000, 5, HealthState::Healthy)],
            ));
        }
        FleetView::from_readings(nodes, 1_000)
    }

    #[test]
    fn places_every_replica_with_a_score_and_refuses_what_does_not_fit() {
        let round = place(
            &fleet(false, true),
            &[
                deployment("llama", 3, 1, 60_000),
                deployment("big", 1, 4, 60_000),
            ],
            &[],
            1_000,
        )
        .expect("round");
        let llama = &round.deployments[0];
        assert_eq!(llama.placed.len(), 3);
        let gpus: BTreeSet<String> = llama
            .placed
            .iter()
            .flat_map(|replica| replica.gpus.iter().map(|gpu| gpu.uuid.clone()))
            .collect();
        assert_eq!(
            gpus.len(),
            3,
            "whole GPUs are never shared: {:#?}",
            llama.placed
        );
        assert!(
            llama
                .placed
                .iter()
                .all(|replica| replica.score.is_some_and(|score| score.total.is_finite()))
        );
        let big = &round.deployments[1];
        assert!(big.placed.is_empty());
        assert!(
            big.unplaced[0]
                .reason
                .starts_with("0/2 nodes are available")
        );
        assert_eq!(round.records.len(), 4);
        assert_eq!(
            round
                .events
                .iter()
                .filter(|event| event.severity == "Warning")
                .count(),
            1
        );
    }

    #[test]
    fn an_unhealthy_gpu_moves_only_the_replica_on_it() {
        let deployments = [deployment("llama", 2, 1, 60_000)];
        // Only node a exists at first: both replicas land there, one on GPU 0.
        let first = place(&fleet(false, false), &deployments, &[], 1_000).expect("first");
        let on_a0 = first.deployments[0]
            .placed
            .iter()
            .find(|replica| replica.gpus[0].index == Some(0))
            .map(|replica| replica.replica.clone())
            .expect("a replica on a/0");
        let second =
            place(&fleet(true, true), &deployments, &first.deployments, 2_000).expect("second");
        let placed = &second.deployments[0].placed;
        assert_eq!(placed.len(), 2);
        let moved = placed
            .iter()
            .find(|replica| replica.replica == on_a0)
            .expect("moved replica");
        assert_eq!(moved.node, "b");
        assert_eq!(
            second.records.len(),
            1,
            "only the displaced replica is decided"
        );
        assert_eq!(second.records[0].replica, on_a0);
        assert_eq!(second.events[0].reason, "Moved");
    }
}
