//! gpufleet-placement: the pure placement engine and the workload simulator built on it.
//!
//! It reads plain data and returns plain data; it does no I/O, so the operator, the dashboard's
//! what-if view and `gpufleet simulate` all run exactly the same decisions.
//!
//! ```text
//!  reads                                   writes
//!  ─────                                   ──────
//!  FleetSnapshot                           Outcome per replica:
//!    nodes: labels, Ready, heartbeat,        Placed(Decision: node, GPU indices + UUIDs,
//!      GPUs: product, capacity, CC,                   ScoreBreakdown)
//!      observed free memory, utilisation,    Unplaceable("0/N nodes are available: …")
//!      temperature, power, health,         Removal (scale-down choice)
//!      NVLink group, NUMA node             FleetSummary (allocation, fragmentation)
//!    placements (incl. in flight)          SimulationReport (per strategy, per load level)
//!  ReplicaRequest (whole / fractional)
//!  EngineConfig (strategy, workload mix)
//!
//!  FleetSnapshot ─► Engine::new ─► Engine::place(request) ─► Outcome ─┐
//!                                   ▲                                 │ applied to the
//!                                   └─────────────────────────────────┘ engine's state
//!  node CSV + pod CSV / YAML / synthetic ─► simulate::run ─► Engine per strategy ─► report
//! ```
//!
//! Feasibility uses what each GPU really has: the smaller of the memory left by gpufleet's own
//! requests and the free memory telemetry observed minus placements still in flight (shadow
//! accounting, see the `state` module's docs); Unhealthy GPUs are never chosen; Degraded, hot,
//! throttling, power-limited and busy GPUs are penalised in the score. The strategies are in
//! [`Strategy`]; fragmentation-aware scoring follows FGD (Weng et al., USENIX ATC '23).

mod decision;
mod engine;
mod fleet;
mod fragmentation;
#[cfg(feature = "api")]
mod from_api;
mod request;
mod score;
pub mod simulate;
mod state;
mod strategy;

pub use decision::{
    ChosenGpu, Decision, Outcome, RejectReason, Rejection, ScoreBreakdown, Unplaceable,
};
pub use engine::{Engine, FleetSummary, GpuAccount, Removal, plan};
pub use fleet::{
    ComputeCapability, ExistingPlacement, FleetSnapshot, GpuHealth, GpuSnapshot, HOSTNAME_LABEL,
    NodeSnapshot, UnusableNode,
};
pub use fragmentation::FragmentationMeasure;
#[cfg(feature = "api")]
pub use from_api::{request_for, strategy_of};
pub use request::{GpuRequest, MemoryNeed, ReplicaRequest, TopologySpread};
pub use strategy::{EngineConfig, MixEntry, MixLearning, ScoreWeights, Strategy, WorkloadMix};

/// Everything that can go wrong; each message names the field (or CSV line and column) and
/// says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node of the snapshot is malformed.
    #[error("node `{node}`: `{field}` {problem}")]
    InvalidNode {
        /// The node's name.
        node: String,
        /// The offending field.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// An existing placement of the snapshot is malformed or points nowhere.
    #[error("placement `{placement}`: `{field}` {problem}")]
    InvalidPlacement {
        /// The placement's id.
        placement: String,
        /// The offending field.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A replica request is malformed.
    #[error("replica `{replica}`: `{field}` {problem}")]
    InvalidRequest {
        /// The replica's name.
        replica: String,
        /// The offending field.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The workload mix cannot be used.
    #[error("workload mix: {problem}")]
    InvalidMix {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// More distinct GPU products than the engine's 64-bit product sets hold.
    #[error(
        "the fleet has more than 64 distinct GPU products; normalise product names (GPU Feature Discovery's nvidia.com/gpu.product)"
    )]
    TooManyProducts,
    /// A strategy name that does not exist.
    #[error(
        "unknown strategy `{given}`; use one of fragmentation-aware, best-fit, pack, spread (gpufleet's) or fgd, best-fit-cpu-gpu, gpu-packing, gpu-clustering, dot-product, random (the FGD paper's)"
    )]
    UnknownStrategy {
        /// What was given.
        given: String,
    },
    /// Removal of a placement the engine does not know.
    #[error("no placement `{placement}`; it was never placed or already removed")]
    UnknownPlacement {
        /// The id asked for.
        placement: String,
    },
    /// A node or pod CSV line that cannot be read.
    #[error(
        "{file} line {line}{}: {problem}",
        if column.is_empty() { String::new() } else { format!(", column `{column}`") }
    )]
    Csv {
        /// Which input (node or pod CSV).
        file: String,
        /// 1-based line number.
        line: usize,
        /// Column name from the header.
        column: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A `--synthetic` specification that cannot be read.
    #[error("synthetic workload `{spec}`: {problem}")]
    InvalidSynthetic {
        /// The specification given.
        spec: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A simulation that cannot run as asked.
    #[error("simulation: {problem}")]
    InvalidSimulation {
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Result of this crate's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
