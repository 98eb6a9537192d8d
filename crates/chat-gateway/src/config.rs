//! Gateway configuration: one clap struct, every flag also an environment variable.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

mod auth_flags;
pub use auth_flags::AuthFlags;
pub(crate) use chat_net::Cidr;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The bearer token of the admin API. Its `Debug` output is redacted, so a
/// logged configuration never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The token itself (never log it).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AdminToken {
    /// A token read from a file (see `--admin-token-file`).
    pub(crate) fn from_secret(token: String) -> Self {
        Self(token)
    }
}

impl FromStr for AdminToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The chat gateway: serves the web client and the chat WebSocket.
#[derive(Debug, Clone, Parser)]
// A repeated flag takes its last value (scripts and tests add defaults first).
#[command(name = "chat-gateway", version, about, args_override_self = true)]
pub struct Config {
    /// Address for HTTP and WebSocket clients.
    #[arg(long, env = "CHAT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// This gateway's id in the cluster (default: unique per process).
    #[arg(long, env = "CHAT_GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// Largest message text in UTF-8 bytes.
    #[arg(long, env = "CHAT_MAX_TEXT_BYTES", default_value_t = 4096)]
    pub max_text_bytes: u32,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "CHAT_MAX_ROOMS", default_value_t = 32)]
    pub max_rooms: u32,

    /// Sustained Send rate per connection.
    #[arg(long, env = "CHAT_MESSAGES_PER_SECOND", default_value_t = 10)]
    pub messages_per_second: u32,

    /// Sends allowed in a burst per connection.
    #[arg(long, env = "CHAT_MESSAGE_BURST", default_value_t = 20)]
    pub message_burst: u32,

    /// Messages kept per room.
    #[arg(long, env = "CHAT_HISTORY_LEN", default_value_t = 1000)]
    pub history_len: u32,

    /// Largest WebSocket message a client may send, in bytes (at least
    /// 16384; the largest legitimate frame is about 4 KiB); larger ones are
    /// closed with 1009.
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = chat_proto::MAX_FRAME_BYTES as u32)]
    pub max_frame_bytes: u32,

    /// Milliseconds a connection has after the upgrade to say Hello before
    /// it is closed with 1008.
    #[arg(long, env = "CHAT_HELLO_TIMEOUT_MS", default_value_t = 10_000)]
    pub hello_timeout_ms: u64,

    /// Failed Hellos (invalid or taken names) a connection may send; the
    /// next one closes it with 1008.
    #[arg(long, env = "CHAT_MAX_FAILED_HELLOS", default_value_t = 10)]
    pub max_failed_hellos: u32,

    /// Sustained rate of Join, Leave and FetchHistory per connection (one
    /// bucket for the three; its burst is twice --max-rooms).
    #[arg(long, env = "CHAT_ROOM_OPS_PER_SECOND", default_value_t = 10)]
    pub room_ops_per_second: u32,

    /// A room with no members and no message for this long is dropped
    /// (history included): `90s`, `30m`, `24h`, `7d`, or seconds.
    #[arg(long, env = "CHAT_ROOM_TTL", default_value = "24h", value_parser = parse_duration)]
    pub room_ttl: Duration,

    /// Rooms the embedded bridge keeps at most; beyond it the longest idle
    /// empty rooms are dropped first.
    #[arg(long, env = "CHAT_MAX_ROOMS_RETAINED", default_value_t = 10_000)]
    pub max_rooms_retained: u32,

    /// Frames queued for one connection before it counts as too slow (closed with 1008).
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = 4096)]
    pub outbound_queue: u32,

    /// Open connections accepted at once; more are refused.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 18000)]
    pub max_connections: u32,

    /// Open WebSocket connections from one client address; more get HTTP 429.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: u32,

    /// Expect a PROXY protocol v2 header on every connection from a peer in
    /// --proxy-protocol-from (set when behind `chat-lb --send-proxy-v2`):
    /// logs and per-address limits then use the real client address. Other
    /// peers are served as themselves and closed if they send a PROXY
    /// header. Without this flag, a PROXY header is refused as garbage.
    #[arg(long, env = "CHAT_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Peers whose PROXY header is believed (CIDR or address; repeat the
    /// flag or separate with commas). Only with --proxy-protocol.
    #[arg(
        long,
        env = "CHAT_PROXY_PROTOCOL_FROM",
        value_delimiter = ',',
        default_values = LOOPBACK
    )]
    pub proxy_protocol_from: Vec<Cidr>,

    /// Clients allowed to read /metrics (CIDR or address; repeat the flag
    /// or separate with commas); others get 404. Behind chat-lb the real
    /// client address counts.
    #[arg(
        long,
        env = "CHAT_METRICS_ALLOW",
        value_delimiter = ',',
        default_values = LOOPBACK
    )]
    pub metrics_allow: Vec<Cidr>,

    /// Milliseconds a client has to send a complete HTTP request head: from
    /// the connection's start (PROXY header included) for the first request,
    /// and for every later one; then the connection is closed.
    #[arg(long, env = "CHAT_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Milliseconds an HTTP connection may stay open after its last response
    /// without a new request (keep-alive idle timeout).
    #[arg(long, env = "CHAT_KEEP_ALIVE_TIMEOUT_MS", default_value_t = 5_000)]
    pub keep_alive_timeout_ms: u64,

    /// TCP connections open at once from one client address (an IPv6 /64),
    /// WebSockets included; more are closed at accept, before HTTP
    /// [default: --max-connections-per-ip + 64].
    #[arg(long, env = "CHAT_MAX_SOCKETS_PER_IP")]
    pub max_sockets_per_ip: Option<u32>,

    /// New TCP connections a second from one client address (an IPv6 /64),
    /// sustained (token bucket); more are closed at accept.
    #[arg(long, env = "CHAT_CONNECTION_RATE_PER_IP", default_value_t = 100)]
    pub connection_rate_per_ip: u32,

    /// New TCP connections one client address may open in a burst.
    #[arg(long, env = "CHAT_CONNECTION_BURST_PER_IP", default_value_t = 200)]
    pub connection_burst_per_ip: u32,

    /// `GET /api/rooms` requests a second from one client address (burst:
    /// twice as many); more get 429.
    #[arg(long, env = "CHAT_API_ROOMS_PER_SECOND", default_value_t = 5)]
    pub api_rooms_per_second: u32,

    /// Which web pages may open a WebSocket (the `Origin` check).
    #[command(flatten)]
    pub origin: crate::origin::OriginConfig,

    /// Directory of the built web client (index.html, app.js, ...).
    #[arg(long, env = "CHAT_WEB_ROOT", default_value = "web/dist")]
    pub web_root: PathBuf,

    /// Seconds between server pings.
    #[arg(
        long,
        env = "CHAT_PING_INTERVAL_SECS",
        default_value_t = 25,
        hide = true
    )]
    pub ping_interval_secs: u64,

    /// Seconds of silence after which a connection is closed.
    #[arg(
        long,
        env = "CHAT_IDLE_TIMEOUT_SECS",
        default_value_t = 60,
        hide = true
    )]
    pub idle_timeout_secs: u64,

    /// Milliseconds a draining gateway waits for clients before closing them (1001).
    #[arg(long, env = "CHAT_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,

    /// Redis URL (`redis://host:port`): join a cluster of gateways through
    /// Redis. Without it the gateway runs alone on the embedded bridge.
    #[arg(long, env = "CHAT_REDIS", hide_env_values = true)]
    pub redis: Option<String>,

    /// File holding the --redis URL (for a URL with a password; a trailing
    /// newline is ignored).
    #[arg(long, env = "CHAT_REDIS_FILE", value_name = "FILE")]
    pub redis_file: Option<PathBuf>,

    /// Redis Cluster seed nodes (`redis://host:port,redis://host:port,...`):
    /// join a cluster of gateways through a Redis Cluster (Redis 7: sharded
    /// pub/sub) instead of one Redis. Any one reachable seed is enough; the
    /// rest of the cluster is discovered and followed through failovers and
    /// resharding.
    #[arg(
        long,
        env = "CHAT_REDIS_CLUSTER",
        hide_env_values = true,
        value_name = "URLS",
        conflicts_with_all = ["redis", "redis_file"]
    )]
    pub redis_cluster: Option<String>,

    /// File holding the --redis-cluster seed URLs (for URLs with a password;
    /// a trailing newline is ignored).
    #[arg(
        long,
        env = "CHAT_REDIS_CLUSTER_FILE",
        value_name = "FILE",
        conflicts_with_all = ["redis", "redis_file"]
    )]
    pub redis_cluster_file: Option<PathBuf>,

    /// Prefix of every Redis key and channel.
    #[arg(long, env = "CHAT_REDIS_PREFIX", default_value = "chat")]
    pub redis_prefix: String,

    /// host:port where clients reach this gateway, shown to operators
    /// (default: the listen address).
    #[arg(long, env = "CHAT_ADVERTISE")]
    pub advertise: Option<String>,

    /// Address of the admin gRPC API (chat.admin.v1, health, reflection).
    /// Loopback by default: do not expose it without --admin-token.
    #[arg(long, env = "CHAT_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// Bearer token every admin API call (health and reflection included)
    /// must carry (`authorization: Bearer TOKEN`); without it the admin API
    /// is open to whoever reaches --admin-listen.
    #[arg(long, env = "CHAT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,

    /// TLS of the listener, the admin API and Redis.
    #[command(flatten)]
    pub tls: crate::tls::TlsFlags,

    /// Signed identities (`--auth-*`).
    #[command(flatten)]
    pub auth: AuthFlags,
    /// File holding the --admin-token (a trailing newline is ignored): the
    /// token then shows in no process listing.
    #[arg(long, env = "CHAT_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// The control path between gateways (`cluster_secret.rs`).
    #[command(flatten)]
    pub control: crate::cluster_secret::ControlPathArgs,
}

