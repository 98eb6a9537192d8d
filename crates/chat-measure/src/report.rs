//! The result of a run: one JSON document for scripts and a table for people.
//!
//! Every scenario's report has the same frame (scenario, label, parameters,
//! latency summary, timeline, the benchmark's own CPU, watched processes)
//! around its own result fields, which are flattened into the top level of
//! the JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::latency::LatencySummary;
use crate::usage::{CpuUsage, ProcessUsage};

/// A scenario's own results: its JSON fields and its table rows.
pub trait Results {
    /// Whether the run was clean (no loss, no failures); timings aside.
    fn clean(&self) -> bool;
    /// Rows for the human table, in display order.
    fn rows(&self) -> Vec<(String, String)>;
}

/// The full report of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report<R> {
    /// The scenario run (`fanout`, `failover`, ...).
    pub scenario: String,
    /// Free text from `--label` (e.g. "direct" or "via chat-lb").
    pub label: String,
    /// `chat-bench <version>`.
    pub tool: String,
    /// When the run started (Unix time, milliseconds).
    pub started_unix_ms: u64,
    /// The command-line parameters of the run.
    pub params: serde_json::Value,
    /// No loss and no failures (see each scenario for what that means).
    pub clean: bool,
    /// The scenario's own results, flattened into the report.
    #[serde(flatten)]
    pub results: R,
    /// What `latency` measures, for readers of the JSON.
    pub latency_kind: String,
    /// The latency percentiles of the measured window.
    pub latency: LatencySummary,
    /// What the timeline's values are (e.g. "deliveries/s").
    pub timeline_unit: String,
    /// (seconds since the start, value) once per sampling interval.
    pub timeline: Vec<[f64; 2]>,
    /// The benchmark's own CPU use over the run: near 2.0 on two cores means
    /// the load generator, not the server, may have been the limit.
    pub bench_cpu: CpuUsage,
    /// Processes given with `--watch-pid`.
    pub processes: Vec<ProcessUsage>,
}

/// What every scenario measures around its own results.
pub struct Measured {
    /// What `latency` measures (e.g. "end-to-end latency").
    pub latency_kind: &'static str,
    /// The latency percentiles of the measured window.
    pub latency: LatencySummary,
    /// What the timeline's values are (e.g. "deliveries/s").
    pub timeline_unit: &'static str,
    /// (seconds since the start, value) once per sampling interval.
    pub timeline: Vec<[f64; 2]>,
    /// The bench's own CPU use over the window.
    pub bench_cpu: CpuUsage,
    /// The watched processes over the window.
    pub processes: Vec<ProcessUsage>,
}

impl<R: Results + Serialize> Report<R> {
    /// A scenario's report. The frame is derived: the tool's name, the
    /// parameters from `args`, and whether the run was clean from `results`.
    pub fn new(
        scenario: &str,
        args: &impl Serialize,
        label: &str,
        started_unix_ms: u64,
        results: R,
        measured: Measured,
    ) -> Result<Self> {
        Ok(Self {
            scenario: scenario.into(),
            label: label.into(),
            tool: tool_name(),
            started_unix_ms,
            params: serde_json::to_value(args)?,
            clean: results.clean(),
            results,
            latency_kind: measured.latency_kind.into(),
            latency: measured.latency,
            timeline_unit: measured.timeline_unit.into(),
            timeline: measured.timeline,
            bench_cpu: measured.bench_cpu,
            processes: measured.processes,
        })
    }

    /// The JSON document (pretty-printed).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }

    /// Writes the JSON document to `path`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let title = if self.label.is_empty() {
            format!("chat-bench {}", self.scenario)
        } else {
            format!("chat-bench {} ({})", self.scenario, self.label)
        };
        rows.push((
            "result".into(),
            if self.clean {
                "clean".into()
            } else {
                "NOT CLEAN (see loss/failures)".into()
            },
        ));
        rows.extend(self.results.rows());
        let l = &self.latency;
        if l.count > 0 {
            rows.push((
                format!("{} (n={})", self.latency_kind, fmt_int(l.count)),
                String::new(),
            ));
            for (name, value) in [
                ("  p50", l.p50_us),
                ("  p90", l.p90_us),
                ("  p99", l.p99_us),
                ("  p99.9", l.p999_us),
                ("  max", l.max_us),
                ("  mean", l.mean_us),
            ] {
                rows.push((name.into(), fmt_us(value)));
            }
        }
        let cpu = &self.bench_cpu;
        rows.push(("bench cpu".into(), fmt_cpu(cpu)));
        for p in &self.processes {
            rows.push((format!("{} cpu", p.name), fmt_cpu(&p.cpu)));
            rows.push((
                format!("{} rss", p.name),
                format!(
                    "{} -> {} ({})",
                    fmt_bytes(p.rss_before_kib as i64 * 1024),
                    fmt_bytes(p.rss_after_kib as i64 * 1024),
                    fmt_signed_bytes(p.rss_growth_bytes())
                ),
            ));
        }
        render_table(&title, &rows)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `chat-bench <version>`.
pub fn tool_name() -> String {
    concat!("chat-bench ", env!("CARGO_PKG_VERSION")).to_owned()
}

/// A titled two-column table; keys padded to one width, rows without a
/// value are section headings.
pub fn render_table(title: &str, rows: &[(String, String)]) -> String {
    // Headings (rows without a value) may stick out.
    let width = rows
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(out, "{}", "-".repeat(title.chars().count().max(width + 20)));
    for (key, value) in rows {
        if value.is_empty() {
            let _ = writeln!(out, "{key}");
        } else {
            let pad = width - key.chars().count();
            let _ = writeln!(out, "{key}{}  {value}", " ".repeat(pad));
        }
    }
    out
}

