//! The simulated source: a machine preset plus scripted faults, computed in pure Rust.
//!
//! ```text
//! MachinePreset + faults + seed ─► SimulatedSource ─(clock: wall or manual)─► NodeSample, GpuEvent
//! ```
//!
//! Each reading is a cheap closed-form function of the GPU's seeded workload and the time since
//! the source started (only the energy counter carries state), so one process can run thousands
//! of virtual nodes (`gpufleet demo`, scale tests). With a manual clock, tests move time
//! themselves and nothing sleeps. The stand-in libnvidia-ml serves the same readings through
//! the NVML C API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Result;
use crate::fault::{Fault, FaultKind};
use crate::preset::{GpuSlot, MachinePreset};
use crate::reading::{
    ComputeCapability, ComputeProcess, DriverInfo, EccCounts, EventKind, GpuEvent, GpuInventory,
    GpuSample, MigMode, NodeSample, RemappedRows, ThrottleReasons, unix_millis_now,
};
use crate::source::GpuSource;

/// How a lost GPU's readings fail: the text the NVML source records for `NVML_ERROR_GPU_IS_LOST`.
pub const GPU_LOST_ERROR: &str =
    "GpuLost: device fell off the bus or has otherwise become inacessible";

/// How a GPU without NVLink answers NVML's link queries, as the NVML source records it.
pub const NVLINK_NOT_SUPPORTED: &str =
    "NotSupported: the requested operation is not available on the target device";

/// Xid NVIDIA logs for a double-bit ECC error.
pub const XID_DOUBLE_BIT_ECC: u64 = 48;
/// Xid NVIDIA logs when row remapping fails.
pub const XID_ROW_REMAP_FAILURE: u64 = 64;
/// Xid for a GPU that fell off the bus.
pub const XID_FELL_OFF_THE_BUS: u64 = 79;

/// Time as the simulation sees it.
#[derive(Debug, Clone)]
pub enum SimulationClock {
    /// Real time since the source was made.
    Wall(Instant),
    /// Time moved by hand (tests, fast-forward demos); shared by clones.
    Manual(Arc<AtomicU64>),
}

impl SimulationClock {
    /// Real time, starting now.
    pub fn wall() -> Self {
        Self::Wall(Instant::now())
    }

    /// A clock at zero that only [`SimulationClock::advance`] moves.
    pub fn manual() -> Self {
        Self::Manual(Arc::new(AtomicU64::new(0)))
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        match self {
            Self::Wall(started) => started.elapsed(),
            Self::Manual(millis) => Duration::from_millis(millis.load(Ordering::Relaxed)),
        }
    }

    /// Moves a manual clock forward; a wall clock moves by itself and ignores this.
    pub fn advance(&self, by: Duration) {
        if let Self::Manual(millis) = self {
            millis.fetch_add(
                u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }
}

/// SplitMix64: a tiny, good-enough mixer for deterministic per-GPU figures.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// A number in [0, 1) from a hash.
fn unit(hash: u64) -> f64 {
    // 53 high bits make an exactly representable fraction.
    #[expect(
        clippy::cast_precision_loss,
        reason = "53 bits fit an f64 mantissa exactly"
    )]
    let fraction = (hash >> 11) as f64 / (1_u64 << 53) as f64;
    fraction
}

fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01B3)
    })
}

/// A GPU UUID derived from the node's seed and the index, stable across restarts.
pub fn simulated_uuid(seed: u64, index: u32) -> String {
    let high = mix(seed ^ u64::from(index).wrapping_mul(0xA24B_AED4_963E_E407));
    let low = mix(high);
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// A GPU's seeded workload: how busy it is and how much memory its job holds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Workload {
    /// Mean load in [0, 1]; 0 for an idle GPU.
    base: f64,
    /// Swing of the load around its mean.
    swing: f64,
    /// Period of the swing in seconds.
    period_seconds: f64,
    /// Phase of the swing.
    phase: f64,
    /// Memory the job holds in MiB.
    job_memory_mib: u64,
}

