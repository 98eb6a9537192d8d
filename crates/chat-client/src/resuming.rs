//! [`Resuming`]: a client that outlives its connections. After a loss it
//! reconnects at once, takes its name back with its resume token, re-joins
//! every room from the last message it saw there and re-sends what was not
//! acknowledged; it stops for good only when told to, or when the server
//! says another session took over (SESSION_REPLACED, 4002), kicked it (4001)
//! or refused its credentials (4003).
//!
//! One task (the driver) owns the connection; the [`Resuming`] handle talks
//! to it through two bounded queues: commands in, [`Event`]s out. The driver
//! keeps taking commands while an event waits for room in the queue, so a
//! caller that sends without reading never deadlocks with it; it stops
//! reading the socket instead (the server then applies its own limits).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chat_proto::v1::server_frame::Kind;
use chat_proto::v1::{
    client_frame, Ack, ChatMessage, ErrorCode, Join, Joined, Leave, Ping, PresenceChange,
    ServerFrame, TypingNotice, Welcome,
};
use chat_proto::MessageId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::backoff::{random_unit, Backoff};
use crate::frame::{now_ms, send_kind};
use crate::{Client, ClientError, CloseInfo};

/// Close codes after which a client must not come back (see the protocol).
const CLOSE_KICKED: u16 = 4001;
const CLOSE_REPLACED: u16 = 4002;
const CLOSE_INVALID_TOKEN: u16 = 4003;

/// Where and as whom a [`Resuming`] client connects, and how it retries.
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    /// `ws://host:port/ws`, usually a load balancer's.
    pub url: String,
    pub username: String,
    /// The resume token of an earlier session of this client (empty: none),
    /// e.g. to take over a session from another process.
    pub resume_token: String,
    /// Local address to connect from (any port).
    pub local_addr: Option<IpAddr>,
    pub ws_config: WebSocketConfig,
    pub backoff: Backoff,
    /// Bound on one attempt: connect, Hello and every re-join.
    pub attempt_timeout: Duration,
    /// After this long without a frame the client pings; after twice this
    /// long the connection counts as lost.
    pub keepalive: Duration,
    /// Events kept for the caller before the driver stops reading the socket.
    pub event_queue: usize,
    /// Sends not yet acknowledged at most; further commands wait.
    pub max_unacked: usize,
}

impl ResumeConfig {
    /// Defaults: no token, no local address, [`Backoff::default`], 10 s per
    /// attempt, 20 s keepalive, 1024 events, 256 unacknowledged sends.
    pub fn new(url: impl Into<String>, username: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: username.into(),
            resume_token: String::new(),
            local_addr: None,
            ws_config: WebSocketConfig::default(),
            backoff: Backoff::default(),
            attempt_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            event_queue: 1024,
            max_unacked: 256,
        }
    }
}

/// What a [`Resuming`] client reports, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A room was joined: asked for by the caller (`rejoin` false, also when
    /// the connection was lost before the first answer), or joined again
    /// after a reconnect (`rejoin` true; its history replays what was missed).
    Joined {
        joined: Joined,
        rejoin: bool,
    },
    /// The caller's Leave took effect (at once while disconnected).
    Left {
        room: String,
    },
    /// A message pushed in a joined room.
    Message(ChatMessage),
    Presence(PresenceChange),
    Typing(TypingNotice),
    /// A Send was acknowledged (`ack.duplicate` when a re-send after a
    /// reconnect found it already accepted).
    Acked {
        client_msg_id: String,
        ack: Ack,
    },
    /// The server refused a request; the client dropped it.
    Refused {
        request: Request,
        code: ErrorCode,
        message: String,
    },
    /// The connection was lost; reconnecting.
    Disconnected {
        close: Option<CloseInfo>,
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
    Join { room: String },
    Leave { room: String },
    Send { room: String, client_msg_id: String },
}

/// How a reconnect went.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumption {
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
    Refused { code: ErrorCode, message: String },
}

/// A client that reconnects and resumes by itself; see the module docs.
/// Requests go through its [`ResumingHandle`] ([`Resuming::handle`]), which
/// can be cloned into other tasks; events are taken from the `Resuming`.
#[derive(Debug)]
pub struct Resuming {
    handle: ResumingHandle,
    events: mpsc::Receiver<Event>,
    driver: JoinHandle<()>,
    welcome: Welcome,
}

/// The request side of a [`Resuming`] client: cheap to clone. Every
/// request returns once queued; its outcome arrives as an [`Event`].
/// `ClientError::Closed` once the client has ended.
#[derive(Debug, Clone)]
pub struct ResumingHandle {
    commands: mpsc::Sender<Command>,
    /// Prefix of generated `client_msg_id`s (unique to this client) and the counter after it.
    ids: Arc<(String, AtomicU64)>,
}

