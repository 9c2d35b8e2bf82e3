//! The NVML source: reads a node's GPUs through libnvidia-ml (the driver's, or the gpufleet
//! stand-in) with nvml-wrapper.
//!
//! ```text
//! libnvidia-ml.so.1 ──(nvml-wrapper, loaded once)──► NvmlSource ──► GpuInventory / NodeSample
//!        └── event set (Xid, ECC) ─────────────────────────────────► GpuEvent
//! ```
//!
//! Every NVML value passes through a pure conversion function below (bytes → MiB, mW → W, field
//! values → counters), each unit-tested without a driver. A call that fails becomes `None` plus an
//! entry in `missing`; only initialisation and the device count are fatal.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use nvml_wrapper::struct_wrappers::device::{FieldValueSample, MemoryInfo, ProcessInfo};
use nvml_wrapper::structs::device::FieldId;

use crate::reading::{
    BYTES_PER_MIB, ComputeCapability, ComputeProcess, DriverInfo, EccCounts, EventKind, GpuEvent,
    GpuInventory, GpuSample, MigMode, NodeSample, NvLinkPeer, RemappedRows, ThrottleReasons,
    unix_millis_now,
};
use crate::source::GpuSource;
use crate::{Error, Result};

/// The library the driver installs and the agent loads unless told otherwise.
pub const DEFAULT_NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// NVML field id: PCIe replay counter.
pub const FIELD_PCIE_REPLAY_COUNTER: u32 = 94;
/// NVML field id: rows remapped for correctable errors.
pub const FIELD_REMAPPED_CORRECTABLE: u32 = 142;
/// NVML field id: rows remapped for uncorrectable errors.
pub const FIELD_REMAPPED_UNCORRECTABLE: u32 = 143;
/// NVML field id: a remap is pending until the next reset.
pub const FIELD_REMAPPED_PENDING: u32 = 144;
/// NVML field id: a remap failed.
pub const FIELD_REMAPPED_FAILURE: u32 = 145;

/// The event types the agent listens for, when the GPU supports them.
fn wanted_events() -> EventTypes {
    EventTypes::CRITICAL_XID_ERROR
        | EventTypes::DOUBLE_BIT_ECC_ERROR
        | EventTypes::SINGLE_BIT_ECC_ERROR
}

/// A GPU source backed by NVML, initialised once per process.
pub struct NvmlSource {
    nvml: &'static Nvml,
    library: String,
    events: Option<EventSet<'static>>,
    event_setup_error: Option<String>,
    /// Slow-changing readings per GPU index, re-read every [`SLOW_READING_REFRESH`].
    slow: BTreeMap<u32, SlowReadings>,
}

/// How often readings that change slowly but cost much to read are refreshed.
///
/// Measured on an H200 (driver 580.159.04, `gpufleet agent bench --call-costs 200`, saved in
/// `agent/testdata/h200-agent-bench.txt`): `total_energy_consumption` takes ≈ 3.9 ms per call
/// and `mig_mode` ≈ 0.14 ms, against ≈ 0.2 ms for everything else of a sample together. Read at
/// 1 Hz on 8 GPUs they alone would cost ≈ 3% of a core, over the agent's 1% budget. The energy
/// counter feeds a 30 s dcgm-style series and MIG mode changes only with a GPU reset, so both
/// are refreshed every 30 s and reused in between (never reported as 0 or absent meanwhile).
pub const SLOW_READING_REFRESH: Duration = Duration::from_secs(30);

/// The cached slow readings of one GPU.
#[derive(Debug, Clone)]
struct SlowReadings {
    read_at: std::time::Instant,
    total_energy_millijoules: Option<u64>,
    mig_mode: Option<MigMode>,
    missing: BTreeMap<String, String>,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NvmlSource")
            .field("library", &self.library)
            .field("events", &self.events.is_some())
            .field("event_setup_error", &self.event_setup_error)
            .finish()
    }
}

