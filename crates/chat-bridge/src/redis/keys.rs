//! Redis key and channel names. Everything of one room carries the `{room}`
//! hash tag, so a room lives in one Redis Cluster slot and its atomic
//! append-and-publish touches one slot only.

/// Names under one configurable prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Stream: the room's history; entry id = message id, field `m` = the
    /// encoded `ChatMessage` without id and time.
    pub fn stream(&self, room: &str) -> String {
        format!("{}:{{{room}}}:stream", self.prefix)
    }

    /// String: the newest id trimmed from the stream (for `history_truncated`).
    pub fn trimmed(&self, room: &str) -> String {
        format!("{}:{{{room}}}:trimmed", self.prefix)
    }

    /// Pub/sub channel of the room's events (messages, presence, typing).
    pub fn channel(&self, room: &str) -> String {
        format!("{}:{{{room}}}:events", self.prefix)
    }

    /// Hash: name key -> "instance\tsession\tdisplay name", the room's presence.
    pub fn members(&self, room: &str) -> String {
        format!("{}:{{{room}}}:members", self.prefix)
    }

    /// String with TTL 10 min: the outcome of an accepted client_msg_id.
    /// Length-prefixed so that no (sender, key) pair can collide with another.
    pub fn dedupe(&self, room: &str, sender_key: &str, client_msg_id: &str) -> String {
        format!(
            "{}:{{{room}}}:dedupe:{}:{sender_key}:{client_msg_id}",
            self.prefix,
            sender_key.len()
        )
    }

    /// Room name from an events channel name.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:events")
    }

    /// Set: rooms that may have members (entries are checked, stale ones removed).
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// Sorted set: room -> time (ms) of its newest message, for the admin
    /// room list ("a message in the last 24 hours"). Updated after the
    /// publish script, which must touch the room's own slot only; entries
    /// older than the window are trimmed when the list is read.
    pub fn room_activity(&self) -> String {
        format!("{}:room-activity", self.prefix)
    }

    /// String: the claim on a username,
    /// "instance\tsession\tdisplay name\tresume token hash".
    pub fn name(&self, key: &str) -> String {
        format!("{}:name:{key}", self.prefix)
    }

    /// Set: rooms where a session is present, so that a session taking it
    /// over (resume token) knows which presence entries to take.
    pub fn session_rooms(&self, session: &str) -> String {
        format!("{}:session:{session}:rooms", self.prefix)
    }

    /// Hash: gateway id -> JSON status (instance, address, load, times), for admin.
    pub fn gateways(&self) -> String {
        format!("{}:gateways", self.prefix)
    }

    /// Hash: instance id -> gateway id, every gateway process that may have
    /// left state behind; the reaper walks it.
    pub fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// String with TTL, the time of the last beat: present while the
    /// gateway process (instance) is alive.
    pub fn alive(&self, instance: &str) -> String {
        format!("{}:gw:{instance}:alive", self.prefix)
    }

    /// Set: rooms this instance wrote presence into, for cleanup after its death.
    pub fn gateway_rooms(&self, instance: &str) -> String {
        format!("{}:gw:{instance}:rooms", self.prefix)
    }

    /// Set: name keys this instance claimed, for cleanup after its death.
    pub fn gateway_names(&self, instance: &str) -> String {
        format!("{}:gw:{instance}:names", self.prefix)
    }

    /// String with TTL: which gateway is cleaning up after a dead instance.
    pub fn reaper(&self, instance: &str) -> String {
        format!("{}:gw:{instance}:reaper", self.prefix)
    }

    /// Pub/sub channel for operator commands to gateways (kick, drain); the
    /// payloads are described in `control.rs`.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_share_one_hash_tag() {
        let keys = Keys::new("chat");
        for key in [
            keys.stream("lobby"),
            keys.trimmed("lobby"),
            keys.channel("lobby"),
            keys.members("lobby"),
            keys.dedupe("lobby", "a", "b"),
        ] {
            assert!(key.contains("{lobby}"), "{key}");
        }
        assert_eq!(keys.room_of_channel(&keys.channel("a b}c")), Some("a b}c"));
        assert_eq!(keys.room_of_channel("other:{x}:events"), None);
    }

    #[test]
    fn dedupe_keys_do_not_collide() {
        let keys = Keys::new("p");
        assert_ne!(keys.dedupe("r", "a:b", "c"), keys.dedupe("r", "a", "b:c"));
    }
}