impl Config {
    /// Refuses values that would make the gateway useless (every limit must be at least 1).
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("--max-text-bytes", u64::from(self.max_text_bytes)),
            ("--max-rooms", u64::from(self.max_rooms)),
            ("--messages-per-second", u64::from(self.messages_per_second)),
            ("--message-burst", u64::from(self.message_burst)),
            ("--history-len", u64::from(self.history_len)),
            ("--hello-timeout-ms", self.hello_timeout_ms),
            ("--max-failed-hellos", u64::from(self.max_failed_hellos)),
            ("--room-ops-per-second", u64::from(self.room_ops_per_second)),
            ("--room-ttl", self.room_ttl.as_secs()),
            ("--max-rooms-retained", u64::from(self.max_rooms_retained)),
            ("--outbound-queue", u64::from(self.outbound_queue)),
            ("--max-connections", u64::from(self.max_connections)),
            (
                "--max-connections-per-ip",
                u64::from(self.max_connections_per_ip),
            ),
            ("--header-read-timeout-ms", self.header_read_timeout_ms),
            ("--keep-alive-timeout-ms", self.keep_alive_timeout_ms),
            ("--max-sockets-per-ip", u64::from(self.max_sockets_per_ip())),
            (
                "--connection-rate-per-ip",
                u64::from(self.connection_rate_per_ip),
            ),
            (
                "--connection-burst-per-ip",
                u64::from(self.connection_burst_per_ip),
            ),
            (
                "--api-rooms-per-second",
                u64::from(self.api_rooms_per_second),
            ),
            ("--ping-interval-secs", self.ping_interval_secs),
            ("--idle-timeout-secs", self.idle_timeout_secs),
            ("--drain-timeout-ms", self.drain_timeout_ms),
        ];
        for (flag, value) in checks {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            return Err(format!(
                "--max-frame-bytes must be at least {MIN_FRAME_BYTES}"
            ));
        }
        self.tls.validate()?;
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}']) {
            return Err("--redis-prefix must be non-empty and must not contain { or }".into());
        }
        if self
            .gateway_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.contains(char::is_whitespace))
        {
            return Err("--gateway-id must be non-empty and without whitespace".into());
        }
        self.control.secret()?;
        if let Some(token) = &self.admin_token {
            // An empty token would silently mean "no token"; header values
            // cannot carry control characters.
            if token.0.is_empty() || !token.0.chars().all(|c| c.is_ascii_graphic()) {
                return Err(
                    "--admin-token must be non-empty printable ASCII without spaces".into(),
                );
            }
        }
        crate::auth::Verifier::load(&self.auth_files())?;
        Ok(())
    }

    /// Where the signed-identity keys and required claims come from.
    pub(crate) fn auth_files(&self) -> crate::auth::AuthFiles<'_> {
        self.auth.files()
    }

    /// `--ping-interval-secs`: how often each connection is pinged.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    /// `--idle-timeout-secs`: a connection silent that long is closed.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// `--drain-timeout-ms`: how long a drain waits for clients to leave.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// `--hello-timeout-ms`: a connection without a Welcome by then is closed.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.hello_timeout_ms)
    }

    /// `--header-read-timeout-ms`: the deadline of a request head (and PROXY header).
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// `--keep-alive-timeout-ms`: how long an idle HTTP connection is kept.
    pub fn keep_alive_timeout(&self) -> Duration {
        Duration::from_millis(self.keep_alive_timeout_ms)
    }

    /// `--max-sockets-per-ip`, or room for every WebSocket of one address
    /// plus a few plain requests.
    pub fn max_sockets_per_ip(&self) -> u32 {
        self.max_sockets_per_ip
            .unwrap_or(self.max_connections_per_ip.saturating_add(64))
    }

    /// Whether `peer` may send a PROXY header.
    pub fn proxy_trusted(&self, peer: IpAddr) -> bool {
        self.proxy_protocol_from
            .iter()
            .any(|net| net.contains(peer))
    }

    /// Whether `client` may read `/metrics`.
    pub fn metrics_allowed(&self, client: IpAddr) -> bool {
        self.metrics_allow.iter().any(|net| net.contains(client))
    }
}

