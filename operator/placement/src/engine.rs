//! The placement engine: an incremental index over the fleet that answers one replica at a time.
//!
//! ```text
//!  FleetSnapshot ──► Engine::new ──► nodes (sorted by name) + existing placements applied
//!                                     │
//!  ReplicaRequest ─► place ─► shape index (one per distinct GPU request / products / selector):
//!                              per node: the key cost of its best candidate, or its rejection
//!                              reason, kept in a BTreeSet ordered by (key, node)
//!                         ─► walk that order: nodes passing the group checks (CPU, memory, max
//!                              per node, anti-affinity, spread) get their exact cost (key + the
//!                              replica's own CPU and memory + soft spreading, never below the
//!                              key); the walk stops at the first key no better than the best
//!                              exact cost so far ─► Decision
//!                         ─► apply: update the node's GPUs and fragmentation, mark the node
//!                              dirty in every shape index (rescored the next time that shape
//!                              is asked for)
//! ```
//!
//! A decision costs a rescoring of the nodes touched since the shape was last used plus a walk
//! from the best candidate, instead of a scan of every node and GPU. The key leaves out what
//! differs between replicas of one GPU shape (their CPU and memory, their group's spreading), so
//! few shape indexes serve a workload of many task shapes; the walk's stopping rule keeps the
//! answer exact because those parts only ever add cost. Everything is ordered (BTreeMap/
//! BTreeSet, node order by name, costs rounded to micro-GPUs), so the same input gives the
//! same output; hash maps are only looked up, never iterated into a result.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decision::{
    ChosenGpu, Decision, Outcome, RejectReason, Rejection, ScoreBreakdown, Unplaceable,
};
use crate::fleet::{FleetSnapshot, GpuHealth, HOSTNAME_LABEL, NodeSnapshot};
use crate::fragmentation::{Change, FragmentationMeasure, Groups, Host, Model, NodeFragments};
use crate::request::{GpuRequest, ReplicaRequest};
use crate::score::{self, Candidate, NodeView, Penalties, PodTag, Scoring, ShapeNeeds};
use crate::state::{GpuState, PCIE_DOMAIN, ProductMask, intern_product};
use crate::strategy::{EngineConfig, Strategy, TaskShape, WorkloadMix};
use crate::{Error, Result};

/// Costs are compared as integers of micro-GPUs, so rounding noise never reorders equal nodes.
fn cost_key(total: f64) -> i64 {
    (total * 1e6).round() as i64
}

/// Places replicas on a fleet snapshot, one at a time, keeping its own account of what it
/// placed (a decision is in flight: telemetry cannot show it yet).
///
/// Build one per snapshot: the operator rebuilds it when telemetry changes; the simulator keeps
/// one for a whole replay.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    products: Vec<String>,
    /// The fragmentation model scoring and the summary use.
    model: Model,
    /// A second measure kept up to date for reports (the FGD paper's), if asked for.
    tracked: Option<Tracked>,
    /// What the engine learned of the workload, when learning is on.
    learner: Option<Learner>,
    /// State of the seeded generator of the random baselines.
    random: u64,
    /// Compute share placements hold on usable GPUs, thousandths (kept up to date).
    allocated_milli: u64,
    nodes: Vec<NodeState>,
    /// The zones the fleet's nodes are labelled with, for soft spreading.
    zones: Vec<String>,
    node_by_name: BTreeMap<String, u32>,
    /// Looked up by id only, never iterated: a hash map keeps a decision's bookkeeping flat.
    placements: HashMap<String, PlacementRecord>,
    groups: Vec<GroupState>,
    group_by_name: HashMap<String, u32>,
    shapes: Vec<ShapeIndex>,
    shape_by_key: BTreeMap<ShapeKey, usize>,
}

#[derive(Debug)]
struct NodeState {
    name: String,
    labels: BTreeMap<String, String>,
    /// Why the node takes nothing at all (NotReady, stale heartbeat).
    gate: Option<RejectReason>,
    cpu_free: Option<i64>,
    memory_free: Option<i64>,
    telemetry_observed_at_ms: Option<u64>,
    gpus: Vec<GpuState>,
    penalties: Vec<Penalties>,
    gpu_order: Vec<u8>,
    groups: Groups,
    identities: Vec<ChosenGpu>,
    fragments: NodeFragments,
    /// The tracked measure's fragmentation of the node, thousandths.
    tracked: f64,
    /// Replicas on the node by kind (for the GPU-clustering baseline).
    tags: Vec<(PodTag, u32)>,
    /// Position in the seeded node order that breaks the paper baselines' ties.
    tie_rank: u32,
    /// The last host part computed for the node (see `Engine::walk`), until the node changes:
    /// replicas of one shape arrive in runs, and the nodes walked for one are walked again.
    host_part: std::cell::Cell<Option<HostPartMemo>>,
}

/// A memoised host part: what it was computed for, and the value.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HostPartMemo {
    host_after: Host,
    gpus: u64,
    request: GpuRequest,
    value: f64,
}

impl NodeState {
    fn view(&self) -> NodeView<'_> {
        NodeView {
            gpus: &self.gpus,
            penalties: &self.penalties,
            gpu_order: &self.gpu_order,
            groups: &self.groups,
            fragments: &self.fragments,
            host: self.host(),
            tags: &self.tags,
        }
    }

    fn host(&self) -> Host {
        Host {
            cpu_milli: self.cpu_free,
            memory_mib: self.memory_free,
        }
    }

    fn tag(&mut self, tag: PodTag, added: bool) {
        match self.tags.iter_mut().find(|(known, _)| *known == tag) {
            Some((_, count)) => {
                *count = if added {
                    *count + 1
                } else {
                    count.saturating_sub(1)
                };
            }
            None if added => self.tags.push((tag, 1)),
            None => {}
        }
    }

    /// The node's domain for a topology key; the hostname key always has one.
    fn domain<'a>(&'a self, key: &str) -> Option<&'a str> {
        match self.labels.get(key) {
            Some(value) => Some(value),
            None if key == HOSTNAME_LABEL => Some(&self.name),
            None => None,
        }
    }

    fn positions(&self, mask: u64) -> impl Iterator<Item = usize> + '_ {
        (0..self.gpus.len()).filter(move |position| mask & (1 << position) != 0)
    }
}

#[derive(Debug)]
struct PlacementRecord {
    group: u32,
    node: u32,
    gpus: u64,
    milli: u32,
    /// Memory per node GPU position (only positions in `gpus` are meaningful).
    memory_mib: Vec<u64>,
    /// Shadow-accounted: telemetry did not show it when the snapshot was taken.
    in_flight: bool,
    cpu_milli: u64,
    host_memory_mib: u64,
    tag: PodTag,
}

