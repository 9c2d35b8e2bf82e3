//! The Helm chart `charts/gpufleet`: `helm lint --strict` with every values file, the values
//! schema refusing bad values by name, every rendered manifest accepted by the real apiserver
//! (`kubectl apply --server-side --dry-run=server`), and RBAC that lets each component do what its code calls
//! and nothing more, asked of the real authorizer with `kubectl auth can-i --as` the component's
//! ServiceAccount.
//!
//! helm comes from `GPUFLEET_HELM` (the README test command builds one from the Go module proxy)
//! or PATH; kubectl from `GPUFLEET_KUBECTL` or PATH.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::support::{Seen, TestNamespace, client, install_crds, wait_until};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/gpufleet")
}

/// The values files the chart is checked with: none (the defaults), then every `ci/*.yaml`.
fn values_files() -> anyhow::Result<Vec<Option<PathBuf>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| {
        path.extension()
            .is_some_and(|extension| extension == "yaml")
    });
    files.sort();
    ensure!(
        files.len() >= 2,
        "expected ci/all-features-values.yaml and ci/minimal-values.yaml, found {files:?}"
    );
    Ok(std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect())
}

fn describe(values: Option<&Path>) -> String {
    values.map_or_else(
        || "the default values".to_owned(),
        |path| path.display().to_string(),
    )
}

/// Runs a program with `args` (and `input` on stdin), returning its output whatever the status.
fn run(program: &str, args: &[&str], input: Option<&str>) -> anyhow::Result<Output> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

fn helm(args: &[&str]) -> anyhow::Result<Output> {
    let program = std::env::var("GPUFLEET_HELM").unwrap_or_else(|_| "helm".to_owned());
    run(&program, args, None)
        .with_context(|| format!("set GPUFLEET_HELM to a helm binary (tried {program})"))
}

fn kubectl(args: &[&str], input: Option<&str>) -> anyhow::Result<Output> {
    let program = std::env::var("GPUFLEET_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    run(&program, args, input)
        .with_context(|| format!("set GPUFLEET_KUBECTL to a kubectl binary (tried {program})"))
}

fn succeeded(what: &str, output: &Output) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout.clone())?)
}

/// `helm template` of the chart as `release` in `namespace`, with `values` and more arguments.
fn render(
    release: &str,
    namespace: &str,
    values: Option<&Path>,
    more: &[&str],
) -> anyhow::Result<String> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().context("chart path")?,
        "--namespace",
        namespace,
    ];
    if let Some(values) = values {
        args.extend(["--values", values.to_str().context("values path")?]);
    }
    args.extend(more);
    succeeded(
        &format!("helm template with {}", describe(values)),
        &helm(&args)?,
    )
}

