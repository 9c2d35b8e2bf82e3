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
//! ratio.
//!
//! Then (`BENCH=quality`, or both by default) the placement quality at `LOAD_PERCENT` (default
//! 130) offered load: on `QUALITY_NODES` (default 200) fresh nodes, a seeded stream of whole-GPU
//! inference replicas (1, 2, 4 and 8 GPUs in the proportions of the operator's default workload
//! mix) adding up to 130% of the pool's GPUs arrives in order, once as plain Pods for
//! kube-scheduler and once as one-replica InferenceDeployments for gpufleet's operator. When
//! nothing more binds, it counts the GPUs left unallocated by each, and by gpufleet's engine
//! run in-process on the same Nodes with the best-fit and pack strategies, side by side.
//!
//! Run it against the test control plane:
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
    create_pool(client, count, "bench-node", POOL_LABEL).await
}

/// Creates `count` KWOK GPU nodes `<prefix>-<i>` labelled `<pool_label>=1` and waits until
/// they are Ready; returns each node's GPU count.
async fn create_pool(
    client: &Client,
    count: usize,
    prefix: &'static str,
    pool_label: &'static str,
) -> anyhow::Result<BTreeMap<String, u32>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let capacity: BTreeMap<String, u32> = (0..count)
        .map(|i| (format!("{prefix}-{i}"), preset(i).1))
        .collect();
    futures::stream::iter(0..count)
        .map(|index| {
            let nodes = nodes.clone();
            async move {
                let (product, gpus, memory) = preset(index);
                let name = format!("{prefix}-{index}");
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {"kubernetes.io/hostname": name, "type": "kwok", pool_label: "1",
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
            .list(&ListParams::default().labels(pool_label))
            .await?;
        let ready = list
            .items
            .iter()
            .filter(|n| gpufleet_api::conditions::node_ready(n))
            .count();
        if ready >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready}/{count} {prefix} nodes Ready after 300 s");
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

/// Starts `gpufleet operator` without leader election for `namespace`, logging to `log` in the
/// temporary directory. GPUFLEET_BIN picks another build of the binary (e.g. a copy, while
/// others rebuild).
fn start_operator(namespace: &str, log: &str) -> anyhow::Result<std::process::Child> {
    let log = std::fs::File::create(std::env::temp_dir().join(log))?;
    let binary =
        std::env::var("GPUFLEET_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gpufleet").to_owned());
    std::process::Command::new(binary)
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
        .context("starting the operator")
}

async fn gpufleet_run(
    client: &Client,
    replicas: usize,
    capacity: &BTreeMap<String, u32>,
) -> anyhow::Result<f64> {
    let namespace = "bench-gpufleet";
    fresh_namespace(client, namespace).await?;
    let mut operator = start_operator(namespace, "gpufleet-bench-operator.log")?;
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
    let which = std::env::var("BENCH").unwrap_or_else(|_| "throughput,quality".to_owned());
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
    if which.contains("throughput") {
        throughput(&client).await?;
    }
    if which.contains("quality") {
        quality::run(&client).await?;
    }
    Ok(())
}

async fn throughput(client: &Client) -> anyhow::Result<()> {
    let nodes = env_number("KWOK_NODES", 1000);
    let replicas = env_number("REPLICAS", 5000);
    let started = Instant::now();
    let capacity = create_nodes(client, nodes).await?;
    println!(
        "{nodes} KWOK GPU nodes ({} GPUs) Ready after {:.1} s",
        capacity.values().sum::<u32>(),
        started.elapsed().as_secs_f64()
    );
    let baseline = kube_scheduler_run(client, replicas, &capacity).await?;
    // Wait for the baseline's Pods to be gone so both runs see an empty pool.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-kube-scheduler");
    while pods
        .list(&ListParams::default().limit(1))
        .await
        .map_or(true, |list| !list.items.is_empty())
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ours = gpufleet_run(client, replicas, &capacity).await?;
    println!(
        "gpufleet / kube-scheduler throughput: {:.2}×",
        ours / baseline
    );
    Ok(())
}

/// Placement quality at an offered load above capacity: GPU capacity left unused.
mod quality {
    use super::*;

    const QUALITY_POOL_LABEL: &str = "gpufleet.io/bench-quality-pool";

    /// What one replica asks for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Demand {
        /// Whole GPUs.
        Whole(u32),
        /// A share of one GPU, thousandths, with GPU memory in MiB.
        Share(u32, u32),
    }

    impl Demand {
        /// GPU capacity the replica needs, thousandths of a GPU.
        fn milli(self) -> u64 {
            match self {
                Demand::Whole(count) => u64::from(count) * 1000,
                Demand::Share(milli, _) => u64::from(milli),
            }
        }

        /// `nvidia.com/gpu` a plain Pod must ask kube-scheduler for: a whole GPU for a share,
        /// as the device plugin hands out whole devices without time-slicing or MIG.
        fn whole_gpus(self) -> u32 {
            match self {
                Demand::Whole(count) => count,
                Demand::Share(..) => 1,
            }
        }

        fn gpu_spec(self) -> serde_json::Value {
            match self {
                Demand::Whole(count) => json!({"count": count}),
                Demand::Share(milli, memory) => {
                    json!({"fraction": f64::from(milli) / 1000.0, "memoryMiB": memory})
                }
            }
        }
    }

    /// The operator's default workload mix (`WorkloadMix::inference_default`): shares of 0.1,
    /// 0.25 and 0.5 GPU (memory in proportion to a 40 GB GPU) weighted 0.25, 0.20, 0.15, and
    /// whole 1, 2, 4, 8 GPUs weighted 0.25, 0.08, 0.05, 0.02. `whole` keeps only the whole part.
    fn mix(whole_only: bool) -> Vec<(Demand, u64)> {
        let mut entries = vec![
            (Demand::Whole(1), 25),
            (Demand::Whole(2), 8),
            (Demand::Whole(4), 5),
            (Demand::Whole(8), 2),
        ];
        if !whole_only {
            entries.extend([
                (Demand::Share(100, 4_000), 25),
                (Demand::Share(250, 10_000), 20),
                (Demand::Share(500, 20_000), 15),
            ]);
        }
        entries
    }

    /// A seeded arrival stream of replicas asking, in all, `load_percent`% of `capacity` GPUs.
    pub(super) fn workload(
        capacity: u32,
        load_percent: u32,
        whole_only: bool,
        seed: u64,
    ) -> Vec<Demand> {
        let target = u64::from(capacity) * 10 * u64::from(load_percent);
        let entries = mix(whole_only);
        let total_weight: u64 = entries.iter().map(|(_, w)| w).sum();
        let mut state = seed;
        let mut offered = 0u64;
        let mut stream = Vec::new();
        while offered < target {
            // Knuth's MMIX linear congruential generator: enough for a reproducible mix.
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mut pick = (state >> 33) % total_weight;
            let demand = entries
                .iter()
                .find(|(_, weight)| {
                    if pick < *weight {
                        true
                    } else {
                        pick -= weight;
                        false
                    }
                })
                .map_or(Demand::Whole(1), |(demand, _)| *demand);
            stream.push(demand);
            offered += demand.milli();
        }
        stream
    }

    /// The arrival index of a replica from its Pod name (`replica-00012` or `replica-00012-r0`).
    fn index_of(pod: &Pod) -> Option<usize> {
        pod.name_any()
            .strip_prefix("replica-")?
            .get(..5)?
            .parse()
            .ok()
    }

    /// Waits until the count of bound Pods in `namespace` has not changed for `quiet`; returns
    /// the bound Pods.
    async fn settle(client: &Client, namespace: &str, quiet: Duration) -> anyhow::Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let mut last = usize::MAX;
        let mut since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let bound: Vec<Pod> = pods
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .collect();
            if bound.len() != last {
                last = bound.len();
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Ok(bound);
            }
            if Instant::now() > deadline {
                bail!("{namespace} did not settle in 1800 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What the placed replicas hold: (replicas, whole GPUs held exclusively, GPU capacity
    /// their requests add up to in thousandths). Whole GPUs per node are checked against its
    /// capacity; gpufleet's shares are checked by the engine's properties and the e2e tests.
    struct Held {
        replicas: usize,
        whole_gpus: u32,
        requested_milli: u64,
    }

    fn held(
        pods: &[Pod],
        stream: &[Demand],
        capacity: &BTreeMap<String, u32>,
        who: &str,
        shares_are_whole: bool,
    ) -> anyhow::Result<Held> {
        let mut used: BTreeMap<String, u32> = BTreeMap::new();
        let mut requested_milli = 0;
        let mut whole_gpus = 0;
        for pod in pods {
            let demand = index_of(pod)
                .and_then(|i| stream.get(i))
                .copied()
                .context("a Pod outside the stream")?;
            requested_milli += demand.milli();
            let whole = if shares_are_whole {
                demand.whole_gpus()
            } else if let Demand::Whole(n) = demand {
                n
            } else {
                0
            };
            whole_gpus += whole;
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *used.entry(node).or_default() += whole;
            }
        }
        let over: Vec<String> = used
            .iter()
            .filter(|(node, gpus)| capacity.get(*node).is_none_or(|cap| *gpus > cap))
            .map(|(node, gpus)| format!("{node}: {gpus}"))
            .collect();
        if !over.is_empty() {
            bail!("{who} over-committed {over:?}");
        }
        Ok(Held {
            replicas: pods.len(),
            whole_gpus,
            requested_milli,
        })
    }

    async fn kube_scheduler(client: &Client, stream: &[Demand]) -> anyhow::Result<Vec<Pod>> {
        let namespace = "bench-quality-kube-scheduler";
        fresh_namespace(client, namespace).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        // One at a time, so the scheduling queue sees them in arrival order.
        for (index, demand) in stream.iter().enumerate() {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("replica-{index:05}")},
                "spec": {
                    "nodeSelector": {QUALITY_POOL_LABEL: "1"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0",
                        "resources": {"limits": {"nvidia.com/gpu": demand.whole_gpus().to_string()}}}]
                }
            }))?;
            pods.create(&PostParams::default(), &pod).await?;
        }
        settle(client, namespace, Duration::from_secs(15)).await
    }

    fn deployment(
        index: usize,
        demand: Demand,
        strategy: &str,
    ) -> anyhow::Result<InferenceDeployment> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceDeployment",
            "metadata": {"name": format!("replica-{index:05}")},
            "spec": {"replicas": 1, "gpu": demand.gpu_spec(),
                     "placement": {"strategy": strategy, "nodeSelector": {QUALITY_POOL_LABEL: "1"}},
                     "template": {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0"}]}}}
        }))?)
    }

    async fn operator(client: &Client, stream: &[Demand]) -> anyhow::Result<Vec<Pod>> {
        let namespace = "bench-quality-gpufleet";
        fresh_namespace(client, namespace).await?;
        let mut operator = start_operator(namespace, "gpufleet-bench-quality.log")?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let deployments: Api<InferenceDeployment> = Api::namespaced(client.clone(), namespace);
        let mut result = Ok(());
        for (index, demand) in stream.iter().enumerate() {
            let object = deployment(index, *demand, "FragmentationAware")?;
            if let Err(error) = deployments.create(&PostParams::default(), &object).await {
                result = Err(anyhow::Error::from(error));
                break;
            }
        }
        let settled = match result {
            Ok(()) => settle(client, namespace, Duration::from_secs(20)).await,
            Err(error) => Err(error),
        };
        let _ = operator.kill();
        let _ = operator.wait();
        settled
    }

    /// gpufleet's engine in-process on the same Nodes, replicas placed in arrival order.
    async fn engine(
        client: &Client,
        stream: &[Demand],
        strategy: gpufleet_api::inference_deployment::PlacementStrategy,
        name: &str,
    ) -> anyhow::Result<Held> {
        use gpufleet_placement::{
            Engine, EngineConfig, Outcome, WorkloadMix, request_for, strategy_of,
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let list: Vec<std::sync::Arc<Node>> = nodes
            .list(&ListParams::default().labels(QUALITY_POOL_LABEL))
            .await?
            .items
            .into_iter()
            .map(std::sync::Arc::new)
            .collect();
        let snapshot =
            gpufleet_operator::snapshot::build(&list, &BTreeMap::new(), Vec::new(), 0, u64::MAX)
                .fleet;
        let mut engine = Engine::new(
            &snapshot,
            EngineConfig::new(strategy_of(strategy), WorkloadMix::inference_default()),
        )?;
        let mut placed = Held {
            replicas: 0,
            whole_gpus: 0,
            requested_milli: 0,
        };
        for (index, demand) in stream.iter().enumerate() {
            let object = deployment(index, *demand, name)?;
            let replica = format!("replica-{index:05}");
            if let Outcome::Placed(_) = engine.place(&request_for(
                &object.spec,
                format!("bench/{replica}-r0"),
                replica,
            ))? {
                placed.replicas += 1;
                placed.requested_milli += demand.milli();
                if let Demand::Whole(count) = demand {
                    placed.whole_gpus += count;
                }
            }
        }
        Ok(placed)
    }

    async fn drain(client: &Client, namespace: &str) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .delete(namespace, &DeleteParams::default())
            .await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        while pods
            .list(&ListParams::default().limit(1))
            .await
            .map_or(true, |l| !l.items.is_empty())
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    pub(super) async fn run(client: &Client) -> anyhow::Result<()> {
        use gpufleet_api::inference_deployment::PlacementStrategy;
        let node_count = env_number("QUALITY_NODES", 200);
        let load = u32::try_from(env_number("LOAD_PERCENT", 130))?;
        let whole_only = std::env::var("QUALITY_MIX").is_ok_and(|mix| mix == "whole");
        let capacity = create_pool(client, node_count, "bench-quality", QUALITY_POOL_LABEL).await?;
        let total: u32 = capacity.values().sum();
        let stream = workload(total, load, whole_only, 2025);
        let offered: u64 = stream.iter().map(|d| d.milli()).sum();
        println!(
            "quality: {node_count} nodes, {total} GPUs; {} replicas ({} mix) asking {:.0} GPUs ({load}% load)",
            stream.len(),
            if whole_only { "whole-GPU" } else { "inference" },
            offered as f64 / 1000.0
        );
        let mut rows: Vec<(String, Held)> = Vec::new();
        for (strategy, name) in [
            (PlacementStrategy::FragmentationAware, "FragmentationAware"),
            (PlacementStrategy::BestFit, "BestFit"),
            (PlacementStrategy::Pack, "Pack"),
        ] {
            rows.push((
                format!("gpufleet engine, {name} (in-process)"),
                engine(client, &stream, strategy, name).await?,
            ));
        }
        let kube_pods = kube_scheduler(client, &stream).await?;
        rows.push((
            "kube-scheduler, MostAllocated on nvidia.com/gpu".to_owned(),
            held(&kube_pods, &stream, &capacity, "kube-scheduler", true)?,
        ));
        drain(client, "bench-quality-kube-scheduler").await?;
        let our_pods = operator(client, &stream).await?;
        rows.push((
            "gpufleet operator, FragmentationAware".to_owned(),
            held(&our_pods, &stream, &capacity, "gpufleet", false)?,
        ));
        drain(client, "bench-quality-gpufleet").await?;
        // Unused = capacity no placed replica asked for: free GPUs, plus, for kube-scheduler,
        // the part of a whole GPU a shared replica had to take but does not need.
        println!(
            "{:<50} {:>9} {:>11} {:>15} {:>9}",
            "placer", "replicas", "whole GPUs", "GPUs requested", "unused %"
        );
        for (name, held) in &rows {
            let requested = held.requested_milli as f64 / 1000.0;
            println!(
                "{name:<50} {:>9} {:>11} {requested:>15.1} {:>8.2}%",
                held.replicas,
                held.whole_gpus,
                100.0 * (f64::from(total) - requested) / f64::from(total)
            );
        }
        Ok(())
    }
}
