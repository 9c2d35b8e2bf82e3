//! Invariants of the engine on random fleets and workloads, checked from its outputs alone
//! (the decisions), not from its internal accounting:
//!
//! - no GPU is over-committed by requested compute share or memory, nor by the memory its
//!   telemetry showed free (minus in-flight placements and headroom);
//! - per-node caps, hostname anti-affinity, zone spread, products, compute capability and NVLink
//!   groups hold;
//! - an Unhealthy GPU is never chosen;
//! - an unplaceable replica accounts for every node under exactly one reason;
//! - the same input gives the same output, whatever the order of the nodes in the snapshot.

use std::collections::BTreeMap;

use gpufleet_placement::{
    ComputeCapability, Decision, Engine, EngineConfig, ExistingPlacement, FleetSnapshot, GpuHealth,
    GpuRequest, GpuSnapshot, HOSTNAME_LABEL, MemoryNeed, NodeSnapshot, Outcome, ReplicaRequest,
    Strategy as PlacementStrategy, TopologySpread, WorkloadMix,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const OBSERVED_AT_MS: u64 = 1_000_000_000;
const PRODUCTS: [&str; 2] = ["H100", "A100"];
const GROUPS: [&str; 3] = ["alpha", "beta", "gamma"];
const ZONE: &str = "topology.kubernetes.io/zone";

fn gpu_strategy(index: u32) -> impl Strategy<Value = GpuSnapshot> {
    (
        0..2_usize,
        prop::sample::select(vec![40_000_u64, 80_000]),
        prop::option::of(0..=100_u64),
        prop::sample::select(vec![
            GpuHealth::Healthy,
            GpuHealth::Healthy,
            GpuHealth::Degraded,
            GpuHealth::Unhealthy,
        ]),
        prop::option::of(0..2_u32),
        prop::option::of(30..95_u32),
    )
        .prop_map(
            move |(product, memory_mib, free_percent, health, nvlink_group, temperature)| {
                GpuSnapshot {
                    index,
                    uuid: format!("GPU-{index}"),
                    product: PRODUCTS[product].to_owned(),
                    memory_mib,
                    compute_capability: Some(ComputeCapability {
                        major: 8 + product as u32 % 2,
                        minor: 0,
                    }),
                    observed_free_mib: free_percent.map(|percent| memory_mib * percent / 100),
                    utilisation_percent: free_percent.map(|percent| 100 - percent as u32),
                    temperature_celsius: temperature,
                    power_headroom_watts: None,
                    throttling: false,
                    health,
                    nvlink_group,
                    numa_node: Some(index % 2),
                }
            },
        )
}

fn node_strategy(position: usize) -> impl Strategy<Value = NodeSnapshot> {
    (
        (1..=8_u32).prop_flat_map(|count| (0..count).map(gpu_strategy).collect::<Vec<_>>()),
        prop::option::of(8_000..64_000_u64),
        prop::option::of(16_384..262_144_u64),
    )
        .prop_map(move |(gpus, cpu_milli, memory_mib)| {
            let name = format!("node-{position}");
            let mut labels = BTreeMap::new();
            labels.insert(HOSTNAME_LABEL.to_owned(), name.clone());
            labels.insert(ZONE.to_owned(), format!("zone-{}", position % 3));
            NodeSnapshot {
                name,
                labels,
                ready: true,
                heartbeat_fresh: true,
                cpu_milli,
                memory_mib,
                telemetry_observed_at_ms: Some(OBSERVED_AT_MS),
                gpus,
            }
        })
}

/// At most one existing placement per GPU, within its capacity: the snapshot itself is sound.
fn snapshot_strategy() -> impl Strategy<Value = FleetSnapshot> {
    (1..=5_usize)
        .prop_flat_map(|count| (0..count).map(node_strategy).collect::<Vec<_>>())
        .prop_flat_map(|nodes| {
            let slots: Vec<(String, u32, u64)> = nodes
                .iter()
                .flat_map(|node| {
                    node.gpus
                        .iter()
                        .map(|gpu| (node.name.clone(), gpu.index, gpu.memory_mib))
                })
                .collect();
            let choices = slots
                .into_iter()
                .map(|slot| {
                    prop::option::weighted(
                        0.3,
                        (1..=1000_u32, 1..=50_u64, 0..3_usize, any::<bool>()),
                    )
                    .prop_map(move |choice| (slot.clone(), choice))
                })
                .collect::<Vec<_>>();
            (Just(nodes), choices)
        })
        .prop_map(|(nodes, choices)| {
            let placements = choices
                .into_iter()
                .enumerate()
                .filter_map(|(position, ((node, index, memory), choice))| {
                    let (milli, percent, group, in_flight) = choice?;
                    Some(ExistingPlacement {
                        id: format!("existing-{position}"),
                        group: GROUPS[group].to_owned(),
                        node,
                        gpus: vec![index],
                        gpu_milli: milli,
                        gpu_memory_mib: memory * percent / 100,
                        cpu_milli: 0,
                        memory_mib: 0,
                        placed_at_ms: if in_flight { OBSERVED_AT_MS } else { 0 },
                    })
                })
                .collect();
            FleetSnapshot { nodes, placements }
        })
}

fn request_strategy(position: usize) -> impl Strategy<Value = ReplicaRequest> {
    (
        prop_oneof![
            (1..1000_u32, 1_000..50_000_u64).prop_map(|(milli, mib)| GpuRequest::Fraction {
                milli,
                memory: MemoryNeed::Mib(mib),
            }),
            (1..=4_u32, 1_000..60_000_u64).prop_map(|(count, mib)| GpuRequest::Whole {
                count,
                memory: MemoryNeed::Mib(mib),
            }),
            (1..1000_u32).prop_map(|milli| GpuRequest::Fraction {
                milli,
                memory: MemoryNeed::ShareOfCapacity,
            }),
            Just(GpuRequest::NoGpu),
        ],
        (0..24_000_u64, 0..96_000_u64),
        0..3_usize,
        prop::option::of(1..=3_u32),
        any::<bool>(),
        prop::option::of(0..2_usize),
        prop::option::of(0..4_u64),
        prop::option::of(0..2_u32),
    )
        .prop_map(
            move |(
                gpu,
                (cpu_milli, memory_mib),
                group,
                max_per_node,
                anti_affinity,
                product,
                headroom,
                skew,
            )| {
                let mut request =
                    ReplicaRequest::new(format!("replica-{position}"), GROUPS[group], gpu);
                request.cpu_milli = cpu_milli;
                request.memory_mib = memory_mib;
                request.max_replicas_per_node = max_per_node;
                if anti_affinity {
                    request.anti_affinity_keys = vec![HOSTNAME_LABEL.to_owned()];
                }
                if let Some(product) = product {
                    request.allowed_products = vec![PRODUCTS[product].to_owned()];
                    request.min_compute_capability = Some(ComputeCapability { major: 8, minor: 0 });
                }
                request.memory_headroom_mib = headroom.map(|gib| gib * 1024);
                // Spread only without product filters, so every zone counts for the skew.
                if let (Some(skew), None) = (skew, product) {
                    request.topology_spread = vec![TopologySpread {
                        key: ZONE.to_owned(),
                        max_skew: skew + 1,
                    }];
                }
                request
            },
        )
}

fn workload_strategy() -> impl Strategy<Value = Vec<ReplicaRequest>> {
    (0..=30_usize).prop_flat_map(|count| (0..count).map(request_strategy).collect::<Vec<_>>())
}

/// Every strategy, gpufleet's and the paper's.
const STRATEGIES: usize = PlacementStrategy::ALL.len() + PlacementStrategy::PAPER.len();

fn config(strategy: usize) -> EngineConfig {
    let strategy = PlacementStrategy::ALL
        .into_iter()
        .chain(PlacementStrategy::PAPER)
        .nth(strategy)
        .unwrap_or(PlacementStrategy::FragmentationAware);
    EngineConfig::new(strategy, WorkloadMix::inference_default())
}

fn run(
    snapshot: &FleetSnapshot,
    workload: &[ReplicaRequest],
    config: EngineConfig,
) -> Result<Vec<Outcome>, TestCaseError> {
    let mut engine =
        Engine::new(snapshot, config).map_err(|error| TestCaseError::fail(error.to_string()))?;
    workload
        .iter()
        .map(|request| {
            engine
                .place(request)
                .map_err(|error| TestCaseError::fail(error.to_string()))
        })
        .collect()
}

/// Everything a check needs about one GPU of the snapshot.
struct GpuFacts<'a> {
    snapshot: &'a GpuSnapshot,
    existing_milli: u32,
    existing_mib: u64,
    in_flight_mib: u64,
}

