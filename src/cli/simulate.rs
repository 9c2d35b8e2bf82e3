//! `gpufleet simulate`: replay a workload through the placement engine without a cluster and
//! compare strategies side by side (the FGD paper's GPU allocation at offered-load levels,
//! fragmentation, decision time), by the paper's protocol when asked (shuffle, seeds, sampling
//! to a load), with an upper bound of what any scheduler could reach, or benchmark the engine
//! with `--bench`.
//!
//! Reads files and prints; everything else is `gpufleet_placement::simulate`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use gpufleet_placement::simulate::{
    self, ArrivalOrder, DecisionRecord, GpuModelTable, SimulationFile, SimulationInput,
    SimulationOptions, SyntheticSpec, family::Family, synthetic_fleet, synthetic_workload,
};
use gpufleet_placement::{EngineConfig, FleetSnapshot, Strategy, WorkloadMix};

/// Arguments of `gpufleet simulate`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  # Alibaba's openb trace (the FGD paper's), by the paper's protocol: pods sorted by name and
  # shuffled per seed, sampled to 130% of the GPUs, nobody leaves; gpufleet's strategies beside
  # the paper's method and baselines, GPU allocation as the paper defines it
  gpufleet simulate --nodes openb_node_list_gpu_node.csv --pods openb_pod_list_default.csv \\
      --order shuffle --seeds 42..51 --tune 1.3 --bound
  gpufleet simulate --nodes … --pods … --order shuffle --seeds 42..51 --tune 1.3 --family gpushare100
  gpufleet simulate --nodes … --pods … --order shuffle --seed 42 --tune 1.3 --decisions decisions.csv
  gpufleet simulate --nodes nodes.csv --pods pods.csv --replay timeline
  gpufleet simulate                                   # synthetic 1,000-node fleet
  gpufleet simulate --synthetic nodes=2000,mix=sharing --load 1.0,1.3 --output json
  gpufleet simulate --fleet fleet.yaml --synthetic pods=500
  gpufleet simulate --bench                           # 10,000 nodes x 8 GPUs, 50,000 replicas

