//! The Redis backend: many gateways, one chat.
//!
//! - Messages: one stream per room is the history; a Lua script dedupes,
//!   appends, trims and publishes in one atomic step, so the stream id is the
//!   message id and publish order is id order.
//! - Delivery: one subscriber connection per gateway (on a Redis Cluster,
//!   one per primary, with sharded pub/sub: [`pubsub`]). Its dispatcher
//!   task remembers the last id delivered per room; after a connection comes
//!   back, or a room's slot moved to another shard ([`topology`]), it
//!   re-subscribes, reads each stream after that id, delivers what was
//!   missed, and drops anything already delivered.
//! - Presence and names are tagged with the gateway's instance (one per
//!   process, so a restarted gateway does not own what its crashed
//!   predecessor left) and indexed per instance; every instance heartbeats a
//!   key with a short TTL and cleans up after instances whose heartbeat
//!   expired (publishing `Left` for their users). A name claim carries the
//!   hash of its session's resume token, so the client's next session can
//!   take the name and presence over ([`Presence::resume_username`]).
//! - Admin: listings are read from those same keys ([`admin`]); operator
//!   commands travel on one control channel every gateway subscribes to
//!   ([`control`]), signed with the cluster secret and checked on receipt
//!   ([`control_path`]), and reach the gateway's sink as `BridgeEvent::Control`.
//! - Bans: one expiring key per banned identity and an index ([`bans`]).
//!
//! Key names are in [`keys`]; the README documents them.

mod activity;
mod admin;
mod bans;
mod control;
mod control_path;
mod dispatcher;
mod entry;
#[cfg(test)]
mod golden_tests;
mod join_fence;
mod keys;
mod lanes;
mod liveness;
mod presence;
mod publisher;
mod pubsub;
mod room_log;
mod scripts;
mod shards;
mod stream;
mod subscriptions;
mod tls;
mod topology;
mod wire;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chat_proto::rules::now_ms;
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
use liveness::{beat, heartbeat};
use presence::count_members;
use publisher::PublishJob;
use stream::parse_entries;
use subscriptions::RoomSubscription;

use crate::control_auth::ControlAuth;
use crate::drain::DrainReplies;
use crate::{
    Accepted, Ban, BridgeError, BridgeEvent, ClusterSecret, EventSink, HistoryPage, Lifecycle,
    Member, MessageEvent, NewMessage, Pending, Presence, PresenceKind, Replay, Result, Resumed,
    RoomLog, RoomSummary, TokenHash,
};

/// Commands fail with UNAVAILABLE after this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How to reach Redis and who this gateway is.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, or `rediss://` for TLS; `user:password@`
    /// before the host authenticates (AUTH, ACL users). With `cluster`: the
    /// seed nodes, comma-separated.
    pub url: String,
    /// Whether `url` lists seed nodes of a Redis Cluster (`--redis-cluster`):
    /// the bridge then follows the cluster's topology and uses sharded
    /// pub/sub (Redis 7).
    pub cluster: bool,
    /// PEM CA certificate(s) the `rediss://` server's certificate must be
    /// signed by (default: the system's roots).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This gateway's id, stable across restarts (one live process each).
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
    /// The secret that signs and checks control commands
    /// (`crate::control_auth`); `None`: the control path is unauthenticated.
    pub cluster_secret: Option<ClusterSecret>,
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
    /// On a Redis Cluster: sharded pub/sub ([`pubsub`]).
    sharded: bool,
    /// Messages on their way to the [`publisher`] tasks ([`lanes`]).
    lanes: lanes::Lanes,
    /// On a Redis Cluster: each primary's own connections for the messages.
    shards: shards::Shards,
    /// Signalled when a command was redirected (MOVED, ASK): the slot map
    /// is read again at once ([`topology`]).
    topology_hint: Notify,
    /// Joins waiting for their own JOINED to pass the dispatcher.
    join_fences: join_fence::JoinFences,
    /// Signalled by the slot watch when rooms' slots moved (they are marked).
    slots_moved: Notify,
    /// Set by the slot watch when the control channel's slot moved.
    control_moved: AtomicBool,
    /// Rooms with a message since the activity index was last written.
    active_rooms: Mutex<HashMap<String, u64>>,
    /// Signalled when a room is noted there ([`activity`]).
    activity_noted: Notify,
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
    /// Signs commands this gateway publishes on the control channel and
    /// checks those it receives (`control_path.rs`).
    control_auth: ControlAuth,
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

fn unavailable(e: fred::error::Error) -> BridgeError {
    BridgeError::Unavailable(e.to_string())
}

