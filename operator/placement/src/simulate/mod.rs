//! Replays a workload through the engine without a cluster, once per strategy, and measures
//! what each leaves unallocated as the offered load grows (the FGD paper's methodology).
//!
//! ```text
//!  node CSV ─┐                                     ┌─► per strategy: Engine::place for each
//!  YAML    ──┼─► FleetSnapshot ─┐                  │   replica in arrival order, timing each
//!  synthetic ┘                  ├─► SimulationInput┤   decision; at each offered-load level
//!  pod CSV ──┐                  │                  │   (Σ requested GPUs / capacity) a
//!  synthetic ┴─► Vec<ReplicaRequest> (arrivals) ───┘   snapshot of the fleet's totals
//!                                                   ─► SimulationReport (table or JSON)
//! ```
//!
//! Arrivals only: replicas are not deleted, so the offered load can pass 100% and show how much
//! capacity each strategy strands. A workload shorter than the highest load level is replayed
//! again (names and groups suffixed `~1`, `~2`, …), as FGD samples its trace.

mod synthetic;
mod trace;

use std::fmt::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use synthetic::{MixPreset, SyntheticSpec, synthetic_fleet, synthetic_workload};
pub use trace::{GpuModelTable, NodeTrace, PodTrace, parse_node_csv, parse_pod_csv};

use crate::decision::{Outcome, RejectReason, Rejection};
use crate::engine::Engine;
use crate::fleet::{ExistingPlacement, FleetSnapshot, NodeSnapshot};
use crate::request::ReplicaRequest;
use crate::strategy::{EngineConfig, Strategy, WorkloadMix};
use crate::{Error, Result};

/// The project's YAML fleet format for simulation: a snapshot plus, optionally, the workload.
///
/// ```yaml
/// nodes:
///   - name: node-a
///     gpus:
///       - { index: 0, uuid: GPU-a0, product: NVIDIA-H100-80GB-HBM3, memoryMib: 81559 }
/// workload:
///   - name: chat-0
///     group: chat
///     gpu: { kind: fraction, milli: 250, memory: { mib: 18000 } }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulationFile {
    /// The fleet's nodes.
    pub nodes: Vec<NodeSnapshot>,
    /// Placements present at the start.
    #[serde(default)]
    pub placements: Vec<ExistingPlacement>,
    /// Replicas in arrival order (may instead come from a pod CSV or a generator).
    #[serde(default)]
    pub workload: Vec<ReplicaRequest>,
}

/// What to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationInput {
    /// The fleet at the start.
    pub snapshot: FleetSnapshot,
    /// Replicas in arrival order.
    pub workload: Vec<ReplicaRequest>,
    /// When each replica of `workload` is created and deleted, for the timeline replay; empty
    /// when the workload has no clock (generators, YAML).
    pub lifetimes: Vec<Lifetime>,
}

/// When a replica exists, in seconds of the trace's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifetime {
    /// Creation time.
    pub created_s: u64,
    /// Deletion time; `None` = still running at the end of the trace.
    pub deleted_s: Option<u64>,
}

/// How to replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationOptions {
    /// Strategies to compare, each on a fresh engine.
    pub strategies: Vec<Strategy>,
    /// Offered-load levels (1.0 = requests summing to the fleet's usable GPU capacity) at which
    /// to report; the replay stops at the highest.
    pub load_levels: Vec<f64>,
    /// The mix fragmentation is measured against; `None` derives it from the workload.
    pub mix: Option<WorkloadMix>,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        SimulationOptions {
            strategies: Strategy::ALL.to_vec(),
            load_levels: vec![1.0, 1.3],
            mix: None,
        }
    }
}

/// The comparison, strategy by strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationReport {
    /// Nodes in the fleet.
    pub nodes: u32,
    /// GPUs that are not Unhealthy.
    pub usable_gpus: u32,
    /// Distinct replicas in the workload (before any replay repeats).
    pub workload_replicas: usize,
    /// The mix fragmentation was measured against.
    pub mix: WorkloadMix,
    /// One entry per strategy, in the order asked.
    pub strategies: Vec<StrategyReport>,
}

