//! The Redis backend: many gateways, one chat.
//!
//! - Messages: one stream per room is the history; a Lua script dedupes,
//!   appends, trims and publishes in one atomic step, so the stream id is the
//!   message id and publish order is id order.
//! - Delivery: one subscriber connection per gateway. Its dispatcher task
//!   remembers the last id delivered per room; after the connection comes
//!   back it re-subscribes, reads each stream after that id, delivers what
//!   was missed, and drops anything already delivered.
//! - Presence and names are tagged with the gateway's instance (one per
//!   process, so a restarted gateway does not own what its crashed
//!   predecessor left) and indexed per instance; every instance heartbeats a
//!   key with a short TTL and cleans up after instances whose heartbeat
//!   expired (publishing `Left` for their users). A name claim carries the
//!   hash of its session's resume token, so the client's next session can
//!   take the name and presence over ([`Bridge::resume_username`]).
//! - Admin: listings are read from those same keys ([`admin`]); operator
//!   commands travel on one control channel every gateway subscribes to
//!   ([`control`]) and reach the gateway's sink as `BridgeEvent::Control`.
//!
//! Key names are in [`keys`]; the README documents them.

mod admin;
mod control;
mod dispatcher;
mod entry;
#[cfg(test)]
mod golden_tests;
mod keys;
mod liveness;
mod presence;
mod publisher;
mod scripts;
mod stream;
mod wire;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chat_proto::v1::ChatMessage;
use chat_proto::MessageId;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use keys::Keys;

use dispatcher::Cursor;
use entry::{claim_value, entry_value, instance_tag, tag_of, Holder};
use liveness::{beat, heartbeat, reap_instance};
use presence::count_members;
use publisher::{PublishJob, PUBLISH_QUEUE};
use stream::parse_entries;

use crate::drain::DrainReplies;
use crate::{
    Accepted, Bridge, BridgeError, BridgeEvent, EventSink, GatewayStatus, HistoryPage, Member,
    NewMessage, Pending, PresenceKind, Replay, Result, Resumed, RoomSummary, TokenHash,
    UserSummary,
};

/// Commands fail with UNAVAILABLE after this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How to reach Redis and who this gateway is.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    pub gateway_id: String,
    /// This process's identity, unique per start (see the module docs):
    /// everything it writes is owned by it. Contains no whitespace.
    pub instance: String,
    /// Where clients reach this gateway (for the admin API).
    pub address: String,
    /// The socket address this process has bound for clients. When an
    /// earlier process with the same gateway id advertised exactly this
    /// loopback address, it cannot be alive (the port is ours), so the
    /// start does not wait to see whether it still beats.
    pub bound: Option<SocketAddr>,
    /// Messages kept per room.
    pub history_len: usize,
    /// A room with no members and no message for this long is dropped
    /// (its keys expire).
    pub room_ttl: Duration,
}

