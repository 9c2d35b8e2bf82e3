//! The custom resources on a real apiserver: installation, validation messages, printer
//! columns and the scale subresource.

use anyhow::Context;
use gpufleet_api::InferenceDeployment;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::support::{TestNamespace, client, install_crds, kubectl};

/// A valid InferenceDeployment as a user would write it, to be broken field by field.
fn valid_deployment(name: &str) -> Value {
    json!({
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "gpu": {"count": 1, "memoryMiB": 40000, "products": ["NVIDIA-H100-80GB-HBM3"], "minComputeCapability": "8.0"},
            "placement": {"strategy": "FragmentationAware", "maxReplicasPerNode": 2, "topologyKeys": ["topology.kubernetes.io/zone"]},
            "disruption": {"maxUnavailable": 1, "maxSurge": "25%"},
            "template": {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0"}]}}
        }
    })
}

/// Sets `value` at a path of `/`-separated keys (`Value::Null` removes the key), creating
/// objects on the way.
fn with(mut object: Value, path: &str, value: Value) -> anyhow::Result<Value> {
    let keys: Vec<&str> = path.split('/').collect();
    let (last, parents) = keys.split_last().context("empty path")?;
    let mut cursor = &mut object;
    for key in parents {
        cursor = cursor
            .as_object_mut()
            .with_context(|| format!("{path}: {key} is not inside an object"))?
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    let parent = cursor
        .as_object_mut()
        .with_context(|| format!("{path}: parent is not an object"))?;
    if value.is_null() {
        parent.remove(*last);
    } else {
        parent.insert((*last).to_owned(), value);
    }
    Ok(object)
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run `bash tests/run-all.sh` or set KUBECONFIG and pass --ignored"]
async fn crds_install_and_a_valid_deployment_round_trips() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let namespace = TestNamespace::create(&client, "roundtrip").await?;
    let api: Api<InferenceDeployment> = Api::namespaced(client.clone(), &namespace.name);

    let sent: InferenceDeployment = serde_json::from_value(valid_deployment("llama-70b"))?;
    let created = api.create(&PostParams::default(), &sent).await?;
    let fetched = api.get("llama-70b").await?;
    assert_eq!(fetched.spec, sent.spec, "spec must round-trip unchanged");
    assert_eq!(created.spec, fetched.spec);

    // Defaults are applied by the apiserver from the schema.
    let minimal = json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceDeployment",
        "metadata": {"name": "minimal"},
        "spec": {"gpu": {"fraction": 0.5, "memoryMiB": 20000},
                 "template": {"spec": {"containers": [{"name": "s", "image": "x"}]}}}
    });
    let minimal: InferenceDeployment = serde_json::from_value(minimal)?;
    let created = api.create(&PostParams::default(), &minimal).await?;
    assert_eq!(created.spec.replicas, 1);
    let raw: Value = serde_json::to_value(&created)?;
    assert_eq!(raw["spec"]["placement"]["strategy"], "FragmentationAware");
    assert_eq!(raw["spec"]["disruption"]["maxSurge"], 1);
    assert_eq!(raw["spec"]["disruption"]["maxUnavailable"], 0);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run `bash tests/run-all.sh` or set KUBECONFIG and pass --ignored"]
async fn invalid_deployments_are_rejected_with_messages_naming_the_field() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let namespace = TestNamespace::create(&client, "invalid").await?;
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace.name,
        &kube::api::ApiResource::erase::<InferenceDeployment>(&()),
    );
    // (case, path to change, new value (null removes), a fragment the error must contain)
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "negative memory",
            "spec/gpu/memoryMiB",
            json!(-1),
            "spec.gpu.memoryMiB",
        ),
        (
            "zero per-node cap",
            "spec/placement/maxReplicasPerNode",
            json!(0),
            "spec.placement.maxReplicasPerNode",
        ),
        (
            "unknown strategy",
            "spec/placement/strategy",
            json!("Random"),
            "spec.placement.strategy",
        ),
        (
            "fraction above one",
            "spec/gpu",
            json!({"fraction": 1.5, "memoryMiB": 1000}),
            "spec.gpu.fraction",
        ),
        (
            "zero fraction",
            "spec/gpu",
            json!({"fraction": 0.0, "memoryMiB": 1000}),
            "spec.gpu.fraction",
        ),
        (
            "count and fraction",
            "spec/gpu",
            json!({"count": 1, "fraction": 0.5, "memoryMiB": 1000}),
            "spec.gpu",
        ),
        (
            "fraction without memory",
            "spec/gpu",
            json!({"fraction": 0.25}),
            "spec.gpu.memoryMiB",
        ),
        ("no gpu need", "spec/gpu", json!({}), "spec.gpu"),
        (
            "both budgets zero",
            "spec/disruption",
            json!({"maxUnavailable": 0, "maxSurge": "0%"}),
            "spec.disruption",
        ),
        (
            "bad percentage",
            "spec/disruption/maxSurge",
            json!("lots"),
            "spec.disruption.maxSurge",
        ),
        (
            "negative replicas",
            "spec/replicas",
            json!(-3),
            "spec.replicas",
        ),
        (
            "bad compute capability",
            "spec/gpu/minComputeCapability",
            json!("hopper"),
            "spec.gpu.minComputeCapability",
        ),
        (
            "node chosen by user",
            "spec/template/spec/nodeName",
            json!("gpu-node-0"),
            "spec.template.spec.nodeName",
        ),
        (
            "missing template",
            "spec/template",
            Value::Null,
            "spec.template",
        ),
    ];
    let mut failures = Vec::new();
    for (index, (case, path, value, expected)) in cases.iter().enumerate() {
        let object = with(
            valid_deployment(&format!("bad-{index}")),
            path,
            value.clone(),
        )?;
        let object: DynamicObject = serde_json::from_value(object)?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => failures.push(format!(
                "{case}: accepted, expected a rejection naming {expected}"
            )),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(expected) {
                    failures.push(format!(
                        "{case}: expected 422 naming {expected}, got {}: {}",
                        status.code, status.message
                    ));
                } else {
                    println!("{case}: rejected: {}", status.message);
                }
            }
            Err(other) => failures.push(format!("{case}: unexpected error {other}")),
        }
    }
    assert!(
        failures.is_empty(),
        "validation gaps:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server and kubectl: run `bash tests/run-all.sh`"]
