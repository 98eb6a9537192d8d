//! `chat-bench floor`: what this machine can do at all for a fan-out, as a
//! yardstick for `fanout`. The same shape (rooms of members, one paced
//! publisher per room, every delivery on its own TCP connection through a
//! balancer) with nothing but the sockets: no WebSocket, no protocol, no
//! Redis, no async runtime, three threads.
//!
//! - The source writes each message (its send time, padded to `--payload`
//!   bytes) to every member socket of its room, one write each, as a
//!   gateway must: every member has its own connection.
//! - The relay ([`crate::relay`]) copies every connection to a second one,
//!   as a Layer-4 balancer does.
//! - The sink reads them all with one epoll and records the latency.
//!
//! Any design pays at least this for the same deliveries on the same cores,
//! so a system's figures are read against it: a target below the floor's
//! figure cannot be reached on this machine by any design with this shape.

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::relay::{drain, Drained, Relay};
use chat_measure::args::{invalid, parse_secs, watched_arg, OutputArgs};
use chat_measure::latency::{Clock, LatencySummary, Recorder, Shards};
use chat_measure::pacing::Pacer;
use chat_measure::progress::{watch_window, Progress};
use chat_measure::report::{
    fmt_cpu, fmt_int, fmt_percent, fmt_rate, unix_ms, Measured, Report, Results,
};
use chat_measure::usage::{current_tid, CpuUsage, ProcessUsage, Watched, WindowUsage};

/// `floor` flags.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FloorArgs {
    /// Rooms.
    #[arg(long, env = "CHAT_BENCH_ROOMS", default_value_t = 10)]
    pub rooms: usize,
    /// Members per room: each its own connection.
    #[arg(long, env = "CHAT_BENCH_MEMBERS", default_value_t = 100)]
    pub members: usize,
    /// Messages per second per room.
    #[arg(long, env = "CHAT_BENCH_RATE", default_value_t = 100.0)]
    pub rate: f64,
    /// Message size in bytes (at least 8: the send time).
    #[arg(long, env = "CHAT_BENCH_PAYLOAD", default_value_t = 80)]
    pub payload: usize,
    /// Measured time.
    #[arg(long, env = "CHAT_BENCH_DURATION", value_parser = parse_secs, default_value = "10s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, env = "CHAT_BENCH_WARMUP", value_parser = parse_secs, default_value = "2s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub warmup: Duration,
    /// Where and how the report is written.
    #[command(flatten)]
    #[serde(skip)]
    pub output: OutputArgs,
}

/// The send time at the start of each message: nanoseconds since the run's epoch.
const STAMP: usize = 8;

/// After the window, how long the sink waits for deliveries still on their way.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The results of a floor run (flattened into the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorResults {
    /// Rooms fanned out to.
    pub rooms: usize,
    /// Members (sink connections) per room.
    pub members: usize,
    /// Bytes per message.
    pub payload: usize,
    /// The length of the measured window.
    pub measured_secs: f64,
    /// Messages sent in the measured window (one per room per send).
    pub sent: u64,
    /// `sent` times the members of a room.
    pub expected: u64,
    /// Deliveries of those messages that arrived.
    pub received: u64,
    /// `expected` minus `received`.
    pub loss: u64,
    /// `received` over the measured window.
    pub deliveries_per_sec: f64,
    /// How late the source was at worst against its schedule.
    pub max_pacing_lag_ms: f64,
    /// CPU of each thread over the measured window.
    pub stages: Vec<StageCpu>,
}

/// One thread's CPU use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageCpu {
    /// The thread's stage: `source`, `relay` or `sink`.
    pub name: String,
    /// What it used over the measured window.
    pub cpu: CpuUsage,
}

impl Results for FloorResults {
    fn clean(&self) -> bool {
        self.loss == 0 && self.received > 0
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "shape".into(),
                format!(
                    "{} rooms x {} members, {} B messages, one hop",
                    self.rooms, self.members, self.payload
                ),
            ),
            ("measured".into(), format!("{:.1} s", self.measured_secs)),
            ("sent".into(), fmt_int(self.sent)),
            ("expected".into(), fmt_int(self.expected)),
            ("received".into(), fmt_int(self.received)),
            (
                "loss".into(),
                format!(
                    "{} ({})",
                    fmt_int(self.loss),
                    fmt_percent(self.loss as f64 / self.expected.max(1) as f64)
                ),
            ),
            ("deliveries/s".into(), fmt_rate(self.deliveries_per_sec)),
            (
                "max pacing lag".into(),
                format!("{:.2} ms", self.max_pacing_lag_ms),
            ),
        ];
        for stage in &self.stages {
            rows.push((format!("{} cpu", stage.name), fmt_cpu(&stage.cpu)));
        }
        rows
    }
}

