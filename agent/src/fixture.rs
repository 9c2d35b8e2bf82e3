//! Fixtures: what a probe read from a real machine, as JSON that the stand-in libnvidia-ml and
//! the replay source can play back.
//!
//! ```text
//! real driver ─► NvmlSource ─► probe() ─► Fixture (JSON file) ─► ReplaySource / stand-in NVML
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::reading::{DriverInfo, GpuEvent, GpuInventory, NodeSample, unix_millis_now};
use crate::simulated::SimulationClock;
use crate::source::GpuSource;
use crate::{Error, Result};

/// The fixture format version; bump when a field changes meaning.
pub const FIXTURE_FORMAT: u32 = 1;

/// Everything a probe read, in the order it read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fixture {
    /// [`FIXTURE_FORMAT`] of the writer.
    pub format: u32,
    /// Where the readings came from (library path or preset name).
    pub source: String,
    /// Host name of the machine probed, when known.
    pub hostname: Option<String>,
    /// Driver-wide facts.
    pub driver: DriverInfo,
    /// Inventory of every GPU.
    pub inventory: Vec<GpuInventory>,
    /// Samples, oldest first.
    pub samples: Vec<NodeSample>,
    /// Events seen while probing.
    pub events: Vec<GpuEvent>,
    /// Failures of whole steps (device count, event wait), step → error text.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Wall time the probe took in milliseconds.
    pub probe_millis: u64,
}

impl Fixture {
    /// Reads a fixture file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFixture {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::ParseFixture {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// How a probe paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePlan {
    /// Number of samples to take.
    pub samples: u32,
    /// Time between samples; events are waited for in between.
    pub interval: Duration,
    /// Extra time to wait for events after the last sample.
    pub final_event_wait: Duration,
}

/// Reads inventory, `plan.samples` samples and the events in between from `source`. A step that
/// fails is recorded in `errors` and the probe goes on: on a borrowed GPU machine a partial
/// fixture beats none.
pub fn probe(source: &mut dyn GpuSource, source_name: &str, plan: ProbePlan) -> Fixture {
    let started = Instant::now();
    let mut fixture = Fixture {
        format: FIXTURE_FORMAT,
        source: source_name.to_owned(),
        hostname: hostname(),
        driver: source.driver(),
        ..Fixture::default()
    };
    match source.inventory() {
        Ok(inventory) => fixture.inventory = inventory,
        Err(error) => fixture.errors.push(format!("inventory: {error}")),
    }
    for taken in 0..plan.samples {
        match source.sample() {
            Ok(sample) => fixture.samples.push(sample),
            Err(error) => fixture.errors.push(format!("sample {taken}: {error}")),
        }
        let wait = if taken + 1 == plan.samples {
            plan.final_event_wait
        } else {
            plan.interval
        };
        match source.wait_for_events(wait) {
            Ok(events) => fixture.events.extend(events),
            Err(error) => {
                fixture
                    .errors
                    .push(format!("events after sample {taken}: {error}"));
                std::thread::sleep(wait);
            }
        }
    }
    fixture.probe_millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    fixture
}

