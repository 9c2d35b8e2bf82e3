//! The operator on a real control plane: KWOK GPU nodes with GpuNode telemetry, Pods bound by
//! the operator, scaling, unplaceable replicas, a GPU failing, and a leader being killed.

use std::collections::BTreeSet;

use anyhow::Context;
use std::time::{Duration, Instant};

use gpufleet_api::InferenceDeployment;
use gpufleet_api::conditions::pod_ready as is_ready;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::support::{
    OperatorProcess, TestNamespace, client, create_gpu_pool, delete_gpu_pool, install_crds,
    kubectl, set_gpu_health, take_node_down, wait_until,
};

/// An InferenceDeployment of whole H100s kept to the test's own node pool.
fn deployment(
    name: &str,
    pool: &str,
    replicas: i32,
    extra_gpu: serde_json::Value,
) -> anyhow::Result<InferenceDeployment> {
    let mut gpu = json!({"count": 1, "memoryMiB": 40000});
    if let (Some(gpu), Some(extra)) = (gpu.as_object_mut(), extra_gpu.as_object()) {
        gpu.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceDeployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "gpu": gpu,
            "placement": {"strategy": "FragmentationAware", "maxReplicasPerNode": 3,
                          "nodeSelector": {"gpufleet.io/e2e-pool": pool}},
            "disruption": {"maxUnavailable": 0, "maxSurge": 1},
            "template": {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0"}]}}
        }
    }))?)
}

