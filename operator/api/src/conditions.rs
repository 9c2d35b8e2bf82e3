//! Reading the `Ready` condition of core objects, in one place for the operator, the dashboard
//! and the tests: "Ready" means the condition is present and `True`; a missing status or
//! condition (a node that never reported, a Pod not started) is not Ready.

use k8s_openapi::api::core::v1::{Node, Pod};

/// Whether the Node's `Ready` condition is `True`.
#[must_use]
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Whether the Pod's `Ready` condition is `True`.
#[must_use]
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_only_when_the_condition_says_true() {
        let node = |status: serde_json::Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n"}, "status": status}))
                .expect("node")
        };
        assert!(node_ready(&node(
            json!({"conditions": [{"type": "Ready", "status": "True"}]})
        )));
        assert!(!node_ready(&node(
            json!({"conditions": [{"type": "Ready", "status": "Unknown"}]})
        )));
        assert!(!node_ready(&node(json!({}))));
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "status": {"conditions": [{"type": "ContainersReady", "status": "True"},
                                      {"type": "Ready", "status": "False"}]}}))
        .expect("pod");
        assert!(!pod_ready(&pod));
    }
}
