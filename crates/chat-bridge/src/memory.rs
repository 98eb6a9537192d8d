//! The embedded backend: the whole "cluster" is this process.
//!
//! Each room is a `Mutex<RoomState>`; publishing assigns the id, stores the
//! message and hands it to the sink while holding that room's lock, so id
//! order is delivery order. The locks are synchronous (`parking_lot`) because
//! nothing here awaits: every method finishes without yielding.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_proto::v1::ChatMessage;
use chat_proto::MessageId;
use parking_lot::{Mutex, RwLock};

use crate::drain::DrainReplies;
use crate::{
    Accepted, Bridge, BridgeEvent, ControlCommand, EventSink, GatewayStatus, HistoryPage, Member,
    NewMessage, PresenceKind, Replay, Result, Resumed, RoomSummary, TokenHash, UserSummary,
    ACTIVE_ROOM_WINDOW,
};

use chat_proto::rules::DEDUPE_WINDOW;

/// In-process bridge for a single gateway.
pub struct MemoryBridge {
    history_len: usize,
    sink: Arc<dyn EventSink>,
    /// Room map; the outer lock is only held to find or create a room.
    rooms: RwLock<HashMap<String, Arc<Mutex<RoomState>>>>,
    /// Username key -> the session holding it.
    names: Mutex<HashMap<String, NameClaim>>,
    /// Who this gateway is, for the admin API's gateway list.
    gateway_id: String,
    address: String,
    started_at_ms: u64,
    /// Load as last reported by the gateway ([`Bridge::set_load`]).
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
    /// The last publish, entry or exit (for expiry).
    last_activity: Option<Instant>,
}

impl MemoryBridge {
    /// `history_len`: messages kept per room.
    pub fn new(history_len: usize, sink: Arc<dyn EventSink>) -> Self {
        Self {
            history_len: history_len.max(1),
            sink,
            rooms: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            gateway_id: "embedded".to_owned(),
            address: String::new(),
            started_at_ms: now_ms(),
            connections: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            drains: DrainReplies::default(),
            room_ttl: Duration::from_secs(24 * 60 * 60),
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
    /// shown by [`Bridge::gateways`] and targeted by [`Bridge::drain_gateway`].
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RoomState {
    /// Nobody is in it or listening to it.
    fn droppable(&self) -> bool {
        self.members.is_empty() && self.subscribers == 0
    }

    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.droppable()
            && self
                .last_activity
                .is_some_and(|at| now.duration_since(at) >= ttl)
    }

    fn touch(&mut self) {
        self.last_activity = Some(Instant::now());
    }

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
                return Ok(Accepted {
                    duplicate: true,
                    ..*original
                });
            }
        }

        state.touch();
        let sent_at_ms = now_ms();
        let id = state.last_id.successor_at(sent_at_ms);
        state.last_id = id;
        let accepted = Accepted {
            id,
            sent_at_ms,
            duplicate: false,
        };
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
        Ok(state.dedupe.get(&key).map(|(original, _)| Accepted {
            duplicate: true,
            ..*original
        }))
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

    async fn claim_username(&self, member: &Member, resume: &TokenHash) -> Result<bool> {
        let mut names = self.names.lock();
        match names.get(&member.key) {
            Some(claim) => Ok(claim.session == member.session_id),
            None => {
                names.insert(
                    member.key.clone(),
                    NameClaim {
                        session: member.session_id.clone(),
                        display: member.username.clone(),
                        resume: resume.clone(),
                    },
                );
                Ok(true)
            }
        }
    }

