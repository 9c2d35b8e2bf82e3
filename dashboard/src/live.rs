//! The live view: what the feed said last, the changes since the tick before, and the loop that
//! keeps both current.
//!
//! ```text
//!  FleetFeed::read (blocking thread) ─► LiveFleet::apply ─► Current (FleetView + its JSON,
//!      │                                    │                 deployments + their JSON)
//!      │                                    ├─► SSE frames ─broadcast─► /api/v1/events clients
//!      │                                    └─► TickOutcome: samples, events, decisions
//!      └────────── FeedLoop::tick ──────────────► Store (errors counted, never fatal)
//! ```
//!
//! Readers take an `Arc` of the current view under a short read lock, so `/api/v1/fleet`
//! returns pre-serialised bytes without re-encoding thousands of GPUs per request: the fleet
//! document is encoded once per tick as JSON, gzip-compressed once (4 MB of JSON at 10,000
//! GPUs becomes about 0.5 MB, and bandwidth, not CPU, is what bounds that route) and tagged
//! with an entity tag for conditional requests ([`EncodedDocument`]). Each change is
//! serialised once into an SSE frame and shared by every subscriber.

use std::collections::HashMap;
use std::hash::Hasher as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use actix_web::web::Bytes;
use gpufleet_api::InferenceDeployment;
use gpufleet_api::gpu_node::HealthState;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::fleet::{FleetFeed, FleetView, GpuView, NodeReading};
use crate::history::{TelemetrySample, health_code, samples_of};
use crate::placement::{self, DeploymentView, PlacementSource};
use crate::reported;
use crate::store::{FleetEvent, PlacementRecord, Store};

/// SSE frames buffered per subscriber before a slow one is told to resynchronise.
const SUBSCRIBER_BUFFER: usize = 512;

/// The view as of the last tick.
#[derive(Debug, Default)]
pub struct Current {
    /// The fleet.
    pub fleet: FleetView,
    /// `fleet` as JSON (and gzip, and its entity tag), encoded once per tick.
    pub fleet_document: EncodedDocument,
    /// Deployments with their placements.
    pub deployments: Vec<DeploymentView>,
    /// `deployments` as JSON.
    pub deployments_json: Bytes,
    round_key: String,
}

/// What one tick produced for the store.
#[derive(Debug, Default)]
pub struct TickOutcome {
    /// Telemetry samples.
    pub samples: Vec<TelemetrySample>,
    /// Health changes and placement events.
    pub events: Vec<FleetEvent>,
    /// Placement decisions.
    pub placements: Vec<PlacementRecord>,
}

/// Counters of the live loop, shown by `/healthz`.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Ticks applied.
    pub ticks: AtomicU64,
    /// Unix milliseconds of the last tick.
    pub last_tick_ms: AtomicI64,
    /// Store writes that failed.
    pub store_failures: AtomicU64,
    /// Samples, events and decisions lost to failed store writes.
    pub records_dropped: AtomicU64,
    /// Placement rounds that failed.
    pub placement_failures: AtomicU64,
}

/// Counters as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterValues {
    /// Ticks applied.
    pub ticks: u64,
    /// Unix milliseconds of the last tick.
    pub last_tick_ms: i64,
    /// Store writes that failed.
    pub store_failures: u64,
    /// Records lost to failed store writes.
    pub records_dropped: u64,
    /// Placement rounds that failed.
    pub placement_failures: u64,
}

/// The live fleet shared by the feed loop and the handlers.
#[derive(Debug)]
pub struct LiveFleet {
    current: RwLock<Arc<Current>>,
    changes: broadcast::Sender<Bytes>,
    /// Loop counters.
    pub counters: LiveCounters,
}

impl Default for LiveFleet {
    fn default() -> Self {
        Self::new()
    }
}