/// One strategy's replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyReport {
    /// The strategy.
    pub strategy: Strategy,
    /// Totals at each offered-load level, ascending.
    pub levels: Vec<LevelReport>,
    /// Decisions made (placed or not).
    pub decisions: u64,
    /// Median time of one decision, microseconds.
    pub decision_p50_micros: f64,
    /// 99th percentile time of one decision, microseconds.
    pub decision_p99_micros: f64,
    /// Slowest decision, microseconds.
    pub decision_max_micros: f64,
    /// Building the engine from the snapshot, milliseconds.
    pub build_millis: f64,
    /// Decisions per second over the replay (excluding the build).
    pub decisions_per_second: f64,
    /// Why replicas went unplaced, summed over the unplaceable decisions.
    pub rejections: Vec<Rejection>,
}

/// The fleet when the offered load reached a level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelReport {
    /// The level (1.3 = 130% of capacity offered).
    pub offered_load: f64,
    /// Replicas offered so far.
    pub offered_replicas: u64,
    /// Of which placed.
    pub placed_replicas: u64,
    /// Placed GPU demand over offered GPU demand.
    pub allocation_rate: f64,
    /// Allocated GPU capacity over usable capacity.
    pub allocated_gpu_share: f64,
    /// Unallocated GPU capacity over usable capacity: what the strategy left stranded once
    /// demand exceeds supply.
    pub unallocated_gpu_share: f64,
    /// Fragmented capacity (free but unusable by the mix) over free capacity.
    pub fragmentation_share: f64,
    /// Fragmented capacity over usable capacity.
    pub fragmented_gpu_share: f64,
}

/// Replays the workload once per strategy.
///
/// # Errors
/// [`Error::InvalidSimulation`] for an empty workload, fleet or level list; engine errors for
/// an invalid snapshot, mix or request.
pub fn run(input: &SimulationInput, options: &SimulationOptions) -> Result<SimulationReport> {
    let demand: u64 = input
        .workload
        .iter()
        .map(|request| request.gpu.total_milli())
        .sum();
    if demand == 0 {
        return Err(Error::InvalidSimulation {
            problem:
                "the workload asks for no GPUs; give a pod CSV with GPU pods or --synthetic pods=N"
                    .to_owned(),
        });
    }
    let mut levels = options.load_levels.clone();
    levels.retain(|level| level.is_finite() && *level > 0.0);
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    if levels.is_empty() || levels.iter().any(|level| *level > 10.0) {
        return Err(Error::InvalidSimulation {
            problem: "give load levels as fractions of capacity between 0 and 10, e.g. 1.0,1.3"
                .to_owned(),
        });
    }
    if options.strategies.is_empty() {
        return Err(Error::InvalidSimulation {
            problem: "no strategy to compare; name at least one".to_owned(),
        });
    }
    let mix = options
        .mix
        .clone()
        .unwrap_or_else(|| WorkloadMix::from_requests(&input.workload, 16));
    let mut report = SimulationReport {
        nodes: 0,
        usable_gpus: 0,
        workload_replicas: input.workload.len(),
        mix: mix.clone(),
        strategies: Vec::with_capacity(options.strategies.len()),
    };
    for &strategy in &options.strategies {
        let started = Instant::now();
        let mut engine = Engine::new(&input.snapshot, EngineConfig::new(strategy, mix.clone()))?;
        let build_millis = started.elapsed().as_secs_f64() * 1e3;
        let summary = engine.summary();
        report.nodes = summary.nodes;
        report.usable_gpus = summary.usable_gpus;
        if summary.capacity_milli == 0 {
            return Err(Error::InvalidSimulation {
                problem: "the fleet has no usable GPU; give nodes with GPUs".to_owned(),
            });
        }
        report.strategies.push(replay(
            &mut engine,
            input,
            strategy,
            &levels,
            summary.capacity_milli,
            build_millis,
        )?);
    }
    Ok(report)
}

