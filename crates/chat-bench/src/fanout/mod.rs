//! `chat-bench fanout`: R rooms of M members, P publishers per room sending
//! stamped messages; every member (publishers included: the sender gets its
//! own message too) records end-to-end latency.
//!
//! Accounting: the run has a warm-up and a measured window, both defined on
//! the send timestamps carried in the messages. A message is *measured*
//! when it was sent inside the window; the publisher counts its Ack, every
//! member counts its delivery. Expected deliveries = measured Acks x M, loss =
//! expected - received (after a drain wait), duplicates = a publisher's
//! sequence number seen again or out of order by a member.
//!
//! Publishers either follow a schedule (`--rate`, see [`crate::pacing`]) or,
//! at rate 0, keep a bounded window of messages in flight that an Ack (or
//! the publisher's own copy, `--window-release echo`) frees.
//!
//! `tasks.rs` holds the members' and publishers' tasks; this file the run's set-up, its
//! measured window and its report.

mod tasks;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use chat_client::{ClientReceiver, ClientSender};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{invalid, local_ips_arg, watched_arg, FanoutArgs};
use crate::latency::LatencySummary;
use crate::local_ips::pick;
use crate::member::{failure_kind, join, run_id, ws_config};
use crate::payload::check_chat_size;
use crate::progress::{Progress, Timeline, SAMPLE_EVERY};
use crate::report::{fmt_int, fmt_percent, fmt_rate, unix_ms, Measured, Report, Results};
use crate::usage::{CpuUsage, ProcessUsage, WindowUsage};

use self::tasks::Tasks;

/// The drain ends early when nothing moved for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(3);

/// Read buffer per member connection. tungstenite zero-fills the free part
/// of its read buffer before every read, so a big buffer costs a big memset
/// per read even when one small frame arrives: 8 KiB still takes dozens of
/// chat frames per read when they pile up.
const READ_BUFFER: usize = 8 * 1024;

/// The results of a fan-out run (flattened into the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FanoutResults {
    pub rooms: usize,
    pub members_per_room: usize,
    pub publishers_per_room: usize,
    pub connections: usize,
    pub setup_secs: f64,
    pub measured_secs: f64,
    /// Measured messages sent, acknowledged, refused.
    pub sent: u64,
    pub acked: u64,
    pub send_errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Acked x members per room.
    pub expected_deliveries: u64,
    pub received: u64,
    pub loss: u64,
    pub loss_ratio: f64,
    /// A sequence number seen again or out of order by a member.
    pub duplicates: u64,
    pub messages_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub disconnects: u64,
    pub disconnect_reasons: BTreeMap<String, u64>,
    /// Paced runs: how far behind its schedule a publisher fell at worst.
    pub max_pacing_lag_ms: f64,
    /// Time waited after the window for outstanding deliveries.
    pub drain_secs: f64,
}

impl Results for FanoutResults {
    fn clean(&self) -> bool {
        self.received > 0
            && self.loss == 0
            && self.received == self.expected_deliveries
            && self.duplicates == 0
            && self.disconnects == 0
            && self.send_errors == 0
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "members".into(),
                format!(
                    "{} ({} room(s) x {}, {} publisher(s) per room)",
                    fmt_int(self.connections as u64),
                    self.rooms,
                    fmt_int(self.members_per_room as u64),
                    self.publishers_per_room
                ),
            ),
            ("set-up".into(), format!("{:.1} s", self.setup_secs)),
            (
                "measured".into(),
                format!(
                    "{:.1} s (+ {:.1} s drain)",
                    self.measured_secs, self.drain_secs
                ),
            ),
            ("sent".into(), fmt_int(self.sent)),
            (
                "acked".into(),
                format!(
                    "{} ({})",
                    fmt_int(self.acked),
                    fmt_rate(self.messages_per_sec)
                ),
            ),
            ("send errors".into(), fmt_int(self.send_errors)),
            (
                "expected deliveries".into(),
                fmt_int(self.expected_deliveries),
            ),
            ("received".into(), fmt_int(self.received)),
            (
                "loss".into(),
                format!("{} ({})", fmt_int(self.loss), fmt_percent(self.loss_ratio)),
            ),
            ("duplicates".into(), fmt_int(self.duplicates)),
            ("deliveries/s".into(), fmt_rate(self.deliveries_per_sec)),
            ("disconnects".into(), fmt_int(self.disconnects)),
        ];
        for (code, n) in &self.errors_by_code {
            rows.push((format!("  error {code}"), fmt_int(*n)));
        }
        for (reason, n) in &self.disconnect_reasons {
            rows.push((format!("  {reason}"), fmt_int(*n)));
        }
        if self.max_pacing_lag_ms > 0.0 {
            rows.push((
                "max pacing lag".into(),
                format!("{:.2} ms", self.max_pacing_lag_ms),
            ));
        }
        rows
    }
}