/// One SSE frame: `event: NAME` and one line of JSON.
fn frame(event: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

fn encode(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A JSON document many clients read between two ticks, encoded once: as JSON, as gzip, and
/// with strong entity tags, so that serving it is a reference-count increment (and a `304 Not
/// Modified` for a client that already has it) whatever the fleet's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedDocument {
    /// The JSON.
    pub json: Bytes,
    /// The same JSON gzip-compressed, for clients that send `Accept-Encoding: gzip`.
    pub gzip: Bytes,
    /// Entity tag of the JSON, quoted as the `ETag` header carries it.
    pub etag: String,
    /// Entity tag of the gzip copy: a different representation needs a different strong tag.
    pub gzip_etag: String,
}

impl EncodedDocument {
    /// Encodes `value`. The tags hash the JSON, so an unchanged document keeps its tags (even
    /// across restarts of one build) and a changed one gets new ones.
    #[must_use]
    pub fn new(value: &impl Serialize) -> Self {
        Self::from_json(encode(value))
    }

    fn from_json(json: Bytes) -> Self {
        // Level 6 (zlib's default): at 10,000 GPUs level 1 leaves the body about a quarter
        // larger, for a compression that runs once per tick rather than once per request.
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 6),
            flate2::Compression::default(),
        );
        // Writing into a Vec cannot fail; an empty copy makes the handler serve the JSON.
        let gzip = encoder
            .write_all(&json)
            .and_then(|()| encoder.finish())
            .map(Bytes::from)
            .unwrap_or_default();
        // SipHash with fixed keys: the same bytes give the same tag in every process of one
        // build, so a restarted dashboard still answers a cached client with 304.
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(&json);
        let hash = hasher.finish();
        Self {
            json,
            gzip,
            etag: format!("\"{hash:016x}\""),
            gzip_etag: format!("\"{hash:016x}-gzip\""),
        }
    }
}

/// A GPU whose readings changed, as the heatmap needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct GpuChange<'a> {
    uuid: &'a str,
    #[serde(rename = "memoryUsedMiB")]
    memory_used_mib: Option<u64>,
    utilization_percent: Option<u32>,
    temperature_celsius: Option<u32>,
    health: HealthState,
}

/// A GPU's health changing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthChange<'a> {
    at_ms: i64,
    node: &'a str,
    index: u32,
    uuid: &'a str,
    from: HealthState,
    to: HealthState,
    reasons: &'a [String],
}

fn health_event(gpu: &GpuView, from: HealthState, at_ms: i64) -> FleetEvent {
    let (severity, reason) = match gpu.health {
        HealthState::Unhealthy => ("Warning", "GpuUnhealthy"),
        HealthState::Degraded => ("Warning", "GpuDegraded"),
        HealthState::Healthy => ("Normal", "GpuRecovered"),
    };
    let because = if gpu.reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", gpu.reasons.join(", "))
    };
    FleetEvent {
        id: format!("{}:{}:{at_ms}", gpu.uuid, health_code(gpu.health)),
        at_ms,
        severity: severity.to_owned(),
        reason: reason.to_owned(),
        object_kind: "GpuNode".to_owned(),
        object_name: gpu.node.clone(),
        gpu_uuid: Some(gpu.uuid.clone()),
        message: format!(
            "GPU {} ({}) on {}: {from:?} → {:?}{because}",
            gpu.index, gpu.uuid, gpu.node, gpu.health
        ),
    }
}

