//! The admin side of a gateway under test: where its admin gRPC API listens,
//! and the `chat-admin` binary built next to the gateway binary (found, and
//! run with a clean environment).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::{try_eventually, Gateway, HarnessError};

/// What the gateway prints once its admin listener is bound (after the
/// HTTP address line); then `http://` or, with `--admin-tls-cert`,
/// `https://`, and the address.
const ADMIN_LISTENING: &str = "chat-gateway admin listening on ";

/// The admin API address of `gateway` (started by the harness with
/// `--admin-listen 127.0.0.1:0`). The harness copies the gateway's stdout
/// after the first address line into its log, so the line is read from there.
pub async fn admin_addr(gateway: &Gateway) -> Result<SocketAddr, HarnessError> {
    let found = try_eventually(Duration::from_secs(10), || async {
        let log = gateway.log_contents();
        let line = log.lines().find_map(|line| {
            line.split_once(ADMIN_LISTENING).map(|(_, url)| {
                let addr = url.trim();
                addr.strip_prefix("http://")
                    .or_else(|| addr.strip_prefix("https://"))
                    .unwrap_or(addr)
                    .to_owned()
            })
        });
        match line {
            Some(addr) => addr
                .parse::<SocketAddr>()
                .map_err(|e| format!("bad admin address {addr:?}: {e}")),
            None => Err(format!(
                "no {ADMIN_LISTENING:?} line in {}",
                gateway.log_path().display()
            )),
        }
    })
    .await;
    found.map_err(|last| {
        HarnessError::Timeout(format!("gateway {} admin address: {last}", gateway.id()))
    })
}

/// `chat-admin` in the same target directory as `gateway_bin`
/// (`env!("CARGO_BIN_EXE_chat-gateway")`). Cargo builds only the binaries of
/// the package under test, so `cargo build --workspace` must have run (as
/// `scripts/test.sh` does); the error says so when the binary is missing.
pub fn chat_admin_bin(gateway_bin: impl AsRef<Path>) -> Result<PathBuf, HarnessError> {
    let gateway_bin = gateway_bin.as_ref();
    let bin = gateway_bin.with_file_name(format!("chat-admin{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(HarnessError::Io {
            what: format!(
                "{} not found next to {}",
                bin.display(),
                gateway_bin.display()
            ),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "build it first: cargo build --workspace (or cargo build -p chat-admin)",
            ),
        })
    }
}

/// How long [`run_chat_admin`] waits for the CLI to finish.
const CLI_DEADLINE: Duration = Duration::from_secs(20);

/// Runs the real `chat-admin` (see [`chat_admin_bin`]) with `args` and waits
/// for it (up to 20 s). Its environment is cleared of `CHAT_*` variables, so
/// only the flags a test gives count.
pub async fn run_chat_admin<I, S>(
    gateway_bin: impl AsRef<Path>,
    args: I,
) -> Result<Output, HarnessError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = chat_admin_bin(gateway_bin)?;
    let mut command = tokio::process::Command::new(&bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHAT_") {
            command.env_remove(key);
        }
    }
    command.args(args).kill_on_drop(true);
    match tokio::time::timeout(CLI_DEADLINE, command.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(source)) => Err(HarnessError::Io {
            what: format!("running {}", bin.display()),
            source,
        }),
        Err(_) => Err(HarnessError::Timeout(format!(
            "{} did not finish within {CLI_DEADLINE:?}",
            bin.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_chat_admin_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = chat_admin_bin(dir.path().join("chat-gateway"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cargo build --workspace"), "{err}");
        std::fs::write(dir.path().join("chat-admin"), b"").unwrap();
        assert_eq!(
            chat_admin_bin(dir.path().join("chat-gateway")).unwrap(),
            dir.path().join("chat-admin")
        );
    }
}
