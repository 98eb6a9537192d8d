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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use chat_client::v1::presence_change;
use chat_client::{Client, EndReason, Event, Request, ResumeConfig, Resuming, Resumption};
use chat_proto::MessageId;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{invalid, local_ips_arg, watched_arg, FailoverArgs};
use crate::cluster::{binary, Balancer, Gateway};
use crate::latency::{new_histogram, LatencySummary};
use crate::local_ips::pick;
use crate::member::{failure_kind, run_id, ws_config, SETUP_TIMEOUT};
use crate::pacing::Pacer;
use crate::progress::{Progress, Timeline, SAMPLE_EVERY};
use crate::report::{fmt_int, unix_ms, Measured, Report, Results};
use crate::usage::{Watched, WindowUsage};

/// Read buffer per member connection: pushes are small and steady.
const READ_BUFFER: usize = 8 * 1024;

/// The drain ends early when nothing moved for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(3);

/// Gateways in the cluster; the first one is killed.
const GATEWAYS: usize = 3;

/// Percentiles of a duration, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Millis {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Millis {
    fn of(summary: &LatencySummary) -> Self {
        Self {
            count: summary.count,
            p50_ms: summary.p50_us / 1_000.0,
            p99_ms: summary.p99_us / 1_000.0,
            max_ms: summary.max_us / 1_000.0,
        }
    }

    fn show(&self) -> String {
        if self.count == 0 {
            return "none".into();
        }
        format!(
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// The results of a failover run (flattened into the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverResults {
    pub members: usize,
    pub rooms: usize,
    pub members_per_room: usize,
    pub setup_secs: f64,
    /// The gateway that was killed, and whether it was restarted.
    pub killed_gateway: String,
    pub restarted: bool,
    /// How long the restarted gateway took to print its address again.
    pub restart_secs: Option<f64>,
    /// Members whose connection was on the killed gateway.
    pub on_killed_gateway: u64,
    /// Of those: back in all their rooms; back by token (the token gave the
    /// name back: no USERNAME_TAKEN on the way, and nobody saw them leave,
    /// so the name never fell free in between); never back.
    pub resumed: u64,
    pub resumed_by_token: u64,
    pub locked_out: u64,
    /// Of those, how many somebody saw leave (or join again) after the kill.
    pub seen_leaving: u64,
    /// From each one's connection loss to back in all rooms.
    pub recovery: Millis,
    /// From the kill to back in all rooms (adds how long the loss took to show).
    pub recovery_from_kill: Millis,
    /// From the kill to each one's connection loss showing (chat-lb closing it).
    pub loss_seen_after_kill: Millis,
    /// The steps of the attempt that brought each one back: connect (TCP
    /// and WebSocket upgrade through chat-lb), Hello to Welcome, re-joins.
    pub connect: Millis,
    pub hello: Millis,
    pub rejoin: Millis,
    /// Most reconnect attempts one member needed.
    pub max_attempts: u32,
    /// Hellos answered USERNAME_TAKEN, over all members.
    pub name_taken: u64,
    /// PresenceChanges about the killed gateway's members that others
    /// received after the kill (LEFT/JOINED flicker), in all.
    pub presence_flicker: u64,
    /// Other PresenceChanges received after the kill (the final check's
    /// newcomers aside), and a few of them.
    pub presence_other: u64,
    pub presence_other_examples: Vec<String>,
    /// Members not on the killed gateway that lost their connection anyway.
    pub unexpected_disconnects: u64,
    /// Members that stopped for good (replaced, kicked, refused).
    pub ended: u64,
    pub ended_reasons: BTreeMap<String, u64>,
    pub sent: u64,
    pub acked: u64,
    /// Acks of re-sends that the server had already accepted (no second copy).
    pub acked_as_duplicate: u64,
    /// Sends still unacknowledged at the end.
    pub unacked: u64,
    pub refused: u64,
    pub refused_by_code: BTreeMap<String, u64>,
    /// Acked messages x members of their room.
    pub expected_deliveries: u64,
    /// Deliveries of acked messages (replays included, duplicates not).
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Rooms whose member list (asked by a newcomer at the end) was not
    /// exactly their connected members; a few examples.
    pub rooms_listed_wrong: u64,
    pub room_list_examples: Vec<String>,
    pub drain_secs: f64,
}

impl Results for FailoverResults {
    fn clean(&self) -> bool {
        self.on_killed_gateway > 0
            && self.resumed == self.on_killed_gateway
            && self.resumed_by_token == self.on_killed_gateway
            && self.locked_out == 0
            && self.presence_flicker == 0
            && self.seen_leaving == 0
            && self.unexpected_disconnects == 0
            && self.ended == 0
            && self.unacked == 0
            && self.refused == 0
            && self.received > 0
            && self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.rooms_listed_wrong == 0
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "members".into(),
                format!(
                    "{} in {} rooms of {} (set-up {:.1} s)",
                    fmt_int(self.members as u64),
                    self.rooms,
                    self.members_per_room,
                    self.setup_secs
                ),
            ),
            (
                "killed".into(),
                match self.restart_secs {
                    Some(secs) => format!("{}, restarted ({secs:.2} s)", self.killed_gateway),
                    None => format!("{}, not restarted", self.killed_gateway),
                },
            ),
            (
                "on the killed gateway".into(),
                fmt_int(self.on_killed_gateway),
            ),
            (
                "  back in all rooms".into(),
                format!(
                    "{} ({} with their name by token, {} locked out)",
                    fmt_int(self.resumed),
                    fmt_int(self.resumed_by_token),
                    fmt_int(self.locked_out)
                ),
            ),
            ("  loss -> back".into(), self.recovery.show()),
            ("  kill -> back".into(), self.recovery_from_kill.show()),
            (
                "  kill -> loss seen".into(),
                self.loss_seen_after_kill.show(),
            ),
            ("  connect".into(), self.connect.show()),
            ("  Hello -> Welcome".into(), self.hello.show()),
            ("  re-joins".into(), self.rejoin.show()),
            (
                "  attempts".into(),
                format!(
                    "at most {}, {} USERNAME_TAKEN",
                    self.max_attempts,
                    fmt_int(self.name_taken)
                ),
            ),
            (
                "presence flicker".into(),
                format!(
                    "{} about {} members (other presence changes: {})",
                    fmt_int(self.presence_flicker),
                    fmt_int(self.seen_leaving),
                    fmt_int(self.presence_other)
                ),
            ),
            (
                "unexpected disconnects".into(),
                fmt_int(self.unexpected_disconnects),
            ),
            ("ended for good".into(), fmt_int(self.ended)),
        ];
        for (reason, n) in &self.ended_reasons {
            rows.push((format!("  {reason}"), fmt_int(*n)));
        }
        rows.extend([
            (
                "sent".into(),
                format!(
                    "{} ({} acked, {} of them as duplicates; {} unacked, {} refused)",
                    fmt_int(self.sent),
                    fmt_int(self.acked),
                    fmt_int(self.acked_as_duplicate),
                    fmt_int(self.unacked),
                    fmt_int(self.refused)
                ),
            ),
            (
                "deliveries".into(),
                format!(
                    "{} of {} expected",
                    fmt_int(self.received),
                    fmt_int(self.expected_deliveries)
                ),
            ),
            ("lost".into(), fmt_int(self.lost)),
            ("duplicates".into(), fmt_int(self.duplicates)),
            ("out of order".into(), fmt_int(self.out_of_order)),
            (
                "rooms listed wrong".into(),
                fmt_int(self.rooms_listed_wrong),
            ),
        ]);
        for (code, n) in &self.refused_by_code {
            rows.push((format!("  refused {code}"), fmt_int(*n)));
        }
        for example in &self.room_list_examples {
            rows.push(("  e.g.".into(), example.clone()));
        }
        for example in &self.presence_other_examples {
            rows.push(("  other presence e.g.".into(), example.clone()));
        }
        rows
    }
}

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

