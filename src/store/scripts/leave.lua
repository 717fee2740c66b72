-- Leave: removes the member bound to `conn`. A connection that is no member (never joined,
-- already left, away, or its member rebound elsewhere) changes nothing.
-- ARGV: prefix, conn
-- Returns a departure (see remove_member) | {} when there was nothing to remove.
local p, conn = ARGV[1], ARGV[2]
local member = redis.call('HGET', k(p, 'conns'), conn)
if not member then return {} end
return remove_member(p, member) or {}