/// The machine's host name from the kernel, when readable.
pub fn hostname() -> Option<String> {
    std::env::var("NODE_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Plays a fixture back as a live source: samples advance with the clock at the pace they were
/// taken and wrap around (counters keep climbing), events fire once at their recorded offset.
#[derive(Debug, Clone)]
pub struct ReplaySource {
    fixture: Fixture,
    clock: SimulationClock,
    interval: Duration,
    events_until: Option<Duration>,
}

impl ReplaySource {
    /// A replay of `fixture` on `clock`; a fixture without samples replays inventory only.
    pub fn new(fixture: Fixture, clock: SimulationClock) -> Self {
        let stamps: Vec<u64> = fixture
            .samples
            .iter()
            .map(|sample| sample.at_unix_ms)
            .collect();
        let interval = match (stamps.first(), stamps.last()) {
            (Some(first), Some(last)) if stamps.len() > 1 && last > first => {
                Duration::from_millis((last - first) / (stamps.len() as u64 - 1))
            }
            _ => Duration::from_secs(1),
        };
        Self {
            fixture,
            clock,
            interval: interval.max(Duration::from_millis(10)),
            events_until: None,
        }
    }

    fn start_unix_ms(&self) -> u64 {
        self.fixture
            .samples
            .first()
            .map_or(0, |sample| sample.at_unix_ms)
    }

    fn event_offset(&self, event: &GpuEvent) -> Duration {
        Duration::from_millis(event.at_unix_ms.saturating_sub(self.start_unix_ms()))
    }
}

/// How much a counter grew over one pass of the fixture (first to last, plus one more step).
fn growth_per_pass(first: Option<u64>, last: Option<u64>, samples: u64) -> u64 {
    match (first, last) {
        (Some(first), Some(last)) if samples > 1 && last >= first => {
            let span = last - first;
            span + span / (samples - 1)
        }
        _ => 0,
    }
}

impl GpuSource for ReplaySource {
    fn driver(&self) -> DriverInfo {
        self.fixture.driver.clone()
    }

    fn inventory(&mut self) -> Result<Vec<GpuInventory>> {
        Ok(self.fixture.inventory.clone())
    }

    fn sample(&mut self) -> Result<NodeSample> {
        let count = self.fixture.samples.len() as u64;
        let elapsed = self.clock.elapsed();
        if count == 0 {
            let gpus = self
                .fixture
                .inventory
                .iter()
                .map(|gpu| crate::reading::GpuSample::absent(gpu.index))
                .collect();
            return Ok(NodeSample {
                at_unix_ms: unix_millis_now(),
                gpus,
            });
        }
        let step = u64::try_from(elapsed.as_millis() / self.interval.as_millis().max(1))
            .unwrap_or(u64::MAX);
        let position = usize::try_from(step % count).unwrap_or(0);
        let passes = step / count;
        let mut sample = self.fixture.samples[position].clone();
        let first = &self.fixture.samples[0];
        let last = &self.fixture.samples[self.fixture.samples.len() - 1];
        for gpu in &mut sample.gpus {
            let find = |sample: &NodeSample| {
                sample
                    .gpus
                    .iter()
                    .find(|other| other.index == gpu.index)
                    .and_then(|other| other.total_energy_millijoules)
            };
            let growth = growth_per_pass(find(first), find(last), count);
            gpu.total_energy_millijoules = gpu
                .total_energy_millijoules
                .map(|energy| energy.saturating_add(growth.saturating_mul(passes)));
        }
        sample.at_unix_ms = unix_millis_now();
        Ok(sample)
    }

    fn wait_for_events(&mut self, timeout: Duration) -> Result<Vec<GpuEvent>> {
        let after = self.events_until;
        let mut now = self.clock.elapsed();
        let pending = |now: Duration| {
            self.fixture
                .events
                .iter()
                .filter(|event| {
                    let offset = self.event_offset(event);
                    offset <= now && after.is_none_or(|after| offset > after)
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        if pending(now).is_empty()
            && let SimulationClock::Wall(_) = self.clock
        {
            std::thread::sleep(timeout);
            now = self.clock.elapsed();
        }
        let events = pending(now)
            .into_iter()
            .map(|event| GpuEvent {
                at_unix_ms: unix_millis_now(),
                ..event
            })
            .collect();
        self.events_until = Some(now);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_h200() -> Result<Fixture> {
        Fixture::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/h200-load.json"))
    }

    #[test]
    fn real_h200_fixture_parses_with_every_reading() -> Result<()> {
        let fixture = real_h200()?;
        assert_eq!(fixture.format, FIXTURE_FORMAT);
        assert_eq!(fixture.inventory.len(), 1);
        assert_eq!(fixture.inventory[0].name.as_deref(), Some("NVIDIA H200"));
        let gpu = &fixture.samples[0].gpus[0];
        assert_eq!(gpu.memory_total_mib, Some(143_771));
        assert!(gpu.missing.is_empty(), "{:?}", gpu.missing);
        Ok(())
    }

    #[test]
    fn replay_advances_with_the_clock_and_counters_keep_climbing() -> Result<()> {
        let fixture = real_h200()?;
        let count = fixture.samples.len() as u32;
        let clock = SimulationClock::manual();
        let mut replay = ReplaySource::new(fixture.clone(), clock.clone());
        let first = replay.sample()?;
        assert_eq!(first.gpus, fixture.samples[0].gpus);
        clock.advance(replay.interval);
        assert_eq!(replay.sample()?.gpus, fixture.samples[1].gpus);
        let energy = |sample: &NodeSample| sample.gpus[0].total_energy_millijoules.unwrap_or(0);
        let mut previous = energy(&first);
        for _ in 0..(2 * count) {
            clock.advance(replay.interval);
            let now = energy(&replay.sample()?);
            assert!(now > previous, "energy went from {previous} to {now}");
            previous = now;
        }
        Ok(())
    }

    #[test]
    fn missing_fixture_error_names_the_path() {
        let error = Fixture::load(Path::new("/nonexistent/fixture.json"))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("/nonexistent/fixture.json"), "{error}");
    }
}
