//! Replicas as the engine sees them and as Kubernetes stores them (pure).
//!
//! - an InferenceDeployment's spec becomes a [`ReplicaRequest`];
//! - a [`Decision`] becomes a Pod bound to its node, carrying its placement in annotations;
//! - a Pod read back becomes an [`ExistingPlacement`], so the operator's state lives in the
//!   cluster and survives restarts and leader changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufleet_api::inference_deployment::InferenceDeployment;
use gpufleet_api::labels::{
    DEPLOYMENT_LABEL, GPU_INDICES_ANNOTATION, GPU_MEMORY_ANNOTATION, GPU_MILLI_ANNOTATION,
    GPU_UUIDS_ANNOTATION, NVIDIA_GPU_RESOURCE, PLACED_AT_ANNOTATION, REPLICA_LABEL, SCHEDULER_NAME,
    SCORE_ANNOTATION,
};
use gpufleet_placement::{Decision, ExistingPlacement, MixEntry, ReplicaRequest, WorkloadMix};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::{Error, Result};

/// The engine's id of a replica's placement: `namespace/pod`, since Pod names repeat across
/// namespaces and the engine sees the whole fleet.
#[must_use]
pub fn placement_id(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}

/// The group name replicas of one deployment share in the engine: `namespace/name`.
#[must_use]
pub fn group_of(deployment: &InferenceDeployment) -> String {
    format!(
        "{}/{}",
        deployment.namespace().unwrap_or_default(),
        deployment.name_any()
    )
}

/// What one replica of `deployment` asks the engine for, named `pod_name`: the shared
/// conversion of the spec, plus the CPU and memory its pod template requests.
#[must_use]
pub fn request_for(deployment: &InferenceDeployment, pod_name: &str) -> ReplicaRequest {
    let namespace = deployment.namespace().unwrap_or_default();
    let mut request = gpufleet_placement::request_for(
        &deployment.spec,
        placement_id(&namespace, pod_name),
        group_of(deployment),
    );
    let (cpu_milli, memory_mib) = template_requests(deployment);
    request.cpu_milli = cpu_milli;
    request.memory_mib = memory_mib;
    request
}

/// The workload the fleet expects, for fragmentation-aware ranking: every deployment's replica
/// shape (GPUs, models, CPU and memory) weighted by its desired replicas, plus the built-in
/// inference mix as a prior (a quarter of the whole; all of it when no deployment asks for
/// anything yet). The engine is rebuilt from the cluster for
/// every decision, so the deployments are both the prior and what has arrived.
#[must_use]
pub fn workload_mix(deployments: &[Arc<InferenceDeployment>]) -> WorkloadMix {
    let mut entries: Vec<MixEntry> = Vec::new();
    for deployment in deployments {
        let replicas = deployment.spec.replicas.max(0);
        if replicas == 0 {
            continue;
        }
        let request = request_for(deployment, "mix");
        let mut allowed_products = request.allowed_products.clone();
        allowed_products.sort();
        match entries.iter_mut().find(|entry| {
            entry.gpu == request.gpu
                && entry.allowed_products == allowed_products
                && entry.cpu_milli == request.cpu_milli
                && entry.memory_mib == request.memory_mib
        }) {
            Some(entry) => entry.weight += f64::from(replicas),
            None => entries.push(MixEntry {
                gpu: request.gpu,
                allowed_products,
                cpu_milli: request.cpu_milli,
                memory_mib: request.memory_mib,
                weight: f64::from(replicas),
            }),
        }
    }
    // The built-in inference mix stays in as a prior, a quarter of the weight: a fleet running
    // only one-GPU replicas today still values keeping whole nodes free for the tensor-parallel
    // replica it has not seen yet.
    let prior = WorkloadMix::inference_default();
    let seen: f64 = entries.iter().map(|entry| entry.weight).sum();
    let prior_total: f64 = prior.entries.iter().map(|entry| entry.weight).sum();
    let scale = if seen > 0.0 {
        seen / 3.0 / prior_total
    } else {
        1.0
    };
    entries.extend(prior.entries.into_iter().map(|entry| MixEntry {
        weight: entry.weight * scale,
        ..entry
    }));
    WorkloadMix { entries }
}

