//! Cluster-wide answers for the admin API, read from what every gateway
//! writes anyway: heartbeats (`gateways`, `alive`), name claims, presence
//! hashes, room streams and the room-activity index. Entries of gateways
//! whose heartbeat expired are left out before the reaper removes them.
//!
//! Reads fan out over many keys (one per room or gateway); each batch is one
//! pipelined round trip, so a listing costs a few round trips, not one per room.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use chat_proto::rules::{now_ms, ACTIVE_ROOM_WINDOW};
use fred::clients::Pipeline;
use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::control::Control;
use super::{control, parse_entries, unavailable, Holder, Inner, RedisBridge};
use crate::{
    Ban, BridgeError, BridgeEvent, ClusterAdmin, ControlCommand, GatewayStatus, Result,
    RoomSummary, UserSummary,
};

/// Commands per pipelined round trip (bounds the size of one request).
const BATCH: usize = 512;

/// A gateway's entry in the `gateways` hash (JSON), written by its heartbeat.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StatusRecord {
    /// The process (instance) that wrote it; absent in records of older
    /// gateways, whose instance was their gateway id.
    #[serde(default)]
    pub(super) instance: String,
    pub(super) address: String,
    pub(super) connections: u32,
    pub(super) started_at_ms: u64,
    pub(super) last_heartbeat_ms: u64,
    pub(super) draining: bool,
}

/// One read per key, pipelined.
#[derive(Debug, Clone, Copy)]
enum Read<'a> {
    HGetAll,
    HGet(&'a str),
    Exists,
    Get,
    SMembers,
    /// The newest stream entry.
    Tip,
}

impl StatusRecord {
    /// The instance that wrote this record.
    pub(super) fn instance_or<'a>(&'a self, gateway_id: &'a str) -> &'a str {
        if self.instance.is_empty() {
            gateway_id
        } else {
            &self.instance
        }
    }
}

/// The live gateways, and which instance is each one's live process.
pub(super) struct Live {
    pub(super) gateways: BTreeMap<String, GatewayStatus>,
    /// Live instance -> its gateway id.
    instances: HashMap<String, String>,
}

impl Live {
    /// The gateway of a holder's instance, if that instance is alive.
    fn gateway_of(&self, instance: &str) -> Option<&str> {
        self.instances.get(instance).map(String::as_str)
    }
}

fn as_string(value: Value) -> Option<String> {
    value.into_string()
}

/// What is known about one user while the listing is assembled.
#[derive(Default)]
struct UserAcc {
    display: String,
    rooms: BTreeSet<String>,
    /// (gateway, session)
    sessions: BTreeSet<(String, String)>,
}

impl UserAcc {
    fn saw(&mut self, gateway: &str, session: &str, display: &str) {
        if self.display.is_empty() {
            display.clone_into(&mut self.display);
        }
        self.sessions
            .insert((gateway.to_owned(), session.to_owned()));
    }
}

