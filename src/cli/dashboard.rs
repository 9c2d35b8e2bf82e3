//! `gpufleet dashboard`: serves the web dashboard.
//!
//! `--simulate` fills it from a simulated fleet built here from the agent crate's machine
//! presets and fault scripts; `--kubernetes` from a cluster, through the dashboard's recorder,
//! which also writes the cluster's history (the dashboard crate never depends on the agent: it reads any
//! `FleetFeed`, and this module is the one that adapts the agent's samplers to it). History goes
//! to memory, or to PostgreSQL with `--database-url`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use gpufleet_agent::health::HealthPolicy;
use gpufleet_agent::sampler::Sampler;
use gpufleet_agent::server::SharedView;
use gpufleet_agent::simulated::{SimulatedSource, SimulationClock};
use gpufleet_agent::{fault, preset, status};
use gpufleet_api::InferenceDeployment;
use gpufleet_api::InferenceDeploymentSpec;
use gpufleet_api::inference_deployment::{
    DisruptionBudget, GpuRequirement, PlacementPolicy, PlacementStrategy,
};
use gpufleet_dashboard::auth::Token;
use gpufleet_dashboard::planner_run::RunLimits;
use gpufleet_dashboard::recorder::{Recorder, RecorderConfig};
use gpufleet_dashboard::store::Store;
use gpufleet_dashboard::store::memory::{MemoryLimits, MemoryStore};
use gpufleet_dashboard::store::postgres::PostgresStore;
use gpufleet_dashboard::{Application, FleetFeed, NodeReading, Settings};

/// Arguments of `gpufleet dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Serve a simulated fleet (mixed DGX H100/H200, HGX B200, L40S and mixed nodes, with
    /// faults over time) and a few demo InferenceDeployments; no cluster needed.
    #[arg(long)]
    simulate: bool,
    /// Show the cluster of KUBECONFIG (or the one this Pod runs in) and record its history:
    /// GpuNode telemetry and health, InferenceDeployment placements and the operator's Events
    /// (GET /api/v1/recorder reports the recorder's buffer and drops).
    #[arg(long, conflicts_with = "simulate")]
    kubernetes: bool,
    /// Number of simulated nodes (8 or 4 GPUs each), 1–10,000.
    #[arg(long, default_value_t = 36, requires = "simulate",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    nodes: usize,
    /// Keep history in PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DATABASE) instead of
    /// memory; the schema is migrated at start-up.
    #[arg(long, value_name = "URL", env = "GPUFLEET_DATABASE_URL")]
    database_url: Option<String>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// File holding the bearer token that enables planner runs (first line; at least 16
    /// characters). GPUFLEET_DASHBOARD_TOKEN works too. Without a token the dashboard is
    /// read-only.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Milliseconds between reads of the fleet.
    #[arg(long, default_value_t = 2000)]
    tick_ms: u64,
    /// Seconds a planner run may take.
    #[arg(long, default_value_t = 60)]
    planner_time_limit: u64,
}

/// The environment variable that may hold the token.
const TOKEN_VARIABLE: &str = "GPUFLEET_DASHBOARD_TOKEN";

fn token(args: &DashboardArgs) -> anyhow::Result<Option<Token>> {
    if let Some(path) = &args.token_file {
        return Ok(Some(Token::from_file(path)?));
    }
    match std::env::var(TOKEN_VARIABLE) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(
            Token::new(&text).with_context(|| format!("read {TOKEN_VARIABLE}"))?,
        )),
        _ => Ok(None),
    }
}

