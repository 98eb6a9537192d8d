//! The real `chat-lb` binary in front of gateways under test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::HarnessError;

/// What chat-lb prints once its proxy listener is bound.
const LISTENING: &str = "chat-lb listening on ";

/// A running chat-lb; killed on drop.
#[derive(Debug)]
pub struct Balancer {
    child: Child,
    addr: SocketAddr,
}

impl Balancer {
    /// Starts `chat-lb` (found next to `gateway_bin`, i.e.
    /// `env!("CARGO_BIN_EXE_chat-gateway")`) on a free loopback port in front
    /// of `backends`, with a fast health check and `extra_args`.
    pub async fn start(
        gateway_bin: impl AsRef<Path>,
        backends: &[SocketAddr],
        extra_args: &[&str],
    ) -> Result<Self, HarnessError> {
        let bin = gateway_bin
            .as_ref()
            .with_file_name(format!("chat-lb{}", std::env::consts::EXE_SUFFIX));
        if !bin.is_file() {
            return Err(HarnessError::Io {
                what: format!("{} not found", bin.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "build it first: cargo build --workspace (or cargo build -p chat-lb)",
                ),
            });
        }
        let mut command = Command::new(&bin);
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--health-interval",
            "200ms",
        ]);
        for backend in backends {
            command.args(["--backend", &backend.to_string()]);
        }
        command.args(extra_args);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(HarnessError::io(format!("spawning {}", bin.display())))?;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix(LISTENING) {
                    return addr.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await;
        let Ok(Some(addr)) = found else {
            return Err(HarnessError::Timeout(
                "chat-lb did not print its address".into(),
            ));
        };
        // Keep reading: a closed pipe would fail chat-lb's next write to stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    /// The address chat-lb listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://addr/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
