//! `gpufleet-planner`: how an organisation should split money and GPUs between pre-training,
//! post-training (reinforcement learning) and test-time inference over time.
//!
//! It is a pure library: it reads a [`Scenario`] (YAML text, parsed and validated here) and
//! writes a [`Plan`] (plain data that the binary prints as a table, JSON, CSV or Markdown, or
//! draws as SVG). It never touches the network, the file system or a terminal.
//!
//! ```text
//!  scenario YAML ──► scenario::Scenario::from_yaml ──► validate (field path + fix)
//!                                                          │
//!  scaling (Chinchilla, Sardana, DeepSeek accounting, ─────┤ training compute, loss curves
//!           tangent cuts with their error bound)           ▼
//!                                 model::FleetModel::build ──► linear::LinearProgram
//!                                                               │ (named constraint groups)
//!                                        linear::solve (Clarabel | microlp | HiGHS) ◄┘
//!                                                               │ values + duals
//!                                 linear::check (residuals, complementary slackness)
//!                                                               │
//!                                 report::Plan (per period, shadow prices, binding groups,
//!                                 cost recomputed from the scenario and compared) ──► chart
//! ```
//!
//! Units inside the model are scaled so that coefficients stay near 1 (badly scaled fleet
//! LPs make interior-point and simplex solvers fail): money in $M, GPUs in thousands,
//! GPU-hours in millions, compute in zettaFLOP (1e21 FLOP), queries in billions, power in MW.
//! See `SCENARIOS.md` for the scenario format field by field.

pub mod benchmark;
pub mod chart;
pub mod generator;
pub mod library;
pub mod linear;
pub mod model;
pub mod report;
pub mod scaling;
pub mod scenario;
pub mod sweep;

pub use linear::SolverChoice;
pub use model::plan;
pub use report::Plan;
pub use scenario::Scenario;

/// Everything that can go wrong while planning, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario text is not valid YAML or does not match the scenario schema.
    #[error("parse scenario: {0}")]
    ParseScenario(#[source] serde_norway::Error),
    /// A scenario field holds a value the planner cannot use.
    #[error("invalid scenario: `{field}`: {problem}; fix: {fix}")]
    InvalidScenario {
        /// Path of the offending field, e.g. `gpus[2].price_usd`.
        field: String,
        /// What is wrong with it.
        problem: String,
        /// What to change.
        fix: String,
    },
    /// No shipped scenario has this name and no file exists at that path.
    #[error("unknown scenario `{0}`: give a path to a YAML file or one of: {1}")]
    UnknownScenario(String, String),
    /// A `--vary path=lo..hi:steps` specification could not be parsed or applied.
    #[error("sweep specification `{spec}`: {problem}")]
    SweepSpecification {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The constraints cannot all hold; `groups` names the constraint groups that must be
    /// relaxed (and by how much) for the scenario to become feasible.
    #[error("scenario is infeasible: {groups}")]
    Infeasible {
        /// Human-readable list of the constraint groups that bind, worst first.
        groups: String,
        /// The same, as data.
        diagnosis: Vec<linear::Relaxation>,
    },
    /// The solver failed for a reason other than infeasibility.
    #[error("solve with {solver}: {message}")]
    Solve {
        /// Which solver.
        solver: &'static str,
        /// What it said.
        message: String,
    },
    /// The solver returned an answer that the independent check rejected.
    #[error("check solution from {solver}: {problem}")]
    CheckSolution {
        /// Which solver produced it.
        solver: &'static str,
        /// The first violated condition.
        problem: String,
    },
    /// The requested solver is not compiled into this build.
    #[error("solver `{0}` is not available in this build; fix: {1}")]
    SolverUnavailable(String, String),
    /// Serialising a plan to JSON failed.
    #[error("serialise plan: {0}")]
    SerialisePlan(#[source] serde_json::Error),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand used by validation code: an [`Error::InvalidScenario`].
pub(crate) fn invalid(
    field: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Error {
    Error::InvalidScenario {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}
