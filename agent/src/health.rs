//! Health grading: turns a GPU's samples and events into Healthy / Degraded / Unhealthy with
//! reasons. Pure: time comes in as milliseconds, nothing is read or written.
//!
//! ```text
//! GpuSample ─┐
//! GpuEvent  ─┼─► GpuHealthTracker (counters, last-seen times, sticky set) ─► grade(now) ─► GpuHealth
//! ```
//!
//! Unlike NVIDIA's device plugin (binary and sticky until the plugin restarts), conditions that
//! clear by themselves decay once their cause has been absent for a hold time; conditions that
//! only a GPU reset clears (fell off the bus, double-bit ECC, failed row remap, NVLink and
//! uncontained-ECC Xids) stay until the driver shows a reset (its volatile ECC counters drop back).
//!
//! Xid classes follow the device plugin: 13, 31, 43, 45, 68, 109 (and 94, a contained ECC error
//! that only killed the application) are application errors and do not mark the GPU by
//! themselves; a burst of them does (Degraded, decaying).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reading::{EventKind, GpuEvent, GpuSample};

/// How healthy a GPU is, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HealthState {
    /// Fit for any workload.
    Healthy,
    /// Usable, but placement should prefer other GPUs.
    Degraded,
    /// Must not receive work.
    Unhealthy,
}

/// Why a GPU is not Healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReasonCode {
    /// Readings fail with GPU_IS_LOST.
    GpuLost,
    /// Xid 79: the GPU fell off the bus.
    FellOffTheBus,
    /// A critical Xid that needs a GPU reset.
    CriticalXidNeedsReset,
    /// A critical Xid that may clear by itself.
    CriticalXid,
    /// Many application Xids in a short time.
    RepeatedApplicationXids,
    /// A double-bit (uncorrectable) ECC error.
    DoubleBitEcc,
    /// Corrected ECC errors at a high rate.
    SingleBitEccRate,
    /// Row remapping failed: the GPU ran out of spare rows.
    RowRemapFailure,
    /// A row remap waits for the next reset.
    RowRemapPending,
    /// The PCIe link retransmits at a high rate.
    PcieReplayRate,
    /// The GPU slows down for heat.
    ThermalThrottling,
    /// An external power brake slows the GPU.
    PowerBrake,
}

impl ReasonCode {
    /// The reason's name as it appears in `GpuNode` status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GpuLost => "GpuLost",
            Self::FellOffTheBus => "FellOffTheBus",
            Self::CriticalXidNeedsReset => "CriticalXidNeedsReset",
            Self::CriticalXid => "CriticalXid",
            Self::RepeatedApplicationXids => "RepeatedApplicationXids",
            Self::DoubleBitEcc => "DoubleBitEcc",
            Self::SingleBitEccRate => "SingleBitEccRate",
            Self::RowRemapFailure => "RowRemapFailure",
            Self::RowRemapPending => "RowRemapPending",
            Self::PcieReplayRate => "PcieReplayRate",
            Self::ThermalThrottling => "ThermalThrottling",
            Self::PowerBrake => "PowerBrake",
        }
    }
}

/// One reason a GPU is not Healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReason {
    /// What kind of problem.
    pub code: ReasonCode,
    /// A sentence for people.
    pub message: String,
    /// How bad it is on its own.
    pub severity: HealthState,
    /// Only a GPU reset clears it.
    pub needs_reset: bool,
    /// When it was first seen (milliseconds, the caller's clock).
    pub since_ms: u64,
}

/// The graded health of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuHealth {
    /// The worst severity among `reasons`; Healthy when there are none.
    pub state: HealthState,
    /// Every reason, worst first.
    pub reasons: Vec<HealthReason>,
}

/// How an Xid is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidClass {
    /// Caused by the application (bad kernel, MMU fault); the GPU is fine.
    Application,
    /// A hardware or driver fault that needs a GPU reset.
    CriticalNeedsReset,
    /// A hardware or driver fault that may pass.
    Critical,
}