/// CPU (millicores) and memory (MiB) the template's containers request.
fn template_requests(deployment: &InferenceDeployment) -> (u64, u64) {
    // A template that does not decode places nothing (the reconcile says why), so it asks
    // for nothing either.
    let containers = deployment
        .spec
        .template
        .spec()
        .ok()
        .and_then(|template| template.spec.as_ref())
        .map(|spec| &spec.containers);
    let mut cpu: u64 = 0;
    let mut memory: u64 = 0;
    for container in containers.into_iter().flatten() {
        let requests = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref());
        if let Some(requests) = requests {
            // Saturating: an absurd request must read as absurd (and be refused by the
            // engine), never wrap around into a small one.
            cpu = requests
                .get("cpu")
                .and_then(cpu_millis)
                .map_or(cpu, |millis| cpu.saturating_add(millis));
            memory = requests
                .get("memory")
                .and_then(memory_mib)
                .map_or(memory, |mib| memory.saturating_add(mib));
        }
    }
    (cpu, memory)
}

/// Millicores of a CPU quantity (`2`, `500m`, `1.5`).
#[must_use]
pub fn cpu_millis(quantity: &Quantity) -> Option<u64> {
    let text = quantity.0.trim();
    if let Some(milli) = text.strip_suffix('m') {
        return milli.parse().ok();
    }
    let cores: f64 = text.parse().ok()?;
    (cores >= 0.0).then(|| (cores * 1000.0).round() as u64)
}

/// MiB of a memory quantity (`64Gi`, `512Mi`, `1G`, plain bytes).
#[must_use]
pub fn memory_mib(quantity: &Quantity) -> Option<u64> {
    let text = quantity.0.trim();
    let units: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0_f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, factor) = units
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|number| (number, *factor)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    (value >= 0.0).then(|| (value * factor / (1024.0 * 1024.0)).floor() as u64)
}

