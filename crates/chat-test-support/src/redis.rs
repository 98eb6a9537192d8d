//! A real `redis-server` on a free loopback port, with its own temp dir,
//! that a test can kill and restart on the same port.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::artifacts::{log_path, unique};
use crate::HarnessError;

/// How long redis-server gets to answer PING after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate files of a redis-server that also listens for TLS.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// PEM certificate of the server.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA certificate (redis-server insists on one; clients are not asked
    /// for certificates).
    pub ca: PathBuf,
}

/// How [`RedisServer::start_with`] starts redis-server beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// More redis-server arguments, given after the harness's own (for a
    /// single-valued directive, the later one wins); every restart passes
    /// them again.
    pub args: Vec<String>,
    /// Picks a port below 55536 whose cluster bus port (port + 10000) is free
    /// too, as a Redis Cluster node needs, instead of any free port.
    pub cluster_bus: bool,
}

/// A running (or killed, awaiting restart) redis-server. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// The extra arguments of [`RedisOptions`], reused by every restart.
    args: Vec<String>,
    /// Whether the port must leave room for a cluster bus (port + 10000).
    cluster_bus: bool,
    /// With TLS: the files and the TLS port (the plain port stays open for
    /// the harness's own commands).
    tls: Option<(RedisTls, u16)>,
    /// Redis' working directory; removed on drop.
    dir: TempDir,
    /// `None` while killed.
    child: Option<Child>,
    /// stdout/stderr of every incarnation, appended.
    log: PathBuf,
}

impl RedisServer {
    /// The redis-server binary: `$REDIS_SERVER_BIN` or Debian's `/usr/bin/redis-server`.
    pub fn binary() -> PathBuf {
        std::env::var_os("REDIS_SERVER_BIN")
            .map_or_else(|| PathBuf::from("/usr/bin/redis-server"), PathBuf::from)
    }