impl RedisBridge {
    /// Connects (waiting up to a few seconds; if Redis is down the bridge
    /// starts anyway, reports unavailable and keeps reconnecting) and starts
    /// the dispatcher and heartbeat tasks.
    pub async fn connect(config: RedisConfig, sink: Arc<dyn EventSink>) -> Result<Self> {
        let redis_config = fred_config(&config)?;
        let builder = client_builder(redis_config.clone(), config.cluster);
        let client = builder.build().map_err(unavailable)?;
        // On a cluster, rooms are subscribed on each primary's own
        // connection (`shards.rs`); this one is not connected.
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        client.connect();
        let mut waits = vec![client.clone()];
        if !config.cluster {
            subscriber.connect();
            waits.push(subscriber.to_client());
        }
        for c in &waits {
            if tokio::time::timeout(Duration::from_secs(5), c.wait_for_connect())
                .await
                .is_err()
            {
                tracing::warn!(url = %without_password(&config.url), "redis is not reachable yet; retrying in the background");
            }
        }
        let keys = Keys::new(&config.prefix);
        let control_auth = ControlAuth::new(config.cluster_secret.clone(), &keys.control());
        if !control_auth.is_authenticated() {
            tracing::warn!("no --cluster-secret-file: the control path is unauthenticated (anyone who can PUBLISH to redis can kick, ban or drain)");
        }
        let sharded = config.cluster;
        let script = |lua| Script::from_lua(pubsub::script_text(lua, sharded));
        let (intake, intake_rx) = mpsc::channel(shards::INTAKE);
        let shards = shards::Shards::new(sharded.then_some(redis_config), intake);
        if let Some(routing) = client.cached_cluster_state().filter(|_| sharded) {
            shards.set_routing(routing);
            shards.connect_all(Duration::from_secs(5)).await;
        }
        let inner = Arc::new(Inner {
            keys,
            sharded,
            control_auth,
            config,
            client,
            subscriber,
            sink,
            lanes: Default::default(),
            shards,
            topology_hint: Notify::new(),
            slots_moved: Notify::new(),
            join_fences: Default::default(),
            control_moved: AtomicBool::new(false),
            active_rooms: Default::default(),
            activity_noted: Notify::new(),
            publish: script(scripts::PUBLISH),
            enter: script(scripts::ENTER),
            leave: script(scripts::LEAVE),
            reap_room: script(scripts::REAP_ROOM),
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
        if let Err(e) = inner.listen(inner.keys.control()).await {
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
        let mut tasks = vec![
            tokio::spawn(dispatcher::run(inner.clone(), sharded.then_some(intake_rx))),
            tokio::spawn(heartbeat(inner.clone())),
            tokio::spawn(activity::run(inner.clone())),
        ];
        if sharded {
            tasks.push(tokio::spawn(dispatcher::watch_slots(inner.clone())));
        }
        Ok(Self { inner, tasks })
    }

    /// The names of the keys and channels this bridge uses.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }
}

/// The fred configuration of `config`'s Redis: one server or a cluster's seeds.
fn fred_config(config: &RedisConfig) -> Result<fred::types::config::Config> {
    if config.cluster {
        tls::cluster_config(&config.url, config.tls_ca.as_deref())
    } else {
        tls::client_config(&config.url, config.tls_ca.as_deref())
    }
}

/// fred client settings: timeouts, attempts and reconnection. `redirects`:
/// the client is fred's cluster client, which follows MOVED and ASK.
fn client_builder(redis_config: fred::types::config::Config, redirects: bool) -> Builder {
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
            // One write per command: a command whose connection dropped is
            // answered UNAVAILABLE, not sent twice (messages never are). The
            // cluster client (presence, names, admin) counts following a
            // MOVED or ASK as another attempt, so it gets a few.
            c.max_command_attempts = if redirects { 3 } else { 1 };
            c.tcp = TcpConfig {
                nodelay: Some(true),
                ..Default::default()
            };
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    builder
}

impl Drop for RedisBridge {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.inner.lanes.abort();
    }
}

impl Inner {
    /// Fails with UNAVAILABLE unless the command connection is up.
    fn check(&self) -> Result<()> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(BridgeError::Unavailable("not connected to redis".into()))
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

/// `url` with its user and password (`redis://user:secret@host`) replaced by
/// `***`, for logs: a URL with a password is a secret.
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod url_tests {
    use super::without_password;

    #[test]
    fn logged_urls_carry_no_password() {
        assert_eq!(
            without_password("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            without_password("rediss://app:s3cret@redis.example:6380"),
            "rediss://***@redis.example:6380"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
