-- Away: the member's connection dropped; it keeps its place until `deadline` (ms) unless it
-- rebinds. Only the connection the member is reached through can make it away.
-- ARGV: prefix, member, conn, deadline_ms
-- Returns 1 when marked away, 0 otherwise.
local p, member, conn, deadline = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local mkey = k(p, 'm', member)
if redis.call('HGET', mkey, 'conn') ~= conn then return 0 end
redis.call('HSET', mkey, 'state', 'away')
redis.call('ZADD', k(p, 'away'), deadline, member)
return 1
