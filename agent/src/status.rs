//! What the agent writes to Kubernetes, computed as plain values: the `GpuNode` status from the
//! agent's [`NodeView`], GPU Feature Discovery style node labels, and when a write is due.
//!
//! ```text
//! NodeView ─► gpu_node_status() ─► GpuNodeStatus ─┐
//!          └► Fingerprint ─► PublishPolicy::decide(last published, now) ─► Publish(why) | Wait
//! ```
//!
//! Writes are change-driven with hysteresis: a health change, a GPU appearing or vanishing, or
//! free memory moving by a significant amount (compared with the last *published* figure, so a
//! value hovering at a bucket edge does not flap) is published at once; otherwise only a
//! heartbeat every 30 s. Pure: the publisher does the I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use gpufleet_api::gpu_node::{
    GpuDevice, GpuHealth as ApiHealth, GpuNodeStatus, GpuTelemetry, HealthReason as ApiReason,
    HealthState as ApiState,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::health::{GpuHealth, HealthState};
use crate::metrics::NodeView;
use crate::reading::{GpuInventory, GpuSample};

/// GFD's spelling of a product name: spaces become dashes (`NVIDIA-H100-80GB-HBM3`).
pub fn gfd_product(name: &str) -> String {
    name.trim().replace(' ', "-")
}

/// A Kubernetes time from Unix milliseconds.
pub fn time_from_unix_ms(unix_ms: u64) -> Option<Time> {
    let millis = i64::try_from(unix_ms).ok()?;
    k8s_openapi::jiff::Timestamp::from_millisecond(millis)
        .ok()
        .map(Time)
}

fn api_state(state: HealthState) -> ApiState {
    match state {
        HealthState::Healthy => ApiState::Healthy,
        HealthState::Degraded => ApiState::Degraded,
        HealthState::Unhealthy => ApiState::Unhealthy,
    }
}

fn api_health(health: Option<&GpuHealth>, transition_ms: Option<u64>) -> ApiHealth {
    let Some(health) = health else {
        return ApiHealth::default();
    };
    ApiHealth {
        state: api_state(health.state),
        reasons: health
            .reasons
            .iter()
            .map(|reason| ApiReason {
                code: reason.code.as_str().to_owned(),
                message: reason.message.clone(),
                severity: api_state(reason.severity),
                needs_reset: reason.needs_reset,
                since: time_from_unix_ms(reason.since_ms),
            })
            .collect(),
        last_transition_time: transition_ms.and_then(time_from_unix_ms),
    }
}

fn telemetry(
    sample: Option<&GpuSample>,
    sampled_at_ms: Option<u64>,
    foreign_memory_mib: Option<u64>,
) -> GpuTelemetry {
    let Some(sample) = sample else {
        return GpuTelemetry::default();
    };
    GpuTelemetry {
        memory_free_mib: sample.memory_free_mib,
        memory_used_mib: sample.memory_used_mib,
        utilization_percent: sample.gpu_utilization_percent,
        temperature_celsius: sample.temperature_celsius,
        power_watts: sample.power_usage_watts,
        power_limit_watts: sample.power_limit_watts,
        throttle_reasons: sample
            .throttle_reasons
            .map(|reasons| reasons.names())
            .unwrap_or_default(),
        foreign_memory_mib,
        sampled_at: sampled_at_ms.and_then(time_from_unix_ms),
    }
}

/// What the status builder knows of one GPU besides its inventory.
struct DeviceFacts<'view> {
    sample: Option<&'view GpuSample>,
    sampled_at_ms: Option<u64>,
    health: Option<&'view GpuHealth>,
    transition_ms: Option<u64>,
    nvlink_group: Option<u32>,
    foreign_memory_mib: Option<u64>,
}