/// What the source reports when its window is over.
struct Sent {
    in_window: u64,
    max_lag: Duration,
}

/// Runs the scenario and returns its report.
pub async fn run(args: FloorArgs) -> Result<Report<FloorResults>> {
    if args.rooms == 0 || args.members == 0 {
        return Err(invalid("--rooms and --members must be at least 1"));
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(invalid("--rate must be a positive number"));
    }
    if args.payload < STAMP {
        return Err(invalid(format!("--payload must be at least {STAMP} bytes")));
    }
    let watched = watched_arg(&args.output.watch_pid)?;
    let started_unix_ms = unix_ms();
    let conns = args.rooms * args.members;
    let progress = Progress::new(conns as u64, args.output.no_progress);

    let SetUp {
        relay_thread,
        stop_relay,
        sockets,
        sink_sockets,
    } = set_up(conns, &progress).await?;

    // ---------------------------------------------------------------- measured window
    let shards = Shards::new(1);
    let clock = Arc::new(Clock::start(args.warmup, args.duration));
    let sink_thread = spawn_stage("sink", {
        let (clock, recorder, payload) = (Arc::clone(&clock), shards.recorder(0), args.payload);
        move || sink(sink_sockets, payload, &clock, recorder)
    })?;
    let source_thread = spawn_stage("source", {
        let clock = Arc::clone(&clock);
        let (rooms, members, rate, payload) = (args.rooms, args.members, args.rate, args.payload);
        move || source(sockets, rooms, members, rate, payload, &clock)
    })?;
    let stages = [
        source_thread.watched(),
        relay_thread.watched(),
        sink_thread.watched(),
    ];

    // The stages are watched after the processes asked for, and split off after.
    let watched_processes = watched.len();
    let watch = watch_window(
        &clock,
        "deliveries/s",
        || shards.total(),
        &progress,
        WindowUsage::new(watched.into_iter().chain(stages).collect()),
    )
    .await?;
    let mut processes = watch.processes;
    let stage_usage = processes.split_off(watched_processes);
    // The source stops at the end of the window and closes its sockets, the
    // relay passes the ends on, and the sink stops once every socket ended.
    // Every thread is joined before the first failure is reported.
    let (sent, received) = tokio::task::spawn_blocking(move || {
        let sent = source_thread.join();
        let received = sink_thread.join();
        stop_relay.store(true, Ordering::Relaxed);
        let relayed = relay_thread.join();
        let both = (sent?, received?);
        relayed.map(|()| both)
    })
    .await
    .context("join task failed")??;
    progress.finish();

    let measured_secs = args.duration.as_secs_f64();
    let results = results(&args, measured_secs, &sent, received, stage_usage);
    Report::new(
        "floor",
        &args,
        &args.output.label,
        started_unix_ms,
        results,
        Measured {
            latency_kind: "end-to-end latency (send to receipt)",
            latency: LatencySummary::from_histogram(&shards.merged()),
            timeline_unit: "deliveries/s",
            timeline: watch.timeline,
            bench_cpu: watch.bench_cpu,
            processes,
        },
    )
}

/// The relay and the sockets of a floor run, connected through it.
struct SetUp {
    relay_thread: Stage<()>,
    /// Tells the relay to stop.
    stop_relay: Arc<AtomicBool>,
    /// The source's ends, one per member.
    sockets: Vec<TcpStream>,
    /// The sink's ends, in the same order.
    sink_sockets: Vec<mio::net::TcpStream>,
}

/// Binds the sink and the relay, starts the relay's thread and connects `conns` sockets
/// through it.
async fn set_up(conns: usize, progress: &Progress) -> Result<SetUp> {
    progress.phase("connect", conns as u64);
    let sink_listener = TcpListener::bind("127.0.0.1:0").context("binding the sink")?;
    let relay = Relay::bind(
        "127.0.0.1:0".parse().expect("static address"),
        sink_listener.local_addr()?,
    )
    .context("binding the relay")?;
    let relay_addr = relay.local_addr()?;
    let stop_relay = Arc::new(AtomicBool::new(false));
    let relay_thread = spawn_stage("relay", {
        let stop = Arc::clone(&stop_relay);
        move || relay.run(&stop).context("relay")
    })?;
    let (sockets, sink_sockets) =
        tokio::task::spawn_blocking(move || connect_through(relay_addr, &sink_listener, conns))
            .await
            .context("connect task failed")??;
    progress.update(conns as u64, String::new());

    Ok(SetUp {
        relay_thread,
        stop_relay,
        sockets,
        sink_sockets,
    })
}