/// Runs the scenario and returns its report: set-up (every member connected and joined),
/// the measured window (with its warm-up and drain), the wind-down, the report.
pub(crate) async fn run(args: FanoutArgs) -> Result<Report<FanoutResults>> {
    validate(&args)?;
    let local_ips = local_ips_arg(args.local_ips.as_deref())?;
    let watched = watched_arg(&args.output.watch_pid)?;
    let started_unix_ms = unix_ms();
    let total = args.rooms * args.members;
    let progress = Progress::new(total as u64, args.output.no_progress);
    let run = run_id();
    let rooms: Vec<String> = (0..args.rooms)
        .map(|r| format!("bench-{run}-{r}"))
        .collect();

    progress.phase("connect", total as u64);
    let setup_start = Instant::now();
    let members = connect_all(&args, &run, &rooms, &local_ips, &progress).await?;
    let setup_secs = setup_start.elapsed().as_secs_f64();

    let mut tasks = Tasks::start(&args, &rooms, members);
    let window = measure(&args, &mut tasks, &progress, WindowUsage::new(watched)).await?;
    let duplicates = tasks.wind_down().await?;
    report(
        &args,
        started_unix_ms,
        setup_secs,
        &tasks,
        window,
        duplicates,
    )
}

/// What the measured window leaves for the report.
struct Window {
    timeline: Timeline,
    bench_cpu: CpuUsage,
    processes: Vec<ProcessUsage>,
    /// Time waited after the window for outstanding deliveries.
    drain_secs: f64,
}

/// Watches the run through its warm-up, its measured window and the drain after it (until
/// every expected delivery arrived, nothing moved for [`DRAIN_QUIET`], or
/// `--drain-timeout`), sampling the rate and the watched processes.
async fn measure(
    args: &FanoutArgs,
    tasks: &mut Tasks,
    progress: &Progress,
    mut usage: WindowUsage,
) -> Result<Window> {
    let clock = Arc::clone(&tasks.clock);
    let (start_at, end_at) = clock.window();
    progress.phase("warm-up", (args.warmup + args.duration).as_millis() as u64);
    let mut timeline = Timeline::default();
    timeline.rate(0.0, 0);
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.tick().await; // the first tick is immediate
    let mut ended_at = None;
    let mut last_change = (Instant::now(), 0u64, 0u64);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let t = now.duration_since(clock.epoch).as_secs_f64();
        let rate = timeline.rate(t, tasks.shards.total());
        if !usage.started() && now >= start_at {
            usage.start()?;
            progress.phase("measure", args.duration.as_millis() as u64);
        }
        if ended_at.is_none() && now >= end_at {
            usage.end()?;
            ended_at = Some(now);
            progress.phase("drain", args.drain_timeout.as_millis() as u64);
        }
        let (received, expect) = (tasks.shards.measured(), tasks.expected(args.members));
        let position = match ended_at {
            Some(ended) => now.duration_since(ended),
            None if usage.started() => now.saturating_duration_since(start_at),
            None => now.duration_since(clock.epoch),
        };
        progress.update(
            position.as_millis() as u64,
            format!(
                "{} deliveries/s, {} of {} received",
                fmt_rate(rate),
                fmt_int(received),
                fmt_int(expect)
            ),
        );
        if let Some(ended) = ended_at {
            if (received, expect) != (last_change.1, last_change.2) {
                last_change = (now, received, expect);
            }
            let done = received >= expect && tasks.all_answered();
            let quiet = now.duration_since(last_change.0) >= DRAIN_QUIET;
            if done || quiet || now.duration_since(ended) >= args.drain_timeout {
                break;
            }
        }
        tasks.reap_publishers()?;
    }
    progress.finish();
    let (bench_cpu, processes) = usage.into_usage().expect("the drain follows the window");
    let drain_secs = ended_at
        .expect("the drain follows the window")
        .elapsed()
        .as_secs_f64();
    Ok(Window {
        timeline,
        bench_cpu,
        processes,
        drain_secs,
    })
}

