//! Domain types for what a GPU source reads: the slowly changing inventory of each GPU, a
//! per-tick sample of its telemetry, and asynchronous events (Xid, ECC).
//!
//! Every reading that the hardware (or NVML) could not give is `None`, never 0: a consumer must
//! be able to tell "0 MiB free" from "unknown". Readings that failed carry their error text in
//! `missing`, keyed by the reading's name, so a probe of a real machine records why.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bytes in a mebibyte: NVML reports bytes, gpufleet and dcgm-exporter report MiB.
pub const BYTES_PER_MIB: u64 = 1024 * 1024;

/// Driver-wide facts, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// Kernel driver version, e.g. `570.124.06`; feeds the GFD `cuda.driver-version` labels.
    pub driver_version: Option<String>,
    /// NVML library version.
    pub nvml_version: Option<String>,
    /// CUDA driver API version as NVML encodes it (`12080` = 12.8).
    pub cuda_driver_version: Option<i32>,
}

/// CUDA compute capability (`9.0` for Hopper): what kernels a GPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeCapability {
    /// Major version.
    pub major: i32,
    /// Minor version.
    pub minor: i32,
}

/// Multi-Instance GPU mode: a GPU in MIG mode is only schedulable by MIG profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigMode {
    /// MIG enabled now.
    pub current: bool,
    /// MIG enabled after the next GPU reset.
    pub pending: bool,
}

/// What a GPU is: read at start and rarely again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInventory {
    /// NVML index (the `gpu` label of dcgm-exporter).
    pub index: u32,
    /// Globally unique id, `GPU-…`; the stable identity across reboots and index changes.
    pub uuid: Option<String>,
    /// Product name as NVML gives it, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: Option<String>,
    /// PCI bus id, `00000000:18:00.0`.
    pub pci_bus_id: Option<String>,
    /// Device minor number: `/dev/nvidia<minor>` and the `device` label.
    pub minor_number: Option<u32>,
    /// Framebuffer size in MiB.
    pub memory_total_mib: Option<u64>,
    /// Architecture, e.g. `Hopper`.
    pub architecture: Option<String>,
    /// CUDA compute capability.
    pub compute_capability: Option<ComputeCapability>,
    /// Default power limit in watts (enforced limit may be lower).
    pub power_limit_default_watts: Option<f64>,
    /// Highest SM clock in MHz: the reference for clock-throttling ratios.
    pub max_sm_clock_mhz: Option<u32>,
    /// NUMA node the GPU is attached to.
    pub numa_node: Option<u32>,
    /// Whether ECC is enabled now.
    pub ecc_enabled: Option<bool>,
    /// MIG mode at inventory time.
    pub mig_mode: Option<MigMode>,
    /// Event types the GPU can report, as names (`critical_xid`, `double_bit_ecc`, …).
    pub supported_events: Option<Vec<String>>,
    /// The GPU's active NVLinks and what each reaches; `None` when NVML cannot say (a GPU
    /// without NVLink answers `NotSupported`), `Some(empty)` when it has links but none is up.
    /// Topology decides which GPUs a multi-GPU replica may share (see [`crate::topology`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvlinks: Option<Vec<NvLinkPeer>>,
    /// Readings that failed, reading name → error text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, String>,
}

/// One active NVLink of a GPU and the device at its other end, as NVML identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvLinkPeer {
    /// Link number on the GPU (0 to 17 on Hopper and Blackwell).
    pub link: u32,
    /// PCI bus id of the remote device (`00000000:18:00.0`): another GPU of the node, an
    /// NVSwitch, or a CPU's NVLink port. `None` when NVML could not read it.
    pub remote_pci_bus_id: Option<String>,
    /// The remote's PCI ids as NVML packs them: device id in the high 16 bits, vendor id in the
    /// low 16 (`0x22a3_10de` is an NVIDIA NVSwitch). `None` when unknown.
    pub remote_pci_device_id: Option<u32>,
}