impl Workload {
    fn seeded(seed: u64, index: u32, slot: &GpuSlot) -> Self {
        let hash = mix(seed ^ (u64::from(index) << 32));
        // One GPU in four is idle: free capacity for placement to find.
        if hash.is_multiple_of(4) {
            return Self {
                base: 0.0,
                swing: 0.0,
                period_seconds: 60.0,
                phase: 0.0,
                job_memory_mib: 0,
            };
        }
        let usable = slot
            .model
            .memory_total_mib
            .saturating_sub(slot.model.memory_reserved_mib);
        #[expect(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "memory sizes are far below 2^52 MiB; the fraction is in [0.2, 0.8)"
        )]
        let job_memory_mib = (usable as f64 * (0.2 + 0.6 * unit(mix(hash ^ 1)))) as u64;
        Self {
            base: 0.35 + 0.55 * unit(mix(hash ^ 2)),
            swing: 0.1 * unit(mix(hash ^ 3)),
            period_seconds: 30.0 + 90.0 * unit(mix(hash ^ 4)),
            phase: std::f64::consts::TAU * unit(mix(hash ^ 5)),
            job_memory_mib,
        }
    }

    fn load(&self, elapsed: Duration) -> f64 {
        if self.base == 0.0 {
            return 0.0;
        }
        let angle =
            std::f64::consts::TAU * elapsed.as_secs_f64() / self.period_seconds + self.phase;
        (self.base + self.swing * angle.sin()).clamp(0.01, 1.0)
    }
}

/// Per-GPU state that is not a pure function of time.
#[derive(Debug, Clone)]
struct GpuState {
    workload: Workload,
    energy_millijoules: f64,
}

/// A simulated machine.
#[derive(Debug, Clone)]
pub struct SimulatedSource {
    preset: MachinePreset,
    faults: Vec<Fault>,
    seed: u64,
    clock: SimulationClock,
    gpus: Vec<GpuState>,
    last_sample: Duration,
    events_until: Option<Duration>,
    started_unix_ms: u64,
}

impl SimulatedSource {
    /// A machine from `preset` whose workload and UUIDs derive from `node_name`, with `faults`
    /// scripted against `clock`.
    pub fn new(
        preset: MachinePreset,
        node_name: &str,
        faults: Vec<Fault>,
        clock: SimulationClock,
    ) -> Self {
        let seed = seed_of(node_name);
        let gpus = preset
            .gpus
            .iter()
            .zip(0_u32..)
            .map(|(slot, index)| GpuState {
                workload: Workload::seeded(seed, index, slot),
                // A counter since driver load: start somewhere plausible, not at 0.
                energy_millijoules: 1.0e9 * unit(mix(seed ^ u64::from(index) ^ 7)),
            })
            .collect();
        let started_unix_ms = unix_millis_now()
            .saturating_sub(u64::try_from(clock.elapsed().as_millis()).unwrap_or(0));
        Self {
            preset,
            faults,
            seed,
            clock,
            gpus,
            last_sample: Duration::ZERO,
            events_until: None,
            started_unix_ms,
        }
    }

    /// The preset this machine was built from.
    pub fn preset(&self) -> &MachinePreset {
        &self.preset
    }

    /// The clock this machine runs on.
    pub fn clock(&self) -> &SimulationClock {
        &self.clock
    }