/// The report of a finished run.
fn report(
    args: &FanoutArgs,
    started_unix_ms: u64,
    setup_secs: f64,
    tasks: &Tasks,
    window: Window,
    duplicates: u64,
) -> Result<Report<FanoutResults>> {
    let hist = tasks.shards.merged();
    let (mut sent, mut acked, mut send_errors) = (0, 0, 0);
    for p in &tasks.publishers {
        sent += p.sent.load(Relaxed);
        acked += p.acked.load(Relaxed);
        send_errors += p.errors.load(Relaxed);
    }
    let expected_deliveries = acked * args.members as u64;
    let received = hist.len();
    let loss = expected_deliveries.saturating_sub(received);
    let measured_secs = args.duration.as_secs_f64();
    let disconnect_reasons = std::mem::take(&mut *tasks.events.disconnects.lock());
    let max_lag_ns = tasks
        .publishers
        .iter()
        .map(|p| p.max_lag_ns.load(Relaxed))
        .max()
        .unwrap_or(0);
    let results = FanoutResults {
        rooms: args.rooms,
        members_per_room: args.members,
        publishers_per_room: args.publishers,
        connections: args.rooms * args.members,
        setup_secs,
        measured_secs,
        sent,
        acked,
        send_errors,
        errors_by_code: std::mem::take(&mut *tasks.events.errors_by_code.lock()),
        expected_deliveries,
        received,
        loss,
        loss_ratio: if expected_deliveries > 0 {
            loss as f64 / expected_deliveries as f64
        } else {
            0.0
        },
        duplicates,
        messages_per_sec: acked as f64 / measured_secs,
        deliveries_per_sec: received as f64 / measured_secs,
        disconnects: disconnect_reasons.values().sum(),
        disconnect_reasons,
        max_pacing_lag_ms: max_lag_ns as f64 / 1e6,
        drain_secs: window.drain_secs,
    };
    Report::new(
        "fanout",
        args,
        &args.output.label,
        started_unix_ms,
        results,
        Measured {
            latency_kind: "end-to-end latency",
            latency: LatencySummary::from_histogram(&hist),
            timeline_unit: "deliveries/s",
            timeline: window.timeline.into_points(),
            bench_cpu: window.bench_cpu,
            processes: window.processes,
        },
    )
}

fn validate(args: &FanoutArgs) -> Result<()> {
    if args.rooms == 0 || args.members == 0 {
        return Err(invalid("--rooms and --members must be at least 1"));
    }
    if args.publishers == 0 || args.publishers > args.members {
        return Err(invalid(format!(
            "--publishers must be between 1 and --members ({})",
            args.members
        )));
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err(invalid("--rate must be 0 or a positive number"));
    }
    if args.window == 0 {
        return Err(invalid("--window must be at least 1"));
    }
    if args.duration.is_zero() {
        return Err(invalid("--duration must be positive"));
    }
    if args.connect_concurrency == 0 {
        return Err(invalid("--connect-concurrency must be at least 1"));
    }
    check_chat_size(args.payload).map_err(invalid)
}

/// Connects, greets and joins every member, `connect_concurrency` at a time,
/// in index order (room-major). Any failure ends the run: the expected
/// deliveries assume full rooms.
async fn connect_all(
    args: &FanoutArgs,
    run: &str,
    rooms: &[String],
    local_ips: &[IpAddr],
    progress: &Progress,
) -> Result<Vec<(ClientSender, ClientReceiver)>> {
    let total = args.rooms * args.members;
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = JoinSet::new();
    for index in 0..total {
        let (room, member) = (index / args.members, index % args.members);
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("never closed");
        let url = args.url.clone();
        let room = rooms[room].clone();
        let username = format!("b{run}-{}-{member}", index / args.members);
        let local = pick(local_ips, index);
        tasks.spawn(async move {
            let result = join(&url, local, &username, &room, ws_config(READ_BUFFER)).await;
            drop(permit);
            (index, result)
        });
        progress.update(index as u64, String::new());
    }
    let mut members: Vec<Option<(ClientSender, ClientReceiver)>> =
        (0..total).map(|_| None).collect();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.context("connect task failed")?;
        match result {
            Ok(client) => members[index] = Some(client.into_split()),
            Err(e) => *failures.entry(failure_kind(&e)).or_default() += 1,
        }
    }
    if !failures.is_empty() {
        let n: u64 = failures.values().sum();
        bail!("{n} of {total} members could not connect and join: {failures:?}");
    }
    Ok(members
        .into_iter()
        .map(|m| m.expect("every member joined"))
        .collect())
}
