//! `InferenceDeployment`: a set of identical inference replicas that need GPUs.
//!
//! It reads like a Deployment (replicas, pod template, a scale subresource for `kubectl scale`
//! and HorizontalPodAutoscalers, maxUnavailable/maxSurge) plus what a GPU scheduler needs: the
//! per-replica GPU need (whole GPUs, or a fraction of one with a memory size), which products
//! qualify, and a placement policy. The operator owns the Pods, binds each to the node and GPUs
//! its placement engine chose, and reports where every replica sits and why.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::pod_template::PodTemplate;

/// Desired state of an InferenceDeployment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufleet.io",
    version = "v1alpha1",
    kind = "InferenceDeployment",
    plural = "inferencedeployments",
    shortname = "idep",
    shortname = "infdep",
    category = "gpufleet",
    namespaced,
    status = "InferenceDeploymentStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Unplaced","type":"integer","jsonPath":".status.unplacedReplicas"}"#,
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.placement.strategy"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceDeploymentSpec {
    /// Number of replicas wanted. Zero parks the deployment without deleting it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100_000))]
    pub replicas: i32,
    /// What one replica needs from the GPUs it lands on.
    pub gpu: GpuRequirement,
    /// How replicas are spread over nodes and GPUs.
    #[serde(default)]
    pub placement: PlacementPolicy,
    /// How many replicas may be missing or extra while the operator moves or replaces them.
    #[serde(default)]
    pub disruption: DisruptionBudget,
    /// Pod template of one replica, as in a Deployment. The operator adds the GPU resource
    /// limit, the chosen node and `NVIDIA_VISIBLE_DEVICES`; it must not set `nodeName` itself.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplate,
}

fn default_replicas() -> i32 {
    1
}

/// The pod template is validated by the apiserver when the operator creates the Pod, with the
/// full Pod schema of that apiserver; embedding a copy of that schema here would make the CRD
/// hundreds of kilobytes and pin it to one Kubernetes version. Only the part the operator
/// depends on is checked here.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Pod template of one replica (core/v1 PodTemplateSpec).",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "nodeName": {"type": "string"},
                    "containers": {
                        "type": "array",
                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                },
                "required": ["containers"],
                "x-kubernetes-validations": [{
                    "rule": "!has(self.nodeName)",
                    "message": "spec.template.spec.nodeName must be empty: the operator chooses the node"
                }, {
                    "rule": "size(self.containers) > 0",
                    "message": "spec.template.spec.containers must list at least one container"
                }]
            }
        },
        "required": ["spec"]
    })
}

/// The GPU need of one replica: whole GPUs (`count`) or a share of one GPU (`fraction`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.count) != has(self.fraction)").message("spec.gpu: set exactly one of spec.gpu.count (whole GPUs) or spec.gpu.fraction (a share of one GPU)"))]
#[x_kube(validation = Rule::new("!has(self.fraction) || has(self.memoryMiB)").message("spec.gpu.memoryMiB is required with spec.gpu.fraction: say how much GPU memory one replica needs"))]
pub struct GpuRequirement {
    /// Whole GPUs per replica; a replica with more than one gets GPUs of one NVLink group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub count: Option<u32>,
    /// Share of one GPU's compute, in (0, 1]. Replicas with fractions share a GPU as long as
    /// both the compute shares and the memory fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1.0))]
    #[x_kube(validation = Rule::new("self > 0.0").message("spec.gpu.fraction must be greater than 0; use spec.gpu.count for whole GPUs"))]
    pub fraction: Option<f64>,
    /// GPU memory one replica needs on each of its GPUs, MiB. Placement checks it against the
    /// memory the GPU really has free (including memory held by processes gpufleet did not
    /// place), plus the policy's headroom.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4_194_304))]
    pub memory_mib: Option<u64>,
    /// GPU products allowed, as GFD labels them (`nvidia.com/gpu.product`); empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub products: Vec<String>,
    /// Lowest CUDA compute capability allowed, e.g. `8.0` for Ampere and newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    pub min_compute_capability: Option<String>,
}

