//! Plain data passed across the bridge API.

use chat_proto::v1::ChatMessage;
use chat_proto::MessageId;

/// A session as the bridge sees it: the name it holds and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique per connection, cluster-wide: [`session_id`] of the gateway
    /// process's instance id and a counter.
    pub session_id: String,
    /// Normalised name (NFC + lowercase): the identity.
    pub key: String,
    /// The name as shown.
    pub username: String,
}

/// The id of a gateway instance's `n`th session: `<instance>-<n>`.
pub fn session_id(instance: &str, n: u64) -> String {
    format!("{instance}-{n}")
}

/// The instance a [`session_id`] belongs to, and its number.
pub fn parse_session_id(session_id: &str) -> Option<(&str, u64)> {
    let (instance, n) = session_id.rsplit_once('-')?;
    if instance.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((instance, n.parse().ok()?))
}

/// What a session took over from the earlier session of the same client
/// ([`Presence::resume_username`](crate::Presence::resume_username)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resumed {
    /// The earlier session's id.
    pub previous_session: String,
    /// Rooms where the earlier session was present, sorted: the presence
    /// entries now belong to the new session, and nobody was told. The new
    /// session either joins them again or leaves them (which tells).
    pub rooms: Vec<String>,
}

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The room it is for.
    pub room: String,
    /// Normalised sender name; empty for system messages.
    pub sender_key: String,
    /// Sender name as shown; empty for system messages.
    pub username: String,
    /// The text, already checked (`chat_proto::check_text`).
    pub text: String,
    /// Idempotency key; empty means none.
    pub client_msg_id: String,
    /// Sent by the server or an operator.
    pub system: bool,
}

/// The outcome of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The message's id (the original's, for a duplicate).
    pub id: MessageId,
    /// When it was accepted (the id's time).
    pub sent_at_ms: u64,
    /// The key had been accepted before: this is the original id, nothing was re-sent.
    pub duplicate: bool,
}

/// Messages after a resume point.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The retained messages after the resume point, oldest first.
    pub messages: Vec<ChatMessage>,
    /// A message after the resume point is no longer retained.
    pub truncated: bool,
}

/// A page of older messages.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The page, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Older messages remain before the page.
    pub has_more: bool,
}

/// A room with members, for the entry screen and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room's name.
    pub name: String,
    /// Names present in it, cluster-wide.
    pub member_count: u32,
    /// Newest message, if any is retained.
    pub last_message_id: Option<MessageId>,
    /// When the newest message was accepted (0: none, or not read).
    pub last_message_at_ms: u64,
}

/// A user online somewhere in the cluster, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// Normalised name (the identity).
    pub key: String,
    /// The name as shown (the key when no display name is known).
    pub username: String,
    /// Every room the user is in, sorted.
    pub rooms: Vec<String>,
    /// Gateways holding at least one session of the user, sorted.
    pub gateway_ids: Vec<String>,
    /// Distinct sessions of the user.
    pub connections: u32,
}

/// A live gateway and its load, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    /// Its gateway id (stable across restarts).
    pub id: String,
    /// host:port where clients reach it.
    pub address: String,
    /// Open client connections, as it last reported.
    pub connections: u32,
    /// When its process started.
    pub started_at_ms: u64,
    /// When it last wrote its status.
    pub last_heartbeat_ms: u64,
    /// It is draining (telling its clients to reconnect elsewhere).
    pub draining: bool,
}

/// Why a bridge operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BridgeError {
    /// The shared backend cannot be reached; the client gets UNAVAILABLE.
    #[error("cluster backend unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be understood.
    #[error("corrupt record in backend: {0}")]
    Corrupt(String),
    /// Another live process serves this gateway id (configuration error).
    #[error("gateway id {gateway_id} is in use by a live process (instance {instance}, serving {address})")]
    GatewayIdInUse {
        /// The configured gateway id.
        gateway_id: String,
        /// The live process that holds it.
        instance: String,
        /// Where that process serves clients.
        address: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_names_its_instance_and_number() {
        let id = session_id("gw-1~00000000000000aa", 42);
        assert_eq!(id, "gw-1~00000000000000aa-42");
        assert_eq!(parse_session_id(&id), Some(("gw-1~00000000000000aa", 42)));
        for bad in [
            "",
            "-",
            "gw",
            "gw-",
            "-4",
            "gw-+4",
            "gw-4x",
            "gw-99999999999999999999999",
        ] {
            assert_eq!(parse_session_id(bad), None, "{bad:?}");
        }
    }
}
