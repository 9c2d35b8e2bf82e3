//! The Kubernetes recorder: watches what gpufleet writes to the cluster and keeps it as history.
//!
//! ```text
//!  kube-apiserver                                    this module                      Store
//!  ──────────────                                    ───────────                      ─────
//!  GpuNode (status) ───watch─► reflector ─► facts::Observed ─┐
//!  InferenceDeployment ─watch─► reflector ─► facts::Observed ─┼─► FactBuffer ─► writer ─► samples,
//!  Event (gpufleet-operator) ─watch────────► facts::Observed ─┘   (bounded,     (batches,  events,
//!  Node ───────────────watch─► reflector                          drop-oldest)  retries)  placements
//!            │
//!            └── the reflectors' caches ─► ClusterFeed (FleetFeed) ─► the dashboard's live view
//! ```
//!
//! It survives:
//! - **a kube-apiserver restart**: every watcher runs with kube's default backoff; a broken
//!   watch re-lists, and the re-listed objects yield only facts not offered before
//!   ([`facts::Observed`]). A re-list shows each object's current state, so a status the agent
//!   overwrote while the watch was down is never seen — by this or any watcher; that is a
//!   property of Kubernetes watches, not a drop, and it is not counted as one;
//! - **a PostgreSQL outage**: the writer retries the batch in hand with exponential backoff
//!   while the watchers keep filling the bounded [`buffer::FactBuffer`]; once full it drops the
//!   oldest facts, counts them and writes a `RecorderGap` event when the store is back, so
//!   history says what it lacks;
//! - **its own restart**: every fact has a natural key in the store (see [`facts`]), so a new
//!   recorder re-offering what an old one wrote changes nothing.
//!
//! [`Recorder::status`] (also `GET /api/v1/recorder`) reports the buffer depth, the drop
//! counters, the writer's failures and each watch's state.

pub mod buffer;
pub mod facts;
pub mod feed;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use gpufleet_api::{GpuNode, InferenceDeployment};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use serde::Serialize;
use tokio::task::JoinHandle;

use self::buffer::{BufferCounters, FactBuffer};
use self::facts::Observed;
use self::feed::ClusterFeed;
use self::writer::{WriterCounters, WriterSettings, WriterValues};
use crate::live::unix_millis_now;
use crate::store::Store;

/// The `reportingController` of the Events the gpufleet operator publishes (its field
/// manager, `gpufleet_operator::FIELD_MANAGER`; the dashboard does not depend on the operator).
pub const OPERATOR_REPORTING_CONTROLLER: &str = "gpufleet-operator";

/// What to watch and how to buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderConfig {
    /// Watch InferenceDeployments and Events of this namespace only (all when `None`).
    pub namespace: Option<String>,
    /// Watch only the GpuNodes with these labels (a label selector, e.g. `pool=a`).
    pub gpu_node_selector: Option<String>,
    /// Record the Events of this `reportingController`.
    pub event_reporter: String,
    /// Facts held while the store is slow or down; beyond it the oldest are dropped.
    pub buffer_capacity: usize,
    /// Batching and retries of the store writer.
    pub writer: WriterSettings,
    /// Names this recorder in gap markers and logs.
    pub instance: String,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            gpu_node_selector: None,
            event_reporter: OPERATOR_REPORTING_CONTROLLER.to_owned(),
            buffer_capacity: 200_000,
            writer: WriterSettings::default(),
            instance: "gpufleet-dashboard".to_owned(),
        }
    }
}

/// The state of one watch.
#[derive(Debug)]
pub struct WatchCounters {
    resource: &'static str,
    lists: AtomicU64,
    synced: AtomicBool,
    errors: AtomicU64,
    changes: AtomicU64,
}

