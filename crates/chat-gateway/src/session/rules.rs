//! The protocol decisions of a session as pure functions: what a request
//! asks for, whether it is allowed, and how a connection ends. No socket, no
//! bridge, no clock: the request handlers (`requests.rs`, `in_flight.rs`)
//! and the transport (`transport.rs`) call them and carry out the answer.

use std::collections::HashSet;

use bytes::Bytes;
use chat_proto::v1::{
    client_frame, ChatMessage, ClientFrame, ErrorCode, FetchHistory, Hello, Join, Ping, Pong, Send,
};
use chat_proto::{
    check_client_msg_id, check_text, clamp_page_limit, normalize_room, normalize_username,
    Message as _, MessageId, TextError, Username,
};

use crate::conn::close_code;

/// A request refused with an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejection {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

impl Rejection {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A decoded client frame of a known kind.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Request {
    /// The client's `ref`, echoed in the answer.
    pub(super) r: u64,
    pub(super) kind: client_frame::Kind,
}

impl Request {
    /// Whether this is a Send: the one request that does not wait for the
    /// Sends in flight before it (their answers keep the order anyway).
    pub(super) fn is_send(&self) -> bool {
        matches!(self.kind, client_frame::Kind::Send(_))
    }
}

/// Decodes a binary frame from the client, or the BAD_FRAME answer and the
/// `ref` it goes out under (0 when the frame could not be decoded at all).
pub(super) fn read_request(data: Bytes) -> Result<Request, (u64, Rejection)> {
    let frame = ClientFrame::decode(data).map_err(|e| {
        let message = format!("undecodable frame: {e}");
        (0, Rejection::new(ErrorCode::BadFrame, message))
    })?;
    let r = frame.r#ref;
    match frame.kind {
        Some(kind) => Ok(Request { r, kind }),
        None => Err((
            r,
            Rejection::new(ErrorCode::BadFrame, "frame has no known kind"),
        )),
    }
}

/// How a decoded frame of a known kind is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Admission {
    /// A Hello (allowed at any time; its handler refuses a second one).
    Hello,
    /// Join, Leave or FetchHistory: handled if the room-operation bucket has a token.
    RoomOp,
    /// Any other request of a welcomed session.
    Other,
    /// Refused before its handler.
    Refused(Rejection),
}

/// Which rules apply to a frame of `kind` before its handler runs.
pub(super) fn admit(kind: &client_frame::Kind, welcomed: bool) -> Admission {
    use client_frame::Kind;
    match kind {
        Kind::Hello(_) => Admission::Hello,
        _ if !welcomed => Admission::Refused(Rejection::new(
            ErrorCode::NotAuthenticated,
            "the first frame must be Hello",
        )),
        Kind::Join(_) | Kind::Leave(_) | Kind::FetchHistory(_) => Admission::RoomOp,
        Kind::Send(_) | Kind::Typing(_) | Kind::Ping(_) => Admission::Other,
    }
}

/// The answer to a room operation past the room-operation bucket.
pub(super) fn room_ops_limited() -> Rejection {
    Rejection::new(
        ErrorCode::RateLimited,
        "too many joins, leaves or history requests, slow down",
    )
}

/// The answer to a Send past the send bucket (and not a retry of an
/// accepted message).
pub(super) fn sending_too_fast() -> Rejection {
    Rejection::new(ErrorCode::RateLimited, "sending too fast, slow down")
}

/// Why a Hello is refused before the cluster is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HelloRefusal {
    /// The session was welcomed already: answered, and not counted as a
    /// refused Hello.
    Again(Rejection),
    /// An invalid name: a refused Hello (see [`too_many_refused_hellos`]).
    Invalid(Rejection),
}

/// Checks a Hello: the session's first, with a valid name (returned
/// normalised). Whether the name is free is the cluster's to say.
pub(super) fn check_hello(hello: &Hello, welcomed: bool) -> Result<Username, HelloRefusal> {
    if welcomed {
        return Err(HelloRefusal::Again(hello_again()));
    }
    normalize_username(&hello.username).map_err(|e| {
        let message = format!("invalid username: {e}");
        HelloRefusal::Invalid(Rejection::new(ErrorCode::InvalidUsername, message))
    })
}

