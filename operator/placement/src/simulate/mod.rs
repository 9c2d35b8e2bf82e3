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

pub mod family;
mod synthetic;
mod trace;

use std::fmt::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use synthetic::{MixPreset, SyntheticSpec, synthetic_fleet, synthetic_workload};
pub use trace::{GpuModelTable, NodeTrace, PodTrace, parse_node_csv, parse_pod_csv};

use crate::decision::{Outcome, RejectReason, Rejection, ScoreBreakdown};
use crate::engine::Engine;
use crate::fleet::{ExistingPlacement, FleetSnapshot, NodeSnapshot};
use crate::request::ReplicaRequest;
use crate::strategy::{EngineConfig, MixLearning, Strategy, WorkloadMix};
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

/// In what order the workload arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArrivalOrder {
    /// As read (a pod CSV: by creation time, then file order).
    #[default]
    AsGiven,
    /// The FGD paper's: sorted by name, then shuffled with the run's seed.
    Shuffle,
}

/// How to replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationOptions {
    /// Strategies to compare, each on a fresh engine.
    pub strategies: Vec<Strategy>,
    /// Offered-load levels (1.0 = requests summing to the fleet's usable GPU capacity) at which
    /// to report; the replay stops once past the highest.
    pub load_levels: Vec<f64>,
    /// The mix fragmentation is measured against; `None` derives it from the workload, every
    /// task shape counted.
    pub mix: Option<WorkloadMix>,
    /// Arrival order.
    pub order: ArrivalOrder,
    /// One replay per seed (shuffle, sampling and the random baselines); empty = one replay with
    /// seed 0.
    pub seeds: Vec<u64>,
    /// The FGD paper's sampling: draw pods with replacement from the workload until the offered
    /// GPU demand reaches this share of the GPU capacity (or drop random pods down to it); the
    /// replay is then exactly those arrivals. `None` replays the workload, repeated if it is
    /// shorter than the highest level.
    pub tune: Option<f64>,
    /// Soft-spreading weight for gpufleet's strategies; `None` keeps the engine's default.
    pub spread_weight: Option<f64>,
    /// Learning the mix from arrivals (on top of `mix` as a prior); `None` keeps it fixed.
    pub learning: Option<MixLearning>,
    /// Whether to keep a record of every decision ([`SimulationReport::decisions`]).
    pub record_decisions: bool,
    /// The fragmentation measure of fragmentation-aware placement; `None` keeps the engine's
    /// default (gpufleet's capacity measure).
    pub fragmentation_measure: Option<crate::FragmentationMeasure>,
    /// The CPU-balance weight of fragmentation-aware placement; `None` keeps the default.
    pub cpu_balance_weight: Option<f64>,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        SimulationOptions {
            strategies: Strategy::ALL.to_vec(),
            load_levels: vec![1.0, 1.3],
            mix: None,
            order: ArrivalOrder::AsGiven,
            seeds: Vec::new(),
            tune: None,
            spread_weight: None,
            learning: None,
            record_decisions: false,
            fragmentation_measure: None,
            cpu_balance_weight: None,
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
    /// Distinct replicas in the workload (before any replay repeats or sampling).
    pub workload_replicas: usize,
    /// Of which ask for no GPU (CPU-only tasks).
    #[serde(default)]
    pub workload_cpu_only_replicas: usize,
    /// The mix fragmentation was measured against.
    pub mix: WorkloadMix,
    /// One entry per strategy, in the order asked (of the first seed when there are several).
    pub strategies: Vec<StrategyReport>,
    /// The seeds replayed, in order.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Every seed's replay when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<SeedRun>,
    /// Per strategy and level, the GPU allocation's mean, minimum and maximum over the seeds.
    #[serde(default)]
    pub summary: Vec<StrategySummary>,
    /// Every decision of every replay, when recorded (seed, then strategy, then arrival order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<DecisionRecord>,
    /// An upper bound of the GPU allocation any scheduler could reach on the same arrivals,
    /// when computed (`gpufleet simulate --bound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<AllocationBound>,
}

/// One seed's replay of every strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// Arrivals replayed (after sampling).
    pub arrivals: usize,
    /// One entry per strategy.
    pub strategies: Vec<StrategyReport>,
}

