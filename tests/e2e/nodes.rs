//! The test bed itself: KWOK's fake GPU nodes, and GpuNode objects on them.

use std::collections::BTreeMap;

use gpufleet_api::GpuNode;
use gpufleet_api::labels::{
    GPU_COUNT_LABEL, GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, NVIDIA_GPU_RESOURCE,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::{FIELD_MANAGER, client, install_crds, kubectl};

/// GPUs per node of each preset the control-plane script creates.
fn expected_gpus(product: &str) -> Option<&'static str> {
    match product {
        "NVIDIA-H100-80GB-HBM3" | "NVIDIA-H200" | "NVIDIA-A100-SXM4-40GB" => Some("8"),
        "NVIDIA-L40S" => Some("4"),
        _ => None,
    }
}

#[tokio::test]
#[ignore = "needs the test control plane with KWOK GPU nodes: run `bash tests/run-all.sh`"]
async fn kwok_gpu_nodes_are_ready_with_gpu_allocatable_and_gfd_labels() -> anyhow::Result<()> {
    let client = client().await?;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await?;
    assert!(
        list.items.len() >= 4,
        "expected at least 4 fake GPU nodes, found {}",
        list.items.len()
    );
    let mut products = BTreeMap::new();
    for node in &list.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let product = labels.get(GPU_PRODUCT_LABEL).cloned().unwrap_or_default();
        let expected = expected_gpus(&product)
            .unwrap_or_else(|| panic!("{name}: unexpected product label {product:?}"));
        assert_eq!(
            labels.get(GPU_COUNT_LABEL).map(String::as_str),
            Some(expected),
            "{name}"
        );
        assert!(
            labels
                .get(GPU_MEMORY_LABEL)
                .is_some_and(|m| m.parse::<u64>().is_ok()),
            "{name}"
        );
        let status = node.status.clone().unwrap_or_default();
        let allocatable = status.allocatable.unwrap_or_default();
        assert_eq!(
            allocatable.get(NVIDIA_GPU_RESOURCE).map(|q| q.0.as_str()),
            Some(expected),
            "{name}: allocatable nvidia.com/gpu"
        );
        assert!(
            gpufleet_api::conditions::node_ready(node),
            "{name} is not Ready"
        );
        *products.entry(product).or_insert(0) += 1;
    }
    assert_eq!(
        products.len(),
        4,
        "expected the four mixed presets, found {products:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run `bash tests/run-all.sh`"]
async fn gpu_node_status_is_a_subresource_and_shows_in_kubectl() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let api: Api<GpuNode> = Api::all(client.clone());
    let name = format!("e2e-gpunode-{}", std::process::id());
    let object: GpuNode = serde_json::from_value(json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": name}, "spec": {"nodeName": name}
    }))?;
    api.create(&PostParams::default(), &object).await?;

    // A GpuNode whose spec.nodeName differs from its name is refused, naming the field.
    let mismatched: GpuNode = serde_json::from_value(json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": format!("{name}-x")}, "spec": {"nodeName": "other"}
    }))?;
    let error = api
        .create(&PostParams::default(), &mismatched)
        .await
        .expect_err("mismatch accepted");
    assert!(error.to_string().contains("spec.nodeName"), "{error}");

    let status = json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
        "status": {
            "gpus": [{"index": 0, "uuid": "GPU-0", "product": "NVIDIA-H100-80GB-HBM3", "memoryTotalMiB": 81559,
                      "telemetry": {"memoryFreeMiB": 80000}, "health": {"state": "Healthy"}}],
            "summary": {"gpuCount": 1, "healthyCount": 1, "memoryFreeMiB": 80000, "memoryTotalMiB": 81559,
                        "product": "NVIDIA-H100-80GB-HBM3"},
            "lastHeartbeatTime": "2026-01-01T00:00:00Z"
        }
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&status),
    )
    .await?;
    let fetched = api.get(&name).await?;
    let gpus = fetched.status.map(|s| s.gpus).unwrap_or_default();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].telemetry.memory_free_mib, Some(80000));

    let table = kubectl(&["get", "gpun", &name])?;
    for column in ["NODE", "GPUS", "HEALTHY", "FREE MIB", "HEARTBEAT"] {
        assert!(table.contains(column), "column {column} missing:\n{table}");
    }
    assert!(table.contains("80000"), "{table}");
    api.delete(&name, &Default::default()).await?;
    Ok(())
}
