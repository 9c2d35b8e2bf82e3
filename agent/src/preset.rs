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
    /// How the GPUs are joined by NVLink.
    pub nvlink: NvLinkTopology,
}

/// How a machine's GPUs are joined by NVLink, as the stand-in NVML and the simulation report
/// it link by link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NvLinkTopology {
    /// PCIe only: NVML answers `NotSupported` for every link.
    None,
    /// An HGX baseboard: every link of every GPU goes to one of the NVSwitches, round robin.
    Switched {
        /// Links per GPU (18 on Hopper and Blackwell).
        links_per_gpu: u32,
        /// PCI bus ids of the NVSwitches.
        switch_buses: Vec<String>,
    },
    /// NVLink bridges between pairs of GPUs (NVML indices); GPUs in no pair have no NVLink.
    Bridged {
        /// Bridged pairs.
        pairs: Vec<(u32, u32)>,
        /// Links each bridge carries.
        links_per_pair: u32,
    },
}

/// NVML's packed PCI ids of an NVSwitch (device `0x22a3`, vendor NVIDIA): what `lspci -n`
/// shows for the third-generation NVSwitch of DGX/HGX H100. The stand-in plays it for every
/// switched preset; the agent looks only at the vendor half.
pub const NVSWITCH_PCI_DEVICE_ID: u32 = 0x22a3_10de;

/// NVSwitch PCI buses of an HGX H100/H200 baseboard (four switches).
const HGX_HOPPER_SWITCH_BUSES: [u8; 4] = [0x05, 0x06, 0x07, 0x08];
/// NVSwitch PCI buses of an HGX B200 baseboard (two switch chips).
const HGX_BLACKWELL_SWITCH_BUSES: [u8; 2] = [0x05, 0x06];

fn switched(buses: &[u8]) -> NvLinkTopology {
    NvLinkTopology::Switched {
        links_per_gpu: 18,
        switch_buses: buses
            .iter()
            .map(|bus| format!("00000000:{bus:02X}:00.0"))
            .collect(),
    }
}

impl MachinePreset {
    /// The active NVLinks of GPU `index` and their remotes; `None` when it has no NVLink.
    pub fn nvlinks(&self, index: u32) -> Option<Vec<crate::reading::NvLinkPeer>> {
        use crate::reading::NvLinkPeer;
        match &self.nvlink {
            NvLinkTopology::None => None,
            NvLinkTopology::Switched {
                links_per_gpu,
                switch_buses,
            } => {
                if switch_buses.is_empty() || usize::try_from(index).ok()? >= self.gpus.len() {
                    return None;
                }
                Some(
                    (0..*links_per_gpu)
                        .zip(switch_buses.iter().cycle())
                        .map(|(link, bus)| NvLinkPeer {
                            link,
                            remote_pci_bus_id: Some(bus.clone()),
                            remote_pci_device_id: Some(NVSWITCH_PCI_DEVICE_ID),
                        })
                        .collect(),
                )
            }
            NvLinkTopology::Bridged {
                pairs,
                links_per_pair,
            } => {
                let partner = pairs.iter().find_map(|(first, second)| {
                    (*first == index)
                        .then_some(*second)
                        .or_else(|| (*second == index).then_some(*first))
                })?;
                let bus = self
                    .gpus
                    .get(usize::try_from(partner).ok()?)?
                    .pci_bus_id
                    .clone();
                Some(
                    (0..*links_per_pair)
                        .map(|link| NvLinkPeer {
                            link,
                            remote_pci_bus_id: Some(bus.clone()),
                            remote_pci_device_id: None,
                        })
                        .collect(),
                )
            }
        }
    }
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

fn machine(name: &str, gpus: Vec<GpuSlot>, nvlink: NvLinkTopology) -> MachinePreset {
    MachinePreset {
        name: name.to_owned(),
        gpus,
        driver_version: "580.159.04".to_owned(),
        cuda_driver_version: 13_000,
        nvlink,
    }
}

/// DGX H100: eight H100 SXM5 80 GB on four NVSwitches (one NVLink group of eight).
pub fn dgx_h100() -> MachinePreset {
    machine(
        "dgx_h100",
        slots(std::iter::repeat_n(GpuModel::h100_sxm(), 8), &HGX_BUSES),
        switched(&HGX_HOPPER_SWITCH_BUSES),
    )
}

/// DGX H200: eight H200 141 GB on four NVSwitches.
pub fn dgx_h200() -> MachinePreset {
    machine(
        "dgx_h200",
        slots(std::iter::repeat_n(GpuModel::h200_sxm(), 8), &HGX_BUSES),
        switched(&HGX_HOPPER_SWITCH_BUSES),
    )
}

/// HGX B200: eight B200 180 GB on two NVSwitch chips.
pub fn hgx_b200() -> MachinePreset {
    machine(
        "hgx_b200",
        slots(std::iter::repeat_n(GpuModel::b200_sxm(), 8), &HGX_BUSES),
        switched(&HGX_BLACKWELL_SWITCH_BUSES),
    )
}

/// An inference box with four L40S on PCIe (the L40S has no NVLink).
pub fn l40s_box() -> MachinePreset {
    machine(
        "l40s_box",
        slots(
            std::iter::repeat_n(GpuModel::l40s(), 4),
            &[0x17, 0x65, 0xca, 0xe3],
        ),
        NvLinkTopology::None,
    )
}

/// A mixed node: two H100 joined by an NVLink bridge (12 links) and two L40S on PCIe only
/// (what placement must not confuse: one NVLink pair, two GPUs without a group). A second pair
/// would need NVLink on the L40S, which it does not have.
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
        NvLinkTopology::Bridged {
            pairs: vec![(0, 1)],
            links_per_pair: 12,
        },
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
