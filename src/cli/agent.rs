//! `gpufleet agent`: the node agent's commands.
//!
//! - `run` samples a source (NVML, simulated, or a replayed fixture), grades health and serves
//!   `/metrics`, `/healthz`, `/readyz`.
//! - `probe` reads a real machine's GPUs through NVML once and writes what it read as a fixture
//!   that the stand-in libnvidia-ml (`GPUFLEET_NVML_FIXTURE`) and `--fixture` play back.
//! - `bench` runs the sampler for a while and reports its CPU time and peak RSS (the agent's
//!   budget: < 1% of a core and < 20 MiB at 1 Hz on 8 GPUs).

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use gpufleet_agent::GpuSource;
use gpufleet_agent::fixture::{self, ProbePlan};
use gpufleet_agent::health::HealthPolicy;
use gpufleet_agent::nvml::{DEFAULT_NVML_LIBRARY, NvmlSource};
use gpufleet_agent::ownership::ProcessTable;
use gpufleet_agent::pod_watch::watch_placements;
use gpufleet_agent::publisher::Publisher;
use gpufleet_agent::sampler::Sampler;
use gpufleet_agent::server::MetricsServer;
use gpufleet_agent::source::SourceSpec;
use gpufleet_agent::status::PublishPolicy;

/// Arguments of `gpufleet agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Sample the GPUs, grade their health and serve Prometheus metrics (dcgm-exporter names).
    Run(RunArgs),
    /// Read inventory, samples and events from the GPUs through NVML and write them as JSON (a
    /// fixture the stand-in NVML can replay). Readings that fail are recorded, never fatal.
    Probe(ProbeArgs),
    /// Sample for a while and report the agent's CPU time and peak memory.
    Bench(BenchArgs),
    /// Run many simulated agents in this process against the cluster in KUBECONFIG and report
    /// whether they hold their heartbeats (creates the Nodes it needs, deletes them after).
    Fleet(FleetArgs),
}

/// Arguments of `gpufleet agent fleet`.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// Number of virtual nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Machine preset of every node.
    #[arg(long, default_value = "dgx_h100")]
    preset: String,
    /// Node name prefix (nodes are PREFIX0, PREFIX1, …).
    #[arg(long, default_value = "fleet-")]
    prefix: String,
    /// How long to run.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Milliseconds between samples of each node.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Keep the Nodes and GpuNodes afterwards.
    #[arg(long)]
    keep: bool,
    /// Heartbeat age the operator treats as stale, seconds (its default unless it runs with
    /// another).
    #[arg(long, default_value_t = gpufleet_operator::snapshot::DEFAULT_HEARTBEAT_STALE_AFTER_MS / 1000)]
    stale_after_seconds: u64,
}

/// Where GPU readings come from.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// NVML library to load (default: libnvidia-ml.so.1 through the dynamic linker). The
    /// stand-in libgpufleet_nvml_standin.so works here too.
    #[arg(long, value_name = "PATH", env = "GPUFLEET_NVML_LIB")]
    nvml_lib: Option<PathBuf>,
    /// Simulate this machine preset instead of reading NVML (dgx_h100, dgx_h200, hgx_b200,
    /// l40s_box, mixed).
    #[arg(long, value_name = "PRESET", conflicts_with_all = ["nvml_lib", "fixture"])]
    simulate: Option<String>,
    /// Fault script for --simulate, e.g. `xid:79@gpu3@t=5s,foreign:20000@gpu0@t=10s`.
    #[arg(long, value_name = "SCRIPT", default_value = "", requires = "simulate")]
    faults: String,
    /// Replay a fixture written by `gpufleet agent probe`.
    #[arg(long, value_name = "FILE", conflicts_with = "nvml_lib")]
    fixture: Option<PathBuf>,
    /// This node's name (the GpuNode name, the `Hostname` label).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The host's /proc, to tell which Pod each GPU process runs in (for foreignMemoryMiB):
    /// /proc when the agent runs with hostPID, else where the host's /proc is mounted. Default:
    /// /proc for NVML sources; simulated and fixture sources attribute nothing unless given one.
    #[arg(long, value_name = "PATH", env = "GPUFLEET_PROC_ROOT")]
    proc_root: Option<PathBuf>,
}

