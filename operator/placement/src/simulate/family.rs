//! The workload families of the FGD paper, derived from a trace.
//!
//! The paper evaluates its default openb trace and families that emphasise one kind of task:
//! more GPU-sharing pods (`gpushareXX`: XX% of the GPU requests come from sharing pods), more
//! multi-GPU pods (`multigpuXX`), pods constrained to GPU models (`gpuspecXX`) and CPU-only pods
//! (`cpuXXX`: XXX/10 % of the tasks by count). The artifact's family files say they were
//! "sampled from the default one, emphasizing certain types of workloads", without the
//! procedure; this is ours, seeded, so every family is reproducible from the default trace:
//!
//! - `gpushare`, `multigpu`, `cpu`: the trace's pods are split into the emphasised kind and the
//!   rest (CPU-only pods kept apart, at their own count, for the GPU families); the same number
//!   of pods is drawn with replacement from each part so that the emphasised kind's share of
//!   GPU requests (of tasks, for `cpu`) is the one asked for;
//! - `gpuspec`: GPU pods are drawn at random and constrained to one GPU model each (a model of
//!   the fleet that has nodes with enough GPUs for the pod, drawn by its share of the fleet's
//!   GPUs) until the constrained pods make the share of GPU requests asked for.

use std::fmt;
use std::str::FromStr;

use crate::fleet::NodeSnapshot;
use crate::request::{GpuRequest, ReplicaRequest};
use crate::{Error, Result};

/// A workload family and the share it emphasises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// `gpushare:X`: a share X of the GPU requests from GPU-sharing pods.
    GpuShare(f64),
    /// `multigpu:X`: a share X of the GPU requests from multi-GPU pods.
    MultiGpu(f64),
    /// `gpuspec:X`: a share X of the GPU requests from pods constrained to a GPU model.
    GpuSpec(f64),
    /// `cpu:X`: a share X of the tasks CPU-only.
    Cpu(f64),
}

impl FromStr for Family {
    type Err = Error;

    /// Reads `gpushare:0.8`, `multigpu:0.5`, `gpuspec:0.33`, `cpu:0.25`, or the paper's file
    /// names `gpushare80`, `multigpu50`, `gpuspec33`, `cpu250`.
    fn from_str(text: &str) -> Result<Self> {
        let invalid = || Error::InvalidSimulation {
            problem: format!(
                "workload family `{text}`: write gpushare:0.8, multigpu:0.5, gpuspec:0.33 or cpu:0.25 \
                 (or the paper's names gpushare80, multigpu50, gpuspec33, cpu250)"
            ),
        };
        let split = |name: &str| -> Option<(f64, bool)> {
            let rest = text.strip_prefix(name)?;
            if let Some(share) = rest.strip_prefix(':') {
                return Some((share.parse().ok()?, false));
            }
            let digits: f64 = rest.parse().ok()?;
            Some((digits, true))
        };
        let family = if let Some((value, named)) = split("gpushare") {
            Family::GpuShare(if named { value / 100.0 } else { value })
        } else if let Some((value, named)) = split("multigpu") {
            Family::MultiGpu(if named { value / 100.0 } else { value })
        } else if let Some((value, named)) = split("gpuspec") {
            Family::GpuSpec(if named { value / 100.0 } else { value })
        } else if let Some((value, named)) = split("cpu") {
            Family::Cpu(if named { value / 1000.0 } else { value })
        } else {
            return Err(invalid());
        };
        let share = family.share();
        if !(share.is_finite() && (0.0..=1.0).contains(&share)) {
            return Err(invalid());
        }
        Ok(family)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, scale) = match self {
            Family::GpuShare(_) => ("gpushare", 100.0),
            Family::MultiGpu(_) => ("multigpu", 100.0),
            Family::GpuSpec(_) => ("gpuspec", 100.0),
            Family::Cpu(_) => ("cpu", 1000.0),
        };
        write!(formatter, "{name}{:03.0}", self.share() * scale)
    }
}

impl Family {
    /// The emphasised share.
    #[must_use]
    pub fn share(self) -> f64 {
        match self {
            Family::GpuShare(share)
            | Family::MultiGpu(share)
            | Family::GpuSpec(share)
            | Family::Cpu(share) => share,
        }
    }
}

/// SplitMix64, for the seeded draws.
fn draw(state: &mut u64, below: usize) -> usize {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut value = *state;
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^= value >> 31;
    (value % below.max(1) as u64) as usize
}

