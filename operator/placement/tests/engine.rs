//! Behaviour of the engine on small hand-made fleets: one test per rule.

use std::collections::BTreeMap;

use gpufleet_placement::{
    ComputeCapability, Decision, Engine, EngineConfig, Error, ExistingPlacement, FleetSnapshot,
    GpuHealth, GpuRequest, GpuSnapshot, MemoryNeed, MixEntry, NodeSnapshot, Outcome, RejectReason,
    ReplicaRequest, Strategy, TopologySpread, WorkloadMix,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn gpu(index: u32) -> GpuSnapshot {
    GpuSnapshot {
        index,
        uuid: format!("GPU-{index}"),
        product: "H100".to_owned(),
        memory_mib: 80_000,
        compute_capability: Some(ComputeCapability { major: 9, minor: 0 }),
        observed_free_mib: None,
        utilisation_percent: None,
        temperature_celsius: None,
        power_headroom_watts: None,
        throttling: false,
        health: GpuHealth::Healthy,
        nvlink_group: Some(0),
        numa_node: Some(0),
    }
}

fn node(name: &str, gpus: Vec<GpuSnapshot>) -> NodeSnapshot {
    NodeSnapshot {
        name: name.to_owned(),
        labels: BTreeMap::new(),
        ready: true,
        heartbeat_fresh: true,
        cpu_milli: None,
        memory_mib: None,
        telemetry_observed_at_ms: None,
        gpus,
    }
}

fn fraction(name: &str, group: &str, milli: u32, mib: u64) -> ReplicaRequest {
    ReplicaRequest::new(
        name,
        group,
        GpuRequest::Fraction {
            milli,
            memory: MemoryNeed::Mib(mib),
        },
    )
}

fn whole(name: &str, group: &str, count: u32, mib: u64) -> ReplicaRequest {
    ReplicaRequest::new(
        name,
        group,
        GpuRequest::Whole {
            count,
            memory: MemoryNeed::Mib(mib),
        },
    )
}

fn existing(id: &str, node: &str, gpus: Vec<u32>, milli: u32, mib: u64) -> ExistingPlacement {
    ExistingPlacement {
        id: id.to_owned(),
        group: format!("{id}-group"),
        node: node.to_owned(),
        gpus,
        gpu_milli: milli,
        gpu_memory_mib: mib,
        cpu_milli: 0,
        memory_mib: 0,
        placed_at_ms: 0,
    }
}

fn config(strategy: Strategy) -> EngineConfig {
    EngineConfig::new(strategy, WorkloadMix::inference_default())
}

fn engine(nodes: Vec<NodeSnapshot>, strategy: Strategy) -> Result<Engine, Error> {
    Engine::new(
        &FleetSnapshot {
            nodes,
            placements: Vec::new(),
        },
        config(strategy),
    )
}

fn placed(outcome: Outcome) -> Result<Decision, String> {
    match outcome {
        Outcome::Placed(decision) => Ok(decision),
        Outcome::Unplaceable(why) => Err(format!("expected a placement, got: {why}")),
    }
}

fn reasons(outcome: Outcome) -> Result<Vec<RejectReason>, String> {
    match outcome {
        Outcome::Unplaceable(why) => Ok(why.rejections.iter().map(|r| r.reason).collect()),
        Outcome::Placed(decision) => Err(format!("expected no placement, got {decision:?}")),
    }
}

fn gpu_indices(decision: &Decision) -> Vec<u32> {
    decision.gpus.iter().map(|gpu| gpu.index).collect()
}

#[test]
fn fractional_replicas_share_a_gpu_by_compute_share() -> TestResult {
    let mut engine = engine(vec![node("a", vec![gpu(0)])], Strategy::BestFit)?;
    for replica in 0..4 {
        let decision =
            placed(engine.place(&fraction(&format!("r{replica}"), "g", 250, 18_000))?)?;
        assert_eq!(gpu_indices(&decision), [0]);
    }
    assert_eq!(
        reasons(engine.place(&fraction("r4", "g", 250, 1_000))?)?,
        [RejectReason::InsufficientGpuCompute]
    );
    Ok(())
}

#[test]
fn requested_memory_limits_sharing_even_with_compute_left() -> TestResult {
    let mut engine = engine(vec![node("a", vec![gpu(0)])], Strategy::BestFit)?;
    placed(engine.place(&fraction("big", "g", 100, 70_000))?)?;
    assert_eq!(
        reasons(engine.place(&fraction("more", "g", 100, 20_000))?)?,
        [RejectReason::InsufficientGpuMemory]
    );
    Ok(())
}

#[test]
fn observed_free_memory_counts_foreign_processes_and_headroom() -> TestResult {
    let mut busy = gpu(0);
    busy.observed_free_mib = Some(10_000); // a process gpufleet did not place holds 70 GB
    let mut fleet = vec![node("a", vec![busy])];
    fleet[0].telemetry_observed_at_ms = Some(1_000);
    let mut engine = engine(fleet.clone(), Strategy::BestFit)?;
    // 9,500 + the default 1,024 MiB headroom exceeds the observed 10,000.
    assert_eq!(
        reasons(engine.place(&fraction("r", "g", 100, 9_500))?)?,
        [RejectReason::InsufficientObservedGpuMemory]
    );
    let decision = placed(engine.place(&fraction("small", "g", 100, 8_000))?)?;
    assert_eq!(decision.node, "a");
    // The new placement is in flight: the next one sees 2,000 MiB left, not 10,000.
    assert_eq!(
        reasons(engine.place(&fraction("again", "g", 100, 8_000))?)?,
        [RejectReason::InsufficientObservedGpuMemory]
    );
    Ok(())
}

#[test]
fn in_flight_placements_are_shadow_accounted_and_visible_ones_are_not_counted_twice() -> TestResult
{
    let settle = config(Strategy::BestFit).telemetry_settle_ms;
    let observed_at = 10 * settle;
    // In flight: placed just before the sample, so the sample still shows 79 GB free.
    let mut fresh = gpu(0);
    fresh.observed_free_mib = Some(79_000);
    let mut in_flight_node = node("a", vec![fresh]);
    in_flight_node.telemetry_observed_at_ms = Some(observed_at);
    let mut in_flight = existing("loading", "a", vec![0], 500, 40_000);
    in_flight.placed_at_ms = observed_at - 1;
    // Visible: placed long before the sample, which already shows its 40 GB used.
    let mut settled = gpu(0);
    settled.observed_free_mib = Some(39_000);
    let mut visible_node = node("b", vec![settled]);
    visible_node.telemetry_observed_at_ms = Some(observed_at);
    let visible = existing("serving", "b", vec![0], 500, 40_000);

    for (fleet_node, placement) in [(in_flight_node, in_flight), (visible_node, visible)] {
        let snapshot = FleetSnapshot {
            nodes: vec![fleet_node.clone()],
            placements: vec![placement],
        };
        let mut engine = Engine::new(&snapshot, config(Strategy::BestFit))?;
        // Both views leave 39,000 MiB: 30,000 + headroom fits, 38,500 + headroom does not.
        assert_eq!(
            reasons(engine.place(&fraction("too-big", "g", 400, 38_500))?)?,
            [RejectReason::InsufficientObservedGpuMemory],
            "{}",
            fleet_node.name
        );
        placed(engine.place(&fraction("fits", "g", 400, 30_000))?)?;
    }
    Ok(())
}

#[test]
fn unhealthy_gpus_are_never_chosen_and_degraded_ones_come_last() -> TestResult {
    let mut broken = gpu(0);
    broken.health = GpuHealth::Unhealthy;
    let mut degraded = gpu(1);
    degraded.health = GpuHealth::Degraded;
    let mut engine = engine(
        vec![node("a", vec![broken, degraded, gpu(2)])],
        Strategy::BestFit,
    )?;
    let first = placed(engine.place(&whole("first", "g", 1, 30_000))?)?;
    assert_eq!(gpu_indices(&first), [2]);
    let second = placed(engine.place(&whole("second", "g", 1, 30_000))?)?;
    assert_eq!(gpu_indices(&second), [1]);
    assert!(second.score.health_penalty > 0.0);
    assert!(reasons(engine.place(&whole("third", "g", 1, 30_000))?).is_ok());
    Ok(())
}

#[test]
fn hot_gpus_are_penalised() -> TestResult {
    let mut hot = gpu(0);
    hot.temperature_celsius = Some(90);
    let mut engine = engine(vec![node("a", vec![hot, gpu(1)])], Strategy::BestFit)?;
    let decision = placed(engine.place(&whole("r", "g", 1, 30_000))?)?;
    assert_eq!(gpu_indices(&decision), [1]);
    Ok(())
}

#[test]
fn multi_gpu_replicas_stay_in_one_nvlink_group() -> TestResult {
    let grouped = |name: &str| {
        let gpus = (0..4)
            .map(|index| {
                let mut gpu = gpu(index);
                gpu.nvlink_group = Some(index / 2);
                gpu
            })
            .collect();
        node(name, gpus)
    };
    let snapshot = FleetSnapshot {
        nodes: vec![grouped("a"), grouped("b")],
        // On `a`, one GPU of each pair is taken: two free GPUs, but in different groups.
        placements: vec![
            existing("p0", "a", vec![0], 1000, 30_000),
            existing("p2", "a", vec![2], 1000, 30_000),
        ],
    };
    let mut engine = Engine::new(&snapshot, config(Strategy::Pack))?;
    let decision = placed(engine.place(&whole("tp2", "g", 2, 30_000))?)?;
    assert_eq!(decision.node, "b");
    let indices = gpu_indices(&decision);
    assert_eq!(
        indices[0] / 2,
        indices[1] / 2,
        "{indices:?} span NVLink groups"
    );

    let mut only_a = Engine::new(
        &FleetSnapshot {
            nodes: vec![grouped("a")],
            placements: snapshot.placements.clone(),
        },
        config(Strategy::Pack),
    )?;
    assert_eq!(
        reasons(only_a.place(&whole("tp2", "g", 2, 30_000))?)?,
        [RejectReason::NvlinkGroupTooSmall]
    );
    Ok(())
}

#[test]
fn products_and_compute_capability_filter_nodes() -> TestResult {
    let mut old = gpu(0);
    old.product = "V100".to_owned();
    old.compute_capability = Some(ComputeCapability { major: 7, minor: 0 });
    let mut engine = engine(
        vec![node("old", vec![old]), node("new", vec![gpu(0)])],
        Strategy::BestFit,
    )?;
    let mut request = whole("r", "g", 1, 10_000);
    request.min_compute_capability = Some(ComputeCapability { major: 8, minor: 0 });
    assert_eq!(placed(engine.place(&request)?)?.node, "new");
    let mut v100_only = whole("s", "g", 1, 10_000);
    v100_only.allowed_products = vec!["V100".to_owned()];
    assert_eq!(placed(engine.place(&v100_only)?)?.node, "old");
    let mut nowhere = whole("t", "g", 1, 10_000);
    nowhere.allowed_products = vec!["B200".to_owned()];
    assert_eq!(
        reasons(engine.place(&nowhere)?)?,
        [RejectReason::GpuProductNotAllowed]
    );
    Ok(())
}

#[test]
fn per_node_caps_and_anti_affinity_hold_under_packing() -> TestResult {
    let nodes = vec![
        node("a", (0..8).map(gpu).collect()),
        node("b", (0..8).map(gpu).collect()),
    ];
    let mut engine = engine(nodes, Strategy::Pack)?;
    let mut capped = Vec::new();
    for replica in 0..4 {
        let mut request = fraction(&format!("capped-{replica}"), "capped", 100, 1_000);
        request.max_replicas_per_node = Some(2);
        capped.push(placed(engine.place(&request)?)?.node);
    }
    capped.sort();
    assert_eq!(capped, ["a", "a", "b", "b"]);

    let mut spread_out = Vec::new();
    for replica in 0..3 {
        let mut request = fraction(&format!("lonely-{replica}"), "lonely", 100, 1_000);
        request.anti_affinity_keys = vec![gpufleet_placement::HOSTNAME_LABEL.to_owned()];
        spread_out.push(engine.place(&request)?);
    }
    let third = spread_out.pop().ok_or("three outcomes")?;
    assert_eq!(reasons(third)?, [RejectReason::AntiAffinity]);
    Ok(())
}

#[test]
fn topology_spread_keeps_zones_within_the_skew() -> TestResult {
    let zoned = |name: &str, zone: &str| {
        let mut node = node(name, (0..8).map(gpu).collect());
        node.labels
            .insert("topology.kubernetes.io/zone".to_owned(), zone.to_owned());
        node
    };
    let mut engine = engine(
        vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")],
        Strategy::Pack,
    )?;
    let mut zones = Vec::new();
    for replica in 0..4 {
        let mut request = whole(&format!("r{replica}"), "g", 1, 10_000);
        request.topology_spread = vec![TopologySpread {
            key: "topology.kubernetes.io/zone".to_owned(),
            max_skew: 1,
        }];
        let decision = placed(engine.place(&request)?)?;
        zones.push(if decision.node.starts_with('a') {
            'a'
        } else {
            'b'
        });
    }
    let in_a = zones.iter().filter(|zone| **zone == 'a').count();
    assert_eq!(in_a, 2, "{zones:?}");
    Ok(())
}

#[test]
fn an_unplaceable_replica_says_how_many_nodes_failed_which_check() -> TestResult {
    let mut down = node("down", vec![gpu(0)]);
    down.ready = false;
    let mut stale = node("stale", vec![gpu(0)]);
    stale.heartbeat_fresh = false;
    let small = node("small", vec![gpu(0)]);
    let mut engine = engine(vec![down, stale, small], Strategy::BestFit)?;
    match engine.place(&whole("big", "g", 2, 10_000))? {
        Outcome::Unplaceable(why) => {
            assert_eq!(why.nodes_total, 3);
            let message = why.to_string();
            assert!(
                message.starts_with("0/3 nodes are available: "),
                "{message}"
            );
            assert!(message.contains("1 node(s) not ready"), "{message}");
            assert!(
                message.contains("1 node(s) with a stale GPU heartbeat"),
                "{message}"
            );
            assert!(message.contains("1 Insufficient GPU compute"), "{message}");
        }
        Outcome::Placed(decision) => return Err(format!("placed {decision:?}").into()),
    }
    Ok(())
}

#[test]
fn fragmentation_aware_keeps_shares_usable_where_best_fit_strands_them() -> TestResult {
    // Node `tight` has 300 thousandths free, `roomy` 600. The fleet expects 250-shares.
    let snapshot = FleetSnapshot {
        nodes: vec![node("roomy", vec![gpu(0)]), node("tight", vec![gpu(0)])],
        placements: vec![
            existing("t", "tight", vec![0], 700, 10_000),
            existing("r", "roomy", vec![0], 400, 10_000),
        ],
    };
    let mix = WorkloadMix {
        entries: vec![MixEntry {
            gpu: GpuRequest::Fraction {
                milli: 250,
                memory: MemoryNeed::Mib(1_000),
            },
            allowed_products: Vec::new(),
            cpu_milli: 0,
            memory_mib: 0,
            weight: 1.0,
        }],
    };
    let request = fraction("new", "g", 250, 1_000);
    let mut best_fit = Engine::new(&snapshot, EngineConfig::new(Strategy::BestFit, mix.clone()))?;
    // Best-fit fills `tight`, leaving 50 thousandths nobody can use...
    assert_eq!(placed(best_fit.place(&request)?)?.node, "tight");
    // ...FGD's measure takes `roomy` (350 left: still a 250-share) and keeps `tight`'s 300
    // usable by the next 250-share.
    let mut fgd_measure = EngineConfig::new(Strategy::FragmentationAware, mix.clone());
    fgd_measure.fragmentation_measure = gpufleet_placement::FragmentationMeasure::Fgd;
    let decision = placed(Engine::new(&snapshot, fgd_measure)?.place(&request)?)?;
    assert_eq!(decision.node, "roomy");
    assert_eq!(decision.score.fragmentation_delta_gpus, Some(0.0));
    // gpufleet's capacity measure counts tasks: either way two more 250-shares fit (roomy 350 +
    // tight 300, or roomy 600 + tight 50), so neither strands more, and the tie goes to the
    // fuller GPU as best-fit's does.
    let decision = placed(
        Engine::new(
            &snapshot,
            EngineConfig::new(Strategy::FragmentationAware, mix),
        )?
        .place(&request)?,
    )?;
    assert_eq!(decision.score.fragmentation_delta_gpus, Some(0.0));
    assert_eq!(decision.node, "tight");
    Ok(())
}

#[test]
fn scale_down_removes_the_replica_whose_removal_best_reduces_fragmentation() -> TestResult {
    let snapshot = FleetSnapshot {
        nodes: vec![node("a", vec![gpu(0), gpu(1)])],
        placements: vec![
            // `alone` is the only tenant of GPU 0; `shared` sits beside another group on GPU 1.
            ExistingPlacement {
                group: "web".to_owned(),
                ..existing("alone", "a", vec![0], 250, 10_000)
            },
            ExistingPlacement {
                group: "web".to_owned(),
                ..existing("shared", "a", vec![1], 250, 10_000)
            },
            existing("neighbour", "a", vec![1], 500, 10_000),
        ],
    };
    let mix = WorkloadMix {
        entries: vec![MixEntry {
            gpu: GpuRequest::Whole {
                count: 1,
                memory: MemoryNeed::Mib(10_000),
            },
            allowed_products: Vec::new(),
            cpu_milli: 0,
            memory_mib: 0,
            weight: 1.0,
        }],
    };
    let mut engine = Engine::new(
        &snapshot,
        EngineConfig::new(Strategy::FragmentationAware, mix),
    )?;
    let removals = engine.scale_down("web", 1);
    assert_eq!(removals.len(), 1);
    assert_eq!(removals[0].placement, "alone");
    // GPU 0's 750 stranded thousandths become a whole usable GPU.
    assert!((removals[0].fragmentation_delta_gpus + 0.75).abs() < 1e-9);
    assert_eq!(engine.summary().placements, 2);
    Ok(())
}

#[test]
fn removing_a_placement_frees_its_share() -> TestResult {
    let mut engine = engine(vec![node("a", vec![gpu(0)])], Strategy::BestFit)?;
    placed(engine.place(&whole("r", "g", 1, 10_000))?)?;
    assert!(reasons(engine.place(&whole("s", "g", 1, 10_000))?).is_ok());
    engine.remove("r")?;
    placed(engine.place(&whole("t", "g", 1, 10_000))?)?;
    assert!(matches!(
        engine.remove("never"),
        Err(Error::UnknownPlacement { .. })
    ));
    Ok(())
}

#[test]
fn invalid_input_is_refused_with_the_field_to_fix() -> TestResult {
    let duplicate = engine(
        vec![node("a", vec![gpu(0)]), node("a", vec![gpu(0)])],
        Strategy::Pack,
    );
    assert!(
        matches!(&duplicate, Err(Error::InvalidNode { field, .. }) if field == "name"),
        "{duplicate:?}"
    );
    let dangling = Engine::new(
        &FleetSnapshot {
            nodes: vec![node("a", vec![gpu(0)])],
            placements: vec![existing("p", "gone", vec![0], 1000, 1)],
        },
        config(Strategy::Pack),
    );
    assert!(
        matches!(&dangling, Err(Error::InvalidPlacement { field, .. }) if field == "node"),
        "{dangling:?}"
    );
    let mut engine = engine(vec![node("a", vec![gpu(0)])], Strategy::Pack)?;
    let full_share = engine.place(&fraction("r", "g", 1000, 1));
    assert!(
        matches!(&full_share, Err(Error::InvalidRequest { field, .. }) if field == "gpu.milli"),
        "{full_share:?}"
    );
    Ok(())
}

#[test]
fn the_sample_yaml_fleet_replays_with_every_constraint_explained() -> TestResult {
    let file: gpufleet_placement::simulate::SimulationFile =
        serde_norway::from_str(include_str!("../testdata/fleet.yaml"))?;
    let snapshot = FleetSnapshot {
        nodes: file.nodes,
        placements: file.placements,
    };
    let outcomes = gpufleet_placement::plan(
        &snapshot,
        &file.workload,
        config(Strategy::FragmentationAware),
    )?;
    let by_name: BTreeMap<&str, &Outcome> = file
        .workload
        .iter()
        .map(|request| request.name.as_str())
        .zip(&outcomes)
        .collect();
    // The two tensor-parallel replicas land in different zones (spread, max skew 1).
    let chat: Vec<String> = ["chat-0", "chat-1"]
        .iter()
        .map(|name| match by_name[name] {
            Outcome::Placed(decision) => Ok(decision.node.clone()),
            Outcome::Unplaceable(why) => Err(why.to_string()),
        })
        .collect::<Result<_, _>>()?;
    assert_ne!(chat[0], chat[1]);
    // Nothing lands on the busy GPU 1 of h100-a beyond what its observed 20 GB allow.
    for outcome in &outcomes {
        if let Outcome::Placed(decision) = outcome
            && decision.node == "h100-a"
            && decision.gpus.iter().any(|gpu| gpu.index == 1)
        {
            assert!(decision.gpu_memory_mib + 1024 <= 20_000, "{decision:?}");
        }
    }
    // The 4-GPU replica cannot fit anywhere any more, and says why.
    match by_name["big-0"] {
        Outcome::Unplaceable(why) => assert!(why.to_string().starts_with("0/3 nodes")),
        Outcome::Placed(decision) => return Err(format!("big-0 placed: {decision:?}").into()),
    }
    Ok(())
}

#[test]
fn preview_names_the_best_node_without_placing() -> TestResult {
    let mut engine = engine(vec![node("a", vec![gpu(0)])], Strategy::BestFit)?;
    let request = whole("r", "g", 1, 10_000);
    let preview = engine.preview(&request)?;
    assert_eq!(preview.map(|(node, _)| node).as_deref(), Some("a"));
    assert_eq!(engine.summary().placements, 0);
    placed(engine.place(&request)?)?;
    assert_eq!(engine.preview(&whole("s", "g", 1, 10_000))?, None);
    Ok(())
}

#[test]
fn a_deployment_spreads_over_nodes_by_default_and_packs_with_spread_weight_zero() -> TestResult {
    let nodes = || {
        vec![
            node("a", (0..8).map(gpu).collect()),
            node("b", (0..8).map(gpu).collect()),
        ]
    };
    let place_five = |spread_weight: Option<f64>| -> Result<BTreeMap<String, usize>, Box<dyn std::error::Error>> {
        let mut engine = engine(nodes(), Strategy::FragmentationAware)?;
        let mut per_node = BTreeMap::new();
        for replica in 0..5 {
            let mut request = whole(&format!("llm-{replica}"), "llm", 1, 40_000);
            request.spread_weight = spread_weight;
            *per_node
                .entry(placed(engine.place(&request)?)?.node)
                .or_default() += 1;
        }
        Ok(per_node)
    };
    // No option given: the replicas spread, so one node failing does not take them all.
    let spread = place_five(None)?;
    assert_eq!(spread.len(), 2, "{spread:?}");
    assert!(spread.values().all(|count| *count >= 2), "{spread:?}");
    // spreadWeight 0: pure packing, all on one node.
    let packed = place_five(Some(0.0))?;
    assert_eq!(packed.len(), 1, "{packed:?}");
    Ok(())
}

#[test]
fn a_learned_mix_replaces_a_wrong_prior() -> TestResult {
    // The prior expects 8-GPU replicas only; what arrives are quarter shares.
    let prior = WorkloadMix {
        entries: vec![MixEntry {
            gpu: GpuRequest::Whole {
                count: 8,
                memory: MemoryNeed::ShareOfCapacity,
            },
            allowed_products: Vec::new(),
            cpu_milli: 0,
            memory_mib: 0,
            weight: 1.0,
        }],
    };
    let nodes = || {
        (0..4)
            .map(|n| node(&format!("n{n}"), (0..8).map(gpu).collect()))
            .collect()
    };
    let run = |learning: Option<gpufleet_placement::MixLearning>| -> Result<f64, Box<dyn std::error::Error>> {
        let mut config = EngineConfig::new(Strategy::FragmentationAware, prior.clone());
        config.learning = learning;
        let mut engine = Engine::new(
            &FleetSnapshot {
                nodes: nodes(),
                placements: Vec::new(),
            },
            config,
        )?;
        for replica in 0..40 {
            placed(engine.place(&fraction(&format!("q{replica}"), &format!("g{replica}"), 250, 1_000))?)?;
        }
        Ok(engine.summary().fragmented_milli)
    };
    let fixed = run(None)?;
    let learned = run(Some(gpufleet_placement::MixLearning {
        half_life_arrivals: 16.0,
        prior_weight: 4.0,
        refresh_drift: 0.1,
    }))?;
    // Against the 8-GPU prior every partly used node is all fragment; against what arrived
    // (quarter shares, which still fit there) it is not.
    assert!(learned < fixed, "learned {learned} vs fixed {fixed}");
    Ok(())
}

#[test]
fn absurd_cpu_and_memory_requests_are_refused_not_wrapped_into_fits() -> TestResult {
    // Before: `cpu_milli as i64` turned requests of 2^63 or more negative, and they were placed.
    let mut roomy = node("roomy", (0..8).map(gpu).collect());
    roomy.cpu_milli = Some(200_000);
    roomy.memory_mib = Some(1_000_000);
    let mut engine = engine(vec![roomy], Strategy::FragmentationAware)?;
    for (cpu, memory) in [(u64::MAX, 0), (1 << 63, 0), (0, u64::MAX), (0, 1 << 63)] {
        let mut request = whole(&format!("huge-{cpu}-{memory}"), "g", 1, 1_000);
        request.cpu_milli = cpu;
        request.memory_mib = memory;
        let refused = reasons(engine.place(&request)?)?;
        assert!(
            refused.contains(&RejectReason::InsufficientCpu)
                || refused.contains(&RejectReason::InsufficientHostMemory),
            "{cpu}/{memory}: {refused:?}"
        );
    }
    // And a sane request still fits.
    let mut sane = whole("sane", "g", 1, 1_000);
    sane.cpu_milli = 8_000;
    placed(engine.place(&sane)?)?;
    Ok(())
}

/// Finding 4 of the hardening issue: a node whose GPUs repeat an index (any agent may write its
/// own GpuNode) made `Engine::new` fail for everyone. The engine still refuses such a snapshot,
/// naming the field; `take_unusable_nodes` leaves that node, a node whose name repeats, and
/// the placements on them out, and the engine places on everything else.
#[test]
fn one_malformed_node_is_left_out_and_everything_else_keeps_placing() -> TestResult {
    let good = node("good", vec![gpu(0), gpu(1)]);
    let repeated_index = node("bad", vec![gpu(0), gpu(0)]);
    let twin = node("good-twin", vec![gpu(0)]);
    let twin_again = node("good-twin", vec![gpu(0), gpu(1)]);
    let mut snapshot = FleetSnapshot {
        nodes: vec![good, repeated_index, twin, twin_again],
        placements: vec![
            existing("on-good", "good", vec![0], 500, 1_000),
            existing("on-bad", "bad", vec![0], 500, 1_000),
        ],
    };
    let refused = Engine::new(&snapshot, config(Strategy::FragmentationAware))
        .err()
        .ok_or("the engine accepted a node with a repeated GPU index")?
        .to_string();
    assert!(refused.contains("gpus[1].index"), "{refused}");

    let left_out = snapshot.take_unusable_nodes();
    let named: Vec<(&str, String)> = left_out
        .iter()
        .map(|unusable| (unusable.name.as_str(), unusable.problem.to_string()))
        .collect();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(
        named[0].0 == "bad" && named[0].1.contains("appears twice"),
        "{named:?}"
    );
    assert!(
        named[1].0 == "good-twin" && named[1].1.contains("name"),
        "{named:?}"
    );
    let kept: Vec<&str> = snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(kept, ["good"]);
    let placements: Vec<&str> = snapshot.placements.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(placements, ["on-good"]);

    let mut engine = Engine::new(&snapshot, config(Strategy::FragmentationAware))?;
    let decision = placed(engine.place(&fraction("new", "g", 250, 1_000))?)?;
    assert_eq!(decision.node, "good");
    Ok(())
}
