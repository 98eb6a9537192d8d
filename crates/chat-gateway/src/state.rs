//! State shared by every connection of one gateway.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_bridge::Bridge;
use chat_proto::v1::Limits;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::config::Config;
use crate::conn::{ConnHandle, ConnInbox};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::ratelimit::TokenBucket;

/// Everything a connection needs from its gateway.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) gateway_id: String,
    /// This process's identity: the gateway id and a random part, new on
    /// every start. Session ids start with it, so the sessions of a crashed
    /// process and of its restarted successor never share an id.
    pub(crate) instance_id: String,
    pub(crate) limits: Limits,
    pub(crate) bridge: Arc<dyn Bridge>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    /// The keys Hello tokens are checked against; `None`: anonymous mode
    /// (anyone is the name they type).
    pub(crate) auth: Option<Verifier>,
    /// Open connections, for drain, kicks and takeovers; kept by
    /// [`Registration`] only. A plain mutex: held for an insert or a
    /// remove, or to copy the handles out, never across an await.
    pub(crate) conns: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    /// The number of the next connection (its session id's last part).
    pub(crate) next_conn: AtomicU64,
    /// The WebSocket sessions' tasks, from the upgrade until the connection
    /// is gone (not the [`crate::RECONNECT_GRACE`] after it): the drain
    /// waits for them.
    pub(crate) sessions: TaskTracker,
    /// The edge's state: per client address (the real one behind a PROXY
    /// header; an IPv6 /64) its open sockets and WebSockets and its rates,
    /// and the `/api/rooms` snapshot.
    pub(crate) edge: Edge,
    /// Set once draining starts: health 503, upgrades refused.
    pub(crate) draining: AtomicBool,
    /// Cancelled to start a drain (SIGTERM, or an operator's request).
    pub(crate) drain: CancellationToken,
    /// How many connections the drain told to reconnect, once it has
    /// (for an operator's drain request, which waits for the answer).
    pub(crate) drain_told: tokio::sync::watch::Sender<Option<u32>>,
}

impl Shared {
    /// The state of a gateway that has not served anyone yet.
    pub(crate) fn new(
        config: Config,
        gateway_id: String,
        instance_id: String,
        bridge: Arc<dyn Bridge>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        auth: Option<Verifier>,
    ) -> Arc<Self> {
        let limits = Limits {
            max_text_bytes: config.max_text_bytes,
            max_rooms: config.max_rooms,
            messages_per_second: config.messages_per_second,
            message_burst: config.message_burst,
        };
        Arc::new(Self {
            config,
            gateway_id,
            instance_id,
            limits,
            bridge,
            hub,
            metrics,
            auth,
            conns: Mutex::default(),
            next_conn: AtomicU64::new(1),
            sessions: TaskTracker::new(),
            edge: Edge::default(),
            draining: AtomicBool::new(false),
            drain: CancellationToken::new(),
            drain_told: tokio::sync::watch::Sender::new(None),
        })
    }

    /// Whether a drain has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The session id of this process's connection `conn`.
    pub(crate) fn session_id(&self, conn: u64) -> String {
        chat_bridge::session_id(&self.instance_id, conn)
    }

    /// The local connection that `session_id` names, when it is one of this
    /// process's: a lookup, not a scan, because a reconnect storm sends one
    /// takeover per returning client to every gateway.
    pub(crate) fn local_conn(&self, session_id: &str) -> Option<Arc<ConnHandle>> {
        let id = conn_of(&self.instance_id, session_id)?;
        let conn = self.conns.lock().get(&id).cloned()?;
        (*conn.session_id == *session_id).then_some(conn)
    }
}

/// A connection's entry in [`Shared::conns`], from the start of its session
/// until it is dropped: the one place that keeps the registry, the load
/// the bridge reports and the open-connections gauge in step.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    conn: Arc<ConnHandle>,
}

impl Registration {
    /// Registers a new connection: its handle, and the inbox its session
    /// drains.
    pub(crate) fn new(shared: &Arc<Shared>) -> (Self, ConnInbox) {
        let id = shared.next_conn.fetch_add(1, Relaxed);
        let session_id = shared.session_id(id);
        let (conn, inbox) = ConnHandle::new(id, &session_id, shared.config.outbound_queue as usize);
        let open = {
            let mut conns = shared.conns.lock();
            conns.insert(id, conn.clone());
            conns.len()
        };
        shared.bridge.set_load(open as u32, shared.is_draining());
        shared.metrics.connections_open.fetch_add(1, Relaxed);
        shared.metrics.connections_total.fetch_add(1, Relaxed);
        let registration = Self {
            shared: shared.clone(),
            conn,
        };
        (registration, inbox)
    }

