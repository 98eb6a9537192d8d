//! Writes what a measuring run asked for: the JSON report file, the SVG plot, and the
//! table (or the JSON) on stdout.

use anyhow::Result;
use serde::Serialize;

use crate::args::OutputArgs;
use crate::plot;
use crate::report::{Report, Results};

/// Prints the report and writes the files asked for.
pub fn emit<R: Results + Serialize>(report: &Report<R>, output: &OutputArgs) -> Result<()> {
    if let Some(path) = &output.json_file {
        report.write_json(path)?;
    }
    if let Some(path) = &output.plot {
        let title = match report.label.as_str() {
            "" => format!("chat-bench {}: {}", report.scenario, report.latency_kind),
            label => format!(
                "chat-bench {} ({label}): {}",
                report.scenario, report.latency_kind
            ),
        };
        plot::plot_run(
            path,
            &title,
            &report.latency,
            &report.timeline_unit,
            &report.timeline,
        )?;
    }
    if output.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