/// Runs the dashboard until Ctrl-C.
pub(crate) fn run(args: &DashboardArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    if !args.simulate && !args.kubernetes && args.database_url.is_none() {
        anyhow::bail!(
            "nothing to show: pass --simulate for a simulated fleet or --kubernetes for a cluster, and/or --database-url URL for PostgreSQL history"
        );
    }
    let settings = Settings {
        bind: args.bind,
        token: token(args)?,
        tick: Duration::from_millis(args.tick_ms.max(100)),
        run_limits: RunLimits {
            time_limit: Duration::from_secs(args.planner_time_limit.max(1)),
            ..RunLimits::default()
        },
        ..Settings::default()
    };
    let read_only = settings.token.is_none();
    let feed: Option<Box<dyn FleetFeed>> = if args.simulate {
        Some(Box::new(SimulatedFleet::new(args.nodes)?))
    } else {
        None
    };
    let database_url = args.database_url.clone();
    let nodes = args.nodes;
    let simulate = args.simulate;
    let kubernetes = args.kubernetes;
    gpufleet_dashboard::startup::block_on(async move {
        let store: Arc<dyn Store> = match database_url {
            Some(url) => Arc::new(PostgresStore::connect(&url).await?),
            None => Arc::new(MemoryStore::new(MemoryLimits::default())),
        };
        let kind = store.kind();
        // Lives as long as the server: dropping it stops the watches.
        let recorder = if kubernetes {
            let client = kube::Client::try_default().await.context(
                "connect to Kubernetes: set KUBECONFIG, or run in a Pod with a service account",
            )?;
            Some(Recorder::start(
                &client,
                Arc::clone(&store),
                RecorderConfig::default(),
            ))
        } else {
            None
        };
        let feed = match &recorder {
            Some(recorder) => Some(Box::new(recorder.feed()) as Box<dyn FleetFeed>),
            None => feed,
        };
        let app = Application::build_with_recorder(
            settings,
            store,
            feed,
            recorder.as_ref().map(Recorder::shared),
        )
        .await?;
        println!("gpufleet dashboard: http://{}/", app.address());
        eprintln!(
            "gpufleet dashboard: {} store, {}, {}",
            kind,
            if simulate {
                format!("{nodes} simulated nodes")
            } else if kubernetes {
                "Kubernetes cluster (recording history)".to_owned()
            } else {
                "no live feed".to_owned()
            },
            if read_only {
                "read-only (no token: planner runs disabled)"
            } else {
                "planner runs enabled with the bearer token"
            }
        );
        app.run_until_stopped().await?;
        anyhow::Ok(())
    })
}

/// One simulated node: an agent sampler over a simulated machine.
struct SimulatedNode {
    name: String,
    labels: BTreeMap<String, String>,
    source: String,
    sampler: Sampler,
    view: SharedView,
    transitions: BTreeMap<u32, u64>,
    last_states: BTreeMap<u32, gpufleet_agent::health::HealthState>,
}

/// A fleet of simulated nodes with faults spread over the first minutes, and demo deployments.
pub(crate) struct SimulatedFleet {
    nodes: Vec<SimulatedNode>,
    deployments: Vec<InferenceDeployment>,
}

/// The preset of the n-th simulated node: per dozen, 4 DGX H100, 3 DGX H200, 2 HGX B200,
/// 2 L40S boxes and 1 mixed node.
fn preset_name(index: usize) -> &'static str {
    match index % 12 {
        0..=3 => "dgx_h100",
        4..=6 => "dgx_h200",
        7 | 8 => "hgx_b200",
        9 | 10 => "l40s_box",
        _ => "mixed",
    }
}

/// Faults of the n-th node, staggered so something happens every few seconds.
fn fault_script(index: usize, gpus: usize) -> String {
    let gpu = (index * 3) % gpus.max(1);
    let start = 15 + (index * 11) % 240;
    let mut faults = Vec::new();
    if index % 7 == 3 {
        faults.push(format!("xid:79@gpu{gpu}@t={start}s"));
    }
    if index % 5 == 1 {
        faults.push(format!(
            "thermal@gpu{}@t={}s..{}s",
            (gpu + 1) % gpus.max(1),
            start / 2,
            start / 2 + 90
        ));
    }
    if index % 9 == 4 {
        faults.push(format!(
            "dbe@gpu{}@t={}s",
            (gpu + 2) % gpus.max(1),
            start + 30
        ));
    }
    if index % 4 == 2 {
        faults.push(format!(
            "foreign:20000@gpu{}@t=5s..{}s",
            (gpu + 3) % gpus.max(1),
            start + 60
        ));
    }
    faults.join(",")
}

fn demo_deployment(
    name: &str,
    replicas: i32,
    gpu: GpuRequirement,
    strategy: PlacementStrategy,
    max_per_node: Option<u32>,
) -> InferenceDeployment {
    let mut deployment = InferenceDeployment::new(
        name,
        InferenceDeploymentSpec {
            replicas,
            gpu,
            placement: PlacementPolicy {
                strategy,
                max_replicas_per_node: max_per_node,
                ..PlacementPolicy::default()
            },
            disruption: DisruptionBudget::default(),
            template: Default::default(),
        },
    );
    deployment.metadata.namespace = Some("inference".to_owned());
    deployment
}

