//! The cluster a scenario runs itself because it must crash and restart
//! part of it: gateway processes on one Redis and chat-lb in front, each
//! started from its binary, its output appended to a log file.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a process gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A sibling of this executable (chat-gateway, chat-lb), unless given.
pub(crate) fn binary(given: Option<&Path>, name: &str) -> Result<PathBuf> {
    let bin = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .context("locating chat-bench")?
            .with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX)),
    };
    if !bin.is_file() {
        bail!(
            "{} not found (build it, or point at it with --{name}-bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A gateway process; killed on drop.
pub(crate) struct Gateway {
    pub id: String,
    pub addr: SocketAddr,
    bin: PathBuf,
    /// Every flag after `--gateway-id`.
    args: Vec<String>,
    log: Option<PathBuf>,
    child: Child,
}

impl Gateway {
    /// Starts `bin` on loopback ports chosen by the kernel, as `id`, with `args`.
    pub(crate) async fn start(
        bin: &Path,
        id: &str,
        args: Vec<String>,
        log_dir: Option<&Path>,
    ) -> Result<Self> {
        let log = log_dir.map(|dir| dir.join(format!("{id}.log")));
        let (child, addr) = spawn_gateway(bin, id, &args, &[], log.as_deref()).await?;
        Ok(Self {
            id: id.to_owned(),
            addr,
            bin: bin.to_owned(),
            args,
            log,
            child,
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL (a crash: no drain, no goodbye), and waits for the exit.
    pub(crate) async fn kill(&mut self) -> Result<()> {
        self.child.start_kill().context("killing the gateway")?;
        self.child
            .wait()
            .await
            .context("waiting for the killed gateway")?;
        Ok(())
    }

    /// Starts the killed gateway again as a supervisor would: same binary,
    /// id, flags and address.
    pub(crate) async fn restart(&mut self) -> Result<()> {
        let pin = ["--listen".to_owned(), self.addr.to_string()];
        let (child, addr) =
            spawn_gateway(&self.bin, &self.id, &self.args, &pin, self.log.as_deref()).await?;
        self.child = child;
        self.addr = addr;
        Ok(())
    }
}

/// chat-lb in front of the gateways; killed on drop.
pub(crate) struct Balancer {
    pub addr: SocketAddr,
    child: Child,
}

impl Balancer {
    /// Starts `bin` on a loopback port in front of `backends`, with `args`.
    pub(crate) async fn start(
        bin: &Path,
        backends: &[SocketAddr],
        args: &[&str],
        log_dir: Option<&Path>,
    ) -> Result<Self> {
        let mut command = Command::new(bin);
        command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
        for backend in backends {
            command.args(["--backend", &backend.to_string()]);
        }
        command.args(args);
        let log = log_dir.map(|dir| dir.join("chat-lb.log"));
        let (child, line) = spawn(command, "chat-lb listening on ", log.as_deref()).await?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("chat-lb printed a bad address: {line:?}"))?;
        Ok(Self { addr, child })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

async fn spawn_gateway(
    bin: &Path,
    id: &str,
    args: &[String],
    pin: &[String],
    log: Option<&Path>,
) -> Result<(Child, SocketAddr)> {
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
        .args(pin);
    let (child, line) = spawn(command, "chat-gateway listening on http://", log)
        .await
        .with_context(|| format!("starting gateway {id}"))?;
    let addr = line
        .trim()
        .parse()
        .with_context(|| format!("gateway {id} printed a bad address: {line:?}"))?;
    Ok((child, addr))
}

/// Spawns `command` (its stderr, and its stdout after the line starting
/// with `marker`, appended to `log` or dropped) and returns the rest of
/// that line.
async fn spawn(mut command: Command, marker: &str, log: Option<&Path>) -> Result<(Child, String)> {
    let stderr = match log {
        Some(path) => Stdio::from(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {:?}", command.as_std().get_program()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    match tokio::time::timeout(
        START_TIMEOUT,
        read_marker(stdout, marker, log.map(Path::to_owned)),
    )
    .await
    {
        Ok(Some(rest)) => Ok((child, rest)),
        Ok(None) => {
            let status = child.wait().await.ok();
            bail!("exited ({status:?}) before printing {marker:?}; see its log")
        }
        Err(_) => bail!("did not print {marker:?} within {START_TIMEOUT:?}"),
    }
}

/// Reads stdout up to the marker line; the rest of stdout is copied to the
/// log in the background, so the process never writes to a closed pipe.
async fn read_marker(stdout: ChildStdout, marker: &str, log: Option<PathBuf>) -> Option<String> {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line.strip_prefix(marker) {
            let rest = rest.to_owned();
            tokio::spawn(async move {
                let mut file = log.and_then(|p| File::options().append(true).open(p).ok());
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(file) = file.as_mut() {
                        let _ = writeln!(file, "[stdout] {line}");
                    }
                }
            });
            return Some(rest);
        }
    }
    None
}
