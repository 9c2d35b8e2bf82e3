//! Leader election on a `coordination.k8s.io/v1` Lease, so only one operator replica writes.
//!
//! The holder renews the Lease every `retry_period`; another replica takes it over once it has
//! not been renewed for `lease_duration`. Every write uses the Lease's `resourceVersion`, so two
//! candidates racing for an expired Lease cannot both win. A leader that fails to renew before
//! its Lease would expire stops leading (the binary exits, and the restarted process rebuilds
//! its state from the cluster like any new replica).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::info;

use crate::{Error, Result};

/// What a candidate should do with the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it over.
    TakeOver,
    /// Someone else holds it and renews it: wait.
    Wait,
}

/// Decides from the Lease's spec (pure).
#[must_use]
pub fn lease_action(
    spec: &LeaseSpec,
    identity: &str,
    now: Timestamp,
    default_duration: Duration,
) -> LeaseAction {
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => LeaseAction::Renew,
        None | Some("") => LeaseAction::TakeOver,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .map_or(default_duration, |seconds| {
                    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
                });
            let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
                let deadline =
                    renewed.0 + SignedDuration::try_from(duration).unwrap_or(SignedDuration::ZERO);
                deadline < now
            });
            if expired {
                LeaseAction::TakeOver
            } else {
                LeaseAction::Wait
            }
        }
    }
}

/// One candidate for the leadership of the operator.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    retry_period: Duration,
}

impl LeaderElector {
    /// A candidate `identity` for Lease `namespace/name`.
    #[must_use]
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Sets how long a Lease lives without renewal and how often candidates try.
    #[must_use]
    pub fn with_timing(mut self, lease_duration: Duration, retry_period: Duration) -> Self {
        self.lease_duration = lease_duration;
        self.retry_period = retry_period;
        self
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::LeaderElection {
            lease: self.name.clone(),
            source,
        }
    }

    /// One attempt: returns whether this candidate holds the Lease afterwards.
    ///
    /// # Errors
    /// [`Error::LeaderElection`] for API errors other than a lost race.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let duration_seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(self.error(error)),
            };
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        match lease_action(&spec, &self.identity, now, self.lease_duration) {
            LeaseAction::Wait => return Ok(false),
            LeaseAction::Renew => {
                spec.renew_time = Some(MicroTime(now));
            }
            LeaseAction::TakeOver => {
                info!(previous = ?spec.holder_identity, identity = %self.identity, "taking over the leader Lease");
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(duration_seconds);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        lease.spec = Some(spec);
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail with 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(self.error(error)),
        }
    }

    /// Waits until this candidate leads.
    ///
    /// # Errors
    /// Never for API errors (they are retried); only for a Lease that cannot be encoded.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Keeps renewing; returns when leadership is lost (another holder, or no successful
    /// renewal for a whole Lease duration).
    pub async fn hold(&self) -> Error {
        let mut last_renewal = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = std::time::Instant::now(),
                Ok(false) => {
                    return Error::LostLeadership {
                        lease: self.name.clone(),
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, "renewing the leader Lease failed");
                    // Stop before the Lease can expire, so two leaders never overlap.
                    if last_renewal.elapsed() + self.retry_period >= self.lease_duration {
                        return Error::LostLeadership {
                            lease: self.name.clone(),
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_seconds_ago: i64) -> (LeaseSpec, Timestamp) {
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let renewed = now - SignedDuration::from_secs(renewed_seconds_ago);
        (
            LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(10),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            },
            now,
        )
    }

    #[test]
    fn candidates_renew_their_own_wait_for_live_ones_and_take_expired_ones() {
        let default = Duration::from_secs(10);
        let (own, now) = spec(Some("a"), 3);
        assert_eq!(lease_action(&own, "a", now, default), LeaseAction::Renew);
        assert_eq!(lease_action(&own, "b", now, default), LeaseAction::Wait);
        let (expired, now) = spec(Some("a"), 11);
        assert_eq!(
            lease_action(&expired, "b", now, default),
            LeaseAction::TakeOver
        );
        let (vacant, now) = spec(None, 0);
        assert_eq!(
            lease_action(&vacant, "b", now, default),
            LeaseAction::TakeOver
        );
    }
}
