//! The accept loop and the drain.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::v1::{server_frame, Reconnect};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::conn::close_code;
use crate::hub::encode_push;
use crate::proxy;
use crate::state::Shared;

/// How long a connection may take to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until a drain starts, then drains and returns.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    // Room for every WebSocket plus some plain HTTP requests (health, metrics).
    let permits = Arc::new(Semaphore::new(shared.config.max_connections as usize + 256));
    let accept = accept_loop(listener, shared.clone(), permits);
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, permits: Arc<Semaphore>) {
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
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let peer = if shared.config.proxy_protocol {
                let header =
                    tokio::time::timeout(PROXY_HEADER_TIMEOUT, proxy::read_header(&mut stream))
                        .await;
                match header {
                    Ok(Ok(Some(client))) => client,
                    // LOCAL (the balancer's own health check): the peer is the balancer.
                    Ok(Ok(None)) => peer,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "refused a connection without a valid PROXY header");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no PROXY header in time");
                        return;
                    }
                }
            } else {
                peer
            };
            let service = service_fn(move |req| crate::http::serve(req, shared.clone(), peer));
            let conn = hyper::server::conn::http1::Builder::new()
                // A client that sends its request and then shuts its write side
                // still gets the answer.
                .half_close(true)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Health turns 503, every client gets a `Reconnect` with its own delay in
/// the first half of the deadline, and whoever is still here at the deadline
/// is closed with 1001. Sessions clean up their presence as they end.
pub async fn drain(shared: &Shared) {
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
    let until = Instant::now() + deadline;
    while Instant::now() < until && !shared.conns.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rest: Vec<_> = shared.conns.lock().values().cloned().collect();
    for conn in &rest {
        conn.close(close_code::GOING_AWAY);
    }
    // Give the closed sessions a moment to say goodbye and leave their rooms.
    let grace = Instant::now() + Duration::from_secs(3);
    while Instant::now() < grace && !shared.conns.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(closed = rest.len(), "drain finished");
}

/// A small, well-mixed pseudo-random step (no need for a CSPRNG to jitter).
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
