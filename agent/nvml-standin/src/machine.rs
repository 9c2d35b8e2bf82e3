//! The safe core of the stand-in: which machine it plays and how each NVML query is answered
//! from a [`GpuSource`] sample, as plain values or an NVML return code.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpufleet_agent::GpuSource;
use gpufleet_agent::fault::{self, Fault};
use gpufleet_agent::fixture::{Fixture, ReplaySource};
use gpufleet_agent::nvml::NVLINK_MAX_LINKS;
use gpufleet_agent::preset;
use gpufleet_agent::reading::{
    DriverInfo, EventKind, GpuEvent, GpuInventory, GpuSample, NodeSample, NvLinkPeer,
};
use gpufleet_agent::simulated::{SimulatedSource, SimulationClock};
use nvml_wrapper_sys::bindings as nvml;
use serde::Deserialize;

/// NVML's return code type.
pub(crate) type Code = nvml::nvmlReturn_t;

/// The name of the configuration file the stand-in looks for beside itself.
pub(crate) const CONFIG_FILE: &str = "gpufleet-nvml.json";

/// How long a sample is served before the source is read again: one agent tick reads ~25
/// values per GPU, and they must come from the same instant.
const SAMPLE_TTL: Duration = Duration::from_millis(50);

/// What the stand-in plays, from `gpufleet-nvml.json` beside the library or from environment
/// variables (`GPUFLEET_NVML_PRESET`, `GPUFLEET_NVML_FAULTS`, `GPUFLEET_NVML_FIXTURE`,
/// `GPUFLEET_NVML_NODE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Machine preset name (default `dgx_h100`).
    pub(crate) preset: Option<String>,
    /// Fault script, or `@PATH` of a file holding one.
    pub(crate) faults: Option<String>,
    /// Fixture to replay instead of a preset.
    pub(crate) fixture: Option<PathBuf>,
    /// Node name that seeds workloads and UUIDs (default: the host name).
    pub(crate) node: Option<String>,
}

impl Config {
    /// The configuration beside `library`, else from the environment.
    pub(crate) fn discover(library: Option<&Path>) -> Result<Self, String> {
        if let Some(path) = library
            .and_then(Path::parent)
            .map(|directory| directory.join(CONFIG_FILE))
            .filter(|path| path.exists())
        {
            let text = std::fs::read_to_string(&path)
                .map_err(|error| format!("read {}: {error}", path.display()))?;
            return serde_json::from_str(&text).map_err(|error| {
                format!(
                    "{} is not a stand-in configuration: {error}",
                    path.display()
                )
            });
        }
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Ok(Self {
            preset: variable("GPUFLEET_NVML_PRESET"),
            faults: variable("GPUFLEET_NVML_FAULTS"),
            fixture: variable("GPUFLEET_NVML_FIXTURE").map(PathBuf::from),
            node: variable("GPUFLEET_NVML_NODE"),
        })
    }

    /// The source this configuration describes, running on the wall clock from now.
    pub(crate) fn source(&self) -> Result<Box<dyn GpuSource>, String> {
        let clock = SimulationClock::wall();
        if let Some(path) = &self.fixture {
            let fixture = Fixture::load(path).map_err(|error| error.to_string())?;
            return Ok(Box::new(ReplaySource::new(fixture, clock)));
        }
        let name = self.preset.as_deref().unwrap_or("dgx_h100");
        let machine = preset::by_name(name).ok_or_else(|| {
            format!(
                "unknown preset `{name}`: use one of {}",
                preset::PRESET_NAMES.join(", ")
            )
        })?;
        let faults = self.faults()?;
        let node = self
            .node
            .clone()
            .or_else(gpufleet_agent::fixture::hostname)
            .unwrap_or_else(|| "gpufleet-standin".to_owned());
        Ok(Box::new(SimulatedSource::new(
            machine, &node, faults, clock,
        )))
    }

    fn faults(&self) -> Result<Vec<Fault>, String> {
        let Some(script) = &self.faults else {
            return Ok(Vec::new());
        };
        let text = match script.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|error| format!("read fault script {path}: {error}"))?,
            None => script.clone(),
        };
        fault::parse_script(&text).map_err(|error| error.to_string())
    }
}

/// The path of the shared object that holds `address`, from `/proc/self/maps`.
pub(crate) fn library_holding(address: usize) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let path = fields.nth(4)?;
        (start <= address && address < end && path.starts_with('/')).then(|| PathBuf::from(path))
    })
}

/// An event set: which GPUs and event types it listens to, and what arrived for it.
#[derive(Debug, Default)]
pub(crate) struct EventSet {
    registered: Vec<(u32, u64)>,
    queue: std::collections::VecDeque<(u32, u64, u64)>,
}

/// The machine the stand-in plays, between `nvmlInit` and the last `nvmlShutdown`.
pub(crate) struct Machine {
    source: Box<dyn GpuSource>,
    driver: DriverInfo,
    inventory: Vec<GpuInventory>,
    sample: NodeSample,
    sampled_at: Instant,
    event_sets: Vec<Option<EventSet>>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Machine")
            .field("gpus", &self.inventory.len())
            .finish_non_exhaustive()
    }
}

