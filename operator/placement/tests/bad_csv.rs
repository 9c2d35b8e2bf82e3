//! Bad `gpufleet simulate` inputs, fuzzed and tabled: the openb-style node and pod CSV readers
//! answer any text with a trace or an error that names the line, the column and the fix, and
//! whatever they accept replays through the engine without a panic.

use gpufleet_placement::Error;
use gpufleet_placement::simulate::{GpuModelTable, parse_node_csv, parse_pod_csv};
use proptest::prelude::*;

const NODES: &str = include_str!("../testdata/openb-style-nodes.csv");
const PODS: &str = include_str!("../testdata/openb-style-pods.csv");

/// Values a broken export puts in a cell.
const BAD_CELLS: [&str; 11] = [
    "",
    "-1",
    "0",
    "abc",
    "1.5",
    "18446744073709551616",
    "NaN",
    "\"quoted\"",
    "1,2",
    "  7 ",
    "99999999999999",
];

/// `text` with the cell at (`row`, `column`) of its first 40 rows replaced by `value`.
fn replace_cell(text: &str, row: usize, column: usize, value: &str) -> String {
    text.lines()
        .take(40)
        .enumerate()
        .map(|(index, line)| {
            if index != row {
                return line.to_owned();
            }
            let mut cells: Vec<&str> = line.split(',').collect();
            let at = column % cells.len().max(1);
            if let Some(cell) = cells.get_mut(at) {
                *cell = value;
            }
            cells.join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_actionable(error: &Error) {
    let message = error.to_string();
    if let Error::Csv {
        line,
        column,
        problem,
        ..
    } = error
    {
        assert!(*line >= 1 && problem.len() > 10, "{message}");
        // A row-shape or missing-column error names the row's fields or the columns it looked
        // for instead of one cell.
        assert!(
            !column.is_empty()
                || problem.contains("column")
                || problem.contains("fields")
                || problem.contains("header"),
            "{message}"
        );
    } else {
        assert!(
            message.len() > 20,
            "an error without a useful message: {message:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_read_or_refused(text in "[a-z0-9_,.\\- \n|]{0,300}") {
        if let Err(error) = parse_node_csv("nodes.csv", &text, &GpuModelTable::default()) {
            assert_actionable(&error);
        }
        if let Err(error) = parse_pod_csv("pods.csv", &text) {
            assert_actionable(&error);
        }
    }

    /// One cell of the sample traces replaced by a bad value: refused with the cell named, or
    /// read and replayed through the engine without a panic.
    #[test]
    fn a_bad_cell_is_named_or_replayed(
        row in 0usize..40,
        column in 0usize..11,
        value in 0..BAD_CELLS.len(),
        in_nodes in any::<bool>(),
    ) {
        let (nodes, pods) = if in_nodes {
            (replace_cell(NODES, row, column, BAD_CELLS[value]), replace_cell(PODS, 0, 0, "name"))
        } else {
            (replace_cell(NODES, 0, 0, "sn"), replace_cell(PODS, row, column, BAD_CELLS[value]))
        };
        let nodes = parse_node_csv("nodes.csv", &nodes, &GpuModelTable::default());
        let pods = parse_pod_csv("pods.csv", &pods);
        match (nodes, pods) {
            (Ok(nodes), Ok(pods)) => {
                let snapshot = gpufleet_placement::FleetSnapshot { nodes: nodes.nodes, placements: Vec::new() };
                let outcomes = gpufleet_placement::plan(
                    &snapshot,
                    &pods.requests,
                    gpufleet_placement::EngineConfig::default(),
                );
                if let Err(error) = outcomes {
                    assert_actionable(&error);
                }
            }
            (Err(error), _) | (_, Err(error)) => assert_actionable(&error),
        }
    }
}

/// Hand-picked mistakes, each with the words its error must contain.
#[test]
fn malformed_traces_name_the_line_and_column() {
    let models = GpuModelTable::default();
    let node_cases = [
        ("no header", "", "header"),
        (
            "missing model column",
            "sn,cpu_milli,memory_mib,gpu\nn0,1000,1024,8\n",
            "model",
        ),
        (
            "negative GPUs",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,1000,1024,-8,V100M16\n",
            "gpu",
        ),
        (
            "text for memory",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,1000,lots,8,V100M16\n",
            "memory_mib",
        ),
        (
            "short row",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,1000\n",
            "line 2",
        ),
    ];
    for (what, text, expected) in node_cases {
        let error = parse_node_csv("nodes.csv", text, &models)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_actionable(&error);
        assert!(
            error.to_string().contains(expected),
            "{what}: `{error}` does not mention `{expected}`"
        );
    }
    let header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,creation_time,deletion_time";
    let pod_cases = [
        (
            "missing gpu_milli",
            "name,cpu_milli,memory_mib,num_gpu\np,1,1,1\n".to_owned(),
            "gpu_milli",
        ),
        (
            "share above a GPU",
            format!("{header}\np,1,1,1,1500,,0,10\n"),
            "gpu_milli",
        ),
        (
            "text for a time",
            format!("{header}\np,1,1,1,1000,,soon,10\n"),
            "creation_time",
        ),
        (
            "negative GPUs",
            format!("{header}\np,1,1,-1,1000,,0,10\n"),
            "num_gpu",
        ),
    ];
    for (what, text, expected) in pod_cases {
        let error = parse_pod_csv("pods.csv", &text)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_actionable(&error);
        assert!(
            error.to_string().contains(expected),
            "{what}: `{error}` does not mention `{expected}`"
        );
    }
}
