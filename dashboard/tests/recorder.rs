//! The Kubernetes recorder on a real control plane and a real PostgreSQL: GpuNodes (status
//! through the status subresource), InferenceDeployments and gpufleet Events are written to the
//! apiserver of `KUBECONFIG` in a namespace of the test's own, and the rows are read back from
//! a fresh database per test ([`FreshDatabase`]).
//!
//! Two tests stop PostgreSQL for a few seconds (`pg_ctlcluster VERSION main stop`) while facts
//! keep coming, then start it again; a guard restarts it even when the test fails, since other
//! tests share the server. Keep such outages short. One test restarts kube-apiserver
//! (`tests/cluster/control-plane.sh restart-apiserver`). The tests of this file take turns
//! ([`SERIAL`]) so one's outage never lands in another's set-up, and the ones that stop a shared
//! service are named `disruptive_…`: the test command runs them in a phase of their own, after
//! every other end-to-end test, so no other test sees the outage.
//!
//! Needs `KUBECONFIG` (with gpufleet's CRDs installable) and `DATABASE_URL` (a role allowed to
//! create databases), both set by `bash tests/run-all.sh`, and root (or the postgres user) for
//! `pg_ctlcluster`.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message, like the tests themselves"
)]

mod common;

use std::collections::BTreeMap;
use std::future::Future;

use futures::FutureExt as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gpufleet_api::gpu_node::{
    GpuDevice, GpuHealth, GpuNodeStatus, GpuTelemetry, HealthReason, HealthState,
};
use gpufleet_api::inference_deployment::{
    DisruptionBudget, GpuRequirement, PlacementPolicy, ReplicaPlacement,
};
use gpufleet_api::{
    GpuNode, GpuNodeSpec, InferenceDeployment, InferenceDeploymentSpec, InferenceDeploymentStatus,
};
use gpufleet_dashboard::recorder::writer::WriterSettings;
use gpufleet_dashboard::recorder::{Recorder, RecorderConfig, RecorderStatus};
use gpufleet_dashboard::store::Store;
use gpufleet_dashboard::store::memory::MemoryStore;
use gpufleet_dashboard::store::postgres::PostgresStore;
use gpufleet_dashboard::{Application, Settings};
use gpufleet_test_support::{Seen, wait_every};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Field manager of the tests' writes (the same as the end-to-end tests', so applying the
/// CRDs from both never conflicts).
const FIELD_MANAGER: &str = "gpufleet-e2e-tests";
/// Label on the tests' GpuNodes (cluster-scoped) naming the test, so each recorder watches its
/// own.
const TEST_LABEL: &str = "gpufleet.io/recorder-test";
/// How long any eventually-true condition may take.
const PATIENCE: Duration = Duration::from_secs(60);

async fn client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!("KUBECONFIG is not set: start the test control plane with `bash tests/run-all.sh`");
    }
    let config = Config::infer().await.context("reading KUBECONFIG")?;
    Client::try_from(config).context("building a client from KUBECONFIG")
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in gpufleet_api::custom_resource_definitions() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        eventually(&format!("CRD {name} Established"), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let conditions = crds
                    .get(&name)
                    .await?
                    .status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default();
                let established = conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(Seen::done_if(established, || {
                    let seen: Vec<String> = conditions
                        .iter()
                        .map(|c| format!("{}={}", c.type_, c.status))
                        .collect();
                    format!("conditions {seen:?}")
                }))
            }
        })
        .await?;
    }
    Ok(())
}