/// NVML's event-type bit for an event.
pub(crate) fn event_bits(kind: EventKind) -> (u64, u64) {
    match kind {
        EventKind::Xid { code } => (u64::from(nvml::nvmlEventTypeXidCriticalError), code),
        EventKind::DoubleBitEcc => (u64::from(nvml::nvmlEventTypeDoubleBitEccError), 0),
        EventKind::SingleBitEcc => (u64::from(nvml::nvmlEventTypeSingleBitEccError), 0),
        EventKind::Other { bits } => (bits, 0),
    }
}

/// NVML's return code for a reading recorded as missing with `error` text.
pub(crate) fn code_for_missing(error: Option<&String>) -> Code {
    match error.map(String::as_str) {
        Some(text) if text.starts_with("GpuLost") => nvml::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST,
        Some(text) if text.starts_with("NoPermission") => {
            nvml::nvmlReturn_enum_NVML_ERROR_NO_PERMISSION
        }
        Some(text)
            if text.starts_with("NotSupported") || text.starts_with("FailedToLoadSymbol") =>
        {
            nvml::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED
        }
        Some(_) => nvml::nvmlReturn_enum_NVML_ERROR_UNKNOWN,
        None => nvml::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
    }
}

impl Machine {
    /// Starts the machine a configuration describes.
    pub(crate) fn start(config: &Config) -> Result<Self, String> {
        let mut source = config.source()?;
        let driver = source.driver();
        let inventory = source.inventory().map_err(|error| error.to_string())?;
        let sample = source.sample().map_err(|error| error.to_string())?;
        Ok(Self {
            source,
            driver,
            inventory,
            sample,
            sampled_at: Instant::now(),
            event_sets: Vec::new(),
        })
    }

    /// Driver-wide facts.
    pub(crate) fn driver(&self) -> &DriverInfo {
        &self.driver
    }

    /// Number of GPUs.
    pub(crate) fn count(&self) -> u32 {
        u32::try_from(self.inventory.len()).unwrap_or(u32::MAX)
    }

    fn refresh(&mut self) {
        if self.sampled_at.elapsed() >= SAMPLE_TTL {
            if let Ok(sample) = self.source.sample() {
                self.sample = sample;
            }
            self.sampled_at = Instant::now();
        }
    }

    /// The GPU's inventory, or `INVALID_ARGUMENT` for a bad index.
    pub(crate) fn inventory(&self, index: u32) -> Result<&GpuInventory, Code> {
        self.inventory
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .ok_or(nvml::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)
    }