/// ECC error counters (counts of errors since driver load or over the GPU's life).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EccCounts {
    /// Corrected (single-bit) errors since the last driver reload.
    pub volatile_corrected: Option<u64>,
    /// Uncorrected (double-bit) errors since the last driver reload.
    pub volatile_uncorrected: Option<u64>,
    /// Corrected errors over the GPU's lifetime.
    pub aggregate_corrected: Option<u64>,
    /// Uncorrected errors over the GPU's lifetime.
    pub aggregate_uncorrected: Option<u64>,
}

/// HBM row remapping state (Ampere and newer): failed remaps mean the GPU needs service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemappedRows {
    /// Rows remapped because of correctable errors.
    pub correctable: Option<u64>,
    /// Rows remapped because of uncorrectable errors.
    pub uncorrectable: Option<u64>,
    /// A remap is pending: it takes effect at the next GPU reset.
    pub pending: Option<bool>,
    /// A remap failed: the GPU ran out of spare rows.
    pub failure: Option<bool>,
}

/// Clock throttle reasons as NVML's bit mask (`nvmlClocksEventReasons`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ThrottleReasons(pub u64);

impl ThrottleReasons {
    /// The GPU is idle and clocks are low on purpose.
    pub const GPU_IDLE: u64 = 0x1;
    /// Clocks set by the application-clocks setting.
    pub const APPLICATIONS_CLOCKS_SETTING: u64 = 0x2;
    /// Software power cap: the board draws its power limit.
    pub const SW_POWER_CAP: u64 = 0x4;
    /// Hardware slowdown (thermal or power brake), halves clocks or worse.
    pub const HW_SLOWDOWN: u64 = 0x8;
    /// Sync boost with other GPUs.
    pub const SYNC_BOOST: u64 = 0x10;
    /// Software thermal slowdown: the GPU or memory is above its target temperature.
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
    /// Hardware thermal slowdown: the GPU is too hot.
    pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
    /// External power brake (the power supply asked for it).
    pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
    /// Clocks limited by the display clock setting.
    pub const DISPLAY_CLOCK_SETTING: u64 = 0x100;

    const NAMES: [(u64, &'static str); 9] = [
        (Self::GPU_IDLE, "gpu_idle"),
        (
            Self::APPLICATIONS_CLOCKS_SETTING,
            "applications_clocks_setting",
        ),
        (Self::SW_POWER_CAP, "sw_power_cap"),
        (Self::HW_SLOWDOWN, "hw_slowdown"),
        (Self::SYNC_BOOST, "sync_boost"),
        (Self::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (Self::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (Self::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
        (Self::DISPLAY_CLOCK_SETTING, "display_clock_setting"),
    ];

    /// Whether the GPU is slowed for heat (software or hardware).
    pub fn thermal(self) -> bool {
        self.0 & (Self::SW_THERMAL_SLOWDOWN | Self::HW_THERMAL_SLOWDOWN) != 0
    }

    /// Whether the GPU is slowed by a power limit or brake.
    pub fn power(self) -> bool {
        self.0 & (Self::SW_POWER_CAP | Self::HW_POWER_BRAKE_SLOWDOWN) != 0
    }

    /// Whether the hardware slowdown line is asserted (heat or power brake).
    pub fn hardware_slowdown(self) -> bool {
        self.0 & (Self::HW_SLOWDOWN | Self::HW_THERMAL_SLOWDOWN | Self::HW_POWER_BRAKE_SLOWDOWN)
            != 0
    }

    /// Names of the set bits, for logs and status; unknown bits as `0x…`.
    pub fn names(self) -> Vec<String> {
        let mut names: Vec<String> = Self::NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| (*name).to_owned())
            .collect();
        let known = Self::NAMES.iter().fold(0, |all, (bit, _)| all | bit);
        let unknown = self.0 & !known;
        if unknown != 0 {
            names.push(format!("{unknown:#x}"));
        }
        names
    }
}

/// A process holding a compute context on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeProcess {
    /// Process id in the host's PID namespace.
    pub pid: u32,
    /// GPU memory the process holds in MiB (unknown under some drivers).
    pub used_memory_mib: Option<u64>,
}

/// One reading of one GPU's telemetry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// NVML index of the GPU this sample is of.
    pub index: u32,
    /// Framebuffer size in MiB.
    pub memory_total_mib: Option<u64>,
    /// Framebuffer allocated in MiB (includes `reserved` on drivers that report it).
    pub memory_used_mib: Option<u64>,
    /// Framebuffer free in MiB: what a new workload can still get.
    pub memory_free_mib: Option<u64>,
    /// Framebuffer reserved by the driver and firmware in MiB.
    pub memory_reserved_mib: Option<u64>,
    /// Percent of time a kernel ran over the last sample period.
    pub gpu_utilization_percent: Option<u32>,
    /// Percent of time device memory was read or written.
    pub memory_utilization_percent: Option<u32>,
    /// GPU die temperature in °C.
    pub temperature_celsius: Option<u32>,
    /// Board power draw in W.
    pub power_usage_watts: Option<f64>,
    /// Enforced power limit in W.
    pub power_limit_watts: Option<f64>,
    /// Energy since the driver loaded in mJ (a counter).
    pub total_energy_millijoules: Option<u64>,
    /// SM clock in MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock in MHz.
    pub memory_clock_mhz: Option<u32>,
    /// Why clocks are below their maximum.
    pub throttle_reasons: Option<ThrottleReasons>,
    /// ECC error counters.
    pub ecc: EccCounts,
    /// Row remapping counters and flags.
    pub remapped_rows: RemappedRows,
    /// PCIe replay counter (link retransmissions: a flaky riser or slot).
    pub pcie_replay_counter: Option<u64>,
    /// MIG mode.
    pub mig_mode: Option<MigMode>,
    /// Processes with a compute context and their memory.
    pub processes: Option<Vec<ComputeProcess>>,
    /// Readings that failed, reading name → error text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, String>,
}

impl GpuSample {
    /// An empty sample for a GPU: every reading absent.
    pub fn absent(index: u32) -> Self {
        Self {
            index,
            ..Self::default()
        }
    }

