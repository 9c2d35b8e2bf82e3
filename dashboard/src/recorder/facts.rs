//! From watched objects to history facts, and the memory that keeps one recorder from offering
//! the same fact twice. Pure: no I/O, so every rule is a unit test.
//!
//! A fact's identity is what makes "never write the same fact twice" hold across re-lists,
//! recorder restarts and retries, because the store refuses a second row with the same key:
//!
//! | fact | from | key in the store |
//! |---|---|---|
//! | telemetry sample | `GpuNode.status.gpus[].telemetry` | GPU UUID + `sampledAt` (else the heartbeat) |
//! | health transition | `GpuNode.status.gpus[].health` | GPU UUID + state + `lastTransitionTime` |
//! | placement | `InferenceDeployment.status.placements[]` | deployment + Pod + node + GPU UUIDs |
//! | Kubernetes Event | `events.k8s.io/v1` Event of gpufleet | Event UID + series count |
//!
//! A Kubernetes `Time` has whole seconds, so a GPU has at most one sample per second here;
//! the agent publishes on significant change and a heartbeat, far less often than that.
//!
//! [`Observed`] only spares the buffer and the store work: it drops what this recorder has
//! already offered (a watch re-list replays every object). The keys are what make it correct.

use std::collections::{BTreeSet, HashMap};

use gpufleet_api::gpu_node::{GpuDevice, HealthState};
use gpufleet_api::{GpuNode, InferenceDeployment};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;

use crate::history::{TelemetrySample, health_code};
use crate::store::{FleetEvent, PlacementRecord};

/// One thing the recorder writes to history.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A GPU's telemetry at one instant.
    Sample(TelemetrySample),
    /// A health transition, a gpufleet Kubernetes Event or a gap marker.
    Event(FleetEvent),
    /// Where a replica was placed.
    Placement(PlacementRecord),
}

/// The three kinds of fact, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactKind {
    /// [`Fact::Sample`].
    Sample,
    /// [`Fact::Event`].
    Event,
    /// [`Fact::Placement`].
    Placement,
}

impl Fact {
    /// When the fact happened, Unix milliseconds.
    #[must_use]
    pub fn at_ms(&self) -> i64 {
        match self {
            Self::Sample(sample) => sample.at_ms,
            Self::Event(event) => event.at_ms,
            Self::Placement(placement) => placement.at_ms,
        }
    }

    /// Which kind of fact this is.
    #[must_use]
    pub fn kind(&self) -> FactKind {
        match self {
            Self::Sample(_) => FactKind::Sample,
            Self::Event(_) => FactKind::Event,
            Self::Placement(_) => FactKind::Placement,
        }
    }
}

/// Unix milliseconds of a Kubernetes timestamp.
fn millis(timestamp: &Timestamp) -> i64 {
    timestamp.as_millisecond()
}

/// What one recorder has already offered, per object, so a re-list or an unchanged update
/// yields nothing new.
#[derive(Debug, Default)]
pub struct Observed {
    /// Sample time last offered per GPU UUID.
    sampled: HashMap<String, i64>,
    /// Last health seen per GPU UUID: state and transition time.
    health: HashMap<String, (HealthState, Option<i64>)>,
    /// Placement ids offered per deployment (`namespace/name`).
    placements: HashMap<String, BTreeSet<String>>,
    /// Highest series count offered per Event UID.
    events: HashMap<String, i32>,
}

fn sample_of(node: &str, device: &GpuDevice, at_ms: i64) -> TelemetrySample {
    let telemetry = &device.telemetry;
    #[expect(
        clippy::cast_precision_loss,
        reason = "telemetry values are far below f32's exact-integer range"
    )]
    let to_real = |value: u64| value as f32;
    TelemetrySample {
        at_ms,
        node: node.to_owned(),
        gpu_uuid: device.uuid.clone(),
        gpu_index: i32::try_from(device.index).unwrap_or(i32::MAX),
        memory_used_mib: telemetry.memory_used_mib.map(to_real),
        memory_total_mib: Some(to_real(device.memory_total_mib)),
        utilization_percent: telemetry
            .utilization_percent
            .map(|value| to_real(value.into())),
        temperature_celsius: telemetry
            .temperature_celsius
            .map(|value| to_real(value.into())),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "watts need no more than f32 precision"
        )]
        power_watts: telemetry.power_watts.map(|value| value as f32),
        health: health_code(device.health.state),
        samples: 1,
        resolution_ms: 0,
    }
}

