//! The PostgreSQL store (sqlx). Schema in `dashboard/migrations/`, embedded in the binary and
//! applied at start-up. Every statement is a constant string with bound parameters; batches go
//! in as arrays through `UNNEST`, one round trip per batch.
//!
//! Queries are checked at run time (`sqlx::query_as` with typed rows), not by the compile-time
//! macros: the workspace builds with no database and without an `.sqlx/` cache. The PostgreSQL
//! tests (`tests/postgres.rs`) exercise every statement against a real server.
//!
//! Times are `timestamptz`; the API speaks Unix milliseconds, converted in SQL exactly
//! (`'epoch' + ms × 1 ms` in, `extract(epoch …) × 1000` out).

use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Json;

use super::{
    FleetEvent, NewPlannerRun, PlacementRecord, PlannerRunRecord, PlannerRunSummary, Store,
    StoreError, StoreResult,
};
use crate::history::{HistoryPoint, HistoryQuery, Subject, TelemetrySample};

/// The embedded migrations of `dashboard/migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// History in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn query_error(step: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { step, source }
}

const INSERT_SAMPLES: &str = "
INSERT INTO gpu_samples (at, gpu_uuid, resolution_ms, node, gpu_index, memory_used_mib,
    memory_total_mib, utilization_percent, temperature_celsius, power_watts, health, samples)
SELECT 'epoch'::timestamptz + s.at_ms::float8 * interval '1 millisecond', s.gpu_uuid,
    s.resolution_ms, s.node, s.gpu_index, s.memory_used_mib, s.memory_total_mib,
    s.utilization_percent, s.temperature_celsius, s.power_watts, s.health, s.samples
FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::float4[],
    $7::float4[], $8::float4[], $9::float4[], $10::float4[], $11::int2[], $12::int4[])
    AS s(at_ms, gpu_uuid, resolution_ms, node, gpu_index, memory_used_mib, memory_total_mib,
         utilization_percent, temperature_celsius, power_watts, health, samples)
ON CONFLICT (gpu_uuid, at, resolution_ms) DO NOTHING";

// The metric column is chosen by a bound name in a CASE, never spliced into the text.
const HISTORY_OF_GPU: &str = "
SELECT (extract(epoch FROM date_bin($3::float8 * interval '1 millisecond', at, 'epoch'::timestamptz)) * 1000)::int8,
    sum(v * samples) / sum(samples), min(v), max(v), sum(samples)::int8
FROM (SELECT at, samples, (CASE $1
        WHEN 'memoryUsed' THEN memory_used_mib
        WHEN 'utilization' THEN utilization_percent
        WHEN 'temperature' THEN temperature_celsius
        WHEN 'power' THEN power_watts
        WHEN 'health' THEN health::real END)::float8 AS v
    FROM gpu_samples
    WHERE gpu_uuid = $2
      AND at >= 'epoch'::timestamptz + $4::float8 * interval '1 millisecond'
      AND at < 'epoch'::timestamptz + $5::float8 * interval '1 millisecond') AS selected
WHERE v IS NOT NULL
GROUP BY 1 ORDER BY 1";

const HISTORY_OF_NODE: &str = "
SELECT (extract(epoch FROM date_bin($3::float8 * interval '1 millisecond', at, 'epoch'::timestamptz)) * 1000)::int8,
    sum(v * samples) / sum(samples), min(v), max(v), sum(samples)::int8
FROM (SELECT at, samples, (CASE $1
        WHEN 'memoryUsed' THEN memory_used_mib
        WHEN 'utilization' THEN utilization_percent
        WHEN 'temperature' THEN temperature_celsius
        WHEN 'power' THEN power_watts
        WHEN 'health' THEN health::real END)::float8 AS v
    FROM gpu_samples
    WHERE node = $2
      AND at >= 'epoch'::timestamptz + $4::float8 * interval '1 millisecond'
      AND at < 'epoch'::timestamptz + $5::float8 * interval '1 millisecond') AS selected
WHERE v IS NOT NULL
GROUP BY 1 ORDER BY 1";

