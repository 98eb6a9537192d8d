-- REAP_ROOM: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
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
