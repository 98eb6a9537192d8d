//! `chat-bench connections`: opens N members at a given rate, each joined to
//! a room, holds them idle (reading, so pings get their pongs), and reports
//! the connect rate, failures, set-up latency and, for processes given with
//! `--watch-pid`, the RSS growth per connection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use chat_client::Client;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{invalid, local_ips_arg, watched_arg, ConnectionsArgs};
use crate::latency::{LatencySummary, Shards};
use crate::local_ips::pick;
use crate::member::{failure_kind, join, run_id, ws_config};
use crate::pacing::Pacer;
use crate::progress::{Progress, Timeline, SAMPLE_EVERY};
use crate::report::{fmt_bytes, fmt_int, fmt_rate, unix_ms, Measured, Report, Results};
use crate::usage::{ProcessUsage, WindowUsage};

/// Read buffer per idle connection: idle members get presence changes only.
const READ_BUFFER: usize = 4 * 1024;

/// Pause after the last connection before memory is read, so that the
/// servers have finished the presence traffic of the last joins.
const SETTLE: Duration = Duration::from_secs(2);

/// Shared counters of the run.
#[derive(Default)]
struct Counters {
    open: AtomicU64,
    connected: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    /// Connections that ended while they should have been held, by reason.
    dropped: Mutex<BTreeMap<String, u64>>,
}

/// The results of a connections run (flattened into the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConnectionsResults {
    pub requested: usize,
    pub members_per_room: usize,
    pub connected: u64,
    pub failed: u64,
    pub failure_reasons: BTreeMap<String, u64>,
    /// From the first attempt to the last set-up finished.
    pub connect_secs: f64,
    pub connects_per_sec: f64,
    pub held_secs: f64,
    pub open_at_end: u64,
    pub dropped: u64,
    pub drop_reasons: BTreeMap<String, u64>,
    /// RSS growth per connection, in bytes, for each watched process: its
    /// growth divided by all the connections this run opened (for one of
    /// several gateways behind a balancer, that understates its own share).
    pub rss_per_connection_bytes: BTreeMap<String, f64>,
}

impl Results for ConnectionsResults {
    fn clean(&self) -> bool {
        self.failed == 0 && self.dropped == 0 && self.connected == self.requested as u64
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "requested".into(),
                format!(
                    "{} ({} per room)",
                    fmt_int(self.requested as u64),
                    self.members_per_room
                ),
            ),
            ("connected".into(), fmt_int(self.connected)),
            ("failed".into(), fmt_int(self.failed)),
        ];
        for (reason, n) in &self.failure_reasons {
            rows.push((format!("  {reason}"), fmt_int(*n)));
        }
        rows.push((
            "connect time".into(),
            format!(
                "{:.1} s ({})",
                self.connect_secs,
                fmt_rate(self.connects_per_sec)
            ),
        ));
        rows.push((
            "held".into(),
            format!(
                "{:.1} s, {} open at the end",
                self.held_secs,
                fmt_int(self.open_at_end)
            ),
        ));
        rows.push(("dropped while held".into(), fmt_int(self.dropped)));
        for (reason, n) in &self.drop_reasons {
            rows.push((format!("  {reason}"), fmt_int(*n)));
        }
        for (name, bytes) in &self.rss_per_connection_bytes {
            rows.push((
                format!("{name} rss/connection"),
                fmt_bytes(bytes.round() as i64),
            ));
        }
        rows
    }
}

/// Runs the scenario and returns its report: the members connect (at `--rate`), are held
/// for the measured window, then the report.
pub(crate) async fn run(args: ConnectionsArgs) -> Result<Report<ConnectionsResults>> {
    if args.n == 0 || args.members == 0 || args.connect_concurrency == 0 {
        return Err(invalid(
            "--n, --members and --connect-concurrency must be at least 1",
        ));
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err(invalid("--rate must be 0 or a positive number"));
    }
    let local_ips = local_ips_arg(args.local_ips.as_deref())?;
    let watched = watched_arg(&args.output.watch_pid)?;
    let started_unix_ms = unix_ms();
    let mut run = Running {
        progress: Progress::new(args.n as u64, args.output.no_progress),
        counters: Arc::new(Counters::default()),
        shards: Shards::new(4),
        stop: CancellationToken::new(),
        holders: JoinSet::new(),
        timeline: Timeline::default(),
        epoch: Instant::now(),
    };
    let mut usage = WindowUsage::new(watched);
    usage.start()?;
    run.epoch = Instant::now();
    run.timeline.value(0.0, 0.0);

    connect_all(&args, &local_ips, &mut run).await?;
    let connect_secs = run.epoch.elapsed().as_secs_f64();
    let held_secs = hold_all(&args, &mut run, &mut usage).await?;
    let open_at_end = run.counters.open.load(Relaxed);
    let (bench_cpu, processes) = usage.into_usage().expect("the hold ended");
    run.progress.finish();

    run.stop.cancel();
    while run.holders.join_next().await.is_some() {}
    let results = results(
        &args,
        &run.counters,
        connect_secs,
        held_secs,
        open_at_end,
        &processes,
    );
    Report::new(
        "connections",
        &args,
        &args.output.label,
        started_unix_ms,
        results,
        Measured {
            latency_kind: "set-up time (connect + Hello + Join)",
            latency: LatencySummary::from_histogram(&run.shards.merged()),
            timeline_unit: "open connections",
            timeline: run.timeline.into_points(),
            bench_cpu,
            processes,
        },
    )
}

/// What the phases of a run share.
struct Running {
    progress: Progress,
    counters: Arc<Counters>,
    /// Set-up latencies.
    shards: Arc<Shards>,
    /// Tells the holders to close.
    stop: CancellationToken,
    /// One task per member that connected, holding it idle.
    holders: JoinSet<()>,
    /// Open connections over time.
    timeline: Timeline,
    /// When connecting began.
    epoch: Instant,
}

