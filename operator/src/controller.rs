//! The InferenceDeployment reconciler: the thin shell around the pure modules.
//!
//! `reconcile` takes the placement lock, builds the fleet snapshot from the caches and the
//! in-flight ledger, asks [`rollout::plan`] what to do and the engine where, records the new
//! placements as in flight, releases the lock, then creates and deletes Pods, publishes Events
//! and writes the status by server-side apply. `error_policy` logs, counts and requeues.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use gpufleet_api::conditions::pod_ready;
use gpufleet_api::inference_deployment::ReplicaPlacement;
use gpufleet_api::labels::{DEPLOYMENT_LABEL, MOVE_REASON_ANNOTATION};
use gpufleet_api::{GpuNode, InferenceDeployment};
use gpufleet_placement::{Decision, Engine, EngineConfig, ExistingPlacement, Outcome, strategy_of};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::defragment;
use crate::metrics::Metrics;
use crate::replica::{
    free_ordinals, group_of, is_terminating, ordinal_of, placement_id, placement_of, pod_for,
    pod_name, request_for,
};
use crate::rollout::{self, Budget, ReplicaState};
use crate::snapshot::{self, failure_of};
use crate::status::{self, Observation};
use crate::{Error, FIELD_MANAGER, Result};

/// Placements listed in a deployment's status; the Pods carry every placement, the status keeps
/// a readable sample so the object stays small at thousands of replicas.
const STATUS_PLACEMENTS_LIMIT: usize = 100;
/// How long an in-flight placement may stay unseen in the Pod cache before it is forgotten.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(60);

