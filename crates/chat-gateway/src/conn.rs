//! The handle through which anything outside a connection's task reaches it:
//! its bounded outbound queue, its close signal, and commands that change the
//! session's own state (an operator's kick out of one room).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::wire::Frame;

/// WebSocket close codes the server uses (see the contract's header).
pub(crate) mod close_code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const UNSUPPORTED: u16 = 1003;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const KICKED: u16 = 4001;
    pub(crate) const REPLACED: u16 = 4002;
    pub(crate) const INVALID_TOKEN: u16 = 4003;
}

/// Commands queued per connection before more are refused (they are rare:
/// an operator's action, one per room at most).
const COMMAND_QUEUE: usize = 64;
/// A writer that took at least this many frames at once expects more: it
/// yields once and takes what arrived meanwhile into the same write.
pub(crate) const FULL_BATCH: usize = 64;
/// Queue buffers (the outbox and the writer's batch swap places on every
/// take, so a busy connection allocates nothing) are kept up to this many
/// frames; a bigger one is given back once it is empty, so an idle
/// connection does not keep a burst's buffer.
pub(crate) const IDLE_QUEUE_CAPACITY: usize = 32;

/// What the session task must do itself, because it owns the state involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnCommand {
    /// Leave this room (an operator's kick): presence, subscription and a
    /// `Left` push, exactly as if the client had sent `Leave`.
    LeaveRoom(String),
}

/// Shared by the connection's task and every room it is in.
pub(crate) struct ConnHandle {
    /// Process-unique number, for finding the member slot again.
    pub(crate) id: u64,
    /// The session id (cluster-unique), how a takeover names the session it replaces.
    pub(crate) session_id: Box<str>,
    /// Wire-ready frames (see [`crate::wire`]) not yet taken by the writer, bounded by
    /// `capacity`: full means the client is too slow. (The writer takes all
    /// of them at once, so a connection holds at most twice `capacity`: the
    /// queue and the batch it is writing.) A plain mutex around a
    /// lazily allocated queue rather than a channel: a push is a lock and a
    /// move, the writer takes a whole batch under one lock, and an idle
    /// connection holds no queue memory (a channel keeps a block of slots
    /// per connection). Held for a push or a take, never across an await.
    outbox: Mutex<Outbox>,
    capacity: usize,
    /// Signalled when the queue goes from empty to not empty (a stored
    /// permit when the writer is busy), so a burst wakes the writer once.
    queued: Notify,
    /// Close code requested from outside (0 = none yet); first request wins.
    close_code: AtomicU16,
    closed: Notify,
    /// The normalised username, set once at Welcome: how an operator's kick
    /// finds the connections of a user.
    key: OnceLock<Arc<str>>,
    /// Commands for the session task (bounded; see [`COMMAND_QUEUE`]). A
    /// plain mutex around a lazily allocated queue rather than a channel:
    /// commands are rare, and a channel allocates its first block for every
    /// connection (about 1.4 KiB each). Held for a push or a pop, no await.
    commands: Mutex<VecDeque<ConnCommand>>,
    /// Signalled when a command is queued (a stored permit if the session is busy).
    command_queued: Notify,
}

struct Outbox {
    /// Oldest first. A `Vec` rather than a deque: the writer takes all of
    /// it at once by swapping in its own empty buffer.
    frames: Vec<Frame>,
    /// False once the session stopped taking frames: pushes are refused.
    open: bool,
}

/// The receiving end a session task drains; dropping it refuses further
/// frames (as a dropped channel receiver would).
pub(crate) struct ConnInbox {
    conn: Arc<ConnHandle>,
}

impl ConnInbox {
    /// Waits until frames are queued and moves all of them to the end of
    /// `batch`. Cancel-safe: frames are only taken in the poll that returns
    /// them.
    pub(crate) async fn recv_many(&mut self, batch: &mut Vec<Frame>) -> usize {
        loop {
            let n = self.try_recv_many(batch);
            if n > 0 {
                return n;
            }
            self.conn.queued.notified().await;
        }
    }

    /// Moves every queued frame to the end of `batch` without waiting.
    /// With `batch` empty (the usual case) the two buffers swap: the queue
    /// gets `batch`'s spare capacity and nothing is copied or allocated.
    pub(crate) fn try_recv_many(&mut self, batch: &mut Vec<Frame>) -> usize {
        let mut outbox = self.conn.outbox.lock();
        let n = outbox.frames.len();
        if batch.is_empty() {
            std::mem::swap(&mut outbox.frames, batch);
        } else {
            batch.append(&mut outbox.frames);
        }
        if outbox.frames.capacity() > IDLE_QUEUE_CAPACITY {
            outbox.frames = Vec::new();
        }
        n
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.conn.outbox.lock().frames.is_empty()
    }
}

