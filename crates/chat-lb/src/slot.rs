//! A connection's slot, and what every connection shares through it. Its own module so that
//! the accept loop (`listener.rs`), which hands slots out, and the connection
//! (`connection.rs`), which holds one until it ends, depend on it and not on each other.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Connections held and opened per client source; admitted by the accept loop, given
    /// back by each connection's [`Slot`].
    pub(crate) sources: Sources,
}

/// A connection's slot: held by its task until the connection ends, then gives back the permit
/// and the source's place, and lowers the active-connections gauge. It also carries what every
/// connection shares, so the task holds one `Arc` for both.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    /// The source admitted for this connection; its place is given back on drop.
    source: Source,
    /// One of `max-connections`.
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// A slot for a connection from `source` that was admitted and holds `permit`; counts it
    /// as active until it is dropped.
    pub(crate) fn new(shared: Arc<Shared>, source: Source, permit: OwnedSemaphorePermit) -> Self {
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
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.shared.sources.release(self.source, Instant::now());
    }
}
