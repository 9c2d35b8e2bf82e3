//! Benchmark: gpufleet's operator against kube-scheduler on the same control plane.
//!
//! On `KWOK_NODES` (default 1,000) fake GPU nodes of mixed presets it binds `REPLICAS` (default
//! 5,000) single-GPU pods twice:
//!
//! 1. kube-scheduler (the test control plane runs it with NodeResourcesFit `MostAllocated` on
//!    `nvidia.com/gpu`): the bench creates the Pods as fast as the apiserver takes them and
//!    times creation start → every Pod bound;
//! 2. gpufleet: the bench creates one InferenceDeployment of `REPLICAS` replicas and times
//!    creation → every Pod created and bound by the operator.
//!
//! It then checks that neither over-committed a node's GPUs and prints both rates and their
//! ratio. Run it against the test control plane:
//!
//! ```sh
//! tests/cluster/control-plane.sh up
//! KUBECONFIG=/tmp/gpufleet-cluster/kubeconfig cargo bench --bench operator_vs_kube_scheduler
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use gpufleet_api::InferenceDeployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const POOL_LABEL: &str = "gpufleet.io/bench-pool";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// GPUs of node `index`: the control plane's mixed presets (8×H100, 8×H200, 4×L40S, 8×A100).
fn preset(index: usize) -> (&'static str, u32, u32) {
    match index % 4 {
        0 => ("NVIDIA-H100-80GB-HBM3", 8, 81_559),
        1 => ("NVIDIA-H200", 8, 143_771),
        2 => ("NVIDIA-L40S", 4, 46_068),
        _ => ("NVIDIA-A100-SXM4-40GB", 8, 40_960),
    }
}

async fn create_nodes(client: &Client, count: usize) -> anyhow::Result<BTreeMap<String, u32>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let capacity: BTreeMap<String, u32> = (0..count)
        .map(|i| (format!("bench-node-{i}"), preset(i).1))
        .collect();
    futures::stream::iter(0..count)
        .map(|index| {
            let nodes = nodes.clone();
            async move {
                let (product, gpus, memory) = preset(index);
                let name = format!("bench-node-{index}");
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {"kubernetes.io/hostname": name, "type": "kwok", POOL_LABEL: "1",
                                   "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": gpus.to_string(),
                                   "nvidia.com/gpu.memory": memory.to_string()}},
                    "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
                    "status": {"capacity": {"cpu": "128", "memory": "2048Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()},
                               "allocatable": {"cpu": "126", "memory": "2000Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()}}
                }))?;
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        // Left by an earlier run: bring its labels up to date.
                        let labels = json!({"metadata": {"labels": node.metadata.labels}});
                        nodes
                            .patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&labels))
                            .await
                            .map(|_| ())
                            .map_err(anyhow::Error::from)
                    }
                    Err(error) => Err(anyhow::Error::from(error)),
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    // Ready nodes only: kube-scheduler skips NotReady ones.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let list = nodes
            .list(&ListParams::default().labels(POOL_LABEL))
            .await?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready}/{count} bench nodes Ready after 300 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(capacity)
}

