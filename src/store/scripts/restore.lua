-- Restore: a node puts back a member it still serves after Redis lost its state (restart
-- without persistence), keeping the member's original join sequence so `peers` keeps its
-- order. A member already present is left alone; a name another member took meanwhile wins.
-- ARGV: prefix, member, room, node, conn, name, seq
-- Returns "restored" | "present" | "name_taken"
local p, member, room, node, conn, name, seq =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local mkey = k(p, 'm', member)
if redis.call('EXISTS', mkey) == 1 then return 'present' end
if name ~= '' and redis.call('HSETNX', k(p, 'n', room), name, member) == 0 then
  return 'name_taken'
end
redis.call('ZADD', k(p, 'r', room), seq, member)
redis.call('HSET', mkey, 'room', room, 'node', node, 'conn', conn, 'name', name,
  'seq', seq, 'state', 'live')
redis.call('SADD', k(p, 'rooms'), room)
redis.call('SADD', k(p, 'on', node), member)
local cur = tonumber(redis.call('GET', k(p, 'seq')) or '0')
if cur < seq then redis.call('SET', k(p, 'seq'), string.format('%.0f', seq)) end
return 'restored'
