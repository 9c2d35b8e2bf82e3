//! Scoring one node for one request shape: feasibility by GPU, the best GPUs on the node under
//! the strategy, and the cost breakdown. Pure functions of the node's state.
//!
//! Every cost is "lower is better". For the fragmentation strategies the engine ranks nodes by
//! the GPU part of a decision (its `key`) and adds the host part (the CPU and memory the
//! replica takes, which can only raise fragmentation) for the nodes it walks: [`evaluate`]
//! with `host_after` gives that exact cost.

use std::borrow::Cow;

use crate::decision::{RejectReason, ScoreBreakdown};
use crate::fleet::{ComputeCapability, GpuSnapshot};
use crate::fragmentation::{
    Change, FragmentationMeasure, Groups, Host, HostChange, Model, NodeFragments,
};
use crate::request::GpuRequest;
use crate::state::{GpuState, ProductMask};
use crate::strategy::{EngineConfig, ScoreWeights, Strategy};

/// Weight of the within-node tie-break terms (which GPU or NVLink group on a node). Those terms
/// lie in 0–1, so they decide only between candidates whose node-level terms differ by less
/// than the smallest share a request can ask for (a thousandth of a GPU).
const TIE_BREAK: f64 = 1e-4;

/// The FGD artifact's normalisation of CPU and GPU in its baselines: the largest node of its
/// cluster, 128 cores and 8 GPUs.
const MAX_SPEC_CPU_MILLI: f64 = 128_000.0;
const MAX_SPEC_GPU_MILLI: f64 = 8_000.0;

/// Penalty components of one GPU, fixed for a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Penalties {
    pub(crate) health: f64,
    pub(crate) thermal: f64,
    pub(crate) power: f64,
    pub(crate) utilisation: f64,
    pub(crate) telemetry: f64,
}

impl Penalties {
    pub(crate) fn of(gpu: &GpuSnapshot, config: &EngineConfig) -> Penalties {
        let weights: &ScoreWeights = &config.weights;
        let health = match gpu.health {
            crate::fleet::GpuHealth::Degraded => weights.degraded,
            _ => 0.0,
        };
        let hot = gpu
            .temperature_celsius
            .is_some_and(|temperature| temperature >= config.hot_temperature_celsius);
        let thermal = if hot { weights.hot } else { 0.0 }
            + if gpu.throttling {
                weights.throttling
            } else {
                0.0
            };
        let power = if gpu
            .power_headroom_watts
            .is_some_and(|watts| watts < config.low_power_headroom_watts)
        {
            weights.low_power_headroom
        } else {
            0.0
        };
        let utilisation = gpu.utilisation_percent.map_or(0.0, |percent| {
            weights.utilisation * f64::from(percent.min(100)) / 100.0
        });
        let telemetry = if gpu.observed_free_mib.is_none() {
            weights.missing_telemetry
        } else {
            0.0
        };
        Penalties {
            health,
            thermal,
            power,
            utilisation,
            telemetry,
        }
    }

    pub(crate) fn total(&self) -> f64 {
        self.health + self.thermal + self.power + self.utilisation + self.telemetry
    }
}

/// What a request shape needs from a GPU, resolved against the fleet's products.
#[derive(Debug, Clone)]
pub(crate) struct ShapeNeeds {
    pub(crate) request: GpuRequest,
    pub(crate) products: ProductMask,
    pub(crate) min_capability: Option<ComputeCapability>,
    pub(crate) headroom_mib: u64,
    /// CPU and host memory of the request, for shapes whose node ranking depends on them (the
    /// FGD reference, dot-product, requests without GPUs); `None` for the others.
    pub(crate) host_need: Option<(u64, u64)>,
}

/// The kinds of Pod the GPU-clustering baseline (Gandiva's) groups together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PodTag {
    NoGpu,
    Shared,
    Whole(u32),
}

impl PodTag {
    pub(crate) fn of(request: GpuRequest) -> PodTag {
        match request {
            GpuRequest::NoGpu => PodTag::NoGpu,
            GpuRequest::Fraction { .. } => PodTag::Shared,
            GpuRequest::Whole { count, .. } => PodTag::Whole(count),
        }
    }
}