fn demo_deployments() -> Vec<InferenceDeployment> {
    let whole = |count, memory_mib, products: &[&str]| GpuRequirement {
        count: Some(count),
        memory_mib: Some(memory_mib),
        products: products
            .iter()
            .map(|product| (*product).to_owned())
            .collect(),
        ..GpuRequirement::default()
    };
    let fraction = |share, memory_mib| GpuRequirement {
        fraction: Some(share),
        memory_mib: Some(memory_mib),
        ..GpuRequirement::default()
    };
    vec![
        demo_deployment(
            "llama-3-70b",
            6,
            whole(1, 60_000, &[]),
            PlacementStrategy::FragmentationAware,
            None,
        ),
        demo_deployment(
            "deepseek-v3",
            2,
            whole(2, 100_000, &["NVIDIA-H200", "NVIDIA-B200"]),
            PlacementStrategy::FragmentationAware,
            None,
        ),
        demo_deployment(
            "qwen-2.5-7b",
            12,
            fraction(0.25, 16_000),
            PlacementStrategy::BestFit,
            None,
        ),
        demo_deployment(
            "mistral-small",
            4,
            whole(1, 30_000, &[]),
            PlacementStrategy::Spread,
            Some(1),
        ),
        demo_deployment(
            "whisper-large",
            4,
            GpuRequirement {
                products: vec!["NVIDIA-L40S".to_owned()],
                ..fraction(0.5, 8_000)
            },
            PlacementStrategy::Pack,
            None,
        ),
    ]
}

impl SimulatedFleet {
    /// `count` nodes named `gpu-node-001` …, in three zones.
    pub(crate) fn new(count: usize) -> anyhow::Result<Self> {
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("gpu-node-{:03}", index + 1);
            let preset_name = preset_name(index);
            let machine = preset::by_name(preset_name)
                .with_context(|| format!("machine preset {preset_name}"))?;
            let script = fault_script(index, machine.gpus.len());
            let faults = fault::parse_script(&script)
                .with_context(|| format!("fault script `{script}` of {name}"))?;
            let source = SimulatedSource::new(machine, &name, faults, SimulationClock::wall());
            let sampler = Sampler::new(Box::new(source), &name, HealthPolicy::default());
            let view = sampler.view();
            let labels = BTreeMap::from([
                (
                    "topology.kubernetes.io/zone".to_owned(),
                    ["zone-a", "zone-b", "zone-c"][index % 3].to_owned(),
                ),
                ("gpufleet.io/preset".to_owned(), preset_name.to_owned()),
            ]);
            nodes.push(SimulatedNode {
                name,
                labels,
                source: format!("simulated:{preset_name}"),
                sampler,
                view,
                transitions: BTreeMap::new(),
                last_states: BTreeMap::new(),
            });
        }
        Ok(Self {
            nodes,
            deployments: demo_deployments(),
        })
    }
}

impl FleetFeed for SimulatedFleet {
    fn read(&mut self) -> Vec<NodeReading> {
        let now = gpufleet_agent::reading::unix_millis_now();
        self.nodes
            .iter_mut()
            .map(|node| {
                node.sampler.sample_once();
                // Take the events that are due (Xids arrive between samples).
                node.sampler
                    .wait_until(Instant::now() + Duration::from_micros(50));
                let view = node.view.lock().unwrap_or_else(PoisonError::into_inner);
                for (index, health) in &view.health {
                    if node.last_states.insert(*index, health.state) != Some(health.state) {
                        node.transitions.insert(*index, now);
                    }
                }
                let status = status::gpu_node_status(&view, &node.source, &node.transitions, now);
                NodeReading {
                    name: node.name.clone(),
                    labels: node.labels.clone(),
                    ready: true,
                    status,
                }
            })
            .collect()
    }

    fn deployments(&mut self) -> Vec<InferenceDeployment> {
        self.deployments.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_fleet_mixes_presets_and_every_fault_script_parses() {
        let mut fleet = SimulatedFleet::new(24).expect("fleet");
        let readings = fleet.read();
        assert_eq!(readings.len(), 24);
        let gpus: usize = readings.iter().map(|node| node.status.gpus.len()).sum();
        // Per dozen: 9 eight-GPU nodes and 3 four-GPU nodes.
        assert_eq!(gpus, 2 * (9 * 8 + 3 * 4));
        let products: std::collections::BTreeSet<&str> = readings
            .iter()
            .flat_map(|node| node.status.gpus.iter().map(|gpu| gpu.product.as_str()))
            .collect();
        assert!(products.len() >= 4, "{products:?}");
        assert!(
            readings
                .iter()
                .flat_map(|node| &node.status.gpus)
                .all(|gpu| gpu.telemetry.utilization_percent.is_some())
        );
        for index in 0..100 {
            fault::parse_script(&fault_script(index, 4)).expect("script parses");
        }
        assert_eq!(fleet.deployments().len(), 5);
    }
}
