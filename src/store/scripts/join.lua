-- Join: every check of the memory core's join and the change it makes, in one atomic step,
-- in the core's order (so a refused join leaves the connection where it was).
-- ARGV: prefix, member, room, node, conn, name ("" = none), capacity (0 = no limit),
--       max_rooms (0 = no limit), source, reap grace in ms ("" = the realm's, see reap.lua)
-- Returns one of
--   {"joined", seq, {existing peer_at...}[, departure]}  (departure: the room `conn` left)
--   {"already", {peer_at of the others...}}
--   {"full"} | {"name_taken"} | {"member_id_in_use"} | {"too_many_rooms"}
local p, member, room, node, conn, name, cap, max_rooms, source =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]),
  tonumber(ARGV[8]), ARGV[9]
local reap_grace = ARGV[10] or ''
local rkey = k(p, 'r', room)
local current = redis.call('HGET', k(p, 'conns'), conn)
if current == member and redis.call('HGET', k(p, 'm', member), 'room') == room then
  return {'already', peers_except(p, room, member)}
end
if current ~= member and redis.call('EXISTS', k(p, 'm', member)) == 1 then
  return {'member_id_in_use'}
end
local size = redis.call('ZCARD', rkey)
if size == 0 and max_rooms > 0 and redis.call('SCARD', k(p, 'rooms')) >= max_rooms then
  -- The room whose members have all been away the longest gives way to a live join:
  -- dropped connections cannot hold the slots. Its members are removed silently (nobody
  -- there is connected to be told; one coming back finds itself unknown).
  local oldest = redis.call('ZRANGE', k(p, 'allaway'), 0, 0)[1]
  if not oldest then return {'too_many_rooms'} end
  for _, m in ipairs(redis.call('ZRANGE', k(p, 'r', oldest), 0, -1)) do
    remove_member(p, m)
  end
end
if cap > 0 and size >= cap then return {'full'} end
if name ~= '' and redis.call('HEXISTS', k(p, 'n', room), name) == 1 then
  return {'name_taken'}
end
local left = nil
if current then left = remove_member(p, current) end
local existing = {}
for _, m in ipairs(redis.call('ZRANGE', rkey, 0, -1)) do existing[#existing + 1] = peer_at(p, m) end
local seq = next_seq(p)
insert(p, member, room, node, conn, name, seq, source)
if reap_grace ~= '' then redis.call('HSET', k(p, 'm', member), 'grace', reap_grace) end
local out = {'joined', seq, existing}
if left then out[4] = left end
return out
