//! Lua scripts: each touches the keys of one room only (one hash slot).

/// Accept a message: dedupe, append, trim, publish, atomically.
/// KEYS: stream, trimmed, dedupe (may be unused). ARGV: payload, history_len,
/// channel, dedupe ttl seconds ("" = no dedupe), trim batch.
/// Returns {duplicate (0/1), id}.
pub const PUBLISH: &str = r#"
if ARGV[4] ~= '' then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {1, prev} end
end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[1])
local keep = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[1])
if len >= keep + tonumber(ARGV[5]) then
  local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - keep)
  redis.call('SET', KEYS[2], gone[#gone][1])
  redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], id, 'EX', tonumber(ARGV[4]))
end
redis.call('PUBLISH', ARGV[3], 'M' .. id .. '\n' .. ARGV[1])
return {0, id}
"#;

/// Enter a room. KEYS: members. ARGV: name key, "gw\tsession\tdisplay",
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
/// key, "gw\tsession\t" prefix, channel, presence payload. Returns 1 if left.
pub const LEAVE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
"#;

/// Remove every entry of a dead gateway from one room. KEYS: members.
/// ARGV: "gw\t" prefix, channel, presence payload prefix ("P" tag).
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
