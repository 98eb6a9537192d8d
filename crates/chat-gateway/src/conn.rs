//! The handle through which anything outside a connection's task reaches it:
//! its bounded outbound queue, its close signal, and commands that change the
//! session's own state (an operator's kick out of one room).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;

/// WebSocket close codes the server uses (see the contract's header).
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const KICKED: u16 = 4001;
}

/// Commands queued per connection before more are refused (they are rare:
/// an operator's action, one per room at most).
const COMMAND_QUEUE: usize = 64;

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
    /// Encoded `ServerFrame`s, bounded: full means the client is too slow.
    tx: mpsc::Sender<Bytes>,
    /// Close code requested from outside (0 = none yet); first request wins.
    close_code: AtomicU16,
    closed: Notify,
    /// The normalised username, set once at Welcome: how an operator's kick
    /// finds the connections of a user.
    key: OnceLock<Arc<str>>,
    /// Commands for the session task (bounded; see [`COMMAND_QUEUE`]).
    commands: mpsc::Sender<ConnCommand>,
}

/// The receiving ends a session task drains.
pub struct ConnInbox {
    pub frames: mpsc::Receiver<Bytes>,
    pub commands: mpsc::Receiver<ConnCommand>,
}

impl ConnHandle {
    pub fn new(id: u64, capacity: usize) -> (Arc<Self>, ConnInbox) {
        let (tx, frames) = mpsc::channel(capacity);
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let handle = Arc::new(Self {
            id,
            tx,
            close_code: AtomicU16::new(0),
            closed: Notify::new(),
            key: OnceLock::new(),
            commands,
        });
        (
            handle,
            ConnInbox {
                frames,
                commands: command_rx,
            },
        )
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
        self.commands.try_send(command).is_ok()
    }

    /// Queues a frame without waiting. A full queue closes the connection
    /// with 1008 (a slow consumer is cut off, never buffered without bound).
    /// Returns false when the frame was not queued.
    pub fn push(&self, frame: Bytes, metrics: &Metrics) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.close(close_code::POLICY) {
                    metrics
                        .slow_consumers_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn = self.id, "outbound queue full, closing slow consumer");
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
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
