//! Many simulated agents in one process, for scale tests, benchmarks and `gpufleet demo`.
//!
//! ```text
//! one sampler thread ─► SimulatedSource × N ─► NodeView × N ─► Publisher × N (tokio tasks) ─► apiserver
//! ```
//!
//! Every virtual node behaves as a real agent would (same sampler, health grading, publish
//! policy and backoff); only the GPUs are simulated. The report says how often each node wrote
//! and the longest gap between two successful writes of any node: the heartbeat the operator
//! relies on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::health::HealthPolicy;
use crate::preset::MachinePreset;
use crate::publisher::{Publisher, StepOutcome};
use crate::sampler::Sampler;
use crate::simulated::{SimulatedSource, SimulationClock};
use crate::status::PublishPolicy;

/// What a fleet run measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FleetReport {
    /// Virtual nodes run.
    pub nodes: usize,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// Successful writes (all nodes).
    pub writes: u64,
    /// Failed writes (all nodes).
    pub failures: u64,
    /// Writes per node per 30 s, averaged over nodes (steady state is 1).
    pub writes_per_node_per_30_seconds: f64,
    /// Longest time any node went without a successful write after its first, in seconds.
    pub longest_gap_seconds: f64,
    /// Nodes that never wrote.
    pub silent_nodes: usize,
    /// Slowest successful write (apply of the status, and of the object the first time), seconds.
    pub slowest_write_seconds: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct NodeRecord {
    writes: u64,
    failures: u64,
    last_write: Option<Instant>,
    longest_gap: Duration,
    slowest_write: Duration,
}

/// Runs `names.len()` simulated agents of `preset` against `client` for `duration`, sampling every
/// `interval`. The Nodes must exist (the GpuNode's owner).
pub async fn run_fleet(
    client: kube::Client,
    names: &[String],
    preset: &MachinePreset,
    interval: Duration,
    duration: Duration,
) -> FleetReport {
    let stop = Arc::new(AtomicBool::new(false));
    let mut samplers = Vec::with_capacity(names.len());
    // Real agents start at different moments; spreading the virtual ones over one heartbeat
    // period keeps them from writing in lockstep (1,000 writes in the same instant).
    let spread = PublishPolicy::default().heartbeat;
    let count = u32::try_from(names.len().max(1)).unwrap_or(u32::MAX);
    let mut tasks = Vec::with_capacity(names.len());
    for (name, position) in names.iter().zip(0_u32..) {
        let offset = spread / count * position;
        let source =
            SimulatedSource::new(preset.clone(), name, Vec::new(), SimulationClock::wall());
        let sampler = Sampler::new(Box::new(source), name, HealthPolicy::default());
        let view = sampler.view();
        samplers.push(sampler);
        let mut publisher = Publisher::new(
            client.clone(),
            name,
            &format!("simulated:{}", preset.name),
            PublishPolicy::default(),
            false,
        );
        let task_stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut record = NodeRecord::default();
            tokio::time::sleep(offset).await;
            while !task_stop.load(Ordering::Relaxed) {
                let stepped = Instant::now();
                match publisher.step(&view).await {
                    StepOutcome::Published(_) => {
                        let now = Instant::now();
                        record.slowest_write = record.slowest_write.max(now - stepped);
                        if let Some(last) = record.last_write {
                            record.longest_gap = record.longest_gap.max(now - last);
                        }
                        record.last_write = Some(now);
                        record.writes += 1;
                    }
                    StepOutcome::Failed => record.failures += 1,
                    StepOutcome::Idle | StepOutcome::BackingOff => {}
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            record
        }));
    }
    let sampler_stop = Arc::clone(&stop);
    let sampler_thread = std::thread::spawn(move || {
        while !sampler_stop.load(Ordering::Relaxed) {
            let deadline = Instant::now() + interval;
            for sampler in &mut samplers {
                sampler.sample_once();
                sampler.wait_until(Instant::now());
            }
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        }
    });
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut report = FleetReport {
        nodes: names.len(),
        ..FleetReport::default()
    };
    for task in tasks {
        if let Ok(record) = task.await {
            report.writes += record.writes;
            report.failures += record.failures;
            report.longest_gap_seconds = report
                .longest_gap_seconds
                .max(record.longest_gap.as_secs_f64());
            report.slowest_write_seconds = report
                .slowest_write_seconds
                .max(record.slowest_write.as_secs_f64());
            if record.writes == 0 {
                report.silent_nodes += 1;
            }
        }
    }
    let _ = sampler_thread.join();
    report.seconds = started.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let per_node = report.writes as f64 / names.len().max(1) as f64;
    report.writes_per_node_per_30_seconds = per_node * 30.0 / report.seconds.max(1.0);
    report
}
