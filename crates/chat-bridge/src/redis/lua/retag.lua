-- RETAG: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  local list = redis.call('HGET', KEYS[2], ARGV[1])
  local tag = string.match(ARGV[3], '^[^\t]*\t[^\t]*\t')
  if list and tag then
    local padded = '\n' .. list
    local at = string.find(padded, '\n' .. ARGV[2] .. '\n', 1, true)
    if at then
      local rest = string.sub(padded, 2, at) .. string.sub(padded, at + #ARGV[2] + 2)
      if not string.find('\n' .. rest, '\n' .. tag .. '\n', 1, true) then
        rest = rest .. tag .. '\n'
      end
      redis.call('HSET', KEYS[2], ARGV[1], rest)
    end
  end
  return 1
end
return 0