    /// The registered connection's handle.
    pub(crate) fn conn(&self) -> &Arc<ConnHandle> {
        &self.conn
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let shared = &self.shared;
        let open = {
            let mut conns = shared.conns.lock();
            conns.remove(&self.conn.id);
            conns.len()
        };
        shared.bridge.set_load(open as u32, shared.is_draining());
        shared.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

/// The connection number in a session id of `instance_id`, if it is one.
fn conn_of(instance_id: &str, session_id: &str) -> Option<u64> {
    chat_bridge::parse_session_id(session_id)
        .and_then(|(instance, n)| (instance == instance_id).then_some(n))
}

pub(crate) use chat_proto::rules::now_ms;

/// A gateway id unique per process: host-ish prefix, pid and start time.
pub(crate) fn default_gateway_id() -> String {
    format!("gw-{}-{:x}", std::process::id(), now_ms() & 0xff_ffff)
}

/// A new instance id for this process of `gateway_id`: 64 random bits.
pub(crate) fn new_instance_id(gateway_id: &str) -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the OS random source is available");
    format!("{gateway_id}~{:016x}", u64::from_le_bytes(random))
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("gateway_id", &self.gateway_id)
            .finish_non_exhaustive()
    }
}

/// A client address as the per-address limits see it: an IPv4 address, or
/// the /64 of an IPv6 address (one subscriber usually holds a whole /64, so
/// keying on the exact address would give each one 2^64 budgets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddrKey {
    V4(Ipv4Addr),
    V6Net64(u64),
}

impl AddrKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Net64((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Why a new connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address already has `--max-sockets-per-ip` open.
    AddressCap,
    /// Its address opened connections faster than `--connection-rate-per-ip`.
    AddressRate,
}

/// The HTTP edge's shared state: one entry per client address, and the
/// `/api/rooms` snapshot.
#[derive(Default)]
pub(crate) struct Edge {
    /// Plain mutex: held to look up and update one entry (or, rarely, to
    /// sweep idle ones), never across an await.
    table: Mutex<AddrTable>,
    /// The room list served by `/api/rooms`.
    pub(crate) rooms: crate::rooms_api::RoomsCache,
}

#[derive(Default)]
struct AddrTable {
    entries: HashMap<AddrKey, AddrEntry>,
    /// Entries are swept when there are this many (doubling with the live
    /// ones), so an address that left costs nothing for long.
    sweep_at: usize,
}

/// What the edge knows about one client address.
struct AddrEntry {
    /// TCP connections open (WebSockets included): `--max-sockets-per-ip`.
    sockets: u32,
    /// WebSockets open: `--max-connections-per-ip`.
    websockets: u32,
    /// New connections: `--connection-rate-per-ip` / `--connection-burst-per-ip`.
    connects: TokenBucket,
    /// `/api/rooms` requests, made on the first one.
    rooms_api: Option<TokenBucket>,
    /// When every bucket here is full again at the latest; from then on an
    /// entry without connections is the same as no entry and can go.
    settled_at: Instant,
}

impl AddrEntry {
    fn new(config: &Config, now: Instant) -> Self {
        Self {
            sockets: 0,
            websockets: 0,
            connects: TokenBucket::new(
                config.connection_rate_per_ip,
                config.connection_burst_per_ip,
            ),
            rooms_api: None,
            settled_at: now,
        }
    }

    /// Takes a token from `bucket`, noting when it will be full again.
    fn take(
        bucket: &mut TokenBucket,
        settled_at: &mut Instant,
        rate: u32,
        burst: u32,
        now: Instant,
    ) -> bool {
        let refill = Duration::from_secs_f64(f64::from(burst) / f64::from(rate.max(1)));
        *settled_at = (*settled_at).max(now + refill);
        bucket.try_take()
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.sockets == 0 && self.websockets == 0 && now >= self.settled_at
    }
}

impl AddrTable {
    fn entry(&mut self, key: AddrKey, config: &Config) -> &mut AddrEntry {
        let now = Instant::now();
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, e| !e.is_idle(now));
            self.sweep_at = (self.entries.len() * 2).max(1024);
        }
        self.entries
            .entry(key)
            .or_insert_with(|| AddrEntry::new(config, now))
    }

    /// Drops the entry of `key` if it no longer holds anything.
    fn release(&mut self, key: AddrKey) {
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.is_idle(Instant::now()))
        {
            self.entries.remove(&key);
        }
    }
}

