//! One WebSocket connection's session: its state, how it starts, and how it
//! ends (at once, or after [`RECONNECT_GRACE`] when its client may come back).
//!
//! One task per connection does both directions. Replies are queued on the
//! same bounded queue as broadcasts, so the client sees them in the order the
//! gateway decided (a `Joined` before the messages that follow it). The task's
//! work is split by concern:
//! - `transport.rs`: the select loop, batched writes of queued frames, the
//!   close handshake;
//! - `requests.rs`: the answer to each request (Hello, Join, Leave,
//!   FetchHistory, Typing, Ping) and to operator commands;
//! - `in_flight.rs`: the Send pipeline (submitted Sends answered in order);
//! - `identity.rs`: who the session is (a typed name, or a signed token's
//!   identity), its token's expiry and the rooms the token allows;
//! - `rules.rs`: the decisions themselves, as pure functions.

mod identity;
mod in_flight;
mod requests;
mod rules;
mod transport;

#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_bridge::{BridgeError, Member};
use chat_proto::v1::{server_frame, Error as ErrorFrame, ErrorCode, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument as _;

use crate::conn::{close_code, ConnHandle};
use crate::ratelimit::TokenBucket;
use crate::state::{Registration, Shared};

use self::in_flight::InFlight;
use self::rules::Rejection;

/// How long a session that ended without saying goodbye (a dropped
/// connection, a page reload, a drain's reconnect) keeps its name and
/// presence, so that the client's next session can take them over with its
/// resume token before anyone sees it leave. Within the contract's "a name
/// is free again within 5 s after its connection closes".
pub const RECONNECT_GRACE: Duration = Duration::from_secs(3);

/// Typing notices a connection may send: a second's worth, then dropped.
const TYPING_PER_SECOND: u32 = 5;
const TYPING_BURST: u32 = 10;

/// Runs a connection to its end. `ws` has completed the handshake. The
/// connection is registered (see [`Registration`]) while it is open; a
/// session that may come back lingers after that (see [`RECONNECT_GRACE`]).
pub(crate) async fn run<S>(ws: WebSocketStream<S>, shared: Arc<Shared>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (registration, inbox) = Registration::new(&shared);
    let conn = registration.conn().clone();
    let span = tracing::debug_span!("session", %peer, session = %conn.session_id);
    let mut session = Session::new(shared, conn);
    let linger = async {
        let end = session.pump(ws, inbox).await;
        tracing::debug!(?end, "connection ended");
        if session.may_come_back(&end) {
            session.detach();
            true
        } else {
            session.cleanup().await;
            false
        }
    }
    .instrument(span.clone())
    .await;
    drop(registration);
    if linger {
        // Leaves its rooms and frees its name later, unless a resume took
        // them over meanwhile (then leaving and releasing change nothing).
        tokio::spawn(
            async move {
                tokio::time::sleep(RECONNECT_GRACE).await;
                session.cleanup().await;
            }
            .instrument(span),
        );
    }
}

/// A connection's protocol state, owned by its task.
struct Session {
    shared: Arc<Shared>,
    conn: Arc<ConnHandle>,
    session_id: String,
    /// Set by a successful Hello.
    member: Option<Member>,
    /// The identity key (see [`Session::identity`]): the normalised
    /// username, or the token's `sub`; shared with every room slot.
    key: Arc<str>,
    /// With a signed identity: when its token expires (`exp` plus the
    /// leeway); the session ends then with INVALID_TOKEN and 4003.
    token_expires: Option<Instant>,
    /// With a signed identity whose token has a `rooms` claim: the rooms
    /// it may join.
    room_grant: Option<crate::auth::RoomGrant>,
    /// Rooms joined (NFC names).
    rooms: HashSet<String>,
    /// Rooms whose presence this session took over from the earlier session
    /// of its client (a resume) and has not joined again yet: joined by
    /// `inherited_until`, nobody sees a change; left after it.
    inherited: HashSet<String>,
    inherited_until: Option<Instant>,
    send_bucket: TokenBucket,
    typing_bucket: TokenBucket,
    /// Join, Leave and FetchHistory share this bucket.
    room_ops_bucket: TokenBucket,
    /// Without a Welcome by then, the connection is closed (1008).
    hello_deadline: Instant,
    /// Hellos refused so far (invalid or taken names).
    failed_hellos: u32,
    /// Why the session closed the connection with 1008, when it was not a
    /// slow consumer (the close frame says so, and queued frames still go).
    policy_reason: Option<&'static str>,
    /// Sends submitted to the bridge and not answered yet, oldest first.
    /// Answers go out in this order, and any other request waits until it
    /// is empty, so replies keep the order of the requests.
    in_flight: VecDeque<InFlight>,
    /// The code of the client's close frame, if it sent one.
    client_close: Option<u16>,
}

impl Session {
    fn new(shared: Arc<Shared>, conn: Arc<ConnHandle>) -> Self {
        Self {
            send_bucket: TokenBucket::new(
                shared.limits.messages_per_second,
                shared.limits.message_burst,
            ),
            typing_bucket: TokenBucket::new(TYPING_PER_SECOND, TYPING_BURST),
            room_ops_bucket: TokenBucket::new(
                shared.config.room_ops_per_second,
                shared.limits.max_rooms.saturating_mul(2),
            ),
            hello_deadline: Instant::now() + shared.config.hello_timeout(),
            failed_hellos: 0,
            policy_reason: None,
            session_id: conn.session_id.to_string(),
            shared,
            conn,
            member: None,
            key: Arc::from(""),
            token_expires: None,
            room_grant: None,
            rooms: HashSet::new(),
            inherited: HashSet::new(),
            inherited_until: None,
            in_flight: VecDeque::new(),
            client_close: None,
        }
    }

    fn reply(&self, r#ref: u64, kind: server_frame::Kind) {
        let frame = crate::wire::encode(&ServerFrame {
            r#ref,
            kind: Some(kind),
        });
        self.conn.push(frame, &self.shared.metrics);
    }

    fn error(&self, r#ref: u64, code: ErrorCode, message: impl Into<String>) {
        self.shared.metrics.error(code);
        self.reply(
            r#ref,
            server_frame::Kind::Error(ErrorFrame {
                code: code as i32,
                message: message.into(),
            }),
        );
    }

    /// Answers `r` with the error a rule decided on.
    fn reject(&self, r: u64, rejection: Rejection) {
        self.error(r, rejection.code, rejection.message);
    }

    fn unavailable(&self, r#ref: u64, err: &BridgeError) {
        tracing::warn!(error = %err, "bridge request failed");
        self.error(
            r#ref,
            ErrorCode::Unavailable,
            "the chat cluster is unavailable, try again shortly",
        );
    }

    /// Closes the connection with 1008 for `reason`, after what is queued.
    fn close_for_policy(&mut self, reason: &'static str) {
        if self.conn.close(close_code::POLICY) {
            self.policy_reason = Some(reason);
            tracing::debug!(reason, "closing the connection (1008)");
        }
    }

    fn member(&self) -> &Member {
        self.member.as_ref().expect("checked before dispatch")
    }

    /// Whether the client may come back for this session's name and
    /// presence (see [`RECONNECT_GRACE`] and [`rules::may_come_back`]).
    fn may_come_back(&self, end: &rules::End) -> bool {
        rules::may_come_back(
            self.member.is_some(),
            self.shared.is_draining(),
            end,
            self.client_close,
        )
    }

    /// Takes the ended connection out of its rooms on this gateway, at once;
    /// its presence and name stay in the cluster until [`Session::cleanup`].
    fn detach(&mut self) {
        for room in &self.rooms {
            self.shared.hub.remove(room, self.conn.id);
        }
    }

    /// Leaves the rooms taken over from the earlier session and not joined
    /// again in time: the other members now see this user leave them.
    async fn leave_inherited(&mut self) {
        self.inherited_until = None;
        let bridge = self.shared.bridge.clone();
        for room in std::mem::take(&mut self.inherited) {
            tracing::debug!(room, "not joined again after a resume; leaving it");
            if let Err(e) = bridge.leave_room(&room, self.member()).await {
                tracing::warn!(error = %e, room, "leaving room in the cluster failed");
            }
        }
    }

    /// Leaves every room and frees the name.
    async fn cleanup(&mut self) {
        let Some(member) = self.member.clone() else {
            return;
        };
        self.leave_inherited().await;
        let rooms: Vec<String> = self.rooms.iter().cloned().collect();
        for room in rooms {
            self.leave_room(&room).await;
        }
        if let Err(e) = self.shared.bridge.release_username(&member).await {
            tracing::warn!(error = %e, "releasing the username failed; it expires with presence");
        }
    }
}
