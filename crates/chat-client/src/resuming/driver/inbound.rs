//! What the driver does with a received frame: replies settle the request
//! they answer, pushes become events and move the rooms' resume points, and
//! a fatal Error ends the client.

use std::time::Duration;

use chat_proto::v1::server_frame::Kind;
use chat_proto::v1::{ErrorCode, Joined, ServerFrame};
use chat_proto::MessageId;
use tokio::time::Instant;

use super::{Awaiting, Driver};
use crate::resuming::{EndReason, Event, Request};

/// Close codes after which a client must not come back (see the protocol).
const CLOSE_KICKED: u16 = 4001;
const CLOSE_REPLACED: u16 = 4002;
const CLOSE_INVALID_TOKEN: u16 = 4003;

impl Driver {
    /// Handles one received frame; `Some` when the client must stop.
    pub(super) fn frame(&mut self, frame: ServerFrame) -> Option<EndReason> {
        if frame.r#ref != 0 {
            match self.refs.remove(&frame.r#ref) {
                Some(awaiting) => self.reply(awaiting, frame),
                None => self.pending.push_back(Event::Other(frame)),
            }
            return None;
        }
        match frame.kind {
            Some(Kind::Message(message)) => {
                if let Some(room) = self.rooms.get_mut(&message.room) {
                    advance(&mut room.since, &message.id);
                }
                self.pending.push_back(Event::Message(message));
            }
            Some(Kind::Presence(presence)) => self.pending.push_back(Event::Presence(presence)),
            Some(Kind::Typing(typing)) => self.pending.push_back(Event::Typing(typing)),
            Some(Kind::Error(ref error)) => {
                if let Some(reason) = fatal_code(error.code) {
                    return Some(reason);
                }
                self.pending.push_back(Event::Other(frame));
            }
            Some(Kind::Reconnect(ref reconnect)) => {
                let after = Duration::from_millis(u64::from(reconnect.after_ms));
                self.reconnect_at = Some(Instant::now() + after);
                self.pending.push_back(Event::Other(frame));
            }
            _ => self.pending.push_back(Event::Other(frame)),
        }
        None
    }

    /// Handles the reply to one of this connection's requests.
    fn reply(&mut self, awaiting: Awaiting, frame: ServerFrame) {
        let refused = |request: Request, error: chat_proto::v1::Error| Event::Refused {
            request,
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
            message: error.message,
        };
        let event = match (awaiting, frame.kind) {
            (Awaiting::Join { .. }, Some(Kind::Joined(joined))) => {
                self.joined(joined, false);
                return;
            }
            (Awaiting::Join { room }, Some(Kind::Error(error))) => {
                if self.rooms.get(&room).is_some_and(|r| !r.joined) {
                    self.rooms.remove(&room);
                }
                refused(Request::Join { room }, error)
            }
            (Awaiting::Leave { room }, Some(Kind::Left(_))) => Event::Left { room },
            (Awaiting::Leave { room }, Some(Kind::Error(error))) => {
                refused(Request::Leave { room }, error)
            }
            (Awaiting::Send { seq }, Some(Kind::Ack(ack))) => match self.outbox.remove(&seq) {
                Some(outgoing) => Event::Acked {
                    client_msg_id: outgoing.client_msg_id,
                    ack,
                },
                None => return,
            },
            (Awaiting::Send { seq }, Some(Kind::Error(error))) => match self.outbox.remove(&seq) {
                Some(outgoing) => refused(
                    Request::Send {
                        room: outgoing.room,
                        client_msg_id: outgoing.client_msg_id,
                    },
                    error,
                ),
                None => return,
            },
            (Awaiting::Ping, Some(Kind::Pong(_))) => return,
            (_, kind) => Event::Other(ServerFrame {
                r#ref: frame.r#ref,
                kind,
            }),
        };
        self.pending.push_back(event);
    }

    /// Records a Joined (its replay moves the resume point) and reports it.
    pub(super) fn joined(&mut self, joined: Joined, rejoin: bool) {
        if let Some(room) = self.rooms.get_mut(&joined.room) {
            match joined.history.last() {
                Some(last) => advance(&mut room.since, &last.id),
                // Nothing was replayed after a since_id: it stays the resume point.
                None if !room.since.is_empty() => {}
                // The newest messages were asked for and there were none: the
                // room was empty, so whatever comes later is new.
                None => room.since = "0-0".into(),
            }
            room.joined = true;
        }
        self.pending.push_back(Event::Joined { joined, rejoin });
    }
}

/// Moves a resume point forward to `id` (ids compare as pairs).
fn advance(since: &mut String, id: &str) {
    let newer = match (since.parse::<MessageId>(), id.parse::<MessageId>()) {
        (Ok(current), Ok(new)) => new > current,
        _ => true,
    };
    if newer {
        since.clear();
        since.push_str(id);
    }
}

/// The end of a client told by a pushed Error's code, if it is one.
pub(super) fn fatal_code(code: i32) -> Option<EndReason> {
    match ErrorCode::try_from(code).ok()? {
        ErrorCode::SessionReplaced => Some(EndReason::Replaced),
        ErrorCode::Kicked => Some(EndReason::Kicked),
        ErrorCode::InvalidToken => Some(EndReason::InvalidToken),
        _ => None,
    }
}

/// The end of a client told by a close code, if it is one.
pub(super) fn fatal_close(code: u16) -> Option<EndReason> {
    match code {
        CLOSE_KICKED => Some(EndReason::Kicked),
        CLOSE_REPLACED => Some(EndReason::Replaced),
        CLOSE_INVALID_TOKEN => Some(EndReason::InvalidToken),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_points_only_move_forward() {
        let mut since = String::new();
        advance(&mut since, "5-1");
        assert_eq!(since, "5-1");
        advance(&mut since, "10-0");
        assert_eq!(since, "10-0");
        advance(&mut since, "9-99");
        assert_eq!(since, "10-0", "ids compare as pairs, not as strings");
    }
}
