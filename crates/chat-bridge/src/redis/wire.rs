//! Payloads on a room's pub/sub channel. Decoded once per gateway.
//!
//! - `M<id>\n<ChatMessage>`: an accepted message; the protobuf has no id or
//!   time (they come from the stream id, which the script only knows then).
//! - `P<J|L><name key>\n<display name>`: presence change.
//! - `T<1|0><name key>\n<display name>`: typing notice.
//!
//! Names cannot contain `\n` (control characters are refused), so the first
//! newline always ends the key.

use bytes::Bytes;
use chat_proto::v1::ChatMessage;
use chat_proto::{Message as _, MessageId};

use crate::{BridgeEvent, PresenceKind};

/// A decoded room payload.
#[derive(Debug)]
pub enum Payload {
    Message(MessageId, ChatMessage),
    Other(BridgeEvent),
}

/// The body stored in the stream and published (no id, no time).
pub fn encode_message_body(msg: &ChatMessage) -> Vec<u8> {
    msg.encode_to_vec()
}

/// Builds a full message from a stream entry (or a published body).
pub fn message_from_entry(room: &str, id: MessageId, body: &[u8]) -> Option<ChatMessage> {
    let mut msg = ChatMessage::decode(body).ok()?;
    msg.id = id.to_string();
    msg.room = room.to_owned();
    msg.sent_at_ms = id.ms;
    Some(msg)
}

pub fn presence(kind: PresenceKind, key: &str, username: &str) -> String {
    let tag = match kind {
        PresenceKind::Joined => 'J',
        PresenceKind::Left => 'L',
    };
    format!("P{tag}{key}\n{username}")
}

pub fn typing(active: bool, key: &str, username: &str) -> String {
    format!("T{}{key}\n{username}", if active { '1' } else { '0' })
}

/// Decodes a payload received on `room`'s channel.
pub fn decode(room: &str, payload: &Bytes) -> Option<Payload> {
    let (&tag, rest) = payload.split_first()?;
    match tag {
        b'M' => {
            let newline = rest.iter().position(|b| *b == b'\n')?;
            let id: MessageId = std::str::from_utf8(&rest[..newline]).ok()?.parse().ok()?;
            let msg = message_from_entry(room, id, &rest[newline + 1..])?;
            Some(Payload::Message(id, msg))
        }
        b'P' | b'T' => {
            let (&flag, rest) = rest.split_first()?;
            let text = std::str::from_utf8(rest).ok()?;
            let (key, username) = text.split_once('\n')?;
            let (room, key, username) = (room.to_owned(), key.to_owned(), username.to_owned());
            let event = if tag == b'P' {
                let kind = match flag {
                    b'J' => PresenceKind::Joined,
                    b'L' => PresenceKind::Left,
                    _ => return None,
                };
                BridgeEvent::Presence {
                    room,
                    key,
                    username,
                    kind,
                }
            } else {
                BridgeEvent::Typing {
                    room,
                    key,
                    username,
                    active: flag == b'1',
                }
            };
            Some(Payload::Other(event))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let body = encode_message_body(&ChatMessage {
            username: "Ann".into(),
            text: "hi\nthere".into(),
            client_msg_id: "k1".into(),
            ..Default::default()
        });
        let mut payload = b"M1700000000000-3\n".to_vec();
        payload.extend_from_slice(&body);
        let Some(Payload::Message(id, msg)) = decode("lobby", &Bytes::from(payload)) else {
            panic!()
        };
        assert_eq!(id, MessageId::new(1700000000000, 3));
        assert_eq!(msg.id, "1700000000000-3");
        assert_eq!(msg.room, "lobby");
        assert_eq!(msg.sent_at_ms, 1700000000000);
        assert_eq!(msg.text, "hi\nthere");
    }

    #[test]
    fn presence_and_typing_round_trip() {
        let p = Bytes::from(presence(PresenceKind::Left, "ann", "Ann"));
        match decode("r", &p) {
            Some(Payload::Other(BridgeEvent::Presence {
                key,
                username,
                kind,
                ..
            })) => {
                assert_eq!(
                    (key.as_str(), username.as_str(), kind),
                    ("ann", "Ann", PresenceKind::Left)
                );
            }
            other => panic!("{other:?}"),
        }
        let t = Bytes::from(typing(true, "bo", "Bo"));
        assert!(matches!(
            decode("r", &t),
            Some(Payload::Other(BridgeEvent::Typing { active: true, .. }))
        ));
        assert!(decode("r", &Bytes::from_static(b"X")).is_none());
        assert!(decode("r", &Bytes::from_static(b"Mbad\n")).is_none());
    }
}
