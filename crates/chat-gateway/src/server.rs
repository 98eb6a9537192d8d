//! The accept loop and the drain. Before any HTTP: a connection's address
//! (the real one behind a trusted PROXY header) must be within its socket
//! cap and connection rate, and every HTTP connection lives under deadlines
//! (request head, keep-alive idle), so idle sockets cannot pile up. With
//! `--tls-cert` the TLS handshake comes after the PROXY header and before
//! HTTP, under the same first deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chat_net::proxy_v2;
use chat_proto::v1::{server_frame, Reconnect};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::conn::close_code;
use crate::hub::encode_push;
use crate::state::{Refusal, Shared, SocketSlot};
use crate::tls::Tls;

/// Accepts connections until a drain starts, then drains and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) {
    // Sockets before they become WebSockets (which do not hold a permit):
    // room for every WebSocket's handshake plus some plain HTTP requests.
    let permits = Arc::new(Semaphore::new(shared.config.max_connections as usize + 256));
    let accept = accept_loop(listener, shared.clone(), tls, permits);
    tokio::pin!(accept);
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = shared.drain.cancelled() => {}
        _ = &mut accept => {}
    }
    // Keep answering HTTP while draining: the load balancer must see health 503.
    tokio::select! {
        _ = drain(&shared) => {}
        _ = &mut accept => {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
    permits: Arc<Semaphore>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(5);
                accepted
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let accepted = Instant::now();
        let _ = stream.set_nodelay(true);
        // A peer that cannot speak for anyone else is checked here, before
        // a task or a buffer exists for it; a trusted proxy's connection
        // once its header names the client.
        let proxied = shared.config.proxy_protocol && shared.config.proxy_trusted(peer.ip());
        let slot = if proxied {
            None
        } else {
            match shared.edge.admit(&shared, peer.ip()) {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    refused(&shared, peer, refusal);
                    continue;
                }
            }
        };
        tokio::spawn(connection(
            stream,
            peer,
            accepted,
            slot,
            shared.clone(),
            tls.clone(),
            permit,
        ));
    }
}

fn refused(shared: &Shared, client: SocketAddr, refusal: Refusal) {
    let counter = match refusal {
        Refusal::AddressCap => &shared.metrics.refused_address_cap,
        Refusal::AddressRate => &shared.metrics.refused_address_rate,
    };
    counter.fetch_add(1, Relaxed);
    tracing::debug!(%client, ?refusal, "connection closed at accept");
}

/// One accepted connection: its PROXY header (if any), the TLS handshake
/// (with `--tls-cert`), then HTTP. `slot` is already taken for a peer that
/// speaks for itself.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    slot: Option<SocketSlot>,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
    permit: OwnedSemaphorePermit,
) {
    let metrics = &shared.metrics;
    // The PROXY header and the first request head share one deadline.
    let deadline = accepted + shared.config.header_read_timeout();
    let (client, slot) = match slot {
        Some(slot) => {
            if shared.config.proxy_protocol {
                match tokio::time::timeout_at(deadline, proxy_v2::starts_like_header(&stream)).await
                {
                    Ok(Ok(false)) => {}
                    Ok(Ok(true)) => {
                        metrics.refused_proxy_untrusted.fetch_add(1, Relaxed);
                        tracing::debug!(%peer, "closed: a PROXY header from a peer not in --proxy-protocol-from");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection failed before HTTP");
                        return;
                    }
                    Err(_) => {
                        metrics.header_timeouts.fetch_add(1, Relaxed);
                        tracing::debug!(%peer, "closed: nothing sent in time");
                        return;
                    }
                }
            }
            (peer, slot)
        }
        None => {
            let client = match tokio::time::timeout_at(deadline, proxy_v2::read_header(&mut stream))
                .await
            {
                Ok(Ok(Some(client))) => client,
                // LOCAL (the balancer's own health check): the peer is the balancer.
                Ok(Ok(None)) => peer,
                Ok(Err(e)) => {
                    metrics.refused_proxy_invalid.fetch_add(1, Relaxed);
                    tracing::debug!(%peer, error = %e, "refused a connection without a valid PROXY header");
                    return;
                }
                Err(_) => {
                    metrics.header_timeouts.fetch_add(1, Relaxed);
                    tracing::debug!(%peer, "no PROXY header in time");
                    return;
                }
            };
            match shared.edge.admit(&shared, client.ip()) {
                Ok(slot) => (client, slot),
                Err(refusal) => {
                    refused(&shared, client, refusal);
                    return;
                }
            }
        }
    };
    match tls {
        None => serve_http(stream, client, slot, &shared, deadline).await,
        Some(tls) => {
            let handshake = tls.acceptor().accept(stream);
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok(stream)) => serve_http(stream, client, slot, &shared, deadline).await,
                Ok(Err(e)) => {
                    metrics.tls_handshake_failures.fetch_add(1, Relaxed);
                    tracing::debug!(%client, error = %e, "tls handshake failed");
                }
                Err(_) => {
                    metrics.header_timeouts.fetch_add(1, Relaxed);
                    tracing::debug!(%client, "closed: no tls handshake in time");
                }
            }
        }
    }
    drop(permit);
}