/// A second fragmentation measure the engine keeps per node for reports.
#[derive(Debug)]
struct Tracked {
    model: Model,
    /// Σ over nodes, thousandths.
    total: f64,
    /// Buffers for recomputing one node.
    scratch: NodeFragments,
}

/// The workload the engine has seen, decayed, and the mix it scores with now.
#[derive(Debug)]
struct Learner {
    settings: crate::strategy::MixLearning,
    prior: WorkloadMix,
    /// Decayed arrival counts per task shape.
    learned: BTreeMap<TaskShape, f64>,
    /// The normalised distribution the model in use was built from.
    in_use: BTreeMap<TaskShape, f64>,
    /// Multiplier per arrival that halves a weight over the half-life.
    decay: f64,
    /// Arrivals counted.
    arrivals: u64,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Placement ids of the group, for scale-down.
    members: BTreeSet<String>,
    per_node: HashMap<u32, u32>,
    /// Topology keys some request of the group constrains, with replica counts per domain.
    keys: BTreeMap<String, DomainCounts>,
}

#[derive(Debug, Default)]
struct DomainCounts {
    per_domain: HashMap<String, u32>,
    /// For spread keys: the domains that count for the skew, and how many of them hold how
    /// many replicas (the first key is the minimum).
    spread: Option<SpreadDomains>,
}

#[derive(Debug, Default)]
struct SpreadDomains {
    eligible: Arc<HashSet<String>>,
    histogram: BTreeMap<u32, u32>,
}

impl SpreadDomains {
    fn shift(&mut self, from: u32, to: u32) {
        if let Some(count) = self.histogram.get_mut(&from) {
            *count -= 1;
            if *count == 0 {
                self.histogram.remove(&from);
            }
        }
        *self.histogram.entry(to).or_default() += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ShapeKey {
    request: GpuRequest,
    products: ProductMask,
    min_capability: Option<crate::fleet::ComputeCapability>,
    selector: Vec<(String, String)>,
    headroom_mib: u64,
    /// CPU and memory, for strategies whose ranking depends on them.
    host_need: Option<(u64, u64)>,
}

/// The result of walking a shape index for one request.
struct Walk {
    group: u32,
    shape: usize,
    chosen: Option<(u32, Candidate)>,
    /// Feasible nodes the group checks rejected, per reason.
    rejected: [u32; RejectReason::ALL.len()],
}

#[derive(Debug)]
enum Entry {
    Feasible { cost: i64, candidate: Candidate },
    Rejected(RejectReason),
}

#[derive(Debug)]
struct ShapeIndex {
    key: ShapeKey,
    needs: ShapeNeeds,
    entries: Vec<Entry>,
    /// Feasible nodes by (key cost, tie rank, node).
    ranked: BTreeSet<(i64, u32, u32)>,
    rejected: [u32; RejectReason::ALL.len()],
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Per topology key, the domains holding a node this shape could ever use, computed once.
    spread_domains: BTreeMap<String, Arc<HashSet<String>>>,
}

/// A replica chosen for removal on scale-down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    /// The placement (Pod) to delete.
    pub placement: String,
    /// Its node.
    pub node: String,
    /// Change of the node's expected fragmentation by the removal, in GPUs (negative = better).
    pub fragmentation_delta_gpus: f64,
}

/// Fleet-wide totals, for reports and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    /// Nodes in the snapshot.
    pub nodes: u32,
    /// GPUs that are not Unhealthy.
    pub usable_gpus: u32,
    /// Their capacity in thousandths of a GPU.
    pub capacity_milli: u64,
    /// Of which allocated to placements.
    pub allocated_milli: u64,
    /// Of the free capacity, the share the workload mix is expected not to be able to use
    /// (by the engine's fragmentation measure), in thousandths of a GPU.
    pub fragmented_milli: f64,
    /// The same by the tracked measure ([`Engine::track_fragmentation`]), if one is tracked.
    #[serde(default)]
    pub tracked_fragmented_milli: Option<f64>,
    /// Placements the engine accounts for.
    pub placements: u32,
}

impl FleetSummary {
    /// Free capacity over total capacity.
    #[must_use]
    pub fn unallocated_share(&self) -> f64 {
        if self.capacity_milli == 0 {
            return 0.0;
        }
        (self.capacity_milli - self.allocated_milli.min(self.capacity_milli)) as f64
            / self.capacity_milli as f64
    }

    /// Fragmented capacity over free capacity (0 when nothing is free).
    #[must_use]
    pub fn fragmentation_share(&self) -> f64 {
        let free = self.capacity_milli.saturating_sub(self.allocated_milli);
        if free == 0 {
            return 0.0;
        }
        self.fragmented_milli / free as f64
    }
}

/// One GPU's accounting, as the engine sees it after its decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuAccount {
    /// Node name.
    pub node: String,
    /// Device index.
    pub index: u32,
    /// Health from the snapshot.
    pub health: GpuHealth,
    /// Framebuffer capacity, MiB.
    pub capacity_mib: u64,
    /// Compute share reserved by placements, thousandths.
    pub allocated_milli: u32,
    /// Memory reserved by placements, MiB.
    pub allocated_mib: u64,
    /// Observed free memory minus in-flight placements, MiB.
    pub observed_free_mib: Option<u64>,
}

/// Places `requests` in order on `snapshot`: the one-shot form of [`Engine`].
///
/// # Errors
/// An invalid snapshot, configuration or request (see [`Error`]).
pub fn plan(
    snapshot: &FleetSnapshot,
    requests: &[ReplicaRequest],
    config: EngineConfig,
) -> Result<Vec<Outcome>> {
    let mut engine = Engine::new(snapshot, config)?;
    requests
        .iter()
        .map(|request| engine.place(request))
        .collect()
}