/// The deployment's Pods that are not terminating.
async fn live_pods(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("gpufleet.io/deployment={name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Every live Pod bound to a pool node, no GPU held twice, and the GPU env set.
fn assert_bound_without_overcommit(pods: &[Pod], pool: &[String]) -> anyhow::Result<()> {
    let mut gpus = BTreeSet::new();
    for pod in pods {
        let spec = pod.spec.as_ref().context("Pod without spec")?;
        let node = spec.node_name.clone().context("Pod not bound to a node")?;
        assert!(
            pool.contains(&node),
            "{} on {node}, outside its pool",
            pod.name_any()
        );
        let uuids = pod
            .annotations()
            .get("gpufleet.io/gpu-uuids")
            .cloned()
            .context("Pod without the GPU annotation")?;
        for uuid in uuids.split(',') {
            assert!(
                gpus.insert(uuid.to_owned()),
                "GPU {uuid} given to two replicas"
            );
        }
        let env = spec.containers[0].env.clone().unwrap_or_default();
        assert!(
            env.iter().any(|e| e.name == "NVIDIA_VISIBLE_DEVICES"
                && e.value.as_deref() == Some(uuids.as_str())),
            "{}: NVIDIA_VISIBLE_DEVICES does not name {uuids}",
            pod.name_any()
        );
    }
    Ok(())
}

async fn wait_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    count: usize,
    within: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let what = format!("{count} Ready replicas of {name}");
    wait_until(within, &what, || async {
        let pods = live_pods(client, namespace, name).await?;
        Ok(pods.len() == count && pods.iter().all(is_ready))
    })
    .await?;
    live_pods(client, namespace, name).await
}

/// A test's own namespace and KWOK GPU pool (2 nodes × 8 H100), where operators scoped to the
/// namespace place its deployments.
struct Bed {
    client: Client,
    namespace: TestNamespace,
    pool: Vec<String>,
    api: Api<InferenceDeployment>,
}

impl Bed {
    async fn new(prefix: &str) -> anyhow::Result<Self> {
        let client = client().await?;
        install_crds(&client).await?;
        let namespace = TestNamespace::create(&client, prefix).await?;
        let pool = create_gpu_pool(&client, &namespace.name, 2).await?;
        let api = Api::namespaced(client.clone(), &namespace.name);
        Ok(Self {
            client,
            namespace,
            pool,
            api,
        })
    }

    /// Starts an operator of the namespace, identity `<namespace>-<suffix>`.
    fn operator(&self, suffix: &str) -> anyhow::Result<OperatorProcess> {
        self.operator_with(suffix, &[])
    }

    /// Like [`Bed::operator`], with extra `gpufleet operator` arguments.
    fn operator_with(&self, suffix: &str, extra: &[&str]) -> anyhow::Result<OperatorProcess> {
        let identity = format!("{}-{suffix}", self.namespace.name);
        OperatorProcess::start_with(&self.namespace.name, "gpufleet-operator", &identity, extra)
    }

    /// Creates a deployment of whole H100s in the pool.
    async fn deploy(
        &self,
        name: &str,
        replicas: i32,
        extra_gpu: serde_json::Value,
    ) -> anyhow::Result<()> {
        let object = deployment(name, &self.namespace.name, replicas, extra_gpu)?;
        self.api.create(&PostParams::default(), &object).await?;
        Ok(())
    }

    /// Waits for exactly `count` Ready replicas of `name`.
    async fn ready(&self, name: &str, count: usize) -> anyhow::Result<Vec<Pod>> {
        wait_ready(
            &self.client,
            &self.namespace.name,
            name,
            count,
            Duration::from_secs(60),
        )
        .await
    }

    async fn finish(self) {
        delete_gpu_pool(&self.client, &self.pool).await;
    }
}

#[tokio::test]
#[ignore = "needs the test control plane with KWOK: run `bash tests/run-all.sh` (sets KUBECONFIG)"]
async fn operator_binds_replicas_scales_and_explains_unplaceable_ones() -> anyhow::Result<()> {
    let bed = Bed::new("place").await?;
    let _operator = bed.operator("a")?;
    let (client, namespace) = (&bed.client, bed.namespace.name.as_str());

    bed.deploy("llm", 4, json!({})).await?;
    let pods = bed.ready("llm", 4).await?;
    assert_bound_without_overcommit(&pods, &bed.pool)?;
    wait_until(
        Duration::from_secs(20),
        "status readyReplicas 4",
        || async {
            let status = bed.api.get("llm").await?.status.unwrap_or_default();
            Ok(status.ready_replicas == 4 && status.placements.len() == 4)
        },
    )
    .await?;

    kubectl(&["scale", "idep/llm", "--replicas=6", "-n", namespace])?;
    assert_bound_without_overcommit(&bed.ready("llm", 6).await?, &bed.pool)?;
    kubectl(&["scale", "idep/llm", "--replicas=2", "-n", namespace])?;
    assert_bound_without_overcommit(&bed.ready("llm", 2).await?, &bed.pool)?;

    // No B200 in the pool: the replica gets a Degraded condition and an Event saying why.
    bed.deploy("needs-b200", 1, json!({"products": ["NVIDIA-B200"]}))
        .await?;
    wait_until(
        Duration::from_secs(30),
        "Degraded condition on needs-b200",
        || async {
            let status = bed.api.get("needs-b200").await?.status.unwrap_or_default();
            Ok(status.unplaced_replicas == 1
                && status.conditions.iter().any(|c| {
                    c.type_ == "Degraded"
                        && c.status == "True"
                        && c.reason == "ReplicasUnplaceable"
                        && c.message.contains("nodes are available")
                }))
        },
    )
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    wait_until(Duration::from_secs(30), "an Unplaceable Event", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.iter().any(|e| {
            e.reason.as_deref() == Some("Unplaceable")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("GPU product"))
        }))
    })
    .await?;
    bed.finish().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test control plane with KWOK: run `bash tests/run-all.sh` (sets KUBECONFIG)"]