/// Bridge on a shared Redis.
pub struct RedisBridge {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    config: RedisConfig,
    keys: Keys,
    client: Client,
    subscriber: SubscriberClient,
    sink: Arc<dyn EventSink>,
    /// Messages on their way to the [`publisher`] task, in submission order.
    publish_queue: mpsc::Sender<PublishJob>,
    publish: Script,
    enter: Script,
    leave: Script,
    reap_room: Script,
    delete_if_prefix: Script,
    swap: Script,
    take_if_prefix: Script,
    /// Subscription references per room, each behind its own async mutex:
    /// it is held across that room's SUBSCRIBE/UNSUBSCRIBE so that they
    /// reach Redis in the order the count changed, while joins of other
    /// rooms go on (a reconnect storm joins thousands of rooms at once). The
    /// map's lock is synchronous and held only to find or drop an entry.
    subs: Mutex<HashMap<String, Arc<RoomSubscription>>>,
    /// Delivery cursors per subscribed room (dispatcher state; sync lock,
    /// never held across an await).
    cursors: Mutex<HashMap<String, Cursor>>,
    /// What this gateway wrote into Redis, to restore it after an outage.
    local: Mutex<Local>,
    started_at_ms: u64,
    connections: AtomicU32,
    draining: AtomicBool,
    /// Signalled by `set_load`: the heartbeat writes the new load now
    /// rather than at the next beat, so operators see drains promptly.
    load_changed: Notify,
    /// Drain requests of this gateway waiting for the drained one's answer.
    drains: DrainReplies,
    /// Earlier processes of this gateway id found dead at start: cleaned up
    /// as soon as their heartbeat expires, without the reaping delay.
    predecessors: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct Local {
    /// session id -> member holding a name, and its resume token's hash.
    names: HashMap<String, (Member, TokenHash)>,
    /// (room, session id) -> member present in the room.
    presence: HashMap<(String, String), Member>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(e: fred::error::Error) -> BridgeError {
    BridgeError::Unavailable(e.to_string())
}

impl RedisBridge {
    /// Connects (waiting up to a few seconds; if Redis is down the bridge
    /// starts anyway, reports unavailable and keeps reconnecting) and starts
    /// the dispatcher and heartbeat tasks.
    pub async fn connect(config: RedisConfig, sink: Arc<dyn EventSink>) -> Result<Self> {
        let redis_config = Config::from_url(&config.url)
            .map_err(|e| BridgeError::Unavailable(format!("invalid redis url: {e}")))?;
        let mut builder = Builder::from_config(redis_config);
        builder
            .with_config(|c| c.fail_fast = false)
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = 1 << 14;
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 1;
                c.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        client.connect();
        subscriber.connect();
        for c in [&client, &subscriber.to_client()] {
            if tokio::time::timeout(Duration::from_secs(5), c.wait_for_connect())
                .await
                .is_err()
            {
                tracing::warn!(url = %config.url, "redis is not reachable yet; retrying in the background");
            }
        }
        let (publish_queue, jobs) = mpsc::channel(PUBLISH_QUEUE);
        let inner = Arc::new(Inner {
            keys: Keys::new(&config.prefix),
            config,
            client,
            subscriber,
            sink,
            publish_queue,
            publish: Script::from_lua(scripts::PUBLISH),
            enter: Script::from_lua(scripts::ENTER),
            leave: Script::from_lua(scripts::LEAVE),
            reap_room: Script::from_lua(scripts::REAP_ROOM),
            delete_if_prefix: Script::from_lua(scripts::DELETE_IF_PREFIX),
            swap: Script::from_lua(scripts::SWAP),
            take_if_prefix: Script::from_lua(scripts::TAKE_IF_PREFIX),
            subs: Default::default(),
            cursors: Default::default(),
            local: Default::default(),
            started_at_ms: now_ms(),
            connections: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            load_changed: Notify::new(),
            drains: DrainReplies::default(),
            predecessors: Default::default(),
        });
        if let Err(e) = inner.subscriber.subscribe(inner.keys.control()).await {
            tracing::warn!(error = %e, "subscribing to the control channel failed; retried on reconnect");
        }
        // Announce this gateway before it takes clients, so that the others
        // (and their admin answers) count its sessions from the start; but
        // first make sure no live process already serves this gateway id.
        if inner.client.is_connected() {
            match inner.find_predecessor().await {
                Ok(Some(dead)) => {
                    tracing::info!(instance = %dead, "an earlier process of this gateway died; its sessions stay resumable until its heartbeat expires, then are cleaned up");
                    inner.predecessors.lock().insert(dead);
                }
                Ok(None) => {}
                Err(e @ BridgeError::GatewayIdInUse { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "checking for an earlier process of this gateway failed")
                }
            }
            if let Err(e) = beat(&inner).await {
                tracing::warn!(error = %e, "first heartbeat failed; retried by the heartbeat task");
            }
        }
        let tasks = vec![
            tokio::spawn(dispatcher::run(inner.clone())),
            tokio::spawn(publisher::run(inner.clone(), jobs)),
            tokio::spawn(heartbeat(inner.clone())),
        ];
        Ok(Self { inner, tasks })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }
}

impl Drop for RedisBridge {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One room's subscription: how many local references it has (0 while it is
/// being set up or after it failed).
#[derive(Default)]
struct RoomSubscription {
    count: tokio::sync::Mutex<usize>,
}

impl Inner {
    /// Whether `entry` is still the room's subscription entry.
    fn subscription_is(&self, room: &str, entry: &Arc<RoomSubscription>) -> bool {
        self.subs
            .lock()
            .get(room)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
    }

    /// Forgets the room's subscription entry if it is still `entry`.
    fn drop_subscription(&self, room: &str, entry: &Arc<RoomSubscription>) {
        let mut subs = self.subs.lock();
        if subs
            .get(room)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
        {
            subs.remove(room);
        }
    }

    fn check(&self) -> Result<()> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(BridgeError::Unavailable("not connected to redis".into()))
        }
    }
}

#[async_trait]
impl Bridge for RedisBridge {
    async fn subscribe(&self, room: &str) -> Result<()> {
        let inner = &self.inner;
        loop {
            let entry = inner
                .subs
                .lock()
                .entry(room.to_owned())
                .or_default()
                .clone();
            let mut count = entry.count.lock().await;
            if !inner.subscription_is(room, &entry) {
                continue; // Dropped by an unsubscribe while we waited: start again.
            }
            if *count > 0 {
                *count += 1;
                return Ok(());
            }
            inner.check()?;
            inner.cursors.lock().entry(room.to_owned()).or_default();
            let subscribed = async {
                inner
                    .subscriber
                    .subscribe(inner.keys.channel(room))
                    .await
                    .map_err(unavailable)?;
                // Where a gap read starts if the connection drops before the first message.
                let tip: Value = inner
                    .client
                    .xrevrange(inner.keys.stream(room), "+", "-", Some(1))
                    .await
                    .map_err(unavailable)?;
                Ok::<_, BridgeError>(
                    parse_entries(room, tip)?
                        .first()
                        .and_then(|m| m.id.parse().ok()),
                )
            }
            .await;
            return match subscribed {
                Ok(tip) => {
                    if let Some(cursor) = inner.cursors.lock().get_mut(room) {
                        cursor.floor = tip.unwrap_or(MessageId::ZERO);
                    }
                    *count = 1;
                    Ok(())
                }
                Err(e) => {
                    inner.cursors.lock().remove(room);
                    let _ = inner.subscriber.unsubscribe(inner.keys.channel(room)).await;
                    inner.drop_subscription(room, &entry);
                    Err(e)
                }
            };
        }
    }

