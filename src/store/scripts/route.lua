-- Route: checks that the member bound to `conn` may reach the target, and where it is; with
-- a link, records on the target that the sender linked to it, as the memory core does (the
-- sender's older link of the same stream goes first, even when the new one is then refused).
-- ARGV: prefix, conn, kind ("member" | "conn"), target, connector ("" with no link),
--       stream, max_links (0 = no limit), with_link ("1" | "0")
-- Returns {"routed", sender, node, conn, room, target, target_connector} | {"not_joined"}
--       | {"unknown_target"} | {"other_room"} | {"target_away"} | {"too_many_links"}
-- where target is the target's member key and target_connector the target's own connector
-- of its latest link to the sender (recorded on the sender; "" when it made none).
local p, conn, kind, target, connector, stream, max_links, with_link =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local sender = redis.call('HGET', k(p, 'conns'), conn)
if not sender then return {'not_joined'} end
local s = redis.call('HMGET', k(p, 'm', sender), 'room', 'seq')
if not s[1] then return {'not_joined'} end
local key = target
if kind == 'conn' then key = redis.call('HGET', k(p, 'conns'), target) end
if not key then return {'unknown_target'} end
local t = get_member(p, key)
if not t then return {'unknown_target'} end
if t.room ~= s[1] then return {'other_room'} end
if t.live ~= '1' then return {'target_away'} end
if with_link == '1' then
  local links, kept = get_links(t), {}
  for _, l in ipairs(links) do
    if not (l.peer == sender and l.stream == stream) then kept[#kept + 1] = l end
  end
  if max_links > 0 and #kept >= max_links then
    if #kept ~= #links then set_links(p, key, kept) end
    return {'too_many_links'}
  end
  kept[#kept + 1] = {peer = sender, epoch = s[2], conn = conn, connector = connector,
    stream = stream}
  set_links(p, key, kept)
end
local back = ''
for _, l in ipairs(get_links(get_member(p, sender) or {})) do
  if l.peer == key and l.epoch == t.seq then back = l.connector end
end
return {'routed', sender, t.node, t.conn, t.room, key, back}