/// A strategy's GPU allocation over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategySummary {
    /// The strategy.
    pub strategy: Strategy,
    /// Per level, ascending.
    pub levels: Vec<LevelSummary>,
}

/// The FGD paper's GPU allocation at one level over the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelSummary {
    /// The level (1.3 = 130% of capacity offered).
    pub offered_load: f64,
    /// Mean over the seeds.
    pub mean: f64,
    /// Lowest seed.
    pub min: f64,
    /// Highest seed.
    pub max: f64,
}

/// An upper bound of the GPU allocation on the arrivals of a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationBound {
    /// How it was computed.
    pub method: String,
    /// Per seed: the bound on the share of GPU capacity any placement of the arrivals up to
    /// the highest level can allocate.
    pub per_seed: Vec<f64>,
    /// Their mean.
    pub mean: f64,
}

/// One decision of a replay, for `--decisions FILE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    /// The replay's seed.
    pub seed: u64,
    /// The strategy.
    pub strategy: Strategy,
    /// Position in the arrivals, from 0.
    pub arrival: u64,
    /// The replica.
    pub replica: String,
    /// GPU share per GPU (thousandths) and GPU count it asked for.
    pub gpu_milli: u32,
    /// GPUs it asked for.
    pub gpu_count: u32,
    /// CPU it asked for, millicores.
    pub cpu_milli: u64,
    /// Host memory it asked for, MiB.
    pub memory_mib: u64,
    /// The chosen node; `None` when unplaceable.
    pub node: Option<String>,
    /// The chosen device indices.
    pub gpus: Vec<u32>,
    /// Why not placed, in kube-scheduler's words.
    pub reason: Option<String>,
    /// The chosen candidate's score terms.
    pub score: Option<ScoreBreakdown>,
    /// Offered GPU demand so far over capacity, after this arrival.
    pub offered_load: f64,
    /// Allocated share of capacity after this decision.
    pub allocated_share: f64,
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
    /// Replicas offered when the level was first reached.
    pub offered_replicas: u64,
    /// Of which placed.
    pub placed_replicas: u64,
    /// Placed GPU demand over offered GPU demand, when the level was first reached (not the
    /// paper's GPU allocation: that is `gpu_allocation`).
    pub allocation_rate: f64,
    /// Allocated GPU capacity over usable capacity, when the level was first reached.
    pub allocated_gpu_share: f64,
    /// Unallocated GPU capacity over usable capacity, when the level was first reached: what
    /// the strategy left stranded once demand exceeds supply.
    pub unallocated_gpu_share: f64,
    /// Fragmented capacity (free but unusable by the mix) over free capacity.
    pub fragmentation_share: f64,
    /// Fragmented capacity over usable capacity.
    pub fragmented_gpu_share: f64,
    /// The FGD paper's GPU allocation at this level: allocated over total GPU capacity
    /// (thousandths), averaged over the arrivals whose offered GPU demand, failed arrivals
    /// included, rounds to the level (within 1 point when none does).
    #[serde(default)]
    pub gpu_allocation: f64,
    /// How many arrivals that average is over.
    #[serde(default)]
    pub gpu_allocation_arrivals: u64,
    /// The paper's fragmentation ratio (its measure against its target workload, over free
    /// capacity), averaged over the same arrivals.
    #[serde(default)]
    pub fgd_fragmentation_ratio: f64,
}

