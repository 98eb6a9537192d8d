//! Command-line interface: one clap-derive tree, every flag also a
//! `CHAT_BENCH_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub(crate) use chat_measure::args::{invalid, parse_secs, watched_arg, InvalidArgs, OutputArgs};

/// Load generator for the chat system.
///
/// Every run prints a table (or JSON with --json) and can write its JSON
/// report (--json-file) and an SVG plot (--plot).
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version)]
pub(crate) struct Cli {
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true, env = "CHAT_BENCH_THREADS")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Rooms of members, some of them publishing: deliveries/s, loss, end-to-end latency.
    Fanout(FanoutArgs),
    /// Many idle members joined to rooms: connect rate, failures, memory per connection.
    Connections(ConnectionsArgs),
    /// A gateway crashes under chatting members (it starts its own gateways and chat-lb):
    /// how fast its members are back, by token, and whether anything was lost.
    Failover(FailoverArgs),
    /// Fixed-size TCP ping-pongs against an echo server, directly or through a balancer.
    Pingpong(PingpongArgs),
    /// A TCP echo server (also answering `GET /healthz` so balancers see it as healthy).
    EchoServer(EchoServerArgs),
    /// The machine's floor for a fan-out: the same deliveries with nothing but sockets and one relay hop.
    Floor(chat_yardstick::FloorArgs),
    /// The least a Layer-4 balancer can do (one thread, read and write): a yardstick for chat-lb.
    Relay(chat_yardstick::RelayArgs),
    /// Overlays the latency curves of several JSON reports in one SVG.
    Plot(PlotArgs),
    /// The standard scenarios on fresh local processes, and a summary table
    /// (what `scripts/bench.sh` runs after building).
    Suite(SuiteArgs),
}