impl Drop for ConnInbox {
    fn drop(&mut self) {
        let mut outbox = self.conn.outbox.lock();
        outbox.open = false;
        outbox.frames = Vec::new();
    }
}

impl ConnHandle {
    pub(crate) fn new(id: u64, session_id: &str, capacity: usize) -> (Arc<Self>, ConnInbox) {
        let handle = Arc::new(Self {
            id,
            session_id: session_id.into(),
            outbox: Mutex::new(Outbox {
                frames: Vec::new(),
                open: true,
            }),
            capacity,
            queued: Notify::new(),
            close_code: AtomicU16::new(0),
            closed: Notify::new(),
            key: OnceLock::new(),
            commands: Mutex::new(VecDeque::new()),
            command_queued: Notify::new(),
        });
        let inbox = ConnInbox {
            conn: handle.clone(),
        };
        (handle, inbox)
    }

    /// Records the username key once the session is welcomed.
    pub(crate) fn set_key(&self, key: Arc<str>) {
        let _ = self.key.set(key);
    }

    /// The username key, once welcomed.
    pub(crate) fn key(&self) -> Option<&str> {
        self.key.get().map(|key| &**key)
    }

    /// Queues a command for the session task. Returns false when it could
    /// not be queued (the session is ending, or flooded with commands).
    pub(crate) fn command(&self, command: ConnCommand) -> bool {
        {
            let mut commands = self.commands.lock();
            if commands.len() >= COMMAND_QUEUE || self.close_requested().is_some() {
                return false;
            }
            commands.push_back(command);
        }
        self.command_queued.notify_one();
        true
    }

    /// The next queued command, if any (for the session task).
    pub(crate) fn next_command(&self) -> Option<ConnCommand> {
        self.commands.lock().pop_front()
    }

    /// Resolves once a command may have been queued since the last call.
    pub(crate) async fn command_queued(&self) {
        self.command_queued.notified().await;
    }