/// Tunables of the operator.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// A GpuNode heartbeat older than this marks its node's GPUs as failed, ms.
    pub heartbeat_stale_after_ms: u64,
    /// Regular requeue, which also catches heartbeats going stale.
    pub resync: Duration,
    /// Pods created or deleted concurrently by one reconcile.
    pub api_concurrency: usize,
    /// Identity reported on Events.
    pub instance: String,
    /// Reconcile only the InferenceDeployments of this namespace (all when `None`). Pods of
    /// every namespace are still read, so capacity used elsewhere is never promised twice.
    pub namespace: Option<String>,
    /// Move at most one replica per this interval, across the operator, when the move lowers
    /// fragmentation by at least `defragment_min_gain_gpus`; `None` never moves a healthy one.
    pub defragment_every: Option<Duration>,
    /// The least fragmentation drop, in GPUs, worth a move.
    pub defragment_min_gain_gpus: f64,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_stale_after_ms: snapshot::DEFAULT_HEARTBEAT_STALE_AFTER_MS,
            resync: Duration::from_secs(10),
            api_concurrency: 64,
            instance: "gpufleet-operator".to_owned(),
            namespace: None,
            defragment_every: None,
            defragment_min_gain_gpus: 0.5,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    /// Every InferenceDeployment the controller watches: their shapes are the workload the
    /// fragmentation-aware ranking expects.
    deployments: Store<InferenceDeployment>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    gpu_nodes: Store<GpuNode>,
    /// Placements decided but not yet seen in the Pod cache, by `namespace/pod`.
    in_flight: Mutex<BTreeMap<String, (ExistingPlacement, Instant)>>,
    /// Serialises snapshot → decide → record, so two deployments never get the same capacity.
    placement_lock: tokio::sync::Mutex<()>,
    /// When the defragmenter last started a move (one per interval across deployments).
    last_defragment: Mutex<Option<Instant>>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    config: OperatorConfig,
    /// Nodes left out of placement and why, as last reported: an Event goes out when a node
    /// is first left out or its problem changes, not on every reconcile of every deployment.
    left_out_reported: Mutex<BTreeMap<String, String>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn now_ms() -> u64 {
    u64::try_from(k8s_openapi::jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

/// A gpufleet Pod of the cache with the group it belongs to.
fn group_of_pod(pod: &Pod) -> Option<String> {
    let deployment = pod.labels().get(DEPLOYMENT_LABEL)?;
    Some(key(&pod.namespace().unwrap_or_default(), deployment))
}

impl Context {
    /// Every placement the cluster holds, plus in-flight ones the cache has not shown yet.
    fn placements(&self) -> Vec<ExistingPlacement> {
        let mut seen = BTreeSet::new();
        let mut placements: Vec<ExistingPlacement> = self
            .pods
            .state()
            .iter()
            .filter_map(|pod| {
                let group = group_of_pod(pod)?;
                seen.insert(key(&pod.namespace().unwrap_or_default(), &pod.name_any()));
                placement_of(pod, &group)
            })
            .collect();
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        in_flight
            .retain(|name, (_, since)| !seen.contains(name) && since.elapsed() < IN_FLIGHT_TTL);
        placements.extend(in_flight.values().map(|(placement, _)| placement.clone()));
        placements
    }

    fn in_flight_names(&self, namespace: &str, group: &str) -> Vec<String> {
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        in_flight
            .iter()
            .filter(|(name, (placement, _))| {
                placement.group == group && name.starts_with(&format!("{namespace}/"))
            })
            .filter_map(|(_, (placement, _))| {
                placement
                    .id
                    .strip_prefix(&format!("{namespace}/"))
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Whether the defragmenter may start a move now.
    fn defragment_due(&self) -> bool {
        let Some(every) = self.config.defragment_every else {
            return false;
        };
        self.last_defragment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|last| last.elapsed() >= every)
    }

    fn defragment_started(&self) {
        *self
            .last_defragment
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    fn forget_in_flight(&self, namespace: &str, pod: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key(namespace, pod));
    }

    /// Reports the nodes left out of this snapshot: the metric always, an Event on each
    /// GpuNode (or Node) whose problem is new.
    async fn report_left_out(&self, left_out: &[snapshot::LeftOut]) {
        self.metrics.set_nodes_left_out(left_out.len());
        let new: Vec<&snapshot::LeftOut> = {
            let mut reported = self
                .left_out_reported
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now: BTreeMap<String, String> = left_out
                .iter()
                .map(|node| (node.node.clone(), node.why.clone()))
                .collect();
            let new = left_out
                .iter()
                .filter(|node| reported.get(&node.node) != Some(&node.why))
                .collect();
            *reported = now;
            new
        };
        for node in new {
            warn!(node = %node.node, why = %node.why, "node left out of placement");
            self.publish(
                Event {
                    type_: EventType::Warning,
                    reason: "LeftOutOfPlacement".into(),
                    note: Some(format!(
                        "gpufleet places nothing on node {} until this is fixed: {}",
                        node.node, node.why
                    )),
                    action: "Snapshot".into(),
                    secondary: None,
                },
                node.reference.clone(),
            )
            .await;
        }
    }

    async fn publish(&self, event: Event, reference: ObjectReference) {
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "publishing an Event failed");
        }
    }
}

/// What a reconcile decided under the lock, executed after it.
struct Decisions {
    create: Vec<(Pod, Decision)>,
    delete: Vec<(String, String)>,
    unplaced: u32,
    unplaceable_reason: Option<String>,
    held_back: u32,
    own_pods: Vec<Arc<Pod>>,
    in_flight_own: usize,
    snapshot: gpufleet_placement::FleetSnapshot,
    desired: u32,
    budget: Budget,
    /// A replica the defragmenter decided to move: its Pod and why.
    defragment: Option<(String, String)>,
    /// Time until the first GpuNode heartbeat of a node holding one of its replicas goes
    /// stale, so the requeue lands right then instead of at the next resync.
    next_heartbeat_deadline: Option<Duration>,
    /// Nodes the snapshot left out because the engine cannot use them.
    left_out: Vec<snapshot::LeftOut>,
}

/// Reconciles one InferenceDeployment.
///
/// # Errors
/// Any API or engine failure; the controller requeues with backoff through [`error_policy`].
pub async fn reconcile(
    deployment: Arc<InferenceDeployment>,
    context: Arc<Context>,
) -> Result<Action> {
    let started = Instant::now();
    if deployment.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the Pods.
        return Ok(Action::await_change());
    }
    let namespace = deployment.namespace().ok_or(Error::MissingField {
        kind: "InferenceDeployment",
        field: "metadata.namespace",
    })?;
    let name = deployment.name_any();
    let decisions = {
        let _guard = context.placement_lock.lock().await;
        decide(&deployment, &context, &namespace)?
    };

    context.report_left_out(&decisions.left_out).await;
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let deployment_reference = deployment.object_ref(&());

    // Create the new replicas, concurrently.
    let creations = futures::stream::iter(decisions.create.iter().cloned())
        .map(|(pod, decision)| {
            let pods = pods.clone();
            let context = Arc::clone(&context);
            let namespace = namespace.clone();
            async move {
                let pod_name = pod.name_any();
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        context.metrics.record_decision(true);
                        let note = format!(
                            "placed on {} GPUs [{}] ({} milli, {} MiB each), score {:.3}",
                            decision.node,
                            decision
                                .gpus
                                .iter()
                                .map(|g| g.uuid.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                            decision.gpu_milli,
                            decision.gpu_memory_mib,
                            decision.score.total
                        );
                        context
                            .publish(
                                Event {
                                    type_: EventType::Normal,
                                    reason: "Placed".into(),
                                    note: Some(note),
                                    action: "Bind".into(),
                                    secondary: None,
                                },
                                created.object_ref(&()),
                            )
                            .await;
                        Ok(())
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        // Another decision already created this replica: nothing to do twice.
                        context.forget_in_flight(&namespace, &pod_name);
                        Ok(())
                    }
                    Err(source) => {
                        context.forget_in_flight(&namespace, &pod_name);
                        Err(Error::CreatePod {
                            pod: pod_name,
                            source,
                        })
                    }
                }
            }
        })
        .buffer_unordered(context.config.api_concurrency.max(1))
        .try_collect::<Vec<()>>();
    let creation_result = creations.await;

    // Delete replicas on failed GPUs (their replacements are Ready) and scaled-down ones.
    for (pod, why) in &decisions.delete {
        match pods.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::DeletePod {
                    pod: pod.clone(),
                    source,
                });
            }
        }
        context
            .publish(
                Event {
                    type_: if why.starts_with("scale down") || why.starts_with("defragment") {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    },
                    reason: if why.starts_with("scale down") {
                        "ScaledDown".into()
                    } else if why.starts_with("defragment") {
                        "Defragmented".into()
                    } else {
                        "ReplacedFailedReplica".into()
                    },
                    note: Some(format!("deleted {pod}: {why}")),
                    action: "Delete".into(),
                    secondary: None,
                },
                deployment_reference.clone(),
            )
            .await;
    }
    if decisions.unplaced > 0 {
        context
            .publish(
                Event {
                    type_: EventType::Warning,
                    reason: "Unplaceable".into(),
                    note: Some(format!(
                        "{} replicas cannot be placed: {}",
                        decisions.unplaced,
                        decisions.unplaceable_reason.clone().unwrap_or_default()
                    )),
                    action: "Place".into(),
                    secondary: None,
                },
                deployment_reference.clone(),
            )
            .await;
    }
    creation_result?;
    if let Some((pod, why)) = &decisions.defragment {
        let patch = serde_json::json!({"metadata": {"annotations": {MOVE_REASON_ANNOTATION: why}}});
        pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::MarkPod {
                pod: pod.clone(),
                source,
            })?;
        context
            .publish(
                Event {
                    type_: EventType::Normal,
                    reason: "Defragmenting".into(),
                    note: Some(format!("{pod}: {why}")),
                    action: "Move".into(),
                    secondary: None,
                },
                deployment_reference.clone(),
            )
            .await;
    }

    write_status(&deployment, &context, &namespace, &name, &decisions).await?;
    context
        .metrics
        .set_unplaced(&key(&namespace, &name), decisions.unplaced);
    context.metrics.observe_reconcile(started.elapsed());

    let busy = decisions.defragment.is_some()
        || decisions.unplaced > 0
        || decisions.held_back > 0
        || !decisions.create.is_empty()
        || decisions.in_flight_own > 0;
    let regular = if busy {
        Duration::from_secs(2)
    } else {
        context.config.resync
    };
    Ok(Action::requeue(
        decisions
            .next_heartbeat_deadline
            .map_or(regular, |deadline| regular.min(deadline)),
    ))
}

