//! gpufleet node agent: the eyes of gpufleet on every GPU node.
//!
//! It reads GPU inventory, telemetry and events from a [`GpuSource`] — NVML through
//! nvml-wrapper (the real driver, or the stand-in libnvidia-ml in tests), a pure-Rust simulation,
//! or a replayed fixture — and turns them into a graded health state, Prometheus metrics with
//! dcgm-exporter's names, and the node's `GpuNode` status.
//!
//! ```text
//!  libnvidia-ml ─► NvmlSource ─┐
//!  presets+faults ─► Simulated ─┼─► GpuSource ─► samples ─► health ─► GpuNode status (apply)
//!  fixture JSON ─► Replay ─────┘                   └──────► /metrics (dcgm names)
//! ```
//!
//! Reads: NVML (or a simulation); for `foreignMemoryMiB` also `/proc/<pid>/cgroup` and the
//! node's Pods (`ownership`, `pod_watch`). Writes: nothing by itself; the publisher writes
//! `GpuNode` objects (with each GPU's `nvlinkGroup` from `topology`) and node labels, the
//! metrics module renders text for an HTTP server.

pub mod fault;
pub mod fixture;
pub mod fleet;
pub mod health;
pub mod metrics;
pub mod nvml;
pub mod ownership;
pub mod pod_watch;
pub mod preset;
pub mod publisher;
pub mod reading;
pub mod sampler;
pub mod server;
pub mod simulated;
pub mod source;
pub mod status;
pub mod topology;

use std::path::PathBuf;

pub use source::GpuSource;

/// Result of the agent crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NVML could not be loaded or initialised.
    #[error(
        "could not initialise NVML from {library}: {source}. Install the NVIDIA driver \
         (it provides libnvidia-ml.so.1), or point the agent at the library with \
         --nvml-lib PATH (for example /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1, or the \
         gpufleet stand-in libgpufleet_nvml_standin.so)"
    )]
    InitNvml {
        /// The library path or name that was tried.
        library: String,
        /// NVML's error.
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    /// NVML could not count the GPUs.
    #[error("could not count GPUs through NVML: {0}")]
    CountDevices(#[source] nvml_wrapper::error::NvmlError),
    /// A GPU handle could not be had.
    #[error("could not open GPU {index} through NVML: {source}")]
    OpenDevice {
        /// NVML index.
        index: u32,
        /// NVML's error.
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    /// Waiting on the NVML event set failed.
    #[error("could not wait for NVML events: {0}")]
    WaitForEvents(#[source] nvml_wrapper::error::NvmlError),
    /// A fault script could not be parsed.
    #[error("fault `{input}`: {reason}")]
    ParseFault {
        /// The fault text.
        input: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// No machine preset has this name.
    #[error(
        "unknown machine preset `{0}`: use one of dgx_h100, dgx_h200, hgx_b200, l40s_box, mixed"
    )]
    UnknownPreset(String),
    /// The metrics endpoint could not listen.
    #[error("could not serve metrics on {address}: {source}; pick another --metrics-address")]
    BindMetrics {
        /// The address asked for.
        address: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Node could not be read.
    #[error("could not read Node {node}: {source}")]
    ReadNode {
        /// Node name.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The GpuNode could not be applied.
    #[error("could not apply GpuNode {node}: {source}")]
    PublishGpuNode {
        /// Node name.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A write to the apiserver did not finish in time; it is retried.
    #[error(
        "writing GpuNode {node} took longer than {after:?}; the apiserver is slow or unreachable"
    )]
    WriteTimedOut {
        /// Node name.
        node: String,
        /// The time limit.
        after: std::time::Duration,
    },
    /// The Node's labels could not be applied.
    #[error("could not label Node {node}: {source}")]
    LabelNode {
        /// Node name.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A fixture file could not be read.
    #[error("could not read fixture {path}: {source}")]
    ReadFixture {
        /// The fixture path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A fixture file is not valid fixture JSON.
    #[error("fixture {path} is not a gpufleet fixture: {source}")]
    ParseFixture {
        /// The fixture path.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}