/// Classifies an Xid the way NVIDIA's device plugin does, with reset-requiring Xids singled out.
pub fn classify_xid(code: u64) -> XidClass {
    match code {
        // Graphics engine exception, MMU fault, GPU stopped processing, preemptive cleanup,
        // video processor exception, context-switch timeout, contained ECC error.
        13 | 31 | 43 | 45 | 68 | 109 | 94 => XidClass::Application,
        // Double-bit ECC, row-remap recording and failure, NVLink error, fell off the bus,
        // uncontained ECC error, GSP errors, unrecoverable ECC.
        48 | 63 | 64 | 74 | 79 | 95 | 119 | 120 | 140 => XidClass::CriticalNeedsReset,
        _ => XidClass::Critical,
    }
}

/// Thresholds and hold times; the defaults are what gpufleet ships.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// How long a decaying condition holds after its cause was last seen.
    pub hold_ms: u64,
    /// How long a critical Xid that may pass holds the GPU Unhealthy.
    pub critical_xid_hold_ms: u64,
    /// Application Xids within `application_xid_window_ms` that make the GPU Degraded.
    pub application_xid_burst: usize,
    /// Window for counting application Xids.
    pub application_xid_window_ms: u64,
    /// Corrected ECC errors per minute that make the GPU Degraded.
    pub single_bit_ecc_per_minute: f64,
    /// PCIe replays per minute that make the GPU Degraded.
    pub pcie_replays_per_minute: f64,
    /// How long thermal throttling must last before it counts.
    pub thermal_grace_ms: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            hold_ms: 60_000,
            critical_xid_hold_ms: 600_000,
            application_xid_burst: 3,
            application_xid_window_ms: 600_000,
            single_bit_ecc_per_minute: 10.0,
            pcie_replays_per_minute: 100.0,
            thermal_grace_ms: 10_000,
        }
    }
}

/// A counter reading and when it was taken, for rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CounterPoint {
    value: u64,
    at_ms: u64,
}

/// A condition that holds while seen and for a while after.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decaying {
    reason: HealthReason,
    last_seen_ms: u64,
    hold_ms: u64,
}

/// Remembers what a GPU did and grades it.
#[derive(Debug, Clone, Default)]
pub struct GpuHealthTracker {
    policy: HealthPolicy,
    sticky: BTreeMap<ReasonCode, HealthReason>,
    decaying: BTreeMap<ReasonCode, Decaying>,
    application_xids: Vec<u64>,
    corrected: Option<CounterPoint>,
    uncorrected_volatile: Option<u64>,
    replays: Option<CounterPoint>,
    thermal_since_ms: Option<u64>,
    /// Conditions read straight from the last sample (cleared by the next one).
    current: BTreeMap<ReasonCode, HealthReason>,
}

fn reason(
    code: ReasonCode,
    severity: HealthState,
    needs_reset: bool,
    since_ms: u64,
    message: String,
) -> HealthReason {
    HealthReason {
        code,
        message,
        severity,
        needs_reset,
        since_ms,
    }
}

fn per_minute(previous: CounterPoint, value: u64, at_ms: u64) -> Option<f64> {
    let elapsed = at_ms
        .checked_sub(previous.at_ms)
        .filter(|elapsed| *elapsed > 0)?;
    let grown = value.checked_sub(previous.value)?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "counter deltas and intervals are far below 2^52"
    )]
    let rate = grown as f64 * 60_000.0 / elapsed as f64;
    Some(rate)
}

impl GpuHealthTracker {
    /// A tracker with `policy`.
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    fn stick(&mut self, new: HealthReason) {
        self.sticky.entry(new.code).or_insert(new);
    }

    fn refresh(&mut self, new: HealthReason, hold_ms: u64, now_ms: u64) {
        let entry = self.decaying.entry(new.code).or_insert(Decaying {
            reason: new.clone(),
            last_seen_ms: now_ms,
            hold_ms,
        });
        entry.last_seen_ms = now_ms;
        entry.hold_ms = hold_ms;
        entry.reason.message = new.message;
        if new.severity > entry.reason.severity {
            entry.reason.severity = new.severity;
        }
    }

