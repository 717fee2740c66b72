-- Expire: removes the away members whose grace ended by `now`, at most `limit` of them.
-- Any node may run it; each member is removed, and reported, by exactly one call.
-- ARGV: prefix, now_ms, limit
-- Returns {departure...} (see remove_member).
local p, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', k(p, 'away'), '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, member in ipairs(due) do
  redis.call('ZREM', k(p, 'away'), member)
  if redis.call('HGET', k(p, 'm', member), 'live') == '0' then
    local gone = remove_member(p, member)
    if gone then out[#out + 1] = gone end
  end
end
return out
