//! Shared helpers of the end-to-end tests: a client for the cluster in `KUBECONFIG`, the CRDs
//! installed once, and a fresh namespace per test.
//!
//! These tests need a real kube-apiserver. `bash tests/run-all.sh` (the README's test command)
//! builds and starts one and runs them with `--ignored`; any cluster works through `KUBECONFIG`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};

/// Field manager the tests apply with.
pub const FIELD_MANAGER: &str = "gpufleet-e2e-tests";

/// A client for the cluster `KUBECONFIG` points at, with a message that says how to get one.
pub async fn client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!("KUBECONFIG is not set: start the test control plane with `bash tests/run-all.sh`");
    }
    let config = Config::infer().await.context("reading KUBECONFIG")?;
    Client::try_from(config).context("building a client from KUBECONFIG")
}

/// Applies gpufleet's CRDs (server-side, idempotent) and waits until every one is Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in gpufleet_api::custom_resource_definitions() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    for crd in gpufleet_api::custom_resource_definitions() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        wait_until(
            Duration::from_secs(30),
            &format!("CRD {name} Established"),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let conditions = crds
                        .get(&name)
                        .await?
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default();
                    let established = conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(Seen::done_if(established, || {
                        format!("conditions {:?}", condition_summary(&conditions))
                    }))
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// `type=status` of each CRD condition, for wait messages.
fn condition_summary(
    conditions: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionCondition],
) -> Vec<String> {
    conditions
        .iter()
        .map(|c| format!("{}={}", c.type_, c.status))
        .collect()
}

/// A namespace of its own for one test, deleted when the guard drops.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `gpufleet-e2e-<prefix>-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let suffix: u32 = std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos());
        let name = format!("e2e-{prefix}-{:x}", suffix % 0xfffff);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let name = self.name.clone();
        // Best effort: the control plane is torn down after the run anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
            });
        }
    }
}

pub use gpufleet_test_support::{Seen, wait_until};

/// Runs kubectl (`GPUFLEET_KUBECTL` or `kubectl` on PATH) against `KUBECONFIG`, returning stdout.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let program = std::env::var("GPUFLEET_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let output = std::process::Command::new(&program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}: set GPUFLEET_KUBECTL to a kubectl binary"))?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Creates `count` KWOK GPU nodes named `<prefix>-<i>` with 8 H100s each, labelled
/// `gpufleet.io/e2e-pool=<prefix>` so a test's deployments can keep to its own nodes, and a
/// fresh GpuNode with healthy telemetry for each. Returns the node names.
pub async fn create_gpu_pool(
    client: &Client,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    use gpufleet_api::GpuNode;
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let names = create_kwok_gpu_nodes(client, prefix, count).await?;
    for name in &names {
        let gpu_node: GpuNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
            "metadata": {"name": name}, "spec": {"nodeName": name}
        }))?;
        gpu_nodes.create(&PostParams::default(), &gpu_node).await?;
        set_gpu_health(client, name, None).await?;
    }
    Ok(names)
}

/// Creates `count` KWOK nodes `<prefix>-<i>` with 8 H100s each (GFD labels, `nvidia.com/gpu`
/// allocatable and taint, pool label `gpufleet.io/e2e-pool=<prefix>`) and waits until they are
/// Ready; no GpuNode (an agent publishes it). Returns the node names.
pub async fn create_kwok_gpu_nodes(
    client: &Client,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names = Vec::new();
    for index in 0..count {
        let name = format!("{prefix}-{index}");
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": name, "type": "kwok", "gpufleet.io/e2e-pool": prefix,
                    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
                    "nvidia.com/gpu.memory": "81559"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "128", "memory": "2048Gi", "pods": "110", "nvidia.com/gpu": "8"},
                       "allocatable": {"cpu": "126", "memory": "2000Gi", "pods": "110", "nvidia.com/gpu": "8"}}
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        names.push(name);
    }
    for name in &names {
        let nodes = nodes.clone();
        let name = name.clone();
        wait_until(
            Duration::from_secs(60),
            &format!("node {name} Ready"),
            move || {
                let nodes = nodes.clone();
                let name = name.clone();
                async move {
                    let node = nodes.get(&name).await?;
                    Ok(Seen::done_if(
                        gpufleet_api::conditions::node_ready(&node),
                        || {
                            format!(
                                "conditions {:?}",
                                node.status
                                    .and_then(|s| s.conditions)
                                    .unwrap_or_default()
                                    .iter()
                                    .map(|c| format!("{}={}", c.type_, c.status))
                                    .collect::<Vec<_>>()
                            )
                        },
                    ))
                }
            },
        )
        .await?;
    }
    Ok(names)
}

