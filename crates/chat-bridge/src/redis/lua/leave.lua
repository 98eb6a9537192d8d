-- LEAVE: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
local list = redis.call('HGET', KEYS[4], ARGV[1])
if list then
  local padded = '\n' .. list
  local at = string.find(padded, '\n' .. ARGV[2] .. '\n', 1, true)
  if not at then
    return -1
  end
  local rest = string.sub(padded, 2, at) .. string.sub(padded, at + #ARGV[2] + 2)
  if rest ~= '' then
    -- Another session of this identity is still here: nobody sees a change,
    -- and the entry passes to a remaining session if it was this one's.
    redis.call('HSET', KEYS[4], ARGV[1], rest)
    local cur = redis.call('HGET', KEYS[1], ARGV[1])
    if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
      local display = string.match(cur, '^[^\t]*\t[^\t]*\t(.*)$') or ''
      local other = string.sub(rest, 1, string.find(rest, '\n', 1, true) - 1)
      redis.call('HSET', KEYS[1], ARGV[1], other .. display)
    end
    return -2
  end
  redis.call('HDEL', KEYS[4], ARGV[1])
end
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
