//! Drain on SIGTERM: health 503, one Reconnect per client in the first half
//! of the deadline, upgrades refused, 1001 at the deadline, exit 0.

use std::time::Duration;

use anyhow::{bail, ensure};
use chat_client::{Client, ClientError};
use chat_proto::v1::{presence_change, server_frame::Kind};
use chat_test_support::{eventually, ws_upgrade_status, BackendKind};
use tokio::time::Instant;

use super::{room_with, start, WAIT};

const DEADLINE: Duration = Duration::from_millis(3000);

pub(crate) async fn sigterm_drains_reconnect_503_close_1001_exit_0(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let mut server = start(kind, &["--drain-timeout-ms", "3000"]).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob", "carol"]).await?;
    server.sigterm()?;
    let signalled = Instant::now();

    // Every client gets one Reconnect, due within the first half of the deadline.
    for client in &mut clients {
        match client.next_event().await?.kind {
            Some(Kind::Reconnect(r)) => ensure!(
                u128::from(r.after_ms) <= DEADLINE.as_millis() / 2,
                "after_ms {} is not in the first half of {DEADLINE:?}",
                r.after_ms
            ),
            other => bail!("expected Reconnect, got {other:?}"),
        }
    }
    eventually(WAIT, || async {
        server
            .get("/healthz")
            .await
            .ok()
            .filter(|(status, _)| *status == 503)
    })
    .await;
    assert_eq!(
        ws_upgrade_status(server.addr()).await?,
        503,
        "new upgrades are refused"
    );
    match Client::connect(&server.ws_url()).await {
        Err(ClientError::Rejected { status: 503 }) => {}
        other => bail!("expected a 503 refusal, got {other:?}"),
    }
    // A second drain request changes nothing (no second Reconnect, no early exit).
    server.sigterm()?;

    // alice follows the advice; bob and carol stay until the deadline.
    let mut clients = clients.into_iter();
    clients.next().expect("alice").close().await?;
    for mut client in clients {
        let close = client.wait_closed(WAIT).await?;
        let at = signalled.elapsed();
        ensure!(
            close.as_ref().map(|c| c.code) == Some(1001),
            "expected close 1001, got {close:?}"
        );
        ensure!(
            at >= DEADLINE - Duration::from_millis(200),
            "closed after {at:?}, before the deadline"
        );
        while let Some(frame) = client.try_next_event() {
            match frame.kind {
                Some(Kind::Presence(p)) if p.kind() == presence_change::Kind::Left => {}
                other => bail!("after the Reconnect only departures may arrive, got {other:?}"),
            }
        }
    }
    let status = server.gw.wait_exit(WAIT).await?;
    assert_eq!(status.code(), Some(0), "exit status after the drain");
    Ok(())
}
