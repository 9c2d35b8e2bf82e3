//! `GpuNode`: what the node agent knows about the GPUs of one Kubernetes node.
//!
//! One object per Node, cluster-scoped and named after the Node. The agent on that node is its
//! only writer (a ValidatingAdmissionPolicy enforces it); the operator and the dashboard read
//! it. It carries slowly changing state only — inventory, health, a coarse telemetry summary
//! and a heartbeat — because the agent publishes on significant change, not on every sample;
//! high-rate series go to Prometheus.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a GpuNode: which Kubernetes node it describes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "gpufleet.io",
    version = "v1alpha1",
    kind = "GpuNode",
    plural = "gpunodes",
    shortname = "gpun",
    status = "GpuNodeStatus",
    validation = Rule::new("self.metadata.name == self.spec.nodeName").message("spec.nodeName must equal metadata.name: a GpuNode is named after its Node"),
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"GPUs","type":"integer","jsonPath":".status.summary.gpuCount"}"#,
    printcolumn = r#"{"name":"Healthy","type":"integer","jsonPath":".status.summary.healthyCount"}"#,
    printcolumn = r#"{"name":"Free MiB","type":"integer","jsonPath":".status.summary.memoryFreeMiB"}"#,
    printcolumn = r#"{"name":"Product","type":"string","jsonPath":".status.summary.product","priority":1}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.lastHeartbeatTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeSpec {
    /// Name of the Kubernetes Node these GPUs belong to. Must equal `metadata.name`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.nodeName is immutable: delete and recreate the GpuNode"))]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
}

/// Observed state of a node's GPUs, written by the agent on that node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeStatus {
    /// One entry per physical GPU, ordered by NVML index. A map list keyed by index: the
    /// apiserver refuses two entries with one index, which would make the GPU ambiguous to
    /// every placement.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["index"]))]
    pub gpus: Vec<GpuDevice>,
    /// Aggregates over `gpus`, for printer columns and quick filtering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<GpuNodeSummary>,
    /// When the agent last confirmed this status is current. The operator treats a node whose
    /// heartbeat is older than its staleness limit as unknown and moves replicas away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// Version of the gpufleet agent that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// NVIDIA driver version reported by NVML, e.g. `580.95.05`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA driver API version reported by NVML, e.g. `13.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// Where the readings come from: `nvml` on real hardware, `simulated` in demos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Standard conditions; `Ready` is true while the agent can read the GPUs.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Node-level aggregates of a GpuNode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeSummary {
    /// GPUs found on the node.
    #[schemars(range(max = 64))]
    pub gpu_count: u32,
    /// GPUs whose health is `Healthy`.
    #[schemars(range(max = 64))]
    pub healthy_count: u32,
    /// Sum of free memory over healthy GPUs, MiB.
    #[serde(rename = "memoryFreeMiB")]
    pub memory_free_mib: u64,
    /// Sum of total memory over all GPUs, MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: u64,
    /// Product name when every GPU is the same product, else `mixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

/// One physical GPU: identity, topology, a telemetry summary and graded health.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// NVML index on the node (the `gpu` label of dcgm-exporter). Every bounded integer of
    /// this type has a schema maximum within its Rust type, so no object the apiserver
    /// accepts can fail to decode and stop the watches of every GpuNode.
    #[schemars(range(max = 1023))]
    pub index: u32,
    /// Stable UUID, e.g. `GPU-5c3a…`; what `NVIDIA_VISIBLE_DEVICES` takes.
    #[schemars(length(min = 1))]
    pub uuid: String,
    /// Product name as GFD labels it, e.g. `NVIDIA-H100-80GB-HBM3`.
    pub product: String,
    /// Total framebuffer memory, MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: u64,
    /// CUDA compute capability, e.g. `9.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    pub compute_capability: Option<String>,
    /// PCI bus id, e.g. `00000000:18:00.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// GPUs sharing an NVLink/NVSwitch domain share this number; multi-GPU replicas stay inside
    /// one group. Absent when the GPU has no NVLink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1023))]
    pub nvlink_group: Option<u32>,
    /// NUMA node the GPU is attached to, when the platform reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 1023))]
    pub numa_node: Option<i32>,
    /// Whether MIG mode is enabled on this GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_enabled: Option<bool>,
    /// Latest telemetry summary. Every reading is optional: absent means NVML could not give
    /// it, never zero.
    #[serde(default)]
    pub telemetry: GpuTelemetry,
    /// Graded health with the reasons behind it.
    #[serde(default)]
    pub health: GpuHealth,
}

