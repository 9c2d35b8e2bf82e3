//! The PostgreSQL store (sqlx). Schema in `dashboard/migrations/`, embedded in the binary and
//! applied at start-up. Every statement is a string literal with bound parameters, checked at
//! compile time by sqlx's macros (`query!`, `query_as!`, `query_scalar!`); batches go in as
//! arrays through `UNNEST`, one round trip per batch.
//!
//! The macros read the offline cache `dashboard/.sqlx/` (one `query-<hash>.json` per
//! statement, committed): the workspace's `.cargo/config.toml` sets `SQLX_OFFLINE=true`, so no
//! build needs a database. After changing a statement or a migration, regenerate the cache
//! against a fresh, migrated database with `dashboard/sqlx-prepare.sh` (no sqlx-cli needed: the
//! macros write the cache themselves when built with `SQLX_OFFLINE=false`, `DATABASE_URL` and
//! `SQLX_OFFLINE_DIR`). `tests/run-all.sh` regenerates it the same way and fails on drift. The
//! PostgreSQL tests (`tests/postgres.rs`) still run every statement against a real server.
//!
//! Times are `timestamptz`; the API speaks Unix milliseconds, converted in SQL exactly
//! (`'epoch' + ms × 1 ms` in, `extract(epoch …) × 1000` out).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::{
    FleetEvent, NewPlannerRun, PlacementRecord, PlannerRunRecord, PlannerRunSummary, Store,
    StoreError, StoreResult,
};
use crate::history::{HistoryPoint, HistoryQuery, Subject, TelemetrySample};

/// The embedded migrations of `dashboard/migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// History in PostgreSQL.
///
/// The store rides out a database that is down: it is created without a connection, migrates
/// on first contact, and until then every call fails with [`StoreError::Connect`] (the
/// recorder buffers and counts, history answers 503, `/healthz` says degraded) instead of the
/// dashboard exiting or restarting.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Set once the embedded migrations have run against this pool.
    migrated: Arc<tokio::sync::OnceCell<()>>,
}

/// Whether `error` says the server could not be reached (down, restarting, the network),
/// rather than that it refused us (wrong password, missing rights): the first is ridden out,
/// the second is the user's to fix and stops start-up.
fn unreachable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
    )
}

fn query_error(step: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { step, source }
}

/// Unix milliseconds (or a step in milliseconds) as the `float8` the SQL multiplies by
/// `interval '1 millisecond'`.
#[expect(
    clippy::cast_precision_loss,
    reason = "Unix milliseconds and steps are far below 2^52"
)]
fn millis(ms: i64) -> f64 {
    ms as f64
}

