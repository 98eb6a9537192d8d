-- REAP_ROOM: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
-- First the dead instance's sessions leave the session lists; an entry of
-- the dead instance whose identity still has a live session passes to it.
local lists = redis.call('HGETALL', KEYS[4])
for i = 1, #lists, 2 do
  local key, list = lists[i], lists[i + 1]
  local rest = ''
  for tag in string.gmatch(list, '[^\n]*\n') do
    if string.sub(tag, 1, #ARGV[1]) ~= ARGV[1] then
      rest = rest .. tag
    end
  end
  if rest == '' then
    redis.call('HDEL', KEYS[4], key)
  elseif rest ~= list then
    redis.call('HSET', KEYS[4], key, rest)
    local cur = redis.call('HGET', KEYS[1], key)
    if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then
      local display = string.match(cur, '^[^\t]*\t[^\t]*\t(.*)$') or ''
      local other = string.sub(rest, 1, string.find(rest, '\n', 1, true) - 1)
      redis.call('HSET', KEYS[1], key, other .. display)
    end
  end
end
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
