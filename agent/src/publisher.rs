//! Publishing to Kubernetes: the node's `GpuNode` (server-side apply with one field manager,
//! owned by the Node) and GPU Feature Discovery labels on the Node, unless GFD owns them.
//!
//! ```text
//! SharedView ─(every 250 ms)─► Fingerprint ─► PublishPolicy::decide ─► apply GpuNode status
//!                                                                   └─► apply Node labels (on change)
//! ```
//!
//! Reads: the Node (its uid for the owner reference, and who manages the GFD labels). Writes:
//! `gpunodes/<node>` and `gpunodes/<node>/status`, and the Node's `nvidia.com/*` labels. A failed
//! write is retried with exponential backoff (500 ms doubling to 30 s); the agent never exits on
//! an API error. In steady state this is one request per heartbeat (30 s).
//!
//! Holding the heartbeat under load: the next heartbeat is due one period after the *start* of
//! the last successful write (the time its `lastHeartbeatTime` carries), so a slow apiserver
//! does not push every later beat back by its latency; a write that hangs is abandoned after
//! [`WRITE_TIMEOUT`] and retried; and retries wait a jittered backoff (between half and all of
//! it, fixed per node and attempt), so after an outage a thousand agents do not come back in
//! the same instant. The steady period itself is not jittered: agents start at different
//! moments and keep their phase, and an early jitter would break the ≤ 1 write per node per
//! 30 s budget.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gpufleet_api::gpu_node::GpuNode;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::health::HealthState;
use crate::reading::unix_millis_now;
use crate::server::SharedView;
use crate::status::{Fingerprint, PublishPolicy, PublishReason, gfd_labels, gpu_node_status};
use crate::{Error, Result};

/// The one field manager the agent applies with.
pub const FIELD_MANAGER: &str = "gpufleet-agent";

/// The GFD label whose manager decides whether GFD runs on this node.
const GFD_PROBE_LABEL: &str = "nvidia.com/gpu.product";

/// Backoff bounds after a failed write.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Longest a write (object, status, labels) may take before it is abandoned and retried: with
/// the 30 s heartbeat, a hung request still leaves a retry well inside the operator's 90 s
/// staleness limit.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A fraction in [0.5, 1) of a backoff, fixed by node and attempt: spreads the retries of many
/// agents that failed together (an apiserver restart) over half the backoff window.
pub fn jittered(backoff: Duration, node: &str, attempt: u32) -> Duration {
    let hash = node
        .bytes()
        .chain(attempt.to_le_bytes())
        .fold(0xCBF2_9CE4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01B3)
        });
    // 1,024 steps between half and all of the backoff.
    let step = u32::try_from(hash % 1024).unwrap_or(0);
    backoff / 2 + backoff / 2 / 1024 * step
}

/// Whether a field manager other than the agent owns `label` on `node`.
pub fn label_owned_by_another(node: &Node, label: &str) -> bool {
    let key = format!("f:{label}");
    node.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() != Some(FIELD_MANAGER))
        .filter_map(|entry| entry.fields_v1.as_ref())
        .any(|fields| {
            fields
                .0
                .get("f:metadata")
                .and_then(|metadata| metadata.get("f:labels"))
                .and_then(|labels| labels.get(&key))
                .is_some()
        })
}

/// The owner reference that makes the GpuNode go with its Node.
pub fn owner_reference(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: None,
    })
}

/// Writes one node's GpuNode and labels.
pub struct Publisher {
    gpu_nodes: Api<GpuNode>,
    nodes: Api<Node>,
    node_name: String,
    source: String,
    policy: PublishPolicy,
    manage_labels: bool,
    owner: Option<OwnerReference>,
    object_applied: bool,
    labels_applied: Option<BTreeMap<String, String>>,
    last: Option<(Fingerprint, Instant)>,
    transitions: BTreeMap<u32, (HealthState, u64)>,
    backoff: Duration,
    attempt: u32,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Publisher")
            .field("node_name", &self.node_name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Nothing was due.
    Idle,
    /// Waiting out a backoff.
    BackingOff,
    /// Wrote, for this reason.
    Published(PublishReason),
    /// A write failed; retried after the backoff.
    Failed,
}

impl Publisher {
    /// A publisher for `node_name`; `manage_labels` turns the GFD-style labels on.
    pub fn new(
        client: kube::Client,
        node_name: &str,
        source: &str,
        policy: PublishPolicy,
        manage_labels: bool,
    ) -> Self {
        Self {
            gpu_nodes: Api::all(client.clone()),
            nodes: Api::all(client),
            node_name: node_name.to_owned(),
            source: source.to_owned(),
            policy,
            manage_labels,
            owner: None,
            object_applied: false,
            labels_applied: None,
            last: None,
            transitions: BTreeMap::new(),
            backoff: FIRST_BACKOFF,
            attempt: 0,
            retry_at: None,
        }
    }

    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Reads the Node: its uid (owner reference) and whether GFD owns the labels.
    async fn read_node(&mut self) -> Result<()> {
        let node = self
            .nodes
            .get(&self.node_name)
            .await
            .map_err(|source| Error::ReadNode {
                node: self.node_name.clone(),
                source,
            })?;
        self.owner = owner_reference(&node);
        if self.manage_labels && label_owned_by_another(&node, GFD_PROBE_LABEL) {
            // GPU Feature Discovery runs here: its labels stay its own.
            self.manage_labels = false;
        }
        Ok(())
    }