impl SourceArgs {
    fn node_name(&self) -> String {
        self.node_name
            .clone()
            .or_else(fixture::hostname)
            .unwrap_or_else(|| "localhost".to_owned())
    }

    /// Where GPU processes are looked up, if anywhere: simulated PIDs mean nothing in this
    /// host's /proc, so only NVML sources default to it.
    fn process_table(&self) -> Option<ProcessTable> {
        match (&self.proc_root, self.spec()) {
            (Some(root), _) => Some(ProcessTable::new(root)),
            (None, SourceSpec::Nvml { .. }) => Some(ProcessTable::new("/proc")),
            (None, _) => None,
        }
    }

    fn spec(&self) -> SourceSpec {
        if let Some(preset) = &self.simulate {
            SourceSpec::Simulated {
                preset: preset.clone(),
                faults: self.faults.clone(),
                node: self.node_name(),
            }
        } else if let Some(path) = &self.fixture {
            SourceSpec::Fixture { path: path.clone() }
        } else {
            SourceSpec::Nvml {
                library: self.nvml_lib.clone(),
            }
        }
    }
}

/// Arguments of `gpufleet agent run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Milliseconds between samples.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Where to serve /metrics, /healthz and /readyz (dcgm-exporter's port by default).
    #[arg(long, default_value = "0.0.0.0:9400")]
    metrics_address: SocketAddr,
    /// Publish the node's GpuNode (and GFD-style labels) to the cluster in KUBECONFIG, or the
    /// one the pod runs in.
    #[arg(long)]
    publish: bool,
    /// Leave the Node's nvidia.com/ labels alone even when GPU Feature Discovery does not run.
    #[arg(long, requires = "publish")]
    no_node_labels: bool,
}

/// Arguments of `gpufleet agent probe`.
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// NVML library to load (default: libnvidia-ml.so.1 through the dynamic linker).
    #[arg(long, value_name = "PATH", env = "GPUFLEET_NVML_LIB")]
    nvml_lib: Option<OsString>,
    /// Number of samples to take.
    #[arg(long, default_value_t = 5)]
    samples: u32,
    /// Milliseconds between samples (events are waited for in between).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Milliseconds to wait for events after the last sample.
    #[arg(long, default_value_t = 2000)]
    event_wait_ms: u64,
    /// Write the JSON here instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Arguments of `gpufleet agent bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Milliseconds between samples.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Also time each NVML call this many times on GPU 0 (NVML sources only).
    #[arg(long, value_name = "REPEATS")]
    call_costs: Option<u32>,
}

/// Runs an agent command.
pub(crate) fn run(args: &AgentArgs) -> anyhow::Result<()> {
    match &args.command {
        AgentCommand::Run(run) => run_agent(run),
        AgentCommand::Probe(probe) => run_probe(probe),
        AgentCommand::Bench(bench) => run_bench(bench),
        AgentCommand::Fleet(fleet) => run_fleet(fleet),
    }
}

fn open(source: &SourceArgs) -> anyhow::Result<Box<dyn GpuSource>> {
    let spec = source.spec();
    spec.open()
        .with_context(|| format!("open the GPU source {}", spec.describe()))
}