impl Outcome {
    fn record(&mut self, index: usize, event: Event, shared: &Shared) {
        match event {
            Event::Joined { joined, .. } => {
                for message in &joined.history {
                    self.receipt(&joined.room, &message.id, shared);
                }
            }
            Event::Message(message) => self.receipt(&message.room, &message.id, shared),
            Event::Presence(presence) => {
                if shared.kill_at.get().is_some() {
                    let left = presence.kind() == presence_change::Kind::Left;
                    self.presence_after_kill
                        .push((presence.room, presence.username, left));
                }
            }
            Event::Acked { ack, .. } => {
                if let Ok(id) = ack.id.parse() {
                    self.acked.push((ack.room, id));
                }
                self.acked_as_duplicate += u64::from(ack.duplicate);
                shared.acked.fetch_add(1, Relaxed);
                shared.expected.fetch_add(shared.members_per_room, Relaxed);
            }
            Event::Refused { request, code, .. } => {
                *self
                    .refused
                    .entry(code.as_str_name().to_owned())
                    .or_default() += 1;
                if matches!(request, Request::Send { .. }) {
                    shared.refused.fetch_add(1, Relaxed);
                }
            }
            Event::Disconnected { .. } => {
                self.disconnects += 1;
                shared.connected[index].store(false, Relaxed);
            }
            Event::Resumed(resumption) => {
                self.resumptions.push(resumption);
                shared.connected[index].store(true, Relaxed);
                shared.resumed.fetch_add(1, Relaxed);
            }
            Event::Ended(reason) => {
                self.ended = Some(reason);
                shared.connected[index].store(false, Relaxed);
            }
            Event::Left { .. } | Event::Typing(_) | Event::Other(_) => {}
        }
    }

