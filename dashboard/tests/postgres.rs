//! The PostgreSQL store against a real server, a fresh database per test (`#[sqlx::test]`
//! creates it, applies `migrations/` and drops it). Each test also runs the same operations on
//! the in-memory store and checks both agree.
//!
//! Needs `DATABASE_URL` (a role allowed to create databases): `bash tests/run-all.sh` sets it.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message, like the tests themselves"
)]

use gpufleet_dashboard::history::{HistoryPoint, HistoryQuery, TelemetrySample};
use gpufleet_dashboard::store::memory::MemoryStore;
use gpufleet_dashboard::store::postgres::PostgresStore;
use gpufleet_dashboard::store::{FleetEvent, NewPlannerRun, PlacementRecord, Store};
use sqlx::PgPool;

/// An hour boundary, so minute and five-minute buckets line up with the series.
const START: i64 = 1_789_999_200_000;

fn sample(at_ms: i64, node: &str, uuid: &str, utilisation: f32) -> TelemetrySample {
    TelemetrySample {
        at_ms,
        node: node.to_owned(),
        gpu_uuid: uuid.to_owned(),
        gpu_index: 0,
        memory_used_mib: Some(1_000.0 + utilisation),
        memory_total_mib: Some(81_559.0),
        utilization_percent: Some(utilisation),
        temperature_celsius: if at_ms % 2_000 == 0 { None } else { Some(50.0) },
        power_watts: Some(300.0),
        health: i16::from(utilisation > 95.0),
        samples: 1,
        resolution_ms: 0,
    }
}

/// Two GPUs on one node and one on another, one sample a second for `seconds`.
fn series(seconds: i64) -> Vec<TelemetrySample> {
    (0..seconds)
        .flat_map(|second| {
            let at = START + second * 1_000;
            #[expect(clippy::cast_precision_loss, reason = "small test numbers")]
            let wave = (second % 100) as f32;
            [
                sample(at, "node-a", "GPU-a0", wave),
                sample(at, "node-a", "GPU-a1", 100.0 - wave),
                sample(at, "node-b", "GPU-b0", 42.0),
            ]
        })
        .collect()
}

/// Compares two answers; `extremes` also compares min and max (a roll-up keeps means and
/// sample counts, not the raw extremes).
fn assert_same(postgres: &[HistoryPoint], memory: &[HistoryPoint], extremes: bool) {
    assert_eq!(postgres.len(), memory.len(), "{postgres:?}\nvs\n{memory:?}");
    for (left, right) in postgres.iter().zip(memory) {
        assert_eq!(left.at_ms, right.at_ms);
        assert_eq!(left.samples, right.samples);
        assert!(
            (left.mean - right.mean).abs() < 1e-3,
            "{left:?} vs {right:?}"
        );
        if extremes {
            assert!((left.min - right.min).abs() < 1e-3 && (left.max - right.max).abs() < 1e-3);
        }
    }
}

async fn both(pool: PgPool) -> (PostgresStore, MemoryStore) {
    let postgres = PostgresStore::from_pool(pool).await.expect("migrated");
    (postgres, MemoryStore::default())
}

#[sqlx::test(migrations = false)]
#[ignore = "needs PostgreSQL: run `bash tests/run-all.sh` (sets DATABASE_URL)"]
async fn batched_ingest_is_idempotent_and_history_matches_the_memory_store(pool: PgPool) {
    let (postgres, memory) = both(pool).await;
    let samples = series(600);
    assert_eq!(
        postgres.record_samples(&samples).await.expect("ingest"),
        1_800
    );
    assert_eq!(
        memory.record_samples(&samples).await.expect("ingest"),
        1_800
    );
    assert_eq!(
        postgres
            .record_samples(&samples[..300])
            .await
            .expect("replay"),
        0,
        "a replayed batch writes nothing"
    );

    for (gpu, node, metric, step) in [
        (Some("GPU-a0"), None, "utilization", 10_000),
        (None, Some("node-a"), "utilization", 60_000),
        (None, Some("node-a"), "temperature", 30_000),
        (Some("GPU-a1"), None, "health", 1_000),
        (None, Some("node-b"), "memoryUsed", 120_000),
    ] {
        let query = HistoryQuery::new(
            gpu.map(str::to_owned),
            node.map(str::to_owned),
            metric,
            START + 5_000,
            START + 400_000,
            Some(step),
        )
        .expect("query");
        let from_postgres = postgres.history(&query).await.expect("history");
        let from_memory = memory.history(&query).await.expect("history");
        assert!(!from_postgres.is_empty(), "{query:?}");
        assert_same(&from_postgres, &from_memory, true);
    }
    let query = HistoryQuery::new(
        Some("GPU-a0".into()),
        None,
        "utilization",
        START,
        START + 100_000,
        Some(100_000),
    )
    .expect("query");
    let points = postgres.history(&query).await.expect("history");
    assert_eq!(points.len(), 1);
    assert!(
        (points[0].mean - 49.5).abs() < 1e-9,
        "mean of 0..99: {:?}",
        points[0]
    );
    assert_eq!(points[0].samples, 100);
}