impl Engine {
    /// Builds the engine's state from a snapshot, applying its existing placements.
    ///
    /// # Errors
    /// [`Error::InvalidNode`], [`Error::InvalidPlacement`], [`Error::InvalidMix`] or
    /// [`Error::TooManyProducts`], naming the field to fix.
    pub fn new(snapshot: &FleetSnapshot, config: EngineConfig) -> Result<Engine> {
        let mut products = Vec::new();
        let mut ordered: Vec<&NodeSnapshot> = snapshot.nodes.iter().collect();
        ordered.sort_by(|left, right| left.name.cmp(&right.name));
        let mut node_by_name = BTreeMap::new();
        let mut raw_nodes = Vec::with_capacity(ordered.len());
        for (position, node) in ordered.iter().enumerate() {
            let position = u32::try_from(position).map_err(|_| Error::InvalidNode {
                node: node.name.clone(),
                field: "nodes".to_owned(),
                problem: "has more than 4 billion entries".to_owned(),
            })?;
            if node_by_name.insert(node.name.clone(), position).is_some() {
                return Err(Error::InvalidNode {
                    node: node.name.clone(),
                    field: "name".to_owned(),
                    problem: "appears twice; node names must be unique".to_owned(),
                });
            }
            raw_nodes.push(build_node(node, &config, &mut products)?);
        }
        let model = Model::new(
            &config.mix,
            &products,
            config.default_memory_headroom_mib,
            score::measure_of(&config),
            config.cpu_balance_weight,
        )?;
        let learner = config.learning.map(|settings| Learner {
            settings,
            prior: config.mix.clone(),
            learned: BTreeMap::new(),
            in_use: BTreeMap::new(),
            decay: 0.5_f64.powf(1.0 / settings.half_life_arrivals.max(1.0)),
            arrivals: 0,
        });
        // The paper's baselines break ties by a seeded node order, as its artifact does by
        // renaming the nodes in a random order.
        let mut random = config.seed ^ 0x6A09_E667_F3BC_C909;
        let mut ranks: Vec<u32> = (0..u32::try_from(raw_nodes.len()).unwrap_or(u32::MAX)).collect();
        for position in (1..ranks.len()).rev() {
            let other = (next_random(&mut random) % (position as u64 + 1)) as usize;
            ranks.swap(position, other);
        }
        for (node, rank) in raw_nodes.iter_mut().zip(ranks) {
            node.tie_rank = if config.strategy.breaks_ties_at_random() {
                rank
            } else {
                0
            };
        }
        let zones: Vec<String> = raw_nodes
            .iter()
            .filter_map(|node| node.labels.get(ZONE_LABEL).cloned())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        let mut engine = Engine {
            zones,
            config,
            products,
            model,
            tracked: None,
            learner,
            random,
            allocated_milli: 0,
            nodes: raw_nodes,
            node_by_name,
            placements: HashMap::new(),
            groups: Vec::new(),
            group_by_name: HashMap::new(),
            shapes: Vec::new(),
            shape_by_key: BTreeMap::new(),
        };
        for placement in &snapshot.placements {
            engine.apply_existing(placement)?;
        }
        for node in &mut engine.nodes {
            node.fragments =
                engine
                    .model
                    .node(&node.gpus, &node.groups, &Change::NONE, node.host());
        }
        Ok(engine)
    }

    /// Keeps a second fragmentation measure up to date, node by node, for reports: `mix` under
    /// `measure` (the FGD paper's measure against its target workload, say). Its fleet total is
    /// [`FleetSummary::tracked_fragmented_milli`].
    ///
    /// # Errors
    /// [`Error::InvalidMix`] for a mix the engine cannot use.
    pub fn track_fragmentation(
        &mut self,
        mix: &WorkloadMix,
        measure: FragmentationMeasure,
    ) -> Result<()> {
        let model = Model::new(
            mix,
            &self.products,
            self.config.default_memory_headroom_mib,
            measure,
            self.config.cpu_balance_weight,
        )?;
        let mut total = 0.0;
        for node in &mut self.nodes {
            node.tracked = model
                .node(&node.gpus, &node.groups, &Change::NONE, node.host())
                .unusable;
            total += node.tracked;
        }
        self.tracked = Some(Tracked {
            model,
            total,
            scratch: NodeFragments::default(),
        });
        Ok(())
    }

    fn apply_existing(&mut self, placement: &crate::fleet::ExistingPlacement) -> Result<()> {
        let invalid = |field: &str, problem: String| Error::InvalidPlacement {
            placement: placement.id.clone(),
            field: field.to_owned(),
            problem,
        };
        if self.placements.contains_key(&placement.id) {
            return Err(invalid(
                "id",
                "appears twice; placement ids (Pod names) must be unique".to_owned(),
            ));
        }
        let Some(&node_index) = self.node_by_name.get(&placement.node) else {
            return Err(invalid(
                "node",
                format!(
                    "names `{}`, which is not in the snapshot; add the node or drop the placement",
                    placement.node
                ),
            ));
        };
        if placement.gpu_milli == 0 || placement.gpu_milli > 1000 {
            return Err(invalid(
                "gpuMilli",
                format!("is {}; a share is 1–1000 thousandths", placement.gpu_milli),
            ));
        }
        if placement.gpus.is_empty() {
            return Err(invalid(
                "gpus",
                "is empty; list the device indices the replica holds".to_owned(),
            ));
        }
        let observed_at = self.nodes[node_index as usize].telemetry_observed_at_ms;
        // In flight: made too recently before the sample for its memory to show in it.
        let in_flight = observed_at.is_some_and(|observed| {
            placement
                .placed_at_ms
                .saturating_add(self.config.telemetry_settle_ms)
                > observed
        });
        let node = &mut self.nodes[node_index as usize];
        let mut mask = 0_u64;
        for &index in &placement.gpus {
            let Some(position) = node
                .identities
                .iter()
                .position(|identity| identity.index == index)
            else {
                return Err(invalid(
                    "gpus",
                    format!(
                        "names device {index}, which node `{}` does not have",
                        node.name
                    ),
                ));
            };
            mask |= 1 << position;
        }
        let mut memory_mib = vec![0; node.gpus.len()];
        for position in node.positions(mask).collect::<Vec<_>>() {
            memory_mib[position] = placement.gpu_memory_mib;
            let gpu = &mut node.gpus[position];
            gpu.allocated_milli = gpu.allocated_milli.saturating_add(placement.gpu_milli);
            gpu.allocated_mib = gpu.allocated_mib.saturating_add(placement.gpu_memory_mib);
            if in_flight {
                gpu.observed_free_mib = gpu
                    .observed_free_mib
                    .map(|free| free.saturating_sub(placement.gpu_memory_mib));
            }
        }
        subtract(&mut node.cpu_free, placement.cpu_milli);
        subtract(&mut node.memory_free, placement.memory_mib);
        let tag = if placement.gpu_milli >= 1000 {
            PodTag::Whole(u32::try_from(placement.gpus.len()).unwrap_or(u32::MAX))
        } else {
            PodTag::Shared
        };
        node.tag(tag, true);
        let group = self.group_id(&placement.group);
        self.record(
            placement.id.clone(),
            PlacementRecord {
                group,
                node: node_index,
                gpus: mask,
                milli: placement.gpu_milli,
                memory_mib,
                in_flight,
                cpu_milli: placement.cpu_milli,
                host_memory_mib: placement.memory_mib,
                tag,
            },
        );
        Ok(())
    }