    async fn unsubscribe(&self, room: &str) -> Result<()> {
        let inner = &self.inner;
        let Some(entry) = inner.subs.lock().get(room).cloned() else {
            return Ok(());
        };
        let mut count = entry.count.lock().await;
        if *count == 0 || !inner.subscription_is(room, &entry) {
            return Ok(());
        }
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        inner.cursors.lock().remove(room);
        let unsubscribed = inner
            .subscriber
            .unsubscribe(inner.keys.channel(room))
            .await
            .map_err(unavailable);
        // Only now: a subscribe waiting on this entry starts again with a
        // new one, so its SUBSCRIBE goes out after this UNSUBSCRIBE.
        inner.drop_subscription(room, &entry);
        unsubscribed
    }

    async fn publish(&self, msg: NewMessage) -> Result<Accepted> {
        self.submit(msg).await.await
    }

    async fn submit(&self, msg: NewMessage) -> Pending {
        let inner = &self.inner;
        if let Err(e) = inner.check() {
            return Pending::ready(Err(e));
        }
        let (reply, outcome) = oneshot::channel();
        let job = PublishJob::new(&inner.keys, msg, reply);
        match inner.publish_queue.send(job).await {
            Ok(()) => Pending::waiting(outcome),
            Err(_) => Pending::ready(Err(BridgeError::Unavailable(
                "the publisher stopped".into(),
            ))),
        }
    }

    async fn find_duplicate(
        &self,
        room: &str,
        sender_key: &str,
        client_msg_id: &str,
    ) -> Result<Option<Accepted>> {
        let inner = &self.inner;
        inner.check()?;
        let id: Option<String> = inner
            .client
            .get(inner.keys.dedupe(room, sender_key, client_msg_id))
            .await
            .map_err(unavailable)?;
        Ok(id
            .and_then(|id| id.parse::<MessageId>().ok())
            .map(|id| Accepted {
                id,
                sent_at_ms: id.ms,
                duplicate: true,
            }))
    }

