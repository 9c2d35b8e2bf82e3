//! Fragmentation: how much of a node's free GPU capacity the expected workload cannot use.
//!
//! ```text
//!   F(node) = free − Σ_m p_m · usable_m(node)
//!
//!   free       free GPU capacity of the node's usable GPUs, thousandths of a GPU
//!   m          a task type of the workload mix (GPU request, products, CPU, host memory)
//!   p_m        its probability
//!   usable_m   the part of `free` tasks of type m could use
//! ```
//!
//! Two measures of `usable_m`, both over the same GPU classes (a class is a GPU request with
//! its allowed products; several task types share one):
//!
//! - [`FragmentationMeasure::Fgd`], the FGD paper's (Weng et al., ATC '23, as its artifact
//!   computes it): all of a GPU's free share counts as usable by a fractional type if the type
//!   fits on it at all, every fully free GPU counts for a whole-GPU type if enough of them are
//!   free, and nothing counts when the node's free CPU cannot take one task of the type (host
//!   memory is not looked at).
//! - [`FragmentationMeasure::Capacity`], gpufleet's: the capacity tasks of the type could
//!   really take on the GPUs, counted in tasks (a GPU with 0.6 free gives a 0.47 type 0.47, not
//!   0.6; five free GPUs give a 4-GPU type 4), usable only where one task fits the node's free
//!   CPU and host memory; plus a balance term for the stranding FGD's measure does not see:
//!
//!   ```text
//!     + w · max(0, free − free CPU / ρ)     ρ: the workload's CPU per thousandth of GPU
//!   ```
//!
//!   the free GPU capacity the node's free CPU cannot feed at the workload's ratio. GPUs stay
//!   free when the CPU beside them runs out first, however well their shares fit; FGD's
//!   measure sees it only once not even one more task fits.
//!
//! Both are monotone in host resources: taking CPU or memory from a node never lowers F. The
//! engine relies on it to rank nodes by the GPU part of a decision and add the host part only
//! for the few nodes it walks (see `engine`).
//!
//! Variants measured on the openb trace (paper's protocol, seeds 42–45, GPU allocation at
//! 130%) before settling on this one: tasks capped by how many the free CPU and memory hold
//! instead of "one fits" (95.34% without the balance term, 95.93% with it, and 10× slower: the
//! host part then couples every type); the balance term over CPU-only tasks too (95.48%);
//! a memory balance term beside the CPU one (no gain); tie-breaks by node fullness or CPU left
//! (±0.03 points).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::request::GpuRequest;
use crate::state::{GpuState, ProductMask};
use crate::strategy::WorkloadMix;

/// How a node's usable GPU capacity is counted for a task type (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FragmentationMeasure {
    /// The FGD paper's: a type's whole free share is usable where one task of it fits.
    Fgd,
    /// gpufleet's: the capacity tasks of the type could really take, capped by the node's
    /// free CPU and host memory.
    #[default]
    Capacity,
}

/// Free host resources of a node; `None` does not limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Host {
    pub(crate) cpu_milli: Option<i64>,
    pub(crate) memory_mib: Option<i64>,
}

impl Host {
    /// What is left after taking `cpu_milli` and `memory_mib`.
    pub(crate) fn minus(self, cpu_milli: u64, memory_mib: u64) -> Host {
        let take = |free: Option<i64>, amount: u64| {
            free.map(|free| free.saturating_sub(i64::try_from(amount).unwrap_or(i64::MAX)))
        };
        Host {
            cpu_milli: take(self.cpu_milli, cpu_milli),
            memory_mib: take(self.memory_mib, memory_mib),
        }
    }
}

/// A GPU request with its allowed products: what decides which GPUs a task can use.
#[derive(Debug, Clone)]
struct Class {
    request: GpuRequest,
    products: ProductMask,
    /// Thousandths of a GPU one task takes in all (a 4-GPU task: 4000).
    demand_milli: u64,
    /// For whole-GPU classes, their position among the whole classes (`NodeFragments::groups`).
    whole: Option<usize>,
}

/// One task type: a class and the host resources a task of it needs.
#[derive(Debug, Clone, Copy)]
struct Task {
    class: usize,
    cpu_milli: u64,
    memory_mib: u64,
    probability: f64,
}

/// A workload mix compiled against a fleet's products, with the measure to apply.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// CPU millicores the mix's GPU tasks need per thousandth of GPU, on average.
    cpu_per_milli: f64,
    /// Weight of the CPU-balance term (capacity measure only).
    balance_weight: f64,
    /// The tasks' CPU and memory needs, each sorted: where the weights of a host change.
    cpu_steps: Vec<u64>,
    memory_steps: Vec<u64>,
    /// Task positions in `memory_steps` order.
    by_memory: Vec<usize>,
    measure: FragmentationMeasure,
    classes: Vec<Class>,
    tasks: Vec<Task>,
    whole_classes: usize,
    headroom_mib: u64,
    /// The weights of every host, when the mix is small enough to tabulate them.
    grid: Option<WeightGrid>,
}

/// Tables of more entries than this (8 MiB) are not built; weights are then stepped task by
/// task ([`Model::weights_after`]).
const MAX_GRID_ENTRIES: usize = 1 << 20;

