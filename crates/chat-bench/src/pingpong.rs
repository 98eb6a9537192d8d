//! `chat-bench pingpong`: fixed-size pings over plain TCP to an echo server,
//! directly or through a load balancer, to measure what the balancer adds
//! to latency and what it costs in throughput. Each connection keeps
//! `--depth` pings in flight (1: strict ping-pong), optionally paced to
//! `--rate` pings per second over all connections.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::cli::{invalid, local_ips_arg, watched_arg, PingpongArgs};
use crate::latency::{Clock, LatencySummary, Recorder, Shards};
use crate::local_ips::pick;
use crate::pacing::Pacer;
use crate::payload::{read_ping, write_ping, PING_HEADER_LEN};
use crate::progress::{watch_window, Progress, Watch};
use crate::report::{fmt_bytes, fmt_int, fmt_rate, unix_ms, Measured, Report, Results};
use crate::usage::WindowUsage;

/// A reply later than this counts as lost and ends the connection.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The results of a ping-pong run (flattened into the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PingpongResults {
    pub conns: usize,
    pub connected: usize,
    pub depth: usize,
    pub size: usize,
    pub measured_secs: f64,
    /// Measured pings answered.
    pub round_trips: u64,
    pub round_trips_per_sec: f64,
    /// Payload bytes per second in each direction.
    pub bytes_per_sec: f64,
    pub errors: u64,
    pub error_reasons: BTreeMap<String, u64>,
}

impl Results for PingpongResults {
    fn clean(&self) -> bool {
        self.errors == 0 && self.round_trips > 0 && self.connected == self.conns
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "connections".into(),
                format!(
                    "{} of {} ({} in flight each, {} B)",
                    self.connected, self.conns, self.depth, self.size
                ),
            ),
            ("measured".into(), format!("{:.1} s", self.measured_secs)),
            ("round trips".into(), fmt_int(self.round_trips)),
            ("round trips/s".into(), fmt_rate(self.round_trips_per_sec)),
            (
                "throughput".into(),
                format!(
                    "{}/s each way",
                    fmt_bytes(self.bytes_per_sec.round() as i64)
                ),
            ),
            ("errors".into(), fmt_int(self.errors)),
        ];
        for (reason, n) in &self.error_reasons {
            rows.push((format!("  {reason}"), fmt_int(*n)));
        }
        rows
    }
}

/// Opens the `--conns` connections at once; counts those that fail. At least one must open.
async fn connect_all(
    args: &PingpongArgs,
    target: SocketAddr,
    local_ips: &[IpAddr],
    errors: &Mutex<BTreeMap<String, u64>>,
    progress: &Progress,
) -> Result<Vec<TcpStream>> {
    progress.phase("connect", args.conns as u64);
    let mut connecting = JoinSet::new();
    for index in 0..args.conns {
        let local = pick(local_ips, index);
        connecting.spawn(connect(target, local));
    }
    let mut streams = Vec::with_capacity(args.conns);
    while let Some(result) = connecting.join_next().await {
        match result.context("connect task failed")? {
            Ok(stream) => streams.push(stream),
            Err(e) => {
                *errors
                    .lock()
                    .entry(format!("connect: {}", e.kind()))
                    .or_default() += 1
            }
        }
        progress.update(streams.len() as u64, String::new());
    }
    if streams.is_empty() {
        bail!(
            "no connection to {target} could be opened: {:?}",
            errors.lock()
        );
    }
    Ok(streams)
}

/// Runs the scenario and returns its report: the connections are opened, ping-pong
/// through the measured window, then the report.
pub(crate) async fn run(args: PingpongArgs) -> Result<Report<PingpongResults>> {
    validate(&args)?;
    let target = resolve(&args.url).await?;
    let local_ips = local_ips_arg(args.local_ips.as_deref())?;
    let watched = watched_arg(&args.output.watch_pid)?;
    let started_unix_ms = unix_ms();
    let progress = Progress::new(args.conns as u64, args.output.no_progress);
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();

    let streams = connect_all(&args, target, &local_ips, &errors, &progress).await?;
    let connected = streams.len();
    let shards = Shards::new(8);
    let clock = Arc::new(Clock::start(args.warmup, args.duration));
    let tasks = start(&args, streams, &clock, &shards, &errors);
    let watch = measure(&clock, &shards, &progress, WindowUsage::new(watched), tasks).await?;
    report(&args, started_unix_ms, connected, &shards, &errors, watch)
}

