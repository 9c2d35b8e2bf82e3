//! Bad scenarios, fuzzed and tabled: whatever text a user (or the dashboard's planner page)
//! hands the planner, it answers with a plan or an error that names what to fix, and never
//! panics. Mutations start from the shipped scenarios, so they reach deep into validation and
//! the LP, not only the YAML parser.

use gpufleet_planner::{Error, Scenario, SolverChoice, library, plan};
use proptest::prelude::*;

const SHIPPED: [&str; 7] = [
    "baseline",
    "deepseek-shock",
    "test-time-scaling",
    "microsoft-2025",
    "meta-2025",
    "export-controls",
    "jevons",
];

/// Values a careless edit or a hostile request puts where a number belongs.
const BAD_VALUES: [&str; 12] = [
    "-1",
    "0",
    "1e308",
    "-1e308",
    ".nan",
    ".inf",
    "abc",
    "",
    "null",
    "[]",
    "{}",
    "99999999999999999999999",
];

/// Replaces the `nth` number of `text` (counting every run of digits) with `value`.
fn replace_nth_number(text: &str, nth: usize, value: &str) -> String {
    let bytes = text.as_bytes();
    let mut count = 0;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index].is_ascii_digit() {
            let start = index;
            while index < bytes.len() && (bytes[index].is_ascii_digit() || bytes[index] == b'.') {
                index += 1;
            }
            if count == nth {
                return format!("{}{value}{}", &text[..start], &text[index..]);
            }
            count += 1;
        } else {
            index += 1;
        }
    }
    text.to_owned()
}

/// An error a user can act on: it names a field, a line or the parse problem, not nothing.
fn assert_actionable(error: &Error) {
    let message = error.to_string();
    assert!(
        message.len() > 20,
        "an error without a useful message: {message:?}"
    );
    if let Error::InvalidScenario { field, fix, .. } = error {
        assert!(!field.is_empty() && !fix.is_empty(), "{message}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the parser.
    #[test]
    fn arbitrary_text_is_parsed_or_refused(text in ".{0,400}") {
        if let Err(error) = Scenario::from_yaml(&text) {
            assert_actionable(&error);
        }
    }

    /// A shipped scenario with one number replaced by a bad value, or one line deleted, is
    /// parsed and validated or refused with an actionable error.
    #[test]
    fn mutated_scenarios_are_validated_or_refused(
        scenario in 0..SHIPPED.len(),
        nth in 0usize..400,
        value in 0..BAD_VALUES.len(),
        drop_line in proptest::option::of(0usize..120),
    ) {
        let original = library::text(SHIPPED[scenario]).expect("shipped");
        let mut text = replace_nth_number(original, nth, BAD_VALUES[value]);
        if let Some(line) = drop_line {
            text = text
                .lines()
                .enumerate()
                .filter(|(index, _)| *index != line)
                .map(|(_, line)| line)
                .collect::<Vec<_>>()
                .join("\n");
        }
        if let Err(error) = Scenario::from_yaml(&text) {
            assert_actionable(&error);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A mutated scenario that validates is solved, or refused with an error, without a panic
    /// anywhere in model building, the solver or the report (fewer cases: each solves an LP).
    #[test]
    fn mutated_scenarios_that_validate_are_solved_or_refused(
        nth in 0usize..400,
        value in 0..BAD_VALUES.len(),
    ) {
        let original = library::text("deepseek-shock").expect("shipped");
        let text = replace_nth_number(original, nth, BAD_VALUES[value]);
        if let Ok(scenario) = Scenario::from_yaml(&text) {
            match plan(&scenario, SolverChoice::Clarabel) {
                Ok(plan) => prop_assert!(plan.to_csv().lines().count() > 1),
                Err(error) => assert_actionable(&error),
            }
        }
    }
}

/// Hand-picked mistakes, each with the words its error must contain.
#[test]
fn malformed_scenarios_name_what_to_fix() {
    let baseline = library::text("baseline").expect("shipped");
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty document", String::new(), "parse scenario"),
        (
            "not a mapping",
            "- just\n- a list\n".to_owned(),
            "parse scenario",
        ),
        (
            "unknown objective",
            baseline.replace("objective: min_cost", "objective: max_fun"),
            "objective",
        ),
        (
            "no periods",
            baseline.replace("count: 12", "count: 0"),
            "periods.count",
        ),
        (
            "negative electricity price",
            baseline.replace(
                "electricity_usd_per_kwh: 0.08",
                "electricity_usd_per_kwh: -0.08",
            ),
            "electricity_usd_per_kwh",
        ),
        (
            "PUE below 1",
            baseline.replace("pue: 1.2", "pue: 0.5"),
            "pue",
        ),
        (
            "a GPU without compute",
            baseline.replace("bf16_tflops: 312", "bf16_tflops: 0"),
            "bf16_tflops",
        ),
        (
            "empty name",
            baseline.replace("name: baseline", "name: ''"),
            "name",
        ),
        (
            "a field that does not exist",
            baseline.replace("pue: 1.2", "pue: 1.2\n  pue_typo: 3"),
            "pue_typo",
        ),
    ];
    for (what, text, expected) in cases {
        assert_ne!(text, baseline, "{what}: the mutation did not apply");
        let error = Scenario::from_yaml(&text)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_actionable(&error);
        assert!(
            error.to_string().contains(expected),
            "{what}: `{error}` does not mention `{expected}`"
        );
    }
}