/// Polls `check` every 50 ms until it holds, failing after [`PATIENCE`] with `what` and what
/// `check` saw last.
async fn eventually<F, Fut>(what: &str, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Seen>>,
{
    wait_every(PATIENCE, Duration::from_millis(50), what, check).await
}

/// A test's namespace and cluster-scoped GpuNodes, deleted when it drops.
struct Bed {
    client: Client,
    namespace: String,
    gpu_nodes: Api<GpuNode>,
    deployments: Api<InferenceDeployment>,
    events: Api<Event>,
}

impl Bed {
    async fn create(prefix: &str) -> anyhow::Result<Self> {
        let client = client().await?;
        install_crds(&client).await?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let namespace = format!(
            "rec-{prefix}-{:05x}",
            (std::process::id() ^ nanos) % 0xfffff
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))?;
        namespaces.create(&PostParams::default(), &object).await?;
        Ok(Self {
            gpu_nodes: Api::all(client.clone()),
            deployments: Api::namespaced(client.clone(), &namespace),
            events: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
        })
    }

    fn recorder_config(&self, buffer_capacity: usize, batch_size: usize) -> RecorderConfig {
        RecorderConfig {
            namespace: Some(self.namespace.clone()),
            gpu_node_selector: Some(format!("{TEST_LABEL}={}", self.namespace)),
            buffer_capacity,
            writer: WriterSettings {
                batch_size,
                retry_initial: Duration::from_millis(50),
                retry_max: Duration::from_millis(400),
            },
            instance: self.namespace.clone(),
            ..RecorderConfig::default()
        }
    }

    /// GpuNode `<namespace>-<index>`, created without status.
    async fn create_gpu_node(&self, index: usize) -> anyhow::Result<String> {
        let name = format!("{}-{index}", self.namespace);
        let mut gpu_node = GpuNode::new(
            &name,
            GpuNodeSpec {
                node_name: name.clone(),
            },
        );
        gpu_node.metadata.labels = Some(BTreeMap::from([(
            TEST_LABEL.to_owned(),
            self.namespace.clone(),
        )]));
        self.gpu_nodes
            .create(&PostParams::default(), &gpu_node)
            .await
            .with_context(|| format!("creating GpuNode {name}"))?;
        Ok(name)
    }

    /// Publishes a GpuNode status as the agent would: `gpus` GPUs sampled at `at_ms`, GPU 0
    /// Unhealthy since `broken_since_ms` when given.
    async fn publish(
        &self,
        name: &str,
        gpus: u32,
        at_ms: i64,
        broken_since_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        let status = GpuNodeStatus {
            gpus: (0..gpus)
                .map(|index| device(name, index, at_ms, broken_since_ms.filter(|_| index == 0)))
                .collect(),
            last_heartbeat_time: Some(time(at_ms)),
            source: Some("recorder-test".to_owned()),
            ..GpuNodeStatus::default()
        };
        self.gpu_nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .with_context(|| format!("publishing the status of GpuNode {name}"))?;
        Ok(())
    }

    /// An InferenceDeployment whose status places `pods` replicas (as the operator would).
    async fn deployment(&self, name: &str, pods: &[(&str, &str, &str)]) -> anyhow::Result<()> {
        let mut deployment = InferenceDeployment::new(
            name,
            InferenceDeploymentSpec {
                replicas: i32::try_from(pods.len())?,
                gpu: GpuRequirement {
                    count: Some(1),
                    ..GpuRequirement::default()
                },
                placement: PlacementPolicy::default(),
                disruption: DisruptionBudget::default(),
                template: serde_json::from_value(serde_json::json!({
                    "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]}
                }))?,
            },
        );
        deployment.metadata.namespace = Some(self.namespace.clone());
        if self.deployments.get_opt(name).await?.is_none() {
            self.deployments
                .create(&PostParams::default(), &deployment)
                .await
                .with_context(|| format!("creating InferenceDeployment {name}"))?;
        }
        let status = InferenceDeploymentStatus {
            replicas: i32::try_from(pods.len())?,
            placements: pods
                .iter()
                .map(|(pod, node, gpu)| ReplicaPlacement {
                    pod: (*pod).to_owned(),
                    node: (*node).to_owned(),
                    gpu_uuids: vec![(*gpu).to_owned()],
                    score: Some(0.75),
                    score_breakdown: BTreeMap::from([("fragmentation".to_owned(), -0.25)]),
                })
                .collect(),
            ..InferenceDeploymentStatus::default()
        };
        self.deployments
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .with_context(|| format!("setting the status of InferenceDeployment {name}"))?;
        Ok(())
    }

    /// An Event as the operator's recorder publishes it (`series` when it repeated).
    async fn event(&self, name: &str, reporter: &str, count: Option<i32>) -> anyhow::Result<()> {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            series: count.map(|count| EventSeries {
                count,
                last_observed_time: MicroTime(now),
            }),
            action: Some("Bind".to_owned()),
            reason: Some("Placed".to_owned()),
            note: Some(format!("{name}: placed on a test node")),
            type_: Some("Normal".to_owned()),
            reporting_controller: Some(reporter.to_owned()),
            reporting_instance: Some(format!("{reporter}-test")),
            regarding: Some(ObjectReference {
                api_version: Some("gpufleet.io/v1alpha1".to_owned()),
                kind: Some("InferenceDeployment".to_owned()),
                namespace: Some(self.namespace.clone()),
                name: Some("llm".to_owned()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        match self.events.get_opt(name).await? {
            None => {
                self.events.create(&PostParams::default(), &event).await?;
            }
            Some(_) => {
                self.events
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"series": event.series})),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let namespace = self.namespace.clone();
        // The test's runtime may be shutting down (a task spawned on it might never run), so
        // the clean-up gets a thread, a runtime and a client of its own.
        let cleaner = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = client().await else {
                    return;
                };
                let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
                let selector = ListParams::default().labels(&format!("{TEST_LABEL}={namespace}"));
                let _ = gpu_nodes
                    .delete_collection(&DeleteParams::default(), &selector)
                    .await;
                let namespaces: Api<Namespace> = Api::all(client);
                let _ = namespaces
                    .delete(&namespace, &DeleteParams::default())
                    .await;
            });
        });
        // Best effort: the control plane is torn down after the run anyway.
        let _ = cleaner.join();
    }
}