#[sqlx::test(migrations = false)]
#[ignore = "needs PostgreSQL: run `bash tests/run-all.sh` (sets DATABASE_URL)"]
async fn downsampling_keeps_the_answers_and_retention_drops_old_samples(pool: PgPool) {
    let (postgres, memory) = both(pool).await;
    let samples = series(7_200);
    postgres.record_samples(&samples).await.expect("ingest");
    memory.record_samples(&samples).await.expect("ingest");
    let cutoff = START + 3_600_000;
    let query = HistoryQuery::new(
        None,
        Some("node-a".into()),
        "utilization",
        START,
        START + 7_200_000,
        Some(300_000),
    )
    .expect("query");
    let before = postgres.history(&query).await.expect("history");

    let replaced = postgres
        .downsample(cutoff, 60_000)
        .await
        .expect("downsample");
    assert_eq!(replaced, 3 * 3_600, "every raw sample of the first hour");
    assert_eq!(
        memory.downsample(cutoff, 60_000).await.expect("downsample"),
        replaced
    );
    assert_eq!(
        postgres.downsample(cutoff, 60_000).await.expect("again"),
        0,
        "rolled-up samples stay"
    );
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM gpu_samples WHERE resolution_ms = 60000")
            .fetch_one(postgres.pool())
            .await
            .expect("count");
    assert_eq!(rows, 3 * 60, "one per GPU and minute");
    let after = postgres.history(&query).await.expect("history");
    assert_same(&after, &before, false);
    assert_same(
        &after,
        &memory.history(&query).await.expect("history"),
        true,
    );

    let deleted = postgres.retain(START + 1_800_000).await.expect("retain");
    assert_eq!(deleted, 3 * 30, "the first half hour of minute roll-ups");
    assert_eq!(
        memory.retain(START + 1_800_000).await.expect("retain"),
        deleted
    );
    let after_retention = postgres.history(&query).await.expect("history");
    assert_eq!(
        after_retention.first().map(|point| point.at_ms),
        Some(START + 1_800_000)
    );
    assert!(
        after_retention
            .iter()
            .all(|point| point.at_ms + 300_000 > START + 1_800_000)
    );
}