fn health_transition(
    node: &str,
    device: &GpuDevice,
    from: Option<HealthState>,
    transition_ms: Option<i64>,
    now_ms: i64,
) -> FleetEvent {
    let state = device.health.state;
    let (severity, reason) = match state {
        HealthState::Unhealthy => ("Warning", "GpuUnhealthy"),
        HealthState::Degraded => ("Warning", "GpuDegraded"),
        HealthState::Healthy => ("Normal", "GpuRecovered"),
    };
    let reasons: Vec<&str> = device
        .health
        .reasons
        .iter()
        .map(|reason| reason.code.as_str())
        .collect();
    let because = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    };
    let change = match from {
        Some(from) => format!("{from:?} → {state:?}"),
        None => format!("{state:?}"),
    };
    FleetEvent {
        id: format!(
            "health:{}:{}:{}",
            device.uuid,
            health_code(state),
            transition_ms.unwrap_or(0)
        ),
        at_ms: transition_ms.unwrap_or(now_ms),
        severity: severity.to_owned(),
        reason: reason.to_owned(),
        object_kind: "GpuNode".to_owned(),
        object_name: node.to_owned(),
        gpu_uuid: Some(device.uuid.clone()),
        message: format!(
            "GPU {} ({}) on {node}: {change}{because}",
            device.index, device.uuid
        ),
    }
}

/// `namespace/name` of a namespaced object.
fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name.to_owned(),
    }
}

impl Observed {
    /// Facts in a GpuNode's status not offered before: one sample per GPU whose sample time
    /// changed, and a health transition per GPU whose state or transition time changed.
    ///
    /// A GPU seen for the first time yields a transition only when it is not Healthy: every GPU
    /// starts Healthy, and a "recovered" fact needs a state to recover from. A sample needs a
    /// time (`sampledAt`, else the heartbeat); without one it could not be keyed, so it is not
    /// recorded.
    pub fn gpu_node(&mut self, gpu_node: &GpuNode, now_ms: i64) -> Vec<Fact> {
        let Some(status) = &gpu_node.status else {
            return Vec::new();
        };
        let node = gpu_node.name_any();
        let heartbeat_ms = status
            .last_heartbeat_time
            .as_ref()
            .map(|time| millis(&time.0));
        let mut facts = Vec::new();
        for device in &status.gpus {
            let sampled_ms = device
                .telemetry
                .sampled_at
                .as_ref()
                .map(|time| millis(&time.0))
                .or(heartbeat_ms);
            if let Some(at_ms) = sampled_ms {
                // Only the time last offered is skipped (a re-list replays the current
                // status): an older time from a second writer is still a fact, and if it was
                // stored already its key makes the write a no-op.
                let unseen = self.sampled.get(&device.uuid) != Some(&at_ms);
                if unseen {
                    self.sampled.insert(device.uuid.clone(), at_ms);
                    facts.push(Fact::Sample(sample_of(&node, device, at_ms)));
                }
            }
            let transition_ms = device
                .health
                .last_transition_time
                .as_ref()
                .map(|time| millis(&time.0));
            let current = (device.health.state, transition_ms);
            let previous = self.health.insert(device.uuid.clone(), current);
            let changed = match previous {
                Some(previous) => previous != current,
                None => device.health.state != HealthState::Healthy,
            };
            if changed {
                facts.push(Fact::Event(health_transition(
                    &node,
                    device,
                    previous.map(|(state, _)| state),
                    transition_ms,
                    now_ms,
                )));
            }
        }
        facts
    }

    /// Forgets a deleted GpuNode's GPUs (a GPU moved to another node starts afresh there).
    pub fn forget_gpu_node(&mut self, gpu_node: &GpuNode) {
        for device in gpu_node.status.iter().flat_map(|status| &status.gpus) {
            self.sampled.remove(&device.uuid);
            self.health.remove(&device.uuid);
        }
    }