/// The default of the address lists: loopback only.
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The smallest `--max-frame-bytes` (the contract's floor).
pub(crate) const MIN_FRAME_BYTES: u32 = chat_proto::MIN_FRAME_BYTES as u32;

/// `90s`, `30m`, `24h`, `7d`, or plain seconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("chat-gateway").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_admin_api_listens_on_loopback_without_a_token_by_default() {
        let config = parse(&[]);
        assert_eq!(config.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert!(config.admin_token.is_none());
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let config = parse(&[
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:7000",
        ]);
        assert_eq!(config.admin_listen.port(), 7000);
    }

    #[test]
    fn durations_take_a_unit_and_frames_have_a_floor() {
        assert_eq!(parse(&[]).room_ttl, Duration::from_secs(86_400));
        for (raw, secs) in [
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            ("2h", 7200),
            ("7d", 604_800),
        ] {
            assert_eq!(parse_duration(raw), Ok(Duration::from_secs(secs)), "{raw}");
        }
        for bad in ["", "h", "5w", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&[]).max_frame_bytes, 65_536);
        let err = parse(&["--max-frame-bytes", "1000"])
            .validate()
            .unwrap_err();
        assert!(err.contains("--max-frame-bytes"), "{err}");
    }

    #[test]
    fn address_lists_default_to_loopback_and_take_blocks() {
        let config = parse(&[]);
        for ip in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            let ip = ip.parse().unwrap();
            assert!(config.proxy_trusted(ip), "{ip}");
            assert!(config.metrics_allowed(ip), "{ip}");
        }
        for ip in ["10.0.0.1", "::2", "2001:db8::1"] {
            let ip = ip.parse().unwrap();
            assert!(!config.proxy_trusted(ip), "{ip}");
            assert!(!config.metrics_allowed(ip), "{ip}");
        }
        // Repeated or comma-separated, and replacing the default.
        let config = parse(&[
            "--metrics-allow",
            "10.1.0.0/16,192.0.2.7",
            "--metrics-allow",
            "2001:db8::/32",
        ]);
        let allowed = |ip: &str| config.metrics_allowed(ip.parse().unwrap());
        assert!(allowed("10.1.200.3") && allowed("192.0.2.7") && allowed("2001:db8:5::1"));
        assert!(!allowed("10.2.0.1") && !allowed("192.0.2.8") && !allowed("127.0.0.1"));
        assert!(allowed("::ffff:10.1.0.9"));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_socket_cap_follows_the_websocket_cap_unless_set() {
        assert_eq!(parse(&[]).max_sockets_per_ip(), 1024 + 64);
        assert_eq!(
            parse(&["--max-connections-per-ip", "2"]).max_sockets_per_ip(),
            66
        );
        assert_eq!(
            parse(&["--max-sockets-per-ip", "5"]).max_sockets_per_ip(),
            5
        );
        let err = parse(&["--max-sockets-per-ip", "0"])
            .validate()
            .unwrap_err();
        assert!(err.contains("--max-sockets-per-ip"), "{err}");
    }

    #[test]
    fn the_admin_token_is_validated_and_never_shown() {
        let config = parse(&["--admin-token", "s3cret"]);
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("s3cret"));
        for bad in ["", "two words", "tab\there"] {
            let err = parse(&["--admin-token", bad]).validate().unwrap_err();
            assert!(err.contains("--admin-token"), "{bad:?}: {err}");
        }
    }
}
