//! Where history lives: the [`Store`] trait and its two implementations.
//!
//! ```text
//!  live feed loop ─record_samples / record_events / record_placements─► Store
//!  planner runs ──record_planner_run──────────────────────────────────► Store
//!  API handlers ◄─history / events / placements / planner_run(s)────── Store
//!  maintenance ───downsample (roll raw samples up) / retain (drop old)─► Store
//! ```
//!
//! [`memory::MemoryStore`] keeps bounded history in the process (`gpufleet dashboard
//! --simulate`, unit and API tests); [`postgres::PostgresStore`] keeps it in PostgreSQL. Both
//! write each fact once: samples are keyed by GPU, time and resolution, events and placement
//! decisions by their id, so a replayed batch changes nothing.
//!
//! The trait returns boxed futures so the app can hold an `Arc<dyn Store>` chosen at start-up.

pub mod memory;
pub mod postgres;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::history::{HistoryPoint, HistoryQuery, TelemetrySample};

/// Everything a store can fail at; the message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting to PostgreSQL failed.
    #[error(
        "could not connect to PostgreSQL: {0}; check --database-url (postgres://USER:PASSWORD@HOST:PORT/DATABASE) and that the server is up"
    )]
    Connect(#[source] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error(
        "could not migrate the dashboard schema: {0}; the database user needs CREATE on the database"
    )]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed (the step names which).
    #[error(
        "PostgreSQL failed to {step}: {source}; check the server's log and that it is reachable"
    )]
    Query {
        /// What was being done.
        step: &'static str,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// A stored JSON document could not be read back.
    #[error("stored {what} is not valid JSON: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A placement decision or refusal, with the score that decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRecord {
    /// Unique id of the decision (`namespace/name/replica@time` from the dashboard's own
    /// placement; `namespace/name/pod@node/gpu-uuids` from the recorder, which sees no decision
    /// time in a deployment's status): writing it twice is a no-op.
    pub id: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// The deployment, `namespace/name`.
    pub deployment: String,
    /// The replica.
    pub replica: String,
    /// `Placed` or `Unplaceable`.
    pub outcome: String,
    /// The node chosen.
    pub node: Option<String>,
    /// The GPUs chosen, by UUID.
    pub gpu_uuids: Vec<String>,
    /// Total score (lower wins).
    pub score_total: Option<f64>,
    /// The score breakdown as the engine gives it, or the refusal reasons.
    pub detail: serde_json::Value,
    /// A sentence for people.
    pub message: String,
}

/// Something a user can see happened: a GPU's health changed, a replica was placed or moved.
/// Shaped like a Kubernetes Event so the recorder can store those the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetEvent {
    /// Unique id (a Kubernetes Event's UID, or derived from the fact): writing it twice is a
    /// no-op.
    pub id: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// `Normal` or `Warning`.
    pub severity: String,
    /// Machine-readable reason (`GpuUnhealthy`, `Placed`, …).
    pub reason: String,
    /// Kind of the object concerned (`GpuNode`, `InferenceDeployment`).
    pub object_kind: String,
    /// Name of the object concerned (`node-3`, `default/llama`).
    pub object_name: String,
    /// GPU concerned, when there is one.
    pub gpu_uuid: Option<String>,
    /// A sentence for people.
    pub message: String,
}

/// A planner run as stored: inputs, result and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannerRunRecord {
    /// Id given by the store.
    pub id: i64,
    /// When it finished, Unix milliseconds.
    pub at_ms: i64,
    /// Scenario name.
    pub scenario: String,
    /// The parameters changed from the scenario as written.
    pub parameters: serde_json::Value,
    /// Wall time of the solves, milliseconds.
    pub duration_ms: i64,
    /// The plan (gpufleet-planner's JSON) and the comparison.
    pub result: serde_json::Value,
    /// The plan's per-period CSV.
    pub csv: String,
}

/// A planner run's inputs and results before the store has given it an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlannerRun {
    /// When it finished, Unix milliseconds.
    pub at_ms: i64,
    /// Scenario name.
    pub scenario: String,
    /// Parameters changed.
    pub parameters: serde_json::Value,
    /// Wall time, milliseconds.
    pub duration_ms: i64,
    /// Plan and comparison.
    pub result: serde_json::Value,
    /// Per-period CSV.
    pub csv: String,
}

/// A planner run without its (large) result, for listings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannerRunSummary {
    /// Id.
    pub id: i64,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Scenario name.
    pub scenario: String,
    /// Parameters changed.
    pub parameters: serde_json::Value,
    /// Wall time, milliseconds.
    pub duration_ms: i64,
}

/// Storage of the dashboard's history. Every write is idempotent (see the module docs).
pub trait Store: Send + Sync + 'static {
    /// Short name for logs and `/healthz` (`memory`, `postgresql`).
    fn kind(&self) -> &'static str;

    /// Checks the store answers.
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>>;

    /// Writes telemetry samples in one batch; returns how many were new.
    fn record_samples<'a>(
        &'a self,
        samples: &'a [TelemetrySample],
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// Answers a history query, one point per non-empty bucket, in time order.
    fn history<'a>(
        &'a self,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryPoint>>>;

    /// Rolls samples older than `before_ms` that are finer than `bucket_ms` up into one sample
    /// per GPU and bucket; returns how many samples were replaced.
    fn downsample(&self, before_ms: i64, bucket_ms: i64) -> BoxFuture<'_, StoreResult<u64>>;

    /// Deletes samples older than `before_ms`; returns how many.
    fn retain(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>>;

    /// Writes fleet events; returns how many were new.
    fn record_events<'a>(&'a self, events: &'a [FleetEvent]) -> BoxFuture<'a, StoreResult<u64>>;

    /// The latest events, newest first.
    fn events(&self, limit: i64) -> BoxFuture<'_, StoreResult<Vec<FleetEvent>>>;

    /// Writes placement decisions; returns how many were new.
    fn record_placements<'a>(
        &'a self,
        placements: &'a [PlacementRecord],
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// The latest placement decisions, newest first, of one deployment (`namespace/name`) or of
    /// all.
    fn placements<'a>(
        &'a self,
        deployment: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, StoreResult<Vec<PlacementRecord>>>;

    /// Stores a planner run and returns its id.
    fn record_planner_run<'a>(&'a self, run: &'a NewPlannerRun) -> BoxFuture<'a, StoreResult<i64>>;

    /// One planner run with its result.
    fn planner_run(&self, id: i64) -> BoxFuture<'_, StoreResult<Option<PlannerRunRecord>>>;

    /// The latest planner runs, newest first.
    fn planner_runs(&self, limit: i64) -> BoxFuture<'_, StoreResult<Vec<PlannerRunSummary>>>;
}