/// Replays the workload once per seed and strategy.
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
    if let Some(tune) = options.tune
        && !(tune.is_finite() && tune > 0.0 && tune <= 10.0)
    {
        return Err(Error::InvalidSimulation {
            problem: format!(
                "--tune {tune}: give the offered GPU demand to sample to as a share of capacity between 0 and 10, e.g. 1.3"
            ),
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
        .unwrap_or_else(|| WorkloadMix::from_requests(&input.workload, usize::MAX));
    let paper_mix = WorkloadMix::fgd_target(&input.workload);
    let probe = Engine::new(
        &input.snapshot,
        EngineConfig::new(Strategy::BestFit, mix.clone()),
    )?;
    let summary = probe.summary();
    if summary.capacity_milli == 0 {
        return Err(Error::InvalidSimulation {
            problem: "the fleet has no usable GPU; give nodes with GPUs".to_owned(),
        });
    }
    let seeds = if options.seeds.is_empty() {
        vec![0]
    } else {
        options.seeds.clone()
    };
    let plan = ReplayPlan {
        input,
        levels: &levels,
        mix: &mix,
        paper_mix: &paper_mix,
        capacity_milli: summary.capacity_milli,
        options,
    };
    // Every (seed, strategy) replay is independent: run them on the machine's cores.
    let jobs: Vec<(usize, u64, Strategy)> = seeds
        .iter()
        .enumerate()
        .flat_map(|(position, &seed)| {
            options
                .strategies
                .iter()
                .map(move |&strategy| (position, seed, strategy))
        })
        .collect();
    let results = run_jobs(&jobs, |&(_, seed, strategy)| plan.replay(seed, strategy))?;
    let mut runs: Vec<SeedRun> = seeds
        .iter()
        .map(|&seed| SeedRun {
            seed,
            arrivals: 0,
            strategies: Vec::new(),
        })
        .collect();
    let mut decisions = Vec::new();
    for (&(position, _, _), outcome) in jobs.iter().zip(results) {
        runs[position].arrivals = outcome.arrivals;
        runs[position].strategies.push(outcome.report);
        decisions.extend(outcome.decisions);
    }
    let summary_rows = options
        .strategies
        .iter()
        .enumerate()
        .map(|(index, &strategy)| StrategySummary {
            strategy,
            levels: levels
                .iter()
                .enumerate()
                .map(|(level_index, &level)| {
                    let values: Vec<f64> = runs
                        .iter()
                        .filter_map(|run| run.strategies.get(index)?.levels.get(level_index))
                        .map(|row| row.gpu_allocation)
                        .collect();
                    LevelSummary {
                        offered_load: level,
                        mean: values.iter().sum::<f64>() / values.len().max(1) as f64,
                        min: values.iter().copied().fold(f64::INFINITY, f64::min),
                        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    }
                })
                .collect(),
        })
        .collect();
    let first = runs
        .first()
        .map(|run| run.strategies.clone())
        .unwrap_or_default();
    Ok(SimulationReport {
        nodes: summary.nodes,
        usable_gpus: summary.usable_gpus,
        workload_replicas: input.workload.len(),
        workload_cpu_only_replicas: input
            .workload
            .iter()
            .filter(|request| request.gpu == crate::request::GpuRequest::NoGpu)
            .count(),
        mix,
        strategies: first,
        seeds,
        runs: if runs.len() > 1 { runs } else { Vec::new() },
        summary: summary_rows,
        decisions,
        bound: None,
    })
}

/// The arrivals of one seed's replay: the workload in the order asked, sampled to the tune
/// level when asked. Public so an outside bound (`gpufleet simulate --bound`) sees exactly the
/// arrivals the strategies saw.
#[must_use]
pub fn arrivals(
    workload: &[ReplicaRequest],
    order: ArrivalOrder,
    tune: Option<f64>,
    seed: u64,
    capacity_milli: u64,
) -> Vec<ReplicaRequest> {
    let mut random = seed ^ 0xD1B5_4A32_D192_ED03;
    let mut arrivals: Vec<ReplicaRequest> = workload.to_vec();
    if order == ArrivalOrder::Shuffle {
        arrivals.sort_by(|left, right| left.name.cmp(&right.name));
        for position in (1..arrivals.len()).rev() {
            let other = (split_mix(&mut random) % (position as u64 + 1)) as usize;
            arrivals.swap(position, other);
        }
    }
    let Some(tune) = tune else {
        return arrivals;
    };
    let target = (tune * capacity_milli as f64).round() as u64;
    let mut total: u64 = arrivals
        .iter()
        .map(|request| request.gpu.total_milli())
        .sum();
    if total < target && !workload.is_empty() {
        // The artifact's tune-up: copies drawn with replacement, appended after the originals,
        // until the next draw would pass the target.
        let originals = arrivals.clone();
        let mut copy = 0_u64;
        loop {
            let drawn = &originals[(split_mix(&mut random) % originals.len() as u64) as usize];
            let demand = drawn.gpu.total_milli();
            if total + demand > target {
                break;
            }
            total += demand;
            copy += 1;
            let mut request = drawn.clone();
            request.name = format!("{}-tuned-{copy}", drawn.name);
            request.group = format!("{}-tuned-{copy}", drawn.group);
            arrivals.push(request);
        }
    } else {
        // Tune-down: random pods leave until the demand is within the target.
        while total > target && !arrivals.is_empty() {
            let position = (split_mix(&mut random) % arrivals.len() as u64) as usize;
            total -= arrivals.remove(position).gpu.total_milli();
        }
    }
    arrivals
}

/// SplitMix64, for the seeded shuffle and sampling.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut value = *state;
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// Runs `job` for each of `jobs` on up to the machine's cores; results in `jobs`' order.
fn run_jobs<J: Sync, T: Send>(jobs: &[J], job: impl Fn(&J) -> Result<T> + Sync) -> Result<Vec<T>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(jobs.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<T>>> = (0..jobs.len()).map(|_| None).collect();
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let position = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(input) = jobs.get(position) else {
                        break;
                    };
                    let result = job(input);
                    if let Ok(mut slots) = slots.lock() {
                        slots[position] = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                Err(Error::InvalidSimulation {
                    problem: "a replay did not finish".to_owned(),
                })
            })
        })
        .collect()
}