impl NvmlSource {
    /// Loads NVML from `library` (default [`DEFAULT_NVML_LIBRARY`], found by the dynamic linker)
    /// and registers for Xid and ECC events on every GPU that supports them.
    ///
    /// NVML stays initialised for the rest of the process: NVIDIA asks for one initialisation
    /// per process, and the event set borrows it. A failure names the library and how to point
    /// the agent at another.
    pub fn open(library: Option<&OsStr>) -> Result<Self> {
        let library_name = library
            .map(|path| path.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_NVML_LIBRARY.to_owned());
        let mut builder = Nvml::builder();
        if let Some(path) = library {
            builder.lib_path(path);
        }
        let nvml = builder.init().map_err(|source| Error::InitNvml {
            library: library_name.clone(),
            source,
        })?;
        let nvml: &'static Nvml = Box::leak(Box::new(nvml));
        let mut source = Self {
            nvml,
            library: library_name,
            events: None,
            event_setup_error: None,
            slow: BTreeMap::new(),
        };
        source.register_events();
        Ok(source)
    }

    /// The library this source loaded.
    pub fn library(&self) -> &str {
        &self.library
    }

    /// Why events could not be set up, if they could not.
    pub fn event_setup_error(&self) -> Option<&str> {
        self.event_setup_error.as_deref()
    }

    /// Registers every GPU that supports them for Xid/ECC events in one event set. NVML frees
    /// the set when a registration fails, so a failing GPU is skipped and the set rebuilt.
    fn register_events(&mut self) {
        let count = match self.nvml.device_count() {
            Ok(count) => count,
            Err(error) => {
                self.event_setup_error = Some(describe(&error));
                return;
            }
        };
        let mut skipped: Vec<u32> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        'rebuild: loop {
            let mut set = match self.nvml.create_event_set() {
                Ok(set) => set,
                Err(error) => {
                    self.event_setup_error =
                        Some(format!("create event set: {}", describe(&error)));
                    return;
                }
            };
            let mut registered = 0_u32;
            for index in 0..count {
                if skipped.contains(&index) {
                    continue;
                }
                let Ok(device) = self.nvml.device_by_index(index) else {
                    skipped.push(index);
                    continue;
                };
                let supported = match device.supported_event_types() {
                    Ok(supported) => supported,
                    Err(error) => {
                        failures.push(format!("gpu {index}: {}", describe(&error)));
                        skipped.push(index);
                        continue;
                    }
                };
                let events = supported & wanted_events();
                if events.is_empty() {
                    skipped.push(index);
                    continue;
                }
                match device.register_events(events, set) {
                    Ok(kept) => {
                        set = kept;
                        registered += 1;
                    }
                    Err(error) => {
                        failures.push(format!("gpu {index}: {}", describe(&error.error)));
                        skipped.push(index);
                        continue 'rebuild;
                    }
                }
            }
            if registered > 0 {
                self.events = Some(set);
            }
            if !failures.is_empty() {
                self.event_setup_error = Some(failures.join("; "));
            } else if registered == 0 {
                self.event_setup_error = Some("no GPU supports Xid or ECC events".to_owned());
            }
            return;
        }
    }

    fn device_count(&self) -> Result<u32> {
        self.nvml.device_count().map_err(Error::CountDevices)
    }
}

/// Records a failed reading under `name` and turns it into `None`.
fn read<T>(
    missing: &mut BTreeMap<String, String>,
    name: &str,
    result: std::result::Result<T, NvmlError>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            missing.insert(name.to_owned(), describe(&error));
            None
        }
    }
}

/// How a failed NVML call is recorded: the error's name (stable, e.g. `NotSupported`,
/// `GpuLost`) and its message.
pub fn describe(error: &NvmlError) -> String {
    format!("{error:?}: {error}")
}

/// Bytes to whole MiB (rounded down, as dcgm-exporter does).
pub fn mib_from_bytes(bytes: u64) -> u64 {
    bytes / BYTES_PER_MIB
}

/// NVML's milliwatts to watts.
pub fn watts_from_milliwatts(milliwatts: u32) -> f64 {
    f64::from(milliwatts) / 1000.0
}

/// Framebuffer figures in MiB: (total, used, free, reserved).
pub fn memory_mib(info: &MemoryInfo) -> (u64, u64, u64, u64) {
    (
        mib_from_bytes(info.total),
        mib_from_bytes(info.used),
        mib_from_bytes(info.free),
        mib_from_bytes(info.reserved),
    )
}

