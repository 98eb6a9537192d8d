//! A real `chat-gateway` process on a free port.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use chat_client::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::artifacts::{log_path, unique};
use crate::http::{http_get, metric_value};
use crate::{Backend, HarnessError};

/// How long a gateway gets to print its address (builds and parallel tests
/// can make a cold start slow).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gateway prints once bound (then `http://` or, with
/// `--tls-cert`, `https://`, and the address).
const LISTENING: &str = "chat-gateway listening on ";

/// Gateway flags that take the per-connection send rate limit out of a
/// test's way.
pub const FAST_SENDS: &[&str] = &[
    "--messages-per-second",
    "100000",
    "--message-burst",
    "100000",
];

/// Log filter for gateways unless the test run sets `RUST_LOG`.
const DEFAULT_LOG: &str = "info,chat_gateway=debug,chat_bridge=debug";

/// A running gateway process; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    addr: SocketAddr,
    id: String,
    log: PathBuf,
    /// Set once the exit has been observed.
    exit: Option<ExitStatus>,
    /// The binary and every flag after `--gateway-id`, for [`Gateway::restart`].
    bin: PathBuf,
    args: Vec<String>,
}

impl Gateway {
    /// Starts `bin` with `--listen 127.0.0.1:0` and `--admin-listen
    /// 127.0.0.1:0` (see [`crate::admin_addr`]), a fresh `--gateway-id`, the
    /// backend's flags and `extra_args`, and waits for its address. Its
    /// stderr (logs) goes to a file under [`crate::artifacts_dir`].
    pub async fn start(
        bin: impl AsRef<Path>,
        backend: &Backend,
        extra_args: &[&str],
    ) -> Result<Self, HarnessError> {
        let id = format!("gw-{}-{}", std::process::id(), unique());
        Self::start_with_id(bin, backend, &id, extra_args).await
    }

    /// Like [`Gateway::start`] with a chosen gateway id.
    pub async fn start_with_id(
        bin: impl AsRef<Path>,
        backend: &Backend,
        id: &str,
        extra_args: &[&str],
    ) -> Result<Self, HarnessError> {
        let log = log_path(id).map_err(HarnessError::io("creating the log dir"))?;
        File::create(&log).map_err(HarnessError::io(format!("creating {}", log.display())))?;
        let mut args = backend.args();
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let (child, addr) = spawn(bin.as_ref(), id, &args, &[], &log).await?;
        Ok(Self {
            child,
            addr,
            id: id.to_owned(),
            log,
            exit: None,
            bin: bin.as_ref().to_owned(),
            args,
        })
    }

    /// A crash and a supervisor's restart: SIGKILL, then the same binary
    /// with the same id, flags, address and admin address, at once. The new
    /// process's log is appended to the same file.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        let admin = crate::admin_addr(self).await?;
        self.sigkill().await?;
        let pin = [
            "--listen".to_owned(),
            self.addr.to_string(),
            "--admin-listen".to_owned(),
            admin.to_string(),
        ];
        let (child, addr) = spawn(&self.bin, &self.id, &self.args, &pin, &self.log).await?;
        self.child = child;
        self.addr = addr;
        self.exit = None;
        Ok(())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://ADDR`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `--gateway-id` it was given.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its log file (stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its log so far.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `GET path` over plain HTTP: status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), HarnessError> {
        http_get(self.addr, path).await
    }

    /// The body of `/metrics`.
    pub async fn metrics(&self) -> Result<String, HarnessError> {
        match self.get("/metrics").await? {
            (200, body) => Ok(body),
            (status, body) => Err(HarnessError::Http(format!(
                "/metrics answered {status}: {body}"
            ))),
        }
    }

    /// One series of `/metrics` (e.g. `chat_errors_total{code="BAD_FRAME"}`).
    pub async fn metric(&self, series: &str) -> Result<Option<f64>, HarnessError> {
        Ok(metric_value(&self.metrics().await?, series))
    }

    /// A new protocol connection (no Hello yet).
    pub async fn connect(&self) -> Result<Client, HarnessError> {
        Ok(Client::connect(&self.ws_url()).await?)
    }

    /// A new connection that said Hello as `username` and got its Welcome.
    pub async fn client(&self, username: &str) -> Result<Client, HarnessError> {
        let mut client = self.connect().await?;
        client.hello(username).await?;
        Ok(client)
    }

    /// Sends SIGHUP (reload the TLS certificate).
    pub fn sighup(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGHUP)
    }

    /// Sends SIGTERM (graceful drain).
    pub fn sigterm(&self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGTERM)
    }

    /// Kills it with SIGKILL (a crash: no drain, no goodbye) and reaps it.
    pub async fn sigkill(&mut self) -> Result<(), HarnessError> {
        if self.exit.is_none() {
            let _ = self.child.start_kill();
            self.exit = Some(
                self.child
                    .wait()
                    .await
                    .map_err(HarnessError::io("waiting for the gateway"))?,
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| {
                HarnessError::Timeout(format!(
                    "gateway {} still running after {timeout:?}",
                    self.id
                ))
            })?
            .map_err(HarnessError::io("waiting for the gateway"))?;
        self.exit = Some(status);
        Ok(status)
    }

    fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| HarnessError::Signal(nix::Error::ESRCH))?;
        let pid = i32::try_from(pid).map_err(|_| HarnessError::Signal(nix::Error::EINVAL))?;
        kill(Pid::from_raw(pid), signal)?;
        Ok(())
    }
}