/// How long until the earliest heartbeat of the nodes under `pods` goes stale (plus a small
/// margin so the snapshot then sees it stale), or `None` when none is fresh.
fn next_heartbeat_deadline(
    pods: &[Arc<Pod>],
    gpu_nodes: &BTreeMap<String, Arc<GpuNode>>,
    now_ms: u64,
    stale_after_ms: u64,
) -> Option<Duration> {
    const MARGIN_MS: u64 = 100;
    pods.iter()
        .filter_map(|pod| pod.spec.as_ref()?.node_name.as_deref())
        .filter_map(|node| {
            gpu_nodes
                .get(node)?
                .status
                .as_ref()?
                .last_heartbeat_time
                .as_ref()
        })
        .map(|beat| (snapshot::time_ms(beat) + stale_after_ms).saturating_sub(now_ms))
        .filter(|remaining| *remaining > 0)
        .min()
        .map(|remaining| Duration::from_millis(remaining + MARGIN_MS))
}

/// The pure part of a reconcile, under the placement lock.
fn decide(
    deployment: &InferenceDeployment,
    context: &Context,
    namespace: &str,
) -> Result<Decisions> {
    let group = group_of(deployment);
    let name = deployment.name_any();
    let uid = deployment.meta().uid.clone();
    let now = now_ms();

    let gpu_nodes: BTreeMap<String, Arc<GpuNode>> = context
        .gpu_nodes
        .state()
        .into_iter()
        .map(|g| (g.name_any(), g))
        .collect();
    let nodes = context.nodes.state();
    let snapshot::Built {
        fleet: snapshot,
        left_out,
    } = snapshot::build(
        &nodes,
        &gpu_nodes,
        context.placements(),
        now,
        context.config.heartbeat_stale_after_ms,
    );

    // This deployment's replicas: cached Pods it controls, plus in-flight ones.
    let own_pods: Vec<Arc<Pod>> = context
        .pods
        .state()
        .into_iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod.labels().get(DEPLOYMENT_LABEL) == Some(&name)
                && pod
                    .owner_references()
                    .iter()
                    .any(|owner| Some(&owner.uid) == uid.as_ref() && owner.controller == Some(true))
        })
        .collect();
    let in_flight = context.in_flight_names(namespace, &group);
    let mut states: Vec<ReplicaState> = Vec::new();
    let mut ordinals: Vec<u32> = Vec::new();
    for pod in &own_pods {
        if let Some(ordinal) = ordinal_of(pod) {
            ordinals.push(ordinal);
        }
        if is_terminating(pod) {
            continue;
        }
        let failure = placement_of(pod, &group)
            .and_then(|p| failure_of(&p, &snapshot))
            .or_else(|| pod.annotations().get(MOVE_REASON_ANNOTATION).cloned());
        states.push(ReplicaState {
            name: pod.name_any(),
            ready: pod_ready(pod),
            failure,
        });
    }
    for pod in &in_flight {
        if let Some(ordinal) = pod.rsplit_once("-r").and_then(|(_, n)| n.parse().ok()) {
            ordinals.push(ordinal);
        }
        states.push(ReplicaState {
            name: pod.clone(),
            ready: false,
            failure: None,
        });
    }

    let desired = u32::try_from(deployment.spec.replicas.max(0)).unwrap_or(0);
    let budget = Budget::resolve(
        desired,
        &deployment.spec.disruption.max_unavailable,
        &deployment.spec.disruption.max_surge,
    );
    let plan = rollout::plan(desired, &states, budget);

    let config = EngineConfig::new(
        strategy_of(deployment.spec.placement.strategy),
        crate::replica::workload_mix(&context.deployments.state()),
    );
    let mut engine = Engine::new(&snapshot, config)?;
    let mut delete: Vec<(String, String)> = Vec::new();
    for (pod, why) in &plan.delete_failed {
        // Its GPUs are failed anyway; freeing them keeps the engine's view exact.
        let _ = engine.remove(&placement_id(namespace, pod));
        delete.push((pod.clone(), why.clone()));
    }
    if plan.scale_down > 0 {
        for removal in engine.scale_down(&group, plan.scale_down as usize) {
            let why = format!(
                "scale down to {desired}: removing it lowers fragmentation on {} by {:.3} GPUs",
                removal.node, -removal.fragmentation_delta_gpus
            );
            let pod = removal
                .placement
                .strip_prefix(&format!("{namespace}/"))
                .unwrap_or(&removal.placement)
                .to_owned();
            delete.push((pod, why));
        }
    }

    let mut create = Vec::new();
    let mut unplaced = 0;
    let mut unplaceable_reason = None;
    // A template that does not decode as a Pod template (the CRD keeps it schemaless) holds
    // this deployment's new replicas back, with the reason in its status and an Event; every
    // other deployment is placed as usual.
    let template_problem = deployment.spec.template.spec().err();
    for ordinal in free_ordinals(&ordinals, plan.create as usize) {
        if let Some(why) = template_problem {
            context.metrics.record_decision(false);
            unplaced += 1;
            unplaceable_reason.get_or_insert_with(|| why.to_owned());
            continue;
        }
        let pod_name = pod_name(&name, ordinal);
        let request = request_for(deployment, &pod_name);
        let decision_started = Instant::now();
        let outcome = engine.place(&request)?;
        context.metrics.observe_decision(decision_started.elapsed());
        match outcome {
            Outcome::Placed(decision) => {
                let pod = pod_for(deployment, &pod_name, ordinal, &decision, now)?;
                if let Some(placement) = placement_of(&pod, &group) {
                    context
                        .in_flight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key(namespace, &pod_name), (placement, Instant::now()));
                }
                create.push((pod, decision));
            }
            Outcome::Unplaceable(why) => {
                context.metrics.record_decision(false);
                unplaced += 1;
                unplaceable_reason.get_or_insert_with(|| why.to_string());
            }
        }
    }
    context
        .metrics
        .set_fragmentation(engine.summary().fragmentation_share());
    let at_rest = create.is_empty()
        && delete.is_empty()
        && unplaced == 0
        && plan.held_back == 0
        && in_flight.is_empty()
        && states.len() == desired as usize
        && states.iter().all(|s| s.ready && s.failure.is_none());
    let defragment = if at_rest && context.defragment_due() {
        let replacement = free_ordinals(&ordinals, 1)
            .first()
            .map(|ordinal| request_for(deployment, &pod_name(&name, *ordinal)));
        match replacement {
            Some(replacement) => defragment::best_move(
                &snapshot,
                engine.config(),
                &group,
                &replacement,
                context.config.defragment_min_gain_gpus,
            )?
            .and_then(|chosen| {
                let pod = chosen
                    .placement
                    .strip_prefix(&format!("{namespace}/"))?
                    .to_owned();
                context.defragment_started();
                Some((
                    pod,
                    format!(
                        "defragment: moving it from {} to {} lowers the fleet's fragmentation by {:.2} GPUs",
                        chosen.from_node, chosen.to_node, chosen.gain_gpus
                    ),
                ))
            }),
            None => None,
        }
    } else {
        None
    };
    let next_heartbeat_deadline = next_heartbeat_deadline(
        &own_pods,
        &gpu_nodes,
        now,
        context.config.heartbeat_stale_after_ms,
    );

    Ok(Decisions {
        create,
        delete,
        unplaced,
        unplaceable_reason,
        held_back: plan.held_back,
        own_pods,
        in_flight_own: in_flight.len(),
        next_heartbeat_deadline,
        defragment,
        snapshot,
        desired,
        budget,
        left_out,
    })
}