/// [`Model::weights`] of every host, tabulated on the grid of the mix's distinct CPU and memory
/// needs. A host's weights change only where its free CPU or memory crosses a need, so one
/// lookup (two binary searches) replaces a pass over every task a replica's CPU and memory
/// cross. The walk asks for the weights of each node it costs; on Alibaba's openb trace a
/// replica's CPU crossed dozens of its 151 task types, and stepping through them was a fifth
/// of a decision.
#[derive(Debug, Clone)]
struct WeightGrid {
    /// The distinct CPU needs of the tasks, ascending.
    cpu_cuts: Vec<u64>,
    /// The distinct memory needs, ascending (empty for the FGD measure, which ignores memory).
    memory_cuts: Vec<u64>,
    classes: usize,
    /// By CPU cell, then memory cell, then class.
    rows: Vec<f64>,
}

impl WeightGrid {
    /// How many of `cuts` a free amount holds (`None`, unlimited, holds all).
    fn cell(cuts: &[u64], free: Option<i64>) -> usize {
        match free {
            None => cuts.len(),
            Some(free) => {
                cuts.partition_point(|cut| i64::try_from(*cut).unwrap_or(i64::MAX) <= free)
            }
        }
    }

    /// A free amount that holds exactly the first `cell` cuts.
    fn representative(cuts: &[u64], cell: usize) -> Option<i64> {
        match cell {
            0 => Some(-1),
            cell if cell == cuts.len() => None,
            cell => Some(i64::try_from(cuts[cell - 1]).unwrap_or(i64::MAX)),
        }
    }

    fn row(&self, host: Host) -> &[f64] {
        let cpu = Self::cell(&self.cpu_cuts, host.cpu_milli);
        let memory = Self::cell(&self.memory_cuts, host.memory_mib);
        let start = (cpu * (self.memory_cuts.len() + 1) + memory) * self.classes;
        &self.rows[start..start + self.classes]
    }
}

/// A node's fragmentation and what computing a change to it needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NodeFragments {
    /// Per class, the capacity its tasks could use on the node's GPUs alone (thousandths).
    usable: Vec<u64>,
    /// Per whole-GPU class and NVLink group of the node, the eligible fully free GPUs.
    groups: Vec<u8>,
    /// [`Model::weights`] of the node's free host resources now.
    pub(crate) weights: Vec<f64>,
    /// What each GPU offers each fractional class now, by class then GPU position.
    offers: Vec<u64>,
    /// F of the module docs, thousandths of a GPU: what scoring minimises.
    pub(crate) value: f64,
    /// The free capacity the workload cannot use, without the balance term: what reports call
    /// fragmented.
    pub(crate) unusable: f64,
}

/// A hypothetical placement on some GPUs of a node, to score a candidate without copying the
/// node: `milli` and `memory_mib[position]` more on each GPU in `mask`.
pub(crate) struct Change<'a> {
    pub(crate) mask: u64,
    pub(crate) milli: u32,
    /// Memory per GPU position (only positions in `mask` are read).
    pub(crate) memory_mib: &'a [u64],
}

impl Change<'_> {
    pub(crate) const NONE: Change<'static> = Change {
        mask: 0,
        milli: 0,
        memory_mib: &[],
    };

    fn apply(&self, gpus: &[GpuState], position: usize) -> GpuState {
        let gpu = gpus[position];
        if self.mask & (1 << position) != 0 {
            gpu.with_allocation(self.milli, self.memory_mib[position])
        } else {
            gpu
        }
    }
}

/// A node's host now and once a replica's CPU and memory are taken, with the class weights of
/// the latter ([`Model::weights_after`]).
pub(crate) struct HostChange<'a> {
    pub(crate) now: Host,
    pub(crate) after: Host,
    pub(crate) weights_after: &'a [f64],
}

/// The GPUs a change touches, before and after it. Read straight from the change's mask: most
/// changes touch one GPU, and copying GPU states into a buffer for every class's look cost
/// more than reading them again.
struct Touched<'a> {
    gpus: &'a [GpuState],
    change: &'a Change<'a>,
}

impl<'a> Touched<'a> {
    fn of(gpus: &'a [GpuState], change: &'a Change<'a>) -> Touched<'a> {
        Touched { gpus, change }
    }

    /// Whether the change touches no GPU.
    fn is_empty(&self) -> bool {
        self.change.mask == 0
    }

    fn gpus(&self) -> impl Iterator<Item = (usize, GpuState, GpuState)> + '_ {
        let mut mask = self.change.mask;
        std::iter::from_fn(move || {
            if mask == 0 {
                return None;
            }
            let position = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Some((
                position,
                self.gpus[position],
                self.change.apply(self.gpus, position),
            ))
        })
    }

    /// The node's free compute share after the change.
    fn free_after(&self) -> u64 {
        let share = |gpu: &GpuState| u64::from(if gpu.usable() { gpu.free_milli() } else { 0 });
        let (gained, lost) = self.gpus().fold((0, 0), |(gained, lost), (_, old, new)| {
            (gained + share(&new), lost + share(&old))
        });
        (before_free(self.gpus) + gained).saturating_sub(lost)
    }
}

