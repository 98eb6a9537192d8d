//! `chat-bench failover`: N members chat in overlapping rooms through
//! chat-lb on three gateways (one Redis); after a warm-up one gateway is
//! SIGKILLed (and, with `--restart`, started again at once with the same id)
//! while they go on chatting. Its members come back through chat-lb with
//! `chat_client::Resuming`: reconnect at once, Hello with the resume token,
//! re-join every room from the last id seen, re-send what was not acked.
//!
//! Measured, for the members of the killed gateway: the time from the loss
//! of their connection (as each saw it) to being back in all their rooms,
//! and from the kill itself; how many got their name back by token (no
//! USERNAME_TAKEN on the way); how many never came back. For everyone:
//! PresenceChanges about those members after the kill (flicker; should be
//! none), and the messages: every acknowledged message must reach every
//! member of its room exactly once, in order, replays included. Finally a
//! newcomer checks that every room lists exactly the members connected.
//!
//! The scenario starts its own gateways and chat-lb (it must kill and
//! restart one); the Redis server is given (`--redis`).

//!
//! The run is a set-up (the cluster, every member connected and in its
//! rooms), the measured window (chat, kill, chat), the drain and the check
//! of the member lists, then the report. The members live in `member`, the
//! check in `check`, the tally of their outcomes in `tally`, the results in
//! `results`.

mod check;
mod member;
mod results;
mod tally;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use chat_client::{EndReason, Resumption};
use chat_proto::MessageId;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Interval;
use tokio_util::sync::CancellationToken;

use self::check::{check_rooms, expected_lists};
use self::member::{member, plans, room_members};
pub(crate) use self::results::FailoverResults;
use self::tally::tally;
use crate::cli::{invalid, local_ips_arg, watched_arg, FailoverArgs};
use crate::cluster::{binary, Balancer, Gateway};
use crate::latency::LatencySummary;
use crate::member::run_id;
use crate::pacing::Pacer;
use crate::progress::{Progress, Timeline, SAMPLE_EVERY};
use crate::report::{fmt_int, unix_ms, Measured, Report};
use crate::usage::{Watched, WindowUsage};

/// Read buffer per member connection: pushes are small and steady.
const READ_BUFFER: usize = 8 * 1024;

/// The drain ends early when nothing moved for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(3);

/// Gateways in the cluster; the first one is killed.
const GATEWAYS: usize = 3;

/// One member: who it is, where it chats, when it sends.
struct Plan {
    index: usize,
    name: String,
    rooms: Vec<String>,
    /// Its home room, where it sends.
    home: String,
    pacer: Pacer,
    local: Option<IpAddr>,
}

/// What the run and every member task share.
struct Shared {
    url: String,
    members_per_room: u64,
    reconnect_jitter: Duration,
    /// Members connected and in all their rooms, by gateway.
    ready: Mutex<BTreeMap<String, u64>>,
    /// Set-ups that failed, by reason.
    setup_failures: Mutex<BTreeMap<String, u64>>,
    /// When the chatting starts; set before `start` fires.
    start_at: OnceLock<Instant>,
    start: CancellationToken,
    /// Sends are due only before this, after `start_at`.
    send_for: Duration,
    /// When the gateway was killed; presence after it is counted.
    kill_at: OnceLock<Instant>,
    stop: CancellationToken,
    /// Whether each member is connected now (for the final room check).
    connected: Vec<AtomicBool>,
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    /// Acked x members per room, and deliveries received (for the drain).
    expected: AtomicU64,
    received: AtomicU64,
    resumed: AtomicU64,
}

/// What one member saw.
#[derive(Default)]
struct Outcome {
    /// The gateway of its first connection.
    gateway: String,
    /// Ids received per room, in arrival order (replays and pushes).
    received: BTreeMap<String, Vec<MessageId>>,
    /// (room, id) of its acknowledged messages.
    acked: Vec<(String, MessageId)>,
    acked_as_duplicate: u64,
    sent: u64,
    refused: BTreeMap<String, u64>,
    resumptions: Vec<Resumption>,
    disconnects: u64,
    ended: Option<EndReason>,
    /// PresenceChanges received after the kill: (room, username, LEFT).
    presence_after_kill: Vec<(String, String, bool)>,
}

