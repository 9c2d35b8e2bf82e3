//! End-to-end against a real kube-apiserver (the cluster in KUBECONFIG, e.g. the one
//! `tests/cluster/control-plane.sh up` starts): a simulated DGX publishes its GpuNode, an Xid 79
//! turns the GPU Unhealthy in the GpuNode, a foreign process shows as less free memory, a deleted
//! GpuNode is recreated, and the admission policy refuses an agent writing another node's GpuNode.
//!
//! Each test creates its own Node (a KWOK-style fake) with a unique name and deletes it after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gpufleet_agent::GpuSource;
use gpufleet_agent::fault::parse_script;
use gpufleet_agent::health::HealthPolicy;
use gpufleet_agent::ownership::ProcessTable;
use gpufleet_agent::pod_watch::watch_placements;
use gpufleet_agent::preset;
use gpufleet_agent::publisher::Publisher;
use gpufleet_agent::sampler::Sampler;
use gpufleet_agent::simulated::{SimulatedSource, SimulationClock};
use gpufleet_agent::status::PublishPolicy;
use gpufleet_api::gpu_node::{GpuNode, HealthState};
use gpufleet_test_support::{Seen, wait_every, wait_until};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!("agent-e2e-{name}-{}-{nanos}", std::process::id())
}

async fn create_node(client: &kube::Client, name: &str) -> Result<Node, kube::Error> {
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { "kwok.x-k8s.io/node": "fake" },
            "labels": { "type": "kwok" }
        },
        "spec": { "taints": [{ "key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule" }] }
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
}

/// A running agent (sampler thread + publisher task) for a simulated machine.
struct Agent {
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
    publisher: tokio::task::JoinHandle<()>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// The simulation's clock: faults scripted at `t=…` happen when the test moves it there.
    clock: SimulationClock,
    /// What the agent knows now (its own view, before any publishing).
    view: gpufleet_agent::server::SharedView,
}

impl Agent {
    fn start(
        client: kube::Client,
        node: &str,
        faults: &str,
    ) -> Result<Self, gpufleet_agent::Error> {
        Self::start_with_processes(client, node, faults, None)
    }

    /// An agent that also attributes GPU processes through `processes` (a fake /proc) and
    /// watches the Pods on its node, as `gpufleet agent run --publish` does with a proc root.
    fn start_with_processes(
        client: kube::Client,
        node: &str,
        faults: &str,
        processes: Option<ProcessTable>,
    ) -> Result<Self, gpufleet_agent::Error> {
        // A manual clock: a fault happens when the test says so, not when a busy machine
        // happens to get there.
        let clock = SimulationClock::manual();
        let source = SimulatedSource::new(
            preset::dgx_h100(),
            node,
            parse_script(faults)?,
            clock.clone(),
        );
        let mut sampler = Sampler::new(Box::new(source), node, HealthPolicy::default());
        let watch = processes.is_some();
        if let Some(table) = processes {
            sampler = sampler.with_process_table(table);
        }
        let view = sampler.view();
        let agent_view = Arc::clone(&view);
        let watcher = watch.then(|| {
            let (client, node, view) = (client.clone(), node.to_owned(), Arc::clone(&view));
            tokio::spawn(async move { watch_placements(client, &node, view).await })
        });
        let stop = Arc::new(AtomicBool::new(false));
        let sampler_stop = Arc::clone(&stop);
        let sampler =
            std::thread::spawn(move || sampler.run(Duration::from_millis(500), &sampler_stop));
        let publisher = Publisher::new(
            client,
            node,
            "simulated:dgx_h100",
            PublishPolicy::default(),
            true,
        );
        let publisher_stop = Arc::clone(&stop);
        let publisher = tokio::spawn(async move { publisher.run(view, &publisher_stop).await });
        Ok(Self {
            stop,
            sampler: Some(sampler),
            publisher,
            watcher,
            clock,
            view: agent_view,
        })
    }

    /// Moves the simulation to `at` (a fault's `t=`), so scripted faults up to then happen.
    fn advance_to(&self, at: Duration) {
        self.clock.advance(at.saturating_sub(self.clock.elapsed()));
    }

