//! End-to-end through the C ABI: the agent's `NvmlSource` loads the built stand-in library with
//! nvml-wrapper's `lib_path`, exactly as it loads the driver's libnvidia-ml.
//!
//! Each test copies the library into its own directory next to a `gpufleet-nvml.json`, so the
//! dynamic loader maps a separate copy with its own machine and tests run in parallel.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpufleet_agent::GpuSource;
use gpufleet_agent::nvml::NvmlSource;
use gpufleet_agent::reading::{EventKind, GpuEvent};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The stand-in cdylib cargo built for this test run (`target/<profile>/`).
fn built_library() -> Result<PathBuf, String> {
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let profile_directory = executable
        .parent()
        .and_then(Path::parent)
        .ok_or("test executable has no target directory")?;
    // `cargo test` refreshes only `deps/`; `cargo build` also copies the library up a level.
    // Take the newer, so a stale copy from an earlier build never stands in for this one.
    [
        "libgpufleet_nvml_standin.so",
        "deps/libgpufleet_nvml_standin.so",
    ]
    .iter()
    .map(|name| profile_directory.join(name))
    .filter_map(|path| {
        let modified = std::fs::metadata(&path)
            .and_then(|meta| meta.modified())
            .ok()?;
        Some((modified, path))
    })
    .max()
    .map(|(_, path)| path)
    .ok_or_else(|| {
        format!(
            "libgpufleet_nvml_standin.so not built under {}",
            profile_directory.display()
        )
    })
}

/// A private copy of the stand-in configured with `config` (JSON).
fn standin(test: &str, config: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    // Under the target's scratch directory, one per test, overwritten by the next run: a
    // directory per process in /tmp leaked a 141 MB copy per test and run until the disk filled.
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("standin-{test}"));
    std::fs::create_dir_all(&directory)?;
    let library = directory.join("libnvidia-ml.so.1");
    std::fs::copy(built_library()?, &library)?;
    std::fs::write(directory.join("gpufleet-nvml.json"), config)?;
    Ok(library)
}

fn open(library: &Path) -> Result<NvmlSource, gpufleet_agent::Error> {
    NvmlSource::open(Some(library.as_os_str()))
}

/// Waits (up to `limit`) until an event matching `wanted` arrives.
fn wait_for(
    source: &mut NvmlSource,
    limit: Duration,
    wanted: impl Fn(&GpuEvent) -> bool,
) -> Result<Option<(GpuEvent, Duration)>, gpufleet_agent::Error> {
    let started = Instant::now();
    while started.elapsed() < limit {
        for event in source.wait_for_events(Duration::from_millis(100))? {
            if wanted(&event) {
                return Ok(Some((event, started.elapsed())));
            }
        }
    }
    Ok(None)
}