    /// The configuration the engine was built with.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Places one replica, or says why it cannot be placed. A placement is applied to the
    /// engine's state at once, so the next replica sees it.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a request the engine cannot interpret or whose name is
    /// already placed.
    pub fn place(&mut self, request: &ReplicaRequest) -> Result<Outcome> {
        request.gpu.validate(&request.name)?;
        if self.placements.contains_key(&request.name) {
            return Err(Error::InvalidRequest {
                replica: request.name.clone(),
                field: "name".to_owned(),
                problem: "is already placed; replica names must be unique".to_owned(),
            });
        }
        self.learn(request);
        let walk = self.walk(request);
        let Some((node, candidate)) = walk.chosen else {
            return Ok(Outcome::Unplaceable(self.unplaceable(
                request,
                walk.shape,
                &walk.rejected,
            )));
        };
        Ok(Outcome::Placed(
            self.apply_decision(request, walk.group, node, candidate),
        ))
    }

    /// The best node for `request` right now and its score, without placing it (what-if
    /// queries from the dashboard); `None` when nothing fits.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a request the engine cannot interpret.
    pub fn preview(
        &mut self,
        request: &ReplicaRequest,
    ) -> Result<Option<(String, ScoreBreakdown)>> {
        request.gpu.validate(&request.name)?;
        let walk = self.walk(request);
        Ok(walk
            .chosen
            .map(|(node, candidate)| (self.nodes[node as usize].name.clone(), candidate.breakdown)))
    }