/// The answer to a second Hello (not counted as a refused Hello).
pub(super) fn hello_again() -> Rejection {
    Rejection::new(
        ErrorCode::BadFrame,
        "already welcomed: Hello is only allowed once",
    )
}

/// The answer to a Join of a room the session's token does not list.
pub(super) fn room_not_allowed(room: &str) -> Rejection {
    Rejection::new(
        ErrorCode::InvalidRoom,
        format!("room {:?} is not allowed for this identity", truncate(room)),
    )
}

/// The answer to a Hello whose name another session holds (a refused Hello).
pub(super) fn name_taken(display: &str) -> Rejection {
    Rejection::new(
        ErrorCode::UsernameTaken,
        format!("the name {display:?} is taken"),
    )
}

/// The answer to a Ping at `server_time_ms`.
pub(super) fn pong(ping: &Ping, server_time_ms: u64) -> Pong {
    Pong {
        client_time_ms: ping.client_time_ms,
        server_time_ms,
    }
}

/// A message id a client sent in `field` (`since_id`, `before_id`); empty
/// means none.
pub(super) fn parse_message_id(field: &str, raw: &str) -> Result<Option<MessageId>, Rejection> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<MessageId>()
        .map(Some)
        .map_err(|e| Rejection::new(ErrorCode::InvalidArgument, format!("{field}: {e}")))
}

/// The NFC name of `raw` if the session is in that room (`rooms` holds NFC
/// names), or the NOT_IN_ROOM answer.
pub(super) fn joined(rooms: &HashSet<String>, raw: &str) -> Result<String, Rejection> {
    normalize_room(raw)
        .ok()
        .filter(|room| rooms.contains(room))
        .ok_or_else(|| not_in_room(raw))
}

/// The NOT_IN_ROOM answer about the room name a client sent.
pub(super) fn not_in_room(raw: &str) -> Rejection {
    Rejection::new(
        ErrorCode::NotInRoom,
        format!("not in room {:?}", truncate(raw)),
    )
}

/// What a Join asks for, once it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JoinPlan {
    /// The NFC room name.
    pub(super) room: String,
    /// Replay what came after this id instead of the recent history.
    pub(super) since: Option<MessageId>,
    /// The session is in the room already: no new subscription, and a
    /// failure leaves it a member.
    pub(super) rejoin: bool,
    /// Messages of recent history when there is no `since`.
    pub(super) history_limit: usize,
}

/// Checks a Join against the rooms the session is in: a valid room name, a
/// valid `since_id`, and at most `max_rooms` rooms (a re-join is always allowed).
pub(super) fn plan_join(
    join: &Join,
    rooms: &HashSet<String>,
    max_rooms: u32,
) -> Result<JoinPlan, Rejection> {
    let room = normalize_room(&join.room)
        .map_err(|e| Rejection::new(ErrorCode::InvalidRoom, format!("invalid room: {e}")))?;
    let since = parse_message_id("since_id", &join.since_id)?;
    let rejoin = rooms.contains(&room);
    if !rejoin && rooms.len() >= max_rooms as usize {
        return Err(Rejection::new(
            ErrorCode::TooManyRooms,
            format!("at most {max_rooms} rooms at once"),
        ));
    }
    Ok(JoinPlan {
        room,
        since,
        rejoin,
        history_limit: clamp_page_limit(join.history_limit),
    })
}

/// The newest id the client has once it gets a Joined with `history`: the
/// last replayed id or its `since_id`, whichever is larger. Live messages up
/// to it are not sent again.
pub(super) fn client_has(history: &[ChatMessage], since: Option<MessageId>) -> MessageId {
    let last = history.last().and_then(|m| m.id.parse::<MessageId>().ok());
    last.max(since).unwrap_or(MessageId::ZERO)
}

/// What a FetchHistory asks for: the room (NFC), messages before which id,
/// and how many.
pub(super) fn plan_history(
    fetch: &FetchHistory,
    rooms: &HashSet<String>,
) -> Result<(String, Option<MessageId>, usize), Rejection> {
    let room = joined(rooms, &fetch.room)?;
    let before = parse_message_id("before_id", &fetch.before_id)?;
    Ok((room, before, clamp_page_limit(fetch.limit)))
}

