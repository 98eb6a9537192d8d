-- ENTER: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
local tag = string.match(ARGV[2], '^[^\t]*\t[^\t]*\t')
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local changed = '0'
local list = redis.call('HGET', KEYS[4], ARGV[1])
if not list then
  list = ''
end
if tag and not string.find('\n' .. list, '\n' .. tag .. '\n', 1, true) then
  redis.call('HSET', KEYS[4], ARGV[1], list .. tag .. '\n')
  changed = '1'
end
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
