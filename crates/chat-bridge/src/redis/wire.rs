//! Payloads on a room's channel. Parsed once per gateway; message bodies are
//! passed on as they are (see [`MessageEvent`]).
//!
//! - `B` then, per accepted message, `<id>\n<length>\n<ChatMessage>`: the
//!   messages one PUBLISH script call accepted, in id order (one payload for
//!   many messages: a pub/sub message costs Redis and every subscriber more
//!   than its bytes do). The protobuf has no id or time: they come from the
//!   stream id, which the script only knows then.
//! - `M<id>\n<ChatMessage>`: one accepted message (the format before `B`;
//!   still understood).
//! - `P<J|L><name key>\n<display name>`: presence change.
//! - `T<1|0><name key>\n<display name>`: typing notice.
//!
//! Names cannot contain `\n` (control characters are refused), so the first
//! newline always ends the key.

use bytes::Bytes;
use chat_proto::v1::ChatMessage;
use chat_proto::{Message as _, MessageId};

use crate::{BridgeEvent, MessageEvent, PresenceKind};

/// A decoded room payload.
#[derive(Debug)]
pub(super) enum Payload {
    /// Accepted messages, in id order, not decoded (see [`MessageEvent`]).
    Messages(Vec<MessageEvent>),
    Other(BridgeEvent),
}

/// The body stored in the stream and published (no id, no time).
pub(super) fn encode_message_body(msg: &ChatMessage) -> Vec<u8> {
    msg.encode_to_vec()
}

/// Builds a full message from a stream entry (or a published body).
pub(super) fn message_from_entry(room: &str, id: MessageId, body: &[u8]) -> Option<ChatMessage> {
    let mut msg = ChatMessage::decode(body).ok()?;
    msg.id = id.to_string();
    msg.room = room.to_owned();
    msg.sent_at_ms = id.ms;
    Some(msg)
}

/// A presence change: [`presence_prefix`], the name key, `\n`, the display name.
pub(super) fn presence(kind: PresenceKind, key: &str, username: &str) -> String {
    format!("{}{key}\n{username}", presence_prefix(kind))
}

/// What every presence payload of `kind` starts with (the REAP_ROOM script
/// builds its `Left` payloads from it).
pub(super) fn presence_prefix(kind: PresenceKind) -> &'static str {
    match kind {
        PresenceKind::Joined => "PJ",
        PresenceKind::Left => "PL",
    }
}

pub(super) fn typing(active: bool, key: &str, username: &str) -> String {
    format!("T{}{key}\n{username}", if active { '1' } else { '0' })
}

