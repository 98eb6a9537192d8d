//! What can go wrong talking to a gateway.

use std::fmt;
use std::time::Duration;

use chat_proto::v1::{ErrorCode, ServerFrame};
use tokio_tungstenite::tungstenite;

/// The close frame the server sent: its code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code (1000 normal, 4001 kicked, ...).
    pub code: u16,
    /// The reason text, possibly empty.
    pub reason: String,
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.code, self.reason)
    }
}

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a usable `ws://` URL.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection could not be made.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address connected to.
        addr: String,
        /// The I/O error of the connect.
        source: std::io::Error,
    },
    /// The server answered the upgrade with a plain HTTP response (e.g. 503 while draining).
    #[error("websocket upgrade refused with HTTP {status}")]
    Rejected {
        /// The HTTP status of the response.
        status: u16,
    },
    /// A WebSocket-level failure (handshake, I/O, protocol).
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The server sent a binary message that is not a `ServerFrame`.
    #[error("undecodable server frame: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The server answered a request with an `Error` frame.
    #[error("server error {}: {message}", code.as_str_name())]
    Server {
        /// The `Error` frame's code.
        code: ErrorCode,
        /// The `Error` frame's message.
        message: String,
    },
    /// The connection is closed; the close frame when the server sent one.
    #[error("connection closed{}", match .0 { Some(close) => format!(" by the server: {close}"), None => String::new() })]
    Closed(Option<CloseInfo>),
    /// Nothing (or not the awaited reply) arrived in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The reply had another kind than the request calls for.
    #[error("unexpected reply: expected {expected}, got {got:?}")]
    Unexpected {
        /// The kind of reply the request calls for.
        expected: &'static str,
        /// The frame that came instead.
        got: Box<ServerFrame>,
    },
    /// The server sent a WebSocket text message (the protocol is binary only).
    #[error("unexpected text message from the server")]
    TextMessage,
}

impl ClientError {
    /// The protocol error code, when this is a [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The close frame, when this is a [`ClientError::Closed`] with one.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        match self {
            Self::Closed(info) => info.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_readable() {
        let e = ClientError::Server {
            code: ErrorCode::NotInRoom,
            message: "not in room \"x\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "server error ERROR_CODE_NOT_IN_ROOM: not in room \"x\""
        );
        assert_eq!(e.code(), Some(ErrorCode::NotInRoom));
        let closed = ClientError::Closed(Some(CloseInfo {
            code: 1008,
            reason: "slow".into(),
        }));
        assert_eq!(
            closed.to_string(),
            "connection closed by the server: 1008 \"slow\""
        );
        assert_eq!(closed.close_info().map(|c| c.code), Some(1008));
        assert_eq!(ClientError::Closed(None).to_string(), "connection closed");
    }
}