/// Replaces samples older than $1 (ms) and finer than $2 (ms) by one per GPU and bucket, in
/// one statement (so in one transaction). Means are weighted by `samples` and skip absent
/// readings; health keeps the worst.
const DOWNSAMPLE: &str = "
WITH moved AS (
    DELETE FROM gpu_samples
    WHERE at < 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
      AND resolution_ms < $2
    RETURNING *
), inserted AS (
    INSERT INTO gpu_samples (at, gpu_uuid, resolution_ms, node, gpu_index, memory_used_mib,
        memory_total_mib, utilization_percent, temperature_celsius, power_watts, health, samples)
    SELECT date_bin($2::float8 * interval '1 millisecond', at, 'epoch'::timestamptz), gpu_uuid, $2,
        min(node), min(gpu_index),
        (sum(memory_used_mib::float8 * samples) / nullif(sum(samples) FILTER (WHERE memory_used_mib IS NOT NULL), 0))::real,
        (sum(memory_total_mib::float8 * samples) / nullif(sum(samples) FILTER (WHERE memory_total_mib IS NOT NULL), 0))::real,
        (sum(utilization_percent::float8 * samples) / nullif(sum(samples) FILTER (WHERE utilization_percent IS NOT NULL), 0))::real,
        (sum(temperature_celsius::float8 * samples) / nullif(sum(samples) FILTER (WHERE temperature_celsius IS NOT NULL), 0))::real,
        (sum(power_watts::float8 * samples) / nullif(sum(samples) FILTER (WHERE power_watts IS NOT NULL), 0))::real,
        max(health), sum(samples)::int4
    FROM moved
    GROUP BY 1, gpu_uuid
    ON CONFLICT (gpu_uuid, at, resolution_ms) DO NOTHING
    RETURNING 1
)
SELECT count(*)::int8 FROM moved";

const RETAIN: &str = "
DELETE FROM gpu_samples WHERE at < 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'";

const INSERT_EVENTS: &str = "
INSERT INTO fleet_events (id, at, severity, reason, object_kind, object_name, gpu_uuid, message)
SELECT e.id, 'epoch'::timestamptz + e.at_ms::float8 * interval '1 millisecond', e.severity,
    e.reason, e.object_kind, e.object_name, e.gpu_uuid, e.message
FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[]) AS e(id, at_ms, severity, reason, object_kind, object_name, gpu_uuid, message)
ON CONFLICT (id) DO NOTHING";

const SELECT_EVENTS: &str = "
SELECT id, (extract(epoch FROM at) * 1000)::int8, severity, reason, object_kind, object_name,
    gpu_uuid, message
FROM fleet_events ORDER BY at DESC, id DESC LIMIT $1";

const INSERT_PLACEMENT: &str = "
INSERT INTO placement_decisions (id, at, deployment, replica, outcome, node, gpu_uuids,
    score_total, detail, message)
VALUES ($1, 'epoch'::timestamptz + $2::float8 * interval '1 millisecond', $3, $4, $5, $6, $7,
    $8, $9, $10)
ON CONFLICT (id) DO NOTHING";

const SELECT_PLACEMENTS: &str = "
SELECT id, (extract(epoch FROM at) * 1000)::int8, deployment, replica, outcome, node, gpu_uuids,
    score_total, detail, message
FROM placement_decisions
WHERE $1::text IS NULL OR deployment = $1
ORDER BY at DESC, id DESC LIMIT $2";

const INSERT_RUN: &str = "
INSERT INTO planner_runs (at, scenario, parameters, duration_ms, result, csv)
VALUES ('epoch'::timestamptz + $1::float8 * interval '1 millisecond', $2, $3, $4, $5, $6)
RETURNING id";

const SELECT_RUN: &str = "
SELECT id, (extract(epoch FROM at) * 1000)::int8, scenario, parameters, duration_ms, result, csv
FROM planner_runs WHERE id = $1";

const SELECT_RUNS: &str = "
SELECT id, (extract(epoch FROM at) * 1000)::int8, scenario, parameters, duration_ms
FROM planner_runs ORDER BY id DESC LIMIT $1";

type EventRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
);

type PlacementRow = (
    String,
    i64,
    String,
    String,
    String,
    Option<String>,
    Vec<String>,
    Option<f64>,
    Json<serde_json::Value>,
    String,
);

