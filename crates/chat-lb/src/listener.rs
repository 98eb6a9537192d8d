//! The accept loop: connection slots, per-source admission, back-off on accept errors, one
//! task per connection.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, warn, Instrument};

use crate::connection;
use crate::shards::Shards;
use crate::slot::{Shared, Slot};
use crate::sources::{Refusal, Source};

/// First and longest pause after an accept error such as EMFILE.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts clients until `shutdown` completes.
pub(crate) struct Listener {
    listener: TcpListener,
    /// One permit per relayed connection (`max-connections`).
    slots: Arc<Semaphore>,
    shared: Arc<Shared>,
    /// The relay threads connections are spread over.
    shards: Arc<Shards>,
    /// Owns every connection task so shutdown can wait for them.
    connections: TaskTracker,
    /// Fires when the drain deadline has passed.
    cancel: CancellationToken,
    /// Numbers connections for their tracing span.
    next_id: AtomicU64,
}

impl Listener {
    pub(crate) fn new(
        listener: TcpListener,
        max_connections: usize,
        shared: Arc<Shared>,
        shards: Arc<Shards>,
        connections: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            shared,
            shards,
            connections,
            cancel,
            next_id: AtomicU64::new(0),
        }
    }

    /// Runs the loop; returning drops the listening socket, so new clients are refused.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // The slot is taken before accepting, so a client accepted while a slot was free
            // is never turned away. With every slot taken we still accept: the excess client
            // is closed at once and counted, instead of hanging in the kernel backlog.
            let reserved = Arc::clone(&self.slots).try_acquire_owned().ok();
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => return,
                accepted = self.accept() => accepted,
            };
            let stats = &self.shared.stats;
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let Some(permit) =
                reserved.or_else(|| Arc::clone(&self.slots).try_acquire_owned().ok())
            else {
                stats
                    .rejected_max_connections
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "max-connections reached; connection closed");
                drop(stream);
                continue;
            };
            // A trusted proxy carries many clients: each is admitted once its header names it.
            if self.shared.is_trusted_proxy(peer.ip()) {
                self.spawn(stream, peer, None, permit);
                continue;
            }
            // Before anything else is spent on the client; a refused one gives its slot back.
            let source = Source::of(peer.ip());
            if let Err(refusal) = self.shared.sources.admit(source, Instant::now()) {
                let (counter, limit) = match refusal {
                    Refusal::Cap => (&stats.rejected_source_cap, "max-conns-per-source"),
                    Refusal::Rate => (&stats.rejected_source_rate, "conn-rate-per-source"),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, %source, limit, "per-source limit reached; connection closed");
                drop(stream);
                continue;
            }
            self.spawn(stream, peer, Some(source), permit);
        }
    }

    fn spawn(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        source: Option<Source>,
        permit: OwnedSemaphorePermit,
    ) {
        let slot = Slot::new(Arc::clone(&self.shared), source, permit);
        // Handed over as a plain socket: it joins the event loop of the thread it goes to.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                debug!(%peer, error = %err, "client gone before relaying");
                return;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = self.cancel.clone();
        // The connection's task is made on its relay thread, by a small hand-over task: memory
        // a thread allocates comes from that thread's malloc arena, and a long-lived task
        // allocated here but used and freed there left both arenas fragmented (about 130
        // bytes more per idle connection). The connection's future is spawned as it is, not
        // awaited inside the hand-over, which would keep a second copy of it for its life.
        // The hand-over is tracked too, so a drain never sees the tracker empty in between.
        let connections = self.connections.clone();
        self.connections.spawn_on(
            async move {
                let span = info_span!("connection", id, %peer);
                connections.spawn(connection::serve(stream, peer, slot, cancel).instrument(span));
            },
            self.shards.next(),
        );
    }

    /// Accepts one client; errors that concern only that client are skipped, others
    /// (EMFILE, ENFILE, ENOBUFS...) pause the loop with a growing back-off instead of spinning.
    async fn accept(&self) -> (TcpStream, std::net::SocketAddr) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(err) if is_client_error(&err) => {
                    debug!(error = %err, "client gone before accept");
                }
                Err(err) => {
                    self.shared
                        .stats
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(error = %err, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

fn is_client_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