impl PostgresStore {
    /// Connects to `url` and applies the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::Connect`] or [`StoreError::Migrate`], saying what to check.
    ///
    /// A server that cannot be reached now is not an error: the store is returned unmigrated
    /// and migrates when the server answers. A server that answers and refuses (credentials,
    /// rights, a schema it cannot migrate) is.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(StoreError::Connect)?;
        let store = Self {
            pool,
            migrated: Arc::new(tokio::sync::OnceCell::new()),
        };
        match store.ready().await {
            Ok(_) => {}
            Err(StoreError::Connect(error)) if unreachable(&error) => {
                tracing::warn!(%error, "PostgreSQL is unreachable; serving without history until it answers");
            }
            Err(error) => return Err(error),
        }
        Ok(store)
    }

    /// Uses an existing pool, applying the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] when the schema cannot be brought up to date.
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Self {
            pool,
            migrated: Arc::new(tokio::sync::OnceCell::new_with(Some(()))),
        })
    }

    /// The pool, once the schema is migrated (migrating now if it is not yet).
    async fn ready(&self) -> StoreResult<&PgPool> {
        self.migrated
            .get_or_try_init(|| async {
                MIGRATOR.run(&self.pool).await.map_err(|error| match error {
                    sqlx::migrate::MigrateError::Execute(source) if unreachable(&source) => {
                        StoreError::Connect(source)
                    }
                    other => StoreError::Migrate(other),
                })
            })
            .await?;
        Ok(&self.pool)
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
        let text = |pick: fn(&TelemetrySample) -> &str| -> Vec<&str> {
            samples.iter().map(pick).collect()
        };
        let at_ms: Vec<i64> = samples.iter().map(|s| s.at_ms).collect();
        let gpu_uuid = text(|s| s.gpu_uuid.as_str());
        let resolution_ms: Vec<i64> = samples.iter().map(|s| s.resolution_ms).collect();
        let node = text(|s| s.node.as_str());
        let gpu_index: Vec<i32> = samples.iter().map(|s| s.gpu_index).collect();
        let memory_used_mib = column(|s| s.memory_used_mib);
        let memory_total_mib = column(|s| s.memory_total_mib);
        let utilization_percent = column(|s| s.utilization_percent);
        let temperature_celsius = column(|s| s.temperature_celsius);
        let power_watts = column(|s| s.power_watts);
        let health: Vec<i16> = samples.iter().map(|s| s.health).collect();
        let sample_counts: Vec<i32> = samples.iter().map(|s| s.samples).collect();
        // `&[&str]` and `&[Option<f32>]` stand for the `text[]` and nullable `float4[]` arrays
        // (the macros' own check knows only `&[String]` and `&[f32]`).
        let result = sqlx::query!(
            "
INSERT INTO gpu_samples (at, gpu_uuid, resolution_ms, node, gpu_index, memory_used_mib,
    memory_total_mib, utilization_percent, temperature_celsius, power_watts, health, samples)
SELECT 'epoch'::timestamptz + s.at_ms::float8 * interval '1 millisecond', s.gpu_uuid,
    s.resolution_ms, s.node, s.gpu_index, s.memory_used_mib, s.memory_total_mib,
    s.utilization_percent, s.temperature_celsius, s.power_watts, s.health, s.samples
FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::float4[],
    $7::float4[], $8::float4[], $9::float4[], $10::float4[], $11::int2[], $12::int4[])
    AS s(at_ms, gpu_uuid, resolution_ms, node, gpu_index, memory_used_mib, memory_total_mib,
         utilization_percent, temperature_celsius, power_watts, health, samples)
ON CONFLICT (gpu_uuid, at, resolution_ms) DO NOTHING",
            at_ms.as_slice(),
            gpu_uuid.as_slice() as &[&str],
            resolution_ms.as_slice(),
            node.as_slice() as &[&str],
            gpu_index.as_slice(),
            memory_used_mib.as_slice() as &[Option<f32>],
            memory_total_mib.as_slice() as &[Option<f32>],
            utilization_percent.as_slice() as &[Option<f32>],
            temperature_celsius.as_slice() as &[Option<f32>],
            power_watts.as_slice() as &[Option<f32>],
            health.as_slice(),
            sample_counts.as_slice(),
        )
        .execute(self.ready().await?)
        .await
        .map_err(query_error("insert telemetry samples"))?;
        Ok(result.rows_affected())
    }

    // The metric column is chosen by a bound name in a CASE, never spliced into the text; the
    // two statements differ only in the subject's column.
    async fn select_history(&self, query: &HistoryQuery) -> StoreResult<Vec<HistoryPoint>> {
        let metric = query.metric.name();
        let (step, from, to) = (
            millis(query.step_ms),
            millis(query.from_ms),
            millis(query.to_ms),
        );
        let rows = match &query.subject {
            Subject::Gpu(uuid) => {
                sqlx::query_as!(
                    HistoryPoint,
                    r#"
SELECT (extract(epoch FROM date_bin($3::float8 * interval '1 millisecond', at, 'epoch'::timestamptz)) * 1000)::int8 AS "at_ms!",
    sum(v * samples) / sum(samples) AS "mean!", min(v) AS "min!", max(v) AS "max!",
    sum(samples)::int8 AS "samples!"
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
GROUP BY 1 ORDER BY 1"#,
                    metric,
                    uuid.as_str(),
                    step,
                    from,
                    to,
                )
                .fetch_all(self.ready().await?)
                .await
            }
            Subject::Node(node) => {
                sqlx::query_as!(
                    HistoryPoint,
                    r#"
SELECT (extract(epoch FROM date_bin($3::float8 * interval '1 millisecond', at, 'epoch'::timestamptz)) * 1000)::int8 AS "at_ms!",
    sum(v * samples) / sum(samples) AS "mean!", min(v) AS "min!", max(v) AS "max!",
    sum(samples)::int8 AS "samples!"
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
GROUP BY 1 ORDER BY 1"#,
                    metric,
                    node.as_str(),
                    step,
                    from,
                    to,
                )
                .fetch_all(self.ready().await?)
                .await
            }
        };
        rows.map_err(query_error("query telemetry history"))
    }

    async fn insert_events(&self, events: &[FleetEvent]) -> StoreResult<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let text =
            |pick: fn(&FleetEvent) -> &str| -> Vec<&str> { events.iter().map(pick).collect() };
        let id = text(|e| e.id.as_str());
        let at_ms: Vec<i64> = events.iter().map(|e| e.at_ms).collect();
        let severity = text(|e| e.severity.as_str());
        let reason = text(|e| e.reason.as_str());
        let object_kind = text(|e| e.object_kind.as_str());
        let object_name = text(|e| e.object_name.as_str());
        let gpu_uuid: Vec<Option<&str>> = events.iter().map(|e| e.gpu_uuid.as_deref()).collect();
        let message = text(|e| e.message.as_str());
        let result = sqlx::query!(
            "
INSERT INTO fleet_events (id, at, severity, reason, object_kind, object_name, gpu_uuid, message)
SELECT e.id, 'epoch'::timestamptz + e.at_ms::float8 * interval '1 millisecond', e.severity,
    e.reason, e.object_kind, e.object_name, e.gpu_uuid, e.message
FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[]) AS e(id, at_ms, severity, reason, object_kind, object_name, gpu_uuid, message)
ON CONFLICT (id) DO NOTHING",
            id.as_slice() as &[&str],
            at_ms.as_slice(),
            severity.as_slice() as &[&str],
            reason.as_slice() as &[&str],
            object_kind.as_slice() as &[&str],
            object_name.as_slice() as &[&str],
            gpu_uuid.as_slice() as &[Option<&str>],
            message.as_slice() as &[&str],
        )
        .execute(self.ready().await?)
        .await
        .map_err(query_error("insert fleet events"))?;
        Ok(result.rows_affected())
    }

    async fn select_events(&self, limit: i64) -> StoreResult<Vec<FleetEvent>> {
        sqlx::query_as!(
            FleetEvent,
            r#"
SELECT id, (extract(epoch FROM at) * 1000)::int8 AS "at_ms!", severity, reason, object_kind,
    object_name, gpu_uuid, message
FROM fleet_events ORDER BY at DESC, id DESC LIMIT $1"#,
            limit,
        )
        .fetch_all(self.ready().await?)
        .await
        .map_err(query_error("read fleet events"))
    }

    async fn insert_placements(&self, placements: &[PlacementRecord]) -> StoreResult<u64> {
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(query_error("begin a placement batch"))?;
        let mut written = 0;
        for placement in placements {
            written += sqlx::query!(
                "
INSERT INTO placement_decisions (id, at, deployment, replica, outcome, node, gpu_uuids,
    score_total, detail, message)
VALUES ($1, 'epoch'::timestamptz + $2::float8 * interval '1 millisecond', $3, $4, $5, $6, $7,
    $8, $9, $10)
ON CONFLICT (id) DO NOTHING",
                placement.id.as_str(),
                millis(placement.at_ms),
                placement.deployment.as_str(),
                placement.replica.as_str(),
                placement.outcome.as_str(),
                placement.node.as_deref(),
                placement.gpu_uuids.as_slice(),
                placement.score_total,
                &placement.detail,
                placement.message.as_str(),
            )
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
        sqlx::query_as!(
            PlacementRecord,
            r#"
SELECT id, (extract(epoch FROM at) * 1000)::int8 AS "at_ms!", deployment, replica, outcome,
    node, gpu_uuids, score_total, detail, message
FROM placement_decisions
WHERE $1::text IS NULL OR deployment = $1
ORDER BY at DESC, id DESC LIMIT $2"#,
            deployment,
            limit,
        )
        .fetch_all(self.ready().await?)
        .await
        .map_err(query_error("read placement decisions"))
    }

    async fn insert_run(&self, run: &NewPlannerRun) -> StoreResult<i64> {
        sqlx::query_scalar!(
            "
INSERT INTO planner_runs (at, scenario, parameters, duration_ms, result, csv)
VALUES ('epoch'::timestamptz + $1::float8 * interval '1 millisecond', $2, $3, $4, $5, $6)
RETURNING id",
            millis(run.at_ms),
            run.scenario.as_str(),
            &run.parameters,
            run.duration_ms,
            &run.result,
            run.csv.as_str(),
        )
        .fetch_one(self.ready().await?)
        .await
        .map_err(query_error("insert a planner run"))
    }

    async fn select_run(&self, id: i64) -> StoreResult<Option<PlannerRunRecord>> {
        sqlx::query_as!(
            PlannerRunRecord,
            r#"
SELECT id, (extract(epoch FROM at) * 1000)::int8 AS "at_ms!", scenario, parameters,
    duration_ms, result, csv
FROM planner_runs WHERE id = $1"#,
            id,
        )
        .fetch_optional(self.ready().await?)
        .await
        .map_err(query_error("read a planner run"))
    }

    async fn select_runs(&self, limit: i64) -> StoreResult<Vec<PlannerRunSummary>> {
        sqlx::query_as!(
            PlannerRunSummary,
            r#"
SELECT id, (extract(epoch FROM at) * 1000)::int8 AS "at_ms!", scenario, parameters,
    duration_ms
FROM planner_runs ORDER BY id DESC LIMIT $1"#,
            limit,
        )
        .fetch_all(self.ready().await?)
        .await
        .map_err(query_error("list planner runs"))
    }
}

impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query_scalar!("SELECT 1")
                .fetch_one(self.ready().await?)
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
            // Replaces samples older than $1 (ms) and finer than $2 (ms) by one per GPU and
            // bucket, in one statement (so in one transaction). Means are weighted by
            // `samples` and skip absent readings; health keeps the worst.
            let moved = sqlx::query_scalar!(
                r#"
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
SELECT count(*)::int8 AS "moved!" FROM moved"#,
                millis(before_ms),
                bucket_ms,
            )
            .fetch_one(self.ready().await?)
            .await
            .map_err(query_error("roll telemetry samples up"))?;
            Ok(u64::try_from(moved).unwrap_or(0))
        }
        .boxed()
    }

    fn retain(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            let result = sqlx::query!(
                "
DELETE FROM gpu_samples WHERE at < 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'",
                millis(before_ms),
            )
            .execute(self.ready().await?)
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
