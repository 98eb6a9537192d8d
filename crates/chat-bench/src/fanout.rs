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

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use chat_client::v1::{client_frame, ClientFrame, ErrorCode, Send};
use chat_client::{ClientReceiver, ClientSender};
use futures_util::FutureExt as _;
use parking_lot::Mutex;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{invalid, local_ips_arg, watched_arg, FanoutArgs, WindowRelease};
use crate::latency::{Clock, LatencySummary, Recorder, Shards};
use crate::lean_frame::LeanServerFrame;
use crate::local_ips::pick;
use crate::member::{failure_kind, join, run_id, ws_config};
use crate::pacing::{Pacer, Step};
use crate::payload::{check_chat_size, Stamp};
use crate::progress::{Progress, Timeline, SAMPLE_EVERY};
use crate::report::{fmt_int, fmt_percent, fmt_rate, unix_ms, Measured, Report, Results};
use crate::usage::WindowUsage;

/// Refs of Sends are `REF_BASE + seq`, so a reply names the message it answers.
const REF_BASE: u64 = 1 << 32;

/// Sends written per flush at most.
const MAX_BATCH: u64 = 256;

/// Frames a receiver handles between checks of the stop signal while busy.
const STOP_CHECK_EVERY: u32 = 1024;

/// The drain ends early when nothing moved for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(3);

/// Read buffer per member connection. tungstenite zero-fills the free part
/// of its read buffer before every read, so a big buffer costs a big memset
/// per read even when one small frame arrives: 8 KiB still takes dozens of
/// chat frames per read when they pile up.
const READ_BUFFER: usize = 8 * 1024;

/// What a publisher's sending task and its receiving task share.
struct Publisher {
    /// Global publisher index (in the stamps).
    id: u32,
    /// Free slots of the in-flight window (rate 0 only).
    window: Semaphore,
    /// First sequence number sent inside the measured window (MAX: not yet).
    first_measured: AtomicU64,
    /// Measured messages sent, acknowledged, refused with an Error.
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    /// Largest delay of a paced send behind its schedule.
    max_lag_ns: AtomicU64,
}

impl Publisher {
    fn new(id: u32, window: usize) -> Self {
        Self {
            id,
            window: Semaphore::new(window),
            first_measured: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_lag_ns: AtomicU64::new(0),
        }
    }

    /// Whether message `seq` was sent inside the window. A reply always
    /// arrives after its send, and the publisher stops at the window's end,
    /// so "at or after the first measured one" is exact.
    fn is_measured(&self, seq: u64) -> bool {
        seq >= self.first_measured.load(Acquire)
    }
}

/// Counters for rare events, shared by all receivers.
#[derive(Default)]
struct Events {
    /// Error frames answering Sends, by code name.
    errors_by_code: Mutex<BTreeMap<String, u64>>,
    /// Connections that ended before the run did, by reason.
    disconnects: Mutex<BTreeMap<String, u64>>,
    reconnect_frames: AtomicU64,
    decode_errors: AtomicU64,
}

impl Events {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock().entry(key).or_default() += 1;
    }
}

/// The results of a fan-out run (flattened into the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutResults {
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

