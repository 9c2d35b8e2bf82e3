//! The placement engine on the FGD paper's own workload: Alibaba's openb trace
//! (`testdata/openb`, copied unmodified), replayed by the paper's protocol (pods sorted by
//! name, shuffled with a seed, sampled with replacement to 130% of the GPU capacity, nobody
//! leaves), GPU allocation as the paper defines it.

use gpufleet_placement::simulate::{
    self, ArrivalOrder, GpuModelTable, SimulationInput, SimulationOptions,
};
use gpufleet_placement::{FleetSnapshot, Strategy};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn openb() -> Result<SimulationInput, Box<dyn std::error::Error>> {
    let nodes = simulate::parse_node_csv(
        "openb_node_list_gpu_node.csv",
        include_str!("../testdata/openb/openb_node_list_gpu_node.csv"),
        &GpuModelTable::default(),
    )?;
    let pods = simulate::parse_pod_csv(
        "openb_pod_list_default.csv",
        include_str!("../testdata/openb/openb_pod_list_default.csv"),
    )?;
    Ok(SimulationInput {
        snapshot: FleetSnapshot {
            nodes: nodes.nodes,
            placements: Vec::new(),
        },
        workload: pods.requests,
        lifetimes: Vec::new(),
    })
}

fn paper_protocol(strategies: Vec<Strategy>, seeds: Vec<u64>) -> SimulationOptions {
    SimulationOptions {
        strategies,
        load_levels: vec![1.0, 1.3],
        order: ArrivalOrder::Shuffle,
        seeds,
        tune: Some(1.3),
        ..SimulationOptions::default()
    }
}

#[test]
fn the_trace_reads_whole_with_its_cpu_only_pods() -> TestResult {
    let input = openb()?;
    assert_eq!(input.snapshot.nodes.len(), 1213);
    let gpus: usize = input.snapshot.nodes.iter().map(|n| n.gpus.len()).sum();
    assert_eq!(gpus, 6212);
    assert_eq!(input.workload.len(), 8152);
    let cpu_only = input
        .workload
        .iter()
        .filter(|r| r.gpu == gpufleet_placement::GpuRequest::NoGpu)
        .count();
    assert_eq!(cpu_only, 1088);
    Ok(())
}

#[test]
#[ignore = "prints the strategies side by side on the trace: run in release with --ignored --nocapture"]
fn print_the_paper_protocol_table() -> TestResult {
    let mut input = openb()?;
    if std::env::var("OPENB_NOCPU").is_ok() {
        for node in &mut input.snapshot.nodes {
            node.cpu_milli = None;
            node.memory_mib = None;
        }
    }
    if std::env::var("OPENB_NOMEM").is_ok() {
        for node in &mut input.snapshot.nodes {
            node.memory_mib = None;
        }
    }
    if let Ok(family) = std::env::var("OPENB_FAMILY") {
        input.workload =
            simulate::family::derive(&input.workload, &input.snapshot.nodes, family.parse()?, 1)?;
    }
    let seeds: Vec<u64> = std::env::var("OPENB_SEEDS")
        .ok()
        .and_then(|text| {
            let (first, last) = text.split_once("..")?;
            Some((first.parse().ok()?..=last.parse().ok()?).collect())
        })
        .unwrap_or_else(|| vec![42]);
    let strategies: Vec<Strategy> = match std::env::var("OPENB_STRATEGIES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        Err(_) => Strategy::ALL.into_iter().chain(Strategy::PAPER).collect(),
    };
    let started = std::time::Instant::now();
    let mut options = paper_protocol(strategies, seeds);
    if std::env::var("OPENB_MEASURE").as_deref() == Ok("fgd") {
        options.fragmentation_measure = Some(gpufleet_placement::FragmentationMeasure::Fgd);
    }
    options.cpu_balance_weight = std::env::var("OPENB_BALANCE")
        .ok()
        .and_then(|w| w.parse().ok());
    options.record_decisions = std::env::var("OPENB_DECISIONS").is_ok();
    let report = simulate::run(&input, &options)?;
    if let Ok(path) = std::env::var("OPENB_DECISIONS") {
        let lines: Vec<String> = report
            .decisions
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(path, lines.join("\n"))?;
    }
    println!("{}", report.render_table());
    println!("{:.2} s", started.elapsed().as_secs_f64());

    Ok(())
}

/// GPU allocation at 130% of `strategy` on the trace for `seed`, by the paper's protocol.
fn allocation_at_130(
    input: &SimulationInput,
    strategies: Vec<Strategy>,
    seed: u64,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let report = simulate::run(input, &paper_protocol(strategies, vec![seed]))?;
    Ok(report
        .strategies
        .iter()
        .map(|strategy| strategy.levels[1].gpu_allocation)
        .collect())
}

#[test]
fn fragmentation_aware_allocates_more_than_the_papers_fgd_and_best_fit_on_the_trace() -> TestResult
{
    // One seed of the paper's ten; `gpufleet simulate … --seeds 42..51` reports them all.
    let input = openb()?;
    let allocation = allocation_at_130(
        &input,
        vec![
            Strategy::FragmentationAware,
            Strategy::Fgd,
            Strategy::BestFit,
            Strategy::BestFitCpuGpu,
            Strategy::Random,
        ],
        42,
    )?;
    let [aware, fgd, best_fit, paper_best_fit, random] = allocation[..] else {
        return Err(format!("five strategies, got {allocation:?}").into());
    };
    // The paper's FGD reaches 95.39% (mean of its ten seeds); gpufleet must do better.
    assert!(aware > 0.955, "fragmentation-aware {aware}");
    assert!(aware > fgd && aware > best_fit, "{allocation:?}");
    // The paper's own ranking of its baselines holds in our reproduction of them.
    assert!(
        fgd > paper_best_fit && paper_best_fit > random,
        "{allocation:?}"
    );
    Ok(())
}
