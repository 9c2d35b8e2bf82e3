//! Benchmarks of the planner, shared by `gpufleet plan bench` and `cargo bench -p
//! gpufleet-planner`: build and solve generated scenarios of a given size with each solver
//! (every answer still goes through the independent check), and a parameter sweep's
//! throughput. They measure; they never assert a time.

use std::time::Instant;

use serde::Serialize;

use crate::generator::{self, Size};
use crate::model::FleetModel;
use crate::report::Plan;
use crate::sweep::{self, Vary};
use crate::{Result, Scenario, SolverChoice, library};

/// One solver's time on one generated scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SolveTiming {
    /// Solver name.
    pub solver: &'static str,
    /// Seconds to solve and check.
    pub seconds: f64,
    /// The objective ($M), or why the solve or its check failed.
    pub outcome: std::result::Result<f64, String>,
}

/// Size and timings of one generated scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeReport {
    /// `interactive` or `hyperscale`.
    pub label: String,
    /// LP variables.
    pub variables: usize,
    /// LP rows.
    pub constraints: usize,
    /// LP non-zeros.
    pub nonzeros: usize,
    /// Seconds to build the LP from the scenario.
    pub build_seconds: f64,
    /// One entry per solver.
    pub solves: Vec<SolveTiming>,
}

/// Throughput of a sweep of the baseline scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// Points solved.
    pub points: usize,
    /// Points that failed.
    pub failed: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Worker threads.
    pub threads: usize,
    /// Solver.
    pub solver: &'static str,
    /// Points per second.
    pub per_second: f64,
}

/// Builds the generated scenario of `size` and times each solver on it.
pub fn bench_size(label: &str, size: Size, solvers: &[SolverChoice]) -> Result<SizeReport> {
    let scenario = generator::scenario(size);
    let started = Instant::now();
    let model = FleetModel::build(&scenario)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let solves = solvers
        .iter()
        .map(|solver| {
            let started = Instant::now();
            let outcome = model
                .program
                .solve(*solver)
                .and_then(|solution| Plan::from_solution(&model, &solution))
                .map(|plan| plan.objective_musd)
                .map_err(|error| error.to_string());
            SolveTiming {
                solver: solver.name(),
                seconds: started.elapsed().as_secs_f64(),
                outcome,
            }
        })
        .collect();
    Ok(SizeReport {
        label: label.to_string(),
        variables: model.program.variables.len(),
        constraints: model.program.rows.len(),
        nonzeros: model.program.nonzeros(),
        build_seconds,
        solves,
    })
}

/// Sweeps the baseline scenario's capex budget over `points` values on `threads` threads.
pub fn bench_sweep(
    points: usize,
    solver: SolverChoice,
    threads: usize,
    progress: &(dyn Fn() + Sync),
) -> Result<SweepReport> {
    let scenario = Scenario::from_yaml(library::text("baseline").unwrap_or_default())?;
    let varies = vec![Vary {
        path: "economics.capex_budget_musd".into(),
        low: 2500.0,
        high: 4500.0,
        steps: points.max(1),
    }];
    let started = Instant::now();
    let results = sweep::run(&scenario, &varies, solver, threads, progress)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(SweepReport {
        points: results.len(),
        failed: results
            .iter()
            .filter(|point| point.outcome.is_err())
            .count(),
        seconds,
        threads,
        solver: solver.name(),
        per_second: results.len() as f64 / seconds.max(1e-9),
    })
}

impl std::fmt::Display for SizeReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            formatter,
            "{}: {} variables, {} constraints, {} non-zeros (LP built in {:.2} s)",
            self.label, self.variables, self.constraints, self.nonzeros, self.build_seconds
        )?;
        for solve in &self.solves {
            match &solve.outcome {
                Ok(objective) => writeln!(
                    formatter,
                    "  {:<9} solved and checked in {:.2} s; objective {objective:.1} $M",
                    solve.solver, solve.seconds
                )?,
                Err(error) => writeln!(
                    formatter,
                    "  {:<9} failed after {:.2} s: {error}",
                    solve.solver, solve.seconds
                )?,
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for SweepReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "sweep: {} points of the baseline scenario ({} failed) in {:.2} s on {} threads with {} → {:.1} solves/s",
            self.points, self.failed, self.seconds, self.threads, self.solver, self.per_second
        )
    }
}
