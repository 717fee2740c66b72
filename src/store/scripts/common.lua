-- Shared by every store script (prepended to each one's text by src/store/redis.rs).
--
-- Key layout, all under ARGV[1] = p = "<cluster name>:<realm>":
--   <p>:m:<member>   hash, one member:
--                      room       its room
--                      node, conn where it is reached now, or was last (while away)
--                      live       "1" while bound to `conn`, "0" while away
--                      name       display name ("" = none)
--                      seq        its join sequence; also its epoch (a reused key is another
--                                 member, with another seq)
--                      source     opaque fingerprint of whoever bound it last (rebind's rule)
--                      joined_at  ms since the Unix epoch (Redis clock)
--                      grace      (optional) ms it stays away when its node dies, instead of
--                                 the realm's grace (see reap.lua)
--                      links      JSON array of the links peers made to it, oldest first:
--                                 {peer, epoch, conn, connector, stream}, all strings
--   <p>:r:<room>     zset member -> seq: the room's members in join order
--   <p>:n:<room>     hash name -> member: the room's taken names
--   <p>:rooms        set of the rooms that have members
--   <p>:live         hash room -> number of its live members (absent = 0)
--   <p>:allaway      zset room -> when (us) its members became all away (max_rooms eviction)
--   <p>:conns        hash conn -> member, for live members' current connections only
--   <p>:on:<node>    set of the live members reached through that node
--   <p>:away         zset member -> grace deadline (ms since the Unix epoch)
--   <p>:count        number of members (absent = 0)
--   <p>:seq          the last join sequence (see next_seq); the only key left when all leave
-- A room exists exactly while it has members: its r, n, live and allaway entries go with its
-- last member. Keys are built here from the prefix, so these scripts need one Redis instance
-- (or one hash slot per realm on Redis Cluster); see the README's "Running several nodes".
local function k(p, ...) return p .. ':' .. table.concat({...}, ':') end

-- The server clock in microseconds.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The next join sequence: the server clock in microseconds, or one more than the last one
-- when the clock did not move. Clock-based so that joins after Redis lost its state (restart
-- without persistence) still sort after the members the nodes restore with their old numbers.
-- Returned as a decimal string (it is stored, compared and replied as text).
local function next_seq(p)
  local last = tonumber(redis.call('GET', k(p, 'seq')) or '0')
  local seq = string.format('%.0f', math.max(now_us(), last + 1))
  redis.call('SET', k(p, 'seq'), seq)
  return seq
end

-- A member's fields as a table, or nil when there is no such member.
local function get_member(p, member)
  local flat = redis.call('HGETALL', k(p, 'm', member))
  if #flat == 0 then return nil end
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

-- A member's links (decoded), oldest first.
local function get_links(m)
  if not m.links or m.links == '' then return {} end
  local ok, links = pcall(cjson.decode, m.links)
  if not ok or type(links) ~= 'table' then return {} end
  return links
end

-- Stores a member's links (no field at all when there are none: cjson writes {} for []).
local function set_links(p, member, links)
  if #links == 0 then
    redis.call('HDEL', k(p, 'm', member), 'links')
  else
    redis.call('HSET', k(p, 'm', member), 'links', cjson.encode(links))
  end
end

-- Counts one member of `room` in (+1) or out (-1) of the room's live members.
local function count_live(p, room, delta)
  local n = redis.call('HINCRBY', k(p, 'live'), room, delta)
  if n <= 0 then redis.call('HDEL', k(p, 'live'), room) end
end

-- Brings a room's bookkeeping in line with its members after a change: an empty room is
-- deleted; a room whose members are all away is in `allaway`, keeping the time it first
-- became so (NX), and leaves it as soon as one member is live.
local function settle_room(p, room)
  local rkey = k(p, 'r', room)
  if redis.call('ZCARD', rkey) == 0 then
    redis.call('DEL', rkey, k(p, 'n', room))
    redis.call('SREM', k(p, 'rooms'), room)
    redis.call('HDEL', k(p, 'live'), room)
    redis.call('ZREM', k(p, 'allaway'), room)
  elseif tonumber(redis.call('HGET', k(p, 'live'), room) or '0') > 0 then
    redis.call('ZREM', k(p, 'allaway'), room)
  else
    redis.call('ZADD', k(p, 'allaway'), 'NX', now_us(), room)
  end
end

-- A member as a peer in a reply: {member, node, conn} while live, {member} while away.
local function peer_at(p, member)
  local f = redis.call('HMGET', k(p, 'm', member), 'live', 'node', 'conn')
  if f[1] == '1' then return {member, f[2], f[3]} end
  return {member}
end

-- The members of `room` other than `except`, join order, as peer_at gives them.
local function peers_except(p, room, except)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGE', k(p, 'r', room), 0, -1)) do
    if m ~= except then out[#out + 1] = peer_at(p, m) end
  end
  return out
end

-- Binds a member (already in its room) to a connection, as live; `m` is its table before.
local function bind(p, member, m, node, conn, source)
  if m.live == '1' then
    redis.call('HDEL', k(p, 'conns'), m.conn)
    redis.call('SREM', k(p, 'on', m.node), member)
  else
    count_live(p, m.room, 1)
    redis.call('ZREM', k(p, 'away'), member)
  end
  redis.call('HSET', k(p, 'conns'), conn, member)
  redis.call('SADD', k(p, 'on', node), member)
  redis.call('HSET', k(p, 'm', member), 'node', node, 'conn', conn, 'live', '1',
    'source', source)
end

-- Marks a live member away until `deadline` (ms): its connection index entry goes, its
-- last connection stays on record.
local function unbind(p, member, m, deadline)
  redis.call('HDEL', k(p, 'conns'), m.conn)
  redis.call('SREM', k(p, 'on', m.node), member)
  redis.call('HSET', k(p, 'm', member), 'live', '0')
  redis.call('ZADD', k(p, 'away'), deadline, member)
  count_live(p, m.room, -1)
  settle_room(p, m.room)
end

-- Adds a new live member to `room` (creating the room) with join sequence / epoch `seq`.
local function insert(p, member, room, node, conn, name, seq, source)
  redis.call('HSET', k(p, 'm', member), 'room', room, 'node', node, 'conn', conn,
    'live', '1', 'name', name, 'seq', seq, 'source', source,
    'joined_at', string.format('%.0f', math.floor(now_us() / 1000)))
  redis.call('ZADD', k(p, 'r', room), seq, member)
  if name ~= '' then redis.call('HSET', k(p, 'n', room), name, member) end
  redis.call('SADD', k(p, 'rooms'), room)
  redis.call('HSET', k(p, 'conns'), conn, member)
  redis.call('SADD', k(p, 'on', node), member)
  redis.call('INCR', k(p, 'count'))
  count_live(p, room, 1)
  settle_room(p, room)
end

-- Removes one member and works out who must hear of it, as the memory core's removal does:
-- the live members left drop their links to it (they are told now); away ones keep theirs,
-- to learn on return that the peer is gone. Returns the departure as a reply,
--   {member, room, last_conn, {remaining peer_at...}, {{peer, node, conn, connector}...}}
-- with `linked` = the live peers in the room whose links to it are still theirs (same
-- epoch), or nil when the member is not there (someone else removed it first).
local function remove_member(p, member)
  local m = get_member(p, member)
  if not m then return nil end
  local room = m.room
  redis.call('ZREM', k(p, 'r', room), member)
  if m.name and m.name ~= '' and redis.call('HGET', k(p, 'n', room), m.name) == member then
    redis.call('HDEL', k(p, 'n', room), m.name)
  end
  if m.live == '1' then
    redis.call('HDEL', k(p, 'conns'), m.conn)
    redis.call('SREM', k(p, 'on', m.node), member)
    count_live(p, room, -1)
  end
  redis.call('ZREM', k(p, 'away'), member)
  redis.call('DEL', k(p, 'm', member))
  if redis.call('DECR', k(p, 'count')) <= 0 then redis.call('DEL', k(p, 'count')) end
  local remaining = {}
  for _, other in ipairs(redis.call('ZRANGE', k(p, 'r', room), 0, -1)) do
    local o = get_member(p, other)
    if o then
      if o.live == '1' then
        remaining[#remaining + 1] = {other, o.node, o.conn}
        local links, kept = get_links(o), {}
        for _, l in ipairs(links) do
          if l.peer ~= member then kept[#kept + 1] = l end
        end
        if #kept ~= #links then set_links(p, other, kept) end
      else
        remaining[#remaining + 1] = {other}
      end
    end
  end
  local linked = {}
  for _, l in ipairs(get_links(m)) do
    local f = redis.call('HMGET', k(p, 'm', l.peer), 'seq', 'room', 'live', 'node', 'conn')
    if f[1] == l.epoch and f[2] == room and f[3] == '1' then
      linked[#linked + 1] = {l.peer, f[4], f[5], l.connector}
    end
  end
  settle_room(p, room)
  return {member, room, m.conn, remaining, linked}
end