    /// Queues a frame without waiting. A full queue closes the connection
    /// with 1008 (a slow consumer is cut off, never buffered without bound).
    /// Returns false when the frame was not queued.
    pub(crate) fn push(&self, frame: Frame, metrics: &Metrics) -> bool {
        let was_empty = {
            let mut outbox = self.outbox.lock();
            if !outbox.open {
                return false;
            }
            if outbox.frames.len() < self.capacity {
                let was_empty = outbox.frames.is_empty();
                outbox.frames.push(frame);
                Some(was_empty)
            } else {
                None
            }
        };
        match was_empty {
            Some(true) => {
                self.queued.notify_one();
                true
            }
            Some(false) => true,
            None => {
                if self.close(close_code::POLICY) {
                    metrics
                        .slow_consumers_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn = self.id, "outbound queue full, closing slow consumer");
                }
                false
            }
        }
    }

    /// Asks the connection to close with `code`. Returns true for the first request.
    pub(crate) fn close(&self, code: u16) -> bool {
        let first = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.closed.notify_one();
        }
        first
    }

    /// The requested close code, if any.
    pub(crate) fn close_requested(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Resolves once `close` has been called (immediately if it already was).
    pub(crate) async fn closed(&self) -> u16 {
        loop {
            if let Some(code) = self.close_requested() {
                return code;
            }
            self.closed.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::v1::{server_frame, Pong, ServerFrame};

    fn frame(n: u64) -> Frame {
        crate::wire::encode(&ServerFrame {
            r#ref: n,
            kind: Some(server_frame::Kind::Pong(Pong::default())),
        })
    }

    fn refs(batch: &[Frame]) -> Vec<u64> {
        batch.iter().map(|f| crate::wire::decode(f).r#ref).collect()
    }

    #[test]
    fn a_full_queue_closes_a_slow_consumer_once() {
        let metrics = Metrics::default();
        let (conn, mut inbox) = ConnHandle::new(1, "s-1", 2);
        assert!(conn.push(frame(1), &metrics));
        assert!(conn.push(frame(2), &metrics));
        assert_eq!(conn.close_requested(), None);
        assert!(!conn.push(frame(3), &metrics), "full");
        assert!(!conn.push(frame(4), &metrics), "still full");
        assert_eq!(conn.close_requested(), Some(close_code::POLICY));
        assert_eq!(metrics.slow_consumers_dropped.load(Ordering::Relaxed), 1);
        let mut batch = Vec::new();
        assert_eq!(inbox.try_recv_many(&mut batch), 2);
        assert_eq!(refs(&batch), [1, 2], "what fitted, in order");
    }

    #[test]
    fn the_writer_takes_everything_queued_at_once_and_keeps_order() {
        let metrics = Metrics::default();
        let (conn, mut inbox) = ConnHandle::new(1, "s-1", 100);
        let mut batch = Vec::new();
        assert_eq!(inbox.try_recv_many(&mut batch), 0);
        assert!(inbox.is_empty());
        for n in 1..=3 {
            conn.push(frame(n), &metrics);
        }
        assert!(!inbox.is_empty());
        assert_eq!(inbox.try_recv_many(&mut batch), 3);
        conn.push(frame(4), &metrics);
        // Appended behind what the batch still holds.
        assert_eq!(inbox.try_recv_many(&mut batch), 1);
        assert_eq!(refs(&batch), [1, 2, 3, 4]);
        assert!(inbox.is_empty());
    }

    #[test]
    fn a_burst_buffer_is_given_back_once_empty() {
        let metrics = Metrics::default();
        let (conn, mut inbox) = ConnHandle::new(1, "s-1", 1000);
        for n in 0..(IDLE_QUEUE_CAPACITY as u64 * 4) {
            conn.push(frame(n), &metrics);
        }
        let mut batch = Vec::new();
        inbox.try_recv_many(&mut batch);
        assert!(batch.capacity() > IDLE_QUEUE_CAPACITY);
        // The queue got the batch's empty buffer, not the burst's.
        assert!(conn.outbox.lock().frames.capacity() <= IDLE_QUEUE_CAPACITY);

        // Taken into a batch that is not empty, the burst's buffer is dropped.
        for n in 0..(IDLE_QUEUE_CAPACITY as u64 * 4) {
            conn.push(frame(n), &metrics);
        }
        assert!(conn.outbox.lock().frames.capacity() > IDLE_QUEUE_CAPACITY);
        inbox.try_recv_many(&mut batch);
        assert_eq!(conn.outbox.lock().frames.capacity(), 0);
    }

    #[test]
    fn a_dropped_inbox_refuses_frames() {
        let metrics = Metrics::default();
        let (conn, inbox) = ConnHandle::new(1, "s-1", 10);
        conn.push(frame(1), &metrics);
        drop(inbox);
        assert!(!conn.push(frame(2), &metrics));
        assert!(conn.outbox.lock().frames.is_empty(), "queued frames freed");
        assert_eq!(conn.close_requested(), None, "not a slow consumer");
    }

    #[tokio::test]
    async fn the_first_close_wins_and_wakes_the_session() {
        let (conn, _inbox) = ConnHandle::new(1, "s-1", 10);
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(conn.close(close_code::KICKED));
        assert!(!conn.close(close_code::GOING_AWAY));
        assert_eq!(waiting.await.unwrap(), close_code::KICKED);
        assert_eq!(
            conn.closed().await,
            close_code::KICKED,
            "at once when closed"
        );
    }

    #[tokio::test]
    async fn commands_are_queued_in_order_bounded_and_refused_once_closing() {
        let (conn, _inbox) = ConnHandle::new(1, "s-1", 10);
        let leave = |room: &str| ConnCommand::LeaveRoom(room.into());
        assert!(conn.command(leave("a")));
        assert!(conn.command(leave("b")));
        // The permit was stored: the session wakes even if it was busy.
        conn.command_queued().await;
        assert_eq!(conn.next_command(), Some(leave("a")));
        assert_eq!(conn.next_command(), Some(leave("b")));
        assert_eq!(conn.next_command(), None);

        for _ in 0..COMMAND_QUEUE {
            assert!(conn.command(leave("x")));
        }
        assert!(!conn.command(leave("one too many")));
        while conn.next_command().is_some() {}
        conn.close(close_code::KICKED);
        assert!(!conn.command(leave("after the close")));
    }

    #[test]
    fn the_key_is_set_once() {
        let (conn, _inbox) = ConnHandle::new(1, "s-1", 10);
        assert_eq!(conn.key(), None);
        conn.set_key(Arc::from("ann"));
        conn.set_key(Arc::from("bob"));
        assert_eq!(conn.key(), Some("ann"));
    }
}
