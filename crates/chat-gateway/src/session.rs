//! One WebSocket connection: reads client frames, answers them, and writes
//! everything queued for it (replies and room broadcasts) in batches.
//!
//! One task per connection does both directions. Replies are queued on the
//! same bounded queue as broadcasts, so the client sees them in the order the
//! gateway decided (a `Joined` before the messages that follow it).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_bridge::{
    Accepted, BridgeError, Member, NewMessage, Pending, ResumeToken, TokenHash, RESUME_WINDOW,
};
use chat_proto::v1::{
    client_frame, server_frame, Ack, ClientFrame, Error as ErrorFrame, ErrorCode, FetchHistory,
    HistoryPage, Join, Joined, Leave, Left, Pong, Send, ServerFrame, Welcome,
};
use chat_proto::{
    check_client_msg_id, check_text, clamp_page_limit, normalize_room, normalize_username,
    Message as _, MessageId, TextError,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument as _;

use crate::conn::{
    close_code, ConnCommand, ConnHandle, ConnInbox, FULL_BATCH, IDLE_QUEUE_CAPACITY,
};
use crate::ratelimit::TokenBucket;
use crate::state::{now_ms, Shared};
use crate::wire::Frame;

/// Sends a connection may have in flight (submitted, outcome not known yet)
/// before the gateway stops reading its frames until one is answered.
const MAX_IN_FLIGHT: usize = 64;

/// How long a session that ended without saying goodbye (a dropped
/// connection, a page reload, a drain's reconnect) keeps its name and
/// presence, so that the client's next session can take them over with its
/// resume token before anyone sees it leave. Within the contract's "a name
/// is free again within 5 s after its connection closes".
pub const RECONNECT_GRACE: Duration = Duration::from_secs(3);

/// Typing notices a connection may send: a second's worth, then dropped.
const TYPING_PER_SECOND: u32 = 5;
const TYPING_BURST: u32 = 10;

/// Runs a connection to its end. `ws` has completed the handshake.
pub async fn run<S>(ws: WebSocketStream<S>, shared: Arc<Shared>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = shared.next_conn.fetch_add(1, Relaxed);
    let session_id = shared.session_id(id);
    let (conn, inbox) = ConnHandle::new(id, &session_id, shared.config.outbound_queue as usize);
    let open = {
        let mut conns = shared.conns.lock();
        conns.insert(id, conn.clone());
        conns.len()
    };
    shared.bridge.set_load(open as u32, shared.is_draining());
    shared.metrics.connections_open.fetch_add(1, Relaxed);
    shared.metrics.connections_total.fetch_add(1, Relaxed);
    let span = tracing::debug_span!("session", %peer, session = %session_id);
    let mut session = Session {
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
        shared: shared.clone(),
        conn: conn.clone(),
        session_id,
        member: None,
        key: Arc::from(""),
        rooms: HashSet::new(),
        inherited: HashSet::new(),
        inherited_until: None,
        in_flight: VecDeque::new(),
        client_close: None,
    };
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
    let open = {
        let mut conns = shared.conns.lock();
        conns.remove(&id);
        conns.len()
    };
    shared.bridge.set_load(open as u32, shared.is_draining());
    shared.metrics.connections_open.fetch_sub(1, Relaxed);
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

/// Why a Send is not submitted.
enum Refusal {
    /// The raw room name, for the error text.
    NotInRoom(String),
    Invalid(ErrorCode, String),
    /// Out of tokens; the message, to look for an accepted original.
    RateLimited(Box<NewMessage>),
}

/// The outcome of the oldest Send in flight (the queue must not be empty
/// when this is polled).
fn next_outcome(
    in_flight: &mut VecDeque<InFlight>,
) -> impl std::future::Future<Output = chat_bridge::Result<Accepted>> + '_ {
    std::future::poll_fn(move |cx| {
        let oldest = in_flight.front_mut().expect("polled with Sends in flight");
        std::future::Future::poll(std::pin::Pin::new(&mut oldest.outcome), cx)
    })
}

/// Why a connection ended (for the log).
#[derive(Debug)]
#[allow(dead_code)] // fields are read by the Debug log line
enum End {
    ClientClosed,
    ServerClosed(u16),
    Idle,
    Io(WsError),
}

struct Session {
    shared: Arc<Shared>,
    conn: Arc<ConnHandle>,
    session_id: String,
    /// Set by a successful Hello.
    member: Option<Member>,
    /// Normalised username, shared with every room slot.
    key: Arc<str>,
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

/// A submitted Send waiting for its outcome.
struct InFlight {
    r: u64,
    room: String,
    outcome: Pending,
}

impl Session {
    async fn pump<S>(&mut self, mut ws: WebSocketStream<S>, mut rx: ConnInbox) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let idle_timeout = self.shared.config.idle_timeout();
        let mut ping = tokio::time::interval(self.shared.config.ping_interval());
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let mut last_heard = Instant::now();
        let conn = self.conn.clone();
        // Reused between batches (see `IDLE_QUEUE_CAPACITY`).
        let mut batch: Vec<Frame> = Vec::new();

        let end = loop {
            tokio::select! {
                biased;
                code = conn.closed() => break End::ServerClosed(code),
                n = rx.recv_many(&mut batch) => {
                    if let Err(e) = self.write_batch(&mut ws, &mut rx, &mut batch, n).await {
                        break End::Io(e);
                    }
                }
                outcome = next_outcome(&mut self.in_flight), if !self.in_flight.is_empty() => {
                    let sent = self.in_flight.pop_front().expect("an outcome came from it");
                    self.answer(sent, outcome);
                }
                () = conn.command_queued() => {
                    self.settle().await;
                    while let Some(command) = conn.next_command() {
                        self.command(command).await;
                    }
                }
                // At the in-flight limit the client's frames wait in its socket.
                incoming = ws.next(), if self.in_flight.len() < MAX_IN_FLIGHT => {
                    last_heard = Instant::now();
                    match incoming {
                        None => break End::ClientClosed,
                        Some(Ok(Message::Binary(data))) => {
                            self.shared.metrics.frames_in.fetch_add(1, Relaxed);
                            self.handle(data).await;
                        }
                        Some(Ok(Message::Text(_))) => {
                            conn.close(close_code::UNSUPPORTED);
                        }
                        Some(Ok(Message::Close(frame))) => {
                            self.client_close =
                                Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                        }
                        Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. })))
                        | Some(Err(WsError::Capacity(_))) => {
                            conn.close(close_code::TOO_BIG);
                        }
                        Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => break End::ClientClosed,
                        Some(Err(e)) => break End::Io(e),
                    }
                }
                () = until(self.member.is_none().then_some(self.hello_deadline)), if self.member.is_none() => {
                    self.close_for_policy("no Hello in time");
                }
                () = until(self.inherited_until), if self.inherited_until.is_some() => {
                    self.settle().await;
                    self.leave_inherited().await;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle_timeout {
                        break End::Idle;
                    }
                    if let Err(e) = ws.send(Message::Ping(Bytes::new())).await {
                        break End::Io(e);
                    }
                }
            }
        };

        let code = match &end {
            End::ServerClosed(code) => Some(*code),
            End::Idle => Some(close_code::GOING_AWAY),
            _ => None,
        };
        if let Some(code) = code {
            // Answer the Sends in flight first (their messages stand either way).
            let _ = tokio::time::timeout(Duration::from_secs(2), self.settle()).await;
            // Flush what is already queued (an Error KICKED, a Reconnect) first,
            // but never wait long on a client that does not read.
            let reason = self
                .policy_reason
                .filter(|_| code == close_code::POLICY)
                .unwrap_or_else(|| close_reason(code));
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            // A slow consumer's queue is dropped; otherwise what is already
            // queued (an Error KICKED, a Reconnect) goes out before the close,
            // unless tungstenite already answered the client's Close (then
            // nothing may follow).
            let flush_queue = (code != close_code::POLICY || self.policy_reason.is_some())
                && self.client_close.is_none();
            let goodbye = async {
                ws.flush().await?;
                while rx.try_recv_many(&mut batch) > 0 {
                    if flush_queue {
                        crate::wire::write_all(ws.get_mut(), &mut batch).await?;
                    } else {
                        batch.clear();
                    }
                }
                ws.send(Message::Close(Some(frame))).await?;
                // Read until the client's close reply so the close code arrives.
                while let Some(Ok(_)) = ws.next().await {}
                Ok::<_, WsError>(())
            };
            // Never wait long on a client that does not read.
            let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
        }
        end
    }

    /// Writes the `n` frames in `batch` (wire-ready, see `wire`) with as
    /// few system calls as the socket allows. A full batch means more is
    /// coming: the writer yields once (letting the fan-out queue more) and
    /// writes what arrived in the same call, so a busy connection makes
    /// fewer, larger writes.
    async fn write_batch<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        rx: &mut ConnInbox,
        batch: &mut Vec<Frame>,
        n: usize,
    ) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut written = n;
        if n >= FULL_BATCH {
            tokio::task::yield_now().await;
            written += rx.try_recv_many(batch);
        }
        // Whatever tungstenite still holds (a pong) goes first, whole.
        ws.flush().await?;
        if self.client_close.is_some() {
            // That flush sent tungstenite's reply to the client's Close:
            // nothing may follow it (RFC 6455 5.5.1).
            batch.clear();
            return Ok(());
        }
        crate::wire::write_all(ws.get_mut(), batch).await?;
        if batch.capacity() > IDLE_QUEUE_CAPACITY && rx.is_empty() {
            *batch = Vec::new();
        }
        self.shared
            .metrics
            .frames_out
            .fetch_add(written as u64, Relaxed);
        Ok(())
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

    fn unavailable(&self, r#ref: u64, err: &BridgeError) {
        tracing::warn!(error = %err, "bridge request failed");
        self.error(
            r#ref,
            ErrorCode::Unavailable,
            "the chat cluster is unavailable, try again shortly",
        );
    }

    async fn handle(&mut self, data: Bytes) {
        let frame = ClientFrame::decode(data);
        let is_send = matches!(
            &frame,
            Ok(ClientFrame {
                kind: Some(client_frame::Kind::Send(_)),
                ..
            })
        );
        if !is_send {
            // Replies keep the order of requests: the Sends before this
            // request are answered first.
            self.settle().await;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return self.error(0, ErrorCode::BadFrame, format!("undecodable frame: {e}")),
        };
        let r = frame.r#ref;
        let Some(kind) = frame.kind else {
            return self.error(r, ErrorCode::BadFrame, "frame has no known kind");
        };
        if let client_frame::Kind::Hello(hello) = kind {
            return self.hello(r, hello).await;
        }
        if self.member.is_none() {
            return self.error(
                r,
                ErrorCode::NotAuthenticated,
                "the first frame must be Hello",
            );
        }
        let room_op = matches!(
            kind,
            client_frame::Kind::Join(_)
                | client_frame::Kind::Leave(_)
                | client_frame::Kind::FetchHistory(_)
        );
        if room_op && !self.room_ops_bucket.try_take() {
            return self.error(
                r,
                ErrorCode::RateLimited,
                "too many joins, leaves or history requests, slow down",
            );
        }
        match kind {
            client_frame::Kind::Hello(_) => unreachable!("handled above"),
            client_frame::Kind::Join(join) => self.join(r, join).await,
            client_frame::Kind::Leave(leave) => self.leave(r, leave).await,
            client_frame::Kind::Send(send) => self.send(r, send).await,
            client_frame::Kind::Typing(typing) => self.typing(r, typing).await,
            client_frame::Kind::Ping(ping) => self.reply(
                r,
                server_frame::Kind::Pong(Pong {
                    client_time_ms: ping.client_time_ms,
                    server_time_ms: now_ms(),
                }),
            ),
            client_frame::Kind::FetchHistory(fetch) => self.fetch_history(r, fetch).await,
        }
    }

    async fn hello(&mut self, r: u64, hello: chat_proto::v1::Hello) {
        if self.member.is_some() {
            return self.error(
                r,
                ErrorCode::BadFrame,
                "already welcomed: Hello is only allowed once",
            );
        }
        let name = match normalize_username(&hello.username) {
            Ok(name) => name,
            Err(e) => {
                return self.hello_refused(
                    r,
                    ErrorCode::InvalidUsername,
                    format!("invalid username: {e}"),
                )
            }
        };
        let member = Member {
            session_id: self.session_id.clone(),
            key: name.key,
            username: name.display,
        };
        // Never logged: only its hash leaves this function.
        let token = ResumeToken::generate();
        let bridge = &self.shared.bridge;
        let mut resumed = None;
        if !hello.resume_token.is_empty() {
            let presented = TokenHash::of(&hello.resume_token);
            match bridge
                .resume_username(&member, &presented, token.hash())
                .await
            {
                Ok(taken) => resumed = taken,
                Err(e) => return self.unavailable(r, &e),
            }
        }
        if resumed.is_none() {
            match bridge.claim_username(&member, token.hash()).await {
                Ok(true) => {}
                Ok(false) => {
                    return self.hello_refused(
                        r,
                        ErrorCode::UsernameTaken,
                        format!("the name {:?} is taken", member.username),
                    )
                }
                Err(e) => return self.unavailable(r, &e),
            }
        }
        if let Some(resumed) = resumed {
            tracing::debug!(previous = %resumed.previous_session, rooms = resumed.rooms.len(), "took over the earlier session of this client");
            self.shared.metrics.sessions_resumed.fetch_add(1, Relaxed);
            self.inherited = resumed.rooms.into_iter().collect();
            self.inherited_until =
                (!self.inherited.is_empty()).then(|| Instant::now() + RESUME_WINDOW);
        }
        tracing::debug!(username = %member.username, client = %hello.client, "welcomed");
        self.key = Arc::from(member.key.as_str());
        self.conn.set_key(self.key.clone());
        self.reply(
            r,
            server_frame::Kind::Welcome(Welcome {
                session_id: self.session_id.clone(),
                username: member.username.clone(),
                gateway_id: self.shared.gateway_id.clone(),
                server_time_ms: now_ms(),
                limits: Some(self.shared.limits),
                resume_token: token.secret().to_owned(),
            }),
        );
        self.member = Some(member);
    }

    /// Answers a refused Hello; past `--max-failed-hellos` the connection
    /// is closed (1008) after the answer.
    fn hello_refused(&mut self, r: u64, code: ErrorCode, message: String) {
        self.error(r, code, message);
        self.failed_hellos += 1;
        if self.failed_hellos > self.shared.config.max_failed_hellos {
            self.close_for_policy("too many refused Hellos");
        }
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

    /// The joined room a frame names, or None after answering NOT_IN_ROOM.
    /// The NFC name of `raw` if this session is in that room; otherwise
    /// answers `r` with NOT_IN_ROOM.
    fn joined_room(&self, r: u64, raw: &str) -> Option<String> {
        let room = self.joined(raw);
        if room.is_none() {
            self.not_in_room(r, raw);
        }
        room
    }

    /// The NFC name of `raw` if this session is in that room.
    fn joined(&self, raw: &str) -> Option<String> {
        normalize_room(raw)
            .ok()
            .filter(|room| self.rooms.contains(room))
    }

    fn not_in_room(&self, r: u64, raw: &str) {
        self.error(
            r,
            ErrorCode::NotInRoom,
            format!("not in room {:?}", truncate(raw)),
        );
    }

    async fn join(&mut self, r: u64, join: Join) {
        let room = match normalize_room(&join.room) {
            Ok(room) => room,
            Err(e) => return self.error(r, ErrorCode::InvalidRoom, format!("invalid room: {e}")),
        };
        let since = match join.since_id.as_str() {
            "" => None,
            raw => match raw.parse::<MessageId>() {
                Ok(id) => Some(id),
                Err(e) => {
                    return self.error(r, ErrorCode::InvalidArgument, format!("since_id: {e}"))
                }
            },
        };
        let rejoin = self.rooms.contains(&room);
        if !rejoin && self.rooms.len() >= self.shared.limits.max_rooms as usize {
            return self.error(
                r,
                ErrorCode::TooManyRooms,
                format!("at most {} rooms at once", self.shared.limits.max_rooms),
            );
        }
        let bridge = self.shared.bridge.clone();
        let member = self.member().clone();
        if !rejoin {
            if let Err(e) = bridge.subscribe(&room).await {
                return self.unavailable(r, &e);
            }
        }
        self.shared.hub.begin_join(&room, &self.conn, &self.key);
        // Presence and the replay are independent (both come after the
        // subscription, which is what makes the replay gapless): one wait.
        let history = async {
            match since {
                Some(since) => {
                    let replay = bridge.replay_after(&room, since).await?;
                    Ok((replay.messages, replay.truncated))
                }
                None => Ok((
                    bridge
                        .recent(&room, clamp_page_limit(join.history_limit))
                        .await?,
                    false,
                )),
            }
        };
        let result = tokio::try_join!(bridge.enter_room(&room, &member), history)
            .map(|(members, (history, truncated))| (members, history, truncated));
        match result {
            Ok((members, history, history_truncated)) => {
                let last = history.last().and_then(|m| m.id.parse::<MessageId>().ok());
                let replayed_up_to = last.max(since).unwrap_or(MessageId::ZERO);
                let joined = crate::wire::encode(&ServerFrame {
                    r#ref: r,
                    kind: Some(server_frame::Kind::Joined(Joined {
                        room: room.clone(),
                        members,
                        history,
                        history_truncated,
                    })),
                });
                self.shared
                    .hub
                    .finish_join(&room, self.conn.id, Some(joined), replayed_up_to);
                self.inherited.remove(&room);
                self.rooms.insert(room);
            }
            Err(e) => {
                if !rejoin {
                    self.inherited.remove(&room);
                    self.shared.hub.remove(&room, self.conn.id);
                    let _ = bridge.leave_room(&room, &member).await;
                    let _ = bridge.unsubscribe(&room).await;
                } else {
                    // Still a member: go back to live delivery from where it was.
                    self.shared
                        .hub
                        .finish_join(&room, self.conn.id, None, MessageId::ZERO);
                }
                self.unavailable(r, &e);
            }
        }
    }

    async fn leave(&mut self, r: u64, leave: Leave) {
        let Some(room) = self.joined_room(r, &leave.room) else {
            return;
        };
        self.leave_room(&room).await;
        self.reply(r, server_frame::Kind::Left(Left { room }));
    }

    /// Leaves a room locally and in the cluster (best effort on the cluster:
    /// a member that cannot be removed now is removed by presence expiry).
    async fn leave_room(&mut self, room: &str) {
        self.rooms.remove(room);
        self.shared.hub.remove(room, self.conn.id);
        let bridge = &self.shared.bridge;
        if let Err(e) = bridge.leave_room(room, self.member()).await {
            tracing::warn!(error = %e, room, "leaving room in the cluster failed");
        }
        if let Err(e) = bridge.unsubscribe(room).await {
            tracing::warn!(error = %e, room, "unsubscribing failed");
        }
    }

    /// Checks a Send and submits it; its answer comes from the pump once
    /// the bridge decides (see `in_flight`). A refused Send is answered
    /// after the Sends before it.
    async fn send(&mut self, r: u64, send: Send) {
        let message = match self.check_send(send) {
            Ok(message) => message,
            Err(refusal) => {
                self.settle().await;
                return match refusal {
                    Refusal::NotInRoom(raw) => self.not_in_room(r, &raw),
                    Refusal::Invalid(code, message) => self.error(r, code, message),
                    Refusal::RateLimited(message) => self.rate_limited(r, message).await,
                };
            }
        };
        let room = message.room.clone();
        let outcome = self.shared.bridge.submit(message).await;
        self.in_flight.push_back(InFlight { r, room, outcome });
    }

    /// The message a Send asks for, or why it is refused. Takes a token
    /// from the send bucket when it is not refused.
    fn check_send(&mut self, send: Send) -> Result<NewMessage, Refusal> {
        let Some(room) = self.joined(&send.room) else {
            return Err(Refusal::NotInRoom(send.room));
        };
        if !check_client_msg_id(&send.client_msg_id) {
            return Err(Refusal::Invalid(
                ErrorCode::InvalidArgument,
                "client_msg_id is longer than 64 bytes".into(),
            ));
        }
        match check_text(&send.text, self.shared.limits.max_text_bytes as usize) {
            Ok(()) => {}
            Err(e @ TextError::Empty) => {
                return Err(Refusal::Invalid(ErrorCode::EmptyMessage, e.to_string()))
            }
            Err(e @ TextError::TooLarge { .. }) => {
                return Err(Refusal::Invalid(ErrorCode::MessageTooLarge, e.to_string()))
            }
        }
        let member = self.member();
        let message = NewMessage {
            room,
            sender_key: member.key.clone(),
            username: member.username.clone(),
            text: send.text,
            client_msg_id: send.client_msg_id,
            system: false,
        };
        if !self.send_bucket.try_take() {
            return Err(Refusal::RateLimited(Box::new(message)));
        }
        Ok(message)
    }

    /// Out of send tokens. A retry of an accepted message is still answered
    /// with its original Ack.
    async fn rate_limited(&mut self, r: u64, message: Box<NewMessage>) {
        if !message.client_msg_id.is_empty() {
            match self
                .shared
                .bridge
                .find_duplicate(&message.room, &message.sender_key, &message.client_msg_id)
                .await
            {
                Ok(Some(original)) => return self.ack(r, message.room, original),
                Ok(None) => {}
                Err(e) => return self.unavailable(r, &e),
            }
        }
        self.error(r, ErrorCode::RateLimited, "sending too fast, slow down");
    }

    /// Answers a Send whose outcome is known.
    fn answer(&mut self, sent: InFlight, outcome: chat_bridge::Result<Accepted>) {
        match outcome {
            Ok(accepted) => {
                if accepted.duplicate {
                    self.send_bucket.refund();
                }
                self.ack(sent.r, sent.room, accepted);
            }
            Err(e) => {
                self.send_bucket.refund();
                self.unavailable(sent.r, &e);
            }
        }
    }

    /// Waits for every Send in flight and answers them, in order.
    async fn settle(&mut self) {
        while let Some(mut sent) = self.in_flight.pop_front() {
            let outcome = (&mut sent.outcome).await;
            self.answer(sent, outcome);
        }
    }

    fn ack(&self, r: u64, room: String, accepted: Accepted) {
        let counter = if accepted.duplicate {
            &self.shared.metrics.messages_duplicate
        } else {
            &self.shared.metrics.messages_accepted
        };
        counter.fetch_add(1, Relaxed);
        self.reply(
            r,
            server_frame::Kind::Ack(Ack {
                id: accepted.id.to_string(),
                room,
                sent_at_ms: accepted.sent_at_ms,
                duplicate: accepted.duplicate,
            }),
        );
    }

    async fn typing(&mut self, r: u64, typing: chat_proto::v1::Typing) {
        let Some(room) = self.joined_room(r, &typing.room) else {
            return;
        };
        // Ephemeral: a flood is dropped silently rather than fanned out.
        if !self.typing_bucket.try_take() {
            return;
        }
        if let Err(e) = self
            .shared
            .bridge
            .typing(&room, self.member(), typing.active)
            .await
        {
            tracing::debug!(error = %e, "typing notice not delivered");
        }
    }

    async fn fetch_history(&mut self, r: u64, fetch: FetchHistory) {
        let Some(room) = self.joined_room(r, &fetch.room) else {
            return;
        };
        let before = match fetch.before_id.as_str() {
            "" => None,
            raw => match raw.parse::<MessageId>() {
                Ok(id) => Some(id),
                Err(e) => {
                    return self.error(r, ErrorCode::InvalidArgument, format!("before_id: {e}"))
                }
            },
        };
        match self
            .shared
            .bridge
            .history_before(&room, before, clamp_page_limit(fetch.limit))
            .await
        {
            Ok(page) => self.reply(
                r,
                server_frame::Kind::History(HistoryPage {
                    room,
                    messages: page.messages,
                    has_more: page.has_more,
                }),
            ),
            Err(e) => self.unavailable(r, &e),
        }
    }

    /// Carries out a command queued on the connection's handle.
    async fn command(&mut self, command: ConnCommand) {
        match command {
            ConnCommand::LeaveRoom(room) => {
                if !self.rooms.contains(&room) {
                    return;
                }
                tracing::debug!(room, "removed from a room by an operator");
                self.leave_room(&room).await;
                self.reply(0, server_frame::Kind::Left(Left { room }));
            }
        }
    }

    /// Whether the client may come back for this session's name and
    /// presence (see [`RECONNECT_GRACE`]): it did not close normally (1000),
    /// and was not put out (kicked, replaced, or a protocol violation).
    fn may_come_back(&self, end: &End) -> bool {
        if self.member.is_none() {
            return false;
        }
        if self.shared.is_draining() {
            return true; // Told to reconnect.
        }
        match end {
            End::ServerClosed(code) => {
                matches!(*code, close_code::POLICY | close_code::GOING_AWAY)
            }
            End::ClientClosed => self.client_close != Some(close_code::NORMAL),
            End::Idle | End::Io(_) => true,
        }
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

fn close_reason(code: u16) -> &'static str {
    match code {
        close_code::GOING_AWAY => "going away",
        close_code::UNSUPPORTED => "text messages are not supported: send binary protobuf frames",
        close_code::POLICY => "too slow to read messages",
        close_code::TOO_BIG => "message too big",
        close_code::KICKED => "kicked",
        close_code::REPLACED => "replaced by a newer session of this client",
        _ => "",
    }
}

/// Resolves at `deadline` (never when there is none).
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn truncate(raw: &str) -> String {
    raw.chars().take(80).collect()
}
