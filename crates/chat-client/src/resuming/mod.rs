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

mod driver;
mod event;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chat_proto::v1::Welcome;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::backoff::{random_unit, Backoff};
use crate::{Client, ClientError};

use self::driver::Driver;
pub use self::event::{EndReason, Event, Phases, Request, Resumption};

/// Where and as whom a [`Resuming`] client connects, and how it retries.
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    /// `ws://host:port/ws`, usually a load balancer's.
    pub url: String,
    /// The name to say Hello with (and to take back after a loss).
    pub username: String,
    /// The resume token of an earlier session of this client (empty: none),
    /// e.g. to take over a session from another process.
    pub resume_token: String,
    /// Local address to connect from (any port).
    pub local_addr: Option<IpAddr>,
    /// WebSocket buffer and size settings of every connection.
    pub ws_config: WebSocketConfig,
    /// How long to wait between failed reconnect attempts.
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
        let driver = Driver::new(config, &welcome, commands_rx, events_tx);
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
