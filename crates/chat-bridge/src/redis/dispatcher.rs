//! The dispatcher: the one task that turns the subscriber connections'
//! traffic into sink events, in order, with delivery cursors per room.
//!
//! A room's delivery is [`Flow::Live`] while its subscription is known to
//! be in place. When it may not be (a connection came back, the room's slot
//! moved to another shard, the dispatcher fell behind or met a payload it
//! could not decode), the room is marked [`Flow::Lost`] or [`Flow::Gap`] and
//! its live messages are dropped; the dispatcher subscribes it again, then
//! reads its stream after the last id delivered and delivers what was
//! missed, then lets live messages through again (deduplicated by id). What
//! cannot be restored now (a shard is down) is tried again every
//! [`RETRY_EVERY`] without holding up rooms on other shards.

use std::borrow::Cow;

use futures_util::future::join_all;

use super::shards::Intake;
use super::topology::{self, CHECK_EVERY};
use super::*;

/// How often rooms that could not be restored are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cursor {
    /// Newest id handed to the sink.
    pub(super) delivered: Option<MessageId>,
    /// Stream tip when the subscription started: where a gap read begins if
    /// nothing was delivered yet.
    pub(super) floor: MessageId,
    /// Whether live messages are delivered (see the module docs).
    pub(super) flow: Flow,
}

/// Where a room's delivery stands (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Flow {
    /// Subscribed; live messages are delivered.
    #[default]
    Live,
    /// Subscribed; what the room missed is still to be read from its stream.
    Gap,
    /// The subscription must be made again, then the gap read.
    Lost,
}

impl Cursor {
    fn from(&self) -> MessageId {
        self.delivered.unwrap_or(self.floor)
    }
}

impl Inner {
    /// Delivers a live message unless it was delivered already (by id) or
    /// its room is being restored (the stream read delivers it then).
    pub(super) fn deliver_message(&self, message: MessageEvent) {
        {
            let mut cursors = self.cursors.lock();
            let Some(cursor) = cursors.get_mut(&message.room) else {
                return;
            };
            if cursor.flow != Flow::Live || cursor.delivered.is_some_and(|last| message.id <= last)
            {
                return;
            }
            cursor.delivered = Some(message.id);
        }
        self.sink.deliver(BridgeEvent::Message(message));
    }

    /// Delivers messages read from `room`'s stream that are newer than its
    /// cursor, and lets its live messages through again.
    fn deliver_read(&self, room: &str, messages: Vec<ChatMessage>) {
        let mut recovered = 0;
        for msg in messages {
            let Ok(id) = msg.id.parse::<MessageId>() else {
                continue;
            };
            {
                let mut cursors = self.cursors.lock();
                let Some(cursor) = cursors.get_mut(room) else {
                    return; // Unsubscribed meanwhile.
                };
                if cursor.delivered.is_some_and(|last| id <= last) {
                    continue;
                }
                cursor.delivered = Some(id);
            }
            recovered += 1;
            self.sink
                .deliver(BridgeEvent::Message(MessageEvent::new(id, &msg)));
        }
        if let Some(cursor) = self.cursors.lock().get_mut(room) {
            if cursor.flow == Flow::Gap {
                cursor.flow = Flow::Live;
            }
        }
        if recovered > 0 {
            tracing::info!(
                room,
                recovered,
                "delivered messages missed while not subscribed"
            );
        }
    }

    /// Marks `rooms` (every room when `None`) as needing at least `flow`
    /// (a `Lost` room stays lost when marked `Gap`).
    fn mark(&self, rooms: Option<&[String]>, flow: Flow) {
        let mut cursors = self.cursors.lock();
        let set = |cursor: &mut Cursor| {
            if cursor.flow != Flow::Lost {
                cursor.flow = flow;
            }
        };
        match rooms {
            None => cursors.values_mut().for_each(set),
            Some(rooms) => {
                for room in rooms {
                    if let Some(cursor) = cursors.get_mut(room) {
                        set(cursor);
                    }
                }
            }
        }
    }

    /// The rooms whose flow is `flow`, with where their gap read starts.
    fn rooms_in(&self, flow: Flow) -> Vec<(String, MessageId)> {
        self.cursors
            .lock()
            .iter()
            .filter(|(_, cursor)| cursor.flow == flow)
            .map(|(room, cursor)| (room.clone(), cursor.from()))
            .collect()
    }