    /// Whether the agent's own view grades GPU `index` Unhealthy, and its failed GpuNode writes
    /// so far.
    fn local(&self, index: u32) -> (bool, u64) {
        self.view.lock().map_or((false, 0), |view| {
            (
                view.health.get(&index).is_some_and(|health| {
                    health.state == gpufleet_agent::health::HealthState::Unhealthy
                }),
                view.counters.publishes.get("error").copied().unwrap_or(0),
            )
        })
    }

    async fn stop(mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.publisher).await;
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

/// Polls the GpuNode every 50 ms until `ready` holds; returns it and how long it took. Fails
/// after `limit`, naming `what` and the GpuNode as last seen.
async fn wait_for(
    api: &Api<GpuNode>,
    name: &str,
    limit: Duration,
    what: &str,
    ready: impl Fn(&GpuNode) -> bool,
) -> anyhow::Result<(GpuNode, Duration)> {
    let started = Instant::now();
    let found = std::cell::RefCell::new(None);
    wait_every(limit, Duration::from_millis(50), what, || async {
        let object = api.get_opt(name).await?;
        Ok(match object {
            Some(object) if ready(&object) => {
                *found.borrow_mut() = Some(object);
                Seen::Done
            }
            Some(object) => Seen::NotYet(describe(&object)),
            None => Seen::NotYet(format!("no GpuNode {name}")),
        })
    })
    .await?;
    let object = found
        .into_inner()
        .ok_or_else(|| anyhow::anyhow!("{what}: the GpuNode vanished"))?;
    Ok((object, started.elapsed()))
}

/// Each GPU's health and free memory, for wait messages.
fn describe(object: &GpuNode) -> String {
    let gpus: Vec<String> = object
        .status
        .as_ref()
        .map(|status| {
            status
                .gpus
                .iter()
                .map(|gpu| {
                    format!(
                        "{}:{:?}/{:?}MiB",
                        gpu.index, gpu.health.state, gpu.telemetry.memory_free_mib
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!("GpuNode GPUs [{}]", gpus.join(" "))
}

fn gpu_state(object: &GpuNode, index: usize) -> Option<HealthState> {
    object
        .status
        .as_ref()?
        .gpus
        .get(index)
        .map(|gpu| gpu.health.state)
}

fn free_mib(object: &GpuNode, index: usize) -> Option<u64> {
    object
        .status
        .as_ref()?
        .gpus
        .get(index)?
        .telemetry
        .memory_free_mib
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run the README test command"]
async fn agent_publishes_and_reports_xid_79_and_foreign_memory() -> TestResult {
    let client = kube::Client::try_default().await?;
    let name = unique("xid");
    let node = create_node(&client, &name).await?;
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    // Xid 79 on GPU 3 and a 20 GiB foreign process on GPU 0, when the test moves the
    // simulation to 6 s.
    let agent = Agent::start(
        client.clone(),
        &name,
        "xid:79@gpu3@t=6s,foreign:20000@gpu0@t=6s",
    )?;

    // The first publish may carry the inventory before the first sample (the sampler and the
    // publisher run independently): wait for both.
    let (object, _) = wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(60),
        "a GpuNode with 8 sampled GPUs",
        |object| {
            object
                .status
                .as_ref()
                .is_some_and(|status| status.gpus.len() == 8)
                && free_mib(object, 0).is_some()
        },
    )
    .await?;
    let owner = object.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|owner| owner.uid.clone()),
        node.metadata.uid.clone()
    );
    assert_eq!(gpu_state(&object, 3), Some(HealthState::Healthy));
    let free_before = free_mib(&object, 0).ok_or("no free memory published")?;
    assert!(
        free_before > 0,
        "GPU 0 has no free memory to take: {}",
        describe(&object)
    );
    let labelled = Api::<Node>::all(client.clone()).get(&name).await?;
    let labels = labelled.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("nvidia.com/gpu.product").map(String::as_str),
        Some("NVIDIA-H100-80GB-HBM3")
    );
    assert_eq!(
        labels.get("nvidia.com/gpu.count").map(String::as_str),
        Some("8")
    );

    // The scripted faults happen now.
    agent.advance_to(Duration::from_secs(6));
    let (object, latency) = wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(60),
        "GPU 3 Unhealthy after the Xid 79",
        |object| gpu_state(object, 3) == Some(HealthState::Unhealthy),
    )
    .await?;
    eprintln!(
        "Xid 79 reached the GpuNode {} ms after it happened",
        latency.as_millis()
    );
    let reasons: Vec<String> = object
        .status
        .as_ref()
        .map(|status| {
            status.gpus[3]
                .health
                .reasons
                .iter()
                .map(|reason| reason.code.clone())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        reasons.iter().any(|code| code == "FellOffTheBus"),
        "{reasons:?}"
    );

    let (_, latency) = wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(60),
        "the foreign process as less free memory",
        // 20 GiB less, or none left: the simulated jobs of a randomly named node may leave
        // less than 20 GiB free, and free memory stops at 0 (seen in one CI run in five).
        |object| free_mib(object, 0).is_some_and(|free| free <= free_before.saturating_sub(20_000)),
    )
    .await?;
    eprintln!(
        "foreign memory reached the GpuNode within {} ms",
        latency.as_millis()
    );

    agent.stop().await;
    Api::<Node>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await?;
    let _ = gpu_nodes.delete(&name, &DeleteParams::default()).await;
    Ok(())
}

fn foreign_mib(object: &GpuNode, index: usize) -> Option<u64> {
    object
        .status
        .as_ref()?
        .gpus
        .get(index)?
        .telemetry
        .foreign_memory_mib
}

/// A Pod bound to `node`, placed by gpufleet on `gpu_uuids` when given.
async fn create_pod(
    client: &kube::Client,
    name: &str,
    node: &str,
    gpu_uuids: Option<&str>,
) -> Result<Pod, kube::Error> {
    let annotations = gpu_uuids
        .map(|uuids| serde_json::json!({ "gpufleet.io/gpu-uuids": uuids }))
        .unwrap_or_else(|| serde_json::json!({}));
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }],
            "containers": [{ "name": "model", "image": "registry.k8s.io/pause:3.10" }]
        }
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run the README test command"]
async fn foreign_memory_counts_what_gpufleet_did_not_place() -> TestResult {
    let client = kube::Client::try_default().await?;
    let name = unique("foreign");
    create_node(&client, &name).await?;
    // The same node name gives the same simulated GPUs: their UUIDs and their jobs' processes.
    let mut twin = SimulatedSource::new(
        preset::dgx_h100(),
        &name,
        parse_script("foreign:20000@gpu0@t=0s")?,
        SimulationClock::manual(),
    );
    let inventory = twin.inventory()?;
    let sample = twin.sample()?;
    let processes = |index: usize| sample.gpus[index].processes.clone().unwrap_or_default();
    let job = |index: usize| {
        processes(index)
            .into_iter()
            .find(|process| process.pid < 40_000)
    };
    let foreign = processes(0)
        .into_iter()
        .find(|process| process.pid >= 40_000)
        .ok_or("the simulated foreign process is missing")?;

    // GPU 0's job runs in a Pod gpufleet placed on GPU 0; GPU 1's job in a Pod placed by
    // someone else (no gpufleet annotation); the foreign process on GPU 0 outside any Pod.
    let uuid0 = inventory[0].uuid.clone().ok_or("no UUID")?;
    let placed = create_pod(&client, &format!("{name}-placed"), &name, Some(&uuid0)).await?;
    let other = create_pod(&client, &format!("{name}-other"), &name, None).await?;
    let root = std::env::temp_dir().join(format!("gpufleet-cluster-proc-{name}"));
    let write = |pid: u32, cgroup: String| -> std::io::Result<()> {
        std::fs::create_dir_all(root.join(pid.to_string()))?;
        std::fs::write(root.join(pid.to_string()).join("cgroup"), cgroup)
    };
    let pod_cgroup = |pod: &Pod| {
        format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-1.scope\n",
            pod.metadata
                .uid
                .clone()
                .unwrap_or_default()
                .replace('-', "_")
        )
    };
    if let Some(process) = job(0) {
        write(process.pid, pod_cgroup(&placed))?;
    }
    if let Some(process) = job(1) {
        write(process.pid, pod_cgroup(&other))?;
    }
    write(
        foreign.pid,
        "0::/system.slice/stray-training.service\n".to_owned(),
    )?;

    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let agent = Agent::start_with_processes(
        client.clone(),
        &name,
        "foreign:20000@gpu0@t=0s",
        Some(ProcessTable::new(&root)),
    )?;
    let job1 = job(1)
        .and_then(|process| process.used_memory_mib)
        .unwrap_or(0);
    let found = wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(60),
        &format!("foreignMemoryMiB 20000 on GPU 0 and {job1} on GPU 1"),
        |object| foreign_mib(object, 0) == Some(20_000) && foreign_mib(object, 1) == Some(job1),
    )
    .await;
    let last = gpu_nodes.get_opt(&name).await?;

    agent.stop().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for pod in [&placed, &other] {
        if let Some(pod_name) = &pod.metadata.name {
            let _ = pods.delete(pod_name, &DeleteParams::default()).await;
        }
    }
    Api::<Node>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await?;
    let _ = gpu_nodes.delete(&name, &DeleteParams::default()).await;
    let _ = std::fs::remove_dir_all(&root);

    let (_, latency) = found.map_err(|error| {
        format!(
            "{error}; last foreignMemoryMiB of GPU 0 and 1: {:?}",
            last.map(|object| (foreign_mib(&object, 0), foreign_mib(&object, 1)))
        )
    })?;
    eprintln!(
        "foreignMemoryMiB reached the GpuNode {} ms after the agent started",
        latency.as_millis()
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run the README test command"]
async fn agent_recreates_a_deleted_gpunode() -> TestResult {
    let client = kube::Client::try_default().await?;
    let name = unique("deleted");
    create_node(&client, &name).await?;
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let agent = Agent::start(client.clone(), &name, "thermal@gpu1@t=2s")?;
    wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(60),
        "the agent's first GpuNode",
        |object| object.status.is_some(),
    )
    .await?;
    agent.advance_to(Duration::from_secs(2));
    gpu_nodes.delete(&name, &DeleteParams::default()).await?;
    // The next write (health change or heartbeat) finds it gone and recreates it; the thermal
    // fault turns Degraded after its 10 s grace, a change that is published at once.
    wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(90),
        "the GpuNode recreated, GPU 1 Degraded",
        |object| {
            object.metadata.deletion_timestamp.is_none()
                && gpu_state(object, 1) == Some(HealthState::Degraded)
        },
    )
    .await?;
    agent.stop().await;
    Api::<Node>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await?;
    let _ = gpu_nodes.delete(&name, &DeleteParams::default()).await;
    Ok(())
}