/// What every replay of one simulation shares.
struct ReplayPlan<'a> {
    input: &'a SimulationInput,
    levels: &'a [f64],
    mix: &'a WorkloadMix,
    paper_mix: &'a WorkloadMix,
    capacity_milli: u64,
    options: &'a SimulationOptions,
}

/// One replay's results.
struct ReplayOutcome {
    arrivals: usize,
    report: StrategyReport,
    decisions: Vec<DecisionRecord>,
}

/// The running average of one level's window.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    arrivals: u64,
    allocated: f64,
    fragmentation: f64,
    near_arrivals: u64,
    near_allocated: f64,
    near_fragmentation: f64,
}

impl ReplayPlan<'_> {
    fn replay(&self, seed: u64, strategy: Strategy) -> Result<ReplayOutcome> {
        let options = self.options;
        let mut config = EngineConfig::new(strategy, self.mix.clone());
        config.seed = seed;
        config.learning = options.learning;
        if let Some(weight) = options.spread_weight {
            config.spread_weight = weight;
        }
        if let Some(measure) = options.fragmentation_measure {
            config.fragmentation_measure = measure;
        }
        if let Some(weight) = options.cpu_balance_weight {
            config.cpu_balance_weight = weight;
        }
        if strategy == Strategy::Fgd {
            // The paper's FGD measures against the paper's target workload.
            config.mix = self.paper_mix.clone();
        }
        let started = Instant::now();
        let mut engine = Engine::new(&self.input.snapshot, config)?;
        engine.track_fragmentation(self.paper_mix, crate::FragmentationMeasure::Fgd)?;
        let build_millis = started.elapsed().as_secs_f64() * 1e3;
        let arrivals = arrivals(
            &self.input.workload,
            options.order,
            options.tune,
            seed,
            self.capacity_milli,
        );
        let capacity = self.capacity_milli as f64;
        let highest = self.levels.last().copied().unwrap_or(1.0);
        let mut durations = Vec::with_capacity(arrivals.len());
        let mut rejections = [0_u64; RejectReason::ALL.len()];
        let mut reports: Vec<LevelReport> = Vec::with_capacity(self.levels.len());
        let mut windows = vec![Window::default(); self.levels.len()];
        let mut decisions = Vec::new();
        let (mut offered_milli, mut placed_milli) = (0_u64, 0_u64);
        let (mut offered, mut placed) = (0_u64, 0_u64);
        let replay_started = Instant::now();
        let mut round = 0_usize;
        'replay: loop {
            for original in &arrivals {
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
                let decided = Instant::now();
                let outcome = engine.place(request)?;
                durations.push(decided.elapsed().as_nanos() as u64);
                offered += 1;
                offered_milli += request.gpu.total_milli();
                if let Outcome::Placed(_) = &outcome {
                    placed += 1;
                    placed_milli += request.gpu.total_milli();
                }
                if let Outcome::Unplaceable(unplaceable) = &outcome {
                    for rejection in &unplaceable.rejections {
                        rejections[rejection.reason.position()] += u64::from(rejection.nodes);
                    }
                }
                let load = offered_milli as f64 / capacity;
                let allocated = engine.allocated_milli() as f64;
                let free = (capacity - allocated).max(0.0);
                let fragmentation = engine.tracked_fragmentation().map_or(0.0, |fragmented| {
                    if free > 0.0 { fragmented / free } else { 0.0 }
                });
                for (window, &level) in windows.iter_mut().zip(self.levels) {
                    let distance = (load * 100.0 - level * 100.0).abs();
                    if distance <= 0.5 {
                        window.arrivals += 1;
                        window.allocated += allocated / capacity;
                        window.fragmentation += fragmentation;
                    }
                    if distance <= 1.0 {
                        window.near_arrivals += 1;
                        window.near_allocated += allocated / capacity;
                        window.near_fragmentation += fragmentation;
                    }
                }
                if options.record_decisions {
                    decisions.push(decision_record(
                        seed,
                        strategy,
                        offered - 1,
                        request,
                        &outcome,
                        load,
                        allocated / capacity,
                    ));
                }
                while let Some(&level) = self.levels.get(reports.len()) {
                    if load < level {
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
                        fragmented_gpu_share: summary.fragmented_milli
                            / summary.capacity_milli as f64,
                        gpu_allocation: 0.0,
                        gpu_allocation_arrivals: 0,
                        fgd_fragmentation_ratio: 0.0,
                    });
                }
                // Past the highest level's window: done.
                if load * 100.0 > highest * 100.0 + 1.0 {
                    break 'replay;
                }
            }
            if options.tune.is_some() || arrivals.is_empty() {
                break;
            }
            round += 1;
        }
        // Levels the arrivals never reached (a tuned replay below them) report the end.
        while let Some(&level) = self.levels.get(reports.len()) {
            let summary = engine.summary();
            reports.push(LevelReport {
                offered_load: level,
                offered_replicas: offered,
                placed_replicas: placed,
                allocation_rate: placed_milli as f64 / offered_milli.max(1) as f64,
                allocated_gpu_share: 1.0 - summary.unallocated_share(),
                unallocated_gpu_share: summary.unallocated_share(),
                fragmentation_share: summary.fragmentation_share(),
                fragmented_gpu_share: summary.fragmented_milli / summary.capacity_milli as f64,
                gpu_allocation: 1.0 - summary.unallocated_share(),
                gpu_allocation_arrivals: 0,
                fgd_fragmentation_ratio: 0.0,
            });
        }
        for (report, window) in reports.iter_mut().zip(&windows) {
            if window.arrivals > 0 {
                report.gpu_allocation = window.allocated / window.arrivals as f64;
                report.fgd_fragmentation_ratio = window.fragmentation / window.arrivals as f64;
                report.gpu_allocation_arrivals = window.arrivals;
            } else if window.near_arrivals > 0 {
                report.gpu_allocation = window.near_allocated / window.near_arrivals as f64;
                report.fgd_fragmentation_ratio =
                    window.near_fragmentation / window.near_arrivals as f64;
                report.gpu_allocation_arrivals = window.near_arrivals;
            }
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
        Ok(ReplayOutcome {
            arrivals: arrivals.len(),
            report: StrategyReport {
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
            },
            decisions,
        })
    }
}

