//! Recorder benchmark: how many facts a second the Kubernetes recorder writes to PostgreSQL,
//! end to end (GpuNode status patches on a real kube-apiserver → watch → buffer → store) and
//! for its own path alone (buffer → writer → store).
//!
//! ```sh
//! KUBECONFIG=/tmp/gpufleet-cluster/kubeconfig \
//! DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p gpufleet-dashboard --example recorder_benchmark -- [NODES] [STEPS] [FACTS]
//! ```
//!
//! It creates a scratch database `gpufleet_recorder_benchmark` next to the one in
//! `DATABASE_URL` and GpuNodes `rec-bench-N` (8 GPUs each, labelled
//! `gpufleet.io/recorder-test=rec-bench`), publishes STEPS statuses per node (each a new sample
//! per GPU), waits until every sample is in PostgreSQL, then pushes FACTS synthetic samples
//! straight into a recorder buffer; it prints both rates as JSON and deletes what it created.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use gpufleet_api::gpu_node::{GpuDevice, GpuNodeStatus, GpuTelemetry};
use gpufleet_api::{GpuNode, GpuNodeSpec};
use gpufleet_dashboard::history::TelemetrySample;
use gpufleet_dashboard::recorder::buffer::FactBuffer;
use gpufleet_dashboard::recorder::facts::Fact;
use gpufleet_dashboard::recorder::writer::{self, WriterCounters, WriterSettings};
use gpufleet_dashboard::recorder::{Recorder, RecorderConfig};
use gpufleet_dashboard::store::Store;
use gpufleet_dashboard::store::postgres::PostgresStore;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const LABEL: &str = "gpufleet.io/recorder-test";
const GPUS: u32 = 8;
const DATABASE: &str = "gpufleet_recorder_benchmark";

fn argument(index: usize, default: usize) -> anyhow::Result<usize> {
    std::env::args()
        .nth(index)
        .map_or(Ok(default), |text| text.parse())
        .context("arguments are numbers: NODES STEPS FACTS")
}

fn status(node: &str, at_ms: i64) -> anyhow::Result<GpuNodeStatus> {
    let at = Time(Timestamp::from_millisecond(at_ms)?);
    Ok(GpuNodeStatus {
        gpus: (0..GPUS)
            .map(|index| GpuDevice {
                index,
                uuid: format!("GPU-{node}-{index}"),
                product: "NVIDIA-H100-80GB-HBM3".to_owned(),
                memory_total_mib: 81_559,
                telemetry: GpuTelemetry {
                    memory_used_mib: Some(u64::try_from(at_ms % 80_000).unwrap_or(0)),
                    utilization_percent: Some(u32::try_from(at_ms % 101).unwrap_or(0)),
                    sampled_at: Some(at.clone()),
                    ..GpuTelemetry::default()
                },
                ..GpuDevice::default()
            })
            .collect(),
        last_heartbeat_time: Some(at),
        ..GpuNodeStatus::default()
    })
}

async fn samples(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM gpu_samples")
        .fetch_one(pool)
        .await?;
    Ok(count)
}

