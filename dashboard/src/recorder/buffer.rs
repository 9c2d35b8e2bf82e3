//! The bounded buffer between the watchers and the store writer.
//!
//! ```text
//!  watchers ─push─► queue (oldest first) ─take_batch─► in flight ─finish_batch─► recorded
//!                     │ full: the oldest queued fact is dropped and counted, and the
//!                     │       gap it leaves is remembered
//!                     └──────────────────────────────► take_gap ─► one "RecorderGap" event
//! ```
//!
//! Capacity counts queued and in-flight facts together, so memory stays bounded while the
//! store is down. A batch in flight is never dropped: the writer retries it until the store
//! takes it, so every fact either reaches the store or is counted in [`Dropped`], never both
//! and never neither — the property the PostgreSQL-restart tests check.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::Notify;

use super::facts::{Fact, FactKind};

/// Facts dropped because the buffer was full, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dropped {
    /// Telemetry samples.
    pub samples: u64,
    /// Events (health transitions and Kubernetes Events).
    pub events: u64,
    /// Placements.
    pub placements: u64,
}

impl Dropped {
    /// All kinds together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.samples + self.events + self.placements
    }

    fn count(&mut self, kind: FactKind) {
        match kind {
            FactKind::Sample => self.samples += 1,
            FactKind::Event => self.events += 1,
            FactKind::Placement => self.placements += 1,
        }
    }
}

/// A stretch of history the buffer had to drop, not yet written down as a gap marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    /// What was dropped.
    pub dropped: Dropped,
    /// Earliest time among the dropped facts, Unix milliseconds.
    pub from_ms: i64,
    /// Latest time among the dropped facts, Unix milliseconds.
    pub to_ms: i64,
}

impl Gap {
    fn widen(&mut self, fact: &Fact) {
        let at_ms = fact.at_ms();
        if self.dropped.total() == 0 {
            self.from_ms = at_ms;
            self.to_ms = at_ms;
        } else {
            self.from_ms = self.from_ms.min(at_ms);
            self.to_ms = self.to_ms.max(at_ms);
        }
        self.dropped.count(fact.kind());
    }
}

/// Numbers about the buffer, for the status endpoint and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BufferCounters {
    /// Largest number of facts held (queued and in flight).
    pub capacity: usize,
    /// Facts waiting for the writer.
    pub queued: usize,
    /// Facts the writer is writing (or retrying).
    pub in_flight: usize,
    /// Facts ever accepted.
    pub accepted: u64,
    /// Facts the store took (new rows and facts it already held alike).
    pub recorded: u64,
    /// Facts dropped because the buffer was full.
    pub dropped: Dropped,
    /// Gap markers written.
    pub gaps_recorded: u64,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Fact>,
    counters: BufferCounters,
    gap: Gap,
}

/// A bounded, drop-oldest buffer of facts shared by the watchers and the writer.
#[derive(Debug)]
pub struct FactBuffer {
    state: Mutex<State>,
    ready: Notify,
}

