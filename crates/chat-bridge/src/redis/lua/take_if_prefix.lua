-- TAKE_IF_PREFIX: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return cur
end
return false