/// Serves HTTP on one connection until it ends or is upgraded, under three
/// deadlines: the first request head by `first_request` (hyper's header
/// timer bounds every later head too), `--keep-alive-timeout-ms` of
/// idleness after a response, and one more header timeout for a
/// connection told to close to finish its last response.
async fn serve_http<S>(
    stream: S,
    client: SocketAddr,
    slot: SocketSlot,
    shared: &Arc<Shared>,
    first_request: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = Arc::new(slot);
    let activity = Arc::new(Activity::default());
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        service_fn(move |req| {
            let busy = activity.begin();
            let (shared, slot) = (shared.clone(), slot.clone());
            async move {
                let response = crate::http::serve(req, shared, client, slot).await;
                drop(busy);
                response
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_read_timeout())
        // A client that sends its request and then shuts its write side
        // still gets the answer.
        .half_close(true)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let metrics = &shared.metrics;
    let keep_alive = shared.config.keep_alive_timeout();
    let mut closing_since = None;
    loop {
        let due = match closing_since {
            Some(since) => Some((Due::Close, since + shared.config.header_read_timeout())),
            None => activity.due(first_request, keep_alive),
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    if e.is_timeout() {
                        metrics.header_timeouts.fetch_add(1, Relaxed);
                    }
                    tracing::debug!(%client, error = %e, "http connection ended with an error");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(due.map_or_else(Instant::now, |(_, at)| at)), if due.is_some() => {
                // Look again: a request may have begun meanwhile.
                let now = Instant::now();
                let current = match closing_since {
                    Some(_) => due,
                    None => activity.due(first_request, keep_alive),
                };
                match current {
                    Some((Due::FirstRequest, at)) if at <= now => {
                        metrics.header_timeouts.fetch_add(1, Relaxed);
                        tracing::debug!(%client, "closed: no request head in time");
                        return;
                    }
                    Some((Due::KeepAlive, at)) if at <= now => {
                        metrics.keepalive_closed.fetch_add(1, Relaxed);
                        // Closes an idle connection at once, or after the
                        // response being written.
                        conn.as_mut().graceful_shutdown();
                        closing_since = Some(now);
                    }
                    Some((Due::Close, at)) if at <= now => {
                        tracing::debug!(%client, "closed: its last response was not read in time");
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// What comes due on an HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// No request head yet.
    FirstRequest,
    /// Idle after a response.
    KeepAlive,
    /// Told to close, still writing.
    Close,
}

/// A connection's requests, as its service sees them.
#[derive(Default)]
struct Activity {
    /// Plain mutex: a few fields set or read, no await.
    state: Mutex<ActivityState>,
    /// Woken when a request begins or ends.
    changed: Notify,
}

#[derive(Default)]
struct ActivityState {
    requests: u64,
    in_flight: u32,
    last_done: Option<Instant>,
}

/// One request being answered; its end is noted on drop.
struct Busy(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        {
            let mut state = self.state.lock();
            state.requests += 1;
            state.in_flight += 1;
        }
        self.changed.notify_one();
        Busy(self.clone())
    }

    /// The next deadline: none while a request is being answered.
    fn due(&self, first_request: Instant, keep_alive: Duration) -> Option<(Due, Instant)> {
        let state = self.state.lock();
        if state.requests == 0 {
            Some((Due::FirstRequest, first_request))
        } else if state.in_flight > 0 {
            None
        } else {
            state.last_done.map(|at| (Due::KeepAlive, at + keep_alive))
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut state = self.0.state.lock();
            state.in_flight -= 1;
            state.last_done = Some(Instant::now());
        }
        self.0.changed.notify_one();
    }
}

/// How long a drain waits, after closing the sessions still open at its
/// deadline, for them to say goodbye and leave their rooms.
const DRAIN_GOODBYE: Duration = Duration::from_secs(3);

/// Health turns 503, every client gets a `Reconnect` with its own delay in
/// the first half of the deadline, and whoever is still here at the deadline
/// is closed with 1001. Sessions clean up their presence as they end; the
/// drain waits for their tasks ([`Shared::sessions`]).
pub(crate) async fn drain(shared: &Shared) {
    if shared.draining.swap(true, Ordering::AcqRel) {
        return;
    }
    let deadline = shared.config.drain_timeout();
    let conns: Vec<_> = shared.conns.lock().values().cloned().collect();
    shared.bridge.set_load(conns.len() as u32, true);
    tracing::info!(connections = conns.len(), ?deadline, "draining");
    let spread = (deadline.as_millis() as u64 / 2).max(1);
    let mut seed = crate::state::now_ms() ^ 0x9e37_79b9_7f4a_7c15;
    let mut told = 0u32;
    for conn in &conns {
        seed = splitmix64(seed ^ conn.id);
        let frame = encode_push(server_frame::Kind::Reconnect(Reconnect {
            reason: "gateway draining".into(),
            after_ms: (seed % spread) as u32,
        }));
        if conn.push(frame, &shared.metrics) {
            told += 1;
        }
    }
    shared.drain_told.send_replace(Some(told));
    // Closed, the tracker is done once no session is left. Upgrades are
    // refused from now on; a session still starting counts like the others.
    shared.sessions.close();
    let _ = tokio::time::timeout(deadline, shared.sessions.wait()).await;
    let rest: Vec<_> = shared.conns.lock().values().cloned().collect();
    for conn in &rest {
        conn.close(close_code::GOING_AWAY);
    }
    // Give the closed sessions a moment to say goodbye and leave their rooms.
    let _ = tokio::time::timeout(DRAIN_GOODBYE, shared.sessions.wait()).await;
    tracing::info!(closed = rest.len(), "drain finished");
}

/// A small, well-mixed pseudo-random step (no need for a CSPRNG to jitter).
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