fn validate(args: &PingpongArgs) -> Result<()> {
    if args.conns == 0 || args.depth == 0 {
        return Err(invalid("--conns and --depth must be at least 1"));
    }
    if args.size < PING_HEADER_LEN {
        return Err(invalid(format!(
            "--size must be at least {PING_HEADER_LEN} bytes"
        )));
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err(invalid("--rate must be 0 or a positive number"));
    }
    Ok(())
}

/// Starts one ping loop per connection, `--rate` (if any) shared evenly; a
/// connection that fails counts its reason in `errors`.
fn start(
    args: &PingpongArgs,
    streams: Vec<TcpStream>,
    clock: &Arc<Clock>,
    shards: &Arc<Shards>,
    errors: &Arc<Mutex<BTreeMap<String, u64>>>,
) -> JoinSet<()> {
    let connected = streams.len();
    let mut tasks = JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let pacer = (args.rate > 0.0)
            .then(|| Pacer::staggered(args.rate / connected as f64, index, connected));
        let conn = Conn {
            clock: Arc::clone(clock),
            recorder: shards.recorder(index),
            depth: args.depth,
            size: args.size,
            pacer,
        };
        let errors = Arc::clone(errors);
        tasks.spawn(async move {
            if let Err(reason) = conn.run(stream).await {
                *errors.lock().entry(reason).or_default() += 1;
            }
        });
    }
    tasks
}

/// The measured window: watches the round trips until the window ends, then
/// lets the connections finish their last replies.
async fn measure(
    clock: &Clock,
    shards: &Shards,
    progress: &Progress,
    usage: WindowUsage,
    mut tasks: JoinSet<()>,
) -> Result<Watch> {
    let watch = watch_window(clock, "round trips/s", || shards.total(), progress, usage).await?;
    // Connections stop sending at the end and finish their last replies.
    let finish = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(REPLY_TIMEOUT + Duration::from_secs(1), finish)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    progress.finish();
    Ok(watch)
}

/// The report of a finished run.
fn report(
    args: &PingpongArgs,
    started_unix_ms: u64,
    connected: usize,
    shards: &Shards,
    errors: &Mutex<BTreeMap<String, u64>>,
    watch: Watch,
) -> Result<Report<PingpongResults>> {
    let round_trips = shards.measured();
    let measured_secs = args.duration.as_secs_f64();
    let error_reasons = std::mem::take(&mut *errors.lock());
    let results = PingpongResults {
        conns: args.conns,
        connected,
        depth: args.depth,
        size: args.size,
        measured_secs,
        round_trips,
        round_trips_per_sec: round_trips as f64 / measured_secs,
        bytes_per_sec: (round_trips * args.size as u64) as f64 / measured_secs,
        errors: error_reasons.values().sum(),
        error_reasons,
    };
    Report::new(
        "pingpong",
        args,
        &args.output.label,
        started_unix_ms,
        results,
        Measured {
            latency_kind: "round-trip time",
            latency: LatencySummary::from_histogram(&shards.merged()),
            timeline_unit: "round trips/s",
            timeline: watch.timeline,
            bench_cpu: watch.bench_cpu,
            processes: watch.processes,
        },
    )
}

/// `tcp://HOST:PORT` (or plain `HOST:PORT`) to an address.
async fn resolve(url: &str) -> Result<SocketAddr> {
    let hostport = url
        .strip_prefix("tcp://")
        .unwrap_or(url)
        .trim_end_matches('/');
    tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("resolving {url:?} (expected tcp://HOST:PORT)"))?
        .next()
        .with_context(|| format!("no address for {url:?}"))
}

