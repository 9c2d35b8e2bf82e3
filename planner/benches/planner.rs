//! `cargo bench -p gpufleet-planner [-- interactive|hyperscale|sweep …]`: times the planner on
//! generated scenarios and a 1,000-point sweep (release build). Prints measurements; asserts
//! nothing about time. Add `--features highs` to time HiGHS as well.

use gpufleet_planner::SolverChoice;
use gpufleet_planner::benchmark::{bench_size, bench_sweep};
use gpufleet_planner::generator::Size;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| arguments.is_empty() || arguments.iter().any(|argument| argument == name);
    let mut solvers = vec![SolverChoice::Clarabel];
    if cfg!(feature = "highs") {
        solvers.push(SolverChoice::Highs);
    }
    if wanted("interactive") {
        print!(
            "{}",
            bench_size("interactive", Size::INTERACTIVE, &solvers)?
        );
    }
    if wanted("hyperscale") {
        // The default solver is timed too, but the target is HiGHS.
        print!("{}", bench_size("hyperscale", Size::HYPERSCALE, &solvers)?);
    }
    if wanted("sweep") {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        println!(
            "{}",
            bench_sweep(1000, SolverChoice::Clarabel, threads, &|| {})?
        );
    }
    Ok(())
}