fn replay(
    engine: &mut Engine,
    input: &SimulationInput,
    strategy: Strategy,
    levels: &[f64],
    capacity_milli: u64,
    build_millis: f64,
) -> Result<StrategyReport> {
    let mut durations = Vec::new();
    let mut rejections = [0_u64; RejectReason::ALL.len()];
    let mut reports = Vec::with_capacity(levels.len());
    let (mut offered_milli, mut placed_milli) = (0_u64, 0_u64);
    let (mut offered, mut placed) = (0_u64, 0_u64);
    let replay_started = Instant::now();
    let mut round = 0_usize;
    'replay: loop {
        for original in &input.workload {
            let renamed;
            let request = if round == 0 {
                original
            } else {
                let mut copy = original.clone();
                copy.name = format!("{}~{round}", original.name);
                copy.group = format!("{}~{round}", original.group);
                renamed = copy;
                &renamed
            };
            let started = Instant::now();
            let outcome = engine.place(request)?;
            durations.push(started.elapsed().as_nanos() as u64);
            offered += 1;
            offered_milli += request.gpu.total_milli();
            match outcome {
                Outcome::Placed(_) => {
                    placed += 1;
                    placed_milli += request.gpu.total_milli();
                }
                Outcome::Unplaceable(unplaceable) => {
                    for rejection in unplaceable.rejections {
                        rejections[rejection.reason.position()] += u64::from(rejection.nodes);
                    }
                }
            }
            while let Some(&level) = levels.get(reports.len()) {
                if (offered_milli as f64) < level * capacity_milli as f64 {
                    break;
                }
                let summary = engine.summary();
                reports.push(LevelReport {
                    offered_load: level,
                    offered_replicas: offered,
                    placed_replicas: placed,
                    allocation_rate: placed_milli as f64 / offered_milli as f64,
                    allocated_gpu_share: 1.0 - summary.unallocated_share(),
                    unallocated_gpu_share: summary.unallocated_share(),
                    fragmentation_share: summary.fragmentation_share(),
                    fragmented_gpu_share: summary.fragmented_milli / summary.capacity_milli as f64,
                });
            }
            if reports.len() == levels.len() {
                break 'replay;
            }
        }
        round += 1;
    }
    let elapsed = replay_started.elapsed().as_secs_f64();
    durations.sort_unstable();
    let mut rejection_list: Vec<Rejection> = RejectReason::ALL
        .into_iter()
        .filter(|reason| rejections[reason.position()] > 0)
        .map(|reason| Rejection {
            reason,
            nodes: u32::try_from(rejections[reason.position()]).unwrap_or(u32::MAX),
        })
        .collect();
    rejection_list.sort_by_key(|rejection| std::cmp::Reverse(rejection.nodes));
    Ok(StrategyReport {
        strategy,
        levels: reports,
        decisions: offered,
        decision_p50_micros: percentile_micros(&durations, 0.50),
        decision_p99_micros: percentile_micros(&durations, 0.99),
        decision_max_micros: percentile_micros(&durations, 1.0),
        build_millis,
        decisions_per_second: if elapsed > 0.0 {
            offered as f64 / elapsed
        } else {
            0.0
        },
        rejections: rejection_list,
    })
}

/// The timeline replay, strategy by strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineReport {
    /// Nodes in the fleet.
    pub nodes: u32,
    /// GPUs that are not Unhealthy.
    pub usable_gpus: u32,
    /// The mix fragmentation was measured against.
    pub mix: WorkloadMix,
    /// One entry per strategy, in the order asked.
    pub strategies: Vec<TimelineStrategyReport>,
}

/// One strategy's timeline replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineStrategyReport {
    /// The strategy.
    pub strategy: Strategy,
    /// Replicas created.
    pub offered_replicas: u64,
    /// Of which placed on arrival (nothing is retried).
    pub placed_replicas: u64,
    /// Placed GPU demand over created GPU demand.
    pub allocation_rate: f64,
    /// Allocated share of capacity, averaged over the trace's time span.
    pub mean_allocated_gpu_share: f64,
    /// Highest allocated share of capacity reached.
    pub peak_allocated_gpu_share: f64,
    /// Median decision, microseconds.
    pub decision_p50_micros: f64,
    /// 99th percentile decision, microseconds.
    pub decision_p99_micros: f64,
}