impl LiveFleet {
    /// An empty view.
    #[must_use]
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let empty = Current {
            fleet_document: EncodedDocument::new(&FleetView::default()),
            deployments_json: Bytes::from_static(b"[]"),
            ..Current::default()
        };
        Self {
            current: RwLock::new(Arc::new(empty)),
            changes,
            counters: LiveCounters::default(),
        }
    }

    /// The view as of the last tick.
    #[must_use]
    pub fn current(&self) -> Arc<Current> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// A receiver of SSE frames of every later change.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.changes.subscribe()
    }

    /// How many SSE clients are connected.
    #[must_use]
    pub fn subscribers(&self) -> usize {
        self.changes.receiver_count()
    }

    /// The counters as numbers.
    #[must_use]
    pub fn counter_values(&self) -> CounterValues {
        let counters = &self.counters;
        CounterValues {
            ticks: counters.ticks.load(Ordering::Relaxed),
            last_tick_ms: counters.last_tick_ms.load(Ordering::Relaxed),
            store_failures: counters.store_failures.load(Ordering::Relaxed),
            records_dropped: counters.records_dropped.load(Ordering::Relaxed),
            placement_failures: counters.placement_failures.load(Ordering::Relaxed),
        }
    }

    fn publish(&self, frame: Bytes) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.changes.send(frame);
    }

    /// Applies one tick of readings: swaps the view, broadcasts what changed, re-places
    /// deployments when the usable GPUs or the deployments changed, and returns what the store
    /// should record. The deployments are placed by a what-if round
    /// ([`PlacementSource::WhatIf`]); see [`apply_from`](Self::apply_from).
    pub fn apply(
        &self,
        readings: Vec<NodeReading>,
        deployments: &[InferenceDeployment],
        now_ms: i64,
    ) -> TickOutcome {
        self.apply_from(readings, deployments, PlacementSource::WhatIf, now_ms)
    }

    /// Like [`apply`](Self::apply), with the deployments' placements from `source`: a what-if
    /// round of the dashboard's engine, or the operator's status ([`crate::reported`]), which
    /// makes no decisions or events of its own (the recorder keeps the operator's in history)
    /// and sends a `placements` frame whenever a status changed what the view shows.
    pub fn apply_from(
        &self,
        readings: Vec<NodeReading>,
        deployments: &[InferenceDeployment],
        source: PlacementSource,
        now_ms: i64,
    ) -> TickOutcome {
        let fleet = FleetView::from_readings(readings, now_ms);
        let previous = self.current();
        let before: HashMap<&str, &GpuView> = previous
            .fleet
            .gpus()
            .map(|gpu| (gpu.uuid.as_str(), gpu))
            .collect();
        let mut outcome = TickOutcome {
            samples: samples_of(&fleet),
            ..TickOutcome::default()
        };
        let mut changed = Vec::new();
        let mut health_frames = Vec::new();
        let mut layout_changed = before.len() != fleet.totals.gpus;
        for gpu in fleet.gpus() {
            let Some(old) = before.get(gpu.uuid.as_str()) else {
                layout_changed = true;
                continue;
            };
            if old.health != gpu.health {
                outcome.events.push(health_event(gpu, old.health, now_ms));
                health_frames.push(frame(
                    "health",
                    &HealthChange {
                        at_ms: now_ms,
                        node: &gpu.node,
                        index: gpu.index,
                        uuid: &gpu.uuid,
                        from: old.health,
                        to: gpu.health,
                        reasons: &gpu.reasons,
                    },
                ));
            }
            if old.memory_used_mib != gpu.memory_used_mib
                || old.utilization_percent != gpu.utilization_percent
                || old.temperature_celsius != gpu.temperature_celsius
                || old.health != gpu.health
            {
                changed.push(GpuChange {
                    uuid: &gpu.uuid,
                    memory_used_mib: gpu.memory_used_mib,
                    utilization_percent: gpu.utilization_percent,
                    temperature_celsius: gpu.temperature_celsius,
                    health: gpu.health,
                });
            }
        }
        let telemetry_frame = (!changed.is_empty()).then(|| {
            frame(
                "telemetry",
                &serde_json::json!({"atMs": now_ms, "totals": fleet.totals, "gpus": changed}),
            )
        });

        // The operator's status is read every tick (it changes without the fleet changing); a
        // what-if round runs only when the deployments or the usable GPUs changed.
        let mut views_changed = false;
        let (deployment_views, round_key) = if source == PlacementSource::Operator {
            let views = reported::deployment_views(deployments, &fleet);
            views_changed = views != previous.deployments;
            (views, String::new())
        } else {
            let round_key = placement::round_key(&fleet, deployments);
            if round_key == previous.round_key {
                (previous.deployments.clone(), round_key)
            } else {
                match placement::place(&fleet, deployments, &previous.deployments, now_ms) {
                    Ok(round) => {
                        outcome.placements = round.records;
                        outcome.events.extend(round.events);
                        (round.deployments, round_key)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "placement round failed; keeping the previous placements");
                        self.counters
                            .placement_failures
                            .fetch_add(1, Ordering::Relaxed);
                        // Retry on the next tick.
                        (previous.deployments.clone(), String::new())
                    }
                }
            }
        };
        let placements_changed = views_changed || !outcome.placements.is_empty();
        // Unchanged operator views keep their bytes (no re-encoding of up to 100 placements per
        // deployment every tick).
        let deployments_json = if source == PlacementSource::Operator && !views_changed {
            previous.deployments_json.clone()
        } else {
            encode(&deployment_views)
        };
        let next = Current {
            fleet_document: EncodedDocument::new(&fleet),
            deployments_json,
            deployments: deployment_views,
            fleet,
            round_key,
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        self.counters.ticks.fetch_add(1, Ordering::Relaxed);
        self.counters.last_tick_ms.store(now_ms, Ordering::Relaxed);

        if layout_changed {
            self.publish(frame("resync", &serde_json::json!({"atMs": now_ms})));
        } else if let Some(telemetry) = telemetry_frame {
            self.publish(telemetry);
        }
        for health in health_frames {
            self.publish(health);
        }
        for event in &outcome.events {
            self.publish(frame("event", event));
        }
        if placements_changed {
            self.publish(frame("placements", &serde_json::json!({"atMs": now_ms})));
        }
        outcome
    }
}