/// Placement strategy of the operator's engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PlacementStrategy {
    /// Choose the GPU whose use least fragments the fleet for the expected workload mix
    /// (FGD-style); the default.
    #[default]
    FragmentationAware,
    /// Choose the GPU left with the least free capacity that still fits.
    BestFit,
    /// Fill the most allocated nodes first, keeping whole nodes free.
    Pack,
    /// Spread replicas over the least allocated nodes, for failure isolation.
    Spread,
}

/// Where replicas may go and how they are spread.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementPolicy {
    /// The scoring strategy.
    #[serde(default)]
    pub strategy: PlacementStrategy,
    /// At most this many replicas on one node (anti-affinity); absent = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_replicas_per_node: Option<u32>,
    /// Node label keys to spread replicas evenly over, e.g. `topology.kubernetes.io/zone`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_keys: Vec<String>,
    /// Only nodes with all these labels qualify.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Free memory a GPU must keep beyond the replica's need, MiB (CUDA context, fragmentation
    /// of the allocator).
    #[serde(
        default,
        rename = "memoryHeadroomMiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 65_536))]
    pub memory_headroom_mib: Option<u64>,
    /// GPUs at or above this temperature are avoided while cooler ones fit, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 120))]
    pub max_temperature_celsius: Option<u32>,
    /// Soft spreading of the replicas over nodes (and zones, where nodes are labelled
    /// `topology.kubernetes.io/zone`), in GPU-equivalents: a second replica goes to a node
    /// already holding one only when that saves more than this much fragmentation per replica
    /// there. Absent = 1 (spread, as kube-scheduler's default topology spreading does); 0 =
    /// pure packing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub spread_weight: Option<f64>,
}

/// How many replicas may be unavailable or extra while replicas are replaced or moved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(string(self.maxUnavailable) in ['0', '0%'] && string(self.maxSurge) in ['0', '0%'])").message("spec.disruption: maxUnavailable and maxSurge cannot both be 0, or no replica could ever be moved"))]
pub struct DisruptionBudget {
    /// Replicas (or a percentage of `replicas`, rounded down) that may be unavailable at once.
    #[serde(default = "default_max_unavailable")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_unavailable: IntOrString,
    /// Replicas (or a percentage, rounded up) that may exist above `replicas` during a move.
    #[serde(default = "default_max_surge")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_surge: IntOrString,
}

impl Default for DisruptionBudget {
    fn default() -> Self {
        Self {
            max_unavailable: default_max_unavailable(),
            max_surge: default_max_surge(),
        }
    }
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(0)
}

fn default_max_surge() -> IntOrString {
    IntOrString::Int(1)
}

/// An integer ≥ 0 or a percentage such as `25%`, as in a Deployment's rolling update.
fn int_or_percent_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // A structural schema cannot say "integer ≥ 0 or a string matching a pattern" (the
    // branches of an anyOf carry no types), so CEL does.
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "type(self) == string ? self.matches('^[0-9]+%$') : self >= 0",
            "message": "must be an integer >= 0 or a percentage such as '25%'"
        }]
    })
}

/// Observed state of an InferenceDeployment, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas that exist (Pods created and not terminating).
    #[serde(default)]
    pub replicas: i32,
    /// Replicas whose Pod is Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Replicas the engine could not place; a condition and an Event say why.
    #[serde(default)]
    pub unplaced_replicas: i32,
    /// Label selector of the Pods, for the scale subresource and HorizontalPodAutoscalers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `Available`, `Progressing` and `Degraded`, with reasons.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Where every replica sits and why.
    #[serde(default)]
    pub placements: Vec<ReplicaPlacement>,
}

/// Where one replica sits and the score that put it there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaPlacement {
    /// Name of the replica's Pod.
    pub pod: String,
    /// Node the Pod is bound to.
    pub node: String,
    /// GPUs the replica uses, by UUID.
    #[serde(default)]
    pub gpu_uuids: Vec<String>,
    /// Total score of the winning candidate (higher is better).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Score components, e.g. `fragmentation: -0.12, thermal: -0.05`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub score_breakdown: BTreeMap<String, f64>,
}
