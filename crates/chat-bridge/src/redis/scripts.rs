//! Lua scripts: each touches the keys of one room only (one hash slot).

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
pub const PUBLISH: &str = r#"
local function failed(reply)
  return type(reply) == 'table' and reply.err
end
local out = {}
local published = {}
local n = 0
for i = 5, #ARGV, 2 do
  n = n + 1
  local ttl, payload, dedupe = ARGV[i], ARGV[i + 1], KEYS[3 + n]
  local prev = false
  if ttl ~= '' then prev = redis.pcall('GET', dedupe) end
  if failed(prev) then
    out[#out + 1] = 2
    out[#out + 1] = prev.err
  elseif prev then
    out[#out + 1] = 1
    out[#out + 1] = prev
  else
    local id = redis.pcall('XADD', KEYS[1], '*', 'm', payload)
    if failed(id) then
      out[#out + 1] = 2
      out[#out + 1] = id.err
    else
      if ttl ~= '' then redis.pcall('SET', dedupe, id, 'EX', tonumber(ttl)) end
      published[#published + 1] = id .. '\n' .. #payload .. '\n' .. payload
      out[#out + 1] = 0
      out[#out + 1] = id
    end
  end
end
if #published > 0 then
  redis.call('PUBLISH', ARGV[2], 'B' .. table.concat(published))
  local keep = tonumber(ARGV[1])
  local len = redis.call('XLEN', KEYS[1])
  if len >= keep + tonumber(ARGV[3]) then
    local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - keep)
    redis.call('SET', KEYS[2], gone[#gone][1])
    redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
return out
"#;

/// Enter a room. KEYS: members, stream, trimmed. ARGV: name key,
/// "instance\tsession\tdisplay", channel, presence payload. Publishes JOINED
/// when the name is new in the room; a room with members does not expire.
/// Returns what changed ("2": the name is new in the room, "1": the entry
/// was another session's, "0": this session's entry was already there, as
/// after a resume), then every value of the members hash.
pub const ENTER: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local changed = '0'
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  changed = '2'
elseif cur ~= ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  changed = '1'
end
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
local out = redis.call('HVALS', KEYS[1])
table.insert(out, 1, changed)
return out
"#;

/// Leave a room if this session holds the entry. KEYS: members, stream,
/// trimmed. ARGV: name key, "instance\tsession\t" prefix, channel, presence
/// payload, room ttl ms. The last one out starts the room's expiry.
/// Returns the number of members left, or -1 if this session was not in it.
pub const LEAVE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  local left = redis.call('HLEN', KEYS[1])
  if left == 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
    redis.call('PEXPIRE', KEYS[3], ARGV[5])
  end
  return left
end
return -1
"#;

/// Remove every entry of a dead instance from one room. KEYS: members,
/// stream, trimmed. ARGV: "instance\t" prefix, channel, presence payload
/// prefix ("P" tag), room ttl ms. Publishes LEFT for each; the payload is
/// built here from the entry. Returns {removed, members left}.
pub const REAP_ROOM: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local key, val = all[i], all[i + 1]
  if string.sub(val, 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], key)
    local display = string.match(val, '^[^\t]*\t[^\t]*\t(.*)$') or key
    redis.call('PUBLISH', ARGV[2], ARGV[3] .. key .. '\n' .. display)
    n = n + 1
  end
end
local left = redis.call('HLEN', KEYS[1])
if n > 0 and left == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return {n, left}
"#;

/// Delete a key only if its value starts with ARGV[1] (compare-and-delete).
pub const DELETE_IF_PREFIX: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Hand a presence entry to a new session if the old one holds it (a
/// resume): no event, so the other members see nothing. KEYS: members.
/// ARGV: name key, old "instance\tsession\t" prefix, new value. Returns 1 if moved.
pub const RETAG: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"#;

/// Replace a key's value only if it is still exactly ARGV[1]
/// (compare-and-set). Returns 1 if replaced.
pub const SWAP: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Delete a key if its value starts with ARGV[1], returning the value
/// deleted (nil when nothing was).
pub const TAKE_IF_PREFIX: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return cur
end
return false
"#;