impl Edge {
    /// Admits a new TCP connection from `ip`, or says why not: one token of
    /// its address's connection rate, then one of its socket slots.
    pub(crate) fn admit(&self, shared: &Arc<Shared>, ip: IpAddr) -> Result<SocketSlot, Refusal> {
        let config = &shared.config;
        let key = AddrKey::of(ip);
        let mut table = self.table.lock();
        let entry = table.entry(key, config);
        let now = Instant::now();
        if !AddrEntry::take(
            &mut entry.connects,
            &mut entry.settled_at,
            config.connection_rate_per_ip,
            config.connection_burst_per_ip,
            now,
        ) {
            return Err(Refusal::AddressRate);
        }
        if entry.sockets >= config.max_sockets_per_ip() {
            return Err(Refusal::AddressCap);
        }
        entry.sockets += 1;
        shared.metrics.tcp_open.fetch_add(1, Relaxed);
        Ok(SocketSlot {
            shared: shared.clone(),
            key,
        })
    }

    /// Whether `ip` may make one more `/api/rooms` request now.
    pub(crate) fn allow_rooms_api(&self, config: &Config, ip: IpAddr) -> bool {
        let key = AddrKey::of(ip);
        let rate = config.api_rooms_per_second;
        let burst = rate.saturating_mul(2);
        let mut table = self.table.lock();
        let entry = table.entry(key, config);
        let bucket = entry
            .rooms_api
            .get_or_insert_with(|| TokenBucket::new(rate, burst));
        let allowed = AddrEntry::take(bucket, &mut entry.settled_at, rate, burst, Instant::now());
        table.release(key);
        allowed
    }
}

/// One open TCP connection counted against its client address, from accept
/// (after the PROXY header) until the socket closes, WebSocket included:
/// shared by the HTTP connection and the session it may become.
pub(crate) struct SocketSlot {
    shared: Arc<Shared>,
    key: AddrKey,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.shared.metrics.tcp_open.fetch_sub(1, Relaxed);
        let mut table = self.shared.edge.table.lock();
        if let Some(entry) = table.entries.get_mut(&self.key) {
            entry.sockets -= 1;
        }
        table.release(self.key);
    }
}

/// One open WebSocket counted against its client address; uncounted on drop.
pub(crate) struct IpSlot {
    shared: Arc<Shared>,
    key: AddrKey,
}

impl IpSlot {
    /// Takes a slot for `ip`, or `None` when its address already has
    /// `--max-connections-per-ip`.
    pub(crate) fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let key = AddrKey::of(ip);
        let mut table = shared.edge.table.lock();
        let entry = table.entry(key, &shared.config);
        if entry.websockets >= shared.config.max_connections_per_ip {
            table.release(key);
            return None;
        }
        entry.websockets += 1;
        Some(Self {
            shared: shared.clone(),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut table = self.shared.edge.table.lock();
        if let Some(entry) = table.entries.get_mut(&self.key) {
            entry.websockets -= 1;
        }
        table.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let key = |s: &str| AddrKey::of(s.parse().unwrap());
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[test]
    fn a_session_id_names_a_connection_of_its_own_instance_only() {
        let me = "gw-1~00000000000000aa";
        assert_eq!(conn_of(me, &chat_bridge::session_id(me, 42)), Some(42));
        assert_eq!(
            conn_of(me, "gw-1~00000000000000bb-42"),
            None,
            "another instance"
        );
        assert_eq!(conn_of(me, "gw-1~00000000000000aa42"), None, "no separator");
        for bad in ["-", "-+4", "--4", "-4x", "-99999999999999999999999"] {
            assert_eq!(conn_of(me, &format!("{me}{bad}")), None, "{bad}");
        }
    }
}
