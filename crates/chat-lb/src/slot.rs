//! A connection's slot, and what every connection shares through it. Its own module so that
//! the accept loop (`listener.rs`), which hands slots out, and the connection
//! (`connection.rs`), which holds one until it ends, depend on it and not on each other.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_net::Cidr;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::HealthConfig;
use crate::metrics::Stats;
use crate::pool::Pool;
use crate::sources::{Source, Sources};

/// What every connection needs; shared by all of them.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: Arc<Pool>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) connect_timeout: Duration,
    /// For the fall/rise numbers applied to passive observations.
    pub(crate) health: HealthConfig,
    pub(crate) send_proxy_v2: bool,
    /// The most bytes one relay read moves (see `relay::relay`).
    pub(crate) buffer_size: usize,
    pub(crate) idle_timeout: Option<Duration>,
    /// How long an accepted client may stay silent before it is closed.
    pub(crate) client_first_byte_timeout: Duration,
    /// Connections held and opened per client source; admitted by the accept loop (or, for
    /// a trusted proxy's connections, once its header named the client), given back by each
    /// connection's [`Slot`].
    pub(crate) sources: Sources,
    /// `--accept-proxy-from`: peers whose connections start with a PROXY v2 header.
    pub(crate) accept_proxy_from: Vec<Cidr>,
}

impl Shared {
    /// Whether `peer` is a trusted proxy (`--accept-proxy-from`).
    pub(crate) fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.accept_proxy_from.iter().any(|net| net.contains(peer))
    }
}

/// A connection's slot: held by its task until the connection ends, then gives back the permit
/// and the source's place, and lowers the active-connections gauge. It also carries what every
/// connection shares, so the task holds one `Arc` for both.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    /// The source admitted for this connection; its place is given back on drop. `None` for
    /// a connection from a trusted proxy until the header naming its client is read.
    source: Option<Source>,
    /// One of `max-connections`.
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// A slot for a connection from `source` that was admitted (or, for `None`, one from a
    /// trusted proxy, admitted later) and holds `permit`; counts it as active until it is
    /// dropped.
    pub(crate) fn new(
        shared: Arc<Shared>,
        source: Option<Source>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        shared.stats.active.fetch_add(1, Ordering::Relaxed);
        Self {
            shared,
            source,
            _permit: permit,
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Whether the connection came from a trusted proxy and its client is not known yet.
    pub(crate) fn awaits_client(&self) -> bool {
        self.source.is_none()
    }

    /// Records the source admitted for the client a trusted proxy named.
    pub(crate) fn set_source(&mut self, source: Source) {
        self.source = Some(source);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.stats.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(source) = self.source {
            self.shared.sources.release(source, Instant::now());
        }
    }
}
