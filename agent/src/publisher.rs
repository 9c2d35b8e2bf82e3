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
        let result = self.write(&status, labels).await;
        let outcome = match &result {
            Ok(()) => {
                tracing::debug!(?reason, node = %self.node_name, "published GpuNode");
                self.last = Some((fingerprint, now));
                self.backoff = FIRST_BACKOFF;
                self.retry_at = None;
                StepOutcome::Published(reason)
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?self.backoff, "publishing failed");
                self.retry_at = Some(now + self.backoff);
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
