-- Reap: the live members reached through a node whose heartbeat expired. With a grace
-- (`grace_ms` > 0) each becomes away until now + grace, so it can reconnect to another node;
-- without one it is removed. Their connection index entries go either way. Runs once per
-- dead node and realm: the node's member set is emptied here, so a second call finds nothing.
-- Members already away keep their own deadline. A member that joined with a grace of its own
-- (field `grace`, ms: a realm shared by protocols with different graces) gets that one.
-- ARGV: prefix, node, now_ms, grace_ms
-- Returns {{"away", member, room} | {"left", departure}...}, by member key.
local p, node, now, grace = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local onkey = k(p, 'on', node)
local members = redis.call('SMEMBERS', onkey)
table.sort(members)
local out = {}
for _, member in ipairs(members) do
  local m = get_member(p, member)
  if m and m.live == '1' and m.node == node then
    local g = tonumber(m.grace or '') or grace
    if g > 0 then
      unbind(p, member, m, now + g)
      out[#out + 1] = {'away', member, m.room}
    else
      out[#out + 1] = {'left', remove_member(p, member)}
    end
  end
end
redis.call('DEL', onkey)
return out
