//! Moving bytes both ways between a client and a backend, counting them as they pass.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Both sides closed their write half (half-closes were passed on).
    Closed,
    /// A side failed (reset, broken pipe); the other one is closed by dropping it.
    Failed(io::Error),
    /// No byte moved for the idle timeout.
    Idle,
    /// The drain deadline passed during shutdown.
    Cancelled,
}

/// Counters the relay updates while it runs, so `/metrics` sees long-lived connections
/// before they end.
pub(crate) struct Meters<'a> {
    pub(crate) to_backend: &'a AtomicU64,
    pub(crate) to_client: &'a AtomicU64,
}

/// Relays until both directions are closed. An EOF in one direction becomes a
/// `shutdown(Write)` on the other socket while the opposite direction keeps flowing
/// (`copy_bidirectional` semantics). Memory per connection is two `buffer_size` buffers.
pub(crate) async fn relay<C, B>(
    client: C,
    backend: B,
    buffer_size: usize,
    idle_timeout: Option<Duration>,
    meters: Meters<'_>,
    cancel: &CancellationToken,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = Metered {
        inner: client,
        written: meters.to_client,
        activity: &activity,
    };
    let mut backend = Metered {
        inner: backend,
        written: meters.to_backend,
        activity: &activity,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut backend,
        buffer_size,
        buffer_size,
    );
    tokio::select! {
        result = copy => match result {
            Ok(_) => Outcome::Closed,
            Err(err) => Outcome::Failed(err),
        },
        () = activity.idle_for(idle_timeout) => Outcome::Idle,
        () = cancel.cancelled() => Outcome::Cancelled,
    }
}

/// When bytes last moved, as milliseconds since the relay started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `timeout`; never without a timeout.
    async fn idle_for(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that counts the bytes written to it and notes activity on reads.
struct Metered<'a, S> {
    inner: S,
    written: &'a AtomicU64,
    activity: &'a Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_passes_on_and_bytes_are_counted() {
        let (client_outer, client_inner) = tokio::io::duplex(64);
        let (backend_inner, backend_outer) = tokio::io::duplex(64);
        let (to_backend, to_client) = (AtomicU64::new(0), AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let relay = relay(
            client_inner,
            backend_inner,
            16,
            None,
            Meters {
                to_backend: &to_backend,
                to_client: &to_client,
            },
            &cancel,
        );
        let peers = async {
            let (mut client, mut backend) = (client_outer, backend_outer);
            client.write_all(b"hello").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            backend.write_all(b"reply after eof").await.unwrap();
            backend.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            assert_eq!(reply, b"reply after eof");
        };
        let (outcome, ()) = tokio::join!(relay, peers);
        assert!(matches!(outcome, Outcome::Closed), "{outcome:?}");
        assert_eq!(to_backend.load(Ordering::Relaxed), 5);
        assert_eq!(to_client.load(Ordering::Relaxed), 15);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_end_after_the_timeout() {
        let (_client, client_inner) = tokio::io::duplex(64);
        let (backend_inner, _backend) = tokio::io::duplex(64);
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let outcome = relay(
            client_inner,
            backend_inner,
            16,
            Some(Duration::from_secs(30)),
            Meters {
                to_backend: &a,
                to_client: &b,
            },
            &cancel,
        )
        .await;
        assert!(matches!(outcome, Outcome::Idle), "{outcome:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
