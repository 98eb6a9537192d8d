//! The driver of a [`Resuming`](super::Resuming) client: the task that owns
//! the connection, takes commands, hands over events and decides when a
//! connection is lost. What it does with received frames is in `inbound`,
//! how it comes back after a loss in `reconnect`.

mod inbound;
mod reconnect;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chat_proto::v1::{client_frame, Join, Leave, Ping, Welcome};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use self::inbound::fatal_close;
use super::{Command, EndReason, Event, Outgoing, ResumeConfig};
use crate::frame::{now_ms, send_kind};
use crate::{Client, ClientError, CloseInfo};

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

/// The task that owns the connection.
pub(super) struct Driver {
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
    /// The driver of a client welcomed with `welcome`, before its first connection is served.
    pub(super) fn new(
        config: ResumeConfig,
        welcome: &Welcome,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        Self {
            token: welcome.resume_token.clone(),
            username: welcome.username.clone(),
            config,
            commands,
            events,
            pending: VecDeque::new(),
            rooms: BTreeMap::new(),
            refs: HashMap::new(),
            outbox: BTreeMap::new(),
            next_seq: 0,
            reconnect_at: None,
        }
    }

    /// Serves connections, reconnecting after each loss, until the client stops for good.
    pub(super) async fn run(mut self, first: Client) {
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
