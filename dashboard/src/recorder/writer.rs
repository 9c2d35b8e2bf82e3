//! The store writer: takes batches from the [`FactBuffer`] and writes them, retrying a failed
//! batch with exponential backoff until the store takes it (while the watchers keep filling
//! the buffer, which drops its oldest facts once full).
//!
//! Retrying a batch is safe because every write is idempotent: a batch that half-succeeded
//! before the store went away writes only its missing half the second time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::buffer::{FactBuffer, Gap};
use super::facts::Fact;
use crate::store::{FleetEvent, Store, StoreResult};

/// How the writer batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterSettings {
    /// Largest batch written at once.
    pub batch_size: usize,
    /// First wait after a failed write.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            batch_size: 2_000,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// What the writer has done, for the status endpoint.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Batches written.
    pub batches: AtomicU64,
    /// Rows the store did not hold before.
    pub new_rows: AtomicU64,
    /// Writes that failed (each retry counts).
    pub failures: AtomicU64,
    /// Unix milliseconds of the last failure (0: never).
    pub last_failure_ms: AtomicI64,
    /// Unix milliseconds of the last successful batch (0: never).
    pub last_write_ms: AtomicI64,
    /// The last failure's message.
    pub last_error: Mutex<Option<String>>,
}

/// [`WriterCounters`] as numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterValues {
    /// Batches written.
    pub batches: u64,
    /// Rows the store did not hold before.
    pub new_rows: u64,
    /// Failed writes.
    pub failures: u64,
    /// Unix milliseconds of the last failure (0: never).
    pub last_failure_ms: i64,
    /// Unix milliseconds of the last successful batch (0: never).
    pub last_write_ms: i64,
    /// The last failure's message.
    pub last_error: Option<String>,
}

impl WriterCounters {
    /// The counters as numbers.
    #[must_use]
    pub fn values(&self) -> WriterValues {
        WriterValues {
            batches: self.batches.load(Ordering::Relaxed),
            new_rows: self.new_rows.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_failure_ms: self.last_failure_ms.load(Ordering::Relaxed),
            last_write_ms: self.last_write_ms.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The event that tells history what the buffer had to drop. Its id names the recorder
/// instance and the gap's number, so a retried write of the same marker stores it once.
#[must_use]
pub fn gap_event(instance: &str, number: u64, gap: &Gap) -> FleetEvent {
    let dropped = gap.dropped;
    FleetEvent {
        id: format!("recorder-gap:{instance}:{number}"),
        at_ms: gap.from_ms,
        severity: "Warning".to_owned(),
        reason: "RecorderGap".to_owned(),
        object_kind: "Recorder".to_owned(),
        object_name: instance.to_owned(),
        gpu_uuid: None,
        message: format!(
            "history has a gap: the recorder's buffer was full and dropped {} facts \
             ({} telemetry samples, {} events, {} placements) observed between {} and {} \
             (Unix ms) while the store did not keep up",
            dropped.total(),
            dropped.samples,
            dropped.events,
            dropped.placements,
            gap.from_ms,
            gap.to_ms
        ),
    }
}

/// Writes one batch (and a gap marker) through the store; returns the new rows.
async fn write(store: &dyn Store, batch: &[Fact], gap: Option<&FleetEvent>) -> StoreResult<u64> {
    let mut samples = Vec::new();
    let mut events: Vec<FleetEvent> = gap.into_iter().cloned().collect();
    let mut placements = Vec::new();
    for fact in batch {
        match fact {
            Fact::Sample(sample) => samples.push(sample.clone()),
            Fact::Event(event) => events.push(event.clone()),
            Fact::Placement(placement) => placements.push(placement.clone()),
        }
    }
    let mut new_rows = 0;
    if !samples.is_empty() {
        new_rows += store.record_samples(&samples).await?;
    }
    if !events.is_empty() {
        new_rows += store.record_events(&events).await?;
    }
    if !placements.is_empty() {
        new_rows += store.record_placements(&placements).await?;
    }
    Ok(new_rows)
}

/// Drains `buffer` into `store` for ever (until the task is aborted).
pub async fn run(
    buffer: Arc<FactBuffer>,
    store: Arc<dyn Store>,
    counters: Arc<WriterCounters>,
    settings: WriterSettings,
    instance: String,
) {
    let mut gaps_written = 0_u64;
    loop {
        if !buffer.has_work() {
            buffer.wait_for_work().await;
            continue;
        }
        let batch = buffer.take_batch(settings.batch_size);
        // The gap marker rides with this batch and is retried with it, so it is never lost;
        // drops during the retries start the next gap.
        let marker = buffer
            .take_gap()
            .map(|gap| gap_event(&instance, gaps_written + 1, &gap));
        let mut wait = settings.retry_initial;
        loop {
            match write(store.as_ref(), &batch, marker.as_ref()).await {
                Ok(new_rows) => {
                    buffer.finish_batch(batch.len());
                    if marker.is_some() {
                        gaps_written += 1;
                        buffer.gap_recorded();
                    }
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                    counters.new_rows.fetch_add(new_rows, Ordering::Relaxed);
                    counters
                        .last_write_ms
                        .store(crate::live::unix_millis_now(), Ordering::Relaxed);
                    break;
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        facts = batch.len(),
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "recorder could not write a batch; retrying while the buffer holds it"
                    );
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    counters
                        .last_failure_ms
                        .store(crate::live::unix_millis_now(), Ordering::Relaxed);
                    *counters
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(settings.retry_max);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::TelemetrySample;
    use crate::store::memory::MemoryStore;

    fn sample(at_ms: i64) -> Fact {
        Fact::Sample(TelemetrySample {
            at_ms,
            node: "rec-a".to_owned(),
            gpu_uuid: "GPU-0".to_owned(),
            gpu_index: 0,
            memory_used_mib: Some(1.0),
            memory_total_mib: Some(2.0),
            utilization_percent: None,
            temperature_celsius: None,
            power_watts: None,
            health: 0,
            samples: 1,
            resolution_ms: 0,
        })
    }

    #[tokio::test]
    async fn the_writer_drains_the_buffer_and_writes_one_gap_marker_for_the_drops() {
        let buffer = Arc::new(FactBuffer::new(3));
        buffer.push((1..=5).map(sample));
        let store = Arc::new(MemoryStore::default());
        let counters = Arc::new(WriterCounters::default());
        let task = tokio::spawn(run(
            Arc::clone(&buffer),
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&counters),
            WriterSettings::default(),
            "test".to_owned(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while buffer.counters().recorded < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let counters_now = buffer.counters();
        assert_eq!(counters_now.recorded, 3);
        assert_eq!(counters_now.dropped.samples, 2);
        assert_eq!(counters_now.gaps_recorded, 1);
        let events = store.events(10).await.expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "RecorderGap");
        assert_eq!(events[0].id, "recorder-gap:test:1");
        assert!(
            events[0]
                .message
                .contains("dropped 2 facts (2 telemetry samples")
        );
        assert_eq!(
            counters.values().new_rows,
            4,
            "three samples and the marker"
        );
    }
}
