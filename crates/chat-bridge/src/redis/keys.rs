//! Redis key and channel names. Everything of one room carries the `{room}`
//! hash tag, so a room lives in one Redis Cluster slot and its atomic
//! append-and-publish touches one slot only.
//!
//! Every name a user or operator chooses (rooms, name keys, client_msg_ids,
//! gateway and session ids) goes into a key through [`Part`], which
//! percent-encodes `%` and every character that means something in a key
//! (`{`, `}`, `:`) or in a pattern (`*`, `?`, `[`, `]`, `\`), plus controls
//! and spaces. So no name can reach into another key ("lobby}:dedupe:…"),
//! two different inputs never give the same key, and the `{…}` hash tag is
//! always exactly one room's encoded name. Plain names ("lobby",
//! "sistemas-distribuídos") read as themselves.

use std::borrow::Cow;
use std::fmt;

/// Names under one configurable prefix (which contains no `{` or `}`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// A user- or operator-chosen string, encoded for use inside a key.
struct Part<'a>(&'a str);

impl fmt::Display for Part<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode(self.0))
    }
}

fn must_encode(c: char) -> bool {
    matches!(c, '%' | '{' | '}' | ':' | '*' | '?' | '[' | ']' | '\\') || c <= ' ' || c == '\u{7f}'
}

/// The key form of a name (see the module docs).
pub(crate) fn encode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(must_encode) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        if must_encode(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The name a key part encodes; `None` if it is not an encoding. Borrowed
/// for a plain name (no allocation on the delivery path).
pub(crate) fn decode(part: &str) -> Option<Cow<'_, str>> {
    if !part.contains(must_encode) {
        return Some(Cow::Borrowed(part));
    }
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            if must_encode(c) {
                return None;
            }
            out.push(c);
            continue;
        }
        let hex: String = chars.by_ref().take(2).collect();
        let byte = u8::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.len() == 2)?;
        let c = char::from(byte);
        if !must_encode(c) {
            return None; // Not how `encode` writes it: one name, one key.
        }
        out.push(c);
    }
    Some(Cow::Owned(out))
}