/// A coarse telemetry summary of one GPU (the agent publishes it on significant change).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuTelemetry {
    /// Free framebuffer memory, MiB; includes memory taken by processes gpufleet did not place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "memoryFreeMiB")]
    pub memory_free_mib: Option<u64>,
    /// Used framebuffer memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: Option<u64>,
    /// GPU utilisation over the last sample period, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub utilization_percent: Option<u32>,
    /// GPU core temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub temperature_celsius: Option<u32>,
    /// Power draw, W.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    /// Enforced power limit, W.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_watts: Option<f64>,
    /// Active clock throttle reasons, e.g. `HwThermalSlowdown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_reasons: Vec<String>,
    /// Processes on this GPU that were not placed by gpufleet, with the memory they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "foreignMemoryMiB")]
    pub foreign_memory_mib: Option<u64>,
    /// When these readings were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<Time>,
}

/// Health grade of a GPU. Placement never uses an `Unhealthy` GPU and penalises a `Degraded`
/// one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum HealthState {
    /// No fault seen, or every fault has decayed away.
    #[default]
    Healthy,
    /// Usable, with a risk (correctable error rate, throttling, application Xids).
    Degraded,
    /// Must not run work (fatal Xid, uncorrectable ECC, remap failure) until reset or repaired.
    Unhealthy,
}

/// Graded health and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuHealth {
    /// The grade.
    #[serde(default)]
    pub state: HealthState,
    /// Every cause currently contributing to the grade.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<HealthReason>,
    /// When `state` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// One cause of a health grade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReason {
    /// Machine-readable cause, e.g. `Xid79`, `DoubleBitEcc`, `ThermalThrottling`.
    pub code: String,
    /// What happened and what an operator should do.
    pub message: String,
    /// The grade this cause alone implies.
    pub severity: HealthState,
    /// True when only a GPU reset or node reboot clears it (it never decays).
    #[serde(default)]
    pub needs_reset: bool,
    /// When the cause was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

impl GpuNodeStatus {
    /// Recomputes `summary` from `gpus`.
    pub fn summarise(&mut self) {
        let first_product = self.gpus.first().map(|gpu| gpu.product.clone());
        let uniform = self
            .gpus
            .iter()
            .all(|gpu| Some(&gpu.product) == first_product.as_ref());
        self.summary = Some(GpuNodeSummary {
            gpu_count: u32::try_from(self.gpus.len()).unwrap_or(u32::MAX),
            healthy_count: u32::try_from(
                self.gpus
                    .iter()
                    .filter(|gpu| gpu.health.state == HealthState::Healthy)
                    .count(),
            )
            .unwrap_or(u32::MAX),
            memory_free_mib: self
                .gpus
                .iter()
                .filter(|gpu| gpu.health.state != HealthState::Unhealthy)
                .filter_map(|gpu| gpu.telemetry.memory_free_mib)
                .sum(),
            memory_total_mib: self.gpus.iter().map(|gpu| gpu.memory_total_mib).sum(),
            product: if uniform {
                first_product
            } else {
                Some("mixed".to_owned())
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, product: &str, free: u64, state: HealthState) -> GpuDevice {
        GpuDevice {
            index,
            uuid: format!("GPU-{index}"),
            product: product.to_owned(),
            memory_total_mib: 81_559,
            telemetry: GpuTelemetry {
                memory_free_mib: Some(free),
                ..Default::default()
            },
            health: GpuHealth {
                state,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn summary_excludes_unhealthy_memory_and_reports_mixed_products() {
        let mut status = GpuNodeStatus {
            gpus: vec![
                gpu(0, "NVIDIA-H100-80GB-HBM3", 1000, HealthState::Healthy),
                gpu(1, "NVIDIA-H100-80GB-HBM3", 500, HealthState::Unhealthy),
                gpu(2, "NVIDIA-L40S", 200, HealthState::Degraded),
            ],
            ..Default::default()
        };
        status.summarise();
        let summary = status.summary.expect("summary");
        assert_eq!(summary.gpu_count, 3);
        assert_eq!(summary.healthy_count, 1);
        assert_eq!(summary.memory_free_mib, 1200);
        assert_eq!(summary.product.as_deref(), Some("mixed"));
    }

    #[test]
    fn absent_readings_are_not_serialised_as_zero() {
        let json = serde_json::to_value(GpuTelemetry::default()).expect("json");
        assert_eq!(json, serde_json::json!({}));
    }
}
