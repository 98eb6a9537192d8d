//! Balancer configuration: the resolved settings, the TOML file format and their validation.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_net::Cidr;
use serde::Deserialize;

/// Everything `run` needs to know, already merged from flags, environment and file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Backend addresses as `host:port`; the order is the round-robin order.
    pub backends: Vec<String>,
    /// File whose `backends` list is re-read on every reload request (SIGHUP); `None` means
    /// the backend set is fixed for the life of the process.
    pub config_file: Option<PathBuf>,
    /// How long one connect attempt to a backend may take before the next backend is tried.
    pub connect_timeout: Duration,
    /// Active health checking of the backends.
    pub health: HealthConfig,
    /// Client connections relayed at once; more are closed right after accept and counted.
    pub max_connections: usize,
    /// Close a connection after this long without bytes in either direction; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// A client that has sent nothing this long after it was accepted is closed. No backend
    /// connection is opened before the client's first byte, so a silent client never costs a
    /// backend anything.
    pub client_first_byte_timeout: Duration,
    /// Connection caps and rates per client source.
    pub per_source: SourceLimits,
    /// After a shutdown request, how long established connections may keep relaying.
    pub drain_timeout: Duration,
    /// Write a PROXY protocol v2 header to the backend before relaying.
    pub send_proxy_v2: bool,
    /// Peers (a TLS terminator in front) whose connections must start with a PROXY v2 header
    /// naming the real client; that client is then the one limited per source and announced
    /// to backends. Any other peer that starts with a PROXY header is closed.
    pub accept_proxy_from: Vec<Cidr>,
    /// The most bytes one relay read moves. Reads go to a per-thread scratch buffer, so an
    /// idle connection holds none; a direction whose reader lags keeps at most this much.
    pub buffer_size: usize,
    /// Relay threads, each with its own event loop; a connection stays on one for its life.
    /// Defaults to one per core.
    pub threads: usize,
}

/// Limits per client source (an IPv4 address or an IPv6 /64), checked at accept; a zero turns
/// a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Connections one source may hold at once (including ones still waiting for their
    /// first byte); 0 means no cap.
    pub max_connections: u32,
    /// New connections a second one source may open, sustained; 0 means no rate limit.
    pub rate: u32,
    /// New connections one source may open at once before the rate applies (the bucket's size).
    pub burst: u32,
}

impl Default for SourceLimits {
    /// Generous: a whole office or carrier NAT behind one address can hold as many
    /// connections as the gateway allows one address (1024) and reconnect all of them at
    /// once after a gateway restart; a single host cannot hold more, nor open more than 200
    /// a second for long.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            rate: 200,
            burst: 1024,
        }
    }
}

impl SourceLimits {
    pub(crate) fn is_off(self) -> bool {
        self.max_connections == 0 && self.rate == 0
    }
}

/// Active health check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between two checks of the same backend.
    pub interval: Duration,
    /// Time a single check (connect, request, status line) may take.
    pub timeout: Duration,
    /// Consecutive failed checks that take an up backend down.
    pub fall: u32,
    /// Consecutive successful checks that bring a down backend back up.
    pub rise: u32,
    /// What a check asks of a backend.
    pub mode: HealthMode,
}

/// What a health check asks of a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HealthMode {
    /// `GET /healthz` over plain HTTP: 2xx is up, 503 is draining.
    #[default]
    Http,
    /// A TCP connect only, for backends that speak TLS on their port: the
    /// balancer never looks inside TLS, so it cannot read their health.
    Tcp,
}

impl std::str::FromStr for HealthMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "http" => Ok(Self::Http),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("{other:?} is not a health check (use http or tcp)")),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 2,
            mode: HealthMode::Http,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backends: Vec::new(),
            config_file: None,
            connect_timeout: Duration::from_secs(1),
            health: HealthConfig::default(),
            max_connections: 100_000,
            idle_timeout: None,
            client_first_byte_timeout: Duration::from_secs(5),
            per_source: SourceLimits::default(),
            drain_timeout: Duration::from_secs(10),
            send_proxy_v2: false,
            accept_proxy_from: Vec::new(),
            buffer_size: 16 * 1024,
            threads: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No backend was given.
    #[error("no backends: give --backend host:port or a config file with `backends = [...]`")]
    NoBackends,
    /// A backend address is not `host:port`.
    #[error("invalid backend address {addr:?}: {reason}")]
    InvalidBackend {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A backend is listed twice.
    #[error("backend {0} is listed twice")]
    DuplicateBackend(String),
    /// A setting is out of its range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting's flag name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the position.
        message: String,
    },
}

