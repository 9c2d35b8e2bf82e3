//! A stand-in libnvidia-ml: a shared library that exports the NVML C functions the gpufleet
//! agent calls, answering from gpufleet's machine presets, scripted faults or a replayed fixture
//! of a real machine. Loading it through `Nvml::builder().lib_path(..)` runs the agent's real
//! FFI path (nvml-wrapper → C ABI) on machines without a GPU, in CI and in end-to-end tests.
//!
//! ```text
//! agent ─ nvml-wrapper ─ dlopen(libgpufleet_nvml_standin.so) ─► exported nvml* functions
//!                                                                  │ (this file: C ABI only)
//!                      gpufleet-nvml.json beside the library  ─►  machine.rs: Config → Machine
//!                      or GPUFLEET_NVML_* environment            └► SimulatedSource / ReplaySource
//! ```
//!
//! Reads: `gpufleet-nvml.json` in the library's own directory if present (tests copy the
//! library into a temporary directory with a configuration, so several stand-ins with different
//! machines can be loaded into one process), else the environment: `GPUFLEET_NVML_PRESET`
//! (`dgx_h100`, `dgx_h200`, `hgx_b200`, `l40s_box`, `mixed`), `GPUFLEET_NVML_FAULTS` (a fault
//! script such as `xid:79@gpu3@t=5s`, or `@PATH`), `GPUFLEET_NVML_FIXTURE` (a probe's JSON) and
//! `GPUFLEET_NVML_NODE` (seeds UUIDs and workloads). Writes: nothing, except a line on standard
//! error when the configuration is unusable (NVML has no other way to say why init failed).
//!
//! nvml-wrapper 0.13 resolves every symbol lazily (`libloading` at first use; a missing one
//! fails only its own call with `FailedToLoadSymbol`), so the library exports what the agent
//! uses and nothing else. `nvmlShutdown` and `nvmlEventSetFree` must exist: nvml-wrapper calls
//! them from `Drop` without checking. Time starts at `nvmlInit`; fault times count from there.
//!
//! This is the one crate of the workspace that allows `unsafe`: a C ABI hands in raw pointers.
//! All of it is the pointer writes in this file; the logic lives in safe `machine.rs`.

mod machine;

use std::ffi::{c_char, c_int, c_uint, c_ulonglong};
use std::sync::{Mutex, MutexGuard, PoisonError};

use machine::{Code, Config, Machine};
use nvml_wrapper_sys::bindings as nvml;
use nvml_wrapper_sys::bindings::{
    nvmlDevice_t, nvmlEventData_t, nvmlEventSet_t, nvmlFieldValue_t, nvmlMemory_v2_t,
    nvmlPciInfo_t, nvmlProcessInfo_t, nvmlUtilization_t,
};

const SUCCESS: Code = nvml::nvmlReturn_enum_NVML_SUCCESS;
const UNINITIALIZED: Code = nvml::nvmlReturn_enum_NVML_ERROR_UNINITIALIZED;
const INVALID_ARGUMENT: Code = nvml::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
const NOT_SUPPORTED: Code = nvml::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
const INSUFFICIENT_SIZE: Code = nvml::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
const TIMEOUT: Code = nvml::nvmlReturn_enum_NVML_ERROR_TIMEOUT;
const UNKNOWN: Code = nvml::nvmlReturn_enum_NVML_ERROR_UNKNOWN;

const BYTES_PER_MIB: u64 = 1024 * 1024;

/// `NVML_STRUCT_VERSION(Memory, 2)`: the structure's size with the version in the top byte.
#[expect(clippy::cast_possible_truncation, reason = "the structure is 40 bytes")]
const MEMORY_V2_VERSION: c_uint = (std::mem::size_of::<nvmlMemory_v2_t>() | (2 << 24)) as c_uint;

/// The machine between the first `nvmlInit` and the matching last `nvmlShutdown`.
struct Library {
    initialisations: u32,
    machine: Option<Machine>,
}

