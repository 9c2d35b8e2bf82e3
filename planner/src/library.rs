//! The shipped scenarios, embedded in the binary so `gpufleet plan run baseline` needs no file.
//! Each file cites its sources in comments.

/// (name, YAML text) of every shipped scenario.
pub const SHIPPED: [(&str, &str); 7] = [
    ("baseline", include_str!("../scenarios/baseline.yaml")),
    (
        "deepseek-shock",
        include_str!("../scenarios/deepseek-shock.yaml"),
    ),
    (
        "test-time-scaling",
        include_str!("../scenarios/test-time-scaling.yaml"),
    ),
    (
        "microsoft-2025",
        include_str!("../scenarios/microsoft-2025.yaml"),
    ),
    ("meta-2025", include_str!("../scenarios/meta-2025.yaml")),
    (
        "export-controls",
        include_str!("../scenarios/export-controls.yaml"),
    ),
    ("jevons", include_str!("../scenarios/jevons.yaml")),
];

/// The YAML text of a shipped scenario.
pub fn text(name: &str) -> Option<&'static str> {
    SHIPPED
        .iter()
        .find(|(shipped, _)| *shipped == name)
        .map(|(_, text)| *text)
}

/// Names of the shipped scenarios, comma-separated (for error messages).
pub fn names() -> String {
    SHIPPED
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scenario, SolverChoice, plan};

    #[test]
    fn every_shipped_scenario_parses_validates_cites_sources_and_solves() {
        for (name, text) in SHIPPED {
            let scenario =
                Scenario::from_yaml(text).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(scenario.name, name);
            assert!(!scenario.sources.is_empty(), "{name} cites no sources");
            let plan = plan(&scenario, SolverChoice::Clarabel)
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(plan.totals.hours.total() > 0.0, "{name}");
            assert!(
                (plan.objective_musd - plan.recomputed_objective_musd).abs()
                    <= 1e-6 * (1.0 + plan.objective_musd.abs()) * 10.0
            );
        }
    }
}
