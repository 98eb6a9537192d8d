//! PROXY v2 headers coming in. A TLS terminator (or another proxy) in front of chat-lb, trusted
//! with `--accept-proxy-from`, starts each connection with a header naming the real client:
//! that client is then the one limited per source and announced to backends. Every other
//! peer is screened: one that starts with a PROXY signature is closed, since relaying it would
//! let a client claim any address to a backend that believes chat-lb's headers.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chat_net::proxy_v2;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::Stats;
use crate::slot::Slot;
use crate::sources::{Refusal, Source};

/// Why a connection was closed before relaying.
enum Closed {
    /// The peer is trusted, but what it sent is not a PROXY v2 header.
    Invalid(proxy_v2::ProxyError),
    /// The peer is not trusted and sent a PROXY v2 signature.
    Untrusted,
    /// The real client's source is over one of its limits.
    Source(Refusal),
    /// The first-byte deadline passed in the middle of a header or signature.
    TimedOut,
    /// The drain deadline passed.
    Cancelled,
    Failed(io::Error),
}

fn count(closed: Closed, stats: &Stats) {
    match closed {
        Closed::Invalid(err) => {
            stats.rejected_proxy_invalid.fetch_add(1, Ordering::Relaxed);
            debug!(error = %err, "trusted peer sent no valid PROXY header; connection closed");
        }
        Closed::Untrusted => {
            stats
                .rejected_proxy_untrusted
                .fetch_add(1, Ordering::Relaxed);
            debug!("PROXY header from a peer not in --accept-proxy-from; connection closed");
        }
        Closed::Source(refusal) => {
            let (counter, limit) = match refusal {
                Refusal::Cap => (&stats.rejected_source_cap, "max-conns-per-source"),
                Refusal::Rate => (&stats.rejected_source_rate, "conn-rate-per-source"),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            debug!(limit, "per-source limit reached; connection closed");
        }
        Closed::TimedOut => {
            stats.first_byte_timeouts.fetch_add(1, Ordering::Relaxed);
            debug!("PROXY header incomplete at the deadline; connection closed");
        }
        Closed::Cancelled => debug!("drain deadline passed before relaying; connection closed"),
        Closed::Failed(err) => debug!(error = %err, "client failed before relaying"),
    }
}

/// For a connection from a trusted peer (its slot admitted no source yet): reads the PROXY
/// header it must start with, by `deadline`, and admits the client it names (the peer itself
/// for a LOCAL header, the terminator's own health checks) under the per-source limits.
/// Returns that client, or `None` when the connection was closed (and counted).
pub(crate) async fn announced_client(
    client: &mut TcpStream,
    peer: SocketAddr,
    slot: &mut Slot,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Option<SocketAddr> {
    // The signature first, so that anything else is refused at its first byte.
    let signature = match signature_prefix(client, deadline, cancel).await {
        Ok(prefix) if prefix == proxy_v2::SIGNATURE[..] => prefix,
        Ok(_) => return none(Closed::Invalid(proxy_v2::ProxyError::BadSignature), slot),
        Err(closed) => return none(closed, slot),
    };
    let mut whole = (&signature[..]).chain(&mut *client);
    let read = tokio::select! {
        read = tokio::time::timeout_at(deadline.into(), proxy_v2::read_header(&mut whole)) => read,
        () = cancel.cancelled() => return none(Closed::Cancelled, slot),
    };
    let announced = match read {
        Ok(Ok(Some(client))) => client,
        Ok(Ok(None)) => peer,
        Ok(Err(err)) => return none(Closed::Invalid(err), slot),
        Err(_) => return none(Closed::TimedOut, slot),
    };
    let source = Source::of(announced.ip());
    if let Err(refusal) = slot.shared().sources.admit(source, Instant::now()) {
        return none(Closed::Source(refusal), slot);
    }
    slot.set_source(source);
    debug!(client = %announced, "client announced by a trusted proxy");
    Some(announced)
}

fn none(closed: Closed, slot: &Slot) -> Option<SocketAddr> {
    count(closed, &slot.shared().stats);
    None
}

/// For a connection from an untrusted peer whose first byte has arrived: reads the bytes that
/// could be the start of a PROXY v2 signature (none unless the first byte is the signature's
/// first). Returns them, to be relayed first and unchanged; `None` when they are the
/// signature, or stayed a part of it until `deadline` (the connection is then closed, and
/// counted).
pub(crate) async fn screened_prefix(
    client: &mut TcpStream,
    deadline: Instant,
    cancel: &CancellationToken,
    stats: &Stats,
) -> Option<Vec<u8>> {
    let mut first = [0u8; 1];
    let result = match client.peek(&mut first).await {
        Ok(1) if first[0] == proxy_v2::SIGNATURE[0] => {
            signature_prefix(client, deadline, cancel).await
        }
        Ok(_) => return Some(Vec::new()),
        Err(err) => Err(Closed::Failed(err)),
    };
    match result {
        Ok(prefix) if prefix == proxy_v2::SIGNATURE[..] => count(Closed::Untrusted, stats),
        Ok(prefix) => return Some(prefix),
        Err(closed) => count(closed, stats),
    }
    None
}

/// Reads the bytes that could begin a PROXY v2 signature: up to its 12 bytes, the first byte
/// that differs (included), or the end of the stream, by `deadline`.
async fn signature_prefix(
    client: &mut TcpStream,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<Vec<u8>, Closed> {
    let signature = &proxy_v2::SIGNATURE;
    let mut prefix = Vec::with_capacity(signature.len());
    while prefix.len() < signature.len() && signature.starts_with(&prefix) {
        let mut chunk = [0u8; 12];
        let want = signature.len() - prefix.len();
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline.into(), client.read(&mut chunk[..want])) => read,
            () = cancel.cancelled() => return Err(Closed::Cancelled),
        };
        match read {
            // The end of the stream: whatever came is what there is.
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => prefix.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => return Err(Closed::Failed(err)),
            Err(_) => return Err(Closed::TimedOut),
        }
    }
    Ok(prefix)
}