/// Runs the scenario and returns its report.
pub async fn run(args: FanoutArgs) -> Result<Report<FanoutResults>> {
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

    // ---------------------------------------------------------------- set-up
    progress.phase("connect", total as u64);
    let setup_start = Instant::now();
    let members = connect_all(&args, &run, &rooms, &local_ips, &progress).await?;
    let setup_secs = setup_start.elapsed().as_secs_f64();

    // ---------------------------------------------------------------- run
    let windowed = args.rate == 0.0;
    let shards = Shards::new(16);
    let events = Arc::new(Events::default());
    let stop = CancellationToken::new();
    let publishers_total = args.rooms * args.publishers;
    let mut publisher_states = Vec::with_capacity(publishers_total);
    let mut receivers = JoinSet::new();
    let mut publishing = JoinSet::new();
    let mut idle_senders = Vec::with_capacity(total);
    let clock = Arc::new(Clock::start(args.warmup, args.duration));
    for (index, (tx, rx)) in members.into_iter().enumerate() {
        let (room, member) = (index / args.members, index % args.members);
        let own = (member < args.publishers).then(|| {
            let id = (room * args.publishers + member) as u32;
            let state = Arc::new(Publisher::new(id, args.window));
            publisher_states.push(Arc::clone(&state));
            state
        });
        let receiver = Receiver {
            clock: Arc::clone(&clock),
            recorder: shards.recorder(index),
            events: Arc::clone(&events),
            room_first_publisher: (room * args.publishers) as u64,
            last_seq: vec![u64::MAX; args.publishers],
            duplicates: 0,
            own: own.clone(),
            release_on_ack: windowed && args.window_release == WindowRelease::Ack,
            release_on_echo: windowed && args.window_release == WindowRelease::Echo,
        };
        receivers.spawn(receiver.run(rx, stop.clone()));
        match own {
            Some(state) => {
                let sending = Sending {
                    clock: Arc::clone(&clock),
                    state,
                    room: rooms[room].clone(),
                    payload: args.payload,
                    pacer: (!windowed).then(|| {
                        Pacer::staggered(args.rate, publisher_states.len() - 1, publishers_total)
                    }),
                };
                publishing.spawn(sending.run(tx));
            }
            None => idle_senders.push(tx),
        }
    }

    // ---------------------------------------------------------------- monitor
    let (start_at, end_at) = clock.window();
    progress.phase("warm-up", (args.warmup + args.duration).as_millis() as u64);
    let mut timeline = Timeline::default();
    timeline.rate(0.0, 0);
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.tick().await; // the first tick is immediate
    let mut usage = WindowUsage::new(watched);
    let mut ended_at = None;
    let mut last_change = (Instant::now(), 0u64, 0u64);
    let expected = |states: &[Arc<Publisher>]| {
        states.iter().map(|p| p.acked.load(Relaxed)).sum::<u64>() * args.members as u64
    };
    let outstanding = |states: &[Arc<Publisher>]| {
        states
            .iter()
            .map(|p| {
                p.sent
                    .load(Relaxed)
                    .saturating_sub(p.acked.load(Relaxed) + p.errors.load(Relaxed))
            })
            .sum::<u64>()
    };
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let t = now.duration_since(clock.epoch).as_secs_f64();
        let rate = timeline.rate(t, shards.total());
        if !usage.started() && now >= start_at {
            usage.start()?;
            progress.phase("measure", args.duration.as_millis() as u64);
        }
        if ended_at.is_none() && now >= end_at {
            usage.end()?;
            ended_at = Some(now);
            progress.phase("drain", args.drain_timeout.as_millis() as u64);
        }
        let (received, expect) = (shards.measured(), expected(&publisher_states));
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
            let done =
                received >= expect && outstanding(&publisher_states) == 0 && publishing.is_empty();
            let quiet = now.duration_since(last_change.0) >= DRAIN_QUIET;
            if done || quiet || now.duration_since(ended) >= args.drain_timeout {
                break;
            }
        }
        // Publishers end at the window's end (or on a send error).
        while let Some(Some(result)) = publishing.join_next().now_or_never() {
            let (tx, outcome) = result.context("publisher task failed")?;
            if let Err(e) = outcome {
                Events::count(
                    &events.disconnects,
                    format!("send failed: {}", failure_kind(&e)),
                );
            }
            idle_senders.push(tx);
        }
    }
    progress.finish();
    let (bench_cpu, processes) = usage.into_usage().expect("the drain follows the window");
    let drain_secs = ended_at
        .expect("the drain follows the window")
        .elapsed()
        .as_secs_f64();

    // ---------------------------------------------------------------- wind down
    stop.cancel();
    let mut duplicates = 0;
    while let Some(result) = receivers.join_next().await {
        duplicates += result.context("receiver task failed")?;
    }
    publishing.abort_all();
    while let Some(result) = publishing.join_next().await {
        if let Ok((tx, _)) = result {
            idle_senders.push(tx);
        }
    }
    close_all(idle_senders).await;

    // ---------------------------------------------------------------- report
    let hist = shards.merged();
    let (mut sent, mut acked, mut send_errors) = (0, 0, 0);
    for p in &publisher_states {
        sent += p.sent.load(Relaxed);
        acked += p.acked.load(Relaxed);
        send_errors += p.errors.load(Relaxed);
    }
    let expected_deliveries = acked * args.members as u64;
    let received = hist.len();
    let loss = expected_deliveries.saturating_sub(received);
    let measured_secs = args.duration.as_secs_f64();
    let disconnect_reasons = std::mem::take(&mut *events.disconnects.lock());
    let max_lag_ns = publisher_states
        .iter()
        .map(|p| p.max_lag_ns.load(Relaxed))
        .max()
        .unwrap_or(0);
    let results = FanoutResults {
        rooms: args.rooms,
        members_per_room: args.members,
        publishers_per_room: args.publishers,
        connections: total,
        setup_secs,
        measured_secs,
        sent,
        acked,
        send_errors,
        errors_by_code: std::mem::take(&mut *events.errors_by_code.lock()),
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
        drain_secs,
    };
    Report::new(
        "fanout",
        &args,
        &args.output.label,
        started_unix_ms,
        results,
        Measured {
            latency_kind: "end-to-end latency",
            latency: LatencySummary::from_histogram(&hist),
            timeline_unit: "deliveries/s",
            timeline: timeline.into_points(),
            bench_cpu,
            processes,
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

/// Closes every connection politely, all at once, without waiting long.
async fn close_all(senders: Vec<ClientSender>) {
    let mut closing = JoinSet::new();
    for mut tx in senders {
        closing.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), tx.close()).await;
        });
    }
    while closing.join_next().await.is_some() {}
}

