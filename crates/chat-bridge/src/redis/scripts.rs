//! Lua scripts: each touches the keys of one room only (one hash slot).

/// Accept one or more messages of one room, in order: for each, dedupe and
/// append; then publish the accepted ones as one `B` payload (see `wire`)
/// and trim once. Atomic, and one script call and one pub/sub message for
/// many messages (each costs more than the commands in it).
/// KEYS: stream, trimmed, then one dedupe key per message.
/// ARGV: history_len, channel, trim batch, then per message: dedupe ttl
/// seconds ("" = no dedupe) and payload.
/// Returns {duplicate (0/1), id} per message, flattened.
pub const PUBLISH: &str = r#"
local out = {}
local published = {}
local n = 0
for i = 4, #ARGV, 2 do
  n = n + 1
  local ttl, payload, dedupe = ARGV[i], ARGV[i + 1], KEYS[2 + n]
  local prev = false
  if ttl ~= '' then prev = redis.call('GET', dedupe) end
  if prev then
    out[#out + 1] = 1
    out[#out + 1] = prev
  else
    local id = redis.call('XADD', KEYS[1], '*', 'm', payload)
    if ttl ~= '' then redis.call('SET', dedupe, id, 'EX', tonumber(ttl)) end
    published[#published + 1] = id .. '\n' .. #payload .. '\n' .. payload
    out[#out + 1] = 0
    out[#out + 1] = id
  end
end
if #published > 0 then
  redis.call('PUBLISH', ARGV[2], 'B' .. table.concat(published))
end
local keep = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
if len >= keep + tonumber(ARGV[3]) then
  local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - keep)
  redis.call('SET', KEYS[2], gone[#gone][1])
  redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
end
return out
"#;

/// Enter a room. KEYS: members. ARGV: name key, "instance\tsession\tdisplay",
/// channel, presence payload. Publishes JOINED when the name is new in the
/// room. Returns every value of the members hash.
pub const ENTER: &str = r#"
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if new == 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return redis.call('HVALS', KEYS[1])
"#;

/// Leave a room if this session holds the entry. KEYS: members. ARGV: name
/// key, "instance\tsession\t" prefix, channel, presence payload. Returns 1 if left.
pub const LEAVE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
"#;

/// Remove every entry of a dead instance from one room. KEYS: members.
/// ARGV: "instance\t" prefix, channel, presence payload prefix ("P" tag).
/// Publishes LEFT for each; the payload is built here from the entry.
/// Returns the number removed.
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
return n
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