/// The NVLink groups of a node's GPUs, numbered 0.. in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Groups {
    /// Local group of each GPU position.
    pub(crate) of: Vec<u8>,
    /// How many groups.
    pub(crate) count: usize,
}

impl Groups {
    pub(crate) fn of(gpus: &[GpuState]) -> Groups {
        let mut seen: Vec<u32> = Vec::new();
        let of = gpus
            .iter()
            .map(|gpu| {
                let position = seen
                    .iter()
                    .position(|group| *group == gpu.topology_group)
                    .unwrap_or_else(|| {
                        seen.push(gpu.topology_group);
                        seen.len() - 1
                    });
                u8::try_from(position).unwrap_or(u8::MAX)
            })
            .collect();
        Groups {
            of,
            count: seen.len(),
        }
    }
}

impl Model {
    /// Compiles `mix` against the fleet's interned `products`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidMix`] for an empty mix or a bad entry.
    pub(crate) fn new(
        mix: &WorkloadMix,
        products: &[String],
        headroom_mib: u64,
        measure: FragmentationMeasure,
        balance_weight: f64,
    ) -> Result<Model> {
        mix.validate()?;
        let total: f64 = mix.entries.iter().map(|entry| entry.weight).sum();
        let mut classes: Vec<Class> = Vec::new();
        let mut tasks: Vec<Task> = Vec::new();
        let mut whole_classes = 0;
        for entry in &mix.entries {
            let products_mask = ProductMask::of(&entry.allowed_products, products);
            let class = match classes
                .iter()
                .position(|class| class.request == entry.gpu && class.products == products_mask)
            {
                Some(position) => position,
                None => {
                    let whole = matches!(entry.gpu, GpuRequest::Whole { .. }).then(|| {
                        whole_classes += 1;
                        whole_classes - 1
                    });
                    classes.push(Class {
                        request: entry.gpu,
                        products: products_mask,
                        demand_milli: entry.gpu.total_milli(),
                        whole,
                    });
                    classes.len() - 1
                }
            };
            let probability = entry.weight / total;
            match tasks.iter_mut().find(|task| {
                task.class == class
                    && task.cpu_milli == entry.cpu_milli
                    && task.memory_mib == entry.memory_mib
            }) {
                Some(task) => task.probability += probability,
                None => tasks.push(Task {
                    class,
                    cpu_milli: entry.cpu_milli,
                    memory_mib: entry.memory_mib,
                    probability,
                }),
            }
        }
        // The workload's CPU per GPU, over the tasks that use GPUs: what a node's free GPUs need
        // beside them to stay usable.
        let (cpu, gpu) = tasks
            .iter()
            .filter(|task| classes[task.class].demand_milli > 0)
            .fold((0.0, 0.0), |(cpu, gpu), task| {
                let demand = classes[task.class].demand_milli as f64;
                (
                    cpu + task.probability * task.cpu_milli as f64,
                    gpu + task.probability * demand,
                )
            });
        // By CPU, so the weights of a host stop at the first task its CPU cannot hold.
        tasks.sort_by_key(|task| (task.cpu_milli, task.memory_mib, task.class));
        let cpu_steps: Vec<u64> = tasks.iter().map(|task| task.cpu_milli).collect();
        let mut by_memory: Vec<usize> = (0..tasks.len()).collect();
        by_memory.sort_by_key(|&task| tasks[task].memory_mib);
        let memory_steps: Vec<u64> = by_memory
            .iter()
            .map(|&task| tasks[task].memory_mib)
            .collect();
        let mut model = Model {
            cpu_steps,
            memory_steps,
            by_memory,
            cpu_per_milli: if gpu > 0.0 { cpu / gpu } else { 0.0 },
            balance_weight,
            measure,
            classes,
            tasks,
            whole_classes,
            headroom_mib,
            grid: None,
        };
        model.grid = model.tabulate();
        Ok(model)
    }

    /// The weights of every host cell, or `None` when the table would be too large.
    fn tabulate(&self) -> Option<WeightGrid> {
        let distinct = |steps: &[u64]| {
            let mut cuts = steps.to_vec();
            cuts.dedup();
            cuts
        };
        let cpu_cuts = distinct(&self.cpu_steps);
        let memory_cuts = match self.measure {
            FragmentationMeasure::Fgd => Vec::new(),
            FragmentationMeasure::Capacity => distinct(&self.memory_steps),
        };
        let cells = (cpu_cuts.len() + 1).checked_mul(memory_cuts.len() + 1)?;
        if cells.checked_mul(self.classes.len())? > MAX_GRID_ENTRIES {
            return None;
        }
        let mut rows = Vec::with_capacity(cells * self.classes.len());
        for cpu in 0..=cpu_cuts.len() {
            for memory in 0..=memory_cuts.len() {
                rows.extend(self.summed_weights(Host {
                    cpu_milli: WeightGrid::representative(&cpu_cuts, cpu),
                    memory_mib: WeightGrid::representative(&memory_cuts, memory),
                }));
            }
        }
        Some(WeightGrid {
            cpu_cuts,
            memory_cuts,
            classes: self.classes.len(),
            rows,
        })
    }

