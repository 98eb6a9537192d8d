//! The embedded backend: the whole "cluster" is this process.
//!
//! Each room is a `Mutex<RoomState>`; publishing assigns the id, stores the
//! message and hands it to the sink while holding that room's lock, so id
//! order is delivery order. The locks are synchronous (`parking_lot`) because
//! nothing here awaits: every method finishes without yielding.
//!
//! This file holds the room map (finding, creating and expiring rooms); the
//! rest is by concern: `room.rs` (one room's state), `room_log.rs`
//! (messages and history), `presence.rs` (names, members, typing),
//! `admin.rs` (listings, operator commands, lifecycle) and `bans.rs`.

mod admin;
mod bans;
mod presence;
mod room;
mod room_log;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_proto::rules::now_ms;
use parking_lot::{Mutex, RwLock};

use crate::drain::DrainReplies;
use crate::{BridgeEvent, EventSink, TokenHash};
use room::RoomState;

/// A room nobody uses is dropped after this long without activity, unless
/// [`MemoryBridge::with_room_limits`] says otherwise.
const DEFAULT_ROOM_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// In-process bridge for a single gateway.
pub struct MemoryBridge {
    history_len: usize,
    sink: Arc<dyn EventSink>,
    /// Room map; the outer lock is only held to find or create a room.
    rooms: RwLock<HashMap<String, Arc<Mutex<RoomState>>>>,
    /// Username key -> the session holding it.
    names: Mutex<HashMap<String, NameClaim>>,
    /// Identity key -> its ban (`bans.rs`; sync lock, never held across an await).
    bans: Mutex<HashMap<String, crate::Ban>>,
    /// Who this gateway is, for the admin API's gateway list.
    gateway_id: String,
    address: String,
    started_at_ms: u64,
    /// Load as last reported by the gateway ([`Lifecycle::set_load`](crate::Lifecycle::set_load)).
    connections: AtomicU32,
    draining: AtomicBool,
    /// Drain requests waiting for this gateway's answer.
    drains: DrainReplies,
    /// A room with no members, no subscribers and no activity for this long
    /// is dropped (history included).
    room_ttl: Duration,
    /// Rooms kept at most: beyond it, the longest idle droppable rooms go.
    max_rooms: usize,
    /// When rooms were last swept for expiry.
    last_sweep: Mutex<Instant>,
}

/// Who holds a name, and the hash of the token that may take it over.
struct NameClaim {
    session: String,
    display: String,
    resume: TokenHash,
}

impl MemoryBridge {
    /// `history_len`: messages kept per room.
    pub fn new(history_len: usize, sink: Arc<dyn EventSink>) -> Self {
        Self {
            history_len: history_len.max(1),
            sink,
            rooms: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            bans: Mutex::new(HashMap::new()),
            gateway_id: "embedded".to_owned(),
            address: String::new(),
            started_at_ms: now_ms(),
            connections: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            drains: DrainReplies::default(),
            room_ttl: DEFAULT_ROOM_TTL,
            max_rooms: 10_000,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Drops rooms with no members, no subscribers and no activity for
    /// `room_ttl`, and keeps at most `max_rooms` (dropping the longest idle
    /// droppable rooms first; rooms in use are never dropped).
    pub fn with_room_limits(mut self, room_ttl: Duration, max_rooms: usize) -> Self {
        self.room_ttl = room_ttl;
        self.max_rooms = max_rooms.max(1);
        self
    }

    /// Names the gateway this bridge serves (id and client address), as
    /// shown by [`ClusterAdmin::gateways`](crate::ClusterAdmin::gateways) and targeted by
    /// [`ClusterAdmin::drain_gateway`](crate::ClusterAdmin::drain_gateway).
    pub fn with_gateway(mut self, id: impl Into<String>, address: impl Into<String>) -> Self {
        self.gateway_id = id.into();
        self.address = address.into();
        self
    }

    /// Every room with its state, copied out of the room map.
    fn all_rooms(&self) -> Vec<(String, Arc<Mutex<RoomState>>)> {
        self.rooms
            .read()
            .iter()
            .map(|(name, state)| (name.clone(), state.clone()))
            .collect()
    }

    fn room(&self, room: &str) -> Arc<Mutex<RoomState>> {
        if let Some(state) = self.existing_room(room) {
            return state;
        }
        let mut rooms = self.rooms.write();
        let now = Instant::now();
        if rooms.len() >= self.max_rooms || self.sweep_due(now) {
            self.sweep(&mut rooms, now);
        }
        let state = rooms.entry(room.to_owned()).or_default();
        state.lock().last_activity.get_or_insert(now);
        state.clone()
    }

    /// The room, unless it does not exist or has expired (then it is dropped).
    fn existing_room(&self, room: &str) -> Option<Arc<Mutex<RoomState>>> {
        let state = self.rooms.read().get(room).cloned()?;
        if !state.lock().expired(Instant::now(), self.room_ttl) {
            return Some(state);
        }
        let mut rooms = self.rooms.write();
        if rooms
            .get(room)
            .is_some_and(|s| s.lock().expired(Instant::now(), self.room_ttl))
        {
            rooms.remove(room);
        }
        None
    }

    fn sweep_due(&self, now: Instant) -> bool {
        let mut last = self.last_sweep.lock();
        if now.duration_since(*last) < Duration::from_secs(1) {
            return false;
        }
        *last = now;
        true
    }

    /// Drops expired rooms, then the longest idle droppable ones while
    /// there are too many (a new room is about to be added).
    fn sweep(&self, rooms: &mut HashMap<String, Arc<Mutex<RoomState>>>, now: Instant) {
        rooms.retain(|_, state| !state.lock().expired(now, self.room_ttl));
        if rooms.len() < self.max_rooms {
            return;
        }
        let mut idle: Vec<(Instant, String)> = rooms
            .iter()
            .filter_map(|(name, state)| {
                let state = state.lock();
                state
                    .droppable()
                    .then(|| (state.last_activity.unwrap_or(now), name.clone()))
            })
            .collect();
        idle.sort();
        let excess = rooms.len() + 1 - self.max_rooms;
        for (_, name) in idle.into_iter().take(excess) {
            rooms.remove(&name);
        }
    }

    fn emit(&self, state: &RoomState, event: BridgeEvent) {
        if state.subscribers > 0 {
            self.sink.deliver(event);
        }
    }
}

impl std::fmt::Debug for MemoryBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBridge")
            .field("history_len", &self.history_len)
            .finish()
    }
}
