-- Join: capacity, unique name and join order in one atomic step.
-- ARGV: prefix, member, room, node, conn, name ("" = none), capacity (0 = unlimited)
-- Returns {"joined", seq, peers-before...} | {"full"} | {"name_taken"} | {"exists"}
local p, member, room, node, conn, name, cap =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local mkey = k(p, 'm', member)
if redis.call('EXISTS', mkey) == 1 then return {'exists'} end
local rkey = k(p, 'r', room)
if cap > 0 and redis.call('ZCARD', rkey) >= cap then return {'full'} end
if name ~= '' and redis.call('HSETNX', k(p, 'n', room), name, member) == 0 then
  return {'name_taken'}
end
local peers = redis.call('ZRANGE', rkey, 0, -1)
local seq = next_seq(p)
redis.call('ZADD', rkey, seq, member)
redis.call('HSET', mkey, 'room', room, 'node', node, 'conn', conn, 'name', name,
  'seq', seq, 'state', 'live')
redis.call('SADD', k(p, 'rooms'), room)
redis.call('SADD', k(p, 'on', node), member)
local out = {'joined', seq}
for _, m in ipairs(peers) do out[#out + 1] = m end
return out