/// Renders one of the agent's templates of the Helm chart (`charts/gpufleet`, the one source of
/// the agent's RBAC, admission policy and DaemonSet) as release `gpufleet` in `gpufleet-system`,
/// with the helm in `GPUFLEET_HELM` (the README test command builds one) or on PATH.
fn render_agent_template(file: &str) -> Result<String, Box<dyn std::error::Error>> {
    let helm = std::env::var("GPUFLEET_HELM").unwrap_or_else(|_| "helm".to_owned());
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/gpufleet");
    let output = std::process::Command::new(&helm)
        .arg("template")
        .arg("gpufleet")
        .arg(&chart)
        .args(["--namespace", "gpufleet-system"])
        .args(["--show-only", &format!("templates/agent/{file}")])
        .output()
        .map_err(|error| format!("running {helm}: {error}; set GPUFLEET_HELM to a helm binary"))?;
    if !output.status.success() {
        return Err(format!(
            "helm template --show-only templates/agent/{file} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Applies every document of one of the agent's chart templates with the admin client.
async fn apply_manifests(client: &kube::Client, file: &str) -> TestResult {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Patch, PatchParams};
    let text = render_agent_template(file)?;
    let params = PatchParams::apply("gpufleet-agent-e2e").force();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)?;
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let patch = Patch::Apply(&value);
        match value["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                let namespace = value["metadata"]["namespace"].as_str().unwrap_or("default");
                let namespaces: Api<Namespace> = Api::all(client.clone());
                namespaces
                    .patch(namespace, &params, &Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})))
                    .await?;
                Api::<ServiceAccount>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &patch)
                    .await?;
            }
            "ClusterRole" => drop(
                Api::<ClusterRole>::all(client.clone())
                    .patch(&name, &params, &patch)
                    .await?,
            ),
            "ClusterRoleBinding" => drop(
                Api::<ClusterRoleBinding>::all(client.clone())
                    .patch(&name, &params, &patch)
                    .await?,
            ),
            "ValidatingAdmissionPolicy" => drop(
                Api::<ValidatingAdmissionPolicy>::all(client.clone())
                    .patch(&name, &params, &patch)
                    .await?,
            ),
            "ValidatingAdmissionPolicyBinding" => {
                drop(
                    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                        .patch(&name, &params, &patch)
                        .await?,
                );
            }
            other => return Err(format!("{file}: unexpected kind {other}").into()),
        }
    }
    Ok(())
}

