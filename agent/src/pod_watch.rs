//! Watches the Pods on this node and keeps the agent's view of which GPU each gpufleet Pod was
//! placed on, for `foreignMemoryMiB`.
//!
//! ```text
//! apiserver ─watch pods, fieldSelector spec.nodeName=<node>─► Pod uid → gpufleet.io/gpu-uuids
//!                                                          └► NodeView.placements (after the first full list)
//! ```
//!
//! A watch filtered on the node (what the kubelet itself does) costs the apiserver one stream
//! per node instead of a list every few seconds. Needs `pods: list, watch` cluster-wide (a
//! field selector cannot be expressed in RBAC). Until the first list completes the placements
//! stay unknown, so foreign memory stays absent rather than counting every Pod as foreign.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::ownership::{placed_gpu_uuids, placements_from};
use crate::server::SharedView;

/// Pod UID → GPU UUIDs, as the watch has seen them.
type PodGpus = BTreeMap<String, Vec<String>>;

/// Applies one watch event to the known Pods; returns whether the set is complete (after an
/// initial list) and so may be published.
fn apply(event: watcher::Event<Pod>, pods: &mut PodGpus, listing: &mut Option<PodGpus>) -> bool {
    let entry = |pod: &Pod| {
        pod.metadata
            .uid
            .clone()
            .map(|uid| (uid, placed_gpu_uuids(pod)))
    };
    match event {
        watcher::Event::Init => {
            *listing = Some(PodGpus::new());
            false
        }
        watcher::Event::InitApply(pod) => {
            if let (Some(listing), Some((uid, uuids))) = (listing.as_mut(), entry(&pod)) {
                listing.insert(uid, uuids);
            }
            false
        }
        watcher::Event::InitDone => {
            if let Some(listed) = listing.take() {
                *pods = listed;
            }
            true
        }
        watcher::Event::Apply(pod) => {
            if let Some((uid, uuids)) = entry(&pod) {
                pods.insert(uid, uuids);
            }
            listing.is_none()
        }
        watcher::Event::Delete(pod) => {
            if let Some(uid) = &pod.metadata.uid {
                pods.remove(uid);
            }
            listing.is_none()
        }
    }
}

/// Watches the Pods bound to `node` for ever (the watcher retries with backoff on errors) and
/// writes the placements into `view`.
pub async fn watch_placements(client: kube::Client, node: &str, view: SharedView) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut pods = PodGpus::new();
    let mut listing = None;
    let mut synced = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                synced |= apply(event, &mut pods, &mut listing);
                if synced && listing.is_none() {
                    let placements = placements_from(&pods);
                    view.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .placements = Some(placements);
                }
            }
            Err(error) => {
                tracing::warn!(%error, node, "watching this node's Pods failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, uuids: &str) -> Result<Pod, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": uid,
                "uid": uid,
                "annotations": { "gpufleet.io/gpu-uuids": uuids }
            }
        }))
    }

    #[test]
    fn placements_are_complete_only_after_the_first_list() -> Result<(), serde_json::Error> {
        let mut pods = PodGpus::new();
        let mut listing = None;
        assert!(!apply(watcher::Event::Init, &mut pods, &mut listing));
        assert!(!apply(
            watcher::Event::InitApply(pod("a", "GPU-1")?),
            &mut pods,
            &mut listing
        ));
        assert!(pods.is_empty(), "a half-listed set is not published");
        assert!(apply(watcher::Event::InitDone, &mut pods, &mut listing));
        assert_eq!(pods.get("a"), Some(&vec!["GPU-1".to_owned()]));
        assert!(apply(
            watcher::Event::Apply(pod("b", "GPU-2,GPU-3")?),
            &mut pods,
            &mut listing
        ));
        assert!(apply(
            watcher::Event::Delete(pod("a", "GPU-1")?),
            &mut pods,
            &mut listing
        ));
        assert_eq!(pods.keys().collect::<Vec<_>>(), vec!["b"]);
        // A relist replaces the set: Pods deleted while the watch was down disappear.
        apply(watcher::Event::Init, &mut pods, &mut listing);
        apply(
            watcher::Event::InitApply(pod("c", "GPU-4")?),
            &mut pods,
            &mut listing,
        );
        apply(watcher::Event::InitDone, &mut pods, &mut listing);
        assert_eq!(pods.keys().collect::<Vec<_>>(), vec!["c"]);
        Ok(())
    }
}