fn time(ms: i64) -> Time {
    Time(Timestamp::from_millisecond(ms).expect("a valid time"))
}

fn gpu_uuid(node: &str, index: u32) -> String {
    format!("GPU-{node}-{index}")
}

fn device(node: &str, index: u32, at_ms: i64, broken_since_ms: Option<i64>) -> GpuDevice {
    let health = match broken_since_ms {
        Some(since) => GpuHealth {
            state: HealthState::Unhealthy,
            reasons: vec![HealthReason {
                code: "FellOffTheBus".to_owned(),
                message: "Xid 79".to_owned(),
                severity: HealthState::Unhealthy,
                needs_reset: true,
                since: Some(time(since)),
            }],
            last_transition_time: Some(time(since)),
        },
        None => GpuHealth::default(),
    };
    let used = u64::try_from(at_ms % 60_000).unwrap_or(0);
    GpuDevice {
        index,
        uuid: gpu_uuid(node, index),
        product: "NVIDIA-H100-80GB-HBM3".to_owned(),
        memory_total_mib: 81_559,
        compute_capability: Some("9.0".to_owned()),
        telemetry: GpuTelemetry {
            memory_used_mib: Some(used),
            memory_free_mib: Some(81_559 - used),
            utilization_percent: Some(u32::try_from(at_ms % 101).unwrap_or(0)),
            temperature_celsius: Some(55),
            power_watts: Some(350.0),
            power_limit_watts: Some(700.0),
            sampled_at: Some(time(at_ms)),
            ..GpuTelemetry::default()
        },
        health,
        ..GpuDevice::default()
    }
}

/// One test at a time in this file: each may stop PostgreSQL or restart kube-apiserver.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A database of the test's own, migrated, on a pool that gives up on a connection after a
/// second (as a dashboard's gives up after five), so the writer notices an outage at once.
/// Created after taking [`SERIAL`], so no other test of this file can be stopping the server.
struct FreshDatabase {
    pool: PgPool,
    admin: PgPool,
    name: String,
}

impl FreshDatabase {
    async fn create() -> anyhow::Result<Self> {
        let url = std::env::var("DATABASE_URL")
            .context("DATABASE_URL is not set: start PostgreSQL with `bash tests/run-all.sh`")?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .context("connecting to DATABASE_URL")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        // Digits and underscores only: an identifier cannot be a bound parameter.
        let name = format!("gpufleet_recorder_{}_{nanos}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy_with(options.database(&name));
        Ok(Self { pool, admin, name })
    }

    async fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(Arc::new(PostgresStore::from_pool(self.pool.clone()).await?))
    }

    /// Drops the database (a failed test leaves it behind for a look).
    async fn drop_database(self) -> anyhow::Result<()> {
        self.pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await?;
        Ok(())
    }
}

/// Rows in the fresh database, gap markers apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rows {
    samples: i64,
    events: i64,
    placements: i64,
}

impl Rows {
    fn total(self) -> i64 {
        self.samples + self.events + self.placements
    }
}

