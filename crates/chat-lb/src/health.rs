//! Active health checks: `GET /healthz` on every backend, every interval (or,
//! with `--health-check tcp`, a connect only: a backend serving TLS cannot be
//! asked over plain HTTP, and the balancer never speaks TLS).
//!
//! This is the control path, so a hand-written HTTP/1.1 request and status-line parse is
//! enough; the data path never looks at the bytes it relays.
//!
//! Each check opens its own connection, straight to the backend: it never waits behind client
//! connections (it takes no client slot and no per-source place), and silent clients cost the
//! backends nothing (see `connection::first_byte`), so a flood of them cannot fill a backend
//! and fail its checks. A check that fails because this process ran out of something (a flood
//! can use up its file descriptors) is not held against the backend.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chat_net::proxy_v2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{self, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{Backend, Observation, Transition};
use crate::config::{HealthConfig, HealthMode};
use crate::connection::is_local_error;
use crate::metrics::Stats;
use crate::pool::Pool;

/// The status line must arrive within this many bytes.
const MAX_STATUS_LINE: usize = 1024;

/// Checks all backends of the pool every `config.interval` until `stop` is cancelled. Each
/// round checks the backends concurrently and takes the current set, so reloads apply at the
/// next round.
pub(crate) async fn run(
    pool: Arc<Pool>,
    stats: Arc<Stats>,
    config: HealthConfig,
    send_proxy_v2: bool,
    stop: CancellationToken,
) {
    let mut ticks = time::interval(config.interval);
    // A slow round delays the next one instead of causing a burst of catch-up rounds.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let mut round = JoinSet::new();
        for backend in pool.snapshot().iter() {
            let backend = Arc::clone(backend);
            let stats = Arc::clone(&stats);
            let config = config.clone();
            round.spawn(async move {
                match check(backend.addr(), &config, send_proxy_v2).await {
                    Checked::Observed(observation, detail) => {
                        record(&backend, observation, &detail, &config);
                    }
                    Checked::LocalError(err) => {
                        stats.local_connect_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(
                            backend = backend.addr(),
                            error = %err,
                            "cannot open a health check connection here; check skipped"
                        );
                    }
                }
            });
        }
        // Dropping the set on cancellation aborts the checks still in flight.
        tokio::select! {
            () = stop.cancelled() => return,
            _ = async { while round.join_next().await.is_some() {} } => {}
        }
    }
}

fn record(backend: &Backend, observation: Observation, detail: &str, config: &HealthConfig) {
    match backend.observe(observation, config.fall, config.rise) {
        Some(Transition::WentDown) => {
            warn!(backend = backend.addr(), result = detail, "backend down");
        }
        Some(Transition::WentUp) => info!(backend = backend.addr(), "backend up"),
        None => debug!(backend = backend.addr(), result = detail, "health check"),
    }
}

/// What one check found.
enum Checked {
    /// The observation and a description for the logs.
    Observed(Observation, String),
    /// This process could not open the connection; nothing was learnt about the backend.
    LocalError(std::io::Error),
}

/// One check: connect, send the request, read the status line, all within `timeout`.
async fn check(addr: &str, config: &HealthConfig, send_proxy_v2: bool) -> Checked {
    let timeout = config.timeout;
    let probed = async {
        match config.mode {
            HealthMode::Http => probe(addr, send_proxy_v2).await,
            // Accepting the connection is all a TLS backend shows in the clear.
            HealthMode::Tcp => TcpStream::connect(addr).await.map(|_| 200),
        }
    };
    match time::timeout(timeout, probed).await {
        Ok(Ok(status)) => Checked::Observed(classify(status), format!("status {status}")),
        Ok(Err(err)) if is_local_error(&err) => Checked::LocalError(err),
        Ok(Err(err)) => Checked::Observed(Observation::Failed, err.to_string()),
        Err(_) => Checked::Observed(Observation::Failed, format!("timed out after {timeout:?}")),
    }
}

/// 2xx is healthy, 503 means draining, anything else is a failure.
fn classify(status: u16) -> Observation {
    match status {
        200..=299 => Observation::Healthy,
        503 => Observation::Draining,
        _ => Observation::Failed,
    }
}

async fn probe(addr: &str, send_proxy_v2: bool) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = Vec::with_capacity(96);
    if send_proxy_v2 {
        // A backend that requires PROXY headers would reject a bare request.
        request.extend_from_slice(&proxy_v2::local_header());
    }
    request.extend_from_slice(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    stream.write_all(&request).await?;
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end]).ok_or_else(|| invalid("malformed status line"));
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(invalid("status line too long"));
        }
        let mut chunk = [0u8; 256];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("connection closed before the status line"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn invalid(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// `HTTP/1.x NNN reason` to `NNN`.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/2 200"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
    }

    #[test]
    fn statuses_classify() {
        assert_eq!(classify(200), Observation::Healthy);
        assert_eq!(classify(204), Observation::Healthy);
        assert_eq!(classify(503), Observation::Draining);
        assert_eq!(classify(500), Observation::Failed);
        assert_eq!(classify(301), Observation::Failed);
    }
}
