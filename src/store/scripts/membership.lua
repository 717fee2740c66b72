-- Membership: the room and member key of a connection, read in one step (the index and the
-- member hash could otherwise be read on either side of a change).
-- ARGV: prefix, conn
-- Returns {room, member} | {}
local p, conn = ARGV[1], ARGV[2]
local member = redis.call('HGET', k(p, 'conns'), conn)
if not member then return {} end
local room = redis.call('HGET', k(p, 'm', member), 'room')
if not room then return {} end
return {room, member}
