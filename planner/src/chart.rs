//! SVG charts written by hand (no plotting service): the spend split over time, and the
//! quality-vs-cost frontier. Every series is a `<g class="series" data-series="…">` so tests
//! and scripts can find it.

use std::fmt::Write as _;

use crate::report::Plan;
use crate::sweep::FrontierPoint;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 180.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;

/// One named series of values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Identifier used in `data-series` (`capex-gpus`).
    pub id: &'static str,
    /// Legend text.
    pub label: &'static str,
    /// Fill colour.
    pub colour: &'static str,
    /// One value per x position.
    pub values: Vec<f64>,
}

/// The spend series of a plan, $M per period: GPU capex, building capex, rental,
/// electricity, operations.
pub fn spend_series(plan: &Plan) -> Vec<Series> {
    let pick =
        |select: fn(&crate::report::PeriodResult) -> f64| plan.periods.iter().map(select).collect();
    vec![
        Series {
            id: "capex-gpus",
            label: "GPU capex",
            colour: "#4e79a7",
            values: pick(|period| period.capex_gpus_musd),
        },
        Series {
            id: "capex-buildings",
            label: "build capex",
            colour: "#a0cbe8",
            values: pick(|period| period.capex_buildings_musd),
        },
        Series {
            id: "rent",
            label: "rental",
            colour: "#f28e2b",
            values: pick(|period| period.rent_musd),
        },
        Series {
            id: "energy",
            label: "electricity",
            colour: "#59a14f",
            values: pick(|period| period.energy_musd),
        },
        Series {
            id: "operations",
            label: "operations",
            colour: "#edc948",
            values: pick(|period| period.operations_musd),
        },
    ]
}

/// The GPU-hour series of a plan, millions per period, by stage.
pub fn hours_series(plan: &Plan) -> Vec<Series> {
    let pick =
        |select: fn(&crate::report::PeriodResult) -> f64| plan.periods.iter().map(select).collect();
    vec![
        Series {
            id: "pretraining",
            label: "pre-training",
            colour: "#e15759",
            values: pick(|period| period.hours.pretraining),
        },
        Series {
            id: "post-training",
            label: "post-training",
            colour: "#b07aa1",
            values: pick(|period| period.hours.post_training),
        },
        Series {
            id: "inference",
            label: "test-time",
            colour: "#76b7b2",
            values: pick(|period| period.hours.inference),
        },
    ]
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" axis maximum and tick step for values up to `maximum`.
fn axis(maximum: f64) -> (f64, f64) {
    if maximum <= 0.0 || !maximum.is_finite() {
        return (1.0, 0.25);
    }
    let magnitude = 10f64.powf(maximum.log10().floor());
    let step = [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| maximum / step <= 6.0)
        .unwrap_or(magnitude * 10.0);
    ((maximum / step).ceil() * step, step)
}

/// A stacked-bar panel at vertical offset `top`.
fn stacked_bars(
    out: &mut String,
    top: f64,
    title: &str,
    unit: &str,
    labels: &[String],
    series: &[Series],
) {
    let plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let count = labels.len().max(1);
    let totals: Vec<f64> = (0..count)
        .map(|index| {
            series
                .iter()
                .map(|one| one.values.get(index).copied().unwrap_or(0.0).max(0.0))
                .sum()
        })
        .collect();
    let (maximum, step) = axis(totals.iter().copied().fold(0.0, f64::max));
    let base = top + MARGIN_TOP + plot_height;
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        top + 22.0,
        escape(title)
    );
    let mut tick = 0.0;
    while tick <= maximum + step * 1e-9 {
        let y = base - plot_height * tick / maximum;
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN_LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_width,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            format_tick(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" font-size="12" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
        base - plot_height / 2.0,
        base - plot_height / 2.0,
        escape(unit)
    );
    let slot = plot_width / count as f64;
    let bar = slot * 0.7;
    let mut stacked = vec![0.0; count];
    for one in series {
        let _ = writeln!(
            out,
            r#"<g class="series" data-series="{}" fill="{}">"#,
            one.id, one.colour
        );
        for (index, height) in stacked.iter_mut().enumerate() {
            let value = one.values.get(index).copied().unwrap_or(0.0).max(0.0);
            let x = MARGIN_LEFT + slot * index as f64 + (slot - bar) / 2.0;
            let y_top = base - plot_height * (*height + value) / maximum;
            let pixels = plot_height * value / maximum;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y_top:.1}" width="{bar:.1}" height="{pixels:.1}" data-value="{value:.4}"><title>{} {}: {value:.1}</title></rect>"#,
                escape(one.label),
                escape(&labels[index])
            );
            *height += value;
        }
        out.push_str("</g>\n");
    }
    let every = count.div_ceil(12);
    for (index, label) in labels.iter().enumerate().step_by(every) {
        let x = MARGIN_LEFT + slot * (index as f64 + 0.5);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            base + 16.0,
            escape(label)
        );
    }
    legend(out, top, series.iter().map(|one| (one.label, one.colour)));
}