/// Decodes a payload received on `room`'s channel.
pub(super) fn decode(room: &str, payload: &Bytes) -> Option<Payload> {
    let (&tag, rest) = payload.split_first()?;
    match tag {
        b'B' => {
            let messages = batch_entries(rest)?
                .into_iter()
                .map(|(id, body)| MessageEvent::from_stored(room, id, body))
                .collect();
            Some(Payload::Messages(messages))
        }
        b'M' => {
            let (id, body) = line(rest)?;
            let id: MessageId = id.parse().ok()?;
            Some(Payload::Messages(vec![MessageEvent::from_stored(
                room, id, body,
            )]))
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

/// A `B` payload's entries (after the `B`): `<id>\n<length>\n<body>`
/// repeated, as the PUBLISH script writes them. `None` if malformed.
fn batch_entries(mut rest: &[u8]) -> Option<Vec<(MessageId, &[u8])>> {
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (id, after) = line(rest)?;
        let id: MessageId = id.parse().ok()?;
        let (len, after) = line(after)?;
        let len: usize = len.parse().ok()?;
        entries.push((id, after.get(..len)?));
        rest = &after[len..];
    }
    Some(entries)
}

/// The `B` payload for these entries: what the PUBLISH script sends, as the
/// reference its tests compare with (gateways only read it).
#[cfg(test)]
pub(super) fn encode_batch(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut payload = b"B".to_vec();
    for (id, body) in entries {
        payload.extend_from_slice(format!("{id}\n{}\n", body.len()).as_bytes());
        payload.extend_from_slice(body);
    }
    payload
}

/// Golden vectors of the pub/sub payloads, checked against this module and,
/// in `golden_tests.rs`, against what the Lua scripts publish.
#[cfg(test)]
pub(crate) mod golden {
    /// Entries of one PUBLISH call (bodies are opaque bytes to the framing:
    /// newlines and multi-byte UTF-8 included) and their `B` payload.
    ///
    /// The ids follow one another in one millisecond, as Redis gives them
    /// to messages appended after [`BATCH_AFTER`] (a time far ahead of the
    /// clock, so that the script's `XADD *` hands out exactly these).
    pub(crate) const BATCH: &[(&str, &[u8])] = &[
        ("4102444800000-1", b"one\n"),
        ("4102444800000-2", b""),
        ("4102444800000-3", "tr\u{ea}s\n3".as_bytes()),
    ];
    /// The stream's newest id before [`BATCH`] is appended.
    pub(crate) const BATCH_AFTER: &str = "4102444800000-0";
    /// What the PUBLISH script publishes for [`BATCH`].
    pub(crate) const BATCH_PAYLOAD: &[u8] =
        b"B4102444800000-1\n4\none\n4102444800000-2\n0\n4102444800000-3\n7\ntr\xc3\xaas\n3";
    /// (name key, display name) and the `Left` presence payload about them.
    pub(crate) const LEFT: (&str, &str, &str) = (
        "ana l\u{fa}cia",
        "Ana L\u{fa}cia",
        "PLana l\u{fa}cia\nAna L\u{fa}cia",
    );
}

/// The UTF-8 text before the first newline, and what follows the newline.
fn line(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    Some((
        std::str::from_utf8(&bytes[..newline]).ok()?,
        &bytes[newline + 1..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(entries: &[(&str, &[u8])]) -> Bytes {
        Bytes::from(encode_batch(entries))
    }

    #[test]
    fn the_golden_payloads_encode_and_decode_here() {
        assert_eq!(encode_batch(golden::BATCH), golden::BATCH_PAYLOAD);
        let entries = batch_entries(&golden::BATCH_PAYLOAD[1..]).unwrap();
        let want: Vec<(MessageId, &[u8])> = golden::BATCH
            .iter()
            .map(|(id, body)| (id.parse().unwrap(), *body))
            .collect();
        assert_eq!(entries, want);
        let (key, display, payload) = golden::LEFT;
        assert_eq!(presence(PresenceKind::Left, key, display), payload);
        assert!(payload.starts_with(presence_prefix(PresenceKind::Left)));
    }

    #[test]
    fn a_batch_of_messages_round_trips_in_order() {
        let bodies: Vec<Vec<u8>> = ["one\n", "", "three\n3\n"]
            .into_iter()
            .map(|text| {
                encode_message_body(&ChatMessage {
                    username: "Ann".into(),
                    text: text.into(),
                    ..Default::default()
                })
            })
            .collect();
        let payload = batch(&[
            ("1700000000000-3", &bodies[0]),
            ("1700000000000-4", &bodies[1]),
            ("1700000000001-0", &bodies[2]),
        ]);
        let Some(Payload::Messages(messages)) = decode("lobby", &payload) else {
            panic!()
        };
        let got: Vec<(String, String, String)> = messages
            .into_iter()
            .map(|event| {
                let m = event.decode().unwrap();
                (event.id.to_string(), m.id, m.text)
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "1700000000000-3".into(),
                    "1700000000000-3".into(),
                    "one\n".into()
                ),
                (
                    "1700000000000-4".into(),
                    "1700000000000-4".into(),
                    String::new()
                ),
                (
                    "1700000000001-0".into(),
                    "1700000000001-0".into(),
                    "three\n3\n".into()
                ),
            ]
        );
        // A truncated or malformed batch is refused as a whole.
        let whole = batch(&[("1-0", &bodies[0])]);
        assert!(decode("r", &whole.slice(..whole.len() - 1)).is_none());
        assert!(decode("r", &Bytes::from_static(b"B1-0\nx\n")).is_none());
        assert!(decode("r", &Bytes::from_static(b"Bbad\n0\n")).is_none());
    }

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
        let Some(Payload::Messages(mut messages)) = decode("lobby", &Bytes::from(payload)) else {
            panic!()
        };
        let event = messages.pop().unwrap();
        assert_eq!(event.id, MessageId::new(1700000000000, 3));
        assert_eq!(event.room, "lobby");
        let msg = event.decode().unwrap();
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
