//! Prometheus text exposition with dcgm-exporter's metric names, units and labels, so existing
//! Grafana dashboards and alerts work unchanged, plus the agent's own `gpufleet_agent_*` series.
//!
//! ```text
//! NodeView (inventory, last sample, health, counters) ─► render() ─► text/plain; version=0.0.4
//! ```
//!
//! Pure: the HTTP server calls [`render`] on every scrape. A reading that is absent produces no
//! series at all (never a 0), as dcgm-exporter skips blank fields.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::health::{GpuHealth, HealthState};
use crate::reading::{DriverInfo, GpuInventory, GpuSample, NodeSample};

/// The content type of the exposition format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters the agent keeps about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentCounters {
    /// Samples taken.
    pub samples: u64,
    /// Samples that failed as a whole (device count unreadable).
    pub sample_failures: u64,
    /// Seconds the last sample took.
    pub last_sample_seconds: Option<f64>,
    /// Events seen, by kind name.
    pub events: BTreeMap<String, u64>,
    /// GpuNode writes, by result (`ok`, `error`).
    pub publishes: BTreeMap<String, u64>,
    /// The last failed write's error, for logs.
    pub last_publish_error: Option<String>,
}

/// Everything the agent knows about its node now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    /// Node name (the `Hostname` label).
    pub hostname: String,
    /// Driver-wide facts.
    pub driver: DriverInfo,
    /// What GPUs the node has.
    pub inventory: Vec<GpuInventory>,
    /// The latest sample.
    pub sample: Option<NodeSample>,
    /// Graded health by GPU index.
    pub health: BTreeMap<u32, GpuHealth>,
    /// The last Xid seen by GPU index (dcgm-exporter's `DCGM_FI_DEV_XID_ERRORS`).
    pub last_xid: BTreeMap<u32, u64>,
    /// The agent's own counters.
    pub counters: AgentCounters,
    /// Who owns each GPU process of the latest sample, by pid; `None` when the agent does not
    /// attribute processes (no process table configured).
    pub process_owners: Option<BTreeMap<u32, crate::ownership::ProcessOwner>>,
    /// Which Pods gpufleet placed on which GPU; `None` until the Pods on this node were listed.
    pub placements: Option<crate::ownership::GpuPlacements>,
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// dcgm-exporter's labels for a GPU.
fn gpu_labels(gpu: &GpuInventory, hostname: &str) -> String {
    let device = gpu.minor_number.map_or_else(
        || format!("nvidia{}", gpu.index),
        |minor| format!("nvidia{minor}"),
    );
    format!(
        "gpu=\"{}\",UUID=\"{}\",pci_bus_id=\"{}\",device=\"{}\",modelName=\"{}\",Hostname=\"{}\"",
        gpu.index,
        escape(gpu.uuid.as_deref().unwrap_or_default()),
        escape(gpu.pci_bus_id.as_deref().unwrap_or_default()),
        escape(&device),
        escape(gpu.name.as_deref().unwrap_or_default()),
        escape(hostname),
    )
}

/// One metric family: its header and one line per GPU that has a value.
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    read: fn(&GpuSample) -> Option<f64>,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "exposition values are f64 by definition; counters above 2^53 lose low digits as in any exporter"
)]
fn float(value: u64) -> f64 {
    value as f64
}