/// Milliseconds since the Unix epoch now.
#[must_use]
pub fn unix_millis_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How history is kept small (see [`Store::downsample`] and [`Store::retain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// Run maintenance every this many ticks.
    pub every_ticks: u64,
    /// Raw samples older than this are rolled up.
    pub raw_for: Duration,
    /// Into buckets this wide.
    pub rollup_bucket: Duration,
    /// Samples older than this are deleted.
    pub keep_for: Duration,
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            every_ticks: 300,
            raw_for: Duration::from_secs(3_600),
            rollup_bucket: Duration::from_secs(60),
            keep_for: Duration::from_secs(30 * 24 * 3_600),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Reads the feed, applies it and records what changed.
pub struct FeedLoop {
    feed: Arc<Mutex<Box<dyn FleetFeed>>>,
    live: Arc<LiveFleet>,
    store: Arc<dyn Store>,
    maintenance: Maintenance,
    /// Whether ticks write samples, events and decisions (off when a recorder writes history).
    record: bool,
}

impl std::fmt::Debug for FeedLoop {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FeedLoop")
            .field("store", &self.store.kind())
            .field("maintenance", &self.maintenance)
            .finish_non_exhaustive()
    }
}

impl Clone for FeedLoop {
    fn clone(&self) -> Self {
        Self {
            feed: Arc::clone(&self.feed),
            live: Arc::clone(&self.live),
            store: Arc::clone(&self.store),
            maintenance: self.maintenance,
            record: self.record,
        }
    }
}

impl FeedLoop {
    /// A loop over `feed` into `live` and `store`.
    pub fn new(
        feed: Box<dyn FleetFeed>,
        live: Arc<LiveFleet>,
        store: Arc<dyn Store>,
        maintenance: Maintenance,
    ) -> Self {
        Self {
            feed: Arc::new(Mutex::new(feed)),
            live,
            store,
            maintenance,
            record: true,
        }
    }

    /// Whether ticks record what they saw. A cluster's history comes from the Kubernetes
    /// recorder (the agents' own sample times, the operator's real placements), so a feed over
    /// the same cluster must not write a second, tick-timed copy nor its what-if placements.
    #[must_use]
    pub fn recording_history(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    fn count_failure(&self, what: &'static str, lost: usize, error: &crate::store::StoreError) {
        tracing::warn!(%error, lost, "could not record {what}");
        let counters = &self.live.counters;
        counters.store_failures.fetch_add(1, Ordering::Relaxed);
        counters
            .records_dropped
            .fetch_add(u64::try_from(lost).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// One tick: read, apply, record. Store failures are counted, never returned.
    pub async fn tick(&self) {
        let feed = Arc::clone(&self.feed);
        let read = tokio::task::spawn_blocking(move || {
            let mut feed = feed.lock().unwrap_or_else(PoisonError::into_inner);
            (feed.read(), feed.deployments(), feed.placement_source())
        })
        .await;
        let (readings, deployments, source) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "the fleet feed panicked; skipping this tick");
                return;
            }
        };
        let now_ms = unix_millis_now();
        let outcome = self.live.apply_from(readings, &deployments, source, now_ms);
        if self.record {
            self.record_outcome(&outcome).await;
        }
        let ticks = self.live.counters.ticks.load(Ordering::Relaxed);
        if self.maintenance.every_ticks > 0 && ticks.is_multiple_of(self.maintenance.every_ticks) {
            self.maintain(now_ms).await;
        }
    }

    async fn record_outcome(&self, outcome: &TickOutcome) {
        if let Err(error) = self.store.record_samples(&outcome.samples).await {
            self.count_failure("telemetry samples", outcome.samples.len(), &error);
        }
        if let Err(error) = self.store.record_events(&outcome.events).await {
            self.count_failure("fleet events", outcome.events.len(), &error);
        }
        if !outcome.placements.is_empty()
            && let Err(error) = self.store.record_placements(&outcome.placements).await
        {
            self.count_failure("placement decisions", outcome.placements.len(), &error);
        }
    }

    async fn maintain(&self, now_ms: i64) {
        let rollup_before = now_ms - millis(self.maintenance.raw_for);
        let bucket = millis(self.maintenance.rollup_bucket);
        if let Err(error) = self.store.downsample(rollup_before, bucket).await {
            tracing::warn!(%error, "could not roll telemetry up");
        }
        let keep_after = now_ms - millis(self.maintenance.keep_for);
        if let Err(error) = self.store.retain(keep_after).await {
            tracing::warn!(%error, "could not delete expired telemetry");
        }
    }

    /// Ticks every `interval` for ever.
    pub async fn run(self, interval: Duration) {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            timer.tick().await;
            self.tick().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::fixtures::{device, node};

    fn readings(health: HealthState, utilisation: u32) -> Vec<NodeReading> {
        vec![node(
            "a",
            vec![
                device(0, "H100", 80_000, 1_000, utilisation, health),
                device(1, "H100", 80_000, 1_000, 10, HealthState::Healthy),
            ],
        )]
    }

    fn drain(receiver: &mut broadcast::Receiver<Bytes>) -> Vec<String> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect()
    }

    #[test]
    fn an_encoded_document_keeps_its_tags_while_its_json_is_unchanged() {
        use std::io::Read as _;

        let same = EncodedDocument::new(&serde_json::json!({"gpus": [1, 2, 3]}));
        let again = EncodedDocument::new(&serde_json::json!({"gpus": [1, 2, 3]}));
        let other = EncodedDocument::new(&serde_json::json!({"gpus": [1, 2, 4]}));
        assert_eq!(same.etag, again.etag);
        assert_ne!(same.etag, other.etag);
        assert_ne!(same.etag, same.gzip_etag);
        assert!(same.etag.starts_with('"') && same.etag.ends_with('"'));
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(same.gzip.as_ref())
            .read_to_end(&mut json)
            .expect("valid gzip");
        assert_eq!(json, same.json.as_ref());
    }

    #[test]
    fn an_operator_fed_view_shows_its_status_and_decides_nothing_itself() {
        use gpufleet_api::inference_deployment::{InferenceDeploymentStatus, ReplicaPlacement};

        let live = LiveFleet::new();
        let mut receiver = live.subscribe();
        let mut deployment = crate::placement::fixtures::deployment("llm", 1, 1, 10_000);
        let first = live.apply_from(
            readings(HealthState::Healthy, 10),
            std::slice::from_ref(&deployment),
            PlacementSource::Operator,
            1_000,
        );
        assert!(first.placements.is_empty() && first.events.is_empty());
        let current = live.current();
        assert!(current.deployments[0].placed.is_empty(), "no what-if round");
        assert!(
            drain(&mut receiver)
                .iter()
                .any(|f| f.starts_with("event: placements\n"))
        );

        deployment.status = Some(InferenceDeploymentStatus {
            replicas: 1,
            placements: vec![ReplicaPlacement {
                pod: "llm-r0".to_owned(),
                node: "a".to_owned(),
                gpu_uuids: vec!["GPU-a-1".to_owned()],
                ..ReplicaPlacement::default()
            }],
            ..InferenceDeploymentStatus::default()
        });
        for at_ms in [2_000, 3_000] {
            let outcome = live.apply_from(
                readings(HealthState::Healthy, 10),
                std::slice::from_ref(&deployment),
                PlacementSource::Operator,
                at_ms,
            );
            assert!(outcome.placements.is_empty() && outcome.events.is_empty());
            let frames = drain(&mut receiver);
            assert_eq!(
                frames.iter().any(|f| f.starts_with("event: placements\n")),
                at_ms == 2_000,
                "a frame when the status changed the view, none after: {frames:?}"
            );
        }
        let current = live.current();
        let json: serde_json::Value =
            serde_json::from_slice(&current.deployments_json).expect("json");
        assert_eq!(json[0]["placementSource"], "operator");
        assert_eq!(json[0]["placed"][0]["node"], "a");
        assert_eq!(json[0]["placed"][0]["gpus"][0]["index"], 1);
    }

    #[test]
    fn changes_become_sse_frames_and_health_changes_become_events() {
        let live = LiveFleet::new();
        let mut receiver = live.subscribe();
        let first = live.apply(readings(HealthState::Healthy, 10), &[], 1_000);
        assert_eq!(first.samples.len(), 2);
        assert!(first.events.is_empty());
        assert!(drain(&mut receiver)[0].starts_with("event: resync\n"));

        let quiet = live.apply(readings(HealthState::Healthy, 10), &[], 2_000);
        assert!(quiet.events.is_empty());
        assert!(
            drain(&mut receiver).is_empty(),
            "nothing changed, nothing sent"
        );

        let busy = live.apply(readings(HealthState::Healthy, 90), &[], 3_000);
        assert!(busy.events.is_empty());
        let frames = drain(&mut receiver);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].starts_with("event: telemetry\ndata: {"));
        assert!(frames[0].contains("\"utilizationPercent\":90"));
        assert!(frames[0].ends_with("\n\n"));

        let broken = live.apply(readings(HealthState::Unhealthy, 90), &[], 4_000);
        assert_eq!(broken.events.len(), 1);
        assert_eq!(broken.events[0].reason, "GpuUnhealthy");
        assert_eq!(broken.events[0].object_name, "a");
        let frames = drain(&mut receiver);
        assert!(
            frames
                .iter()
                .any(|frame| frame.starts_with("event: health\n")
                    && frame.contains("\"to\":\"Unhealthy\""))
        );
        assert!(
            frames
                .iter()
                .any(|frame| frame.starts_with("event: event\n"))
        );
        assert_eq!(live.current().fleet.totals.unhealthy, 1);
        assert_eq!(live.counter_values().ticks, 4);
    }
}