/// The best placement on one node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Chosen GPU positions on the node.
    pub(crate) gpus: u64,
    pub(crate) breakdown: ScoreBreakdown,
}

/// Node-level inputs to scoring.
pub(crate) struct NodeView<'a> {
    pub(crate) gpus: &'a [GpuState],
    pub(crate) penalties: &'a [Penalties],
    /// GPU positions by ascending penalty, then position.
    pub(crate) gpu_order: &'a [u8],
    pub(crate) groups: &'a Groups,
    /// Cached fragmentation of the node now, under the engine's model.
    pub(crate) fragments: &'a NodeFragments,
    /// Free CPU and host memory now.
    pub(crate) host: Host,
    /// Tags of the replicas on the node with their counts (GPU-clustering baseline).
    pub(crate) tags: &'a [(PodTag, u32)],
}

/// What evaluating a node can use besides the node: the strategy's configuration and the
/// fragmentation model.
pub(crate) struct Scoring<'a> {
    pub(crate) config: &'a EngineConfig,
    pub(crate) model: &'a Model,
}

/// Progress of a GPU through the checks; the furthest one names a node's rejection.
fn gpu_check(gpu: &GpuState, needs: &ShapeNeeds) -> Result<(), RejectReason> {
    if !needs.products.allows(gpu.product) {
        return Err(RejectReason::GpuProductNotAllowed);
    }
    if let Some(minimum) = needs.min_capability
        && gpu.capability.is_none_or(|capability| capability < minimum)
    {
        return Err(RejectReason::ComputeCapabilityTooLow);
    }
    if !gpu.usable() {
        return Err(RejectReason::GpuUnhealthy);
    }
    let milli = needs.request.milli_per_gpu();
    let shared_but_whole_wanted = milli == 1000 && gpu.allocated_milli > 0;
    if gpu.free_milli() < milli || shared_but_whole_wanted {
        return Err(RejectReason::InsufficientGpuCompute);
    }
    let need = needs.request.memory_need_mib(gpu.capacity_mib);
    if gpu.requested_free_mib() < need {
        return Err(RejectReason::InsufficientGpuMemory);
    }
    if let Some(observed) = gpu.observed_free_mib
        && observed < need.saturating_add(needs.headroom_mib)
    {
        return Err(RejectReason::InsufficientObservedGpuMemory);
    }
    Ok(())
}

/// Free and total compute share of the node's usable GPUs, in GPUs.
fn node_totals(gpus: &[GpuState]) -> (f64, f64) {
    let mut free = 0_u64;
    let mut capacity = 0_u64;
    for gpu in gpus.iter().filter(|gpu| gpu.usable()) {
        free += u64::from(gpu.free_milli());
        capacity += 1000;
    }
    (free as f64 / 1000.0, capacity as f64 / 1000.0)
}

/// Scores the best placement of `needs` on the node, or says why there is none. With
/// `host_after` (the node's free CPU and memory once the replica is placed), fragmentation
/// costs include the host part; without, they are the engine's ranking key.
pub(crate) fn evaluate(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    scoring: &Scoring<'_>,
    host_after: Option<Host>,
) -> Result<Candidate, RejectReason> {
    let host = host_for(node, needs, host_after);
    let fragments = matches!(
        scoring.config.strategy,
        Strategy::FragmentationAware | Strategy::Fgd
    );
    // The class weights change only with the host: the node's cached ones serve its key.
    let weights: Cow<'_, [f64]> = if !fragments || host == node.host {
        Cow::Borrowed(&node.fragments.weights)
    } else {
        scoring
            .model
            .weights_after(&node.fragments.weights, node.host, host)
    };
    let after = After {
        host,
        weights: &weights,
    };
    match needs.request {
        GpuRequest::NoGpu => Ok(evaluate_no_gpu(node, needs, scoring, &after)),
        GpuRequest::Fraction { milli, .. } => {
            evaluate_fraction(node, needs, milli, scoring, &after)
        }
        GpuRequest::Whole { count, .. } => evaluate_whole(node, needs, count, scoring, &after),
    }
}

