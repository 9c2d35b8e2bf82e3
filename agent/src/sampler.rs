//! The sampling loop: reads the source at a fixed interval, waits for events in between, grades
//! health and keeps the shared [`NodeView`] that `/metrics` and the publisher read.
//!
//! ```text
//! GpuSource ─sample()──────────► GpuHealthTracker per GPU ─► grade ─► NodeView (shared, locked briefly)
//!           └wait_for_events()─┘   (events wake the loop at once, so an Xid is graded within ms)
//! ```
//!
//! Errors of the source are counted and the loop goes on: the agent never exits on NVML errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::health::{GpuHealthTracker, HealthPolicy};
use crate::metrics::NodeView;
use crate::ownership::ProcessTable;
use crate::reading::{EventKind, GpuEvent, unix_millis_now};
use crate::server::SharedView;
use crate::source::GpuSource;

/// Samples one node.
pub struct Sampler {
    source: Box<dyn GpuSource>,
    trackers: BTreeMap<u32, GpuHealthTracker>,
    policy: HealthPolicy,
    view: SharedView,
    lost: Vec<u32>,
    processes: Option<ProcessTable>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sampler")
            .field("trackers", &self.trackers.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn event_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Xid { .. } => "xid",
        EventKind::SingleBitEcc => "single_bit_ecc",
        EventKind::DoubleBitEcc => "double_bit_ecc",
        EventKind::Other { .. } => "other",
    }
}

impl Sampler {
    /// A sampler for `source` on node `hostname`; reads driver facts and inventory now (an
    /// inventory failure is retried on later ticks).
    pub fn new(mut source: Box<dyn GpuSource>, hostname: &str, policy: HealthPolicy) -> Self {
        let view = NodeView {
            hostname: hostname.to_owned(),
            driver: source.driver(),
            inventory: source.inventory().unwrap_or_default(),
            ..NodeView::default()
        };
        Self {
            source,
            trackers: BTreeMap::new(),
            policy,
            view: Arc::new(Mutex::new(view)),
            lost: Vec::new(),
            processes: None,
        }
    }

    /// Attributes every GPU process of each sample to its Pod through `table` (for
    /// `foreignMemoryMiB`). Without a table the agent does not tell processes apart.
    #[must_use]
    pub fn with_process_table(mut self, table: ProcessTable) -> Self {
        self.processes = Some(table);
        self
    }

    /// The view this sampler keeps current.
    pub fn view(&self) -> SharedView {
        Arc::clone(&self.view)
    }

    fn with_view(&self, change: impl FnOnce(&mut NodeView)) {
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut view);
    }

    fn tracker(&mut self, index: u32) -> &mut GpuHealthTracker {
        let policy = self.policy;
        self.trackers
            .entry(index)
            .or_insert_with(|| GpuHealthTracker::new(policy))
    }

    /// Takes one sample and grades it.
    pub fn sample_once(&mut self) {
        let started = Instant::now();
        let result = self.source.sample();
        let seconds = started.elapsed().as_secs_f64();
        let now = unix_millis_now();
        match result {
            Ok(sample) => {
                for gpu in &sample.gpus {
                    self.tracker(gpu.index).observe_sample(gpu, now);
                }
                let lost: Vec<u32> = sample
                    .gpus
                    .iter()
                    .filter(|gpu| gpu.lost())
                    .map(|gpu| gpu.index)
                    .collect();
                let inventory_stale = lost != self.lost
                    || self
                        .view
                        .lock()
                        .map(|view| view.inventory.is_empty())
                        .unwrap_or(true);
                self.lost = lost;
                let inventory = if inventory_stale {
                    self.source.inventory().ok()
                } else {
                    None
                };
                let health = self.grade(now);
                // A handful of small reads per sample (one per GPU process), outside the lock.
                let owners = self.processes.as_ref().map(|table| {
                    table.owners(
                        sample
                            .gpus
                            .iter()
                            .flat_map(|gpu| gpu.processes.iter().flatten())
                            .map(|process| process.pid),
                    )
                });
                self.with_view(|view| {
                    if let Some(inventory) = inventory {
                        view.inventory = inventory;
                    }
                    view.process_owners = owners;
                    view.sample = Some(sample);
                    view.health = health;
                    view.counters.samples += 1;
                    view.counters.last_sample_seconds = Some(seconds);
                });
            }
            Err(_) => self.with_view(|view| view.counters.sample_failures += 1),
        }
    }

    fn grade(&mut self, now: u64) -> BTreeMap<u32, crate::health::GpuHealth> {
        self.trackers
            .iter_mut()
            .map(|(index, tracker)| (*index, tracker.grade(now)))
            .collect()
    }

    /// Takes in events and regrades.
    pub fn observe_events(&mut self, events: &[GpuEvent]) {
        if events.is_empty() {
            return;
        }
        let now = unix_millis_now();
        for event in events {
            if let Some(index) = event.gpu_index {
                self.tracker(index).observe_event(event, now);
            }
        }
        let health = self.grade(now);
        self.with_view(|view| {
            for event in events {
                *view
                    .counters
                    .events
                    .entry(event_name(event.kind).to_owned())
                    .or_insert(0) += 1;
                if let (Some(index), EventKind::Xid { code }) = (event.gpu_index, event.kind) {
                    view.last_xid.insert(index, code);
                }
            }
            view.health = health;
        });
    }

    /// Waits until `deadline` for events, grading each batch as it arrives.
    pub fn wait_until(&mut self, deadline: Instant) {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.source.wait_for_events(deadline - now) {
                Ok(events) => self.observe_events(&events),
                Err(_) => {
                    // Event waits fail when the set breaks; sampling still shows the state.
                    std::thread::sleep(
                        (deadline - Instant::now().min(deadline)).min(Duration::from_millis(500)),
                    );
                }
            }
        }
    }

    /// Samples every `interval` until `stop` is set.
    pub fn run(mut self, interval: Duration, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let deadline = Instant::now() + interval;
            self.sample_once();
            self.wait_until(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::parse_script;
    use crate::health::HealthState;
    use crate::preset;
    use crate::simulated::{SimulatedSource, SimulationClock};

    #[test]
    fn xid_79_is_graded_unhealthy_as_soon_as_it_arrives() -> crate::Result<()> {
        let clock = SimulationClock::manual();
        let source = SimulatedSource::new(
            preset::dgx_h100(),
            "node-a",
            parse_script("xid:79@gpu3@t=5s")?,
            clock.clone(),
        );
        let mut sampler = Sampler::new(Box::new(source), "node-a", HealthPolicy::default());
        let view = sampler.view();
        sampler.sample_once();
        let state = |view: &SharedView| {
            view.lock()
                .ok()
                .and_then(|view| view.health.get(&3).map(|health| health.state))
        };
        assert_eq!(state(&view), Some(HealthState::Healthy));
        clock.advance(Duration::from_secs(5));
        sampler.wait_until(Instant::now() + Duration::from_millis(1));
        assert_eq!(state(&view), Some(HealthState::Unhealthy));
        let locked = view.lock().map_err(|_| crate::Error::ParseFault {
            input: String::new(),
            reason: "poisoned".to_owned(),
        })?;
        assert_eq!(locked.last_xid.get(&3), Some(&79));
        assert_eq!(locked.counters.events.get("xid"), Some(&1));
        assert_eq!(locked.inventory.len(), 8);
        Ok(())
    }
}