    /// Runs `step` for every room: one shard's rooms one after the other,
    /// stopping at the first that fails (the shard is unreachable: the rest
    /// wait for the next try), the shards concurrently.
    async fn per_shard<F, Fut>(&self, rooms: Vec<(String, MessageId)>, step: F)
    where
        F: Fn(String, MessageId) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let routing = self.shards.routing().filter(|_| self.sharded);
        let mut shards: HashMap<Option<String>, Vec<(String, MessageId)>> = HashMap::new();
        for (room, from) in rooms {
            let primary = routing.as_ref().and_then(|routing| {
                let slot = topology::slot_of(&self.keys.channel(&room));
                routing.get_server(slot).map(ToString::to_string)
            });
            shards.entry(primary).or_default().push((room, from));
        }
        join_all(shards.into_values().map(|rooms| async {
            for (room, from) in rooms {
                if let Err(e) = step(room.clone(), from).await {
                    tracing::warn!(error = %e, room, "restoring a room's delivery failed; trying again shortly");
                    return;
                }
            }
        }))
        .await;
    }

    /// Subscribes lost rooms (and the control channel) again and reads
    /// every gap. Returns whether something is left for the next try.
    async fn restore_delivery(&self, control_lost: &mut bool) -> bool {
        if self.sharded {
            self.per_shard(self.rooms_in(Flow::Lost), |room, _| async move {
                self.listen(self.keys.channel(&room))
                    .await
                    .map_err(unavailable)?;
                if let Some(cursor) = self.cursors.lock().get_mut(&room) {
                    cursor.flow = Flow::Gap;
                }
                Ok(())
            })
            .await;
            if *control_lost {
                *control_lost = self.listen(self.keys.control()).await.is_err();
            }
        } else if *control_lost || !self.rooms_in(Flow::Lost).is_empty() {
            // One connection: one SUBSCRIBE for every channel.
            match self.subscriber.resubscribe_all().await {
                Ok(()) => {
                    *control_lost = false;
                    for cursor in self.cursors.lock().values_mut() {
                        if cursor.flow == Flow::Lost {
                            cursor.flow = Flow::Gap;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "re-subscribing failed; trying again shortly"),
            }
        }
        self.per_shard(self.rooms_in(Flow::Gap), |room, from| async move {
            let messages = self.read_gap(&room, from).await?;
            self.deliver_read(&room, messages);
            Ok(())
        })
        .await;
        *control_lost || self.cursors.lock().values().any(|c| c.flow != Flow::Live)
    }

    /// Hands one pub/sub payload to the sink. Returns true when a room's
    /// payload could not be decoded (a newer gateway's format, say): the
    /// caller then re-reads the streams, so nothing is skipped.
    pub(super) fn handle_payload(&self, channel: &str, payload: Bytes) -> bool {
        let Some(room) = self.keys.room_of_channel(channel) else {
            if channel == self.keys.control() {
                self.handle_control(&payload);
            }
            return false;
        };
        let room = room.as_ref();
        match wire::decode(room, &payload) {
            Some(wire::Payload::Messages(messages)) => {
                for message in messages {
                    self.deliver_message(message);
                }
            }
            Some(wire::Payload::Other(event)) => {
                let joined = match &event {
                    BridgeEvent::Presence {
                        key,
                        kind: PresenceKind::Joined,
                        ..
                    } => Some(key.clone()),
                    _ => None,
                };
                if self.cursors.lock().contains_key(room) {
                    self.sink.deliver(event);
                }
                if let Some(key) = joined {
                    self.join_fences.passed(room, &key);
                }
            }
            None => {
                tracing::warn!(
                    channel,
                    "undecodable payload on a room channel; re-reading the streams"
                );
                return true;
            }
        }
        false
    }
}

/// The one task that turns subscriber traffic into sink events, in order:
/// from the one subscriber connection, or on a cluster from each primary's
/// (`intake`, `shards.rs`).
pub(super) async fn run(inner: Arc<Inner>, intake: Option<mpsc::Receiver<Intake>>) {
    match intake {
        None => run_single(inner).await,
        Some(intake) => run_sharded(inner, intake).await,
    }
}

/// How a pub/sub message goes to the sink; true when the streams must be
/// read again.
fn take_message(inner: &Inner, message: fred::types::Message) -> bool {
    let payload = match message.value {
        Value::Bytes(b) => b,
        Value::String(s) => s.into_inner(),
        _ => return false,
    };
    inner.handle_payload(&message.channel, payload)
}

/// On one Redis: one subscriber connection.
async fn run_single(inner: Arc<Inner>) {
    let mut messages = inner.subscriber.message_rx();
    let mut reconnects = inner.subscriber.reconnect_rx();
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = false;
    let mut control_lost = false;
    loop {
        tokio::select! {
            biased;
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(RecvError::Closed)) {
                    return;
                }
                // Subscribe first, then read the gap: anything published
                // after the subscription arrives live and is deduped by id.
                inner.mark(None, Flow::Lost);
                control_lost = true;
                pending = inner.restore_delivery(&mut control_lost).await;
            }
            _ = retry.tick(), if pending => {
                pending = inner.restore_delivery(&mut control_lost).await;
            }
            message = messages.recv() => {
                let reread = match message {
                    Ok(message) => take_message(&inner, message),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "subscriber fell behind; re-reading the streams");
                        true
                    }
                    Err(RecvError::Closed) => return,
                };
                if reread {
                    inner.mark(None, Flow::Gap);
                    pending = inner.restore_delivery(&mut control_lost).await;
                }
            }
        }
    }
}

