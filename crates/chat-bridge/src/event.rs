//! Events a bridge delivers to its gateway, and the sink that receives them.

use bytes::Bytes;
use chat_proto::v1::ChatMessage;
use chat_proto::{Message as _, MessageId};

/// Receives the events of subscribed rooms, and operator commands for this
/// gateway. Called from the bridge's own context (the publisher's task for
/// the memory backend, the subscriber task for Redis), one room's events in
/// order; it must not block or await.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event (delivered once, in its room's order).
    fn deliver(&self, event: BridgeEvent);
}

/// Whether a name entered or left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    /// The name's first session entered the room.
    Joined,
    /// The name's last session left the room (or its gateway died).
    Left,
}

/// One event of a room, in the room's delivery order.
#[derive(Debug, Clone)]
pub enum BridgeEvent {
    /// An accepted message, already stored.
    Message(MessageEvent),
    /// A name's first entry into, or last exit from, a room.
    Presence {
        /// The room.
        room: String,
        /// The name's key (normalised name).
        key: String,
        /// The name as shown.
        username: String,
        /// Entered or left.
        kind: PresenceKind,
    },
    /// Someone is (or stopped) typing.
    Typing {
        /// The room.
        room: String,
        /// The typist's name key (the typist is not told).
        key: String,
        /// The typist's name as shown.
        username: String,
        /// Typing now (`false`: stopped).
        active: bool,
    },
    /// An operator's command for this gateway (not tied to a subscription).
    Control(ControlCommand),
    /// A command on the control path was dropped (unsigned, badly signed,
    /// stale or replayed): for the gateway's metrics.
    ControlRejected(crate::ControlRejection),
}

/// An accepted message as the gateways receive it: its room, its id
/// (parsed once, by the bridge) and the `ChatMessage`, already encoded, so
/// that a gateway frames the bytes for its connections without decoding
/// and encoding the message again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The room it was accepted in.
    pub room: String,
    /// Its id (the same as inside `encoded`).
    pub id: MessageId,
    /// The complete `ChatMessage`, protobuf-encoded (`id`, `room` and
    /// `sent_at_ms` included).
    pub encoded: Bytes,
}

impl MessageEvent {
    /// The event for a message at hand (encodes it).
    pub fn new(id: MessageId, message: &ChatMessage) -> Self {
        Self {
            room: message.room.clone(),
            id,
            encoded: Bytes::from(message.encode_to_vec()),
        }
    }

    /// The event for a stored body (a `ChatMessage` without id, room and
    /// time, as the Redis backend keeps and publishes it), without decoding
    /// it: the missing fields are appended, and a protobuf decoder merges
    /// them in, so the bytes decode to the message that decoding the body,
    /// setting the fields and encoding it again would give.
    pub(crate) fn from_stored(room: &str, id: MessageId, body: &[u8]) -> Self {
        let fields = ChatMessage {
            id: id.to_string(),
            room: room.to_owned(),
            sent_at_ms: id.ms,
            ..Default::default()
        };
        let mut encoded = Vec::with_capacity(body.len() + fields.encoded_len());
        encoded.extend_from_slice(body);
        fields
            .encode(&mut encoded)
            .expect("the buffer was sized for the fields");
        Self {
            room: room.to_owned(),
            id,
            encoded: Bytes::from(encoded),
        }
    }

    /// The message, decoded (`None` if `encoded` is not a `ChatMessage`).
    pub fn decode(&self) -> Option<ChatMessage> {
        ChatMessage::decode(&self.encoded[..]).ok()
    }
}

/// What an operator asked the gateways to do, through the admin API of any
/// gateway of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// Every local session holding the name `key`: without `room`, gets
    /// `Error KICKED` (with `reason`) and is closed; with `room`, leaves
    /// that room and stays connected.
    Kick {
        /// The name's key.
        key: String,
        /// The one room to leave, or `None` for the whole chat.
        room: Option<String>,
        /// Shown to the kicked user.
        reason: String,
    },
    /// Drain this gateway, exactly as on SIGTERM. With `reply_to`, the
    /// gateway answers [`ClusterAdmin::drained`](crate::ClusterAdmin::drained) with the
    /// number of connections it told to reconnect.
    Drain {
        /// The request id to answer, when someone waits for the answer.
        reply_to: Option<String>,
    },
    /// A newer session of the same client took over the name `key` with a
    /// resume token: the local session `session_id`, if any, gets
    /// `Error SESSION_REPLACED` and is closed with 4002.
    Replace {
        /// The name's key.
        key: String,
        /// The replaced session.
        session_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_body_completed_without_decoding_is_the_whole_message() {
        let id = MessageId::new(1_732_712_345_678, 7);
        let whole = ChatMessage {
            id: id.to_string(),
            room: "lobby".into(),
            username: "Ann".into(),
            text: "hi\nthere".into(),
            sent_at_ms: id.ms,
            client_msg_id: "k1".into(),
            system: false,
        };
        let body = ChatMessage {
            id: String::new(),
            room: String::new(),
            sent_at_ms: 0,
            ..whole.clone()
        }
        .encode_to_vec();
        let stored = MessageEvent::from_stored("lobby", id, &body);
        assert_eq!((stored.room.as_str(), stored.id), ("lobby", id));
        assert_eq!(stored.decode(), Some(whole.clone()));
        let at_hand = MessageEvent::new(id, &whole);
        assert_eq!(at_hand.encoded, whole.encode_to_vec());
        assert_eq!(at_hand.decode(), stored.decode());
    }
}
