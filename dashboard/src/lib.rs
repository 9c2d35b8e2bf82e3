//! gpufleet-dashboard: the web window on a gpufleet fleet — where it is hot, where memory is
//! stranded, why each replica landed where it did, what the past looked like and what a
//! planning scenario would buy — and PostgreSQL as its memory.
//!
//! ```text
//!  reads                                          writes
//!  ─────                                          ──────
//!  FleetFeed (GpuNode-shaped node readings,       Store: telemetry samples (time series,
//!    InferenceDeployments; the binary fills it      downsampled, retained), placement
//!    from the agent's simulation or a cluster)      decisions with score breakdowns,
//!  HTTP requests (JSON, bearer token for runs)      fleet events, planner runs
//!  shipped planner scenarios                      HTTP responses (JSON, SSE, CSV, UI)
//!
//!  FleetFeed ─tick─► live::LiveFleet::apply ─► FleetView (cached JSON) ─► GET /api/v1/fleet
//!                        │        │                                      GET /  (web UI)
//!                        │        └─► Change frames ─broadcast─► GET /api/v1/events (SSE)
//!                        ├─► placement::place (what-if) or reported (the operator's status)
//!                        │      ─► deployments (and the what-if's decisions)
//!                        └─► Store::record_* (memory or PostgreSQL) ─► GET /api/v1/history
//!  POST /api/v1/planner/runs ─token─► planner_run (gpufleet-planner, size + time limits) ─► Store
//!
//!  kube-apiserver ─watch─► recorder (GpuNode, InferenceDeployment, gpufleet Events)
//!                            ├─► bounded buffer ─► Store (history; retries, drops counted)
//!                            └─► ClusterFeed (a FleetFeed) ─► the live view above, whose
//!                                  deployments are the operator's status (reported), not a what-if
//! ```
//!
//! The crate is a library with a thin main: [`startup::configure`] registers every route and is
//! shared by `gpufleet dashboard` and the tests; [`startup::Application::build`] binds the
//! listener (port 0 in tests) and starts the feed loop. Storage sits behind the [`store::Store`]
//! trait: [`store::memory::MemoryStore`] for `--simulate`, [`store::postgres::PostgresStore`]
//! (sqlx, embedded migrations, batched `UNNEST` ingest, static SQL checked at compile time) for
//! history that survives restarts.

pub mod api;
pub mod auth;
pub mod fleet;
pub mod history;
pub mod live;
pub mod openapi;
pub mod placement;
pub mod planner_run;
pub mod recorder;
pub mod reported;
pub mod startup;
pub mod store;
pub mod ui;

pub use fleet::{FleetFeed, NodeReading};
pub use startup::{Application, Settings};