    /// Adds a fault while running (the fault's times count from the source's start).
    pub fn inject(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    fn faults_on(&self, index: u32, elapsed: Duration) -> impl Iterator<Item = &Fault> {
        self.faults
            .iter()
            .filter(move |fault| fault.gpu == index && elapsed >= fault.at)
    }

    fn lost(&self, index: u32, elapsed: Duration) -> bool {
        self.faults_on(index, elapsed).any(|fault| {
            fault.kind
                == FaultKind::Xid {
                    code: XID_FELL_OFF_THE_BUS,
                }
                && fault.active(elapsed)
        })
    }

    fn gpu_sample(
        &self,
        index: u32,
        slot: &GpuSlot,
        state: &GpuState,
        elapsed: Duration,
    ) -> GpuSample {
        let mut sample = GpuSample::absent(index);
        if self.lost(index, elapsed) {
            sample
                .missing
                .insert("device".to_owned(), GPU_LOST_ERROR.to_owned());
            return sample;
        }
        let model = &slot.model;
        let active: Vec<&Fault> = self
            .faults_on(index, elapsed)
            .filter(|fault| fault.active(elapsed))
            .collect();
        let started: Vec<&Fault> = self.faults_on(index, elapsed).collect();
        let load = state.workload.load(elapsed);
        let thermal = active.iter().any(|fault| fault.kind == FaultKind::Thermal);

        let foreign_mib: u64 = active
            .iter()
            .filter_map(|fault| match fault.kind {
                FaultKind::Foreign { memory_mib } => Some(memory_mib),
                _ => None,
            })
            .sum();
        let usable = model
            .memory_total_mib
            .saturating_sub(model.memory_reserved_mib);
        let used = (state.workload.job_memory_mib + foreign_mib).min(usable);
        sample.memory_total_mib = Some(model.memory_total_mib);
        sample.memory_reserved_mib = Some(model.memory_reserved_mib);
        sample.memory_used_mib = Some(used);
        sample.memory_free_mib = Some(usable - used);

        let percent = |fraction: f64| -> u32 {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "fraction is clamped to [0, 1]"
            )]
            let value = (fraction.clamp(0.0, 1.0) * 100.0).round() as u32;
            value
        };
        sample.gpu_utilization_percent = Some(percent(load));
        sample.memory_utilization_percent = Some(percent(load * 0.35));

        let power = model.idle_power_watts
            + (model.power_limit_watts - model.idle_power_watts) * load * 0.99;
        sample.power_usage_watts = Some((power * 1000.0).round() / 1000.0);
        sample.power_limit_watts = Some(model.power_limit_watts);

