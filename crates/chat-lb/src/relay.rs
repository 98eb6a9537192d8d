//! Moving bytes both ways between a client and a backend, counting them as they pass.
//!
//! Most relayed connections are idle most of the time, so an idle connection owns no buffer:
//! each direction waits for readiness, reads into a per-thread scratch buffer and writes the
//! bytes on at once. Only when the other side cannot take them all does the direction keep
//! the rest in a buffer of its own, freed as soon as it is written.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
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

thread_local! {
    /// Where every relay on this thread reads into. Bytes never stay here across an await:
    /// what cannot be written at once moves to the direction's own remainder buffer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Relays until both directions are closed. An EOF in one direction becomes a
/// `shutdown(Write)` on the other socket while the opposite direction keeps flowing
/// (`copy_bidirectional` semantics). One read moves at most `max_read` bytes; an idle
/// connection holds no buffer, a direction whose reader is slow holds at most `max_read`.
///
/// Both directions are polled by hand from one future (`poll_read` into the scratch buffer,
/// then `try_write`), so the waits live in the sockets' own waker slots and the future stays small.
pub(crate) async fn relay(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    max_read: usize,
    idle_timeout: Option<Duration>,
    meters: Meters<'_>,
    cancel: &CancellationToken,
) -> Outcome {
    let activity = Activity::new();
    // The clock is read on every read only when someone asked for an idle timeout.
    let touch = idle_timeout.map(|_| &activity);
    let mut to_backend = Direction::new(meters.to_backend);
    let mut to_client = Direction::new(meters.to_client);
    // Every connection shares the one drain token, and polling its waiter takes the token's
    // mutex; re-polling it on each relay wake-up would serialise all I/O events on one lock.
    // So the waiter is polled only when the waker it holds would not wake this poll's task
    // (the first poll, or if the relay is ever polled from elsewhere); otherwise the token
    // is checked with one atomic load.
    let cancelled = cancel.cancelled();
    let idle = activity.idle_for(idle_timeout);
    tokio::pin!(cancelled, idle);
    let mut registered: Option<std::task::Waker> = None;
    // `move`: the closure owns the state instead of pointing at it, which keeps the task small.
    std::future::poll_fn(move |cx| {
        let up = to_backend.poll(cx, client, backend, max_read, touch);
        if let Poll::Ready(Err(err)) = up {
            return Poll::Ready(Outcome::Failed(err));
        }
        match (up, to_client.poll(cx, backend, client, max_read, touch)) {
            (_, Poll::Ready(Err(err))) => return Poll::Ready(Outcome::Failed(err)),
            (Poll::Ready(_), Poll::Ready(_)) => return Poll::Ready(Outcome::Closed),
            _ => {}
        }
        if cancel.is_cancelled() {
            return Poll::Ready(Outcome::Cancelled);
        }
        if !registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            registered = Some(cx.waker().clone());
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Outcome::Cancelled);
            }
        }
        idle.as_mut().poll(cx).map(|()| Outcome::Idle)
    })
    .await
}

/// One direction's state between polls.
struct Direction<'a> {
    /// Bytes read but not yet taken by the writer, from `sent` on. Empty (unallocated) while
    /// the writer keeps up, which is the usual case.
    pending: Vec<u8>,
    sent: usize,
    /// The reader reached EOF; the writer is to be shut down once `pending` is written.
    eof: bool,
    /// The writer was shut down; nothing more to do.
    done: bool,
    /// Bytes written, for `/metrics`; one relaxed add per write.
    written: &'a AtomicU64,
}

impl<'a> Direction<'a> {
    fn new(written: &'a AtomicU64) -> Self {
        Self {
            pending: Vec::new(),
            sent: 0,
            eof: false,
            done: false,
            written,
        }
    }

