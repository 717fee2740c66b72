-- Away: a connection dropped; its member keeps its place, away, until `deadline` (ms) unless
-- it rebinds. Only the member's current connection can make it away (a stale drop of a
-- connection it already left behind changes nothing).
-- ARGV: prefix, conn, deadline_ms
-- Returns {member, room} | {} when `conn` is no member's current connection.
local p, conn, deadline = ARGV[1], ARGV[2], tonumber(ARGV[3])
local member = redis.call('HGET', k(p, 'conns'), conn)
if not member then return {} end
local m = get_member(p, member)
if not m or m.live ~= '1' or m.conn ~= conn then
  -- An index entry without its member: drop it rather than keep a ghost connection.
  redis.call('HDEL', k(p, 'conns'), conn)
  return {}
end
unbind(p, member, m, deadline)
return {member, m.room}