    async fn apply_object(&mut self) -> Result<()> {
        if self.owner.is_none() {
            self.read_node().await?;
        }
        let object = json!({
            "apiVersion": "gpufleet.io/v1alpha1",
            "kind": "GpuNode",
            "metadata": {
                "name": self.node_name,
                "ownerReferences": self.owner.iter().collect::<Vec<_>>(),
            },
            "spec": { "nodeName": self.node_name },
        });
        self.gpu_nodes
            .patch(&self.node_name, &Self::params(), &Patch::Apply(object))
            .await
            .map_err(|source| Error::PublishGpuNode {
                node: self.node_name.clone(),
                source,
            })?;
        self.object_applied = true;
        Ok(())
    }

    async fn apply_status(&mut self, status: &gpufleet_api::gpu_node::GpuNodeStatus) -> Result<()> {
        let patch = json!({
            "apiVersion": "gpufleet.io/v1alpha1",
            "kind": "GpuNode",
            "status": status,
        });
        let result = self
            .gpu_nodes
            .patch_status(&self.node_name, &Self::params(), &Patch::Apply(patch))
            .await;
        if let Err(kube::Error::Api(response)) = &result
            && response.code == 404
        {
            // Deleted behind the agent's back: recreate on the next step.
            self.object_applied = false;
        }
        result.map(|_| ()).map_err(|source| Error::PublishGpuNode {
            node: self.node_name.clone(),
            source,
        })
    }

    async fn apply_labels(&mut self, labels: BTreeMap<String, String>) -> Result<()> {
        if !self.manage_labels || self.labels_applied.as_ref() == Some(&labels) || labels.is_empty()
        {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": self.node_name, "labels": labels },
        });
        let result = self
            .nodes
            .patch(
                &self.node_name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(patch),
            )
            .await;
        match result {
            Ok(_) => {
                self.labels_applied = Some(labels);
                Ok(())
            }
            // Another manager (GPU Feature Discovery) took the labels: leave them to it rather
            // than fight over them on every write.
            Err(kube::Error::Api(response)) if response.code == 409 => {
                tracing::info!(node = %self.node_name, "node labels belong to another field manager; leaving them");
                self.manage_labels = false;
                Ok(())
            }
            Err(source) => Err(Error::LabelNode {
                node: self.node_name.clone(),
                source,
            }),
        }
    }

    /// Remembers when each GPU's health state last changed (for `lastTransitionTime`).
    fn note_transitions(&mut self, fingerprint: &Fingerprint, now_ms: u64) -> BTreeMap<u32, u64> {
        for (index, state, _) in &fingerprint.health {
            let entry = self.transitions.entry(*index).or_insert((*state, now_ms));
            if entry.0 != *state {
                *entry = (*state, now_ms);
            }
        }
        self.transitions
            .iter()
            .map(|(index, (_, at))| (*index, *at))
            .collect()
    }

    /// Applies the object (first time, or after it was deleted), its status and the labels.
    async fn write(
        &mut self,
        status: &gpufleet_api::gpu_node::GpuNodeStatus,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        if !self.object_applied {
            self.apply_object().await?;
        }
        self.apply_status(status).await?;
        self.apply_labels(labels).await
    }

    /// Decides, and writes if due. After a failure the same decision comes again once the
    /// backoff has passed, because the last *published* fingerprint is unchanged.
    pub async fn step(&mut self, view: &SharedView) -> StepOutcome {
        let now = Instant::now();
        if self.retry_at.is_some_and(|retry_at| now < retry_at) {
            return StepOutcome::BackingOff;
        }
        let (fingerprint, reason, snapshot) = {
            let locked = view.lock().unwrap_or_else(PoisonError::into_inner);
            let fingerprint = Fingerprint::of(&locked);
            let last = self
                .last
                .as_ref()
                .map(|(last, at)| (last, now.duration_since(*at)));
            let Some(reason) = self.policy.decide(last, &fingerprint) else {
                return StepOutcome::Idle;
            };
            (fingerprint, reason, locked.clone())
        };
        let now_ms = unix_millis_now();
        let transitions = self.note_transitions(&fingerprint, now_ms);
        let status = gpu_node_status(&snapshot, &self.source, &transitions, now_ms);
        let labels = gfd_labels(&snapshot);
        let result = match tokio::time::timeout(WRITE_TIMEOUT, self.write(&status, labels)).await {
            Ok(result) => result,
            Err(_) => Err(Error::WriteTimedOut {
                node: self.node_name.clone(),
                after: WRITE_TIMEOUT,
            }),
        };
        let outcome = match &result {
            Ok(()) => {
                tracing::debug!(?reason, node = %self.node_name, "published GpuNode");
                // `now` is when this write started: the next heartbeat is due one period
                // after it, however long the write took.
                self.last = Some((fingerprint, now));
                self.backoff = FIRST_BACKOFF;
                self.attempt = 0;
                self.retry_at = None;
                StepOutcome::Published(reason)
            }
            Err(error) => {
                let wait = jittered(self.backoff, &self.node_name, self.attempt);
                tracing::warn!(%error, retry_in = ?wait, "publishing failed");
                self.retry_at = Some(Instant::now() + wait);
                self.attempt = self.attempt.saturating_add(1);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                StepOutcome::Failed
            }
        };
        let mut locked = view.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if result.is_ok() { "ok" } else { "error" };
        *locked.counters.publishes.entry(key.to_owned()).or_insert(0) += 1;
        if let Err(error) = result {
            locked.counters.last_publish_error = Some(error.to_string());
        }
        outcome
    }