/// NVML's MIG mode integers (1 = enabled) as booleans.
pub fn mig_mode_from(mode: &nvml_wrapper::structs::device::MigMode) -> MigMode {
    MigMode {
        current: mode.current == 1,
        pending: mode.pending == 1,
    }
}

/// A compute process with its memory in MiB; memory NVML cannot account stays `None`.
pub fn process_from(info: &ProcessInfo) -> ComputeProcess {
    ComputeProcess {
        pid: info.pid,
        used_memory_mib: match info.used_gpu_memory {
            UsedGpuMemory::Used(bytes) => Some(mib_from_bytes(bytes)),
            UsedGpuMemory::Unavailable => None,
        },
    }
}

/// A field value as an unsigned counter; a negative or fractional value is an error.
pub fn counter_from_sample_value(value: &SampleValue) -> std::result::Result<u64, String> {
    match *value {
        SampleValue::U32(value) => Ok(u64::from(value)),
        SampleValue::U64(value) => Ok(value),
        SampleValue::I64(value) => {
            u64::try_from(value).map_err(|_| format!("negative counter {value}"))
        }
        SampleValue::F64(value) => {
            if value >= 0.0 && value.fract() == 0.0 && value < 1.8e19 {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "checked above: a non-negative whole number below u64::MAX"
                )]
                Ok(value as u64)
            } else {
                Err(format!("not a counter: {value}"))
            }
        }
    }
}

/// The outcome of one requested field value, keyed by field id.
pub type FieldResults = BTreeMap<u32, std::result::Result<u64, String>>;

/// Collects `field_values_for`' answer into counters keyed by field id.
pub fn field_results(
    samples: Vec<std::result::Result<FieldValueSample, NvmlError>>,
    requested: &[u32],
) -> FieldResults {
    let mut results = FieldResults::new();
    for (position, sample) in samples.into_iter().enumerate() {
        match sample {
            Ok(sample) => {
                let value = sample
                    .value
                    .map_err(|error| describe(&error))
                    .and_then(|value| counter_from_sample_value(&value));
                results.insert(sample.field.0, value);
            }
            Err(error) => {
                if let Some(id) = requested.get(position) {
                    results.insert(*id, Err(describe(&error)));
                }
            }
        }
    }
    results
}

/// Remapped-row state from field values 142–145; absent or failed fields stay `None` and are
/// recorded in `missing`.
pub fn remapped_rows_from_fields(
    fields: &FieldResults,
    missing: &mut BTreeMap<String, String>,
) -> RemappedRows {
    let mut counter = |id: u32, name: &str| match fields.get(&id) {
        Some(Ok(value)) => Some(*value),
        Some(Err(error)) => {
            missing.insert(name.to_owned(), error.clone());
            None
        }
        None => {
            missing.insert(name.to_owned(), format!("field {id} not returned"));
            None
        }
    };
    let correctable = counter(FIELD_REMAPPED_CORRECTABLE, "remapped_rows.correctable");
    let uncorrectable = counter(FIELD_REMAPPED_UNCORRECTABLE, "remapped_rows.uncorrectable");
    let pending = counter(FIELD_REMAPPED_PENDING, "remapped_rows.pending").map(|value| value != 0);
    let failure = counter(FIELD_REMAPPED_FAILURE, "remapped_rows.failure").map(|value| value != 0);
    RemappedRows {
        correctable,
        uncorrectable,
        pending,
        failure,
    }
}

/// What an NVML event means to the agent.
pub fn event_kind_from(event_type: EventTypes, event_data: Option<u64>) -> EventKind {
    if event_type.contains(EventTypes::CRITICAL_XID_ERROR)
        && let Some(code) = event_data
    {
        return EventKind::Xid { code };
    }
    if event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
        EventKind::DoubleBitEcc
    } else if event_type.contains(EventTypes::SINGLE_BIT_ECC_ERROR) {
        EventKind::SingleBitEcc
    } else {
        EventKind::Other {
            bits: event_type.bits(),
        }
    }
}

/// The Xid number NVML attached to an event, when it is known.
pub fn xid_code(data: Option<XidError>) -> Option<u64> {
    match data {
        Some(XidError::Value(code)) => Some(code),
        Some(XidError::Unknown) | None => None,
    }
}