async fn rows(pool: &PgPool) -> anyhow::Result<Rows> {
    let (samples,): (i64,) = sqlx::query_as("SELECT count(*) FROM gpu_samples")
        .fetch_one(pool)
        .await?;
    let (events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM fleet_events WHERE reason <> 'RecorderGap'")
            .fetch_one(pool)
            .await?;
    let (placements,): (i64,) = sqlx::query_as("SELECT count(*) FROM placement_decisions")
        .fetch_one(pool)
        .await?;
    Ok(Rows {
        samples,
        events,
        placements,
    })
}

async fn wait_for_rows(pool: &PgPool, expected: Rows) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = rows(pool).await;
        if now.as_ref().is_ok_and(|now| *now == expected) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "timed out after {PATIENCE:?} waiting for {expected:?} in PostgreSQL; last {now:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_status(
    recorder: &Recorder,
    what: &str,
    check: impl Fn(&RecorderStatus) -> bool,
) -> anyhow::Result<RecorderStatus> {
    eventually(what, || {
        let status = recorder.status();
        let seen = Seen::done_if(check(&status), || format!("recorder status {status:?}"));
        async move { Ok(seen) }
    })
    .await?;
    Ok(recorder.status())
}

/// PostgreSQL stopped for as long as this lives; started again on drop (also on panic).
struct Outage {
    version: String,
    started_at: Instant,
    running: bool,
}

impl Outage {
    /// Stops the Debian cluster `main` of the newest PostgreSQL installed.
    fn begin() -> anyhow::Result<Self> {
        let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
            .context("no /usr/lib/postgresql: these tests need Debian's PostgreSQL")?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        versions.sort_unstable();
        let version = versions
            .last()
            .context("no PostgreSQL version under /usr/lib/postgresql")?
            .to_string();
        pg_ctlcluster(&version, "stop")?;
        Ok(Self {
            version,
            started_at: Instant::now(),
            running: false,
        })
    }

    /// Starts PostgreSQL again and says how long it was down.
    fn end(mut self) -> anyhow::Result<Duration> {
        pg_ctlcluster(&self.version, "start")?;
        self.running = true;
        Ok(self.started_at.elapsed())
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.running {
            let _ = pg_ctlcluster(&self.version, "start");
        }
    }
}

fn pg_ctlcluster(version: &str, action: &str) -> anyhow::Result<()> {
    let status = Command::new("pg_ctlcluster")
        .args([version, "main", action])
        .status()
        .with_context(|| format!("running pg_ctlcluster {version} main {action}"))?;
    if !status.success() {
        bail!("pg_ctlcluster {version} main {action} failed: {status}");
    }
    Ok(())
}

/// The first sample time of a test: now, so facts look current, in whole seconds since a
/// Kubernetes `Time` carries no fraction.
fn start_ms() -> i64 {
    gpufleet_dashboard::live::unix_millis_now() / 1_000 * 1_000
}