async fn connect(target: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection's ping loop.
struct Conn {
    clock: Arc<Clock>,
    recorder: Recorder,
    depth: usize,
    size: usize,
    pacer: Option<Pacer>,
}

impl Conn {
    /// Pings until the window ends, then collects the replies still due.
    /// Returns a reason on failure.
    async fn run(mut self, mut stream: TcpStream) -> Result<(), String> {
        let mut out = vec![0u8; self.size];
        let mut back = vec![0u8; self.size];
        let (mut next_seq, mut expect_seq, mut in_flight) = (0u64, 0u64, 0usize);
        while in_flight < self.depth && self.send(&mut stream, &mut out, &mut next_seq).await? {
            in_flight += 1;
        }
        while in_flight > 0 {
            match tokio::time::timeout(REPLY_TIMEOUT, stream.read_exact(&mut back)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("read: {}", e.kind())),
                Err(_) => return Err(format!("no reply within {REPLY_TIMEOUT:?}")),
            }
            let now = self.clock.now_ns();
            let Some((seq, sent)) = read_ping(&back) else {
                return Err("reply is not a ping".into());
            };
            if seq != expect_seq & 0x00ff_ffff_ffff_ffff {
                return Err("replies out of order".into());
            }
            expect_seq += 1;
            in_flight -= 1;
            if self.clock.measured(sent) {
                self.recorder.record(now.saturating_sub(sent));
            } else {
                self.recorder.count();
            }
            if self.send(&mut stream, &mut out, &mut next_seq).await? {
                in_flight += 1;
            }
        }
        let _ = stream.shutdown().await;
        Ok(())
    }

    /// Sends the next ping when it is due and the window has not ended;
    /// false once it has.
    async fn send(
        &mut self,
        stream: &mut TcpStream,
        out: &mut [u8],
        seq: &mut u64,
    ) -> Result<bool, String> {
        if let Some(pacer) = &self.pacer {
            let due = pacer.due_at(*seq);
            if due.as_nanos() as u64 >= self.clock.end_ns {
                return Ok(false);
            }
            tokio::time::sleep_until((self.clock.epoch + due).into()).await;
        }
        let now = self.clock.now_ns();
        if now >= self.clock.end_ns {
            return Ok(false);
        }
        write_ping(out, *seq, now);
        stream
            .write_all(out)
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        *seq += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputArgs;

    fn output() -> OutputArgs {
        OutputArgs {
            json: false,
            json_file: None,
            plot: None,
            label: "test".into(),
            watch_pid: vec![format!("self={}", std::process::id())],
            no_progress: true,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_pongs_against_the_echo_server() {
        let addr = crate::echo::spawn("127.0.0.1:0".parse().unwrap()).await;
        let args = PingpongArgs {
            url: format!("tcp://{addr}"),
            conns: 3,
            depth: 2,
            size: 64,
            rate: 0.0,
            duration: Duration::from_millis(600),
            warmup: Duration::from_millis(200),
            local_ips: Some("127.0.0.1-127.0.0.2".into()),
            output: output(),
        };
        let report = run(args).await.unwrap();
        assert!(report.clean, "{}", report.table());
        assert_eq!(report.results.connected, 3);
        assert!(report.results.round_trips > 0);
        assert_eq!(report.latency.count, report.results.round_trips);
        assert_eq!(report.processes.len(), 1);
    }

    #[tokio::test]
    async fn paced_pings_follow_the_rate() {
        let addr = crate::echo::spawn("127.0.0.1:0".parse().unwrap()).await;
        let args = PingpongArgs {
            url: addr.to_string(),
            conns: 2,
            depth: 1,
            size: 16,
            rate: 100.0,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            local_ips: None,
            output: output(),
        };
        let report = run(args).await.unwrap();
        assert!(report.clean, "{}", report.table());
        // The schedule allows 100 in the second (one more at the edge);
        // fewer only if the machine is very slow, so that bound is loose.
        let n = report.results.round_trips;
        assert!((50..=101).contains(&n), "{n} round trips");
    }
}
