//! The bridge between one gateway and the rest of the cluster.
//!
//! A gateway only knows local connections; everything that must look the same
//! from every gateway goes through a [`Bridge`]: message ids and order, room
//! history, cluster-wide presence, username claims and idempotency keys.
//! Events for subscribed rooms come back through the [`EventSink`] the bridge
//! was built with, in one order per room (message-id order), which is the
//! order every member sees. Operator commands (kick, drain, ban) reach every
//! gateway through the same sink as [`BridgeEvent::Control`]; between
//! gateways they are signed with the cluster secret ([`ClusterSecret`]).
//!
//! Backends: [`MemoryBridge`] (embedded, single gateway) and [`RedisBridge`].
//! The shapes here follow what Redis offers: ids are Redis Streams ids,
//! `subscribe` is a pub/sub subscription, presence is per-gateway tagged.

mod ban;
mod bridge;
mod control_auth;
mod drain;
mod event;
mod memory;
mod pending;
mod redis;
mod resume;
mod types;

pub use ban::Ban;
pub use bridge::{Bridge, ClusterAdmin, Lifecycle, Presence, RoomLog};
pub use chat_proto::rules::{ACTIVE_ROOM_WINDOW, RESUME_WINDOW};
pub use control_auth::{
    ClusterSecret, ControlRejection, CONTROL_WINDOW, MIN_SECRET_BYTES, REMEMBERED_MAX,
};
pub use event::{BridgeEvent, ControlCommand, EventSink, MessageEvent, PresenceKind};
pub use memory::MemoryBridge;
pub use pending::Pending;
pub use redis::{Keys as RedisKeys, RedisBridge, RedisConfig};
pub use resume::{ResumeToken, TokenHash};
pub use types::{
    parse_session_id, session_id, Accepted, BridgeError, GatewayStatus, HistoryPage, Member,
    NewMessage, Replay, Resumed, RoomSummary, UserSummary,
};

/// How long a gateway waits for another to answer a drain request.
pub const DRAIN_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Result of every bridge operation.
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;