fn run_agent(args: &RunArgs) -> anyhow::Result<()> {
    let node = args.source.node_name();
    let mut sampler = Sampler::new(open(&args.source)?, &node, HealthPolicy::default());
    let process_table = args.source.process_table();
    if let Some(table) = process_table.clone() {
        sampler = sampler.with_process_table(table);
    }
    let server = MetricsServer::start(args.metrics_address, sampler.view())?;
    eprintln!(
        "gpufleet agent: node {node}, source {}, metrics on http://{}/metrics",
        args.source.spec().describe(),
        server.address()
    );
    let interval = Duration::from_millis(args.interval_ms);
    if !args.publish {
        let stop = AtomicBool::new(false);
        sampler.run(interval, &stop);
        return Ok(());
    }
    let view = sampler.view();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler_stop = Arc::clone(&stop);
    let sampler_thread = std::thread::Builder::new()
        .name("gpufleet-sampler".to_owned())
        .spawn(move || sampler.run(interval, &sampler_stop))
        .context("start the sampler thread")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let source = args.source.spec().describe();
    let labels = !args.no_node_labels;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("find the Kubernetes API (KUBECONFIG or the in-cluster service account)")?;
        let publisher = Publisher::new(
            client.clone(),
            &node,
            &source,
            PublishPolicy::default(),
            labels,
        );
        let publisher_stop = Arc::clone(&stop);
        // The Pods on this node say which GPU processes gpufleet placed; without a process
        // table there is nothing to attribute, and no reason to read Pods.
        let placements = async {
            if process_table.is_some() {
                watch_placements(client, &node, Arc::clone(&view)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = publisher.run(Arc::clone(&view), &publisher_stop) => {}
            () = placements => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler_thread.join();
    Ok(())
}

fn run_probe(args: &ProbeArgs) -> anyhow::Result<()> {
    let mut source = NvmlSource::open(args.nvml_lib.as_deref())?;
    if let Some(error) = source.event_setup_error() {
        eprintln!("gpufleet agent probe: events: {error}");
    }
    let name = args
        .nvml_lib
        .as_ref()
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_NVML_LIBRARY.to_owned());
    let plan = ProbePlan {
        samples: args.samples,
        interval: Duration::from_millis(args.interval_ms),
        final_event_wait: Duration::from_millis(args.event_wait_ms),
    };
    let fixture = fixture::probe(&mut source, &name, plan);
    let json = serde_json::to_string_pretty(&fixture).context("serialise the probe's fixture")?;
    match &args.output {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("write the fixture to {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    eprintln!(
        "gpufleet agent probe: {} GPU(s), {} sample(s), {} event(s), {} step error(s) in {} ms",
        fixture.inventory.len(),
        fixture.samples.len(),
        fixture.events.len(),
        fixture.errors.len(),
        fixture.probe_millis
    );
    Ok(())
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture gpufleet runs on.
    Some((user + system) / 100.0)
}

/// The 1, 5 and 15 minute load averages, from /proc/loadavg.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// A `Vm…:` line of /proc/self/status in KiB.
fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn run_bench(args: &BenchArgs) -> anyhow::Result<()> {
    if let (Some(repeats), SourceSpec::Nvml { library }) = (args.call_costs, args.source.spec()) {
        let source = NvmlSource::open(library.as_deref().map(std::path::Path::as_os_str))?;
        let costs: std::collections::BTreeMap<String, f64> = source
            .call_costs(0, repeats)?
            .into_iter()
            .map(|(name, cost)| (name, cost.as_secs_f64() * 1e6))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "call_costs_microseconds": costs })
        );
    }
    let node = args.source.node_name();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let sampler = Sampler::new(open(&args.source)?, &node, HealthPolicy::default());
    let view = sampler.view();
    let init_seconds = started.elapsed().as_secs_f64();
    let cpu_after_init = cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler_stop = Arc::clone(&stop);
    let interval = Duration::from_millis(args.interval_ms);
    let thread = std::thread::spawn(move || sampler.run(interval, &sampler_stop));
    let steady_started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let steady_seconds = steady_started.elapsed().as_secs_f64();
    let cpu_end = cpu_seconds();
    let _ = thread.join();
    // Render /metrics once, as a scrape would, so its cost shows in the peak memory.
    let exposition = {
        let view = view
            .lock()
            .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
        gpufleet_agent::metrics::render(&view)
    };
    let (samples, gpus) = {
        let view = view
            .lock()
            .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
        (view.counters.samples, view.inventory.len())
    };
    let steady_cpu = cpu_end.zip(cpu_after_init).map(|(end, start)| end - start);
    let report = serde_json::json!({
        "source": args.source.spec().describe(),
        "gpus": gpus,
        "interval_ms": args.interval_ms,
        "samples": samples,
        "init_seconds": init_seconds,
        "init_cpu_seconds": cpu_after_init.zip(cpu_before).map(|(end, start)| end - start),
        "steady_seconds": steady_seconds,
        "steady_cpu_seconds": steady_cpu,
        "steady_core_percent": steady_cpu.map(|cpu| 100.0 * cpu / steady_seconds),
        "rss_kib": status_kib("VmRSS:"),
        "peak_rss_kib": status_kib("VmHWM:"),
        "metrics_bytes": exposition.len(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn run_fleet(args: &FleetArgs) -> anyhow::Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Node;
    use kube::Api;
    use kube::api::{DeleteParams, Patch, PatchParams};

    let preset = gpufleet_agent::preset::by_name(&args.preset)
        .ok_or_else(|| gpufleet_agent::Error::UnknownPreset(args.preset.clone()))?;
    let names: Vec<String> = (0..args.nodes)
        .map(|index| format!("{}{index}", args.prefix))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("find the Kubernetes API (KUBECONFIG)")?;
        let nodes: Api<Node> = Api::all(client.clone());
        let params = PatchParams::apply("gpufleet-agent-fleet");
        let created = std::time::Instant::now();
        let results: Vec<Result<Node, kube::Error>> = futures::stream::iter(names.iter().map(|name| {
            let nodes = nodes.clone();
            let params = params.clone();
            let node = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": { "name": name, "annotations": { "kwok.x-k8s.io/node": "fake" }, "labels": { "type": "kwok" } },
                "spec": { "taints": [{ "key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule" }] }
            });
            async move { nodes.patch(name, &params, &Patch::Apply(node)).await }
        }))
        .buffer_unordered(32)
        .collect()
        .await;
        let failed = results.iter().filter(|result| result.is_err()).count();
        anyhow::ensure!(failed == 0, "could not create {failed} of {} Nodes", names.len());
        eprintln!("gpufleet agent fleet: {} Nodes ready in {:.1} s", names.len(), created.elapsed().as_secs_f64());
        let load_before = load_average();
        let cpu_before = cpu_seconds();
        let report = gpufleet_agent::fleet::run_fleet(
            client.clone(),
            &names,
            &preset,
            Duration::from_millis(args.interval_ms),
            Duration::from_secs(args.seconds),
            Duration::from_secs(args.stale_after_seconds),
        )
        .await;
        let fleet_cpu = cpu_seconds().zip(cpu_before).map(|(end, start)| end - start);
        let mut output = serde_json::to_value(&report)?;
        if let Some(fields) = output.as_object_mut() {
            // The machine's load says how much the figures owe to a busy host, and the fleet's
            // own CPU how much of that load it caused (all agents run in this one process).
            fields.insert("load_average_before".to_owned(), serde_json::json!(load_before));
            fields.insert("load_average_after".to_owned(), serde_json::json!(load_average()));
            fields.insert(
                "fleet_process_core_percent".to_owned(),
                serde_json::json!(fleet_cpu.map(|cpu| 100.0 * cpu / report.seconds.max(1.0))),
            );
        }
        println!("{}", serde_json::to_string_pretty(&output)?);
        if !args.keep {
            let gpu_nodes: Api<gpufleet_api::gpu_node::GpuNode> = Api::all(client.clone());
            futures::stream::iter(names.iter().map(|name| {
                let (nodes, gpu_nodes) = (nodes.clone(), gpu_nodes.clone());
                async move {
                    let _ = gpu_nodes.delete(name, &DeleteParams::default()).await;
                    let _ = nodes.delete(name, &DeleteParams::default()).await;
                }
            }))
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        }
        anyhow::Ok(())
    })
}