    fn receipt(&mut self, room: &str, id: &str, shared: &Shared) {
        if let Ok(id) = id.parse() {
            self.received.entry(room.to_owned()).or_default().push(id);
            shared.received.fetch_add(1, Relaxed);
        }
    }
}

/// Runs the scenario and returns its report.
pub async fn run(args: FailoverArgs) -> Result<Report<FailoverResults>> {
    validate(&args)?;
    let local_ips = local_ips_arg(args.local_ips.as_deref())?;
    let mut watched = watched_arg(&args.output.watch_pid)?;
    let gateway_bin = binary(args.chat_gateway_bin.as_deref(), "chat-gateway")?;
    let lb_bin = binary(args.chat_lb_bin.as_deref(), "chat-lb")?;
    let log_dir = args.log_dir.as_deref();
    if let Some(dir) = log_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let started_unix_ms = unix_ms();
    let run = run_id();
    let progress = Progress::new(args.members as u64, args.output.no_progress);

    // ---------------------------------------------------------------- cluster
    let mut gateways = start_gateways(&args, &gateway_bin, &run, log_dir).await?;
    let backends: Vec<_> = gateways.iter().map(|g| g.addr).collect();
    let lb = Balancer::start(&lb_bin, &backends, &["--send-proxy-v2"], log_dir).await?;
    // The survivors and chat-lb are watched (the victim's pid changes).
    for (name, pid) in gateways[1..]
        .iter()
        .map(|g| (g.id.clone(), g.pid()))
        .chain([("chat-lb".to_owned(), lb.pid())])
    {
        if let Some(pid) = pid {
            watched.push(Watched {
                name,
                pid,
                tid: None,
            });
        }
    }

    // ---------------------------------------------------------------- members
    let rooms = args.members / args.room_size;
    let room_names: Vec<String> = (0..rooms).map(|r| format!("fo-{run}-{r}")).collect();
    let members_per_room = args.room_size * args.rooms_per_member;
    let shared = Arc::new(Shared {
        url: format!("ws://{}/ws", lb.addr),
        members_per_room: members_per_room as u64,
        reconnect_jitter: args.reconnect_jitter,
        ready: Mutex::new(BTreeMap::new()),
        setup_failures: Mutex::new(BTreeMap::new()),
        start_at: OnceLock::new(),
        start: CancellationToken::new(),
        send_for: args.warmup + args.duration,
        kill_at: OnceLock::new(),
        stop: CancellationToken::new(),
        connected: (0..args.members).map(|_| AtomicBool::new(true)).collect(),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
    });
    let plans: Vec<Plan> = (0..args.members)
        .map(|index| {
            let home = index / args.room_size;
            Plan {
                index,
                name: format!("fo{run}-{index}"),
                rooms: (0..args.rooms_per_member)
                    .map(|k| room_names[(home + k) % rooms].clone())
                    .collect(),
                home: room_names[home].clone(),
                // Home members take turns: the room gets `rate`, evenly spread.
                pacer: Pacer::staggered(
                    args.rate / args.room_size as f64,
                    index % args.room_size,
                    args.room_size,
                ),
                local: pick(&local_ips, index),
            }
        })
        .collect();
    let room_members: Vec<(String, Vec<usize>)> = room_names
        .iter()
        .map(|room| {
            let members = plans
                .iter()
                .filter(|p| p.rooms.contains(room))
                .map(|p| p.index)
                .collect();
            (room.clone(), members)
        })
        .collect();
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();

    progress.phase("connect", args.members as u64);
    let setup_start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = JoinSet::new();
    for plan in plans {
        tasks.spawn(member(plan, Arc::clone(&shared), Arc::clone(&permits)));
    }
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
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
            break;
        }
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let victim_id = gateways[0].id.clone();
    let on_victim = shared.ready.lock().get(&victim_id).copied().unwrap_or(0);

    // ---------------------------------------------------------------- chat, kill, chat
    let start_at = Instant::now();
    shared.start_at.set(start_at).expect("set once");
    shared.start.cancel();
    let mut usage = WindowUsage::new(watched);
    usage.start()?;
    let mut timeline = Timeline::default();
    timeline.rate(0.0, 0);
    progress.phase("warm-up", args.warmup.as_millis() as u64);
    let kill_time = start_at + args.warmup;
    let end = kill_time + args.duration;
    let mut restart_secs = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = tokio::time::sleep_until(kill_time.into()), if shared.kill_at.get().is_none() => {
                shared.kill_at.set(Instant::now()).expect("set once");
                gateways[0].kill().await?;
                if args.restart {
                    let restarting = Instant::now();
                    gateways[0].restart().await?;
                    restart_secs = Some(restarting.elapsed().as_secs_f64());
                }
                progress.phase("failover", args.duration.as_millis() as u64);
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
        progress.update(
            position.as_millis() as u64,
            format!(
                "{} of {} back, {} acked",
                fmt_int(shared.resumed.load(Relaxed)),
                fmt_int(on_victim),
                fmt_int(shared.acked.load(Relaxed))
            ),
        );
    }
    usage.end()?;
    let kill_at = *shared.kill_at.get().expect("killed before the end");

    // ---------------------------------------------------------------- drain
    progress.phase("drain", args.drain_timeout.as_millis() as u64);
    let drain_start = Instant::now();
    let mut last_change = (drain_start, 0u64, 0u64);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let (received, acked) = (shared.received.load(Relaxed), shared.acked.load(Relaxed));
        let outstanding = shared
            .sent
            .load(Relaxed)
            .saturating_sub(acked + shared.refused.load(Relaxed));
        let done = outstanding == 0
            && received >= shared.expected.load(Relaxed)
            && shared.resumed.load(Relaxed) >= on_victim;
        if (received, acked) != (last_change.1, last_change.2) {
            last_change = (now, received, acked);
        }
        progress.update(
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
    let drain_secs = drain_start.elapsed().as_secs_f64();

    // ---------------------------------------------------------------- rooms listed
    progress.phase("check", room_members.len() as u64);
    let expected_lists: Vec<(String, Vec<String>)> = room_members
        .iter()
        .map(|(room, members)| {
            let mut want: Vec<String> = members
                .iter()
                .filter(|i| shared.connected[**i].load(Relaxed))
                .map(|i| names[*i].clone())
                .collect();
            want.sort();
            (room.clone(), want)
        })
        .collect();
    let checker = format!("fo{run}-check");
    let (rooms_listed_wrong, room_list_examples) =
        check_rooms(&shared.url, &checker, &expected_lists)
            .await
            .context("checking the rooms' member lists")?;
    progress.finish();

    // ---------------------------------------------------------------- wind down
    shared.stop.cancel();
    let mut outcomes = Vec::with_capacity(args.members);
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.context("member task failed")?);
    }
    drop(lb);
    drop(gateways);
    let (bench_cpu, processes) = usage.into_usage().expect("the window ended");

    // ---------------------------------------------------------------- report
    let (results, recovery) = tally(
        &args,
        &outcomes,
        &names,
        &room_members,
        &victim_id,
        kill_at,
        Tallied {
            setup_secs,
            restart_secs,
            rooms_listed_wrong,
            room_list_examples,
            checker,
            drain_secs,
        },
    );
    Report::new(
        "failover",
        &args,
        &args.output.label,
        started_unix_ms,
        results,
        Measured {
            latency_kind: "time from connection loss to back in all rooms",
            latency: LatencySummary::from_histogram(&recovery),
            timeline_unit: "deliveries/s",
            timeline: timeline.into_points(),
            bench_cpu,
            processes,
        },
    )
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