        let mut reasons = 0_u64;
        let clock_fraction = if load == 0.0 {
            reasons |= ThrottleReasons::GPU_IDLE;
            f64::from(model.idle_sm_clock_mhz) / f64::from(model.max_sm_clock_mhz)
        } else {
            if load > 0.9 {
                reasons |= ThrottleReasons::SW_POWER_CAP;
            }
            1.0 - 0.25 * load
        };
        let clock_fraction = if thermal {
            reasons |= ThrottleReasons::SW_THERMAL_SLOWDOWN
                | ThrottleReasons::HW_THERMAL_SLOWDOWN
                | ThrottleReasons::HW_SLOWDOWN;
            clock_fraction.min(0.55)
        } else {
            clock_fraction
        };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a fraction of a clock in MHz"
        )]
        let sm_clock = (f64::from(model.max_sm_clock_mhz) * clock_fraction).round() as u32;
        sample.sm_clock_mhz = Some(sm_clock);
        sample.memory_clock_mhz = Some(model.memory_clock_mhz);
        sample.throttle_reasons = Some(ThrottleReasons(reasons));

        let temperature = if thermal {
            92
        } else {
            let span = f64::from(model.loaded_temperature_celsius - model.idle_temperature_celsius);
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a positive temperature below 200 °C"
            )]
            let rise = (span * load).round() as u32;
            model.idle_temperature_celsius + rise
        };
        sample.temperature_celsius = Some(temperature);

        let double_bit = u64::try_from(
            started
                .iter()
                .filter(|fault| fault.kind == FaultKind::Dbe)
                .count(),
        )
        .unwrap_or(u64::MAX);
        let lifetime_corrected = mix(self.seed ^ u64::from(index) ^ 11) % 4;
        sample.ecc = EccCounts {
            volatile_corrected: Some(0),
            volatile_uncorrected: Some(double_bit),
            aggregate_corrected: Some(lifetime_corrected),
            aggregate_uncorrected: Some(double_bit),
        };
        sample.remapped_rows = RemappedRows {
            correctable: Some(lifetime_corrected.min(1)),
            uncorrectable: Some(double_bit),
            pending: Some(double_bit > 0),
            failure: Some(
                active
                    .iter()
                    .any(|fault| fault.kind == FaultKind::RemapFailure),
            ),
        };
        let replays: u64 = started
            .iter()
            .filter_map(|fault| match fault.kind {
                FaultKind::PcieReplay { per_second } => {
                    Some(per_second.saturating_mul(fault.held_for(elapsed).as_secs()))
                }
                _ => None,
            })
            .sum();
        sample.pcie_replay_counter = Some(replays);
        sample.mig_mode = model.mig_capable.then_some(MigMode {
            current: false,
            pending: false,
        });
        if !model.mig_capable {
            sample.missing.insert(
                "mig_mode".to_owned(),
                "NotSupported: the requested operation is not available on the target device"
                    .to_owned(),
            );
        }
        let mut processes = Vec::new();
        if state.workload.job_memory_mib > 0 {
            processes.push(ComputeProcess {
                pid: 1000 + index * 10,
                used_memory_mib: Some(state.workload.job_memory_mib),
            });
        }
        for (number, fault) in (0_u32..).zip(active.iter()) {
            if let FaultKind::Foreign { memory_mib } = fault.kind {
                processes.push(ComputeProcess {
                    pid: 40_000 + index * 100 + number,
                    used_memory_mib: Some(memory_mib),
                });
            }
        }
        sample.processes = Some(processes);
        sample
    }

    /// Events that began in `(after, until]`, in time order.
    fn events_between(
        &self,
        after: Option<Duration>,
        until: Duration,
    ) -> Vec<(Duration, u32, EventKind)> {
        let mut events: Vec<(Duration, u32, EventKind)> = Vec::new();
        for fault in &self.faults {
            if fault.at > until || after.is_some_and(|after| fault.at <= after) {
                continue;
            }
            let mut push = |kind| events.push((fault.at, fault.gpu, kind));
            match fault.kind {
                FaultKind::Xid { code } => push(EventKind::Xid { code }),
                FaultKind::Dbe => {
                    push(EventKind::DoubleBitEcc);
                    push(EventKind::Xid {
                        code: XID_DOUBLE_BIT_ECC,
                    });
                }
                FaultKind::RemapFailure => push(EventKind::Xid {
                    code: XID_ROW_REMAP_FAILURE,
                }),
                FaultKind::Foreign { .. } | FaultKind::Thermal | FaultKind::PcieReplay { .. } => {}
            }
        }
        events.sort_by_key(|(at, gpu, _)| (*at, *gpu));
        events
    }

    fn next_event_after(&self, after: Duration) -> Option<Duration> {
        self.faults
            .iter()
            .filter(|fault| fault.at > after)
            .filter(|fault| {
                matches!(
                    fault.kind,
                    FaultKind::Xid { .. } | FaultKind::Dbe | FaultKind::RemapFailure
                )
            })
            .map(|fault| fault.at)
            .min()
    }
}

impl GpuSource for SimulatedSource {
    fn driver(&self) -> DriverInfo {
        DriverInfo {
            driver_version: Some(self.preset.driver_version.clone()),
            nvml_version: Some(format!("13.{}", self.preset.driver_version)),
            cuda_driver_version: Some(self.preset.cuda_driver_version),
        }
    }

    fn inventory(&mut self) -> Result<Vec<GpuInventory>> {
        let elapsed = self.clock.elapsed();
        Ok(self
            .preset
            .gpus
            .iter()
            .zip(0_u32..)
            .map(|(slot, index)| {
                let model = &slot.model;
                let mut gpu = GpuInventory {
                    index,
                    uuid: Some(simulated_uuid(self.seed, index)),
                    name: Some(model.name.clone()),
                    pci_bus_id: Some(slot.pci_bus_id.clone()),
                    minor_number: Some(index),
                    ..GpuInventory::default()
                };
                if self.lost(index, elapsed) {
                    gpu.missing
                        .insert("device".to_owned(), GPU_LOST_ERROR.to_owned());
                    return gpu;
                }
                gpu.memory_total_mib = Some(model.memory_total_mib);
                gpu.architecture = Some(model.architecture.clone());
                gpu.compute_capability = Some(ComputeCapability {
                    major: model.compute_capability.0,
                    minor: model.compute_capability.1,
                });
                gpu.power_limit_default_watts = Some(model.power_limit_watts);
                gpu.max_sm_clock_mhz = Some(model.max_sm_clock_mhz);
                gpu.ecc_enabled = Some(true);
                gpu.mig_mode = model.mig_capable.then_some(MigMode {
                    current: false,
                    pending: false,
                });
                gpu.supported_events = Some(vec![
                    "critical_xid".to_owned(),
                    "double_bit_ecc".to_owned(),
                    "single_bit_ecc".to_owned(),
                ]);
                gpu.nvlinks = self.preset.nvlinks(index);
                if gpu.nvlinks.is_none() {
                    gpu.missing
                        .insert("nvlinks".to_owned(), NVLINK_NOT_SUPPORTED.to_owned());
                }
                gpu
            })
            .collect())
    }

