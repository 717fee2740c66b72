-- Expire: removes the away members whose grace ended by `now`, at most `limit` of them.
-- Any node may run it; each member is removed by exactly one call.
-- ARGV: prefix, now_ms, limit
-- Returns a flat list: member, room, count, peers-left... per expired member.
local p, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', k(p, 'away'), '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, member in ipairs(due) do
  local r = remove_member(p, member)
  redis.call('ZREM', k(p, 'away'), member)
  if r then push_departure(out, member, r) end
end
return out