/// Opens the `--n` members at `--rate`, `--connect-concurrency` at a time, each handed to
/// a holder as soon as it joined.
async fn connect_all(
    args: &ConnectionsArgs,
    local_ips: &[IpAddr],
    run: &mut Running,
) -> Result<()> {
    let id = run_id();
    run.progress.phase("connect", args.n as u64);
    let pacer = (args.rate > 0.0).then(|| Pacer::new(args.rate, Duration::ZERO));
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut setups = JoinSet::new();
    let mut last_sample = Instant::now();
    for index in 0..args.n {
        if let Some(pacer) = &pacer {
            tokio::time::sleep_until((run.epoch + pacer.due_at(index as u64)).into()).await;
        }
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("never closed");
        let url = args.url.clone();
        let room = format!("idle-{id}-{}", index / args.members);
        let username = format!("c{id}-{index}");
        let local = pick(local_ips, index);
        let mut recorder = run.shards.recorder(index);
        let shared = Arc::clone(&run.counters);
        setups.spawn(async move {
            let started = Instant::now();
            let result = join(&url, local, &username, &room, ws_config(READ_BUFFER)).await;
            drop(permit);
            match result {
                Ok(client) => {
                    recorder.record(started.elapsed().as_nanos() as u64);
                    shared.connected.fetch_add(1, Relaxed);
                    shared.open.fetch_add(1, Relaxed);
                    Some(client)
                }
                Err(e) => {
                    *shared.failures.lock().entry(failure_kind(&e)).or_default() += 1;
                    None
                }
            }
        });
        // Hand finished set-ups to holders as they come, so the set of
        // pending tasks stays small.
        while let Some(done) = futures_util::FutureExt::now_or_never(setups.join_next()).flatten() {
            if let Some(client) = done.context("set-up task failed")? {
                run.holders
                    .spawn(hold(client, Arc::clone(&run.counters), run.stop.clone()));
            }
        }
        if last_sample.elapsed() >= SAMPLE_EVERY {
            last_sample = Instant::now();
            let open = run.counters.open.load(Relaxed);
            run.timeline
                .value(run.epoch.elapsed().as_secs_f64(), open as f64);
            run.progress.update(
                index as u64,
                format!(
                    "{} open, {} failed",
                    fmt_int(open),
                    fmt_int(failed(&run.counters))
                ),
            );
        }
    }
    while let Some(done) = setups.join_next().await {
        if let Some(client) = done.context("set-up task failed")? {
            run.holders
                .spawn(hold(client, Arc::clone(&run.counters), run.stop.clone()));
        }
    }
    Ok(())
}

/// The measured window: holds every member for `--hold` (at least [`SETTLE`]), sampling
/// the open connections; ends the usage window. Returns how long it held.
async fn hold_all(
    args: &ConnectionsArgs,
    run: &mut Running,
    usage: &mut WindowUsage,
) -> Result<f64> {
    let hold_start = Instant::now();
    let hold_end = hold_start + args.hold.max(SETTLE);
    run.progress
        .phase("hold", args.hold.max(SETTLE).as_millis() as u64);
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let open = run.counters.open.load(Relaxed);
        run.timeline
            .value(now.duration_since(run.epoch).as_secs_f64(), open as f64);
        run.progress.update(
            now.duration_since(hold_start).as_millis() as u64,
            format!(
                "{} open, {} dropped",
                fmt_int(open),
                fmt_int(dropped(&run.counters))
            ),
        );
        if now >= hold_end {
            usage.end()?;
            break;
        }
    }
    Ok(hold_start.elapsed().as_secs_f64())
}

/// The scenario's own results, from the counters of a finished run.
fn results(
    args: &ConnectionsArgs,
    counters: &Counters,
    connect_secs: f64,
    held_secs: f64,
    open_at_end: u64,
    processes: &[ProcessUsage],
) -> ConnectionsResults {
    let connected = counters.connected.load(Relaxed);
    let failure_reasons = std::mem::take(&mut *counters.failures.lock());
    let drop_reasons = std::mem::take(&mut *counters.dropped.lock());
    let rss_per_connection_bytes = processes
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                if connected > 0 {
                    p.rss_growth_bytes() as f64 / connected as f64
                } else {
                    0.0
                },
            )
        })
        .collect();
    ConnectionsResults {
        requested: args.n,
        members_per_room: args.members,
        connected,
        failed: failure_reasons.values().sum(),
        failure_reasons,
        connect_secs,
        connects_per_sec: connected as f64 / connect_secs.max(1e-9),
        held_secs,
        open_at_end,
        dropped: drop_reasons.values().sum(),
        drop_reasons,
        rss_per_connection_bytes,
    }
}

fn failed(counters: &Counters) -> u64 {
    counters.failures.lock().values().sum()
}

fn dropped(counters: &Counters) -> u64 {
    counters.dropped.lock().values().sum()
}

/// Holds one idle member: reads (and discards) what arrives until stopped;
/// an end before that is counted as a drop.
async fn hold(client: Client, counters: Arc<Counters>, stop: CancellationToken) {
    let (_tx, mut rx) = client.into_split();
    let reason = tokio::select! {
        () = stop.cancelled() => None,
        reason = async {
            loop {
                match rx.next_binary().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break match rx.close_info() {
                        Some(info) => format!("closed by server: {}", info.code),
                        None => "connection ended".to_owned(),
                    },
                    Err(e) => break failure_kind(&e),
                }
            }
        } => Some(reason),
    };
    counters.open.fetch_sub(1, Relaxed);
    if let Some(reason) = reason {
        *counters.dropped.lock().entry(reason).or_default() += 1;
    }
}