    /// Brings the request's shape index up to date and walks it from the best key: every node
    /// that passes the group checks gets its exact cost, and the walk stops at the first key
    /// that cannot beat the best exact cost found (exact costs are never below their key).
    /// Ties go to the node first in walk order.
    fn walk(&mut self, request: &ReplicaRequest) -> Walk {
        let group = self.group_id(&request.group);
        let shape = self.shape_id(request);
        self.refresh(shape);
        self.track_keys(group, shape, request);
        let mut walk = Walk {
            group,
            shape,
            chosen: None,
            rejected: [0; RejectReason::ALL.len()],
        };
        let strategy = self.config.strategy;
        let index = &self.shapes[shape];
        let group_state = &self.groups[group as usize];
        if strategy == Strategy::Random {
            let mut feasible = Vec::new();
            for &(_, _, node) in &index.ranked {
                match admits(&self.nodes[node as usize], node, group_state, request) {
                    Ok(()) => feasible.push(node),
                    Err(reason) => walk.rejected[reason.position()] += 1,
                }
            }
            if !feasible.is_empty() {
                let pick =
                    feasible[(next_random(&mut self.random) % feasible.len() as u64) as usize];
                if let Entry::Feasible { candidate, .. } =
                    &self.shapes[shape].entries[pick as usize]
                {
                    walk.chosen = Some((pick, *candidate));
                }
            }
            return walk;
        }
        let refine = strategy.refines_with_host()
            && index.needs.host_need.is_none()
            && (request.cpu_milli > 0 || request.memory_mib > 0);
        let spread_weight = if strategy.is_paper() {
            0.0
        } else {
            request
                .spread_weight
                .unwrap_or(self.config.spread_weight)
                .max(0.0)
        };
        let scoring = Scoring {
            config: &self.config,
            model: &self.model,
        };
        let zone_floor = self
            .zones
            .iter()
            .map(|zone| {
                group_state
                    .keys
                    .get(ZONE_LABEL)
                    .and_then(|counts| counts.per_domain.get(zone))
                    .copied()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        let mut best: Option<(i64, u32, Candidate)> = None;
        for &(key, _, node) in &index.ranked {
            if best.as_ref().is_some_and(|(cost, _, _)| key >= *cost) {
                break;
            }
            let state = &self.nodes[node as usize];
            if let Err(reason) = admits(state, node, group_state, request) {
                walk.rejected[reason.position()] += 1;
                continue;
            }
            let Entry::Feasible { candidate, .. } = &index.entries[node as usize] else {
                continue;
            };
            let mut candidate = *candidate;
            if refine {
                let host_after = state.host().minus(request.cpu_milli, request.memory_mib);
                // The balance term's rise is part of the exact cost and costs nothing to know:
                // a node it already puts behind the best is not evaluated again.
                let free_after = state
                    .gpus
                    .iter()
                    .filter(|gpu| gpu.usable())
                    .map(|gpu| u64::from(gpu.free_milli()))
                    .sum::<u64>()
                    .saturating_sub(request.gpu.total_milli());
                let rise = self
                    .model
                    .balance_rise(free_after, state.host(), host_after)
                    / 1000.0;
                let lower = key as f64 / 1e6 + rise;
                if best
                    .as_ref()
                    .is_some_and(|(cost, _, _)| cost_key(lower) >= *cost)
                {
                    continue;
                }
                // The GPUs the key chose, costed with the replica's CPU and memory taken:
                // which GPUs of a node suit a replica best hardly depends on its CPU, and
                // costing one choice instead of every one keeps a decision in microseconds.
                let memo = state.host_part.get().filter(|memo| {
                    memo.host_after == host_after
                        && memo.gpus == candidate.gpus
                        && memo.request == request.gpu
                });
                let extra = match memo {
                    Some(memo) => memo.value,
                    None if self.model.weights_unchanged(state.host(), host_after) => rise,
                    None => {
                        let value = score::host_part(
                            &state.view(),
                            &index.needs,
                            &scoring,
                            candidate.gpus,
                            host_after,
                        );
                        state.host_part.set(Some(HostPartMemo {
                            host_after,
                            gpus: candidate.gpus,
                            request: request.gpu,
                            value,
                        }));
                        value
                    }
                };
                candidate.breakdown.strategy_cost += extra;
                candidate.breakdown.total += extra;
                candidate.breakdown.fragmentation_delta_gpus = candidate
                    .breakdown
                    .fragmentation_delta_gpus
                    .map(|delta| delta + extra);
            }
            let spread = if spread_weight > 0.0 {
                spread_weight * spread_count(state, node, group_state, zone_floor)
            } else {
                0.0
            };
            candidate.breakdown.spread_penalty = spread;
            candidate.breakdown.total += spread;
            let cost = cost_key(candidate.breakdown.total);
            if best
                .as_ref()
                .is_none_or(|(best_cost, _, _)| cost < *best_cost)
            {
                best = Some((cost, node, candidate));
            }
        }
        walk.chosen = best.map(|(_, node, candidate)| (node, candidate));
        walk
    }

    /// Counts an arrival towards the learned mix and switches the model when the mix has
    /// drifted far enough from the one in use.
    fn learn(&mut self, request: &ReplicaRequest) {
        let Some(learner) = &mut self.learner else {
            return;
        };
        for weight in learner.learned.values_mut() {
            *weight *= learner.decay;
        }
        *learner.learned.entry(TaskShape::of(request)).or_default() += 1.0;
        let arrivals: f64 = learner.learned.values().sum();
        learner.arrivals += 1;
        // Looking costs a pass over the shapes: every 32 arrivals is often enough.
        if !learner.arrivals.is_multiple_of(32) {
            return;
        }
        let blended = learner.blend();
        if learner.in_use.is_empty() {
            learner.in_use = learner.prior_distribution();
        }
        let drift = total_variation(&blended, &learner.in_use);
        if drift <= learner.settings.refresh_drift || arrivals < 1.0 {
            return;
        }
        let mix = WorkloadMix {
            entries: blended
                .iter()
                .map(|(shape, probability)| shape.clone().entry(*probability))
                .collect(),
        };
        learner.in_use = blended;
        if let Ok(model) = Model::new(
            &mix,
            &self.products,
            self.config.default_memory_headroom_mib,
            score::measure_of(&self.config),
            self.config.cpu_balance_weight,
        ) {
            self.model = model;
            for node in 0..self.nodes.len() {
                self.touch(u32::try_from(node).unwrap_or(u32::MAX));
            }
        }
    }

    /// Places each request in order.
    ///
    /// # Errors
    /// As [`Engine::place`]; requests before the failing one stay placed.
    pub fn place_all(&mut self, requests: &[ReplicaRequest]) -> Result<Vec<Outcome>> {
        requests.iter().map(|request| self.place(request)).collect()
    }

    fn unplaceable(
        &self,
        request: &ReplicaRequest,
        shape: usize,
        walked: &[u32; RejectReason::ALL.len()],
    ) -> Unplaceable {
        let index = &self.shapes[shape];
        let mut rejections: Vec<Rejection> = RejectReason::ALL
            .into_iter()
            .map(|reason| Rejection {
                reason,
                nodes: index.rejected[reason.position()] + walked[reason.position()],
            })
            .filter(|rejection| rejection.nodes > 0)
            .collect();
        rejections.sort_by_key(|rejection| std::cmp::Reverse(rejection.nodes));
        Unplaceable {
            replica: request.name.clone(),
            group: request.group.clone(),
            nodes_total: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            rejections,
        }
    }

    fn apply_decision(
        &mut self,
        request: &ReplicaRequest,
        group: u32,
        node_index: u32,
        candidate: Candidate,
    ) -> Decision {
        let milli = request.gpu.milli_per_gpu();
        let node = &mut self.nodes[node_index as usize];
        let mut memory_mib = vec![0; node.gpus.len()];
        let mut gpus = Vec::new();
        let mut first_memory = None;
        for position in node.positions(candidate.gpus).collect::<Vec<_>>() {
            let gpu = &mut node.gpus[position];
            let need = request.gpu.memory_need_mib(gpu.capacity_mib);
            memory_mib[position] = need;
            first_memory.get_or_insert(need);
            *gpu = gpu.with_allocation(milli, need);
            gpus.push(node.identities[position].clone());
        }
        let has_telemetry = node.gpus.iter().any(|gpu| gpu.observed_free_mib.is_some());
        subtract(&mut node.cpu_free, request.cpu_milli);
        subtract(&mut node.memory_free, request.memory_mib);
        let tag = PodTag::of(request.gpu);
        node.tag(tag, true);
        let decision = Decision {
            replica: request.name.clone(),
            group: request.group.clone(),
            node: node.name.clone(),
            gpus,
            gpu_milli: milli,
            gpu_memory_mib: first_memory.unwrap_or(0),
            score: candidate.breakdown,
        };
        self.record(
            request.name.clone(),
            PlacementRecord {
                group,
                node: node_index,
                gpus: candidate.gpus,
                milli,
                memory_mib,
                in_flight: has_telemetry,
                cpu_milli: request.cpu_milli,
                host_memory_mib: request.memory_mib,
                tag,
            },
        );
        decision
    }

    /// Forgets a placement (its Pod was deleted), freeing its requests at once; memory it
    /// showed in telemetry is credited only by the next snapshot.
    ///
    /// # Errors
    /// [`Error::UnknownPlacement`] when no placement has that id.
    pub fn remove(&mut self, placement: &str) -> Result<()> {
        let Some(record) = self.placements.remove(placement) else {
            return Err(Error::UnknownPlacement {
                placement: placement.to_owned(),
            });
        };
        self.groups[record.group as usize].members.remove(placement);
        let node = &mut self.nodes[record.node as usize];
        for position in node.positions(record.gpus).collect::<Vec<_>>() {
            let gpu = &mut node.gpus[position];
            if gpu.usable() {
                self.allocated_milli = self.allocated_milli.saturating_sub(u64::from(record.milli));
            }
            release(gpu, &record, position);
        }
        add(&mut node.cpu_free, record.cpu_milli);
        add(&mut node.memory_free, record.host_memory_mib);
        node.tag(record.tag, false);
        self.count(record.group, record.node, false);
        self.touch(record.node);
        Ok(())
    }

    /// Chooses and removes `count` replicas of `group` for a scale-down: each time the one whose
    /// removal lowers its node's expected fragmentation most, preferring replicas on penalised
    /// (Degraded, hot) GPUs on ties, then the placement id that sorts first.
    pub fn scale_down(&mut self, group: &str, count: usize) -> Vec<Removal> {
        let Some(&group_id) = self.group_by_name.get(group) else {
            return Vec::new();
        };
        let mut removals = Vec::new();
        for _ in 0..count {
            let mut best: Option<((i64, i64), &str, f64)> = None;
            let members = &self.groups[group_id as usize].members;
            for (id, record) in members
                .iter()
                .filter_map(|id| self.placements.get(id).map(|record| (id, record)))
            {
                let node = &self.nodes[record.node as usize];
                let mut after = node.gpus.clone();
                let mut penalty = 0.0;
                for position in node.positions(record.gpus) {
                    release(&mut after[position], record, position);
                    penalty += node.penalties[position].total();
                }
                let host_after = Host {
                    cpu_milli: node
                        .cpu_free
                        .map(|free| free.saturating_add(saturating_i64(record.cpu_milli))),
                    memory_mib: node
                        .memory_free
                        .map(|free| free.saturating_add(saturating_i64(record.host_memory_mib))),
                };
                let delta = (self
                    .model
                    .node(&after, &node.groups, &Change::NONE, host_after)
                    .value
                    - node.fragments.value)
                    / 1000.0;
                let key = (cost_key(delta), -cost_key(penalty));
                if best.as_ref().is_none_or(|(best_key, _, _)| key < *best_key) {
                    best = Some((key, id, delta));
                }
            }
            let Some((_, id, delta)) = best else {
                break;
            };
            let id = id.to_owned();
            let node = self.placements.get(&id).map_or(0, |record| record.node);
            if self.remove(&id).is_ok() {
                removals.push(Removal {
                    placement: id,
                    node: self.nodes[node as usize].name.clone(),
                    fragmentation_delta_gpus: delta,
                });
            }
        }
        removals
    }

    /// Compute share allocated on usable GPUs, thousandths: [`FleetSummary::allocated_milli`]
    /// without the walk over every GPU (the simulator reads it after every arrival).
    #[must_use]
    pub fn allocated_milli(&self) -> u64 {
        self.allocated_milli
    }

    /// The tracked measure's fleet total ([`Engine::track_fragmentation`]), thousandths.
    #[must_use]
    pub fn tracked_fragmentation(&self) -> Option<f64> {
        self.tracked.as_ref().map(|tracked| tracked.total)
    }

    /// Fleet-wide totals now.
    #[must_use]
    pub fn summary(&self) -> FleetSummary {
        let mut summary = FleetSummary {
            nodes: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            usable_gpus: 0,
            capacity_milli: 0,
            allocated_milli: 0,
            fragmented_milli: 0.0,
            tracked_fragmented_milli: self.tracked.as_ref().map(|tracked| tracked.total),
            placements: u32::try_from(self.placements.len()).unwrap_or(u32::MAX),
        };
        for node in &self.nodes {
            for gpu in node.gpus.iter().filter(|gpu| gpu.usable()) {
                summary.usable_gpus += 1;
                summary.capacity_milli += 1000;
                summary.allocated_milli += u64::from(gpu.allocated_milli.min(1000));
            }
            summary.fragmented_milli += node.fragments.unusable;
        }
        summary
    }

    /// Every GPU's accounting, in node then device order.
    #[must_use]
    pub fn gpu_accounts(&self) -> Vec<GpuAccount> {
        self.nodes
            .iter()
            .flat_map(|node| {
                node.gpus
                    .iter()
                    .zip(&node.identities)
                    .map(|(gpu, identity)| GpuAccount {
                        node: node.name.clone(),
                        index: identity.index,
                        health: gpu.health,
                        capacity_mib: gpu.capacity_mib,
                        allocated_milli: gpu.allocated_milli,
                        allocated_mib: gpu.allocated_mib,
                        observed_free_mib: gpu.observed_free_mib,
                    })
            })
            .collect()
    }

    fn group_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.group_by_name.get(name) {
            return id;
        }
        let id = u32::try_from(self.groups.len()).unwrap_or(u32::MAX);
        self.groups.push(GroupState::default());
        self.group_by_name.insert(name.to_owned(), id);
        id
    }

    fn record(&mut self, id: String, record: PlacementRecord) {
        let (group, node) = (record.group, record.node);
        let usable = self.nodes[node as usize]
            .positions(record.gpus)
            .filter(|&position| self.nodes[node as usize].gpus[position].usable())
            .count() as u64;
        self.allocated_milli += usable * u64::from(record.milli);
        self.groups[group as usize].members.insert(id.clone());
        self.placements.insert(id, record);
        self.count(group, node, true);
        self.touch(node);
    }

    /// Updates the group's replica counts for a placement added to or removed from `node`.
    fn count(&mut self, group: u32, node: u32, added: bool) {
        let node_state = &self.nodes[node as usize];
        let group_state = &mut self.groups[group as usize];
        let per_node = group_state.per_node.entry(node).or_default();
        *per_node = if added {
            *per_node + 1
        } else {
            per_node.saturating_sub(1)
        };
        for (key, counts) in &mut group_state.keys {
            let Some(domain) = node_state.domain(key) else {
                continue;
            };
            let count = counts.per_domain.entry(domain.to_owned()).or_default();
            let before = *count;
            *count = if added {
                before + 1
            } else {
                before.saturating_sub(1)
            };
            let after = *count;
            if let Some(spread) = &mut counts.spread
                && spread.eligible.contains(domain)
            {
                spread.shift(before, after);
            }
        }
    }

    /// Marks a node's scores stale in every shape index and refreshes its fragmentation.
    fn touch(&mut self, node: u32) {
        let state = &mut self.nodes[node as usize];
        state.host_part.set(None);
        let host = state.host();
        self.model.node_into(
            &state.gpus,
            &state.groups,
            &Change::NONE,
            host,
            &mut state.fragments,
        );
        if let Some(tracked) = &mut self.tracked {
            tracked.model.node_into(
                &state.gpus,
                &state.groups,
                &Change::NONE,
                host,
                &mut tracked.scratch,
            );
            let value = tracked.scratch.unusable;
            tracked.total += value - state.tracked;
            state.tracked = value;
        }
        for shape in &mut self.shapes {
            if !shape.is_dirty[node as usize] {
                shape.is_dirty[node as usize] = true;
                shape.dirty.push(node);
            }
        }
    }

    fn shape_id(&mut self, request: &ReplicaRequest) -> usize {
        let key = ShapeKey {
            request: request.gpu,
            products: ProductMask::of(&request.allowed_products, &self.products),
            min_capability: request.min_compute_capability,
            selector: request
                .node_selector
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            headroom_mib: request
                .memory_headroom_mib
                .unwrap_or(self.config.default_memory_headroom_mib),
            // A request without GPUs differs from others of its shape only in its CPU and
            // memory: rank it exactly (its key is all there is), not by a walk from 0.
            host_need: (self.config.strategy.ranks_by_host_need()
                || request.gpu == GpuRequest::NoGpu)
                .then_some((request.cpu_milli, request.memory_mib)),
        };
        if let Some(&id) = self.shape_by_key.get(&key) {
            return id;
        }
        let needs = ShapeNeeds {
            request: key.request,
            products: key.products,
            min_capability: key.min_capability,
            headroom_mib: key.headroom_mib,
            host_need: key.host_need,
        };
        let mut index = ShapeIndex {
            key: key.clone(),
            needs,
            entries: Vec::with_capacity(self.nodes.len()),
            ranked: BTreeSet::new(),
            rejected: [0; RejectReason::ALL.len()],
            dirty: Vec::new(),
            is_dirty: vec![false; self.nodes.len()],
            spread_domains: BTreeMap::new(),
        };
        for (position, node) in self.nodes.iter().enumerate() {
            let entry = self.score_node(node, &index);
            insert_entry(&mut index, position as u32, node.tie_rank, &entry);
            index.entries.push(entry);
        }
        let id = self.shapes.len();
        self.shapes.push(index);
        self.shape_by_key.insert(key, id);
        id
    }

    fn score_node(&self, node: &NodeState, index: &ShapeIndex) -> Entry {
        if let Some(reason) = node.gate {
            return Entry::Rejected(reason);
        }
        let selected = index
            .key
            .selector
            .iter()
            .all(|(key, value)| node.labels.get(key) == Some(value));
        if !selected {
            return Entry::Rejected(RejectReason::NodeSelectorMismatch);
        }
        let scoring = Scoring {
            config: &self.config,
            model: &self.model,
        };
        match score::evaluate(&node.view(), &index.needs, &scoring, None) {
            // A shape keyed by its CPU and memory knows whether they fit: nodes without them
            // leave the ranking instead of being walked past.
            Ok(_)
                if index.needs.host_need.is_some_and(|(cpu, _)| {
                    node.cpu_free.is_some_and(|free| free < saturating_i64(cpu))
                }) =>
            {
                Entry::Rejected(RejectReason::InsufficientCpu)
            }
            Ok(_)
                if index.needs.host_need.is_some_and(|(_, memory)| {
                    node.memory_free
                        .is_some_and(|free| free < saturating_i64(memory))
                }) =>
            {
                Entry::Rejected(RejectReason::InsufficientHostMemory)
            }
            Ok(candidate) => Entry::Feasible {
                cost: cost_key(candidate.breakdown.total),
                candidate,
            },
            Err(reason) => Entry::Rejected(reason),
        }
    }

    /// Rescores the nodes touched since the shape was last used.
    fn refresh(&mut self, shape: usize) {
        let dirty = std::mem::take(&mut self.shapes[shape].dirty);
        for &node in &dirty {
            let entry = self.score_node(&self.nodes[node as usize], &self.shapes[shape]);
            let tie_rank = self.nodes[node as usize].tie_rank;
            let index = &mut self.shapes[shape];
            match &index.entries[node as usize] {
                Entry::Feasible { cost, .. } => {
                    index.ranked.remove(&(*cost, tie_rank, node));
                }
                Entry::Rejected(reason) => index.rejected[reason.position()] -= 1,
            }
            insert_entry(index, node, tie_rank, &entry);
            index.entries[node as usize] = entry;
            index.is_dirty[node as usize] = false;
        }
        let mut dirty = dirty;
        dirty.clear();
        self.shapes[shape].dirty = dirty;
    }

    /// Starts counting the group's replicas per domain for the request's topology keys.
    fn track_keys(&mut self, group: u32, shape: usize, request: &ReplicaRequest) {
        // Soft spreading counts replicas per zone; only where it is on.
        let zone = ZONE_LABEL.to_owned();
        let spreads_softly = !self.config.strategy.is_paper()
            && request.spread_weight.unwrap_or(self.config.spread_weight) > 0.0;
        let keys = request
            .anti_affinity_keys
            .iter()
            .chain(request.topology_spread.iter().map(|spread| &spread.key))
            .chain(spreads_softly.then_some(&zone));
        for key in keys {
            let nodes = &self.nodes;
            let group_state = &mut self.groups[group as usize];
            if group_state.keys.contains_key(key) {
                continue;
            }
            let mut counts = DomainCounts::default();
            for (&node, &replicas) in &group_state.per_node {
                if let Some(domain) = nodes[node as usize].domain(key) {
                    *counts.per_domain.entry(domain.to_owned()).or_default() += replicas;
                }
            }
            group_state.keys.insert(key.clone(), counts);
        }
        for spread in &request.topology_spread {
            let known = self.groups[group as usize]
                .keys
                .get(&spread.key)
                .is_some_and(|counts| counts.spread.is_some());
            if known {
                continue;
            }
            let eligible = self.spread_domains(shape, &spread.key);
            let Some(counts) = self.groups[group as usize].keys.get_mut(&spread.key) else {
                continue;
            };
            let mut histogram = BTreeMap::new();
            for domain in eligible.iter() {
                let replicas = counts.per_domain.get(domain).copied().unwrap_or(0);
                *histogram.entry(replicas).or_default() += 1;
            }
            counts.spread = Some(SpreadDomains {
                eligible,
                histogram,
            });
        }
    }

    /// The domains of `key` that count for a spread constraint of this shape: those holding a
    /// node the shape could ever use (ready, selected, right products), as kube-scheduler counts
    /// only nodes passing node affinity.
    fn spread_domains(&mut self, shape: usize, key: &str) -> Arc<HashSet<String>> {
        if let Some(domains) = self.shapes[shape].spread_domains.get(key) {
            return Arc::clone(domains);
        }
        let index = &self.shapes[shape];
        let mut domains = HashSet::new();
        for (position, node) in self.nodes.iter().enumerate() {
            let statically_excluded = matches!(
                index.entries[position],
                Entry::Rejected(
                    RejectReason::NodeNotReady
                        | RejectReason::TelemetryStale
                        | RejectReason::NodeSelectorMismatch
                        | RejectReason::GpuProductNotAllowed
                        | RejectReason::ComputeCapabilityTooLow
                )
            );
            if !statically_excluded && let Some(domain) = node.domain(key) {
                domains.insert(domain.to_owned());
            }
        }
        let domains = Arc::new(domains);
        self.shapes[shape]
            .spread_domains
            .insert(key.to_owned(), Arc::clone(&domains));
        domains
    }
}

/// The group checks a node must pass beyond its GPUs.
fn admits(
    node: &NodeState,
    node_index: u32,
    group: &GroupState,
    request: &ReplicaRequest,
) -> std::result::Result<(), RejectReason> {
    if node
        .cpu_free
        .is_some_and(|free| free < saturating_i64(request.cpu_milli))
    {
        return Err(RejectReason::InsufficientCpu);
    }
    if node
        .memory_free
        .is_some_and(|free| free < saturating_i64(request.memory_mib))
    {
        return Err(RejectReason::InsufficientHostMemory);
    }
    if let Some(maximum) = request.max_replicas_per_node
        && group.per_node.get(&node_index).copied().unwrap_or(0) >= maximum
    {
        return Err(RejectReason::MaxReplicasPerNode);
    }
    for key in &request.anti_affinity_keys {
        let occupied = node.domain(key).is_some_and(|domain| {
            group
                .keys
                .get(key)
                .and_then(|counts| counts.per_domain.get(domain))
                .is_some_and(|&count| count > 0)
        });
        if occupied {
            return Err(RejectReason::AntiAffinity);
        }
    }
    for spread in &request.topology_spread {
        let Some(domain) = node.domain(&spread.key) else {
            return Err(RejectReason::MissingTopologyLabel);
        };
        let Some(counts) = group.keys.get(&spread.key) else {
            continue;
        };
        let here = counts.per_domain.get(domain).copied().unwrap_or(0);
        let minimum = counts
            .spread
            .as_ref()
            .and_then(|spread| spread.histogram.keys().next().copied())
            .unwrap_or(0);
        if here + 1 > minimum + spread.max_skew {
            return Err(RejectReason::TopologySpreadSkew);
        }
    }
    Ok(())
}

fn insert_entry(index: &mut ShapeIndex, node: u32, tie_rank: u32, entry: &Entry) {
    match entry {
        Entry::Feasible { cost, .. } => {
            index.ranked.insert((*cost, tie_rank, node));
        }
        Entry::Rejected(reason) => index.rejected[reason.position()] += 1,
    }
}

/// Replicas of the group on the node, plus half of how many more its zone holds than the
/// zone holding fewest (`zone_floor`): what soft spreading charges for. Relative, so evenly
/// spread zones cost nothing.
fn spread_count(node: &NodeState, node_index: u32, group: &GroupState, zone_floor: u32) -> f64 {
    let here = group.per_node.get(&node_index).copied().unwrap_or(0);
    let zone = node
        .labels
        .get(ZONE_LABEL)
        .and_then(|zone| group.keys.get(ZONE_LABEL)?.per_domain.get(zone))
        .copied()
        .unwrap_or(0);
    f64::from(here) + 0.5 * f64::from(zone.saturating_sub(zone_floor))
}

/// The zone label soft spreading counts by, as kube-scheduler's default spreading does.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// SplitMix64: the seeded stream of the random baselines and tie orders.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut value = *state;
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// Total-variation distance between two distributions over task shapes.
fn total_variation(left: &BTreeMap<TaskShape, f64>, right: &BTreeMap<TaskShape, f64>) -> f64 {
    let mut distance = 0.0;
    for (shape, probability) in left {
        distance += (probability - right.get(shape).copied().unwrap_or(0.0)).abs();
    }
    for (shape, probability) in right {
        if !left.contains_key(shape) {
            distance += probability;
        }
    }
    distance / 2.0
}

impl Learner {
    /// The prior, normalised, by task shape.
    fn prior_distribution(&self) -> BTreeMap<TaskShape, f64> {
        let total: f64 = self.prior.entries.iter().map(|entry| entry.weight).sum();
        let mut distribution = BTreeMap::new();
        for entry in &self.prior.entries {
            *distribution.entry(TaskShape::of_entry(entry)).or_default() +=
                entry.weight / total.max(f64::MIN_POSITIVE);
        }
        distribution
    }