The openb files ship in operator/placement/testdata/openb/ (copied unmodified from Alibaba's
cluster-trace-gpu-v2023).")]
pub(crate) struct SimulateArgs {
    /// Node CSV (sn,cpu_milli,memory_mib,gpu,model), as Alibaba's openb_node_list.
    #[arg(long, value_name = "CSV", conflicts_with = "fleet")]
    nodes: Option<PathBuf>,
    /// Pod CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec][,creation_time,…]), as
    /// openb_pod_list; CPU-only pods take CPU and memory on the GPU nodes.
    #[arg(long, value_name = "CSV")]
    pods: Option<PathBuf>,
    /// The project's YAML fleet format: `nodes`, optional `placements` and `workload`.
    #[arg(long, value_name = "YAML")]
    fleet: Option<PathBuf>,
    /// Built-in generator for what no file gives: nodes=N,gpus=8,pods=N,mix=inference|sharing,
    /// seed=N,telemetry=on|off. Without any input, nodes=1000 is generated.
    #[arg(long, value_name = "SPEC")]
    synthetic: Option<String>,
    /// Strategies to compare, comma-separated: names, `gpufleet` (fragmentation-aware,
    /// best-fit, pack, spread), `paper` (the FGD paper's fgd, best-fit-cpu-gpu, gpu-packing,
    /// gpu-clustering, dot-product, random) or `all`.
    #[arg(long, value_delimiter = ',', default_values = ["all"])]
    strategy: Vec<String>,
    /// Offered-load levels to report at, as fractions of GPU capacity (1.3 = 130%).
    #[arg(long, value_delimiter = ',', default_values = ["1.0", "1.3"])]
    load: Vec<f64>,
    /// Arrival order: `as-given` (a pod CSV's creation times, then file order) or `shuffle`
    /// (the paper's: sorted by name, then shuffled with each seed).
    #[arg(long, value_enum, default_value_t = Order::AsGiven)]
    order: Order,
    /// One seed (shuffle, sampling, the random baselines).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Several seeds, `42..51` or `1,2,3`: one replay each; the table shows their mean, minimum
    /// and maximum.
    #[arg(long, value_name = "SEEDS")]
    seeds: Option<String>,
    /// The paper's sampling: draw pods with replacement until the offered GPU demand reaches
    /// this share of the GPU capacity (e.g. 1.3); the replay is exactly those arrivals.
    #[arg(long, value_name = "SHARE")]
    tune: Option<f64>,
    /// A workload family of the paper derived from the pods: gpushare100, multigpu50,
    /// gpuspec33, cpu250, … (or gpushare:0.8 style shares).
    #[arg(long, value_name = "FAMILY")]
    family: Option<String>,
    /// Soft spreading of a group's replicas for gpufleet's strategies, in GPU-equivalents per
    /// replica already on a node (default 1; 0 packs purely).
    #[arg(long, value_name = "GPUS")]
    spread_weight: Option<f64>,
    /// Write every decision (seed, strategy, replica, node, GPUs, score terms) to this file:
    /// CSV when it ends in .csv, JSON lines otherwise.
    #[arg(long, value_name = "FILE")]
    decisions: Option<PathBuf>,
    /// Also compute an upper bound of the GPU allocation any scheduler could reach on the same
    /// arrivals (an LP relaxation, solved by the planner's LP layer with its simplex solver).
    #[arg(long)]
    bound: bool,
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

/// The arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Order {
    /// As read.
    AsGiven,
    /// Sorted by name, then shuffled with the seed.
    Shuffle,
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

/// The most seeds one command replays.
const MAX_SEEDS: usize = 1_000;

/// Reads `--strategy` (names and the group names `gpufleet`, `paper`, `all`).
fn strategies(names: &[String]) -> anyhow::Result<Vec<Strategy>> {
    let mut strategies = Vec::new();
    for name in names {
        let group: Vec<Strategy> = match name.as_str() {
            "all" => Strategy::ALL.into_iter().chain(Strategy::PAPER).collect(),
            "gpufleet" => Strategy::ALL.to_vec(),
            "paper" => Strategy::PAPER.to_vec(),
            other => vec![other.parse::<Strategy>()?],
        };
        for strategy in group {
            if !strategies.contains(&strategy) {
                strategies.push(strategy);
            }
        }
    }
    Ok(strategies)
}

/// Reads `--seeds 42..51` or `--seeds 1,5,9`.
fn seeds(args: &SimulateArgs) -> anyhow::Result<Vec<u64>> {
    if let Some(seed) = args.seed {
        return Ok(vec![seed]);
    }
    let Some(text) = &args.seeds else {
        return Ok(Vec::new());
    };
    let fix = "write --seeds FIRST..LAST (e.g. 42..51) or a list (1,2,3)";
    let seeds: Vec<u64> = if let Some((first, last)) = text.split_once("..") {
        let first: u64 = first
            .trim()
            .parse()
            .with_context(|| format!("--seeds `{text}`: {fix}"))?;
        let last: u64 = last
            .trim()
            .parse()
            .with_context(|| format!("--seeds `{text}`: {fix}"))?;
        if last < first || last - first >= MAX_SEEDS as u64 {
            bail!(
                "--seeds `{text}`: give 1 to {MAX_SEEDS} seeds, the first no greater than the last"
            );
        }
        (first..=last).collect()
    } else {
        text.split(',')
            .map(|seed| seed.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("--seeds `{text}`: {fix}"))?
    };
    if seeds.is_empty() || seeds.len() > MAX_SEEDS {
        bail!("--seeds `{text}`: give 1 to {MAX_SEEDS} seeds");
    }
    Ok(seeds)
}

/// Runs `gpufleet simulate`.
pub(crate) fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let strategies = strategies(&args.strategy)?;
    if args.bench {
        return bench(args, &strategies);
    }
    let mut input = load_input(args)?;
    if let Some(family) = &args.family {
        let family: Family = family.parse()?;
        input.workload = simulate::family::derive(
            &input.workload,
            &input.snapshot.nodes,
            family,
            args.seed.unwrap_or(1),
        )?;
        input.lifetimes.clear();
    }
    let options = SimulationOptions {
        strategies,
        load_levels: args.load.clone(),
        order: match args.order {
            Order::AsGiven => ArrivalOrder::AsGiven,
            Order::Shuffle => ArrivalOrder::Shuffle,
        },
        seeds: seeds(args)?,
        tune: args.tune,
        spread_weight: args.spread_weight,
        record_decisions: args.decisions.is_some(),
        ..SimulationOptions::default()
    };
    if args.replay == Replay::Timeline {
        let report = simulate::run_timeline(&input, &options)?;
        match args.output {
            OutputFormat::Table => print!("{}", report.render_table()),
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        return Ok(());
    }
    let mut report = simulate::run(&input, &options)?;
    if let Some(path) = &args.decisions {
        write_decisions(path, &report.decisions)?;
        eprintln!(
            "wrote {} decisions to {}",
            report.decisions.len(),
            path.display()
        );
        report.decisions.clear();
    }
    if args.bound {
        report.bound = Some(crate::cli::bound::allocation_bound(
            &input, &options, &report,
        )?);
    }
    match args.output {
        OutputFormat::Table => print!("{}", report.render_table()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

/// Writes the decisions as CSV (`.csv`) or JSON lines.
fn write_decisions(path: &Path, decisions: &[DecisionRecord]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let csv = path.extension().is_some_and(|extension| extension == "csv");
    if csv {
        writeln!(
            out,
            "seed,strategy,arrival,replica,gpu_milli,gpu_count,cpu_milli,memory_mib,node,gpus,reason,\
             strategy_cost,fragmentation_delta_gpus,penalties,spread_penalty,total,offered_load,allocated_share"
        )?;
    }
    for decision in decisions {
        if csv {
            let score = decision.score.as_ref();
            let penalties = score.map(|score| {
                score.health_penalty
                    + score.thermal_penalty
                    + score.power_penalty
                    + score.utilisation_penalty
                    + score.telemetry_penalty
                    + score.numa_penalty
            });
            let number =
                |value: Option<f64>| value.map_or(String::new(), |value| format!("{value:.6}"));
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6}",
                decision.seed,
                decision.strategy.name(),
                decision.arrival,
                decision.replica,
                decision.gpu_milli,
                decision.gpu_count,
                decision.cpu_milli,
                decision.memory_mib,
                decision.node.as_deref().unwrap_or(""),
                decision
                    .gpus
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("|"),
                decision.reason.as_deref().unwrap_or("").replace(',', ";"),
                number(score.map(|score| score.strategy_cost)),
                number(score.and_then(|score| score.fragmentation_delta_gpus)),
                number(penalties),
                number(score.map(|score| score.spread_penalty)),
                number(score.map(|score| score.total)),
                decision.offered_load,
                decision.allocated_share
            )?;
        } else {
            serde_json::to_writer(&mut out, decision)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
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
    let mix = WorkloadMix::from_requests(&workload, usize::MAX);
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
