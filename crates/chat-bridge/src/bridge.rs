//! What a gateway needs from the cluster, as one trait per audience: the
//! room log (the data path), presence and names, the cluster-wide admin
//! listings and commands, and the bridge's own lifecycle. [`Bridge`] is all
//! four, so that a gateway holds one `Arc<dyn Bridge>` and calls any of
//! their methods on it; code generic over a backend names the part it needs.
//!
//! Every method is safe to call concurrently; none of them holds a lock
//! across an await.

use async_trait::async_trait;
use chat_proto::v1::ChatMessage;
use chat_proto::MessageId;

use crate::{
    Accepted, Ban, GatewayStatus, HistoryPage, Member, NewMessage, Pending, Replay, Result,
    Resumed, RoomSummary, TokenHash, UserSummary,
};

/// Everything a gateway needs from the cluster.
pub trait Bridge: RoomLog + Presence + ClusterAdmin + Lifecycle {}

impl<T: RoomLog + Presence + ClusterAdmin + Lifecycle> Bridge for T {}

/// The room log: live delivery of a room's events, accepting messages in
/// one order, and reading the retained history back.
#[async_trait]
pub trait RoomLog: Send + Sync + 'static {
    /// Starts delivering the room's events to the sink. When this returns,
    /// every message accepted from now on will be delivered, so a history
    /// read started afterwards overlaps live delivery instead of leaving a
    /// gap (the gateway removes the overlap by id). Reference-counted:
    /// each call must be matched by one [`RoomLog::unsubscribe`].
    async fn subscribe(&self, room: &str) -> Result<()>;

    /// Drops one subscription reference; the last one stops delivery.
    async fn unsubscribe(&self, room: &str) -> Result<()>;

    /// Accepts a message: dedupes its `client_msg_id`, assigns the next id,
    /// appends it to the room's history and publishes it, atomically, so that
    /// id order is delivery order everywhere.
    async fn publish(&self, msg: NewMessage) -> Result<Accepted>;

    /// [`RoomLog::publish`] in two steps, so that one sender can have several
    /// messages in flight: once `submit` returns, the message's place in the
    /// room's order is fixed ahead of everything the caller submits or
    /// publishes afterwards, and the [`Pending`] resolves to what `publish`
    /// would have returned. The default publishes before returning, which
    /// is right for a backend whose `publish` does not wait on the network.
    async fn submit(&self, msg: NewMessage) -> Pending {
        Pending::ready(self.publish(msg).await)
    }

    /// The original outcome when this sender's `client_msg_id` was accepted
    /// in the room within [`DEDUPE_WINDOW`](chat_proto::rules::DEDUPE_WINDOW).
    async fn find_duplicate(
        &self,
        room: &str,
        sender_key: &str,
        client_msg_id: &str,
    ) -> Result<Option<Accepted>>;

    /// Every retained message with id > `after`, oldest first, and whether
    /// some message after `after` is no longer retained.
    async fn replay_after(&self, room: &str, after: MessageId) -> Result<Replay>;

    /// The newest `limit` messages, oldest first.
    async fn recent(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>>;

    /// The newest `limit` messages with id < `before` (all when `None`),
    /// oldest first, and whether older ones remain.
    async fn history_before(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage>;
}

/// Who is where: names held by live sessions, the members of each room, who
/// is typing, and the entry screen's room list.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Fans a typing notice out to the room's members (never stored).
    async fn typing(&self, room: &str, member: &Member, active: bool) -> Result<()>;

    /// Claims a username for a live session; `false` when another session
    /// holds it. `resume` is the hash of the resume token issued with this
    /// session: whoever presents that token may take the name over.
    async fn claim_username(&self, member: &Member, resume: &TokenHash) -> Result<bool>;

    /// Takes the name `member.key` over from the session holding it, when
    /// `presented` is the hash of the token issued to that session (live on
    /// any gateway, or left by a dead one and not yet cleaned up). The claim
    /// passes to `member` with the new token's hash `resume` (so the
    /// presented token is spent), the earlier session's presence entries
    /// pass to `member` without any presence change, and the earlier
    /// session is told ([`ControlCommand::Replace`](crate::ControlCommand::Replace)).
    /// `None` when the token does not match, or the name is free or held
    /// without a token.
    async fn resume_username(
        &self,
        member: &Member,
        presented: &TokenHash,
        resume: &TokenHash,
    ) -> Result<Option<Resumed>>;

    /// The ban on the identity `key`, while one holds (a Hello of a banned
    /// identity is refused).
    async fn ban_of(&self, key: &str) -> Result<Option<Ban>>;

    /// Frees a name held by this session (no-op when held by another).
    async fn release_username(&self, member: &Member) -> Result<()>;

    /// Adds the member to the room's presence (publishing `Joined` presence
    /// when this is the name's first entry) and returns the sorted display
    /// names of everyone present, the member included.
    async fn enter_room(&self, room: &str, member: &Member) -> Result<Vec<String>>;

    /// Removes the member from the room (publishing `Left` on the last exit).
    async fn leave_room(&self, room: &str, member: &Member) -> Result<()>;

    /// The busiest `limit` rooms with at least one member, by member count
    /// (then name), with their counts: the entry screen's list. Costs the
    /// same whatever the number of rooms (the last-message fields may be
    /// left empty).
    async fn rooms(&self, limit: usize) -> Result<Vec<RoomSummary>>;
}

