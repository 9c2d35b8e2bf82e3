//! Built-in generators, so the simulator and the benchmarks run with no input files: a
//! heterogeneous GPU fleet with plausible telemetry, and a deployment-shaped workload.
//!
//! Both are pure functions of a [`SyntheticSpec`] (a seeded SplitMix64 stream), so a spec
//! string reproduces the same fleet and workload everywhere.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::fleet::{
    ComputeCapability, FleetSnapshot, GpuHealth, GpuSnapshot, HOSTNAME_LABEL, NodeSnapshot,
};
use crate::request::{GpuRequest, MemoryNeed, ReplicaRequest, TopologySpread};
use crate::{Error, Result};

/// Label of the zone a synthetic node is in (four zones).
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The most nodes a synthetic fleet may have: ten times the largest fleets of the field, and
/// checked before anything is allocated.
pub const MAX_SYNTHETIC_NODES: u32 = 100_000;
/// The most pods a synthetic workload may have.
pub const MAX_SYNTHETIC_PODS: u32 = 10_000_000;

/// What to generate, read from `nodes=1000,pods=5000,mix=inference,seed=7,telemetry=on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Nodes in the fleet.
    pub nodes: u32,
    /// GPUs per node (1–64).
    pub gpus_per_node: u32,
    /// Replicas in the workload; `None` = one per GPU.
    pub pods: Option<u32>,
    /// The kind of workload.
    pub mix: MixPreset,
    /// Seed of the generator.
    pub seed: u64,
    /// Whether nodes report telemetry (observed free memory, temperature, …); off, only requests
    /// are accounted.
    pub telemetry: bool,
}

/// The built-in workload shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixPreset {
    /// LLM serving: small shared replicas (fixed memory), single-GPU models, and 2/4/8-GPU
    /// tensor-parallel replicas (the 8-GPU ones on H100 only).
    Inference,
    /// GPU sharing as in multi-tenant clusters: many fractional shares of varied size with
    /// memory proportional to the share, plus whole-GPU jobs.
    Sharing,
}

impl FromStr for SyntheticSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let invalid = |problem: String| Error::InvalidSynthetic {
            spec: spec.to_owned(),
            problem,
        };
        let mut result = SyntheticSpec {
            nodes: 100,
            gpus_per_node: 8,
            pods: None,
            mix: MixPreset::Inference,
            seed: 1,
            telemetry: true,
        };
        let mut telemetry_given = false;
        for part in spec
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let Some((key, value)) = part.split_once('=') else {
                return Err(invalid(format!(
                    "`{part}` is not key=value; write e.g. nodes=1000,pods=5000,mix=inference"
                )));
            };
            let number = |value: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| invalid(format!("`{key}` must be a whole number, got `{value}`")))
            };
            match key {
                "nodes" => {
                    result.nodes = u32::try_from(number(value)?)
                        .ok()
                        .filter(|nodes| (1..=MAX_SYNTHETIC_NODES).contains(nodes))
                        .ok_or_else(|| {
                            invalid(format!("`nodes` must be 1–{MAX_SYNTHETIC_NODES}"))
                        })?;
                }
                "gpus" => {
                    result.gpus_per_node = u32::try_from(number(value)?)
                        .ok()
                        .filter(|gpus| (1..=64).contains(gpus))
                        .ok_or_else(|| invalid("`gpus` (per node) must be 1–64".to_owned()))?;
                }
                "pods" => {
                    result.pods = Some(
                        u32::try_from(number(value)?)
                            .ok()
                            .filter(|pods| *pods <= MAX_SYNTHETIC_PODS)
                            .ok_or_else(|| {
                                invalid(format!("`pods` must be at most {MAX_SYNTHETIC_PODS}"))
                            })?,
                    );
                }
                "seed" => result.seed = number(value)?,
                "mix" => {
                    result.mix = match value {
                        "inference" => MixPreset::Inference,
                        "sharing" => MixPreset::Sharing,
                        other => {
                            return Err(invalid(format!(
                                "unknown mix `{other}`; use inference or sharing"
                            )));
                        }
                    };
                }
                "telemetry" => {
                    telemetry_given = true;
                    result.telemetry = match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        other => {
                            return Err(invalid(format!("telemetry is on or off, got `{other}`")));
                        }
                    };
                }
                other => {
                    return Err(invalid(format!(
                        "unknown key `{other}`; use nodes, gpus, pods, mix, seed, telemetry"
                    )));
                }
            }
        }
        if !telemetry_given && result.mix == MixPreset::Sharing {
            // Shares with memory proportional to compute fill a GPU's memory exactly, which
            // driver reservations seen by telemetry would never allow.
            result.telemetry = false;
        }
        Ok(result)
    }
}