/// The floor's own results.
fn results(
    args: &FloorArgs,
    measured_secs: f64,
    sent: &Sent,
    received: u64,
    stage_usage: Vec<ProcessUsage>,
) -> FloorResults {
    let expected = sent.in_window * args.members as u64;
    FloorResults {
        rooms: args.rooms,
        members: args.members,
        payload: args.payload,
        measured_secs,
        sent: sent.in_window,
        expected,
        received,
        loss: expected.saturating_sub(received),
        deliveries_per_sec: received as f64 / measured_secs,
        max_pacing_lag_ms: sent.max_lag.as_secs_f64() * 1e3,
        stages: stage_usage
            .into_iter()
            .map(|usage| StageCpu {
                name: usage.name,
                cpu: usage.cpu,
            })
            .collect(),
    }
}

/// A running stage: its thread and its kernel thread id (for its CPU time).
/// The thread stays (idle) after its work until [`Stage::join`], so that its
/// CPU time can still be read at the end of the window.
struct Stage<T> {
    name: &'static str,
    tid: u32,
    thread: JoinHandle<Result<T>>,
    /// Dropped to let the thread end.
    release: std::sync::mpsc::Sender<()>,
}

impl<T> Stage<T> {
    /// The thread, for sampling its CPU time.
    fn watched(&self) -> Watched {
        Watched::own_thread(self.name, self.tid)
    }

    fn join(self) -> Result<T> {
        drop(self.release);
        self.thread
            .join()
            .map_err(|_| anyhow!("the {} thread panicked", self.name))?
    }
}

fn spawn_stage<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<Stage<T>> {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("floor-{name}"))
        .spawn(move || {
            let _ = tid_tx.send(current_tid());
            let result = work();
            let _ = released.recv(); // ends when the sender is dropped
            result
        })
        .with_context(|| format!("starting the {name} thread"))?;
    let tid = tid_rx
        .recv()
        .context("the thread ended before it started")??;
    Ok(Stage {
        name,
        tid,
        thread,
        release,
    })
}

/// `n` connections through the relay: the source's ends, and the sink's ends
/// (nonblocking) in the same order.
fn connect_through(
    relay: SocketAddr,
    sink: &TcpListener,
    n: usize,
) -> Result<(Vec<TcpStream>, Vec<mio::net::TcpStream>)> {
    let mut sources = Vec::with_capacity(n);
    let mut sinks = Vec::with_capacity(n);
    for i in 0..n {
        let source = TcpStream::connect(relay)
            .with_context(|| format!("connection {i} of {n} to the relay"))?;
        source.set_nodelay(true)?;
        sources.push(source);
        let (sink_end, _) = sink.accept().context("accepting at the sink")?;
        sink_end.set_nonblocking(true)?;
        sinks.push(mio::net::TcpStream::from_std(sink_end));
    }
    Ok((sources, sinks))
}

/// Sends every room's messages on schedule until the window ends, then
/// closes the sockets. Rooms take turns at `rate` each, spread evenly. A
/// source that falls behind sends what is due at once, and the lag is
/// reported; it stops at the end of the window all the same.
fn source(
    sockets: Vec<TcpStream>,
    rooms: usize,
    members: usize,
    rate: f64,
    payload: usize,
    clock: &Clock,
) -> Result<Sent> {
    let pacer = Pacer::new(rate * rooms as f64, Duration::ZERO);
    let mut message = vec![0u8; payload];
    let mut sent = Sent {
        in_window: 0,
        max_lag: Duration::ZERO,
    };
    for n in 0u64.. {
        let due = pacer.due_at(n);
        if due.as_nanos() as u64 >= clock.end_ns {
            break;
        }
        if let Some(wait) = (clock.epoch + due).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = clock.now_ns();
        if now >= clock.end_ns {
            break; // behind schedule at the end: what is left is not sent
        }
        sent.max_lag = sent.max_lag.max(Duration::from_nanos(
            now.saturating_sub(due.as_nanos() as u64),
        ));
        message[..STAMP].copy_from_slice(&now.to_le_bytes());
        let room = (n % rooms as u64) as usize;
        for mut socket in &sockets[room * members..(room + 1) * members] {
            socket
                .write_all(&message)
                .context("source write (the relay or sink is gone)")?;
        }
        if clock.measured(now) {
            sent.in_window += 1;
        }
    }
    Ok(sent)
}

