//! One client connection: choose a backend (with failover), optionally announce the client
//! with a PROXY header, then relay until both sides are done.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backend::{Backend, Observation, Transition};
use crate::config::HealthConfig;
use crate::listener::Slot;
use crate::metrics::Stats;
use crate::pool::Pool;
use crate::proxy_protocol;
use crate::relay::{self, Meters, Outcome};

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
}

/// Serves one accepted client, holding `slot` until it ends. `cancel` fires when the drain
/// deadline has passed. Runs on the relay thread the client was handed to; the client
/// socket joins that thread's event loop here.
///
/// A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// keeps a second copy of its arguments in the task for its whole life (rust-lang/rust#62958),
/// and every idle connection pays for that task.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice"
)]
pub(crate) fn serve(
    client: std::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    slot: Slot,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Given back when the connection ends, whichever way it ends.
        let _slot = slot;
        let (shared, cancel) = (&*shared, &cancel);
        let mut client = match TcpStream::from_std(client) {
            Ok(client) => client,
            Err(err) => {
                debug!(error = %err, "client socket could not join the relay thread");
                return;
            }
        };
        // No Nagle delay on either leg: small interactive writes must pass at once.
        if let Err(err) = client.set_nodelay(true) {
            debug!(error = %err, "client closed before relaying");
            return;
        }
        // Boxed so the connect timer is freed once connected instead of staying in every
        // connection's task for its whole life.
        let (backend, mut upstream) = match Box::pin(connect(shared)).await {
            Ok(connected) => connected,
            Err(tried) => {
                shared
                    .stats
                    .rejected_no_backend
                    .fetch_add(1, Ordering::Relaxed);
                // With none up, the outage was already logged when the last one went down.
                if tried == 0 {
                    debug!("no backend is up; connection closed");
                } else {
                    warn!(
                        tried,
                        "no backend accepted the connection; connection closed"
                    );
                }
                return;
            }
        };
        let stats = &backend.stats;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.active_connections.fetch_add(1, Ordering::Relaxed);
        let _active = DecrementOnDrop(&stats.active_connections);
        debug!(backend = backend.addr(), "relaying");

        if shared.send_proxy_v2 {
            let header = match client.local_addr() {
                Ok(local) => proxy_protocol::header(peer, local),
                Err(err) => {
                    debug!(error = %err, "client closed before relaying");
                    return;
                }
            };
            if let Err(err) = upstream.write_all(&header).await {
                warn!(backend = backend.addr(), error = %err, "cannot send PROXY header");
                return;
            }
        }

        let meters = Meters {
            to_backend: &stats.bytes_to_backend,
            to_client: &stats.bytes_to_client,
        };
        let outcome = relay::relay(
            &mut client,
            &mut upstream,
            shared.buffer_size,
            shared.idle_timeout,
            meters,
            cancel,
        )
        .await;
        match outcome {
            Outcome::Closed => debug!("connection closed"),
            Outcome::Failed(err) => debug!(error = %err, "connection ended with an error"),
            Outcome::Idle => debug!("idle timeout; connection closed"),
            Outcome::Cancelled => debug!("drain deadline passed; connection closed"),
        }
    }
}

/// Tries the healthy backends in round-robin order until one accepts. A failed or timed-out
/// attempt marks that backend down at once (passive check) and moves on to the next one.
/// Fails with the number of backends tried.
async fn connect(shared: &Shared) -> Result<(Arc<Backend>, TcpStream), usize> {
    let candidates = shared.pool.candidates();
    let tried = candidates.len();
    for backend in candidates {
        let error =
            match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(backend.addr()))
                .await
            {
                Ok(Ok(stream)) => match stream.set_nodelay(true) {
                    Ok(()) => return Ok((backend, stream)),
                    Err(err) => err.to_string(),
                },
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("timed out after {:?}", shared.connect_timeout),
            };
        let transition = backend.observe(
            Observation::ConnectFailed,
            shared.health.fall,
            shared.health.rise,
        );
        if transition == Some(Transition::WentDown) {
            warn!(backend = backend.addr(), %error, "connect failed; backend down");
        } else {
            debug!(backend = backend.addr(), %error, "connect failed");
        }
    }
    Err(tried)
}

/// Keeps a gauge right on every exit path.
struct DecrementOnDrop<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
