-- PUBLISH: documented where it is loaded, crates/chat-bridge/src/redis/scripts.rs.
local function failed(reply)
  return type(reply) == 'table' and reply.err
end
local out = {}
local published = {}
local n = 0
for i = 5, #ARGV, 2 do
  n = n + 1
  local ttl, payload, dedupe = ARGV[i], ARGV[i + 1], KEYS[3 + n]
  local prev = false
  if ttl ~= '' then prev = redis.pcall('GET', dedupe) end
  if failed(prev) then
    out[#out + 1] = 2
    out[#out + 1] = prev.err
  elseif prev then
    out[#out + 1] = 1
    out[#out + 1] = prev
  else
    local id = redis.pcall('XADD', KEYS[1], '*', 'm', payload)
    if failed(id) then
      out[#out + 1] = 2
      out[#out + 1] = id.err
    else
      if ttl ~= '' then redis.pcall('SET', dedupe, id, 'EX', tonumber(ttl)) end
      published[#published + 1] = id .. '\n' .. #payload .. '\n' .. payload
      out[#out + 1] = 0
      out[#out + 1] = id
    end
  end
end
if #published > 0 then
  redis.call('PUBLISH', ARGV[2], 'B' .. table.concat(published))
  local keep = tonumber(ARGV[1])
  local len = redis.call('XLEN', KEYS[1])
  if len >= keep + tonumber(ARGV[3]) then
    local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - keep)
    redis.call('SET', KEYS[2], gone[#gone][1])
    redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
return out
