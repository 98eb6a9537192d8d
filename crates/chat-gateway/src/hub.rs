//! This gateway's local view of rooms: which connections are in which room,
//! and the fan-out of bridge events to them.
//!
//! A broadcast is encoded once into a [`Frame`] and the same buffer is queued
//! to every recipient. Each room's member list sits behind its own
//! synchronous mutex: it is held only to walk the members and queue (a
//! [`ConnHandle::push`] never waits), never across an await, and fan-out for
//! a room happens in the room's delivery order because the bridge delivers
//! one room's events sequentially.
//!
//! A member joins in two steps ([`Handover`]): between its Join and its
//! Joined frame the room's events are held for it, and then the ones its
//! Joined did not replay follow that frame.
//!
//! Presence is coalesced ([`PresenceGate`]): however fast one user joins and
//! leaves a room, the members here get at most [`PRESENCE_PER_SECOND`]
//! changes about that user in that room per second, and the last one they
//! get always matches the truth.
//!
//! Operator commands arriving through the bridge are not room events: they
//! are passed on to the gateway's control task (`control.rs`), which can see
//! every connection, through a bounded queue (a flood is dropped, not queued).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use chat_bridge::{BridgeEvent, ControlCommand, EventSink, PresenceKind};
use chat_proto::v1::{presence_change, server_frame, PresenceChange, ServerFrame, TypingNotice};
use chat_proto::MessageId;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::conn::ConnHandle;
use crate::metrics::Metrics;
use crate::wire::Frame;

/// Presence changes about one user in one room that members get per second.
pub(crate) const PRESENCE_PER_SECOND: usize = 2;
const PRESENCE_WINDOW: Duration = Duration::from_secs(1);
/// Gates kept before idle ones are swept.
const GATES_BEFORE_SWEEP: usize = 1024;

/// Local rooms of one gateway.
pub(crate) struct Hub {
    /// Room -> its members here. A read-write lock because fan-out only
    /// looks a room up (and then locks the room's own list) while joins and
    /// leaves that add or drop a room are rarer; never held across an await.
    rooms: RwLock<HashMap<String, Arc<Mutex<Vec<Slot>>>>>,
    /// (room, user key) -> its presence gate. Held while a change is fanned
    /// out, so the changes about one user in one room go out in order.
    presence: Mutex<HashMap<(String, String), PresenceGate>>,
    /// This hub, for the tasks that release held presence changes.
    me: Weak<Hub>,
    metrics: Arc<Metrics>,
    /// To the control task. Bounded (see `lib.rs`), and fed with `try_send`
    /// because `deliver` must not block or await: operator commands are
    /// rare, so a full queue means a flood, which is dropped.
    control: mpsc::Sender<ControlCommand>,
}

/// One connection's membership in one room.
struct Slot {
    conn: Arc<ConnHandle>,
    /// Normalised username: presence and typing are not sent to their subject.
    key: Arc<str>,
    state: Handover<Frame>,
}

/// Where a member is in the hand-over from its Join to live delivery, and
/// what that means for each room event: pure logic over events of type `E`
/// (frames in the hub), with no connection and no lock.
#[derive(Debug, PartialEq, Eq)]
enum Handover<E> {
    /// Between Join and Joined: events are held back so that they follow the
    /// Joined frame, and messages already in its replay can be dropped.
    /// Each comes with its message id (`None` for other events).
    Joining(Vec<(Option<MessageId>, E)>),
    /// Messages with id <= watermark were in the Joined replay (or the
    /// client said it has them).
    Live { watermark: MessageId },
}

impl<E: Clone> Handover<E> {
    /// A member that has just asked to join (or to join again).
    fn joining() -> Self {
        Self::Joining(Vec::new())
    }

    /// A room event, with its message id if it is a chat message: returns
    /// it when it goes out now. Held while joining; dropped when the
    /// client has it already.
    fn offer(&mut self, id: Option<MessageId>, event: &E) -> Option<E> {
        match self {
            Self::Live { watermark } => {
                if id.is_some_and(|id| id <= *watermark) {
                    return None;
                }
                Some(event.clone())
            }
            Self::Joining(held) => {
                held.push((id, event.clone()));
                None
            }
        }
    }