async fn kubectl_shows_printer_columns_and_scales_replicas() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let namespace = TestNamespace::create(&client, "kubectl").await?;
    let api: Api<InferenceDeployment> = Api::namespaced(client.clone(), &namespace.name);
    let sent: InferenceDeployment = serde_json::from_value(valid_deployment("mistral"))?;
    api.create(&PostParams::default(), &sent).await?;

    let table = kubectl(&["get", "idep", "-n", &namespace.name])?;
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "DESIRED",
        "READY",
        "UNPLACED",
        "STRATEGY",
        "AVAILABLE",
        "AGE",
    ] {
        assert!(
            header.contains(column),
            "column {column} missing in:\n{table}"
        );
    }
    assert!(
        table.contains("FragmentationAware"),
        "strategy not shown:\n{table}"
    );

    kubectl(&[
        "scale",
        "inferencedeployment/mistral",
        "--replicas=7",
        "-n",
        &namespace.name,
    ])?;
    assert_eq!(api.get("mistral").await?.spec.replicas, 7);
    let scale = api.get_scale("mistral").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(7));
    Ok(())
}

/// Creates `object` through `api` and expects a 422 whose message names `expected`; returns a
/// line describing any other outcome.
async fn expect_rejection(
    api: &Api<DynamicObject>,
    case: &str,
    object: Value,
    expected: &str,
) -> anyhow::Result<Option<String>> {
    let object: DynamicObject = serde_json::from_value(object)?;
    Ok(match api.create(&PostParams::default(), &object).await {
        Ok(_) => Some(format!(
            "{case}: accepted, expected a rejection naming {expected}"
        )),
        Err(kube::Error::Api(status))
            if status.code == 422 && status.message.contains(expected) =>
        {
            println!("{case}: rejected: {}", status.message);
            None
        }
        Err(kube::Error::Api(status)) => Some(format!(
            "{case}: expected 422 naming {expected}, got {}: {}",
            status.code, status.message
        )),
        Err(other) => Some(format!("{case}: unexpected error {other}")),
    })
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run `bash tests/run-all.sh` or set KUBECONFIG and pass --ignored"]
async fn invalid_gpunodes_and_capacity_plans_are_rejected_naming_the_field() -> anyhow::Result<()> {
    use gpufleet_api::{CapacityPlan, GpuNode};
    let client = client().await?;
    install_crds(&client).await?;
    let namespace = TestNamespace::create(&client, "invalid-other").await?;
    let gpu_nodes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<GpuNode>(&()),
    );
    let plans: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace.name,
        &kube::api::ApiResource::erase::<CapacityPlan>(&()),
    );
    let gpu_node = |name: &str, spec: Value| {
        json!({"apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
               "metadata": {"name": name}, "spec": spec})
    };
    let plan = |name: &str, spec: Value| {
        json!({"apiVersion": "gpufleet.io/v1alpha1", "kind": "CapacityPlan",
               "metadata": {"name": name}, "spec": spec})
    };
    let prefix = &namespace.name;
    let mut failures = Vec::new();
    for (case, object, expected) in [
        (
            "GpuNode named after another node",
            gpu_node(
                &format!("{prefix}-a"),
                json!({"nodeName": format!("{prefix}-b")}),
            ),
            "spec.nodeName",
        ),
        (
            "GpuNode without a node name",
            gpu_node(&format!("{prefix}-c"), json!({})),
            "spec.nodeName",
        ),
        (
            "CapacityPlan with both scenario sources",
            plan(
                "both",
                json!({"scenario": {"inline": {"name": "x"}, "configMapRef": {"name": "cm"}}}),
            ),
            "spec.scenario",
        ),
        (
            "CapacityPlan without a scenario source",
            plan("neither", json!({"scenario": {}})),
            "spec.scenario",
        ),
        (
            "CapacityPlan with an empty ConfigMap name",
            plan(
                "empty-ref",
                json!({"scenario": {"configMapRef": {"name": ""}}}),
            ),
            "spec.scenario.configMapRef.name",
        ),
        (
            "CapacityPlan with an unknown objective",
            plan(
                "objective",
                json!({"scenario": {"configMapRef": {"name": "cm"}}, "objective": "Fun"}),
            ),
            "spec.objective",
        ),
    ] {
        let api = if case.starts_with("GpuNode") {
            &gpu_nodes
        } else {
            &plans
        };
        failures.extend(expect_rejection(api, case, object, expected).await?);
    }
    assert!(
        failures.is_empty(),
        "validation gaps:\n{}",
        failures.join("\n")
    );
    Ok(())
}
