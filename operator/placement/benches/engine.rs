//! Engine benchmarks, side by side in one run (`cargo bench -p gpufleet-placement`):
//!
//! 1. throughput: 10,000 nodes × 8 GPUs, 50,000 mixed whole and fractional replicas placed one
//!    decision at a time on one core, per strategy: total time and single-decision p50/p99;
//! 2. the same at openb size: Alibaba's trace, the FGD paper's arrivals for one seed;
//! 3. quality: the same fleet under a synthetic inference workload offered at 100% and 130% of
//!    capacity, and a GPU-sharing workload on 2,000 nodes: GPUs left unallocated per strategy.
//!
//! A plain `main` (no harness): it measures with `Instant` and prints, it asserts nothing.

use std::time::Instant;

use gpufleet_placement::simulate::{
    self, SimulationInput, SimulationOptions, SyntheticSpec, synthetic_fleet, synthetic_workload,
};
use gpufleet_placement::{EngineConfig, Strategy, WorkloadMix};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; a filter argument other than that is not supported.
    let spec: SyntheticSpec = "nodes=10000,gpus=8,pods=50000,mix=inference,seed=42".parse()?;
    let fleet = synthetic_fleet(&spec);
    let workload = synthetic_workload(&spec);
    let mix = WorkloadMix::from_requests(&workload, usize::MAX);
    println!("== throughput: {spec:?}");
    println!(
        "{:<20} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "strategy", "placed", "replicas", "build ms", "place ms", "p50 µs", "p99 µs", "max µs"
    );
    for strategy in Strategy::ALL {
        let report =
            simulate::throughput(&fleet, &workload, EngineConfig::new(strategy, mix.clone()))?;
        println!(
            "{:<20} {:>8} {:>9} {:>10.1} {:>10.1} {:>9.1} {:>9.1} {:>9.1}",
            strategy.name(),
            report.placed,
            report.replicas,
            report.build_millis,
            report.place_millis,
            report.decision_p50_micros,
            report.decision_p99_micros,
            report.decision_max_micros
        );
    }

    // The engine alone at openb size: Alibaba's trace (testdata/openb), the FGD paper's arrivals
    // for seed 42 (shuffled, sampled to 130%), every task shape in the mix.
    let nodes = simulate::parse_node_csv(
        "openb_node_list_gpu_node.csv",
        include_str!("../testdata/openb/openb_node_list_gpu_node.csv"),
        &simulate::GpuModelTable::default(),
    )?;
    let pods = simulate::parse_pod_csv(
        "openb_pod_list_default.csv",
        include_str!("../testdata/openb/openb_pod_list_default.csv"),
    )?;
    let openb = gpufleet_placement::FleetSnapshot {
        nodes: nodes.nodes,
        placements: Vec::new(),
    };
    let capacity: u64 = openb
        .nodes
        .iter()
        .map(|node| node.gpus.len() as u64 * 1000)
        .sum();
    let arrivals = simulate::arrivals(
        &pods.requests,
        simulate::ArrivalOrder::Shuffle,
        Some(1.3),
        42,
        capacity,
    );
    let openb_mix = WorkloadMix::from_requests(&pods.requests, usize::MAX);
    println!(
        "\n== throughput: openb (1,213 nodes, 6,212 GPUs), {} arrivals to 130%",
        arrivals.len()
    );
    println!(
        "{:<20} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>12}",
        "strategy",
        "placed",
        "replicas",
        "build ms",
        "place ms",
        "p50 µs",
        "p99 µs",
        "max µs",
        "decisions/s"
    );
    for strategy in Strategy::ALL.into_iter().chain(Strategy::PAPER) {
        let report = simulate::throughput(
            &openb,
            &arrivals,
            EngineConfig::new(strategy, openb_mix.clone()),
        )?;
        println!(
            "{:<20} {:>8} {:>9} {:>10.1} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>12.0}",
            strategy.name(),
            report.placed,
            report.replicas,
            report.build_millis,
            report.place_millis,
            report.decision_p50_micros,
            report.decision_p99_micros,
            report.decision_max_micros,
            report.replicas as f64 / (report.place_millis / 1e3)
        );
    }

    for spec in [
        "nodes=10000,gpus=8,mix=inference,seed=42",
        "nodes=2000,gpus=8,mix=sharing,seed=42",
    ] {
        let spec: SyntheticSpec = spec.parse()?;
        let input = SimulationInput {
            snapshot: synthetic_fleet(&spec),
            workload: synthetic_workload(&spec),
            lifetimes: Vec::new(),
        };
        let started = Instant::now();
        let report = simulate::run(&input, &SimulationOptions::default())?;
        println!(
            "\n== quality: {spec:?} ({:.1} s for all strategies)",
            started.elapsed().as_secs_f64()
        );
        print!("{}", report.render_table());
    }
    Ok(())
}
