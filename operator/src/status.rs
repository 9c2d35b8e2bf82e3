//! The status an InferenceDeployment reports (pure): counts, placements and the conditions
//! `Available`, `Progressing` and `Degraded`, each with `observedGeneration`.

use gpufleet_api::inference_deployment::{InferenceDeploymentStatus, ReplicaPlacement};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What a reconcile observed and did, the input of [`compute`].
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// `metadata.generation` of the deployment.
    pub generation: Option<i64>,
    /// Desired replicas.
    pub desired: u32,
    /// Minimum Ready replicas the budget requires.
    pub min_available: u32,
    /// Replicas that exist and are not terminating.
    pub replicas: u32,
    /// Of those, Ready and on healthy GPUs.
    pub ready: u32,
    /// Replicas that could not be placed this time.
    pub unplaced: u32,
    /// Why the first unplaceable replica could not be placed.
    pub unplaceable_reason: Option<String>,
    /// Replicas on failed GPUs or nodes, waiting for their replacement.
    pub failed: u32,
    /// Where the replicas sit.
    pub placements: Vec<ReplicaPlacement>,
    /// The label selector of the Pods.
    pub selector: String,
}

fn condition(
    previous: &[Condition],
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status flips, as Kubernetes conventions require.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status for `observation`, keeping transition times of unchanged conditions.
#[must_use]
pub fn compute(
    observation: &Observation,
    previous: Option<&InferenceDeploymentStatus>,
    now: &Time,
) -> InferenceDeploymentStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let o = observation;
    let available = o.ready >= o.min_available;
    let settled = o.ready >= o.desired && o.replicas == o.desired && o.unplaced == 0;
    let degraded = o.unplaced > 0 || o.failed > 0;
    let conditions = vec![
        condition(
            previous_conditions,
            "Available",
            available,
            if available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            format!(
                "{} of {} replicas Ready (at least {} required)",
                o.ready, o.desired, o.min_available
            ),
            o.generation,
            now,
        ),
        condition(
            previous_conditions,
            "Progressing",
            !settled,
            if settled {
                "ReplicasSettled"
            } else {
                "ReplicasUpdating"
            },
            if settled {
                format!("all {} replicas placed and Ready", o.desired)
            } else {
                format!(
                    "{} replicas exist, {} Ready, {} wanted",
                    o.replicas, o.ready, o.desired
                )
            },
            o.generation,
            now,
        ),
        condition(
            previous_conditions,
            "Degraded",
            degraded,
            if o.unplaced > 0 {
                "ReplicasUnplaceable"
            } else if o.failed > 0 {
                "ReplicasOnFailedGpus"
            } else {
                "AsExpected"
            },
            if o.unplaced > 0 {
                format!(
                    "{} replicas cannot be placed: {}",
                    o.unplaced,
                    o.unplaceable_reason.clone().unwrap_or_default()
                )
            } else if o.failed > 0 {
                format!(
                    "{} replicas on failed GPUs or nodes are being replaced",
                    o.failed
                )
            } else {
                "no replica is unplaced or on a failed GPU".to_owned()
            },
            o.generation,
            now,
        ),
    ];
    InferenceDeploymentStatus {
        observed_generation: o.generation,
        replicas: i32::try_from(o.replicas).unwrap_or(i32::MAX),
        ready_replicas: i32::try_from(o.ready).unwrap_or(i32::MAX),
        unplaced_replicas: i32::try_from(o.unplaced).unwrap_or(i32::MAX),
        selector: Some(o.selector.clone()),
        conditions,
        placements: o.placements.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("time"))
    }

    #[test]
    fn unplaceable_replicas_degrade_with_the_reason_and_transitions_keep_their_time() {
        let observation = Observation {
            generation: Some(3),
            desired: 4,
            min_available: 4,
            replicas: 3,
            ready: 3,
            unplaced: 1,
            unplaceable_reason: Some("0/8 nodes are available: 8 insufficient GPU memory.".into()),
            selector: "gpufleet.io/deployment=llm".into(),
            ..Observation::default()
        };
        let first = compute(&observation, None, &at(100));
        let degraded = first
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        assert_eq!(degraded.status, "True");
        assert!(degraded.message.contains("insufficient GPU memory"));
        assert_eq!(degraded.observed_generation, Some(3));
        let available = first
            .conditions
            .iter()
            .find(|c| c.type_ == "Available")
            .expect("Available");
        assert_eq!(available.status, "False");

        let again = compute(&observation, Some(&first), &at(200));
        let degraded = again
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        assert_eq!(degraded.last_transition_time, at(100));
        assert_eq!(again.unplaced_replicas, 1);
    }
}