    async fn resume_username(
        &self,
        member: &Member,
        presented: &TokenHash,
        resume: &TokenHash,
    ) -> Result<Option<Resumed>> {
        let previous = {
            let mut names = self.names.lock();
            let Some(claim) = names.get_mut(&member.key) else {
                return Ok(None);
            };
            if !claim.resume.matches(presented) || claim.session == member.session_id {
                return Ok(None);
            }
            let previous = std::mem::replace(&mut claim.session, member.session_id.clone());
            claim.display.clone_from(&member.username);
            claim.resume = resume.clone();
            previous
        };
        // The earlier session's presence passes to the new one, silently.
        let mut rooms = Vec::new();
        for (name, state) in self.all_rooms() {
            let mut state = state.lock();
            if let Some((display, sessions)) = state.members.get_mut(&member.key) {
                if sessions.remove(&previous) {
                    sessions.insert(member.session_id.clone());
                    display.clone_from(&member.username);
                    rooms.push(name);
                }
            }
        }
        rooms.sort();
        self.sink
            .deliver(BridgeEvent::Control(ControlCommand::Replace {
                key: member.key.clone(),
                session_id: previous.clone(),
            }));
        Ok(Some(Resumed {
            previous_session: previous,
            rooms,
        }))
    }

    async fn release_username(&self, member: &Member) -> Result<()> {
        let mut names = self.names.lock();
        if names
            .get(&member.key)
            .is_some_and(|claim| claim.session == member.session_id)
        {
            names.remove(&member.key);
        }
        Ok(())
    }