static LIBRARY: Mutex<Library> = Mutex::new(Library {
    initialisations: 0,
    machine: None,
});

fn library() -> MutexGuard<'static, Library> {
    LIBRARY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `query` on the machine, or answers `UNINITIALIZED`.
fn with_machine(query: impl FnOnce(&mut Machine) -> Code) -> Code {
    match library().machine.as_mut() {
        Some(machine) => query(machine),
        None => UNINITIALIZED,
    }
}

/// Device handles are the GPU index plus one, never dereferenced: NVML handles are opaque.
fn handle_of(index: u32) -> nvmlDevice_t {
    std::ptr::without_provenance_mut(usize::try_from(index).unwrap_or(usize::MAX - 1) + 1)
}

fn index_of(device: nvmlDevice_t) -> Option<u32> {
    (device.addr())
        .checked_sub(1)
        .and_then(|index| u32::try_from(index).ok())
}

fn event_set_of(set: nvmlEventSet_t) -> usize {
    set.addr()
}

/// Writes `value` through `out`, or answers `INVALID_ARGUMENT` for a null pointer.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> Code {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: non-null, and the caller guarantees it is valid for writes of T.
    unsafe { out.write(value) };
    SUCCESS
}

/// Copies `text` with a terminating NUL into a C buffer of `length` bytes.
///
/// # Safety
/// `buffer` must be null or valid for writes of `length` bytes.
unsafe fn put_string(buffer: *mut c_char, length: c_uint, text: &str) -> Code {
    if buffer.is_null() {
        return INVALID_ARGUMENT;
    }
    let bytes = text.as_bytes();
    if bytes.len() + 1 > usize::try_from(length).unwrap_or(0) {
        return INSUFFICIENT_SIZE;
    }
    // SAFETY: the buffer holds `length` bytes, checked above to fit the text and its NUL.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buffer, bytes.len());
        buffer.add(bytes.len()).write(0);
    }
    SUCCESS
}

/// Answers a device query: resolves the handle, runs `read`, writes its value through `out`.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
unsafe fn answer<T>(
    device: nvmlDevice_t,
    out: *mut T,
    read: impl FnOnce(&mut Machine, u32) -> Result<T, Code>,
) -> Code {
    let Some(index) = index_of(device) else {
        return INVALID_ARGUMENT;
    };
    with_machine(|machine| {
        if index >= machine.count() {
            return INVALID_ARGUMENT;
        }
        match read(machine, index) {
            // SAFETY: forwarded from the caller.
            Ok(value) => unsafe { put(out, value) },
            Err(code) => code,
        }
    })
}

fn initialise() -> Code {
    let mut library = library();
    if library.initialisations == 0 {
        let own_path = machine::library_holding(nvmlInit_v2 as *const () as usize);
        let started =
            Config::discover(own_path.as_deref()).and_then(|config| Machine::start(&config));
        match started {
            Ok(machine) => library.machine = Some(machine),
            Err(error) => {
                eprintln!("gpufleet stand-in libnvidia-ml: cannot start: {error}");
                return UNKNOWN;
            }
        }
    }
    library.initialisations += 1;
    SUCCESS
}

/// `nvmlInit_v2`: starts the configured machine (reference-counted, as NVML is).
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> Code {
    initialise()
}

/// `nvmlInitWithFlags`: as `nvmlInit_v2`; flags are accepted and ignored.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> Code {
    initialise()
}

/// `nvmlShutdown`: the last call stops the machine.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> Code {
    let mut library = library();
    if library.initialisations == 0 {
        return UNINITIALIZED;
    }
    library.initialisations -= 1;
    if library.initialisations == 0 {
        library.machine = None;
    }
    SUCCESS
}

/// `nvmlSystemGetDriverVersion`.
///
/// # Safety
/// `version` must be valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> Code {
    with_machine(|machine| match &machine.driver().driver_version {
        // SAFETY: forwarded from the caller.
        Some(text) => unsafe { put_string(version, length, text) },
        None => NOT_SUPPORTED,
    })
}

