//! The operator's placements as the deployments view shows them (`gpufleet dashboard
//! --kubernetes`): what the gpufleet operator wrote to each watched InferenceDeployment's
//! `status`, not a what-if round of the dashboard's own engine, which could disagree with it.
//!
//! ```text
//!  InferenceDeployment.status ─┬─ placements[] (pod, node, GPU UUIDs, score, score terms)
//!    (written by the operator) ├─ readyReplicas, replicas, unplacedReplicas
//!                              └─ conditions (Available, Progressing, Degraded + messages)
//!  watched GpuNodes (FleetView) ── GPU UUID → device index, GPU memory
//!                                               └────────────► DeploymentView (source: operator)
//! ```
//!
//! The status says less than a Pod's annotations (no device indices, compute share, memory or
//! decision time) and lists at most 100 placements; the dashboard reads no Pods (its RBAC does
//! not allow it), so indices come from the GpuNodes, the share and memory from the spec (what
//! the engine reserved for it), and the decision time stays unknown. Pure: no I/O.

use std::collections::HashMap;

use gpufleet_api::InferenceDeployment;
use gpufleet_api::inference_deployment::ReplicaPlacement;
use gpufleet_placement::{ScoreBreakdown, Strategy, strategy_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::fleet::{FleetView, GpuView};
use crate::placement::{
    ConditionView, DeploymentView, PlacementSource, ReplicaGpu, ReplicaView, request_of,
};

/// The operator's `Degraded` reason when replicas could not be placed (operator/src/status.rs).
const UNPLACEABLE_REASON: &str = "ReplicasUnplaceable";
/// What precedes the engine's reason in that condition's message.
const UNPLACEABLE_MESSAGE_SEPARATOR: &str = "cannot be placed: ";

/// Every deployment's view from its status, sorted by key (the watch cache has no order, and a
/// stable order keeps the JSON unchanged while nothing changes).
#[must_use]
pub fn deployment_views(
    deployments: &[InferenceDeployment],
    fleet: &FleetView,
) -> Vec<DeploymentView> {
    let gpus = gpus_by_uuid(fleet);
    let mut views: Vec<DeploymentView> = deployments
        .iter()
        .map(|deployment| view_with(deployment, &gpus))
        .collect();
    views.sort_by(|a, b| a.key.cmp(&b.key));
    views
}

/// One deployment's view from its status; GPU indices and sizes from `fleet`.
#[must_use]
pub fn deployment_view(deployment: &InferenceDeployment, fleet: &FleetView) -> DeploymentView {
    view_with(deployment, &gpus_by_uuid(fleet))
}

fn gpus_by_uuid(fleet: &FleetView) -> HashMap<&str, &GpuView> {
    fleet.gpus().map(|gpu| (gpu.uuid.as_str(), gpu)).collect()
}

fn count(value: i32) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(0)
}

fn view_with(deployment: &InferenceDeployment, gpus: &HashMap<&str, &GpuView>) -> DeploymentView {
    let mut view = DeploymentView::from_spec(deployment);
    view.placement_source = PlacementSource::Operator;
    view.generation = deployment.metadata.generation;
    let Some(status) = &deployment.status else {
        // Not reconciled yet: nothing placed, no conditions; the UI says the operator has not
        // reported.
        return view;
    };
    let strategy = strategy_of(deployment.spec.placement.strategy);
    view.placed = status
        .placements
        .iter()
        .map(|placement| replica_view(deployment, placement, strategy, gpus))
        .collect();
    view.replicas = count(status.replicas);
    view.ready_replicas = Some(count(status.ready_replicas));
    view.unplaced_replicas = count(status.unplaced_replicas);
    view.observed_generation = status.observed_generation;
    view.conditions = status.conditions.iter().map(condition_view).collect();
    view.unplaced_reason = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Degraded" && condition.reason == UNPLACEABLE_REASON)
        .map(|condition| {
            // `N replicas cannot be placed: 0/8 nodes are available: …` → the engine's reason.
            condition
                .message
                .split_once(UNPLACEABLE_MESSAGE_SEPARATOR)
                .map_or(condition.message.as_str(), |(_, reason)| reason)
                .to_owned()
        });
    view
}