async fn end_to_end(
    client: &kube::Client,
    store: Arc<dyn Store>,
    pool: &sqlx::PgPool,
    nodes: usize,
    steps: usize,
) -> anyhow::Result<serde_json::Value> {
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let ours = ListParams::default().labels(&format!("{LABEL}=rec-bench"));
    // Left by an interrupted run.
    gpu_nodes
        .delete_collection(&DeleteParams::default(), &ours)
        .await?;
    while !gpu_nodes.list(&ours).await?.items.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recorder = Recorder::start(
        client,
        store,
        RecorderConfig {
            gpu_node_selector: Some(format!("{LABEL}=rec-bench")),
            namespace: Some("rec-bench-none".to_owned()),
            ..RecorderConfig::default()
        },
    );
    let names: Vec<String> = (0..nodes)
        .map(|index| format!("rec-bench-{index}"))
        .collect();
    for name in &names {
        let mut gpu_node = GpuNode::new(
            name,
            GpuNodeSpec {
                node_name: name.clone(),
            },
        );
        gpu_node.metadata.labels =
            Some(BTreeMap::from([(LABEL.to_owned(), "rec-bench".to_owned())]));
        gpu_nodes.create(&PostParams::default(), &gpu_node).await?;
    }
    let base_ms = gpufleet_dashboard::live::unix_millis_now() / 1_000 * 1_000;
    let started = Instant::now();
    // Each node publishes its statuses in order, as its agent would; nodes in parallel.
    futures::stream::iter(names.clone())
        .map(|name| {
            let gpu_nodes = gpu_nodes.clone();
            async move {
                for step in 0..steps {
                    let at_ms = base_ms + i64::try_from(step)? * 1_000;
                    let body = serde_json::json!({ "status": status(&name, at_ms)? });
                    gpu_nodes
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
                        .await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let published = started.elapsed();
    let expected = i64::try_from(nodes * steps)? * i64::from(GPUS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples(pool).await? < expected {
        if Instant::now() > deadline {
            bail!(
                "the recorder did not write {expected} samples in 30 seconds: {:?}",
                recorder.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recorded = started.elapsed();
    let status = recorder.status();
    drop(recorder);
    gpu_nodes
        .delete_collection(&DeleteParams::default(), &ours)
        .await?;
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = |count: i64, took: Duration| count as f64 / took.as_secs_f64();
    Ok(serde_json::json!({
        "statusPatches": nodes * steps,
        "samples": expected,
        "publishSeconds": published.as_secs_f64(),
        "recordedSeconds": recorded.as_secs_f64(),
        "patchesPerSecond": rate(i64::try_from(nodes * steps)?, published),
        "samplesRecordedPerSecond": rate(expected, recorded),
        "dropped": status.buffer.dropped.total(),
        "writerBatches": status.writer.batches,
    }))
}

async fn writer_path(store: Arc<dyn Store>, facts: usize) -> anyhow::Result<serde_json::Value> {
    let buffer = Arc::new(FactBuffer::new(facts));
    let base_ms = 1_700_000_000_000_i64;
    buffer.push((0..facts).map(|index| {
        let gpu = index % 10_000;
        let tick = i64::try_from(index / 10_000).unwrap_or(0);
        Fact::Sample(TelemetrySample {
            at_ms: base_ms + tick * 1_000,
            node: format!("bench-{}", gpu / 8),
            gpu_uuid: format!("GPU-bench-{gpu}"),
            gpu_index: i32::try_from(gpu % 8).unwrap_or(0),
            memory_used_mib: Some(1_000.0),
            memory_total_mib: Some(81_559.0),
            utilization_percent: Some(50.0),
            temperature_celsius: Some(60.0),
            power_watts: Some(400.0),
            health: 0,
            samples: 1,
            resolution_ms: 0,
        })
    }));
    let started = Instant::now();
    let task = tokio::spawn(writer::run(
        Arc::clone(&buffer),
        store,
        Arc::new(WriterCounters::default()),
        WriterSettings::default(),
        "benchmark".to_owned(),
    ));
    while buffer.counters().recorded < u64::try_from(facts)? {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    task.abort();
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = facts as f64 / took.as_secs_f64();
    Ok(serde_json::json!({
        "facts": facts,
        "seconds": took.as_secs_f64(),
        "factsPerSecond": rate,
        "batchSize": WriterSettings::default().batch_size,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes = argument(1, 20)?;
    let steps = argument(2, 10)?;
    let facts = argument(3, 200_000)?;
    let url = std::env::var("DATABASE_URL").context("set DATABASE_URL")?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    sqlx::query(concat!(
        "DROP DATABASE IF EXISTS ",
        "gpufleet_recorder_benchmark",
        " WITH (FORCE)"
    ))
    .execute(&admin)
    .await?;
    sqlx::query(concat!("CREATE DATABASE ", "gpufleet_recorder_benchmark"))
        .execute(&admin)
        .await?;
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.database(DATABASE))
        .await?;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::from_pool(pool.clone()).await?);
    let client = kube::Client::try_default()
        .await
        .context("set KUBECONFIG to a cluster with gpufleet's CRDs")?;

    let cluster = end_to_end(&client, Arc::clone(&store), &pool, nodes, steps).await?;
    sqlx::query("TRUNCATE gpu_samples").execute(&pool).await?;
    let writer = writer_path(store, facts).await?;
    pool.close().await;
    sqlx::query(concat!(
        "DROP DATABASE ",
        "gpufleet_recorder_benchmark",
        " WITH (FORCE)"
    ))
    .execute(&admin)
    .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "endToEnd": cluster,
            "writerPath": writer,
        }))?
    );
    Ok(())
}