async fn fresh_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(name).await?.is_some() {
        namespaces.delete(name, &DeleteParams::default()).await?;
        while namespaces.get_opt(name).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    // The ServiceAccount admission needs the namespace's default ServiceAccount.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), name);
    while accounts.get_opt("default").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Waits until `count` Pods of the namespace are bound; returns the bound Pods.
async fn wait_bound(
    client: &Client,
    namespace: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + limit;
    loop {
        let list = pods.list(&ListParams::default()).await?;
        let bound: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .collect();
        if bound.len() >= count {
            return Ok(bound);
        }
        if Instant::now() > deadline {
            bail!(
                "only {}/{count} Pods bound in {namespace} after {limit:?}",
                bound.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// GPUs each node got, checked against its capacity; returns the over-committed nodes.
fn overcommitted(pods: &[Pod], capacity: &BTreeMap<String, u32>) -> Vec<String> {
    let mut used: BTreeMap<String, u32> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *used.entry(node).or_default() += 1;
        }
    }
    used.into_iter()
        .filter(|(node, gpus)| capacity.get(node).is_none_or(|cap| gpus > cap))
        .map(|(node, gpus)| format!("{node}: {gpus} GPUs"))
        .collect()
}

async fn kube_scheduler_run(
    client: &Client,
    replicas: usize,
    capacity: &BTreeMap<String, u32>,
) -> anyhow::Result<f64> {
    let namespace = "bench-kube-scheduler";
    fresh_namespace(client, namespace).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    futures::stream::iter(0..replicas)
        .map(|index| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{index}")},
                    "spec": {
                        "nodeSelector": {POOL_LABEL: "1"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0",
                                        "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
                    }
                }))?;
                pods.create(&PostParams::default(), &pod).await.map(|_| ()).map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    let created = started.elapsed();
    let bound = wait_bound(client, namespace, replicas, Duration::from_secs(900)).await?;
    let elapsed = started.elapsed();
    let over = overcommitted(&bound, capacity);
    println!(
        "kube-scheduler: {replicas} pods created in {:.1} s, all bound after {:.1} s: {:.1} pods/s; over-committed nodes: {}",
        created.as_secs_f64(),
        elapsed.as_secs_f64(),
        replicas as f64 / elapsed.as_secs_f64(),
        over.len()
    );
    if !over.is_empty() {
        bail!("kube-scheduler over-committed {over:?}");
    }
    // The namespace controller removes the Pods in the background (a single delete-collection
    // of thousands of Pods outlasts the apiserver's request timeout).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(namespace, &DeleteParams::default())
        .await?;
    Ok(replicas as f64 / elapsed.as_secs_f64())
}

async fn gpufleet_run(
    client: &Client,
    replicas: usize,
    capacity: &BTreeMap<String, u32>,
) -> anyhow::Result<f64> {
    let namespace = "bench-gpufleet";
    fresh_namespace(client, namespace).await?;
    let log = std::fs::File::create(std::env::temp_dir().join("gpufleet-bench-operator.log"))?;
    // GPUFLEET_BIN picks another build of the binary (e.g. a copy, while others rebuild).
    let binary =
        std::env::var("GPUFLEET_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gpufleet").to_owned());
    let mut operator = std::process::Command::new(binary)
        .args([
            "operator",
            "--namespace",
            namespace,
            "--no-leader-election",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the operator")?;
    // Let it sync its caches before the clock starts, as kube-scheduler's are synced.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployments: Api<InferenceDeployment> = Api::namespaced(client.clone(), namespace);
    let deployment: InferenceDeployment = serde_json::from_value(json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceDeployment",
        "metadata": {"name": "bench"},
        "spec": {"replicas": replicas, "gpu": {"count": 1},
                 "placement": {"strategy": "FragmentationAware", "nodeSelector": {POOL_LABEL: "1"}},
                 "template": {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0"}]}}}
    }))?;
    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let bound = wait_bound(client, namespace, replicas, Duration::from_secs(900)).await;
    let elapsed = started.elapsed();
    let _ = operator.kill();
    let _ = operator.wait();
    let bound = bound?;
    let over = overcommitted(&bound, capacity);
    println!(
        "gpufleet:       {replicas} pods created and bound after {:.1} s: {:.1} pods/s; over-committed nodes: {}",
        elapsed.as_secs_f64(),
        replicas as f64 / elapsed.as_secs_f64(),
        over.len()
    );
    if !over.is_empty() {
        bail!("gpufleet over-committed {over:?}");
    }
    deployments
        .delete("bench", &DeleteParams::default())
        .await?;
    Ok(replicas as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!(
            "skipped: set KUBECONFIG to a cluster (tests/cluster/control-plane.sh up) to run this benchmark"
        );
        return Ok(());
    }
    let nodes = env_number("KWOK_NODES", 1000);
    let replicas = env_number("REPLICAS", 5000);
    let client = Client::try_default().await?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in gpufleet_api::custom_resource_definitions() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("gpufleet-bench").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await?;
    }
    let started = Instant::now();
    let capacity = create_nodes(&client, nodes).await?;
    println!(
        "{nodes} KWOK GPU nodes ({} GPUs) Ready after {:.1} s",
        capacity.values().sum::<u32>(),
        started.elapsed().as_secs_f64()
    );
    let baseline = kube_scheduler_run(&client, replicas, &capacity).await?;
    // Wait for the baseline's Pods to be gone so both runs see an empty pool.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-kube-scheduler");
    while pods
        .list(&ListParams::default().limit(1))
        .await
        .map_or(true, |list| !list.items.is_empty())
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ours = gpufleet_run(&client, replicas, &capacity).await?;
    println!(
        "gpufleet / kube-scheduler throughput: {:.2}×",
        ours / baseline
    );
    Ok(())
}