    /// Whether the GPU answered nothing because it is gone (fell off the bus).
    pub fn lost(&self) -> bool {
        // The NVML source records errors as `Name: message`; NVML_ERROR_GPU_IS_LOST is `GpuLost`.
        self.missing
            .values()
            .any(|error| error.starts_with("GpuLost"))
    }
}

/// What an asynchronous event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A critical Xid error with its code (NVIDIA's Xid catalogue).
    Xid {
        /// The Xid number, e.g. 79 = fell off the bus.
        code: u64,
    },
    /// A single-bit (corrected) ECC error.
    SingleBitEcc,
    /// A double-bit (uncorrected) ECC error.
    DoubleBitEcc,
    /// Any other event, with NVML's event-type bits.
    Other {
        /// NVML event-type bits.
        bits: u64,
    },
}

/// An event of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEvent {
    /// NVML index of the GPU, when the event could be attributed.
    pub gpu_index: Option<u32>,
    /// What happened.
    pub kind: EventKind,
    /// When the agent saw it, Unix milliseconds.
    pub at_unix_ms: u64,
}

/// One tick of a node: every GPU's sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// When the sample was taken, Unix milliseconds.
    pub at_unix_ms: u64,
    /// Per-GPU samples, in index order.
    pub gpus: Vec<GpuSample>,
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_millis_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_reason_names_cover_known_and_unknown_bits() {
        let reasons = ThrottleReasons(
            ThrottleReasons::SW_POWER_CAP | ThrottleReasons::HW_THERMAL_SLOWDOWN | 0x10_0000,
        );
        assert_eq!(
            reasons.names(),
            vec!["sw_power_cap", "hw_thermal_slowdown", "0x100000"]
        );
        assert!(reasons.thermal());
        assert!(reasons.power());
        assert!(reasons.hardware_slowdown());
        assert!(!ThrottleReasons(ThrottleReasons::GPU_IDLE).thermal());
    }

    #[test]
    fn absent_sample_serialises_without_inventing_zeroes() {
        let json = serde_json::to_value(GpuSample::absent(3)).unwrap_or_default();
        assert_eq!(json["index"], 3);
        assert!(json["memory_free_mib"].is_null());
        assert!(json["ecc"]["volatile_uncorrected"].is_null());
    }
}
