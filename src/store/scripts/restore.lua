-- Restore: a node puts back a live member it still serves after Redis lost its state (restart
-- without persistence), keeping the member's join sequence (its epoch and its place in the
-- join order). A member already present is left alone; a name another member took meanwhile
-- wins. Its links are not restored (their peers' epochs are gone with the state).
-- ARGV: prefix, member, room, node, conn, name ("" = none), seq, source
-- Returns "restored" | "present" | "name_taken"
local p, member, room, node, conn, name, seq, source =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if redis.call('EXISTS', k(p, 'm', member)) == 1 then return 'present' end
if name ~= '' and redis.call('HEXISTS', k(p, 'n', room), name) == 1 then
  return 'name_taken'
end
insert(p, member, room, node, conn, name, seq, source)
local last = tonumber(redis.call('GET', k(p, 'seq')) or '0')
if last < tonumber(seq) then redis.call('SET', k(p, 'seq'), seq) end
return 'restored'