/// The Pod of one placed replica: the deployment's template, bound to the decision's node, with
/// the GPUs in annotations and `NVIDIA_VISIBLE_DEVICES`, owned by the deployment.
///
/// Whole-GPU replicas also carry an `nvidia.com/gpu` limit so the node's accounting (and the
/// device plugin, where one runs) sees them. Fractional replicas carry no whole-GPU limit: they
/// share a device the engine chose, which the annotation and the environment name.
///
/// # Errors
/// [`Error::MissingField`] when the deployment has no uid or namespace yet,
/// [`Error::InvalidTemplate`] when its template does not decode as a Pod template.
pub fn pod_for(
    deployment: &InferenceDeployment,
    pod_name: &str,
    ordinal: u32,
    decision: &Decision,
    placed_at_ms: u64,
) -> Result<Pod> {
    let uid = deployment.meta().uid.clone().ok_or(Error::MissingField {
        kind: "InferenceDeployment",
        field: "metadata.uid",
    })?;
    let namespace = deployment.namespace().ok_or(Error::MissingField {
        kind: "InferenceDeployment",
        field: "metadata.namespace",
    })?;
    let template = deployment
        .spec
        .template
        .spec()
        .map_err(|why| Error::InvalidTemplate {
            deployment: format!("{namespace}/{}", deployment.name_any()),
            why: why.to_owned(),
        })?;
    let template_meta = template.metadata.clone().unwrap_or_default();

    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(DEPLOYMENT_LABEL.to_owned(), deployment.name_any());
    labels.insert(REPLICA_LABEL.to_owned(), ordinal.to_string());

    let uuids: Vec<&str> = decision.gpus.iter().map(|gpu| gpu.uuid.as_str()).collect();
    let indices: Vec<String> = decision
        .gpus
        .iter()
        .map(|gpu| gpu.index.to_string())
        .collect();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(GPU_UUIDS_ANNOTATION.to_owned(), uuids.join(","));
    annotations.insert(GPU_INDICES_ANNOTATION.to_owned(), indices.join(","));
    annotations.insert(
        GPU_MILLI_ANNOTATION.to_owned(),
        decision.gpu_milli.to_string(),
    );
    annotations.insert(
        GPU_MEMORY_ANNOTATION.to_owned(),
        decision.gpu_memory_mib.to_string(),
    );
    annotations.insert(PLACED_AT_ANNOTATION.to_owned(), placed_at_ms.to_string());
    if let Ok(score) = serde_json::to_string(&decision.score) {
        annotations.insert(SCORE_ANNOTATION.to_owned(), score);
    }

    // Real device UUIDs go to the container runtime; nodes known only by their labels have
    // synthetic ids, for which the device index is the portable choice.
    let visible = if uuids
        .iter()
        .all(|uuid| uuid.starts_with("GPU-") || uuid.starts_with("MIG-"))
    {
        uuids.join(",")
    } else {
        indices.join(",")
    };
    let mut spec: PodSpec = template.spec.clone().unwrap_or_default();
    spec.node_name = Some(decision.node.clone());
    spec.scheduler_name = Some(SCHEDULER_NAME.to_owned());
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations
        .iter()
        .any(|t| t.key.as_deref() == Some(NVIDIA_GPU_RESOURCE))
    {
        tolerations.push(Toleration {
            key: Some(NVIDIA_GPU_RESOURCE.to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        });
    }
    let whole_gpus = (decision.gpu_milli >= 1000).then_some(decision.gpus.len());
    // Init containers see the same GPUs as the rest of the replica: left unset,
    // the container toolkit would hand an init container every GPU of the node.
    for container in spec.init_containers.iter_mut().flatten() {
        set_env(container, "NVIDIA_VISIBLE_DEVICES", &visible);
    }
    for (position, container) in spec.containers.iter_mut().enumerate() {
        set_env(container, "NVIDIA_VISIBLE_DEVICES", &visible);
        if position == 0
            && let Some(count) = whole_gpus
        {
            let resources = container.resources.get_or_insert_with(Default::default);
            let limits = resources.limits.get_or_insert_with(BTreeMap::new);
            limits.insert(NVIDIA_GPU_RESOURCE.to_owned(), Quantity(count.to_string()));
        }
    }

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.to_owned()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: InferenceDeployment::api_version(&()).into_owned(),
                kind: InferenceDeployment::kind(&()).into_owned(),
                name: deployment.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

fn set_env(container: &mut Container, name: &str, value: &str) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|variable| variable.name != name);
    env.push(EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    });
}

/// The placement a gpufleet Pod carries, or `None` for a Pod without a (valid) placement or
/// not yet bound to a node.
#[must_use]
pub fn placement_of(pod: &Pod, group: &str) -> Option<ExistingPlacement> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let gpus = annotations
        .get(GPU_INDICES_ANNOTATION)?
        .split(',')
        .filter(|index| !index.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()
        .ok()?;
    Some(ExistingPlacement {
        id: placement_id(&pod.namespace().unwrap_or_default(), &pod.name_any()),
        group: group.to_owned(),
        node,
        gpus,
        gpu_milli: annotations.get(GPU_MILLI_ANNOTATION)?.parse().ok()?,
        gpu_memory_mib: annotations.get(GPU_MEMORY_ANNOTATION)?.parse().ok()?,
        cpu_milli: 0,
        memory_mib: 0,
        placed_at_ms: annotations
            .get(PLACED_AT_ANNOTATION)
            .and_then(|at| at.parse().ok())
            .unwrap_or(0),
    })
}

/// Whether a Pod is being deleted (it still holds its GPUs until it is gone).
#[must_use]
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || pod
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
}

/// The replica ordinal a Pod carries.
#[must_use]
pub fn ordinal_of(pod: &Pod) -> Option<u32> {
    pod.labels().get(REPLICA_LABEL)?.parse().ok()
}