impl Resuming {
    /// Connects and says Hello (with `config.resume_token` when set). An
    /// error here is returned as is, without retrying: a client that never
    /// got in has nothing to resume.
    pub async fn connect(config: ResumeConfig) -> Result<Self, ClientError> {
        let mut client =
            Client::connect_with_config(&config.url, config.local_addr, config.ws_config).await?;
        client.set_timeout(config.attempt_timeout);
        let welcome = client
            .hello_resuming(&config.username, &config.resume_token)
            .await?;
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (events_tx, events_rx) = mpsc::channel(config.event_queue.max(1));
        let id_prefix = format!("{:012x}", (random_unit() * (1u64 << 48) as f64) as u64);
        let driver = Driver {
            token: welcome.resume_token.clone(),
            username: welcome.username.clone(),
            config,
            commands: commands_rx,
            events: events_tx,
            pending: VecDeque::new(),
            rooms: BTreeMap::new(),
            refs: HashMap::new(),
            outbox: BTreeMap::new(),
            next_seq: 0,
            reconnect_at: None,
        };
        Ok(Self {
            handle: ResumingHandle {
                commands: commands_tx,
                ids: Arc::new((id_prefix, AtomicU64::new(0))),
            },
            events: events_rx,
            driver: tokio::spawn(driver.run(client)),
            welcome,
        })
    }

    /// The Welcome of the first connection.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Where requests go.
    pub fn handle(&self) -> &ResumingHandle {
        &self.handle
    }

    /// The next event; `None` once the client has ended and every event was
    /// taken. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one is ready.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Closes the connection (1000: the server frees the name and leaves the
    /// rooms at once) and waits for the driver to finish. Events not yet
    /// taken are dropped. (Dropping the `Resuming` closes it too, without waiting.)
    pub async fn close(mut self) {
        if self.handle.commands.send(Command::Close).await.is_ok() {
            // Keep taking events so that the driver is never stuck on a full queue.
            while self.events.recv().await.is_some() {}
        }
        let _ = (&mut self.driver).await;
    }
}

impl ResumingHandle {
    /// Joins `room` with the default replay; the answer is an [`Event::Joined`]
    /// (or [`Event::Refused`]).
    pub async fn join(&self, room: &str) -> Result<(), ClientError> {
        self.join_with(room, "", 0).await
    }

    /// Joins `room` replaying everything after `since_id` (when not empty)
    /// or the newest `history_limit` messages (0: server default).
    pub async fn join_with(
        &self,
        room: &str,
        since_id: &str,
        history_limit: u32,
    ) -> Result<(), ClientError> {
        self.command(Command::Join {
            room: room.to_owned(),
            since_id: since_id.to_owned(),
            history_limit,
        })
        .await
    }

    /// Leaves `room` (and stops re-joining it).
    pub async fn leave(&self, room: &str) -> Result<(), ClientError> {
        self.command(Command::Leave {
            room: room.to_owned(),
        })
        .await
    }

    /// Sends `text` to `room` with a fresh idempotency key, which it
    /// returns: the outcome is an [`Event::Acked`] or [`Event::Refused`]
    /// carrying it. Survives reconnects (re-sent with the same key).
    pub async fn send(&self, room: &str, text: &str) -> Result<String, ClientError> {
        let (prefix, counter) = &*self.ids;
        let client_msg_id = format!("{prefix}-{}", counter.fetch_add(1, Relaxed));
        self.send_with_id(room, text, &client_msg_id).await?;
        Ok(client_msg_id)
    }

    /// Like [`ResumingHandle::send`] with a chosen, non-empty idempotency key.
    pub async fn send_with_id(
        &self,
        room: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Result<(), ClientError> {
        self.command(Command::Send(Outgoing {
            room: room.to_owned(),
            text: text.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
        }))
        .await
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed(None))
    }
}

#[derive(Debug)]
enum Command {
    Join {
        room: String,
        since_id: String,
        history_limit: u32,
    },
    Leave {
        room: String,
    },
    Send(Outgoing),
    Close,
}

/// A message not yet acknowledged.
#[derive(Debug, Clone)]
struct Outgoing {
    room: String,
    text: String,
    client_msg_id: String,
}

/// A room the client wants to be in.
#[derive(Debug, Clone)]
struct Room {
    /// The resume point: the greatest id received through the room's
    /// ordered stream (replays and pushes, never Acks, which may overtake
    /// pushes of smaller ids), or the caller's since_id before any.
    since: String,
    history_limit: u32,
    /// Whether a Joined was reported for it yet.
    joined: bool,
}

/// What a request on the current connection waits for.
#[derive(Debug)]
enum Awaiting {
    Join { room: String },
    Leave { room: String },
    Send { seq: u64 },
    Ping,
}

/// How serving one connection ended.
enum Served {
    /// It broke: reconnect.
    Lost {
        close: Option<CloseInfo>,
        reason: String,
    },
    /// The server asked for a reconnect (drain): connect anew while the old
    /// connection is still open, so that the token takes the session over
    /// and the name is never free in between.
    Moved(Client),
    /// For good; the connection when it is still open.
    Stop(EndReason, Option<Client>),
}

/// Why one reconnect attempt failed.
enum Failed {
    Retry { name_taken: bool },
    Fatal(EndReason),
}