/// Names of event types, for inventory.
pub fn event_type_names(types: EventTypes) -> Vec<String> {
    let known = [
        (EventTypes::CRITICAL_XID_ERROR, "critical_xid"),
        (EventTypes::DOUBLE_BIT_ECC_ERROR, "double_bit_ecc"),
        (EventTypes::SINGLE_BIT_ECC_ERROR, "single_bit_ecc"),
        (EventTypes::PSTATE_CHANGE, "pstate_change"),
        (EventTypes::CLOCK_CHANGE, "clock_change"),
        (EventTypes::POWER_SOURCE_CHANGE, "power_source_change"),
        (EventTypes::MIG_CONFIG_CHANGE, "mig_config_change"),
    ];
    known
        .iter()
        .filter(|(bit, _)| types.contains(*bit))
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// Links NVML can number on one GPU (`NVML_NVLINK_MAX_LINKS`: 18 on Hopper and Blackwell).
pub const NVLINK_MAX_LINKS: u32 = 18;

/// What one link's state query said, for [`nvlinks_from_states`].
#[derive(Debug)]
pub enum LinkState {
    /// The link is up; its remote as read (or why it could not be).
    Active(std::result::Result<NvLinkPeer, String>),
    /// The link exists but is down.
    Inactive,
    /// NVML answered this error.
    Failed(NvmlError),
}

/// A GPU's active links from the per-link answers, in link order.
///
/// `NotSupported` from every link means the GPU has no NVLink (an L40S, a PCIe H100 without
/// bridges): that is the answer, not a failure of one link. `InvalidArg` marks links past the
/// GPU's last one. A remote that could not be read is recorded in `missing` and left out.
pub fn nvlinks_from_states(
    states: Vec<LinkState>,
    missing: &mut BTreeMap<String, String>,
) -> std::result::Result<Vec<NvLinkPeer>, NvmlError> {
    let mut peers = Vec::new();
    let mut supported = false;
    for (link, state) in (0_u32..).zip(states) {
        match state {
            LinkState::Active(Ok(peer)) => {
                supported = true;
                peers.push(peer);
            }
            LinkState::Active(Err(error)) => {
                supported = true;
                missing.insert(format!("nvlink.{link}.remote"), error);
            }
            LinkState::Inactive => supported = true,
            LinkState::Failed(NvmlError::NotSupported | NvmlError::InvalidArg) => {}
            LinkState::Failed(error) => return Err(error),
        }
    }
    if supported {
        Ok(peers)
    } else {
        Err(NvmlError::NotSupported)
    }
}

/// Reads every NVLink of `device`: its state and, for an active one, the remote's PCI ids.
fn nvlinks_of(
    device: &nvml_wrapper::Device<'_>,
    missing: &mut BTreeMap<String, String>,
) -> std::result::Result<Vec<NvLinkPeer>, NvmlError> {
    let mut states = Vec::new();
    for link in 0..NVLINK_MAX_LINKS {
        let wrapper = device.link_wrapper_for(link);
        let state = match wrapper.is_active() {
            Ok(true) => LinkState::Active(
                wrapper
                    .remote_pci_info()
                    .map(|remote| NvLinkPeer {
                        link,
                        remote_pci_bus_id: Some(remote.bus_id),
                        remote_pci_device_id: Some(remote.pci_device_id),
                    })
                    .map_err(|error| describe(&error)),
            ),
            Ok(false) => LinkState::Inactive,
            // Past the GPU's last link: no need to ask for the rest.
            Err(NvmlError::InvalidArg) => break,
            Err(error) => LinkState::Failed(error),
        };
        states.push(state);
    }
    nvlinks_from_states(states, missing)
}

impl NvmlSource {
    /// Mean wall time of each NVML call the sampler makes, over `repeats` calls on GPU
    /// `index`: tells which readings dominate the agent's CPU budget on a real driver.
    pub fn call_costs(&self, index: u32, repeats: u32) -> Result<BTreeMap<String, Duration>> {
        fn time<T>(repeats: u32, mut call: impl FnMut() -> T) -> Duration {
            let started = std::time::Instant::now();
            for _ in 0..repeats {
                std::hint::black_box(call());
            }
            started.elapsed() / repeats.max(1)
        }
        let device = self
            .nvml
            .device_by_index(index)
            .map_err(|source| Error::OpenDevice { index, source })?;
        let fields: Vec<FieldId> = [
            FIELD_PCIE_REPLAY_COUNTER,
            FIELD_REMAPPED_CORRECTABLE,
            FIELD_REMAPPED_UNCORRECTABLE,
            FIELD_REMAPPED_PENDING,
            FIELD_REMAPPED_FAILURE,
        ]
        .iter()
        .map(|id| FieldId(*id))
        .collect();
        let mut costs = BTreeMap::new();
        let mut record = |name: &str, cost: Duration| {
            costs.insert(name.to_owned(), cost);
        };
        record("device_count", time(repeats, || self.nvml.device_count()));
        record(
            "device_by_index",
            time(repeats, || self.nvml.device_by_index(index).is_ok()),
        );
        record("memory_info", time(repeats, || device.memory_info()));
        record(
            "utilization_rates",
            time(repeats, || device.utilization_rates()),
        );
        record(
            "temperature",
            time(repeats, || device.temperature(TemperatureSensor::Gpu)),
        );
        record("power_usage", time(repeats, || device.power_usage()));
        record(
            "enforced_power_limit",
            time(repeats, || device.enforced_power_limit()),
        );
        record(
            "total_energy_consumption",
            time(repeats, || device.total_energy_consumption()),
        );
        record(
            "clock_info_sm",
            time(repeats, || device.clock_info(Clock::SM)),
        );
        record(
            "clock_info_memory",
            time(repeats, || device.clock_info(Clock::Memory)),
        );
        record(
            "current_throttle_reasons",
            time(repeats, || device.current_throttle_reasons()),
        );
        record(
            "total_ecc_errors_x4",
            time(repeats, || {
                (
                    device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
                    device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
                    device.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate),
                    device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate),
                )
            }),
        );
        record(
            "field_values_x5",
            time(repeats, || device.field_values_for(&fields).is_ok()),
        );
        record("mig_mode", time(repeats, || device.mig_mode()));
        record(
            "running_compute_processes",
            time(repeats, || device.running_compute_processes()),
        );
        Ok(costs)
    }
}