/// `nvmlSystemGetNVMLVersion`.
///
/// # Safety
/// `version` must be valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> Code {
    with_machine(|machine| match &machine.driver().nvml_version {
        // SAFETY: forwarded from the caller.
        Some(text) => unsafe { put_string(version, length, text) },
        None => NOT_SUPPORTED,
    })
}

/// `nvmlSystemGetCudaDriverVersion_v2`.
///
/// # Safety
/// `version` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> Code {
    with_machine(|machine| match machine.driver().cuda_driver_version {
        // SAFETY: forwarded from the caller.
        Some(value) => unsafe { put(version, value) },
        None => NOT_SUPPORTED,
    })
}

/// `nvmlDeviceGetCount_v2`.
///
/// # Safety
/// `count` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> Code {
    // SAFETY: forwarded from the caller.
    with_machine(|machine| unsafe { put(count, machine.count()) })
}

/// `nvmlDeviceGetHandleByIndex_v2`.
///
/// # Safety
/// `device` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> Code {
    with_machine(|machine| {
        if index >= machine.count() {
            return INVALID_ARGUMENT;
        }
        // SAFETY: forwarded from the caller.
        unsafe { put(device, handle_of(index)) }
    })
}

/// `nvmlDeviceGetIndex`.
///
/// # Safety
/// `index` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut c_uint) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe { answer(device, index, |_, gpu| Ok(gpu)) }
}

/// Answers a string-valued inventory query.
///
/// # Safety
/// `buffer` must be valid for `length` bytes.
unsafe fn answer_string(
    device: nvmlDevice_t,
    buffer: *mut c_char,
    length: c_uint,
    name: &str,
    pick: impl FnOnce(&gpufleet_agent::reading::GpuInventory) -> Option<String>,
) -> Code {
    let Some(index) = index_of(device) else {
        return INVALID_ARGUMENT;
    };
    with_machine(|machine| match machine.fact(index, name, pick) {
        // SAFETY: forwarded from the caller.
        Ok(text) => unsafe { put_string(buffer, length, &text) },
        Err(code) => code,
    })
}

/// `nvmlDeviceGetUUID`.
///
/// # Safety
/// `uuid` must be valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe { answer_string(device, uuid, length, "uuid", |gpu| gpu.uuid.clone()) }
}

/// `nvmlDeviceGetName`.
///
/// # Safety
/// `name` must be valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe { answer_string(device, name, length, "name", |gpu| gpu.name.clone()) }
}

/// Fills a C character array with `text` (truncated to leave room for the NUL).
fn fill_chars<const N: usize>(text: &str) -> [c_char; N] {
    let mut chars = [0 as c_char; N];
    for (slot, byte) in chars.iter_mut().zip(text.bytes().take(N.saturating_sub(1))) {
        *slot = byte.cast_signed();
    }
    chars
}

/// The PCI structure NVML returns for a bus id such as `00000000:18:00.0`.
fn pci_info(bus_id: &str) -> Option<nvmlPciInfo_t> {
    let (domain, rest) = bus_id.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, _function) = rest.split_once('.')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let bus = u32::from_str_radix(bus, 16).ok()?;
    let device = u32::from_str_radix(device, 16).ok()?;
    Some(nvmlPciInfo_t {
        busIdLegacy: fill_chars(&format!("{:04x}:{bus:02x}:{device:02x}.0", domain & 0xffff)),
        domain,
        bus,
        device,
        pciDeviceId: 0,
        pciSubSystemId: 0,
        busId: fill_chars(bus_id),
    })
}

/// `nvmlDeviceGetPciInfo_v3`.
///
/// # Safety
/// `pci` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, pci, |machine, index| {
            machine.fact(index, "pci_bus_id", |gpu| {
                gpu.pci_bus_id.as_deref().and_then(pci_info)
            })
        })
    }
}