/// A publisher's sending task.
struct Sending {
    clock: Arc<Clock>,
    state: Arc<Publisher>,
    room: String,
    payload: usize,
    /// The schedule; `None` at rate 0 (window-bound).
    pacer: Option<Pacer>,
}

impl Sending {
    /// Publishes until the window ends; hands the sender back for closing.
    async fn run(
        self,
        mut tx: ClientSender,
    ) -> (ClientSender, Result<(), chat_client::ClientError>) {
        let result = match self.pacer {
            Some(pacer) => self.paced(&mut tx, pacer).await,
            None => self.windowed(&mut tx).await,
        };
        (tx, result)
    }

    /// Rate 0: send whenever the window has room, in batches.
    async fn windowed(&self, tx: &mut ClientSender) -> Result<(), chat_client::ClientError> {
        let (_, end) = self.clock.window();
        let mut deadline = pin!(tokio::time::sleep_until(end.into()));
        let mut seq = 0u64;
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut deadline => return Ok(()),
                permit = self.state.window.acquire() => permit.expect("the window is never closed"),
            };
            permit.forget();
            let mut batch = 1;
            while batch < MAX_BATCH {
                match self.state.window.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                batch += 1;
            }
            for _ in 0..batch {
                let now = self.clock.now_ns();
                if now >= self.clock.end_ns {
                    tx.flush().await?;
                    return Ok(());
                }
                self.feed(tx, seq, now).await?;
                seq += 1;
            }
            tx.flush().await?;
        }
    }

    /// Rate > 0: send on an absolute schedule, in bursts of what is due.
    async fn paced(
        &self,
        tx: &mut ClientSender,
        pacer: Pacer,
    ) -> Result<(), chat_client::ClientError> {
        let end = Duration::from_nanos(self.clock.end_ns);
        let mut seq = 0u64;
        loop {
            let elapsed = self.clock.epoch.elapsed();
            match pacer.step(seq, elapsed, end, MAX_BATCH) {
                Step::Done => return tx.flush().await,
                Step::Wait(due) => tokio::time::sleep_until((self.clock.epoch + due).into()).await,
                Step::Send(upto) => {
                    let lag = elapsed.saturating_sub(pacer.due_at(seq));
                    self.state
                        .max_lag_ns
                        .fetch_max(lag.as_nanos() as u64, Relaxed);
                    while seq < upto {
                        let now = self.clock.now_ns();
                        if now >= self.clock.end_ns {
                            // Stamped after the end it would not be measured.
                            break;
                        }
                        self.feed(tx, seq, now).await?;
                        seq += 1;
                    }
                    tx.flush().await?;
                }
            }
        }
    }

    /// Queues message `seq` stamped `now` (not flushed).
    async fn feed(
        &self,
        tx: &mut ClientSender,
        seq: u64,
        now: u64,
    ) -> Result<(), chat_client::ClientError> {
        if self.clock.measured(now) {
            if self.state.first_measured.load(Relaxed) == u64::MAX {
                self.state.first_measured.store(seq, Release);
            }
            self.state.sent.fetch_add(1, Relaxed);
        }
        let text = Stamp {
            sent_ns: now,
            publisher: self.state.id,
            seq,
        }
        .to_text(self.payload);
        let send = Send {
            room: self.room.clone(),
            text,
            client_msg_id: String::new(),
        };
        let frame = ClientFrame {
            r#ref: REF_BASE + seq,
            kind: Some(client_frame::Kind::Send(send)),
        };
        tx.feed_frame(frame).await
    }
}