/// One member's life: set-up, waiting for the start, chatting (its sends
/// on its schedule, every event recorded) until the run stops it.
async fn member(plan: Plan, shared: Arc<Shared>, permits: Arc<Semaphore>) -> (usize, Outcome) {
    let mut outcome = Outcome::default();
    let index = plan.index;
    let setup = async {
        let _permit = permits.acquire().await.expect("never closed");
        let mut config = ResumeConfig::new(shared.url.clone(), plan.name.clone());
        config.local_addr = plan.local;
        config.ws_config = ws_config(READ_BUFFER);
        config.backoff.first_jitter = shared.reconnect_jitter;
        let mut client = Resuming::connect(config).await?;
        for room in &plan.rooms {
            client.handle().join_with(room, "", 1).await?;
        }
        let mut joined = 0;
        while joined < plan.rooms.len() {
            let Some(event) = client.next_event().await else {
                return Err(chat_client::ClientError::Closed(None));
            };
            match &event {
                Event::Joined { .. } => joined += 1,
                Event::Refused { code, .. } => {
                    return Err(chat_client::ClientError::Server {
                        code: *code,
                        message: "join refused".into(),
                    })
                }
                _ => {}
            }
            outcome.record(index, event, &shared);
        }
        Ok(client)
    };
    let mut client = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            *shared
                .setup_failures
                .lock()
                .entry(failure_kind(&e))
                .or_default() += 1;
            return (index, outcome);
        }
        Err(_) => {
            *shared
                .setup_failures
                .lock()
                .entry("timed out".into())
                .or_default() += 1;
            return (index, outcome);
        }
    };
    outcome.gateway = client.welcome().gateway_id.clone();
    *shared
        .ready
        .lock()
        .entry(outcome.gateway.clone())
        .or_default() += 1;

    // Until the start, only events.
    loop {
        tokio::select! {
            () = shared.start.cancelled() => break,
            () = shared.stop.cancelled() => return (index, outcome),
            event = client.next_event() => match event {
                Some(event) => outcome.record(index, event, &shared),
                None => return (index, outcome),
            },
        }
    }
    let start = *shared.start_at.get().expect("set before the start");
    let mut seq = 0u64;
    loop {
        let due = plan.pacer.due_at(seq);
        let sending = due < shared.send_for;
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            event = client.next_event() => match event {
                Some(event) => outcome.record(index, event, &shared),
                None => break,
            },
            () = tokio::time::sleep_until((start + due).into()), if sending => {
                let text = format!("{} #{seq}", plan.name);
                if client.handle().send(&plan.home, &text).await.is_ok() {
                    outcome.sent += 1;
                    shared.sent.fetch_add(1, Relaxed);
                }
                seq += 1;
            }
        }
    }
    // Closed with the others, by the end of the run.
    (index, outcome)
}