async fn write_status(
    deployment: &InferenceDeployment,
    context: &Context,
    namespace: &str,
    name: &str,
    decisions: &Decisions,
) -> Result<()> {
    let group = group_of(deployment);
    let deleted: BTreeSet<&str> = decisions
        .delete
        .iter()
        .map(|(pod, _)| pod.as_str())
        .collect();
    let mut live: Vec<&Arc<Pod>> = decisions
        .own_pods
        .iter()
        .filter(|pod| !is_terminating(pod) && !deleted.contains(pod.name_any().as_str()))
        .collect();
    live.sort_by_key(|pod| ordinal_of(pod).unwrap_or(u32::MAX));
    let mut ready = 0;
    let mut failed = 0;
    let mut placements = Vec::new();
    for pod in &live {
        let placement = placement_of(pod, &group);
        let failure = placement
            .as_ref()
            .and_then(|p| failure_of(p, &decisions.snapshot));
        if failure.is_some() {
            failed += 1;
        } else if pod_ready(pod) {
            ready += 1;
        }
        if placements.len() < STATUS_PLACEMENTS_LIMIT
            && let Some(placement) = placement
        {
            placements.push(placement_status(pod, &placement));
        }
    }
    let replicas = live.len() + decisions.create.len() + decisions.in_flight_own;
    let observation = Observation {
        generation: deployment.meta().generation,
        desired: decisions.desired,
        min_available: decisions
            .desired
            .saturating_sub(decisions.budget.max_unavailable),
        replicas: u32::try_from(replicas).unwrap_or(u32::MAX),
        ready,
        unplaced: decisions.unplaced,
        unplaceable_reason: decisions.unplaceable_reason.clone(),
        failed,
        placements,
        selector: format!("{DEPLOYMENT_LABEL}={name}"),
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = status::compute(&observation, deployment.status.as_ref(), &now);
    if deployment.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<InferenceDeployment> = Api::namespaced(context.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": InferenceDeployment::api_version(&()),
        "kind": InferenceDeployment::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        name: key(namespace, name),
        source,
    })?;
    Ok(())
}

