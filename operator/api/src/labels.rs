//! Well-known names shared by the agent, the operator, the dashboard and the test control plane.
//!
//! NVIDIA's conventions come first so gpufleet interoperates with the device plugin and GPU
//! Feature Discovery (GFD): a cluster that already runs them keeps working, and gpufleet reads
//! the same labels.

/// Extended resource the NVIDIA device plugin advertises for whole GPUs.
pub const NVIDIA_GPU_RESOURCE: &str = "nvidia.com/gpu";
/// GFD label: product name, e.g. `NVIDIA-H100-80GB-HBM3`.
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// GFD label: GPUs on the node.
pub const GPU_COUNT_LABEL: &str = "nvidia.com/gpu.count";
/// GFD label: memory of one GPU in MiB.
pub const GPU_MEMORY_LABEL: &str = "nvidia.com/gpu.memory";
/// GFD label: architecture family, e.g. `hopper`.
pub const GPU_FAMILY_LABEL: &str = "nvidia.com/gpu.family";
/// GFD label: CUDA compute capability, major part.
pub const GPU_COMPUTE_MAJOR_LABEL: &str = "nvidia.com/gpu.compute.major";
/// GFD label: CUDA compute capability, minor part.
pub const GPU_COMPUTE_MINOR_LABEL: &str = "nvidia.com/gpu.compute.minor";
/// GFD label: the machine type, e.g. `DGX-H100`.
pub const GPU_MACHINE_LABEL: &str = "nvidia.com/gpu.machine";

/// Label on Pods naming the InferenceDeployment that owns them (also `status.selector`).
pub const DEPLOYMENT_LABEL: &str = "gpufleet.io/deployment";
/// Label on Pods with the replica's stable ordinal within its deployment.
pub const REPLICA_LABEL: &str = "gpufleet.io/replica";
/// Annotation on Pods listing the GPU UUIDs the operator chose, comma-separated.
pub const GPU_UUIDS_ANNOTATION: &str = "gpufleet.io/gpu-uuids";
/// Annotation on Nodes that KWOK manages (test control plane only).
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Annotation on Pods: the GPU device indices the replica holds, comma-separated.
pub const GPU_INDICES_ANNOTATION: &str = "gpufleet.io/gpu-indices";
/// Annotation on Pods: compute share per GPU in thousandths (1000 = a whole GPU).
pub const GPU_MILLI_ANNOTATION: &str = "gpufleet.io/gpu-milli";
/// Annotation on Pods: GPU memory reserved per GPU, MiB.
pub const GPU_MEMORY_ANNOTATION: &str = "gpufleet.io/gpu-memory-mib";
/// Annotation on Pods: when the placement was decided, milliseconds since the Unix epoch (shadow
/// accounting compares it with the node's telemetry time).
pub const PLACED_AT_ANNOTATION: &str = "gpufleet.io/placed-at-ms";
/// Annotation on Pods: the placement's score breakdown as JSON, for `kubectl describe`.
pub const SCORE_ANNOTATION: &str = "gpufleet.io/score";
/// Scheduler name on gpufleet's Pods: they are bound by the operator, never by kube-scheduler.
pub const SCHEDULER_NAME: &str = "gpufleet";
/// Annotation the operator's defragmenter puts on a replica it is moving: why, and where to.
/// The rollout then replaces the replica surge-first, within the disruption budget.
pub const MOVE_REASON_ANNOTATION: &str = "gpufleet.io/move-reason";
