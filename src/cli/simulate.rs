//! `gpufleet simulate`: replay a workload through the placement engine without a cluster and
//! compare strategies side by side (allocation, unallocated GPUs at offered-load levels,
//! fragmentation, decision time), or benchmark the engine with `--bench`.
//!
//! Reads files and prints; everything else is `gpufleet_placement::simulate`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use gpufleet_placement::simulate::{
    self, GpuModelTable, SimulationFile, SimulationInput, SimulationOptions, SyntheticSpec,
    synthetic_fleet, synthetic_workload,
};
use gpufleet_placement::{EngineConfig, FleetSnapshot, Strategy, WorkloadMix};

/// Arguments of `gpufleet simulate`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  gpufleet simulate                                   # synthetic 1,000-node fleet
  gpufleet simulate --synthetic nodes=2000,mix=sharing --load 1.0,1.3 --output json
  gpufleet simulate --nodes openb_node_list.csv --pods openb_pod_list.csv
  gpufleet simulate --nodes nodes.csv --pods pods.csv --replay timeline
  gpufleet simulate --fleet fleet.yaml --synthetic pods=500
  gpufleet simulate --bench                           # 10,000 nodes x 8 GPUs, 50,000 replicas")]
pub(crate) struct SimulateArgs {
    /// Node CSV (sn,cpu_milli,memory_mib,gpu,model), as Alibaba's openb_node_list.
    #[arg(long, value_name = "CSV", conflicts_with = "fleet")]
    nodes: Option<PathBuf>,
    /// Pod CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,…,creation_time,…).
    #[arg(long, value_name = "CSV")]
    pods: Option<PathBuf>,
    /// The project's YAML fleet format: `nodes`, optional `placements` and `workload`.
    #[arg(long, value_name = "YAML")]
    fleet: Option<PathBuf>,
    /// Built-in generator for what no file gives: nodes=N,gpus=8,pods=N,mix=inference|sharing,
    /// seed=N,telemetry=on|off. Without any input, nodes=1000 is generated.
    #[arg(long, value_name = "SPEC")]
    synthetic: Option<String>,
    /// Strategies to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["fragmentation-aware", "best-fit", "pack", "spread"])]
    strategy: Vec<String>,
    /// Offered-load levels to report at, as fractions of GPU capacity.
    #[arg(long, value_delimiter = ',', default_values = ["1.0", "1.3"])]
    load: Vec<f64>,
    /// Memory of a GPU model the node CSV names (MODEL=MIB), overriding the built-in table.
    #[arg(long = "gpu-memory", value_name = "MODEL=MIB")]
    gpu_memory: Vec<String>,
    /// `load`: arrivals only, reported at each offered-load level (FGD's method); `timeline`:
    /// creations and deletions in time order (needs a pod CSV with both times).
    #[arg(long, value_enum, default_value_t = Replay::Load)]
    replay: Replay,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Benchmark the engine instead: build a synthetic fleet (default nodes=10000,gpus=8,
    /// pods=50000) and time placing every replica, per strategy.
    #[arg(long)]
    bench: bool,
}

/// Which replay to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Replay {
    /// Arrivals only, up to the highest offered-load level.
    Load,
    /// Creations and deletions as the trace times them.
    Timeline,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// An aligned table.
    Table,
    /// JSON (the report structure of `gpufleet_placement::simulate`).
    Json,
}