/// A client that authenticates as the agent's service account with a token bound to a pod on
/// `node` (so the token carries that node's name, as a DaemonSet pod's projected token does).
async fn agent_client_on(
    client: &kube::Client,
    node: &str,
) -> Result<(kube::Client, String), Box<dyn std::error::Error>> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let namespace = "gpufleet-system";
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": format!("{node}-agent") },
        "spec": {
            "nodeName": node,
            "serviceAccountName": "gpufleet-agent",
            "tolerations": [{ "operator": "Exists" }],
            "containers": [{ "name": "agent", "image": "gpufleet:latest" }]
        }
    }))?;
    let pod = pods.create(&PostParams::default(), &pod).await?;
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [],
            "expirationSeconds": 600,
            "boundObjectRef": { "apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid }
        }
    }))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let token: TokenRequest = accounts
        .create_subresource("token", "gpufleet-agent", &PostParams::default(), &request)
        .await?;
    let token = token
        .status
        .map(|status| status.token)
        .ok_or("no token issued")?;
    let mut config = kube::Config::infer().await?;
    config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))?;
    Ok((
        kube::Client::try_from(config)?,
        pod.metadata.name.unwrap_or_default(),
    ))
}

fn gpu_node_object(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "GpuNode",
        "metadata": { "name": name },
        "spec": { "nodeName": name }
    })
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run the README test command"]
async fn agent_of_node_a_may_not_write_node_b() -> TestResult {
    use kube::api::{Patch, PatchParams};
    let admin = kube::Client::try_default().await?;
    apply_manifests(&admin, "rbac.yaml").await?;
    apply_manifests(&admin, "admission-policy.yaml").await?;
    let node_a = unique("a");
    let node_b = unique("b");
    create_node(&admin, &node_a).await?;
    create_node(&admin, &node_b).await?;
    let (agent, pod) = agent_client_on(&admin, &node_a).await?;
    let as_agent: Api<GpuNode> = Api::all(agent);
    let params = PatchParams::apply(gpufleet_agent::publisher::FIELD_MANAGER);

    // The policy takes effect within a few seconds of being created.
    let refused = std::cell::RefCell::new(None);
    wait_until(
        Duration::from_secs(60),
        "the admission policy to refuse node A's agent writing node B's GpuNode",
        || async {
            match as_agent
                .patch(&node_b, &params, &Patch::Apply(gpu_node_object(&node_b)))
                .await
            {
                Err(kube::Error::Api(response)) if response.code == 403 || response.code == 422 => {
                    *refused.borrow_mut() = Some(response);
                    Ok(Seen::Done)
                }
                other => {
                    let _ = Api::<GpuNode>::all(admin.clone())
                        .delete(&node_b, &DeleteParams::default())
                        .await;
                    Ok(Seen::NotYet(format!("the write answered {other:?}")))
                }
            }
        },
    )
    .await?;
    let refusal = refused.into_inner().ok_or("no refusal recorded")?;
    eprintln!("refused: {}", refusal.message);
    assert!(
        refusal.message.contains(&node_a) && refusal.message.contains(&node_b),
        "{}",
        refusal.message
    );
    as_agent
        .patch(&node_a, &params, &Patch::Apply(gpu_node_object(&node_a)))
        .await?;

    let gpu_nodes: Api<GpuNode> = Api::all(admin.clone());
    let _ = gpu_nodes.delete(&node_a, &DeleteParams::default()).await;
    let _ = gpu_nodes.delete(&node_b, &DeleteParams::default()).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(admin.clone(), "gpufleet-system");
    let _ = pods.delete(&pod, &DeleteParams::default()).await;
    for node in [&node_a, &node_b] {
        let _ = Api::<Node>::all(admin.clone())
            .delete(node, &DeleteParams::default())
            .await;
    }
    Ok(())
}

