//! The `GpuSource` trait: the one seam between the agent and GPU hardware.
//!
//! The agent's loop, health grading, metrics and publishing only ever see a `GpuSource`, so the
//! NVML source (real driver or the stand-in library), the simulated source and fixture replay are
//! interchangeable.

use std::time::Duration;

use crate::Result;
use crate::reading::{DriverInfo, GpuEvent, GpuInventory, NodeSample};

/// A source of GPU inventory, telemetry samples and events for one node.
///
/// Readings that fail for one GPU are recorded in that GPU's `missing` map and never fail the
/// call; only a failure of the whole source (the device count cannot be read) is an error.
pub trait GpuSource: Send {
    /// Driver-wide facts (versions), read once at start.
    fn driver(&self) -> DriverInfo;

    /// What GPUs the node has. Call at start and after a GPU is lost or comes back.
    fn inventory(&mut self) -> Result<Vec<GpuInventory>>;

    /// One telemetry sample of every GPU.
    fn sample(&mut self) -> Result<NodeSample>;

    /// Events (Xid, ECC) that arrived since the last call, waiting at most `timeout` for the
    /// first one. Returns an empty list when none arrived.
    fn wait_for_events(&mut self, timeout: Duration) -> Result<Vec<GpuEvent>>;
}

/// Which source an agent reads, as chosen on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// NVML from this library (`None`: the driver's `libnvidia-ml.so.1`).
    Nvml {
        /// Library path.
        library: Option<std::path::PathBuf>,
    },
    /// A simulated machine.
    Simulated {
        /// Preset name (`dgx_h100`, …).
        preset: String,
        /// Fault script.
        faults: String,
        /// Node name seeding UUIDs and workloads.
        node: String,
    },
    /// A replayed probe fixture.
    Fixture {
        /// Fixture path.
        path: std::path::PathBuf,
    },
}

impl SourceSpec {
    /// Opens the source on the wall clock.
    pub fn open(&self) -> Result<Box<dyn GpuSource>> {
        use crate::simulated::{SimulatedSource, SimulationClock};
        Ok(match self {
            Self::Nvml { library } => Box::new(crate::nvml::NvmlSource::open(
                library.as_deref().map(std::path::Path::as_os_str),
            )?),
            Self::Simulated {
                preset,
                faults,
                node,
            } => {
                let machine = crate::preset::by_name(preset)
                    .ok_or_else(|| crate::Error::UnknownPreset(preset.clone()))?;
                let faults = crate::fault::parse_script(faults)?;
                Box::new(SimulatedSource::new(
                    machine,
                    node,
                    faults,
                    SimulationClock::wall(),
                ))
            }
            Self::Fixture { path } => Box::new(crate::fixture::ReplaySource::new(
                crate::fixture::Fixture::load(path)?,
                SimulationClock::wall(),
            )),
        })
    }

    /// A short description for logs and the `GpuNode` status' `source` field.
    pub fn describe(&self) -> String {
        match self {
            Self::Nvml { library: None } => "nvml".to_owned(),
            Self::Nvml {
                library: Some(path),
            } => format!("nvml:{}", path.display()),
            Self::Simulated { preset, .. } => format!("simulated:{preset}"),
            Self::Fixture { path } => format!("fixture:{}", path.display()),
        }
    }
}