impl Inner {
    /// Runs `read` on every key in pipelined batches; one reply per key.
    async fn batch(&self, read: Read<'_>, keys: Vec<String>) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let pipeline: Pipeline<Client> = self.client.pipeline();
            for key in chunk {
                let key = key.as_str();
                let queued: Result<(), fred::error::Error> = match read {
                    Read::HGetAll => pipeline.hgetall(key).await,
                    Read::HGet(field) => pipeline.hget(key, field).await,
                    Read::Exists => pipeline.exists(key).await,
                    Read::Get => pipeline.get(key).await,
                    Read::SMembers => pipeline.smembers(key).await,
                    Read::Tip => pipeline.xrevrange(key, "+", "-", Some(1)).await,
                };
                queued.map_err(unavailable)?;
            }
            for reply in pipeline.try_all::<Value>().await {
                out.push(reply.map_err(unavailable)?);
            }
        }
        Ok(out)
    }

    async fn smembers_sorted(&self, key: String) -> Result<Vec<String>> {
        let members: BTreeSet<String> = self.client.smembers(key).await.map_err(unavailable)?;
        Ok(members.into_iter().collect())
    }

    /// This gateway's status as the heartbeat writes it.
    pub(super) fn status_record(&self) -> StatusRecord {
        StatusRecord {
            instance: self.config.instance.clone(),
            address: self.config.address.clone(),
            connections: self.connections.load(Ordering::Relaxed),
            started_at_ms: self.started_at_ms,
            last_heartbeat_ms: now_ms(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }

    /// Gateways whose current instance's heartbeat key exists (this one
    /// always), by id.
    pub(super) async fn live_gateways(&self) -> Result<Live> {
        let me = &self.config.gateway_id;
        let records: HashMap<String, String> = self
            .client
            .hgetall(self.keys.gateways())
            .await
            .map_err(unavailable)?;
        let mut others: Vec<(&String, StatusRecord)> = Vec::new();
        for (id, record) in records.iter().filter(|(id, _)| *id != me) {
            match serde_json::from_str::<StatusRecord>(record) {
                Ok(record) => others.push((id, record)),
                Err(e) => tracing::warn!(gateway = %id, error = %e, "unreadable gateway status"),
            }
        }
        let alive = self
            .batch(
                Read::Exists,
                others
                    .iter()
                    .map(|(id, record)| self.keys.alive(record.instance_or(id)))
                    .collect(),
            )
            .await?;
        let mut live = Live {
            gateways: BTreeMap::new(),
            instances: HashMap::new(),
        };
        for ((id, record), alive) in others.into_iter().zip(alive) {
            if alive.as_u64() == Some(1) {
                live.instances
                    .insert(record.instance_or(id).to_owned(), id.clone());
                live.gateways.insert(id.clone(), gateway_status(id, record));
            }
        }
        live.instances
            .insert(self.config.instance.clone(), me.clone());
        live.gateways
            .insert(me.clone(), gateway_status(me, self.status_record()));
        Ok(live)
    }

    pub(super) async fn room_overview(&self) -> Result<Vec<RoomSummary>> {
        let live = self.live_gateways().await?;
        let active_since = now_ms().saturating_sub(ACTIVE_ROOM_WINDOW.as_millis() as u64);
        let activity = self.keys.room_activity();
        // Housekeeping: rooms quiet for longer than the window leave the index.
        let _: u64 = self
            .client
            .zremrangebyscore(&activity, "-inf", (active_since as f64) - 1.0)
            .await
            .map_err(unavailable)?;
        let mut names: BTreeSet<String> = self
            .client
            .smembers(self.keys.rooms())
            .await
            .map_err(unavailable)?;
        let active: Vec<String> = self
            .client
            .zrangebyscore(&activity, active_since as f64, "+inf", false, None)
            .await
            .map_err(unavailable)?;
        names.extend(active);
        let rooms: Vec<String> = names.into_iter().collect();
        let presence = self
            .batch(
                Read::HGetAll,
                rooms.iter().map(|r| self.keys.members(r)).collect(),
            )
            .await?;
        let tips = self
            .batch(
                Read::Tip,
                rooms.iter().map(|r| self.keys.stream(r)).collect(),
            )
            .await?;
        let mut out = Vec::new();
        for ((room, presence), tip) in rooms.into_iter().zip(presence).zip(tips) {
            let members = presence_of(presence)?;
            let member_count = members
                .values()
                .filter(|v| Holder::parse(v).is_some_and(|h| live.gateway_of(h.instance).is_some()))
                .count() as u32;
            let last = parse_entries(&room, tip)?.pop();
            let last_at = last.as_ref().map_or(0, |m| m.sent_at_ms);
            if member_count == 0 && (last.is_none() || last_at < active_since) {
                continue;
            }
            out.push(RoomSummary {
                last_message_id: last.as_ref().and_then(|m| m.id.parse().ok()),
                last_message_at_ms: last_at,
                name: room,
                member_count,
            });
        }
        Ok(out)
    }

    pub(super) async fn users(&self, room: Option<&str>) -> Result<Vec<UserSummary>> {
        let live = self.live_gateways().await?;
        let mut users: BTreeMap<String, UserAcc> = BTreeMap::new();

        // Presence: who is in which room.
        let rooms = self.smembers_sorted(self.keys.rooms()).await?;
        let presence = self
            .batch(
                Read::HGetAll,
                rooms.iter().map(|r| self.keys.members(r)).collect(),
            )
            .await?;
        for (room, presence) in rooms.iter().zip(presence) {
            for (key, value) in presence_of(presence)? {
                let Some(holder) = Holder::parse(&value) else {
                    continue;
                };
                if let Some(gw) = live.gateway_of(holder.instance) {
                    let user = users.entry(key).or_default();
                    user.rooms.insert(room.clone());
                    user.saw(gw, holder.session, holder.display);
                }
            }
        }

        // Names: connected users, also those in no room.
        let claimed = self
            .batch(
                Read::SMembers,
                live.instances
                    .keys()
                    .map(|instance| self.keys.gateway_names(instance))
                    .collect(),
            )
            .await?;
        let mut keys: Vec<String> = Vec::new();
        for claimed in claimed {
            keys.extend(
                claimed
                    .convert::<Vec<String>>()
                    .map_err(|e| BridgeError::Corrupt(e.to_string()))?,
            );
        }
        keys.sort();
        keys.dedup();
        let holders = self
            .batch(Read::Get, keys.iter().map(|k| self.keys.name(k)).collect())
            .await?;
        for (key, holder) in keys.into_iter().zip(holders) {
            let Some(holder) = as_string(holder) else {
                continue;
            };
            let Some(holder) = Holder::parse(&holder) else {
                continue;
            };
            if let Some(gw) = live.gateway_of(holder.instance) {
                users
                    .entry(key)
                    .or_default()
                    .saw(gw, holder.session, holder.display);
            }
        }

        Ok(users
            .into_iter()
            .filter(|(_, user)| room.is_none_or(|room| user.rooms.contains(room)))
            .map(|(key, user)| {
                let gateway_ids: BTreeSet<&String> =
                    user.sessions.iter().map(|(gw, _)| gw).collect();
                UserSummary {
                    username: if user.display.is_empty() {
                        key.clone()
                    } else {
                        user.display.clone()
                    },
                    gateway_ids: gateway_ids.into_iter().cloned().collect(),
                    connections: user.sessions.len() as u32,
                    rooms: user.rooms.into_iter().collect(),
                    key,
                }
            })
            .collect())
    }

    /// The live sessions holding `key` (in `room` only, when set).
    pub(super) async fn sessions_of(
        &self,
        key: &str,
        room: Option<&str>,
    ) -> Result<HashSet<(String, String)>> {
        let live = self.live_gateways().await?;
        let mut holders: Vec<Value> = Vec::new();
        match room {
            Some(room) => {
                holders.extend(
                    self.batch(Read::HGet(key), vec![self.keys.members(room)])
                        .await?,
                );
            }
            None => {
                holders.extend(self.batch(Read::Get, vec![self.keys.name(key)]).await?);
                let rooms = self.smembers_sorted(self.keys.rooms()).await?;
                holders.extend(
                    self.batch(
                        Read::HGet(key),
                        rooms.iter().map(|r| self.keys.members(r)).collect(),
                    )
                    .await?,
                );
            }
        }
        Ok(holders
            .into_iter()
            .filter_map(as_string)
            .filter_map(|value| {
                let holder = Holder::parse(&value)?;
                let gw = live.gateway_of(holder.instance)?;
                Some((gw.to_owned(), holder.session.to_owned()))
            })
            .collect())
    }

    pub(super) async fn kick(&self, key: &str, room: Option<&str>, reason: &str) -> Result<u32> {
        let sessions = self.sessions_of(key, room).await?;
        if !sessions.is_empty() {
            let control = Control::Kick {
                key: key.to_owned(),
                room: room.map(str::to_owned),
                reason: reason.to_owned(),
            };
            self.publish_control(&control).await?;
        }
        Ok(sessions.len() as u32)
    }

    /// Asks the gateway to drain and waits for its answer: how many
    /// connections it told to reconnect.
    pub(super) async fn drain_gateway(&self, gateway_id: &str) -> Result<Option<u32>> {
        let reply = self.drains.expect(&self.config.instance);
        if gateway_id == self.config.gateway_id {
            // This gateway: no need for the round trip through Redis.
            self.sink
                .deliver(BridgeEvent::Control(ControlCommand::Drain {
                    reply_to: Some(reply.id().to_owned()),
                }));
            return reply.wait(gateway_id).await.map(Some);
        }
        let live = self.live_gateways().await?;
        if !live.gateways.contains_key(gateway_id) {
            return Ok(None);
        }
        let control = Control::Drain {
            gateway_id: gateway_id.to_owned(),
            reply_to: Some(reply.id().to_owned()),
        };
        self.publish_control(&control).await?;
        reply.wait(gateway_id).await.map(Some)
    }
}

#[async_trait]
impl ClusterAdmin for RedisBridge {
    async fn room_overview(&self) -> Result<Vec<RoomSummary>> {
        self.inner.check()?;
        self.inner.room_overview().await
    }

    async fn users(&self, room: Option<&str>) -> Result<Vec<UserSummary>> {
        self.inner.check()?;
        self.inner.users(room).await
    }

    async fn gateways(&self) -> Result<Vec<GatewayStatus>> {
        self.inner.check()?;
        Ok(self
            .inner
            .live_gateways()
            .await?
            .gateways
            .into_values()
            .collect())
    }

    async fn kick(&self, key: &str, room: Option<&str>, reason: &str) -> Result<u32> {
        self.inner.check()?;
        self.inner.kick(key, room, reason).await
    }

    async fn ban(&self, ban: &Ban) -> Result<u32> {
        self.inner.check()?;
        self.inner.ban(ban).await
    }

    async fn unban(&self, key: &str) -> Result<bool> {
        self.inner.check()?;
        self.inner.unban(key).await
    }

    async fn bans(&self) -> Result<Vec<Ban>> {
        self.inner.check()?;
        self.inner.bans().await
    }

    async fn drain_gateway(&self, gateway_id: &str) -> Result<Option<u32>> {
        self.inner.check()?;
        self.inner.drain_gateway(gateway_id).await
    }

    async fn drained(&self, reply_to: &str, told: u32) {
        let inner = &self.inner;
        let answer = control::Control::Drained {
            reply_to: reply_to.to_owned(),
            told,
        };
        // Through the control channel even when this gateway asked, so
        // there is one path; a local request is answered locally if Redis
        // cannot carry it.
        let published = inner
            .publish_on(inner.keys.control(), inner.sealed(&answer))
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "answering a drain request failed");
            inner.drains.answer(reply_to, told);
        }
    }
}

