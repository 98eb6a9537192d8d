//! One client connection: read a trusted proxy's PROXY header (see `terminator`), wait for the
//! client's first byte, choose a backend (with failover), optionally announce the client with a
//! PROXY header, then relay until both sides are done.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chat_net::proxy_v2;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backend::{Backend, Observation, Transition};
use crate::metrics::Stats;
use crate::relay::{self, Meters, Outcome};
use crate::slot::{Shared, Slot};
use crate::terminator;

/// Counts and logs a client that ended, or was ended, before its first byte.
fn closed_before_first_byte(outcome: FirstByte, timeout: Duration, stats: &Stats) {
    match outcome {
        FirstByte::Arrived => {}
        FirstByte::Closed => debug!("client closed before sending anything"),
        FirstByte::Failed(err) => debug!(error = %err, "client failed before sending anything"),
        FirstByte::TimedOut => {
            stats.first_byte_timeouts.fetch_add(1, Ordering::Relaxed);
            debug!(?timeout, "client sent nothing in time; connection closed");
        }
        FirstByte::Cancelled => {
            debug!("drain deadline passed before the client spoke; connection closed");
        }
    }
}

/// Counts and logs a client closed because no backend connection could be opened for it.
fn refused(not_connected: NotConnected, stats: &Stats) {
    match not_connected {
        NotConnected::LocalError(err) => {
            stats.rejected_local_error.fetch_add(1, Ordering::Relaxed);
            warn!(error = %err, "cannot open a backend connection here; connection closed");
        }
        NotConnected::NoneAccepted { tried } => {
            stats.rejected_no_backend.fetch_add(1, Ordering::Relaxed);
            // With none up, the outage was already logged when the last one went down.
            if tried == 0 {
                debug!("no backend is up; connection closed");
            } else {
                warn!(
                    tried,
                    "no backend accepted the connection; connection closed"
                );
            }
        }
    }
}

/// Serves one accepted client, holding `slot` (and through it what every connection shares)
/// until it ends. `cancel` fires when the drain deadline has passed. Runs on the relay thread
/// the client was handed to; the client socket joins that thread's event loop here.
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
    slot: Slot,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Given back when the connection ends, whichever way it ends.
        let mut slot = slot;
        let cancel = &cancel;
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
        // Boxed (like the connect below) so its timers are freed instead of staying in every
        // connection's task for its whole life.
        let spoken = Box::pin(until_first_byte(&mut client, peer, &mut slot, cancel)).await;
        let Some((announced, prefix)) = spoken else {
            return;
        };
        let shared = slot.shared();
        // Boxed so the connect timer is freed once connected instead of staying in every
        // connection's task for its whole life.
        let (backend, mut upstream) = match Box::pin(connect(shared)).await {
            Ok(connected) => connected,
            Err(not_connected) => return refused(not_connected, &shared.stats),
        };
        let stats = &backend.stats;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.active_connections.fetch_add(1, Ordering::Relaxed);
        let _active = DecrementOnDrop(&stats.active_connections);
        debug!(backend = backend.addr(), "relaying");

        if shared.send_proxy_v2 {
            let header = match client.local_addr() {
                Ok(local) => proxy_v2::header(announced, local),
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

        if !prefix.is_empty() {
            if let Err(err) = upstream.write_all(&prefix).await {
                debug!(backend = backend.addr(), error = %err, "backend closed before relaying");
                return;
            }
            stats
                .bytes_to_backend
                .fetch_add(prefix.len() as u64, Ordering::Relaxed);
        }
        drop(prefix);

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
            Outcome::Idle => {
                shared.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                debug!("idle timeout; connection closed");
            }
            Outcome::Cancelled => debug!("drain deadline passed; connection closed"),
        }
    }
}