#[test]
fn dgx_h100_reads_every_value_through_nvml() -> TestResult {
    let library = standin("h100", r#"{"preset": "dgx_h100", "node": "node-a"}"#)?;
    let mut source = open(&library)?;
    assert_eq!(source.event_setup_error(), None);
    let driver = source.driver();
    assert_eq!(driver.driver_version.as_deref(), Some("580.159.04"));
    assert_eq!(driver.cuda_driver_version, Some(13_000));

    let inventory = source.inventory()?;
    assert_eq!(inventory.len(), 8);
    let gpu = &inventory[7];
    assert_eq!(gpu.name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(gpu.pci_bus_id.as_deref(), Some("00000000:DB:00.0"));
    assert!(
        gpu.uuid
            .as_deref()
            .is_some_and(|uuid| uuid.starts_with("GPU-") && uuid.len() == 40)
    );
    assert_eq!(gpu.architecture.as_deref(), Some("Hopper"));
    assert_eq!(
        gpu.compute_capability.map(|c| (c.major, c.minor)),
        Some((9, 0))
    );
    assert_eq!(gpu.memory_total_mib, Some(81_559));
    assert_eq!(gpu.power_limit_default_watts, Some(700.0));
    assert_eq!(gpu.ecc_enabled, Some(true));
    // The preset has no NUMA figure: NVML says NotSupported and the reading stays absent.
    assert_eq!(gpu.numa_node, None);
    assert!(
        gpu.missing
            .get("numa_node")
            .is_some_and(|error| error.starts_with("NotSupported"))
    );

    let sample = source.sample()?;
    assert_eq!(sample.gpus.len(), 8);
    for gpu in &sample.gpus {
        assert!(
            gpu.missing.is_empty(),
            "gpu {}: {:?}",
            gpu.index,
            gpu.missing
        );
        let parts = gpu.memory_used_mib.unwrap_or(0)
            + gpu.memory_free_mib.unwrap_or(0)
            + gpu.memory_reserved_mib.unwrap_or(0);
        assert_eq!(Some(parts), gpu.memory_total_mib);
        assert_eq!(gpu.remapped_rows.failure, Some(false));
        assert_eq!(gpu.pcie_replay_counter, Some(0));
        assert!(gpu.total_energy_millijoules.is_some());
        let held: u64 = gpu
            .processes
            .iter()
            .flatten()
            .filter_map(|process| process.used_memory_mib)
            .sum();
        assert_eq!(Some(held), gpu.memory_used_mib, "gpu {}", gpu.index);
    }
    Ok(())
}

#[test]
fn xid_79_arrives_as_an_event_and_the_gpu_is_lost() -> TestResult {
    let library = standin(
        "xid",
        r#"{"preset": "dgx_h100", "faults": "xid:79@gpu3@t=300ms"}"#,
    )?;
    let mut source = open(&library)?;
    assert!(!source.sample()?.gpus[3].lost());
    let found = wait_for(&mut source, Duration::from_secs(5), |event| {
        event.kind == EventKind::Xid { code: 79 }
    })?;
    let (event, _) = found.ok_or("no Xid 79 within 5 s")?;
    assert_eq!(event.gpu_index, Some(3));
    let sample = source.sample()?;
    assert!(sample.gpus[3].lost(), "{:?}", sample.gpus[3].missing);
    assert_eq!(sample.gpus[3].memory_free_mib, None);
    assert!(!sample.gpus[2].lost());
    Ok(())
}

#[test]
fn double_bit_ecc_counts_and_raises_events() -> TestResult {
    let library = standin(
        "dbe",
        r#"{"preset": "dgx_h200", "faults": "dbe@gpu1@t=0s"}"#,
    )?;
    let mut source = open(&library)?;
    let found = wait_for(&mut source, Duration::from_secs(5), |event| {
        event.kind == EventKind::DoubleBitEcc
    })?;
    assert_eq!(found.map(|(event, _)| event.gpu_index), Some(Some(1)));
    let sample = source.sample()?;
    assert_eq!(sample.gpus[1].ecc.volatile_uncorrected, Some(1));
    assert_eq!(sample.gpus[1].remapped_rows.uncorrectable, Some(1));
    assert_eq!(sample.gpus[0].ecc.volatile_uncorrected, Some(0));
    Ok(())
}

#[test]
fn foreign_process_shows_as_less_free_memory() -> TestResult {
    let clean = standin("clean", r#"{"preset": "l40s_box", "node": "node-f"}"#)?;
    let eaten = standin(
        "foreign",
        r#"{"preset": "l40s_box", "node": "node-f", "faults": "foreign:12000@gpu1@t=0s"}"#,
    )?;
    let free = |library: &Path| -> Result<Option<u64>, gpufleet_agent::Error> {
        Ok(open(library)?.sample()?.gpus[1].memory_free_mib)
    };
    let clean_free = free(&clean)?.ok_or("no free memory read")?;
    let eaten_free = free(&eaten)?.ok_or("no free memory read")?;
    assert_eq!(eaten_free, clean_free.saturating_sub(12_000));
    Ok(())
}

#[test]
fn real_h200_fixture_replays_through_nvml() -> TestResult {
    let fixture_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/h200-load.json");
    let fixture = gpufleet_agent::fixture::Fixture::load(&fixture_path)?;
    let config = serde_json::json!({ "fixture": fixture_path }).to_string();
    let library = standin("fixture", &config)?;
    let mut source = open(&library)?;
    let inventory = source.inventory()?;
    let mut expected = fixture.inventory.clone();
    // The fixture's H200 had no NUMA figure; the stand-in says so the same way.
    expected[0].missing = inventory[0].missing.clone();
    assert_eq!(inventory, expected);
    let mut sample = source.sample()?.gpus.remove(0);
    let mut recorded = fixture.samples[0].gpus[0].clone();
    sample.total_energy_millijoules = None;
    recorded.total_energy_millijoules = None;
    assert_eq!(sample, recorded);
    Ok(())
}

#[test]
fn unusable_configuration_fails_init_with_nvml_error() -> TestResult {
    let library = standin("bad", r#"{"preset": "dgx_a100"}"#)?;
    let error = open(&library)
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(error.contains("could not initialise NVML"), "{error}");
    assert!(
        error.contains(library.to_string_lossy().as_ref()),
        "{error}"
    );
    Ok(())
}

#[test]
fn absent_library_is_a_clear_error() {
    let error = NvmlSource::open(Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")))
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("libnvidia-ml.so.1") && error.contains("--nvml-lib"),
        "{error}"
    );
}

#[test]
fn nvlink_topology_reaches_the_agent_through_nvml() -> TestResult {
    use gpufleet_agent::topology::nvlink_groups;
    use std::collections::BTreeMap;

    // An HGX baseboard: 18 links per GPU, all to NVSwitches → one group of eight.
    let library = standin("nvlink-h200", r#"{"preset": "dgx_h200", "node": "node-a"}"#)?;
    let inventory = open(&library)?.inventory()?;
    for gpu in &inventory {
        let links = gpu
            .nvlinks
            .as_ref()
            .ok_or_else(|| format!("no NVLink read on a DGX H200: {:?}", gpu.missing))?;
        assert_eq!(links.len(), 18, "gpu {}", gpu.index);
        assert!(
            links
                .iter()
                .all(|link| link.remote_pci_device_id == Some(0x22a3_10de))
        );
    }
    assert_eq!(
        nvlink_groups(&inventory),
        (0..8).map(|index| (index, 0)).collect::<BTreeMap<_, _>>()
    );

    // PCIe L40S: NVML answers NotSupported, recorded as such, and there is no group.
    let library = standin("nvlink-l40s", r#"{"preset": "l40s_box"}"#)?;
    let inventory = open(&library)?.inventory()?;
    assert!(inventory.iter().all(|gpu| {
        gpu.nvlinks.is_none()
            && gpu
                .missing
                .get("nvlinks")
                .is_some_and(|error| error.starts_with("NotSupported"))
    }));
    assert!(nvlink_groups(&inventory).is_empty());

    // The mixed box: one bridged H100 pair (12 of 18 links up), two L40S without NVLink.
    let library = standin("nvlink-mixed", r#"{"preset": "mixed"}"#)?;
    let inventory = open(&library)?.inventory()?;
    assert_eq!(
        inventory[0].nvlinks.as_ref().map(Vec::len),
        Some(12),
        "{:?}",
        inventory[0].missing
    );
    assert_eq!(
        inventory[1]
            .nvlinks
            .as_ref()
            .and_then(|links| links[0].remote_pci_bus_id.clone()),
        inventory[0].pci_bus_id
    );
    assert_eq!(nvlink_groups(&inventory), BTreeMap::from([(0, 0), (1, 0)]));

    // A fixture recorded without NVLink data (the single-GPU H200) replays as no group.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/h200-idle.json");
    let library = standin(
        "nvlink-fixture",
        &serde_json::json!({ "fixture": fixture }).to_string(),
    )?;
    let inventory = open(&library)?.inventory()?;
    assert!(!inventory.is_empty());
    assert!(inventory.iter().all(|gpu| gpu.nvlinks.is_none()));
    assert!(nvlink_groups(&inventory).is_empty());
    Ok(())
}