fn device(gpu: &GpuInventory, facts: &DeviceFacts<'_>) -> GpuDevice {
    let DeviceFacts {
        sample,
        sampled_at_ms,
        health,
        transition_ms,
        nvlink_group,
        foreign_memory_mib,
    } = *facts;
    GpuDevice {
        index: gpu.index,
        uuid: gpu
            .uuid
            .clone()
            .unwrap_or_else(|| format!("unknown-gpu-{}", gpu.index)),
        product: gpu.name.as_deref().map(gfd_product).unwrap_or_default(),
        memory_total_mib: gpu
            .memory_total_mib
            .or_else(|| sample.and_then(|sample| sample.memory_total_mib))
            .unwrap_or(0),
        compute_capability: gpu
            .compute_capability
            .map(|capability| format!("{}.{}", capability.major, capability.minor)),
        pci_bus_id: gpu.pci_bus_id.clone(),
        nvlink_group,
        numa_node: gpu.numa_node.and_then(|node| i32::try_from(node).ok()),
        mig_enabled: sample
            .and_then(|sample| sample.mig_mode)
            .or(gpu.mig_mode)
            .map(|mode| mode.current),
        telemetry: telemetry(sample, sampled_at_ms, foreign_memory_mib),
        health: api_health(health, transition_ms),
    }
}

/// Memory on this GPU held by processes gpufleet did not place, when the agent can tell: it
/// needs the GPU's process list, the owner of each process and the Pods placed on this node.
fn foreign_memory_of(
    view: &NodeView,
    gpu: &GpuInventory,
    sample: Option<&GpuSample>,
) -> Option<u64> {
    crate::ownership::foreign_memory_mib(
        gpu.uuid.as_deref()?,
        sample?.processes.as_deref()?,
        view.process_owners.as_ref()?,
        view.placements.as_ref()?,
    )
}

/// The CUDA version as people write it (`13.0`) from NVML's integer (`13000`).
pub fn cuda_version(encoded: i32) -> String {
    format!("{}.{}", encoded / 1000, (encoded % 1000) / 10)
}

/// The `GpuNode` status for a view. `transitions` holds when each GPU's state last changed;
/// `now_ms` stamps the heartbeat.
pub fn gpu_node_status(
    view: &NodeView,
    source: &str,
    transitions: &BTreeMap<u32, u64>,
    now_ms: u64,
) -> GpuNodeStatus {
    let sampled_at = view.sample.as_ref().map(|sample| sample.at_unix_ms);
    let groups = crate::topology::nvlink_groups(&view.inventory);
    let gpus = view
        .inventory
        .iter()
        .map(|gpu| {
            let sample = view
                .sample
                .as_ref()
                .and_then(|sample| sample.gpus.iter().find(|other| other.index == gpu.index));
            let facts = DeviceFacts {
                sample,
                sampled_at_ms: sampled_at,
                health: view.health.get(&gpu.index),
                transition_ms: transitions.get(&gpu.index).copied(),
                nvlink_group: groups.get(&gpu.index).copied(),
                foreign_memory_mib: foreign_memory_of(view, gpu, sample),
            };
            device(gpu, &facts)
        })
        .collect();
    let ready = view.sample.is_some();
    let mut status = GpuNodeStatus {
        gpus,
        summary: None,
        last_heartbeat_time: time_from_unix_ms(now_ms),
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        driver_version: view.driver.driver_version.clone(),
        cuda_version: view.driver.cuda_driver_version.map(cuda_version),
        source: Some(source.to_owned()),
        conditions: vec![Condition {
            type_: "Ready".to_owned(),
            status: if ready { "True" } else { "False" }.to_owned(),
            reason: if ready { "Sampling" } else { "NoSample" }.to_owned(),
            message: if ready {
                format!("the agent reads {} GPU(s)", view.inventory.len())
            } else {
                "the agent has not read the GPUs yet".to_owned()
            },
            last_transition_time: time_from_unix_ms(now_ms)
                .unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            observed_generation: None,
        }],
        observed_generation: None,
    };
    status.summarise();
    status
}