/// How much more placing `needs` on the GPUs in `mask` of the node costs, in GPUs, once the
/// replica's CPU and memory are taken (the node's host becoming `host_after`), than its key
/// says: the key is a lower bound, this is the rest.
pub(crate) fn host_part(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    scoring: &Scoring<'_>,
    mask: u64,
    host_after: Host,
) -> f64 {
    let mut memory = [0_u64; crate::state::MAX_GPUS_PER_NODE];
    for (slot, gpu) in memory.iter_mut().zip(node.gpus) {
        *slot = needs.request.memory_need_mib(gpu.capacity_mib);
    }
    let change = Change {
        mask,
        milli: needs.request.milli_per_gpu(),
        memory_mib: &memory,
    };
    let weights = scoring
        .model
        .weights_after(&node.fragments.weights, node.host, host_after);
    scoring.model.host_correction(
        node.fragments,
        node.gpus,
        node.groups,
        &change,
        &HostChange {
            now: node.host,
            after: host_after,
            weights_after: &weights,
        },
    ) / 1000.0
}

/// The host a candidate's fragmentation is computed with, and its class weights.
struct After<'a> {
    host: Host,
    weights: &'a [f64],
}

/// The host the fragmentation of a candidate is computed with: after the replica when given,
/// for the FGD reference always (its ranking is exact), otherwise the node's host now.
fn host_for(node: &NodeView<'_>, needs: &ShapeNeeds, host_after: Option<Host>) -> Host {
    host_after.unwrap_or_else(|| match needs.host_need {
        Some((cpu, memory)) => node.host.minus(cpu, memory),
        None => node.host,
    })
}

/// Fragmentation change of the node by `change`, in GPUs.
fn fragmentation_delta(
    node: &NodeView<'_>,
    scoring: &Scoring<'_>,
    change: &Change<'_>,
    after: &After<'_>,
) -> f64 {
    (scoring.model.after(
        node.fragments,
        node.gpus,
        node.groups,
        change,
        after.host,
        after.weights,
    ) - node.fragments.value)
        / 1000.0
}

/// The FGD artifact's node score, ⌊100·σ(−Δ/1000)⌋ for a fragmentation change Δ in
/// thousandths, as a cost (lower is better): equal scores tie, as in the artifact.
fn fgd_cost(delta_gpus: f64) -> f64 {
    let sigmoid = 1.0 / (1.0 + delta_gpus.exp());
    -(100.0 * sigmoid).floor()
}

/// The CPU the node has left, as the artifact's baselines count it (unlimited = its maximum).
fn cpu_left(node: &NodeView<'_>) -> f64 {
    node.host
        .cpu_milli
        .map_or(MAX_SPEC_CPU_MILLI, |cpu| cpu.max(0) as f64)
}

/// GPU clustering's affinity term: 75 when the node holds only this kind of Pod, 50 when it
/// holds it among others, 25 when idle, 0 when it holds only other kinds.
fn clustering_affinity(node: &NodeView<'_>, tag: PodTag) -> f64 {
    let held: Vec<PodTag> = node
        .tags
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(tag, _)| *tag)
        .collect();
    match (held.is_empty(), held.contains(&tag), held.len()) {
        (true, _, _) => 25.0,
        (false, true, 1) => 75.0,
        (false, true, _) => 50.0,
        (false, false, _) => 0.0,
    }
}

/// Node-level cost of the strategies that do not look at the GPUs chosen within the node.
fn node_cost(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    strategy: Strategy,
    demand_gpus: f64,
) -> Option<f64> {
    let (node_free, _) = node_totals(node.gpus);
    let cpu_need = needs.host_need.map_or(0.0, |(cpu, _)| cpu as f64);
    match strategy {
        Strategy::BestFitCpuGpu => Some(
            0.5 * (cpu_left(node) - cpu_need) / MAX_SPEC_CPU_MILLI
                + 0.5 * (node_free - demand_gpus) * 1000.0 / MAX_SPEC_GPU_MILLI,
        ),
        Strategy::DotProduct => Some(
            (cpu_left(node) * cpu_need / (MAX_SPEC_CPU_MILLI * MAX_SPEC_CPU_MILLI)
                + node_free * 1000.0 * demand_gpus * 1000.0
                    / (MAX_SPEC_GPU_MILLI * MAX_SPEC_GPU_MILLI))
                / 2.0,
        ),
        Strategy::GpuClustering => {
            let tag = PodTag::of(needs.request);
            if tag == PodTag::NoGpu {
                return Some(0.0);
            }
            let used = (MAX_SPEC_GPU_MILLI - node_free * 1000.0).max(0.0);
            Some(-((25.0 * used / MAX_SPEC_GPU_MILLI).floor() + clustering_affinity(node, tag)))
        }
        Strategy::Random => Some(0.0),
        _ => None,
    }
}