/// `nvmlDeviceGetNvLinkState`: whether a link is up.
///
/// # Safety
/// `active` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: nvmlDevice_t,
    link: c_uint,
    active: *mut c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, active, |machine, index| {
            machine
                .nvlink(index, link)
                .map(|peer| enable_state(peer.is_some()))
        })
    }
}

/// `nvmlDeviceGetNvLinkRemotePciInfo_v2`: the PCI identity of what an active link reaches (a
/// GPU of the machine or an NVSwitch); a link that is down answers `NOT_SUPPORTED`.
///
/// # Safety
/// `pci` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(
    device: nvmlDevice_t,
    link: c_uint,
    pci: *mut nvmlPciInfo_t,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, pci, |machine, index| {
            let peer = machine.nvlink(index, link)?.ok_or(NOT_SUPPORTED)?;
            let mut info = peer
                .remote_pci_bus_id
                .as_deref()
                .and_then(pci_info)
                .ok_or(UNKNOWN)?;
            info.pciDeviceId = peer.remote_pci_device_id.unwrap_or(0);
            Ok(info)
        })
    }
}

/// `nvmlDeviceGetMinorNumber`.
///
/// # Safety
/// `minor` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(
    device: nvmlDevice_t,
    minor: *mut c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, minor, |machine, index| {
            machine.fact(index, "minor_number", |gpu| gpu.minor_number)
        })
    }
}

/// NVML's architecture number for nvml-wrapper's architecture name.
fn architecture_code(name: &str) -> Option<c_uint> {
    Some(match name {
        "Kepler" => nvml::NVML_DEVICE_ARCH_KEPLER,
        "Maxwell" => nvml::NVML_DEVICE_ARCH_MAXWELL,
        "Pascal" => nvml::NVML_DEVICE_ARCH_PASCAL,
        "Volta" => nvml::NVML_DEVICE_ARCH_VOLTA,
        "Turing" => nvml::NVML_DEVICE_ARCH_TURING,
        "Ampere" => nvml::NVML_DEVICE_ARCH_AMPERE,
        "Ada" => nvml::NVML_DEVICE_ARCH_ADA,
        "Hopper" => nvml::NVML_DEVICE_ARCH_HOPPER,
        "Blackwell" => nvml::NVML_DEVICE_ARCH_BLACKWELL,
        _ => return None,
    })
}

/// `nvmlDeviceGetArchitecture`.
///
/// # Safety
/// `architecture` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(
    device: nvmlDevice_t,
    architecture: *mut c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, architecture, |machine, index| {
            machine.fact(index, "architecture", |gpu| {
                gpu.architecture.as_deref().and_then(architecture_code)
            })
        })
    }
}

/// `nvmlDeviceGetCudaComputeCapability`.
///
/// # Safety
/// `major` and `minor` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: nvmlDevice_t,
    major: *mut c_int,
    minor: *mut c_int,
) -> Code {
    let mut capability = (0, 0);
    // SAFETY: a local.
    let code = unsafe {
        answer(device, &raw mut capability, |machine, index| {
            machine.fact(index, "compute_capability", |gpu| {
                gpu.compute_capability
                    .map(|capability| (capability.major, capability.minor))
            })
        })
    };
    if code != SUCCESS {
        return code;
    }
    // SAFETY: forwarded from the caller.
    match unsafe { put(major, capability.0) } {
        SUCCESS => unsafe { put(minor, capability.1) },
        code => code,
    }
}

fn milliwatts(watts: f64) -> c_uint {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "board power in mW is positive and below 2^32"
    )]
    let value = (watts * 1000.0).round().max(0.0) as c_uint;
    value
}

/// `nvmlDeviceGetPowerManagementDefaultLimit` (mW).
///
/// # Safety
/// `limit` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementDefaultLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, limit, |machine, index| {
            machine.fact(index, "power_limit_default", |gpu| {
                gpu.power_limit_default_watts.map(milliwatts)
            })
        })
    }
}