/// GPU Feature Discovery labels for the node (product, count, memory, compute capability,
/// driver version); empty without inventory.
pub fn gfd_labels(view: &NodeView) -> BTreeMap<String, String> {
    use gpufleet_api::labels::{
        GPU_COMPUTE_MAJOR_LABEL, GPU_COMPUTE_MINOR_LABEL, GPU_COUNT_LABEL, GPU_MEMORY_LABEL,
        GPU_PRODUCT_LABEL,
    };
    let mut labels = BTreeMap::new();
    let Some(first) = view.inventory.first() else {
        return labels;
    };
    let products: std::collections::BTreeSet<String> = view
        .inventory
        .iter()
        .filter_map(|gpu| gpu.name.as_deref().map(gfd_product))
        .collect();
    if products.len() == 1
        && let Some(product) = products.first()
    {
        labels.insert(GPU_PRODUCT_LABEL.to_owned(), product.clone());
    } else if products.len() > 1 {
        labels.insert(GPU_PRODUCT_LABEL.to_owned(), "mixed".to_owned());
    }
    labels.insert(GPU_COUNT_LABEL.to_owned(), view.inventory.len().to_string());
    if let Some(memory) = first.memory_total_mib {
        labels.insert(GPU_MEMORY_LABEL.to_owned(), memory.to_string());
    }
    if let Some(capability) = first.compute_capability {
        labels.insert(
            GPU_COMPUTE_MAJOR_LABEL.to_owned(),
            capability.major.to_string(),
        );
        labels.insert(
            GPU_COMPUTE_MINOR_LABEL.to_owned(),
            capability.minor.to_string(),
        );
    }
    if let Some(version) = &view.driver.driver_version {
        let parts: Vec<&str> = version.split('.').collect();
        let names = ["major", "minor", "revision"];
        for (name, part) in names.iter().zip(&parts) {
            labels.insert(
                format!("nvidia.com/cuda.driver-version.{name}"),
                (*part).to_owned(),
            );
        }
        labels.insert(
            "nvidia.com/cuda.driver-version.full".to_owned(),
            version.clone(),
        );
    }
    labels
}

/// What must not change unnoticed in a published status.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// Per GPU: index, health state and reason codes.
    pub health: Vec<(u32, HealthState, Vec<&'static str>)>,
    /// Per GPU: index and free memory in MiB (None when unknown).
    pub memory_free_mib: Vec<(u32, Option<u64>)>,
    /// Per GPU: index and memory held by processes gpufleet did not place, in MiB.
    pub foreign_memory_mib: Vec<(u32, Option<u64>)>,
    /// Per GPU: total memory in MiB, for the significance threshold.
    pub memory_total_mib: BTreeMap<u32, u64>,
    /// Whether a sample exists.
    pub ready: bool,
}

impl Fingerprint {
    /// The fingerprint of a view.
    pub fn of(view: &NodeView) -> Self {
        let health = view
            .inventory
            .iter()
            .map(|gpu| {
                let graded = view.health.get(&gpu.index);
                (
                    gpu.index,
                    graded.map_or(HealthState::Healthy, |health| health.state),
                    graded
                        .map(|health| {
                            health
                                .reasons
                                .iter()
                                .map(|reason| reason.code.as_str())
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            })
            .collect();
        let samples = view
            .sample
            .as_ref()
            .map(|sample| sample.gpus.as_slice())
            .unwrap_or_default();
        Self {
            health,
            memory_free_mib: samples
                .iter()
                .map(|gpu| (gpu.index, gpu.memory_free_mib))
                .collect(),
            foreign_memory_mib: view
                .inventory
                .iter()
                .map(|gpu| {
                    let sample = samples.iter().find(|sample| sample.index == gpu.index);
                    (gpu.index, foreign_memory_of(view, gpu, sample))
                })
                .collect(),
            memory_total_mib: view
                .inventory
                .iter()
                .filter_map(|gpu| Some((gpu.index, gpu.memory_total_mib?)))
                .collect(),
            ready: view.sample.is_some(),
        }
    }
}

/// Why a write is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishReason {
    /// Nothing published yet.
    First,
    /// A GPU's health grade or reasons changed, a GPU appeared or vanished, or readiness changed.
    HealthChanged,
    /// Free memory moved by more than the threshold on some GPU.
    MemoryChanged,
    /// Nothing changed, but the heartbeat is due.
    Heartbeat,
}

/// When to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishPolicy {
    /// Heartbeat period when nothing changes.
    pub heartbeat: Duration,
    /// Smallest free-memory change that counts, in MiB…
    pub memory_threshold_mib: u64,
    /// …or as a fraction of the GPU's memory, whichever is larger.
    pub memory_threshold_fraction: f64,
    /// Shortest gap between two change-driven writes of memory alone (health changes go at once).
    pub memory_min_gap: Duration,
}

impl Default for PublishPolicy {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(30),
            memory_threshold_mib: 1024,
            memory_threshold_fraction: 0.02,
            memory_min_gap: Duration::from_secs(1),
        }
    }
}