    /// Ends the hand-over: live from now on, with `client_has` the newest
    /// id the client has. Returns the held events that go out after the
    /// Joined frame, oldest first: all but the messages up to `client_has`
    /// (nothing when the member was live already).
    fn go_live(&mut self, client_has: MessageId) -> impl Iterator<Item = E> {
        let live = Self::Live {
            watermark: client_has,
        };
        let held = match std::mem::replace(self, live) {
            Self::Joining(held) => held,
            Self::Live { .. } => Vec::new(),
        };
        held.into_iter()
            .filter(move |(id, _)| !id.is_some_and(|id| id <= client_has))
            .map(|(_, event)| event)
    }
}

/// Encodes a push (ref 0) once, as the WebSocket frame every recipient gets.
pub(crate) fn encode_push(kind: server_frame::Kind) -> Frame {
    crate::wire::encode(&ServerFrame {
        r#ref: 0,
        kind: Some(kind),
    })
}

/// The presence changes about one user in one room that went out lately,
/// and the newest one held back.
#[derive(Debug, Default)]
pub(crate) struct PresenceGate {
    /// When the last changes went out, oldest first (at most `PRESENCE_PER_SECOND`).
    sent: Vec<Instant>,
    /// The last change that went out.
    last_sent: Option<PresenceKind>,
    /// The newest change not sent yet, and whether a release is scheduled.
    held: Option<(String, PresenceKind)>,
}

/// What to do with a presence change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gated {
    /// Send it now.
    Send,
    /// Held; release it at this instant (a release is now scheduled).
    HoldUntil(Instant),
    /// Held; a release is already scheduled.
    Held,
}

impl PresenceGate {
    fn room_in_window(&mut self, now: Instant) -> bool {
        self.sent
            .retain(|at| now.duration_since(*at) < PRESENCE_WINDOW);
        self.sent.len() < PRESENCE_PER_SECOND
    }

    fn record(&mut self, now: Instant, kind: PresenceKind) {
        self.sent.push(now);
        self.last_sent = Some(kind);
    }

    /// A new change about the user.
    pub(crate) fn offer(&mut self, now: Instant, username: String, kind: PresenceKind) -> Gated {
        if self.held.is_some() {
            self.held = Some((username, kind));
            return Gated::Held;
        }
        if self.room_in_window(now) {
            self.record(now, kind);
            return Gated::Send;
        }
        self.held = Some((username, kind));
        Gated::HoldUntil(self.sent[0] + PRESENCE_WINDOW)
    }

    /// The held change to send now, if it changes what members last got
    /// (a join and a leave held back cancel out).
    pub(crate) fn release(&mut self, now: Instant) -> Option<(String, PresenceKind)> {
        let (username, kind) = self.held.take()?;
        if self.last_sent == Some(kind) {
            return None;
        }
        self.room_in_window(now);
        self.record(now, kind);
        Some((username, kind))
    }

    fn idle(&self, now: Instant) -> bool {
        self.held.is_none()
            && self
                .sent
                .last()
                .is_none_or(|at| now.duration_since(*at) >= PRESENCE_WINDOW)
    }
}