impl GpuSource for NvmlSource {
    fn driver(&self) -> DriverInfo {
        DriverInfo {
            driver_version: self.nvml.sys_driver_version().ok(),
            nvml_version: self.nvml.sys_nvml_version().ok(),
            cuda_driver_version: self.nvml.sys_cuda_driver_version().ok(),
        }
    }

    fn inventory(&mut self) -> Result<Vec<GpuInventory>> {
        let count = self.device_count()?;
        let mut inventory = Vec::new();
        for index in 0..count {
            let mut gpu = GpuInventory {
                index,
                ..GpuInventory::default()
            };
            let missing = &mut gpu.missing;
            let device = match self.nvml.device_by_index(index) {
                Ok(device) => device,
                Err(error) => {
                    missing.insert("device".to_owned(), describe(&error));
                    inventory.push(gpu);
                    continue;
                }
            };
            gpu.uuid = read(missing, "uuid", device.uuid());
            gpu.name = read(missing, "name", device.name());
            gpu.pci_bus_id = read(missing, "pci_bus_id", device.pci_info()).map(|pci| pci.bus_id);
            gpu.minor_number = read(missing, "minor_number", device.minor_number());
            gpu.memory_total_mib =
                read(missing, "memory", device.memory_info()).map(|info| memory_mib(&info).0);
            gpu.architecture =
                read(missing, "architecture", device.architecture()).map(|arch| arch.to_string());
            gpu.compute_capability = read(
                missing,
                "compute_capability",
                device.cuda_compute_capability(),
            )
            .map(|capability| ComputeCapability {
                major: capability.major,
                minor: capability.minor,
            });
            gpu.power_limit_default_watts = read(
                missing,
                "power_limit_default",
                device.power_management_limit_default(),
            )
            .map(watts_from_milliwatts);
            gpu.max_sm_clock_mhz = read(missing, "max_sm_clock", device.max_clock_info(Clock::SM));
            gpu.numa_node = read(missing, "numa_node", device.numa_node_id());
            gpu.ecc_enabled = read(missing, "ecc_mode", device.is_ecc_enabled())
                .map(|mode| mode.currently_enabled);
            gpu.mig_mode =
                read(missing, "mig_mode", device.mig_mode()).map(|mode| mig_mode_from(&mode));
            gpu.supported_events =
                read(missing, "supported_events", device.supported_event_types())
                    .map(event_type_names);
            let nvlinks = nvlinks_of(&device, missing);
            gpu.nvlinks = read(missing, "nvlinks", nvlinks);
            inventory.push(gpu);
        }
        Ok(inventory)
    }