fn evaluate_no_gpu(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    scoring: &Scoring<'_>,
    after: &After<'_>,
) -> Candidate {
    let strategy = scoring.config.strategy;
    let mut fragmentation_delta_gpus = None;
    let strategy_cost = match strategy {
        Strategy::FragmentationAware | Strategy::Fgd => {
            let delta = fragmentation_delta(node, scoring, &Change::NONE, after);
            fragmentation_delta_gpus = Some(delta);
            if strategy == Strategy::Fgd {
                fgd_cost(delta)
            } else {
                delta
            }
        }
        Strategy::BestFit | Strategy::Pack | Strategy::Spread | Strategy::GpuPacking => 0.0,
        _ => node_cost(node, needs, strategy, 0.0).unwrap_or(0.0),
    };
    Candidate {
        gpus: 0,
        breakdown: breakdown(
            strategy,
            strategy_cost,
            fragmentation_delta_gpus,
            Penalties::default(),
            0.0,
        ),
    }
}

fn evaluate_fraction(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    milli: u32,
    scoring: &Scoring<'_>,
    after: &After<'_>,
) -> Result<Candidate, RejectReason> {
    let strategy = scoring.config.strategy;
    let (node_free, node_capacity) = node_totals(node.gpus);
    let share = f64::from(milli) / 1000.0;
    let mut furthest = RejectReason::GpuProductNotAllowed;
    let mut fitting = 0_u64;
    let mut best: Option<(f64, Candidate)> = None;
    let mut memory = [0_u64; crate::state::MAX_GPUS_PER_NODE];
    let fixed_cost = node_cost(node, needs, strategy, share);
    for (position, gpu) in node.gpus.iter().enumerate() {
        if let Err(reason) = gpu_check(gpu, needs) {
            furthest = furthest.max(reason);
            continue;
        }
        // GPUs in identical state score identically: score the first only.
        let twin = (0..position)
            .any(|earlier| fitting & (1 << earlier) != 0 && node.gpus[earlier] == *gpu);
        fitting |= 1 << position;
        if twin {
            continue;
        }
        let need = needs.request.memory_need_mib(gpu.capacity_mib);
        memory[position] = need;
        let gpu_free_after = f64::from(gpu.free_milli() - milli) / 1000.0;
        let node_free_after = node_free - share;
        let allocated_after = (node_capacity - node_free_after) / node_capacity;
        let mut fragmentation_delta_gpus = None;
        let strategy_cost = match strategy {
            Strategy::BestFit => node_free_after + TIE_BREAK * gpu_free_after,
            Strategy::Pack => -allocated_after + TIE_BREAK * gpu_free_after,
            Strategy::Spread => allocated_after - TIE_BREAK * gpu_free_after,
            Strategy::FragmentationAware | Strategy::Fgd => {
                let change = Change {
                    mask: 1 << position,
                    milli,
                    memory_mib: &memory,
                };
                let delta = fragmentation_delta(node, scoring, &change, after);
                fragmentation_delta_gpus = Some(delta);
                if strategy == Strategy::Fgd {
                    // The artifact keeps the first GPU reaching the best score.
                    fgd_cost(delta) + TIE_BREAK * position as f64 / 64.0
                } else {
                    delta + TIE_BREAK * gpu_free_after
                }
            }
            Strategy::GpuPacking => {
                let gpu_left = f64::from(gpu.free_milli());
                let score = if gpu.allocated_milli > 0 {
                    // Case 3: only shared GPUs are used.
                    (100.0 - (gpu_left * 100.0 / 1000.0) / 10.0).max(50.0)
                } else if node.gpus.iter().all(|other| other.allocated_milli == 0) {
                    // Case 1: the whole node is free.
                    let free_gpus = node.gpus.len() as f64;
                    (33.0 - free_gpus).max(free_gpus)
                } else {
                    // Case 2: a fully free GPU on a node in use (one GPU taken).
                    (50.0_f64 - 1.0).max(33.0)
                };
                -score + TIE_BREAK * gpu_free_after
            }
            Strategy::Random => TIE_BREAK * gpu_free_after,
            Strategy::BestFitCpuGpu | Strategy::DotProduct | Strategy::GpuClustering => {
                fixed_cost.unwrap_or(0.0) + TIE_BREAK * gpu_free_after
            }
        };
        let penalties = node.penalties[position];
        let breakdown = breakdown(
            strategy,
            strategy_cost,
            fragmentation_delta_gpus,
            penalties,
            0.0,
        );
        let total = breakdown.total;
        if best
            .as_ref()
            .is_none_or(|(best_total, _)| total < *best_total)
        {
            best = Some((
                total,
                Candidate {
                    gpus: 1 << position,
                    breakdown,
                },
            ));
        }
    }
    best.map(|(_, candidate)| candidate).ok_or(furthest)
}

