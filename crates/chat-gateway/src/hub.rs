//! This gateway's local view of rooms: which connections are in which room,
//! and the fan-out of bridge events to them.
//!
//! A broadcast is encoded once into `Bytes` and the same buffer is queued to
//! every recipient. Each room's member list sits behind its own synchronous
//! mutex: it is held only to walk the members and `try_send`, never across an
//! await, and fan-out for a room happens in the room's delivery order because
//! the bridge delivers one room's events sequentially.
//!
//! Operator commands arriving through the bridge are not room events: they
//! are passed on to the gateway's control task (`control.rs`), which can see
//! every connection.

use std::collections::HashMap;
use std::sync::Arc;

use chat_bridge::{BridgeEvent, ControlCommand, EventSink, PresenceKind};
use chat_proto::v1::{presence_change, server_frame, PresenceChange, ServerFrame, TypingNotice};
use chat_proto::MessageId;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::conn::ConnHandle;
use crate::metrics::Metrics;
use crate::wire::Frame;

/// Local rooms of one gateway.
pub struct Hub {
    rooms: RwLock<HashMap<String, Arc<Mutex<Vec<Slot>>>>>,
    metrics: Arc<Metrics>,
    /// To the control task. Unbounded because `deliver` must not block or
    /// await, and operator commands are rare enough not to pile up.
    control: mpsc::Sender<ControlCommand>,
}

/// One connection's membership in one room.
struct Slot {
    conn: Arc<ConnHandle>,
    /// Normalised username: presence and typing are not sent to their subject.
    key: Arc<str>,
    state: SlotState,
}

enum SlotState {
    /// Between Join and Joined: events are held back so that they follow the
    /// Joined frame, and messages already in its replay can be dropped.
    Joining(Vec<Held>),
    /// Messages with id <= watermark were in the Joined replay.
    Live { watermark: MessageId },
}

struct Held {
    /// Set for chat messages (filtered by the replay's last id).
    id: Option<MessageId>,
    frame: Frame,
}

/// Encodes a push (ref 0) once, as the WebSocket frame every recipient gets.
pub fn encode_push(kind: server_frame::Kind) -> Frame {
    crate::wire::encode(&ServerFrame {
        r#ref: 0,
        kind: Some(kind),
    })
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>, control: mpsc::Sender<ControlCommand>) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            metrics,
            control,
        }
    }

    fn room(&self, room: &str) -> Option<Arc<Mutex<Vec<Slot>>>> {
        self.rooms.read().get(room).cloned()
    }

    /// Registers `conn` in `room` as joining (or puts an existing membership
    /// back into joining for a re-join): events are held until [`Hub::finish_join`].
    pub fn begin_join(&self, room: &str, conn: &Arc<ConnHandle>, key: &Arc<str>) {
        let slots = {
            let mut rooms = self.rooms.write();
            rooms.entry(room.to_owned()).or_default().clone()
        };
        let mut slots = slots.lock();
        match slots.iter_mut().find(|slot| slot.conn.id == conn.id) {
            Some(slot) => slot.state = SlotState::Joining(Vec::new()),
            None => slots.push(Slot {
                conn: conn.clone(),
                key: key.clone(),
                state: SlotState::Joining(Vec::new()),
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
    pub fn finish_join(
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
        let held = match std::mem::replace(
            &mut slot.state,
            SlotState::Live {
                watermark: client_has,
            },
        ) {
            SlotState::Joining(held) => held,
            SlotState::Live { .. } => Vec::new(),
        };
        if let Some(joined) = joined {
            if !slot.conn.push(joined, &self.metrics) {
                return;
            }
        }
        for event in held {
            if event.id.is_some_and(|id| id <= client_has) {
                continue;
            }
            if !slot.conn.push(event.frame, &self.metrics) {
                return;
            }
        }
    }

    /// Removes `conn` from `room`. Returns true when it was a member.
    pub fn remove(&self, room: &str, conn_id: u64) -> bool {
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
            match &mut slot.state {
                SlotState::Live { watermark } => {
                    if id.is_some_and(|id| id <= *watermark) {
                        continue;
                    }
                    slot.conn.push(frame.clone(), &self.metrics);
                }
                SlotState::Joining(held) => held.push(Held {
                    id,
                    frame: frame.clone(),
                }),
            }
        }
    }
}

impl EventSink for Hub {
    fn deliver(&self, event: BridgeEvent) {
        match event {
            BridgeEvent::Message(message) => {
                let Ok(id) = message.id.parse::<MessageId>() else {
                    tracing::error!(id = %message.id, "bridge delivered a message with a malformed id");
                    return;
                };
                let room = message.room.clone();
                let frame = encode_push(server_frame::Kind::Message(message));
                self.fan_out(&room, frame, Some(id), None);
            }
            BridgeEvent::Presence {
                room,
                key,
                username,
                kind,
            } => {
                let kind = match kind {
                    PresenceKind::Joined => presence_change::Kind::Joined,
                    PresenceKind::Left => presence_change::Kind::Left,
                };
                let frame = encode_push(server_frame::Kind::Presence(PresenceChange {
                    room: room.clone(),
                    username,
                    kind: kind as i32,
                }));
                self.fan_out(&room, frame, None, Some(&key));
            }
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
        }
    }
}
