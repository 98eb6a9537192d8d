//! Keepalive: the server pings, and closes a connection from which nothing
//! (not even a pong) arrived for the idle timeout.

use std::time::Duration;

use anyhow::{bail, ensure};
use chat_client::WsMessage;
use chat_test_support::{raw_ws_handshake, BackendKind};
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;

use super::start;

pub(crate) async fn server_pings_and_closes_silent_connections(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(
        kind,
        &["--ping-interval-secs", "1", "--idle-timeout-secs", "2"],
    )
    .await?;
    let mut active = server.client("active").await?;
    active.join("lobby").await?;

    // A client that completed the handshake and then never sends anything,
    // not even a pong: it only collects what arrives until the server hangs up.
    let mut silent = raw_ws_handshake(server.addr()).await?;
    let started = Instant::now();
    let silent_task = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        (started.elapsed(), received)
    });

    // The server pings (here every second).
    active.set_timeout(Duration::from_secs(5));
    match active.recv_raw().await? {
        Some(WsMessage::Ping(_)) => {}
        other => bail!("expected a ping, got {other:?}"),
    }
    // The active client keeps reading (and so answering pings) while the
    // silent one is cut off.
    while !silent_task.is_finished() {
        if let Some(event) = active
            .next_event_timeout(Duration::from_millis(100))
            .await?
        {
            bail!("unexpected {event:?}");
        }
        ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the silent connection was never closed"
        );
    }
    let (after, received) = silent_task.await?;
    ensure!(
        after >= Duration::from_millis(1500),
        "the silent connection was closed after only {after:?}"
    );
    ensure!(
        received.starts_with(&[0x89, 0x00]),
        "the silent connection was pinged first: {received:?}"
    );
    // Still open, well past the idle timeout.
    active.ping().await?;
    ensure!(
        active.pings_received() >= 2,
        "pings kept coming: {}",
        active.pings_received()
    );
    Ok(())
}