/// A member's receiving task.
struct Receiver {
    clock: Arc<Clock>,
    recorder: Recorder,
    events: Arc<Events>,
    /// Global index of this room's first publisher.
    room_first_publisher: u64,
    /// Last sequence number seen per publisher of the room (MAX: none yet).
    last_seq: Vec<u64>,
    duplicates: u64,
    /// Set when this member is a publisher: its shared state.
    own: Option<Arc<Publisher>>,
    release_on_ack: bool,
    release_on_echo: bool,
}

impl Receiver {
    /// Reads until stopped or disconnected; returns the duplicates it saw.
    async fn run(mut self, mut rx: ClientReceiver, stop: CancellationToken) -> u64 {
        let mut stopped = pin!(stop.cancelled());
        let mut busy = 0u32;
        loop {
            // Take what is already readable without waiting; before waiting,
            // publish the counts so the progress and the drain see them.
            let next = match rx.next_binary().now_or_never() {
                Some(next) => {
                    busy += 1;
                    if busy >= STOP_CHECK_EVERY {
                        busy = 0;
                        if stop.is_cancelled() {
                            break;
                        }
                    }
                    next
                }
                None => {
                    self.recorder.flush();
                    tokio::select! {
                        biased;
                        next = rx.next_binary() => next,
                        () = &mut stopped => break,
                    }
                }
            };
            match next {
                Ok(Some(data)) => self.handle(data),
                Ok(None) => {
                    let reason = match rx.close_info() {
                        Some(info) => format!("closed by server: {}", info.code),
                        None => "connection ended".into(),
                    };
                    Events::count(&self.events.disconnects, reason);
                    break;
                }
                Err(e) => {
                    Events::count(&self.events.disconnects, failure_kind(&e));
                    break;
                }
            }
        }
        self.recorder.flush();
        self.duplicates
    }

    #[inline]
    fn handle(&mut self, data: Bytes) {
        let frame = match LeanServerFrame::decode(data) {
            Ok(frame) => frame,
            Err(_) => {
                self.events.decode_errors.fetch_add(1, Relaxed);
                return;
            }
        };
        if let Some(message) = frame.message {
            let Some(stamp) = Stamp::parse(&message.text) else {
                return;
            };
            let now = self.clock.now_ns();
            if self.clock.measured(stamp.sent_ns) {
                self.recorder.record(now.saturating_sub(stamp.sent_ns));
            } else {
                self.recorder.count();
            }
            if let Some(last) = (u64::from(stamp.publisher))
                .checked_sub(self.room_first_publisher)
                .and_then(|local| self.last_seq.get_mut(local as usize))
            {
                if *last != u64::MAX && stamp.seq <= *last {
                    self.duplicates += 1;
                } else {
                    *last = stamp.seq;
                }
            }
            if self.release_on_echo {
                if let Some(own) = self.own.as_ref().filter(|own| own.id == stamp.publisher) {
                    own.window.add_permits(1);
                }
            }
            return;
        }
        if frame.reconnect.is_some() {
            self.events.reconnect_frames.fetch_add(1, Relaxed);
            return;
        }
        let Some(own) = &self.own else { return };
        let Some(seq) = frame.r#ref.checked_sub(REF_BASE) else {
            return;
        };
        if frame.ack.is_some() {
            if own.is_measured(seq) {
                own.acked.fetch_add(1, Relaxed);
            }
            if self.release_on_ack {
                own.window.add_permits(1);
            }
        } else if let Some(error) = frame.error {
            if own.is_measured(seq) {
                own.errors.fetch_add(1, Relaxed);
            }
            let code = ErrorCode::try_from(error.code).map_or_else(
                |_| format!("code {}", error.code),
                |c| c.as_str_name().to_owned(),
            );
            Events::count(&self.events.errors_by_code, code);
            // A refused message frees its slot whichever release is chosen.
            if self.release_on_ack || self.release_on_echo {
                own.window.add_permits(1);
            }
        }
    }
}