/// `nvmlDeviceGetMaxClockInfo` (SM and graphics clocks only).
///
/// # Safety
/// `clock` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: nvmlDevice_t,
    kind: c_uint,
    clock: *mut c_uint,
) -> Code {
    if kind != nvml::nvmlClockType_enum_NVML_CLOCK_SM
        && kind != nvml::nvmlClockType_enum_NVML_CLOCK_GRAPHICS
    {
        return NOT_SUPPORTED;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, clock, |machine, index| {
            machine.fact(index, "max_sm_clock", |gpu| gpu.max_sm_clock_mhz)
        })
    }
}

/// `nvmlDeviceGetNumaNodeId`.
///
/// # Safety
/// `node` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNumaNodeId(device: nvmlDevice_t, node: *mut c_uint) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, node, |machine, index| {
            machine.fact(index, "numa_node", |gpu| gpu.numa_node)
        })
    }
}

fn enable_state(enabled: bool) -> c_uint {
    if enabled {
        nvml::nvmlEnableState_enum_NVML_FEATURE_ENABLED
    } else {
        nvml::nvmlEnableState_enum_NVML_FEATURE_DISABLED
    }
}

/// `nvmlDeviceGetEccMode`.
///
/// # Safety
/// `current` and `pending` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEccMode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Code {
    let mut enabled = false;
    // SAFETY: a local.
    let code = unsafe {
        answer(device, &raw mut enabled, |machine, index| {
            machine.fact(index, "ecc_mode", |gpu| gpu.ecc_enabled)
        })
    };
    if code != SUCCESS {
        return code;
    }
    // SAFETY: forwarded from the caller.
    match unsafe { put(current, enable_state(enabled)) } {
        SUCCESS => unsafe { put(pending, enable_state(enabled)) },
        code => code,
    }
}

/// `nvmlDeviceGetMigMode`.
///
/// # Safety
/// `current` and `pending` must be null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Code {
    let mut mode = (false, false);
    // SAFETY: a local.
    let code = unsafe {
        answer(device, &raw mut mode, |machine, index| {
            machine.reading(index, "mig_mode", |gpu| {
                gpu.mig_mode.map(|mode| (mode.current, mode.pending))
            })
        })
    };
    if code != SUCCESS {
        return code;
    }
    let as_code = |enabled: bool| {
        if enabled {
            nvml::NVML_DEVICE_MIG_ENABLE
        } else {
            nvml::NVML_DEVICE_MIG_DISABLE
        }
    };
    // SAFETY: forwarded from the caller.
    match unsafe { put(current, as_code(mode.0)) } {
        SUCCESS => unsafe { put(pending, as_code(mode.1)) },
        code => code,
    }
}

/// `nvmlDeviceGetSupportedEventTypes`.
///
/// # Safety
/// `types` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    types: *mut c_ulonglong,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, types, |machine, index| {
            machine.supported_events(index)
        })
    }
}

/// `nvmlDeviceGetMemoryInfo_v2` (bytes).
///
/// # Safety
/// `memory` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, memory, |machine, index| {
            machine.reading(index, "memory", |gpu| {
                Some(nvmlMemory_v2_t {
                    version: MEMORY_V2_VERSION,
                    total: gpu.memory_total_mib? * BYTES_PER_MIB,
                    reserved: gpu.memory_reserved_mib.unwrap_or(0) * BYTES_PER_MIB,
                    free: gpu.memory_free_mib? * BYTES_PER_MIB,
                    used: gpu.memory_used_mib? * BYTES_PER_MIB,
                })
            })
        })
    }
}

/// `nvmlDeviceGetUtilizationRates`.
///
/// # Safety
/// `utilization` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, utilization, |machine, index| {
            machine.reading(index, "utilization", |gpu| {
                Some(nvmlUtilization_t {
                    gpu: gpu.gpu_utilization_percent?,
                    memory: gpu.memory_utilization_percent?,
                })
            })
        })
    }
}