impl WatchCounters {
    fn new(resource: &'static str) -> Self {
        Self {
            resource,
            lists: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    fn values(&self) -> WatchStatus {
        WatchStatus {
            resource: self.resource,
            lists: self.lists.load(Ordering::Relaxed),
            synced: self.synced.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
        }
    }
}

/// One watch as numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchStatus {
    /// The resource watched.
    pub resource: &'static str,
    /// Full lists so far: 1 after start-up, one more after every broken watch.
    pub lists: u64,
    /// Whether the latest list has completed.
    pub synced: bool,
    /// Watch errors (the apiserver gone, a watch expired, …), each followed by a backoff.
    pub errors: u64,
    /// Objects applied or deleted.
    pub changes: u64,
}

/// Everything the recorder reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecorderStatus {
    /// The instance name (as in gap markers).
    pub instance: String,
    /// Unix milliseconds of the start.
    pub started_at_ms: i64,
    /// Buffer depth, recorded and dropped facts, gap markers.
    pub buffer: BufferCounters,
    /// Batches, new rows and failures of the store writer.
    pub writer: WriterValues,
    /// Each watch.
    pub watches: Vec<WatchStatus>,
}

impl RecorderStatus {
    /// Whether every watch has completed its latest list.
    #[must_use]
    pub fn synced(&self) -> bool {
        self.watches.iter().all(|watch| watch.synced)
    }
}

/// The counters the recorder's tasks share with whoever reports on them.
#[derive(Debug)]
pub struct RecorderShared {
    instance: String,
    started_at_ms: i64,
    buffer: Arc<FactBuffer>,
    writer: Arc<WriterCounters>,
    watches: Vec<Arc<WatchCounters>>,
}

impl RecorderShared {
    /// The recorder's state now.
    #[must_use]
    pub fn status(&self) -> RecorderStatus {
        RecorderStatus {
            instance: self.instance.clone(),
            started_at_ms: self.started_at_ms,
            buffer: self.buffer.counters(),
            writer: self.writer.values(),
            watches: self.watches.iter().map(|watch| watch.values()).collect(),
        }
    }
}

/// A running recorder. Dropping it stops its watchers and writer.
#[derive(Debug)]
pub struct Recorder {
    shared: Arc<RecorderShared>,
    feed: ClusterFeed,
    tasks: Vec<JoinHandle<()>>,
}

/// Drives one watch stream: counts lists, syncs and errors, and hands every applied or deleted
/// object to `handle`. Errors never end it: the stream backs off and re-lists by itself.
async fn drive<K, S>(
    stream: S,
    counters: Arc<WatchCounters>,
    mut handle: impl FnMut(watcher::Event<K>) + Send,
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Init) => {
                counters.lists.fetch_add(1, Ordering::Relaxed);
                counters.synced.store(false, Ordering::Relaxed);
            }
            Ok(watcher::Event::InitDone) => counters.synced.store(true, Ordering::Relaxed),
            Ok(event) => {
                counters.changes.fetch_add(1, Ordering::Relaxed);
                handle(event);
            }
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, resource = counters.resource, "watch failed; backing off and re-listing");
            }
        }
    }
}

fn watch_config(labels: Option<&str>, fields: Option<&str>) -> watcher::Config {
    let mut config = watcher::Config::default();
    if let Some(labels) = labels {
        config = config.labels(labels);
    }
    if let Some(fields) = fields {
        config = config.fields(fields);
    }
    config
}

fn namespaced<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

