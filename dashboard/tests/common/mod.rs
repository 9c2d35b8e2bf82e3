//! Test doubles and helpers shared by the dashboard's integration tests: a scripted fleet feed
//! whose GPUs tests can break, demo deployments, and a tiny HTTP/1.1 client for the real
//! listener.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use gpufleet_api::gpu_node::{
    GpuDevice, GpuHealth, GpuNodeStatus, GpuTelemetry, HealthReason, HealthState,
};
use gpufleet_api::inference_deployment::{DisruptionBudget, GpuRequirement, PlacementPolicy};
use gpufleet_api::{InferenceDeployment, InferenceDeploymentSpec};
use gpufleet_dashboard::placement::PlacementSource;
use gpufleet_dashboard::{FleetFeed, NodeReading};

/// What the scripted feed reports; shared with the test through [`Script`].
#[derive(Debug, Default)]
struct ScriptState {
    nodes: usize,
    gpus_per_node: u32,
    tick: u64,
    unhealthy: BTreeSet<(usize, u32)>,
    deployments: Vec<InferenceDeployment>,
    placement_source: PlacementSource,
}

/// A handle to change what the feed reports.
#[derive(Debug, Clone, Default)]
pub struct Script(Arc<Mutex<ScriptState>>);

impl Script {
    /// `nodes` nodes of `gpus_per_node` H100s each.
    pub fn new(nodes: usize, gpus_per_node: u32) -> Self {
        Self(Arc::new(Mutex::new(ScriptState {
            nodes,
            gpus_per_node,
            ..ScriptState::default()
        })))
    }

    /// Makes a GPU fall off the bus from the next read on.
    pub fn break_gpu(&self, node: usize, index: u32) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unhealthy
            .insert((node, index));
    }

    /// Sets the deployments the feed reports.
    pub fn set_deployments(&self, deployments: Vec<InferenceDeployment>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deployments = deployments;
    }

    /// Says who places the deployments: [`PlacementSource::Operator`] makes the feed stand in
    /// for a cluster, whose deployments' statuses the dashboard shows.
    pub fn set_placement_source(&self, source: PlacementSource) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .placement_source = source;
    }

    /// A feed reading this script.
    pub fn feed(&self) -> Box<dyn FleetFeed> {
        Box::new(ScriptedFeed(self.clone()))
    }
}

/// The node name the script gives node `index`.
pub fn node_name(index: usize) -> String {
    format!("node-{index:02}")
}

/// The UUID the script gives a GPU.
pub fn gpu_uuid(node: usize, index: u32) -> String {
    format!("GPU-{node:04}-{index:04}")
}

struct ScriptedFeed(Script);

impl FleetFeed for ScriptedFeed {
    fn read(&mut self) -> Vec<NodeReading> {
        let mut state = self.0.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.tick += 1;
        let tick = state.tick;
        (0..state.nodes)
            .map(|node| {
                let gpus = (0..state.gpus_per_node)
                    .map(|index| {
                        let broken = state.unhealthy.contains(&(node, index));
                        let seed = u64::try_from(node).unwrap_or(0) * 31 + u64::from(index) * 7;
                        let used = (seed * 977 + tick * 101) % 60_000;
                        GpuDevice {
                            index,
                            uuid: gpu_uuid(node, index),
                            product: "NVIDIA-H100-80GB-HBM3".to_owned(),
                            memory_total_mib: 81_559,
                            compute_capability: Some("9.0".to_owned()),
                            telemetry: GpuTelemetry {
                                memory_used_mib: Some(used),
                                memory_free_mib: Some(81_559 - used),
                                utilization_percent: Some(
                                    u32::try_from((seed * 13 + tick * 17) % 101).unwrap_or(0),
                                ),
                                temperature_celsius: Some(
                                    40 + u32::try_from((seed + tick) % 30).unwrap_or(0),
                                ),
                                power_watts: Some(300.0),
                                power_limit_watts: Some(700.0),
                                ..GpuTelemetry::default()
                            },
                            health: if broken {
                                GpuHealth {
                                    state: HealthState::Unhealthy,
                                    reasons: vec![HealthReason {
                                        code: "FellOffTheBus".to_owned(),
                                        message: "Xid 79".to_owned(),
                                        severity: HealthState::Unhealthy,
                                        needs_reset: true,
                                        since: None,
                                    }],
                                    last_transition_time: None,
                                }
                            } else {
                                GpuHealth::default()
                            },
                            ..GpuDevice::default()
                        }
                    })
                    .collect();
                NodeReading {
                    name: node_name(node),
                    labels: Default::default(),
                    ready: true,
                    status: GpuNodeStatus {
                        gpus,
                        ..GpuNodeStatus::default()
                    },
                }
            })
            .collect()
    }

    fn deployments(&mut self) -> Vec<InferenceDeployment> {
        self.0
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deployments
            .clone()
    }

    fn placement_source(&self) -> PlacementSource {
        self.0
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .placement_source
    }
}

/// A deployment of `replicas` replicas of one whole GPU with `memory_mib` each.
pub fn deployment(name: &str, replicas: i32, memory_mib: u64) -> InferenceDeployment {
    let mut deployment = InferenceDeployment::new(
        name,
        InferenceDeploymentSpec {
            replicas,
            gpu: GpuRequirement {
                count: Some(1),
                memory_mib: Some(memory_mib),
                ..GpuRequirement::default()
            },
            placement: PlacementPolicy::default(),
            disruption: DisruptionBudget::default(),
            template: Default::default(),
        },
    );
    deployment.metadata.namespace = Some("default".to_owned());
    deployment
}

/// A response of [`http`]: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: String,
}

impl Response {
    /// The first header of this name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), blocking.
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        let mut body = String::new();
        let mut remaining = rest;
        while let Some((size, after)) = remaining.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            body.push_str(&after[..size]);
            remaining = after[size..].trim_start_matches("\r\n");
        }
        body
    } else {
        rest.to_owned()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}