    fn sample(&mut self) -> Result<NodeSample> {
        let count = self.device_count()?;
        let at_unix_ms = unix_millis_now();
        let mut gpus = Vec::new();
        for index in 0..count {
            let mut gpu = GpuSample::absent(index);
            let missing = &mut gpu.missing;
            let device = match self.nvml.device_by_index(index) {
                Ok(device) => device,
                Err(error) => {
                    missing.insert("device".to_owned(), describe(&error));
                    gpus.push(gpu);
                    continue;
                }
            };
            if let Some(info) = read(missing, "memory", device.memory_info()) {
                let (total, used, free, reserved) = memory_mib(&info);
                gpu.memory_total_mib = Some(total);
                gpu.memory_used_mib = Some(used);
                gpu.memory_free_mib = Some(free);
                gpu.memory_reserved_mib = Some(reserved);
            }
            if let Some(rates) = read(missing, "utilization", device.utilization_rates()) {
                gpu.gpu_utilization_percent = Some(rates.gpu);
                gpu.memory_utilization_percent = Some(rates.memory);
            }
            gpu.temperature_celsius = read(
                missing,
                "temperature",
                device.temperature(TemperatureSensor::Gpu),
            );
            gpu.power_usage_watts =
                read(missing, "power_usage", device.power_usage()).map(watts_from_milliwatts);
            gpu.power_limit_watts = read(missing, "power_limit", device.enforced_power_limit())
                .map(watts_from_milliwatts);
            let stale = self
                .slow
                .get(&index)
                .is_none_or(|slow| slow.read_at.elapsed() >= SLOW_READING_REFRESH);
            if stale {
                let mut slow_missing = BTreeMap::new();
                let total_energy_millijoules = read(
                    &mut slow_missing,
                    "total_energy",
                    device.total_energy_consumption(),
                );
                let mig_mode = read(&mut slow_missing, "mig_mode", device.mig_mode())
                    .map(|mode| mig_mode_from(&mode));
                self.slow.insert(
                    index,
                    SlowReadings {
                        read_at: std::time::Instant::now(),
                        total_energy_millijoules,
                        mig_mode,
                        missing: slow_missing,
                    },
                );
            }
            if let Some(slow) = self.slow.get(&index) {
                gpu.total_energy_millijoules = slow.total_energy_millijoules;
                gpu.mig_mode = slow.mig_mode;
                missing.extend(slow.missing.clone());
            }
            gpu.sm_clock_mhz = read(missing, "sm_clock", device.clock_info(Clock::SM));
            gpu.memory_clock_mhz = read(missing, "memory_clock", device.clock_info(Clock::Memory));
            gpu.throttle_reasons = read(
                missing,
                "throttle_reasons",
                device.current_throttle_reasons(),
            )
            .map(|reasons| ThrottleReasons(reasons.bits()));
            gpu.ecc = EccCounts {
                volatile_corrected: read(
                    missing,
                    "ecc.volatile_corrected",
                    device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
                ),
                volatile_uncorrected: read(
                    missing,
                    "ecc.volatile_uncorrected",
                    device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
                ),
                aggregate_corrected: read(
                    missing,
                    "ecc.aggregate_corrected",
                    device.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate),
                ),
                aggregate_uncorrected: read(
                    missing,
                    "ecc.aggregate_uncorrected",
                    device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate),
                ),
            };
            let requested = [
                FIELD_PCIE_REPLAY_COUNTER,
                FIELD_REMAPPED_CORRECTABLE,
                FIELD_REMAPPED_UNCORRECTABLE,
                FIELD_REMAPPED_PENDING,
                FIELD_REMAPPED_FAILURE,
            ];
            let ids: Vec<FieldId> = requested.iter().map(|id| FieldId(*id)).collect();
            let fields = match device.field_values_for(&ids) {
                Ok(samples) => field_results(samples, &requested),
                Err(error) => requested
                    .iter()
                    .map(|id| (*id, Err(describe(&error))))
                    .collect(),
            };
            gpu.remapped_rows = remapped_rows_from_fields(&fields, missing);
            gpu.pcie_replay_counter = match fields.get(&FIELD_PCIE_REPLAY_COUNTER) {
                Some(Ok(value)) => Some(*value),
                Some(Err(error)) => {
                    // Older drivers lack the field but answer the dedicated call.
                    match device.pcie_replay_counter() {
                        Ok(value) => Some(u64::from(value)),
                        Err(_) => {
                            missing.insert("pcie_replay_counter".to_owned(), error.clone());
                            None
                        }
                    }
                }
                None => read(missing, "pcie_replay_counter", device.pcie_replay_counter())
                    .map(u64::from),
            };
            gpu.processes = read(missing, "processes", device.running_compute_processes())
                .map(|processes| processes.iter().map(process_from).collect());
            gpus.push(gpu);
        }
        Ok(NodeSample { at_unix_ms, gpus })
    }

    fn wait_for_events(&mut self, timeout: Duration) -> Result<Vec<GpuEvent>> {
        let Some(set) = &self.events else {
            std::thread::sleep(timeout);
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        let mut wait_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        loop {
            match set.wait(wait_ms) {
                Ok(data) => {
                    events.push(GpuEvent {
                        gpu_index: data.device.index().ok(),
                        kind: event_kind_from(data.event_type, xid_code(data.event_data)),
                        at_unix_ms: unix_millis_now(),
                    });
                    // Drain whatever else is queued without waiting again.
                    wait_ms = 0;
                }
                Err(NvmlError::Timeout) => return Ok(events),
                Err(error) if !events.is_empty() => {
                    // Keep what arrived; the next call reports the error if it persists.
                    let _ = error;
                    return Ok(events);
                }
                Err(error) => return Err(Error::WaitForEvents(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_whole_mebibytes() {
        assert_eq!(mib_from_bytes(81_559 * BYTES_PER_MIB + 1), 81_559);
        assert_eq!(mib_from_bytes(BYTES_PER_MIB - 1), 0);
    }

    #[test]
    fn milliwatts_become_watts() {
        assert!((watts_from_milliwatts(699_512) - 699.512).abs() < 1e-9);
    }

    #[test]
    fn memory_info_converts_every_figure() {
        let info = MemoryInfo {
            free: 80 * 1024 * BYTES_PER_MIB,
            reserved: 512 * BYTES_PER_MIB,
            total: 81_559 * BYTES_PER_MIB,
            used: 1_127 * BYTES_PER_MIB,
            version: 2,
        };
        assert_eq!(memory_mib(&info), (81_559, 1_127, 81_920, 512));
    }

    #[test]
    fn mig_mode_reads_nvml_enable_constant() {
        let mode = nvml_wrapper::structs::device::MigMode {
            current: 1,
            pending: 0,
        };
        assert_eq!(
            mig_mode_from(&mode),
            MigMode {
                current: true,
                pending: false
            }
        );
    }

    #[test]
    fn process_memory_unavailable_is_absent_not_zero() {
        let unavailable = ProcessInfo {
            pid: 42,
            used_gpu_memory: UsedGpuMemory::Unavailable,
            gpu_instance_id: None,
            compute_instance_id: None,
        };
        assert_eq!(process_from(&unavailable).used_memory_mib, None);
        let used = ProcessInfo {
            used_gpu_memory: UsedGpuMemory::Used(2048 * BYTES_PER_MIB),
            ..unavailable
        };
        assert_eq!(process_from(&used).used_memory_mib, Some(2048));
    }

    #[test]
    fn sample_values_become_counters_or_errors() {
        assert_eq!(counter_from_sample_value(&SampleValue::U32(7)), Ok(7));
        assert_eq!(
            counter_from_sample_value(&SampleValue::U64(1 << 40)),
            Ok(1 << 40)
        );
        assert_eq!(counter_from_sample_value(&SampleValue::I64(3)), Ok(3));
        assert!(counter_from_sample_value(&SampleValue::I64(-1)).is_err());
        assert_eq!(counter_from_sample_value(&SampleValue::F64(12.0)), Ok(12));
        assert!(counter_from_sample_value(&SampleValue::F64(0.5)).is_err());
    }

    #[test]
    fn remapped_rows_keep_failed_fields_absent() {
        let mut fields = FieldResults::new();
        fields.insert(FIELD_REMAPPED_CORRECTABLE, Ok(3));
        fields.insert(FIELD_REMAPPED_UNCORRECTABLE, Err("NotSupported".to_owned()));
        fields.insert(FIELD_REMAPPED_PENDING, Ok(0));
        fields.insert(FIELD_REMAPPED_FAILURE, Ok(1));
        let mut missing = BTreeMap::new();
        let rows = remapped_rows_from_fields(&fields, &mut missing);
        assert_eq!(
            rows,
            RemappedRows {
                correctable: Some(3),
                uncorrectable: None,
                pending: Some(false),
                failure: Some(true),
            }
        );
        assert_eq!(
            missing
                .get("remapped_rows.uncorrectable")
                .map(String::as_str),
            Some("NotSupported")
        );
    }

    #[test]
    fn events_map_to_domain_kinds() {
        assert_eq!(
            event_kind_from(EventTypes::CRITICAL_XID_ERROR, Some(79)),
            EventKind::Xid { code: 79 }
        );
        assert_eq!(
            event_kind_from(EventTypes::DOUBLE_BIT_ECC_ERROR, None),
            EventKind::DoubleBitEcc
        );
        assert_eq!(
            event_kind_from(EventTypes::SINGLE_BIT_ECC_ERROR, None),
            EventKind::SingleBitEcc
        );
        assert_eq!(
            event_kind_from(EventTypes::PSTATE_CHANGE, None),
            EventKind::Other {
                bits: EventTypes::PSTATE_CHANGE.bits()
            }
        );
        assert_eq!(xid_code(Some(XidError::Value(48))), Some(48));
        assert_eq!(xid_code(Some(XidError::Unknown)), None);
        assert_eq!(
            event_type_names(EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR),
            vec!["critical_xid", "double_bit_ecc"]
        );
    }

    #[test]
    fn nvlink_states_tell_no_nvlink_from_a_failed_link() {
        let peer = |link| NvLinkPeer {
            link,
            remote_pci_bus_id: Some("00000000:05:00.0".to_owned()),
            remote_pci_device_id: Some(0x22a3_10de),
        };
        let mut missing = BTreeMap::new();
        // An L40S: every link NotSupported → no NVLink (absent), not an empty list.
        let none = nvlinks_from_states(
            (0..18)
                .map(|_| LinkState::Failed(NvmlError::NotSupported))
                .collect(),
            &mut missing,
        );
        assert!(matches!(none, Err(NvmlError::NotSupported)));
        // Up, down and unreadable links: the active ones with a known remote are kept.
        let links = nvlinks_from_states(
            vec![
                LinkState::Active(Ok(peer(0))),
                LinkState::Inactive,
                LinkState::Active(Err("Unknown: ?".to_owned())),
                LinkState::Active(Ok(peer(3))),
            ],
            &mut missing,
        );
        assert_eq!(links.ok(), Some(vec![peer(0), peer(3)]));
        assert_eq!(
            missing.get("nvlink.2.remote").map(String::as_str),
            Some("Unknown: ?")
        );
        // Any other error fails the reading as a whole.
        let failed = nvlinks_from_states(
            vec![
                LinkState::Active(Ok(peer(0))),
                LinkState::Failed(NvmlError::GpuLost),
            ],
            &mut missing,
        );
        assert!(matches!(failed, Err(NvmlError::GpuLost)));
    }

    #[test]
    fn missing_library_error_names_it_and_the_fix() {
        let error = NvmlSource::open(Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("/nonexistent/libnvidia-ml.so.1"), "{error}");
        assert!(error.contains("--nvml-lib"), "{error}");
    }
}
