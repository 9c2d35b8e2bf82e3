//! Named machine presets: what a node's GPUs are, for the simulated source and the stand-in
//! libnvidia-ml (like NVIDIA's go-nvml mock machines).
//!
//! Figures are the products' public ones; the H200's idle and loaded readings were checked
//! against a real H200 (driver 580.159.04, `agent/testdata/h200-*.json`): 143,771 MiB total,
//! 615 MiB reserved, 81 W and 33 °C idle at 345 MHz, 692 W under a bf16 matrix load at the
//! 700 W software power cap, 1,500 MHz and 57 °C.

use serde::{Deserialize, Serialize};

/// One GPU model's fixed figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuModel {
    /// Product name as NVML reports it.
    pub name: String,
    /// Architecture name as nvml-wrapper prints it.
    pub architecture: String,
    /// CUDA compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Framebuffer size in MiB.
    pub memory_total_mib: u64,
    /// Framebuffer the driver reserves in MiB.
    pub memory_reserved_mib: u64,
    /// Default (and enforced) power limit in W.
    pub power_limit_watts: f64,
    /// Power drawn idle in W.
    pub idle_power_watts: f64,
    /// Highest SM clock in MHz.
    pub max_sm_clock_mhz: u32,
    /// SM clock when idle in MHz.
    pub idle_sm_clock_mhz: u32,
    /// Memory clock in MHz.
    pub memory_clock_mhz: u32,
    /// Temperature idle in °C.
    pub idle_temperature_celsius: u32,
    /// Temperature at full load in °C.
    pub loaded_temperature_celsius: u32,
    /// Whether the model supports MIG.
    pub mig_capable: bool,
}

impl GpuModel {
    /// NVIDIA H100 SXM5 80 GB.
    pub fn h100_sxm() -> Self {
        Self {
            name: "NVIDIA H100 80GB HBM3".to_owned(),
            architecture: "Hopper".to_owned(),
            compute_capability: (9, 0),
            memory_total_mib: 81_559,
            memory_reserved_mib: 527,
            power_limit_watts: 700.0,
            idle_power_watts: 72.0,
            max_sm_clock_mhz: 1_980,
            idle_sm_clock_mhz: 345,
            memory_clock_mhz: 2_619,
            idle_temperature_celsius: 31,
            loaded_temperature_celsius: 62,
            mig_capable: true,
        }
    }

    /// NVIDIA H200 SXM 141 GB (figures read from a real one).
    pub fn h200_sxm() -> Self {
        Self {
            name: "NVIDIA H200".to_owned(),
            architecture: "Hopper".to_owned(),
            compute_capability: (9, 0),
            memory_total_mib: 143_771,
            memory_reserved_mib: 615,
            power_limit_watts: 700.0,
            idle_power_watts: 81.0,
            max_sm_clock_mhz: 1_980,
            idle_sm_clock_mhz: 345,
            memory_clock_mhz: 3_201,
            idle_temperature_celsius: 33,
            loaded_temperature_celsius: 57,
            mig_capable: true,
        }
    }

    /// NVIDIA B200 (HGX) 180 GB.
    pub fn b200_sxm() -> Self {
        Self {
            name: "NVIDIA B200".to_owned(),
            architecture: "Blackwell".to_owned(),
            compute_capability: (10, 0),
            memory_total_mib: 183_359,
            memory_reserved_mib: 800,
            power_limit_watts: 1_000.0,
            idle_power_watts: 140.0,
            max_sm_clock_mhz: 1_965,
            idle_sm_clock_mhz: 600,
            memory_clock_mhz: 3_996,
            idle_temperature_celsius: 30,
            loaded_temperature_celsius: 65,
            mig_capable: true,
        }
    }

    /// NVIDIA L40S (PCIe, no MIG).
    pub fn l40s() -> Self {
        Self {
            name: "NVIDIA L40S".to_owned(),
            architecture: "Ada".to_owned(),
            compute_capability: (8, 9),
            memory_total_mib: 46_068,
            memory_reserved_mib: 469,
            power_limit_watts: 350.0,
            idle_power_watts: 34.0,
            max_sm_clock_mhz: 2_520,
            idle_sm_clock_mhz: 210,
            memory_clock_mhz: 9_001,
            idle_temperature_celsius: 28,
            loaded_temperature_celsius: 70,
            mig_capable: false,
        }
    }
}

