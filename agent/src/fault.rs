//! Scriptable faults for the simulated source and the stand-in libnvidia-ml.
//!
//! A script is a comma-separated list of `KIND[:ARG]@gpuN@t=START[..END]`, for example
//! `xid:79@gpu3@t=5s, dbe@gpu1@t=10s, foreign:20000@gpu0@t=2s..60s, thermal@gpu2@t=0s..30s`.
//!
//! | kind              | arg           | effect                                                    |
//! |-------------------|---------------|-----------------------------------------------------------|
//! | `xid`             | Xid code      | an Xid event; 79 also makes the GPU fall off the bus      |
//! | `dbe`             | —             | a double-bit ECC error (counter + event + Xid 48)         |
//! | `foreign`         | MiB           | a process the scheduler did not place holds that memory   |
//! | `thermal`         | —             | 92 °C and thermal slowdown (clocks cut)                   |
//! | `remap-failure`   | —             | row remapping failed (needs service)                      |
//! | `pcie-replay`     | replays/s     | the PCIe replay counter climbs                            |
//!
//! Times take `ms`, `s` or `m`. Without `..END` a condition lasts for ever (events happen once).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// An Xid error; Xid 79 (fell off the bus) also makes every later reading fail.
    Xid {
        /// Xid number.
        code: u64,
    },
    /// A double-bit ECC error.
    Dbe,
    /// A process the scheduler did not place holds memory.
    Foreign {
        /// Memory it holds in MiB.
        memory_mib: u64,
    },
    /// The GPU overheats and slows down.
    Thermal,
    /// Row remapping fails.
    RemapFailure,
    /// The PCIe link retransmits.
    PcieReplay {
        /// Replays per second.
        per_second: u64,
    },
}

/// One fault: what, on which GPU, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// NVML index of the GPU.
    pub gpu: u32,
    /// When it starts, from the source's start.
    #[serde(with = "millis")]
    pub at: Duration,
    /// When a condition stops (never, if absent).
    #[serde(default, with = "optional_millis")]
    pub until: Option<Duration>,
}

impl Fault {
    /// Whether the fault's condition holds at `elapsed`.
    pub fn active(&self, elapsed: Duration) -> bool {
        elapsed >= self.at && self.until.is_none_or(|until| elapsed < until)
    }

    /// How long the condition has held at `elapsed` (zero before it starts).
    pub fn held_for(&self, elapsed: Duration) -> Duration {
        let end = self.until.map_or(elapsed, |until| elapsed.min(until));
        end.saturating_sub(self.at)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

mod optional_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::millis::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(deserializer).map(|value| value.map(Duration::from_millis))
    }
}

fn parse_error(input: &str, reason: impl Into<String>) -> Error {
    Error::ParseFault {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `5s`, `500ms`, `2m` or `1.5s`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        return Err(format!(
            "`{text}` needs a unit: ms, s or m (for example 5s)"
        ));
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number with a unit (for example 5s)"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("`{text}` must be a non-negative time"));
    }
    // `Duration::from_secs_f64` panics past u64::MAX seconds; a fault script has no use for
    // times beyond a year of simulated run.
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|duration| *duration <= MAX_SCRIPT_TIME)
        .ok_or_else(|| {
            format!(
                "`{text}` is beyond the longest fault-script time, {} days",
                MAX_SCRIPT_TIME.as_secs() / 86_400
            )
        })
}

/// The latest time a fault script may name: a year.
pub const MAX_SCRIPT_TIME: Duration = Duration::from_secs(366 * 86_400);

/// Parses one fault, `KIND[:ARG]@gpuN@t=START[..END]`.
pub fn parse_fault(input: &str) -> Result<Fault> {
    let mut parts = input.trim().split('@');
    let kind_text = parts.next().unwrap_or_default();
    let gpu_text = parts
        .next()
        .ok_or_else(|| parse_error(input, "missing `@gpuN` (for example xid:79@gpu3@t=5s)"))?;
    let time_text = parts.next().unwrap_or("t=0s");
    if parts.next().is_some() {
        return Err(parse_error(
            input,
            "too many `@` parts: write KIND[:ARG]@gpuN@t=START[..END]",
        ));
    }
    let (kind_name, argument) = match kind_text.split_once(':') {
        Some((name, argument)) => (name, Some(argument)),
        None => (kind_text, None),
    };
    let number = |what: &str| -> Result<u64> {
        argument
            .ok_or_else(|| parse_error(input, format!("`{kind_name}` needs `:{what}`")))?
            .trim()
            .parse()
            .map_err(|_| {
                parse_error(
                    input,
                    format!("`{kind_name}:` takes {what} as a whole number"),
                )
            })
    };
    let kind = match kind_name.trim() {
        "xid" => FaultKind::Xid {
            code: number("the Xid code")?,
        },
        "dbe" => FaultKind::Dbe,
        "foreign" => FaultKind::Foreign {
            memory_mib: number("MiB")?,
        },
        "thermal" => FaultKind::Thermal,
        "remap-failure" => FaultKind::RemapFailure,
        "pcie-replay" => FaultKind::PcieReplay {
            per_second: number("replays per second")?,
        },
        other => {
            return Err(parse_error(
                input,
                format!(
                    "unknown fault `{other}`: use xid, dbe, foreign, thermal, remap-failure or pcie-replay"
                ),
            ));
        }
    };
    let gpu = gpu_text
        .trim()
        .strip_prefix("gpu")
        .and_then(|index| index.parse().ok())
        .ok_or_else(|| {
            parse_error(
                input,
                format!("`{gpu_text}` should be gpuN, for example gpu3"),
            )
        })?;
    let times = time_text
        .trim()
        .strip_prefix("t=")
        .ok_or_else(|| parse_error(input, format!("`{time_text}` should be t=START[..END]")))?;
    let (at, until) = match times.split_once("..") {
        Some((start, end)) => (
            parse_duration(start).map_err(|reason| parse_error(input, reason))?,
            Some(parse_duration(end).map_err(|reason| parse_error(input, reason))?),
        ),
        None => (
            parse_duration(times).map_err(|reason| parse_error(input, reason))?,
            None,
        ),
    };
    if until.is_some_and(|until| until <= at) {
        return Err(parse_error(
            input,
            "the end time must come after the start time",
        ));
    }
    Ok(Fault {
        kind,
        gpu,
        at,
        until,
    })
}

