//! The embedded backend's admin answers (this process is the whole
//! cluster: one gateway) and its lifecycle.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use chat_proto::rules::{now_ms, ACTIVE_ROOM_WINDOW};

use super::MemoryBridge;
use crate::{
    Ban, BridgeEvent, ClusterAdmin, ControlCommand, GatewayStatus, Lifecycle, Result, RoomSummary,
    UserSummary,
};

#[async_trait]
impl ClusterAdmin for MemoryBridge {
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

    async fn ban(&self, ban: &Ban) -> Result<u32> {
        self.record_ban(ban);
        let sessions = self.kick(&ban.key, None, &ban.message()).await?;
        Ok(self.kick_banned(ban, sessions))
    }

    async fn unban(&self, key: &str) -> Result<bool> {
        Ok(self.lift_ban(key))
    }

    async fn bans(&self) -> Result<Vec<Ban>> {
        Ok(self.active_bans())
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
}

#[async_trait]
impl Lifecycle for MemoryBridge {
    fn is_available(&self) -> bool {
        true
    }

    fn set_load(&self, connections: u32, draining: bool) {
        self.connections.store(connections, Ordering::Relaxed);
        self.draining.store(draining, Ordering::Relaxed);
    }
}
