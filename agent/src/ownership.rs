//! Who owns the memory on a GPU: which Pod each GPU process runs in, which Pods gpufleet placed
//! on which GPU, and from both the memory held by processes gpufleet did not place
//! (`foreignMemoryMiB`), the memory the operator has not accounted for.
//!
//! ```text
//! NVML: GPU ─► compute processes (pid, MiB)
//!                   └─► /proc/<pid>/cgroup ─► pod_uid_from_cgroup ─► ProcessOwner (Pod uid | Host | Unknown)
//! apiserver: Pods on this node ─► gpufleet.io/gpu-uuids annotation ─► GpuPlacements (GPU uuid → pod uids)
//!                                            └──────────────┬──────────────┘
//!                                     foreign_memory_mib(GPU) = Σ MiB of processes not in a Pod placed there
//! ```
//!
//! Everything here is pure except [`ProcessTable`], which reads `/proc` under a configurable
//! root (the host's `/proc` needs `hostPID: true`, or the host's `/proc` mounted elsewhere and
//! `--proc-root`); tests point it at a fake tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gpufleet_api::labels::GPU_UUIDS_ANNOTATION;
use k8s_openapi::api::core::v1::Pod;

use crate::reading::ComputeProcess;

/// Where a GPU process runs, as its cgroup says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessOwner {
    /// In the Pod with this UID.
    Pod(String),
    /// Outside any Pod (a host service, a user's shell, a container started by hand).
    Host,
    /// The process's cgroup could not be read: it exited, or the agent cannot see the host's
    /// processes. Counted as foreign: gpufleet cannot show it placed it.
    Unknown,
}

/// Whether `text` is a Pod UID: 36 characters of a UUID, or a static Pod's 32-hex-digit hash.
fn is_pod_uid(text: &str) -> bool {
    (32..=36).contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The Pod UID in one cgroup path segment at or below the kubelet's `kubepods` cgroup.
///
/// - cgroupfs driver: `pod<uid>` (`/kubepods/burstable/pod1f3c…-…/<container>`);
/// - systemd driver: `kubepods-<qos>-pod<uid with _ for ->.slice`, also under a `kubelet.slice`
///   prefix (kind) or seen as `/../..` from inside another cgroup namespace.
fn pod_uid_in_segment(segment: &str) -> Option<String> {
    if let Some(slice) = segment.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        let uid = uid.replace('_', "-");
        return is_pod_uid(&uid).then_some(uid);
    }
    let uid = segment.strip_prefix("pod")?;
    is_pod_uid(uid).then(|| uid.to_owned())
}

/// The UID of the Pod a process runs in, from its `/proc/<pid>/cgroup` text (cgroup v1: one
/// line per hierarchy; v2: the `0::` line). `None` for a process outside any Pod.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let mut below_kubepods = false;
        path.split('/').find_map(|segment| {
            below_kubepods |= segment.contains("kubepods");
            if below_kubepods {
                pod_uid_in_segment(segment)
            } else {
                None
            }
        })
    })
}

/// The processes of a (possibly fake) `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessTable {
    root: PathBuf,
}

impl ProcessTable {
    /// The process table under `root` (`/proc`, or the host's `/proc` mounted elsewhere).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where this table reads from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Who owns process `pid`.
    pub fn owner(&self, pid: u32) -> ProcessOwner {
        match std::fs::read_to_string(self.root.join(pid.to_string()).join("cgroup")) {
            Ok(text) => pod_uid_from_cgroup(&text).map_or(ProcessOwner::Host, ProcessOwner::Pod),
            Err(_) => ProcessOwner::Unknown,
        }
    }

    /// The owners of every process in `pids`.
    pub fn owners(&self, pids: impl IntoIterator<Item = u32>) -> BTreeMap<u32, ProcessOwner> {
        pids.into_iter().map(|pid| (pid, self.owner(pid))).collect()
    }
}

/// Which Pods gpufleet placed on which GPU: GPU UUID → Pod UIDs.
pub type GpuPlacements = BTreeMap<String, BTreeSet<String>>;