fn decision_record(
    seed: u64,
    strategy: Strategy,
    arrival: u64,
    request: &ReplicaRequest,
    outcome: &Outcome,
    offered_load: f64,
    allocated_share: f64,
) -> DecisionRecord {
    let (node, gpus, reason, score) = match outcome {
        Outcome::Placed(decision) => (
            Some(decision.node.clone()),
            decision.gpus.iter().map(|gpu| gpu.index).collect(),
            None,
            Some(decision.score),
        ),
        Outcome::Unplaceable(unplaceable) => {
            (None, Vec::new(), Some(unplaceable.to_string()), None)
        }
    };
    DecisionRecord {
        seed,
        strategy,
        arrival,
        replica: request.name.clone(),
        gpu_milli: request.gpu.milli_per_gpu(),
        gpu_count: request.gpu.gpu_count(),
        cpu_milli: request.cpu_milli,
        memory_mib: request.memory_mib,
        node,
        gpus,
        reason,
        score,
        offered_load,
        allocated_share,
    }
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
        .unwrap_or_else(|| WorkloadMix::from_requests(&input.workload, usize::MAX));
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

/// A load level as given: 1.3 → `130%`, 1.255 → `125.5%`.
fn percent(level: f64) -> String {
    let percent = level * 100.0;
    if (percent - percent.round()).abs() < 1e-9 {
        format!("{percent:.0}%")
    } else {
        let text = format!("{percent:.3}");
        format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

impl SimulationReport {
    /// The report as an aligned text table, strategies side by side at each load level: the FGD
    /// paper's GPU allocation first (mean, min and max over the seeds when there are several,
    /// and the distance to the bound when computed), then the fleet when the level was first
    /// reached.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mut text = String::new();
        let seeds = match self.seeds.as_slice() {
            [] | [_] => String::new(),
            [first, .., last] => format!("; seeds {first}..{last} ({})", self.seeds.len()),
        };
        let _ = writeln!(
            text,
            "fleet: {} nodes, {} usable GPUs; workload: {} replicas ({} CPU-only); mix: {} task types{seeds}",
            self.nodes,
            self.usable_gpus,
            self.workload_replicas,
            self.workload_cpu_only_replicas,
            self.mix.entries.len()
        );
        let _ = writeln!(
            text,
            "{:<20} {:>7} {:>9} {:>17} {:>9} {:>9} {:>13} {:>11} {:>9} {:>8} {:>8} {:>11}",
            "strategy",
            "load",
            "GPU alloc",
            "seeds min–max",
            "to bound",
            "placed",
            "placed/offered",
            "frag (FGD)",
            "frag*",
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
            for (index, strategy) in self.strategies.iter().enumerate() {
                let Some(row) = strategy.levels.get(level) else {
                    continue;
                };
                let summary = self
                    .summary
                    .get(index)
                    .and_then(|summary| summary.levels.get(level))
                    .copied();
                let mean = summary.map_or(row.gpu_allocation, |summary| summary.mean);
                let spread = match summary {
                    Some(summary) if self.seeds.len() > 1 => {
                        format!("{:.2}–{:.2}%", summary.min * 100.0, summary.max * 100.0)
                    }
                    _ => "—".to_owned(),
                };
                let to_bound = self.bound.as_ref().map_or("—".to_owned(), |bound| {
                    format!("{:.2} pts", (bound.mean - mean) * 100.0)
                });
                let _ = writeln!(
                    text,
                    "{:<20} {:>7} {:>8.2}% {:>17} {:>9} {:>9} {:>12.1}% {:>10.2}% {:>8.1}% {:>8.1} {:>8.1} {:>11.0}",
                    strategy.strategy.name(),
                    percent(row.offered_load),
                    mean * 100.0,
                    spread,
                    to_bound,
                    row.placed_replicas,
                    row.allocation_rate * 100.0,
                    row.fgd_fragmentation_ratio * 100.0,
                    row.fragmented_gpu_share * 100.0,
                    strategy.decision_p50_micros,
                    strategy.decision_p99_micros,
                    strategy.decisions_per_second
                );
            }
        }
        if let Some(bound) = &self.bound {
            let _ = writeln!(
                text,
                "bound: no scheduler allocates more than {:.2}% of the GPUs on these arrivals ({})",
                bound.mean * 100.0,
                bound.method
            );
        }
        let _ = writeln!(
            text,
            "GPU alloc: the FGD paper's GPU allocation at the load (allocated over total GPU \
             capacity, averaged over the arrivals whose offered demand rounds to it); placed, \
             placed/offered: replicas placed and their GPU demand over the offered, when the \
             load was first reached; frag (FGD): the paper's fragmentation ratio (free capacity \
             its target workload cannot use, over free capacity); frag*: free capacity \
             gpufleet's measure calls unusable, over all capacity"
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
