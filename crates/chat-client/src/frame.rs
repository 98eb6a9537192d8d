//! Small pure helpers over frames: decoding a WebSocket message, naming a
//! frame's kind, turning a reply into the payload a request expects.

use chat_proto::v1::{client_frame, server_frame::Kind, ErrorCode, Send, ServerFrame};
use chat_proto::Message as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::{ClientError, CloseInfo};

/// What one WebSocket message means to the client.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(ServerFrame),
    Ping,
    Pong,
    Close(Option<CloseInfo>),
}

/// Classifies (and decodes, once) a WebSocket message from the server.
pub(crate) fn classify(message: Message) -> Result<Incoming, ClientError> {
    match message {
        Message::Binary(data) => Ok(Incoming::Frame(ServerFrame::decode(data)?)),
        Message::Text(_) => Err(ClientError::TextMessage),
        Message::Ping(_) => Ok(Incoming::Ping),
        Message::Pong(_) => Ok(Incoming::Pong),
        Message::Close(frame) => Ok(Incoming::Close(close_info(frame))),
        // Never yielded when reading; treat like a pong (nothing to do).
        Message::Frame(_) => Ok(Incoming::Pong),
    }
}

/// The code and reason of a server's close frame.
pub(crate) fn close_info(frame: Option<CloseFrame>) -> Option<CloseInfo> {
    frame.map(|f| CloseInfo {
        code: u16::from(f.code),
        reason: f.reason.as_str().to_owned(),
    })
}

/// A `Send` request (an empty `client_msg_id` means no dedupe).
pub(crate) fn send_kind(room: &str, text: &str, client_msg_id: &str) -> client_frame::Kind {
    client_frame::Kind::Send(Send {
        room: room.to_owned(),
        text: text.to_owned(),
        client_msg_id: client_msg_id.to_owned(),
    })
}

/// The kind's name, for messages ("Joined", "Error", ...).
pub fn frame_name(frame: &ServerFrame) -> &'static str {
    match &frame.kind {
        None => "(no kind)",
        Some(Kind::Welcome(_)) => "Welcome",
        Some(Kind::Joined(_)) => "Joined",
        Some(Kind::Left(_)) => "Left",
        Some(Kind::Message(_)) => "ChatMessage",
        Some(Kind::Presence(_)) => "PresenceChange",
        Some(Kind::Ack(_)) => "Ack",
        Some(Kind::Error(_)) => "Error",
        Some(Kind::Pong(_)) => "Pong",
        Some(Kind::Typing(_)) => "TypingNotice",
        Some(Kind::History(_)) => "HistoryPage",
        Some(Kind::Reconnect(_)) => "Reconnect",
    }
}

/// Converts a reply into `T` with `pick`, an `Error` frame into
/// [`ClientError::Server`], anything else into [`ClientError::Unexpected`].
pub(crate) fn expect_reply<T>(
    frame: ServerFrame,
    expected: &'static str,
    pick: impl FnOnce(Kind) -> Result<T, Box<Kind>>,
) -> Result<T, ClientError> {
    let r#ref = frame.r#ref;
    match frame.kind {
        Some(Kind::Error(error)) => Err(ClientError::Server {
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
            message: error.message,
        }),
        Some(kind) => pick(kind).map_err(|kind| ClientError::Unexpected {
            expected,
            got: Box::new(ServerFrame {
                r#ref,
                kind: Some(*kind),
            }),
        }),
        None => Err(ClientError::Unexpected {
            expected,
            got: Box::new(ServerFrame { r#ref, kind: None }),
        }),
    }
}

pub use chat_proto::rules::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chat_proto::v1::{Ack, Error as ErrorFrame, Pong};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    fn pick_ack(kind: Kind) -> Result<Ack, Box<Kind>> {
        match kind {
            Kind::Ack(ack) => Ok(ack),
            other => Err(Box::new(other)),
        }
    }

    #[test]
    fn reply_of_the_expected_kind_is_returned() {
        let ack = Ack {
            id: "1-0".into(),
            room: "r".into(),
            sent_at_ms: 1,
            duplicate: false,
        };
        let frame = ServerFrame {
            r#ref: 3,
            kind: Some(Kind::Ack(ack.clone())),
        };
        assert_eq!(expect_reply(frame, "Ack", pick_ack).unwrap(), ack);
    }

    #[test]
    fn error_frame_becomes_a_server_error() {
        let frame = ServerFrame {
            r#ref: 3,
            kind: Some(Kind::Error(ErrorFrame {
                code: ErrorCode::RateLimited as i32,
                message: "slow".into(),
            })),
        };
        match expect_reply(frame, "Ack", pick_ack) {
            Err(ClientError::Server { code, message }) => {
                assert_eq!(code, ErrorCode::RateLimited);
                assert_eq!(message, "slow");
            }
            other => panic!("{other:?}"),
        }
        // An unknown code is still an error, not a panic.
        let frame = ServerFrame {
            r#ref: 3,
            kind: Some(Kind::Error(ErrorFrame {
                code: 999,
                message: String::new(),
            })),
        };
        assert_eq!(
            expect_reply(frame, "Ack", pick_ack).unwrap_err().code(),
            Some(ErrorCode::Unspecified)
        );
    }

    #[test]
    fn other_kind_is_unexpected() {
        let frame = ServerFrame {
            r#ref: 3,
            kind: Some(Kind::Pong(Pong::default())),
        };
        match expect_reply(frame, "Ack", pick_ack) {
            Err(ClientError::Unexpected {
                expected: "Ack",
                got,
            }) => assert_eq!(frame_name(&got), "Pong"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classifies_messages() {
        let frame = ServerFrame {
            r#ref: 9,
            kind: Some(Kind::Pong(Pong::default())),
        };
        let bytes = Bytes::from(frame.encode_to_vec());
        assert!(
            matches!(classify(Message::Binary(bytes)).unwrap(), Incoming::Frame(f) if f == frame)
        );
        assert!(matches!(
            classify(Message::Binary(Bytes::from_static(&[0xff]))),
            Err(ClientError::Decode(_))
        ));
        assert!(matches!(
            classify(Message::Text("hi".into())),
            Err(ClientError::TextMessage)
        ));
        assert!(matches!(
            classify(Message::Ping(Bytes::new())).unwrap(),
            Incoming::Ping
        ));
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "slow".into(),
        }));
        assert!(matches!(
            classify(close).unwrap(),
            Incoming::Close(Some(CloseInfo { code: 1008, ref reason })) if reason == "slow"
        ));
        assert!(matches!(
            classify(Message::Close(None)).unwrap(),
            Incoming::Close(None)
        ));
    }
}