/// `nvmlDeviceGetTemperature` (GPU sensor only).
///
/// # Safety
/// `temperature` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensor: c_uint,
    temperature: *mut c_uint,
) -> Code {
    if sensor != nvml::nvmlTemperatureSensors_enum_NVML_TEMPERATURE_GPU {
        return INVALID_ARGUMENT;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, temperature, |machine, index| {
            machine.reading(index, "temperature", |gpu| gpu.temperature_celsius)
        })
    }
}

/// `nvmlDeviceGetPowerUsage` (mW).
///
/// # Safety
/// `power` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: nvmlDevice_t, power: *mut c_uint) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, power, |machine, index| {
            machine.reading(index, "power_usage", |gpu| {
                gpu.power_usage_watts.map(milliwatts)
            })
        })
    }
}

/// `nvmlDeviceGetEnforcedPowerLimit` (mW).
///
/// # Safety
/// `limit` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, limit, |machine, index| {
            machine.reading(index, "power_limit", |gpu| {
                gpu.power_limit_watts.map(milliwatts)
            })
        })
    }
}

/// `nvmlDeviceGetTotalEnergyConsumption` (mJ).
///
/// # Safety
/// `energy` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: nvmlDevice_t,
    energy: *mut c_ulonglong,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, energy, |machine, index| {
            machine.reading(index, "total_energy", |gpu| gpu.total_energy_millijoules)
        })
    }
}

/// `nvmlDeviceGetClockInfo` (SM, graphics and memory clocks).
///
/// # Safety
/// `clock` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    kind: c_uint,
    clock: *mut c_uint,
) -> Code {
    let memory = kind == nvml::nvmlClockType_enum_NVML_CLOCK_MEM;
    if !memory
        && kind != nvml::nvmlClockType_enum_NVML_CLOCK_SM
        && kind != nvml::nvmlClockType_enum_NVML_CLOCK_GRAPHICS
    {
        return NOT_SUPPORTED;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, clock, |machine, index| {
            if memory {
                machine.reading(index, "memory_clock", |gpu| gpu.memory_clock_mhz)
            } else {
                machine.reading(index, "sm_clock", |gpu| gpu.sm_clock_mhz)
            }
        })
    }
}

/// `nvmlDeviceGetCurrentClocksThrottleReasons`.
///
/// # Safety
/// `reasons` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    device: nvmlDevice_t,
    reasons: *mut c_ulonglong,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, reasons, |machine, index| {
            machine.reading(index, "throttle_reasons", |gpu| {
                gpu.throttle_reasons.map(|reasons| reasons.0)
            })
        })
    }
}

/// `nvmlDeviceGetTotalEccErrors`.
///
/// # Safety
/// `count` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: nvmlDevice_t,
    error_type: c_uint,
    counter_type: c_uint,
    count: *mut c_ulonglong,
) -> Code {
    let corrected = match error_type {
        nvml::nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_CORRECTED => true,
        nvml::nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_UNCORRECTED => false,
        _ => return INVALID_ARGUMENT,
    };
    let volatile = match counter_type {
        nvml::nvmlEccCounterType_enum_NVML_VOLATILE_ECC => true,
        nvml::nvmlEccCounterType_enum_NVML_AGGREGATE_ECC => false,
        _ => return INVALID_ARGUMENT,
    };
    let name = match (volatile, corrected) {
        (true, true) => "ecc.volatile_corrected",
        (true, false) => "ecc.volatile_uncorrected",
        (false, true) => "ecc.aggregate_corrected",
        (false, false) => "ecc.aggregate_uncorrected",
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, count, |machine, index| {
            machine.reading(index, name, |gpu| match (volatile, corrected) {
                (true, true) => gpu.ecc.volatile_corrected,
                (true, false) => gpu.ecc.volatile_uncorrected,
                (false, true) => gpu.ecc.aggregate_corrected,
                (false, false) => gpu.ecc.aggregate_uncorrected,
            })
        })
    }
}