fn facts(snapshot: &FleetSnapshot) -> BTreeMap<(String, u32), GpuFacts<'_>> {
    let mut facts = BTreeMap::new();
    for node in &snapshot.nodes {
        for gpu in &node.gpus {
            facts.insert(
                (node.name.clone(), gpu.index),
                GpuFacts {
                    snapshot: gpu,
                    existing_milli: 0,
                    existing_mib: 0,
                    in_flight_mib: 0,
                },
            );
        }
    }
    let settle = config(0).telemetry_settle_ms;
    for placement in &snapshot.placements {
        for &index in &placement.gpus {
            if let Some(gpu) = facts.get_mut(&(placement.node.clone(), index)) {
                gpu.existing_milli += placement.gpu_milli;
                gpu.existing_mib += placement.gpu_memory_mib;
                if placement.placed_at_ms + settle > OBSERVED_AT_MS {
                    gpu.in_flight_mib += placement.gpu_memory_mib;
                }
            }
        }
    }
    facts
}

fn check_invariants(
    snapshot: &FleetSnapshot,
    workload: &[ReplicaRequest],
    outcomes: &[Outcome],
    default_headroom: u64,
) -> Result<(), TestCaseError> {
    let facts = facts(snapshot);
    // Per GPU: new compute, new memory, and the largest headroom any new placement asked for.
    let mut added: BTreeMap<(String, u32), (u32, u64, u64)> = BTreeMap::new();
    let mut per_node: BTreeMap<(String, String), u32> = BTreeMap::new();
    let zone_of: BTreeMap<&str, &str> = snapshot
        .nodes
        .iter()
        .map(|node| (node.name.as_str(), node.labels[ZONE].as_str()))
        .collect();
    let zones: Vec<&str> = {
        let mut zones: Vec<&str> = zone_of.values().copied().collect();
        zones.sort_unstable();
        zones.dedup();
        zones
    };
    let mut per_zone: BTreeMap<(String, &str), u32> = BTreeMap::new();
    // Per node: CPU and host memory left, from the snapshot's allocatable and placements.
    let mut host: BTreeMap<&str, (Option<i64>, Option<i64>)> = snapshot
        .nodes
        .iter()
        .map(|node| {
            let taken = |of: fn(&gpufleet_placement::ExistingPlacement) -> u64| -> i64 {
                snapshot
                    .placements
                    .iter()
                    .filter(|placement| placement.node == node.name)
                    .map(|placement| of(placement) as i64)
                    .sum()
            };
            (
                node.name.as_str(),
                (
                    node.cpu_milli
                        .map(|cpu| cpu as i64 - taken(|p| p.cpu_milli)),
                    node.memory_mib
                        .map(|memory| memory as i64 - taken(|p| p.memory_mib)),
                ),
            )
        })
        .collect();
    for placement in &snapshot.placements {
        *per_node
            .entry((placement.group.clone(), placement.node.clone()))
            .or_default() += 1;
        *per_zone
            .entry((placement.group.clone(), zone_of[placement.node.as_str()]))
            .or_default() += 1;
    }
    for (request, outcome) in workload.iter().zip(outcomes) {
        let decision = match outcome {
            Outcome::Placed(decision) => decision,
            Outcome::Unplaceable(why) => {
                // Every node is accounted for under exactly one reason.
                let counted: u32 = why.rejections.iter().map(|rejection| rejection.nodes).sum();
                prop_assert_eq!(counted, snapshot.nodes.len() as u32, "{}", why);
                continue;
            }
        };
        let Decision { node, gpus, .. } = decision;
        prop_assert_eq!(gpus.len() as u32, request.gpu.gpu_count());
        if let Some((cpu, memory)) = host.get_mut(node.as_str()) {
            for (free, need, what) in [
                (cpu, request.cpu_milli, "CPU"),
                (memory, request.memory_mib, "host memory"),
            ] {
                if let Some(free) = free {
                    *free -= need as i64;
                    prop_assert!(*free >= 0, "{} over-committed on {}", what, node);
                }
            }
        }
        let on_node = per_node
            .entry((request.group.clone(), node.clone()))
            .or_default();
        if let Some(maximum) = request.max_replicas_per_node {
            prop_assert!(*on_node < maximum, "cap {} broken on {}", maximum, node);
        }
        if !request.anti_affinity_keys.is_empty() {
            prop_assert_eq!(*on_node, 0, "anti-affinity broken on {}", node);
        }
        *on_node += 1;
        let zone = zone_of[node.as_str()];
        for spread in &request.topology_spread {
            let count = |zone: &str| {
                per_zone
                    .get(&(request.group.clone(), zone))
                    .copied()
                    .unwrap_or(0)
            };
            let minimum = zones.iter().map(|zone| count(zone)).min().unwrap_or(0);
            prop_assert!(
                count(zone) < minimum + spread.max_skew,
                "spread broken: {} in {} with minimum {}",
                count(zone),
                zone,
                minimum
            );
        }
        *per_zone.entry((request.group.clone(), zone)).or_default() += 1;
        let mut groups = Vec::new();
        for chosen in gpus {
            let gpu = facts
                .get(&(node.clone(), chosen.index))
                .ok_or_else(|| TestCaseError::fail("decision names an unknown GPU"))?;
            prop_assert_ne!(gpu.snapshot.health, GpuHealth::Unhealthy);
            if !request.allowed_products.is_empty() {
                prop_assert!(request.allowed_products.contains(&gpu.snapshot.product));
            }
            if let Some(minimum) = request.min_compute_capability {
                prop_assert!(gpu.snapshot.compute_capability >= Some(minimum));
            }
            groups.push(gpu.snapshot.nvlink_group);
            let need = request.gpu.memory_need_mib(gpu.snapshot.memory_mib);
            let headroom = request.memory_headroom_mib.unwrap_or(default_headroom);
            let entry = added.entry((node.clone(), chosen.index)).or_default();
            entry.0 += request.gpu.milli_per_gpu();
            entry.1 += need;
            // The last placement on a GPU checked all earlier ones plus its own headroom.
            entry.2 = headroom;
            if let Some(observed) = gpu.snapshot.observed_free_mib {
                let available = observed.saturating_sub(gpu.in_flight_mib);
                prop_assert!(
                    entry.1 + entry.2 <= available,
                    "GPU {}/{} over-committed by observed memory: {} + {} > {}",
                    node,
                    chosen.index,
                    entry.1,
                    entry.2,
                    available
                );
            }
            if request.gpu.milli_per_gpu() == 1000 {
                prop_assert_eq!(gpu.existing_milli + entry.0, 1000, "whole GPU was shared");
            }
        }
        groups.dedup();
        let expected = usize::from(request.gpu != GpuRequest::NoGpu);
        prop_assert_eq!(groups.len(), expected, "one replica spans NVLink groups");
    }
    for (key, (milli, mib, _)) in &added {
        let gpu = &facts[key];
        prop_assert!(
            gpu.existing_milli + milli <= 1000,
            "{:?} compute over-committed",
            key
        );
        prop_assert!(
            gpu.existing_mib + mib <= gpu.snapshot.memory_mib,
            "{:?} memory over-committed by requests",
            key
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn decisions_never_over_commit_and_respect_every_constraint(
        snapshot in snapshot_strategy(),
        workload in workload_strategy(),
        strategy in 0..STRATEGIES,
    ) {
        let config = config(strategy);
        let headroom = config.default_memory_headroom_mib;
        let outcomes = run(&snapshot, &workload, config)?;
        check_invariants(&snapshot, &workload, &outcomes, headroom)?;
    }

    #[test]
    fn the_same_input_gives_the_same_output_in_any_node_order(
        snapshot in snapshot_strategy(),
        workload in workload_strategy(),
        strategy in 0..STRATEGIES,
    ) {
        let first = run(&snapshot, &workload, config(strategy))?;
        let again = run(&snapshot, &workload, config(strategy))?;
        prop_assert_eq!(&first, &again);
        let mut reversed = snapshot.clone();
        reversed.nodes.reverse();
        reversed.placements.reverse();
        let reordered = run(&reversed, &workload, config(strategy))?;
        prop_assert_eq!(&first, &reordered);
    }
}
