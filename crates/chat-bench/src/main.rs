//! `chat-bench`: parses flags, starts the runtime, runs one scenario and
//! writes its report (table or JSON on stdout, optional JSON file and SVG).

mod cli;
mod cluster;
mod connections;
mod echo;
mod failover;
mod fanout;
mod lean_frame;
mod local_ips;
mod member;
mod payload;
mod pingpong;
mod suite;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::error::ErrorKind;
use clap::Parser as _;

// The measuring toolkit, under the names the scenarios use (`crate::latency`, ...).
use chat_measure::{latency, pacing, plot, progress, report, usage};

use crate::cli::{Cli, Command, InvalidArgs, PlotArgs};
use crate::latency::LatencySummary;
use chat_measure::output::emit;

/// Exit code for invalid usage (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            eprintln!(
                "chat-bench: invalid configuration: {}",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        if threads == 0 {
            eprintln!("chat-bench: invalid configuration: --threads must be at least 1");
            return ExitCode::from(EXIT_USAGE);
        }
        runtime.worker_threads(threads);
    }
    let result = runtime
        .build()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(run(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<InvalidArgs>().is_some() => {
            eprintln!("chat-bench: invalid configuration: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("chat-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    // Thousands of connections are thousands of files.
    usage::raise_fd_limit();
    match command {
        Command::Fanout(args) => {
            let output = args.output.clone();
            emit(&fanout::run(args).await?, &output)
        }
        Command::Connections(args) => {
            let output = args.output.clone();
            emit(&connections::run(args).await?, &output)
        }
        Command::Failover(args) => {
            let output = args.output.clone();
            emit(&failover::run(args).await?, &output)
        }
        Command::Pingpong(args) => {
            let output = args.output.clone();
            emit(&pingpong::run(args).await?, &output)
        }
        Command::EchoServer(args) => echo::run(args).await,
        Command::Floor(args) => {
            let output = args.output.clone();
            emit(&chat_yardstick::floor::run(args).await?, &output)
        }
        Command::Relay(args) => {
            tokio::task::spawn_blocking(move || chat_yardstick::relay::serve(&args))
                .await
                .context("relay task failed")?
        }
        Command::Plot(args) => compare(&args),
        Command::Suite(args) => suite::run(args).await,
    }
}

/// `chat-bench plot`: the latency curves of several reports in one SVG.
fn compare(args: &PlotArgs) -> Result<()> {
    let mut series = Vec::new();
    for path in &args.reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let latency: LatencySummary = serde_json::from_value(value["latency"].clone())
            .with_context(|| format!("{} has no latency summary", path.display()))?;
        let label = match value["label"].as_str() {
            Some(label) if !label.is_empty() => label.to_owned(),
            _ => file_stem(path),
        };
        series.push((label, latency));
    }
    let borrowed: Vec<(&str, &LatencySummary)> =
        series.iter().map(|(l, s)| (l.as_str(), s)).collect();
    plot::plot_compare(&args.out, &args.title, &borrowed)
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}
