//! Carries out operators' commands on this gateway: kicks of local sessions
//! and the drain. They come from the admin API of any gateway in the cluster,
//! through the bridge (`BridgeEvent::Control`) and the hub.

use std::sync::Arc;

use chat_bridge::ControlCommand;
use chat_bridge::DRAIN_REPLY_TIMEOUT;
use chat_proto::v1::{server_frame, Error as ErrorFrame, ErrorCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conn::{close_code, ConnCommand, ConnHandle};
use crate::hub::encode_push;
use crate::state::Shared;

/// Applies commands as they arrive until `stop` is cancelled.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<ControlCommand>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            command = commands.recv() => match command {
                Some(command) => apply(&shared, command),
                None => return,
            },
        }
    }
}

/// Applies one command; never waits (sessions do their part in their own task).
pub(crate) fn apply(shared: &Arc<Shared>, command: ControlCommand) {
    match command {
        ControlCommand::Kick { key, room, reason } => {
            let kicked = kick(shared, &key, room.as_deref(), &reason);
            tracing::info!(user = %key, room = room.as_deref().unwrap_or(""), sessions = kicked, "kicked by an operator");
        }
        ControlCommand::Drain { reply_to } => {
            tracing::info!("drain requested by an operator");
            shared.drain.cancel();
            if let Some(reply_to) = reply_to {
                tokio::spawn(answer_drain(shared.clone(), reply_to));
            }
        }
        ControlCommand::Replace { key, session_id } => replace(shared, &key, &session_id),
    }
}

/// Tells whoever asked for the drain how many connections it told to
/// reconnect, once it has (a second drain request gets the same number).
async fn answer_drain(shared: Arc<Shared>, reply_to: String) {
    let mut told = shared.drain_told.subscribe();
    let counted = tokio::time::timeout(DRAIN_REPLY_TIMEOUT, async {
        told.wait_for(Option::is_some)
            .await
            .map(|told| told.unwrap_or_default())
    })
    .await;
    let Ok(Ok(told)) = counted else {
        tracing::warn!("the drain did not start in time to answer the request");
        return;
    };
    shared.bridge.drained(&reply_to, told).await;
}

/// A newer session of the same client took the name over: the local session
/// `session_id`, if here, gets `Error SESSION_REPLACED` and is closed with 4002.
fn replace(shared: &Shared, key: &str, session_id: &str) {
    let Some(conn) = shared.local_conn(session_id) else {
        return;
    };
    tracing::info!(user = %key, session = %session_id, "session replaced by a newer one of the same client");
    shared.metrics.error(ErrorCode::SessionReplaced);
    let frame = encode_push(server_frame::Kind::Error(ErrorFrame {
        code: ErrorCode::SessionReplaced as i32,
        message: "this chat continued in another tab or window".to_owned(),
    }));
    conn.push(frame, &shared.metrics);
    conn.close(close_code::REPLACED);
}

/// Without `room`: `Error KICKED` then close 4001 (the queued error goes out
/// before the close frame; the session's cleanup tells the rooms `Left`).
/// With `room`: the session leaves the room itself and pushes `Left`.
/// Returns the number of local sessions reached.
fn kick(shared: &Shared, key: &str, room: Option<&str>, reason: &str) -> usize {
    let targets: Vec<Arc<ConnHandle>> = shared
        .conns
        .lock()
        .values()
        .filter(|conn| conn.key() == Some(key))
        .cloned()
        .collect();
    for conn in &targets {
        match room {
            Some(room) => {
                if !conn.command(ConnCommand::LeaveRoom(room.to_owned())) {
                    tracing::warn!(conn = conn.id, room, "could not queue a kick out of a room");
                }
            }
            None => {
                let message = if reason.is_empty() {
                    "kicked by an operator".to_owned()
                } else {
                    reason.to_owned()
                };
                shared.metrics.error(ErrorCode::Kicked);
                let frame = encode_push(server_frame::Kind::Error(ErrorFrame {
                    code: ErrorCode::Kicked as i32,
                    message,
                }));
                conn.push(frame, &shared.metrics);
                conn.close(close_code::KICKED);
            }
        }
    }
    targets.len()
}