impl Hub {
    pub(crate) fn new(metrics: Arc<Metrics>, control: mpsc::Sender<ControlCommand>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            rooms: RwLock::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            me: me.clone(),
            metrics,
            control,
        })
    }

    /// Passes a presence change through its gate (see [`PresenceGate`]).
    fn presence(&self, room: String, key: String, username: String, kind: PresenceKind) {
        let now = Instant::now();
        let mut gates = self.presence.lock();
        if gates.len() >= GATES_BEFORE_SWEEP {
            gates.retain(|_, gate| !gate.idle(now));
        }
        let gate = gates.entry((room.clone(), key.clone())).or_default();
        match gate.offer(now, username.clone(), kind) {
            Gated::Send => self.fan_out_presence(&room, &key, username, kind),
            Gated::Held => {}
            Gated::HoldUntil(at) => {
                let me = self.me.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    if let Some(hub) = me.upgrade() {
                        hub.release_presence(room, key);
                    }
                });
            }
        }
    }

    fn release_presence(&self, room: String, key: String) {
        let mut gates = self.presence.lock();
        let Some(gate) = gates.get_mut(&(room.clone(), key.clone())) else {
            return;
        };
        if let Some((username, kind)) = gate.release(Instant::now()) {
            self.fan_out_presence(&room, &key, username, kind);
        }
    }

    fn fan_out_presence(&self, room: &str, key: &str, username: String, kind: PresenceKind) {
        let kind = match kind {
            PresenceKind::Joined => presence_change::Kind::Joined,
            PresenceKind::Left => presence_change::Kind::Left,
        };
        let frame = encode_push(server_frame::Kind::Presence(PresenceChange {
            room: room.to_owned(),
            username,
            kind: kind as i32,
        }));
        self.fan_out(room, frame, None, Some(key));
    }

    fn room(&self, room: &str) -> Option<Arc<Mutex<Vec<Slot>>>> {
        self.rooms.read().get(room).cloned()
    }

    /// Registers `conn` in `room` as joining (or puts an existing membership
    /// back into joining for a re-join): events are held until [`Hub::finish_join`].
    pub(crate) fn begin_join(&self, room: &str, conn: &Arc<ConnHandle>, key: &Arc<str>) {
        let slots = {
            let mut rooms = self.rooms.write();
            rooms.entry(room.to_owned()).or_default().clone()
        };
        let mut slots = slots.lock();
        match slots.iter_mut().find(|slot| slot.conn.id == conn.id) {
            Some(slot) => slot.state = Handover::joining(),
            None => slots.push(Slot {
                conn: conn.clone(),
                key: key.clone(),
                state: Handover::joining(),
            }),
        }
    }

    /// Queues the `Joined` frame (if any), then the events held since
    /// `begin_join` that the client does not have yet, and switches the
    /// member to live.
    ///
    /// `client_has` is the newest id the client has after this Joined: the
    /// larger of its `since_id` and the last replayed id. Held and live
    /// messages up to it are dropped. (A `since_id` from the future therefore
    /// hides messages up to it: the contract says the client has them.)
    pub(crate) fn finish_join(
        &self,
        room: &str,
        conn_id: u64,
        joined: Option<Frame>,
        client_has: MessageId,
    ) {
        let Some(slots) = self.room(room) else { return };
        let mut slots = slots.lock();
        let Some(slot) = slots.iter_mut().find(|slot| slot.conn.id == conn_id) else {
            return;
        };
        let held = slot.state.go_live(client_has);
        for frame in joined.into_iter().chain(held) {
            if !slot.conn.push(frame, &self.metrics) {
                return; // The connection is closing.
            }
        }
    }

    /// Removes `conn` from `room`. Returns true when it was a member.
    pub(crate) fn remove(&self, room: &str, conn_id: u64) -> bool {
        let mut rooms = self.rooms.write();
        let Some(slots) = rooms.get(room).cloned() else {
            return false;
        };
        let mut slots = slots.lock();
        let Some(index) = slots.iter().position(|slot| slot.conn.id == conn_id) else {
            return false;
        };
        slots.swap_remove(index);
        if slots.is_empty() {
            rooms.remove(room);
        }
        true
    }

    fn fan_out(&self, room: &str, frame: Frame, id: Option<MessageId>, skip_key: Option<&str>) {
        let Some(slots) = self.room(room) else { return };
        let mut slots = slots.lock();
        for slot in slots.iter_mut() {
            if skip_key.is_some_and(|key| *slot.key == *key) {
                continue;
            }
            if let Some(frame) = slot.state.offer(id, &frame) {
                slot.conn.push(frame, &self.metrics);
            }
        }
    }
}

impl EventSink for Hub {
    fn deliver(&self, event: BridgeEvent) {
        match event {
            BridgeEvent::Message(message) => {
                let frame = crate::wire::encode_message_push(&message.encoded);
                self.fan_out(&message.room, frame, Some(message.id), None);
            }
            BridgeEvent::Presence {
                room,
                key,
                username,
                kind,
            } => self.presence(room, key, username, kind),
            BridgeEvent::Typing {
                room,
                key,
                username,
                active,
            } => {
                let frame = encode_push(server_frame::Kind::Typing(TypingNotice {
                    room: room.clone(),
                    username,
                    active,
                }));
                self.fan_out(&room, frame, None, Some(&key));
            }
            BridgeEvent::Control(command) => {
                // Bounded: operators' commands are rare; a flood is dropped, not queued.
                match self.control.try_send(command) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(command)) => {
                        tracing::warn!(?command, "too many operator commands queued; dropped one");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::debug!("control command after the gateway stopped ignored");
                    }
                }
            }
            BridgeEvent::ControlRejected(why) => self.metrics.control_rejected(why),
        }
    }
}

#[cfg(test)]
mod tests;