#[sqlx::test(migrations = false)]
#[ignore = "needs PostgreSQL: run `bash tests/run-all.sh` (sets DATABASE_URL)"]
async fn events_decisions_and_planner_runs_round_trip_once(pool: PgPool) {
    let (postgres, _) = both(pool).await;
    let event = |id: &str, at_ms: i64| FleetEvent {
        id: id.to_owned(),
        at_ms,
        severity: "Warning".to_owned(),
        reason: "GpuUnhealthy".to_owned(),
        object_kind: "GpuNode".to_owned(),
        object_name: "node-a".to_owned(),
        gpu_uuid: (at_ms % 2 == 0).then(|| "GPU-a0".to_owned()),
        message: format!("event {id}"),
    };
    let events = vec![
        event("e1", START),
        event("e2", START + 1),
        event("e3", START + 2),
    ];
    assert_eq!(postgres.record_events(&events).await.expect("events"), 3);
    assert_eq!(
        postgres.record_events(&events).await.expect("events"),
        0,
        "never the same fact twice"
    );
    let read = postgres.events(2).await.expect("events");
    assert_eq!(read, vec![events[2].clone(), events[1].clone()]);

    let decision = |id: &str, deployment: &str| PlacementRecord {
        id: id.to_owned(),
        at_ms: START,
        deployment: deployment.to_owned(),
        replica: "llama-0".to_owned(),
        outcome: "Placed".to_owned(),
        node: Some("node-a".to_owned()),
        gpu_uuids: vec!["GPU-a0".to_owned(), "GPU-a1".to_owned()],
        score_total: Some(-0.25),
        detail: serde_json::json!({"strategy": "best-fit", "thermalPenalty": 0.125}),
        message: "placed".to_owned(),
    };
    let decisions = vec![
        decision("d1", "default/llama"),
        decision("d2", "default/qwen"),
    ];
    assert_eq!(
        postgres
            .record_placements(&decisions)
            .await
            .expect("decisions"),
        2
    );
    assert_eq!(
        postgres
            .record_placements(&decisions)
            .await
            .expect("decisions"),
        0
    );
    assert_eq!(
        postgres
            .placements(Some("default/llama"), 10)
            .await
            .expect("read"),
        vec![decisions[0].clone()]
    );
    assert_eq!(postgres.placements(None, 10).await.expect("read").len(), 2);

    let run = NewPlannerRun {
        at_ms: START,
        scenario: "baseline".to_owned(),
        parameters: serde_json::json!({"mfu": 0.4}),
        duration_ms: 120,
        result: serde_json::json!({"plan": {"objective_musd": 1234.5}}),
        csv: "period,capex\n2025Q1,1\n".to_owned(),
    };
    let first = postgres.record_planner_run(&run).await.expect("run");
    let second = postgres.record_planner_run(&run).await.expect("run");
    assert!(second > first);
    let stored = postgres
        .planner_run(first)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (stored.at_ms, stored.result.clone(), stored.csv.clone()),
        (run.at_ms, run.result.clone(), run.csv.clone())
    );
    assert!(
        postgres
            .planner_run(second + 1)
            .await
            .expect("read")
            .is_none()
    );
    let listed = postgres.planner_runs(1).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, second);
}

/// `DATABASE_URL` with its host and port replaced by `127.0.0.1:port` and its database by
/// `database`, credentials kept.
fn url_via(port: u16, database: &str) -> String {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set");
    let (scheme, rest) = url.split_once("://").expect("DATABASE_URL is a URL");
    let userinfo = rest
        .split_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}127.0.0.1:{port}/{database}")
}

/// Hardening finding 1: a dashboard started while PostgreSQL was down exited with code 1. The
/// store is now created without a server; every call fails with a connection error (the
/// recorder buffers, history answers 503) until the server answers, and then it migrates the
/// schema on first contact and serves. "Down" and "back" are a port where nothing listens and
/// then a TCP forwarder to the real server on that port.
#[sqlx::test(migrations = false)]
#[ignore = "needs PostgreSQL: run `bash tests/run-all.sh` (sets DATABASE_URL)"]
async fn a_store_created_while_postgres_is_down_migrates_and_serves_once_it_is_back(pool: PgPool) {
    use gpufleet_test_support::{Seen, wait_until};
    let options = pool.connect_options();
    let database = options.get_database().expect("a database").to_owned();
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();

    let store = PostgresStore::connect(&url_via(port, &database))
        .await
        .expect("created while the server is down");
    let down = store.ping().await.expect_err("no server yet").to_string();
    assert!(down.contains("could not connect"), "{down}");
    assert!(store.record_samples(&series(1)).await.is_err());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the reserved port");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    wait_until(
        std::time::Duration::from_secs(120),
        "the store to answer once the server is reachable",
        || async {
            Ok(match store.ping().await {
                Ok(()) => Seen::Done,
                Err(error) => Seen::NotYet(error.to_string()),
            })
        },
    )
    .await
    .expect("the store reconnects");
    assert_eq!(
        store
            .record_samples(&series(10))
            .await
            .expect("migrated on first contact"),
        30
    );
    store.pool().close().await;
}