/// The processes a run started: the gateways (the first one is the
/// victim) behind chat-lb. Dropping it stops them, chat-lb first.
struct Cluster {
    lb: Balancer,
    gateways: Vec<Gateway>,
}

/// A run once set up: every member connected and in its rooms.
struct Running {
    /// The members' tasks, each returning its index and outcome.
    tasks: JoinSet<(usize, Outcome)>,
    shared: Arc<Shared>,
    /// The survivors and chat-lb (the victim's pid changes), with `--watch-pid`'s.
    watched: Vec<Watched>,
    /// Each member's name, by index.
    names: Vec<String>,
    /// Each room with its members' indexes.
    room_members: Vec<(String, Vec<usize>)>,
    progress: Progress,
    /// Samples every phase, every [`SAMPLE_EVERY`].
    ticks: Interval,
    run_id: String,
    started_unix_ms: u64,
    setup_secs: f64,
    /// The gateway to kill, and how many members it holds.
    victim_id: String,
    on_victim: u64,
}

/// What the measured window leaves for the report.
struct Window {
    timeline: Timeline,
    usage: WindowUsage,
    kill_at: Instant,
    /// How long the restarted gateway took to print its address again.
    restart_secs: Option<f64>,
}

/// Figures measured outside the member tasks.
struct Tallied {
    setup_secs: f64,
    restart_secs: Option<f64>,
    rooms_listed_wrong: u64,
    room_list_examples: Vec<String>,
    /// The name prefix of the final check's newcomers, whose presence is
    /// nobody's flicker.
    checker: String,
    drain_secs: f64,
}

/// Runs the scenario and returns its report.
pub(crate) async fn run(args: FailoverArgs) -> Result<Report<FailoverResults>> {
    validate(&args)?;
    let (mut cluster, mut run) = setup(&args).await?;
    let window = measure(&args, &mut cluster, &mut run).await?;
    let drain_secs = drain(&args, &mut run).await;

    // ---------------------------------------------------------------- rooms listed
    run.progress.phase("check", run.room_members.len() as u64);
    let expected = expected_lists(&run.room_members, &run.names, &run.shared.connected);
    let checker = format!("fo{}-check", run.run_id);
    let (rooms_listed_wrong, room_list_examples) =
        check_rooms(&run.shared.url, &checker, &expected)
            .await
            .context("checking the rooms' member lists")?;
    run.progress.finish();

    let outcomes = wind_down(&args, cluster, &mut run).await?;
    let tallied = Tallied {
        setup_secs: run.setup_secs,
        restart_secs: window.restart_secs,
        rooms_listed_wrong,
        room_list_examples,
        checker,
        drain_secs,
    };
    report(&args, &run, window, &outcomes, tallied)
}

fn validate(args: &FailoverArgs) -> Result<()> {
    if args.members == 0 || args.room_size == 0 || args.members % args.room_size != 0 {
        return Err(invalid(
            "--members must be a positive multiple of --room-size",
        ));
    }
    let rooms = args.members / args.room_size;
    if args.rooms_per_member == 0 || args.rooms_per_member > rooms {
        return Err(invalid(format!(
            "--rooms-per-member must be between 1 and the number of rooms ({rooms})"
        )));
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(invalid("--rate must be a positive number"));
    }
    if args.duration.is_zero() || args.connect_concurrency == 0 {
        return Err(invalid(
            "--duration and --connect-concurrency must be positive",
        ));
    }
    Ok(())
}

