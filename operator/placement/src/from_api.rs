//! From gpufleet's custom resources to the engine's input (feature `api`).
//!
//! The operator and the dashboard's what-if view must ask the engine the same question for the
//! same InferenceDeployment; this is the one place that translates it.

use gpufleet_api::inference_deployment::{InferenceDeploymentSpec, PlacementStrategy};

use crate::{ComputeCapability, GpuRequest, MemoryNeed, ReplicaRequest, Strategy, TopologySpread};

/// The engine's strategy for a deployment's placement policy.
#[must_use]
pub fn strategy_of(strategy: PlacementStrategy) -> Strategy {
    match strategy {
        PlacementStrategy::FragmentationAware => Strategy::FragmentationAware,
        PlacementStrategy::BestFit => Strategy::BestFit,
        PlacementStrategy::Pack => Strategy::Pack,
        PlacementStrategy::Spread => Strategy::Spread,
    }
}

/// What one replica named `name` of a deployment with `spec` asks the engine for, in `group`
/// (the deployment's `namespace/name`). A `fraction` of 1 is a whole GPU.
#[must_use]
pub fn request_for(
    spec: &InferenceDeploymentSpec,
    name: impl Into<String>,
    group: impl Into<String>,
) -> ReplicaRequest {
    let memory = spec
        .gpu
        .memory_mib
        .map_or(MemoryNeed::ShareOfCapacity, MemoryNeed::Mib);
    let gpu = match (spec.gpu.count, spec.gpu.fraction) {
        (_, Some(fraction)) => {
            // The CRD guarantees 0 < fraction <= 1.
            let milli = (fraction * 1000.0).round().clamp(1.0, 1000.0) as u32;
            if milli >= 1000 {
                GpuRequest::Whole { count: 1, memory }
            } else {
                GpuRequest::Fraction { milli, memory }
            }
        }
        (count, None) => GpuRequest::Whole {
            count: count.unwrap_or(1),
            memory,
        },
    };
    let mut request = ReplicaRequest::new(name, group, gpu);
    request.allowed_products.clone_from(&spec.gpu.products);
    request.min_compute_capability = spec
        .gpu
        .min_compute_capability
        .as_deref()
        .and_then(ComputeCapability::parse);
    request
        .node_selector
        .clone_from(&spec.placement.node_selector);
    request.max_replicas_per_node = spec.placement.max_replicas_per_node;
    request.topology_spread = spec
        .placement
        .topology_keys
        .iter()
        .map(|key| TopologySpread {
            key: key.clone(),
            max_skew: 1,
        })
        .collect();
    request.memory_headroom_mib = spec.placement.memory_headroom_mib;
    request.spread_weight = spec.placement.spread_weight;
    request
}
