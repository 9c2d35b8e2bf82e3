//! The in-memory store: bounded history inside the process, for `gpufleet dashboard --simulate`
//! and tests. Oldest samples, events and decisions go first when a bound is reached; planner
//! runs keep the latest few.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{
    FleetEvent, NewPlannerRun, PlacementRecord, PlannerRunRecord, PlannerRunSummary, Store,
    StoreResult,
};
use crate::history::{HistoryPoint, HistoryQuery, TelemetrySample, downsample, roll_up};

/// How much the memory store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Telemetry samples.
    pub samples: usize,
    /// Events.
    pub events: usize,
    /// Placement decisions.
    pub placements: usize,
    /// Planner runs.
    pub planner_runs: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            // A few hours of a few hundred GPUs at one sample a second, about 200 MB at most.
            samples: 2_000_000,
            events: 10_000,
            placements: 10_000,
            planner_runs: 50,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<TelemetrySample>,
    sample_keys: HashSet<(String, i64, i64)>,
    events: VecDeque<FleetEvent>,
    event_ids: HashSet<String>,
    placements: VecDeque<PlacementRecord>,
    placement_ids: HashSet<String>,
    runs: BTreeMap<i64, PlannerRunRecord>,
    next_run: i64,
}

/// History kept in memory, bounded by [`MemoryLimits`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    limits: MemoryLimits,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store with these bounds.
    #[must_use]
    pub fn new(limits: MemoryLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn with<T>(&self, action: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        action(&mut inner)
    }
}

fn sample_key(sample: &TelemetrySample) -> (String, i64, i64) {
    (sample.gpu_uuid.clone(), sample.at_ms, sample.resolution_ms)
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, StoreResult<T>> {
    futures::future::ready(Ok(value)).boxed()
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        ready(())
    }

    fn record_samples<'a>(
        &'a self,
        samples: &'a [TelemetrySample],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        let limit = self.limits.samples;
        let written = self.with(|inner| {
            let mut written = 0;
            for sample in samples {
                if inner.sample_keys.insert(sample_key(sample)) {
                    inner.samples.push_back(sample.clone());
                    written += 1;
                }
            }
            while inner.samples.len() > limit {
                if let Some(old) = inner.samples.pop_front() {
                    inner.sample_keys.remove(&sample_key(&old));
                }
            }
            written
        });
        ready(written)
    }

    fn history<'a>(
        &'a self,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryPoint>>> {
        let points = self.with(|inner| {
            downsample(
                inner
                    .samples
                    .iter()
                    .filter(|sample| query.selects(sample))
                    .filter_map(|sample| {
                        sample.value(query.metric).map(|value| {
                            (sample.at_ms, f64::from(value), i64::from(sample.samples))
                        })
                    }),
                query.step_ms,
            )
        });
        ready(points)
    }

    fn downsample(&self, before_ms: i64, bucket_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        let replaced = self.with(|inner| {
            let (old, keep): (Vec<TelemetrySample>, Vec<TelemetrySample>) = inner
                .samples
                .drain(..)
                .partition(|sample| sample.at_ms < before_ms && sample.resolution_ms < bucket_ms);
            let mut rolled = roll_up(&old, bucket_ms);
            rolled.retain(|sample| !inner.sample_keys.contains(&sample_key(sample)));
            for sample in &old {
                inner.sample_keys.remove(&sample_key(sample));
            }
            for sample in &rolled {
                inner.sample_keys.insert(sample_key(sample));
            }
            let mut all: Vec<TelemetrySample> = rolled.into_iter().chain(keep).collect();
            all.sort_by_key(|sample| sample.at_ms);
            inner.samples = all.into();
            old.len() as u64
        });
        ready(replaced)
    }

    fn retain(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        let deleted = self.with(|inner| {
            let before = inner.samples.len();
            let Inner {
                samples,
                sample_keys,
                ..
            } = inner;
            samples.retain(|sample| {
                let keep = sample.at_ms >= before_ms;
                if !keep {
                    sample_keys.remove(&sample_key(sample));
                }
                keep
            });
            (before - inner.samples.len()) as u64
        });
        ready(deleted)
    }

    fn record_events<'a>(&'a self, events: &'a [FleetEvent]) -> BoxFuture<'a, StoreResult<u64>> {
        let limit = self.limits.events;
        let written = self.with(|inner| {
            let mut written = 0;
            for event in events {
                if inner.event_ids.insert(event.id.clone()) {
                    inner.events.push_back(event.clone());
                    written += 1;
                }
            }
            while inner.events.len() > limit {
                if let Some(old) = inner.events.pop_front() {
                    inner.event_ids.remove(&old.id);
                }
            }
            written
        });
        ready(written)
    }

    fn events(&self, limit: i64) -> BoxFuture<'_, StoreResult<Vec<FleetEvent>>> {
        let take = usize::try_from(limit).unwrap_or(0);
        let mut events = self.with(|inner| inner.events.iter().cloned().collect::<Vec<_>>());
        events.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| b.id.cmp(&a.id)));
        events.truncate(take);
        ready(events)
    }

    fn record_placements<'a>(
        &'a self,
        placements: &'a [PlacementRecord],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        let limit = self.limits.placements;
        let written = self.with(|inner| {
            let mut written = 0;
            for placement in placements {
                if inner.placement_ids.insert(placement.id.clone()) {
                    inner.placements.push_back(placement.clone());
                    written += 1;
                }
            }
            while inner.placements.len() > limit {
                if let Some(old) = inner.placements.pop_front() {
                    inner.placement_ids.remove(&old.id);
                }
            }
            written
        });
        ready(written)
    }

    fn placements<'a>(
        &'a self,
        deployment: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, StoreResult<Vec<PlacementRecord>>> {
        let take = usize::try_from(limit).unwrap_or(0);
        let mut placements = self.with(|inner| {
            inner
                .placements
                .iter()
                .filter(|placement| deployment.is_none_or(|name| placement.deployment == name))
                .cloned()
                .collect::<Vec<_>>()
        });
        placements.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| b.id.cmp(&a.id)));
        placements.truncate(take);
        ready(placements)
    }

    fn record_planner_run<'a>(&'a self, run: &'a NewPlannerRun) -> BoxFuture<'a, StoreResult<i64>> {
        let limit = self.limits.planner_runs;
        let id = self.with(|inner| {
            inner.next_run += 1;
            let id = inner.next_run;
            inner.runs.insert(
                id,
                PlannerRunRecord {
                    id,
                    at_ms: run.at_ms,
                    scenario: run.scenario.clone(),
                    parameters: run.parameters.clone(),
                    duration_ms: run.duration_ms,
                    result: run.result.clone(),
                    csv: run.csv.clone(),
                },
            );
            while inner.runs.len() > limit {
                inner.runs.pop_first();
            }
            id
        });
        ready(id)
    }

    fn planner_run(&self, id: i64) -> BoxFuture<'_, StoreResult<Option<PlannerRunRecord>>> {
        let run = self.with(|inner| inner.runs.get(&id).cloned());
        ready(run)
    }

    fn planner_runs(&self, limit: i64) -> BoxFuture<'_, StoreResult<Vec<PlannerRunSummary>>> {
        let take = usize::try_from(limit).unwrap_or(0);
        let runs = self.with(|inner| {
            inner
                .runs
                .values()
                .rev()
                .take(take)
                .map(|run| PlannerRunSummary {
                    id: run.id,
                    at_ms: run.at_ms,
                    scenario: run.scenario.clone(),
                    parameters: run.parameters.clone(),
                    duration_ms: run.duration_ms,
                })
                .collect()
        });
        ready(runs)
    }
}
