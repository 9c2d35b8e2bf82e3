//! `gpufleet operator`: runs the InferenceDeployment controller with leader election and
//! serves its metrics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gpufleet_operator::controller::{self, OperatorConfig};
use gpufleet_operator::leader::LeaderElector;
use gpufleet_operator::metrics::{self, Metrics};
use tracing::info;

/// Arguments of `gpufleet operator`.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
    /// Address of the `/metrics` and `/healthz` endpoint.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    metrics_bind: String,
    /// Namespace of the leader Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "gpufleet-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (the Pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease lives without renewal; a standby takes over after that.
    #[arg(long, default_value_t = 10)]
    lease_duration_seconds: u64,
    /// A GpuNode heartbeat older than this many seconds marks its GPUs as failed.
    #[arg(long, default_value_t = 90)]
    heartbeat_stale_after_seconds: u64,
    /// Reconcile only the InferenceDeployments of this namespace (default: all namespaces).
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile without leader election (a single replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// Defragmenter: move at most one healthy replica per this many seconds, across all
    /// deployments, to a node where it lowers the fleet's fragmentation (surge first, within
    /// each deployment's disruption budget). 0 turns it off.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    defragment_interval_seconds: u64,
    /// Defragmenter: the least drop in fragmentation, in GPUs of capacity the expected workload
    /// mix could not use, that is worth moving a replica.
    #[arg(long, default_value_t = 0.5, value_name = "GPUS", value_parser = positive_gpus)]
    defragment_min_gain_gpus: f64,
}

fn positive_gpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(format!(
            "`{text}` is not a positive number of GPUs (for example 0.5)"
        )),
    }
}

/// Runs the operator until interrupted or until it loses the leadership (then it exits with an
/// error, and its restart rebuilds the state from the cluster).
pub(crate) fn run(args: &OperatorArgs) -> anyhow::Result<()> {
    crate::cli::init_tracing();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &OperatorArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes: set KUBECONFIG or run in a cluster")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gpufleet".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let metrics = Arc::new(Metrics::new());
    let metrics_server = tokio::spawn(metrics::serve(
        args.metrics_bind.clone(),
        Arc::clone(&metrics),
    ));
    info!(identity, metrics = %args.metrics_bind, "gpufleet operator starting");

    let config = OperatorConfig {
        heartbeat_stale_after_ms: args.heartbeat_stale_after_seconds * 1000,
        instance: identity.clone(),
        namespace: args.namespace.clone(),
        defragment_every: (args.defragment_interval_seconds > 0)
            .then(|| Duration::from_secs(args.defragment_interval_seconds)),
        defragment_min_gain_gpus: args.defragment_min_gain_gpus,
        ..OperatorConfig::default()
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if args.no_leader_election {
        metrics.set_leader(true);
        tokio::select! {
            result = controller::run(client, metrics, config, shutdown) => result?,
            served = metrics_server => served??,
        }
        return Ok(());
    }
    let lease_duration = Duration::from_secs(args.lease_duration_seconds.max(2));
    let elector = LeaderElector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
    )
    .with_timing(lease_duration, lease_duration / 5);
    elector.acquire().await?;
    metrics.set_leader(true);
    info!(identity, "leading");
    tokio::select! {
        result = controller::run(client, Arc::clone(&metrics), config, shutdown) => result?,
        lost = elector.hold() => {
            metrics.set_leader(false);
            return Err(lost.into());
        }
        served = metrics_server => served??,
    }
    Ok(())
}
