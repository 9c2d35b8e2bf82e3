//! The fleet as the dashboard shows it: what a [`FleetFeed`] reports per node (the `GpuNode`
//! status shape the agent publishes), the flattened [`FleetView`] the API and the heatmap read,
//! and the stranded-capacity analysis (free memory that no compute can use, and the reverse).
//!
//! Pure: no I/O. Readings that a source could not take stay `None` here too, never 0.

use std::collections::BTreeMap;

use gpufleet_api::InferenceDeployment;
use gpufleet_api::gpu_node::{GpuNodeStatus, HealthState};
use serde::Serialize;

use crate::placement::PlacementSource;

/// What a feed reports for one node on one tick: the node's identity plus its `GpuNode`
/// status, exactly as the agent would publish it (so a cluster watcher and the simulation fill
/// it the same way).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeReading {
    /// The Kubernetes node name (the `GpuNode` name).
    pub name: String,
    /// Node labels (zone, rack, …); placement's node selectors and spread read them.
    pub labels: BTreeMap<String, String>,
    /// The node's Ready condition.
    pub ready: bool,
    /// The GPUs with telemetry and graded health.
    pub status: GpuNodeStatus,
}

/// Where the dashboard's live view comes from. The binary implements it over the agent's
/// simulated machines (`--simulate`), tests over scripted readings; a cluster watcher can
/// implement it over a `GpuNode` reflector. It is called from a blocking thread, once per tick.
pub trait FleetFeed: Send + 'static {
    /// Every node now.
    fn read(&mut self) -> Vec<NodeReading>;

    /// The InferenceDeployments whose replicas the dashboard places and shows; an empty list
    /// when the feed has none.
    fn deployments(&mut self) -> Vec<InferenceDeployment>;

    /// Who places the deployments' replicas. A feed over a real cluster says
    /// [`PlacementSource::Operator`]: the operator's `status` is what runs there, and a what-if
    /// round of the dashboard's engine would show placements that do not exist. Feeds without
    /// an operator (a simulation, tests) keep the default, a what-if round per change.
    fn placement_source(&self) -> PlacementSource {
        PlacementSource::WhatIf
    }
}

/// One GPU as the API and the heatmap show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuView {
    /// Node the GPU is in.
    pub node: String,
    /// NVML index on the node.
    pub index: u32,
    /// Stable UUID.
    pub uuid: String,
    /// Product name (GPU Feature Discovery spelling).
    pub product: String,
    /// Total memory, MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: u64,
    /// Used memory, MiB.
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: Option<u64>,
    /// Free memory, MiB.
    #[serde(rename = "memoryFreeMiB")]
    pub memory_free_mib: Option<u64>,
    /// Utilisation, percent.
    pub utilization_percent: Option<u32>,
    /// Temperature, °C.
    pub temperature_celsius: Option<u32>,
    /// Power draw, W.
    pub power_watts: Option<f64>,
    /// Power limit, W.
    pub power_limit_watts: Option<f64>,
    /// Health grade.
    pub health: HealthState,
    /// Codes of every reason behind the grade (`FellOffTheBus`, `ThermalThrottling`, …).
    pub reasons: Vec<String>,
    /// Compute capability, e.g. `9.0`.
    pub compute_capability: Option<String>,
    /// NVLink domain.
    pub nvlink_group: Option<u32>,
    /// NUMA node.
    pub numa_node: Option<i32>,
    /// Whether clocks are throttled.
    pub throttled: bool,
}

/// One node with its GPUs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Ready condition.
    pub ready: bool,
    /// The product when all GPUs share one, else `mixed`.
    pub product: String,
    /// GPUs in index order.
    pub gpus: Vec<GpuView>,
}

/// Fleet-wide counts, for the page header and quick checks.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetTotals {
    /// Nodes.
    pub nodes: usize,
    /// GPUs.
    pub gpus: usize,
    /// Healthy GPUs.
    pub healthy: usize,
    /// Degraded GPUs.
    pub degraded: usize,
    /// Unhealthy GPUs.
    pub unhealthy: usize,
    /// Total memory, MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: u64,
    /// Used memory over GPUs that report it, MiB.
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: u64,
}