/// The task that owns the connection.
struct Driver {
    config: ResumeConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Events not yet in the queue, oldest first. The socket is read only
    /// while this is empty, so it holds at most what one frame or one
    /// reconnect produced.
    pending: VecDeque<Event>,
    /// The name as welcomed.
    username: String,
    /// The latest session's resume token (empty when the server gives none).
    token: String,
    /// The rooms to be in, by name.
    rooms: BTreeMap<String, Room>,
    /// Requests on the current connection, by ref.
    refs: HashMap<u64, Awaiting>,
    /// Sends not yet acknowledged, in submission order.
    outbox: BTreeMap<u64, Outgoing>,
    next_seq: u64,
    /// When the server's Reconnect asked to come back.
    reconnect_at: Option<Instant>,
}

impl Driver {
    async fn run(mut self, first: Client) {
        let mut client = first;
        loop {
            let (lost_at, old) = match self.serve(client).await {
                Served::Stop(reason, open) => return self.finish(reason, open).await,
                Served::Lost { close, reason } => {
                    self.pending
                        .push_back(Event::Disconnected { close, reason });
                    (Instant::now(), None)
                }
                Served::Moved(old) => (Instant::now(), Some(old)),
            };
            // A Leave the old connection never answered took effect anyway:
            // the next session does not join that room.
            for awaiting in std::mem::take(&mut self.refs).into_values() {
                if let Awaiting::Leave { room } = awaiting {
                    self.pending.push_back(Event::Left { room });
                }
            }
            match self.reconnect(lost_at, old.is_some()).await {
                // The old connection of a drain is dropped only now.
                Ok(next) => client = next,
                Err(reason) => return self.finish(reason, None).await,
            }
            drop(old);
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, mut client: Client) -> Served {
        let keepalive = self.config.keepalive;
        let mut quiet_since = Instant::now();
        let mut pinged = false;
        loop {
            let silent_until = quiet_since + if pinged { keepalive * 2 } else { keepalive };
            let reconnect_at = self.reconnect_at;
            let reading = self.pending.is_empty();
            tokio::select! {
                biased;
                delivered = deliver(&self.events, &mut self.pending), if !reading => {
                    if !delivered {
                        return Served::Stop(EndReason::Closed, Some(client));
                    }
                    // Not reading while events waited is not silence.
                    quiet_since = quiet_since.max(Instant::now());
                }
                command = self.commands.recv(), if self.outbox.len() < self.config.max_unacked => {
                    match command {
                        None | Some(Command::Close) => {
                            return Served::Stop(EndReason::Closed, Some(client));
                        }
                        Some(command) => {
                            if let Err(e) = self.command(Some(&mut client), command).await {
                                return lost(e);
                            }
                        }
                    }
                }
                // Nobody takes events any more (the Resuming was dropped).
                () = self.events.closed() => return Served::Stop(EndReason::Closed, Some(client)),
                frame = client.next_frame(), if reading => {
                    quiet_since = Instant::now();
                    pinged = false;
                    match frame {
                        Ok(frame) => {
                            if let Some(reason) = self.frame(frame) {
                                return Served::Stop(reason, None);
                            }
                        }
                        Err(e) => return closed(e),
                    }
                }
                () = sleep_until(silent_until), if reading => {
                    if pinged {
                        return Served::Lost {
                            close: None,
                            reason: format!("nothing received for {:?}", keepalive * 3),
                        };
                    }
                    pinged = true;
                    let ping = client_frame::Kind::Ping(Ping { client_time_ms: now_ms() });
                    match client.start(ping).await {
                        Ok(r) => {
                            self.refs.insert(r, Awaiting::Ping);
                        }
                        Err(e) => return lost(e),
                    }
                }
                () = sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if reconnect_at.is_some() => {
                    self.reconnect_at = None;
                    return Served::Moved(client);
                }
            }
        }
    }

    /// Carries out a command; `client` is `None` while disconnected (the
    /// command then takes effect on the next connection).
    async fn command(
        &mut self,
        client: Option<&mut Client>,
        command: Command,
    ) -> Result<(), ClientError> {
        match command {
            Command::Join {
                room,
                since_id,
                history_limit,
            } => {
                self.rooms.entry(room.clone()).or_insert(Room {
                    since: since_id.clone(),
                    history_limit,
                    joined: false,
                });
                if let Some(client) = client {
                    let join = client_frame::Kind::Join(Join {
                        room: room.clone(),
                        since_id,
                        history_limit,
                    });
                    let r = client.start(join).await?;
                    self.refs.insert(r, Awaiting::Join { room });
                }
            }
            Command::Leave { room } => {
                self.rooms.remove(&room);
                match client {
                    Some(client) => {
                        let leave = client_frame::Kind::Leave(Leave { room: room.clone() });
                        let r = client.start(leave).await?;
                        self.refs.insert(r, Awaiting::Leave { room });
                    }
                    None => self.pending.push_back(Event::Left { room }),
                }
            }
            Command::Send(outgoing) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some(client) = client {
                    let kind = send_kind(&outgoing.room, &outgoing.text, &outgoing.client_msg_id);
                    self.outbox.insert(seq, outgoing);
                    let r = client.start(kind).await?;
                    self.refs.insert(r, Awaiting::Send { seq });
                } else {
                    self.outbox.insert(seq, outgoing);
                }
            }
            Command::Close => unreachable!("Close is handled by the loops"),
        }
        Ok(())
    }

