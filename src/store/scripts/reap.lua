-- Reap: the members reached through a node whose heartbeat expired. With a grace
-- (`grace_ms` > 0) each live member becomes away until now + grace, so it can reconnect to
-- another node; without one it is removed. Runs once per dead node and realm: the caller
-- checks the heartbeat first, and the node's member set is emptied here.
-- ARGV: prefix, node, now_ms, grace_ms
-- Returns a flat list: kind ("away" | "left"), member, room, count, peers-left...
local p, node, now, grace = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local onkey = k(p, 'on', node)
local members = redis.call('SMEMBERS', onkey)
local out = {}
for _, member in ipairs(members) do
  local mkey = k(p, 'm', member)
  if grace > 0 then
    if redis.call('HGET', mkey, 'state') == 'live' then
      redis.call('HSET', mkey, 'state', 'away')
      redis.call('ZADD', k(p, 'away'), now + grace, member)
      local room = redis.call('HGET', mkey, 'room')
      out[#out + 1] = 'away'
      out[#out + 1] = member
      out[#out + 1] = room
      out[#out + 1] = 0
    end
  else
    local r = remove_member(p, member)
    if r then
      out[#out + 1] = 'left'
      push_departure(out, member, r)
    end
  end
end
if grace <= 0 then redis.call('DEL', onkey) end
return out
