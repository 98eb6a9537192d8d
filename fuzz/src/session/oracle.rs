//! The oracles of the `session` target: what each client's reader task
//! records of the frames it receives ([`Seen`]), and the checks every frame
//! must pass (valid ids, in order within a room, only for rooms the
//! connection is in).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chat_proto::v1::{server_frame, ServerFrame};
use chat_proto::MessageId;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::Error as WsError;

use super::MARKER;

/// What one client's reader task saw.
#[derive(Default)]
pub(super) struct Seen {
    /// Username and resume token of its Welcome.
    pub(super) welcome: Option<(String, String)>,
    /// The greatest sync marker answered.
    pub(super) marker: u64,
    /// The stream ended (Close, EOF or an error).
    pub(super) ended: bool,
    /// Rooms this connection is in, with the greatest message id it has
    /// seen in each.
    pub(super) rooms: HashMap<String, Option<MessageId>>,
}

pub(super) struct Shared {
    pub(super) seen: Mutex<Seen>,
    pub(super) changed: Notify,
}

impl Shared {
    /// What the reader saw so far (also after the reader panicked on a
    /// finding: the panic is reported at the end of the input).
    pub(super) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks the stream as ended however the reader stops, a panic included,
/// so that nobody waits for it.
pub(super) struct Ended(pub(super) Arc<Shared>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.seen().ended = true;
        self.0.changed.notify_waiters();
    }
}

/// Errors that only a malformed stream from the server can cause (the
/// others are what a connection that is cut or closed gives).
pub(super) fn is_broken_stream(e: &WsError) -> bool {
    match e {
        WsError::Protocol(p) => !matches!(
            p,
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing
        ),
        WsError::Capacity(_) | WsError::Utf8(_) => true,
        _ => false,
    }
}

fn parse_id(id: &str, name: &str) -> MessageId {
    id.parse()
        .unwrap_or_else(|e| panic!("client {name}: the gateway sent a malformed id: {e}"))
}

pub(super) fn check_server_frame(shared: &Shared, frame: ServerFrame, name: &str) {
    let mut seen = shared.seen();
    let Some(kind) = frame.kind else {
        panic!("client {name}: the gateway sent a frame without a kind");
    };
    match kind {
        server_frame::Kind::Welcome(welcome) => {
            assert!(
                seen.welcome.is_none(),
                "client {name}: a second Welcome on one connection"
            );
            seen.welcome = Some((welcome.username, welcome.resume_token));
        }
        server_frame::Kind::Pong(_) | server_frame::Kind::Error(_)
            if frame.r#ref & !0xffff_ffff == MARKER =>
        {
            let marker = frame.r#ref & 0xffff_ffff;
            seen.marker = seen.marker.max(marker);
        }
        server_frame::Kind::Joined(joined) => {
            let mut last = None;
            for message in &joined.history {
                let id = parse_id(&message.id, name);
                assert!(
                    last < Some(id),
                    "client {name}: Joined {:?} replays ids out of order",
                    joined.room
                );
                last = Some(id);
            }
            seen.rooms.insert(joined.room, last);
        }
        server_frame::Kind::Left(left) => {
            seen.rooms.remove(&left.room);
        }
        server_frame::Kind::Message(message) => {
            let id = parse_id(&message.id, name);
            let Some(last) = seen.rooms.get_mut(&message.room) else {
                panic!(
                    "client {name}: a message of {:?}, a room it is not in",
                    message.room
                );
            };
            assert!(
                *last < Some(id),
                "client {name}: in {:?}, message {id} after {last:?}",
                message.room
            );
            *last = Some(id);
        }
        server_frame::Kind::Presence(presence) => assert!(
            seen.rooms.contains_key(&presence.room),
            "client {name}: presence in {:?}, a room it is not in",
            presence.room
        ),
        server_frame::Kind::Typing(typing) => assert!(
            seen.rooms.contains_key(&typing.room),
            "client {name}: typing in {:?}, a room it is not in",
            typing.room
        ),
        server_frame::Kind::History(page) => {
            let mut last = None;
            for message in &page.messages {
                let id = parse_id(&message.id, name);
                assert!(
                    last < Some(id),
                    "client {name}: a history page out of order"
                );
                last = Some(id);
            }
        }
        server_frame::Kind::Ack(ack) => {
            parse_id(&ack.id, name);
        }
        _ => {}
    }
    drop(seen);
    shared.changed.notify_waiters();
}
