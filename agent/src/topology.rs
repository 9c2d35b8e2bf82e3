//! NVLink topology: which GPUs of a node share an NVLink domain, so the operator keeps a
//! multi-GPU replica's tensor-parallel traffic on NVLink instead of PCIe.
//!
//! ```text
//! GpuInventory.nvlinks (per GPU: active links and their remote PCI ids)
//!   ─► classify each remote: a GPU of this node | an NVSwitch | something else
//!   ─► connected components (GPU–GPU links join two GPUs; every GPU that reaches an NVSwitch
//!      joins the one switch fabric of the node, as on DGX/HGX baseboards)
//!   ─► nvlinkGroup = the lowest GPU index of the component (stable across restarts)
//! ```
//!
//! Pure: the NVML source, the simulation and fixtures fill `nvlinks`; the status builder calls
//! [`nvlink_groups`]. A GPU without an active NVLink to a GPU or switch has no group.

use std::collections::BTreeMap;

use crate::reading::{GpuInventory, NvLinkPeer};

/// PCI vendor id of NVIDIA (the low 16 bits of NVML's `pciDeviceId`).
pub const NVIDIA_PCI_VENDOR: u32 = 0x10de;

/// A PCI address as numbers (domain, bus, device, function), so `00000000:18:00.0` (NVML's
/// `busId`) and `0000:18:00.0` (`busIdLegacy`, sysfs) compare equal.
pub fn pci_address(bus_id: &str) -> Option<(u32, u32, u32, u32)> {
    let (domain, rest) = bus_id.trim().split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    Some((
        u32::from_str_radix(domain, 16).ok()?,
        u32::from_str_radix(bus, 16).ok()?,
        u32::from_str_radix(device, 16).ok()?,
        u32::from_str_radix(function, 16).ok()?,
    ))
}

/// What is at the far end of an NVLink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// Another GPU of this node, by NVML index.
    Gpu(u32),
    /// An NVSwitch: an NVIDIA PCI device that is not one of the node's GPUs.
    NvSwitch,
    /// A CPU's NVLink port (IBM POWER NPU), or a remote NVML could not identify: it joins
    /// nothing.
    Other,
}

/// Classifies a link's remote against the node's GPUs (PCI address → NVML index).
///
/// NVML's `nvmlDeviceGetNvLinkRemoteDeviceType` would say it directly, but nvml-wrapper 0.13
/// discards its answer (it passes a temporary to the C call), and older drivers lack it; the
/// remote's PCI ids say the same on every driver.
pub fn classify(
    peer: &NvLinkPeer,
    gpus_by_address: &BTreeMap<(u32, u32, u32, u32), u32>,
) -> LinkEnd {
    let address = peer.remote_pci_bus_id.as_deref().and_then(pci_address);
    if let Some(index) = address.and_then(|address| gpus_by_address.get(&address)) {
        return LinkEnd::Gpu(*index);
    }
    match (address, peer.remote_pci_device_id) {
        (Some(_), Some(ids)) if ids & 0xffff == NVIDIA_PCI_VENDOR => LinkEnd::NvSwitch,
        _ => LinkEnd::Other,
    }
}

/// Union–find over at most a few dozen GPUs plus one switch-fabric node.
fn root(parents: &mut [usize], mut node: usize) -> usize {
    while parents[node] != node {
        parents[node] = parents[parents[node]];
        node = parents[node];
    }
    node
}

fn join(parents: &mut [usize], first: usize, second: usize) {
    let (first, second) = (root(parents, first), root(parents, second));
    // Keep the smaller position as root, so the group id is the lowest index without a
    // second pass.
    let (low, high) = if first <= second {
        (first, second)
    } else {
        (second, first)
    };
    parents[high] = low;
}