/// The set-up: starts the cluster, then the members, and waits until every
/// one is connected and in its rooms.
async fn setup(args: &FailoverArgs) -> Result<(Cluster, Running)> {
    let local_ips = local_ips_arg(args.local_ips.as_deref())?;
    let watched = watched_arg(&args.output.watch_pid)?;
    let gateway_bin = binary(args.chat_gateway_bin.as_deref(), "chat-gateway")?;
    let lb_bin = binary(args.chat_lb_bin.as_deref(), "chat-lb")?;
    let log_dir = args.log_dir.as_deref();
    if let Some(dir) = log_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let started_unix_ms = unix_ms();
    let run_id = run_id();
    let progress = Progress::new(args.members as u64, args.output.no_progress);

    let gateways = start_gateways(args, &gateway_bin, &run_id, log_dir).await?;
    let backends: Vec<_> = gateways.iter().map(|g| g.addr).collect();
    let lb = Balancer::start(&lb_bin, &backends, &["--send-proxy-v2"], log_dir).await?;
    let cluster = Cluster { lb, gateways };
    let watched = watch_cluster(watched, &cluster);

    let room_names: Vec<String> = (0..args.members / args.room_size)
        .map(|r| format!("fo-{run_id}-{r}"))
        .collect();
    let shared = Arc::new(Shared::new(args, format!("ws://{}/ws", cluster.lb.addr)));
    let plans = plans(args, &run_id, &room_names, &local_ips);
    let room_members = room_members(&room_names, &plans);
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    progress.phase("connect", args.members as u64);
    let setup_start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = JoinSet::new();
    for plan in plans {
        tasks.spawn(member(plan, Arc::clone(&shared), Arc::clone(&permits)));
    }
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    wait_ready(args, &shared, &progress, &mut ticks).await?;
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let victim_id = cluster.gateways[0].id.clone();
    let on_victim = shared.ready.lock().get(&victim_id).copied().unwrap_or(0);
    let run = Running {
        tasks,
        shared,
        watched,
        names,
        room_members,
        progress,
        ticks,
        run_id,
        started_unix_ms,
        setup_secs,
        victim_id,
        on_victim,
    };
    Ok((cluster, run))
}

/// Three gateways on the Redis, behind chat-lb (PROXY v2), each with the
/// extra flags.
async fn start_gateways(
    args: &FailoverArgs,
    bin: &Path,
    run: &str,
    log_dir: Option<&Path>,
) -> Result<Vec<Gateway>> {
    let mut flags = vec![
        "--redis".to_owned(),
        args.redis.clone(),
        "--redis-prefix".to_owned(),
        format!("failover-{run}"),
        "--proxy-protocol".to_owned(),
    ];
    flags.extend(args.gateway_args.iter().cloned());
    let mut gateways = Vec::with_capacity(GATEWAYS);
    for g in 1..=GATEWAYS {
        let id = format!("failover-{run}-gateway-{g}");
        gateways.push(Gateway::start(bin, &id, flags.clone(), log_dir).await?);
    }
    Ok(gateways)
}

/// Adds the survivors and chat-lb to the watched processes (the victim's
/// pid changes).
fn watch_cluster(mut watched: Vec<Watched>, cluster: &Cluster) -> Vec<Watched> {
    for (name, pid) in cluster.gateways[1..]
        .iter()
        .map(|g| (g.id.clone(), g.pid()))
        .chain([("chat-lb".to_owned(), cluster.lb.pid())])
    {
        if let Some(pid) = pid {
            watched.push(Watched {
                name,
                pid,
                tid: None,
            });
        }
    }
    watched
}

/// Shows the set-up until every member is in its rooms; fails (stopping
/// the others) when every member has either made it or failed, some failed.
async fn wait_ready(
    args: &FailoverArgs,
    shared: &Shared,
    progress: &Progress,
    ticks: &mut Interval,
) -> Result<()> {
    loop {
        ticks.tick().await;
        let ready: u64 = shared.ready.lock().values().sum();
        let failed: u64 = shared.setup_failures.lock().values().sum();
        progress.update(
            ready,
            format!(
                "{} of {} in their rooms",
                fmt_int(ready),
                fmt_int(args.members as u64)
            ),
        );
        if failed > 0 && ready + failed == args.members as u64 {
            shared.stop.cancel();
            bail!(
                "{failed} of {} members could not connect and join: {:?}",
                args.members,
                shared.setup_failures.lock()
            );
        }
        if ready == args.members as u64 {
            return Ok(());
        }
    }
}

