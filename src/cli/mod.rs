//! Subcommands of the `gpufleet` binary, one module each.

pub(crate) mod agent;
pub(crate) mod bound;
pub(crate) mod crds;
pub(crate) mod dashboard;
pub(crate) mod demo;
pub(crate) mod operator;
pub(crate) mod plan;
pub(crate) mod simulate;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), for the long-running commands.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