/// Checks a Send against the rooms the session is in and the limits: it
/// names a joined room (returned, NFC), and its key and text are valid.
/// (The send bucket is the caller's: a refused Send takes no token.)
pub(super) fn check_send(
    send: &Send,
    rooms: &HashSet<String>,
    max_text_bytes: usize,
) -> Result<String, Rejection> {
    let room = joined(rooms, &send.room)?;
    if !check_client_msg_id(&send.client_msg_id) {
        return Err(Rejection::new(
            ErrorCode::InvalidArgument,
            "client_msg_id is longer than 64 bytes",
        ));
    }
    match check_text(&send.text, max_text_bytes) {
        Ok(()) => Ok(room),
        Err(e @ TextError::Empty) => Err(Rejection::new(ErrorCode::EmptyMessage, e.to_string())),
        Err(e @ TextError::TooLarge { .. }) => {
            Err(Rejection::new(ErrorCode::MessageTooLarge, e.to_string()))
        }
    }
}

/// Whether a refused Hello, the `failed`-th, closes the connection.
pub(super) fn too_many_refused_hellos(failed: u32, max_failed_hellos: u32) -> bool {
    failed > max_failed_hellos
}

/// Why a connection ended (for the log, and for what happens next).
#[derive(Debug)]
#[allow(dead_code, reason = "the fields are read by the Debug log line")]
pub(super) enum End {
    /// The client closed it, or its socket ended.
    ClientClosed,
    /// The gateway asked it to close with this code.
    ServerClosed(u16),
    /// Nothing heard for `--idle-timeout`.
    Idle,
    /// A read or write failed.
    Io(tokio_tungstenite::tungstenite::Error),
}

/// The close frame the gateway sends when a connection ends this way
/// (none when the client ended it or the socket failed).
pub(super) fn close_code(end: &End) -> Option<u16> {
    match end {
        End::ServerClosed(code) => Some(*code),
        End::Idle => Some(close_code::GOING_AWAY),
        End::ClientClosed | End::Io(_) => None,
    }
}

/// The reason text of a close frame with `code`. A 1008 says why the
/// session closed it (`policy`) when it was not a slow consumer.
pub(super) fn close_reason(code: u16, policy: Option<&'static str>) -> &'static str {
    if let Some(reason) = policy.filter(|_| code == close_code::POLICY) {
        return reason;
    }
    match code {
        close_code::GOING_AWAY => "going away",
        close_code::UNSUPPORTED => "text messages are not supported: send binary protobuf frames",
        close_code::POLICY => "too slow to read messages",
        close_code::TOO_BIG => "message too big",
        close_code::KICKED => "kicked",
        close_code::REPLACED => "replaced by a newer session of this client",
        close_code::INVALID_TOKEN => "token invalid or expired",
        _ => "",
    }
}

/// Whether what is queued (an Error KICKED, a Reconnect) goes out before the
/// close frame: not for a slow consumer (its queue is dropped), and not
/// after the client's Close was answered (nothing may follow that).
pub(super) fn flush_before_close(
    code: u16,
    policy: Option<&'static str>,
    client_close: Option<u16>,
) -> bool {
    (code != close_code::POLICY || policy.is_some()) && client_close.is_none()
}

/// Whether the client may come back for an ended session's name and
/// presence (see [`super::RECONNECT_GRACE`]): it was welcomed, and it did not
/// close normally (1000) nor was put out (kicked, replaced, or a protocol
/// violation). During a drain it was told to reconnect, so it may; so may a
/// session whose token expired (4003 after a Welcome), with a fresh token.
pub(super) fn may_come_back(
    welcomed: bool,
    draining: bool,
    end: &End,
    client_close: Option<u16>,
) -> bool {
    if !welcomed {
        return false;
    }
    if draining {
        return true;
    }
    match end {
        End::ServerClosed(code) => matches!(
            *code,
            close_code::POLICY | close_code::GOING_AWAY | close_code::INVALID_TOKEN
        ),
        End::ClientClosed => client_close != Some(close_code::NORMAL),
        End::Idle | End::Io(_) => true,
    }
}

/// A client's text, shortened for an error message.
fn truncate(raw: &str) -> String {
    raw.chars().take(80).collect()
}

#[cfg(test)]
mod tests;