fn legend<'a>(out: &mut String, top: f64, entries: impl Iterator<Item = (&'a str, &'a str)>) {
    let x = WIDTH - MARGIN_RIGHT + 16.0;
    for (index, (label, colour)) in entries.enumerate() {
        let y = top + MARGIN_TOP + 20.0 * index as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            x + 18.0,
            y + 11.0,
            escape(label)
        );
    }
}

fn format_tick(value: f64) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The quality-vs-cost frontier panel: accuracy reached against total spend.
fn frontier_panel(out: &mut String, top: f64, points: &[FrontierPoint]) {
    let plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let base = top + MARGIN_TOP + plot_height;
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="{}" font-size="15" font-weight="bold">Quality vs. cost frontier (raising every service's minimum accuracy)</text>"#,
        top + 22.0
    );
    let low_cost = points
        .iter()
        .map(|point| point.cost_musd)
        .fold(f64::INFINITY, f64::min);
    let high_cost = points
        .iter()
        .map(|point| point.cost_musd)
        .fold(f64::NEG_INFINITY, f64::max);
    let low_accuracy = points
        .iter()
        .map(|point| point.accuracy)
        .fold(f64::INFINITY, f64::min);
    let high_accuracy = points
        .iter()
        .map(|point| point.accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = |low: f64, high: f64| {
        if high - low > 1e-12 {
            (low, high)
        } else {
            (
                low - 0.5 * low.abs().max(1e-3),
                high + 0.5 * high.abs().max(1e-3),
            )
        }
    };
    let (low_cost, high_cost) = span(low_cost, high_cost);
    let (low_accuracy, high_accuracy) = span(low_accuracy, high_accuracy);
    let x_of = |cost: f64| MARGIN_LEFT + plot_width * (cost - low_cost) / (high_cost - low_cost);
    let y_of = |accuracy: f64| {
        base - plot_height * (accuracy - low_accuracy) / (high_accuracy - low_accuracy)
    };
    let _ = writeln!(
        out,
        r##"<line x1="{MARGIN_LEFT}" x2="{}" y1="{base}" y2="{base}" stroke="#333"/><line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{}" y2="{base}" stroke="#333"/>"##,
        MARGIN_LEFT + plot_width,
        top + MARGIN_TOP
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">cost, $M</text>"#,
        MARGIN_LEFT + plot_width / 2.0,
        base + 36.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="{}" font-size="11">{low_cost:.0}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{high_cost:.0}</text>"#,
        base + 16.0,
        MARGIN_LEFT + plot_width,
        base + 16.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{high_accuracy:.3}</text><text x="{}" y="{base}" font-size="11" text-anchor="end">{low_accuracy:.3}</text>"#,
        MARGIN_LEFT - 6.0,
        top + MARGIN_TOP + 4.0,
        MARGIN_LEFT - 6.0
    );
    let path: Vec<String> = points
        .iter()
        .map(|point| format!("{:.1},{:.1}", x_of(point.cost_musd), y_of(point.accuracy)))
        .collect();
    let _ = writeln!(
        out,
        r##"<g class="series" data-series="frontier" stroke="#e15759" fill="#e15759"><polyline points="{}" fill="none" stroke-width="2"/>"##,
        path.join(" ")
    );
    for point in points {
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" data-cost="{:.4}" data-accuracy="{:.5}"><title>min accuracy {:.3}: accuracy {:.3} for {:.0} $M</title></circle>"#,
            x_of(point.cost_musd),
            y_of(point.accuracy),
            point.cost_musd,
            point.accuracy,
            point.min_accuracy,
            point.accuracy,
            point.cost_musd
        );
    }
    out.push_str("</g>\n");
    legend(out, top, std::iter::once(("frontier", "#e15759")));
}