/// A TCP relay in front of the apiserver that the test can switch off and on: an outage the
/// agent cannot tell from an apiserver restart (connections reset, new ones refused), without
/// restarting a control plane other tests share.
struct Relay {
    address: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    async fn start(upstream: String) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (relay_up, relay_generation) = (Arc::clone(&up), Arc::clone(&generation));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !relay_up.load(Ordering::Relaxed) {
                    continue; // dropped: connection refused, as by a stopped apiserver
                }
                let upstream = upstream.clone();
                let born = relay_generation.load(Ordering::Relaxed);
                let (alive_up, alive_generation) =
                    (Arc::clone(&relay_up), Arc::clone(&relay_generation));
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while alive_up.load(Ordering::Relaxed)
                            && alive_generation.load(Ordering::Relaxed) == born
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, () = cut => {} }
                });
            }
        });
        Ok(Self {
            address,
            up,
            generation,
        })
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: run the README test command"]
async fn agent_survives_an_apiserver_outage_and_republishes() -> TestResult {
    let admin = kube::Client::try_default().await?;
    let mut config = kube::Config::infer().await?;
    let upstream = config
        .cluster_url
        .authority()
        .map(ToString::to_string)
        .ok_or("no apiserver address")?;
    let relay = Relay::start(upstream).await?;
    let host = config.cluster_url.host().unwrap_or("127.0.0.1").to_owned();
    config.cluster_url = format!("https://{host}:{}", relay.address.port()).parse()?;
    let through_relay = kube::Client::try_from(config)?;

    let name = unique("outage");
    create_node(&admin, &name).await?;
    let gpu_nodes: Api<GpuNode> = Api::all(admin.clone());
    // Xid 79 on GPU 5 while the apiserver is away.
    let agent = Agent::start(through_relay, &name, "xid:79@gpu5@t=6s")?;
    wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(60),
        "a GpuNode with GPU 5 Healthy",
        |object| gpu_state(object, 5) == Some(HealthState::Healthy),
    )
    .await?;
    relay.set_up(false);
    let (_, errors_before) = agent.local(5);
    agent.advance_to(Duration::from_secs(6));
    // The agent sees the Xid and fails to publish it while the relay is down.
    wait_until(
        Duration::from_secs(120),
        "the agent to grade GPU 5 Unhealthy and fail to publish it",
        || async {
            let (unhealthy, errors) = agent.local(5);
            Ok(Seen::done_if(unhealthy && errors > errors_before, || {
                format!(
                    "GPU 5 Unhealthy in the agent's view: {unhealthy}; failed writes {}",
                    errors - errors_before
                )
            }))
        },
    )
    .await?;
    let during = gpu_nodes.get(&name).await?;
    assert_eq!(
        gpu_state(&during, 5),
        Some(HealthState::Healthy),
        "published through a dead relay?"
    );
    assert!(
        !agent.publisher.is_finished(),
        "the publisher gave up during the outage"
    );
    relay.set_up(true);
    let (_, latency) = wait_for(
        &gpu_nodes,
        &name,
        Duration::from_secs(90),
        "GPU 5 Unhealthy republished after the outage",
        |object| gpu_state(object, 5) == Some(HealthState::Unhealthy),
    )
    .await?;
    eprintln!(
        "republished {} ms after the apiserver came back",
        latency.as_millis()
    );
    agent.stop().await;
    Api::<Node>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await?;
    let _ = gpu_nodes.delete(&name, &DeleteParams::default()).await;
    Ok(())
}