    /// Moves bytes from `from` to `to` until one of them would block; ready once `to` is shut
    /// down after `from`'s EOF.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
        max_read: usize,
        activity: Option<&Activity>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            while self.sent < self.pending.len() {
                ready!(to.poll_write_ready(cx))?;
                match write_some(to, &self.pending[self.sent..]) {
                    Ok(n) => {
                        self.written.fetch_add(n as u64, Ordering::Relaxed);
                        self.sent += n;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Poll::Ready(Err(err)),
                }
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.sent = 0;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                continue;
            }

            let read = SCRATCH.with_borrow_mut(|scratch| {
                if scratch.len() < max_read {
                    scratch.resize(max_read, 0);
                }
                let buf = &mut scratch[..max_read];
                // `poll_read` rather than readiness + `try_read`: after a short read it clears
                // the readiness itself, saving the `EAGAIN` read a `try_read` loop would make.
                let mut filled = ReadBuf::new(buf);
                ready!(Pin::new(&mut *from).poll_read(cx, &mut filled))?;
                let n = filled.filled().len();
                let buf = filled.filled();
                let mut done = 0;
                while done < n {
                    match write_some(to, &buf[done..n]) {
                        Ok(w) => done += w,
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) => return Poll::Ready(Err(err)),
                    }
                }
                if done > 0 {
                    self.written.fetch_add(done as u64, Ordering::Relaxed);
                }
                if done < n {
                    self.pending.extend_from_slice(&buf[done..n]);
                }
                Poll::Ready(Ok(n))
            });
            match ready!(read) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    if let Some(activity) = activity {
                        activity.touch();
                    }
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

/// `try_write` of a non-empty slice; a socket that takes nothing is an error, not a loop.
fn write_some(to: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    match to.try_write(buf)? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        n => Ok(n),
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
        // Boxed: only connections with a timeout pay for a timer entry.
        let mut sleep = Box::pin(tokio::time::sleep_until(self.start + timeout));
        loop {
            sleep.as_mut().await;
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected loopback sockets: (the far end, the end the relay gets).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (inner, _) = listener.accept().await.unwrap();
        (outer, inner)
    }

    /// What a relay works with: the far ends a test drives, the ends the relay gets, its
    /// byte counters (to the backend, to the client) and its drain token.
    struct Rig {
        client: TcpStream,
        backend: TcpStream,
        inner: (TcpStream, TcpStream),
        counts: (AtomicU64, AtomicU64),
        cancel: CancellationToken,
    }

    async fn rig() -> Rig {
        let (client, client_inner) = socket_pair().await;
        let (backend, backend_inner) = socket_pair().await;
        Rig {
            client,
            backend,
            inner: (client_inner, backend_inner),
            counts: (AtomicU64::new(0), AtomicU64::new(0)),
            cancel: CancellationToken::new(),
        }
    }

    /// `relay` over a rig's inner ends.
    fn start<'a>(
        inner: &'a mut (TcpStream, TcpStream),
        counts: &'a (AtomicU64, AtomicU64),
        cancel: &'a CancellationToken,
        max_read: usize,
        idle_timeout: Option<Duration>,
    ) -> impl Future<Output = Outcome> + 'a {
        let meters = Meters {
            to_backend: &counts.0,
            to_client: &counts.1,
        };
        relay(
            &mut inner.0,
            &mut inner.1,
            max_read,
            idle_timeout,
            meters,
            cancel,
        )
    }

    #[tokio::test]
    async fn half_close_passes_on_and_bytes_are_counted() {
        let Rig {
            client: client_outer,
            backend: backend_outer,
            mut inner,
            counts,
            cancel,
        } = rig().await;
        let relay = start(&mut inner, &counts, &cancel, 16, None);
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
        assert_eq!(counts.0.load(Ordering::Relaxed), 5);
        assert_eq!(counts.1.load(Ordering::Relaxed), 15);
    }

    /// A reader slower than the writer: the relay keeps what the socket cannot take, waits,
    /// and delivers every byte in order (reads are `max_read`-sized, so many of them).
    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_in_order() {
        let Rig {
            client: client_outer,
            backend: backend_outer,
            mut inner,
            counts,
            cancel,
        } = rig().await;
        let sent: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let relay = start(&mut inner, &counts, &cancel, 64 << 10, None);
        let peers = async {
            let (mut client, mut backend) = (client_outer, backend_outer);
            let write = async {
                client.write_all(&sent).await.unwrap();
                client.shutdown().await.unwrap();
                client
            };
            let read = async {
                let mut got = Vec::new();
                let mut chunk = [0u8; 1000];
                loop {
                    let n = backend.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                    if got.len() % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                backend.shutdown().await.unwrap();
                got
            };
            let (_client, got) = tokio::join!(write, read);
            assert!(got == sent, "bytes lost or reordered");
        };
        let (outcome, ()) = tokio::join!(relay, peers);
        assert!(matches!(outcome, Outcome::Closed), "{outcome:?}");
        assert_eq!(counts.0.load(Ordering::Relaxed), sent.len() as u64);
        assert_eq!(counts.1.load(Ordering::Relaxed), 0);
    }

    /// The drain reaches a relay even if its first poll came with a waker that wakes
    /// nothing: the relay registers again once it is polled by its own task.
    #[tokio::test]
    async fn a_drain_ends_a_relay_first_polled_under_another_waker() {
        // The far ends stay open: the relay must end by the drain, not by an EOF.
        let Rig {
            client: _client,
            backend: _backend,
            mut inner,
            counts,
            cancel,
        } = rig().await;
        let relay = start(&mut inner, &counts, &cancel, 16, None);
        tokio::pin!(relay);
        let mut elsewhere = Context::from_waker(std::task::Waker::noop());
        assert!(relay.as_mut().poll(&mut elsewhere).is_pending());
        // On this single-threaded test runtime the drain runs only once the relay, now
        // awaited by this task, has been polled again and is waiting.
        let drain = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.cancel() }
        });
        // The deadline is checked first: a relay that only notices the drain when something
        // else wakes its task (this deadline) has missed it.
        let outcome = tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(5)) => panic!("the relay missed the drain"),
            outcome = relay => outcome,
        };
        assert!(matches!(outcome, Outcome::Cancelled), "{outcome:?}");
        drain.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_end_after_the_timeout() {
        // The far ends stay open and silent.
        let Rig {
            client: _client,
            backend: _backend,
            mut inner,
            counts,
            cancel,
        } = rig().await;
        let started = Instant::now();
        let outcome = start(
            &mut inner,
            &counts,
            &cancel,
            16,
            Some(Duration::from_secs(30)),
        )
        .await;
        assert!(matches!(outcome, Outcome::Idle), "{outcome:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