impl Recorder {
    /// Starts the watchers and the writer on the current tokio runtime. Nothing is awaited:
    /// connection problems show up as watch errors in [`status`](Self::status) and the
    /// watchers keep retrying.
    #[must_use]
    pub fn start(client: &Client, store: Arc<dyn Store>, config: RecorderConfig) -> Self {
        let buffer = Arc::new(FactBuffer::new(config.buffer_capacity));
        let writer_counters = Arc::new(WriterCounters::default());
        let gpu_node_watch = Arc::new(WatchCounters::new("gpunodes.gpufleet.io"));
        let deployment_watch = Arc::new(WatchCounters::new("inferencedeployments.gpufleet.io"));
        let event_watch = Arc::new(WatchCounters::new("events.events.k8s.io"));
        let node_watch = Arc::new(WatchCounters::new("nodes"));
        let (gpu_nodes, gpu_node_writer) = reflector::store::<GpuNode>();
        let (deployments, deployment_writer) = reflector::store::<InferenceDeployment>();
        let (nodes, node_writer) = reflector::store::<Node>();
        let namespace = config.namespace.as_deref();
        let mut tasks = Vec::new();

        let stream = watcher(
            Api::<GpuNode>::all(client.clone()),
            watch_config(config.gpu_node_selector.as_deref(), None),
        )
        .default_backoff()
        .reflect(gpu_node_writer);
        let mut observed = Observed::default();
        let sink = Arc::clone(&buffer);
        tasks.push(tokio::spawn(drive(
            stream,
            Arc::clone(&gpu_node_watch),
            move |event| match event {
                watcher::Event::Apply(gpu_node) | watcher::Event::InitApply(gpu_node) => {
                    sink.push(observed.gpu_node(&gpu_node, unix_millis_now()));
                }
                watcher::Event::Delete(gpu_node) => observed.forget_gpu_node(&gpu_node),
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
        )));

        let stream = watcher(
            namespaced::<InferenceDeployment>(client, namespace),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(deployment_writer);
        let mut observed = Observed::default();
        let sink = Arc::clone(&buffer);
        tasks.push(tokio::spawn(drive(
            stream,
            Arc::clone(&deployment_watch),
            move |event| match event {
                watcher::Event::Apply(deployment) | watcher::Event::InitApply(deployment) => {
                    sink.push(observed.deployment(&deployment, unix_millis_now()));
                }
                watcher::Event::Delete(deployment) => observed.forget_deployment(&deployment),
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
        )));

        let reporter = format!("reportingController={}", config.event_reporter);
        let stream = watcher(
            namespaced::<Event>(client, namespace),
            watch_config(None, Some(&reporter)),
        )
        .default_backoff();
        let mut observed = Observed::default();
        let sink = Arc::clone(&buffer);
        tasks.push(tokio::spawn(drive(
            stream,
            Arc::clone(&event_watch),
            move |event| match event {
                watcher::Event::Apply(event) | watcher::Event::InitApply(event) => {
                    sink.push(observed.event(&event, unix_millis_now()));
                }
                // Events expire (an hour by default); their facts stay recorded.
                watcher::Event::Delete(event) => observed.forget_event(&event),
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
        )));

        // Nodes feed the live view only (labels for placement, readiness); no history.
        let stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(node_writer);
        tasks.push(tokio::spawn(drive(stream, Arc::clone(&node_watch), |_| {})));

        tasks.push(tokio::spawn(writer::run(
            Arc::clone(&buffer),
            store,
            Arc::clone(&writer_counters),
            config.writer,
            config.instance.clone(),
        )));

        let shared = Arc::new(RecorderShared {
            instance: config.instance,
            started_at_ms: unix_millis_now(),
            buffer,
            writer: writer_counters,
            watches: vec![gpu_node_watch, deployment_watch, event_watch, node_watch],
        });
        Self {
            shared,
            feed: ClusterFeed::new(gpu_nodes, deployments, nodes),
            tasks,
        }
    }

    /// The counters, to share with the dashboard's status endpoint.
    #[must_use]
    pub fn shared(&self) -> Arc<RecorderShared> {
        Arc::clone(&self.shared)
    }

    /// The recorder's state now.
    #[must_use]
    pub fn status(&self) -> RecorderStatus {
        self.shared.status()
    }

    /// A live-view feed over the watched GpuNodes, Nodes and InferenceDeployments.
    #[must_use]
    pub fn feed(&self) -> ClusterFeed {
        self.feed.clone()
    }

    /// Waits until nothing is queued or in flight, up to `timeout`; says whether it got there.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let counters = self.shared.buffer.counters();
            if counters.queued == 0 && counters.in_flight == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