/// The name of replica `ordinal` of `deployment`. Names are deterministic, so two operators (or
/// one with a stale cache) that decide the same replica collide on the name instead of creating
/// a duplicate.
#[must_use]
pub fn pod_name(deployment: &str, ordinal: u32) -> String {
    format!("{deployment}-r{ordinal}")
}

/// The lowest `count` ordinals not used by `taken`.
#[must_use]
pub fn free_ordinals(taken: &[u32], count: usize) -> Vec<u32> {
    let mut free = Vec::with_capacity(count);
    let mut candidate = 0;
    while free.len() < count {
        if !taken.contains(&candidate) {
            free.push(candidate);
        }
        candidate += 1;
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_placement::{
        ChosenGpu, ComputeCapability, GpuRequest, MemoryNeed, ScoreBreakdown, Strategy,
    };
    use serde_json::json;

    pub(crate) fn deployment(spec: serde_json::Value) -> InferenceDeployment {
        let mut object: InferenceDeployment = serde_json::from_value(json!({
            "apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceDeployment",
            "metadata": {"name": "llm", "namespace": "serving", "uid": "uid-1"},
            "spec": spec
        }))
        .expect("valid deployment");
        object.metadata.generation = Some(1);
        object
    }

    fn decision(milli: u32) -> Decision {
        Decision {
            replica: "llm-r0".into(),
            group: "serving/llm".into(),
            node: "node-a".into(),
            gpus: vec![
                ChosenGpu {
                    index: 2,
                    uuid: "GPU-2".into(),
                },
                ChosenGpu {
                    index: 3,
                    uuid: "GPU-3".into(),
                },
            ],
            gpu_milli: milli,
            gpu_memory_mib: 40_000,
            score: ScoreBreakdown {
                strategy: Strategy::FragmentationAware,
                strategy_cost: 0.0,
                fragmentation_delta_gpus: Some(0.0),
                health_penalty: 0.0,
                thermal_penalty: 0.0,
                power_penalty: 0.0,
                utilisation_penalty: 0.0,
                telemetry_penalty: 0.0,
                numa_penalty: 0.0,
                spread_penalty: 0.0,
                total: 0.0,
            },
        }
    }

    #[test]
    fn fractions_become_milli_shares_and_counts_whole_gpus() {
        let template = json!({"spec": {"containers": [{"name": "s", "image": "x",
            "resources": {"requests": {"cpu": "1500m", "memory": "8Gi"}}}]}});
        let fractional = deployment(json!({"gpu": {"fraction": 0.25, "memoryMiB": 20000,
            "minComputeCapability": "8.9"}, "template": template}));
        let request = request_for(&fractional, "llm-r0");
        assert_eq!(
            request.gpu,
            GpuRequest::Fraction {
                milli: 250,
                memory: MemoryNeed::Mib(20_000)
            }
        );
        assert_eq!(
            request.min_compute_capability,
            Some(ComputeCapability { major: 8, minor: 9 })
        );
        assert_eq!((request.cpu_milli, request.memory_mib), (1500, 8192));
        assert_eq!(request.group, "serving/llm");

        let whole = deployment(json!({"gpu": {"count": 2}, "template": template}));
        assert_eq!(
            request_for(&whole, "x").gpu,
            GpuRequest::Whole {
                count: 2,
                memory: MemoryNeed::ShareOfCapacity
            }
        );
    }

    #[test]
    fn a_pod_carries_its_placement_and_reads_back_the_same() {
        let object = deployment(json!({"gpu": {"count": 2, "memoryMiB": 40000},
            "template": {"metadata": {"labels": {"app": "llm"}},
                         "spec": {"containers": [{"name": "s", "image": "x"}]}}}));
        let pod = pod_for(&object, "llm-r0", 0, &decision(1000), 1234).expect("pod");
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        let container = &spec.containers[0];
        let env = container.env.as_ref().expect("env");
        assert!(env.iter().any(
            |e| e.name == "NVIDIA_VISIBLE_DEVICES" && e.value.as_deref() == Some("GPU-2,GPU-3")
        ));
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits.get(NVIDIA_GPU_RESOURCE), Some(&Quantity("2".into())));
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("llm"));
        assert_eq!(ordinal_of(&pod), Some(0));
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );

        let placement = placement_of(&pod, "serving/llm").expect("placement");
        assert_eq!(placement.node, "node-a");
        assert_eq!(placement.gpus, vec![2, 3]);
        // Pod names repeat across namespaces; the engine id does not.
        assert_eq!(placement.id, "serving/llm-r0");
        assert_eq!(
            (placement.gpu_milli, placement.gpu_memory_mib),
            (1000, 40_000)
        );
        assert_eq!(placement.placed_at_ms, 1234);
    }

    #[test]
    fn fractional_pods_get_no_whole_gpu_limit() {
        let object = deployment(json!({"gpu": {"fraction": 0.5, "memoryMiB": 1000},
            "template": {"spec": {"containers": [{"name": "s", "image": "x"}]}}}));
        let pod = pod_for(&object, "llm-r1", 1, &decision(500), 0).expect("pod");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        assert!(
            container
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .is_none()
        );
    }

    /// Hardening finding 6: an init container without `NVIDIA_VISIBLE_DEVICES` could ask the
    /// container toolkit for every GPU of the node.
    #[test]
    fn init_containers_see_only_the_chosen_gpus() {
        let object = deployment(json!({"gpu": {"count": 2},
            "template": {"spec": {
                "initContainers": [{"name": "fetch-weights", "image": "x",
                    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}],
                "containers": [{"name": "s", "image": "x"}]}}}));
        let pod = pod_for(&object, "llm-r0", 0, &decision(1000), 0).expect("pod");
        let init = &pod
            .spec
            .as_ref()
            .expect("spec")
            .init_containers
            .as_ref()
            .expect("init")[0];
        let visible: Vec<Option<&str>> = init
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == "NVIDIA_VISIBLE_DEVICES")
            .map(|e| e.value.as_deref())
            .collect();
        assert_eq!(visible, [Some("GPU-2,GPU-3")]);
    }

    /// Hardening finding 3: template requests summed with `+=` wrapped around; an absurd
    /// request must stay absurd so the engine refuses it.
    #[test]
    fn absurd_template_requests_saturate_instead_of_wrapping() {
        let huge = "18446744073709551615m";
        let object = deployment(json!({"gpu": {"count": 1},
            "template": {"spec": {"containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": huge}}},
                {"name": "b", "image": "x", "resources": {"requests": {"cpu": huge}}}]}}}));
        assert_eq!(request_for(&object, "x").cpu_milli, u64::MAX);
    }

    /// A template that does not decode places nothing and says where it is wrong.
    #[test]
    fn a_badly_typed_template_is_an_error_naming_the_field() {
        let object = deployment(json!({"gpu": {"count": 1},
            "template": {"spec": {"containers": [{"name": "s", "image": "x",
                "resources": {"requests": 5}}]}}}));
        let error = pod_for(&object, "llm-r0", 0, &decision(1000), 0)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("serving/llm") && error.contains("spec.template.spec.containers[0]"),
            "{error}"
        );
        assert_eq!(request_for(&object, "x").cpu_milli, 0);
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(cpu_millis(&Quantity("2".into())), Some(2000));
        assert_eq!(cpu_millis(&Quantity("250m".into())), Some(250));
        assert_eq!(memory_mib(&Quantity("2Gi".into())), Some(2048));
        assert_eq!(memory_mib(&Quantity("1048576".into())), Some(1));
        assert_eq!(memory_mib(&Quantity("lots".into())), None);
    }

    #[test]
    fn free_ordinals_fill_gaps_first() {
        assert_eq!(free_ordinals(&[0, 2, 3], 3), vec![1, 4, 5]);
        assert_eq!(pod_name("llm", 4), "llm-r4");
    }
}