#[tokio::test]
#[ignore = "needs a control plane and PostgreSQL: bash tests/run-all.sh"]
async fn disruptive_the_recorder_writes_every_fact_once_through_a_postgresql_restart_and_its_own()
-> anyhow::Result<()> {
    const NODES: usize = 2;
    const GPUS: u32 = 4;
    let _serial = SERIAL.lock().await;
    let database = FreshDatabase::create().await?;
    let pool = database.pool.clone();
    let store = database.store().await?;
    let bed = Bed::create("once").await?;
    let started = Instant::now();
    let recorder = Recorder::start(
        &bed.client,
        Arc::clone(&store),
        bed.recorder_config(100_000, 500),
    );
    wait_for_status(&recorder, "the watches synced", RecorderStatus::synced).await?;

    let mut names = Vec::new();
    for index in 0..NODES {
        names.push(bed.create_gpu_node(index).await?);
    }
    let t0 = start_ms();
    // Five samples per GPU; GPU 0 of the first node falls off the bus at the fourth.
    for step in 0..5_i64 {
        for (index, name) in names.iter().enumerate() {
            let broken = (index == 0 && step >= 3).then_some(t0 + 3_000);
            bed.publish(name, GPUS, t0 + step * 1_000, broken).await?;
        }
    }
    bed.deployment(
        "llm",
        &[
            ("llm-0", &names[0], &gpu_uuid(&names[0], 1)),
            ("llm-1", &names[1], &gpu_uuid(&names[1], 0)),
        ],
    )
    .await?;
    bed.event("placed-0", "gpufleet-operator", None).await?;
    bed.event("placed-1", "gpufleet-operator", None).await?;
    bed.event("placed-1", "gpufleet-operator", Some(2)).await?;
    bed.event("not-ours", "someone-else", None).await?;
    let gpus = i64::try_from(NODES)? * i64::from(GPUS);
    let mut expected = Rows {
        samples: 5 * gpus,
        // One health transition, placed-0, placed-1 twice (its series went to 2).
        events: 4,
        placements: 2,
    };
    wait_for_rows(&pool, expected).await?;
    let facts_before_outage = expected.total();
    let recording_took = started.elapsed();

    // PostgreSQL goes away while the fleet keeps changing.
    let accepted_before = recorder.status().buffer.accepted;
    let outage = Outage::begin()?;
    for step in 5..10_i64 {
        for (index, name) in names.iter().enumerate() {
            let broken = (index == 0).then_some(t0 + 3_000);
            bed.publish(name, GPUS, t0 + step * 1_000, broken).await?;
        }
    }
    bed.deployment(
        "llm",
        &[
            ("llm-0", &names[0], &gpu_uuid(&names[0], 1)),
            ("llm-1", &names[1], &gpu_uuid(&names[1], 0)),
            ("llm-2", &names[1], &gpu_uuid(&names[1], 2)),
        ],
    )
    .await?;
    bed.event("placed-2", "gpufleet-operator", None).await?;
    bed.event("placed-1", "gpufleet-operator", Some(3)).await?;
    let during_outage = 5 * gpus + 1 + 2;
    wait_for_status(
        &recorder,
        "the outage's facts seen and a write failed",
        |status| {
            status.buffer.accepted == accepted_before + u64::try_from(during_outage).unwrap_or(0)
                && status.writer.failures > 0
        },
    )
    .await?;
    let down_for = outage.end()?;
    expected = Rows {
        samples: 10 * gpus,
        events: expected.events + 2,
        placements: 3,
    };
    wait_for_rows(&pool, expected).await?;
    assert!(recorder.flush(PATIENCE).await, "the buffer drains");
    let status = recorder.status();
    assert_eq!(status.buffer.dropped.total(), 0, "{status:?}");
    assert_eq!(status.buffer.gaps_recorded, 0);
    assert_eq!(
        status.writer.new_rows,
        u64::try_from(expected.total())?,
        "each fact written once: {status:?}"
    );
    eprintln!(
        "recorded {facts_before_outage} facts in {recording_took:?}; rode through a PostgreSQL \
         outage of {down_for:?} with {} failed writes; recorder status {status:?}",
        status.writer.failures
    );

    // A new recorder (a restarted dashboard, a broken watch) re-lists everything: nothing new.
    drop(recorder);
    let recorder = Recorder::start(
        &bed.client,
        Arc::clone(&store),
        bed.recorder_config(100_000, 500),
    );
    let status = wait_for_status(&recorder, "the new recorder synced and offered", |status| {
        status.synced() && status.buffer.accepted > 0
    })
    .await?;
    assert!(recorder.flush(PATIENCE).await, "the buffer drains");
    let status_after = recorder.status();
    assert!(
        status_after.buffer.recorded >= status.buffer.accepted,
        "{status_after:?}"
    );
    assert_eq!(
        status_after.writer.new_rows, 0,
        "a re-list writes nothing twice: {status_after:?}"
    );
    assert_eq!(rows(&pool).await?, expected);
    let (distinct_health,): (i64,) =
        sqlx::query_as("SELECT count(DISTINCT id) FROM fleet_events WHERE reason = 'GpuUnhealthy'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(distinct_health, 1);
    drop(recorder);
    database.drop_database().await
}

#[tokio::test]
#[ignore = "needs a control plane and PostgreSQL: bash tests/run-all.sh"]
async fn disruptive_a_full_buffer_drops_the_oldest_facts_and_counts_exactly_what_history_lacks()
-> anyhow::Result<()> {
    const GPUS: u32 = 2;
    const STEPS: i64 = 30;
    let _serial = SERIAL.lock().await;
    let database = FreshDatabase::create().await?;
    let pool = database.pool.clone();
    let store = database.store().await?;
    let bed = Bed::create("drops").await?;
    let recorder = Recorder::start(&bed.client, Arc::clone(&store), bed.recorder_config(12, 4));
    wait_for_status(&recorder, "the watches synced", RecorderStatus::synced).await?;
    let name = bed.create_gpu_node(0).await?;
    let t0 = start_ms();
    bed.publish(&name, GPUS, t0, None).await?;
    wait_for_rows(
        &pool,
        Rows {
            samples: i64::from(GPUS),
            events: 0,
            placements: 0,
        },
    )
    .await?;
    assert!(recorder.flush(PATIENCE).await);
    let accepted_before = recorder.status().buffer.accepted;

    let outage = Outage::begin()?;
    for step in 1..=STEPS {
        bed.publish(&name, GPUS, t0 + step * 1_000, None).await?;
    }
    for index in 0..5 {
        bed.event(&format!("placed-{index}"), "gpufleet-operator", None)
            .await?;
    }
    let produced = STEPS * i64::from(GPUS) + 5;
    wait_for_status(&recorder, "the outage's facts seen", |status| {
        status.buffer.accepted == accepted_before + u64::try_from(produced).unwrap_or(0)
            && status.writer.failures > 0
    })
    .await?;
    let down_for = outage.end()?;
    assert!(recorder.flush(PATIENCE).await, "the buffer drains");
    let status = wait_for_status(&recorder, "the gap marker written", |status| {
        status.buffer.gaps_recorded == 1
    })
    .await?;
    let dropped = status.buffer.dropped;
    assert!(
        dropped.total() > 0,
        "a 12-fact buffer cannot hold {produced} facts"
    );

    let stored = rows(&pool).await?;
    let missing_samples = (STEPS + 1) * i64::from(GPUS) - stored.samples;
    let missing_events = 5 - stored.events;
    assert_eq!(
        (missing_samples, missing_events, stored.placements),
        (
            i64::try_from(dropped.samples)?,
            i64::try_from(dropped.events)?,
            0
        ),
        "what history lacks is exactly what the recorder counted as dropped: {status:?}"
    );
    // The oldest went: the newest sample of each GPU is there.
    let (newest,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM gpu_samples WHERE at = 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'",
    )
    .bind(t0 as f64 + (STEPS * 1_000) as f64)
    .fetch_one(&pool)
    .await?;
    assert_eq!(newest, i64::from(GPUS));
    let (gaps, message): (i64, String) = sqlx::query_as(
        "SELECT count(*) OVER (), message FROM fleet_events WHERE reason = 'RecorderGap'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(gaps, 1);
    assert!(
        message.contains(&format!("dropped {} facts", dropped.total())),
        "{message}"
    );
    eprintln!(
        "PostgreSQL down for {down_for:?}: {produced} facts offered, {} dropped and reported, \
         {} recorded; recorder status {status:?}",
        dropped.total(),
        stored.total()
    );
    drop(recorder);
    database.drop_database().await
}

#[actix_web::test]
#[ignore = "needs a control plane and PostgreSQL: bash tests/run-all.sh"]
async fn the_live_view_and_the_recorder_endpoint_show_the_watched_cluster() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let bed = Bed::create("live").await?;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let recorder = Recorder::start(
        &bed.client,
        Arc::clone(&store),
        bed.recorder_config(1_000, 100),
    );
    wait_for_status(&recorder, "the watches synced", RecorderStatus::synced).await?;
    let name = bed.create_gpu_node(0).await?;
    let t0 = start_ms();
    bed.publish(&name, 4, t0, Some(t0)).await?;
    wait_for_status(&recorder, "the GpuNode recorded", |status| {
        status.buffer.recorded >= 5
    })
    .await?;

    let settings = Settings {
        bind: "127.0.0.1:0".parse()?,
        workers: 1,
        ..Settings::default()
    };
    let app = Application::build_with_recorder(
        settings,
        Arc::clone(&store),
        Some(Box::new(recorder.feed())),
        Some(recorder.shared()),
    )
    .await?;
    let address = app.address();
    let feed = app.feed().context("a feed loop")?.clone();
    actix_web::rt::spawn(app.run_without_ticking());
    feed.tick().await;

    let fleet =
        tokio::task::spawn_blocking(move || common::http(address, "GET", "/api/v1/fleet", &[], ""))
            .await??;
    assert_eq!(fleet.status, 200, "{}", fleet.body);
    let fleet: serde_json::Value = serde_json::from_str(&fleet.body)?;
    let node = fleet["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|node| node["name"] == name.as_str()))
        .with_context(|| format!("{name} in {fleet}"))?;
    assert_eq!(node["gpus"].as_array().map(Vec::len), Some(4));
    assert_eq!(node["gpus"][0]["health"], "Unhealthy");

    let status = tokio::task::spawn_blocking(move || {
        common::http(address, "GET", "/api/v1/recorder", &[], "")
    })
    .await??;
    assert_eq!(status.status, 200, "{}", status.body);
    let status: serde_json::Value = serde_json::from_str(&status.body)?;
    assert_eq!(status["running"], true);
    assert_eq!(status["buffer"]["dropped"]["samples"], 0);
    assert!(status["buffer"]["recorded"].as_u64() >= Some(5), "{status}");
    assert_eq!(status["watches"].as_array().map(Vec::len), Some(4));

    // History came from the recorder only (the agent's sample time), not from the feed loop.
    let samples = store
        .history(&gpufleet_dashboard::history::HistoryQuery {
            subject: gpufleet_dashboard::history::Subject::Gpu(gpu_uuid(&name, 1)),
            metric: gpufleet_dashboard::history::Metric::Utilization,
            from_ms: t0 - 60_000,
            to_ms: t0 + 60_000,
            step_ms: 1,
        })
        .await?;
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].at_ms, t0);

    // The deployments view is the operator's status (placements, conditions, unplaced count
    // and reason), not a what-if round: this GpuNode has no Node, so the dashboard's own engine
    // would place nothing on it.
    bed.deployment(
        "llm",
        &[
            ("llm-r0", name.as_str(), gpu_uuid(&name, 2).as_str()),
            ("llm-r1", name.as_str(), gpu_uuid(&name, 3).as_str()),
        ],
    )
    .await?;
    let conditions = [
        (
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "2 of 3 replicas Ready (at least 2 required)",
        ),
        (
            "Progressing",
            "True",
            "ReplicasUpdating",
            "2 replicas exist, 2 Ready, 3 wanted",
        ),
        (
            "Degraded",
            "True",
            "ReplicasUnplaceable",
            "1 replicas cannot be placed: 0/1 nodes are available: 1 node not ready.",
        ),
    ]
    .map(|(kind, status, reason, message)| Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: Some(1),
        last_transition_time: time(t0),
    });
    bed.deployments
        .patch(
            "llm",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await?;
    bed.deployments
        .patch_status(
            "llm",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {
                "observedGeneration": 1,
                "readyReplicas": 2,
                "unplacedReplicas": 1,
                "conditions": conditions,
            }})),
        )
        .await?;
    // What the last poll saw, for the failure message and the checks below.
    let last = Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    eventually("the operator's placements in /api/v1/deployments", || {
        let feed = feed.clone();
        let last = Arc::clone(&last);
        async move {
            feed.tick().await;
            let answer = tokio::task::spawn_blocking(move || {
                common::http(address, "GET", "/api/v1/deployments", &[], "")
            })
            .await??;
            anyhow::ensure!(answer.status == 200, "{}", answer.body);
            let deployments: serde_json::Value = serde_json::from_str(&answer.body)?;
            let shown = deployments
                .as_array()
                .and_then(|all| all.iter().find(|d| d["name"] == "llm"))
                .cloned()
                .unwrap_or_default();
            let done = shown["placed"].as_array().map(Vec::len) == Some(2)
                && shown["conditions"].as_array().map(Vec::len) == Some(3);
            let seen = Seen::done_if(done, || format!("{shown}"));
            *last.lock().expect("not poisoned") = shown;
            Ok(seen)
        }
    })
    .await?;
    let shown = last.lock().expect("not poisoned").clone();
    assert_eq!(shown["placementSource"], "operator", "{shown}");
    assert_eq!(shown["key"], format!("{}/llm", bed.namespace));
    assert_eq!(
        (shown["desired"].as_u64(), shown["replicas"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(shown["readyReplicas"], 2);
    let placed: Vec<(&str, &str, u64, &str)> = shown["placed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|replica| {
            (
                replica["replica"].as_str().unwrap_or_default(),
                replica["node"].as_str().unwrap_or_default(),
                replica["gpus"][0]["index"].as_u64().unwrap_or(u64::MAX),
                replica["gpus"][0]["uuid"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let (uuid_2, uuid_3) = (gpu_uuid(&name, 2), gpu_uuid(&name, 3));
    assert_eq!(
        placed,
        vec![
            ("llm-r0", name.as_str(), 2, uuid_2.as_str()),
            ("llm-r1", name.as_str(), 3, uuid_3.as_str()),
        ],
        "{shown}"
    );
    assert_eq!(shown["placed"][0]["score"]["total"], 0.75);
    assert_eq!(shown["placed"][0]["score"]["fragmentationDeltaGpus"], -0.25);
    assert_eq!(shown["conditions"][2]["type"], "Degraded");
    assert_eq!(shown["conditions"][2]["status"], "True");
    assert_eq!(shown["unplacedReplicas"], 1);
    assert_eq!(
        shown["unplacedReason"],
        "0/1 nodes are available: 1 node not ready."
    );
    assert_eq!(shown["unplaced"].as_array().map(Vec::len), Some(0));
    // The spec moved on (replicas 2 → 3) after the status was written.
    assert_eq!(shown["observedGeneration"], 1);
    assert!(shown["generation"].as_i64() > Some(1), "{shown}");
    Ok(())
}

/// Restarts the test control plane's kube-apiserver (it returns once `/readyz` answers).
fn restart_apiserver() -> anyhow::Result<()> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/cluster/control-plane.sh"
    );
    let status = Command::new("bash")
        .args([script, "restart-apiserver"])
        .status()
        .context("running control-plane.sh restart-apiserver")?;
    if !status.success() {
        bail!("control-plane.sh restart-apiserver failed: {status}");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs a control plane and PostgreSQL: bash tests/run-all.sh"]
async fn disruptive_the_recorder_rides_through_a_kube_apiserver_restart_without_offering_a_fact_twice()
-> anyhow::Result<()> {
    const GPUS: u32 = 2;
    let _serial = SERIAL.lock().await;
    let database = FreshDatabase::create().await?;
    let pool = database.pool.clone();
    let store = database.store().await?;
    let bed = Bed::create("apiserver").await?;
    let recorder = Recorder::start(&bed.client, store, bed.recorder_config(100_000, 500));
    wait_for_status(&recorder, "the watches synced", RecorderStatus::synced).await?;
    let name = bed.create_gpu_node(0).await?;
    let t0 = start_ms();
    for step in 0..3 {
        bed.publish(&name, GPUS, t0 + step * 1_000, None).await?;
    }
    bed.event("before", "gpufleet-operator", None).await?;
    let gpus = i64::from(GPUS);
    wait_for_rows(
        &pool,
        Rows {
            samples: 3 * gpus,
            events: 1,
            placements: 0,
        },
    )
    .await?;

    let restart = Instant::now();
    tokio::task::spawn_blocking(restart_apiserver).await??;
    let restart_took = restart.elapsed();
    // The first status after the restart may reach the recorder through a re-list, which
    // shows the current state only: a status overwritten before the watch is back is never
    // seen (by any watcher). So the next ones wait until the watch is live again.
    eventually("the apiserver taking a status again", || {
        bed.publish(&name, GPUS, t0 + 3_000, None).map(|published| {
            Ok(match published {
                Ok(_) => Seen::Done,
                Err(error) => Seen::NotYet(format!("the write failed: {error}")),
            })
        })
    })
    .await?;
    wait_for_rows(
        &pool,
        Rows {
            samples: 4 * gpus,
            events: 1,
            placements: 0,
        },
    )
    .await?;
    for step in 4..6 {
        bed.publish(&name, GPUS, t0 + step * 1_000, None).await?;
    }
    bed.event("after", "gpufleet-operator", None).await?;
    let expected = Rows {
        samples: 6 * gpus,
        events: 2,
        placements: 0,
    };
    wait_for_rows(&pool, expected).await?;
    let status = wait_for_status(
        &recorder,
        "the watches synced again",
        RecorderStatus::synced,
    )
    .await?;
    assert!(recorder.flush(PATIENCE).await);
    let status_after = recorder.status();
    assert_eq!(status_after.buffer.dropped.total(), 0);
    assert_eq!(
        status_after.buffer.accepted,
        u64::try_from(expected.total())?,
        "a re-list after the restart offers nothing twice: {status_after:?}"
    );
    assert_eq!(rows(&pool).await?, expected);
    eprintln!(
        "kube-apiserver restart took {restart_took:?}; watches after it: {:?}",
        status.watches
    );
    drop(recorder);
    database.drop_database().await
}