    /// Placements in an InferenceDeployment's status not offered before. The status carries no
    /// decision time, so a placement is stamped with the time the recorder first saw it
    /// (`now_ms`); its key leaves the time out, so a later sighting changes nothing.
    pub fn deployment(&mut self, deployment: &InferenceDeployment, now_ms: i64) -> Vec<Fact> {
        let key = qualified(deployment.namespace().as_deref(), &deployment.name_any());
        let Some(status) = &deployment.status else {
            return Vec::new();
        };
        let offered = self.placements.entry(key.clone()).or_default();
        let mut facts = Vec::new();
        for placement in &status.placements {
            let id = format!(
                "{key}/{}@{}/{}",
                placement.pod,
                placement.node,
                placement.gpu_uuids.join(",")
            );
            if !offered.insert(id.clone()) {
                continue;
            }
            let score = placement
                .score
                .map_or_else(String::new, |score| format!(", score {score:.3}"));
            facts.push(Fact::Placement(PlacementRecord {
                id,
                at_ms: now_ms,
                deployment: key.clone(),
                replica: placement.pod.clone(),
                outcome: "Placed".to_owned(),
                node: Some(placement.node.clone()),
                gpu_uuids: placement.gpu_uuids.clone(),
                score_total: placement.score,
                detail: serde_json::to_value(&placement.score_breakdown)
                    .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new())),
                message: format!(
                    "{} on {} (GPUs {}){score}",
                    placement.pod,
                    placement.node,
                    placement.gpu_uuids.join(", ")
                ),
            }));
        }
        facts
    }

    /// Forgets a deleted deployment's placements.
    pub fn forget_deployment(&mut self, deployment: &InferenceDeployment) {
        let key = qualified(deployment.namespace().as_deref(), &deployment.name_any());
        self.placements.remove(&key);
    }

    /// The fact of a Kubernetes Event, unless this recorder offered the same occurrence (UID
    /// and series count) already. Every later count of a series is a new occurrence.
    pub fn event(&mut self, event: &Event, now_ms: i64) -> Option<Fact> {
        let uid = event.metadata.uid.clone()?;
        let count = event.series.as_ref().map_or(1, |series| series.count);
        if self.events.get(&uid).is_some_and(|&seen| seen >= count) {
            return None;
        }
        self.events.insert(uid.clone(), count);
        let at_ms = event
            .series
            .as_ref()
            .map(|series| millis(&series.last_observed_time.0))
            .or_else(|| event.event_time.as_ref().map(|time| millis(&time.0)))
            .or_else(|| {
                event
                    .deprecated_last_timestamp
                    .as_ref()
                    .map(|time| millis(&time.0))
            })
            .or_else(|| {
                event
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|time| millis(&time.0))
            })
            .unwrap_or(now_ms);
        let regarding = event.regarding.clone().unwrap_or_default();
        let note = event.note.clone().unwrap_or_default();
        Some(Fact::Event(FleetEvent {
            id: format!("{uid}:{count}"),
            at_ms,
            severity: event.type_.clone().unwrap_or_else(|| "Normal".to_owned()),
            reason: event.reason.clone().unwrap_or_default(),
            object_kind: regarding.kind.unwrap_or_default(),
            object_name: qualified(
                regarding.namespace.as_deref(),
                regarding.name.as_deref().unwrap_or_default(),
            ),
            gpu_uuid: None,
            message: if count > 1 {
                format!("{note} (occurrence {count})")
            } else {
                note
            },
        }))
    }

    /// Forgets an expired or deleted Event.
    pub fn forget_event(&mut self, event: &Event) {
        if let Some(uid) = &event.metadata.uid {
            self.events.remove(uid);
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders of the watched objects, shared by the recorder's unit tests.

    use gpufleet_api::gpu_node::{GpuHealth, GpuNodeStatus, GpuTelemetry, HealthReason};
    use gpufleet_api::inference_deployment::ReplicaPlacement;
    use gpufleet_api::{GpuNodeSpec, InferenceDeploymentStatus};
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::EventSeries;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    use std::collections::BTreeMap;

    use super::*;

    pub(crate) fn time(ms: i64) -> Time {
        Time(Timestamp::from_millisecond(ms).expect("valid time"))
    }

    pub(crate) fn device(index: u32, state: HealthState, transition_ms: Option<i64>) -> GpuDevice {
        GpuDevice {
            index,
            uuid: format!("GPU-rec-{index}"),
            product: "NVIDIA-H100-80GB-HBM3".to_owned(),
            memory_total_mib: 81_559,
            telemetry: GpuTelemetry {
                memory_used_mib: Some(1_000 + u64::from(index)),
                utilization_percent: Some(40),
                temperature_celsius: Some(55),
                power_watts: Some(300.0),
                ..GpuTelemetry::default()
            },
            health: GpuHealth {
                state,
                reasons: if state == HealthState::Healthy {
                    Vec::new()
                } else {
                    vec![HealthReason {
                        code: "FellOffTheBus".to_owned(),
                        message: "Xid 79".to_owned(),
                        severity: state,
                        needs_reset: true,
                        since: None,
                    }]
                },
                last_transition_time: transition_ms.map(time),
            },
            ..GpuDevice::default()
        }
    }

    pub(crate) fn gpu_node(name: &str, heartbeat_ms: i64, gpus: Vec<GpuDevice>) -> GpuNode {
        let mut node = GpuNode::new(
            name,
            GpuNodeSpec {
                node_name: name.to_owned(),
            },
        );
        node.status = Some(GpuNodeStatus {
            gpus,
            last_heartbeat_time: Some(time(heartbeat_ms)),
            ..GpuNodeStatus::default()
        });
        node
    }

    pub(crate) fn placed(pod: &str, node: &str, gpus: &[&str]) -> ReplicaPlacement {
        ReplicaPlacement {
            pod: pod.to_owned(),
            node: node.to_owned(),
            gpu_uuids: gpus.iter().map(|gpu| (*gpu).to_owned()).collect(),
            score: Some(0.5),
            score_breakdown: BTreeMap::from([("fragmentation".to_owned(), -0.1)]),
        }
    }

    pub(crate) fn deployment(name: &str, placements: Vec<ReplicaPlacement>) -> InferenceDeployment {
        let spec = gpufleet_api::InferenceDeploymentSpec {
            replicas: i32::try_from(placements.len()).unwrap_or(i32::MAX),
            gpu: gpufleet_api::inference_deployment::GpuRequirement::default(),
            placement: gpufleet_api::inference_deployment::PlacementPolicy::default(),
            disruption: gpufleet_api::inference_deployment::DisruptionBudget::default(),
            template: Default::default(),
        };
        let mut deployment = InferenceDeployment::new(name, spec);
        deployment.metadata.namespace = Some("ml".to_owned());
        deployment.status = Some(InferenceDeploymentStatus {
            placements,
            ..InferenceDeploymentStatus::default()
        });
        deployment
    }

    pub(crate) fn event(uid: &str, count: Option<i32>, at_ms: i64) -> Event {
        Event {
            metadata: kube::api::ObjectMeta {
                uid: Some(uid.to_owned()),
                name: Some(format!("llm.{uid}")),
                namespace: Some("ml".to_owned()),
                ..kube::api::ObjectMeta::default()
            },
            event_time: Some(MicroTime(
                Timestamp::from_millisecond(at_ms).expect("valid time"),
            )),
            series: count.map(|count| EventSeries {
                count,
                last_observed_time: MicroTime(
                    Timestamp::from_millisecond(at_ms + 1_000 * i64::from(count))
                        .expect("valid time"),
                ),
            }),
            reason: Some("Placed".to_owned()),
            note: Some("llm-0 on node-a".to_owned()),
            type_: Some("Normal".to_owned()),
            reporting_controller: Some("gpufleet-operator".to_owned()),
            regarding: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                namespace: Some("ml".to_owned()),
                name: Some("llm-0".to_owned()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn events(facts: &[Fact]) -> Vec<&FleetEvent> {
        facts
            .iter()
            .filter_map(|fact| match fact {
                Fact::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_sample_is_offered_once_per_sample_time_and_a_relist_offers_nothing() {
        let mut observed = Observed::default();
        let node = gpu_node(
            "rec-a",
            10_000,
            vec![
                device(0, HealthState::Healthy, None),
                device(1, HealthState::Healthy, None),
            ],
        );
        let first = observed.gpu_node(&node, 0);
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|fact| fact.kind() == FactKind::Sample && fact.at_ms() == 10_000)
        );
        assert!(
            observed.gpu_node(&node, 0).is_empty(),
            "the same status again"
        );

        let later = gpu_node(
            "rec-a",
            12_000,
            vec![
                device(0, HealthState::Healthy, None),
                device(1, HealthState::Healthy, None),
            ],
        );
        assert_eq!(observed.gpu_node(&later, 0).len(), 2);
        assert!(observed.gpu_node(&later, 0).is_empty(), "a re-list");
        assert_eq!(
            observed.gpu_node(&node, 0).len(),
            2,
            "an older status written after a newer one (two writers) is still offered"
        );
    }

    #[test]
    fn sampled_at_wins_over_the_heartbeat_so_a_heartbeat_alone_is_no_new_sample() {
        let mut observed = Observed::default();
        let mut gpu = device(0, HealthState::Healthy, None);
        gpu.telemetry.sampled_at = Some(time(5_000));
        let first = observed.gpu_node(&gpu_node("rec-a", 6_000, vec![gpu.clone()]), 0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].at_ms(), 5_000);
        assert!(
            observed
                .gpu_node(&gpu_node("rec-a", 9_000, vec![gpu]), 0)
                .is_empty()
        );
    }

    #[test]
    fn health_transitions_are_facts_keyed_by_state_and_transition_time() {
        let mut observed = Observed::default();
        let healthy = gpu_node("rec-a", 1_000, vec![device(0, HealthState::Healthy, None)]);
        assert!(events(&observed.gpu_node(&healthy, 0)).is_empty());

        let broken = gpu_node(
            "rec-a",
            2_000,
            vec![device(0, HealthState::Unhealthy, Some(1_500))],
        );
        let facts = observed.gpu_node(&broken, 0);
        let transitions = events(&facts);
        assert_eq!(transitions.len(), 1);
        assert_eq!(transitions[0].reason, "GpuUnhealthy");
        assert_eq!(transitions[0].id, "health:GPU-rec-0:2:1500");
        assert_eq!(transitions[0].at_ms, 1_500);
        assert!(transitions[0].message.contains("Healthy → Unhealthy"));
        assert!(transitions[0].message.contains("FellOffTheBus"));

        let recovered = gpu_node(
            "rec-a",
            3_000,
            vec![device(0, HealthState::Healthy, Some(2_500))],
        );
        let facts = observed.gpu_node(&recovered, 0);
        assert_eq!(events(&facts)[0].reason, "GpuRecovered");

        // A fresh recorder meeting an Unhealthy GPU records the transition with the same key.
        let mut fresh = Observed::default();
        let again = fresh.gpu_node(&broken, 0);
        assert_eq!(events(&again)[0].id, "health:GPU-rec-0:2:1500");
    }

    #[test]
    fn placements_are_offered_once_and_a_move_is_a_new_fact() {
        let mut observed = Observed::default();
        let first = deployment("llm", vec![placed("llm-0", "node-a", &["GPU-1"])]);
        let facts = observed.deployment(&first, 7_000);
        assert_eq!(facts.len(), 1);
        let Fact::Placement(record) = &facts[0] else {
            panic!("a placement, got {facts:?}");
        };
        assert_eq!(record.id, "ml/llm/llm-0@node-a/GPU-1");
        assert_eq!(record.deployment, "ml/llm");
        assert_eq!(record.at_ms, 7_000);
        assert_eq!(record.detail["fragmentation"], -0.1);
        assert!(observed.deployment(&first, 8_000).is_empty());

        let moved = deployment(
            "llm",
            vec![
                placed("llm-0", "node-b", &["GPU-2"]),
                placed("llm-1", "node-a", &["GPU-1"]),
            ],
        );
        assert_eq!(observed.deployment(&moved, 9_000).len(), 2);
        observed.forget_deployment(&moved);
        assert_eq!(observed.deployment(&moved, 9_000).len(), 2);
    }

    #[test]
    fn every_occurrence_of_an_event_series_is_one_fact() {
        let mut observed = Observed::default();
        let Some(Fact::Event(single)) = observed.event(&event("u1", None, 4_000), 0) else {
            panic!("a fact");
        };
        assert_eq!(single.id, "u1:1");
        assert_eq!(single.at_ms, 4_000);
        assert_eq!(single.object_kind, "Pod");
        assert_eq!(single.object_name, "ml/llm-0");
        assert!(observed.event(&event("u1", None, 4_000), 0).is_none());

        let Some(Fact::Event(third)) = observed.event(&event("u1", Some(3), 4_000), 0) else {
            panic!("a fact");
        };
        assert_eq!(third.id, "u1:3");
        assert_eq!(third.at_ms, 7_000);
        assert!(third.message.ends_with("(occurrence 3)"));
        assert!(observed.event(&event("u1", Some(2), 4_000), 0).is_none());
        assert!(observed.event(&event("u1", Some(3), 4_000), 0).is_none());
    }
}
