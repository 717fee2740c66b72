-- Shared by every store script (prepended to each one's text by src/store/redis.rs).
-- Key layout, all under ARGV[1] = "<cluster name>:<realm>":
--   <p>:m:<member>        hash: room, node, conn, name, seq, state ("live" | "away")
--   <p>:r:<room>          zset: member -> join sequence (the join order, `peers`)
--   <p>:n:<room>          hash: chatroom name -> member (unique names)
--   <p>:rooms             set of rooms that have members (snapshot)
--   <p>:on:<node>         set of members reached through that node
--   <p>:away              zset: member -> grace deadline (ms since the epoch)
--   <p>:seq               the last join sequence (see next_seq)
-- Keys are built here from the prefix, so these scripts need one Redis instance (or one
-- hash slot per realm on Redis Cluster); see the README's "Running several nodes".
local function k(p, ...) return p .. ':' .. table.concat({...}, ':') end

-- Removes one member and everything pointing at it. Returns the room and the members left
-- in it (join order), or nil when the member is not there (someone else removed it first).
local function remove_member(p, member)
  local mkey = k(p, 'm', member)
  local room = redis.call('HGET', mkey, 'room')
  if not room then return nil end
  local node = redis.call('HGET', mkey, 'node')
  local name = redis.call('HGET', mkey, 'name')
  local rkey = k(p, 'r', room)
  redis.call('ZREM', rkey, member)
  if name and name ~= '' then
    local nkey = k(p, 'n', room)
    if redis.call('HGET', nkey, name) == member then redis.call('HDEL', nkey, name) end
  end
  if node then redis.call('SREM', k(p, 'on', node), member) end
  redis.call('ZREM', k(p, 'away'), member)
  redis.call('DEL', mkey)
  local left = redis.call('ZRANGE', rkey, 0, -1)
  if #left == 0 then
    redis.call('DEL', rkey, k(p, 'n', room))
    redis.call('SREM', k(p, 'rooms'), room)
  end
  return {room, left}
end

-- The next join sequence: the server clock in microseconds, or one more than the last one
-- when the clock did not move. Clock-based so that joins after Redis lost its state (restart
-- without persistence) still sort after the members the nodes restore with their old numbers.
local function next_seq(p)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', k(p, 'seq')) or '0')
  local seq = math.max(now, last + 1)
  redis.call('SET', k(p, 'seq'), string.format('%.0f', seq))
  return seq
end

-- Appends one departure to a flat reply: member, room, count, peers-left...
local function push_departure(out, member, r)
  out[#out + 1] = member
  out[#out + 1] = r[1]
  out[#out + 1] = #r[2]
  for _, m in ipairs(r[2]) do out[#out + 1] = m end
end