    /// The GPU's current sample; `GPU_IS_LOST` once it fell off the bus.
    pub(crate) fn sample(&mut self, index: u32) -> Result<&GpuSample, Code> {
        self.refresh();
        let sample = self
            .sample
            .gpus
            .iter()
            .find(|gpu| gpu.index == index)
            .ok_or(nvml::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
        if sample.lost() {
            return Err(nvml::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST);
        }
        Ok(sample)
    }

    /// A reading from the GPU's sample; absent readings answer as NVML would have.
    pub(crate) fn reading<T>(
        &mut self,
        index: u32,
        name: &str,
        pick: impl FnOnce(&GpuSample) -> Option<T>,
    ) -> Result<T, Code> {
        let sample = self.sample(index)?;
        pick(sample).ok_or_else(|| code_for_missing(sample.missing.get(name)))
    }

    /// A reading from the GPU's inventory; a lost GPU answers `GPU_IS_LOST`.
    pub(crate) fn fact<T>(
        &mut self,
        index: u32,
        name: &str,
        pick: impl FnOnce(&GpuInventory) -> Option<T>,
    ) -> Result<T, Code> {
        self.sample(index)?;
        let gpu = self.inventory(index)?;
        pick(gpu).ok_or_else(|| code_for_missing(gpu.missing.get(name)))
    }

    /// NVLink `link` of a GPU: its peer when active, `None` when down. A GPU without NVLink
    /// answers as its inventory recorded (`NOT_SUPPORTED`); a link past the last one answers
    /// `INVALID_ARGUMENT`, as the driver does.
    pub(crate) fn nvlink(&mut self, index: u32, link: u32) -> Result<Option<NvLinkPeer>, Code> {
        let peers = self.fact(index, "nvlinks", |gpu| gpu.nvlinks.clone())?;
        if link >= NVLINK_MAX_LINKS {
            return Err(nvml::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT);
        }
        Ok(peers.into_iter().find(|peer| peer.link == link))
    }

    /// Creates an event set and returns its handle number (1-based).
    pub(crate) fn create_event_set(&mut self) -> usize {
        self.event_sets.push(Some(EventSet::default()));
        self.event_sets.len()
    }

    fn event_set(&mut self, handle: usize) -> Result<&mut EventSet, Code> {
        handle
            .checked_sub(1)
            .and_then(|slot| self.event_sets.get_mut(slot))
            .and_then(Option::as_mut)
            .ok_or(nvml::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)
    }

    /// Registers a GPU for `types` on a set.
    pub(crate) fn register(&mut self, handle: usize, index: u32, types: u64) -> Result<(), Code> {
        let supported = self.supported_events(index)?;
        if types & !supported != 0 {
            return Err(nvml::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
        }
        self.event_set(handle)?.registered.push((index, types));
        Ok(())
    }

    /// Frees a set.
    pub(crate) fn free_event_set(&mut self, handle: usize) -> Result<(), Code> {
        let slot = handle
            .checked_sub(1)
            .and_then(|slot| self.event_sets.get_mut(slot))
            .ok_or(nvml::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
        *slot = None;
        Ok(())
    }

    /// Event types a GPU supports, as NVML bits.
    pub(crate) fn supported_events(&mut self, index: u32) -> Result<u64, Code> {
        self.fact(index, "supported_events", |gpu| {
            gpu.supported_events.as_ref().map(|names| {
                names
                    .iter()
                    .map(|name| match name.as_str() {
                        "critical_xid" => nvml::nvmlEventTypeXidCriticalError,
                        "double_bit_ecc" => nvml::nvmlEventTypeDoubleBitEccError,
                        "single_bit_ecc" => nvml::nvmlEventTypeSingleBitEccError,
                        "pstate_change" => nvml::nvmlEventTypePState,
                        "clock_change" => nvml::nvmlEventTypeClock,
                        "power_source_change" => nvml::nvmlEventTypePowerSourceChange,
                        "mig_config_change" => nvml::nvmlEventMigConfigChange,
                        _ => 0,
                    })
                    .fold(0_u64, |bits, bit| bits | u64::from(bit))
            })
        })
    }

    /// Moves events that arrived from the source into the queues of the sets registered for
    /// them, then takes the first one queued on `handle`: (GPU index, type bits, data).
    pub(crate) fn next_event(&mut self, handle: usize) -> Result<Option<(u32, u64, u64)>, Code> {
        let arrived: Vec<GpuEvent> = self
            .source
            .wait_for_events(Duration::ZERO)
            .unwrap_or_default();
        for event in arrived {
            let Some(index) = event.gpu_index else {
                continue;
            };
            let (bits, data) = event_bits(event.kind);
            for set in self.event_sets.iter_mut().flatten() {
                if set
                    .registered
                    .iter()
                    .any(|(registered, types)| *registered == index && types & bits != 0)
                {
                    set.queue.push_back((index, bits, data));
                }
            }
        }
        Ok(self.event_set(handle)?.queue.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(faults: &str) -> Result<Machine, String> {
        Machine::start(&Config {
            preset: Some("dgx_h100".to_owned()),
            faults: Some(faults.to_owned()),
            fixture: None,
            node: Some("node-a".to_owned()),
        })
    }

    #[test]
    fn unknown_preset_names_the_choices() {
        let error = Config {
            preset: Some("dgx_a100".to_owned()),
            ..Config::default()
        }
        .source()
        .err()
        .unwrap_or_default();
        assert!(
            error.contains("dgx_a100") && error.contains("dgx_h200"),
            "{error}"
        );
    }

    #[test]
    fn missing_readings_answer_with_nvml_codes() {
        assert_eq!(
            code_for_missing(Some(&"GpuLost: gone".to_owned())),
            nvml::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST
        );
        assert_eq!(
            code_for_missing(None),
            nvml::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED
        );
        assert_eq!(
            code_for_missing(Some(&"Unknown: ?".to_owned())),
            nvml::nvmlReturn_enum_NVML_ERROR_UNKNOWN
        );
    }

    #[test]
    fn lost_gpu_answers_gpu_is_lost_and_raises_its_xid_once() -> Result<(), String> {
        let mut machine = machine("xid:79@gpu3@t=200ms")?;
        let set = machine.create_event_set();
        machine
            .register(set, 3, u64::from(nvml::nvmlEventTypeXidCriticalError))
            .map_err(|code| format!("register: {code}"))?;
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            machine.reading(3, "memory", |gpu| gpu.memory_free_mib),
            Err(nvml::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST)
        );
        assert!(
            machine
                .reading(2, "memory", |gpu| gpu.memory_free_mib)
                .is_ok()
        );
        // Registering a lost GPU fails, as with the driver.
        assert!(machine.register(set, 3, 0).is_err());
        assert_eq!(
            machine.next_event(set),
            Ok(Some((
                3,
                u64::from(nvml::nvmlEventTypeXidCriticalError),
                79
            )))
        );
        assert_eq!(machine.next_event(set), Ok(None));
        Ok(())
    }

    #[test]
    fn library_lookup_finds_the_mapping_of_an_address() {
        let address = library_holding as fn(usize) -> Option<PathBuf> as usize;
        let path = library_holding(address);
        assert!(path.is_some_and(|path| path.is_absolute()));
    }
}
