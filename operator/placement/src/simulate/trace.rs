//! Readers for cluster traces in the CSV layout of Alibaba's GPU-sharing traces
//! (`openb_node_list`, `openb_pod_list`), turning them into a snapshot and arrival-ordered
//! replica requests.
//!
//! Node CSV columns: `sn` (node name), `cpu_milli`, `memory_mib`, `gpu` (count; `num_gpu` also
//! accepted), `model`. Pod CSV columns: `name`, `cpu_milli`, `memory_mib`, `num_gpu`,
//! `gpu_milli`, and optionally `gpu_spec` (allowed models separated by `|`, empty or absent =
//! any model), `creation_time` and `deletion_time` (absent = arrival in file order, nobody
//! leaves); `qos`, `pod_phase` and `scheduled_time` may be present and are not used. Columns
//! are found by header name, in any order, so every file of the openb family reads unmodified.
//! Fields are plain (no quoting), as in those traces.
//!
//! CPU-only pods (`num_gpu` 0) are requests with no GPU: they take CPU and host memory on the
//! GPU nodes, as they do in the FGD paper's protocol.

use std::collections::BTreeMap;

use super::Lifetime;
use crate::fleet::{ComputeCapability, GpuSnapshot, HOSTNAME_LABEL, NodeSnapshot};
use crate::request::{GpuRequest, MemoryNeed, ReplicaRequest};
use crate::{Error, Result};

/// Framebuffer size and compute capability per GPU model name, since traces name models only.
///
/// Trace pods ask for shares with memory proportional to the share, so the size matters only
/// for requests with fixed memory; unknown models get [`GpuModelTable::DEFAULT_MEMORY_MIB`] and
/// are listed in [`NodeTrace::assumed_models`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuModelTable {
    models: BTreeMap<String, (u64, Option<ComputeCapability>)>,
}

impl GpuModelTable {
    /// Memory assumed for a model the table does not know.
    pub const DEFAULT_MEMORY_MIB: u64 = 16_384;

    /// Sets (or overrides) a model's memory.
    pub fn set_memory(&mut self, model: &str, memory_mib: u64) {
        let capability = self
            .models
            .get(model)
            .and_then(|(_, capability)| *capability);
        self.models
            .insert(model.to_owned(), (memory_mib, capability));
    }

    fn lookup(&self, model: &str) -> Option<(u64, Option<ComputeCapability>)> {
        self.models.get(model).copied()
    }
}

impl Default for GpuModelTable {
    /// The models of the Alibaba traces and common data-centre GPUs.
    fn default() -> Self {
        let capability = |major, minor| Some(ComputeCapability { major, minor });
        let models = [
            ("V100M16", 16_384, capability(7, 0)),
            ("V100M32", 32_768, capability(7, 0)),
            ("P100", 16_384, capability(6, 0)),
            ("T4", 15_360, capability(7, 5)),
            ("A10", 23_028, capability(8, 6)),
            ("A100", 81_920, capability(8, 0)),
            ("H100", 81_559, capability(9, 0)),
            ("H200", 143_771, capability(9, 0)),
            ("L40S", 46_068, capability(8, 9)),
        ];
        GpuModelTable {
            models: models
                .into_iter()
                .map(|(name, memory, capability)| (name.to_owned(), (memory, capability)))
                .collect(),
        }
    }
}

/// Nodes read from a node CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTrace {
    /// GPU nodes, in file order.
    pub nodes: Vec<NodeSnapshot>,
    /// Rows with no GPU, left out.
    pub cpu_only_nodes: usize,
    /// Models whose memory was assumed (not in the table).
    pub assumed_models: Vec<String>,
}

/// Replicas read from a pod CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTrace {
    /// Pods in arrival order (creation time, then file order; file order without times),
    /// CPU-only ones included as requests with no GPU.
    pub requests: Vec<ReplicaRequest>,
    /// When each of `requests` was created and deleted; empty when the file has no times.
    pub lifetimes: Vec<Lifetime>,
    /// Of `requests`, how many ask for no GPU.
    pub cpu_only_pods: usize,
}