/// Reads every socket until each has ended (or the drain timeout after the
/// window); records the latency of every message sent in the window and
/// returns how many of those arrived.
fn sink(
    mut sockets: Vec<mio::net::TcpStream>,
    payload: usize,
    clock: &Clock,
    mut recorder: Recorder,
) -> Result<u64> {
    let mut poll = Poll::new()?;
    for (i, socket) in sockets.iter_mut().enumerate() {
        poll.registry()
            .register(socket, Token(i), Interest::READABLE)?;
    }
    // Each socket's unfinished message, and whether it has ended.
    let mut partial = vec![Vec::with_capacity(payload); sockets.len()];
    let mut ended = vec![false; sockets.len()];
    let mut open = sockets.len();
    let mut received = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = clock.window().1 + DRAIN_TIMEOUT;
    while open > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match poll.poll(&mut events, Some(left.min(Duration::from_millis(100)))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for event in &events {
            let i = event.token().0;
            if ended[i] {
                continue;
            }
            let take = |bytes: &[u8]| {
                let now = clock.now_ns();
                messages(&mut partial[i], bytes, payload, |sent| {
                    if clock.measured(sent) {
                        received += 1;
                        recorder.record(now.saturating_sub(sent));
                    } else {
                        recorder.count();
                    }
                });
                Ok(())
            };
            match drain(&mut sockets[i], &mut buf, event.is_read_closed(), take) {
                Ok(Drained::Empty) => {}
                Ok(Drained::Ended) => {
                    ended[i] = true;
                    open -= 1;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("sink read")),
            }
        }
        recorder.flush();
    }
    Ok(received)
}

/// Calls `each` with the send time of every message completed by `bytes`,
/// given what was left over from earlier reads in `partial` (which keeps
/// what is left now).
fn messages(partial: &mut Vec<u8>, mut bytes: &[u8], size: usize, mut each: impl FnMut(u64)) {
    while !bytes.is_empty() {
        let take = (size - partial.len()).min(bytes.len());
        partial.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        if partial.len() == size {
            let stamp: [u8; STAMP] = partial[..STAMP].try_into().expect("size >= STAMP");
            each(u64::from_le_bytes(stamp));
            partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_measure::args::OutputArgs;

    fn message(stamp: u64, size: usize) -> Vec<u8> {
        let mut m = vec![0xAB; size];
        m[..STAMP].copy_from_slice(&stamp.to_le_bytes());
        m
    }

    #[test]
    fn messages_are_cut_out_of_any_split_of_the_stream() {
        let stream: Vec<u8> = (1..=5).flat_map(|s| message(s * 1000, 20)).collect();
        for chunk in [1, 3, 7, 20, 33, 100] {
            let mut partial = Vec::new();
            let mut stamps = Vec::new();
            for c in stream.chunks(chunk) {
                messages(&mut partial, c, 20, |stamp| stamps.push(stamp));
            }
            assert_eq!(stamps, [1000, 2000, 3000, 4000, 5000], "chunks of {chunk}");
            assert!(partial.is_empty());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_delivery_of_a_small_floor_run_arrives_and_is_timed() {
        let args = FloorArgs {
            rooms: 3,
            members: 4,
            rate: 50.0,
            payload: 64,
            duration: Duration::from_millis(800),
            warmup: Duration::from_millis(200),
            output: OutputArgs {
                json: false,
                json_file: None,
                plot: None,
                label: "test".into(),
                watch_pid: vec![],
                no_progress: true,
            },
        };
        let report = run(args).await.unwrap();
        let r = &report.results;
        assert!(report.clean, "{}", report.table());
        // 3 rooms at 50/s each for 0.8 s: 120 messages on schedule (one more
        // at the edge), 4 deliveries each.
        assert!((110..=121).contains(&r.sent), "{} sent", r.sent);
        assert_eq!(r.expected, r.sent * 4);
        assert_eq!(r.received, r.expected);
        assert_eq!(report.latency.count, r.received);
        let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["source", "relay", "sink"]);
        assert!(report.table().contains("relay cpu"));
    }
}