/// The whole chart for a plan: spend split, GPU-hours by stage, and (when given) the
/// quality-vs-cost frontier.
pub fn plan_chart(plan: &Plan, frontier: Option<&[FrontierPoint]>) -> String {
    let panels = if frontier.is_some_and(|points| !points.is_empty()) {
        3.0
    } else {
        2.0
    };
    let height = PANEL_HEIGHT * panels;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<title>gpufleet plan: {}</title><rect width="100%" height="100%" fill="white"/>"#,
        escape(&plan.scenario)
    );
    let labels: Vec<String> = plan
        .periods
        .iter()
        .map(|period| period.label.clone())
        .collect();
    stacked_bars(
        &mut out,
        0.0,
        &format!("{}: spend by period", plan.scenario),
        "$M per period",
        &labels,
        &spend_series(plan),
    );
    stacked_bars(
        &mut out,
        PANEL_HEIGHT,
        "GPU-hours by stage",
        "million GPU-hours",
        &labels,
        &hours_series(plan),
    );
    if let Some(points) = frontier.filter(|points| !points.is_empty()) {
        frontier_panel(&mut out, PANEL_HEIGHT * 2.0, points);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scenario, SolverChoice, library, plan};

    fn series_values(svg: &str, id: &str) -> Vec<f64> {
        let start = svg
            .find(&format!(r#"data-series="{id}""#))
            .unwrap_or_else(|| panic!("no series {id}"));
        let end = start + svg[start..].find("</g>").unwrap();
        svg[start..end]
            .split("data-value=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
            .collect()
    }

    #[test]
    fn chart_has_every_series_with_the_plans_numbers() {
        let scenario = Scenario::from_yaml(library::text("baseline").unwrap()).unwrap();
        let plan = plan(&scenario, SolverChoice::Clarabel).unwrap();
        let frontier = crate::sweep::frontier(&scenario, SolverChoice::Clarabel, 4);
        assert!(frontier.len() >= 2, "{frontier:?}");
        let svg = plan_chart(&plan, Some(&frontier));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for series in spend_series(&plan).iter().chain(hours_series(&plan).iter()) {
            let drawn = series_values(&svg, series.id);
            assert_eq!(drawn.len(), plan.periods.len(), "{}", series.id);
            for (drawn, expected) in drawn.iter().zip(&series.values) {
                assert!(
                    (drawn - expected.max(0.0)).abs() < 1e-3 * (1.0 + expected.abs()),
                    "{}",
                    series.id
                );
            }
        }
        let inference: f64 = series_values(&svg, "inference").iter().sum();
        assert!((inference - plan.totals.hours.inference).abs() < 1e-2 * (1.0 + inference));
        assert_eq!(svg.matches("<circle").count(), frontier.len());
        // Frontier: more accuracy never costs less.
        for pair in frontier.windows(2) {
            assert!(pair[1].accuracy >= pair[0].accuracy - 1e-6);
            assert!(pair[1].cost_musd >= pair[0].cost_musd - 1e-3 * pair[0].cost_musd.abs());
        }
    }

    #[test]
    fn axis_ticks_cover_the_maximum() {
        for maximum in [0.3, 7.0, 123.0, 98_765.0] {
            let (top, step) = axis(maximum);
            assert!(top >= maximum && top / step <= 6.0 + 1e-9);
        }
    }
}