/// A header-indexed view of a CSV text.
struct Table<'a> {
    file: &'a str,
    columns: Vec<&'a str>,
    rows: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Table<'a> {
    fn parse(file: &'a str, text: &'a str) -> Result<Table<'a>> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(number, line)| (number + 1, line.trim_end_matches('\r')))
            .filter(|(_, line)| !line.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(Error::Csv {
                file: file.to_owned(),
                line: 1,
                column: String::new(),
                problem: "the file is empty; the first line must be the header".to_owned(),
            });
        };
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let mut rows = Vec::new();
        for (number, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != columns.len() {
                return Err(Error::Csv {
                    file: file.to_owned(),
                    line: number,
                    column: String::new(),
                    problem: format!(
                        "has {} fields but the header has {}; quoted fields are not supported, \
                         so no field may contain a comma",
                        fields.len(),
                        columns.len()
                    ),
                });
            }
            rows.push((number, fields));
        }
        Ok(Table {
            file,
            columns,
            rows,
        })
    }

    /// The position of the first of `names` in the header.
    fn column(&self, names: &[&str]) -> Result<usize> {
        names
            .iter()
            .find_map(|name| self.columns.iter().position(|column| column == name))
            .ok_or_else(|| Error::Csv {
                file: self.file.to_owned(),
                line: 1,
                column: names[0].to_owned(),
                problem: format!(
                    "the header has no `{}` column; it has: {}",
                    names.join("` or `"),
                    self.columns.join(",")
                ),
            })
    }

    fn error(&self, line: usize, column: usize, problem: String) -> Error {
        Error::Csv {
            file: self.file.to_owned(),
            line,
            column: self.columns[column].to_owned(),
            problem,
        }
    }

    fn number(&self, line: usize, fields: &[&str], column: usize, what: &str) -> Result<u64> {
        let field = fields[column];
        if field.is_empty() {
            return Ok(0);
        }
        field.parse::<u64>().map_err(|_| {
            self.error(
                line,
                column,
                format!("`{field}` is not a whole number; write {what}"),
            )
        })
    }
}

/// Reads a node CSV (`sn,cpu_milli,memory_mib,gpu,model`).
///
/// # Errors
/// [`Error::Csv`] naming the line, the column and the fix.
pub fn parse_node_csv(file: &str, text: &str, models: &GpuModelTable) -> Result<NodeTrace> {
    let table = Table::parse(file, text)?;
    let name = table.column(&["sn", "name"])?;
    let cpu = table.column(&["cpu_milli"])?;
    let memory = table.column(&["memory_mib"])?;
    let gpu = table.column(&["gpu", "num_gpu"])?;
    let model = table.column(&["model", "gpu_model"])?;
    let mut trace = NodeTrace {
        nodes: Vec::new(),
        cpu_only_nodes: 0,
        assumed_models: Vec::new(),
    };
    for (line, fields) in &table.rows {
        let line = *line;
        let node_name = fields[name];
        if node_name.is_empty() {
            return Err(table.error(line, name, "is empty; every node needs a name".to_owned()));
        }
        let gpus = table.number(line, fields, gpu, "the node's GPU count")?;
        if gpus == 0 {
            trace.cpu_only_nodes += 1;
            continue;
        }
        if gpus > 64 {
            return Err(table.error(
                line,
                gpu,
                format!("{gpus} GPUs on one node; at most 64 are supported"),
            ));
        }
        let product = fields[model];
        if product.is_empty() {
            return Err(table.error(
                line,
                model,
                "is empty on a node with GPUs; give the GPU model (e.g. V100M32)".to_owned(),
            ));
        }
        let (memory_mib, capability) = models.lookup(product).unwrap_or_else(|| {
            if !trace.assumed_models.iter().any(|known| known == product) {
                trace.assumed_models.push(product.to_owned());
            }
            (GpuModelTable::DEFAULT_MEMORY_MIB, None)
        });
        let mut labels = BTreeMap::new();
        labels.insert(HOSTNAME_LABEL.to_owned(), node_name.to_owned());
        labels.insert("nvidia.com/gpu.product".to_owned(), product.to_owned());
        trace.nodes.push(NodeSnapshot {
            name: node_name.to_owned(),
            labels,
            ready: true,
            heartbeat_fresh: true,
            cpu_milli: Some(table.number(line, fields, cpu, "allocatable CPU in millicores")?),
            memory_mib: Some(table.number(line, fields, memory, "allocatable memory in MiB")?),
            telemetry_observed_at_ms: None,
            gpus: (0..gpus as u32)
                .map(|index| GpuSnapshot {
                    index,
                    uuid: format!("GPU-{node_name}-{index}"),
                    product: product.to_owned(),
                    memory_mib,
                    compute_capability: capability,
                    observed_free_mib: None,
                    utilisation_percent: None,
                    temperature_celsius: None,
                    power_headroom_watts: None,
                    throttling: false,
                    health: crate::fleet::GpuHealth::Healthy,
                    nvlink_group: None,
                    numa_node: None,
                })
                .collect(),
        });
    }
    Ok(trace)
}