    async fn replay_after(&self, room: &str, after: MessageId) -> Result<Replay> {
        let inner = &self.inner;
        inner.check()?;
        // One round trip, the stream first: a trim between the two reads
        // then flags the replay as truncated rather than hiding a gap.
        let pipeline = inner.client.pipeline();
        let queued = async {
            let _: () = pipeline
                .xrange(
                    inner.keys.stream(room),
                    format!("({after}"),
                    "+",
                    None::<u64>,
                )
                .await?;
            pipeline.get::<(), _>(inner.keys.trimmed(room)).await
        };
        queued.await.map_err(unavailable)?;
        let mut replies = pipeline.try_all::<Value>().await.into_iter();
        let (Some(entries), Some(trimmed)) = (replies.next(), replies.next()) else {
            return Err(BridgeError::Unavailable("no reply from redis".into()));
        };
        let messages = parse_entries(room, entries.map_err(unavailable)?)?;
        let trimmed: Option<String> = trimmed.map_err(unavailable)?.convert().ok().flatten();
        let truncated = trimmed
            .and_then(|t| t.parse::<MessageId>().ok())
            .is_some_and(|t| t > after);
        Ok(Replay {
            messages,
            truncated,
        })
    }

    async fn recent(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>> {
        let inner = &self.inner;
        inner.check()?;
        let value: Value = inner
            .client
            .xrevrange(inner.keys.stream(room), "+", "-", Some(limit as u64))
            .await
            .map_err(unavailable)?;
        let mut messages = parse_entries(room, value)?;
        messages.reverse();
        Ok(messages)
    }

    async fn history_before(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let inner = &self.inner;
        inner.check()?;
        let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let value: Value = inner
            .client
            .xrevrange(inner.keys.stream(room), end, "-", Some(limit as u64 + 1))
            .await
            .map_err(unavailable)?;
        let mut messages = parse_entries(room, value)?;
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        messages.reverse();
        Ok(HistoryPage { messages, has_more })
    }

    async fn typing(&self, room: &str, member: &Member, active: bool) -> Result<()> {
        let inner = &self.inner;
        inner.check()?;
        let _: () = inner
            .client
            .publish(
                inner.keys.channel(room),
                wire::typing(active, &member.key, &member.username),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_username(&self, member: &Member, resume: &TokenHash) -> Result<bool> {
        self.inner.check()?;
        let claimed = self.inner.claim(member, resume).await?;
        if claimed {
            self.inner
                .local
                .lock()
                .names
                .insert(member.session_id.clone(), (member.clone(), resume.clone()));
        }
        Ok(claimed)
    }

    async fn resume_username(
        &self,
        member: &Member,
        presented: &TokenHash,
        resume: &TokenHash,
    ) -> Result<Option<Resumed>> {
        self.inner.check()?;
        let resumed = self.inner.resume(member, presented, resume).await?;
        if resumed.is_some() {
            self.inner
                .local
                .lock()
                .names
                .insert(member.session_id.clone(), (member.clone(), resume.clone()));
        }
        Ok(resumed)
    }

    async fn release_username(&self, member: &Member) -> Result<()> {
        let inner = &self.inner;
        inner.local.lock().names.remove(&member.session_id);
        inner.check()?;
        let released: u64 = inner
            .delete_if_prefix
            .evalsha_with_reload(
                &inner.client,
                vec![inner.keys.name(&member.key)],
                vec![inner.tag(member)],
            )
            .await
            .map_err(unavailable)?;
        // Only when the name was still ours: after a resume on this same
        // gateway, the index entry belongs to the session that took it.
        if released == 1 {
            let _: () = inner
                .client
                .srem(
                    inner.keys.gateway_names(&inner.config.instance),
                    member.key.as_str(),
                )
                .await
                .map_err(unavailable)?;
        }
        let _: () = inner
            .client
            .del(inner.keys.session_rooms(&member.session_id))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn enter_room(&self, room: &str, member: &Member) -> Result<Vec<String>> {
        self.inner.check()?;
        let names = self.inner.enter(room, member).await?;
        self.inner
            .local
            .lock()
            .presence
            .insert((room.to_owned(), member.session_id.clone()), member.clone());
        Ok(names)
    }

    async fn leave_room(&self, room: &str, member: &Member) -> Result<()> {
        let inner = &self.inner;
        inner
            .local
            .lock()
            .presence
            .remove(&(room.to_owned(), member.session_id.clone()));
        inner.check()?;
        let payload = wire::presence(PresenceKind::Left, &member.key, &member.username);
        let left: i64 = inner
            .leave
            .evalsha_with_reload(
                &inner.client,
                inner.room_state_keys(room),
                vec![
                    member.key.clone(),
                    inner.tag(member),
                    inner.keys.channel(room),
                    payload,
                    inner.room_ttl_ms(),
                ],
            )
            .await
            .map_err(unavailable)?;
        if left >= 0 {
            count_members(&inner.client, &inner.keys, room, left)
                .await
                .map_err(unavailable)?;
        }
        let _: () = inner
            .client
            .srem(inner.keys.session_rooms(&member.session_id), room)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn rooms(&self, limit: usize) -> Result<Vec<RoomSummary>> {
        let inner = &self.inner;
        inner.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The ranking, then the true counts of those rooms: two round trips
        // whatever the number of rooms. A count the index got wrong (a
        // gateway died between a presence script and its index write) is
        // corrected on the way.
        let ranked: Vec<String> = inner
            .client
            .zrevrange(inner.keys.room_members(), 0, limit as i64 - 1, false)
            .await
            .map_err(unavailable)?;
        let pipeline = inner.client.pipeline();
        for room in &ranked {
            let _: () = pipeline
                .hlen(inner.keys.members(room))
                .await
                .map_err(unavailable)?;
        }
        let counts = pipeline.try_all::<u64>().await;
        let mut out = Vec::with_capacity(ranked.len());
        for (room, count) in ranked.into_iter().zip(counts) {
            let count = count.map_err(unavailable)?;
            if count > 0 {
                out.push(RoomSummary {
                    name: room,
                    member_count: count as u32,
                    last_message_id: None,
                    last_message_at_ms: 0,
                });
            } else {
                count_members(&inner.client, &inner.keys, &room, 0)
                    .await
                    .map_err(unavailable)?;
            }
        }
        out.sort_by(|a, b| {
            b.member_count
                .cmp(&a.member_count)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(out)
    }

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
        let published: Result<u64, _> = inner
            .client
            .publish(inner.keys.control(), answer.encode())
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "answering a drain request failed");
            inner.drains.answer(reply_to, told);
        }
    }

    fn is_available(&self) -> bool {
        self.inner.client.is_connected() && self.inner.subscriber.is_connected()
    }

    async fn leave_cluster(&self) {
        let inner = &self.inner;
        if inner.check().is_err() {
            return; // Peers clean up after the heartbeat expires.
        }
        let id = inner.config.gateway_id.clone();
        let instance = inner.config.instance.clone();
        // Stop the heartbeat first so it cannot write the status back.
        for task in &self.tasks {
            task.abort();
        }
        let cleaned = async {
            let _: () = inner.client.del(inner.keys.alive(&instance)).await?;
            // Whatever sessions could not remove themselves (e.g. Redis blipped).
            reap_instance(inner, &instance, &id).await?;
            Ok::<_, fred::error::Error>(())
        };
        match cleaned.await {
            Ok(()) => tracing::info!(gateway = %id, "left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "leaving the cluster failed; peers clean up after the heartbeat expires")
            }
        }
    }

    fn set_load(&self, connections: u32, draining: bool) {
        let inner = &self.inner;
        let before = inner.connections.swap(connections, Ordering::Relaxed);
        let was_draining = inner.draining.swap(draining, Ordering::Relaxed);
        if before != connections || was_draining != draining {
            inner.load_changed.notify_one();
        }
    }
}

impl std::fmt::Debug for RedisBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBridge")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