    /// Whether `gpu` (in the state given) can take a task of `class` as far as the GPU goes:
    /// product, health, and memory by both views.
    fn eligible(&self, class: &Class, gpu: &GpuState) -> bool {
        gpu.usable()
            && class.products.allows(gpu.product)
            && gpu.usable_free_mib(self.headroom_mib)
                >= class.request.memory_need_mib(gpu.capacity_mib)
    }

    /// What one GPU offers a fractional class: the whole free share (FGD) or the shares tasks
    /// of it can take by compute and memory (capacity); 0 when not even one fits.
    fn fraction_offer(&self, class: &Class, milli: u32, gpu: &GpuState) -> u64 {
        let free = gpu.free_milli();
        if free < milli || !gpu.usable() || !class.products.allows(gpu.product) {
            return 0;
        }
        let memory = gpu.usable_free_mib(self.headroom_mib);
        let need = class.request.memory_need_mib(gpu.capacity_mib);
        if memory < need {
            return 0;
        }
        match self.measure {
            FragmentationMeasure::Fgd => u64::from(free),
            FragmentationMeasure::Capacity => {
                let mut tasks = u64::from(free / milli.max(1));
                if need > 0 && memory < tasks * need {
                    tasks = memory / need;
                }
                tasks * u64::from(milli)
            }
        }
    }

    /// What a group of `free` eligible fully free GPUs offers a class of `count` GPUs.
    fn whole_offer(&self, count: u32, free: u8) -> u64 {
        let (free, count) = (u64::from(free), u64::from(count.max(1)));
        if free < count {
            return 0;
        }
        match self.measure {
            FragmentationMeasure::Fgd => free * 1000,
            FragmentationMeasure::Capacity => free / count * count * 1000,
        }
    }

    /// Per class, the probability that a task of the mix is of the class and fits beside the
    /// GPUs in `host` (one task's CPU, and for gpufleet's measure its memory): the weight of the
    /// class's usable capacity.
    #[cfg(test)]
    pub(crate) fn weights(&self, host: Host) -> Vec<f64> {
        match &self.grid {
            Some(grid) => grid.row(host).to_vec(),
            None => self.summed_weights(host),
        }
    }

    /// [`Model::weights`] by a pass over the tasks.
    fn summed_weights(&self, host: Host) -> Vec<f64> {
        let mut weights = vec![0.0; self.classes.len()];
        for task in &self.tasks {
            if !fits(host.cpu_milli, task.cpu_milli) {
                // Tasks are sorted by CPU: none after this one fits either.
                break;
            }
            if self.measure == FragmentationMeasure::Fgd || fits(host.memory_mib, task.memory_mib) {
                weights[task.class] += task.probability;
            }
        }
        weights
    }