/// Parses a comma-separated fault script; an empty script has no faults.
pub fn parse_script(script: &str) -> Result<Vec<Fault>> {
    script
        .split([',', '\n'])
        .map(str::trim)
        .filter(|part| !part.is_empty() && !part.starts_with('#'))
        .map(parse_fault)
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_the_documented_examples() -> Result<()> {
        let faults = parse_script(
            "xid:79@gpu3@t=5s, dbe@gpu1@t=10s, foreign:20000@gpu0@t=2s..60s, thermal@gpu2@t=0s..30s",
        )?;
        assert_eq!(
            faults[0],
            Fault {
                kind: FaultKind::Xid { code: 79 },
                gpu: 3,
                at: Duration::from_secs(5),
                until: None
            }
        );
        assert_eq!(faults[1].kind, FaultKind::Dbe);
        assert_eq!(faults[2].kind, FaultKind::Foreign { memory_mib: 20_000 });
        assert_eq!(faults[2].until, Some(Duration::from_secs(60)));
        assert_eq!(faults[3].kind, FaultKind::Thermal);
        Ok(())
    }

    #[test]
    fn bad_scripts_name_the_problem() {
        let message = |script: &str| {
            parse_script(script)
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default()
        };
        assert!(message("xid@gpu3@t=5s").contains("needs `:the Xid code`"));
        assert!(message("melt@gpu0").contains("unknown fault `melt`"));
        assert!(message("dbe@3").contains("gpuN"));
        assert!(message("dbe@gpu0@t=5").contains("needs a unit"));
        assert!(message("thermal@gpu0@t=5s..2s").contains("after the start"));
    }

    /// Hardening finding 5: `t=1e20s` panicked in `Duration::from_secs_f64`.
    #[test]
    fn times_beyond_a_year_are_refused_not_panicked_on() {
        for script in [
            "xid:79@gpu0@t=1e20s",
            "dbe@gpu0@t=0s..1e300m",
            "dbe@gpu0@t=527100m",
        ] {
            assert!(parse_script(script).is_err(), "{script} was accepted");
        }
        let message = parse_script("xid:79@gpu0@t=1e20s")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("beyond the longest"), "{message}");
        assert!(
            parse_script("xid:79@gpu0@t=525600m").is_ok(),
            "a year is allowed"
        );
    }

    #[test]
    fn activity_window_is_half_open() -> Result<()> {
        let fault = parse_fault("thermal@gpu0@t=1s..3s")?;
        assert!(!fault.active(Duration::from_millis(999)));
        assert!(fault.active(Duration::from_secs(1)));
        assert!(!fault.active(Duration::from_secs(3)));
        assert_eq!(
            fault.held_for(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn json_round_trips(gpu in 0u32..16, at in 0u64..100_000, length in 1u64..100_000, code in 1u64..200) {
            let fault = Fault {
                kind: FaultKind::Xid { code },
                gpu,
                at: Duration::from_millis(at),
                until: Some(Duration::from_millis(at + length)),
            };
            let json = serde_json::to_string(&fault).unwrap_or_default();
            let back: Fault = serde_json::from_str(&json).map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert_eq!(back, fault);
        }

        /// No fault script, however odd, panics the parser.
        #[test]
        fn any_script_is_parsed_or_refused_without_panicking(script in "\\PC{0,60}", seconds in proptest::num::f64::ANY) {
            let _ = parse_script(&script);
            let _ = parse_script(&format!("xid:79@gpu0@t={seconds}s"));
        }

        #[test]
        fn printed_scripts_parse_back(gpu in 0u32..16, at in 0u64..10_000, memory in 1u64..200_000) {
            let script = format!("foreign:{memory}@gpu{gpu}@t={at}ms");
            let fault = parse_fault(&script).map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert_eq!(fault.kind, FaultKind::Foreign { memory_mib: memory });
            prop_assert_eq!(fault.gpu, gpu);
            prop_assert_eq!(fault.at, Duration::from_millis(at));
        }
    }
}