/// The whole fleet at one instant.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    /// When the feed was read, Unix milliseconds.
    pub observed_at_ms: i64,
    /// Counts.
    pub totals: FleetTotals,
    /// Nodes sorted by name.
    pub nodes: Vec<NodeView>,
}

impl FleetView {
    /// Flattens feed readings into a view, nodes sorted by name and GPUs by index.
    #[must_use]
    pub fn from_readings(mut readings: Vec<NodeReading>, observed_at_ms: i64) -> Self {
        readings.sort_by(|a, b| a.name.cmp(&b.name));
        let mut totals = FleetTotals::default();
        let nodes: Vec<NodeView> = readings
            .into_iter()
            .map(|reading| {
                let mut gpus: Vec<GpuView> = reading
                    .status
                    .gpus
                    .iter()
                    .map(|device| GpuView {
                        node: reading.name.clone(),
                        index: device.index,
                        uuid: device.uuid.clone(),
                        product: device.product.clone(),
                        memory_total_mib: device.memory_total_mib,
                        memory_used_mib: device.telemetry.memory_used_mib,
                        memory_free_mib: device.telemetry.memory_free_mib,
                        utilization_percent: device.telemetry.utilization_percent,
                        temperature_celsius: device.telemetry.temperature_celsius,
                        power_watts: device.telemetry.power_watts,
                        power_limit_watts: device.telemetry.power_limit_watts,
                        health: device.health.state,
                        reasons: device
                            .health
                            .reasons
                            .iter()
                            .map(|reason| reason.code.clone())
                            .collect(),
                        compute_capability: device.compute_capability.clone(),
                        nvlink_group: device.nvlink_group,
                        numa_node: device.numa_node,
                        throttled: !device.telemetry.throttle_reasons.is_empty(),
                    })
                    .collect();
                gpus.sort_by_key(|gpu| gpu.index);
                for gpu in &gpus {
                    totals.gpus += 1;
                    match gpu.health {
                        HealthState::Healthy => totals.healthy += 1,
                        HealthState::Degraded => totals.degraded += 1,
                        HealthState::Unhealthy => totals.unhealthy += 1,
                    }
                    totals.memory_total_mib += gpu.memory_total_mib;
                    totals.memory_used_mib += gpu.memory_used_mib.unwrap_or(0);
                }
                let product = uniform_product(&gpus);
                NodeView {
                    name: reading.name,
                    labels: reading.labels,
                    ready: reading.ready,
                    product,
                    gpus,
                }
            })
            .collect();
        totals.nodes = nodes.len();
        FleetView {
            observed_at_ms,
            totals,
            nodes,
        }
    }

    /// Every GPU, node by node.
    pub fn gpus(&self) -> impl Iterator<Item = &GpuView> {
        self.nodes.iter().flat_map(|node| node.gpus.iter())
    }

    /// The node with this name.
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes
            .binary_search_by(|node| node.name.as_str().cmp(name))
            .ok()
            .and_then(|position| self.nodes.get(position))
    }
}

fn uniform_product(gpus: &[GpuView]) -> String {
    match gpus.first() {
        None => "none".to_owned(),
        Some(first) if gpus.iter().all(|gpu| gpu.product == first.product) => first.product.clone(),
        Some(_) => "mixed".to_owned(),
    }
}

/// Below this share of free compute a GPU's free memory is stranded: nothing can run there.
pub const BUSY_COMPUTE_SHARE: f64 = 0.1;
/// Below this share of free memory a GPU's free compute is stranded: no model fits there.
pub const FULL_MEMORY_SHARE: f64 = 0.1;

