//! `gpufleet agent`: the node agent's commands.
//!
//! `probe` reads a real machine's GPUs through NVML once and writes what it read as a fixture
//! that the stand-in libnvidia-ml (`GPUFLEET_NVML_FIXTURE`) and the replay source play back.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use gpufleet_agent::fixture::{self, ProbePlan};
use gpufleet_agent::nvml::{DEFAULT_NVML_LIBRARY, NvmlSource};

/// Arguments of `gpufleet agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Read inventory, samples and events from the GPUs through NVML and write them as JSON (a
    /// fixture the stand-in NVML can replay). Readings that fail are recorded, never fatal.
    Probe(ProbeArgs),
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

/// Runs an agent command.
pub(crate) fn run(args: &AgentArgs) -> anyhow::Result<()> {
    match &args.command {
        AgentCommand::Probe(probe) => run_probe(probe),
    }
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