fn gateway_status(id: &str, record: StatusRecord) -> GatewayStatus {
    GatewayStatus {
        id: id.to_owned(),
        address: record.address,
        connections: record.connections,
        started_at_ms: record.started_at_ms,
        last_heartbeat_ms: record.last_heartbeat_ms,
        draining: record.draining,
    }
}

/// A presence hash (HGETALL reply): name key -> holder.
fn presence_of(value: Value) -> Result<HashMap<String, String>> {
    value
        .convert()
        .map_err(|e| BridgeError::Corrupt(format!("presence hash: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_parse_with_and_without_display_name_and_hash() {
        let parsed = |v| Holder::parse(v).map(|h| (h.instance, h.session, h.display, h.resume));
        assert_eq!(
            parsed("gw-1~a\tgw-1~a-7\tAnn Lee"),
            Some(("gw-1~a", "gw-1~a-7", "Ann Lee", None))
        );
        assert_eq!(
            parsed("gw-1~a\tgw-1~a-7\tAnn Lee\tab12"),
            Some(("gw-1~a", "gw-1~a-7", "Ann Lee", Some("ab12")))
        );
        assert_eq!(parsed("gw-1\tgw-1-7\t"), Some(("gw-1", "gw-1-7", "", None)));
        assert_eq!(parsed("gw-1\tgw-1-7"), Some(("gw-1", "gw-1-7", "", None)));
        assert_eq!(parsed("gw-1"), None);
        assert_eq!(parsed(""), None);
    }

    #[test]
    fn status_records_round_trip_as_json() {
        let record = StatusRecord {
            instance: "g~1".into(),
            address: "10.0.0.1:8080".into(),
            connections: 3,
            started_at_ms: 1,
            last_heartbeat_ms: 2,
            draining: true,
        };
        let json = serde_json::to_string(&record).unwrap();
        let back: StatusRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(gateway_status("g", back).connections, 3);
        assert!(json.contains("\"draining\":true"), "{json}");
    }
}

#[cfg(test)]
mod legacy_tests {
    use super::*;

    #[test]
    fn records_of_older_gateways_name_their_gateway_as_instance() {
        let old = r#"{"address":"a:1","connections":0,"started_at_ms":1,"last_heartbeat_ms":2,"draining":false}"#;
        let record: StatusRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.instance_or("gw-1"), "gw-1");
    }
}
