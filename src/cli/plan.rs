//! `gpufleet plan …`: the capacity planner's command line. A thin shell over
//! `gpufleet-planner`: it reads scenario files (or the shipped ones by name), calls the
//! planner, prints tables or JSON/CSV/Markdown, writes SVG charts and draws progress bars.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gpufleet_planner::benchmark;
use gpufleet_planner::generator::Size;
use gpufleet_planner::model::FleetModel;
use gpufleet_planner::scaling::{ConstantSet, PhaseWeights, TrainingRunAccounting};
use gpufleet_planner::sweep::{self, Vary};
use gpufleet_planner::{Error, Plan, Scenario, SolverChoice, chart, library, plan, report};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `gpufleet plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(subcommand)]
    command: PlanCommand,
}

#[derive(Debug, Subcommand)]
enum PlanCommand {
    /// Solve one scenario (a YAML file or a shipped name) and print the plan.
    Run(RunArgs),
    /// Solve several scenarios and put them side by side (capex used/stranded/short, GPU-hours).
    Compare(CompareArgs),
    /// Re-solve a scenario over a grid of parameter values, in parallel, with a progress bar.
    Sweep(SweepArgs),
    /// Print shadow prices, binding constraint groups and approximation errors.
    Explain(SolveArgs),
    /// Parse and validate a scenario without solving it.
    Validate(ScenarioArg),
    /// Scaling-law calculators: compute-optimal N and D, inference-aware sizing, DeepSeek-V3.
    Scaling(ScalingArgs),
    /// List the shipped scenarios.
    List,
    /// Print a shipped scenario's YAML (a starting point for your own).
    Show(ScenarioArg),
    /// Benchmark: solve generated interactive/hyperscale scenarios and a sweep, and time them.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct ScenarioArg {
    /// A scenario YAML file, or the name of a shipped scenario (`gpufleet plan list`).
    scenario: String,
}

#[derive(Debug, Args)]
struct SolveArgs {
    /// A scenario YAML file, or the name of a shipped scenario.
    scenario: String,
    /// LP solver: clarabel (default, pure Rust, duals), microlp (pure Rust, no duals), highs
    /// (needs the `highs` feature).
    #[arg(long, default_value = "clarabel")]
    solver: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Csv,
    Markdown,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    solve: SolveArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Also write an SVG chart here (spend split over time, GPU-hours by stage, quality vs.
    /// cost frontier).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Points on the quality-vs-cost frontier drawn in the chart, 2–200 (one LP solve each).
    #[arg(long, default_value_t = 6,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=200))]
    frontier_points: usize,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Scenarios (files or shipped names); default: every shipped scenario.
    scenarios: Vec<String>,
    /// LP solver.
    #[arg(long, default_value = "clarabel")]
    solver: String,
    /// Output format (table, json or markdown).
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Skip the second solve per scenario that measures how much capex is short.
    #[arg(long)]
    no_short: bool,
}

#[derive(Debug, Args)]
struct SweepArgs {
    #[command(flatten)]
    solve: SolveArgs,
    /// `path=lo..hi:steps`, e.g. `economics.capex_budget_musd=1000..5000:9` or
    /// `gpus.H100.price_usd=20000..30000:5`; repeat for a grid.
    #[arg(long, required = true)]
    vary: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Output format (table, csv or json).
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, Args)]
struct ScalingArgs {
    /// Training compute, FLOP: print the compute-optimal N and D (Hoffmann et al. Eq. 4).
    #[arg(long)]
    compute: Option<f64>,
    /// Target loss: print the Chinchilla-optimal and inference-aware models reaching it.
    #[arg(long)]
    target_loss: Option<f64>,
    /// Tokens the model will serve over its life (inference-aware sizing, Sardana et al.).
    #[arg(long, default_value_t = 0.0)]
    inference_tokens: f64,
    /// Relative cost of a training FLOP (e.g. $/FLOP ÷ MFU).
    #[arg(long, default_value_t = 1.0)]
    training_weight: f64,
    /// Relative cost of an inference FLOP.
    #[arg(long, default_value_t = 1.0)]
    inference_weight: f64,
    /// Constant set: hoffmann, hoffmann-tex or epoch.
    #[arg(long, default_value = "hoffmann")]
    constants: String,
    /// Print DeepSeek-V3's training accounting.
    #[arg(long)]
    deepseek: bool,
    /// Output format (table or json).
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum BenchSize {
    Interactive,
    Hyperscale,
    All,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Which generated scenarios to solve.
    #[arg(long, value_enum, default_value = "interactive")]
    size: BenchSize,
    /// Solvers to time, comma-separated (clarabel, microlp, highs).
    #[arg(long, default_value = "clarabel")]
    solvers: String,
    /// Points of the sweep of the baseline scenario (0: no sweep).
    #[arg(long, default_value_t = 1000)]
    sweep_points: usize,
    /// Worker threads for the sweep (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `gpufleet plan …`.
pub(crate) fn run(args: PlanArgs) -> anyhow::Result<()> {
    match args.command {
        PlanCommand::Run(args) => run_scenario(&args),
        PlanCommand::Compare(args) => compare(&args),
        PlanCommand::Sweep(args) => run_sweep(&args),
        PlanCommand::Explain(args) => {
            let plan = solve(&args)?;
            println!("{}", plan.explain());
            Ok(())
        }
        PlanCommand::Validate(args) => {
            let scenario = load(&args.scenario)?;
            let model = FleetModel::build(&scenario)?;
            println!(
                "{}: valid ({} periods, {} GPU types, {} models, {} services; LP {} variables, {} constraints)",
                scenario.name,
                scenario.periods.count,
                scenario.gpus.len(),
                scenario.training.models.len(),
                scenario.services.len(),
                model.program.variables.len(),
                model.program.rows.len()
            );
            Ok(())
        }
        PlanCommand::Scaling(args) => scaling(&args),
        PlanCommand::List => {
            for (name, text) in library::SHIPPED {
                let scenario = Scenario::from_yaml(text)?;
                println!("{name:<20} {}", scenario.description.trim());
            }
            Ok(())
        }
        PlanCommand::Show(args) => {
            let text = library::text(&args.scenario)
                .ok_or_else(|| Error::UnknownScenario(args.scenario.clone(), library::names()))?;
            print!("{text}");
            Ok(())
        }
        PlanCommand::Bench(args) => bench(&args),
    }
}

/// Reads a scenario from a file path, or by shipped name.
fn load(reference: &str) -> anyhow::Result<Scenario> {
    let path = Path::new(reference);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read scenario {}", path.display()))?;
        return Scenario::from_yaml(&text)
            .with_context(|| format!("scenario file {}", path.display()));
    }
    let text = library::text(reference)
        .ok_or_else(|| Error::UnknownScenario(reference.into(), library::names()))?;
    Ok(Scenario::from_yaml(text)?)
}

fn solve(args: &SolveArgs) -> anyhow::Result<Plan> {
    let scenario = load(&args.scenario)?;
    Ok(plan(&scenario, SolverChoice::from_name(&args.solver)?)?)
}

fn threads(requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

fn run_scenario(args: &RunArgs) -> anyhow::Result<()> {
    let scenario = load(&args.solve.scenario)?;
    let solver = SolverChoice::from_name(&args.solve.solver)?;
    let plan = plan(&scenario, solver)?;
    match args.output {
        Output::Table => println!("{}", plan.to_table()),
        Output::Json => println!("{}", plan.to_json()?),
        Output::Csv => print!("{}", plan.to_csv()),
        Output::Markdown => print!("{}", plan.to_markdown()),
    }
    if let Some(path) = &args.chart {
        let frontier = sweep::frontier(&scenario, solver, args.frontier_points);
        std::fs::write(path, chart::plan_chart(&plan, Some(&frontier)))
            .with_context(|| format!("write chart {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let solver = SolverChoice::from_name(&args.solver)?;
    let names: Vec<String> = if args.scenarios.is_empty() {
        library::SHIPPED
            .iter()
            .map(|(name, _)| (*name).to_string())
            .collect()
    } else {
        args.scenarios.clone()
    };
    let mut plans = Vec::new();
    for name in &names {
        let scenario = load(name)?;
        let mut plan = plan(&scenario, solver).with_context(|| format!("scenario {name}"))?;
        if !args.no_short {
            plan.totals.capex_short_musd = Some(
                sweep::capex_short(&scenario, solver)
                    .with_context(|| format!("capex shortfall of {name}"))?,
            );
        }
        plans.push(plan);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plans)?),
        Output::Markdown => {
            let table = report::compare_table(&plans);
            println!("```\n{table}```");
        }
        Output::Table | Output::Csv => print!("{}", report::compare_table(&plans)),
    }
    Ok(())
}

fn progress_bar(length: usize) -> ProgressBar {
    let bar = ProgressBar::new(length as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} solves, {per_sec}, ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn run_sweep(args: &SweepArgs) -> anyhow::Result<()> {
    let scenario = load(&args.solve.scenario)?;
    let solver = SolverChoice::from_name(&args.solve.solver)?;
    let varies = args
        .vary
        .iter()
        .map(|spec| spec.parse::<Vary>())
        .collect::<Result<Vec<_>, _>>()?;
    let total = sweep::grid(&varies).len();
    let bar = progress_bar(total);
    let started = Instant::now();
    let points = sweep::run(&scenario, &varies, solver, threads(args.threads), &|| {
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "{total} solves in {elapsed:.2} s ({:.1} solves/s)",
        total as f64 / elapsed.max(1e-9)
    );
    if let Output::Json = args.output {
        println!("{}", serde_json::to_string_pretty(&points)?);
        return Ok(());
    }
    let mut header: Vec<String> = varies.iter().map(|vary| vary.path.clone()).collect();
    header.extend(
        [
            "objective_musd",
            "capex_musd",
            "rent_musd",
            "pretrain_mgpuh",
            "posttrain_mgpuh",
            "inference_mgpuh",
            "queries_b",
            "peak_mw",
            "error",
        ]
        .map(String::from),
    );
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|point| {
            let mut row: Vec<String> = point
                .values
                .iter()
                .map(|(_, value)| format!("{value}"))
                .collect();
            match &point.outcome {
                Ok(summary) => row.extend([
                    format!("{:.1}", summary.objective_musd),
                    format!("{:.1}", summary.capex_spent_musd),
                    format!("{:.1}", summary.rent_musd),
                    format!("{:.2}", summary.hours.pretraining),
                    format!("{:.2}", summary.hours.post_training),
                    format!("{:.2}", summary.hours.inference),
                    format!("{:.2}", summary.queries_b),
                    format!("{:.1}", summary.peak_mw),
                    String::new(),
                ]),
                Err(error) => {
                    row.extend(std::iter::repeat_n("-".to_string(), 8));
                    row.push(error.replace(',', ";"));
                }
            }
            row
        })
        .collect();
    if let Output::Csv = args.output {
        println!("{}", header.join(","));
        for row in rows {
            println!("{}", row.join(","));
        }
    } else {
        print!("{}", report::aligned_table(&header, &rows));
    }
    Ok(())
}

fn scaling(args: &ScalingArgs) -> anyhow::Result<()> {
    let set = ConstantSet::from_name(&args.constants).with_context(|| {
        format!(
            "unknown constant set `{}`: use hoffmann, hoffmann-tex or epoch",
            args.constants
        )
    })?;
    let constants = set.constants();
    let mut report = serde_json::Map::new();
    report.insert(
        "constants".into(),
        serde_json::json!({ "name": set.name(), "values": constants }),
    );
    if let Some(compute) = args.compute {
        if !(compute.is_finite() && compute > 0.0) {
            bail!("--compute must be a positive number of FLOP, e.g. 1e24");
        }
        report.insert(
            "compute_optimal".into(),
            serde_json::to_value(constants.compute_optimal(compute))?,
        );
    }
    if let Some(target) = args.target_loss {
        let weights = PhaseWeights {
            training: args.training_weight,
            inference: args.inference_weight,
        };
        let sizing = constants.inference_aware(target, args.inference_tokens, weights)?;
        report.insert("inference_aware".into(), serde_json::to_value(sizing)?);
    }
    if args.deepseek {
        let run = TrainingRunAccounting::deepseek_v3();
        report.insert(
            "deepseek_v3".into(),
            serde_json::json!({
                "total_gpu_hours": run.total_gpu_hours(),
                "cost_usd": run.cost_usd(),
                "gpu_hours_per_trillion_tokens": run.gpu_hours_per_trillion_tokens(),
                "implied_mfu_bf16_h800": run.implied_mfu(37e9, 989e12),
                "stages": run.stages,
            }),
        );
    }
    if report.len() == 1 {
        bail!("give --compute FLOP, --target-loss LOSS (with --inference-tokens) or --deepseek");
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => {
            println!(
                "constants {}: E={} A={} B={} α={} β={}",
                set.name(),
                constants.irreducible,
                constants.parameter_coefficient,
                constants.data_coefficient,
                constants.parameter_exponent,
                constants.data_exponent
            );
            if let Some(compute) = args.compute {
                let optimum = constants.compute_optimal(compute);
                println!(
                    "compute-optimal at {compute:.3e} FLOP: N = {:.4e} parameters, D = {:.4e} tokens ({:.1} tokens/parameter), loss {:.4}",
                    optimum.parameters,
                    optimum.tokens,
                    optimum.tokens / optimum.parameters,
                    optimum.loss
                );
            }
            if let Some(target) = args.target_loss {
                let weights = PhaseWeights {
                    training: args.training_weight,
                    inference: args.inference_weight,
                };
                let sizing = constants.inference_aware(target, args.inference_tokens, weights)?;
                println!(
                    "Chinchilla-optimal for loss {target}: N = {:.4e}, D = {:.4e}, training {:.4e} FLOP, inference {:.4e} FLOP",
                    sizing.chinchilla.parameters,
                    sizing.chinchilla.tokens,
                    sizing.chinchilla.training_flop,
                    sizing.chinchilla_inference_flop
                );
                println!(
                    "inference-aware ({:.3e} inference tokens): N = {:.4e}, D = {:.4e}, training {:.4e} FLOP, inference {:.4e} FLOP; weighted cost {:.4e} vs {:.4e} ({:.1}% saved)",
                    args.inference_tokens,
                    sizing.optimum.parameters,
                    sizing.optimum.tokens,
                    sizing.optimum.training_flop,
                    sizing.inference_flop,
                    sizing.weighted_cost,
                    sizing.chinchilla_weighted_cost,
                    100.0 * (1.0 - sizing.weighted_cost / sizing.chinchilla_weighted_cost)
                );
            }
            if args.deepseek {
                let run = TrainingRunAccounting::deepseek_v3();
                println!(
                    "{}: {:.0} GPU-hours, ${:.3}M at ${}/h, {:.0} GPU-hours per trillion tokens, implied MFU {:.1}% of BF16 peak",
                    run.name,
                    run.total_gpu_hours(),
                    run.cost_usd() / 1e6,
                    run.usd_per_gpu_hour,
                    run.gpu_hours_per_trillion_tokens(),
                    100.0 * run.implied_mfu(37e9, 989e12)
                );
            }
        }
    }
    Ok(())
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let sizes: Vec<(&str, Size)> = match args.size {
        BenchSize::Interactive => vec![("interactive", Size::INTERACTIVE)],
        BenchSize::Hyperscale => vec![("hyperscale", Size::HYPERSCALE)],
        BenchSize::All => vec![
            ("interactive", Size::INTERACTIVE),
            ("hyperscale", Size::HYPERSCALE),
        ],
    };
    let solvers = args
        .solvers
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(SolverChoice::from_name)
        .collect::<Result<Vec<_>, _>>()?;
    for (label, size) in sizes {
        print!("{}", benchmark::bench_size(label, size, &solvers)?);
    }
    if args.sweep_points > 0 {
        let solver = solvers.first().copied().unwrap_or_default();
        let bar = progress_bar(args.sweep_points);
        let report =
            benchmark::bench_sweep(args.sweep_points, solver, threads(args.threads), &|| {
                bar.inc(1)
            })?;
        bar.finish_and_clear();
        println!("{report}");
    }
    Ok(())
}