/// Replays creations and deletions in time order, once per strategy: a replica is placed when
/// created (or counted unplaced; there is no queue) and removed when deleted.
///
/// # Errors
/// [`Error::InvalidSimulation`] when the workload has no lifetimes or they do not match it;
/// engine errors as [`run`].
pub fn run_timeline(
    input: &SimulationInput,
    options: &SimulationOptions,
) -> Result<TimelineReport> {
    if input.lifetimes.is_empty() || input.lifetimes.len() != input.workload.len() {
        return Err(Error::InvalidSimulation {
            problem: "the timeline replay needs creation and deletion times for every replica; \
                      give a pod CSV with creation_time and deletion_time columns"
                .to_owned(),
        });
    }
    let mix = options
        .mix
        .clone()
        .unwrap_or_else(|| WorkloadMix::from_requests(&input.workload, 16));
    // Deletions sort before creations at the same second, then by arrival position.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(input.workload.len() * 2);
    for (position, lifetime) in input.lifetimes.iter().enumerate() {
        events.push((lifetime.created_s, true, position));
        if let Some(deleted) = lifetime.deleted_s {
            events.push((deleted, false, position));
        }
    }
    events.sort_unstable();
    let mut report = TimelineReport {
        nodes: 0,
        usable_gpus: 0,
        mix: mix.clone(),
        strategies: Vec::new(),
    };
    for &strategy in &options.strategies {
        let mut engine = Engine::new(&input.snapshot, EngineConfig::new(strategy, mix.clone()))?;
        let summary = engine.summary();
        report.nodes = summary.nodes;
        report.usable_gpus = summary.usable_gpus;
        let capacity = summary.capacity_milli.max(1) as f64;
        let mut allocated = summary.allocated_milli as f64;
        let mut placed = vec![false; input.workload.len()];
        let mut durations = Vec::with_capacity(input.workload.len());
        let (mut offered_milli, mut placed_milli, mut placed_count) = (0_u64, 0_u64, 0_u64);
        let (mut area, mut peak) = (0.0, allocated / capacity);
        let start = events.first().map_or(0, |event| event.0);
        let mut last = start;
        for &(time, creation, position) in &events {
            area += allocated / capacity * (time - last) as f64;
            last = time;
            let request = &input.workload[position];
            if creation {
                offered_milli += request.gpu.total_milli();
                let started = Instant::now();
                let outcome = engine.place(request)?;
                durations.push(started.elapsed().as_nanos() as u64);
                if matches!(outcome, Outcome::Placed(_)) {
                    placed[position] = true;
                    placed_count += 1;
                    placed_milli += request.gpu.total_milli();
                    allocated += request.gpu.total_milli() as f64;
                    peak = f64::max(peak, allocated / capacity);
                }
            } else if placed[position] {
                engine.remove(&request.name)?;
                placed[position] = false;
                allocated -= request.gpu.total_milli() as f64;
            }
        }
        durations.sort_unstable();
        let span = (last - start) as f64;
        report.strategies.push(TimelineStrategyReport {
            strategy,
            offered_replicas: input.workload.len() as u64,
            placed_replicas: placed_count,
            allocation_rate: if offered_milli == 0 {
                0.0
            } else {
                placed_milli as f64 / offered_milli as f64
            },
            mean_allocated_gpu_share: if span > 0.0 { area / span } else { peak },
            peak_allocated_gpu_share: peak,
            decision_p50_micros: percentile_micros(&durations, 0.50),
            decision_p99_micros: percentile_micros(&durations, 0.99),
        });
    }
    Ok(report)
}

impl TimelineReport {
    /// The report as an aligned text table, one row per strategy.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "fleet: {} nodes, {} usable GPUs; timeline replay (creations and deletions)",
            self.nodes, self.usable_gpus
        );
        let _ = writeln!(
            text,
            "{:<20} {:>9} {:>9} {:>10} {:>14} {:>14} {:>9} {:>9}",
            "strategy",
            "offered",
            "placed",
            "alloc-rate",
            "mean-alloc",
            "peak-alloc",
            "p50 µs",
            "p99 µs"
        );
        for row in &self.strategies {
            let _ = writeln!(
                text,
                "{:<20} {:>9} {:>9} {:>9.1}% {:>13.1}% {:>13.1}% {:>9.1} {:>9.1}",
                row.strategy.name(),
                row.offered_replicas,
                row.placed_replicas,
                row.allocation_rate * 100.0,
                row.mean_allocated_gpu_share * 100.0,
                row.peak_allocated_gpu_share * 100.0,
                row.decision_p50_micros,
                row.decision_p99_micros
            );
        }
        text
    }
}

