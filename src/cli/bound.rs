//! `gpufleet simulate --bound`: how much of the GPUs any scheduler could allocate on a replay's
//! arrivals, so each strategy's GPU allocation is read against a limit, not only against the
//! other strategies.
//!
//! The bound is a linear-programming relaxation, built with the planner's LP layer
//! (`gpufleet_planner::linear`, solved by its default solver and checked independently):
//!
//! ```text
//!   maximise   Σ_t,k  y_tk · gpu_t                 y_tk ≥ 0: pods of type t on node class k
//!   subject to Σ_k y_tk ≤ arrivals of type t        (a type: GPU request, models, CPU, memory)
//!              per class k (N_k nodes, G_k GPUs):
//!                Σ_t y_tk · cpu_t ≤ N_k · cpu_k,  Σ_t y_tk · memory_t ≤ N_k · memory_k
//!                Σ_t y_tk · gpu_t ≤ N_k · G_k
//!                Σ_t y_tk · count_t · u_j(share_t) ≤ N_k · G_k   for j = 1..24
//!              y_tk = 0 where the type cannot run on the class (model, GPU count, memory)
//! ```
//!
//! `u_j` are Fekete and Schepers' dual feasible functions (u_j(x) = x when (j+1)·x is whole,
//! ⌊(j+1)·x⌋/j otherwise): shares that fit one GPU never sum to more than 1 under any of them,
//! so the cuts are valid for every real placement and keep the relaxation from packing, say,
//! two 0.6 shares on one GPU. Relaxed are integrality, the order of arrivals and the rule that a
//! pod must be placed when it fits: the bound is what an offline scheduler free to pick which
//! pods to admit could reach, an upper bound of every online one.

use std::collections::BTreeMap;

use anyhow::Context as _;
use gpufleet_placement::simulate::{
    self, AllocationBound, SimulationInput, SimulationOptions, SimulationReport,
};
use gpufleet_placement::{GpuRequest, NodeSnapshot, ReplicaRequest};
use gpufleet_planner::SolverChoice;
use gpufleet_planner::linear::{
    ConstraintGroup, Direction, LinearExpression, LinearProgram, Sense,
};

/// How many of Fekete and Schepers' functions are applied.
const DUAL_FEASIBLE_FUNCTIONS: u32 = 24;

const ARRIVALS: ConstraintGroup = ConstraintGroup {
    name: "arrivals",
    relaxable: false,
    remedy: "",
};
const HOST: ConstraintGroup = ConstraintGroup {
    name: "node CPU and memory",
    relaxable: false,
    remedy: "",
};
const GPUS: ConstraintGroup = ConstraintGroup {
    name: "GPU capacity",
    relaxable: false,
    remedy: "",
};

/// A node class: nodes alike in what placement sees.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NodeClass {
    product: String,
    gpus: u32,
    gpu_memory_mib: u64,
    cpu_milli: u64,
    memory_mib: u64,
}

/// A pod type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PodType {
    gpu: GpuRequest,
    products: Vec<String>,
    cpu_milli: u64,
    memory_mib: u64,
}

/// Fekete and Schepers' dual feasible function u_j of a share x in [0, 1].
fn dual_feasible(j: u32, share: f64) -> f64 {
    let scaled = f64::from(j + 1) * share;
    if (scaled - scaled.round()).abs() < 1e-9 {
        share
    } else {
        scaled.floor() / f64::from(j)
    }
}

fn class_of(node: &NodeSnapshot) -> Option<NodeClass> {
    let first = node.gpus.first()?;
    Some(NodeClass {
        product: first.product.clone(),
        gpus: u32::try_from(
            node.gpus
                .iter()
                .filter(|gpu| gpu.health != gpufleet_placement::GpuHealth::Unhealthy)
                .count(),
        )
        .ok()?,
        gpu_memory_mib: first.memory_mib,
        cpu_milli: node.cpu_milli.unwrap_or(u64::MAX / 4),
        memory_mib: node.memory_mib.unwrap_or(u64::MAX / 4),
    })
}

fn fits(pod: &PodType, class: &NodeClass) -> bool {
    let model = pod.products.is_empty() || pod.products.contains(&class.product);
    let count = pod.gpu.gpu_count() <= class.gpus;
    let memory = pod.gpu.memory_need_mib(class.gpu_memory_mib) <= class.gpu_memory_mib;
    model
        && count
        && memory
        && pod.cpu_milli <= class.cpu_milli
        && pod.memory_mib <= class.memory_mib
}

