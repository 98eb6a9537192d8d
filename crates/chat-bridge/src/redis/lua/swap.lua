-- SWAP: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