/// One GPU slot of a machine: model and PCI address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSlot {
    /// The GPU model.
    pub model: GpuModel,
    /// PCI bus id, `00000000:18:00.0`.
    pub pci_bus_id: String,
}

/// A named machine: its GPUs in NVML index order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachinePreset {
    /// Preset name, as `GPUFLEET_NVML_PRESET` takes it.
    pub name: String,
    /// GPUs in index order.
    pub gpus: Vec<GpuSlot>,
    /// Driver version the machine reports.
    pub driver_version: String,
    /// CUDA driver version as NVML encodes it.
    pub cuda_driver_version: i32,
}

/// PCI buses of the eight GPUs of an HGX baseboard (DGX H100 layout).
const HGX_BUSES: [u8; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

fn slots(models: impl IntoIterator<Item = GpuModel>, buses: &[u8]) -> Vec<GpuSlot> {
    models
        .into_iter()
        .zip(buses.iter())
        .map(|(model, bus)| GpuSlot {
            model,
            pci_bus_id: format!("00000000:{bus:02X}:00.0"),
        })
        .collect()
}

fn machine(name: &str, gpus: Vec<GpuSlot>) -> MachinePreset {
    MachinePreset {
        name: name.to_owned(),
        gpus,
        driver_version: "580.159.04".to_owned(),
        cuda_driver_version: 13_000,
    }
}

/// DGX H100: eight H100 SXM5 80 GB.
pub fn dgx_h100() -> MachinePreset {
    machine(
        "dgx_h100",
        slots(std::iter::repeat_n(GpuModel::h100_sxm(), 8), &HGX_BUSES),
    )
}

/// DGX H200: eight H200 141 GB.
pub fn dgx_h200() -> MachinePreset {
    machine(
        "dgx_h200",
        slots(std::iter::repeat_n(GpuModel::h200_sxm(), 8), &HGX_BUSES),
    )
}

/// HGX B200: eight B200 180 GB.
pub fn hgx_b200() -> MachinePreset {
    machine(
        "hgx_b200",
        slots(std::iter::repeat_n(GpuModel::b200_sxm(), 8), &HGX_BUSES),
    )
}

/// An inference box with four L40S on PCIe.
pub fn l40s_box() -> MachinePreset {
    machine(
        "l40s_box",
        slots(
            std::iter::repeat_n(GpuModel::l40s(), 4),
            &[0x17, 0x65, 0xca, 0xe3],
        ),
    )
}

/// A mixed node: two H100 and two L40S (what placement must not confuse).
pub fn mixed() -> MachinePreset {
    machine(
        "mixed",
        slots(
            [
                GpuModel::h100_sxm(),
                GpuModel::h100_sxm(),
                GpuModel::l40s(),
                GpuModel::l40s(),
            ],
            &[0x18, 0x2a, 0xca, 0xe3],
        ),
    )
}

/// Names of every preset, for help texts and errors.
pub const PRESET_NAMES: [&str; 5] = ["dgx_h100", "dgx_h200", "hgx_b200", "l40s_box", "mixed"];

/// The preset with this name.
pub fn by_name(name: &str) -> Option<MachinePreset> {
    match name {
        "dgx_h100" => Some(dgx_h100()),
        "dgx_h200" => Some(dgx_h200()),
        "hgx_b200" => Some(hgx_b200()),
        "l40s_box" => Some(l40s_box()),
        "mixed" => Some(mixed()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_preset_resolves_with_distinct_pci_addresses() {
        for name in PRESET_NAMES {
            let preset = by_name(name);
            assert_eq!(preset.as_ref().map(|p| p.name.as_str()), Some(name));
            let buses: std::collections::BTreeSet<_> = preset
                .iter()
                .flat_map(|p| p.gpus.iter().map(|gpu| gpu.pci_bus_id.clone()))
                .collect();
            assert_eq!(buses.len(), preset.map(|p| p.gpus.len()).unwrap_or(0));
        }
        assert!(by_name("dgx_a100").is_none());
    }

    #[test]
    fn dgx_machines_have_eight_gpus_and_mixed_has_two_models() {
        assert_eq!(dgx_h100().gpus.len(), 8);
        assert_eq!(dgx_h200().gpus[0].model.memory_total_mib, 143_771);
        assert_eq!(hgx_b200().gpus[7].pci_bus_id, "00000000:DB:00.0");
        let models: std::collections::BTreeSet<_> = mixed()
            .gpus
            .iter()
            .map(|gpu| gpu.model.name.clone())
            .collect();
        assert_eq!(models.len(), 2);
    }
}