/// The bound's share of GPU capacity for one set of arrivals.
fn bound_of(nodes: &[NodeSnapshot], arrivals: &[ReplicaRequest]) -> anyhow::Result<f64> {
    let mut classes: BTreeMap<NodeClass, u64> = BTreeMap::new();
    for class in nodes.iter().filter_map(class_of) {
        *classes.entry(class).or_default() += 1;
    }
    let mut types: BTreeMap<PodType, u64> = BTreeMap::new();
    for pod in arrivals {
        let mut products = pod.allowed_products.clone();
        products.sort();
        *types
            .entry(PodType {
                gpu: pod.gpu,
                products,
                cpu_milli: pod.cpu_milli,
                memory_mib: pod.memory_mib,
            })
            .or_default() += 1;
    }
    let capacity: f64 = classes
        .iter()
        .map(|(class, count)| f64::from(class.gpus) * *count as f64 * 1000.0)
        .sum();
    anyhow::ensure!(capacity > 0.0, "the fleet has no usable GPU");
    let mut program = LinearProgram::new(Direction::Maximise);
    // Per class: CPU, memory, GPU and the cut rows' expressions.
    let cuts = DUAL_FEASIBLE_FUNCTIONS as usize;
    let mut per_class: Vec<Vec<LinearExpression>> = classes
        .keys()
        .map(|_| (0..3 + cuts).map(|_| LinearExpression::new()).collect())
        .collect();
    let mut objective = LinearExpression::new();
    for (type_index, (pod, arrived)) in types.iter().enumerate() {
        let demand = pod.gpu.total_milli() as f64;
        let mut placed = LinearExpression::new();
        for (class_index, class) in classes.keys().enumerate() {
            if !fits(pod, class) {
                continue;
            }
            let variable =
                program.add_variable(format!("y[{type_index},{class_index}]"), 0.0, f64::INFINITY);
            placed.add_term(variable, 1.0);
            objective.add_term(variable, demand);
            let rows = &mut per_class[class_index];
            rows[0].add_term(variable, pod.cpu_milli as f64);
            rows[1].add_term(variable, pod.memory_mib as f64);
            rows[2].add_term(variable, demand);
            let share = f64::from(pod.gpu.milli_per_gpu()) / 1000.0;
            for j in 1..=DUAL_FEASIBLE_FUNCTIONS {
                let weight = f64::from(pod.gpu.gpu_count()) * dual_feasible(j, share);
                if weight > 0.0 {
                    rows[2 + j as usize].add_term(variable, weight);
                }
            }
        }
        program.add_constraint(
            ARRIVALS,
            format!("type {type_index}"),
            placed,
            Sense::AtMost,
            *arrived as f64,
        );
    }
    for ((class, count), rows) in classes.iter().zip(per_class) {
        let nodes = *count as f64;
        let mut rows = rows.into_iter();
        let label = |what: &str| format!("{} × {} {what}", count, class.product);
        if let Some(cpu) = rows.next() {
            program.add_constraint(
                HOST,
                label("CPU"),
                cpu,
                Sense::AtMost,
                nodes * class.cpu_milli as f64,
            );
        }
        if let Some(memory) = rows.next() {
            program.add_constraint(
                HOST,
                label("memory"),
                memory,
                Sense::AtMost,
                nodes * class.memory_mib as f64,
            );
        }
        let gpus = nodes * f64::from(class.gpus);
        if let Some(share) = rows.next() {
            program.add_constraint(
                GPUS,
                label("GPU share"),
                share,
                Sense::AtMost,
                gpus * 1000.0,
            );
        }
        for (j, cut) in rows.enumerate() {
            program.add_constraint(
                GPUS,
                label(&format!("GPU cut u{}", j + 1)),
                cut,
                Sense::AtMost,
                gpus,
            );
        }
    }
    program.objective = objective;
    let solution = program
        .solve(SolverChoice::Microlp)
        .context("solving the allocation bound")?;
    Ok((solution.objective / capacity).min(1.0))
}

/// The bound on every seed's arrivals of `report` (the arrivals the strategies saw, up to the
/// highest level).
///
/// # Errors
/// When the LP cannot be built or solved.
pub(crate) fn allocation_bound(
    input: &SimulationInput,
    options: &SimulationOptions,
    report: &SimulationReport,
) -> anyhow::Result<AllocationBound> {
    let capacity_milli = u64::from(report.usable_gpus) * 1000;
    let highest = options.load_levels.iter().copied().fold(0.0_f64, f64::max);
    let mut per_seed = Vec::new();
    for &seed in &report.seeds {
        let sampled = simulate::arrivals(
            &input.workload,
            options.order,
            options.tune,
            seed,
            capacity_milli,
        );
        // Without sampling the replay repeats the workload up to the highest level.
        let mut arrivals = Vec::new();
        let mut offered = 0_u64;
        'repeat: loop {
            for pod in &sampled {
                if options.tune.is_none()
                    && offered as f64 > (highest + 0.01) * capacity_milli as f64
                {
                    break 'repeat;
                }
                offered += pod.gpu.total_milli();
                arrivals.push(pod.clone());
            }
            if options.tune.is_some() || sampled.is_empty() {
                break;
            }
        }
        per_seed.push(bound_of(&input.snapshot.nodes, &arrivals)?);
    }
    let mean = per_seed.iter().sum::<f64>() / per_seed.len().max(1) as f64;
    Ok(AllocationBound {
        method: "LP relaxation over pod and node classes with Fekete–Schepers cuts; relaxes integrality, arrival order and admit-if-it-fits".to_owned(),
        per_seed,
        mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_feasible_functions_never_let_one_gpu_hold_more_than_itself() {
        // Every multiset of shares that fits in one GPU stays within 1 under every u_j.
        let shares = [0.05, 0.11, 0.16, 0.23, 0.32, 0.47, 0.5, 0.65, 0.81, 1.0];
        for j in 1..=DUAL_FEASIBLE_FUNCTIONS {
            for &a in &shares {
                for &b in &shares {
                    for &c in &shares {
                        if a + b + c <= 1.0 + 1e-12 {
                            let total =
                                dual_feasible(j, a) + dual_feasible(j, b) + dual_feasible(j, c);
                            assert!(total <= 1.0 + 1e-9, "u{j}({a},{b},{c}) = {total}");
                        }
                    }
                }
            }
        }
        // And two 0.6 shares, which do not fit together, are kept apart by u1.
        assert!(dual_feasible(1, 0.6) * 2.0 > 1.0);
    }
}