impl PublishPolicy {
    fn memory_significant(&self, last: &Fingerprint, now: &Fingerprint) -> bool {
        self.figures_significant(&last.memory_free_mib, &now.memory_free_mib, now)
            || self.figures_significant(&last.foreign_memory_mib, &now.foreign_memory_mib, now)
    }

    /// Whether a per-GPU memory figure moved by the threshold, or became known or unknown.
    fn figures_significant(
        &self,
        last: &[(u32, Option<u64>)],
        figures: &[(u32, Option<u64>)],
        now: &Fingerprint,
    ) -> bool {
        let previous: BTreeMap<u32, Option<u64>> = last.iter().copied().collect();
        figures.iter().any(|(index, free)| {
            let Some(before) = previous.get(index) else {
                return true;
            };
            match (before, free) {
                (Some(before), Some(free)) => {
                    let total = now.memory_total_mib.get(index).copied().unwrap_or(0);
                    #[expect(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        clippy::cast_precision_loss,
                        reason = "a fraction of a GPU's memory in MiB"
                    )]
                    let relative = (total as f64 * self.memory_threshold_fraction) as u64;
                    before.abs_diff(*free) >= self.memory_threshold_mib.max(relative)
                }
                (None, None) => false,
                _ => true,
            }
        })
    }

    /// Whether to write now, given what was last published and how long ago.
    pub fn decide(
        &self,
        last: Option<(&Fingerprint, Duration)>,
        now: &Fingerprint,
    ) -> Option<PublishReason> {
        let Some((last, since)) = last else {
            return Some(PublishReason::First);
        };
        if last.health != now.health || last.ready != now.ready {
            return Some(PublishReason::HealthChanged);
        }
        if since >= self.memory_min_gap && self.memory_significant(last, now) {
            return Some(PublishReason::MemoryChanged);
        }
        (since >= self.heartbeat).then_some(PublishReason::Heartbeat)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::GpuSource;
    use crate::preset;
    use crate::simulated::{SimulatedSource, SimulationClock};

    fn view(faults: &str) -> crate::Result<NodeView> {
        crate::metrics::simulated_view(preset::dgx_h200(), faults, 1_000)
    }

    #[test]
    fn status_carries_inventory_telemetry_and_health() -> crate::Result<()> {
        let view = view("xid:79@gpu3@t=0s")?;
        let status = gpu_node_status(&view, "simulated:dgx_h200", &BTreeMap::new(), 5_000);
        assert_eq!(status.gpus.len(), 8);
        assert_eq!(status.gpus[0].product, "NVIDIA-H200");
        assert_eq!(status.gpus[0].compute_capability.as_deref(), Some("9.0"));
        assert_eq!(status.gpus[3].health.state, ApiState::Unhealthy);
        assert_eq!(status.gpus[3].health.reasons[0].code, "GpuLost");
        assert_eq!(status.gpus[3].telemetry.memory_free_mib, None);
        assert!(status.gpus[0].telemetry.memory_free_mib.is_some());
        let summary = status.summary.unwrap_or_default();
        assert_eq!((summary.gpu_count, summary.healthy_count), (8, 7));
        assert_eq!(status.cuda_version.as_deref(), Some("13.0"));
        assert_eq!(status.conditions[0].status, "True");
        Ok(())
    }

    #[test]
    fn nvlink_groups_follow_each_preset_topology() -> crate::Result<()> {
        let groups = |machine: preset::MachinePreset| -> crate::Result<Vec<Option<u32>>> {
            let mut source =
                SimulatedSource::new(machine, "node-a", Vec::new(), SimulationClock::manual());
            let view = NodeView {
                inventory: source.inventory()?,
                sample: Some(source.sample()?),
                ..NodeView::default()
            };
            let status = gpu_node_status(&view, "simulated", &BTreeMap::new(), 5_000);
            Ok(status.gpus.iter().map(|gpu| gpu.nvlink_group).collect())
        };
        // NVSwitch baseboards: one group of eight.
        assert_eq!(groups(preset::dgx_h100())?, vec![Some(0); 8]);
        assert_eq!(groups(preset::dgx_h200())?, vec![Some(0); 8]);
        assert_eq!(groups(preset::hgx_b200())?, vec![Some(0); 8]);
        // PCIe only: no group.
        assert_eq!(groups(preset::l40s_box())?, vec![None; 4]);
        // One bridged H100 pair, two L40S without NVLink.
        assert_eq!(groups(preset::mixed())?, vec![Some(0), Some(0), None, None]);
        Ok(())
    }

    #[test]
    fn foreign_memory_is_published_only_when_processes_can_be_attributed() -> crate::Result<()> {
        use crate::ownership::ProcessOwner;
        let mut view = view("foreign:20000@gpu0@t=0s")?;
        let processes = |view: &NodeView, index: usize| {
            view.sample
                .as_ref()
                .map(|sample| sample.gpus[index].processes.clone().unwrap_or_default())
                .unwrap_or_default()
        };
        // Without attribution the figure is unknown, not 0.
        let status = gpu_node_status(&view, "simulated", &BTreeMap::new(), 5_000);
        assert_eq!(status.gpus[0].telemetry.foreign_memory_mib, None);
        // gpufleet placed one Pod on every GPU; each GPU's job runs in that GPU's Pod, the
        // foreign process on GPU 0 runs outside any Pod.
        let mut owners = BTreeMap::new();
        let mut placements = crate::ownership::GpuPlacements::new();
        for (index, gpu) in view.inventory.iter().enumerate() {
            let pod = format!("pod-{index}");
            for process in processes(&view, index) {
                let owner = if process.used_memory_mib == Some(20_000) {
                    ProcessOwner::Host
                } else {
                    ProcessOwner::Pod(pod.clone())
                };
                owners.insert(process.pid, owner);
            }
            placements
                .entry(gpu.uuid.clone().unwrap_or_default())
                .or_default()
                .insert(pod);
        }
        view.process_owners = Some(owners);
        view.placements = Some(placements);
        let status = gpu_node_status(&view, "simulated", &BTreeMap::new(), 5_000);
        assert_eq!(status.gpus[0].telemetry.foreign_memory_mib, Some(20_000));
        assert_eq!(status.gpus[1].telemetry.foreign_memory_mib, Some(0));
        // A lost GPU lists no processes: its foreign memory is unknown.
        let lost = {
            let mut lost = view.clone();
            if let Some(sample) = lost.sample.as_mut() {
                sample.gpus[2].processes = None;
            }
            gpu_node_status(&lost, "simulated", &BTreeMap::new(), 5_000)
        };
        assert_eq!(lost.gpus[2].telemetry.foreign_memory_mib, None);
        // Attribution becoming available is a change worth publishing.
        let before = Fingerprint::of(&{
            let mut unattributed = view.clone();
            unattributed.placements = None;
            unattributed
        });
        assert_eq!(
            PublishPolicy::default().decide(
                Some((&before, Duration::from_secs(2))),
                &Fingerprint::of(&view)
            ),
            Some(PublishReason::MemoryChanged)
        );
        Ok(())
    }

    #[test]
    fn gfd_labels_follow_gpu_feature_discovery() -> crate::Result<()> {
        let labels = gfd_labels(&view("")?);
        assert_eq!(
            labels.get("nvidia.com/gpu.product").map(String::as_str),
            Some("NVIDIA-H200")
        );
        assert_eq!(
            labels.get("nvidia.com/gpu.count").map(String::as_str),
            Some("8")
        );
        assert_eq!(
            labels.get("nvidia.com/gpu.memory").map(String::as_str),
            Some("143771")
        );
        assert_eq!(
            labels
                .get("nvidia.com/gpu.compute.major")
                .map(String::as_str),
            Some("9")
        );
        assert_eq!(
            labels
                .get("nvidia.com/cuda.driver-version.full")
                .map(String::as_str),
            Some("580.159.04")
        );
        assert_eq!(
            labels
                .get("nvidia.com/cuda.driver-version.revision")
                .map(String::as_str),
            Some("04")
        );
        Ok(())
    }

    #[test]
    fn health_change_publishes_at_once_and_steady_state_only_heartbeats() -> crate::Result<()> {
        let policy = PublishPolicy::default();
        let healthy = Fingerprint::of(&view("")?);
        let broken = Fingerprint::of(&view("xid:79@gpu3@t=0s")?);
        assert_eq!(policy.decide(None, &healthy), Some(PublishReason::First));
        assert_eq!(
            policy.decide(Some((&healthy, Duration::from_millis(10))), &broken),
            Some(PublishReason::HealthChanged)
        );
        assert_eq!(
            policy.decide(Some((&healthy, Duration::from_secs(29))), &healthy),
            None
        );
        assert_eq!(
            policy.decide(Some((&healthy, Duration::from_secs(30))), &healthy),
            Some(PublishReason::Heartbeat)
        );
        Ok(())
    }

    #[test]
    fn foreign_memory_is_significant_but_jitter_is_not() -> crate::Result<()> {
        let policy = PublishPolicy::default();
        let before = Fingerprint::of(&view("")?);
        let eaten = Fingerprint::of(&view("foreign:20000@gpu0@t=0s")?);
        assert_eq!(
            policy.decide(Some((&before, Duration::from_secs(2))), &eaten),
            Some(PublishReason::MemoryChanged)
        );
        // Within the first second memory alone waits (hysteresis)…
        assert_eq!(
            policy.decide(Some((&before, Duration::from_millis(500))), &eaten),
            None
        );
        // …and a small wobble never counts.
        let mut jitter = before.clone();
        if let Some((_, Some(free))) = jitter.memory_free_mib.first_mut() {
            *free -= 100;
        }
        assert_eq!(
            policy.decide(Some((&before, Duration::from_secs(5))), &jitter),
            None
        );
        Ok(())
    }

    #[test]
    fn cuda_versions_read_like_nvidia_smi() {
        assert_eq!(cuda_version(13_000), "13.0");
        assert_eq!(cuda_version(12_080), "12.8");
    }

    proptest! {
        /// In steady state (no change) the agent writes at most once per heartbeat period.
        #[test]
        fn steady_state_writes_at_most_once_per_heartbeat(ticks in proptest::collection::vec(1u64..5_000, 1..200)) {
            let policy = PublishPolicy::default();
            let state = Fingerprint::of(&view("").map_err(|error| TestCaseError::fail(error.to_string()))?);
            let mut since_last = Duration::ZERO;
            let mut now = Duration::ZERO;
            let mut writes = 0u64;
            for tick in ticks {
                now += Duration::from_millis(tick);
                since_last += Duration::from_millis(tick);
                if policy.decide(Some((&state, since_last)), &state).is_some() {
                    writes += 1;
                    since_last = Duration::ZERO;
                }
            }
            prop_assert!(writes <= now.as_secs() / 30);
        }
    }
}