/// NVLink group of every GPU that has one, by NVML index: GPUs joined by active NVLinks,
/// directly or through the node's NVSwitches, share the lowest NVML index among them.
pub fn nvlink_groups(inventory: &[GpuInventory]) -> BTreeMap<u32, u32> {
    let gpus_by_address: BTreeMap<(u32, u32, u32, u32), u32> = inventory
        .iter()
        .filter_map(|gpu| Some((pci_address(gpu.pci_bus_id.as_deref()?)?, gpu.index)))
        .collect();
    let mut indices: Vec<u32> = inventory.iter().map(|gpu| gpu.index).collect();
    indices.sort_unstable();
    indices.dedup();
    let position: BTreeMap<u32, usize> = indices
        .iter()
        .enumerate()
        .map(|(position, index)| (*index, position))
        .collect();
    // Positions follow sorted indices; the switch fabric sits after every GPU so it never
    // becomes a group's root while a GPU is in the group.
    let fabric = indices.len();
    let mut parents: Vec<usize> = (0..=fabric).collect();
    let mut linked = vec![false; fabric];
    for gpu in inventory {
        let Some(&from) = position.get(&gpu.index) else {
            continue;
        };
        for peer in gpu.nvlinks.iter().flatten() {
            let to = match classify(peer, &gpus_by_address) {
                LinkEnd::Gpu(index) if index != gpu.index => position.get(&index).copied(),
                LinkEnd::NvSwitch => Some(fabric),
                LinkEnd::Gpu(_) | LinkEnd::Other => None,
            };
            if let Some(to) = to {
                join(&mut parents, from, to);
                linked[from] = true;
                if to < fabric {
                    linked[to] = true;
                }
            }
        }
    }
    indices
        .iter()
        .enumerate()
        .filter(|(from, _)| linked[*from])
        .filter_map(|(from, index)| {
            let group = root(&mut parents, from);
            indices.get(group).map(|group| (*index, *group))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, bus: u8, links: Option<Vec<(&str, Option<u32>)>>) -> GpuInventory {
        GpuInventory {
            index,
            pci_bus_id: Some(format!("00000000:{bus:02X}:00.0")),
            nvlinks: links.map(|links| {
                links
                    .into_iter()
                    .zip(0_u32..)
                    .map(|((remote, ids), link)| NvLinkPeer {
                        link,
                        remote_pci_bus_id: Some(remote.to_owned()),
                        remote_pci_device_id: ids,
                    })
                    .collect()
            }),
            ..GpuInventory::default()
        }
    }

    const SWITCH: Option<u32> = Some(0x22a3_10de);

    #[test]
    fn bus_ids_compare_in_both_nvml_spellings() {
        assert_eq!(pci_address("00000000:DB:00.0"), Some((0, 0xdb, 0, 0)));
        assert_eq!(pci_address("0000:db:00.0"), pci_address("00000000:DB:00.0"));
        assert_eq!(pci_address("not a bus id"), None);
    }

    #[test]
    fn two_bridged_pairs_make_two_groups_named_by_their_lowest_index() {
        let inventory = vec![
            gpu(0, 0x18, Some(vec![("00000000:2A:00.0", None)])),
            gpu(1, 0x2a, Some(vec![("0000:18:00.0", None)])),
            gpu(2, 0x3a, Some(vec![("00000000:5D:00.0", None)])),
            gpu(3, 0x5d, Some(vec![("00000000:3A:00.0", None)])),
        ];
        let groups = nvlink_groups(&inventory);
        assert_eq!(groups, BTreeMap::from([(0, 0), (1, 0), (2, 2), (3, 2)]));
    }

    #[test]
    fn every_gpu_reaching_an_nvswitch_joins_one_group() {
        // GPU 0 reaches switch A only and GPU 7 switch B only: on one baseboard the switches
        // form one fabric, so they still share a group.
        let inventory: Vec<GpuInventory> = (0..8)
            .map(|index| {
                let switch = if index < 4 {
                    "00000000:05:00.0"
                } else {
                    "00000000:06:00.0"
                };
                gpu(
                    index,
                    0x18 + u8::try_from(index).unwrap_or(0),
                    Some(vec![(switch, SWITCH)]),
                )
            })
            .collect();
        let groups = nvlink_groups(&inventory);
        assert_eq!(groups.len(), 8);
        assert!(groups.values().all(|group| *group == 0), "{groups:?}");
    }

    #[test]
    fn pcie_gpus_and_unknown_remotes_have_no_group() {
        let inventory = vec![
            // No NVLink at all (an L40S): NVML said NotSupported.
            gpu(0, 0x17, None),
            // Links up, but none is: a GPU with links and nothing active.
            gpu(1, 0x65, Some(vec![])),
            // A CPU's NVLink port (IBM vendor id) joins nothing.
            gpu(2, 0xca, Some(vec![("00000000:04:00.0", Some(0x04ea_1014))])),
            // A remote NVML could not identify joins nothing either.
            gpu(3, 0xe3, Some(vec![("garbage", SWITCH)])),
        ];
        assert!(nvlink_groups(&inventory).is_empty());
    }

    #[test]
    fn group_ids_do_not_depend_on_inventory_order() {
        let mut inventory = vec![
            gpu(3, 0x5d, Some(vec![("00000000:3A:00.0", None)])),
            gpu(2, 0x3a, Some(vec![("00000000:5D:00.0", None)])),
            gpu(5, 0x9a, None),
        ];
        let forward = nvlink_groups(&inventory);
        inventory.reverse();
        assert_eq!(nvlink_groups(&inventory), forward);
        assert_eq!(forward, BTreeMap::from([(2, 2), (3, 2)]));
    }
}