/// Writes the GpuNode status of `node` as its agent would: 8 healthy H100s with 80 GB free and
/// a fresh heartbeat, except GPU `unhealthy` (if any), graded Unhealthy by an Xid 79.
pub async fn set_gpu_health(
    client: &Client,
    node: &str,
    unhealthy: Option<u32>,
) -> anyhow::Result<()> {
    use gpufleet_api::GpuNode;
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let gpus: Vec<serde_json::Value> = (0..8u32)
        .map(|index| {
            let health = if Some(index) == unhealthy {
                serde_json::json!({"state": "Unhealthy", "reasons": [{"code": "Xid79",
                    "message": "GPU has fallen off the bus", "severity": "Unhealthy", "needsReset": true}]})
            } else {
                serde_json::json!({"state": "Healthy"})
            };
            serde_json::json!({"index": index, "uuid": format!("GPU-{node}-{index}"),
                "product": "NVIDIA-H100-80GB-HBM3", "memoryTotalMiB": 81559, "computeCapability": "9.0",
                "nvlinkGroup": 0,
                "telemetry": {"memoryFreeMiB": 80000, "memoryUsedMiB": 1559, "utilizationPercent": 0,
                              "temperatureCelsius": 40, "powerWatts": 90.0, "powerLimitWatts": 700.0,
                              "sampledAt": now},
                "health": health})
        })
        .collect();
    let status = serde_json::json!({
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "GpuNode",
        "status": {"gpus": gpus, "lastHeartbeatTime": now, "source": "e2e-test"}
    });
    gpu_nodes
        .patch_status(
            node,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await?;
    Ok(())
}

/// Deletes the nodes and GpuNodes of a pool (best effort).
pub async fn delete_gpu_pool(client: &Client, names: &[String]) {
    use gpufleet_api::GpuNode;
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(client.clone());
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    for name in names {
        let _ = nodes.delete(name, &DeleteParams::default()).await;
        let _ = gpu_nodes.delete(name, &DeleteParams::default()).await;
    }
}

/// A running `gpufleet operator` process, killed when dropped.
pub struct OperatorProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its Lease identity.
    pub identity: String,
}

impl OperatorProcess {
    /// Starts an operator scoped to `namespace`, electing through Lease `lease` in it, with
    /// `extra` arguments; its log goes to `$CARGO_TARGET_TMPDIR/<identity>.log`.
    pub fn start_with(
        namespace: &str,
        lease: &str,
        identity: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log_path =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{identity}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpufleet"))
            .args([
                "operator",
                "--namespace",
                namespace,
                "--lease-namespace",
                namespace,
                "--lease-name",
                lease,
                "--identity",
                identity,
                "--lease-duration-seconds",
                "10",
                "--metrics-bind",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(extra)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the operator (log: {})", log_path.display()))?;
        Ok(Self {
            child,
            identity: identity.to_owned(),
        })
    }

    /// Kills the process at once (SIGKILL: no chance to release anything).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian's Chromium, or `GPUFLEET_CHROMIUM`.
pub fn chromium() -> PathBuf {
    std::env::var_os("GPUFLEET_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Headless Chromium on `url`; returns the DOM after `budget_ms` of virtual time, and saves a
/// screenshot as `$CARGO_TARGET_TMPDIR/browser/<name>.png`.
pub fn browse(url: &str, budget_ms: u32, name: &str) -> anyhow::Result<String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir)?;
    let run = |mode: &str| -> anyhow::Result<std::process::Output> {
        let profile = dir.join(format!("profile-{name}-{mode}-{}", std::process::id()));
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg(mode)
            .arg(url)
            .stderr(Stdio::null())
            .output()
            .context("run chromium (apt-get install chromium, or set GPUFLEET_CHROMIUM)")
    };
    let dom = run("--dump-dom")?;
    let shot = dir.join(format!("{name}.png"));
    let screenshot = run(&format!("--screenshot={}", shot.display()))?;
    if !screenshot.status.success() || std::fs::metadata(&shot).map_or(0, |m| m.len()) < 10_000 {
        bail!("no screenshot of {url} at {}", shot.display());
    }
    eprintln!("screenshot: {}", shot.display());
    Ok(String::from_utf8_lossy(&dom.stdout).into_owned())
}

/// The opening tag of the element carrying `attribute`.
pub fn tag_with<'a>(dom: &'a str, attribute: &str) -> Option<&'a str> {
    let at = dom.find(attribute)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// Takes KWOK node `node` down as a dead kubelet would leave it: KWOK (which keeps the nodes it
/// manages Ready) lets go of it, then its Ready condition turns False, as the node lifecycle
/// controller would report after missed heartbeats. Returns when the NotReady status was sent.
pub async fn take_node_down(
    client: &Client,
    node: &str,
    message: &str,
) -> anyhow::Result<std::time::Instant> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(client.clone());
    let unmanage = serde_json::json!({"metadata": {"annotations": {"kwok.x-k8s.io/node": null}}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&unmanage))
        .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let not_ready = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False",
        "reason": "KubeletStopped", "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    let sent_at = std::time::Instant::now();
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&not_ready))
        .await?;
    Ok(sent_at)
}

/// A plain HTTP/1.1 GET of `path` on `address`; the body of a 200 response.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}
