//! Lua scripts: each touches the keys of one room only (one hash slot).
//!
//! The scripts themselves are the `.lua` files in `lua/`, compiled in with
//! `include_str!`; what each takes and returns is documented here.

/// Accept one or more messages of one room, in order: for each, dedupe and
/// append; then publish the accepted ones as one `B` payload (see `wire`)
/// and trim once. Atomic, and one script call and one pub/sub message for
/// many messages (each costs more than the commands in it).
///
/// Each message's commands run under `pcall`: one that Redis refuses is
/// answered with its error and changes nothing for the others, and every
/// message that was appended is in the one PUBLISH (stored means published).
/// A room with no members expires `room ttl` after its last message.
/// KEYS: stream, trimmed, members, then one dedupe key per message.
/// ARGV: history_len, channel, trim batch, room ttl ms, then per message:
/// dedupe ttl seconds ("" = no dedupe) and payload.
/// Returns {outcome, id or error} per message, flattened: outcome 0 =
/// accepted, 1 = duplicate (id of the original), 2 = refused (error text).
pub(super) const PUBLISH: &str = include_str!("lua/publish.lua");

/// Enter a room. KEYS: members, stream, trimmed, sessions. ARGV: name key,
/// "instance\tsession\tdisplay", channel, presence payload. Adds the
/// session's tag to the name's session list; publishes JOINED when the name
/// is new in the room (a second session of one identity is not); the entry
/// carries the newest session's tag. A room with members does not expire.
/// Returns what changed ("2": the name is new in the room, "1": the entry
/// was another session's or this session is new to the list, "0": this
/// session's entry was already there, as after a resume), then every value
/// of the members hash.
pub(super) const ENTER: &str = include_str!("lua/enter.lua");

/// Leave a room if this session is in it. KEYS: members, stream, trimmed,
/// sessions. ARGV: name key, "instance\tsession\t" prefix, channel,
/// presence payload, room ttl ms. Takes the session off the name's list;
/// while another session of the name remains, nothing is published (the
/// entry passes to that session if it was this one's) and it returns -2.
/// Otherwise removes the entry if this session holds it and publishes LEFT;
/// the last one out starts the room's expiry. Returns the number of
/// members left, or -1 if this session was not in it.
pub(super) const LEAVE: &str = include_str!("lua/leave.lua");

/// Remove every entry of a dead instance from one room. KEYS: members,
/// stream, trimmed. ARGV: "instance\t" prefix, channel, presence payload
/// prefix ("P" tag), room ttl ms. Publishes LEFT for each; the payload is
/// built here from the entry. Returns {removed, members left}.
pub(super) const REAP_ROOM: &str = include_str!("lua/reap_room.lua");

/// Delete a key only if its value starts with ARGV[1] (compare-and-delete).
pub(super) const DELETE_IF_PREFIX: &str = include_str!("lua/delete_if_prefix.lua");

/// Hand a presence entry to a new session if the old one holds it (a
/// resume): no event, so the other members see nothing; the name's session
/// list follows. KEYS: members, sessions. ARGV: name key, old
/// "instance\tsession\t" prefix, new value. Returns 1 if moved.
pub(super) const RETAG: &str = include_str!("lua/retag.lua");

/// Replace a key's value only if it is still exactly ARGV[1]
/// (compare-and-set). Returns 1 if replaced.
pub(super) const SWAP: &str = include_str!("lua/swap.lua");

/// Delete a key if its value starts with ARGV[1], returning the value
/// deleted (nil when nothing was).
pub(super) const TAKE_IF_PREFIX: &str = include_str!("lua/take_if_prefix.lua");
