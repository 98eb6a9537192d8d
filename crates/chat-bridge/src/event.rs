//! Events a bridge delivers to its gateway, and the sink that receives them.

use chat_proto::v1::ChatMessage;

/// Receives the events of subscribed rooms, and operator commands for this
/// gateway. Called from the bridge's own context (the publisher's task for
/// the memory backend, the subscriber task for Redis), one room's events in
/// order; it must not block or await.
pub trait EventSink: Send + Sync + 'static {
    fn deliver(&self, event: BridgeEvent);
}

/// Whether a name entered or left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    Joined,
    Left,
}

/// One event of a room, in the room's delivery order.
#[derive(Debug, Clone)]
pub enum BridgeEvent {
    /// An accepted message, already stored.
    Message(ChatMessage),
    /// A name's first entry into, or last exit from, a room.
    Presence {
        room: String,
        key: String,
        username: String,
        kind: PresenceKind,
    },
    /// Someone is (or stopped) typing.
    Typing {
        room: String,
        key: String,
        username: String,
        active: bool,
    },
    /// An operator's command for this gateway (not tied to a subscription).
    Control(ControlCommand),
}

/// What an operator asked the gateways to do, through the admin API of any
/// gateway of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// Every local session holding the name `key`: without `room`, gets
    /// `Error KICKED` (with `reason`) and is closed; with `room`, leaves
    /// that room and stays connected.
    Kick {
        key: String,
        room: Option<String>,
        reason: String,
    },
    /// Drain this gateway, exactly as on SIGTERM. With `reply_to`, the
    /// gateway answers [`ClusterAdmin::drained`](crate::ClusterAdmin::drained) with the
    /// number of connections it told to reconnect.
    Drain { reply_to: Option<String> },
    /// A newer session of the same client took over the name `key` with a
    /// resume token: the local session `session_id`, if any, gets
    /// `Error SESSION_REPLACED` and is closed with 4002.
    Replace { key: String, session_id: String },
}