    fn sample(&mut self) -> Result<NodeSample> {
        let elapsed = self.clock.elapsed();
        let step = elapsed.saturating_sub(self.last_sample);
        self.last_sample = self.last_sample.max(elapsed);
        let mut gpus = Vec::with_capacity(self.gpus.len());
        for ((slot, state), index) in self.preset.gpus.iter().zip(&self.gpus).zip(0_u32..) {
            gpus.push(self.gpu_sample(index, slot, state, elapsed));
        }
        // Energy integrates the power just read over the time since the last sample.
        for (state, gpu) in self.gpus.iter_mut().zip(&mut gpus) {
            if let Some(watts) = gpu.power_usage_watts {
                state.energy_millijoules += watts * step.as_secs_f64() * 1000.0;
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "energy is positive and far below 2^63 mJ"
                )]
                let energy = state.energy_millijoules as u64;
                gpu.total_energy_millijoules = Some(energy);
            }
        }
        Ok(NodeSample {
            at_unix_ms: self.started_unix_ms
                + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            gpus,
        })
    }

    fn wait_for_events(&mut self, timeout: Duration) -> Result<Vec<GpuEvent>> {
        let mut now = self.clock.elapsed();
        if let SimulationClock::Wall(_) = self.clock {
            let due = self.events_between(self.events_until, now);
            if due.is_empty() {
                let deadline = now + timeout;
                let wake = self
                    .next_event_after(now)
                    .filter(|next| *next <= deadline)
                    .unwrap_or(deadline);
                std::thread::sleep(wake.saturating_sub(now));
                now = self.clock.elapsed();
            }
        }
        let events = self
            .events_between(self.events_until, now)
            .into_iter()
            .map(|(at, gpu, kind)| GpuEvent {
                gpu_index: Some(gpu),
                kind,
                at_unix_ms: self.started_unix_ms
                    + u64::try_from(at.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        self.events_until = Some(now);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fault::parse_script;
    use crate::preset;

    fn machine(faults: &str) -> SimulatedSource {
        SimulatedSource::new(
            preset::dgx_h100(),
            "node-a",
            parse_script(faults).unwrap_or_default(),
            SimulationClock::manual(),
        )
    }

    #[test]
    fn xid_79_makes_the_gpu_fall_off_the_bus_at_its_time() -> Result<()> {
        let mut source = machine("xid:79@gpu3@t=5s");
        let clock = source.clock().clone();
        let before = source.sample()?;
        assert!(before.gpus[3].memory_free_mib.is_some());
        assert!(source.wait_for_events(Duration::ZERO)?.is_empty());
        clock.advance(Duration::from_secs(5));
        let events = source.wait_for_events(Duration::ZERO)?;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].gpu_index, Some(3));
        assert_eq!(events[0].kind, EventKind::Xid { code: 79 });
        let after = source.sample()?;
        assert!(after.gpus[3].lost());
        assert_eq!(after.gpus[3].memory_free_mib, None);
        assert!(!after.gpus[2].lost());
        // Reported once only.
        clock.advance(Duration::from_secs(1));
        assert!(source.wait_for_events(Duration::ZERO)?.is_empty());
        Ok(())
    }

    #[test]
    fn foreign_process_takes_free_memory_while_it_runs() -> Result<()> {
        let mut source = machine("foreign:20000@gpu0@t=1s..3s");
        let clock = source.clock().clone();
        let free_before = source.sample()?.gpus[0].memory_free_mib;
        clock.advance(Duration::from_secs(2));
        let during = source.sample()?;
        assert_eq!(
            during.gpus[0].memory_free_mib,
            free_before.map(|free| free.saturating_sub(20_000))
        );
        let processes = during.gpus[0].processes.clone().unwrap_or_default();
        assert!(
            processes
                .iter()
                .any(|process| process.used_memory_mib == Some(20_000))
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(source.sample()?.gpus[0].memory_free_mib, free_before);
        Ok(())
    }

    #[test]
    fn double_bit_ecc_counts_and_raises_xid_48() -> Result<()> {
        let mut source = machine("dbe@gpu1@t=0s");
        let sample = source.sample()?;
        assert_eq!(sample.gpus[1].ecc.volatile_uncorrected, Some(1));
        assert_eq!(sample.gpus[1].remapped_rows.pending, Some(true));
        assert_eq!(sample.gpus[0].ecc.volatile_uncorrected, Some(0));
        let kinds: Vec<EventKind> = source
            .wait_for_events(Duration::ZERO)?
            .into_iter()
            .map(|event| event.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![EventKind::DoubleBitEcc, EventKind::Xid { code: 48 }]
        );
        Ok(())
    }

    #[test]
    fn thermal_fault_throttles_and_heats_then_recovers() -> Result<()> {
        let mut source = machine("thermal@gpu2@t=0s..10s");
        let clock = source.clock().clone();
        let hot = source.sample()?;
        let reasons = hot.gpus[2].throttle_reasons.unwrap_or_default();
        assert!(reasons.thermal());
        assert_eq!(hot.gpus[2].temperature_celsius, Some(92));
        clock.advance(Duration::from_secs(10));
        let cool = source.sample()?;
        assert!(!cool.gpus[2].throttle_reasons.unwrap_or_default().thermal());
        Ok(())
    }

    #[test]
    fn energy_counter_integrates_power() -> Result<()> {
        let mut source = machine("");
        let clock = source.clock().clone();
        let first = source.sample()?;
        clock.advance(Duration::from_secs(10));
        let second = source.sample()?;
        let gained = second.gpus[0].total_energy_millijoules.unwrap_or(0)
            - first.gpus[0].total_energy_millijoules.unwrap_or(0);
        let watts = second.gpus[0].power_usage_watts.unwrap_or(0.0);
        // 10 s at the power just read, in mJ (truncation of the counter loses < 1 mJ each).
        assert!(
            (gained as f64 - watts * 10_000.0).abs() < 2.0,
            "{gained} vs {watts} W"
        );
        Ok(())
    }

    #[test]
    fn same_node_name_gives_the_same_machine() -> Result<()> {
        let mut first = machine("");
        let mut second = machine("");
        assert_eq!(first.inventory()?, second.inventory()?);
        let other = SimulatedSource::new(
            preset::dgx_h100(),
            "node-b",
            vec![],
            SimulationClock::manual(),
        )
        .inventory()?;
        assert_ne!(first.inventory()?[0].uuid, other[0].uuid);
        Ok(())
    }

    proptest! {
        #[test]
        fn memory_always_adds_up(seconds in 0u64..100_000, node in "[a-z]{1,12}", foreign in 0u64..300_000) {
            let faults = vec![Fault { kind: FaultKind::Foreign { memory_mib: foreign }, gpu: 0, at: Duration::ZERO, until: None }];
            let mut source = SimulatedSource::new(preset::mixed(), &node, faults, SimulationClock::manual());
            source.clock().advance(Duration::from_secs(seconds));
            let sample = source.sample().map_err(|error| TestCaseError::fail(error.to_string()))?;
            for gpu in &sample.gpus {
                let total = gpu.memory_total_mib.unwrap_or(0);
                let parts = gpu.memory_used_mib.unwrap_or(0) + gpu.memory_free_mib.unwrap_or(0) + gpu.memory_reserved_mib.unwrap_or(0);
                prop_assert_eq!(parts, total);
                prop_assert!(gpu.gpu_utilization_percent.unwrap_or(0) <= 100);
                prop_assert!(gpu.power_usage_watts.unwrap_or(0.0) <= 1000.0);
            }
        }
    }
}