    /// Handles one received frame; `Some` when the client must stop.
    fn frame(&mut self, frame: ServerFrame) -> Option<EndReason> {
        if frame.r#ref != 0 {
            match self.refs.remove(&frame.r#ref) {
                Some(awaiting) => self.reply(awaiting, frame),
                None => self.pending.push_back(Event::Other(frame)),
            }
            return None;
        }
        match frame.kind {
            Some(Kind::Message(message)) => {
                if let Some(room) = self.rooms.get_mut(&message.room) {
                    advance(&mut room.since, &message.id);
                }
                self.pending.push_back(Event::Message(message));
            }
            Some(Kind::Presence(presence)) => self.pending.push_back(Event::Presence(presence)),
            Some(Kind::Typing(typing)) => self.pending.push_back(Event::Typing(typing)),
            Some(Kind::Error(ref error)) => {
                if let Some(reason) = fatal_code(error.code) {
                    return Some(reason);
                }
                self.pending.push_back(Event::Other(frame));
            }
            Some(Kind::Reconnect(ref reconnect)) => {
                let after = Duration::from_millis(u64::from(reconnect.after_ms));
                self.reconnect_at = Some(Instant::now() + after);
                self.pending.push_back(Event::Other(frame));
            }
            _ => self.pending.push_back(Event::Other(frame)),
        }
        None
    }

    /// Handles the reply to one of this connection's requests.
    fn reply(&mut self, awaiting: Awaiting, frame: ServerFrame) {
        let refused = |request: Request, error: chat_proto::v1::Error| Event::Refused {
            request,
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
            message: error.message,
        };
        let event = match (awaiting, frame.kind) {
            (Awaiting::Join { .. }, Some(Kind::Joined(joined))) => {
                self.joined(joined, false);
                return;
            }
            (Awaiting::Join { room }, Some(Kind::Error(error))) => {
                if self.rooms.get(&room).is_some_and(|r| !r.joined) {
                    self.rooms.remove(&room);
                }
                refused(Request::Join { room }, error)
            }
            (Awaiting::Leave { room }, Some(Kind::Left(_))) => Event::Left { room },
            (Awaiting::Leave { room }, Some(Kind::Error(error))) => {
                refused(Request::Leave { room }, error)
            }
            (Awaiting::Send { seq }, Some(Kind::Ack(ack))) => match self.outbox.remove(&seq) {
                Some(outgoing) => Event::Acked {
                    client_msg_id: outgoing.client_msg_id,
                    ack,
                },
                None => return,
            },
            (Awaiting::Send { seq }, Some(Kind::Error(error))) => match self.outbox.remove(&seq) {
                Some(outgoing) => refused(
                    Request::Send {
                        room: outgoing.room,
                        client_msg_id: outgoing.client_msg_id,
                    },
                    error,
                ),
                None => return,
            },
            (Awaiting::Ping, Some(Kind::Pong(_))) => return,
            (_, kind) => Event::Other(ServerFrame {
                r#ref: frame.r#ref,
                kind,
            }),
        };
        self.pending.push_back(event);
    }

    /// Records a Joined (its replay moves the resume point) and reports it.
    fn joined(&mut self, joined: Joined, rejoin: bool) {
        if let Some(room) = self.rooms.get_mut(&joined.room) {
            match joined.history.last() {
                Some(last) => advance(&mut room.since, &last.id),
                // Nothing was replayed after a since_id: it stays the resume point.
                None if !room.since.is_empty() => {}
                // The newest messages were asked for and there were none: the
                // room was empty, so whatever comes later is new.
                None => room.since = "0-0".into(),
            }
            room.joined = true;
        }
        self.pending.push_back(Event::Joined { joined, rejoin });
    }

    /// Reconnects until it works (or must stop): at once with a little
    /// jitter, then backing off while attempts fail.
    async fn reconnect(&mut self, lost_at: Instant, moved: bool) -> Result<Client, EndReason> {
        let mut failures = 0u32;
        let mut name_taken = 0u32;
        let mut attempts = 0u32;
        loop {
            // A drain already spread its clients over time.
            let delay = if moved && failures == 0 {
                Duration::ZERO
            } else {
                self.config.backoff.delay(failures, random_unit())
            };
            self.wait(Instant::now() + delay).await?;
            attempts += 1;
            let with_token = !self.token.is_empty();
            match tokio::time::timeout(self.config.attempt_timeout, self.attempt()).await {
                Ok(Ok((client, welcome, phases))) => {
                    self.pending.push_back(Event::Resumed(Resumption {
                        welcome,
                        lost_at,
                        downtime: lost_at.elapsed(),
                        attempts,
                        name_taken,
                        with_token,
                        rooms: self.rooms.len(),
                        phases,
                    }));
                    return Ok(client);
                }
                Ok(Err(Failed::Fatal(reason))) => return Err(reason),
                Ok(Err(Failed::Retry { name_taken: taken })) => {
                    failures += 1;
                    name_taken += u32::from(taken);
                }
                Err(_) => failures += 1,
            }
        }
    }

    /// Waits until `until` while taking commands and handing over events.
    async fn wait(&mut self, until: Instant) -> Result<(), EndReason> {
        loop {
            tokio::select! {
                biased;
                delivered = deliver(&self.events, &mut self.pending), if !self.pending.is_empty() => {
                    if !delivered {
                        return Err(EndReason::Closed);
                    }
                }
                command = self.commands.recv(), if self.outbox.len() < self.config.max_unacked => {
                    match command {
                        None | Some(Command::Close) => return Err(EndReason::Closed),
                        Some(command) => {
                            // Offline, a command only changes what the next connection does.
                            let _ = self.command(None, command).await;
                        }
                    }
                }
                () = self.events.closed() => return Err(EndReason::Closed),
                () = sleep_until(until) => return Ok(()),
            }
        }
    }

    /// One attempt: connect, Hello with the token, re-join every room from
    /// its resume point, re-send what was not acknowledged.
    async fn attempt(&mut self) -> Result<(Client, Welcome, Phases), Failed> {
        let retry = |_| Failed::Retry { name_taken: false };
        self.refs.clear();
        let started = Instant::now();
        let mut client = Client::connect_with_config(
            &self.config.url,
            self.config.local_addr,
            self.config.ws_config,
        )
        .await
        .map_err(retry)?;
        client.set_timeout(self.config.attempt_timeout);
        let connected = Instant::now();
        let welcome = match client.hello_resuming(&self.username, &self.token).await {
            Ok(welcome) => welcome,
            Err(e) => {
                return Err(match e {
                    ClientError::Server { code, message } => match code {
                        ErrorCode::UsernameTaken => Failed::Retry { name_taken: true },
                        ErrorCode::InvalidUsername | ErrorCode::NotAuthenticated => {
                            Failed::Fatal(EndReason::Refused { code, message })
                        }
                        code => match fatal_code(code as i32) {
                            Some(reason) => Failed::Fatal(reason),
                            None => Failed::Retry { name_taken: false },
                        },
                    },
                    e => match e.close_info().and_then(|c| fatal_close(c.code)) {
                        Some(reason) => Failed::Fatal(reason),
                        None => Failed::Retry { name_taken: false },
                    },
                });
            }
        };
        // The new session holds the name now: its token is the one to keep.
        self.token = welcome.resume_token.clone();
        let welcomed = Instant::now();
        let mut joins = Vec::with_capacity(self.rooms.len());
        for (name, room) in &self.rooms {
            let join = client_frame::Kind::Join(Join {
                room: name.clone(),
                since_id: room.since.clone(),
                history_limit: room.history_limit,
            });
            joins.push((client.start(join).await.map_err(retry)?, name.clone()));
        }
        for (r, room) in joins {
            let reply = client.wait_reply(r).await.map_err(retry)?;
            match reply.kind {
                Some(Kind::Joined(joined)) => {
                    let rejoin = self.rooms.get(&room).is_some_and(|r| r.joined);
                    self.joined(joined, rejoin);
                }
                Some(Kind::Error(error)) => {
                    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                    // Passing troubles: the next connection tries again.
                    if matches!(
                        code,
                        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited
                    ) {
                        return Err(Failed::Retry { name_taken: false });
                    }
                    self.rooms.remove(&room);
                    self.pending.push_back(Event::Refused {
                        request: Request::Join { room },
                        code,
                        message: error.message,
                    });
                }
                kind => self
                    .pending
                    .push_back(Event::Other(ServerFrame { r#ref: r, kind })),
            }
        }
        for (seq, outgoing) in &self.outbox {
            let kind = send_kind(&outgoing.room, &outgoing.text, &outgoing.client_msg_id);
            let r = client.start(kind).await.map_err(retry)?;
            self.refs.insert(r, Awaiting::Send { seq: *seq });
        }
        let phases = Phases {
            connect: connected - started,
            hello: welcomed - connected,
            rejoin: welcomed.elapsed(),
        };
        Ok((client, welcome, phases))
    }

    /// Closes what is still open and hands over the last events.
    async fn finish(mut self, reason: EndReason, open: Option<Client>) {
        if let Some(client) = open {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
        }
        self.pending.push_back(Event::Ended(reason));
        while let Some(event) = self.pending.pop_front() {
            if self.events.send(event).await.is_err() {
                break;
            }
        }
    }
}

/// Hands the oldest pending event over once the queue has room; `false`
/// when nobody takes events any more. Cancel-safe: the event leaves
/// `pending` only together with the room reserved for it.
async fn deliver(events: &mpsc::Sender<Event>, pending: &mut VecDeque<Event>) -> bool {
    match events.reserve().await {
        Ok(permit) => {
            if let Some(event) = pending.pop_front() {
                permit.send(event);
            }
            true
        }
        Err(_) => false,
    }
}

/// Moves a resume point forward to `id` (ids compare as pairs).
fn advance(since: &mut String, id: &str) {
    let newer = match (since.parse::<MessageId>(), id.parse::<MessageId>()) {
        (Ok(current), Ok(new)) => new > current,
        _ => true,
    };
    if newer {
        since.clear();
        since.push_str(id);
    }
}

/// The end of a client told by a pushed Error's code, if it is one.
fn fatal_code(code: i32) -> Option<EndReason> {
    match ErrorCode::try_from(code).ok()? {
        ErrorCode::SessionReplaced => Some(EndReason::Replaced),
        ErrorCode::Kicked => Some(EndReason::Kicked),
        ErrorCode::InvalidToken => Some(EndReason::InvalidToken),
        _ => None,
    }
}

/// The end of a client told by a close code, if it is one.
fn fatal_close(code: u16) -> Option<EndReason> {
    match code {
        CLOSE_KICKED => Some(EndReason::Kicked),
        CLOSE_REPLACED => Some(EndReason::Replaced),
        CLOSE_INVALID_TOKEN => Some(EndReason::InvalidToken),
        _ => None,
    }
}

/// How a read error ends serving: for good on a fatal close code, else lost.
fn closed(e: ClientError) -> Served {
    match e.close_info().and_then(|c| fatal_close(c.code)) {
        Some(reason) => Served::Stop(reason, None),
        None => lost(e),
    }
}

/// A lost connection, from a failed read or write.
fn lost(e: ClientError) -> Served {
    Served::Lost {
        close: e.close_info().cloned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chat_proto::v1::{ClientFrame, Error as ErrorFrame, Reconnect};
    use chat_proto::Message as _;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    type Ws = WebSocketStream<TcpStream>;

    /// A scripted server: one listener, connections accepted one by one.
    struct Server {
        listener: TcpListener,
    }

    impl Server {
        async fn start() -> (Self, String) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/ws", listener.local_addr().unwrap());
            (Self { listener }, url)
        }

        async fn accept(&self) -> Ws {
            let (stream, _) = self.listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(stream).await.unwrap()
        }
    }

    async fn recv(ws: &mut Ws) -> ClientFrame {
        loop {
            match ws.next().await.expect("a client frame").expect("ws ok") {
                Message::Binary(data) => return ClientFrame::decode(data).unwrap(),
                _ => continue,
            }
        }
    }

    async fn reply(ws: &mut Ws, r: u64, kind: Kind) {
        let frame = ServerFrame {
            r#ref: r,
            kind: Some(kind),
        };
        ws.send(Message::Binary(Bytes::from(frame.encode_to_vec())))
            .await
            .unwrap();
    }

    /// Expects a Hello and welcomes it with `token`; returns the Hello's resume_token.
    async fn welcome(ws: &mut Ws, token: &str) -> String {
        let hello = recv(ws).await;
        let Some(client_frame::Kind::Hello(h)) = hello.kind else {
            panic!("expected Hello, got {hello:?}");
        };
        let welcome = Welcome {
            username: h.username.clone(),
            resume_token: token.into(),
            ..Default::default()
        };
        reply(ws, hello.r#ref, Kind::Welcome(welcome)).await;
        h.resume_token
    }

    /// Expects a Join and answers it with `history`; returns its since_id.
    async fn joined(ws: &mut Ws, history: &[&str]) -> String {
        let frame = recv(ws).await;
        let Some(client_frame::Kind::Join(join)) = frame.kind else {
            panic!("expected Join, got {frame:?}");
        };
        let joined = Joined {
            room: join.room.clone(),
            members: vec!["ann".into()],
            history: history.iter().map(|id| message(&join.room, id)).collect(),
            history_truncated: false,
        };
        reply(ws, frame.r#ref, Kind::Joined(joined)).await;
        join.since_id
    }

    fn message(room: &str, id: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            room: room.into(),
            username: "bob".into(),
            text: format!("m{id}"),
            ..Default::default()
        }
    }

    fn config(url: &str) -> ResumeConfig {
        let mut config = ResumeConfig::new(url, "ann");
        config.attempt_timeout = Duration::from_secs(5);
        config
    }

    async fn next(client: &mut Resuming) -> Event {
        tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .expect("an event in time")
            .expect("the client has not ended")
    }

    #[tokio::test]
    async fn a_lost_connection_resumes_with_the_token_from_the_last_id_and_resends() {
        let (server, url) = Server::start().await;
        let script = tokio::spawn(async move {
            let mut ws = server.accept().await;
            assert_eq!(welcome(&mut ws, "t1").await, "");
            assert_eq!(joined(&mut ws, &["1-0"]).await, "");
            reply(&mut ws, 0, Kind::Message(message("r", "2-0"))).await;
            let send = recv(&mut ws).await;
            let Some(client_frame::Kind::Send(first)) = send.kind else {
                panic!("expected Send, got {send:?}");
            };
            // The connection dies before the Ack.
            drop(ws);
            let mut ws = server.accept().await;
            assert_eq!(welcome(&mut ws, "t2").await, "t1");
            assert_eq!(joined(&mut ws, &["3-0"]).await, "2-0");
            let resend = recv(&mut ws).await;
            let Some(client_frame::Kind::Send(again)) = resend.kind else {
                panic!("expected the re-send, got {resend:?}");
            };
            assert_eq!(again, first, "re-sent as it was, with its key");
            let ack = Ack {
                id: "2-5".into(),
                room: "r".into(),
                sent_at_ms: 1,
                duplicate: true,
            };
            reply(&mut ws, resend.r#ref, Kind::Ack(ack)).await;
            // A third session must carry the second token and resume after 3-0.
            drop(ws);
            let mut ws = server.accept().await;
            assert_eq!(welcome(&mut ws, "t3").await, "t2");
            assert_eq!(joined(&mut ws, &[]).await, "3-0");
            ws
        });
        let mut client = Resuming::connect(config(&url)).await.unwrap();
        assert_eq!(client.welcome().resume_token, "t1");
        client.handle().join("r").await.unwrap();
        let Event::Joined { joined, rejoin } = next(&mut client).await else {
            panic!("expected Joined")
        };
        assert!(!rejoin);
        assert_eq!(joined.history[0].id, "1-0");
        assert!(matches!(next(&mut client).await, Event::Message(m) if m.id == "2-0"));
        let key = client.handle().send("r", "hello").await.unwrap();
        assert!(matches!(
            next(&mut client).await,
            Event::Disconnected { .. }
        ));
        let Event::Joined { joined, rejoin } = next(&mut client).await else {
            panic!("expected the re-join")
        };
        assert!(rejoin);
        assert_eq!(joined.history[0].id, "3-0");
        let Event::Resumed(resumed) = next(&mut client).await else {
            panic!("expected Resumed")
        };
        assert_eq!(
            (resumed.attempts, resumed.name_taken, resumed.rooms),
            (1, 0, 1)
        );
        assert!(resumed.with_token);
        assert_eq!(resumed.welcome.resume_token, "t2");
        let Event::Acked { client_msg_id, ack } = next(&mut client).await else {
            panic!("expected the Ack of the re-send")
        };
        assert_eq!(
            (client_msg_id.as_str(), ack.duplicate),
            (key.as_str(), true)
        );
        assert!(matches!(
            next(&mut client).await,
            Event::Disconnected { .. }
        ));
        assert!(matches!(
            next(&mut client).await,
            Event::Joined { rejoin: true, .. }
        ));
        assert!(matches!(next(&mut client).await, Event::Resumed(_)));
        let _ws = script.await.unwrap();
    }

    #[tokio::test]
    async fn a_taken_name_is_retried_and_counted() {
        let (server, url) = Server::start().await;
        let script = tokio::spawn(async move {
            let mut ws = server.accept().await;
            welcome(&mut ws, "t1").await;
            drop(ws);
            let mut ws = server.accept().await;
            let hello = recv(&mut ws).await;
            let taken = ErrorFrame {
                code: ErrorCode::UsernameTaken as i32,
                message: "taken".into(),
            };
            reply(&mut ws, hello.r#ref, Kind::Error(taken)).await;
            let mut ws = server.accept().await;
            assert_eq!(welcome(&mut ws, "t2").await, "t1");
            ws
        });
        let mut client = Resuming::connect(config(&url)).await.unwrap();
        assert!(matches!(
            next(&mut client).await,
            Event::Disconnected { .. }
        ));
        let Event::Resumed(resumed) = next(&mut client).await else {
            panic!("expected Resumed")
        };
        assert_eq!((resumed.attempts, resumed.name_taken), (2, 1));
        let _ws = script.await.unwrap();
    }

    #[tokio::test]
    async fn session_replaced_ends_the_client_for_good() {
        let (server, url) = Server::start().await;
        let script = tokio::spawn(async move {
            let mut ws = server.accept().await;
            welcome(&mut ws, "t1").await;
            let replaced = ErrorFrame {
                code: ErrorCode::SessionReplaced as i32,
                message: "continued elsewhere".into(),
            };
            reply(&mut ws, 0, Kind::Error(replaced)).await;
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Library(4002),
                    reason: "replaced".into(),
                }))
                .await;
            server
        });
        let mut client = Resuming::connect(config(&url)).await.unwrap();
        assert_eq!(next(&mut client).await, Event::Ended(EndReason::Replaced));
        assert!(client.next_event().await.is_none(), "nothing after Ended");
        assert!(client.handle().join("r").await.is_err());
        // Nobody came back: the listener has no connection waiting.
        let server = script.await.unwrap();
        let pending = tokio::time::timeout(Duration::ZERO, server.listener.accept()).await;
        assert!(pending.is_err(), "the client reconnected after 4002");
    }

    #[tokio::test]
    async fn close_codes_4001_and_4003_end_the_client() {
        for (code, reason) in [(4001, EndReason::Kicked), (4003, EndReason::InvalidToken)] {
            let (server, url) = Server::start().await;
            tokio::spawn(async move {
                let mut ws = server.accept().await;
                welcome(&mut ws, "t1").await;
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Library(code),
                        reason: "bye".into(),
                    }))
                    .await;
                while ws.next().await.is_some() {}
            });
            let mut client = Resuming::connect(config(&url)).await.unwrap();
            assert_eq!(next(&mut client).await, Event::Ended(reason));
        }
    }

    #[tokio::test]
    async fn a_drain_moves_to_a_new_connection_before_leaving_the_old_one() {
        let (server, url) = Server::start().await;
        let script = tokio::spawn(async move {
            let mut old = server.accept().await;
            welcome(&mut old, "t1").await;
            joined(&mut old, &["1-0"]).await;
            let reconnect = Reconnect {
                reason: "drain".into(),
                after_ms: 0,
            };
            reply(&mut old, 0, Kind::Reconnect(reconnect)).await;
            let mut new = server.accept().await;
            assert_eq!(welcome(&mut new, "t2").await, "t1");
            assert_eq!(joined(&mut new, &[]).await, "1-0");
            // Only now does the old connection go away.
            while let Some(Ok(_)) = old.next().await {}
            new
        });
        let mut client = Resuming::connect(config(&url)).await.unwrap();
        client.handle().join("r").await.unwrap();
        assert!(matches!(
            next(&mut client).await,
            Event::Joined { rejoin: false, .. }
        ));
        assert!(
            matches!(next(&mut client).await, Event::Other(_)),
            "the Reconnect"
        );
        assert!(matches!(
            next(&mut client).await,
            Event::Joined { rejoin: true, .. }
        ));
        let Event::Resumed(resumed) = next(&mut client).await else {
            panic!("expected Resumed")
        };
        assert_eq!(resumed.attempts, 1);
        let _new = script.await.unwrap();
    }

    #[tokio::test]
    async fn commands_while_disconnected_apply_to_the_next_connection() {
        let (server, url) = Server::start().await;
        let script = tokio::spawn(async move {
            let mut ws = server.accept().await;
            welcome(&mut ws, "t1").await;
            drop(ws);
            let mut ws = server.accept().await;
            welcome(&mut ws, "t2").await;
            // Whether the commands reached the client before or during its
            // attempt, the new connection gets them, in order.
            let mut seen = Vec::new();
            while !seen.iter().any(|s: &String| s.starts_with("send")) {
                let frame = recv(&mut ws).await;
                seen.push(match frame.kind {
                    Some(client_frame::Kind::Join(join)) => {
                        let joined = Joined {
                            room: join.room.clone(),
                            ..Default::default()
                        };
                        reply(&mut ws, frame.r#ref, Kind::Joined(joined)).await;
                        format!("join {} {}", join.room, join.since_id)
                    }
                    Some(client_frame::Kind::Leave(leave)) => {
                        let left = chat_proto::v1::Left {
                            room: leave.room.clone(),
                        };
                        reply(&mut ws, frame.r#ref, Kind::Left(left)).await;
                        format!("leave {}", leave.room)
                    }
                    Some(client_frame::Kind::Send(send)) => format!("send {}", send.text),
                    other => panic!("unexpected {other:?}"),
                });
            }
            (ws, seen)
        });
        let mut client = Resuming::connect(config(&url)).await.unwrap();
        assert!(matches!(
            next(&mut client).await,
            Event::Disconnected { .. }
        ));
        client.handle().join_with("r", "5-0", 0).await.unwrap();
        client.handle().join("gone").await.unwrap();
        client.handle().leave("gone").await.unwrap();
        client.handle().send("r", "queued").await.unwrap();
        let (_ws, seen) = script.await.unwrap();
        // Offline, the Join and Leave of "gone" cancel out; after the attempt
        // they go out as they came.
        let offline = ["join r 5-0", "send queued"];
        let online = ["join r 5-0", "join gone ", "leave gone", "send queued"];
        assert!(seen == offline || seen == online, "{seen:?}");
        let mut events = Vec::new();
        while events.len() < 3 {
            match next(&mut client).await {
                Event::Joined { joined, rejoin } => {
                    // Joined for a room never joined before is not a re-join.
                    assert!(!rejoin);
                    // "gone" is joined, then left, when the commands came online.
                    if joined.room != "gone" {
                        events.push(format!("joined {}", joined.room));
                    }
                }
                Event::Left { room } => events.push(format!("left {room}")),
                Event::Resumed(_) => events.push("resumed".into()),
                other => panic!("unexpected {other:?}"),
            }
        }
        events.sort();
        assert_eq!(events, ["joined r", "left gone", "resumed"]);
    }

    #[test]
    fn resume_points_only_move_forward() {
        let mut since = String::new();
        advance(&mut since, "5-1");
        assert_eq!(since, "5-1");
        advance(&mut since, "10-0");
        assert_eq!(since, "10-0");
        advance(&mut since, "9-99");
        assert_eq!(since, "10-0", "ids compare as pairs, not as strings");
    }
}
