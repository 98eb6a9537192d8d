//! The embedded backend: the whole "cluster" is this process.
//!
//! Each room is a `Mutex<RoomState>`; publishing assigns the id, stores the
//! message and hands it to the sink while holding that room's lock, so id
//! order is delivery order. The locks are synchronous (`parking_lot`) because
//! nothing here awaits: every method finishes without yielding.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_proto::v1::ChatMessage;
use chat_proto::MessageId;
use parking_lot::{Mutex, RwLock};

use crate::{
    Accepted, Bridge, BridgeEvent, EventSink, HistoryPage, Member, NewMessage,
    PresenceKind, Replay, Result, RoomSummary,
};

/// How long a `client_msg_id` is remembered.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(600);

/// In-process bridge for a single gateway.
pub struct MemoryBridge {
    history_len: usize,
    sink: Arc<dyn EventSink>,
    /// Room map; the outer lock is only held to find or create a room.
    rooms: RwLock<HashMap<String, Arc<Mutex<RoomState>>>>,
    /// Username key -> holding session id.
    names: Mutex<HashMap<String, String>>,
}

#[derive(Default)]
struct RoomState {
    history: VecDeque<ChatMessage>,
    /// Parsed ids of `history`, same order (ids are parsed once, at publish).
    ids: VecDeque<MessageId>,
    last_id: MessageId,
    /// The newest id trimmed away, as Redis' `max-deleted-entry-id`.
    max_trimmed: Option<MessageId>,
    /// Name key -> (display name, sessions present).
    members: BTreeMap<String, (String, HashSet<String>)>,
    /// Subscription references; events are delivered while > 0.
    subscribers: usize,
    /// (sender key, client_msg_id) -> original outcome, with expiry order.
    dedupe: HashMap<(String, String), (Accepted, Instant)>,
    dedupe_order: VecDeque<(Instant, (String, String))>,
}

impl MemoryBridge {
    /// `history_len`: messages kept per room.
    pub fn new(history_len: usize, sink: Arc<dyn EventSink>) -> Self {
        Self {
            history_len: history_len.max(1),
            sink,
            rooms: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        }
    }

    fn room(&self, room: &str) -> Arc<Mutex<RoomState>> {
        if let Some(state) = self.rooms.read().get(room) {
            return state.clone();
        }
        self.rooms.write().entry(room.to_owned()).or_default().clone()
    }

    fn existing_room(&self, room: &str) -> Option<Arc<Mutex<RoomState>>> {
        self.rooms.read().get(room).cloned()
    }