fn evaluate_whole(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    count: u32,
    scoring: &Scoring<'_>,
    after: &After<'_>,
) -> Result<Candidate, RejectReason> {
    let strategy = scoring.config.strategy;
    let count = count as usize;
    let mut furthest: Option<RejectReason> = None;
    let mut free_mask = 0_u64;
    for (position, gpu) in node.gpus.iter().enumerate() {
        match gpu_check(gpu, needs) {
            Ok(()) => free_mask |= 1 << position,
            Err(reason) => furthest = Some(furthest.map_or(reason, |known| known.max(reason))),
        }
    }
    let free_count = free_mask.count_ones() as usize;
    if free_count < count {
        // Too few GPUs pass every check: name the furthest check the others failed, but at
        // least "compute" when some did pass (the node is short of whole GPUs).
        let reason = match furthest {
            None => RejectReason::InsufficientGpuCompute,
            Some(reason) if free_count > 0 => reason.max(RejectReason::InsufficientGpuCompute),
            Some(reason) => reason,
        };
        return Err(reason);
    }
    let (node_free, node_capacity) = node_totals(node.gpus);
    let node_free_after = node_free - count as f64;
    let allocated_after = (node_capacity - node_free_after) / node_capacity;
    let fixed_cost = node_cost(node, needs, strategy, count as f64);
    let mut memory = [0_u64; crate::state::MAX_GPUS_PER_NODE];
    for (slot, gpu) in memory.iter_mut().zip(node.gpus) {
        *slot = needs.request.memory_need_mib(gpu.capacity_mib);
    }
    let mut best: Option<(f64, Candidate)> = None;
    let mut groups_done = 0_u64;
    for position in 0..node.gpus.len() {
        if free_mask & (1 << position) == 0 || groups_done & (1 << position) != 0 {
            continue;
        }
        let group = node.gpus[position].topology_group;
        let group_mask = (0..node.gpus.len())
            .filter(|&other| {
                free_mask & (1 << other) != 0 && node.gpus[other].topology_group == group
            })
            .fold(0_u64, |mask, other| mask | (1 << other));
        groups_done |= group_mask;
        let group_free = group_mask.count_ones() as usize;
        if group_free < count {
            continue;
        }
        for selection in selections(node, group_mask, count) {
            let group_left = (group_free - count) as f64 / node_capacity;
            let mut fragmentation_delta_gpus = None;
            let strategy_cost = match strategy {
                Strategy::BestFit => node_free_after + TIE_BREAK * group_left,
                Strategy::Pack => -allocated_after + TIE_BREAK * group_left,
                Strategy::Spread => allocated_after - TIE_BREAK * group_left,
                Strategy::FragmentationAware | Strategy::Fgd => {
                    let change = Change {
                        mask: selection,
                        milli: 1000,
                        memory_mib: &memory,
                    };
                    let delta = fragmentation_delta(node, scoring, &change, after);
                    fragmentation_delta_gpus = Some(delta);
                    if strategy == Strategy::Fgd {
                        fgd_cost(delta)
                    } else {
                        delta + TIE_BREAK * group_left
                    }
                }
                Strategy::GpuPacking => {
                    let all_free = node.gpus.iter().all(|gpu| gpu.allocated_milli == 0);
                    let score = if all_free {
                        let free_gpus = node.gpus.len() as f64;
                        (33.0 - free_gpus).max(free_gpus)
                    } else {
                        (50.0 - count as f64).max(33.0)
                    };
                    -score + TIE_BREAK * group_left
                }
                Strategy::Random => 0.0,
                Strategy::BestFitCpuGpu | Strategy::DotProduct | Strategy::GpuClustering => {
                    fixed_cost.unwrap_or(0.0) + TIE_BREAK * group_left
                }
            };
            let mut penalties = Penalties::default();
            let mut numa_nodes = [None; 2];
            let mut numa_split = false;
            for chosen in (0..node.gpus.len()).filter(|&gpu| selection & (1 << gpu) != 0) {
                let gpu_penalties = node.penalties[chosen];
                penalties.health += gpu_penalties.health / count as f64;
                penalties.thermal += gpu_penalties.thermal / count as f64;
                penalties.power += gpu_penalties.power / count as f64;
                penalties.utilisation += gpu_penalties.utilisation / count as f64;
                penalties.telemetry += gpu_penalties.telemetry / count as f64;
                let numa = node.gpus[chosen].numa_node;
                match numa_nodes[0] {
                    None => numa_nodes[0] = Some(numa),
                    Some(first) if first != numa => {
                        numa_split = true;
                        numa_nodes[1] = Some(numa);
                    }
                    Some(_) => {}
                }
            }
            let numa_penalty = if numa_split {
                scoring.config.weights.numa_split
            } else {
                0.0
            };
            let breakdown = breakdown(
                strategy,
                strategy_cost,
                fragmentation_delta_gpus,
                penalties,
                numa_penalty,
            );
            let total = breakdown.total;
            if best
                .as_ref()
                .is_none_or(|(best_total, _)| total < *best_total)
            {
                best = Some((
                    total,
                    Candidate {
                        gpus: selection,
                        breakdown,
                    },
                ));
            }
        }
    }
    best.map(|(_, candidate)| candidate)
        .ok_or(RejectReason::NvlinkGroupTooSmall)
}

