//! The `chat-lb` binary: parses flags, starts tracing, binds, and calls [`chat_lb::run`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat_lb::{parse_duration, Config, ConfigError, FileConfig, Signals};
use clap::{error::ErrorKind, Parser, ValueEnum};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Exit code for invalid configuration (sysexits `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// Layer-4 TCP load balancer: round-robin over healthy backends, never parses the bytes.
///
/// Settings come from flags, then environment, then the `--config` file, then the defaults
/// given below. SIGHUP re-reads the file's `backends`; SIGTERM/SIGINT drain and exit.
#[derive(Debug, Parser)]
#[command(name = "chat-lb", version)]
struct Cli {
    /// Address clients connect to.
    #[arg(long, env = "CHAT_LB_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of the admin endpoint (GET /metrics, GET /healthz).
    #[arg(long, env = "CHAT_LB_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    admin_listen: SocketAddr,
    /// Backend as host:port; repeat the flag (or separate with commas) for more.
    #[arg(
        long = "backend",
        env = "CHAT_LB_BACKEND",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        value_parser = parse_backend,
        conflicts_with = "config"
    )]
    backends: Vec<String>,
    /// TOML file: `backends = ["host:port", ...]` plus any flag below by its long name.
    #[arg(long, env = "CHAT_LB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Time allowed to connect to a backend before trying the next (default 1s).
    #[arg(long, env = "CHAT_LB_CONNECT_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    connect_timeout: Option<Duration>,
    /// Time between two health checks of a backend (default 1s).
    #[arg(long, env = "CHAT_LB_HEALTH_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    health_interval: Option<Duration>,
    /// Time allowed for one health check (default 1s).
    #[arg(long, env = "CHAT_LB_HEALTH_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    health_timeout: Option<Duration>,
    /// Consecutive failed health checks that take a backend down (default 2).
    #[arg(long, env = "CHAT_LB_FALL")]
    fall: Option<u32>,
    /// What a health check does: `http` (GET /healthz; 503 means draining) or
    /// `tcp` (a connect only, for backends serving TLS, e.g. a gateway with
    /// --tls-cert; default http).
    #[arg(long, env = "CHAT_LB_HEALTH_CHECK", value_name = "http|tcp")]
    health_check: Option<chat_lb::HealthMode>,
    /// Consecutive successful health checks that bring a backend back (default 2).
    #[arg(long, env = "CHAT_LB_RISE")]
    rise: Option<u32>,
    /// Connections relayed at once; more are closed right after accept (default 100000).
    #[arg(long, env = "CHAT_LB_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Close a client that has sent nothing this long after connecting (default 5s). No backend
    /// connection is opened before a client's first byte, so silent clients cost backends nothing.
    #[arg(long, env = "CHAT_LB_CLIENT_FIRST_BYTE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    client_first_byte_timeout: Option<Duration>,
    /// Close a relayed connection after this long without a byte either way (default: never).
    /// Keep it well above the backend's keep-alive interval (the gateway pings every 25s).
    #[arg(long, env = "CHAT_LB_IDLE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    idle_timeout: Option<Duration>,
    /// Connections one client source (an IPv4 address or an IPv6 /64) may hold at once, silent
    /// ones included; more are closed right after accept. 0 turns the cap off (default 1024).
    #[arg(long, env = "CHAT_LB_MAX_CONNS_PER_SOURCE", value_name = "N")]
    max_conns_per_source: Option<u32>,
    /// New connections a second one client source may open, sustained (a token bucket); more
    /// are closed right after accept. 0 turns the limit off (default 200).
    #[arg(long, env = "CHAT_LB_CONN_RATE_PER_SOURCE", value_name = "N")]
    conn_rate_per_source: Option<u32>,
    /// New connections one client source may open at once before --conn-rate-per-source
    /// applies: the bucket's size (default 1024).
    #[arg(long, env = "CHAT_LB_CONN_BURST_PER_SOURCE", value_name = "N")]
    conn_burst_per_source: Option<u32>,
    /// On SIGTERM/SIGINT, how long established connections may go on (default 10s).
    #[arg(long, env = "CHAT_LB_DRAIN_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    drain_timeout: Option<Duration>,
    /// Send a PROXY protocol v2 header to the backend before the client's bytes.
    #[arg(long, env = "CHAT_LB_SEND_PROXY_V2")]
    send_proxy_v2: bool,
    /// A TLS terminator (or other proxy) in front, as an address or CIDR block; repeat the flag
    /// or separate with commas. Connections from it must start with a PROXY v2 header; the
    /// client it names is the one per-source limits count and --send-proxy-v2 announces.
    /// Connections from anywhere else that start with a PROXY header are closed.
    #[arg(
        long = "accept-proxy-from",
        env = "CHAT_LB_ACCEPT_PROXY_FROM",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    accept_proxy_from: Vec<chat_net::Cidr>,
    /// Most bytes one relay read moves, in bytes; a direction whose reader lags keeps at most
    /// this much (default 16384). Idle connections hold no buffer.
    #[arg(long, env = "CHAT_LB_BUFFER_SIZE")]
    buffer_size: Option<usize>,
    /// Relay threads, each with its own event loop; a connection stays on one thread for
    /// its whole life (default: one per core).
    #[arg(long, env = "CHAT_LB_THREADS")]
    threads: Option<usize>,
    /// Log output format; the filter comes from RUST_LOG (default info).
    #[arg(long, env = "CHAT_LB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

fn parse_backend(addr: &str) -> Result<String, ConfigError> {
    chat_lb::validate_backend(addr)?;
    Ok(addr.to_owned())
}

// Accepting, health checks and the admin endpoint are light: one thread. Connections are
// relayed on their own threads (see `--threads`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            err.exit()
        }
        Err(err) => {
            let text = err.to_string();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return usage_error(line.trim_start_matches("error: "));
        }
    };
    let config = match resolve(&cli) {
        Ok(config) => config,
        Err(err) => return usage_error(&chain(&err)),
    };
    if let Err(err) = init_tracing(cli.log_format) {
        return usage_error(&err);
    }
    match serve(&cli, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "chat-lb failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: &Cli, config: Config) -> anyhow::Result<()> {
    // Installed before binding, so a SIGTERM during start-up is not lost.
    let signals = Signals::from_os().context("cannot install signal handlers")?;
    let listener = chat_net::bind_listener(cli.listen)
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let admin = TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", cli.admin_listen))?;
    // Machine-readable lines for scripts and tests that asked for port 0
    // (a closed stdout is not a reason to stop serving).
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "chat-lb listening on {}", listener.local_addr()?);
        let _ = writeln!(
            out,
            "chat-lb admin listening on http://{}",
            admin.local_addr()?
        );
        let _ = out.flush();
    }
    chat_lb::run(listener, admin, config, signals)
        .await
        .context("balancer failed")
}

/// Defaults, then the file, then flags and environment.
fn resolve(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    if let Some(path) = &cli.config {
        FileConfig::load(path)?.apply_to(&mut config)?;
        config.config_file = Some(path.clone());
    }
    if !cli.backends.is_empty() {
        config.backends.clone_from(&cli.backends);
    }
    let health = &mut config.health;
    health.interval = cli.health_interval.unwrap_or(health.interval);
    health.timeout = cli.health_timeout.unwrap_or(health.timeout);
    health.fall = cli.fall.unwrap_or(health.fall);
    health.rise = cli.rise.unwrap_or(health.rise);
    health.mode = cli.health_check.unwrap_or(health.mode);
    config.connect_timeout = cli.connect_timeout.unwrap_or(config.connect_timeout);
    config.max_connections = cli.max_connections.unwrap_or(config.max_connections);
    config.idle_timeout = cli.idle_timeout.or(config.idle_timeout);
    config.client_first_byte_timeout = cli
        .client_first_byte_timeout
        .unwrap_or(config.client_first_byte_timeout);
    let per_source = &mut config.per_source;
    per_source.max_connections = cli
        .max_conns_per_source
        .unwrap_or(per_source.max_connections);
    per_source.rate = cli.conn_rate_per_source.unwrap_or(per_source.rate);
    per_source.burst = cli.conn_burst_per_source.unwrap_or(per_source.burst);
    config.drain_timeout = cli.drain_timeout.unwrap_or(config.drain_timeout);
    config.send_proxy_v2 |= cli.send_proxy_v2;
    if !cli.accept_proxy_from.is_empty() {
        config.accept_proxy_from.clone_from(&cli.accept_proxy_from);
    }
    config.buffer_size = cli.buffer_size.unwrap_or(config.buffer_size);
    config.threads = cli.threads.unwrap_or(config.threads);
    config.validate()?;
    Ok(config)
}

fn init_tracing(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives)
            .map_err(|err| format!("invalid RUST_LOG {directives:?}: {err}"))?,
        Err(_) => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person watching, not in files or pipes.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// The error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("chat-lb: invalid configuration: {message}");
    ExitCode::from(EX_USAGE)
}
