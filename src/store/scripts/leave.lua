-- Leave: removes the member if it is still reached through `conn` ("" = whatever its
-- connection). A stale leave (the member already rebound elsewhere) changes nothing.
-- ARGV: prefix, member, conn
-- Returns {room, peers-left...} | {} when there was nothing to remove.
local p, member, conn = ARGV[1], ARGV[2], ARGV[3]
if conn ~= '' and redis.call('HGET', k(p, 'm', member), 'conn') ~= conn then return {} end
local r = remove_member(p, member)
if not r then return {} end
local out = {r[1]}
for _, m in ipairs(r[2]) do out[#out + 1] = m end
return out