    /// Takes in an event.
    pub fn observe_event(&mut self, event: &GpuEvent, now_ms: u64) {
        match event.kind {
            EventKind::Xid { code } => match classify_xid(code) {
                XidClass::Application => {
                    self.application_xids.push(now_ms);
                    let window = self.policy.application_xid_window_ms;
                    self.application_xids
                        .retain(|at| now_ms.saturating_sub(*at) < window);
                    if self.application_xids.len() >= self.policy.application_xid_burst {
                        let count = self.application_xids.len();
                        self.refresh(
                            reason(
                                ReasonCode::RepeatedApplicationXids,
                                HealthState::Degraded,
                                false,
                                now_ms,
                                format!(
                                    "{count} application Xids (last: {code}) within {} s",
                                    window / 1000
                                ),
                            ),
                            window,
                            now_ms,
                        );
                    }
                }
                XidClass::CriticalNeedsReset => {
                    let code_name = if code == 79 {
                        ReasonCode::FellOffTheBus
                    } else {
                        ReasonCode::CriticalXidNeedsReset
                    };
                    let message = match code {
                        79 => "Xid 79: the GPU fell off the bus".to_owned(),
                        48 => "Xid 48: double-bit ECC error".to_owned(),
                        64 => "Xid 64: row remapping failed".to_owned(),
                        74 => "Xid 74: NVLink error".to_owned(),
                        _ => format!("Xid {code}: needs a GPU reset"),
                    };
                    self.stick(reason(
                        code_name,
                        HealthState::Unhealthy,
                        true,
                        now_ms,
                        message,
                    ));
                }
                XidClass::Critical => {
                    let hold = self.policy.critical_xid_hold_ms;
                    self.refresh(
                        reason(
                            ReasonCode::CriticalXid,
                            HealthState::Unhealthy,
                            false,
                            now_ms,
                            format!("Xid {code}: critical error"),
                        ),
                        hold,
                        now_ms,
                    );
                }
            },
            EventKind::DoubleBitEcc => self.stick(reason(
                ReasonCode::DoubleBitEcc,
                HealthState::Unhealthy,
                true,
                now_ms,
                "double-bit ECC error event".to_owned(),
            )),
            EventKind::SingleBitEcc | EventKind::Other { .. } => {}
        }
    }