fn placement_status(pod: &Pod, placement: &ExistingPlacement) -> ReplicaPlacement {
    let annotations = pod.annotations();
    let score: Option<gpufleet_placement::ScoreBreakdown> = annotations
        .get(gpufleet_api::labels::SCORE_ANNOTATION)
        .and_then(|json| serde_json::from_str(json).ok());
    let mut breakdown = BTreeMap::new();
    if let Some(score) = &score {
        breakdown.insert("strategy".to_owned(), score.strategy_cost);
        if let Some(fragmentation) = score.fragmentation_delta_gpus {
            breakdown.insert("fragmentation".to_owned(), fragmentation);
        }
        for (part, value) in [
            ("health", score.health_penalty),
            ("thermal", score.thermal_penalty),
            ("power", score.power_penalty),
            ("utilisation", score.utilisation_penalty),
            ("telemetry", score.telemetry_penalty),
            ("numa", score.numa_penalty),
            ("spread", score.spread_penalty),
        ] {
            if value != 0.0 {
                breakdown.insert(part.to_owned(), value);
            }
        }
    }
    ReplicaPlacement {
        pod: pod.name_any(),
        node: placement.node.clone(),
        gpu_uuids: annotations
            .get(gpufleet_api::labels::GPU_UUIDS_ANNOTATION)
            .map(|uuids| uuids.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        score: score.map(|s| s.total),
        score_breakdown: breakdown,
    }
}

/// Logs, counts and requeues with a short backoff.
pub fn error_policy(
    deployment: Arc<InferenceDeployment>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    warn!(deployment = %deployment.name_any(), %error, "reconcile failed");
    context.metrics.record_reconcile_error();
    Action::requeue(Duration::from_secs(2))
}

/// Starts reflectors for Pods, Nodes and GpuNodes, waits until they are synced (so no replica
/// is created twice after a restart), then runs the controller until `shutdown` resolves.
///
/// # Errors
/// [`Error::ReadCluster`] when the caches cannot be filled.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    config: OperatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let pod_api: Api<Pod> = Api::all(client.clone());
    let node_api: Api<Node> = Api::all(client.clone());
    let gpu_node_api: Api<GpuNode> = Api::all(client.clone());
    let deployment_api: Api<InferenceDeployment> = match &config.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };

    let (pods, pod_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let (gpu_nodes, gpu_node_writer) = reflector::store();
    let pod_config = watcher::Config::default().labels(DEPLOYMENT_LABEL);
    tokio::spawn(
        reflector::reflector(pod_writer, watcher(pod_api.clone(), pod_config.clone()))
            .backoff(crate::reconnect::backoff(1))
            .for_each(|_| futures::future::ready(())),
    );
    tokio::spawn(
        reflector::reflector(
            node_writer,
            watcher(node_api.clone(), watcher::Config::default()),
        )
        .backoff(crate::reconnect::backoff(2))
        .for_each(|_| futures::future::ready(())),
    );
    tokio::spawn(
        reflector::reflector(
            gpu_node_writer,
            watcher(gpu_node_api.clone(), watcher::Config::default()),
        )
        .backoff(crate::reconnect::backoff(3))
        .for_each(|_| futures::future::ready(())),
    );
    for (store_ready, resource) in [
        (pods.wait_until_ready().await.is_ok(), "Pods"),
        (nodes.wait_until_ready().await.is_ok(), "Nodes"),
        (gpu_nodes.wait_until_ready().await.is_ok(), "GpuNodes"),
    ] {
        if !store_ready {
            return Err(Error::CacheNotSynced { resource });
        }
    }
    info!(
        pods = pods.state().len(),
        nodes = nodes.state().len(),
        gpu_nodes = gpu_nodes.state().len(),
        "caches synced; reconciling"
    );

    let controller = Controller::new(deployment_api, watcher::Config::default());
    let context = Arc::new(Context {
        deployments: controller.store(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(config.instance.clone()),
            },
        ),
        client,
        pods: pods.clone(),
        nodes,
        gpu_nodes,
        in_flight: Mutex::new(BTreeMap::new()),
        placement_lock: tokio::sync::Mutex::new(()),
        last_defragment: Mutex::new(None),
        metrics,
        config,
        left_out_reported: Mutex::new(BTreeMap::new()),
    });

    // A GpuNode or Node change (a GPU turning Unhealthy, a node NotReady) wakes every
    // deployment with a replica on that node.
    let deployments_on = {
        let pods = pods.clone();
        move |node: String| -> Vec<ObjectRef<InferenceDeployment>> {
            let mut refs: BTreeSet<(String, String)> = BTreeSet::new();
            for pod in pods.state() {
                let on_node =
                    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str());
                if let (true, Some(deployment)) = (on_node, pod.labels().get(DEPLOYMENT_LABEL)) {
                    refs.insert((pod.namespace().unwrap_or_default(), deployment.clone()));
                }
            }
            refs.into_iter()
                .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
                .collect()
        }
    };
    let for_gpu_nodes = deployments_on.clone();
    controller
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(100)))
        .trigger_backoff(crate::reconnect::backoff(4))
        .owns(pod_api, pod_config)
        .watches(
            gpu_node_api,
            watcher::Config::default(),
            move |gpu_node: GpuNode| for_gpu_nodes(gpu_node.name_any()),
        )
        .watches(node_api, watcher::Config::default(), move |node: Node| {
            deployments_on(node.name_any())
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(error) = result {
                warn!(%error, "controller");
            }
            futures::future::ready(())
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_on(node: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": []}}),
            )
            .expect("pod"),
        )
    }

    fn gpu_node(name: &str, heartbeat: &str) -> (String, Arc<GpuNode>) {
        let object: GpuNode = serde_json::from_value(json!({
            "apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
            "metadata": {"name": name}, "spec": {"nodeName": name},
            "status": {"lastHeartbeatTime": heartbeat}
        }))
        .expect("GpuNode");
        (name.to_owned(), Arc::new(object))
    }

    #[test]
    fn the_requeue_lands_when_the_first_replica_node_heartbeat_goes_stale() {
        // 2026-01-01T00:00:30Z; heartbeats at :00 and :20, stale after 60 s.
        let now = 1_767_225_630_000;
        let gpu_nodes = BTreeMap::from([
            gpu_node("a", "2026-01-01T00:00:00Z"),
            gpu_node("b", "2026-01-01T00:00:20Z"),
            gpu_node("idle", "2025-12-31T23:59:59Z"),
        ]);
        let pods = [pod_on("a"), pod_on("b")];
        assert_eq!(
            next_heartbeat_deadline(&pods, &gpu_nodes, now, 60_000),
            Some(Duration::from_millis(30_100))
        );
        // Already stale heartbeats are handled now, not scheduled; no replicas, no deadline.
        assert_eq!(
            next_heartbeat_deadline(&pods, &gpu_nodes, now + 45_000, 60_000),
            Some(Duration::from_millis(5_100))
        );
        assert_eq!(
            next_heartbeat_deadline(&pods, &gpu_nodes, now + 90_000, 60_000),
            None
        );
        assert_eq!(next_heartbeat_deadline(&[], &gpu_nodes, now, 60_000), None);
    }
}
