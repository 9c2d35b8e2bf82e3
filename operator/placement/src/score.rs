//! Scoring one node for one request shape: feasibility by GPU, the best GPUs on the node under
//! the strategy, and the cost breakdown. Pure functions of the node's state.

use crate::decision::{RejectReason, ScoreBreakdown};
use crate::fleet::{ComputeCapability, GpuSnapshot};
use crate::request::GpuRequest;
use crate::state::{Change, CompiledMix, GpuState, ProductMask};
use crate::strategy::{EngineConfig, ScoreWeights, Strategy};

/// Weight of the within-node tie-break terms (which GPU or NVLink group on a node). Those terms
/// lie in 0–1, so they decide only between candidates whose node-level terms differ by less
/// than the smallest share a request can ask for (a thousandth of a GPU).
const TIE_BREAK: f64 = 1e-4;

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
}

/// The best placement on one node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Chosen GPU positions on the node.
    pub(crate) gpus: u64,
    pub(crate) breakdown: ScoreBreakdown,
}

/// Node-level inputs to scoring that do not change per GPU.
pub(crate) struct NodeView<'a> {
    pub(crate) gpus: &'a [GpuState],
    pub(crate) penalties: &'a [Penalties],
    /// GPU positions by ascending penalty, then position.
    pub(crate) gpu_order: &'a [u8],
    /// Cached expected fragmentation of the node now.
    pub(crate) fragmentation: f64,
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

fn node_totals(gpus: &[GpuState]) -> (f64, f64) {
    let mut free = 0_u64;
    let mut capacity = 0_u64;
    for gpu in gpus.iter().filter(|gpu| gpu.usable()) {
        free += u64::from(gpu.free_milli());
        capacity += 1000;
    }
    (free as f64 / 1000.0, capacity as f64 / 1000.0)
}

/// Scores the best placement of `needs` on the node, or says why there is none.
pub(crate) fn evaluate(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    config: &EngineConfig,
    mix: &CompiledMix,
) -> Result<Candidate, RejectReason> {
    match needs.request {
        GpuRequest::Fraction { milli, .. } => evaluate_fraction(node, needs, milli, config, mix),
        GpuRequest::Whole { count, .. } => evaluate_whole(node, needs, count, config, mix),
    }
}

fn evaluate_fraction(
    node: &NodeView<'_>,
    needs: &ShapeNeeds,
    milli: u32,
    config: &EngineConfig,
    mix: &CompiledMix,
) -> Result<Candidate, RejectReason> {
    let (node_free, node_capacity) = node_totals(node.gpus);
    let share = f64::from(milli) / 1000.0;
    let mut furthest = RejectReason::GpuProductNotAllowed;
    let mut fitting = 0_u64;
    let mut best: Option<(f64, Candidate)> = None;
    let mut memory = [0_u64; crate::state::MAX_GPUS_PER_NODE];
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
        let mut fragmentation_delta = None;
        let strategy_cost = match config.strategy {
            Strategy::BestFit => node_free_after + TIE_BREAK * gpu_free_after,
            Strategy::Pack => -allocated_after + TIE_BREAK * gpu_free_after,
            Strategy::Spread => allocated_after - TIE_BREAK * gpu_free_after,
            Strategy::FragmentationAware => {
                let change = Change {
                    mask: 1 << position,
                    milli,
                    memory_mib: &memory,
                };
                let delta = (mix.fragmentation(node.gpus, &change) - node.fragmentation) / 1000.0;
                fragmentation_delta = Some(delta);
                delta + TIE_BREAK * gpu_free_after
            }
        };
        let penalties = node.penalties[position];
        let breakdown = breakdown(
            config.strategy,
            strategy_cost,
            fragmentation_delta,
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
    config: &EngineConfig,
    mix: &CompiledMix,
) -> Result<Candidate, RejectReason> {
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
            let mut fragmentation_delta = None;
            let strategy_cost = match config.strategy {
                Strategy::BestFit => node_free_after + TIE_BREAK * group_left,
                Strategy::Pack => -allocated_after + TIE_BREAK * group_left,
                Strategy::Spread => allocated_after - TIE_BREAK * group_left,
                Strategy::FragmentationAware => {
                    let change = Change {
                        mask: selection,
                        milli: 1000,
                        memory_mib: &memory,
                    };
                    let delta =
                        (mix.fragmentation(node.gpus, &change) - node.fragmentation) / 1000.0;
                    fragmentation_delta = Some(delta);
                    delta + TIE_BREAK * group_left
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
                config.weights.numa_split
            } else {
                0.0
            };
            let breakdown = breakdown(
                config.strategy,
                strategy_cost,
                fragmentation_delta,
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
        total: strategy_cost + penalties.total() + numa_penalty,
    }
}