/// Everything before a backend is chosen. Nothing is opened towards a backend before the
/// client has spoken: a client that connects and says nothing costs a backend nothing and is
/// closed at the deadline. The byte is peeked at, not read: the relay reads it like any other,
/// unchanged. Before it, a trusted proxy's PROXY header is read (the deadline covers both);
/// after it, an untrusted client's first bytes are screened for a PROXY signature.
///
/// Returns the client to announce to the backend and the bytes already read from it (to be
/// relayed first), or `None` when the connection was closed (and counted).
async fn until_first_byte(
    client: &mut TcpStream,
    peer: SocketAddr,
    slot: &mut Slot,
    cancel: &CancellationToken,
) -> Option<(SocketAddr, Vec<u8>)> {
    let timeout = slot.shared().client_first_byte_timeout;
    let deadline = std::time::Instant::now() + timeout;
    let trusted = slot.awaits_client();
    let announced = if trusted {
        terminator::announced_client(client, peer, slot, deadline, cancel).await?
    } else {
        peer
    };
    let stats = &slot.shared().stats;
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match first_byte(client, left, cancel, stats).await {
        FirstByte::Arrived => {}
        silent => {
            closed_before_first_byte(silent, timeout, stats);
            return None;
        }
    }
    if trusted {
        return Some((announced, Vec::new()));
    }
    // What an untrusted client sent that might have been a PROXY signature, read to tell.
    let prefix = terminator::screened_prefix(client, deadline, cancel, stats).await?;
    Some((announced, prefix))
}

/// How the first byte wait ended.
enum FirstByte {
    /// At least one byte is waiting to be read.
    Arrived,
    /// The client closed (EOF) without sending anything.
    Closed,
    Failed(io::Error),
    TimedOut,
    /// The drain deadline passed.
    Cancelled,
}

/// Waits until `client` has sent a byte (without taking it), closed, or `timeout` passed.
async fn first_byte(
    client: &TcpStream,
    timeout: Duration,
    cancel: &CancellationToken,
    stats: &Stats,
) -> FirstByte {
    stats.awaiting_first_byte.fetch_add(1, Ordering::Relaxed);
    let _waiting = DecrementOnDrop(&stats.awaiting_first_byte);
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(timeout, client.peek(&mut byte)) => match peeked {
            Ok(Ok(0)) => FirstByte::Closed,
            Ok(Ok(_)) => FirstByte::Arrived,
            Ok(Err(err)) => FirstByte::Failed(err),
            Err(_) => FirstByte::TimedOut,
        },
        () = cancel.cancelled() => FirstByte::Cancelled,
    }
}

/// Why no backend connection was made.
enum NotConnected {
    /// Every healthy backend (this many) was tried and none accepted.
    NoneAccepted { tried: usize },
    /// This process could not open a connection at all (see [`is_local_error`]); the other
    /// backends were not tried, they would fail the same way.
    LocalError(io::Error),
}

/// Tries the healthy backends in round-robin order until one accepts. A failed or timed-out
/// attempt marks that backend down at once (passive check) and moves on to the next one,
/// unless it failed for want of local resources, which says nothing about the backend.
async fn connect(shared: &Shared) -> Result<(Arc<Backend>, TcpStream), NotConnected> {
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
                Ok(Err(err)) if is_local_error(&err) => {
                    shared
                        .stats
                        .local_connect_errors
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(NotConnected::LocalError(err));
                }
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
    Err(NotConnected::NoneAccepted { tried })
}

/// A connect error caused by this process or host running out of something (file
/// descriptors, ephemeral ports, memory), not by the backend. A flood of clients can cause
/// these; holding them against a healthy backend would let the flood take it out of rotation.
pub(crate) fn is_local_error(err: &io::Error) -> bool {
    // EMFILE and ENFILE have these numbers on Linux, the BSDs and macOS alike; std gives them
    // no `ErrorKind` of their own.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(
        err.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::OutOfMemory
    ) || matches!(err.raw_os_error(), Some(ENFILE | EMFILE))
}

/// Keeps a gauge right on every exit path.
struct DecrementOnDrop<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
