//! SVG plots with `plotters`: a latency-by-percentile curve (the tail
//! stretched out: 90 %, 99 %, 99.9 % are equally spaced) and a rate over time.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::latency::LatencySummary;

/// Size of a plot in pixels.
const SIZE: (u32, u32) = (960, 760);

/// Colours of the compared series, in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];

/// Deepest tail shown: six nines.
const MAX_NINES: f64 = 6.0;

/// Percentile to x: "number of nines", 90 % -> 1, 99 % -> 2.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(10f64.powf(-MAX_NINES));
    -rest.log10()
}

/// x back to a percentile label: 1 -> "90%", 3 -> "99.9%".
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// One labelled latency curve as plot points; the 100th percentile (the
/// max) is drawn half a "nine" past the deepest finite point.
fn curve(summary: &LatencySummary) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    for &[p, us] in &summary.distribution {
        let x = if p >= 100.0 {
            (points.last().map_or(0.0, |&(x, _)| x) + 0.5).min(MAX_NINES)
        } else {
            nines(p)
        };
        points.push((x, us.max(0.001)));
    }
    points
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

/// Draws latency curves (one per series) on `area`.
fn draw_latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(&str, &LatencySummary)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, s)| (*label, curve(s)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let all = curves.iter().flat_map(|(_, c)| c.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::MAX, 0.0f64);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if y_max <= 0.0 {
        (y_min, y_max) = (1.0, 10.0);
    }
    let x_max = x_max.ceil();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, (y_min * 0.8..y_max * 1.25).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format_axis_value(*y))
        .draw()
        .map_err(plot_err)?;
    for (i, (label, points)) in curves.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// Draws a rate (or count) over time on `area`.
fn draw_timeline<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    unit: &str,
    points: &[[f64; 2]],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let x_max = points.iter().map(|p| p[0]).fold(1.0f64, f64::max);
    let y_max = points.iter().map(|p| p[1]).fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{unit} over time"), ("sans-serif", 20))
        .margin(14)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max * 1.1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(unit)
        .y_label_formatter(&|y| format_axis_value(*y))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p[0], p[1])),
            PALETTE[0].stroke_width(2),
        ))
        .map_err(plot_err)?;
    Ok(())
}

/// 1500000 -> "1.5M", 2500 -> "2.5k", 0.5 -> "0.5".
fn format_axis_value(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

/// One run: its latency curve on top, its timeline below.
pub fn plot_run(
    path: &Path,
    title: &str,
    latency: &LatencySummary,
    timeline_unit: &str,
    timeline: &[[f64; 2]],
) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (upper, lower) = root.split_vertically(SIZE.1 * 55 / 100);
    draw_latency(&upper, title, &[("latency", latency)])?;
    draw_timeline(&lower, timeline_unit, timeline)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Several runs' latency curves on one plot, for comparisons.
pub fn plot_compare(path: &Path, title: &str, series: &[(&str, &LatencySummary)]) -> Result<()> {
    let root = SVGBackend::new(path, (SIZE.0, SIZE.1 * 6 / 10)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    draw_latency(&root, title, series)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::new_histogram;

    #[test]
    fn percentile_axis_counts_nines() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(nines(100.0), MAX_NINES);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(format_axis_value(1_500_000.0), "1.5M");
        assert_eq!(format_axis_value(2_000.0), "2k");
        assert_eq!(format_axis_value(0.25), "0.25");
    }

    #[test]
    fn plots_are_written_as_svg() {
        let mut hist = new_histogram();
        for i in 1..=10_000u64 {
            hist.record(i * 997).unwrap();
        }
        let summary = LatencySummary::from_histogram(&hist);
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run.svg");
        plot_run(
            &run,
            "test run",
            &summary,
            "deliveries/s",
            &[[0.0, 0.0], [1.0, 5.0], [2.0, 7.0]],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&run).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("test run") && svg.contains("99.9%"),
            "{svg:.300}"
        );
        let cmp = dir.path().join("cmp.svg");
        plot_compare(&cmp, "compare", &[("a", &summary), ("b", &summary)]).unwrap();
        let svg = std::fs::read_to_string(&cmp).unwrap();
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        assert!(
            ["compare", "a", "b"].iter().all(|t| texts.contains(t)),
            "{svg:.300}"
        );
    }
}