async fn an_unhealthy_gpu_moves_its_replica_within_5s_without_breaking_the_budget()
-> anyhow::Result<()> {
    let bed = Bed::new("failover").await?;
    let _operator = bed.operator("a")?;
    let (client, namespace) = (&bed.client, bed.namespace.name.as_str());
    bed.deploy("llm", 3, json!({})).await?;
    let pods = bed.ready("llm", 3).await?;

    let victim = pods[0].clone();
    let node = victim
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("bound");
    let index: u32 = victim.annotations()["gpufleet.io/gpu-indices"].parse()?;
    let failed_at = Instant::now();
    set_gpu_health(client, &node, Some(index)).await?;

    // Poll: the Ready replica count never drops below replicas - maxUnavailable (3), and the
    // victim is gone once a replacement on a healthy GPU is Ready.
    let mut lowest_ready = usize::MAX;
    let recovered = loop {
        let live = live_pods(client, namespace, "llm").await?;
        lowest_ready = lowest_ready.min(live.iter().filter(|p| is_ready(p)).count());
        let victim_gone = live.iter().all(|p| p.name_any() != victim.name_any());
        if victim_gone && live.len() == 3 && live.iter().all(is_ready) {
            break failed_at.elapsed();
        }
        assert!(
            failed_at.elapsed() < Duration::from_secs(30),
            "no recovery after 30 s: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "replica on failed GPU {node}/{index} replaced in {recovered:?}; lowest Ready count {lowest_ready}"
    );
    assert!(
        lowest_ready >= 3,
        "Ready replicas dropped to {lowest_ready} (budget: 3)"
    );
    assert!(
        recovered <= Duration::from_secs(5),
        "replacement took {recovered:?} (target 5 s)"
    );
    let live = live_pods(client, namespace, "llm").await?;
    assert_bound_without_overcommit(&live, &bed.pool)?;
    for pod in &live {
        let on_failed = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
            == Some(node.as_str())
            && pod.annotations()["gpufleet.io/gpu-indices"] == index.to_string();
        assert!(!on_failed, "{} still on the failed GPU", pod.name_any());
    }
    bed.finish().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test control plane with KWOK: run `bash tests/run-all.sh` (sets KUBECONFIG)"]
async fn killing_the_leader_hands_over_within_15s_without_duplicate_pods() -> anyhow::Result<()> {
    let bed = Bed::new("leader").await?;
    let mut first = bed.operator("a")?;
    let (client, namespace) = (&bed.client, bed.namespace.name.as_str());
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    wait_until(Duration::from_secs(30), "a leader", || async {
        let lease = leases.get_opt("gpufleet-operator").await?;
        Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .as_deref()
            == Some(first.identity.as_str()))
    })
    .await?;
    let second = bed.operator("b")?;
    bed.deploy("llm", 3, json!({})).await?;
    bed.ready("llm", 3).await?;

    first.kill();
    let killed_at = Instant::now();
    let patch = json!({"spec": {"replicas": 5}});
    bed.api
        .patch("llm", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_until(Duration::from_secs(30), "the standby to lead", || async {
        let lease = leases.get_opt("gpufleet-operator").await?;
        Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .as_deref()
            == Some(second.identity.as_str()))
    })
    .await?;
    let handover = killed_at.elapsed();
    let pods = wait_ready(client, namespace, "llm", 5, Duration::from_secs(30)).await?;
    let scaled = killed_at.elapsed();
    println!("leader killed: standby led after {handover:?}, 5 replicas Ready after {scaled:?}");
    assert!(
        handover <= Duration::from_secs(15),
        "handover took {handover:?} (target 15 s)"
    );
    let names: BTreeSet<String> = pods.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names.len(), 5, "duplicate or missing Pods: {names:?}");
    assert_bound_without_overcommit(&pods, &bed.pool)?;
    // Nothing was created twice: every Pod has a distinct replica ordinal.
    let ordinals: BTreeSet<String> = pods
        .iter()
        .map(|p| p.labels()["gpufleet.io/replica"].clone())
        .collect();
    assert_eq!(ordinals.len(), 5);
    drop(second);
    bed.finish().await;
    Ok(())
}

/// The node holding most of `pods`' replicas, and how many it holds.
fn busiest_node(pods: &[Pod]) -> anyhow::Result<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for pod in pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .context("Pod not bound")?;
        *counts.entry(node).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .context("no replicas")
}

