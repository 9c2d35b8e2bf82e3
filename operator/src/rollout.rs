//! What a reconcile should do to a deployment's replicas, within its disruption budget (pure).
//!
//! Replacing a failed replica is "surge first": a replacement is created (while the surge
//! allows) and a failed replica that is still Ready is deleted only once enough replicas are
//! Ready that the deletion keeps the deployment within `maxUnavailable`; a failed replica that
//! is not Ready serves nothing and goes at once. With `maxSurge: 0` the failed
//! replica goes first, which `maxUnavailable >= 1` allows (the CRD forbids both being 0).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One existing replica as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// The Pod's name.
    pub name: String,
    /// The Pod is Ready.
    pub ready: bool,
    /// Why the replica must move (failed GPU or node), if it must.
    pub failure: Option<String>,
}

/// The disruption budget resolved against the desired replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Replicas that may be missing from `desired` Ready ones.
    pub max_unavailable: u32,
    /// Replicas that may exist above `desired`.
    pub max_surge: u32,
}

impl Budget {
    /// Resolves `maxUnavailable` (percentages round down) and `maxSurge` (round up), as a
    /// Deployment does. Should both come out 0, one unavailable replica is allowed so that a
    /// failed replica can always be replaced.
    #[must_use]
    pub fn resolve(desired: u32, max_unavailable: &IntOrString, max_surge: &IntOrString) -> Self {
        let resolve = |value: &IntOrString, round_up: bool| -> u32 {
            match value {
                IntOrString::Int(count) => u32::try_from(*count).unwrap_or(0),
                IntOrString::String(text) => {
                    let percent: u64 = text.trim_end_matches('%').trim().parse().unwrap_or(0);
                    let scaled = u64::from(desired) * percent;
                    let count = if round_up {
                        scaled.div_ceil(100)
                    } else {
                        scaled / 100
                    };
                    u32::try_from(count).unwrap_or(u32::MAX)
                }
            }
        };
        let mut budget = Budget {
            max_unavailable: resolve(max_unavailable, false),
            max_surge: resolve(max_surge, true),
        };
        if budget.max_unavailable == 0 && budget.max_surge == 0 {
            budget.max_unavailable = 1;
        }
        budget
    }
}

/// The actions of one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New replicas to place and create.
    pub create: u32,
    /// Failed replicas to delete now, with the reason.
    pub delete_failed: Vec<(String, String)>,
    /// Healthy replicas to remove for a scale-down (the engine chooses which).
    pub scale_down: u32,
    /// Failed replicas kept for now because deleting them would break the budget.
    pub held_back: u32,
}

