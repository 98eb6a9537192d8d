//! What a [`Resuming`](super::Resuming) client reports: its [`Event`]s, and
//! the records they carry (how a reconnect went, why the client stopped).

use chat_proto::v1::{
    Ack, ChatMessage, ErrorCode, Joined, PresenceChange, ServerFrame, TypingNotice, Welcome,
};
use std::time::Duration;

use tokio::time::Instant;

use crate::CloseInfo;

/// What a [`Resuming`](super::Resuming) client reports, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A room was joined: asked for by the caller (`rejoin` false, also when
    /// the connection was lost before the first answer), or joined again
    /// after a reconnect (`rejoin` true; its history replays what was missed).
    Joined {
        /// The server's answer, with the replayed history and the members.
        joined: Joined,
        /// Whether this is a re-join after a reconnect.
        rejoin: bool,
    },
    /// The caller's Leave took effect (at once while disconnected).
    Left {
        /// The room left.
        room: String,
    },
    /// A message pushed in a joined room.
    Message(ChatMessage),
    /// Somebody joined or left a joined room.
    Presence(PresenceChange),
    /// Somebody started or stopped typing in a joined room.
    Typing(TypingNotice),
    /// A Send was acknowledged (`ack.duplicate` when a re-send after a
    /// reconnect found it already accepted).
    Acked {
        /// The idempotency key the Send carried.
        client_msg_id: String,
        /// The server's acknowledgement (the message's id and time).
        ack: Ack,
    },
    /// The server refused a request; the client dropped it.
    Refused {
        /// The request refused.
        request: Request,
        /// The error code of the server's answer.
        code: ErrorCode,
        /// The error message of the server's answer.
        message: String,
    },
    /// The connection was lost; reconnecting.
    Disconnected {
        /// The server's close frame, if it sent one.
        close: Option<CloseInfo>,
        /// What ended the connection, for people.
        reason: String,
    },
    /// Welcomed again and back in every room (their `Joined` events came first).
    Resumed(Resumption),
    /// Stopped for good; nothing follows.
    Ended(EndReason),
    /// Anything else the server sent (Pong, Reconnect, a pushed Error, ...).
    Other(ServerFrame),
}

/// The request a [`Event::Refused`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A Join of `room`.
    Join {
        /// The room asked for.
        room: String,
    },
    /// A Leave of `room`.
    Leave {
        /// The room asked for.
        room: String,
    },
    /// A Send to `room`.
    Send {
        /// The room sent to.
        room: String,
        /// The idempotency key the Send carried.
        client_msg_id: String,
    },
}

/// How a reconnect went.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumption {
    /// The Welcome of the new connection.
    pub welcome: Welcome,
    /// When the previous connection was found lost (or, for a drain, when
    /// the client started over).
    pub lost_at: Instant,
    /// From `lost_at` to the last re-join's `Joined`.
    pub downtime: Duration,
    /// Attempts it took (1: the first one went through).
    pub attempts: u32,
    /// Hellos answered USERNAME_TAKEN on the way: the name was still held
    /// and the token did not take it over.
    pub name_taken: u32,
    /// Whether the Hellos carried a resume token.
    pub with_token: bool,
    /// Rooms joined again.
    pub rooms: usize,
    /// Where the time of the attempt that went through went.
    pub phases: Phases,
}

/// The steps of one reconnect attempt, timed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// TCP connect and WebSocket upgrade.
    pub connect: Duration,
    /// Hello to Welcome.
    pub hello: Duration,
    /// The re-joins, sent together, to the last Joined.
    pub rejoin: Duration,
}

/// Why a [`Resuming`] client stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The caller closed it (or dropped the handle).
    Closed,
    /// A newer session of this client took over (SESSION_REPLACED, 4002).
    Replaced,
    /// An operator removed the session (KICKED, 4001).
    Kicked,
    /// The credentials are not valid (INVALID_TOKEN, 4003).
    InvalidToken,
    /// A Hello was refused for a reason retrying cannot fix.
    Refused {
        /// The error code of the refusal.
        code: ErrorCode,
        /// The error message of the refusal.
        message: String,
    },
}
