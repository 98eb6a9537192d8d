-- ENTER: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
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
