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
mod keys;
mod scripts;
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

use crate::drain::DrainReplies;
use crate::{
    Accepted, Bridge, BridgeError, BridgeEvent, EventSink, GatewayStatus, HistoryPage, Member,
    NewMessage, Pending, PresenceKind, Replay, Result, Resumed, RoomSummary, TokenHash,
    UserSummary,
};

/// How long a `client_msg_id` is remembered, in seconds.
const DEDUPE_TTL_SECS: u64 = 600;
/// Heartbeat period and the TTL of the heartbeat key. A crashed gateway's
/// key expires at most `HEARTBEAT_TTL` after the crash and a peer's next beat
/// (at most `HEARTBEAT_EVERY` later) cleans up: its users are shown leaving
/// and their names are free within 5 s. The cost is one pipelined write and
/// two reads per gateway per second.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// A gateway must have been connected this long before it judges others dead,
/// so that one coming back from an outage (Redis restarted empty, say) does
/// not reap peers that have not refreshed their heartbeat yet. Its own dead
/// predecessors are exempt: it knows them dead.
const REAP_AFTER_CONNECTED: Duration =
    Duration::from_millis(HEARTBEAT_TTL.as_millis() as u64 + HEARTBEAT_EVERY.as_millis() as u64);
/// How long a starting gateway watches the heartbeat of an earlier process
/// with its id: a live one beats within this time, a crashed one does not.
const PREDECESSOR_WATCH: Duration =
    Duration::from_millis(2 * HEARTBEAT_EVERY.as_millis() as u64 + 500);
/// After a load change is written early (see `set_load`), the next early
/// write waits this long, so a burst of connections costs one write.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(200);
/// Commands fail with UNAVAILABLE after this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages waiting for the publisher task before `submit` waits for room.
const PUBLISH_QUEUE: usize = 4096;
/// Messages the publisher sends to Redis in one pipeline at most.
const PUBLISH_BATCH: usize = 256;

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
    retag: Script,
    swap: Script,
    take_if_prefix: Script,
    /// Subscription references per room. An async mutex on purpose: it is
    /// held across SUBSCRIBE/UNSUBSCRIBE so that they reach Redis in the
    /// order the counts changed (control path, not the message path).
    subs: tokio::sync::Mutex<HashMap<String, usize>>,
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

/// A submitted message, ready for the PUBLISH script, and where its outcome goes.
struct PublishJob {
    room: String,
    /// The idempotency key's Redis key.
    dedupe: String,
    /// Whether the message has a `client_msg_id` (only then is the dedupe key kept).
    idempotent: bool,
    /// The message as the script stores and publishes it (`wire::encode_message_body`).
    body: Bytes,
    reply: oneshot::Sender<Result<Accepted>>,
}

