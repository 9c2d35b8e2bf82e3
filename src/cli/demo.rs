//! `gpufleet demo`: the whole product on one laptop, with nothing to install or configure.
//!
//! It wires together what the other subcommands run separately: a simulated fleet (agent
//! machine presets with faults scripted over the first minutes), the operator's placement
//! engine placing a few InferenceDeployments on it (through the dashboard's live view), the
//! capacity planner solving every shipped scenario, and the dashboard serving all of it from
//! an in-memory store. The planner page is usable at once: a random bearer token is generated
//! and printed inside the page's address, and never leaves this machine's terminal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gpufleet_dashboard::api::planner::stored_run;
use gpufleet_dashboard::auth::Token;
use gpufleet_dashboard::planner_run::{self, RunLimits, RunRequest};
use gpufleet_dashboard::store::Store;
use gpufleet_dashboard::store::memory::{MemoryLimits, MemoryStore};
use gpufleet_dashboard::{Application, FleetFeed, Settings};

use crate::cli::dashboard::SimulatedFleet;

/// Arguments of `gpufleet demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Address the dashboard listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Simulated nodes (DGX H100/H200, HGX B200, L40S boxes and mixed nodes, 4 or 8 GPUs each).
    #[arg(long, default_value_t = 36, value_parser = clap::value_parser!(u16).range(1..=2000))]
    nodes: u16,
    /// Do not solve the shipped planning scenarios at start-up.
    #[arg(long)]
    no_planner: bool,
}

/// A bearer token for this run only: 32 hex digits from the OS-seeded hasher keys, the
/// process id and the clock (no extra dependency; it guards a local demo, not a bank).
fn demo_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut text = String::new();
    for round in 0u64..2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(round);
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        text.push_str(&format!("{:016x}", hasher.finish()));
    }
    text
}

/// Solves every shipped scenario as written, records each run in `store` and prints the
/// side-by-side comparison. A scenario the dashboard's run limits refuse is named and skipped.
async fn solve_shipped_scenarios(store: Arc<dyn Store>, limits: RunLimits) -> anyhow::Result<()> {
    let mut plans = Vec::new();
    for scenario in planner_run::shipped_scenarios() {
        let request = RunRequest {
            scenario: Some(scenario.name.clone()),
            yaml: None,
            parameters: planner_run::Parameters::default(),
        };
        let solved = tokio::task::spawn_blocking(move || planner_run::solve(&request, &limits))
            .await
            .context("the planner thread stopped")?;
        match solved {
            Ok(result) => {
                let run = stored_run(
                    &result,
                    serde_json::json!({}),
                    gpufleet_dashboard::live::unix_millis_now(),
                );
                store
                    .record_planner_run(&run)
                    .await
                    .with_context(|| format!("record the run of {}", scenario.name))?;
                plans.push(result.plan);
            }
            Err(error) => eprintln!("gpufleet demo: scenario {} skipped: {error}", scenario.name),
        }
    }
    println!(
        "\nShipped planning scenarios, solved ({} runs on the planner page):\n{}",
        plans.len(),
        gpufleet_planner::report::compare_table(&plans)
    );
    Ok(())
}

/// Runs the demo until Ctrl-C.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    crate::cli::init_tracing();
    let token = demo_token();
    let settings = Settings {
        bind: args.bind,
        token: Some(Token::new(&token).context("build the demo token")?),
        tick: Duration::from_secs(2),
        ..Settings::default()
    };
    let limits = settings.run_limits;
    let feed: Box<dyn FleetFeed> = Box::new(SimulatedFleet::new(usize::from(args.nodes))?);
    let solve_planner = !args.no_planner;
    let nodes = args.nodes;
    gpufleet_dashboard::startup::block_on(async move {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(MemoryLimits::default()));
        let app = Application::build(settings, Arc::clone(&store), Some(feed))
            .await
            .with_context(|| {
                format!(
                    "start the dashboard on {bind} (pass --bind ADDR to use another address)",
                    bind = args.bind
                )
            })?;
        let address = app.address();
        let current = app.state().live.current();
        let placed: usize = current.deployments.iter().map(|d| d.placed.len()).sum();
        let wanted: u32 = current.deployments.iter().map(|d| d.desired).sum();
        println!(
            "gpufleet demo: {nodes} simulated nodes, {} GPUs; {} InferenceDeployments, {placed} of {wanted} replicas placed by the fragmentation-aware engine; faults arrive over the next minutes.",
            current.fleet.totals.gpus,
            current.deployments.len()
        );
        println!("gpufleet demo: dashboard on http://{address}/");
        println!(
            "gpufleet demo: planner runs enabled for this session: http://{address}/#planner?token={}",
            token
        );
        println!("gpufleet demo: Ctrl-C stops it.");
        if solve_planner {
            tokio::spawn(async move {
                if let Err(error) = solve_shipped_scenarios(store, limits).await {
                    eprintln!("gpufleet demo: planner: {error:#}");
                }
            });
        }
        app.run_until_stopped().await?;
        anyhow::Ok(())
    })
}
