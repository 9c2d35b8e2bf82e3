//! Shared helpers of the end-to-end tests: a client for the cluster in `KUBECONFIG`, the CRDs
//! installed once, and a fresh namespace per test.
//!
//! These tests need a real kube-apiserver. `bash tests/run-all.sh` (the README's test command)
//! builds and starts one and runs them with `--ignored`; any cluster works through `KUBECONFIG`.

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
                    let current = crds.get(&name).await?;
                    Ok(current
                        .status
                        .and_then(|s| s.conditions)
                        .is_some_and(|conditions| {
                            conditions
                                .iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        }))
                }
            },
        )
        .await?;
    }
    Ok(())
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

/// Polls `check` every 200 ms until it returns true, failing after `timeout` with `what`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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