impl PostgresStore {
    /// Connects to `url` and applies the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::Connect`] or [`StoreError::Migrate`], saying what to check.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(StoreError::Connect)?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool, applying the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] when the schema cannot be brought up to date.
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Self { pool })
    }

    /// The pool, for maintenance and tests.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn insert_samples(&self, samples: &[TelemetrySample]) -> StoreResult<u64> {
        if samples.is_empty() {
            return Ok(0);
        }
        let column = |pick: fn(&TelemetrySample) -> Option<f32>| -> Vec<Option<f32>> {
            samples.iter().map(pick).collect()
        };
        let result = sqlx::query(INSERT_SAMPLES)
            .bind(samples.iter().map(|s| s.at_ms).collect::<Vec<i64>>())
            .bind(
                samples
                    .iter()
                    .map(|s| s.gpu_uuid.as_str())
                    .collect::<Vec<&str>>(),
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.resolution_ms)
                    .collect::<Vec<i64>>(),
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.node.as_str())
                    .collect::<Vec<&str>>(),
            )
            .bind(samples.iter().map(|s| s.gpu_index).collect::<Vec<i32>>())
            .bind(column(|s| s.memory_used_mib))
            .bind(column(|s| s.memory_total_mib))
            .bind(column(|s| s.utilization_percent))
            .bind(column(|s| s.temperature_celsius))
            .bind(column(|s| s.power_watts))
            .bind(samples.iter().map(|s| s.health).collect::<Vec<i16>>())
            .bind(samples.iter().map(|s| s.samples).collect::<Vec<i32>>())
            .execute(&self.pool)
            .await
            .map_err(query_error("insert telemetry samples"))?;
        Ok(result.rows_affected())
    }

    async fn select_history(&self, query: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let (sql, subject) = match &query.subject {
            Subject::Gpu(uuid) => (HISTORY_OF_GPU, uuid.as_str()),
            Subject::Node(node) => (HISTORY_OF_NODE, node.as_str()),
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "Unix milliseconds and steps are far below 2^52"
        )]
        let (step, from, to) = (
            query.step_ms as f64,
            query.from_ms as f64,
            query.to_ms as f64,
        );
        let rows: Vec<(i64, f64, f64, f64, i64)> = sqlx::query_as(sql)
            .bind(query.metric.name())
            .bind(subject)
            .bind(step)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("query telemetry history"))?;
        Ok(rows
            .into_iter()
            .map(|(at_ms, mean, min, max, samples)| HistoryPoint {
                at_ms,
                mean,
                min,
                max,
                samples,
            })
            .collect())
    }

    async fn insert_events(&self, events: &[FleetEvent]) -> StoreResult<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let text =
            |pick: fn(&FleetEvent) -> &str| -> Vec<&str> { events.iter().map(pick).collect() };
        let result = sqlx::query(INSERT_EVENTS)
            .bind(text(|e| e.id.as_str()))
            .bind(events.iter().map(|e| e.at_ms).collect::<Vec<i64>>())
            .bind(text(|e| e.severity.as_str()))
            .bind(text(|e| e.reason.as_str()))
            .bind(text(|e| e.object_kind.as_str()))
            .bind(text(|e| e.object_name.as_str()))
            .bind(
                events
                    .iter()
                    .map(|e| e.gpu_uuid.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            )
            .bind(text(|e| e.message.as_str()))
            .execute(&self.pool)
            .await
            .map_err(query_error("insert fleet events"))?;
        Ok(result.rows_affected())
    }

    async fn select_events(&self, limit: i64) -> StoreResult<Vec<FleetEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(SELECT_EVENTS)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read fleet events"))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, at_ms, severity, reason, object_kind, object_name, gpu_uuid, message)| {
                    FleetEvent {
                        id,
                        at_ms,
                        severity,
                        reason,
                        object_kind,
                        object_name,
                        gpu_uuid,
                        message,
                    }
                },
            )
            .collect())
    }

    async fn insert_placements(&self, placements: &[PlacementRecord]) -> StoreResult<u64> {
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(query_error("begin a placement batch"))?;
        let mut written = 0;
        for placement in placements {
            written += sqlx::query(INSERT_PLACEMENT)
                .bind(&placement.id)
                .bind(placement.at_ms)
                .bind(&placement.deployment)
                .bind(&placement.replica)
                .bind(&placement.outcome)
                .bind(placement.node.as_deref())
                .bind(&placement.gpu_uuids)
                .bind(placement.score_total)
                .bind(Json(&placement.detail))
                .bind(&placement.message)
                .execute(&mut *transaction)
                .await
                .map_err(query_error("insert a placement decision"))?
                .rows_affected();
        }
        transaction
            .commit()
            .await
            .map_err(query_error("commit a placement batch"))?;
        Ok(written)
    }

    async fn select_placements(
        &self,
        deployment: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<PlacementRecord>> {
        let rows: Vec<PlacementRow> = sqlx::query_as(SELECT_PLACEMENTS)
            .bind(deployment)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read placement decisions"))?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    at_ms,
                    deployment,
                    replica,
                    outcome,
                    node,
                    gpu_uuids,
                    score_total,
                    Json(detail),
                    message,
                )| PlacementRecord {
                    id,
                    at_ms,
                    deployment,
                    replica,
                    outcome,
                    node,
                    gpu_uuids,
                    score_total,
                    detail,
                    message,
                },
            )
            .collect())
    }

    async fn insert_run(&self, run: &NewPlannerRun) -> StoreResult<i64> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "Unix milliseconds are far below 2^52"
        )]
        let at = run.at_ms as f64;
        let (id,): (i64,) = sqlx::query_as(INSERT_RUN)
            .bind(at)
            .bind(&run.scenario)
            .bind(Json(&run.parameters))
            .bind(run.duration_ms)
            .bind(Json(&run.result))
            .bind(&run.csv)
            .fetch_one(&self.pool)
            .await
            .map_err(query_error("insert a planner run"))?;
        Ok(id)
    }

    async fn select_run(&self, id: i64) -> StoreResult<Option<PlannerRunRecord>> {
        type Row = (
            i64,
            i64,
            String,
            Json<serde_json::Value>,
            i64,
            Json<serde_json::Value>,
            String,
        );
        let row: Option<Row> = sqlx::query_as(SELECT_RUN)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read a planner run"))?;
        Ok(row.map(
            |(id, at_ms, scenario, Json(parameters), duration_ms, Json(result), csv)| {
                PlannerRunRecord {
                    id,
                    at_ms,
                    scenario,
                    parameters,
                    duration_ms,
                    result,
                    csv,
                }
            },
        ))
    }

    async fn select_runs(&self, limit: i64) -> StoreResult<Vec<PlannerRunSummary>> {
        let rows: Vec<(i64, i64, String, Json<serde_json::Value>, i64)> =
            sqlx::query_as(SELECT_RUNS)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(query_error("list planner runs"))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, at_ms, scenario, Json(parameters), duration_ms)| PlannerRunSummary {
                    id,
                    at_ms,
                    scenario,
                    parameters,
                    duration_ms,
                },
            )
            .collect())
    }
}

impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(query_error("answer a ping"))?;
            Ok(())
        }
        .boxed()
    }

    fn record_samples<'a>(
        &'a self,
        samples: &'a [TelemetrySample],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        self.insert_samples(samples).boxed()
    }

    fn history<'a>(
        &'a self,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryPoint>>> {
        self.select_history(query).boxed()
    }

    fn downsample(&self, before_ms: i64, bucket_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            #[expect(
                clippy::cast_precision_loss,
                reason = "Unix milliseconds are far below 2^52"
            )]
            let before = before_ms as f64;
            let (moved,): (i64,) = sqlx::query_as(DOWNSAMPLE)
                .bind(before)
                .bind(bucket_ms)
                .fetch_one(&self.pool)
                .await
                .map_err(query_error("roll telemetry samples up"))?;
            Ok(u64::try_from(moved).unwrap_or(0))
        }
        .boxed()
    }

    fn retain(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            #[expect(
                clippy::cast_precision_loss,
                reason = "Unix milliseconds are far below 2^52"
            )]
            let before = before_ms as f64;
            let result = sqlx::query(RETAIN)
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(query_error("delete expired telemetry samples"))?;
            Ok(result.rows_affected())
        }
        .boxed()
    }

    fn record_events<'a>(&'a self, events: &'a [FleetEvent]) -> BoxFuture<'a, StoreResult<u64>> {
        self.insert_events(events).boxed()
    }

    fn events(&self, limit: i64) -> BoxFuture<'_, StoreResult<Vec<FleetEvent>>> {
        self.select_events(limit).boxed()
    }

    fn record_placements<'a>(
        &'a self,
        placements: &'a [PlacementRecord],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        self.insert_placements(placements).boxed()
    }

    fn placements<'a>(
        &'a self,
        deployment: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, StoreResult<Vec<PlacementRecord>>> {
        self.select_placements(deployment, limit).boxed()
    }

    fn record_planner_run<'a>(&'a self, run: &'a NewPlannerRun) -> BoxFuture<'a, StoreResult<i64>> {
        self.insert_run(run).boxed()
    }

    fn planner_run(&self, id: i64) -> BoxFuture<'_, StoreResult<Option<PlannerRunRecord>>> {
        self.select_run(id).boxed()
    }

    fn planner_runs(&self, limit: i64) -> BoxFuture<'_, StoreResult<Vec<PlannerRunSummary>>> {
        self.select_runs(limit).boxed()
    }
}
