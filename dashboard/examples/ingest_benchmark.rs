//! Ingest benchmark: how many telemetry samples a second the PostgreSQL store writes, in
//! batches as the feed loop sends them (one `UNNEST` statement per batch).
//!
//! ```sh
//! DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p gpufleet-dashboard --example ingest_benchmark -- [BATCH] [BATCHES] [WRITERS]
//! ```
//!
//! It creates a scratch database `gpufleet_ingest_benchmark` next to the one in `DATABASE_URL`,
//! migrates it, writes BATCHES batches of BATCH samples (10,000 GPUs × 50 ticks by default)
//! from WRITERS concurrent writers, prints the rate as JSON, and drops the database.

use std::sync::Arc;
use std::time::Instant;

use gpufleet_dashboard::history::TelemetrySample;
use gpufleet_dashboard::store::Store;
use gpufleet_dashboard::store::postgres::PostgresStore;

const SCRATCH: &str = "gpufleet_ingest_benchmark";

fn batch(tick: i64, size: usize) -> Vec<TelemetrySample> {
    (0..size)
        .map(|gpu| {
            #[expect(clippy::cast_precision_loss, reason = "small benchmark numbers")]
            let value = ((gpu * 7 + usize::try_from(tick).unwrap_or(0) * 13) % 100) as f32;
            TelemetrySample {
                at_ms: 1_790_000_000_000 + tick * 1_000,
                node: format!("node-{:04}", gpu / 8),
                gpu_uuid: format!("GPU-{gpu:08}"),
                gpu_index: i32::try_from(gpu % 8).unwrap_or(0),
                memory_used_mib: Some(value * 800.0),
                memory_total_mib: Some(81_559.0),
                utilization_percent: Some(value),
                temperature_celsius: Some(30.0 + value / 2.0),
                power_watts: Some(100.0 + value * 6.0),
                health: 0,
                samples: 1,
                resolution_ms: 0,
            }
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let size: usize = arguments.next().map_or(Ok(10_000), |text| text.parse())?;
    let batches: i64 = arguments.next().map_or(Ok(50), |text| text.parse())?;
    let writers: i64 = arguments.next().map_or(Ok(2), |text| text.parse())?;
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        anyhow::anyhow!("set DATABASE_URL to a PostgreSQL role that may create databases")
    })?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let admin = sqlx::PgPool::connect(&url).await?;
        // A constant identifier: no input reaches this statement.
        sqlx::query("DROP DATABASE IF EXISTS gpufleet_ingest_benchmark")
            .execute(&admin)
            .await?;
        sqlx::query("CREATE DATABASE gpufleet_ingest_benchmark")
            .execute(&admin)
            .await?;
        let scratch_url = match url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{SCRATCH}"),
            None => anyhow::bail!("DATABASE_URL has no database part"),
        };
        let store = Arc::new(PostgresStore::connect(&scratch_url).await?);
        let prepared: Vec<Vec<TelemetrySample>> =
            (0..batches).map(|tick| batch(tick, size)).collect();
        let prepared = Arc::new(prepared);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let store = Arc::clone(&store);
            let prepared = Arc::clone(&prepared);
            tasks.push(tokio::spawn(async move {
                let mut written = 0_u64;
                for tick in (writer..batches).step_by(usize::try_from(writers).unwrap_or(1)) {
                    let index = usize::try_from(tick).unwrap_or(0);
                    written += store.record_samples(&prepared[index]).await?;
                }
                anyhow::Ok(written)
            }));
        }
        let mut written = 0;
        for task in tasks {
            written += task.await??;
        }
        let seconds = started.elapsed().as_secs_f64();
        store.pool().close().await;
        sqlx::query("DROP DATABASE IF EXISTS gpufleet_ingest_benchmark")
            .execute(&admin)
            .await?;
        #[expect(
            clippy::cast_precision_loss,
            reason = "sample counts are far below 2^52"
        )]
        let rate = written as f64 / seconds;
        println!(
            "{}",
            serde_json::json!({
                "batch": size, "batches": batches, "writers": writers,
                "samples": written, "seconds": seconds, "samples_per_second": rate,
            })
        );
        anyhow::Ok(())
    })
}