/// Free and stranded capacity of one group of GPUs (a node's GPUs of one product, or one
/// product fleet-wide).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrandedCapacity {
    /// Node name (`*` for a product-wide row).
    pub node: String,
    /// GPU product.
    pub product: String,
    /// GPUs counted (Unhealthy ones excluded: they take no work).
    pub gpus: u32,
    /// Unhealthy GPUs left out.
    pub unhealthy_gpus: u32,
    /// Free memory, MiB.
    #[serde(rename = "freeMemoryMiB")]
    pub free_memory_mib: u64,
    /// Free compute in GPU-equivalents (1 − utilisation, summed).
    pub free_compute_gpus: f64,
    /// Free memory on GPUs whose compute is (nearly) exhausted, MiB.
    #[serde(rename = "strandedMemoryMiB")]
    pub stranded_memory_mib: u64,
    /// Free compute on GPUs whose memory is (nearly) full, GPU-equivalents.
    pub stranded_compute_gpus: f64,
}

impl StrandedCapacity {
    fn add(&mut self, gpu: &GpuView) {
        if gpu.health == HealthState::Unhealthy {
            self.unhealthy_gpus += 1;
            return;
        }
        // Without readings nothing can be said: such a GPU counts but adds no free capacity.
        let (Some(free), Some(utilisation)) = (gpu.memory_free_mib, gpu.utilization_percent) else {
            self.gpus += 1;
            return;
        };
        self.gpus += 1;
        let free_compute = (100.0 - f64::from(utilisation.min(100))) / 100.0;
        #[expect(
            clippy::cast_precision_loss,
            reason = "GPU memory sizes in MiB are far below 2^52"
        )]
        let free_memory_share = free as f64 / gpu.memory_total_mib.max(1) as f64;
        self.free_memory_mib += free;
        self.free_compute_gpus += free_compute;
        if free_compute < BUSY_COMPUTE_SHARE {
            self.stranded_memory_mib += free;
        }
        if free_memory_share < FULL_MEMORY_SHARE {
            self.stranded_compute_gpus += free_compute;
        }
    }
}

/// Stranded capacity per node and product (sorted by node, then product), and per product
/// over the whole fleet (node `*`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrandedReport {
    /// One row per node and product.
    pub nodes: Vec<StrandedCapacity>,
    /// One row per product.
    pub products: Vec<StrandedCapacity>,
}