/// `nvmlDeviceGetPcieReplayCounter`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPcieReplayCounter(
    device: nvmlDevice_t,
    value: *mut c_uint,
) -> Code {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(device, value, |machine, index| {
            machine.reading(index, "pcie_replay_counter", |gpu| {
                gpu.pcie_replay_counter
                    .map(|count| c_uint::try_from(count).unwrap_or(c_uint::MAX))
            })
        })
    }
}

/// One field value as NVML reports it, from the GPU's sample.
fn field_value(machine: &mut Machine, index: u32, field: c_uint) -> (Code, u64) {
    let value = match field {
        nvml::field_id::NVML_FI_DEV_PCIE_REPLAY_COUNTER => {
            machine.reading(index, "pcie_replay_counter", |gpu| gpu.pcie_replay_counter)
        }
        nvml::field_id::NVML_FI_DEV_REMAPPED_COR => {
            machine.reading(index, "remapped_rows.correctable", |gpu| {
                gpu.remapped_rows.correctable
            })
        }
        nvml::field_id::NVML_FI_DEV_REMAPPED_UNC => {
            machine.reading(index, "remapped_rows.uncorrectable", |gpu| {
                gpu.remapped_rows.uncorrectable
            })
        }
        nvml::field_id::NVML_FI_DEV_REMAPPED_PENDING => {
            machine.reading(index, "remapped_rows.pending", |gpu| {
                gpu.remapped_rows.pending.map(u64::from)
            })
        }
        nvml::field_id::NVML_FI_DEV_REMAPPED_FAILURE => {
            machine.reading(index, "remapped_rows.failure", |gpu| {
                gpu.remapped_rows.failure.map(u64::from)
            })
        }
        _ => Err(NOT_SUPPORTED),
    };
    match value {
        Ok(value) => (SUCCESS, value),
        Err(code) => (code, 0),
    }
}

/// `nvmlDeviceGetFieldValues`: remapped rows (142–145) and the PCIe replay counter (94); other
/// fields answer `NOT_SUPPORTED` in their own slot.
///
/// # Safety
/// `values` must be valid for reads and writes of `count` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    count: c_int,
    values: *mut nvmlFieldValue_t,
) -> Code {
    let Some(index) = index_of(device) else {
        return INVALID_ARGUMENT;
    };
    let Ok(count) = usize::try_from(count) else {
        return INVALID_ARGUMENT;
    };
    if values.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: the caller passes `count` initialised elements.
    let values = unsafe { std::slice::from_raw_parts_mut(values, count) };
    let timestamp = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_micros())
            .unwrap_or(0),
    )
    .unwrap_or(i64::MAX);
    with_machine(|machine| {
        if index >= machine.count() {
            return INVALID_ARGUMENT;
        }
        if let Err(code) = machine.sample(index) {
            return code;
        }
        for value in values.iter_mut() {
            let (code, number) = field_value(machine, index, value.fieldId);
            value.nvmlReturn = code;
            value.timestamp = timestamp;
            value.latencyUsec = 0;
            value.valueType = nvml::nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            value.value = nvml::nvmlValue_t { ullVal: number };
        }
        SUCCESS
    })
}

