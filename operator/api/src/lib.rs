//! gpufleet's Kubernetes API: the custom resources users and components write, and the
//! well-known names (labels, annotations, resource names) they share.
//!
//! ```text
//!   node agent ──writes status──► GpuNode (cluster-scoped, one per Node)
//!                                    │ watched
//!   user ──► InferenceDeployment ──► operator ──► Pods bound to nodes + status + Events
//!   user ──► CapacityPlan ─────────► operator ──► planner ──► status.summary
//! ```
//!
//! This crate is a leaf: it holds types and schema rules only (kube's `derive` feature, no
//! client, no runtime), so every other crate can depend on it cheaply. Validation lives in the
//! generated OpenAPI schema and CEL rules, so the apiserver rejects bad objects before any
//! gpufleet component sees them, with messages that name the field.

pub mod capacity_plan;
pub mod conditions;
pub mod gpu_node;
pub mod inference_deployment;
pub mod labels;
pub mod pod_template;

pub use capacity_plan::{CapacityPlan, CapacityPlanSpec, CapacityPlanStatus};
pub use gpu_node::{GpuNode, GpuNodeSpec, GpuNodeStatus};
pub use inference_deployment::{
    InferenceDeployment, InferenceDeploymentSpec, InferenceDeploymentStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every gpufleet resource.
pub const GROUP: &str = "gpufleet.io";
/// The served and stored version of every gpufleet resource.
pub const VERSION: &str = "v1alpha1";

/// Every CustomResourceDefinition gpufleet installs, in a stable order (what `gpufleet crds`
/// prints and `charts/gpufleet/crds/` holds).
pub fn custom_resource_definitions() -> Vec<CustomResourceDefinition> {
    vec![
        GpuNode::crd(),
        InferenceDeployment::crd(),
        CapacityPlan::crd(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_is_in_the_gpufleet_group_with_a_status_subresource() {
        for crd in custom_resource_definitions() {
            assert_eq!(crd.spec.group, GROUP);
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            let subresources = version.subresources.as_ref().expect("subresources");
            assert!(
                subresources.status.is_some(),
                "{} has no status",
                crd.spec.names.kind
            );
            assert!(
                version
                    .additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| !c.is_empty()),
                "{} has no printer columns",
                crd.spec.names.kind
            );
            assert!(
                crd.spec
                    .names
                    .short_names
                    .as_ref()
                    .is_some_and(|s| !s.is_empty()),
                "{} has no short name",
                crd.spec.names.kind
            );
        }
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    fn yaml_of(kind: &str) -> String {
        let crd = custom_resource_definitions()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .expect("kind");
        serde_norway::to_string(&crd).expect("yaml")
    }

    #[test]
    fn inference_deployment_has_scale_subresource_and_cross_field_rules() {
        let yaml = yaml_of("InferenceDeployment");
        if let Some(dir) = std::env::var_os("GPUFLEET_DUMP_CRDS") {
            for crd in custom_resource_definitions() {
                let path =
                    std::path::Path::new(&dir).join(format!("{}.yaml", crd.spec.names.plural));
                std::fs::write(path, serde_norway::to_string(&crd).expect("yaml")).expect("write");
            }
        }
        assert!(yaml.contains("specReplicasPath: .spec.replicas"), "{yaml}");
        assert!(
            yaml.contains("labelSelectorPath: .status.selector"),
            "{yaml}"
        );
        assert!(
            yaml.contains("has(self.count) != has(self.fraction)"),
            "{yaml}"
        );
        assert!(yaml.contains("x-kubernetes-int-or-string: true"), "{yaml}");
    }
}