/// Polls until every replica of `name` has left `failed_node` and `replicas` Ready ones run
/// elsewhere. Checks the disruption budget (maxUnavailable 0) at every poll: a replica on the
/// failed node is only removed once a Ready replacement runs elsewhere, so replicas still on
/// the failed node plus Ready ones elsewhere never drop below `replicas`. Returns the time
/// from `failed_at` to recovery.
async fn wait_moved_off(
    bed: &Bed,
    name: &str,
    failed_node: &str,
    replicas: usize,
    failed_at: Instant,
) -> anyhow::Result<Duration> {
    let namespace = bed.namespace.name.as_str();
    loop {
        let live = live_pods(&bed.client, namespace, name).await?;
        let on_failed = live
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(failed_node))
            .count();
        let ready_elsewhere = live
            .iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(failed_node)
                    && is_ready(p)
            })
            .count();
        assert!(
            on_failed + ready_elsewhere >= replicas,
            "budget broken: {on_failed} left on {failed_node}, {ready_elsewhere} Ready elsewhere"
        );
        if on_failed == 0 && ready_elsewhere == replicas && live.len() == replicas {
            assert_bound_without_overcommit(&live, &bed.pool)?;
            return Ok(failed_at.elapsed());
        }
        assert!(
            failed_at.elapsed() < Duration::from_secs(60),
            "replicas still on {failed_node} after 60 s: {on_failed} there, {ready_elsewhere} Ready elsewhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs the test control plane with KWOK: run `bash tests/run-all.sh` (sets KUBECONFIG)"]
async fn a_notready_node_has_its_replicas_replaced_elsewhere_surge_first() -> anyhow::Result<()> {
    let bed = Bed::new("notready").await?;
    let _operator = bed.operator("a")?;
    bed.deploy("llm", 3, json!({})).await?;
    let pods = bed.ready("llm", 3).await?;
    let (victim, moving) = busiest_node(&pods)?;

    let failed_at =
        take_node_down(&bed.client, &victim, "e2e: kubelet stopped posting status").await?;

    let recovered = wait_moved_off(&bed, "llm", &victim, 3, failed_at).await?;
    println!("node {victim} NotReady: {moving} replicas moved off in {recovered:?}");
    let per_replica = recovered / u32::try_from(moving)?;
    assert!(
        per_replica <= Duration::from_secs(5),
        "{moving} replicas took {recovered:?} ({per_replica:?} each, target 5 s)"
    );
    bed.finish().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the test control plane with KWOK: run `bash tests/run-all.sh` (sets KUBECONFIG)"]
async fn a_stale_gpunode_heartbeat_moves_its_replicas_surge_first() -> anyhow::Result<()> {
    const STALE_AFTER: Duration = Duration::from_secs(5);
    let bed = Bed::new("stale").await?;
    let _operator = bed.operator_with("a", &["--heartbeat-stale-after-seconds", "5"])?;

    // Every pool node's "agent" beats each second until the test silences one.
    let beating = std::sync::Arc::new(std::sync::Mutex::new(
        bed.pool.iter().cloned().collect::<BTreeSet<String>>(),
    ));
    let last_beat = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        Instant,
    >::new()));
    let heart = {
        let (client, beating, last_beat) = (bed.client.clone(), beating.clone(), last_beat.clone());
        tokio::spawn(async move {
            loop {
                let nodes: Vec<String> = beating
                    .lock()
                    .map(|b| b.iter().cloned().collect())
                    .unwrap_or_default();
                for node in nodes {
                    let sent = Instant::now();
                    if set_gpu_health(&client, &node, None).await.is_ok()
                        && let Ok(mut last) = last_beat.lock()
                    {
                        last.insert(node, sent);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    bed.deploy("llm", 3, json!({})).await?;
    let pods = bed.ready("llm", 3).await?;
    let (victim, moving) = busiest_node(&pods)?;

    beating
        .lock()
        .map_err(|_| anyhow::anyhow!("heartbeat set poisoned"))?
        .remove(&victim);
    // Let an in-flight beat of the victim land before reading its time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let silenced_at = last_beat
        .lock()
        .map_err(|_| anyhow::anyhow!("heartbeat times poisoned"))?
        .get(&victim)
        .copied()
        .context("the victim never beat")?;
    let stale_at = silenced_at + STALE_AFTER;

    let recovered = wait_moved_off(&bed, "llm", &victim, 3, stale_at).await?;
    heart.abort();
    println!(
        "GpuNode {victim} heartbeat stale: {moving} replicas moved off {recovered:?} after it went stale"
    );
    let per_replica = recovered / u32::try_from(moving)?;
    assert!(
        per_replica <= Duration::from_secs(5),
        "{moving} replicas took {recovered:?} after the heartbeat went stale ({per_replica:?} each, target 5 s)"
    );
    bed.finish().await;
    Ok(())
}

/// An InferenceDeployment of whole H100s in the pool without a per-node cap.
fn packed_deployment(name: &str, pool: &str, replicas: i32) -> anyhow::Result<InferenceDeployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceDeployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "gpu": {"count": 1, "memoryMiB": 40000},
            "placement": {"strategy": "FragmentationAware", "nodeSelector": {"gpufleet.io/e2e-pool": pool}},
            "disruption": {"maxUnavailable": 0, "maxSurge": 1},
            "template": {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.11.0"}]}}
        }
    }))?)
}