/// `nvmlDeviceGetComputeRunningProcesses_v3`: with too small a buffer, the count needed and
/// `INSUFFICIENT_SIZE`, as NVML answers.
///
/// # Safety
/// `count` must be valid for reads and writes; `infos` null or valid for `*count` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> Code {
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    let mut processes = Vec::new();
    // SAFETY: a local.
    let code = unsafe {
        answer(device, &raw mut processes, |machine, index| {
            machine.reading(index, "processes", |gpu| gpu.processes.clone())
        })
    };
    if code != SUCCESS {
        return code;
    }
    let needed = c_uint::try_from(processes.len()).unwrap_or(c_uint::MAX);
    // SAFETY: checked non-null; the caller guarantees validity.
    let capacity = unsafe { count.read() };
    // SAFETY: as above.
    unsafe { count.write(needed) };
    if needed == 0 {
        return SUCCESS;
    }
    if infos.is_null() || capacity < needed {
        return INSUFFICIENT_SIZE;
    }
    for (slot, process) in processes.iter().enumerate() {
        let info = nvmlProcessInfo_t {
            pid: process.pid,
            usedGpuMemory: process
                .used_memory_mib
                .map_or(c_ulonglong::MAX, |mib| mib * BYTES_PER_MIB),
            gpuInstanceId: c_uint::MAX,
            computeInstanceId: c_uint::MAX,
        };
        // SAFETY: slot < needed <= capacity elements the caller provided.
        unsafe { infos.add(slot).write(info) };
    }
    SUCCESS
}

/// `nvmlEventSetCreate`.
///
/// # Safety
/// `set` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> Code {
    with_machine(|machine| {
        let handle = machine.create_event_set();
        // SAFETY: forwarded from the caller.
        unsafe { put(set, std::ptr::without_provenance_mut(handle)) }
    })
}

/// `nvmlDeviceRegisterEvents`.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    types: c_ulonglong,
    set: nvmlEventSet_t,
) -> Code {
    let Some(index) = index_of(device) else {
        return INVALID_ARGUMENT;
    };
    with_machine(
        |machine| match machine.register(event_set_of(set), index, types) {
            Ok(()) => SUCCESS,
            Err(code) => code,
        },
    )
}

/// `nvmlEventSetFree`.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> Code {
    with_machine(|machine| match machine.free_event_set(event_set_of(set)) {
        Ok(()) => SUCCESS,
        Err(code) => code,
    })
}

/// `nvmlEventSetWait_v2`: waits up to `timeout_ms` for an event registered on `set`.
///
/// # Safety
/// `data` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> Code {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(u64::from(timeout_ms));
    loop {
        let mut found = None;
        let code = with_machine(|machine| match machine.next_event(event_set_of(set)) {
            Ok(event) => {
                found = event;
                SUCCESS
            }
            Err(code) => code,
        });
        if code != SUCCESS {
            return code;
        }
        if let Some((index, bits, xid)) = found {
            let event = nvmlEventData_t {
                device: handle_of(index),
                eventType: bits,
                eventData: xid,
                gpuInstanceId: c_uint::MAX,
                computeInstanceId: c_uint::MAX,
            };
            // SAFETY: forwarded from the caller.
            return unsafe { put(data, event) };
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return TIMEOUT;
        }
        // The lock is not held while sleeping: other threads keep reading.
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_bus_ids_parse_into_nvml_fields() {
        let info = pci_info("00000000:DB:00.0");
        assert_eq!(
            info.map(|info| (info.domain, info.bus, info.device)),
            Some((0, 0xdb, 0))
        );
        assert!(pci_info("not a bus id").is_none());
    }

    #[test]
    fn strings_need_room_for_their_terminator() {
        let mut buffer = [1 as c_char; 4];
        // SAFETY: a local buffer of 4 bytes.
        assert_eq!(
            unsafe { put_string(buffer.as_mut_ptr(), 4, "abcd") },
            INSUFFICIENT_SIZE
        );
        // SAFETY: as above.
        assert_eq!(
            unsafe { put_string(buffer.as_mut_ptr(), 4, "abc") },
            SUCCESS
        );
        assert_eq!(buffer, [97, 98, 99, 0]);
    }

    #[test]
    fn device_handles_round_trip_and_null_is_rejected() {
        assert_eq!(index_of(handle_of(7)), Some(7));
        assert_eq!(index_of(std::ptr::null_mut()), None);
        assert_eq!(
            architecture_code("Hopper"),
            Some(nvml::NVML_DEVICE_ARCH_HOPPER)
        );
        assert_eq!(milliwatts(699.512), 699_512);
    }
}