/// Starts `bin` with loopback addresses on port 0, `--gateway-id id`,
/// `args` and `pin` (later flags win), its stderr appended to `log`, and
/// waits for its address.
async fn spawn(
    bin: &Path,
    id: &str,
    args: &[String],
    pin: &[String],
    log: &Path,
) -> Result<(Child, SocketAddr), HarnessError> {
    // Append mode: the gateway's stderr and the stdout copy (see
    // `read_address`) both write to this file; with separate offsets one
    // would overwrite the other.
    let stderr = File::options()
        .append(true)
        .open(log)
        .map_err(HarnessError::io(format!("opening {}", log.display())))?;
    let mut command = Command::new(bin);
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--gateway-id",
            id,
        ])
        .args(args)
        .args(pin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    isolate_env(&mut command);
    let mut child = command
        .spawn()
        .map_err(HarnessError::io(format!("spawning {}", bin.display())))?;
    // Shown by libtest only when the test fails.
    eprintln!("gateway {id}: log at {}", log.display());
    let stdout = child.stdout.take().expect("stdout is piped");
    let fail = |reason: String| HarnessError::GatewayStart {
        reason,
        log: log.to_owned(),
    };
    match tokio::time::timeout(START_TIMEOUT, read_address(stdout, log.to_owned())).await {
        Ok(Ok(addr)) => Ok((child, addr)),
        Ok(Err(reason)) => {
            let status = child
                .wait()
                .await
                .map_err(HarnessError::io("waiting for the gateway"))?;
            Err(fail(format!(
                "{reason}; exited with {status}; log tail:\n{}",
                log_tail(log)
            )))
        }
        Err(_) => Err(fail(format!("no address printed within {START_TIMEOUT:?}"))),
    }
}

/// Runs `bin args...` to its exit (for flags that must be refused) and
/// returns its output; the process is killed after `timeout`.
pub async fn run_to_exit(
    bin: impl AsRef<Path>,
    args: &[&str],
    timeout: Duration,
) -> Result<Output, HarnessError> {
    let mut command = Command::new(bin.as_ref());
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    isolate_env(&mut command);
    tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| {
            HarnessError::Timeout(format!(
                "{} {args:?} still running after {timeout:?}",
                bin.as_ref().display()
            ))
        })?
        .map_err(HarnessError::io("running the gateway"))
}

/// Drops `CHAT_*` settings of the surrounding environment (flags decide),
/// and sets the log filter.
fn isolate_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHAT_") {
            command.env_remove(key);
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", DEFAULT_LOG);
    }
}

/// Reads stdout until the address line; the rest of stdout is copied to the
/// log in the background so the gateway never writes to a closed pipe.
async fn read_address(stdout: ChildStdout, log: PathBuf) -> Result<SocketAddr, String> {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err("stdout closed before the address was printed".into()),
            Err(e) => return Err(format!("reading stdout: {e}")),
        };
        let address = line.strip_prefix(LISTENING).and_then(|url| {
            url.strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
        });
        if let Some(addr) = address {
            let addr = addr
                .trim()
                .parse()
                .map_err(|e| format!("bad address line {line:?}: {e}"))?;
            tokio::spawn(async move {
                let mut file = File::options().append(true).open(&log).ok();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(file) = file.as_mut() {
                        let _ = writeln!(file, "[stdout] {line}");
                    }
                }
            });
            return Ok(addr);
        }
    }
}

/// The last lines of a log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