    async fn enter_room(&self, room: &str, member: &Member) -> Result<Vec<String>> {
        let state = self.room(room);
        let mut state = state.lock();
        state.touch();
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
        let mut names: Vec<String> = state
            .members
            .values()
            .map(|(name, _)| name.clone())
            .collect();
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
        state.touch();
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

    async fn rooms(&self, limit: usize) -> Result<Vec<RoomSummary>> {
        let mut out: Vec<RoomSummary> = self
            .all_rooms()
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
        out.sort_by(|a, b| {
            b.member_count
                .cmp(&a.member_count)
                .then_with(|| a.name.cmp(&b.name))
        });
        out.truncate(limit);
        Ok(out)
    }

    async fn room_overview(&self) -> Result<Vec<RoomSummary>> {
        let active_since = now_ms().saturating_sub(ACTIVE_ROOM_WINDOW.as_millis() as u64);
        let mut out: Vec<RoomSummary> = self
            .all_rooms()
            .into_iter()
            .filter_map(|(name, state)| {
                let state = state.lock();
                let last_at = state.history.back().map_or(0, |m| m.sent_at_ms);
                (!state.members.is_empty() || (last_at > 0 && last_at >= active_since)).then(|| {
                    RoomSummary {
                        name,
                        member_count: state.members.len() as u32,
                        last_message_id: state.ids.back().copied(),
                        last_message_at_ms: last_at,
                    }
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn users(&self, room: Option<&str>) -> Result<Vec<UserSummary>> {
        // key -> (display name, rooms, sessions)
        let mut users: BTreeMap<String, (String, BTreeSet<String>, HashSet<String>)> =
            BTreeMap::new();
        for (key, claim) in self.names.lock().iter() {
            let entry = users
                .entry(key.clone())
                .or_insert_with(|| (claim.display.clone(), BTreeSet::new(), HashSet::new()));
            entry.2.insert(claim.session.clone());
        }
        for (name, state) in self.all_rooms() {
            let state = state.lock();
            for (key, (display, sessions)) in &state.members {
                let entry = users
                    .entry(key.clone())
                    .or_insert_with(|| (display.clone(), BTreeSet::new(), HashSet::new()));
                entry.1.insert(name.clone());
                entry.2.extend(sessions.iter().cloned());
            }
        }
        Ok(users
            .into_iter()
            .filter(|(_, (_, rooms, _))| room.is_none_or(|room| rooms.contains(room)))
            .map(|(key, (username, rooms, sessions))| UserSummary {
                key,
                username,
                rooms: rooms.into_iter().collect(),
                gateway_ids: vec![self.gateway_id.clone()],
                connections: sessions.len() as u32,
            })
            .collect())
    }

    async fn gateways(&self) -> Result<Vec<GatewayStatus>> {
        Ok(vec![GatewayStatus {
            id: self.gateway_id.clone(),
            address: self.address.clone(),
            connections: self.connections.load(Ordering::Relaxed),
            started_at_ms: self.started_at_ms,
            // The embedded bridge is this process: it is alive right now.
            last_heartbeat_ms: now_ms(),
            draining: self.draining.load(Ordering::Relaxed),
        }])
    }

    async fn kick(&self, key: &str, room: Option<&str>, reason: &str) -> Result<u32> {
        let mut sessions: HashSet<String> = HashSet::new();
        match room {
            Some(room) => {
                if let Some(state) = self.existing_room(room) {
                    if let Some((_, present)) = state.lock().members.get(key) {
                        sessions.extend(present.iter().cloned());
                    }
                }
            }
            None => {
                if let Some(claim) = self.names.lock().get(key) {
                    sessions.insert(claim.session.clone());
                }
                for (_, state) in self.all_rooms() {
                    if let Some((_, present)) = state.lock().members.get(key) {
                        sessions.extend(present.iter().cloned());
                    }
                }
            }
        }
        if !sessions.is_empty() {
            self.sink
                .deliver(BridgeEvent::Control(ControlCommand::Kick {
                    key: key.to_owned(),
                    room: room.map(str::to_owned),
                    reason: reason.to_owned(),
                }));
        }
        Ok(sessions.len() as u32)
    }

    async fn drain_gateway(&self, gateway_id: &str) -> Result<Option<u32>> {
        if gateway_id != self.gateway_id {
            return Ok(None);
        }
        let reply = self.drains.expect(&self.gateway_id);
        self.sink
            .deliver(BridgeEvent::Control(ControlCommand::Drain {
                reply_to: Some(reply.id().to_owned()),
            }));
        reply.wait(gateway_id).await.map(Some)
    }

    async fn drained(&self, reply_to: &str, told: u32) {
        self.drains.answer(reply_to, told);
    }

    fn is_available(&self) -> bool {
        true
    }

    fn set_load(&self, connections: u32, draining: bool) {
        self.connections.store(connections, Ordering::Relaxed);
        self.draining.store(draining, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for MemoryBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBridge")
            .field("history_len", &self.history_len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every event delivered.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<BridgeEvent>>);

    impl EventSink for Recorder {
        fn deliver(&self, event: BridgeEvent) {
            self.0.lock().push(event);
        }
    }

    impl Recorder {
        fn controls(&self) -> Vec<ControlCommand> {
            self.0
                .lock()
                .iter()
                .filter_map(|e| match e {
                    BridgeEvent::Control(c) => Some(c.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn member(session: &str, name: &str) -> Member {
        Member {
            session_id: session.into(),
            key: name.to_lowercase(),
            username: name.into(),
        }
    }

    fn bridge() -> (MemoryBridge, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (
            MemoryBridge::new(10, recorder.clone()).with_gateway("gw-a", "10.0.0.1:8080"),
            recorder,
        )
    }

    #[tokio::test]
    async fn users_rooms_and_the_gateway_are_listed() {
        let (bridge, _) = bridge();
        let (ann, bo, cy) = (member("s1", "Ann"), member("s2", "Bo"), member("s3", "Cy"));
        for m in [&ann, &bo, &cy] {
            assert!(bridge.claim_username(m, &hash()).await.unwrap());
        }
        bridge.enter_room("lobby", &ann).await.unwrap();
        bridge.enter_room("lobby", &bo).await.unwrap();
        bridge.enter_room("dev", &bo).await.unwrap();
        let users = bridge.users(None).await.unwrap();
        let rows: Vec<_> = users
            .iter()
            .map(|u| (u.username.as_str(), u.rooms.clone(), u.connections))
            .collect();
        assert_eq!(
            rows,
            [
                ("Ann", vec!["lobby".to_owned()], 1),
                ("Bo", vec!["dev".to_owned(), "lobby".to_owned()], 1),
                ("Cy", vec![], 1)
            ]
        );
        assert!(users.iter().all(|u| u.gateway_ids == ["gw-a"]));
        let in_dev: Vec<_> = bridge
            .users(Some("dev"))
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.key)
            .collect();
        assert_eq!(in_dev, ["bo"]);

        let rooms: Vec<_> = bridge
            .room_overview()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.member_count))
            .collect();
        assert_eq!(rooms, [("dev".to_owned(), 1), ("lobby".to_owned(), 2)]);
        // A room without members stays listed while its last message is recent.
        bridge.leave_room("dev", &bo).await.unwrap();
        let msg = NewMessage {
            room: "news".into(),
            sender_key: String::new(),
            username: String::new(),
            text: "hi".into(),
            client_msg_id: String::new(),
            system: true,
        };
        let accepted = bridge.publish(msg).await.unwrap();
        let rooms = bridge.room_overview().await.unwrap();
        assert_eq!(
            rooms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["lobby", "news"]
        );
        assert_eq!(rooms[1].last_message_id, Some(accepted.id));

        bridge.set_load(3, true);
        let gateways = bridge.gateways().await.unwrap();
        assert_eq!(gateways.len(), 1);
        assert_eq!(
            (gateways[0].id.as_str(), gateways[0].address.as_str()),
            ("gw-a", "10.0.0.1:8080")
        );
        assert_eq!((gateways[0].connections, gateways[0].draining), (3, true));
    }

    #[tokio::test]
    async fn kicks_count_sessions_and_reach_the_sink() {
        let (bridge, recorder) = bridge();
        let ann = member("s1", "Ann");
        bridge.claim_username(&ann, &hash()).await.unwrap();
        bridge.enter_room("lobby", &ann).await.unwrap();
        assert_eq!(bridge.kick("nobody", None, "x").await.unwrap(), 0);
        assert_eq!(bridge.kick("ann", Some("dev"), "x").await.unwrap(), 0);
        assert!(recorder.controls().is_empty(), "nothing is sent for nobody");
        assert_eq!(
            bridge
                .kick("ann", Some("lobby"), "off topic")
                .await
                .unwrap(),
            1
        );
        assert_eq!(bridge.kick("ann", None, "spam").await.unwrap(), 1);
        assert_eq!(
            recorder.controls(),
            [
                ControlCommand::Kick {
                    key: "ann".into(),
                    room: Some("lobby".into()),
                    reason: "off topic".into()
                },
                ControlCommand::Kick {
                    key: "ann".into(),
                    room: None,
                    reason: "spam".into()
                },
            ]
        );
    }

    #[tokio::test]
    async fn only_this_gateway_can_be_drained_and_it_answers_what_it_told() {
        let (bridge, recorder) = bridge();
        let bridge = Arc::new(bridge);
        bridge.set_load(2, false);
        assert_eq!(bridge.drain_gateway("gw-b").await.unwrap(), None);
        assert!(recorder.controls().is_empty());
        let asking = tokio::spawn({
            let bridge = bridge.clone();
            async move { bridge.drain_gateway("gw-a").await }
        });
        let reply_to = loop {
            if let Some(ControlCommand::Drain { reply_to }) = recorder.controls().pop() {
                break reply_to.expect("a drain request waits for its answer");
            }
            tokio::task::yield_now().await;
        };
        // The answer is what the gateway told, not its last reported load.
        bridge.drained(&reply_to, 5).await;
        assert_eq!(asking.await.unwrap().unwrap(), Some(5));
    }

    fn hash() -> TokenHash {
        crate::ResumeToken::generate().hash().clone()
    }

    #[tokio::test]
    async fn a_resume_hands_over_name_and_presence_silently_once() {
        let (bridge, recorder) = bridge();
        let token = crate::ResumeToken::generate();
        let first = member("s1", "Ann");
        assert!(bridge.claim_username(&first, token.hash()).await.unwrap());
        bridge.subscribe("lobby").await.unwrap();
        bridge.enter_room("lobby", &first).await.unwrap();
        bridge.enter_room("dev", &first).await.unwrap();
        let events_before = recorder.0.lock().len();

        let second = member("s2", "ann");
        let wrong = TokenHash::of("not the token");
        let next = crate::ResumeToken::generate();
        assert_eq!(
            bridge
                .resume_username(&second, &wrong, next.hash())
                .await
                .unwrap(),
            None
        );
        let presented = TokenHash::of(token.secret());
        let resumed = bridge
            .resume_username(&second, &presented, next.hash())
            .await
            .unwrap()
            .expect("the token matches");
        assert_eq!(resumed.previous_session, "s1");
        assert_eq!(resumed.rooms, ["dev", "lobby"]);
        assert_eq!(
            recorder.controls(),
            [ControlCommand::Replace {
                key: "ann".into(),
                session_id: "s1".into()
            }]
        );
        let presence = recorder.0.lock()[events_before..]
            .iter()
            .filter(|e| matches!(e, BridgeEvent::Presence { .. }))
            .count();
        assert_eq!(presence, 0, "nobody sees the hand-over");
        // The earlier session can no longer free the name or leave the rooms.
        bridge.release_username(&first).await.unwrap();
        bridge.leave_room("lobby", &first).await.unwrap();
        assert!(!bridge
            .claim_username(&member("s3", "ANN"), &hash())
            .await
            .unwrap());
        let users = bridge.users(Some("lobby")).await.unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].connections, 1);
        // A spent token resumes nothing.
        assert_eq!(
            bridge
                .resume_username(&member("s4", "Ann"), &presented, &hash())
                .await
                .unwrap(),
            None
        );
    }

    fn system(room: &str, text: &str) -> NewMessage {
        NewMessage {
            room: room.into(),
            sender_key: String::new(),
            username: String::new(),
            text: text.into(),
            client_msg_id: String::new(),
            system: true,
        }
    }

    #[tokio::test]
    async fn an_unused_room_expires_and_one_in_use_does_not() {
        let recorder = Arc::new(Recorder::default());
        let bridge = MemoryBridge::new(10, recorder).with_room_limits(Duration::ZERO, 100);
        bridge.publish(system("quiet", "hi")).await.unwrap();
        assert!(
            bridge.recent("quiet", 10).await.unwrap().is_empty(),
            "dropped"
        );
        let ann = member("s1", "Ann");
        bridge.enter_room("busy", &ann).await.unwrap();
        bridge.publish(system("busy", "hi")).await.unwrap();
        assert_eq!(bridge.recent("busy", 10).await.unwrap().len(), 1, "in use");
        bridge.subscribe("heard").await.unwrap();
        bridge.publish(system("heard", "hi")).await.unwrap();
        assert_eq!(
            bridge.recent("heard", 10).await.unwrap().len(),
            1,
            "listened to"
        );
    }

    #[tokio::test]
    async fn the_room_cap_drops_the_longest_idle_room_nobody_uses() {
        let recorder = Arc::new(Recorder::default());
        let bridge = MemoryBridge::new(10, recorder).with_room_limits(Duration::from_secs(3600), 2);
        bridge.publish(system("old", "1")).await.unwrap();
        let ann = member("s1", "Ann");
        bridge.enter_room("used", &ann).await.unwrap();
        bridge.publish(system("new", "2")).await.unwrap();
        assert_eq!(bridge.rooms.read().len(), 2);
        assert!(
            bridge.recent("old", 10).await.unwrap().is_empty(),
            "evicted"
        );
        assert_eq!(bridge.recent("new", 10).await.unwrap().len(), 1);
        assert_eq!(
            bridge.rooms(10).await.unwrap().len(),
            1,
            "the room in use stays"
        );
    }
}