/// Runs `gpufleet simulate`.
pub(crate) fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let strategies = args
        .strategy
        .iter()
        .map(|name| name.parse::<Strategy>())
        .collect::<Result<Vec<_>, _>>()?;
    if args.bench {
        return bench(args, &strategies);
    }
    let input = load_input(args)?;
    let options = SimulationOptions {
        strategies,
        load_levels: args.load.clone(),
        mix: None,
    };
    if args.replay == Replay::Timeline {
        let report = simulate::run_timeline(&input, &options)?;
        match args.output {
            OutputFormat::Table => print!("{}", report.render_table()),
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        return Ok(());
    }
    let report = simulate::run(&input, &options)?;
    match args.output {
        OutputFormat::Table => print!("{}", report.render_table()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

fn bench(args: &SimulateArgs, strategies: &[Strategy]) -> anyhow::Result<()> {
    let spec: SyntheticSpec = args
        .synthetic
        .as_deref()
        .unwrap_or("nodes=10000,gpus=8,pods=50000,mix=inference,seed=42")
        .parse()?;
    let fleet = synthetic_fleet(&spec);
    let workload = synthetic_workload(&spec);
    let mix = WorkloadMix::from_requests(&workload, 16);
    let mut reports = Vec::new();
    for &strategy in strategies {
        reports.push(simulate::throughput(
            &fleet,
            &workload,
            EngineConfig::new(strategy, mix.clone()),
        )?);
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        OutputFormat::Table => {
            println!(
                "{:<20} {:>7} {:>6} {:>9} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9}",
                "strategy",
                "nodes",
                "gpus",
                "replicas",
                "placed",
                "build ms",
                "place ms",
                "p50 µs",
                "p99 µs",
                "max µs"
            );
            for report in &reports {
                println!(
                    "{:<20} {:>7} {:>6} {:>9} {:>8} {:>9.1} {:>10.1} {:>9.1} {:>9.1} {:>9.1}",
                    report.strategy.name(),
                    report.nodes,
                    report.usable_gpus,
                    report.replicas,
                    report.placed,
                    report.build_millis,
                    report.place_millis,
                    report.decision_p50_micros,
                    report.decision_p99_micros,
                    report.decision_max_micros
                );
            }
        }
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn load_input(args: &SimulateArgs) -> anyhow::Result<SimulationInput> {
    let no_files = args.nodes.is_none() && args.fleet.is_none() && args.pods.is_none();
    let spec: Option<SyntheticSpec> = match (&args.synthetic, no_files) {
        (Some(spec), _) => Some(spec.parse()?),
        (None, true) => Some("nodes=1000".parse()?),
        (None, false) => None,
    };
    let mut models = GpuModelTable::default();
    for assignment in &args.gpu_memory {
        let Some((model, mib)) = assignment.split_once('=') else {
            bail!("--gpu-memory `{assignment}`: write MODEL=MIB, e.g. --gpu-memory G2=24576");
        };
        let mib: u64 = mib.parse().with_context(|| {
            format!("--gpu-memory `{assignment}`: the memory must be a whole number of MiB")
        })?;
        models.set_memory(model, mib);
    }

    let mut file_workload = Vec::new();
    let snapshot = if let Some(path) = &args.nodes {
        let trace = simulate::parse_node_csv(&path.display().to_string(), &read(path)?, &models)?;
        if !trace.assumed_models.is_empty() {
            eprintln!(
                "note: assumed {} MiB for GPU models not in the table: {} (set with --gpu-memory MODEL=MIB)",
                GpuModelTable::DEFAULT_MEMORY_MIB,
                trace.assumed_models.join(", ")
            );
        }
        if trace.cpu_only_nodes > 0 {
            eprintln!("note: left out {} CPU-only nodes", trace.cpu_only_nodes);
        }
        FleetSnapshot {
            nodes: trace.nodes,
            placements: Vec::new(),
        }
    } else if let Some(path) = &args.fleet {
        let file: SimulationFile = serde_norway::from_str(&read(path)?)
            .with_context(|| format!("parsing {} as a gpufleet fleet file", path.display()))?;
        file_workload = file.workload;
        FleetSnapshot {
            nodes: file.nodes,
            placements: file.placements,
        }
    } else if let Some(spec) = &spec {
        synthetic_fleet(spec)
    } else {
        bail!("no fleet: give --nodes CSV, --fleet YAML or --synthetic nodes=N");
    };

    let mut lifetimes = Vec::new();
    let workload = if let Some(path) = &args.pods {
        let trace = simulate::parse_pod_csv(&path.display().to_string(), &read(path)?)?;
        if trace.cpu_only_pods > 0 {
            eprintln!("note: left out {} CPU-only pods", trace.cpu_only_pods);
        }
        lifetimes = trace.lifetimes;
        trace.requests
    } else if !file_workload.is_empty() {
        file_workload
    } else if let Some(spec) = &spec {
        synthetic_workload(spec)
    } else {
        bail!(
            "no workload: give --pods CSV, a `workload` list in the fleet file, or --synthetic pods=N"
        );
    };
    Ok(SimulationInput {
        snapshot,
        workload,
        lifetimes,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn args(arguments: &[&str]) -> anyhow::Result<SimulateArgs> {
        let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/operator/placement/testdata");
        let arguments = arguments
            .iter()
            .map(|argument| argument.replace("TESTDATA", testdata));
        Ok(Command::try_parse_from(std::iter::once("simulate".to_owned()).chain(arguments))?.args)
    }

    #[test]
    fn replays_the_sample_csv_traces() -> anyhow::Result<()> {
        let args = args(&[
            "--nodes",
            "TESTDATA/openb-style-nodes.csv",
            "--pods",
            "TESTDATA/openb-style-pods.csv",
            "--gpu-memory",
            "G2=24576",
        ])?;
        let input = load_input(&args)?;
        assert_eq!(input.snapshot.nodes.len(), 18);
        assert!(input.workload.len() > 100);
        assert_eq!(input.lifetimes.len(), input.workload.len());
        let report = simulate::run(&input, &SimulationOptions::default())?;
        assert_eq!(report.strategies.len(), 4);
        let timeline = simulate::run_timeline(&input, &SimulationOptions::default())?;
        assert_eq!(timeline.strategies.len(), 4);
        Ok(())
    }

    #[test]
    fn reads_the_yaml_fleet_format_with_its_workload() -> anyhow::Result<()> {
        let input = load_input(&args(&["--fleet", "TESTDATA/fleet.yaml"])?)?;
        assert_eq!(input.snapshot.nodes.len(), 3);
        assert_eq!(input.snapshot.placements.len(), 1);
        assert_eq!(input.workload.len(), 8);
        Ok(())
    }

    #[test]
    fn runs_with_no_files_on_a_synthetic_fleet() -> anyhow::Result<()> {
        let input = load_input(&args(&["--synthetic", "nodes=10,pods=30"])?)?;
        assert_eq!(input.snapshot.nodes.len(), 10);
        assert_eq!(input.workload.len(), 30);
        Ok(())
    }

    #[test]
    fn a_malformed_gpu_memory_override_says_how_to_write_it() -> anyhow::Result<()> {
        let error = load_input(&args(&["--synthetic", "nodes=1", "--gpu-memory", "G2"])?)
            .err()
            .map(|error| error.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|message| message.contains("MODEL=MIB")),
            "{error:?}"
        );
        Ok(())
    }
}