fn families() -> Vec<Family<'static>> {
    vec![
        Family {
            name: "DCGM_FI_DEV_SM_CLOCK",
            kind: "gauge",
            help: "SM clock frequency (in MHz).",
            read: |gpu| gpu.sm_clock_mhz.map(f64::from),
        },
        Family {
            name: "DCGM_FI_DEV_MEM_CLOCK",
            kind: "gauge",
            help: "Memory clock frequency (in MHz).",
            read: |gpu| gpu.memory_clock_mhz.map(f64::from),
        },
        Family {
            name: "DCGM_FI_DEV_GPU_TEMP",
            kind: "gauge",
            help: "GPU temperature (in C).",
            read: |gpu| gpu.temperature_celsius.map(f64::from),
        },
        Family {
            name: "DCGM_FI_DEV_POWER_USAGE",
            kind: "gauge",
            help: "Power draw (in W).",
            read: |gpu| gpu.power_usage_watts,
        },
        Family {
            name: "DCGM_FI_DEV_POWER_MGMT_LIMIT",
            kind: "gauge",
            help: "Enforced power limit (in W).",
            read: |gpu| gpu.power_limit_watts,
        },
        Family {
            name: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            kind: "counter",
            help: "Total energy consumption since boot (in mJ).",
            read: |gpu| gpu.total_energy_millijoules.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
            kind: "counter",
            help: "Total number of PCIe retries.",
            read: |gpu| gpu.pcie_replay_counter.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_GPU_UTIL",
            kind: "gauge",
            help: "GPU utilization (in %).",
            read: |gpu| gpu.gpu_utilization_percent.map(f64::from),
        },
        Family {
            name: "DCGM_FI_DEV_MEM_COPY_UTIL",
            kind: "gauge",
            help: "Memory utilization (in %).",
            read: |gpu| gpu.memory_utilization_percent.map(f64::from),
        },
        Family {
            name: "DCGM_FI_DEV_FB_FREE",
            kind: "gauge",
            help: "Framebuffer memory free (in MiB).",
            read: |gpu| gpu.memory_free_mib.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_FB_USED",
            kind: "gauge",
            help: "Framebuffer memory used (in MiB).",
            read: |gpu| gpu.memory_used_mib.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_FB_RESERVED",
            kind: "gauge",
            help: "Framebuffer memory reserved (in MiB).",
            read: |gpu| gpu.memory_reserved_mib.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
            kind: "gauge",
            help: "Current clock throttle reasons (bit mask).",
            read: |gpu| gpu.throttle_reasons.map(|reasons| float(reasons.0)),
        },
        Family {
            name: "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
            kind: "counter",
            help: "Total number of single-bit volatile ECC errors.",
            read: |gpu| gpu.ecc.volatile_corrected.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            kind: "counter",
            help: "Total number of double-bit volatile ECC errors.",
            read: |gpu| gpu.ecc.volatile_uncorrected.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
            kind: "counter",
            help: "Total number of single-bit persistent ECC errors.",
            read: |gpu| gpu.ecc.aggregate_corrected.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
            kind: "counter",
            help: "Total number of double-bit persistent ECC errors.",
            read: |gpu| gpu.ecc.aggregate_uncorrected.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
            kind: "counter",
            help: "Number of remapped rows for correctable errors.",
            read: |gpu| gpu.remapped_rows.correctable.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
            kind: "counter",
            help: "Number of remapped rows for uncorrectable errors.",
            read: |gpu| gpu.remapped_rows.uncorrectable.map(float),
        },
        Family {
            name: "DCGM_FI_DEV_ROW_REMAP_FAILURE",
            kind: "gauge",
            help: "Whether remapping of rows has failed.",
            read: |gpu| {
                gpu.remapped_rows
                    .failure
                    .map(|failed| f64::from(u8::from(failed)))
            },
        },
        Family {
            name: "DCGM_FI_DEV_ROW_REMAP_PENDING",
            kind: "gauge",
            help: "Whether a row remap waits for a GPU reset.",
            read: |gpu| {
                gpu.remapped_rows
                    .pending
                    .map(|pending| f64::from(u8::from(pending)))
            },
        },
    ]
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition text for a node.
pub fn render(view: &NodeView) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let labels: BTreeMap<u32, String> = view
        .inventory
        .iter()
        .map(|gpu| (gpu.index, gpu_labels(gpu, &view.hostname)))
        .collect();
    let samples: Vec<&GpuSample> = view
        .sample
        .iter()
        .flat_map(|sample| sample.gpus.iter())
        .collect();

    for family in families() {
        let lines: Vec<String> = samples
            .iter()
            .filter_map(|gpu| {
                let value = (family.read)(gpu)?;
                let labels = labels.get(&gpu.index)?;
                Some(format!("{}{{{labels}}} {value}", family.name))
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        header(&mut out, family.name, family.kind, family.help);
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }

    let xids: Vec<String> = view
        .last_xid
        .iter()
        .filter_map(|(index, code)| {
            Some(format!(
                "DCGM_FI_DEV_XID_ERRORS{{{}}} {code}",
                labels.get(index)?
            ))
        })
        .collect();
    if !xids.is_empty() {
        header(
            &mut out,
            "DCGM_FI_DEV_XID_ERRORS",
            "gauge",
            "Value of the last XID error encountered.",
        );
        for line in xids {
            let _ = writeln!(out, "{line}");
        }
    }

    render_own(&mut out, view, &labels);
    out
}

fn render_own(out: &mut String, view: &NodeView, labels: &BTreeMap<u32, String>) {
    header(
        out,
        "gpufleet_agent_gpu_health_state",
        "gauge",
        "Graded GPU health: 0 Healthy, 1 Degraded, 2 Unhealthy.",
    );
    for (index, health) in &view.health {
        if let Some(labels) = labels.get(index) {
            let value = match health.state {
                HealthState::Healthy => 0,
                HealthState::Degraded => 1,
                HealthState::Unhealthy => 2,
            };
            let _ = writeln!(out, "gpufleet_agent_gpu_health_state{{{labels}}} {value}");
        }
    }
    header(
        out,
        "gpufleet_agent_gpu_health_reasons",
        "gauge",
        "Reasons a GPU is not Healthy, one series per reason.",
    );
    for (index, health) in &view.health {
        if let Some(labels) = labels.get(index) {
            for reason in &health.reasons {
                let _ = writeln!(
                    out,
                    "gpufleet_agent_gpu_health_reasons{{{labels},reason=\"{}\"}} 1",
                    reason.code.as_str()
                );
            }
        }
    }
    header(
        out,
        "gpufleet_agent_missing_readings",
        "gauge",
        "Readings NVML could not give in the last sample.",
    );
    if let Some(sample) = &view.sample {
        for gpu in &sample.gpus {
            if let Some(labels) = labels.get(&gpu.index) {
                let _ = writeln!(
                    out,
                    "gpufleet_agent_missing_readings{{{labels}}} {}",
                    gpu.missing.len()
                );
            }
        }
    }
    let counters = &view.counters;
    header(
        out,
        "gpufleet_agent_samples_total",
        "counter",
        "Samples taken.",
    );
    let _ = writeln!(out, "gpufleet_agent_samples_total {}", counters.samples);
    header(
        out,
        "gpufleet_agent_sample_failures_total",
        "counter",
        "Samples that failed as a whole.",
    );
    let _ = writeln!(
        out,
        "gpufleet_agent_sample_failures_total {}",
        counters.sample_failures
    );
    if let Some(seconds) = counters.last_sample_seconds {
        header(
            out,
            "gpufleet_agent_last_sample_duration_seconds",
            "gauge",
            "Time the last sample took.",
        );
        let _ = writeln!(out, "gpufleet_agent_last_sample_duration_seconds {seconds}");
    }
    header(
        out,
        "gpufleet_agent_events_total",
        "counter",
        "GPU events seen, by kind.",
    );
    for (kind, count) in &counters.events {
        let _ = writeln!(
            out,
            "gpufleet_agent_events_total{{kind=\"{}\"}} {count}",
            escape(kind)
        );
    }
    header(
        out,
        "gpufleet_agent_publishes_total",
        "counter",
        "GpuNode writes, by result.",
    );
    for (result, count) in &counters.publishes {
        let _ = writeln!(
            out,
            "gpufleet_agent_publishes_total{{result=\"{}\"}} {count}",
            escape(result)
        );
    }
    header(
        out,
        "gpufleet_agent_build_info",
        "gauge",
        "Agent version and the driver it reads.",
    );
    let _ = writeln!(
        out,
        "gpufleet_agent_build_info{{version=\"{}\",driver_version=\"{}\",Hostname=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        escape(view.driver.driver_version.as_deref().unwrap_or_default()),
        escape(&view.hostname)
    );
}

/// A node's view as the sampler would build it from one sample of a simulated `machine` with
/// `faults`, every GPU graded at `now_ms`: the fixture the metrics and status tests render.
#[cfg(test)]
pub(crate) fn simulated_view(
    machine: crate::preset::MachinePreset,
    faults: &str,
    now_ms: u64,
) -> crate::Result<NodeView> {
    use crate::GpuSource;
    use crate::health::GpuHealthTracker;
    use crate::simulated::{SimulatedSource, SimulationClock};
    let mut source = SimulatedSource::new(
        machine,
        "node-a",
        crate::fault::parse_script(faults)?,
        SimulationClock::manual(),
    );
    let sample = source.sample()?;
    let mut health = BTreeMap::new();
    for gpu in &sample.gpus {
        let mut tracker = GpuHealthTracker::default();
        tracker.observe_sample(gpu, now_ms);
        health.insert(gpu.index, tracker.grade(now_ms));
    }
    Ok(NodeView {
        hostname: "node-a".to_owned(),
        driver: source.driver(),
        inventory: source.inventory()?,
        sample: Some(sample),
        health,
        ..NodeView::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset;

    /// A DGX H100 with `faults`, one sample taken, an Xid 79 remembered on GPU 3.
    fn view(faults: &str) -> crate::Result<NodeView> {
        Ok(NodeView {
            last_xid: BTreeMap::from([(3, 79)]),
            counters: AgentCounters {
                samples: 1,
                ..AgentCounters::default()
            },
            ..simulated_view(preset::dgx_h100(), faults, 0)?
        })
    }

    #[test]
    fn exposition_uses_dcgm_names_units_and_labels() -> crate::Result<()> {
        let view = view("")?;
        let text = render(&view);
        let uuid = view.inventory[0].uuid.clone().unwrap_or_default();
        let labels = format!(
            "gpu=\"0\",UUID=\"{uuid}\",pci_bus_id=\"00000000:18:00.0\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-a\""
        );
        let free = view
            .sample
            .as_ref()
            .and_then(|sample| sample.gpus[0].memory_free_mib)
            .unwrap_or_default();
        assert!(
            text.contains(&format!("DCGM_FI_DEV_FB_FREE{{{labels}}} {free}\n")),
            "{text}"
        );
        assert!(text.contains("# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"));
        assert!(text.contains("# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"));
        assert!(text.contains("DCGM_FI_DEV_FB_RESERVED{"), "{text}");
        assert!(text.contains("DCGM_FI_DEV_XID_ERRORS{gpu=\"3\","), "{text}");
        assert!(text.contains("DCGM_FI_DEV_POWER_USAGE{gpu=\"7\","));
        assert!(text.contains("gpufleet_agent_samples_total 1\n"));
        // Every family has exactly one HELP and TYPE and every sample line is well formed.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
            assert!(
                series.ends_with('}') || !series.contains('{'),
                "bad series in {line}"
            );
        }
        Ok(())
    }

    #[test]
    fn absent_readings_have_no_series_and_a_lost_gpu_shows_unhealthy() -> crate::Result<()> {
        let text = render(&view("xid:79@gpu3@t=0s")?);
        assert!(!text.contains("DCGM_FI_DEV_FB_FREE{gpu=\"3\""), "{text}");
        assert!(text.contains("DCGM_FI_DEV_FB_FREE{gpu=\"2\""));
        assert!(text.contains("gpufleet_agent_gpu_health_reasons{gpu=\"3\""));
        let unhealthy = text
            .lines()
            .find(|line| line.starts_with("gpufleet_agent_gpu_health_state{gpu=\"3\""))
            .unwrap_or_default();
        assert!(unhealthy.ends_with(" 2"), "{unhealthy}");
        Ok(())
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    /// `promtool check metrics` (Debian's prometheus package) accepts the exposition; skipped
    /// with a note when promtool is not installed.
    #[test]
    fn promtool_accepts_the_exposition() -> Result<(), Box<dyn std::error::Error>> {
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("skipped: promtool not found (apt-get install prometheus)");
            return Ok(());
        };
        let text = render(&view("xid:79@gpu3@t=0s")?);
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, text.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // promtool exits 1 on a parse error and 3 on lint findings. dcgm-exporter's own names
        // draw naming lints (counters without `_total`, `COUNTER` in a name, the labels
        // `modelName`, `UUID`, `Hostname` not in snake_case); Grafana dashboards depend on those
        // names, so naming lints on DCGM families and on those labels are accepted. Anything
        // else (a gpufleet metric badly named, a format error) fails the test.
        assert_ne!(
            output.status.code(),
            Some(1),
            "promtool could not parse: {report}"
        );
        let problems: Vec<&str> = report
            .lines()
            .filter(|line| !line.trim().is_empty())
            .filter(|line| {
                let dcgm_name = line.starts_with("DCGM_FI_DEV_");
                let dcgm_labels =
                    line.ends_with("label names should be written in 'snake_case' not 'camelCase'");
                !(dcgm_name || dcgm_labels)
            })
            .collect();
        assert!(problems.is_empty(), "promtool: {report}");
        Ok(())
    }
}