/// The operators' view and commands (kicks, bans, drains). Answers describe the whole cluster,
/// whichever gateway asks.
#[async_trait]
pub trait ClusterAdmin: Send + Sync + 'static {
    /// Rooms with at least one member, or with a message within
    /// [`ACTIVE_ROOM_WINDOW`](chat_proto::rules::ACTIVE_ROOM_WINDOW), sorted by name.
    async fn room_overview(&self) -> Result<Vec<RoomSummary>>;

    /// Users online (holding a name or present in a room), sorted by key;
    /// only those present in `room` when it is set (their `rooms` still
    /// lists every room they are in).
    async fn users(&self, room: Option<&str>) -> Result<Vec<UserSummary>>;

    /// Live gateways and their load, sorted by id.
    async fn gateways(&self) -> Result<Vec<GatewayStatus>>;

    /// Kicks the sessions holding the name `key` on every gateway: out of
    /// `room` only when it is set (they stay connected), else off the chat.
    /// Returns the number of sessions targeted (0 for an unknown user or
    /// one not in `room`: then nothing is sent).
    async fn kick(&self, key: &str, room: Option<&str>, reason: &str) -> Result<u32>;

    /// Records a ban (replacing any earlier ban of `ban.key`), then kicks
    /// every session of the identity on every gateway with the ban's
    /// message. Returns the number of sessions found (the kick is sent even
    /// when none is, for a Hello under way).
    async fn ban(&self, ban: &Ban) -> Result<u32>;

    /// Lifts the ban on `key`; `false` when there was none.
    async fn unban(&self, key: &str) -> Result<bool>;

    /// The bans that hold now, sorted by key.
    async fn bans(&self) -> Result<Vec<Ban>>;

    /// Tells the live gateway `gateway_id` to drain, as SIGTERM does, and
    /// waits (up to [`DRAIN_REPLY_TIMEOUT`](crate::DRAIN_REPLY_TIMEOUT)) for
    /// its answer. Returns the number of connections it told to reconnect,
    /// or `None` when no such gateway is alive.
    async fn drain_gateway(&self, gateway_id: &str) -> Result<Option<u32>>;

    /// This gateway's answer to a drain request ([`ControlCommand::Drain`](crate::ControlCommand::Drain)'s
    /// `reply_to`): it told `told` connections to reconnect.
    async fn drained(&self, reply_to: &str, told: u32);
}

/// The bridge's own life in the cluster: availability, the load it
/// announces, and leaving.
#[async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// Whether the backend can serve requests right now.
    fn is_available(&self) -> bool;

    /// This gateway's load, published for operators (no-op when embedded).
    fn set_load(&self, _connections: u32, _draining: bool) {}

    /// Leaves the cluster on a clean exit, after every session has ended:
    /// the gateway disappears from listings at once instead of when its
    /// heartbeat expires, and whatever presence it still held is removed.
    async fn leave_cluster(&self) {}
}