    fn emit(&self, state: &RoomState, event: BridgeEvent) {
        if state.subscribers > 0 {
            self.sink.deliver(event);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RoomState {
    fn expire_dedupe(&mut self, now: Instant) {
        while let Some((at, _)) = self.dedupe_order.front() {
            if *at > now {
                break;
            }
            let (_, key) = self.dedupe_order.pop_front().expect("front exists");
            if self.dedupe.get(&key).is_some_and(|(_, exp)| *exp <= now) {
                self.dedupe.remove(&key);
            }
        }
    }

    /// Index of the first retained message with id > `after`.
    fn first_after(&self, after: MessageId) -> usize {
        self.ids.partition_point(|id| *id <= after)
    }
}

#[async_trait]
impl Bridge for MemoryBridge {
    async fn subscribe(&self, room: &str) -> Result<()> {
        self.room(room).lock().subscribers += 1;
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) -> Result<()> {
        if let Some(state) = self.existing_room(room) {
            let mut state = state.lock();
            state.subscribers = state.subscribers.saturating_sub(1);
        }
        Ok(())
    }

    async fn publish(&self, msg: NewMessage) -> Result<Accepted> {
        let state = self.room(&msg.room);
        let mut state = state.lock();
        let now = Instant::now();
        state.expire_dedupe(now);
        let dedupe_key = (!msg.client_msg_id.is_empty())
            .then(|| (msg.sender_key.clone(), msg.client_msg_id.clone()));
        if let Some(key) = &dedupe_key {
            if let Some((original, _)) = state.dedupe.get(key) {
                return Ok(Accepted { duplicate: true, ..*original });
            }
        }

        let sent_at_ms = now_ms();
        let id = state.last_id.successor_at(sent_at_ms);
        state.last_id = id;
        let accepted = Accepted { id, sent_at_ms, duplicate: false };
        if let Some(key) = dedupe_key {
            let expires = now + DEDUPE_WINDOW;
            state.dedupe.insert(key.clone(), (accepted, expires));
            state.dedupe_order.push_back((expires, key));
        }

        let message = ChatMessage {
            id: id.to_string(),
            room: msg.room,
            username: msg.username,
            text: msg.text,
            sent_at_ms,
            client_msg_id: msg.client_msg_id,
            system: msg.system,
        };
        state.history.push_back(message.clone());
        state.ids.push_back(id);
        while state.history.len() > self.history_len {
            state.history.pop_front();
            state.max_trimmed = state.ids.pop_front();
        }
        self.emit(&state, BridgeEvent::Message(message));
        Ok(accepted)
    }

    async fn find_duplicate(
        &self,
        room: &str,
        sender_key: &str,
        client_msg_id: &str,
    ) -> Result<Option<Accepted>> {
        let Some(state) = self.existing_room(room) else {
            return Ok(None);
        };
        let mut state = state.lock();
        state.expire_dedupe(Instant::now());
        let key = (sender_key.to_owned(), client_msg_id.to_owned());
        Ok(state.dedupe.get(&key).map(|(original, _)| Accepted { duplicate: true, ..*original }))
    }

    async fn replay_after(&self, room: &str, after: MessageId) -> Result<Replay> {
        let Some(state) = self.existing_room(room) else {
            return Ok(Replay::default());
        };
        let state = state.lock();
        let start = state.first_after(after);
        Ok(Replay {
            messages: state.history.range(start..).cloned().collect(),
            truncated: state.max_trimmed.is_some_and(|trimmed| trimmed > after),
        })
    }

    async fn recent(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>> {
        let Some(state) = self.existing_room(room) else {
            return Ok(Vec::new());
        };
        let state = state.lock();
        let start = state.history.len().saturating_sub(limit);
        Ok(state.history.range(start..).cloned().collect())
    }

    async fn history_before(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let Some(state) = self.existing_room(room) else {
            return Ok(HistoryPage::default());
        };
        let state = state.lock();
        let end = match before {
            Some(before) => state.ids.partition_point(|id| *id < before),
            None => state.ids.len(),
        };
        let start = end.saturating_sub(limit);
        Ok(HistoryPage {
            messages: state.history.range(start..end).cloned().collect(),
            has_more: start > 0,
        })
    }

    async fn typing(&self, room: &str, member: &Member, active: bool) -> Result<()> {
        if let Some(state) = self.existing_room(room) {
            let state = state.lock();
            self.emit(
                &state,
                BridgeEvent::Typing {
                    room: room.to_owned(),
                    key: member.key.clone(),
                    username: member.username.clone(),
                    active,
                },
            );
        }
        Ok(())
    }

    async fn claim_username(&self, member: &Member) -> Result<bool> {
        let mut names = self.names.lock();
        match names.get(&member.key) {
            Some(holder) => Ok(*holder == member.session_id),
            None => {
                names.insert(member.key.clone(), member.session_id.clone());
                Ok(true)
            }
        }
    }

    async fn release_username(&self, member: &Member) -> Result<()> {
        let mut names = self.names.lock();
        if names.get(&member.key) == Some(&member.session_id) {
            names.remove(&member.key);
        }
        Ok(())
    }

    async fn enter_room(&self, room: &str, member: &Member) -> Result<Vec<String>> {
        let state = self.room(room);
        let mut state = state.lock();
        let entry = state
            .members
            .entry(member.key.clone())
            .or_insert_with(|| (member.username.clone(), HashSet::new()));
        let first = entry.1.is_empty();
        entry.1.insert(member.session_id.clone());
        if first {
            self.emit(
                &state,
                BridgeEvent::Presence {
                    room: room.to_owned(),
                    key: member.key.clone(),
                    username: member.username.clone(),
                    kind: PresenceKind::Joined,
                },
            );
        }
        let mut names: Vec<String> = state.members.values().map(|(name, _)| name.clone()).collect();
        names.sort();
        Ok(names)
    }

    async fn leave_room(&self, room: &str, member: &Member) -> Result<()> {
        let Some(state) = self.existing_room(room) else {
            return Ok(());
        };
        let mut state = state.lock();
        let Some((_, sessions)) = state.members.get_mut(&member.key) else {
            return Ok(());
        };
        if !sessions.remove(&member.session_id) || !sessions.is_empty() {
            return Ok(());
        }
        let (username, _) = state.members.remove(&member.key).expect("present");
        self.emit(
            &state,
            BridgeEvent::Presence {
                room: room.to_owned(),
                key: member.key.clone(),
                username,
                kind: PresenceKind::Left,
            },
        );
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>> {
        let rooms: Vec<(String, Arc<Mutex<RoomState>>)> =
            self.rooms.read().iter().map(|(name, state)| (name.clone(), state.clone())).collect();
        let mut out: Vec<RoomSummary> = rooms
            .into_iter()
            .filter_map(|(name, state)| {
                let state = state.lock();
                (!state.members.is_empty()).then(|| RoomSummary {
                    name,
                    member_count: state.members.len() as u32,
                    last_message_id: state.ids.back().copied(),
                    last_message_at_ms: state.history.back().map_or(0, |m| m.sent_at_ms),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn is_available(&self) -> bool {
        true
    }
}

impl std::fmt::Debug for MemoryBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBridge").field("history_len", &self.history_len).finish()
    }
}
