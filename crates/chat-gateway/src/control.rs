//! Carries out operators' commands on this gateway: kicks of local sessions
//! and the drain. They come from the admin API of any gateway in the cluster,
//! through the bridge (`BridgeEvent::Control`) and the hub.

use std::sync::Arc;

use chat_bridge::ControlCommand;
use chat_proto::v1::{server_frame, Error as ErrorFrame, ErrorCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conn::{close_code, ConnCommand, ConnHandle};
use crate::hub::encode_push;
use crate::state::Shared;

/// Applies commands as they arrive until `stop` is cancelled.
pub async fn run(
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
pub fn apply(shared: &Shared, command: ControlCommand) {
    match command {
        ControlCommand::Kick { key, room, reason } => {
            let kicked = kick(shared, &key, room.as_deref(), &reason);
            tracing::info!(user = %key, room = room.as_deref().unwrap_or(""), sessions = kicked, "kicked by an operator");
        }
        ControlCommand::Drain => {
            tracing::info!("drain requested by an operator");
            shared.drain.cancel();
        }
    }
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