impl FactBuffer {
    /// A buffer holding at most `capacity` facts (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                counters: BufferCounters {
                    capacity: capacity.max(1),
                    ..BufferCounters::default()
                },
                ..State::default()
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues facts; when full, drops the oldest queued fact for each new one (or the new one
    /// itself when everything held is in flight) and counts it.
    pub fn push(&self, facts: impl IntoIterator<Item = Fact>) {
        let mut pushed = false;
        {
            let mut state = self.lock();
            for fact in facts {
                pushed = true;
                state.counters.accepted += 1;
                let capacity = state.counters.capacity;
                if state.queue.len() + state.counters.in_flight >= capacity {
                    let victim = state.queue.pop_front();
                    let dropped = match victim {
                        Some(oldest) => {
                            state.queue.push_back(fact);
                            oldest
                        }
                        None => fact,
                    };
                    state.gap.widen(&dropped);
                    state.counters.dropped.count(dropped.kind());
                } else {
                    state.queue.push_back(fact);
                }
            }
        }
        if pushed {
            self.ready.notify_one();
        }
    }

    /// Moves up to `max` of the oldest facts in flight; empty when nothing is queued.
    pub fn take_batch(&self, max: usize) -> Vec<Fact> {
        let mut state = self.lock();
        let count = state.queue.len().min(max.max(1));
        let batch: Vec<Fact> = state.queue.drain(..count).collect();
        state.counters.in_flight += batch.len();
        batch
    }

    /// Marks a batch taken by [`take_batch`](Self::take_batch) as stored.
    pub fn finish_batch(&self, facts: usize) {
        let mut state = self.lock();
        state.counters.in_flight = state.counters.in_flight.saturating_sub(facts);
        state.counters.recorded += u64::try_from(facts).unwrap_or(u64::MAX);
    }

    /// The drops not yet written down as a gap marker, if any; the caller owns them now.
    pub fn take_gap(&self) -> Option<Gap> {
        let mut state = self.lock();
        (state.gap.dropped.total() > 0).then(|| std::mem::take(&mut state.gap))
    }

    /// Counts a gap marker stored.
    pub fn gap_recorded(&self) {
        self.lock().counters.gaps_recorded += 1;
    }

    /// Whether there is something for the writer: queued facts or an unwritten gap.
    #[must_use]
    pub fn has_work(&self) -> bool {
        let state = self.lock();
        !state.queue.is_empty() || state.gap.dropped.total() > 0
    }

    /// Waits until [`push`](Self::push) adds something (returns at once if it did since the
    /// last wait).
    pub async fn wait_for_work(&self) {
        self.ready.notified().await;
    }

    /// The counters now.
    #[must_use]
    pub fn counters(&self) -> BufferCounters {
        let state = self.lock();
        BufferCounters {
            queued: state.queue.len(),
            ..state.counters
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FleetEvent;

    fn event(at_ms: i64) -> Fact {
        Fact::Event(FleetEvent {
            id: format!("e{at_ms}"),
            at_ms,
            severity: "Normal".to_owned(),
            reason: "Test".to_owned(),
            object_kind: "Pod".to_owned(),
            object_name: "p".to_owned(),
            gpu_uuid: None,
            message: String::new(),
        })
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_queued_fact_and_remembers_the_gap() {
        let buffer = FactBuffer::new(3);
        buffer.push((1..=5).map(event));
        let counters = buffer.counters();
        assert_eq!(counters.queued, 3);
        assert_eq!(counters.accepted, 5);
        assert_eq!(counters.dropped.events, 2);
        let batch = buffer.take_batch(10);
        let kept: Vec<i64> = batch.iter().map(Fact::at_ms).collect();
        assert_eq!(kept, vec![3, 4, 5], "the newest survive");
        let gap = buffer.take_gap().expect("a gap");
        assert_eq!((gap.from_ms, gap.to_ms, gap.dropped.total()), (1, 2, 2));
        assert!(buffer.take_gap().is_none(), "taken once");
        assert!(!buffer.has_work());
        buffer.push([event(6)]);
        assert!(buffer.has_work());
    }

    #[test]
    fn facts_in_flight_are_never_dropped_and_count_against_capacity() {
        let buffer = FactBuffer::new(2);
        buffer.push([event(1), event(2)]);
        let batch = buffer.take_batch(10);
        assert_eq!(batch.len(), 2);
        buffer.push([event(3)]);
        let counters = buffer.counters();
        assert_eq!(
            (
                counters.queued,
                counters.in_flight,
                counters.dropped.total()
            ),
            (0, 2, 1),
            "the newcomer goes: nothing older is queued"
        );
        buffer.finish_batch(batch.len());
        buffer.push([event(4)]);
        let counters = buffer.counters();
        assert_eq!((counters.queued, counters.recorded), (1, 2));
        assert_eq!(
            counters.accepted,
            counters.recorded + counters.dropped.total() + 1
        );
    }
}
