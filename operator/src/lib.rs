//! gpufleet-operator: places InferenceDeployment replicas on GPUs and keeps them there.
//!
//! ```text
//!  watches                         decides (pure)                     writes
//!  ───────                         ──────────────                     ──────
//!  InferenceDeployment ─┐
//!  Pods (owned) ────────┼─► snapshot::build ─► placement Engine ─►  Pods bound to a node,
//!  Nodes ───────────────┤    (FleetSnapshot)   rollout::plan         GPUs in an annotation and
//!  GpuNodes ────────────┘                      (create / delete)     NVIDIA_VISIBLE_DEVICES;
//!                                                                    status (SSA) + Events
//! ```
//!
//! Kubernetes is the only source of truth: Pods carry their placement (node, GPU indices and
//! UUIDs, shares, decision time) in annotations, so a restarted or newly elected operator
//! rebuilds everything from the cluster. Decisions made but not yet visible in the Pod cache
//! are kept in an in-flight ledger and counted as placements (shadow accounting), and one
//! placement lock serialises decisions across deployments, so no GPU is promised twice.
//! Only the holder of the `gpufleet-operator` Lease reconciles ([`leader`]).

pub mod controller;
pub mod defragment;
pub mod leader;
pub mod metrics;
pub mod reconnect;
pub mod replica;
pub mod rollout;
pub mod snapshot;
pub mod status;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "gpufleet-operator";

/// Everything the operator can fail at; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing or watching a resource failed.
    #[error("reading {resource} from the Kubernetes API: {source}")]
    ReadCluster {
        /// What was being read.
        resource: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A cache stopped before it was filled.
    #[error("the {resource} cache stopped before it was synced")]
    CacheNotSynced {
        /// What was being cached.
        resource: &'static str,
    },
    /// An InferenceDeployment's template does not decode as a Pod template.
    #[error("InferenceDeployment {deployment}: {why}")]
    InvalidTemplate {
        /// `namespace/name` of the deployment.
        deployment: String,
        /// Where the template does not fit a PodTemplateSpec, and why.
        why: String,
    },
    /// Creating a replica's Pod failed.
    #[error("creating Pod {pod}: {source}")]
    CreatePod {
        /// The Pod's name.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a replica's Pod failed.
    #[error("deleting Pod {pod}: {source}")]
    DeletePod {
        /// The Pod's name.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Marking a replica's Pod for a defragmenting move failed.
    #[error("annotating Pod {pod} for a move: {source}")]
    MarkPod {
        /// The Pod's name.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing an InferenceDeployment's status failed.
    #[error("writing status of {name}: {source}")]
    WriteStatus {
        /// `namespace/name` of the deployment.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The engine refused its input (a malformed snapshot or request).
    #[error("placement engine: {0}")]
    Placement(#[from] gpufleet_placement::Error),
    /// An object lacks a field the operator needs (name, namespace, uid).
    #[error("{kind} has no {field}")]
    MissingField {
        /// The object's kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The Lease could not be read or written.
    #[error("leader election on Lease {lease}: {source}")]
    LeaderElection {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another replica holds the Lease now, or it could not be renewed in time.
    #[error("lost the leader Lease {lease}")]
    LostLeadership {
        /// The Lease's name.
        lease: String,
    },
    /// The metrics endpoint could not be served.
    #[error("serving metrics on {address}: {source}")]
    ServeMetrics {
        /// The address.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of the operator's fallible steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