/// Reads a pod CSV (`name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,…,creation_time,…`).
///
/// One GPU with `gpu_milli` below 1000 is a fractional share; otherwise `num_gpu` whole GPUs
/// (multi-GPU pods of these traces always hold whole GPUs). Each pod is its own group. Memory
/// is proportional to the share.
///
/// # Errors
/// [`Error::Csv`] naming the line, the column and the fix.
pub fn parse_pod_csv(file: &str, text: &str) -> Result<PodTrace> {
    let table = Table::parse(file, text)?;
    let name = table.column(&["name"])?;
    let cpu = table.column(&["cpu_milli"])?;
    let memory = table.column(&["memory_mib"])?;
    let gpus = table.column(&["num_gpu"])?;
    let milli = table.column(&["gpu_milli"])?;
    let spec = table.column(&["gpu_spec"]).ok();
    let created = table.column(&["creation_time"]).ok();
    let deleted = created.and(table.column(&["deletion_time"]).ok());
    let mut arrivals = Vec::new();
    let mut cpu_only_pods = 0;
    for (line, fields) in &table.rows {
        let line = *line;
        let pod = fields[name];
        if pod.is_empty() {
            return Err(table.error(line, name, "is empty; every pod needs a name".to_owned()));
        }
        let count = table.number(line, fields, gpus, "the pod's GPU count")?;
        if count > 64 {
            return Err(table.error(
                line,
                gpus,
                format!("{count} GPUs for one pod; at most 64 fit on a node"),
            ));
        }
        let share = table.number(line, fields, milli, "the GPU share in thousandths (1–1000)")?;
        if count > 0 && (share == 0 || share > 1000) {
            return Err(table.error(
                line,
                milli,
                format!("is {share}; a pod with GPUs asks for 1–1000 thousandths per GPU"),
            ));
        }
        let gpu = if count == 0 {
            cpu_only_pods += 1;
            GpuRequest::NoGpu
        } else if count == 1 && share < 1000 {
            GpuRequest::Fraction {
                milli: share as u32,
                memory: MemoryNeed::ShareOfCapacity,
            }
        } else {
            GpuRequest::Whole {
                count: count as u32,
                memory: MemoryNeed::ShareOfCapacity,
            }
        };
        let mut request = ReplicaRequest::new(pod, pod, gpu);
        request.cpu_milli = table.number(line, fields, cpu, "the CPU request in millicores")?;
        request.memory_mib = table.number(line, fields, memory, "the memory request in MiB")?;
        request.allowed_products = spec
            .map(|spec| fields[spec])
            .unwrap_or_default()
            .split('|')
            .map(str::trim)
            .filter(|model| !model.is_empty())
            .map(str::to_owned)
            .collect();
        let creation = match created {
            Some(column) => table.number(line, fields, column, "the creation time in seconds")?,
            None => 0,
        };
        let deletion = match deleted {
            Some(column) if !fields[column].is_empty() => {
                let deletion =
                    table.number(line, fields, column, "the deletion time in seconds")?;
                if deletion < creation {
                    return Err(table.error(
                        line,
                        column,
                        format!(
                            "{deletion} is before the creation time {creation}; leave it empty \
                             for a pod still running"
                        ),
                    ));
                }
                Some(deletion)
            }
            _ => None,
        };
        let lifetime = Lifetime {
            created_s: creation,
            deleted_s: deletion,
        };
        arrivals.push((line, lifetime, request));
    }
    arrivals.sort_by_key(|(line, lifetime, _)| (lifetime.created_s, *line));
    let lifetimes = if created.is_some() {
        arrivals.iter().map(|(_, lifetime, _)| *lifetime).collect()
    } else {
        Vec::new()
    };
    Ok(PodTrace {
        requests: arrivals
            .into_iter()
            .map(|(_, _, request)| request)
            .collect(),
        lifetimes,
        cpu_only_pods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = include_str!("../../testdata/openb-style-nodes.csv");
    const PODS: &str = include_str!("../../testdata/openb-style-pods.csv");

    #[test]
    fn reads_the_sample_traces() -> Result<()> {
        let nodes = parse_node_csv("nodes.csv", NODES, &GpuModelTable::default())?;
        let pods = parse_pod_csv("pods.csv", PODS)?;
        assert!(nodes.cpu_only_nodes >= 1, "the sample has a CPU-only node");
        assert!(nodes.nodes.iter().all(|node| !node.gpus.is_empty()));
        assert!(pods.cpu_only_pods >= 1, "the sample has a CPU-only pod");
        let fractional = pods
            .requests
            .iter()
            .filter(|request| matches!(request.gpu, GpuRequest::Fraction { .. }))
            .count();
        assert!(fractional > 0 && fractional < pods.requests.len());
        assert!(
            pods.requests
                .iter()
                .any(|request| request.allowed_products.len() > 1)
        );
        Ok(())
    }

    #[test]
    fn files_without_models_or_times_read_as_any_model_in_file_order() -> Result<()> {
        // The layout of the openb family's files that omit gpu_spec and the time columns.
        let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n\
                    b,4000,8192,1,500\n\
                    a,2000,4096,0,0\n\
                    c,8000,16384,4,1000\n";
        let pods = parse_pod_csv("pods.csv", text)?;
        let names: Vec<&str> = pods.requests.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert!(pods.lifetimes.is_empty(), "no times, no timeline");
        assert!(pods.requests.iter().all(|r| r.allowed_products.is_empty()));
        assert_eq!(pods.cpu_only_pods, 1);
        assert_eq!(pods.requests[1].gpu, GpuRequest::NoGpu);
        assert_eq!(
            (pods.requests[1].cpu_milli, pods.requests[1].memory_mib),
            (2000, 4096)
        );
        Ok(())
    }

    #[test]
    fn pods_arrive_by_creation_time() -> Result<()> {
        let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,creation_time\n\
                    late,1000,1024,1,500,,20\n\
                    early,1000,1024,2,1000,T4|P100,10\n";
        let pods = parse_pod_csv("pods.csv", text)?;
        assert_eq!(pods.lifetimes[0].created_s, 10);
        let names: Vec<&str> = pods
            .requests
            .iter()
            .map(|request| request.name.as_str())
            .collect();
        assert_eq!(names, ["early", "late"]);
        assert_eq!(pods.requests[0].allowed_products, ["T4", "P100"]);
        Ok(())
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,creation_time\n\
                    ok,1000,1024,1,500,,1\n\
                    bad,1000,1024,1,half,,2\n";
        match parse_pod_csv("pods.csv", text) {
            Err(Error::Csv { line, column, .. }) => {
                assert_eq!((line, column.as_str()), (3, "gpu_milli"));
            }
            other => panic!("expected a CSV error, got {other:?}"),
        }
        let missing = "sn,cpu_milli,memory_mib,model\nn1,1000,1024,T4\n";
        match parse_node_csv("nodes.csv", missing, &GpuModelTable::default()) {
            Err(Error::Csv {
                column, problem, ..
            }) => {
                assert_eq!(column, "gpu");
                assert!(
                    problem.contains("no `gpu` or `num_gpu` column"),
                    "{problem}"
                );
            }
            other => panic!("expected a CSV error, got {other:?}"),
        }
    }
}