#[tokio::test]
#[ignore = "needs the test control plane with KWOK: run `bash tests/run-all.sh` (sets KUBECONFIG)"]
async fn the_defragmenter_frees_a_node_by_moving_a_lone_replica_within_the_budget()
-> anyhow::Result<()> {
    let bed = Bed::new("defrag").await?;
    let _operator = bed.operator_with(
        "a",
        &[
            "--defragment-interval-seconds",
            "1",
            "--defragment-min-gain-gpus",
            "0.1",
        ],
    )?;
    let namespace = bed.namespace.name.as_str();
    let pool = &bed.namespace.name;
    // Fill the first node (7 + 1 GPUs), then a lone replica has to go to the second node.
    bed.api
        .create(&PostParams::default(), &packed_deployment("big", pool, 7)?)
        .await?;
    bed.ready("big", 7).await?;
    bed.api
        .create(
            &PostParams::default(),
            &packed_deployment("filler", pool, 1)?,
        )
        .await?;
    bed.ready("filler", 1).await?;
    bed.api
        .create(&PostParams::default(), &packed_deployment("lone", pool, 1)?)
        .await?;
    let lone = bed.ready("lone", 1).await?;
    let node_of = |pod: &Pod| pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let full = node_of(&bed.ready("big", 7).await?[0]).context("bound")?;
    let lone_node = node_of(&lone[0]).context("bound")?;
    assert_ne!(lone_node, full, "the first node was full");

    // Scaling `big` down frees one GPU next to the others: moving `lone` there empties a node.
    kubectl(&["scale", "idep/big", "--replicas=6", "-n", namespace])?;
    let started = Instant::now();
    let moved = loop {
        let live = live_pods(&bed.client, namespace, "lone").await?;
        let ready = live.iter().filter(|p| is_ready(p)).count();
        assert!(ready >= 1, "lone dropped below its budget: {ready} Ready");
        if live.len() == 1 && node_of(&live[0]).as_deref() == Some(full.as_str()) && ready == 1 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "lone never moved next to the others: {:?}",
            live.iter().map(node_of).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("defragmenter moved the lone replica from {lone_node} to {full} in {moved:?}");
    let mut everything = Vec::new();
    for name in ["big", "filler", "lone"] {
        everything.extend(live_pods(&bed.client, namespace, name).await?);
    }
    assert_bound_without_overcommit(&everything, &bed.pool)?;
    assert!(
        everything
            .iter()
            .all(|p| node_of(p).as_deref() == Some(full.as_str())),
        "{lone_node} is empty again"
    );
    let events: Api<Event> = Api::namespaced(bed.client.clone(), namespace);
    wait_until(
        Duration::from_secs(20),
        "Defragmenting and Defragmented Events",
        || async {
            let list = events.list(&ListParams::default()).await?;
            let has = |reason: &str| {
                list.items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some(reason))
            };
            Ok(has("Defragmenting") && has("Defragmented"))
        },
    )
    .await?;
    bed.finish().await;
    Ok(())
}