/// When a publisher's in-flight message leaves the window (rate 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WindowRelease {
    /// On its Ack: as fast as acks allow.
    Ack,
    /// On the publisher's own copy of the message: self-clocked by the fan-out.
    Echo,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct FanoutArgs {
    /// Gateway (or balancer) WebSocket URL.
    #[arg(long, env = "CHAT_BENCH_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Rooms.
    #[arg(long, env = "CHAT_BENCH_ROOMS", default_value_t = 1)]
    pub rooms: usize,
    /// Members per room (publishers included).
    #[arg(long, env = "CHAT_BENCH_MEMBERS", default_value_t = 100)]
    pub members: usize,
    /// Publishers per room.
    #[arg(long, env = "CHAT_BENCH_PUBLISHERS", default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second per publisher; 0: as fast as the window allows.
    #[arg(long, env = "CHAT_BENCH_RATE", default_value_t = 0.0)]
    pub rate: f64,
    /// Messages in flight per publisher when --rate is 0.
    #[arg(long, env = "CHAT_BENCH_WINDOW", default_value_t = 32)]
    pub window: usize,
    /// When an in-flight message leaves the window (--rate 0).
    #[arg(long, env = "CHAT_BENCH_WINDOW_RELEASE", value_enum, default_value_t = WindowRelease::Ack)]
    pub window_release: WindowRelease,
    /// Measured time (e.g. 10, 10s, 500ms).
    #[arg(long, env = "CHAT_BENCH_DURATION", value_parser = parse_secs, default_value = "10s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, env = "CHAT_BENCH_WARMUP", value_parser = parse_secs, default_value = "2s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub warmup: Duration,
    /// Message text size in bytes (at least 30: the stamp).
    #[arg(long, env = "CHAT_BENCH_PAYLOAD", default_value_t = 64)]
    pub payload: usize,
    /// After the measured time, how long to wait for outstanding deliveries.
    #[arg(long, env = "CHAT_BENCH_DRAIN_TIMEOUT", value_parser = parse_secs, default_value = "10s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub drain_timeout: Duration,
    /// Connection set-ups in progress at once.
    #[arg(long, env = "CHAT_BENCH_CONNECT_CONCURRENCY", default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Source addresses to spread connections over, e.g. 127.0.0.1-127.0.0.40.
    #[arg(long, env = "CHAT_BENCH_LOCAL_IPS")]
    pub local_ips: Option<String>,
    #[command(flatten)]
    #[serde(skip)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct ConnectionsArgs {
    /// Gateway (or balancer) WebSocket URL.
    #[arg(long, env = "CHAT_BENCH_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Connections to open.
    #[arg(long, env = "CHAT_BENCH_N", default_value_t = 1000)]
    pub n: usize,
    /// New connections per second (0: as fast as --connect-concurrency allows).
    #[arg(long, env = "CHAT_BENCH_RATE", default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to hold them open once all are up (e.g. 30s).
    #[arg(long, env = "CHAT_BENCH_HOLD", value_parser = parse_secs, default_value = "10s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub hold: Duration,
    /// Members per room (each connection joins one room).
    #[arg(long, env = "CHAT_BENCH_MEMBERS", default_value_t = 100)]
    pub members: usize,
    /// Connection set-ups in progress at once.
    #[arg(long, env = "CHAT_BENCH_CONNECT_CONCURRENCY", default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Source addresses to spread connections over, e.g. 127.0.0.1-127.0.0.40.
    #[arg(long, env = "CHAT_BENCH_LOCAL_IPS")]
    pub local_ips: Option<String>,
    #[command(flatten)]
    #[serde(skip)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct FailoverArgs {
    /// Redis URL for the gateways (best a fresh server).
    #[arg(
        long,
        env = "CHAT_BENCH_REDIS",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,
    /// Members, each its own connection through chat-lb.
    #[arg(long, env = "CHAT_BENCH_MEMBERS", default_value_t = 900)]
    pub members: usize,
    /// Members who share a home room (--members must be a multiple).
    #[arg(long, env = "CHAT_BENCH_ROOM_SIZE", default_value_t = 30)]
    pub room_size: usize,
    /// Rooms each member is in: its home room and the next ones.
    #[arg(long, env = "CHAT_BENCH_ROOMS_PER_MEMBER", default_value_t = 2)]
    pub rooms_per_member: usize,
    /// Messages per second per room, its home members taking turns.
    #[arg(long, env = "CHAT_BENCH_RATE", default_value_t = 1.0)]
    pub rate: f64,
    /// Chatting before the crash.
    #[arg(long, env = "CHAT_BENCH_WARMUP", value_parser = parse_secs, default_value = "3s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub warmup: Duration,
    /// Chatting after the crash.
    #[arg(long, env = "CHAT_BENCH_DURATION", value_parser = parse_secs, default_value = "10s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub duration: Duration,
    /// Restart the killed gateway at once with the same --gateway-id and
    /// address, as a supervisor would.
    #[arg(long, env = "CHAT_BENCH_RESTART")]
    pub restart: bool,
    /// After the chatting, how long to wait for outstanding acks and deliveries.
    #[arg(long, env = "CHAT_BENCH_DRAIN_TIMEOUT", value_parser = parse_secs, default_value = "10s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub drain_timeout: Duration,
    /// A member's first reconnect attempt waits a random time up to this
    /// (chat_client::Backoff::first_jitter).
    #[arg(long, env = "CHAT_BENCH_RECONNECT_JITTER", value_parser = parse_secs, default_value = "50ms")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub reconnect_jitter: Duration,
    /// Connection set-ups in progress at once.
    #[arg(long, env = "CHAT_BENCH_CONNECT_CONCURRENCY", default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Source addresses to spread connections over, e.g. 127.0.0.1-127.0.0.40
    /// (the gateways limit connections per client address).
    #[arg(long, env = "CHAT_BENCH_LOCAL_IPS")]
    pub local_ips: Option<String>,
    /// The gateway binary (default: chat-gateway next to chat-bench).
    #[arg(long, env = "CHAT_BENCH_CHAT_GATEWAY_BIN", value_name = "FILE")]
    pub chat_gateway_bin: Option<PathBuf>,
    /// The balancer binary (default: chat-lb next to chat-bench).
    #[arg(long, env = "CHAT_BENCH_CHAT_LB_BIN", value_name = "FILE")]
    pub chat_lb_bin: Option<PathBuf>,
    /// One more flag for every gateway (repeatable), e.g. --gateway-arg=--history-len=5000.
    #[arg(
        long = "gateway-arg",
        env = "CHAT_BENCH_GATEWAY_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub gateway_args: Vec<String>,
    /// Folder for the gateways' and chat-lb's logs (default: discarded).
    #[arg(long, env = "CHAT_BENCH_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct PingpongArgs {
    /// Echo server (or balancer in front of one): tcp://HOST:PORT.
    #[arg(long, env = "CHAT_BENCH_URL")]
    pub url: String,
    /// Connections.
    #[arg(long, env = "CHAT_BENCH_CONNS", default_value_t = 1)]
    pub conns: usize,
    /// Pings in flight per connection (1: strict ping-pong).
    #[arg(long, env = "CHAT_BENCH_DEPTH", default_value_t = 1)]
    pub depth: usize,
    /// Ping size in bytes (at least 16).
    #[arg(long, env = "CHAT_BENCH_SIZE", default_value_t = 64)]
    pub size: usize,
    /// Pings per second over all connections; 0: as fast as replies come.
    #[arg(long, env = "CHAT_BENCH_RATE", default_value_t = 0.0)]
    pub rate: f64,
    /// Measured time.
    #[arg(long, env = "CHAT_BENCH_DURATION", value_parser = parse_secs, default_value = "10s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, env = "CHAT_BENCH_WARMUP", value_parser = parse_secs, default_value = "1s")]
    #[serde(serialize_with = "chat_measure::args::secs")]
    pub warmup: Duration,
    /// Source addresses to spread connections over.
    #[arg(long, env = "CHAT_BENCH_LOCAL_IPS")]
    pub local_ips: Option<String>,
    #[command(flatten)]
    #[serde(skip)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct EchoServerArgs {
    /// Address to listen on (repeatable: one echo server per address).
    #[arg(
        long,
        env = "CHAT_BENCH_LISTEN",
        value_delimiter = ',',
        default_value = "127.0.0.1:0"
    )]
    pub listen: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct PlotArgs {
    /// The SVG file to write.
    #[arg(long, env = "CHAT_BENCH_OUT", value_name = "FILE.svg")]
    pub out: PathBuf,
    /// Plot title.
    #[arg(
        long,
        env = "CHAT_BENCH_TITLE",
        default_value = "latency by percentile"
    )]
    pub title: String,
    /// JSON reports (their --label, else the file name, labels the curve).
    #[arg(required = true, value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,
}

