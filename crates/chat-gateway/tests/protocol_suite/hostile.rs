//! What one hostile client can do to others, and what it costs it: the
//! Hello deadline, the cap on refused Hellos, the room-operation bucket, and
//! presence coalescing under a Join/Leave flood.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use chat_client::{Client, ClientError};
use chat_proto::v1::{client_frame, presence_change, server_frame::Kind, ErrorCode, Join, Leave};
use chat_test_support::BackendKind;
use tokio::time::Instant;

use super::{error_of, marker, start, WAIT};

pub(crate) async fn a_connection_without_hello_is_closed_at_the_deadline(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &["--hello-timeout-ms", "300"]).await?;
    let mut welcomed = server.client("Ann").await?;
    let mut silent = server.connect().await?;
    let opened = Instant::now();
    // Pings do not count: only a Hello does.
    let close = silent.wait_closed(WAIT).await?;
    ensure!(
        close.as_ref().map(|c| c.code) == Some(1008),
        "closed with {close:?}"
    );
    ensure!(
        opened.elapsed() >= Duration::from_millis(250),
        "{:?}",
        opened.elapsed()
    );
    // The welcomed one is past the deadline and still served.
    welcomed.ping().await?;
    welcomed.join("r").await?;
    Ok(())
}

pub(crate) async fn refused_hellos_are_capped(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &["--max-failed-hellos", "3"]).await?;
    let _holder = server.client("taken").await?;
    let mut client = server.connect().await?;
    for name in ["", "taken", "\u{3164}"] {
        match client.hello(name).await {
            Err(ClientError::Server { .. }) => {}
            other => anyhow::bail!("expected a refusal for {name:?}, got {other:?}"),
        }
    }
    // The fourth refusal is answered, then the connection is closed.
    let refused = client.hello("taken").await;
    ensure!(
        matches!(
            refused,
            Err(ClientError::Server {
                code: ErrorCode::UsernameTaken,
                ..
            })
        ),
        "{refused:?}"
    );
    let close = client.wait_closed(WAIT).await?;
    ensure!(
        close.as_ref().map(|c| c.code) == Some(1008),
        "closed with {close:?}"
    );
    Ok(())
}

/// Starts Join or Leave of `room` without waiting for the answer.
async fn start_op(client: &mut Client, room: &str, join: bool) -> anyhow::Result<u64> {
    let kind = if join {
        client_frame::Kind::Join(Join {
            room: room.to_owned(),
            ..Default::default()
        })
    } else {
        client_frame::Kind::Leave(Leave {
            room: room.to_owned(),
        })
    };
    Ok(client.start(kind).await?)
}

pub(crate) async fn a_join_leave_flood_is_limited_and_coalesced_for_the_others(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut listener = server.client("Listener").await?;
    listener.join("r").await?;
    let mut flooder = server.client("Flooder").await?;

    // 400 operations as fast as the socket takes them.
    let started = Instant::now();
    let mut refs = Vec::new();
    for i in 0..400 {
        refs.push(start_op(&mut flooder, "r", i % 2 == 0).await?);
    }
    let mut limited = 0;
    for r in refs {
        if error_of(&flooder.wait_reply(r).await?) == Some((ErrorCode::RateLimited, r)) {
            limited += 1;
        }
    }
    ensure!(limited >= 300, "only {limited} of 400 were rate-limited");
    // Back in the room for good, once the bucket allows.
    let joined_at = loop {
        match flooder.join("r").await {
            Ok(_) => break Instant::now(),
            Err(ClientError::Server {
                code: ErrorCode::RateLimited,
                ..
            }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e).context("joining after the flood"),
        }
    };

    // The listener got at most 2 changes a second about the flooder, and
    // the last one says it is in the room.
    let mut changes: Vec<(Instant, presence_change::Kind)> = Vec::new();
    let settled = joined_at + Duration::from_millis(1500);
    loop {
        let wait = settled.saturating_duration_since(Instant::now());
        let Some(frame) = listener
            .next_event_timeout(wait.max(Duration::from_millis(1)))
            .await?
        else {
            break;
        };
        if let Some(Kind::Presence(p)) = frame.kind {
            ensure!(p.username == "Flooder", "{p:?}");
            changes.push((Instant::now(), p.kind()));
        }
        if Instant::now() >= settled {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize + 1;
    ensure!(
        changes.len() <= 2 * seconds,
        "{} changes in {seconds} s: {changes:?}",
        changes.len()
    );
    ensure!(
        changes.last().map(|c| c.1) == Some(presence_change::Kind::Joined),
        "the last change matches the truth: {changes:?}"
    );
    // Still connected and chatting.
    marker(&mut flooder, "r", "done", &mut [&mut listener]).await?;
    Ok(())
}
