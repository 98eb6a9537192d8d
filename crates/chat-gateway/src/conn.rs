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
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const KICKED: u16 = 4001;
    pub const REPLACED: u16 = 4002;
}

/// Commands queued per connection before more are refused (they are rare:
/// an operator's action, one per room at most).
const COMMAND_QUEUE: usize = 64;
/// A writer that took at least this many frames at once expects more: it
/// yields once and takes what arrived meanwhile into the same write.
pub const FULL_BATCH: usize = 64;
/// Queue buffers (the outbox and the writer's batch swap places on every
/// take, so a busy connection allocates nothing) are kept up to this many
/// frames; a bigger one is given back once it is empty, so an idle
/// connection does not keep a burst's buffer.
pub const IDLE_QUEUE_CAPACITY: usize = 32;

/// What the session task must do itself, because it owns the state involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnCommand {
    /// Leave this room (an operator's kick): presence, subscription and a
    /// `Left` push, exactly as if the client had sent `Leave`.
    LeaveRoom(String),
}

/// Shared by the connection's task and every room it is in.
pub struct ConnHandle {
    /// Process-unique number, for finding the member slot again.
    pub id: u64,
    /// The session id (cluster-unique), how a takeover names the session it replaces.
    pub session_id: Box<str>,
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
pub struct ConnInbox {
    conn: Arc<ConnHandle>,
}

impl ConnInbox {
    /// Waits until frames are queued and moves all of them to the end of
    /// `batch`. Cancel-safe: frames are only taken in the poll that returns
    /// them.
    pub async fn recv_many(&mut self, batch: &mut Vec<Frame>) -> usize {
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
    pub fn try_recv_many(&mut self, batch: &mut Vec<Frame>) -> usize {
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
    pub fn is_empty(&self) -> bool {
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
    pub fn new(id: u64, session_id: &str, capacity: usize) -> (Arc<Self>, ConnInbox) {
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
    pub fn set_key(&self, key: Arc<str>) {
        let _ = self.key.set(key);
    }

    /// The username key, once welcomed.
    pub fn key(&self) -> Option<&str> {
        self.key.get().map(|key| &**key)
    }

    /// Queues a command for the session task. Returns false when it could
    /// not be queued (the session is ending, or flooded with commands).
    pub fn command(&self, command: ConnCommand) -> bool {
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
    pub fn next_command(&self) -> Option<ConnCommand> {
        self.commands.lock().pop_front()
    }

    /// Resolves once a command may have been queued since the last call.
    pub async fn command_queued(&self) {
        self.command_queued.notified().await;
    }

    /// Queues a frame without waiting. A full queue closes the connection
    /// with 1008 (a slow consumer is cut off, never buffered without bound).
    /// Returns false when the frame was not queued.
    pub fn push(&self, frame: Frame, metrics: &Metrics) -> bool {
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
    pub fn close(&self, code: u16) -> bool {
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
    pub fn close_requested(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Resolves once `close` has been called (immediately if it already was).
    pub async fn closed(&self) -> u16 {
        loop {
            if let Some(code) = self.close_requested() {
                return code;
            }
            self.closed.notified().await;
        }
    }
}