/// The measured window: the members chat through the warm-up, the victim
/// is killed (and with `--restart` started again), they chat on for
/// `--duration`. Samples the deliveries and the watched processes.
async fn measure(args: &FailoverArgs, cluster: &mut Cluster, run: &mut Running) -> Result<Window> {
    let shared = &run.shared;
    let start_at = Instant::now();
    shared.start_at.set(start_at).expect("set once");
    shared.start.cancel();
    let mut usage = WindowUsage::new(std::mem::take(&mut run.watched));
    usage.start()?;
    let mut timeline = Timeline::default();
    timeline.rate(0.0, 0);
    run.progress
        .phase("warm-up", args.warmup.as_millis() as u64);
    let kill_time = start_at + args.warmup;
    let end = kill_time + args.duration;
    let mut restart_secs = None;
    loop {
        tokio::select! {
            _ = run.ticks.tick() => {}
            () = tokio::time::sleep_until(kill_time.into()), if shared.kill_at.get().is_none() => {
                shared.kill_at.set(Instant::now()).expect("set once");
                cluster.gateways[0].kill().await?;
                if args.restart {
                    let restarting = Instant::now();
                    cluster.gateways[0].restart().await?;
                    restart_secs = Some(restarting.elapsed().as_secs_f64());
                }
                run.progress.phase("failover", args.duration.as_millis() as u64);
                continue;
            }
        }
        let now = Instant::now();
        timeline.rate(
            now.duration_since(start_at).as_secs_f64(),
            shared.received.load(Relaxed),
        );
        if now >= end {
            break;
        }
        let position = match shared.kill_at.get() {
            Some(killed) => now.duration_since(*killed),
            None => now.duration_since(start_at),
        };
        run.progress.update(
            position.as_millis() as u64,
            format!(
                "{} of {} back, {} acked",
                fmt_int(shared.resumed.load(Relaxed)),
                fmt_int(run.on_victim),
                fmt_int(shared.acked.load(Relaxed))
            ),
        );
    }
    usage.end()?;
    let kill_at = *shared.kill_at.get().expect("killed before the end");
    Ok(Window {
        timeline,
        usage,
        kill_at,
        restart_secs,
    })
}

/// Waits for outstanding acks, deliveries and resumptions: until all are
/// in, nothing moved for [`DRAIN_QUIET`], or `--drain-timeout`. Returns how
/// long it waited.
async fn drain(args: &FailoverArgs, run: &mut Running) -> f64 {
    let shared = &run.shared;
    run.progress
        .phase("drain", args.drain_timeout.as_millis() as u64);
    let drain_start = Instant::now();
    let mut last_change = (drain_start, 0u64, 0u64);
    loop {
        run.ticks.tick().await;
        let now = Instant::now();
        let (received, acked) = (shared.received.load(Relaxed), shared.acked.load(Relaxed));
        let outstanding = shared
            .sent
            .load(Relaxed)
            .saturating_sub(acked + shared.refused.load(Relaxed));
        let done = outstanding == 0
            && received >= shared.expected.load(Relaxed)
            && shared.resumed.load(Relaxed) >= run.on_victim;
        if (received, acked) != (last_change.1, last_change.2) {
            last_change = (now, received, acked);
        }
        run.progress.update(
            now.duration_since(drain_start).as_millis() as u64,
            format!("{} sends outstanding", fmt_int(outstanding)),
        );
        if done
            || now.duration_since(last_change.0) >= DRAIN_QUIET
            || now.duration_since(drain_start) >= args.drain_timeout
        {
            break;
        }
    }
    drain_start.elapsed().as_secs_f64()
}

/// Stops the members and collects their outcomes, then stops the cluster.
async fn wind_down(
    args: &FailoverArgs,
    cluster: Cluster,
    run: &mut Running,
) -> Result<Vec<(usize, Outcome)>> {
    run.shared.stop.cancel();
    let mut outcomes = Vec::with_capacity(args.members);
    while let Some(done) = run.tasks.join_next().await {
        outcomes.push(done.context("member task failed")?);
    }
    drop(cluster);
    Ok(outcomes)
}

/// The report of a finished run.
fn report(
    args: &FailoverArgs,
    run: &Running,
    window: Window,
    outcomes: &[(usize, Outcome)],
    tallied: Tallied,
) -> Result<Report<FailoverResults>> {
    let (bench_cpu, processes) = window.usage.into_usage().expect("the window ended");
    let (results, recovery) = tally(
        args,
        outcomes,
        &run.names,
        &run.room_members,
        &run.victim_id,
        window.kill_at,
        tallied,
    );
    Report::new(
        "failover",
        args,
        &args.output.label,
        run.started_unix_ms,
        results,
        Measured {
            latency_kind: "time from connection loss to back in all rooms",
            latency: LatencySummary::from_histogram(&recovery),
            timeline_unit: "deliveries/s",
            timeline: window.timeline.into_points(),
            bench_cpu,
            processes,
        },
    )
}