    /// Publishes until `stop` is set, checking four times a second.
    pub async fn run(mut self, view: SharedView, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let _ = self.step(&view).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(manager: &str) -> Result<Node, serde_json::Error> {
        serde_json::from_value(json!({
            "metadata": {
                "name": "node-a",
                "uid": "1234",
                "labels": { "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3" },
                "managedFields": [{
                    "manager": manager,
                    "operation": "Apply",
                    "apiVersion": "v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": { "f:metadata": { "f:labels": { "f:nvidia.com/gpu.product": {} } } }
                }]
            }
        }))
    }

    #[test]
    fn labels_set_by_gfd_are_left_alone_and_our_own_are_not() -> Result<(), serde_json::Error> {
        assert!(label_owned_by_another(
            &node("gpu-feature-discovery")?,
            GFD_PROBE_LABEL
        ));
        assert!(!label_owned_by_another(
            &node(FIELD_MANAGER)?,
            GFD_PROBE_LABEL
        ));
        assert!(!label_owned_by_another(
            &node("gpu-feature-discovery")?,
            "nvidia.com/gpu.count"
        ));
        Ok(())
    }

    /// An apiserver that accepts connections and never answers: a hung write is abandoned
    /// after [`WRITE_TIMEOUT`] and counted as a failure, so the agent retries instead of
    /// waiting for ever with its heartbeat overdue. Time is paused and jumps ahead while
    /// everything waits, so the test takes no real 10 s.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_hangs_is_abandoned_and_retried() -> Result<(), Box<dyn std::error::Error>>
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let config = kube::Config::new(format!("http://{address}").parse()?);
        let client = kube::Client::try_from(config)?;
        let mut publisher =
            Publisher::new(client, "node-a", "test", PublishPolicy::default(), false);
        let view = crate::server::SharedView::default();
        let outcome = tokio::time::timeout(Duration::from_secs(60), publisher.step(&view)).await;
        assert_eq!(outcome.ok(), Some(StepOutcome::Failed));
        let error = view
            .lock()
            .ok()
            .and_then(|view| view.counters.last_publish_error.clone())
            .unwrap_or_default();
        assert!(error.contains("took longer than"), "{error}");
        // The retry waits its backoff, then writes again.
        assert_eq!(publisher.step(&view).await, StepOutcome::BackingOff);
        silent.abort();
        Ok(())
    }

    #[test]
    fn retries_spread_over_the_second_half_of_the_backoff() {
        let backoff = Duration::from_secs(8);
        let waits: Vec<Duration> = (0..1000)
            .map(|node| jittered(backoff, &format!("node-{node}"), 3))
            .collect();
        assert!(
            waits
                .iter()
                .all(|wait| *wait >= backoff / 2 && *wait < backoff)
        );
        // A thousand agents failing together do not retry together: no 100 ms slot of the 4 s
        // window holds more than a small share of them.
        let mut slots = [0_u32; 40];
        for wait in &waits {
            let slot = usize::try_from((*wait - backoff / 2).as_millis() / 100).unwrap_or(0);
            if let Some(count) = slots.get_mut(slot) {
                *count += 1;
            }
        }
        assert!(slots.iter().all(|count| *count < 100), "{slots:?}");
        // Fixed per node and attempt, so a node's retry is reproducible.
        assert_eq!(
            jittered(backoff, "node-a", 1),
            jittered(backoff, "node-a", 1)
        );
    }

    #[test]
    fn owner_reference_points_at_the_node() -> Result<(), serde_json::Error> {
        let owner = owner_reference(&node(FIELD_MANAGER)?);
        assert_eq!(
            owner.as_ref().map(|owner| (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            )),
            Some(("Node", "node-a", "1234"))
        );
        Ok(())
    }
}