fn replica_view(
    deployment: &InferenceDeployment,
    placement: &ReplicaPlacement,
    strategy: Strategy,
    gpus: &HashMap<&str, &GpuView>,
) -> ReplicaView {
    let request = request_of(deployment, placement.pod.clone());
    let first = placement
        .gpu_uuids
        .first()
        .and_then(|uuid| gpus.get(uuid.as_str()));
    ReplicaView {
        replica: placement.pod.clone(),
        node: placement.node.clone(),
        gpus: placement
            .gpu_uuids
            .iter()
            .map(|uuid| ReplicaGpu {
                index: gpus.get(uuid.as_str()).map(|gpu| gpu.index),
                uuid: uuid.clone(),
            })
            .collect(),
        gpu_milli: request.gpu.milli_per_gpu(),
        gpu_memory_mib: request
            .gpu
            .memory_need_mib(first.map_or(0, |gpu| gpu.memory_total_mib)),
        score: score_of(placement, strategy),
        placed_at_ms: None,
    }
}

/// The score as the engine's breakdown, from the terms the operator copies into the status
/// (`strategy`, `fragmentation`, and the penalties that were not zero; see
/// `placement_status` in operator/src/controller.rs). `None` without a total.
fn score_of(placement: &ReplicaPlacement, strategy: Strategy) -> Option<ScoreBreakdown> {
    let total = placement.score?;
    let terms = &placement.score_breakdown;
    let term = |name: &str| terms.get(name).copied().unwrap_or(0.0);
    Some(ScoreBreakdown {
        strategy,
        strategy_cost: term("strategy"),
        fragmentation_delta_gpus: terms.get("fragmentation").copied(),
        health_penalty: term("health"),
        thermal_penalty: term("thermal"),
        power_penalty: term("power"),
        utilisation_penalty: term("utilisation"),
        telemetry_penalty: term("telemetry"),
        numa_penalty: term("numa"),
        spread_penalty: term("spread"),
        total,
    })
}