/// SplitMix64: tiny, seedable, and the same on every platform.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Uniform in [low, high].
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// An index drawn by `weights`.
    fn pick(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut target = self.unit() * total;
        for (position, weight) in weights.iter().enumerate() {
            if target < *weight {
                return position;
            }
            target -= weight;
        }
        weights.len() - 1
    }
}

struct Model {
    product: &'static str,
    memory_mib: u64,
    capability: ComputeCapability,
    /// GPUs per NVLink group; `None` = PCIe only.
    nvlink_group_size: Option<u32>,
    share: f64,
}

const MODELS: [Model; 3] = [
    Model {
        product: "NVIDIA-H100-80GB-HBM3",
        memory_mib: 81_559,
        capability: ComputeCapability { major: 9, minor: 0 },
        nvlink_group_size: Some(8),
        share: 0.6,
    },
    Model {
        product: "NVIDIA-A100-PCIE-40GB",
        memory_mib: 40_960,
        capability: ComputeCapability { major: 8, minor: 0 },
        nvlink_group_size: Some(2),
        share: 0.25,
    },
    Model {
        product: "NVIDIA-L40S",
        memory_mib: 46_068,
        capability: ComputeCapability { major: 8, minor: 9 },
        nvlink_group_size: None,
        share: 0.15,
    },
];

/// A heterogeneous fleet: 60% H100 (one NVLink domain per node), 25% A100 PCIe (NVLink pairs),
/// 15% L40S (PCIe), in four zones. With telemetry: a driver reservation on every GPU, foreign
/// processes on ~3% of GPUs, some hot, throttling or power-limited GPUs, 0.5% Degraded and
/// 0.2% Unhealthy.
#[must_use]
pub fn synthetic_fleet(spec: &SyntheticSpec) -> FleetSnapshot {
    let mut random = Random(spec.seed ^ 0xF1EE_7000);
    let weights: Vec<f64> = MODELS.iter().map(|model| model.share).collect();
    let observed_at_ms = 1_700_000_000_000;
    let nodes = (0..spec.nodes)
        .map(|node| {
            let model = &MODELS[random.pick(&weights)];
            let name = format!("gpu-node-{node:05}");
            let mut labels = BTreeMap::new();
            labels.insert(HOSTNAME_LABEL.to_owned(), name.clone());
            labels.insert(
                ZONE_LABEL.to_owned(),
                format!("zone-{}", ["a", "b", "c", "d"][node as usize % 4]),
            );
            labels.insert(
                "nvidia.com/gpu.product".to_owned(),
                model.product.to_owned(),
            );
            let gpus = (0..spec.gpus_per_node)
                .map(|index| synthetic_gpu(&mut random, spec, model, &name, index))
                .collect();
            NodeSnapshot {
                name,
                labels,
                ready: true,
                heartbeat_fresh: true,
                cpu_milli: Some(224_000),
                memory_mib: Some(2_000_000),
                telemetry_observed_at_ms: spec.telemetry.then_some(observed_at_ms),
                gpus,
            }
        })
        .collect();
    FleetSnapshot {
        nodes,
        placements: Vec::new(),
    }
}

fn synthetic_gpu(
    random: &mut Random,
    spec: &SyntheticSpec,
    model: &Model,
    node: &str,
    index: u32,
) -> GpuSnapshot {
    let roll = random.unit();
    let health = if roll < 0.002 {
        GpuHealth::Unhealthy
    } else if roll < 0.007 {
        GpuHealth::Degraded
    } else {
        GpuHealth::Healthy
    };
    let foreign_mib = if random.unit() < 0.03 {
        random.between(2_000, 20_000)
    } else {
        0
    };
    let telemetry = spec.telemetry;
    GpuSnapshot {
        index,
        uuid: format!("GPU-{node}-{index:02}"),
        product: model.product.to_owned(),
        memory_mib: model.memory_mib,
        compute_capability: Some(model.capability),
        observed_free_mib: telemetry.then(|| model.memory_mib.saturating_sub(600 + foreign_mib)),
        utilisation_percent: telemetry.then(|| {
            if foreign_mib > 0 {
                random.between(10, 60) as u32
            } else {
                0
            }
        }),
        temperature_celsius: telemetry.then(|| {
            if random.unit() < 0.01 {
                88
            } else {
                random.between(35, 70) as u32
            }
        }),
        power_headroom_watts: telemetry.then(|| {
            if random.unit() < 0.01 {
                10
            } else {
                random.between(80, 400) as u32
            }
        }),
        throttling: telemetry && random.unit() < 0.005,
        health,
        nvlink_group: model.nvlink_group_size.map(|size| index / size),
        numa_node: Some(u32::from(index >= spec.gpus_per_node / 2)),
    }
}

struct Shape {
    gpu: GpuRequest,
    allowed_products: &'static [&'static str],
    weight: f64,
}