    /// `prior_weight × prior + learned`, normalised.
    fn blend(&self) -> BTreeMap<TaskShape, f64> {
        let mut blended: BTreeMap<TaskShape, f64> = self
            .prior_distribution()
            .into_iter()
            .map(|(shape, probability)| (shape, probability * self.settings.prior_weight))
            .collect();
        for (shape, weight) in &self.learned {
            *blended.entry(shape.clone()).or_default() += weight;
        }
        let total: f64 = blended.values().sum();
        if total > 0.0 {
            for probability in blended.values_mut() {
                *probability /= total;
            }
        }
        blended
    }
}

/// Undoes a placement on one GPU; in-flight memory comes back to the observed view too.
fn release(gpu: &mut GpuState, record: &PlacementRecord, position: usize) {
    let memory = record.memory_mib[position];
    gpu.allocated_milli = gpu.allocated_milli.saturating_sub(record.milli);
    gpu.allocated_mib = gpu.allocated_mib.saturating_sub(memory);
    if record.in_flight {
        gpu.observed_free_mib = gpu.observed_free_mib.map(|free| free + memory);
    }
}

/// `amount` as an i64, saturating: requests beyond i64 are absurd, never negative.
fn saturating_i64(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

fn subtract(free: &mut Option<i64>, amount: u64) {
    if let Some(free) = free {
        *free = free.saturating_sub(saturating_i64(amount));
    }
}

fn add(free: &mut Option<i64>, amount: u64) {
    if let Some(free) = free {
        *free = free.saturating_add(saturating_i64(amount));
    }
}

fn build_node(
    node: &NodeSnapshot,
    config: &EngineConfig,
    products: &mut Vec<String>,
) -> Result<NodeState> {
    if let Some(problem) = node.problem() {
        return Err(problem);
    }
    let mut gpus = Vec::with_capacity(node.gpus.len());
    let mut penalties = Vec::with_capacity(node.gpus.len());
    let mut identities: Vec<ChosenGpu> = Vec::with_capacity(node.gpus.len());
    let mut sorted: Vec<_> = node.gpus.iter().collect();
    sorted.sort_by_key(|gpu| gpu.index);
    for gpu in sorted {
        let gpu_penalties = Penalties::of(gpu, config);
        gpus.push(GpuState {
            product: intern_product(products, &gpu.product)?,
            health: gpu.health,
            capability: gpu.compute_capability,
            topology_group: gpu.nvlink_group.unwrap_or(PCIE_DOMAIN),
            numa_node: gpu.numa_node,
            capacity_mib: gpu.memory_mib,
            observed_free_mib: gpu.observed_free_mib.map(|free| free.min(gpu.memory_mib)),
            allocated_milli: 0,
            allocated_mib: 0,
            penalty: gpu_penalties.total(),
        });
        penalties.push(gpu_penalties);
        identities.push(ChosenGpu {
            index: gpu.index,
            uuid: gpu.uuid.clone(),
        });
    }
    let mut gpu_order: Vec<u8> = (0..gpus.len()).map(|position| position as u8).collect();
    gpu_order.sort_by(|&left, &right| {
        let (left_gpu, right_gpu) = (&gpus[usize::from(left)], &gpus[usize::from(right)]);
        cost_key(left_gpu.penalty)
            .cmp(&cost_key(right_gpu.penalty))
            .then(left.cmp(&right))
    });
    let groups = Groups::of(&gpus);
    let gate = if !node.ready {
        Some(RejectReason::NodeNotReady)
    } else if !node.heartbeat_fresh {
        Some(RejectReason::TelemetryStale)
    } else {
        None
    };
    Ok(NodeState {
        name: node.name.clone(),
        labels: node.labels.clone(),
        gate,
        cpu_free: node.cpu_milli.map(saturating_i64),
        memory_free: node.memory_mib.map(saturating_i64),
        telemetry_observed_at_ms: node.telemetry_observed_at_ms,
        gpus,
        penalties,
        gpu_order,
        groups,
        identities,
        fragments: NodeFragments::default(),
        tracked: 0.0,
        tags: Vec::new(),
        tie_rank: 0,
        host_part: std::cell::Cell::new(None),
    })
}