    /// [`Model::weights`] of `host_after`, given those of `host` (which holds at least as
    /// much): looked up in the table, or, for mixes too large to tabulate, stepped from
    /// `weights` over only the tasks whose CPU or memory lies between the two hosts.
    pub(crate) fn weights_after<'a>(
        &'a self,
        weights: &[f64],
        host: Host,
        host_after: Host,
    ) -> Cow<'a, [f64]> {
        match &self.grid {
            Some(grid) => Cow::Borrowed(grid.row(host_after)),
            None => Cow::Owned(self.stepped_weights(weights, host, host_after)),
        }
    }

    /// [`Model::weights_after`] by stepping over the tasks between the two hosts.
    fn stepped_weights(&self, weights: &[f64], host: Host, host_after: Host) -> Vec<f64> {
        let mut after = weights.to_vec();
        let fits_now = |task: &Task| {
            fits(host.cpu_milli, task.cpu_milli)
                && (self.measure == FragmentationMeasure::Fgd
                    || fits(host.memory_mib, task.memory_mib))
        };
        // Tasks whose CPU fits now but not after: a contiguous run of the CPU-sorted tasks.
        if let Some(range) = between(&self.cpu_steps, host.cpu_milli, host_after.cpu_milli) {
            for task in &self.tasks[range] {
                if fits_now(task) {
                    after[task.class] -= task.probability;
                }
            }
        }
        if self.measure == FragmentationMeasure::Capacity
            && let Some(range) = between(&self.memory_steps, host.memory_mib, host_after.memory_mib)
        {
            for &position in &self.by_memory[range] {
                let task = &self.tasks[position];
                // Those leaving for their CPU were taken off above.
                if fits(host_after.cpu_milli, task.cpu_milli) && fits_now(task) {
                    after[task.class] -= task.probability;
                }
            }
        }
        for weight in &mut after {
            *weight = weight.max(0.0);
        }
        after
    }

    /// The node's fragmentation with `change` applied to its GPUs and `host` free.
    pub(crate) fn node(
        &self,
        gpus: &[GpuState],
        groups: &Groups,
        change: &Change<'_>,
        host: Host,
    ) -> NodeFragments {
        let mut fragments = NodeFragments::default();
        self.node_into(gpus, groups, change, host, &mut fragments);
        fragments
    }

    /// [`Model::node`] into `fragments`, reusing its buffers: the engine refreshes a node this
    /// way after every placement on it.
    pub(crate) fn node_into(
        &self,
        gpus: &[GpuState],
        groups: &Groups,
        change: &Change<'_>,
        host: Host,
        fragments: &mut NodeFragments,
    ) {
        let refill = |buffer: &mut Vec<u64>, len: usize| {
            buffer.clear();
            buffer.resize(len, 0);
        };
        let NodeFragments {
            usable,
            groups: group_free,
            weights,
            offers,
            ..
        } = fragments;
        refill(usable, self.classes.len());
        refill(offers, self.classes.len() * gpus.len());
        group_free.clear();
        group_free.resize(self.whole_classes * groups.count, 0);
        for position in 0..gpus.len() {
            let gpu = change.apply(gpus, position);
            for (index, class) in self.classes.iter().enumerate() {
                match class.request {
                    GpuRequest::NoGpu => {}
                    GpuRequest::Fraction { milli, .. } => {
                        let offer = self.fraction_offer(class, milli, &gpu);
                        offers[index * gpus.len() + position] = offer;
                        usable[index] += offer;
                    }
                    GpuRequest::Whole { .. } => {
                        if gpu.allocated_milli == 0
                            && self.eligible(class, &gpu)
                            && let Some(whole) = class.whole
                        {
                            let slot = whole * groups.count + usize::from(groups.of[position]);
                            group_free[slot] = group_free[slot].saturating_add(1);
                        }
                    }
                }
            }
        }
        for (index, class) in self.classes.iter().enumerate() {
            if let (GpuRequest::Whole { count, .. }, Some(whole)) = (class.request, class.whole) {
                usable[index] = (0..groups.count)
                    .map(|group| self.whole_offer(count, group_free[whole * groups.count + group]))
                    .sum();
            }
        }
        weights.clear();
        match &self.grid {
            Some(grid) => weights.extend_from_slice(grid.row(host)),
            None => weights.extend(self.summed_weights(host)),
        }
        let free = free_milli(gpus, change);
        let unusable = free as f64
            - usable
                .iter()
                .zip(weights.iter())
                .map(|(usable, weight)| *usable as f64 * weight)
                .sum::<f64>();
        fragments.value = unusable + self.balance_weight * self.cpu_stranded(free, host);
        fragments.unusable = unusable;
    }

    /// F after `change` and with `host` free, from the node's cached state: only the GPUs the
    /// change touches are looked at again. `weights` are [`Model::weights`] of `host` (the
    /// node's cached ones when the host does not change).
    pub(crate) fn after(
        &self,
        before: &NodeFragments,
        gpus: &[GpuState],
        groups: &Groups,
        change: &Change<'_>,
        host: Host,
        weights: &[f64],
    ) -> f64 {
        let touched = Touched::of(gpus, change);
        let mut expected_usable = 0.0;
        for (index, weight) in weights.iter().enumerate() {
            if *weight != 0.0 {
                expected_usable +=
                    weight * self.usable_after(index, before, gpus, groups, &touched) as f64;
            }
        }
        let free = touched.free_after();
        free as f64 - expected_usable + self.balance_weight * self.cpu_stranded(free, host)
    }

    /// How much more F is with the host at `host_after` (class weights `weights_after`) than at
    /// the node's host now, for the placement `change`: the part of a placement's exact cost
    /// its key leaves out, from the classes whose weights change only.
    pub(crate) fn host_correction(
        &self,
        before: &NodeFragments,
        gpus: &[GpuState],
        groups: &Groups,
        change: &Change<'_>,
        host: &HostChange<'_>,
    ) -> f64 {
        let touched = Touched::of(gpus, change);
        let mut correction = 0.0;
        for (index, (now, after)) in before.weights.iter().zip(host.weights_after).enumerate() {
            if now != after {
                correction +=
                    (now - after) * self.usable_after(index, before, gpus, groups, &touched) as f64;
            }
        }
        correction + self.balance_rise(touched.free_after(), host.now, host.after)
    }

    /// Class `index`'s usable capacity once the touched GPUs change.
    fn usable_after(
        &self,
        index: usize,
        before: &NodeFragments,
        gpus: &[GpuState],
        groups: &Groups,
        touched: &Touched,
    ) -> u64 {
        let class = &self.classes[index];
        if touched.is_empty() {
            return before.usable[index];
        }
        match class.request {
            GpuRequest::NoGpu => 0,
            GpuRequest::Fraction { milli, .. } => {
                let mut usable = before.usable[index];
                for (position, _, new) in touched.gpus() {
                    usable = usable + self.fraction_offer(class, milli, &new)
                        - before.offers[index * gpus.len() + position];
                }
                usable
            }
            GpuRequest::Whole { count, .. } => {
                let Some(whole) = class.whole else { return 0 };
                // Eligibility changes of the touched GPUs: (group, +1/−1), one per GPU at most.
                let mut moves = [(0_u8, 0_i8); crate::state::MAX_GPUS_PER_NODE];
                let mut moved = 0;
                for (position, old, new) in touched.gpus() {
                    // Only a fully free GPU counts for a whole class, before or after.
                    if old.allocated_milli != 0 && new.allocated_milli != 0 {
                        continue;
                    }
                    let was = old.allocated_milli == 0 && self.eligible(class, &old);
                    let is = new.allocated_milli == 0 && self.eligible(class, &new);
                    if was != is {
                        moves[moved] = (groups.of[position], if is { 1 } else { -1 });
                        moved += 1;
                    }
                }
                let mut usable = before.usable[index];
                let mut seen = 0_u64;
                for &(group, _) in &moves[..moved] {
                    if seen & (1 << group) != 0 {
                        continue;
                    }
                    seen |= 1 << group;
                    let delta: i32 = moves[..moved]
                        .iter()
                        .filter(|(other, _)| *other == group)
                        .map(|(_, step)| i32::from(*step))
                        .sum();
                    let free = before.groups[whole * groups.count + usize::from(group)];
                    let after = u8::try_from((i32::from(free) + delta).max(0)).unwrap_or(u8::MAX);
                    usable =
                        usable + self.whole_offer(count, after) - self.whole_offer(count, free);
                }
                usable
            }
        }
    }

    /// Whether the weights of `host` and `host_after` are the same: no task's CPU (or memory,
    /// for gpufleet's measure) lies between them. Then a placement's exact cost is its key plus
    /// [`Model::balance_rise`], with no evaluation.
    pub(crate) fn weights_unchanged(&self, host: Host, host_after: Host) -> bool {
        let crosses = |steps: &[u64], before: Option<i64>, after: Option<i64>| match (before, after)
        {
            (Some(before), Some(after)) if after < before => {
                // A step in (after, before] stops fitting.
                let after = u64::try_from(after.max(-1) + 1).unwrap_or(0);
                let before = u64::try_from(before.max(0)).unwrap_or(0);
                let first = steps.partition_point(|step| *step < after);
                steps.get(first).is_some_and(|step| *step <= before)
            }
            _ => false,
        };
        !crosses(&self.cpu_steps, host.cpu_milli, host_after.cpu_milli)
            && (self.measure == FragmentationMeasure::Fgd
                || !crosses(&self.memory_steps, host.memory_mib, host_after.memory_mib))
    }

    /// How much the balance term alone rises when a placement leaves `free_after` free and takes
    /// the host from `host` to `host_after`: a lower bound of how much the exact cost of the
    /// placement exceeds its key, known without evaluating the node again.
    pub(crate) fn balance_rise(&self, free_after: u64, host: Host, host_after: Host) -> f64 {
        self.balance_weight
            * (self.cpu_stranded(free_after, host_after) - self.cpu_stranded(free_after, host))
    }

    /// The capacity measure's balance term: free GPU capacity beyond what the node's free CPU
    /// can feed at the workload's CPU per GPU. A node whose CPU runs out first strands its last
    /// GPUs however well their shares fit, which the paper's measure sees only once not even
    /// one more task fits.
    pub(crate) fn cpu_stranded(&self, free: u64, host: Host) -> f64 {
        match (self.measure, host.cpu_milli) {
            (FragmentationMeasure::Capacity, Some(cpu)) if self.cpu_per_milli > 0.0 => {
                (free as f64 - cpu.max(0) as f64 / self.cpu_per_milli).max(0.0)
            }
            _ => 0.0,
        }
    }
}