    /// Starts redis-server on a free 127.0.0.1 port with persistence off and
    /// returns once it answers PING.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_inner(None, RedisOptions::default()).await
    }

    /// Like [`RedisServer::start`], with `options`' extra arguments (kept for
    /// [`RedisServer::restart`]) and choice of port.
    pub async fn start_with(options: RedisOptions) -> Result<Self, HarnessError> {
        Self::start_inner(None, options).await
    }

    /// Like [`RedisServer::start`], also listening for TLS on a second port
    /// ([`RedisServer::tls_port`]) with `tls`'s certificate; clients of the
    /// TLS port need no certificate.
    pub async fn start_tls(tls: RedisTls) -> Result<Self, HarnessError> {
        Self::start_inner(Some(tls), RedisOptions::default()).await
    }

    async fn start_inner(
        tls: Option<RedisTls>,
        options: RedisOptions,
    ) -> Result<Self, HarnessError> {
        let binary = Self::binary();
        if !binary.exists() {
            return Err(HarnessError::RedisMissing(binary));
        }
        let dir = tempfile::Builder::new()
            .prefix("chat-redis-")
            .tempdir()
            .map_err(HarnessError::io("creating redis' temp dir"))?;
        let log = log_path(&format!("redis-{}", unique()))
            .map_err(HarnessError::io("creating the log dir"))?;
        let pick = |cluster_bus| {
            if cluster_bus {
                cluster_port()
            } else {
                free_port()
            }
        };
        let mut server = Self {
            port: pick(options.cluster_bus)?,
            args: options.args,
            cluster_bus: options.cluster_bus,
            tls: match tls {
                Some(tls) => Some((tls, free_port()?)),
                None => None,
            },
            dir,
            child: None,
            log,
        };
        let mut last_error = String::new();
        // The free port may be taken between probing and binding: try a few.
        for _ in 0..5 {
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_error = e.to_string();
                    server.port = pick(server.cluster_bus)?;
                    if let Some((_, port)) = server.tls.as_mut() {
                        *port = free_port()?;
                    }
                }
            }
        }
        Err(HarnessError::RedisStart(last_error))
    }

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TLS port, when started with [`RedisServer::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|(_, port)| *port)
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Whether it is running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it with SIGKILL (no shutdown, no save) and waits for the exit.
    pub async fn kill(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            child
                .wait()
                .await
                .map_err(HarnessError::io("waiting for redis-server"))?;
        }
        Ok(())
    }

    /// Kills it if running, then starts it again on the same port with the
    /// same arguments (empty: persistence is off; a cluster node keeps its
    /// `nodes.conf`, so its node id) and waits until it answers PING.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill().await?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                // The port can stay busy for a moment after the kill.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends PING and expects PONG.
    pub async fn ping(&self) -> Result<(), HarnessError> {
        match self.command(&["PING"]).await? {
            RespValue::Simple(s) if s == "PONG" => Ok(()),
            other => Err(HarnessError::Redis(format!("PING answered {other:?}"))),
        }
    }

    /// Runs one command on a fresh connection and returns the reply.
    pub async fn command(&self, args: &[&str]) -> Result<RespValue, HarnessError> {
        self.command_bytes(args).await
    }

    /// Like [`RedisServer::command`], for arguments that are bytes (keys
    /// read back from Redis need not be UTF-8).
    pub async fn command_bytes<A: AsRef<[u8]> + Sync>(
        &self,
        args: &[A],
    ) -> Result<RespValue, HarnessError> {
        let exchange = async {
            let stream = TcpStream::connect(self.addr())
                .await
                .map_err(HarnessError::io("connecting to redis"))?;
            let mut stream = BufReader::new(stream);
            stream
                .write_all(&encode_command(args))
                .await
                .map_err(HarnessError::io("writing to redis"))?;
            read_value(&mut stream).await
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| {
                let args: Vec<_> = args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a.as_ref()))
                    .collect();
                HarnessError::Timeout(format!("redis command {args:?} on port {}", self.port))
            })?
    }

    async fn spawn_and_wait(&mut self) -> Result<(), HarnessError> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(HarnessError::io("opening the redis log"))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io("opening the redis log"))?;
        let mut command = Command::new(Self::binary());
        if let Some((tls, port)) = &self.tls {
            command
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "no"]);
        }
        let mut child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(HarnessError::io("spawning redis-server"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(HarnessError::io("polling redis-server"))?
            {
                return Err(HarnessError::RedisStart(format!(
                    "exited with {status} on port {} (log: {})",
                    self.port,
                    self.log.display()
                )));
            }
            if self
                .command(&["PING"])
                .await
                .is_ok_and(|v| v == RespValue::Simple("PONG".into()))
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(HarnessError::RedisStart(format!(
                    "no PONG within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16, HarnessError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("probing for a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(HarnessError::io("probing for a free port"))?
        .port())
}

/// Where [`cluster_port`] looks: above the well-known ports, and low enough
/// that the cluster bus port (port + 10000) is a valid port, below 65536.
const CLUSTER_PORTS: std::ops::Range<u16> = 20_000..55_000;

/// A port below 55536 that was free a moment ago together with its cluster
/// bus port (port + 10000). Random candidates, because [`free_port`] asks
/// the kernel's ephemeral range, which starts at 32768 and reaches too high.
fn cluster_port() -> Result<u16, HarnessError> {
    let span = u64::from(CLUSTER_PORTS.end - CLUSTER_PORTS.start);
    for _ in 0..200 {
        let port = CLUSTER_PORTS.start + (random_u64() % span) as u16;
        let both = TcpListener::bind(("127.0.0.1", port))
            .and_then(|a| TcpListener::bind(("127.0.0.1", port + 10_000)).map(|b| (a, b)));
        if both.is_ok() {
            return Ok(port);
        }
    }
    Err(HarnessError::RedisStart(format!(
        "no free port pair (port, port + 10000) found in {CLUSTER_PORTS:?}"
    )))
}

/// Random bits from the standard library's per-process hash keys (no
/// dependency for a port number).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(unique());
    hasher.finish()
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// A simple string (`+OK`).
    Simple(String),
    /// An error (`-ERR ...`).
    Error(String),
    /// An integer (`:1`).
    Integer(i64),
    /// A bulk string; `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// An array; `None` is the null array.
    Array(Option<Vec<RespValue>>),
}

fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<String, HarnessError> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .map_err(HarnessError::io("reading from redis"))?;
    if n == 0 || !line.ends_with("\r\n") {
        return Err(HarnessError::Redis("connection closed mid-reply".into()));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_value<'a, R: tokio::io::AsyncBufRead + Unpin + std::marker::Send>(
    reader: &'a mut R,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<RespValue, HarnessError>> + std::marker::Send + 'a>,
> {
    Box::pin(async move {
        let line = read_line(reader).await?;
        let (tag, rest) = line
            .split_at_checked(1)
            .ok_or_else(|| HarnessError::Redis("empty reply line".into()))?;
        let number = || {
            rest.parse::<i64>()
                .map_err(|e| HarnessError::Redis(format!("bad length {rest:?}: {e}")))
        };
        match tag {
            "+" => Ok(RespValue::Simple(rest.to_owned())),
            "-" => Ok(RespValue::Error(rest.to_owned())),
            ":" => Ok(RespValue::Integer(number()?)),
            "$" => match number()? {
                n if n < 0 => Ok(RespValue::Bulk(None)),
                n => {
                    let mut data = vec![0u8; n as usize + 2];
                    reader
                        .read_exact(&mut data)
                        .await
                        .map_err(HarnessError::io("reading from redis"))?;
                    data.truncate(n as usize);
                    Ok(RespValue::Bulk(Some(data)))
                }
            },
            "*" => match number()? {
                n if n < 0 => Ok(RespValue::Array(None)),
                n => {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(read_value(reader).await?);
                    }
                    Ok(RespValue::Array(Some(items)))
                }
            },
            other => Err(HarnessError::Redis(format!("unknown reply type {other:?}"))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_resp_arrays() {
        assert_eq!(
            encode_command(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn cluster_ports_leave_room_for_the_bus_port() {
        for _ in 0..20 {
            let port = cluster_port().unwrap();
            assert!(CLUSTER_PORTS.contains(&port), "{port}");
            assert!(port < 55_536, "{port}");
        }
    }

    #[tokio::test]
    async fn decodes_every_reply_type() {
        let raw: &[u8] = b"*5\r\n+OK\r\n-ERR no\r\n:42\r\n$3\r\nabc\r\n$-1\r\n";
        let mut reader = BufReader::new(raw);
        let value = read_value(&mut reader).await.unwrap();
        assert_eq!(
            value,
            RespValue::Array(Some(vec![
                RespValue::Simple("OK".into()),
                RespValue::Error("ERR no".into()),
                RespValue::Integer(42),
                RespValue::Bulk(Some(b"abc".to_vec())),
                RespValue::Bulk(None),
            ]))
        );
    }

    #[tokio::test]
    async fn starts_kills_and_restarts_on_the_same_port() {
        if !RedisServer::binary().exists() {
            panic!("{}", HarnessError::RedisMissing(RedisServer::binary()));
        }
        let mut redis = RedisServer::start().await.unwrap();
        redis.ping().await.unwrap();
        assert_eq!(
            redis.command(&["SET", "k", "v"]).await.unwrap(),
            RespValue::Simple("OK".into())
        );
        let port = redis.port();
        redis.kill().await.unwrap();
        assert!(redis.ping().await.is_err(), "killed server still answers");
        redis.restart().await.unwrap();
        assert_eq!(redis.port(), port);
        // Persistence is off: a restart starts empty.
        assert_eq!(
            redis.command(&["GET", "k"]).await.unwrap(),
            RespValue::Bulk(None)
        );
    }
}