impl Keys {
    /// The keys under `prefix` (`--redis-prefix`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn room_key(&self, room: &str, what: &str) -> String {
        format!("{}:{{{}}}:{what}", self.prefix, Part(room))
    }

    /// Stream: the room's history; entry id = message id, field `m` = the
    /// encoded `ChatMessage` without id and time.
    pub fn stream(&self, room: &str) -> String {
        self.room_key(room, "stream")
    }

    /// String: the newest id trimmed from the stream (for `history_truncated`).
    pub fn trimmed(&self, room: &str) -> String {
        self.room_key(room, "trimmed")
    }

    /// Pub/sub channel of the room's events (messages, presence, typing).
    pub fn channel(&self, room: &str) -> String {
        self.room_key(room, "events")
    }

    /// Hash: name key -> "instance\tsession\tdisplay name", the room's presence.
    pub fn members(&self, room: &str) -> String {
        self.room_key(room, "members")
    }

    /// Hash: name key -> the member tags ("instance\tsession\t", each ended
    /// by "\n") of every session of that identity present in the room. The
    /// `members` entry stays while one is left, so an identity with several
    /// sessions (tabs, with signed identities) is one member.
    pub fn sessions(&self, room: &str) -> String {
        self.room_key(room, "sessions")
    }

    /// String with TTL `chat_proto::rules::DEDUPE_WINDOW`: the outcome of an accepted client_msg_id.
    pub fn dedupe(&self, room: &str, sender_key: &str, client_msg_id: &str) -> String {
        format!(
            "{}:{{{}}}:dedupe:{}:{}",
            self.prefix,
            Part(room),
            Part(sender_key),
            Part(client_msg_id)
        )
    }

    /// Room name from an events channel name.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<Cow<'a, str>> {
        let room = channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:events")?;
        decode(room)
    }

    /// Set: rooms that may have members (entries are checked, stale ones removed).
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// Sorted set: room -> number of members, the entry screen's ranking
    /// (written with the count a presence script returned, so it heals by
    /// itself; read with the counts checked).
    pub fn room_members(&self) -> String {
        format!("{}:room-members", self.prefix)
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
        format!("{}:name:{}", self.prefix, Part(key))
    }

    /// Set: rooms where a session is present, so that a session taking it
    /// over (resume token) knows which presence entries to take.
    pub fn session_rooms(&self, session: &str) -> String {
        format!("{}:session:{}:rooms", self.prefix, Part(session))
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
        format!("{}:gw:{}:alive", self.prefix, Part(instance))
    }

    /// Set: rooms this instance wrote presence into, for cleanup after its death.
    pub fn gateway_rooms(&self, instance: &str) -> String {
        format!("{}:gw:{}:rooms", self.prefix, Part(instance))
    }

    /// Set: name keys this instance claimed, for cleanup after its death.
    pub fn gateway_names(&self, instance: &str) -> String {
        format!("{}:gw:{}:names", self.prefix, Part(instance))
    }

    /// String with TTL: which gateway is cleaning up after a dead instance.
    pub fn reaper(&self, instance: &str) -> String {
        format!("{}:gw:{}:reaper", self.prefix, Part(instance))
    }

    /// String with TTL (the ban's end; none for a ban until lifted): the
    /// ban on an identity key, JSON (`chat_bridge::Ban`).
    pub fn ban(&self, key: &str) -> String {
        format!("{}:ban:{}", self.prefix, Part(key))
    }

    /// Sorted set: banned identity key -> end of its ban (ms; `+inf` until
    /// lifted), for listing; ended entries are trimmed when it is read.
    pub fn bans(&self) -> String {
        format!("{}:bans", self.prefix)
    }

    /// Pub/sub channel for operator commands to gateways (kick, drain); the
    /// payloads are described in `control.rs`, signed as `control_auth.rs` says.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster hashes: between the first `{` and the
    /// first `}` after it.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')? + open + 1;
        Some(&key[open + 1..close])
    }

    #[test]
    fn room_keys_share_one_hash_tag_whatever_the_name() {
        let keys = Keys::new("chat");
        for room in [
            "lobby",
            "a b}c",
            "}x",
            "{",
            "lobby}:dedupe:5:alice:z",
            "%7D",
            "é:*",
        ] {
            let tag = encode(room).into_owned();
            for key in [
                keys.stream(room),
                keys.trimmed(room),
                keys.channel(room),
                keys.members(room),
                keys.sessions(room),
                keys.dedupe(room, "a}", "z}:members"),
            ] {
                assert_eq!(hash_tag(&key), Some(tag.as_str()), "{key}");
            }
            assert_eq!(
                keys.room_of_channel(&keys.channel(room)).as_deref(),
                Some(room)
            );
        }
        assert_eq!(keys.room_of_channel("other:{x}:events"), None);
        assert_eq!(keys.room_of_channel("chat:{a%7}:events"), None);
        assert_eq!(
            keys.stream("lobby"),
            "chat:{lobby}:stream",
            "plain names read as themselves"
        );
    }

    #[test]
    fn the_attack_of_issue_14_cannot_reach_another_key() {
        let keys = Keys::new("chat");
        let room = "lobby}:dedupe:5:alice:z";
        let forged = keys.dedupe(room, "alice", "z}:members");
        assert_ne!(forged, keys.members("lobby"));
        assert_ne!(forged, keys.stream("lobby"));
        assert!(!keys.stream(room).starts_with("chat:{lobby}"));
    }

    #[test]
    fn different_inputs_give_different_keys() {
        let keys = Keys::new("p");
        let alphabet = ['{', '}', ':', '*', '%', 'a', '7', 'D'];
        let mut words = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(longer);
        }
        words.sort();
        words.dedup();
        let mut seen = std::collections::HashMap::new();
        for a in &words {
            for b in ["", "x", ":", "}"] {
                let key = keys.dedupe(a, b, a);
                if let Some(previous) = seen.insert(key.clone(), (a.clone(), b)) {
                    panic!("{key} from {previous:?} and {:?}", (a, b));
                }
            }
            assert_eq!(decode(&encode(a)).as_deref(), Some(a.as_str()));
            assert_eq!(decode(&encode(a)).map(|d| d.into_owned()), Some(a.clone()));
        }
        assert_ne!(keys.dedupe("r", "a:b", "c"), keys.dedupe("r", "a", "b:c"));
    }
}