fn shapes(preset: MixPreset) -> Vec<Shape> {
    let fraction = |milli, memory| GpuRequest::Fraction { milli, memory };
    let whole = |count, memory| GpuRequest::Whole { count, memory };
    let mib = MemoryNeed::Mib;
    let share = MemoryNeed::ShareOfCapacity;
    let shape = |gpu, weight| Shape {
        gpu,
        allowed_products: &[],
        weight,
    };
    match preset {
        MixPreset::Inference => vec![
            shape(fraction(100, mib(7_000)), 0.25),
            shape(fraction(250, mib(18_000)), 0.20),
            shape(fraction(500, mib(36_000)), 0.15),
            shape(whole(1, mib(30_000)), 0.25),
            shape(whole(2, mib(35_000)), 0.08),
            shape(whole(4, mib(38_000)), 0.05),
            Shape {
                gpu: whole(8, mib(60_000)),
                allowed_products: &["NVIDIA-H100-80GB-HBM3"],
                weight: 0.02,
            },
        ],
        MixPreset::Sharing => vec![
            shape(fraction(100, share), 0.10),
            shape(fraction(200, share), 0.08),
            shape(fraction(250, share), 0.10),
            shape(fraction(300, share), 0.06),
            shape(fraction(500, share), 0.12),
            shape(fraction(700, share), 0.04),
            shape(whole(1, mib(16_000)), 0.38),
            shape(whole(2, mib(16_000)), 0.06),
            shape(whole(4, mib(16_000)), 0.04),
            shape(whole(8, mib(16_000)), 0.02),
        ],
    }
}

/// A workload of deployments (1–8 replicas of one shape each), in arrival order: 20% with
/// hostname anti-affinity, 10% spread over zones (max skew 1), 20% at most 2 per node.
#[must_use]
pub fn synthetic_workload(spec: &SyntheticSpec) -> Vec<ReplicaRequest> {
    let mut random = Random(spec.seed ^ 0x0B5E_55ED);
    let shapes = shapes(spec.mix);
    let weights: Vec<f64> = shapes.iter().map(|shape| shape.weight).collect();
    let total = spec.pods.map_or(
        u64::from(spec.nodes) * u64::from(spec.gpus_per_node),
        u64::from,
    );
    let mut requests = Vec::new();
    let mut deployment = 0_u64;
    while (requests.len() as u64) < total {
        let shape = &shapes[random.pick(&weights)];
        let group = format!("deployment-{deployment:05}");
        deployment += 1;
        let replicas = random.between(1, 8).min(total - requests.len() as u64);
        let constraint = random.unit();
        let gpus = u64::from(shape.gpu.gpu_count());
        for replica in 0..replicas {
            let mut request =
                ReplicaRequest::new(format!("{group}-{replica}"), group.clone(), shape.gpu);
            request.allowed_products = shape
                .allowed_products
                .iter()
                .map(|product| (*product).to_owned())
                .collect();
            request.cpu_milli = 4_000 * gpus;
            request.memory_mib = 32_000 * gpus;
            if constraint < 0.2 {
                request.anti_affinity_keys = vec![HOSTNAME_LABEL.to_owned()];
            } else if constraint < 0.3 {
                request.topology_spread = vec![TopologySpread {
                    key: ZONE_LABEL.to_owned(),
                    max_skew: 1,
                }];
            } else if constraint < 0.5 {
                request.max_replicas_per_node = Some(2);
            }
            requests.push(request);
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_string_reproduces_the_same_fleet_and_workload() -> Result<()> {
        let spec: SyntheticSpec = "nodes=20,pods=50,seed=9".parse()?;
        assert_eq!(synthetic_fleet(&spec), synthetic_fleet(&spec));
        assert_eq!(synthetic_workload(&spec), synthetic_workload(&spec));
        assert_eq!(synthetic_fleet(&spec).nodes.len(), 20);
        assert_eq!(synthetic_workload(&spec).len(), 50);
        Ok(())
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        let cases = [
            ("nodes", "key=value"),
            ("nodes=x", "whole number"),
            ("mix=training", "inference or sharing"),
            ("colour=blue", "unknown key"),
            ("gpus=0", "1–64"),
            // Hardening finding 5: sizes without a bound ended in a capacity-overflow panic.
            ("nodes=4000000000", "1–100000"),
            ("pods=4000000000", "at most 10000000"),
        ];
        for (spec, fix) in cases {
            match spec.parse::<SyntheticSpec>() {
                Err(Error::InvalidSynthetic { problem, .. }) => {
                    assert!(problem.contains(fix), "{spec}: {problem}");
                }
                other => panic!("{spec} was accepted or failed otherwise: {other:?}"),
            }
        }
    }
}