impl PublishJob {
    /// Encodes the message once, on the submitter's task rather than the
    /// single publisher's, moving its strings into the body.
    fn new(keys: &Keys, msg: NewMessage, reply: oneshot::Sender<Result<Accepted>>) -> Self {
        let dedupe = keys.dedupe(&msg.room, &msg.sender_key, &msg.client_msg_id);
        let idempotent = !msg.client_msg_id.is_empty();
        let body = Bytes::from(wire::encode_message_body(&ChatMessage {
            username: msg.username,
            text: msg.text,
            client_msg_id: msg.client_msg_id,
            system: msg.system,
            ..Default::default()
        }));
        Self {
            room: msg.room,
            dedupe,
            idempotent,
            body,
            reply,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    /// Newest id handed to the sink.
    delivered: Option<MessageId>,
    /// Stream tip when the subscription started: where a gap read begins if
    /// nothing was delivered yet.
    floor: MessageId,
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
            retag: Script::from_lua(scripts::RETAG),
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
            tokio::spawn(dispatcher(inner.clone())),
            tokio::spawn(publisher(inner.clone(), jobs)),
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

impl Inner {
    fn check(&self) -> Result<()> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(BridgeError::Unavailable("not connected to redis".into()))
        }
    }

    /// The prefix of every value this session writes: "instance\tsession\t".
    fn tag(&self, member: &Member) -> String {
        tag_of(&self.config.instance, &member.session_id)
    }

    /// The keys whose lifetime follows the room's presence: members, then
    /// stream and trimmed (the ENTER, LEAVE and REAP_ROOM scripts' KEYS).
    fn room_state_keys(&self, room: &str) -> Vec<String> {
        vec![
            self.keys.members(room),
            self.keys.stream(room),
            self.keys.trimmed(room),
        ]
    }

    fn room_ttl_ms(&self) -> String {
        self.config.room_ttl.as_millis().max(1).to_string()
    }

    /// Indexes a session's presence in rooms (its instance's rooms, the
    /// session's rooms, the room list) and, with `members`, the room's
    /// member count, in one round trip.
    async fn index_presence(
        &self,
        session: &str,
        rooms: &[String],
        members: Option<(&str, usize)>,
    ) -> Result<()> {
        let pipeline = self.client.pipeline();
        let queued = async {
            let _: () = pipeline
                .sadd(
                    self.keys.gateway_rooms(&self.config.instance),
                    rooms.to_vec(),
                )
                .await?;
            let _: () = pipeline
                .sadd(self.keys.session_rooms(session), rooms.to_vec())
                .await?;
            if let Some((room, count)) = members {
                count_members(&pipeline, &self.keys, room, count as i64).await?;
            }
            pipeline
                .sadd::<(), _, _>(self.keys.rooms(), rooms.to_vec())
                .await
        };
        queued.await.map_err(unavailable)?;
        for reply in pipeline.try_all::<Value>().await {
            reply.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn enter(&self, room: &str, member: &Member) -> Result<Vec<String>> {
        let value = format!("{}{}", self.tag(member), member.username);
        let payload = wire::presence(PresenceKind::Joined, &member.key, &member.username);
        let values: Vec<String> = self
            .enter
            .evalsha_with_reload(
                &self.client,
                self.room_state_keys(room),
                vec![member.key.clone(), value, self.keys.channel(room), payload],
            )
            .await
            .map_err(unavailable)?;
        self.index_presence(
            &member.session_id,
            &[room.to_owned()],
            Some((room, values.len())),
        )
        .await?;
        let mut names: Vec<String> = values
            .iter()
            .map(|v| Holder::parse(v).map_or("", |h| h.display).to_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn claim(&self, member: &Member, resume: &TokenHash) -> Result<bool> {
        let key = self.keys.name(&member.key);
        let tag = self.tag(member);
        // The display name rides along for the admin user list.
        let value = claim_value(&tag, &member.username, resume);
        let set: Option<String> = self
            .client
            .set(&key, value.as_str(), None, Some(SetOptions::NX), false)
            .await
            .map_err(unavailable)?;
        if set.is_none() {
            let holder: Option<String> = self.client.get(&key).await.map_err(unavailable)?;
            if !holder.is_some_and(|holder| holder.starts_with(&tag)) {
                return Ok(false);
            }
        }
        let _: () = self
            .client
            .sadd(
                self.keys.gateway_names(&self.config.instance),
                member.key.as_str(),
            )
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// See [`Bridge::resume_username`]. The presented token's hash is
    /// compared here, in constant time; the claim then changes hands only if
    /// it is still exactly what was compared (compare-and-set).
    async fn resume(
        &self,
        member: &Member,
        presented: &TokenHash,
        resume: &TokenHash,
    ) -> Result<Option<Resumed>> {
        let name = self.keys.name(&member.key);
        let Some(current) = self
            .client
            .get::<Option<String>, _>(&name)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let Some(holder) = Holder::parse(&current) else {
            return Ok(None);
        };
        let matches = holder
            .resume
            .and_then(TokenHash::from_stored)
            .is_some_and(|stored| stored.matches(presented));
        if !matches || holder.session == member.session_id {
            return Ok(None);
        }
        let previous_tag = tag_of(holder.instance, holder.session);
        let tag = self.tag(member);
        let swapped: u64 = self
            .swap
            .evalsha_with_reload(
                &self.client,
                vec![name],
                vec![current.clone(), claim_value(&tag, &member.username, resume)],
            )
            .await
            .map_err(unavailable)?;
        if swapped != 1 {
            return Ok(None); // Taken over (or freed) by someone else meanwhile.
        }
        let _: () = self
            .client
            .sadd(
                self.keys.gateway_names(&self.config.instance),
                member.key.as_str(),
            )
            .await
            .map_err(unavailable)?;
        // The earlier session's presence entries, silently re-tagged.
        let candidates: Vec<String> = self
            .client
            .smembers(self.keys.session_rooms(holder.session))
            .await
            .map_err(unavailable)?;
        let value = format!("{tag}{}", member.username);
        let mut rooms = Vec::new();
        for room in candidates {
            let moved: u64 = self
                .retag
                .evalsha_with_reload(
                    &self.client,
                    vec![self.keys.members(&room)],
                    vec![member.key.clone(), previous_tag.clone(), value.clone()],
                )
                .await
                .map_err(unavailable)?;
            if moved == 1 {
                rooms.push(room);
            }
        }
        rooms.sort();
        if !rooms.is_empty() {
            self.index_presence(&member.session_id, &rooms, None)
                .await?;
        }
        let _: () = self
            .client
            .del(self.keys.session_rooms(holder.session))
            .await
            .map_err(unavailable)?;
        {
            let mut local = self.local.lock();
            for room in &rooms {
                local
                    .presence
                    .insert((room.clone(), member.session_id.clone()), member.clone());
            }
        }
        // The earlier session, wherever it is connected, is closed (4002).
        let replace = control::Control::Replace {
            key: member.key.clone(),
            session_id: holder.session.to_owned(),
        };
        let _: u64 = self
            .client
            .publish(self.keys.control(), replace.encode())
            .await
            .map_err(unavailable)?;
        Ok(Some(Resumed {
            previous_session: holder.session.to_owned(),
            rooms,
        }))
    }

    /// Whether an earlier process of this gateway id left a heartbeat, and
    /// if so whether it is alive: `Ok(Some(instance))` for a dead one, an
    /// error for a live one (this process must not start).
    async fn find_predecessor(&self) -> Result<Option<String>> {
        let me = &self.config.gateway_id;
        let record: Option<String> = self
            .client
            .hget(self.keys.gateways(), me)
            .await
            .map_err(unavailable)?;
        let Some(record) =
            record.and_then(|r| serde_json::from_str::<admin::StatusRecord>(&r).ok())
        else {
            return Ok(None);
        };
        let instance = record.instance_or(me).to_owned();
        if instance == self.config.instance {
            return Ok(None);
        }
        let alive = self.keys.alive(&instance);
        let Some(first) = self
            .client
            .get::<Option<String>, _>(&alive)
            .await
            .map_err(unavailable)?
        else {
            return Ok(Some(instance));
        };
        let ours = self
            .config
            .bound
            .filter(|bound| bound.ip().is_loopback() && bound.port() != 0);
        if ours.is_some_and(|bound| record.address.parse::<SocketAddr>() == Ok(bound)) {
            return Ok(Some(instance)); // It served our port on this host: gone.
        }
        let until = Instant::now() + PREDECESSOR_WATCH;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now: Option<String> = self.client.get(&alive).await.map_err(unavailable)?;
            match now {
                None => break,
                Some(beat) if beat != first => {
                    return Err(BridgeError::GatewayIdInUse {
                        gateway_id: me.clone(),
                        instance,
                        address: record.address,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(Some(instance))
    }

    /// Messages of `room` with id > `after`, oldest first.
    async fn read_after(
        &self,
        room: &str,
        after: MessageId,
        count: Option<u64>,
    ) -> Result<Vec<ChatMessage>> {
        let value: Value = self
            .client
            .xrange(self.keys.stream(room), format!("({after}"), "+", count)
            .await
            .map_err(unavailable)?;
        parse_entries(room, value)
    }

    /// Re-writes names and presence after an outage (or after another
    /// gateway wrongly judged this one dead).
    async fn restore(&self) {
        let (names, presence) = {
            let local = self.local.lock();
            let names: Vec<(Member, TokenHash)> = local.names.values().cloned().collect();
            let presence: Vec<(String, Member)> = local
                .presence
                .iter()
                .map(|((room, _), m)| (room.clone(), m.clone()))
                .collect();
            (names, presence)
        };
        for (member, resume) in &names {
            match self.claim(member, resume).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(name = %member.key, "name was claimed elsewhere during an outage")
                }
                Err(e) => tracing::warn!(error = %e, "restoring a name failed"),
            }
        }
        for (room, member) in &presence {
            if let Err(e) = self.enter(room, member).await {
                tracing::warn!(error = %e, room, "restoring presence failed");
            }
        }
        if !names.is_empty() || !presence.is_empty() {
            tracing::info!(
                names = names.len(),
                rooms = presence.len(),
                "restored presence in redis"
            );
        }
    }

    /// Delivers a message unless it was delivered already (by id).
    fn deliver_message(&self, room: &str, id: MessageId, msg: ChatMessage) {
        {
            let mut cursors = self.cursors.lock();
            let Some(cursor) = cursors.get_mut(room) else {
                return;
            };
            if cursor.delivered.is_some_and(|last| id <= last) {
                return;
            }
            cursor.delivered = Some(id);
        }
        self.sink.deliver(BridgeEvent::Message(msg));
    }

    /// Reads what each subscribed room missed while the subscription was
    /// down and delivers it, before any live message that is still queued.
    async fn recover(&self) {
        let rooms: Vec<(String, MessageId)> = self
            .cursors
            .lock()
            .iter()
            .map(|(room, c)| (room.clone(), c.delivered.unwrap_or(c.floor)))
            .collect();
        for (room, from) in rooms {
            loop {
                match self.read_after(&room, from, None).await {
                    Ok(messages) => {
                        let n = messages.len();
                        for msg in messages {
                            if let Ok(id) = msg.id.parse() {
                                self.deliver_message(&room, id, msg);
                            }
                        }
                        if n > 0 {
                            tracing::info!(
                                room,
                                recovered = n,
                                "delivered messages missed during a redis outage"
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, room, "reading missed messages failed, retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }

    /// Hands one pub/sub payload to the sink. Returns true when a room's
    /// payload could not be decoded (a newer gateway's format, say): the
    /// caller then re-reads the streams, so nothing is skipped.
    fn handle_payload(&self, channel: &str, payload: Bytes) -> bool {
        let Some(room) = self.keys.room_of_channel(channel) else {
            if channel == self.keys.control() {
                match control::Control::decode(&payload) {
                    Some(control::Control::Drained { reply_to, told }) => {
                        self.drains.answer(&reply_to, told);
                    }
                    Some(control) => {
                        tracing::debug!(?control, "control command");
                        if let Some(command) = control.for_gateway(&self.config.gateway_id) {
                            self.sink.deliver(BridgeEvent::Control(command));
                        }
                    }
                    None => tracing::warn!("unknown command on the control channel ignored"),
                }
            }
            return false;
        };
        let room = room.as_ref();
        match wire::decode(room, &payload) {
            Some(wire::Payload::Messages(messages)) => {
                for (id, msg) in messages {
                    self.deliver_message(room, id, msg);
                }
            }
            Some(wire::Payload::Other(event)) => {
                if self.cursors.lock().contains_key(room) {
                    self.sink.deliver(event);
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

/// The one task that turns subscriber traffic into sink events, in order.
async fn dispatcher(inner: Arc<Inner>) {
    let mut messages = inner.subscriber.message_rx();
    let mut reconnects = inner.subscriber.reconnect_rx();
    loop {
        tokio::select! {
            biased;
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(RecvError::Closed)) {
                    return;
                }
                // Re-subscribe first, then read the gap: anything published
                // after the re-subscription arrives live and is deduped by id.
                while let Err(e) = inner.subscriber.resubscribe_all().await {
                    tracing::warn!(error = %e, "re-subscribing failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                inner.recover().await;
            }
            message = messages.recv() => match message {
                Ok(message) => {
                    let payload = match message.value {
                        Value::Bytes(b) => b,
                        Value::String(s) => s.into_inner(),
                        _ => continue,
                    };
                    if inner.handle_payload(&message.channel, payload) {
                        inner.recover().await;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "subscriber fell behind; re-reading the streams");
                    inner.recover().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// The one task that sends submitted messages to Redis, in submission order.
/// Whatever queued up while one pipeline was out goes in the next, so a busy
/// gateway pays one round trip for many messages and an idle one sends each
/// message at once.
async fn publisher(inner: Arc<Inner>, mut queue: mpsc::Receiver<PublishJob>) {
    let mut jobs = Vec::with_capacity(PUBLISH_BATCH);
    while queue.recv_many(&mut jobs, PUBLISH_BATCH).await > 0 {
        inner.publish_batch(&mut jobs).await;
    }
}

impl Inner {
    /// Sends every job to Redis in one pipeline (one PUBLISH script call
    /// per room and chunk, in submission order within the room) and answers
    /// each job. Nothing is retried here: a message whose outcome is unknown
    /// (the connection dropped) is answered UNAVAILABLE, and the client's
    /// retry with the same `client_msg_id` is deduplicated.
    async fn publish_batch(&self, jobs: &mut Vec<PublishJob>) {
        let calls = script_calls(jobs);
        let pipeline = self.client.pipeline();
        let queued = async {
            // Loaded in the same pipeline ahead of its uses, so that an
            // EVALSHA finds the script even just after Redis restarted
            // empty. Re-loading a known script is a hash and a lookup.
            let _: () = pipeline
                .custom(
                    CustomCommand::new_static("SCRIPT", ClusterHash::Random, false),
                    vec![
                        Value::from_static_str("LOAD"),
                        Value::from_static_str(scripts::PUBLISH),
                    ],
                )
                .await?;
            for call in &calls {
                let _: () = pipeline
                    .custom(
                        // The hash slot is the first key's (the room's).
                        CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false),
                        self.publish_args(jobs, call),
                    )
                    .await?;
            }
            // The admin room list's activity index, best effort. A separate
            // command because the script touches one room's keys only.
            let now = now_ms() as f64;
            let rooms: BTreeSet<&str> = jobs.iter().map(|job| job.room.as_str()).collect();
            let _: () = pipeline
                .zadd(
                    self.keys.room_activity(),
                    None,
                    None,
                    false,
                    false,
                    rooms
                        .into_iter()
                        .map(|room| (now, room))
                        .collect::<Vec<_>>(),
                )
                .await?;
            Ok::<_, fred::error::Error>(())
        }
        .await;
        let mut outcomes: Vec<Option<Result<Accepted>>> = Vec::new();
        outcomes.resize_with(jobs.len(), || None);
        match queued {
            Err(e) => outcomes.fill_with(|| Some(Err(unavailable(e.clone())))),
            Ok(()) => {
                let mut results = pipeline.try_all::<Value>().await.into_iter();
                let _loaded = results.next();
                for call in &calls {
                    let replies = match results.next() {
                        Some(Ok(value)) => accepted_all(value, call.len()),
                        Some(Err(e)) => Err(unavailable(e)),
                        None => Err(BridgeError::Unavailable("no reply from redis".into())),
                    };
                    match replies {
                        Ok(replies) => {
                            for (&i, reply) in call.iter().zip(replies) {
                                outcomes[i] = Some(reply);
                            }
                        }
                        Err(e) => {
                            for &i in call {
                                outcomes[i] = Some(Err(e.clone()));
                            }
                        }
                    }
                }
                if let Some(Err(e)) = results.next() {
                    tracing::debug!(error = %e, "indexing room activity failed");
                }
            }
        }
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            let outcome = outcome
                .unwrap_or_else(|| Err(BridgeError::Unavailable("no reply from redis".into())));
            // The submitter may be gone (its connection closed); the
            // message stands either way.
            let _ = job.reply.send(outcome);
        }
    }

    /// EVALSHA's arguments for the jobs at `call` (all of one room).
    fn publish_args(&self, jobs: &[PublishJob], call: &[usize]) -> Vec<Value> {
        let room = &jobs[call[0]].room;
        let history_len = self.config.history_len;
        let mut args = Vec::with_capacity(8 + 3 * call.len());
        args.push(Value::from(self.publish.sha1().clone()));
        args.push(Value::from((3 + call.len()) as i64));
        args.push(Value::from(self.keys.stream(room)));
        args.push(Value::from(self.keys.trimmed(room)));
        args.push(Value::from(self.keys.members(room)));
        for &i in call {
            args.push(Value::from(jobs[i].dedupe.as_str()));
        }
        args.push(Value::from(history_len as i64));
        args.push(Value::from(self.keys.channel(room)));
        args.push(Value::from((history_len / 64).max(1) as i64));
        args.push(Value::from(self.room_ttl_ms()));
        for &i in call {
            let job = &jobs[i];
            args.push(Value::from(if job.idempotent {
                DEDUPE_TTL_SECS.to_string()
            } else {
                String::new()
            }));
            args.push(Value::Bytes(job.body.clone()));
        }
        args
    }
}

/// Messages per PUBLISH script call at most, so that one call does not hold
/// Redis (single-threaded) for long.
const MESSAGES_PER_CALL: usize = 64;

/// The jobs grouped into script calls: by room, in submission order within
/// each room, at most [`MESSAGES_PER_CALL`] per call. Order across rooms is
/// free: each room has its own order.
fn script_calls(jobs: &[PublishJob]) -> Vec<Vec<usize>> {
    let mut by_room: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut rooms: Vec<&str> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let room = job.room.as_str();
        by_room
            .entry(room)
            .or_insert_with(|| {
                rooms.push(room);
                Vec::new()
            })
            .push(i);
    }
    let mut calls = Vec::new();
    for room in rooms {
        let indices = by_room.remove(room).unwrap_or_default();
        calls.extend(indices.chunks(MESSAGES_PER_CALL).map(<[usize]>::to_vec));
    }
    calls
}

/// The PUBLISH script's reply for `n` messages: {outcome, id or error} each.
fn accepted_all(value: Value, n: usize) -> Result<Vec<Result<Accepted>>> {
    let flat: Vec<Value> = value
        .convert()
        .map_err(|e| BridgeError::Corrupt(format!("publish reply: {e}")))?;
    if flat.len() != 2 * n {
        return Err(BridgeError::Corrupt(format!(
            "publish reply has {} values for {n} messages",
            flat.len()
        )));
    }
    let mut flat = flat.into_iter();
    let mut out = Vec::with_capacity(n);
    while let (Some(outcome), Some(id)) = (flat.next(), flat.next()) {
        out.push(accepted(outcome, id));
    }
    Ok(out)
}

/// One message's part of the PUBLISH script's reply.
fn accepted(outcome: Value, id: Value) -> Result<Accepted> {
    let corrupt = |e: fred::error::Error| BridgeError::Corrupt(format!("publish reply: {e}"));
    let outcome: i64 = outcome.convert().map_err(corrupt)?;
    let id: String = id.convert().map_err(corrupt)?;
    if outcome == 2 {
        // Refused by Redis (out of memory, say); nothing was stored.
        return Err(BridgeError::Unavailable(format!(
            "redis refused the message: {id}"
        )));
    }
    let duplicate = outcome;
    let id: MessageId = id
        .parse()
        .map_err(|_| BridgeError::Corrupt(format!("stream id {id:?}")))?;
    Ok(Accepted {
        id,
        sent_at_ms: id.ms,
        duplicate: duplicate == 1,
    })
}

/// Heartbeat, restore after outages, and cleanup after dead gateways.
async fn heartbeat(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected_since: Option<Instant> = None;
    loop {
        tokio::select! {
            // The beat first: the first one (immediate) makes this gateway
            // live for the others, and a burst of load changes must not
            // starve the heartbeat.
            biased;
            _ = tick.tick() => {}
            () = inner.load_changed.notified() => {
                if inner.client.is_connected() {
                    if let Err(e) = write_status(&inner).await {
                        tracing::debug!(error = %e, "writing the gateway status failed");
                    }
                }
                tokio::time::sleep(STATUS_DEBOUNCE).await;
                continue;
            }
        }
        if !inner.client.is_connected() {
            connected_since = None;
            continue;
        }
        let since = *connected_since.get_or_insert_with(Instant::now);
        match beat(&inner).await {
            // No previous heartbeat: first beat, Redis lost its data, or we
            // were judged dead. Either way, write our state (again).
            Ok(true) => inner.restore().await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
        }
        let settled = since.elapsed() >= REAP_AFTER_CONNECTED;
        if let Err(e) = reap_dead(&inner, settled).await {
            tracing::warn!(error = %e, "cleaning up after dead gateways failed");
        }
    }
}

/// Refreshes the heartbeat key, the status entry and the instance entry,
/// in one round trip; true when there was no previous heartbeat (first
/// beat, Redis lost its data, or judged dead).
async fn beat(inner: &Inner) -> Result<bool, fred::error::Error> {
    let instance = &inner.config.instance;
    let pipeline = inner.client.pipeline();
    let _: () = pipeline
        .set(
            inner.keys.alive(instance),
            now_ms().to_string(),
            Some(Expiration::PX(HEARTBEAT_TTL.as_millis() as i64)),
            None,
            true,
        )
        .await?;
    let _: () = pipeline
        .hset(
            inner.keys.gateways(),
            (inner.config.gateway_id.as_str(), status_json(inner)?),
        )
        .await?;
    let _: () = pipeline
        .hset(
            inner.keys.instances(),
            (instance.as_str(), inner.config.gateway_id.as_str()),
        )
        .await?;
    let mut replies = pipeline.try_all::<Value>().await.into_iter();
    let previous = replies.next().unwrap_or(Ok(Value::Null))?;
    for reply in replies {
        reply?;
    }
    Ok(previous.is_null())
}

fn status_json(inner: &Inner) -> Result<String, fred::error::Error> {
    serde_json::to_string(&inner.status_record())
        .map_err(|e| fred::error::Error::new(fred::error::ErrorKind::Parse, e.to_string()))
}

/// Writes this gateway's entry of the `gateways` hash (JSON, for admin).
async fn write_status(inner: &Inner) -> Result<(), fred::error::Error> {
    inner
        .client
        .hset(
            inner.keys.gateways(),
            (inner.config.gateway_id.as_str(), status_json(inner)?),
        )
        .await
}

/// Removes the presence and names of instances whose heartbeat expired:
/// any such instance once this gateway has `settled` (been connected long
/// enough for live peers to have beaten), its own dead predecessors at once.
async fn reap_dead(inner: &Inner, settled: bool) -> Result<(), fred::error::Error> {
    let instances: HashMap<String, String> = inner.client.hgetall(inner.keys.instances()).await?;
    let others: Vec<(&String, &String)> = {
        let predecessors = inner.predecessors.lock();
        instances
            .iter()
            .filter(|(instance, _)| **instance != inner.config.instance)
            .filter(|(instance, _)| settled || predecessors.contains(*instance))
            .collect()
    };
    if others.is_empty() {
        return Ok(());
    }
    let beats: Vec<Option<String>> = inner
        .client
        .mget(
            others
                .iter()
                .map(|(instance, _)| inner.keys.alive(instance))
                .collect::<Vec<_>>(),
        )
        .await?;
    for ((dead, gateway), beat) in others.into_iter().zip(beats) {
        if beat.is_some() {
            continue;
        }
        // One reaper per dead instance.
        let won: Option<String> = inner
            .client
            .set(
                inner.keys.reaper(dead),
                inner.config.instance.as_str(),
                Some(Expiration::PX(30_000)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        if won.is_none() {
            continue;
        }
        let (removed, names) = reap_instance(inner, dead, gateway).await?;
        inner.predecessors.lock().remove(dead);
        tracing::info!(gateway = %gateway, instance = %dead, presence = removed, names, "cleaned up after a dead gateway");
    }
    Ok(())
}

/// Removes an instance's presence entries (publishing `Left`), its name
/// claims, its indexes, its instance entry and (if still its own) its
/// gateway's status entry. Returns (entries, names) removed.
async fn reap_instance(
    inner: &Inner,
    dead: &str,
    gateway: &str,
) -> Result<(u64, usize), fred::error::Error> {
    let tag = format!("{dead}\t");
    let rooms: Vec<String> = inner
        .client
        .smembers(inner.keys.gateway_rooms(dead))
        .await?;
    let mut removed = 0u64;
    for room in &rooms {
        let (n, left): (u64, i64) = inner
            .reap_room
            .evalsha_with_reload(
                &inner.client,
                inner.room_state_keys(room),
                vec![
                    tag.clone(),
                    inner.keys.channel(room),
                    "PL".to_owned(),
                    inner.room_ttl_ms(),
                ],
            )
            .await?;
        if n > 0 {
            count_members(&inner.client, &inner.keys, room, left).await?;
        }
        removed += n;
    }
    let names: Vec<String> = inner
        .client
        .smembers(inner.keys.gateway_names(dead))
        .await?;
    let mut freed = 0;
    for name in &names {
        let taken: Option<String> = inner
            .take_if_prefix
            .evalsha_with_reload(
                &inner.client,
                vec![inner.keys.name(name)],
                vec![tag.clone()],
            )
            .await?;
        if let Some(holder) = taken.as_deref().and_then(Holder::parse) {
            let _: () = inner
                .client
                .del(inner.keys.session_rooms(holder.session))
                .await?;
            freed += 1;
        }
    }
    let _: () = inner
        .client
        .del(vec![
            inner.keys.gateway_rooms(dead),
            inner.keys.gateway_names(dead),
        ])
        .await?;
    let _: () = inner.client.hdel(inner.keys.instances(), dead).await?;
    // The status entry, unless a newer process of that gateway wrote it.
    let record: Option<String> = inner.client.hget(inner.keys.gateways(), gateway).await?;
    let owned = record
        .and_then(|r| serde_json::from_str::<admin::StatusRecord>(&r).ok())
        .is_some_and(|r| r.instance_or(gateway) == dead);
    if owned {
        let _: () = inner.client.hdel(inner.keys.gateways(), gateway).await?;
    }
    Ok((removed, freed))
}

/// Writes a room's member count into the entry screen's ranking (removes
/// the room at 0). Works on the client or inside a pipeline.
async fn count_members<C: SortedSetsInterface + Sync>(
    client: &C,
    keys: &Keys,
    room: &str,
    count: i64,
) -> Result<(), fred::error::Error> {
    if count > 0 {
        client
            .zadd(
                keys.room_members(),
                None,
                None,
                false,
                false,
                (count as f64, room),
            )
            .await
    } else {
        client.zrem(keys.room_members(), room).await
    }
}

/// "instance\tsession\t": the prefix of every value a session writes.
fn tag_of(instance: &str, session: &str) -> String {
    format!("{instance}\t{session}\t")
}

/// A name claim's value: the session's tag, its display name, and the hash
/// of the token that may take the name over.
fn claim_value(tag: &str, display: &str, resume: &TokenHash) -> String {
    format!("{tag}{display}\t{}", resume.as_str())
}

/// A presence or name-claim value, read back:
/// "instance\tsession\tdisplay name[\tresume hash]" (claims carry the hash;
/// claims written by older gateways may lack the display name too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder<'a> {
    pub instance: &'a str,
    pub session: &'a str,
    pub display: &'a str,
    pub resume: Option<&'a str>,
}

impl<'a> Holder<'a> {
    pub(super) fn parse(value: &'a str) -> Option<Self> {
        let mut parts = value.splitn(4, '\t');
        let instance = parts.next().filter(|g| !g.is_empty())?;
        let session = parts.next()?;
        Some(Self {
            instance,
            session,
            display: parts.next().unwrap_or_default(),
            resume: parts.next(),
        })
    }
}

/// Parses an XRANGE/XREVRANGE reply: `[[id, [field, value, ...]], ...]`.
fn parse_entries(room: &str, value: Value) -> Result<Vec<ChatMessage>> {
    let mut out = Vec::new();
    for entry in value.into_array() {
        let mut parts = entry.into_array().into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(BridgeError::Corrupt(
                "stream entry without id or fields".into(),
            ));
        };
        let id: MessageId = id
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| BridgeError::Corrupt("stream entry id".into()))?;
        let fields = fields.into_array();
        let body = fields
            .chunks(2)
            .find(|pair| pair.first().and_then(|f| f.as_str()).as_deref() == Some("m"))
            .and_then(|pair| pair.get(1))
            .and_then(|v| v.as_bytes().map(<[u8]>::to_vec))
            .ok_or_else(|| BridgeError::Corrupt(format!("stream entry {id} has no body")))?;
        let msg = wire::message_from_entry(room, id, &body)
            .ok_or_else(|| BridgeError::Corrupt(format!("stream entry {id} does not decode")))?;
        out.push(msg);
    }
    Ok(out)
}

#[async_trait]
impl Bridge for RedisBridge {
    async fn subscribe(&self, room: &str) -> Result<()> {
        let inner = &self.inner;
        let mut subs = inner.subs.lock().await;
        if let Some(count) = subs.get_mut(room) {
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
        match subscribed {
            Ok(tip) => {
                if let Some(cursor) = inner.cursors.lock().get_mut(room) {
                    cursor.floor = tip.unwrap_or(MessageId::ZERO);
                }
                subs.insert(room.to_owned(), 1);
                Ok(())
            }
            Err(e) => {
                inner.cursors.lock().remove(room);
                let _ = inner.subscriber.unsubscribe(inner.keys.channel(room)).await;
                Err(e)
            }
        }
    }

    async fn unsubscribe(&self, room: &str) -> Result<()> {
        let inner = &self.inner;
        let mut subs = inner.subs.lock().await;
        let Some(count) = subs.get_mut(room) else {
            return Ok(());
        };
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        subs.remove(room);
        inner.cursors.lock().remove(room);
        inner
            .subscriber
            .unsubscribe(inner.keys.channel(room))
            .await
            .map_err(unavailable)
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
        let trimmed: Option<String> = inner
            .client
            .get(inner.keys.trimmed(room))
            .await
            .map_err(unavailable)?;
        let messages = inner.read_after(room, after, None).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn new_message(room: &str) -> NewMessage {
        NewMessage {
            room: room.into(),
            sender_key: "k".into(),
            username: "u".into(),
            text: "t".into(),
            client_msg_id: String::new(),
            system: false,
        }
    }

    fn job(room: &str) -> PublishJob {
        PublishJob::new(&Keys::new("chat"), new_message(room), oneshot::channel().0)
    }

    /// Records what the bridge hands to its sink.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<ChatMessage>>);

    impl EventSink for Recorder {
        fn deliver(&self, event: BridgeEvent) {
            if let BridgeEvent::Message(message) = event {
                self.0.lock().push(message);
            }
        }
    }

    fn message(text: &str, client_msg_id: &str) -> NewMessage {
        NewMessage {
            client_msg_id: client_msg_id.into(),
            text: text.into(),
            ..new_message("lobby")
        }
    }

    /// Messages submitted back to back go to Redis in one script call (this test runtime
    /// has one thread, so the publisher task runs only once all are queued). Within that
    /// call a retry of a `client_msg_id` finds the first one's key, and the accepted
    /// messages reach the sink once each, in order, from the one `B` payload.
    #[tokio::test]
    async fn one_script_call_dedupes_within_itself_and_delivers_in_order() {
        let redis = chat_test_support::RedisServer::start().await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let bridge = RedisBridge::connect(
            RedisConfig {
                url: redis.url(),
                prefix: "chat".into(),
                gateway_id: "gw-test".into(),
                instance: "gw-test~1".into(),
                address: "127.0.0.1:0".into(),
                bound: None,
                history_len: 100,
                room_ttl: Duration::from_secs(3600),
            },
            recorder.clone(),
        )
        .await
        .unwrap();
        bridge.subscribe("lobby").await.unwrap();
        let mut pending = Vec::new();
        for (text, key) in [
            ("before", ""),
            ("once", "k1"),
            ("once again", "k1"),
            ("between", "k2"),
            ("once more", "k1"),
        ] {
            pending.push(bridge.submit(message(text, key)).await);
        }
        let mut outcomes = Vec::new();
        for outcome in pending {
            outcomes.push(outcome.await.unwrap());
        }
        let flags: Vec<bool> = outcomes.iter().map(|a| a.duplicate).collect();
        assert_eq!(flags, [false, false, true, false, true]);
        assert_eq!(outcomes[2].id, outcomes[1].id);
        assert_eq!(outcomes[4].id, outcomes[1].id);
        let calls = redis.command(&["INFO", "commandstats"]).await.unwrap();
        let chat_test_support::RespValue::Bulk(Some(stats)) = calls else {
            panic!("INFO answered {calls:?}")
        };
        let stats = String::from_utf8(stats).unwrap();
        assert!(
            stats.contains("cmdstat_evalsha:calls=1,"),
            "one script call for the batch: {stats}"
        );

        chat_test_support::eventually(Duration::from_secs(10), || async {
            recorder.0.lock().len() >= 3
        })
        .await;
        let texts: Vec<String> = recorder.0.lock().iter().map(|m| m.text.clone()).collect();
        assert_eq!(texts, ["before", "once", "between"]);
        let ids: Vec<String> = recorder.0.lock().iter().map(|m| m.id.clone()).collect();
        let accepted: Vec<String> = [0, 1, 3].map(|i| outcomes[i].id.to_string()).into();
        assert_eq!(ids, accepted);
    }

    #[test]
    fn script_calls_group_by_room_in_submission_order_and_chunk() {
        let mut jobs = Vec::new();
        for i in 0..(MESSAGES_PER_CALL + 3) {
            jobs.push(job(if i % 2 == 0 { "a" } else { "b" }));
        }
        jobs.push(job("c"));
        let calls = script_calls(&jobs);
        let evens: Vec<usize> = (0..MESSAGES_PER_CALL + 3).step_by(2).collect();
        let odds: Vec<usize> = (1..MESSAGES_PER_CALL + 3).step_by(2).collect();
        assert_eq!(calls, vec![evens, odds, vec![MESSAGES_PER_CALL + 3]]);

        let many: Vec<PublishJob> = (0..MESSAGES_PER_CALL * 2 + 1).map(|_| job("a")).collect();
        let calls = script_calls(&many);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            [MESSAGES_PER_CALL, MESSAGES_PER_CALL, 1]
        );
        let flat: Vec<usize> = calls.concat();
        assert_eq!(flat, (0..many.len()).collect::<Vec<_>>(), "in order");
    }
}
