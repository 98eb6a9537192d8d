//! The flags every measuring command shares (output files, label, watched processes) and
//! the parsing helpers of the others: durations, `NAME=PID`, usage errors (exit code 64).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Output options shared by the measuring subcommands.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print the JSON report on stdout instead of the table.
    #[arg(long, env = "CHAT_BENCH_JSON")]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, env = "CHAT_BENCH_JSON_FILE", value_name = "FILE")]
    pub json_file: Option<PathBuf>,
    /// Write an SVG plot: latency by percentile and the rate over time.
    #[arg(long, env = "CHAT_BENCH_PLOT", value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// A label for the report and plot (e.g. "via chat-lb").
    #[arg(long, env = "CHAT_BENCH_LABEL", default_value = "")]
    pub label: String,
    /// A process to report CPU and memory of, as NAME=PID (repeatable).
    #[arg(
        long = "watch-pid",
        env = "CHAT_BENCH_WATCH_PID",
        value_name = "NAME=PID",
        value_delimiter = ','
    )]
    pub watch_pid: Vec<String>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, env = "CHAT_BENCH_NO_PROGRESS")]
    pub no_progress: bool,
}

/// A usage problem found after parsing: reported in one line, exit code 64.
#[derive(Debug)]
pub struct InvalidArgs(pub String);

impl fmt::Display for InvalidArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidArgs {}

/// An [`InvalidArgs`] error from anything printable.
pub fn invalid(problem: impl fmt::Display) -> anyhow::Error {
    InvalidArgs(format!("{problem:#}")).into()
}

/// Parses `10`, `1.5`, `10s`, `250ms`, `2m` into a duration.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 250ms)"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{text:?} is not a duration (e.g. 10s, 250ms)"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Durations appear in the JSON parameters as seconds.
pub fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The `--watch-pid NAME=PID,...` flags, parsed.
pub fn watched_arg(specs: &[String]) -> anyhow::Result<Vec<crate::usage::Watched>> {
    specs
        .iter()
        .map(|s| crate::usage::parse_watched(s))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(invalid)
}