/// Speed of one engine placing a whole workload, for the benchmarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThroughputReport {
    /// The strategy.
    pub strategy: Strategy,
    /// Nodes in the fleet.
    pub nodes: u32,
    /// Usable GPUs.
    pub usable_gpus: u32,
    /// Replicas offered.
    pub replicas: usize,
    /// Of which placed.
    pub placed: usize,
    /// Building the engine from the snapshot, milliseconds.
    pub build_millis: f64,
    /// Placing every replica, milliseconds (first use of each request shape included).
    pub place_millis: f64,
    /// Median decision, microseconds.
    pub decision_p50_micros: f64,
    /// 99th percentile decision, microseconds.
    pub decision_p99_micros: f64,
    /// Slowest decision, microseconds.
    pub decision_max_micros: f64,
}

/// Builds an engine on `snapshot` and times placing `workload` in order, one decision at a time.
///
/// # Errors
/// Engine errors for an invalid snapshot, mix or request.
pub fn throughput(
    snapshot: &FleetSnapshot,
    workload: &[ReplicaRequest],
    config: EngineConfig,
) -> Result<ThroughputReport> {
    let strategy = config.strategy;
    let started = Instant::now();
    let mut engine = Engine::new(snapshot, config)?;
    let build_millis = started.elapsed().as_secs_f64() * 1e3;
    let mut durations = Vec::with_capacity(workload.len());
    let mut placed = 0;
    let placing = Instant::now();
    for request in workload {
        let started = Instant::now();
        let outcome = engine.place(request)?;
        durations.push(started.elapsed().as_nanos() as u64);
        if matches!(outcome, Outcome::Placed(_)) {
            placed += 1;
        }
    }
    let place_millis = placing.elapsed().as_secs_f64() * 1e3;
    durations.sort_unstable();
    let summary = engine.summary();
    Ok(ThroughputReport {
        strategy,
        nodes: summary.nodes,
        usable_gpus: summary.usable_gpus,
        replicas: workload.len(),
        placed,
        build_millis,
        place_millis,
        decision_p50_micros: percentile_micros(&durations, 0.50),
        decision_p99_micros: percentile_micros(&durations, 0.99),
        decision_max_micros: percentile_micros(&durations, 1.0),
    })
}