/// Decides creations and deletions for `desired` replicas given the existing ones.
#[must_use]
pub fn plan(desired: u32, replicas: &[ReplicaState], budget: Budget) -> Plan {
    let total = u32::try_from(replicas.len()).unwrap_or(u32::MAX);
    let healthy =
        u32::try_from(replicas.iter().filter(|r| r.failure.is_none()).count()).unwrap_or(u32::MAX);
    let mut ready = u32::try_from(replicas.iter().filter(|r| r.ready).count()).unwrap_or(u32::MAX);

    let mut result = Plan::default();
    if healthy > desired {
        result.scale_down = healthy - desired;
    }
    // A failed replica that is not Ready serves nothing: it goes at once. One that is still
    // Ready (a GPU graded Unhealthy under a running server, a node whose kubelet stopped
    // reporting) still counts as available, like any Ready Pod for a Deployment or a PDB: it
    // goes only while the Ready replicas left stay within `maxUnavailable`, i.e. once its
    // replacement is up. Counting Ready failed replicas is what lets several failed replicas
    // on one node leave one by one through the surge instead of waiting on each other.
    let min_available = desired.saturating_sub(budget.max_unavailable);
    let mut deleted = 0;
    let (ready_failed, not_ready_failed): (Vec<&ReplicaState>, Vec<&ReplicaState>) = replicas
        .iter()
        .filter(|r| r.failure.is_some())
        .partition(|r| r.ready);
    for replica in not_ready_failed {
        let why = replica.failure.clone().unwrap_or_default();
        result.delete_failed.push((replica.name.clone(), why));
        deleted += 1;
    }
    for replica in ready_failed {
        if ready > min_available {
            let why = replica.failure.clone().unwrap_or_default();
            result.delete_failed.push((replica.name.clone(), why));
            deleted += 1;
            ready -= 1;
        } else {
            result.held_back += 1;
        }
    }
    let missing = desired.saturating_sub(healthy);
    let room = (desired + budget.max_surge).saturating_sub(total - deleted);
    result.create = missing.min(room);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn replica(name: &str, ready: bool, failed: bool) -> ReplicaState {
        ReplicaState {
            name: name.into(),
            ready,
            failure: failed.then(|| "GPU 3 is Unhealthy".to_owned()),
        }
    }

    const SURGE_ONE: Budget = Budget {
        max_unavailable: 0,
        max_surge: 1,
    };

    #[test]
    fn budget_percentages_round_like_a_deployment() {
        let budget = Budget::resolve(
            10,
            &IntOrString::String("25%".into()),
            &IntOrString::String("25%".into()),
        );
        assert_eq!(
            budget,
            Budget {
                max_unavailable: 2,
                max_surge: 3
            }
        );
        let zero = Budget::resolve(3, &IntOrString::Int(0), &IntOrString::String("0%".into()));
        assert_eq!(
            zero,
            Budget {
                max_unavailable: 1,
                max_surge: 0
            }
        );
    }

    #[test]
    fn a_failed_replica_is_replaced_first_and_deleted_once_the_replacement_is_ready() {
        let before = [
            replica("a", true, false),
            replica("b", true, false),
            replica("c", true, true),
        ];
        let step = plan(3, &before, SURGE_ONE);
        assert_eq!(
            step,
            Plan {
                create: 1,
                delete_failed: vec![],
                scale_down: 0,
                held_back: 1
            }
        );

        let replacement_starting = [
            replica("a", true, false),
            replica("b", true, false),
            replica("c", true, true),
            replica("d", false, false),
        ];
        let step = plan(3, &replacement_starting, SURGE_ONE);
        assert_eq!(step.create, 0);
        assert_eq!(step.held_back, 1);

        let replacement_ready = [
            replica("a", true, false),
            replica("b", true, false),
            replica("c", true, true),
            replica("d", true, false),
        ];
        let step = plan(3, &replacement_ready, SURGE_ONE);
        assert_eq!(step.delete_failed.len(), 1);
        assert_eq!(step.create, 0);
    }

    #[test]
    fn several_failed_replicas_leave_one_by_one_through_the_surge() {
        // A node went NotReady under three replicas whose Pods still say Ready. Each step
        // applies the plan and lets the new replicas become Ready.
        let mut replicas = vec![
            replica("a", true, true),
            replica("b", true, true),
            replica("c", true, true),
        ];
        let mut created = 0;
        for _ in 0..10 {
            let step = plan(3, &replicas, SURGE_ONE);
            if step.create == 0 && step.delete_failed.is_empty() {
                break;
            }
            replicas.retain(|r| !step.delete_failed.iter().any(|(gone, _)| *gone == r.name));
            assert!(
                replicas.iter().filter(|r| r.ready).count() >= 3,
                "{replicas:?}"
            );
            for _ in 0..step.create {
                replicas.push(replica(&format!("new{created}"), true, false));
                created += 1;
            }
            assert!(replicas.len() <= 4, "surge exceeded: {replicas:?}");
        }
        assert_eq!(created, 3);
        assert_eq!(replicas.len(), 3);
        assert!(replicas.iter().all(|r| r.failure.is_none()));
    }

    #[test]
    fn a_failed_replica_that_is_not_ready_goes_at_once() {
        let step = plan(
            2,
            &[replica("a", true, false), replica("b", false, true)],
            SURGE_ONE,
        );
        assert_eq!(step.delete_failed.len(), 1);
        assert_eq!(step.create, 1);
    }

    #[test]
    fn without_surge_the_failed_replica_goes_first() {
        let budget = Budget {
            max_unavailable: 1,
            max_surge: 0,
        };
        let step = plan(
            2,
            &[replica("a", true, false), replica("b", true, true)],
            budget,
        );
        assert_eq!(step.delete_failed.len(), 1);
        assert_eq!(step.create, 1);
    }

    #[test]
    fn scaling_creates_and_removes_the_difference() {
        let up = plan(5, &[replica("a", true, false)], SURGE_ONE);
        assert_eq!(up.create, 4);
        let down = plan(
            1,
            &[replica("a", true, false), replica("b", false, false)],
            SURGE_ONE,
        );
        assert_eq!((down.create, down.scale_down), (0, 1));
    }

    proptest! {
        /// Whatever the state, executing the plan never leaves fewer healthy Ready replicas
        /// than the budget allows (unless there were fewer to begin with), and never exceeds
        /// desired + surge replicas.
        #[test]
        fn plans_respect_the_budget(
            desired in 0u32..8,
            states in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..12),
            max_unavailable in 0u32..3,
            max_surge in 0u32..3,
        ) {
            let budget = Budget { max_unavailable, max_surge: if max_unavailable == 0 { max_surge.max(1) } else { max_surge } };
            let replicas: Vec<ReplicaState> = states
                .iter()
                .enumerate()
                .map(|(i, (ready, failed))| replica(&format!("r{i}"), *ready, *failed))
                .collect();
            let step = plan(desired, &replicas, budget);
            let total = replicas.len() as u32;
            let after = total - step.delete_failed.len() as u32 + step.create;
            let healthy = replicas.iter().filter(|r| r.failure.is_none()).count() as u32;
            prop_assert!(after <= (desired + budget.max_surge).max(total - step.delete_failed.len() as u32));
            prop_assert!(healthy + step.create <= desired.max(healthy));
            // Deleting never takes the Ready count below the budget's minimum (or below where
            // it already was).
            let ready_before = replicas.iter().filter(|r| r.ready).count() as u32;
            let ready_deleted = step
                .delete_failed
                .iter()
                .filter(|(name, _)| replicas.iter().any(|r| &r.name == name && r.ready))
                .count() as u32;
            let min_available = desired.saturating_sub(budget.max_unavailable);
            prop_assert!(ready_before - ready_deleted >= min_available.min(ready_before));
            // Deleting failed replicas never touches healthy Ready ones.
            for (name, _) in &step.delete_failed {
                prop_assert!(replicas.iter().any(|r| &r.name == name && r.failure.is_some()));
            }
        }
    }
}