/// The `--local-ips` flag, parsed (empty when not given: the OS picks).
pub(crate) fn local_ips_arg(spec: Option<&str>) -> anyhow::Result<Vec<std::net::IpAddr>> {
    spec.map(crate::local_ips::parse_local_ips)
        .transpose()
        .map_err(invalid)
        .map(Option::unwrap_or_default)
}

/// `chat-bench suite` flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct SuiteArgs {
    /// A few seconds per scenario, small sizes: a smoke run.
    #[arg(long, env = "CHAT_BENCH_QUICK")]
    pub quick: bool,
    /// Run only these scenarios (1 to 6).
    #[arg(
        long,
        env = "CHAT_BENCH_ONLY",
        value_delimiter = ',',
        default_value = "1,2,3,4,5,6"
    )]
    pub only: Vec<u8>,
    /// Also profile the gateway under scenario 1 with `perf record`.
    #[arg(long, env = "CHAT_BENCH_PERF")]
    pub perf: bool,
    /// Where chat-gateway and chat-lb are (default: next to this chat-bench).
    #[arg(long, env = "CHAT_BENCH_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The report folder (created if missing).
    #[arg(long, env = "CHAT_BENCH_OUT", value_name = "DIR")]
    pub out: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_secs("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_secs("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("-1").is_err());
    }

    #[test]
    fn fanout_flags_parse() {
        let cli = Cli::try_parse_from([
            "chat-bench",
            "fanout",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--rooms",
            "10",
            "--duration",
            "3s",
            "--watch-pid",
            "gw=1,lb=2",
            "--json",
        ])
        .unwrap();
        let Command::Fanout(args) = cli.command else {
            panic!("not fanout")
        };
        assert_eq!(args.rooms, 10);
        assert_eq!(args.duration, Duration::from_secs(3));
        assert_eq!(args.output.watch_pid, ["gw=1", "lb=2"]);
        assert!(args.output.json);
        let params = serde_json::to_value(&args).unwrap();
        assert_eq!(params["duration"], 3.0);
        assert_eq!(params["window_release"], "ack");
        assert!(params.get("output").is_none());
    }

    #[test]
    fn failover_flags_parse() {
        let cli = Cli::try_parse_from([
            "chat-bench",
            "failover",
            "--redis",
            "redis://127.0.0.1:1",
            "--members",
            "60",
            "--restart",
            "--gateway-arg=--history-len=5000",
            "--gateway-arg",
            "--max-rooms=8",
        ])
        .unwrap();
        let Command::Failover(args) = cli.command else {
            panic!("not failover")
        };
        assert_eq!(args.members, 60);
        assert!(args.restart);
        assert_eq!(args.gateway_args, ["--history-len=5000", "--max-rooms=8"]);
        assert_eq!(args.warmup, Duration::from_secs(3));
    }
}