/// The `fraction` percentile of sorted nanosecond durations, in microseconds.
fn percentile_micros(sorted_nanos: &[u64], fraction: f64) -> f64 {
    let position = ((sorted_nanos.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
    sorted_nanos
        .get(position)
        .map_or(0.0, |nanos| *nanos as f64 / 1e3)
}

impl SimulationReport {
    /// The report as an aligned text table, strategies side by side at each load level.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "fleet: {} nodes, {} usable GPUs; workload: {} replicas; mix: {} request types",
            self.nodes,
            self.usable_gpus,
            self.workload_replicas,
            self.mix.entries.len()
        );
        let _ = writeln!(
            text,
            "{:<20} {:>6} {:>9} {:>9} {:>10} {:>12} {:>11} {:>9} {:>9} {:>11}",
            "strategy",
            "load",
            "offered",
            "placed",
            "alloc-rate",
            "unallocated",
            "fragmented*",
            "p50 µs",
            "p99 µs",
            "decisions/s"
        );
        let level_count = self
            .strategies
            .iter()
            .map(|strategy| strategy.levels.len())
            .max()
            .unwrap_or(0);
        for level in 0..level_count {
            for strategy in &self.strategies {
                let Some(row) = strategy.levels.get(level) else {
                    continue;
                };
                let _ = writeln!(
                    text,
                    "{:<20} {:>5.0}% {:>9} {:>9} {:>9.1}% {:>11.2}% {:>10.1}% {:>9.1} {:>9.1} {:>11.0}",
                    strategy.strategy.name(),
                    row.offered_load * 100.0,
                    row.offered_replicas,
                    row.placed_replicas,
                    row.allocation_rate * 100.0,
                    row.unallocated_gpu_share * 100.0,
                    row.fragmented_gpu_share * 100.0,
                    strategy.decision_p50_micros,
                    strategy.decision_p99_micros,
                    strategy.decisions_per_second
                );
            }
        }
        let _ = writeln!(
            text,
            "unallocated: GPU capacity left free; fragmented*: free capacity the workload mix \
             cannot use, as a share of all capacity"
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_input() -> Result<SimulationInput> {
        let spec: SyntheticSpec = "nodes=40,pods=200,mix=inference,seed=3".parse()?;
        Ok(SimulationInput {
            snapshot: synthetic_fleet(&spec),
            workload: synthetic_workload(&spec),
            lifetimes: Vec::new(),
        })
    }

    #[test]
    fn reports_every_level_for_every_strategy() -> Result<()> {
        let report = run(&small_input()?, &SimulationOptions::default())?;
        assert_eq!(report.strategies.len(), 4);
        for strategy in &report.strategies {
            assert_eq!(strategy.levels.len(), 2);
            let (full, over) = (strategy.levels[0], strategy.levels[1]);
            assert!(over.offered_replicas > full.offered_replicas);
            // Arrivals only: allocation never shrinks as load grows.
            assert!(over.allocated_gpu_share >= full.allocated_gpu_share);
            assert!((0.0..=1.0).contains(&over.unallocated_gpu_share));
        }
        let table = report.render_table();
        assert!(table.contains("fragmentation-aware") && table.contains("130%"));
        Ok(())
    }

    #[test]
    fn the_same_input_gives_the_same_report_apart_from_timings() -> Result<()> {
        let input = small_input()?;
        let options = SimulationOptions::default();
        let strip = |report: SimulationReport| {
            report
                .strategies
                .into_iter()
                .map(|strategy| (strategy.levels, strategy.rejections))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(run(&input, &options)?), strip(run(&input, &options)?));
        Ok(())
    }

    #[test]
    fn the_timeline_replay_frees_capacity_on_deletion() -> Result<()> {
        let spec: SyntheticSpec = "nodes=2,gpus=1,pods=4,mix=sharing,seed=1".parse()?;
        let mut input = small_input()?;
        input.snapshot = synthetic_fleet(&spec);
        let whole = crate::request::GpuRequest::Whole {
            count: 1,
            memory: crate::request::MemoryNeed::ShareOfCapacity,
        };
        input.workload = (0..4)
            .map(|replica| ReplicaRequest::new(format!("r{replica}"), "g", whole))
            .collect();
        // Two GPUs; r0 and r1 fill them; r0 leaves at 15 so r3 (at 20) fits, r2 (at 12) not.
        input.lifetimes = [(0, Some(15)), (10, None), (12, None), (20, None)]
            .into_iter()
            .map(|(created_s, deleted_s)| Lifetime {
                created_s,
                deleted_s,
            })
            .collect();
        let options = SimulationOptions {
            strategies: vec![Strategy::BestFit],
            ..SimulationOptions::default()
        };
        let report = run_timeline(&input, &options)?;
        let row = &report.strategies[0];
        assert_eq!((row.offered_replicas, row.placed_replicas), (4, 3));
        assert!((row.allocation_rate - 0.75).abs() < 1e-9);
        assert!((row.peak_allocated_gpu_share - 1.0).abs() < 1e-9);
        input.lifetimes.clear();
        assert!(run_timeline(&input, &options).is_err());
        Ok(())
    }

    #[test]
    fn a_workload_without_gpu_demand_is_refused() -> Result<()> {
        let mut input = small_input()?;
        input.workload.clear();
        let error = run(&input, &SimulationOptions::default()).err();
        assert!(matches!(error, Some(Error::InvalidSimulation { .. })));
        Ok(())
    }
}
