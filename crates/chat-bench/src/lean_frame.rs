//! A partial view of `chat.v1.ServerFrame` for the receive hot path: only
//! the fields the benchmark reads, decoded without allocating.
//!
//! Protobuf decoders skip unknown fields, so a message type that declares a
//! subset of the real fields (same tags) decodes real frames. The oneof
//! members of `ServerFrame.kind` are plain optional fields on the wire.
//! `text` is `Bytes`, a slice of the received buffer, so a delivery costs no
//! heap allocation here. The tags must match `proto/chat/v1/chat.proto`; the
//! tests below check them against the generated types.

use bytes::Bytes;

/// `ServerFrame`, with the kinds the benchmark reacts to.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeanServerFrame {
    #[prost(uint64, tag = "1")]
    pub r#ref: u64,
    #[prost(message, optional, tag = "5")]
    pub message: Option<LeanChatMessage>,
    #[prost(message, optional, tag = "7")]
    pub ack: Option<LeanAck>,
    #[prost(message, optional, tag = "8")]
    pub error: Option<LeanError>,
    #[prost(message, optional, tag = "12")]
    pub reconnect: Option<LeanReconnect>,
}

/// `ChatMessage.text` only.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeanChatMessage {
    #[prost(bytes = "bytes", tag = "4")]
    pub text: Bytes,
}

/// `Ack.duplicate` only: its presence is what matters.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeanAck {
    #[prost(bool, tag = "4")]
    pub duplicate: bool,
}

/// `Error.code` only.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeanError {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// `Reconnect.after_ms` only.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeanReconnect {
    #[prost(uint32, tag = "2")]
    pub after_ms: u32,
}

#[cfg(test)]
mod tests {
    use chat_client::v1::server_frame::Kind;
    use chat_client::v1::{Ack, ChatMessage, Error, PresenceChange, ServerFrame};
    use prost::Message as _;

    use super::*;

    fn lean(frame: &ServerFrame) -> LeanServerFrame {
        LeanServerFrame::decode(Bytes::from(frame.encode_to_vec())).unwrap()
    }

    #[test]
    fn chat_messages_decode_to_their_text() {
        let message = ChatMessage {
            id: "1-0".into(),
            room: "r".into(),
            username: "u".into(),
            text: "hello".into(),
            sent_at_ms: 5,
            ..Default::default()
        };
        let got = lean(&ServerFrame {
            r#ref: 0,
            kind: Some(Kind::Message(message)),
        });
        assert_eq!(got.message.unwrap().text, Bytes::from_static(b"hello"));
        assert!(got.ack.is_none() && got.error.is_none());
    }

    #[test]
    fn acks_and_errors_keep_their_ref() {
        let ack = Ack {
            id: "1-0".into(),
            room: "r".into(),
            sent_at_ms: 1,
            duplicate: true,
        };
        let got = lean(&ServerFrame {
            r#ref: 77,
            kind: Some(Kind::Ack(ack)),
        });
        assert_eq!(got.r#ref, 77);
        assert!(got.ack.unwrap().duplicate);
        let error = Error {
            code: 8,
            message: "slow down".into(),
        };
        let got = lean(&ServerFrame {
            r#ref: 78,
            kind: Some(Kind::Error(error)),
        });
        assert_eq!((got.r#ref, got.error.unwrap().code), (78, 8));
    }

    #[test]
    fn other_kinds_decode_to_nothing() {
        let got = lean(&ServerFrame {
            r#ref: 0,
            kind: Some(Kind::Presence(PresenceChange::default())),
        });
        assert_eq!(got, LeanServerFrame::default());
    }
}