fn condition_view(condition: &Condition) -> ConditionView {
    ConditionView {
        kind: condition.type_.clone(),
        status: condition.status.clone(),
        reason: condition.reason.clone(),
        message: condition.message.clone(),
        last_transition_ms: Some(condition.last_transition_time.0.as_millisecond()),
        observed_generation: condition.observed_generation,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gpufleet_api::gpu_node::HealthState;
    use gpufleet_api::inference_deployment::{InferenceDeploymentStatus, PlacementStrategy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::fleet::fixtures::{device, node};
    use crate::placement::fixtures::deployment;

    fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: Some(2),
            last_transition_time: Time(
                Timestamp::from_millisecond(1_700_000_000_000).expect("valid time"),
            ),
        }
    }

    /// A status as operator/src/status.rs and `placement_status` write it: two of three
    /// replicas placed, one unplaced, the spec one generation ahead of the status.
    fn with_status() -> InferenceDeployment {
        let mut deployment = deployment("llm", 3, 1, 30_000);
        deployment.spec.placement.strategy = PlacementStrategy::BestFit;
        deployment.metadata.generation = Some(3);
        deployment.status = Some(InferenceDeploymentStatus {
            observed_generation: Some(2),
            replicas: 2,
            ready_replicas: 1,
            unplaced_replicas: 1,
            selector: Some("gpufleet.io/deployment=llm".to_owned()),
            conditions: vec![
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "1 of 3 replicas Ready (at least 3 required)",
                ),
                condition(
                    "Progressing",
                    "True",
                    "ReplicasUpdating",
                    "2 replicas exist, 1 Ready, 3 wanted",
                ),
                condition(
                    "Degraded",
                    "True",
                    UNPLACEABLE_REASON,
                    "1 replicas cannot be placed: 0/2 nodes are available: 2 insufficient GPU memory.",
                ),
            ],
            placements: vec![
                ReplicaPlacement {
                    pod: "llm-r0".to_owned(),
                    node: "b".to_owned(),
                    gpu_uuids: vec!["GPU-b-1".to_owned()],
                    score: Some(0.375),
                    score_breakdown: BTreeMap::from([
                        ("strategy".to_owned(), 0.25),
                        ("thermal".to_owned(), 0.125),
                    ]),
                },
                ReplicaPlacement {
                    pod: "llm-r1".to_owned(),
                    node: "gone".to_owned(),
                    gpu_uuids: vec!["GPU-gone-0".to_owned()],
                    score: None,
                    score_breakdown: BTreeMap::new(),
                },
            ],
        });
        deployment
    }

    fn fleet() -> FleetView {
        FleetView::from_readings(
            vec![
                node(
                    "a",
                    vec![device(0, "H100", 81_559, 1_000, 5, HealthState::Healthy)],
                ),
                node(
                    "b",
                    vec![
                        device(0, "H100", 81_559, 1_000, 5, HealthState::Healthy),
                        device(1, "H100", 81_559, 1_000, 5, HealthState::Healthy),
                    ],
                ),
            ],
            1_000,
        )
    }

    #[test]
    fn the_view_is_what_the_operator_reported_not_a_what_if_round() {
        let view = deployment_view(&with_status(), &fleet());
        assert_eq!(view.placement_source, PlacementSource::Operator);
        assert_eq!(view.key, "default/llm");
        assert_eq!((view.desired, view.replicas), (3, 2));
        assert_eq!(view.ready_replicas, Some(1));
        assert_eq!(view.strategy, "best-fit");
        assert_eq!(
            (view.generation, view.observed_generation),
            (Some(3), Some(2))
        );

        // The operator's nodes and GPUs, even where a what-if round would have chosen node a.
        let placed: Vec<(&str, &str, Vec<Option<u32>>)> = view
            .placed
            .iter()
            .map(|replica| {
                (
                    replica.replica.as_str(),
                    replica.node.as_str(),
                    replica.gpus.iter().map(|gpu| gpu.index).collect(),
                )
            })
            .collect();
        assert_eq!(
            placed,
            vec![
                ("llm-r0", "b", vec![Some(1)]),
                // No watched GpuNode lists this GPU: its index is unknown, its UUID shown.
                ("llm-r1", "gone", vec![None]),
            ]
        );
        assert_eq!(view.placed[1].gpus[0].uuid, "GPU-gone-0");
        let score = view.placed[0].score.expect("a score");
        assert_eq!(score.strategy, Strategy::BestFit);
        assert!((score.total - 0.375).abs() < 1e-12);
        assert!((score.strategy_cost - 0.25).abs() < 1e-12);
        assert!((score.thermal_penalty - 0.125).abs() < 1e-12);
        assert_eq!(score.fragmentation_delta_gpus, None);
        assert!(view.placed[1].score.is_none());
        assert_eq!(view.placed[0].gpu_milli, 1_000);
        assert_eq!(view.placed[0].gpu_memory_mib, 30_000);
        assert_eq!(view.placed[0].placed_at_ms, None);

        // Conditions with their messages, and the unplaced count with the engine's reason.
        let conditions: Vec<(&str, &str, &str)> = view
            .conditions
            .iter()
            .map(|c| (c.kind.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            conditions,
            vec![
                ("Available", "False", "MinimumReplicasUnavailable"),
                ("Progressing", "True", "ReplicasUpdating"),
                ("Degraded", "True", UNPLACEABLE_REASON),
            ]
        );
        assert_eq!(
            view.conditions[0].last_transition_ms,
            Some(1_700_000_000_000)
        );
        assert_eq!(view.unplaced_replicas, 1);
        assert_eq!(
            view.unplaced_reason.as_deref(),
            Some("0/2 nodes are available: 2 insufficient GPU memory.")
        );
        assert!(
            view.unplaced.is_empty(),
            "the status names no unplaced replica"
        );

        // The JSON keeps the what-if shape and adds the operator's fields.
        let json = serde_json::to_value(&view).expect("json");
        for field in [
            "key",
            "namespace",
            "name",
            "desired",
            "strategy",
            "need",
            "placed",
            "unplaced",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
        assert_eq!(json["placementSource"], "operator");
        assert_eq!(json["conditions"][2]["type"], "Degraded");
        assert_eq!(json["placed"][0]["gpus"][0]["index"], 1);
        assert_eq!(json["placed"][0]["score"]["thermalPenalty"], 0.125);
        assert_eq!(json["placed"][0]["gpuMemoryMiB"], 30_000);
        assert!(json["placed"][1]["score"].is_null());
    }

    #[test]
    fn a_deployment_the_operator_has_not_reconciled_shows_nothing_placed() {
        let mut fresh = deployment("new", 2, 1, 10_000);
        fresh.metadata.namespace = Some("team".to_owned());
        let views = deployment_views(&[fresh, with_status()], &fleet());
        let keys: Vec<&str> = views.iter().map(|view| view.key.as_str()).collect();
        assert_eq!(keys, vec!["default/llm", "team/new"], "sorted by key");
        let fresh = &views[1];
        assert_eq!(fresh.placement_source, PlacementSource::Operator);
        assert!(fresh.placed.is_empty() && fresh.conditions.is_empty());
        assert_eq!((fresh.replicas, fresh.ready_replicas), (0, None));
        assert_eq!(fresh.unplaced_replicas, 0);
    }
}