/// Mean GPU demand of some pods, thousandths.
fn mean_demand(pods: &[&ReplicaRequest]) -> f64 {
    pods.iter()
        .map(|pod| pod.gpu.total_milli() as f64)
        .sum::<f64>()
        / pods.len().max(1) as f64
}

/// `count` pods drawn with replacement from `pool`, renamed `<name>-<family>-<i>` so every
/// derived pod is unique.
fn sample(
    pool: &[&ReplicaRequest],
    count: usize,
    random: &mut u64,
    tag: &str,
    numbering: &mut usize,
) -> Vec<ReplicaRequest> {
    (0..count)
        .filter_map(|_| {
            let pod = pool.get(draw(random, pool.len()))?;
            *numbering += 1;
            let mut copy = (*pod).clone();
            copy.name = format!("{}-{tag}-{numbering}", pod.name);
            copy.group = copy.name.clone();
            Some(copy)
        })
        .collect()
}

/// The workload of `family`, derived from `workload` with `seed`, as many pods as it has;
/// `nodes` are the fleet's (for `gpuspec`'s models).
///
/// # Errors
/// [`Error::InvalidSimulation`] when the workload lacks the pods the family needs.
pub fn derive(
    workload: &[ReplicaRequest],
    nodes: &[NodeSnapshot],
    family: Family,
    seed: u64,
) -> Result<Vec<ReplicaRequest>> {
    let mut random = seed ^ 0xA076_1D64_78BD_642F;
    let mut numbering = 0;
    let tag = family.to_string();
    let cpu_only: Vec<&ReplicaRequest> = workload
        .iter()
        .filter(|pod| pod.gpu == GpuRequest::NoGpu)
        .collect();
    let gpu_pods: Vec<&ReplicaRequest> = workload
        .iter()
        .filter(|pod| pod.gpu != GpuRequest::NoGpu)
        .collect();
    let missing = |kind: &str| Error::InvalidSimulation {
        problem: format!("workload family {tag}: the workload has no {kind} to emphasise"),
    };
    let share = family.share();
    let mut derived = Vec::with_capacity(workload.len());
    match family {
        Family::GpuShare(_) | Family::MultiGpu(_) => {
            let emphasised = |pod: &&ReplicaRequest| match family {
                Family::GpuShare(_) => matches!(pod.gpu, GpuRequest::Fraction { .. }),
                _ => pod.gpu.gpu_count() > 1,
            };
            let (chosen, rest): (Vec<&ReplicaRequest>, Vec<&ReplicaRequest>) =
                gpu_pods.iter().copied().partition(emphasised);
            if chosen.is_empty() && share > 0.0 {
                return Err(missing(if matches!(family, Family::GpuShare(_)) {
                    "GPU-sharing pods"
                } else {
                    "multi-GPU pods"
                }));
            }
            // n·d_a / (n·d_a + (N − n)·d_b) = share  ⇒  n = share·N·d_b / (d_a(1 − share) + share·d_b)
            let total = gpu_pods.len() as f64;
            let (demand_chosen, demand_rest) = (mean_demand(&chosen), mean_demand(&rest));
            let count = if rest.is_empty() || share >= 1.0 {
                gpu_pods.len()
            } else {
                (share * total * demand_rest
                    / (demand_chosen * (1.0 - share) + share * demand_rest))
                    .round() as usize
            }
            .min(gpu_pods.len());
            derived.extend(sample(&chosen, count, &mut random, &tag, &mut numbering));
            derived.extend(sample(
                &rest,
                gpu_pods.len() - count,
                &mut random,
                &tag,
                &mut numbering,
            ));
            derived.extend(sample(
                &cpu_only,
                cpu_only.len(),
                &mut random,
                &tag,
                &mut numbering,
            ));
        }
        Family::Cpu(_) => {
            if cpu_only.is_empty() && share > 0.0 {
                return Err(missing("CPU-only pods"));
            }
            let count = (share * workload.len() as f64).round() as usize;
            derived.extend(sample(&cpu_only, count, &mut random, &tag, &mut numbering));
            derived.extend(sample(
                &gpu_pods,
                workload.len() - count.min(workload.len()),
                &mut random,
                &tag,
                &mut numbering,
            ));
        }
        Family::GpuSpec(_) => {
            // The fleet's models with their GPU count and the largest node of each.
            let mut models: Vec<(String, u64, usize)> = Vec::new();
            for node in nodes {
                for gpu in &node.gpus {
                    match models
                        .iter_mut()
                        .find(|(model, _, _)| *model == gpu.product)
                    {
                        Some((_, gpus, largest)) => {
                            *gpus += 1;
                            *largest = (*largest).max(node.gpus.len());
                        }
                        None => models.push((gpu.product.clone(), 1, node.gpus.len())),
                    }
                }
            }
            derived = workload.to_vec();
            let demand: f64 = derived.iter().map(|pod| pod.gpu.total_milli() as f64).sum();
            let mut constrained = 0.0;
            let mut candidates: Vec<usize> = (0..derived.len())
                .filter(|&position| {
                    derived[position].gpu != GpuRequest::NoGpu
                        && derived[position].allowed_products.is_empty()
                })
                .collect();
            while constrained < share * demand && !candidates.is_empty() {
                let position = candidates.swap_remove(draw(&mut random, candidates.len()));
                let pod = &mut derived[position];
                let count = pod.gpu.gpu_count() as usize;
                let fitting: Vec<&(String, u64, usize)> = models
                    .iter()
                    .filter(|(_, _, largest)| *largest >= count)
                    .collect();
                let weight: u64 = fitting.iter().map(|(_, gpus, _)| gpus).sum();
                if weight == 0 {
                    continue;
                }
                let mut pick =
                    draw(&mut random, usize::try_from(weight).unwrap_or(usize::MAX)) as u64;
                let model = fitting
                    .iter()
                    .find(|(_, gpus, _)| {
                        if pick < *gpus {
                            return true;
                        }
                        pick -= gpus;
                        false
                    })
                    .map(|(model, _, _)| model.clone());
                if let Some(model) = model {
                    pod.allowed_products = vec![model];
                    constrained += pod.gpu.total_milli() as f64;
                }
            }
            for pod in &mut derived {
                pod.name = format!("{}-{tag}", pod.name);
                pod.group = pod.name.clone();
            }
        }
    }
    Ok(derived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::MemoryNeed;

    fn workload() -> Vec<ReplicaRequest> {
        let fraction = GpuRequest::Fraction {
            milli: 500,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let whole = |count| GpuRequest::Whole {
            count,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let mut pods = Vec::new();
        for index in 0..400 {
            let gpu = match index % 4 {
                0 => fraction,
                1 => whole(1),
                2 => whole(2),
                _ => GpuRequest::NoGpu,
            };
            pods.push(ReplicaRequest::new(
                format!("p{index}"),
                format!("p{index}"),
                gpu,
            ));
        }
        pods
    }

    fn gpu_share(pods: &[ReplicaRequest], kind: impl Fn(&ReplicaRequest) -> bool) -> f64 {
        let total: f64 = pods.iter().map(|pod| pod.gpu.total_milli() as f64).sum();
        let of: f64 = pods
            .iter()
            .filter(|pod| kind(pod))
            .map(|pod| pod.gpu.total_milli() as f64)
            .sum();
        of / total
    }

    #[test]
    fn families_read_as_shares_and_by_the_papers_names() -> Result<()> {
        assert_eq!("gpushare80".parse::<Family>()?, Family::GpuShare(0.8));
        assert_eq!("cpu250".parse::<Family>()?, Family::Cpu(0.25));
        assert_eq!("multigpu:0.5".parse::<Family>()?, Family::MultiGpu(0.5));
        assert_eq!(Family::GpuSpec(0.33).to_string(), "gpuspec033");
        assert!("gpushare:1.5".parse::<Family>().is_err());
        assert!("sharing".parse::<Family>().is_err());
        Ok(())
    }

    #[test]
    fn each_family_reaches_its_share_with_as_many_pods() -> Result<()> {
        let pods = workload();
        let sharing = derive(&pods, &[], Family::GpuShare(0.6), 1)?;
        assert_eq!(sharing.len(), pods.len());
        let share = gpu_share(&sharing, |pod| {
            matches!(pod.gpu, GpuRequest::Fraction { .. })
        });
        assert!((share - 0.6).abs() < 0.03, "{share}");
        let multi = derive(&pods, &[], Family::MultiGpu(0.5), 1)?;
        let share = gpu_share(&multi, |pod| pod.gpu.gpu_count() > 1);
        assert!((share - 0.5).abs() < 0.03, "{share}");
        let cpu = derive(&pods, &[], Family::Cpu(0.4), 1)?;
        let cpu_only = cpu
            .iter()
            .filter(|pod| pod.gpu == GpuRequest::NoGpu)
            .count();
        assert_eq!(cpu_only, 160);
        // Same seed, same family.
        assert_eq!(derive(&pods, &[], Family::GpuShare(0.6), 1)?, sharing);
        Ok(())
    }
}
