-- Rebind: a member (away, or live on an older connection) is now reached through a new
-- node and connection; its room, name and place in the join order stay.
-- ARGV: prefix, member, node, conn
-- Returns {"rebound", room, old_node, old_conn, old_state} | {"unknown"}
local p, member, node, conn = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local mkey = k(p, 'm', member)
local room = redis.call('HGET', mkey, 'room')
if not room then return {'unknown'} end
local old = redis.call('HMGET', mkey, 'node', 'conn', 'state')
redis.call('SREM', k(p, 'on', old[1]), member)
redis.call('SADD', k(p, 'on', node), member)
redis.call('HSET', mkey, 'node', node, 'conn', conn, 'state', 'live')
redis.call('ZREM', k(p, 'away'), member)
return {'rebound', room, old[1], old[2], old[3]}