impl Config {
    /// Checks every setting; `run` refuses a config that does not pass.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_backends(&self.backends)?;
        let positive = |field, value: Duration| {
            if value.is_zero() {
                Err(ConfigError::Invalid {
                    field,
                    reason: "must be greater than zero".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("connect-timeout", self.connect_timeout)?;
        positive("health-interval", self.health.interval)?;
        positive("health-timeout", self.health.timeout)?;
        positive("client-first-byte-timeout", self.client_first_byte_timeout)?;
        if let Some(idle) = self.idle_timeout {
            positive("idle-timeout", idle)?;
        }
        let at_least_one = |field, value: u64| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    field,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        at_least_one("fall", self.health.fall.into())?;
        at_least_one("rise", self.health.rise.into())?;
        at_least_one("max-connections", self.max_connections as u64)?;
        if self.per_source.rate != 0 {
            at_least_one("conn-burst-per-source", self.per_source.burst.into())?;
        }
        if !(512..=1 << 20).contains(&self.buffer_size) {
            return Err(ConfigError::Invalid {
                field: "buffer-size",
                reason: format!("{} is outside 512..=1048576 bytes", self.buffer_size),
            });
        }
        if !(1..=1024).contains(&self.threads) {
            return Err(ConfigError::Invalid {
                field: "threads",
                reason: format!("{} is outside 1..=1024", self.threads),
            });
        }
        Ok(())
    }
}

/// Checks that a backend list is non-empty, well formed and without duplicates.
pub(crate) fn validate_backends(backends: &[String]) -> Result<(), ConfigError> {
    if backends.is_empty() {
        return Err(ConfigError::NoBackends);
    }
    let mut seen = HashSet::new();
    for addr in backends {
        validate_backend(addr)?;
        if !seen.insert(addr.as_str()) {
            return Err(ConfigError::DuplicateBackend(addr.clone()));
        }
    }
    Ok(())
}

/// Checks the `host:port` form (`[v6]:port` for IPv6 literals); the host is resolved at
/// connect time, so a name may point at new addresses without a reload.
pub fn validate_backend(addr: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidBackend {
        addr: addr.to_owned(),
        reason,
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected host:port"))?;
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(invalid("IPv6 addresses must be written as [addr]:port"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(invalid("host contains whitespace"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid("port must be a number in 1..=65535")),
        Ok(_) => Ok(()),
    }
}

/// The `--config` TOML file. Keys are the long flag names; every key is optional except that
/// some source must name the backends. Only `backends` is re-read on reload.
///
/// ```toml
/// backends = ["127.0.0.1:8081", "127.0.0.1:8082"]
/// health-interval = "500ms"
/// ```
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `--backends`.
    pub backends: Option<Vec<String>>,
    /// `--connect-timeout`.
    pub connect_timeout: Option<String>,
    /// `--health-interval`.
    pub health_interval: Option<String>,
    /// `--health-timeout`.
    pub health_timeout: Option<String>,
    /// `--fall`.
    pub fall: Option<u32>,
    /// `--rise`.
    pub rise: Option<u32>,
    /// `--health-check`.
    pub health_check: Option<String>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--idle-timeout`.
    pub idle_timeout: Option<String>,
    /// `--client-first-byte-timeout`.
    pub client_first_byte_timeout: Option<String>,
    /// `--max-conns-per-source`.
    pub max_conns_per_source: Option<u32>,
    /// `--conn-rate-per-source`.
    pub conn_rate_per_source: Option<u32>,
    /// `--conn-burst-per-source`.
    pub conn_burst_per_source: Option<u32>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<String>,
    /// `--send-proxy-v2`.
    pub send_proxy_v2: Option<bool>,
    /// `--accept-proxy-from`.
    pub accept_proxy_from: Option<Vec<String>>,
    /// `--buffer-size`.
    pub buffer_size: Option<usize>,
    /// `--threads`.
    pub threads: Option<usize>,
}

impl FileConfig {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses file contents; the error is one line with the position of the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err: toml::de::Error| {
            let message = err.message().trim().replace('\n', " ");
            match err.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {message}")
                }
                None => message,
            }
        })
    }

    /// Overwrites the settings of `config` that this file sets.
    pub fn apply_to(self, config: &mut Config) -> Result<(), ConfigError> {
        let duration = |field, value: Option<String>| {
            value
                .map(|text| {
                    parse_duration(&text).map_err(|reason| ConfigError::Invalid { field, reason })
                })
                .transpose()
        };
        if let Some(backends) = self.backends {
            config.backends = backends;
        }
        if let Some(value) = duration("connect-timeout", self.connect_timeout)? {
            config.connect_timeout = value;
        }
        if let Some(value) = duration("health-interval", self.health_interval)? {
            config.health.interval = value;
        }
        if let Some(value) = duration("health-timeout", self.health_timeout)? {
            config.health.timeout = value;
        }
        if let Some(value) = duration("idle-timeout", self.idle_timeout)? {
            config.idle_timeout = Some(value);
        }
        if let Some(value) = duration("client-first-byte-timeout", self.client_first_byte_timeout)?
        {
            config.client_first_byte_timeout = value;
        }
        if let Some(value) = duration("drain-timeout", self.drain_timeout)? {
            config.drain_timeout = value;
        }
        if let Some(mode) = self.health_check {
            config.health.mode = mode.parse().map_err(|reason| ConfigError::Invalid {
                field: "health-check",
                reason,
            })?;
        }
        config.health.fall = self.fall.unwrap_or(config.health.fall);
        config.health.rise = self.rise.unwrap_or(config.health.rise);
        config.max_connections = self.max_connections.unwrap_or(config.max_connections);
        let per_source = &mut config.per_source;
        per_source.max_connections = self
            .max_conns_per_source
            .unwrap_or(per_source.max_connections);
        per_source.rate = self.conn_rate_per_source.unwrap_or(per_source.rate);
        per_source.burst = self.conn_burst_per_source.unwrap_or(per_source.burst);
        config.send_proxy_v2 = self.send_proxy_v2.unwrap_or(config.send_proxy_v2);
        if let Some(blocks) = self.accept_proxy_from {
            config.accept_proxy_from = blocks
                .iter()
                .map(|block| block.parse())
                .collect::<Result<_, _>>()
                .map_err(|reason| ConfigError::Invalid {
                    field: "accept-proxy-from",
                    reason,
                })?;
        }
        config.buffer_size = self.buffer_size.unwrap_or(config.buffer_size);
        config.threads = self.threads.unwrap_or(config.threads);
        Ok(())
    }
}

/// Parses `250ms`, `1s`, `2m` or `1h`: a whole number and a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m or h)")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn health_checks_are_http_by_default_or_tcp() {
        assert_eq!(Config::default().health.mode, HealthMode::Http);
        assert_eq!("tcp".parse(), Ok(HealthMode::Tcp));
        assert_eq!("http".parse(), Ok(HealthMode::Http));
        assert!("https".parse::<HealthMode>().is_err());
        let mut config = Config::default();
        FileConfig::parse("health-check = \"tcp\"\n")
            .unwrap()
            .apply_to(&mut config)
            .unwrap();
        assert_eq!(config.health.mode, HealthMode::Tcp);
    }

    #[test]
    fn backend_addresses_are_checked() {
        assert!(validate_backend("127.0.0.1:8081").is_ok());
        assert!(validate_backend("gateway-1:8080").is_ok());
        assert!(validate_backend("[::1]:8080").is_ok());
        for bad in [
            "127.0.0.1",
            ":80",
            "host:0",
            "host:99999",
            "::1:80",
            "a b:1",
        ] {
            assert!(validate_backend(bad).is_err(), "{bad} accepted");
        }
        let twice = vec!["a:1".to_owned(), "a:1".to_owned()];
        assert!(matches!(
            validate_backends(&twice),
            Err(ConfigError::DuplicateBackend(_))
        ));
        assert!(matches!(
            validate_backends(&[]),
            Err(ConfigError::NoBackends)
        ));
    }

    #[test]
    fn file_settings_apply_over_defaults() {
        let file = FileConfig::parse(
            "backends = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nhealth-interval = \"250ms\"\nfall = 3\n",
        )
        .unwrap();
        let mut config = Config::default();
        file.apply_to(&mut config).unwrap();
        assert_eq!(config.backends, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(config.health.interval, Duration::from_millis(250));
        assert_eq!(config.health.fall, 3);
        assert_eq!(config.health.rise, 2);
        config.validate().unwrap();
    }

    #[test]
    fn per_source_limits_and_the_first_byte_deadline_come_from_the_file_too() {
        let file = FileConfig::parse(
            "client-first-byte-timeout = \"2s\"\nmax-conns-per-source = 0\nconn-rate-per-source = 5\nconn-burst-per-source = 7\n",
        )
        .unwrap();
        let mut config = Config {
            backends: vec!["127.0.0.1:1".into()],
            ..Config::default()
        };
        file.apply_to(&mut config).unwrap();
        assert_eq!(config.client_first_byte_timeout, Duration::from_secs(2));
        assert_eq!(
            config.per_source,
            SourceLimits {
                max_connections: 0,
                rate: 5,
                burst: 7
            }
        );
        config.validate().unwrap();
        // A rate needs a bucket of at least one; with the rate off the burst is unused.
        config.per_source.burst = 0;
        assert!(config.validate().is_err());
        config.per_source.rate = 0;
        config.validate().unwrap();
    }

    #[test]
    fn trusted_terminators_come_from_the_file_too() {
        let file = FileConfig::parse("accept-proxy-from = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        let mut config = Config::default();
        file.apply_to(&mut config).unwrap();
        assert_eq!(
            config.accept_proxy_from,
            ["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]
        );
        let bad = FileConfig::parse("accept-proxy-from = [\"10.0.0.0/99\"]\n").unwrap();
        let err = bad.apply_to(&mut Config::default()).unwrap_err();
        assert!(err.to_string().contains("accept-proxy-from"), "{err}");
    }

    #[test]
    fn file_errors_are_one_line_with_position() {
        let err = FileConfig::parse("backends = [\"a:1\"]\nbogus = 1\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(!err.contains('\n'));
        let bad_duration = FileConfig::parse("drain-timeout = \"soon\"").unwrap();
        assert!(bad_duration.apply_to(&mut Config::default()).is_err());
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut config = Config {
            backends: vec!["127.0.0.1:1".into()],
            ..Config::default()
        };
        config.validate().unwrap();
        config.health.fall = 0;
        assert!(config.validate().is_err());
        config.health.fall = 1;
        config.connect_timeout = Duration::ZERO;
        assert!(config.validate().is_err());
    }
}