/// Computes the stranded-capacity report of a fleet.
#[must_use]
pub fn stranded(fleet: &FleetView) -> StrandedReport {
    let mut by_node: BTreeMap<(String, String), StrandedCapacity> = BTreeMap::new();
    let mut by_product: BTreeMap<String, StrandedCapacity> = BTreeMap::new();
    for gpu in fleet.gpus() {
        by_node
            .entry((gpu.node.clone(), gpu.product.clone()))
            .or_insert_with(|| StrandedCapacity {
                node: gpu.node.clone(),
                product: gpu.product.clone(),
                ..StrandedCapacity::default()
            })
            .add(gpu);
        by_product
            .entry(gpu.product.clone())
            .or_insert_with(|| StrandedCapacity {
                node: "*".to_owned(),
                product: gpu.product.clone(),
                ..StrandedCapacity::default()
            })
            .add(gpu);
    }
    StrandedReport {
        nodes: by_node.into_values().collect(),
        products: by_product.into_values().collect(),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders for GPU readings, shared by this crate's unit tests.
    use gpufleet_api::gpu_node::{GpuDevice, GpuHealth, GpuTelemetry, HealthReason};

    use super::*;

    /// A GPU device with the given readings.
    pub(crate) fn device(
        index: u32,
        product: &str,
        total: u64,
        used: u64,
        utilisation: u32,
        health: HealthState,
    ) -> GpuDevice {
        GpuDevice {
            index,
            uuid: format!("GPU-{product}-{index}"),
            product: product.to_owned(),
            memory_total_mib: total,
            compute_capability: Some("9.0".to_owned()),
            telemetry: GpuTelemetry {
                memory_used_mib: Some(used),
                memory_free_mib: Some(total - used),
                utilization_percent: Some(utilisation),
                temperature_celsius: Some(50),
                power_watts: Some(300.0),
                power_limit_watts: Some(700.0),
                ..GpuTelemetry::default()
            },
            health: GpuHealth {
                state: health,
                reasons: if health == HealthState::Healthy {
                    Vec::new()
                } else {
                    vec![HealthReason {
                        code: "FellOffTheBus".to_owned(),
                        message: "Xid 79".to_owned(),
                        severity: health,
                        needs_reset: true,
                        since: None,
                    }]
                },
                last_transition_time: None,
            },
            ..GpuDevice::default()
        }
    }

    /// A ready node with these GPUs (their UUIDs made unique by the node's name).
    pub(crate) fn node(name: &str, mut gpus: Vec<GpuDevice>) -> NodeReading {
        for gpu in &mut gpus {
            gpu.uuid = format!("GPU-{name}-{}", gpu.index);
        }
        NodeReading {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            ready: true,
            status: GpuNodeStatus {
                gpus,
                ..GpuNodeStatus::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{device, node};
    use super::*;

    #[test]
    fn view_sorts_nodes_and_counts_health_and_memory() {
        let fleet = FleetView::from_readings(
            vec![
                node(
                    "b",
                    vec![device(
                        1,
                        "H100",
                        80_000,
                        10_000,
                        50,
                        HealthState::Unhealthy,
                    )],
                ),
                node(
                    "a",
                    vec![
                        device(1, "H100", 80_000, 20_000, 50, HealthState::Healthy),
                        device(0, "L40S", 46_000, 1_000, 50, HealthState::Degraded),
                    ],
                ),
            ],
            7,
        );
        assert_eq!(fleet.nodes[0].name, "a");
        assert_eq!(fleet.nodes[0].gpus[0].index, 0);
        assert_eq!(fleet.nodes[0].product, "mixed");
        assert_eq!(fleet.totals.gpus, 3);
        assert_eq!(
            (
                fleet.totals.healthy,
                fleet.totals.degraded,
                fleet.totals.unhealthy
            ),
            (1, 1, 1)
        );
        assert_eq!(fleet.totals.memory_used_mib, 31_000);
        assert_eq!(fleet.node("b").map(|node| node.gpus.len()), Some(1));
        assert!(fleet.node("c").is_none());
        assert_eq!(fleet.nodes[1].gpus[0].reasons, vec!["FellOffTheBus"]);
    }

    #[test]
    fn stranded_memory_sits_on_busy_gpus_and_stranded_compute_on_full_ones() {
        let fleet = FleetView::from_readings(
            vec![node(
                "n",
                vec![
                    // Busy (95 %) with 60 GB free: that memory is stranded.
                    device(0, "H100", 80_000, 20_000, 95, HealthState::Healthy),
                    // Memory full (2 GB free) and 70 % idle: that compute is stranded.
                    device(1, "H100", 80_000, 78_000, 30, HealthState::Healthy),
                    // Unhealthy: excluded.
                    device(2, "H100", 80_000, 0, 0, HealthState::Unhealthy),
                    // Balanced: free but not stranded.
                    device(3, "H100", 80_000, 40_000, 50, HealthState::Healthy),
                ],
            )],
            0,
        );
        let report = stranded(&fleet);
        let row = &report.nodes[0];
        assert_eq!(row.gpus, 3);
        assert_eq!(row.unhealthy_gpus, 1);
        assert_eq!(row.free_memory_mib, 60_000 + 2_000 + 40_000);
        assert_eq!(row.stranded_memory_mib, 60_000);
        assert!((row.stranded_compute_gpus - 0.7).abs() < 1e-9);
        assert!((row.free_compute_gpus - (0.05 + 0.7 + 0.5)).abs() < 1e-9);
        assert_eq!(report.products.len(), 1);
        assert_eq!(report.products[0].node, "*");
    }
}
