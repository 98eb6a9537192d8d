//! The Prometheus text exposition format (version 0.0.4), written by hand: both servers
//! render a few dozen plain counters and gauges from atomics, which needs no registry.
//!
//! Metric names are a public interface (dashboards, alerts and the tests scrape them); this
//! writer only formats, each server owns its names.

use std::fmt::{Display, Write as _};

/// The kind a `# TYPE` line declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (resets with the process).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A label: name and value. Values are escaped on output.
pub type Label<'a> = (&'a str, &'a str);

/// Appends metric families to a `String`.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    /// A writer whose buffer starts with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
        }
    }

    /// The `# HELP` and `# TYPE` lines that start a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.as_str()
        );
        self
    }

    /// One sample of the family begun last, with these labels in this order.
    pub fn sample(&mut self, name: &str, labels: &[Label<'_>], value: impl Display) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_and_samples() {
        let mut w = TextWriter::default();
        w.single("up_total", Kind::Counter, "Things.", 3u64);
        w.family("by_reason", Kind::Gauge, "Per reason.")
            .sample("by_reason", &[("reason", "a"), ("b", "x")], -2i64)
            .sample("by_reason", &[("reason", "c")], 0u64);
        assert_eq!(
            w.finish(),
            "# HELP up_total Things.\n# TYPE up_total counter\nup_total 3\n\
             # HELP by_reason Per reason.\n# TYPE by_reason gauge\n\
             by_reason{reason=\"a\",b=\"x\"} -2\nby_reason{reason=\"c\"} 0\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut w = TextWriter::default();
        w.sample("m", &[("k", "q\"")], 1);
        assert_eq!(w.finish(), "m{k=\"q\\\"\"} 1\n");
    }
}