/// The positions of the sorted `steps` in (after, before]: the needs that fit `before` free
/// but not `after`; `None` when nothing changes.
fn between(
    steps: &[u64],
    before: Option<i64>,
    after: Option<i64>,
) -> Option<std::ops::Range<usize>> {
    let (Some(before), Some(after)) = (before, after) else {
        return None;
    };
    if after >= before {
        return None;
    }
    let above_after =
        steps.partition_point(|step| i64::try_from(*step).unwrap_or(i64::MAX) <= after);
    let up_to_before =
        steps.partition_point(|step| i64::try_from(*step).unwrap_or(i64::MAX) <= before);
    (above_after < up_to_before).then_some(above_after..up_to_before)
}

/// Whether `free` (None = unlimited) holds `need`.
fn fits(free: Option<i64>, need: u64) -> bool {
    free.is_none_or(|free| free >= i64::try_from(need).unwrap_or(i64::MAX))
}

/// Free compute share of the node's usable GPUs.
fn before_free(gpus: &[GpuState]) -> u64 {
    gpus.iter()
        .filter(|gpu| gpu.usable())
        .map(|gpu| u64::from(gpu.free_milli()))
        .sum()
}

/// Free compute share of the node's usable GPUs with `change` applied.
fn free_milli(gpus: &[GpuState], change: &Change<'_>) -> u64 {
    (0..gpus.len())
        .map(|position| change.apply(gpus, position))
        .filter(GpuState::usable)
        .map(|gpu| u64::from(gpu.free_milli()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::MemoryNeed;
    use crate::state::PCIE_DOMAIN;
    use crate::strategy::MixEntry;

    use crate::state::test_gpu as gpu;

    fn entry(gpu: GpuRequest, cpu_milli: u64, weight: f64) -> MixEntry {
        MixEntry {
            gpu,
            allowed_products: Vec::new(),
            cpu_milli,
            memory_mib: 0,
            weight,
        }
    }

    fn model(entries: Vec<MixEntry>, measure: FragmentationMeasure) -> Result<Model> {
        Model::new(&WorkloadMix { entries }, &["P".to_owned()], 0, measure, 0.0)
    }

    const WHOLE: GpuRequest = GpuRequest::Whole {
        count: 1,
        memory: MemoryNeed::ShareOfCapacity,
    };
    const HALF: GpuRequest = GpuRequest::Fraction {
        milli: 500,
        memory: MemoryNeed::ShareOfCapacity,
    };
    const UNLIMITED: Host = Host {
        cpu_milli: None,
        memory_mib: None,
    };

    fn value(model: &Model, gpus: &[GpuState], host: Host) -> f64 {
        model
            .node(gpus, &Groups::of(gpus), &Change::NONE, host)
            .value
    }

    #[test]
    fn half_used_gpu_is_a_fragment_for_whole_gpu_requests_only() -> Result<()> {
        let gpus = [gpu(500, 0), gpu(0, 0)];
        for measure in [FragmentationMeasure::Fgd, FragmentationMeasure::Capacity] {
            let whole = model(vec![entry(WHOLE, 0, 1.0)], measure)?;
            let half = model(vec![entry(HALF, 0, 1.0)], measure)?;
            let both = model(vec![entry(WHOLE, 0, 1.0), entry(HALF, 0, 1.0)], measure)?;
            assert_eq!(value(&whole, &gpus, UNLIMITED), 500.0);
            assert_eq!(value(&half, &gpus, UNLIMITED), 0.0);
            assert_eq!(value(&both, &gpus, UNLIMITED), 250.0);
        }
        Ok(())
    }

    #[test]
    fn free_gpus_split_across_nvlink_groups_are_fragments_for_two_gpu_requests() -> Result<()> {
        let pair = GpuRequest::Whole {
            count: 2,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let split = [gpu(0, 0), gpu(1000, 0), gpu(0, 1), gpu(1000, 1)];
        let together = [gpu(0, 0), gpu(0, 0), gpu(1000, 1), gpu(1000, 1)];
        let model = model(vec![entry(pair, 0, 1.0)], FragmentationMeasure::Capacity)?;
        assert_eq!(value(&model, &split, UNLIMITED), 2000.0);
        assert_eq!(value(&model, &together, UNLIMITED), 0.0);
        Ok(())
    }

    #[test]
    fn capacity_counts_what_tasks_can_take_and_fgd_counts_every_free_share() -> Result<()> {
        // 600 free, tasks of 470: FGD calls all 600 usable, capacity 470 (130 stranded).
        let share = GpuRequest::Fraction {
            milli: 470,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let gpus = [gpu(400, PCIE_DOMAIN)];
        let fgd = model(vec![entry(share, 0, 1.0)], FragmentationMeasure::Fgd)?;
        let capacity = model(vec![entry(share, 0, 1.0)], FragmentationMeasure::Capacity)?;
        assert_eq!(value(&fgd, &gpus, UNLIMITED), 0.0);
        assert_eq!(value(&capacity, &gpus, UNLIMITED), 130.0);
        Ok(())
    }

    #[test]
    fn cpu_left_for_one_task_strands_the_other_free_gpus() -> Result<()> {
        // Four free GPUs, 12 cores left, 12-core one-GPU tasks: CPU for one GPU's worth.
        let gpus = [gpu(0, 0), gpu(0, 0), gpu(0, 0), gpu(0, 0)];
        let host = Host {
            cpu_milli: Some(12_000),
            memory_mib: None,
        };
        let entries = vec![entry(WHOLE, 12_000, 1.0)];
        let fgd = model(entries.clone(), FragmentationMeasure::Fgd)?;
        let balanced = Model::new(
            &WorkloadMix { entries },
            &["P".to_owned()],
            0,
            FragmentationMeasure::Capacity,
            1.0,
        )?;
        // FGD's measure: one task fits, so all four count as usable.
        assert_eq!(value(&fgd, &gpus, host), 0.0);
        // The balance term: 12 cores feed one GPU; three are stranded.
        assert_eq!(value(&balanced, &gpus, host), 3000.0);
        // Without the CPU for even one task, every free GPU is a fragment for both.
        let starved = host.minus(1, 0);
        assert_eq!(value(&fgd, &gpus, starved), 4000.0);
        assert!(value(&balanced, &gpus, starved) >= 4000.0);
        Ok(())
    }

    #[test]
    fn a_change_computed_from_the_cache_equals_a_full_recomputation() -> Result<()> {
        let quarter = GpuRequest::Fraction {
            milli: 250,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let pair = GpuRequest::Whole {
            count: 2,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let gpus = [gpu(800, 0), gpu(0, 0), gpu(0, 0), gpu(300, 1), gpu(0, 1)];
        let groups = Groups::of(&gpus);
        let memory = [16_000; 5];
        let host = Host {
            cpu_milli: Some(20_000),
            memory_mib: Some(100_000),
        };
        for measure in [FragmentationMeasure::Fgd, FragmentationMeasure::Capacity] {
            let model = model(
                vec![
                    entry(quarter, 4_000, 2.0),
                    entry(WHOLE, 8_000, 1.0),
                    entry(pair, 16_000, 1.0),
                    entry(GpuRequest::NoGpu, 6_000, 1.0),
                ],
                measure,
            )?;
            let cached = model.node(&gpus, &groups, &Change::NONE, host);
            for mask in 1..(1_u64 << gpus.len()) {
                for milli in [100, 250, 1000] {
                    let change = Change {
                        mask,
                        milli,
                        memory_mib: &memory,
                    };
                    let after = host.minus(3_000, 1_000);
                    let full = model.node(&gpus, &groups, &change, after).value;
                    let weights = model.weights(after);
                    let stepped = model.weights_after(&cached.weights, host, after);
                    let summed = model.summed_weights(after);
                    let walked = model.stepped_weights(&cached.weights, host, after);
                    for class in 0..weights.len() {
                        // The table holds exactly the sums; stepping agrees up to rounding.
                        assert_eq!(weights[class], summed[class], "table vs sum");
                        assert_eq!(stepped[class], summed[class], "table vs sum");
                        assert!((walked[class] - summed[class]).abs() < 1e-12, "stepped");
                    }
                    let incremental =
                        model.after(&cached, &gpus, &groups, &change, after, &weights);
                    // The key (host unchanged) plus the host correction is the exact cost.
                    let key = model.after(&cached, &gpus, &groups, &change, host, &cached.weights);
                    let corrected = key
                        + model.host_correction(
                            &cached,
                            &gpus,
                            &groups,
                            &change,
                            &HostChange {
                                now: host,
                                after,
                                weights_after: &stepped,
                            },
                        );
                    assert!(
                        (full - corrected).abs() < 1e-6,
                        "{measure:?} mask {mask:b} milli {milli}: {full} vs key {key} + correction"
                    );
                    assert!(
                        (full - incremental).abs() < 1e-9,
                        "{measure:?} mask {mask:b} milli {milli}: {full} vs {incremental}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_weight_table_holds_the_sum_for_every_host() -> Result<()> {
        let needs = |cpu: u64, memory: u64| MixEntry {
            memory_mib: memory,
            ..entry(HALF, cpu, 1.0 + cpu as f64 / 1000.0)
        };
        let entries = vec![
            needs(0, 0),
            needs(2_000, 4_096),
            needs(2_000, 16_384),
            needs(8_000, 4_096),
            MixEntry {
                memory_mib: 32_768,
                ..entry(WHOLE, 16_000, 2.0)
            },
        ];
        for measure in [FragmentationMeasure::Fgd, FragmentationMeasure::Capacity] {
            let model = model(entries.clone(), measure)?;
            assert!(model.grid.is_some());
            let amounts = [
                None,
                Some(-5),
                Some(0),
                Some(1_999),
                Some(2_000),
                Some(8_000),
            ];
            let memories = [
                None,
                Some(0),
                Some(4_095),
                Some(4_096),
                Some(20_000),
                Some(40_000),
            ];
            for cpu_milli in amounts {
                for memory_mib in memories {
                    let host = Host {
                        cpu_milli,
                        memory_mib,
                    };
                    assert_eq!(model.weights(host), model.summed_weights(host), "{host:?}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_mix_too_large_to_tabulate_steps_its_weights() -> Result<()> {
        // 1,100 distinct CPU and memory needs: 1,101² cells, over the table's limit.
        let entries = (0..1_100_u64)
            .map(|step| MixEntry {
                memory_mib: step * 7,
                ..entry(HALF, step * 10, 1.0)
            })
            .collect();
        let model = model(entries, FragmentationMeasure::Capacity)?;
        assert!(model.grid.is_none());
        let host = Host {
            cpu_milli: Some(9_000),
            memory_mib: Some(6_000),
        };
        let after = host.minus(1_234, 567);
        let cached = model.weights(host);
        let stepped = model.weights_after(&cached, host, after);
        assert!(matches!(stepped, Cow::Owned(_)));
        assert!((stepped[0] - model.summed_weights(after)[0]).abs() < 1e-12);
        assert!(stepped[0] < cached[0]);
        Ok(())
    }

    #[test]
    fn taking_host_resources_never_lowers_fragmentation() -> Result<()> {
        let gpus = [gpu(0, 0), gpu(500, 0), gpu(0, 0)];
        let groups = Groups::of(&gpus);
        for measure in [FragmentationMeasure::Fgd, FragmentationMeasure::Capacity] {
            let model = Model::new(
                &WorkloadMix {
                    entries: vec![entry(WHOLE, 8_000, 1.0), entry(HALF, 3_000, 1.0)],
                },
                &["P".to_owned()],
                0,
                measure,
                8.0,
            )?;
            let mut previous = f64::MIN;
            for cpu in (0..=30_000_i64).rev().step_by(500) {
                let host = Host {
                    cpu_milli: Some(cpu),
                    memory_mib: None,
                };
                let now = model.node(&gpus, &groups, &Change::NONE, host).value;
                assert!(
                    now >= previous - 1e-9,
                    "{measure:?} at {cpu}: {now} < {previous}"
                );
                previous = now;
            }
        }
        Ok(())
    }
}