/// The GPU UUIDs the operator placed a Pod on (its `gpufleet.io/gpu-uuids` annotation).
pub fn placed_gpu_uuids(pod: &Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(GPU_UUIDS_ANNOTATION))
        .map(|uuids| {
            uuids
                .split(',')
                .map(str::trim)
                .filter(|uuid| !uuid.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Placements from Pod UID → the GPU UUIDs it was placed on.
pub fn placements_from(pods: &BTreeMap<String, Vec<String>>) -> GpuPlacements {
    let mut placements = GpuPlacements::new();
    for (pod, uuids) in pods {
        for uuid in uuids {
            placements
                .entry(uuid.clone())
                .or_default()
                .insert(pod.clone());
        }
    }
    placements
}

/// MiB held on GPU `uuid` by processes that do not run in a Pod gpufleet placed on that GPU
/// (processes outside any Pod, or whose owner is unknown, count as foreign).
///
/// `None` when the total is unknown: a foreign process whose memory NVML could not account.
pub fn foreign_memory_mib(
    uuid: &str,
    processes: &[ComputeProcess],
    owners: &BTreeMap<u32, ProcessOwner>,
    placements: &GpuPlacements,
) -> Option<u64> {
    let placed = placements.get(uuid);
    processes
        .iter()
        .filter(|process| {
            let placed_here = match owners.get(&process.pid) {
                Some(ProcessOwner::Pod(pod)) => placed.is_some_and(|pods| pods.contains(pod)),
                Some(ProcessOwner::Host | ProcessOwner::Unknown) | None => false,
            };
            !placed_here
        })
        .try_fold(0_u64, |total, process| {
            Some(total.saturating_add(process.used_memory_mib?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1f3c9a52-7d0e-4b8e-9a61-2c5d8e4f7a10";

    #[test]
    fn pod_uids_come_from_every_kubelet_cgroup_layout() {
        let layouts = [
            // cgroup v1, cgroupfs driver (one line per hierarchy).
            format!(
                "12:memory:/kubepods/burstable/pod{UID}/0123abcd\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/0123abcd\n"
            ),
            // cgroup v1, cgroupfs driver, Guaranteed QoS (no QoS level).
            format!("4:devices:/kubepods/pod{UID}/0123abcd\n"),
            // cgroup v1, systemd driver.
            format!(
                "5:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-0123.scope\n",
                UID.replace('-', "_")
            ),
            // cgroup v2, systemd driver.
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-0123.scope\n",
                UID.replace('-', "_")
            ),
            // cgroup v2, systemd driver, Guaranteed QoS.
            format!(
                "0::/kubepods.slice/kubepods-pod{}.slice/crio-0123.scope\n",
                UID.replace('-', "_")
            ),
            // cgroup v2, cgroupfs driver.
            format!("0::/kubepods/besteffort/pod{UID}/0123abcd\n"),
            // kind's nested kubelet, seen from another cgroup namespace.
            format!(
                "0::/../../kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-0123.scope\n",
                UID.replace('-', "_")
            ),
        ];
        for layout in layouts {
            assert_eq!(
                pod_uid_from_cgroup(&layout).as_deref(),
                Some(UID),
                "{layout}"
            );
        }
        // A static Pod's UID is its manifest's hash.
        assert_eq!(
            pod_uid_from_cgroup(
                "0::/kubepods/burstable/pod6a4a7d8d9c2e4f1b8a7c6d5e4f3a2b1c/0123\n"
            )
            .as_deref(),
            Some("6a4a7d8d9c2e4f1b8a7c6d5e4f3a2b1c")
        );
    }

    #[test]
    fn processes_outside_pods_have_no_pod_uid() {
        for text in [
            "0::/system.slice/nvidia-persistenced.service\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            // A "pod" lookalike outside the kubelet's cgroups.
            "0::/system.slice/pod1f3c9a52-7d0e-4b8e-9a61-2c5d8e4f7a10\n",
            "0::/kubepods.slice/kubepods-burstable.slice\n",
            "",
        ] {
            assert_eq!(pod_uid_from_cgroup(text), None, "{text}");
        }
    }

    /// A fake `/proc` with one process per (pid, cgroup text).
    fn fake_proc(test: &str, processes: &[(u32, &str)]) -> std::io::Result<ProcessTable> {
        let root =
            std::env::temp_dir().join(format!("gpufleet-fake-proc-{}-{test}", std::process::id()));
        for (pid, cgroup) in processes {
            let directory = root.join(pid.to_string());
            std::fs::create_dir_all(&directory)?;
            std::fs::write(directory.join("cgroup"), cgroup)?;
        }
        Ok(ProcessTable::new(root))
    }

    fn process(pid: u32, mib: Option<u64>) -> ComputeProcess {
        ComputeProcess {
            pid,
            used_memory_mib: mib,
        }
    }

    #[test]
    fn foreign_memory_is_what_no_pod_placed_on_that_gpu_holds() -> std::io::Result<()> {
        let other = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
        let table = fake_proc(
            "foreign",
            &[
                (100, &format!("0::/kubepods/burstable/pod{UID}/c1\n")),
                (200, "0::/system.slice/stray-training.service\n"),
                (300, &format!("0::/kubepods/besteffort/pod{other}/c2\n")),
            ],
        )?;
        let owners = table.owners([100, 200, 300, 400]);
        assert_eq!(owners.get(&100), Some(&ProcessOwner::Pod(UID.to_owned())));
        assert_eq!(owners.get(&200), Some(&ProcessOwner::Host));
        // Pid 400 is not in the fake /proc: exited, or invisible without hostPID.
        assert_eq!(owners.get(&400), Some(&ProcessOwner::Unknown));

        let pods = BTreeMap::from([(UID.to_owned(), vec!["GPU-a".to_owned()])]);
        let placements = placements_from(&pods);
        let processes = [
            process(100, Some(30_000)),
            process(200, Some(20_000)),
            process(300, Some(5_000)),
            process(400, Some(1_000)),
        ];
        // On GPU-a the gpufleet Pod's 30,000 MiB are accounted for; the host process, the Pod
        // gpufleet did not place, and the unknown process are foreign.
        assert_eq!(
            foreign_memory_mib("GPU-a", &processes, &owners, &placements),
            Some(26_000)
        );
        // The same gpufleet Pod on a GPU it was not placed on is foreign there.
        assert_eq!(
            foreign_memory_mib("GPU-b", &processes[..1], &owners, &placements),
            Some(30_000)
        );
        // Nothing running: zero foreign memory, a known figure.
        assert_eq!(
            foreign_memory_mib("GPU-a", &[], &owners, &placements),
            Some(0)
        );
        // A foreign process whose memory NVML cannot account makes the total unknown…
        assert_eq!(
            foreign_memory_mib("GPU-a", &[process(200, None)], &owners, &placements),
            None
        );
        // …but a gpufleet process's unknown memory does not matter.
        assert_eq!(
            foreign_memory_mib("GPU-a", &[process(100, None)], &owners, &placements),
            Some(0)
        );
        std::fs::remove_dir_all(table.root())?;
        Ok(())
    }

    #[test]
    fn placed_gpus_come_from_the_operator_annotation() -> Result<(), serde_json::Error> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "llama-0",
                "uid": UID,
                "annotations": { GPU_UUIDS_ANNOTATION: "GPU-a, GPU-b,," }
            }
        }))?;
        assert_eq!(placed_gpu_uuids(&pod), vec!["GPU-a", "GPU-b"]);
        let unplaced: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}}))?;
        assert!(placed_gpu_uuids(&unplaced).is_empty());
        let placements =
            placements_from(&BTreeMap::from([(UID.to_owned(), placed_gpu_uuids(&pod))]));
        assert!(
            placements
                .get("GPU-b")
                .is_some_and(|pods| pods.contains(UID))
        );
        Ok(())
    }
}