    /// Takes in a sample.
    pub fn observe_sample(&mut self, sample: &GpuSample, now_ms: u64) {
        self.current.clear();
        if sample.lost() {
            self.current.insert(
                ReasonCode::GpuLost,
                reason(
                    ReasonCode::GpuLost,
                    HealthState::Unhealthy,
                    false,
                    now_ms,
                    "NVML answers GPU_IS_LOST for this GPU".to_owned(),
                ),
            );
            return;
        }

        // A driver reload or GPU reset zeroes the volatile counters: sticky conditions end.
        if let Some(uncorrected) = sample.ecc.volatile_uncorrected {
            match self.uncorrected_volatile {
                Some(previous) if uncorrected < previous => {
                    self.sticky.clear();
                    self.corrected = None;
                    self.replays = None;
                }
                Some(previous) if uncorrected > previous => self.stick(reason(
                    ReasonCode::DoubleBitEcc,
                    HealthState::Unhealthy,
                    true,
                    now_ms,
                    format!(
                        "{} uncorrected ECC errors since the driver loaded",
                        uncorrected
                    ),
                )),
                None if uncorrected > 0 => self.stick(reason(
                    ReasonCode::DoubleBitEcc,
                    HealthState::Unhealthy,
                    true,
                    now_ms,
                    format!(
                        "{} uncorrected ECC errors since the driver loaded",
                        uncorrected
                    ),
                )),
                _ => {}
            }
            self.uncorrected_volatile = Some(uncorrected);
        }

        if let Some(corrected) = sample.ecc.volatile_corrected {
            if let Some(rate) = self
                .corrected
                .and_then(|previous| per_minute(previous, corrected, now_ms))
                && rate >= self.policy.single_bit_ecc_per_minute
            {
                let hold = self.policy.hold_ms;
                self.refresh(
                    reason(
                        ReasonCode::SingleBitEccRate,
                        HealthState::Degraded,
                        false,
                        now_ms,
                        format!("{rate:.0} corrected ECC errors per minute"),
                    ),
                    hold,
                    now_ms,
                );
            }
            self.corrected = Some(CounterPoint {
                value: corrected,
                at_ms: now_ms,
            });
        }

        if let Some(replays) = sample.pcie_replay_counter {
            if let Some(rate) = self
                .replays
                .and_then(|previous| per_minute(previous, replays, now_ms))
                && rate >= self.policy.pcie_replays_per_minute
            {
                let hold = self.policy.hold_ms;
                self.refresh(
                    reason(
                        ReasonCode::PcieReplayRate,
                        HealthState::Degraded,
                        false,
                        now_ms,
                        format!("{rate:.0} PCIe replays per minute"),
                    ),
                    hold,
                    now_ms,
                );
            }
            self.replays = Some(CounterPoint {
                value: replays,
                at_ms: now_ms,
            });
        }

        if sample.remapped_rows.failure == Some(true) {
            self.stick(reason(
                ReasonCode::RowRemapFailure,
                HealthState::Unhealthy,
                true,
                now_ms,
                "row remapping failed: no spare rows left".to_owned(),
            ));
        }
        if sample.remapped_rows.pending == Some(true) {
            self.current.insert(
                ReasonCode::RowRemapPending,
                reason(
                    ReasonCode::RowRemapPending,
                    HealthState::Degraded,
                    true,
                    now_ms,
                    "a row remap waits for the next GPU reset".to_owned(),
                ),
            );
        }

        match sample.throttle_reasons {
            Some(reasons) if reasons.thermal() => {
                let since = *self.thermal_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) >= self.policy.thermal_grace_ms {
                    let hold = self.policy.hold_ms;
                    let temperature = sample
                        .temperature_celsius
                        .map_or_else(String::new, |celsius| format!(" at {celsius} °C"));
                    self.refresh(
                        reason(
                            ReasonCode::ThermalThrottling,
                            HealthState::Degraded,
                            false,
                            since,
                            format!(
                                "thermal slowdown for {} s{temperature}",
                                (now_ms - since) / 1000
                            ),
                        ),
                        hold,
                        now_ms,
                    );
                }
            }
            Some(_) => self.thermal_since_ms = None,
            None => {}
        }
        if sample.throttle_reasons.is_some_and(|reasons| {
            reasons.0 & crate::reading::ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN != 0
        }) {
            let hold = self.policy.hold_ms;
            self.refresh(
                reason(
                    ReasonCode::PowerBrake,
                    HealthState::Degraded,
                    false,
                    now_ms,
                    "external power brake slows the GPU".to_owned(),
                ),
                hold,
                now_ms,
            );
        }
    }

    /// The grade at `now_ms`: sticky reasons, current conditions and decaying conditions still
    /// within their hold time.
    pub fn grade(&mut self, now_ms: u64) -> GpuHealth {
        self.decaying.retain(|_, condition| {
            now_ms.saturating_sub(condition.last_seen_ms) < condition.hold_ms
        });
        let mut reasons: Vec<HealthReason> = self
            .sticky
            .values()
            .chain(self.current.values())
            .chain(self.decaying.values().map(|condition| &condition.reason))
            .cloned()
            .collect();
        reasons.sort_by(|left, right| {
            right
                .severity
                .cmp(&left.severity)
                .then(left.code.cmp(&right.code))
        });
        reasons.dedup_by_key(|reason| reason.code);
        GpuHealth {
            state: reasons
                .iter()
                .map(|reason| reason.severity)
                .max()
                .unwrap_or(HealthState::Healthy),
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::reading::{EccCounts, ThrottleReasons};

    fn clean(index: u32) -> GpuSample {
        GpuSample {
            index,
            ecc: EccCounts {
                volatile_corrected: Some(0),
                volatile_uncorrected: Some(0),
                aggregate_corrected: Some(0),
                aggregate_uncorrected: Some(0),
            },
            pcie_replay_counter: Some(0),
            throttle_reasons: Some(ThrottleReasons(0)),
            temperature_celsius: Some(50),
            ..GpuSample::default()
        }
    }

    fn xid(code: u64) -> GpuEvent {
        GpuEvent {
            gpu_index: Some(0),
            kind: EventKind::Xid { code },
            at_unix_ms: 0,
        }
    }

    #[test]
    fn xid_classes_follow_the_device_plugin() {
        for code in [13, 31, 43, 45, 68, 109, 94] {
            assert_eq!(classify_xid(code), XidClass::Application, "Xid {code}");
        }
        for code in [48, 79, 64, 74, 95] {
            assert_eq!(
                classify_xid(code),
                XidClass::CriticalNeedsReset,
                "Xid {code}"
            );
        }
        assert_eq!(classify_xid(62), XidClass::Critical);
    }

    #[test]
    fn xid_79_is_unhealthy_and_sticky_until_reset() {
        let mut tracker = GpuHealthTracker::default();
        tracker.observe_sample(&clean(0), 0);
        tracker.observe_event(&xid(79), 1_000);
        let health = tracker.grade(1_000);
        assert_eq!(health.state, HealthState::Unhealthy);
        assert_eq!(health.reasons[0].code, ReasonCode::FellOffTheBus);
        assert!(health.reasons[0].needs_reset);
        // An hour of clean samples does not clear it.
        for second in 2..3_600 {
            tracker.observe_sample(&clean(0), second * 1_000);
        }
        assert_eq!(tracker.grade(3_600_000).state, HealthState::Unhealthy);
    }

    #[test]
    fn a_reset_seen_in_volatile_counters_clears_sticky_reasons() {
        let mut tracker = GpuHealthTracker::default();
        let mut broken = clean(0);
        broken.ecc.volatile_uncorrected = Some(2);
        tracker.observe_sample(&broken, 0);
        assert_eq!(tracker.grade(0).reasons[0].code, ReasonCode::DoubleBitEcc);
        tracker.observe_sample(&clean(0), 60_000);
        assert_eq!(tracker.grade(60_000).state, HealthState::Healthy);
    }

    #[test]
    fn application_xids_only_count_in_bursts_and_decay() {
        let mut tracker = GpuHealthTracker::default();
        tracker.observe_event(&xid(13), 0);
        tracker.observe_event(&xid(31), 1_000);
        assert_eq!(tracker.grade(1_000).state, HealthState::Healthy);
        tracker.observe_event(&xid(43), 2_000);
        let health = tracker.grade(2_000);
        assert_eq!(health.state, HealthState::Degraded);
        assert_eq!(health.reasons[0].code, ReasonCode::RepeatedApplicationXids);
        assert_eq!(tracker.grade(2_000 + 600_000).state, HealthState::Healthy);
    }

    #[test]
    fn thermal_throttling_counts_after_its_grace_and_decays() {
        let mut tracker = GpuHealthTracker::default();
        let mut hot = clean(0);
        hot.throttle_reasons = Some(ThrottleReasons(ThrottleReasons::HW_THERMAL_SLOWDOWN));
        hot.temperature_celsius = Some(92);
        for second in 0..=9 {
            tracker.observe_sample(&hot, second * 1_000);
        }
        assert_eq!(tracker.grade(9_000).state, HealthState::Healthy);
        tracker.observe_sample(&hot, 10_000);
        let health = tracker.grade(10_000);
        assert_eq!(health.state, HealthState::Degraded);
        assert!(
            health.reasons[0].message.contains("92 °C"),
            "{}",
            health.reasons[0].message
        );
        tracker.observe_sample(&clean(0), 11_000);
        assert_eq!(tracker.grade(69_999).state, HealthState::Degraded);
        assert_eq!(tracker.grade(10_000 + 60_000).state, HealthState::Healthy);
    }

    #[test]
    fn counter_rates_degrade_pcie_and_single_bit_ecc() {
        let mut tracker = GpuHealthTracker::default();
        tracker.observe_sample(&clean(0), 0);
        let mut flaky = clean(0);
        flaky.pcie_replay_counter = Some(500);
        flaky.ecc.volatile_corrected = Some(1);
        tracker.observe_sample(&flaky, 60_000);
        let codes: Vec<ReasonCode> = tracker
            .grade(60_000)
            .reasons
            .iter()
            .map(|reason| reason.code)
            .collect();
        assert_eq!(codes, vec![ReasonCode::PcieReplayRate]);
    }

    #[test]
    fn lost_gpu_and_remap_failure_are_unhealthy() {
        let mut tracker = GpuHealthTracker::default();
        let mut lost = GpuSample::absent(0);
        lost.missing.insert(
            "device".to_owned(),
            crate::simulated::GPU_LOST_ERROR.to_owned(),
        );
        tracker.observe_sample(&lost, 0);
        assert_eq!(tracker.grade(0).reasons[0].code, ReasonCode::GpuLost);
        let mut failed = clean(0);
        failed.remapped_rows.failure = Some(true);
        failed.remapped_rows.pending = Some(true);
        tracker.observe_sample(&failed, 1_000);
        let health = tracker.grade(1_000);
        assert_eq!(health.state, HealthState::Unhealthy);
        assert_eq!(
            health
                .reasons
                .iter()
                .map(|reason| reason.code)
                .collect::<Vec<_>>(),
            vec![ReasonCode::RowRemapFailure, ReasonCode::RowRemapPending]
        );
    }

    fn arbitrary_event() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            (1u64..160).prop_map(|code| EventKind::Xid { code }),
            Just(EventKind::DoubleBitEcc),
            Just(EventKind::SingleBitEcc),
        ]
    }

    proptest! {
        #[test]
        fn state_is_the_worst_reason(events in proptest::collection::vec((arbitrary_event(), 0u64..1_000_000), 0..40)) {
            let mut tracker = GpuHealthTracker::default();
            let mut now = 0;
            for (kind, step) in events {
                now += step;
                tracker.observe_event(&GpuEvent { gpu_index: Some(0), kind, at_unix_ms: now }, now);
                let health = tracker.grade(now);
                let worst = health.reasons.iter().map(|reason| reason.severity).max().unwrap_or(HealthState::Healthy);
                prop_assert_eq!(health.state, worst);
                prop_assert_eq!(health.state == HealthState::Healthy, health.reasons.is_empty());
            }
        }

        #[test]
        fn reset_requiring_xids_never_decay(code in prop::sample::select(vec![48u64, 63, 64, 74, 79, 95]), quiet_hours in 0u64..1_000) {
            let mut tracker = GpuHealthTracker::default();
            tracker.observe_event(&xid(code), 0);
            tracker.observe_sample(&clean(0), quiet_hours * 3_600_000);
            prop_assert_eq!(tracker.grade(quiet_hours * 3_600_000 + 1).state, HealthState::Unhealthy);
        }

        #[test]
        fn application_xids_alone_never_make_unhealthy(codes in proptest::collection::vec(prop::sample::select(vec![13u64, 31, 43, 45, 68, 109, 94]), 0..50)) {
            let mut tracker = GpuHealthTracker::default();
            for (code, second) in codes.into_iter().zip(0u64..) {
                tracker.observe_event(&xid(code), second * 1_000);
                prop_assert!(tracker.grade(second * 1_000).state <= HealthState::Degraded);
            }
        }

        #[test]
        fn decaying_conditions_clear_after_their_hold(code in 1u64..160) {
            prop_assume!(classify_xid(code) == XidClass::Critical);
            let mut tracker = GpuHealthTracker::default();
            tracker.observe_event(&xid(code), 0);
            prop_assert_eq!(tracker.grade(1).state, HealthState::Unhealthy);
            let hold = HealthPolicy::default().critical_xid_hold_ms;
            prop_assert_eq!(tracker.grade(hold).state, HealthState::Healthy);
        }
    }
}