/// The rendered documents, parsed (empty documents skipped).
fn documents(rendered: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(rendered) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn kind_and_name(document: &Value) -> (&str, &str) {
    (
        document["kind"].as_str().unwrap_or_default(),
        document["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

#[test]
#[ignore = "needs helm: run `bash tests/run-all.sh` or set GPUFLEET_HELM and pass --ignored"]
fn chart_lints_clean_with_every_values_file() -> anyhow::Result<()> {
    let chart = chart();
    for values in values_files()? {
        let mut args = vec!["lint", "--strict", chart.to_str().context("chart path")?];
        if let Some(values) = &values {
            args.extend(["--values", values.to_str().context("values path")?]);
        }
        let what = format!("helm lint --strict with {}", describe(values.as_deref()));
        let output = succeeded(&what, &helm(&args)?)?;
        ensure!(
            output.contains("0 chart(s) failed")
                && !output.contains("[WARNING]")
                && !output.contains("[ERROR]"),
            "{what}:\n{output}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs helm: run `bash tests/run-all.sh` or set GPUFLEET_HELM and pass --ignored"]
fn values_schema_and_templates_refuse_bad_values_by_name() -> anyhow::Result<()> {
    // (--set, what the error must say)
    let cases = [
        ("operator.replicas=-1", "'/operator/replicas': minimum"),
        (
            "operator.replicaz=2",
            "additional properties 'replicaz' not allowed",
        ),
        (
            "agent.nvml.mode=cuda",
            "'/agent/nvml/mode': value must be one of",
        ),
        ("image.pullPolicy=Sometimes", "'/image/pullPolicy'"),
        (
            "dashboard.service.port=70000",
            "'/dashboard/service/port': maximum",
        ),
        ("agent.metrics.port=metrics", "'/agent/metrics/port'"),
        (
            "serviceMonitor.interval=often",
            "'/serviceMonitor/interval'",
        ),
        (
            "agent.nvml.hostPath.libraryDirectory=lib",
            "'/agent/nvml/hostPath/libraryDirectory'",
        ),
        (
            "operator.leaderElection.enabled=false",
            "operator.replicas > 1 needs operator.leaderElection.enabled=true",
        ),
        (
            "dashboard.database.existingSecret=",
            "dashboard.database.existingSecret",
        ),
    ];
    for (set, expected) in cases {
        let output = helm(&[
            "template",
            "refused",
            chart().to_str().context("chart path")?,
            "--set",
            set,
        ])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            !output.status.success(),
            "helm template --set {set} was accepted"
        );
        ensure!(
            stderr.contains(expected),
            "helm template --set {set}: the error does not say {expected:?}:\n{stderr}"
        );
    }
    // `helm lint` refuses them too.
    let output = helm(&[
        "lint",
        "--strict",
        chart().to_str().context("chart path")?,
        "--set",
        "operator.replicas=-1",
    ])?;
    ensure!(
        !output.status.success(),
        "helm lint accepted operator.replicas=-1"
    );
    Ok(())
}

#[test]
#[ignore = "needs helm: run `bash tests/run-all.sh` or set GPUFLEET_HELM and pass --ignored"]
fn dashboard_without_recorder_gets_no_role_and_no_token() -> anyhow::Result<()> {
    let defaults = documents(&render("gpufleet", "gpufleet-system", None, &[])?)?;
    let mut saw_dashboard = false;
    for document in &defaults {
        match kind_and_name(document) {
            ("ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding", name) => ensure!(
                !name.contains("dashboard"),
                "the dashboard got {name} without the recorder"
            ),
            ("Deployment", "gpufleet-dashboard") => {
                saw_dashboard = true;
                let spec = &document["spec"]["template"]["spec"];
                ensure!(
                    spec["automountServiceAccountToken"] == Value::Bool(false),
                    "the dashboard mounts a token without the recorder: {spec}"
                );
            }
            _ => {}
        }
    }
    ensure!(saw_dashboard, "no gpufleet-dashboard Deployment rendered");
    Ok(())
}

/// A minimal stand-in for the Prometheus Operator's ServiceMonitor CRD (only the fields the
/// chart sets, typed as upstream types them), installed only where the real one is absent and
/// removed after, so a cluster that runs the Prometheus Operator keeps its own.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
  labels: {gpufleet.io/e2e: chart-stand-in}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [selector]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      relabelings:
                        type: array
                        items:
                          type: object
                          properties:
                            sourceLabels: {type: array, items: {type: string}}
                            targetLabel: {type: string}
"#;

/// Deletes what a test made (its namespaces, the cluster-scoped objects), also when it fails:
/// each entry is a kubectl command line.
struct Cleanup {
    what: Vec<Vec<String>>,
}

/// The kubectl command line that deletes `namespace` (without waiting for it to go).
fn delete_namespace(namespace: &str) -> Vec<String> {
    [
        "delete",
        "namespace",
        namespace,
        "--wait=false",
        "--ignore-not-found",
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.what {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = kubectl(&args, None);
        }
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server and helm: run `bash tests/run-all.sh`"]
async fn every_rendered_manifest_passes_server_side_dry_run() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let namespace = TestNamespace::create(&client, "chart").await?;
    let mut cleanup = Cleanup {
        what: vec![delete_namespace(&namespace.name)],
    };
    let crd = "customresourcedefinition/servicemonitors.monitoring.coreos.com";
    if !kubectl(&["get", crd], None)?.status.success() {
        cleanup.what.push(
            ["delete", crd, "--ignore-not-found", "--wait=false"]
                .map(str::to_owned)
                .to_vec(),
        );
        succeeded(
            "installing the ServiceMonitor stand-in CRD",
            &kubectl(&["apply", "-f", "-"], Some(SERVICE_MONITOR_CRD))?,
        )?;
        succeeded(
            "waiting for the ServiceMonitor CRD",
            &kubectl(
                &["wait", "--for=condition=Established", crd, "--timeout=30s"],
                None,
            )?,
        )?;
    }
    for values in values_files()? {
        // The CRDs too: they are part of what `helm install` sends.
        let rendered = render(
            &namespace.name,
            &namespace.name,
            values.as_deref(),
            &["--include-crds"],
        )?;
        let expected = documents(&rendered)?;
        ensure!(
            !expected.is_empty(),
            "{} rendered nothing",
            describe(values.as_deref())
        );
        let output = kubectl(
            // Server-side, as the README installs CRDs (too large for client-side apply's
            // annotation); forced, because install_crds applied them under another manager.
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-f",
                "-",
            ],
            Some(&rendered),
        )?;
        let what = format!(
            "kubectl apply --server-side --dry-run=server of the chart with {}",
            describe(values.as_deref())
        );
        let accepted = succeeded(&what, &output)?;
        for document in &expected {
            let (kind, name) = kind_and_name(document);
            // e.g. `clusterrole.rbac.authorization.k8s.io/NAME serverside-applied (server dry run)`
            let kind = kind.to_lowercase();
            let object = format!("/{name} ");
            ensure!(
                accepted.lines().any(|line| {
                    line.strip_prefix(kind.as_str())
                        .is_some_and(|rest| rest.starts_with(['/', '.']))
                        && line.contains(&object)
                        && line.ends_with("(server dry run)")
                }),
                "{what}: no dry-run result for {kind} {name}:\n{accepted}"
            );
        }
        eprintln!(
            "{} documents accepted by the apiserver (dry run) with {}",
            expected.len(),
            describe(values.as_deref())
        );
    }
    Ok(())
}

/// Where an access is asked for.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// A cluster-scoped resource, or a namespaced one across all namespaces (`-A`).
    Cluster,
    /// The release's namespace.
    Release,
    /// Some other namespace (`default`).
    Elsewhere,
    /// The namespace set as `operator.watchNamespace`.
    Watched,
}

/// One question to the authorizer: may the component `verb` the `resource` (kubectl's
/// `TYPE[.GROUP][/NAME]`, with an optional subresource) in `scope`?
#[derive(Debug, Clone, Copy)]
struct Access {
    verb: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    scope: Scope,
}

const fn access(verb: &'static str, resource: &'static str, scope: Scope) -> Access {
    Access {
        verb,
        resource,
        subresource: None,
        scope,
    }
}

const fn access_to(
    verb: &'static str,
    resource: &'static str,
    subresource: &'static str,
    scope: Scope,
) -> Access {
    Access {
        verb,
        resource,
        subresource: Some(subresource),
        scope,
    }
}

const DEPLOYMENTS: &str = "inferencedeployments.gpufleet.io";
const GPU_NODES: &str = "gpunodes.gpufleet.io";
const EVENTS: &str = "events.events.k8s.io";

/// What the operator's code calls (operator/src/controller.rs, leader.rs).
const OPERATOR_ALLOWED: &[Access] = &[
    access("list", "pods", Scope::Cluster),
    access("watch", "pods", Scope::Cluster),
    access("create", "pods", Scope::Elsewhere),
    access("delete", "pods", Scope::Elsewhere),
    // The defragmenter's move annotation.
    access("patch", "pods", Scope::Elsewhere),
    access("list", "nodes", Scope::Cluster),
    access("watch", "nodes", Scope::Cluster),
    access("list", GPU_NODES, Scope::Cluster),
    access("watch", GPU_NODES, Scope::Cluster),
    access("list", DEPLOYMENTS, Scope::Cluster),
    access("watch", DEPLOYMENTS, Scope::Cluster),
    access_to("patch", DEPLOYMENTS, "status", Scope::Elsewhere),
    access_to("update", DEPLOYMENTS, "finalizers", Scope::Elsewhere),
    access("create", EVENTS, Scope::Elsewhere),
    access("patch", EVENTS, Scope::Elsewhere),
    access("create", "leases.coordination.k8s.io", Scope::Release),
    access(
        "get",
        "leases.coordination.k8s.io/gpufleet-operator",
        Scope::Release,
    ),
    access(
        "update",
        "leases.coordination.k8s.io/gpufleet-operator",
        Scope::Release,
    ),
];

const OPERATOR_DENIED: &[Access] = &[
    access("delete", "nodes", Scope::Cluster),
    access("patch", "nodes", Scope::Cluster),
    access("get", "secrets", Scope::Release),
    access("list", "secrets", Scope::Cluster),
    access("update", "pods", Scope::Elsewhere),
    access_to("create", "pods", "exec", Scope::Elsewhere),
    access("create", DEPLOYMENTS, Scope::Elsewhere),
    access("patch", DEPLOYMENTS, Scope::Elsewhere),
    access("delete", DEPLOYMENTS, Scope::Elsewhere),
    access("patch", GPU_NODES, Scope::Cluster),
    access("delete", GPU_NODES, Scope::Cluster),
    access("patch", "capacityplans.gpufleet.io", Scope::Elsewhere),
    access("delete", EVENTS, Scope::Elsewhere),
    access("create", "leases.coordination.k8s.io", Scope::Elsewhere),
    access(
        "update",
        "leases.coordination.k8s.io/someone-elses-lease",
        Scope::Release,
    ),
    access(
        "delete",
        "leases.coordination.k8s.io/gpufleet-operator",
        Scope::Release,
    ),
    access("create", "deployments.apps", Scope::Release),
    access("get", "configmaps", Scope::Release),
    access(
        "create",
        "clusterrolebindings.rbac.authorization.k8s.io",
        Scope::Cluster,
    ),
];

/// What the agent's code calls (agent/src/publisher.rs, pod_watch.rs); the admission policy
/// narrows GpuNode and Node writes to its own node (agent/tests/cluster.rs tests that).
const AGENT_ALLOWED: &[Access] = &[
    access("create", GPU_NODES, Scope::Cluster),
    access("patch", GPU_NODES, Scope::Cluster),
    access_to("patch", GPU_NODES, "status", Scope::Cluster),
    access("get", "nodes", Scope::Cluster),
    access("patch", "nodes", Scope::Cluster),
    access("list", "pods", Scope::Cluster),
    access("watch", "pods", Scope::Cluster),
];

const AGENT_DENIED: &[Access] = &[
    access("create", "pods", Scope::Elsewhere),
    access("delete", "pods", Scope::Elsewhere),
    access("delete", GPU_NODES, Scope::Cluster),
    access("list", "nodes", Scope::Cluster),
    access("create", "nodes", Scope::Cluster),
    access("delete", "nodes", Scope::Cluster),
    access_to("patch", "nodes", "status", Scope::Cluster),
    access("create", DEPLOYMENTS, Scope::Elsewhere),
    access("patch", DEPLOYMENTS, Scope::Elsewhere),
    access_to("patch", DEPLOYMENTS, "status", Scope::Elsewhere),
    access("get", "secrets", Scope::Release),
    access("create", EVENTS, Scope::Elsewhere),
    access("update", "leases.coordination.k8s.io", Scope::Release),
];

/// What the dashboard's recorder watches (dashboard/src/recorder/).
const DASHBOARD_ALLOWED: &[Access] = &[
    access("list", GPU_NODES, Scope::Cluster),
    access("watch", GPU_NODES, Scope::Cluster),
    access("list", DEPLOYMENTS, Scope::Cluster),
    access("watch", DEPLOYMENTS, Scope::Cluster),
    access("list", EVENTS, Scope::Cluster),
    access("watch", EVENTS, Scope::Cluster),
    access("list", "nodes", Scope::Cluster),
    access("watch", "nodes", Scope::Cluster),
];

/// The dashboard writes nothing to the cluster, and reads nothing else.
fn dashboard_denied() -> Vec<Access> {
    let mut denied = Vec::new();
    for resource in [
        GPU_NODES,
        DEPLOYMENTS,
        "capacityplans.gpufleet.io",
        EVENTS,
        "events",
        "nodes",
        "pods",
        "configmaps",
        "leases.coordination.k8s.io",
    ] {
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            denied.push(access(verb, resource, Scope::Elsewhere));
        }
    }
    denied.push(access_to("patch", DEPLOYMENTS, "status", Scope::Elsewhere));
    denied.push(access_to("patch", GPU_NODES, "status", Scope::Cluster));
    denied.push(access("get", "secrets", Scope::Release));
    denied.push(access("list", "pods", Scope::Cluster));
    denied.push(access("list", "capacityplans.gpufleet.io", Scope::Cluster));
    denied
}

/// The namespaces a release's accesses are asked in.
struct Namespaces<'a> {
    release: &'a str,
    watched: Option<&'a str>,
}

/// Asks the apiserver's authorizer whether `service_account` of the release may do `access`.
fn can_i(
    namespaces: &Namespaces<'_>,
    service_account: &str,
    access: &Access,
) -> anyhow::Result<bool> {
    let user = format!(
        "--as=system:serviceaccount:{}:{service_account}",
        namespaces.release
    );
    let mut args = vec!["auth", "can-i", access.verb, access.resource, user.as_str()];
    let subresource;
    if let Some(name) = access.subresource {
        subresource = format!("--subresource={name}");
        args.push(&subresource);
    }
    match access.scope {
        Scope::Cluster => args.push("--all-namespaces"),
        Scope::Release => args.extend(["--namespace", namespaces.release]),
        Scope::Elsewhere => args.extend(["--namespace", "default"]),
        Scope::Watched => args.extend([
            "--namespace",
            namespaces
                .watched
                .context("Scope::Watched without a watched namespace")?,
        ]),
    }
    let output = kubectl(&args, None)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A misspelt resource would be refused and pass a "denied" check for the wrong reason.
    ensure!(
        !stderr.contains("doesn't have a resource type"),
        "kubectl {}: {stderr}",
        args.join(" ")
    );
    match (output.status.code(), stdout.split_whitespace().next()) {
        (Some(0), Some("yes")) => Ok(true),
        (Some(1), Some("no")) => Ok(false),
        _ => bail!("kubectl {}: {stdout}{stderr}", args.join(" ")),
    }
}

/// Renders the chart as `release` in `namespace` and applies, for real, only its
/// ServiceAccounts and RBAC objects; the guard deletes the cluster-scoped ones and `namespace`.
fn apply_rbac(
    release: &str,
    namespace: &str,
    values: Option<&Path>,
    more: &[&str],
) -> anyhow::Result<Cleanup> {
    let cleanup = Cleanup {
        what: vec![
            delete_namespace(namespace),
            [
                "delete",
                "clusterrole,clusterrolebinding",
                "--selector",
                &format!("app.kubernetes.io/instance={release}"),
                "--ignore-not-found",
            ]
            .map(str::to_owned)
            .to_vec(),
        ],
    };
    let rendered = documents(&render(release, namespace, values, more)?)?;
    let rbac: Vec<&Value> = rendered
        .iter()
        .filter(|document| {
            matches!(
                kind_and_name(document).0,
                "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            )
        })
        .collect();
    // No wildcard anywhere: every grant is spelt out.
    for document in &rbac {
        for rule in document["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs"] {
                ensure!(
                    !rule[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|entry| entry == "*"),
                    "{:?} grants {field} *: {rule}",
                    kind_and_name(document)
                );
            }
        }
    }
    let manifests = rbac
        .iter()
        .map(serde_norway::to_string)
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n");
    succeeded(
        "applying the chart's ServiceAccounts and RBAC",
        &kubectl(&["apply", "--server-side", "-f", "-"], Some(&manifests))?,
    )?;
    Ok(cleanup)
}

/// One component's expected answers: (ServiceAccount, allowed, denied).
type Expectations<'a> = (&'a str, &'a [Access], &'a [Access]);

/// Waits until the authorizer has the new RBAC, then asks every question of `table`.
async fn check_rbac(namespaces: &Namespaces<'_>, table: &[Expectations<'_>]) -> anyhow::Result<()> {
    // The authorizer's RBAC cache follows the objects within moments.
    for (account, allowed, _) in table {
        let first = allowed.first().context("an empty table")?;
        wait_until(
            Duration::from_secs(30),
            &format!("{account} allowed {first:?}"),
            || {
                let answer = can_i(namespaces, account, first)
                    .map(|allowed| Seen::done_if(allowed, || "the authorizer says no".to_owned()));
                async move { answer }
            },
        )
        .await?;
    }
    let mut wrong = Vec::new();
    let mut asked = 0;
    for (account, allowed, denied) in table {
        for (expected, accesses) in [(true, allowed), (false, denied)] {
            for access in *accesses {
                asked += 1;
                if can_i(namespaces, account, access)? != expected {
                    wrong.push(format!(
                        "{account} {} {access:?}",
                        if expected { "may not" } else { "may" }
                    ));
                }
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of {asked} RBAC answers are wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    eprintln!("{asked} RBAC answers as expected");
    Ok(())
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server and helm: run `bash tests/run-all.sh`"]
async fn rbac_lets_each_component_do_its_job_and_no_more() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let namespace = TestNamespace::create(&client, "chart-rbac").await?;
    // The namespace's name is the release's, so the cluster-scoped names are this test's own.
    let release = namespace.name.clone();
    let _cleanup = apply_rbac(
        &release,
        &namespace.name,
        Some(&chart().join("ci/all-features-values.yaml")),
        &[],
    )?;
    let operator = format!("{release}-gpufleet-operator");
    let agent = format!("{release}-gpufleet-agent");
    let dashboard = format!("{release}-gpufleet-dashboard");
    let dashboard_denied = dashboard_denied();
    let namespaces = Namespaces {
        release: &namespace.name,
        watched: None,
    };
    check_rbac(
        &namespaces,
        &[
            (&operator, OPERATOR_ALLOWED, OPERATOR_DENIED),
            (&agent, AGENT_ALLOWED, AGENT_DENIED),
            (&dashboard, DASHBOARD_ALLOWED, &dashboard_denied),
        ],
    )
    .await
}

/// With `operator.watchNamespace`, what the operator does to InferenceDeployments, their Pods
/// and Events is allowed in that namespace only.
const WATCHING_OPERATOR_ALLOWED: &[Access] = &[
    access("list", "pods", Scope::Cluster),
    access("watch", "pods", Scope::Cluster),
    access("list", "nodes", Scope::Cluster),
    access("list", GPU_NODES, Scope::Cluster),
    access("create", "pods", Scope::Watched),
    access("delete", "pods", Scope::Watched),
    access("patch", "pods", Scope::Watched),
    access("list", DEPLOYMENTS, Scope::Watched),
    access("watch", DEPLOYMENTS, Scope::Watched),
    access_to("patch", DEPLOYMENTS, "status", Scope::Watched),
    access_to("update", DEPLOYMENTS, "finalizers", Scope::Watched),
    access("create", EVENTS, Scope::Watched),
    access("patch", EVENTS, Scope::Watched),
    access("create", "leases.coordination.k8s.io", Scope::Release),
];

const WATCHING_OPERATOR_DENIED: &[Access] = &[
    access("create", "pods", Scope::Elsewhere),
    access("patch", "pods", Scope::Elsewhere),
    access("delete", "pods", Scope::Elsewhere),
    access("create", "pods", Scope::Release),
    access("list", DEPLOYMENTS, Scope::Cluster),
    access("list", DEPLOYMENTS, Scope::Elsewhere),
    access_to("patch", DEPLOYMENTS, "status", Scope::Elsewhere),
    access("create", EVENTS, Scope::Elsewhere),
    access("create", "leases.coordination.k8s.io", Scope::Watched),
];

#[tokio::test]
#[ignore = "needs a Kubernetes API server and helm: run `bash tests/run-all.sh`"]
async fn operator_watching_one_namespace_may_place_pods_there_only() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let namespace = TestNamespace::create(&client, "chart-watch").await?;
    let watched = TestNamespace::create(&client, "chart-watched").await?;
    let _watched_cleanup = Cleanup {
        what: vec![delete_namespace(&watched.name)],
    };
    let release = namespace.name.clone();
    let watch = format!("operator.watchNamespace={}", watched.name);
    let _cleanup = apply_rbac(&release, &namespace.name, None, &["--set", &watch])?;
    let operator = format!("{release}-gpufleet-operator");
    check_rbac(
        &Namespaces {
            release: &namespace.name,
            watched: Some(&watched.name),
        },
        &[(
            &operator,
            WATCHING_OPERATOR_ALLOWED,
            WATCHING_OPERATOR_DENIED,
        )],
    )
    .await
}
