-- Rebind: a member (away, or live on an older connection) is now reached through a new node
-- and connection; its room, name, epoch and place in the join order stay. Checks in the
-- memory core's order; links sorted out as it does.
-- ARGV: prefix, member, room, name ("" = not checked), node, conn, source
-- Returns {"rebound", {previous node, conn} | {}, {unlinked peer_at...},
--          {{peer, node, conn, connector}...} (linked), {peer_conn...} (gone), last_conn}
--   where last_conn is the connection it was bound to before (how its peers knew it)
--       | {"unknown"} | {"mismatch"} | {"conn_busy"} | {"live"}
local p, member, room, name, node, conn, source =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local m = get_member(p, member)
if not m then return {'unknown'} end
if m.room ~= room or (name ~= '' and name ~= m.name) then return {'mismatch'} end
local owner = redis.call('HGET', k(p, 'conns'), conn)
if owner and owner ~= member then return {'conn_busy'} end
local was_live_elsewhere = m.live == '1' and m.conn ~= conn
-- A member whose drop has not been noticed yet cannot tell a network switch from someone
-- else presenting its key: only the same source may take a live member over.
if was_live_elsewhere and m.source ~= source then return {'live'} end
local previous = {}
if was_live_elsewhere then previous = {m.node, m.conn} end
bind(p, member, m, node, conn, source)
local kept, kept_peers, linked, gone = {}, {}, {}, {}
for _, l in ipairs(get_links(m)) do
  local f = redis.call('HMGET', k(p, 'm', l.peer), 'seq', 'room', 'live', 'node', 'conn')
  if f[1] == l.epoch and f[2] == room then
    kept[#kept + 1] = l
    kept_peers[l.peer] = true
    if f[3] == '1' then linked[#linked + 1] = {l.peer, f[4], f[5], l.connector} end
  else
    gone[#gone + 1] = l.conn
  end
end
set_links(p, member, kept)
local unlinked = {}
for _, other in ipairs(redis.call('ZRANGE', k(p, 'r', room), 0, -1)) do
  if other ~= member and not kept_peers[other] then
    local at = peer_at(p, other)
    if #at == 3 then unlinked[#unlinked + 1] = at end
  end
end
settle_room(p, room)
return {'rebound', previous, unlinked, linked, gone, m.conn}