/// Rooms one checking connection asks about: within the default room limit
/// (32) and the room-operation burst (2 x 32), so no Join is refused.
const CHECK_BATCH: usize = 30;

/// How long the member lists may take to agree with who is connected:
/// they are written by the gateways as sessions come and go.
const CHECK_SETTLE: Duration = Duration::from_secs(5);

/// Asks newcomers for every room's members until each room lists exactly
/// `expected` (sorted names) or [`CHECK_SETTLE`] has passed; returns how
/// many rooms still list others, with a few examples.
async fn check_rooms(
    url: &str,
    checker: &str,
    expected: &[(String, Vec<String>)],
) -> Result<(u64, Vec<String>)> {
    let deadline = Instant::now() + CHECK_SETTLE;
    let mut pending: Vec<&(String, Vec<String>)> = expected.iter().collect();
    let mut pass = 0;
    loop {
        let wrong = check_once(url, &format!("{checker}-{pass}"), &pending).await?;
        pass += 1;
        if wrong.is_empty() || Instant::now() >= deadline {
            let examples = wrong.iter().take(3).map(|(_, why)| why.clone()).collect();
            return Ok((wrong.len() as u64, examples));
        }
        pending = wrong.into_iter().map(|(room, _)| room).collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One pass of [`check_rooms`]: newcomers `{name}-0`, `-1`, ..., one
/// connection per [`CHECK_BATCH`] rooms; returns the rooms listed wrong.
async fn check_once<'a>(
    url: &str,
    name: &str,
    rooms: &[&'a (String, Vec<String>)],
) -> Result<Vec<(&'a (String, Vec<String>), String)>> {
    let mut wrong = Vec::new();
    for (batch, rooms) in rooms.chunks(CHECK_BATCH).enumerate() {
        let name = format!("{name}-{batch}");
        let mut client = Client::connect(url).await?;
        client.hello(&name).await?;
        for entry in rooms {
            let (room, want) = *entry;
            let joined = client.join_with(room, "", 1).await?;
            let mut got: Vec<String> = joined.members.into_iter().filter(|m| *m != name).collect();
            got.sort();
            if &got != want {
                let extra: Vec<&String> = got.iter().filter(|m| !want.contains(m)).collect();
                let missing: Vec<&String> = want.iter().filter(|m| !got.contains(m)).collect();
                wrong.push((
                    *entry,
                    format!("{room}: extra {extra:?}, missing {missing:?}"),
                ));
            }
        }
        let _ = client.close().await;
    }
    Ok(wrong)
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

/// Turns the members' outcomes into the results, with the recovery times
/// (loss to back, nanoseconds) of the killed gateway's members.
fn tally(
    args: &FailoverArgs,
    outcomes: &[(usize, Outcome)],
    names: &[String],
    room_members: &[(String, Vec<usize>)],
    victim: &str,
    kill_at: Instant,
    measured: Tallied,
) -> (FailoverResults, Histogram<u64>) {
    let by_index: BTreeMap<usize, &Outcome> = outcomes.iter().map(|(i, o)| (*i, o)).collect();
    let hit: BTreeSet<&str> = by_index
        .iter()
        .filter(|(_, o)| o.gateway == victim)
        .map(|(i, _)| names[*i].as_str())
        .collect();

    let (mut recovery, mut from_kill, mut seen) =
        (new_histogram(), new_histogram(), new_histogram());
    let mut phases = [new_histogram(), new_histogram(), new_histogram()];
    // Presence after the kill: about the killed gateway's members it is flicker.
    let (mut flicker, mut other_presence) = (0, 0);
    let mut other_examples = Vec::new();
    let mut seen_leaving: BTreeSet<&str> = BTreeSet::new();
    for outcome in by_index.values() {
        for (room, name, left) in &outcome.presence_after_kill {
            if let Some(hit) = hit.get(name.as_str()) {
                flicker += 1;
                seen_leaving.insert(hit);
            } else if !name.starts_with(&measured.checker) {
                other_presence += 1;
                if other_examples.len() < 3 {
                    let kind = if *left { "LEFT" } else { "JOINED" };
                    other_examples.push(format!("{name} {kind} in {room}"));
                }
            }
        }
    }
    let (mut resumed, mut by_token, mut max_attempts, mut name_taken) = (0, 0, 0, 0);
    let mut unexpected = 0;
    let mut ended_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused_by_code: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut acked_as_duplicate) = (0, 0);
    for (index, outcome) in &by_index {
        let on_victim = outcome.gateway == victim;
        if on_victim {
            if let Some(first) = outcome.resumptions.first() {
                resumed += 1;
                by_token += u64::from(
                    first.name_taken == 0
                        && first.with_token
                        && !seen_leaving.contains(names[*index].as_str()),
                );
                recovery.saturating_record(first.downtime.as_nanos().max(1) as u64);
                let p = &first.phases;
                for (hist, took) in phases.iter_mut().zip([p.connect, p.hello, p.rejoin]) {
                    hist.saturating_record(took.as_nanos().max(1) as u64);
                }
                let lost = first.lost_at.into_std();
                let back = lost + first.downtime;
                from_kill.saturating_record(
                    back.saturating_duration_since(kill_at).as_nanos().max(1) as u64,
                );
                seen.saturating_record(
                    lost.saturating_duration_since(kill_at).as_nanos().max(1) as u64
                );
            }
        } else if outcome.disconnects > 0 {
            unexpected += 1;
        }
        for r in &outcome.resumptions {
            max_attempts = max_attempts.max(r.attempts);
            name_taken += u64::from(r.name_taken);
        }
        if let Some(reason) = &outcome.ended {
            *ended_reasons.entry(format!("{reason:?}")).or_default() += 1;
        }
        for (code, n) in &outcome.refused {
            *refused_by_code.entry(code.clone()).or_default() += n;
        }
        sent += outcome.sent;
        acked_as_duplicate += outcome.acked_as_duplicate;
    }

    // Every acked message, by room; then what each member of the room got.
    let mut acked_ids: BTreeMap<&str, BTreeSet<MessageId>> = BTreeMap::new();
    let mut acked = 0;
    for outcome in by_index.values() {
        for (room, id) in &outcome.acked {
            acked += 1;
            acked_ids.entry(room.as_str()).or_default().insert(*id);
        }
    }
    let refused: u64 = refused_by_code.values().sum();
    let (mut expected_deliveries, mut received, mut lost, mut duplicates, mut out_of_order) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for (room, members) in room_members {
        let empty = BTreeSet::new();
        let expected = acked_ids.get(room.as_str()).unwrap_or(&empty);
        for index in members {
            expected_deliveries += expected.len() as u64;
            let Some(outcome) = by_index.get(index) else {
                lost += expected.len() as u64;
                continue;
            };
            let got = outcome.received.get(room).map_or(&[][..], Vec::as_slice);
            let mut seen = BTreeSet::new();
            let mut last: Option<MessageId> = None;
            for id in got {
                if !seen.insert(*id) {
                    duplicates += 1;
                } else if last.is_some_and(|last| *id < last) {
                    out_of_order += 1;
                }
                last = last.max(Some(*id));
            }
            let delivered = expected.intersection(&seen).count() as u64;
            received += delivered;
            lost += expected.len() as u64 - delivered;
        }
    }
    let on_killed_gateway = hit.len() as u64;
    let results = FailoverResults {
        members: args.members,
        rooms: room_members.len(),
        members_per_room: args.room_size * args.rooms_per_member,
        setup_secs: measured.setup_secs,
        killed_gateway: victim.to_owned(),
        restarted: args.restart,
        restart_secs: measured.restart_secs,
        on_killed_gateway,
        resumed,
        resumed_by_token: by_token,
        locked_out: on_killed_gateway - resumed,
        recovery: Millis::of(&LatencySummary::from_histogram(&recovery)),
        recovery_from_kill: Millis::of(&LatencySummary::from_histogram(&from_kill)),
        loss_seen_after_kill: Millis::of(&LatencySummary::from_histogram(&seen)),
        connect: Millis::of(&LatencySummary::from_histogram(&phases[0])),
        hello: Millis::of(&LatencySummary::from_histogram(&phases[1])),
        rejoin: Millis::of(&LatencySummary::from_histogram(&phases[2])),
        max_attempts,
        name_taken,
        presence_flicker: flicker,
        presence_other_examples: other_examples,
        seen_leaving: seen_leaving.len() as u64,
        presence_other: other_presence,
        unexpected_disconnects: unexpected,
        ended: ended_reasons.values().sum(),
        ended_reasons,
        sent,
        acked,
        acked_as_duplicate,
        unacked: sent.saturating_sub(acked + refused),
        refused,
        refused_by_code,
        expected_deliveries,
        received,
        lost,
        duplicates,
        out_of_order,
        rooms_listed_wrong: measured.rooms_listed_wrong,
        room_list_examples: measured.room_list_examples,
        drain_secs: measured.drain_secs,
    };
    (results, recovery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_show_percentiles_or_none() {
        assert_eq!(Millis::default().show(), "none");
        let mut hist = new_histogram();
        for ms in [100u64, 200, 300] {
            hist.record(ms * 1_000_000).unwrap();
        }
        let m = Millis::of(&LatencySummary::from_histogram(&hist));
        assert_eq!(m.count, 3);
        assert!((m.max_ms - 300.0).abs() < 1.0, "{m:?}");
        assert!(m.show().starts_with("p50 200 ms"), "{}", m.show());
    }
}