/// 1234567 -> "1,234,567".
pub fn fmt_int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate, rounded to a whole number per second: "1,234,567/s".
pub fn fmt_rate(per_sec: f64) -> String {
    format!("{}/s", fmt_int(per_sec.max(0.0).round() as u64))
}

/// Microseconds in the most readable unit: "850 ns", "42.1 µs", "3.25 ms", "1.50 s".
pub fn fmt_us(us: f64) -> String {
    if us < 1.0 {
        format!("{:.0} ns", us * 1_000.0)
    } else if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// Bytes with a binary unit: "512 B", "7.9 KiB", "1.2 MiB", "3.0 GiB".
pub fn fmt_bytes(bytes: i64) -> String {
    let b = bytes.unsigned_abs() as f64;
    let sign = if bytes < 0 { "-" } else { "" };
    if b < 1024.0 {
        format!("{sign}{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{sign}{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{sign}{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// Like [`fmt_bytes`] with an explicit `+` for growth.
pub fn fmt_signed_bytes(bytes: i64) -> String {
    if bytes >= 0 {
        format!("+{}", fmt_bytes(bytes))
    } else {
        fmt_bytes(bytes)
    }
}

/// A ratio as a percentage with enough digits to show small losses.
pub fn fmt_percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == 0.0 {
        "0 %".into()
    } else if p < 0.01 {
        format!("{p:.4} %")
    } else {
        format!("{p:.2} %")
    }
}

/// CPU use for people: user and system seconds, and the share of one core.
pub fn fmt_cpu(cpu: &CpuUsage) -> String {
    format!(
        "{:.2} s user + {:.2} s sys over {:.1} s = {:.0} % of one core",
        cpu.user_secs,
        cpu.system_secs,
        cpu.wall_secs,
        cpu.cores_used * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Dummy {
        loss: u64,
    }

    impl Results for Dummy {
        fn clean(&self) -> bool {
            self.loss == 0
        }
        fn rows(&self) -> Vec<(String, String)> {
            vec![("loss".into(), fmt_int(self.loss))]
        }
    }

    fn report(loss: u64) -> Report<Dummy> {
        Report::new(
            "dummy",
            &serde_json::json!({"rate": 0}),
            "test",
            1,
            Dummy { loss },
            Measured {
                latency_kind: "end-to-end latency",
                latency: LatencySummary {
                    count: 3,
                    min_us: 1.0,
                    mean_us: 2.0,
                    p50_us: 2.0,
                    p90_us: 3.0,
                    p99_us: 3.0,
                    p999_us: 3.0,
                    max_us: 3.0,
                    distribution: vec![[0.0, 1.0], [100.0, 3.0]],
                },
                timeline_unit: "deliveries/s",
                timeline: vec![[1.0, 10.0]],
                bench_cpu: CpuUsage {
                    user_secs: 1.0,
                    system_secs: 0.5,
                    wall_secs: 3.0,
                    cores_used: 0.5,
                },
                processes: vec![ProcessUsage {
                    name: "gateway".into(),
                    pid: 9,
                    cpu: CpuUsage {
                        user_secs: 1.0,
                        system_secs: 1.0,
                        wall_secs: 2.0,
                        cores_used: 1.0,
                    },
                    rss_before_kib: 1024,
                    rss_after_kib: 3072,
                }],
            },
        )
        .unwrap()
    }

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(999), "999");
        assert_eq!(fmt_int(1_000), "1,000");
        assert_eq!(fmt_int(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(1_000_000.4), "1,000,000/s");
        assert_eq!(fmt_us(0.25), "250 ns");
        assert_eq!(fmt_us(42.14), "42.1 µs");
        assert_eq!(fmt_us(3_250.0), "3.25 ms");
        assert_eq!(fmt_us(1_500_000.0), "1.50 s");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(8 * 1024), "8.0 KiB");
        assert_eq!(fmt_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(fmt_signed_bytes(2048), "+2.0 KiB");
        assert_eq!(fmt_signed_bytes(-2048), "-2.0 KiB");
        assert_eq!(fmt_percent(0.0), "0 %");
        assert_eq!(fmt_percent(0.5), "50.00 %");
        assert_eq!(fmt_percent(0.000_01), "0.0010 %");
    }

    #[test]
    fn table_aligns_values_and_shows_every_section() {
        let table = report(0).table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "chat-bench dummy (test)");
        assert!(lines[1].chars().all(|c| c == '-'));
        let value_column = |needle: &str| {
            let line = lines
                .iter()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} in {table}"));
            line.char_indices()
                .skip(needle.len())
                .find(|(_, c)| !c.is_whitespace())
                .map(|(i, _)| line[..i].chars().count())
        };
        let col = value_column("result");
        for key in ["loss", "  p99", "bench cpu", "gateway rss"] {
            assert_eq!(value_column(key), col, "{key} misaligned in\n{table}");
        }
        assert!(table.contains("end-to-end latency (n=3)\n"), "{table}");
        assert!(table.contains("1.0 MiB -> 3.0 MiB (+2.0 MiB)"), "{table}");
        assert!(report(5).table().contains("NOT CLEAN"));
    }

    #[test]
    fn json_is_flat_and_round_trips() {
        let json = report(0).to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["scenario"], "dummy");
        assert_eq!(value["loss"], 0, "scenario fields are at the top level");
        assert_eq!(value["clean"], true);
        assert_eq!(value["latency"]["p99_us"], 3.0);
        assert_eq!(value["processes"][0]["rss_after_kib"], 3072);
        let back: Report<Dummy> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.results.loss, 0);
    }
}