/// The slot watch (on a Redis Cluster): reads the slot map every
/// [`CHECK_EVERY`], and at once after a redirect, on its own task so that a
/// slow `CLUSTER SLOTS` never delays a delivery; rooms whose slot moved are
/// marked and the dispatcher woken to restore them.
pub(super) async fn watch_slots(inner: Arc<Inner>) {
    loop {
        let _ = tokio::time::timeout(CHECK_EVERY, inner.topology_hint.notified()).await;
        if inner.follow_slots().await {
            inner.slots_moved.notify_one();
        }
    }
}

/// On a Redis Cluster: each primary's subscriber connection.
async fn run_sharded(inner: Arc<Inner>, mut intake: mpsc::Receiver<Intake>) {
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The control channel was subscribed at connect if the slot map was
    // known then; subscribing again is harmless.
    let mut pending = true;
    let mut control_lost = true;
    loop {
        tokio::select! {
            biased;
            item = intake.recv() => {
                let reread = match item {
                    None => return,
                    Some(Intake::Reconnected(server)) => {
                        // That primary's subscriptions are gone.
                        let rooms = inner.rooms_served_by(&server);
                        control_lost |= inner.shards.owner(topology::slot_of(&inner.keys.control())).as_ref() == Some(&server);
                        inner.mark(Some(&rooms), Flow::Lost);
                        pending = true;
                        false
                    }
                    Some(Intake::Lagged) => {
                        tracing::warn!("a subscriber connection fell behind; re-reading the streams");
                        true
                    }
                    Some(Intake::Message(message)) => take_message(&inner, message),
                };
                if reread {
                    inner.mark(None, Flow::Gap);
                    pending = true;
                }
                if pending && intake.is_empty() {
                    pending = inner.restore_delivery(&mut control_lost).await;
                }
            }
            // Rooms whose slot moved, marked by the slot watch.
            () = inner.slots_moved.notified() => {
                control_lost |= inner.control_moved.swap(false, Ordering::Relaxed);
                pending = inner.restore_delivery(&mut control_lost).await;
            }
            _ = retry.tick(), if pending => {
                pending = inner.restore_delivery(&mut control_lost).await;
            }
        }
    }
}

impl Inner {
    /// The subscribed rooms whose slot `server` serves.
    fn rooms_served_by(&self, server: &fred::types::config::Server) -> Vec<String> {
        let Some(routing) = self.shards.routing() else {
            return Vec::new();
        };
        self.cursors
            .lock()
            .keys()
            .filter(|room| {
                routing.get_server(topology::slot_of(&self.keys.channel(room))) == Some(server)
            })
            .cloned()
            .collect()
    }

    /// Reads the slot map again; marks the rooms (and the control channel)
    /// whose slot is now served by another primary. True when some were.
    async fn follow_slots(&self) -> bool {
        let channels: Vec<String> = self
            .cursors
            .lock()
            .keys()
            .map(|room| self.keys.channel(room))
            .collect();
        let control = self.keys.control();
        match topology::moved(self, channels.into_iter().chain([control.clone()])).await {
            Ok(moved) if !moved.is_empty() => {
                tracing::info!(
                    channels = moved.len(),
                    "slots moved to other primaries; subscribing again"
                );
                if moved.contains(&control) {
                    self.control_moved.store(true, Ordering::Relaxed);
                }
                let rooms: Vec<String> = moved
                    .iter()
                    .filter_map(|c| self.keys.room_of_channel(c).map(Cow::into_owned))
                    .collect();
                self.mark(Some(&rooms), Flow::Lost);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "reading the cluster's slots failed");
                false
            }
        }
    }
}
