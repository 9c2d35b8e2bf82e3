//! `gpufleet`: the one binary of the project.
//!
//! Each subcommand is a thin shell over a library crate (see DESIGN.md): it parses arguments,
//! calls the crate, and prints or serves the result. Library crates never print.

mod cli;

use clap::{Parser, Subcommand};

/// GPU fleet scheduler and capacity planner for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "gpufleet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every gpufleet CustomResourceDefinition as YAML (what charts/gpufleet/crds holds).
    Crds(cli::crds::CrdsArgs),
    /// Capacity planning: split money and GPUs between pre-training, post-training and
    /// test-time compute over time (scenarios, scaling laws, an LP with shadow prices).
    Plan(cli::plan::PlanArgs),
    /// Node agent: read GPUs through NVML (or a simulation) and publish telemetry and health.
    Agent(cli::agent::AgentArgs),
    /// Kubernetes operator: place InferenceDeployment replicas on GPUs from live telemetry,
    /// replace failed ones, with leader election and metrics.
    Operator(cli::operator::OperatorArgs),
    /// Web dashboard: fleet heatmap, stranded capacity, placements, history and planner runs
    /// (`--simulate` for a simulated fleet in memory, `--database-url` for PostgreSQL history).
    Dashboard(cli::dashboard::DashboardArgs),
    /// Replay a workload through the placement engine without a cluster; compare strategies.
    Simulate(cli::simulate::SimulateArgs),
    /// Everything on one machine, nothing to set up: a simulated fleet with faults, the
    /// placement engine placing InferenceDeployments, the planner's scenarios, and the
    /// dashboard on http://127.0.0.1:8080.
    Demo(cli::demo::DemoArgs),
}

/// Runs the command; an error is the user's to read, not a crash: it is printed with its
/// causes and no backtrace (also with `RUST_BACKTRACE` set), and the exit status is 1.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => cli::crds::run(&args),
        Command::Plan(args) => cli::plan::run(args),
        Command::Agent(args) => cli::agent::run(&args),
        Command::Operator(args) => cli::operator::run(&args),
        Command::Dashboard(args) => cli::dashboard::run(&args),
        Command::Simulate(args) => cli::simulate::run(&args),
        Command::Demo(args) => cli::demo::run(&args),
    }
}