/// Candidate GPU sets of `count` within a group's free GPUs: for each NUMA node holding enough
/// of them, its least-penalised `count`; when none does, the least-penalised `count` overall.
fn selections(node: &NodeView<'_>, group_mask: u64, count: usize) -> Vec<u64> {
    let mut result = Vec::new();
    let mut numa_done = 0_u64;
    for &position in node.gpu_order {
        let position = usize::from(position);
        if group_mask & (1 << position) == 0 || numa_done & (1 << position) != 0 {
            continue;
        }
        let numa = node.gpus[position].numa_node;
        let mut selection = 0_u64;
        let mut taken = 0;
        for &other in node.gpu_order {
            let other = usize::from(other);
            if group_mask & (1 << other) != 0 && node.gpus[other].numa_node == numa {
                numa_done |= 1 << other;
                if taken < count {
                    selection |= 1 << other;
                    taken += 1;
                }
            }
        }
        if taken == count {
            result.push(selection);
        }
    }
    if result.is_empty() {
        let mut selection = 0_u64;
        let mut taken = 0;
        for &position in node.gpu_order {
            if taken < count && group_mask & (1 << position) != 0 {
                selection |= 1 << position;
                taken += 1;
            }
        }
        result.push(selection);
    }
    result
}

/// Whether the fragmentation measure of a strategy's ranking is the FGD paper's.
pub(crate) fn measure_of(config: &EngineConfig) -> FragmentationMeasure {
    match config.strategy {
        Strategy::Fgd => FragmentationMeasure::Fgd,
        _ => config.fragmentation_measure,
    }
}

fn breakdown(
    strategy: Strategy,
    strategy_cost: f64,
    fragmentation_delta_gpus: Option<f64>,
    penalties: Penalties,
    numa_penalty: f64,
) -> ScoreBreakdown {
    ScoreBreakdown {
        strategy,
        strategy_cost,
        fragmentation_delta_gpus,
        health_penalty: penalties.health,
        thermal_penalty: penalties.thermal,
        power_penalty: penalties.power,
        utilisation_penalty: penalties.utilisation,
        telemetry_penalty: penalties.telemetry,
        numa_penalty,
        spread_penalty: 0.0,
        total: strategy_cost + penalties.total() + numa_penalty,
    }
}
