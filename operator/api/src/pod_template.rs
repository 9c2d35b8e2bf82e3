//! The pod template of an InferenceDeployment, decoded so that one badly typed template costs
//! only its own deployment.
//!
//! The CRD keeps the template schemaless below the fields the operator relies on
//! (`x-kubernetes-preserve-unknown-fields`, see `inference_deployment`), so the apiserver
//! stores `containers[0].resources.requests: 5` as given. Decoded straight into
//! `PodTemplateSpec`, one such object fails the typed list and watch of *every*
//! InferenceDeployment (kube-rs #774): the operator and the recorder would stop for all
//! namespaces. [`PodTemplate`] decodes from any JSON value instead; one that does not fit
//! `PodTemplateSpec` keeps its JSON and says where it does not fit, the operator reports that
//! on its deployment, and every other deployment goes on.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Pod template as the apiserver stored it, with its typed reading when it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct PodTemplate {
    /// What the object holds, written back unchanged.
    raw: serde_json::Value,
    /// The typed template, or where and why the raw one does not decode as one.
    decoded: Result<PodTemplateSpec, String>,
}

impl PodTemplate {
    /// The typed template.
    ///
    /// # Errors
    /// Where the stored template does not fit a core/v1 PodTemplateSpec and why, in words a
    /// user can act on (`spec.template.spec.containers[0].resources.requests: invalid type …`).
    pub fn spec(&self) -> Result<&PodTemplateSpec, &str> {
        self.decoded.as_ref().map_err(String::as_str)
    }

    /// The template as stored.
    #[must_use]
    pub fn raw(&self) -> &serde_json::Value {
        &self.raw
    }
}

impl From<PodTemplateSpec> for PodTemplate {
    fn from(spec: PodTemplateSpec) -> Self {
        Self {
            raw: serde_json::to_value(&spec)
                .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new())),
            decoded: Ok(spec),
        }
    }
}

impl Default for PodTemplate {
    fn default() -> Self {
        PodTemplateSpec::default().into()
    }
}

impl Serialize for PodTemplate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        let decoded =
            serde_path_to_error::deserialize::<_, PodTemplateSpec>(&raw).map_err(|error| {
                let path = error.path().to_string();
                let at = if path == "." {
                    "spec.template".to_owned()
                } else {
                    format!("spec.template.{path}")
                };
                format!(
                    "{at}: {}; fix the template as you would a Deployment's",
                    error.inner()
                )
            });
        Ok(Self { raw, decoded })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_well_typed_template_decodes_and_writes_back_unchanged() -> Result<(), serde_json::Error> {
        let stored = json!({"metadata": {"labels": {"app": "chat"}},
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9",
                "resources": {"requests": {"cpu": "8"}}}]}});
        let template: PodTemplate = serde_json::from_value(stored.clone())?;
        let spec = template
            .spec()
            .map_err(<serde_json::Error as serde::de::Error>::custom)?;
        assert_eq!(
            spec.spec
                .as_ref()
                .map(|pod| pod.containers[0].name.as_str()),
            Some("vllm")
        );
        assert_eq!(serde_json::to_value(&template)?, stored);
        Ok(())
    }

    /// Finding 4 of the hardening issue: a wrongly typed field inside the template decodes
    /// (so the list and watch of every other deployment keep working) and names where it is.
    #[test]
    fn a_badly_typed_template_still_decodes_and_names_the_field() -> Result<(), serde_json::Error> {
        let stored = json!({"spec": {"containers": [{"name": "vllm",
            "resources": {"requests": 5}}]}});
        let template: PodTemplate = serde_json::from_value(stored.clone())?;
        let why = template.spec().err().unwrap_or_default();
        assert!(
            why.starts_with("spec.template.spec.containers[0].resources.requests: invalid type"),
            "{why}"
        );
        assert_eq!(template.raw(), &stored);
        Ok(())
    }
}
