//! State shared by every connection of one gateway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chat_bridge::Bridge;
use chat_proto::v1::Limits;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::conn::ConnHandle;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Everything a connection needs from its gateway.
pub struct Shared {
    pub config: Config,
    pub gateway_id: String,
    /// This process's identity: the gateway id and a random part, new on
    /// every start. Session ids start with it, so the sessions of a crashed
    /// process and of its restarted successor never share an id.
    pub instance_id: String,
    pub limits: Limits,
    pub bridge: Arc<dyn Bridge>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Open connections, for drain. A plain mutex: held for an insert or a
    /// remove, or to copy the handles out, never across an await.
    pub conns: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    pub next_conn: AtomicU64,
    /// Open WebSocket connections per client address (the real one behind
    /// a PROXY header). Plain mutex: an increment or a decrement, no await.
    pub per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Set once draining starts: health 503, upgrades refused.
    pub draining: AtomicBool,
    /// Cancelled to start a drain (SIGTERM, or an operator's request).
    pub drain: CancellationToken,
    /// How many connections the drain told to reconnect, once it has
    /// (for an operator's drain request, which waits for the answer).
    pub drain_told: tokio::sync::watch::Sender<Option<u32>>,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A gateway id unique per process: host-ish prefix, pid and start time.
pub fn default_gateway_id() -> String {
    format!("gw-{}-{:x}", std::process::id(), now_ms() & 0xff_ffff)
}

/// A new instance id for this process of `gateway_id`: 64 random bits.
pub fn new_instance_id(gateway_id: &str) -> String {
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

/// One open WebSocket counted against its client address; uncounted on drop.
pub struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl IpSlot {
    /// Takes a slot for `ip`, or `None` when it already has `--max-connections-per-ip`.
    pub fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let mut per_ip = shared.per_ip.lock();
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= shared.config.max_connections_per_ip {
            return None;
        }
        *open += 1;
        Some(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock();
        if let Some(open) = per_ip.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}
