//! The operator's Prometheus metrics and its `/metrics` + `/healthz` endpoint.
//!
//! - `gpufleet_operator_decision_seconds` (histogram): one engine decision;
//! - `gpufleet_operator_reconcile_seconds` (histogram): one whole reconcile;
//! - `gpufleet_operator_decisions_total{outcome="placed"|"unplaceable"}`;
//! - `gpufleet_operator_unplaceable_replicas` (gauge): replicas currently unplaced, all
//!   deployments;
//! - `gpufleet_operator_fragmentation_ratio` (gauge): share of free GPU capacity the expected
//!   workload mix cannot use, after the last decision round;
//! - `gpufleet_operator_reconcile_errors_total`, `gpufleet_operator_leader` (1 on the leader).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{Error, Result};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Every metric of the operator, cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    decision_seconds: Histogram,
    reconcile_seconds: Histogram,
    decisions: Family<OutcomeLabel, Counter>,
    unplaceable: Gauge,
    unplaced_by_deployment: Mutex<BTreeMap<String, u32>>,
    fragmentation: Gauge<f64, AtomicU64>,
    reconcile_errors: Counter,
    leader: Gauge,
    nodes_left_out: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gpufleet_operator");
        // 10 µs … ~20 s: engine decisions are micro- to milliseconds, reconciles up to seconds.
        let decision_seconds = Histogram::new(exponential_buckets(1e-5, 2.0, 16));
        let reconcile_seconds = Histogram::new(exponential_buckets(1e-4, 2.0, 18));
        let decisions = Family::<OutcomeLabel, Counter>::default();
        let unplaceable = Gauge::default();
        let fragmentation = Gauge::<f64, AtomicU64>::default();
        let reconcile_errors = Counter::default();
        let leader = Gauge::default();
        let nodes_left_out = Gauge::default();
        registry.register(
            "decision_seconds",
            "Time of one placement decision",
            decision_seconds.clone(),
        );
        registry.register(
            "reconcile_seconds",
            "Time of one reconcile",
            reconcile_seconds.clone(),
        );
        registry.register(
            "decisions",
            "Placement decisions by outcome",
            decisions.clone(),
        );
        registry.register(
            "unplaceable_replicas",
            "Replicas that cannot be placed now",
            unplaceable.clone(),
        );
        registry.register(
            "fragmentation_ratio",
            "Share of free GPU capacity the expected workload mix cannot use",
            fragmentation.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed",
            reconcile_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "nodes_left_out",
            "GPU nodes left out of placement because their GpuNode or Node cannot be used (see the LeftOutOfPlacement Events)",
            nodes_left_out.clone(),
        );
        Self {
            registry,
            decision_seconds,
            reconcile_seconds,
            decisions,
            unplaceable,
            unplaced_by_deployment: Mutex::new(BTreeMap::new()),
            fragmentation,
            reconcile_errors,
            leader,
            nodes_left_out,
        }
    }

    /// One engine decision took `elapsed`.
    pub fn observe_decision(&self, elapsed: Duration) {
        self.decision_seconds.observe(elapsed.as_secs_f64());
    }

    /// One reconcile took `elapsed`.
    pub fn observe_reconcile(&self, elapsed: Duration) {
        self.reconcile_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts a decision's outcome.
    pub fn record_decision(&self, placed: bool) {
        let outcome = if placed { "placed" } else { "unplaceable" };
        self.decisions
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Sets the unplaced replicas of one deployment and updates the total.
    pub fn set_unplaced(&self, deployment: &str, count: u32) {
        let mut by_deployment = self
            .unplaced_by_deployment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if count == 0 {
            by_deployment.remove(deployment);
        } else {
            by_deployment.insert(deployment.to_owned(), count);
        }
        self.unplaceable
            .set(i64::from(by_deployment.values().sum::<u32>()));
    }

    /// Sets the fleet fragmentation after a decision round.
    pub fn set_fragmentation(&self, ratio: f64) {
        self.fragmentation.set(ratio);
    }

    /// Counts a failed reconcile.
    pub fn record_reconcile_error(&self) {
        self.reconcile_errors.inc();
    }

    /// Sets how many nodes the last snapshot left out.
    pub fn set_nodes_left_out(&self, count: usize) {
        self.nodes_left_out
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Serves `/metrics` and `/healthz` on `address` until the process ends.
///
/// # Errors
/// [`Error::ServeMetrics`] when the address cannot be bound.
pub async fn serve(address: String, metrics: Arc<Metrics>) -> Result<()> {
    let data = web::Data::from(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/metrics",
                web::get().to(|metrics: web::Data<Metrics>| async move {
                    HttpResponse::Ok()
                        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
                        .body(metrics.render())
                }),
            )
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(&address)
    .map_err(|source| Error::ServeMetrics {
        address: address.clone(),
        source,
    })?;
    server
        .run()
        .await
        .map_err(|source| Error::ServeMetrics { address, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric() {
        let metrics = Metrics::new();
        metrics.observe_decision(Duration::from_micros(40));
        metrics.record_decision(true);
        metrics.record_decision(false);
        metrics.set_unplaced("a/b", 3);
        metrics.set_unplaced("a/c", 2);
        metrics.set_unplaced("a/b", 0);
        metrics.set_fragmentation(0.25);
        let text = metrics.render();
        for name in [
            "gpufleet_operator_decision_seconds_bucket",
            "gpufleet_operator_decisions_total{outcome=\"placed\"} 1",
            "gpufleet_operator_decisions_total{outcome=\"unplaceable\"} 1",
            "gpufleet_operator_unplaceable_replicas 2",
            "gpufleet_operator_fragmentation_ratio 0.25",
            "gpufleet_operator_leader 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
