//! [`ClusterFeed`]: the dashboard's live view over a real cluster, read from the recorder's
//! watch caches (the same watches that write history), so `gpufleet dashboard --kubernetes`
//! shows what the agents published without a second set of watches, and where the operator
//! placed each replica (its InferenceDeployment status; [`PlacementSource::Operator`]) rather
//! than a what-if placement of the dashboard's own.

use std::collections::BTreeMap;

use gpufleet_api::conditions::node_ready;
use gpufleet_api::{GpuNode, InferenceDeployment};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt as _;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::fleet::{FleetFeed, NodeReading};
use crate::placement::PlacementSource;

/// A [`FleetFeed`] over watched GpuNodes, Nodes and InferenceDeployments.
#[derive(Clone)]
pub struct ClusterFeed {
    gpu_nodes: Store<GpuNode>,
    deployments: Store<InferenceDeployment>,
    nodes: Store<Node>,
}

impl std::fmt::Debug for ClusterFeed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClusterFeed")
            .field("gpu_nodes", &self.gpu_nodes.len())
            .field("deployments", &self.deployments.len())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl ClusterFeed {
    /// A feed over the three caches.
    #[must_use]
    pub fn new(
        gpu_nodes: Store<GpuNode>,
        deployments: Store<InferenceDeployment>,
        nodes: Store<Node>,
    ) -> Self {
        Self {
            gpu_nodes,
            deployments,
            nodes,
        }
    }
}

/// A GpuNode as the live view reads it. Labels are the Node's (zone, rack: what placement's
/// selectors and spread read) over the GpuNode's own; without a Node object the GPUs are shown
/// but not Ready, since nothing could run there.
#[must_use]
pub fn reading_of(gpu_node: &GpuNode, node: Option<&Node>) -> NodeReading {
    let mut labels: BTreeMap<String, String> = gpu_node.labels().clone();
    if let Some(node) = node {
        labels.extend(node.labels().clone());
    }
    NodeReading {
        name: gpu_node.name_any(),
        labels,
        ready: node.is_some_and(node_ready),
        status: gpu_node.status.clone().unwrap_or_default(),
    }
}

impl FleetFeed for ClusterFeed {
    fn read(&mut self) -> Vec<NodeReading> {
        self.gpu_nodes
            .state()
            .iter()
            .map(|gpu_node| {
                let node = self.nodes.get(&ObjectRef::new(&gpu_node.name_any()));
                reading_of(gpu_node, node.as_deref())
            })
            .collect()
    }

    fn deployments(&mut self) -> Vec<InferenceDeployment> {
        self.deployments
            .state()
            .iter()
            .map(|deployment| deployment.as_ref().clone())
            .collect()
    }

    /// The gpufleet operator places this cluster's replicas; the view shows its status.
    fn placement_source(&self) -> PlacementSource {
        PlacementSource::Operator
    }
}

#[cfg(test)]
mod tests {
    use gpufleet_api::gpu_node::HealthState;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use kube::runtime::watcher;

    use super::*;
    use crate::recorder::facts::fixtures::{deployment, device, gpu_node};

    fn node(name: &str, ready: &str, zone: &str) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.to_owned());
        node.metadata.labels = Some(BTreeMap::from([(
            "topology.kubernetes.io/zone".to_owned(),
            zone.to_owned(),
        )]));
        node.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: ready.to_owned(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        });
        node
    }

    #[test]
    fn the_feed_reads_gpu_nodes_with_their_node_labels_and_readiness() {
        let (gpu_nodes, mut gpu_node_writer) = kube::runtime::reflector::store::<GpuNode>();
        let (deployments, mut deployment_writer) =
            kube::runtime::reflector::store::<InferenceDeployment>();
        let (nodes, mut node_writer) = kube::runtime::reflector::store::<Node>();
        for name in ["rec-a", "rec-b", "rec-c"] {
            gpu_node_writer.apply_watcher_event(&watcher::Event::Apply(gpu_node(
                name,
                1_000,
                vec![device(0, HealthState::Healthy, None)],
            )));
        }
        node_writer.apply_watcher_event(&watcher::Event::Apply(node("rec-a", "True", "z1")));
        node_writer.apply_watcher_event(&watcher::Event::Apply(node("rec-b", "False", "z2")));
        deployment_writer.apply_watcher_event(&watcher::Event::Apply(deployment("llm", vec![])));

        let mut feed = ClusterFeed::new(gpu_nodes, deployments, nodes);
        let mut readings = feed.read();
        readings.sort_by(|a, b| a.name.cmp(&b.name));
        let summary: Vec<(&str, bool, Option<&str>, usize)> = readings
            .iter()
            .map(|reading| {
                (
                    reading.name.as_str(),
                    reading.ready,
                    reading
                        .labels
                        .get("topology.kubernetes.io/zone")
                        .map(String::as_str),
                    reading.status.gpus.len(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("rec-a", true, Some("z1"), 1),
                ("rec-b", false, Some("z2"), 1),
                ("rec-c", false, None, 1),
            ]
        );
        assert_eq!(feed.deployments().len(), 1);
        assert_eq!(feed.placement_source(), PlacementSource::Operator);
    }
}
