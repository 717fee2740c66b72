//! Room state in Redis, for several gateway nodes sharing every room (cluster mode).
//!
//! Used through [`super::shared::SharedRooms`] when `cluster.redis_url` is set.
//!
//! The rules are the memory core's (`Rooms::join`, `leave`, `route`, `disconnect`, `rebind`
//! and the grace expiry in `src/core`), rule for rule and in the same order, so a realm
//! behaves the same on one node or several. Every rule that reads then writes shared state is
//! one Lua script (in `scripts/`, beside this file): two nodes racing cannot both win, and
//! each removal is reported to exactly one caller.
//!
//! Results stay at the *address* level: a member is reached at an [`Address`] (node +
//! connection id, as strings), never a socket handle, so any node can tell where to deliver
//! and the caller maps addresses on its own node to its sockets.
//!
//! One `RedisStore` serves one realm (one protocol's rooms); its keys sit under
//! `<cluster.name>:<realm>:` (the layout is described in `scripts/common.lua`).

use redis::aio::ConnectionManager;
use redis::{Script, ScriptInvocation, Value};

/// Where a member is reached: the node that holds its connection, and the connection there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The node id (see `cluster::NodeId`).
    pub node: String,
    /// The connection (socket) id on that node.
    pub conn: String,
}

/// A member of a room: where it is reached now (`None` while it is away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAt {
    /// Its member key.
    pub member: String,
    /// Its current address; `None` during a reconnect grace period.
    pub at: Option<Address>,
}

/// A live peer with a link to some member, and the peer's own connector for that link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAt {
    /// The peer's member key.
    pub member: String,
    /// Where the peer is reached.
    pub at: Address,
    /// The peer's connector id for the link (opaque to the gateway).
    pub connector: String,
}

/// A member removed from its room, and who must hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// Who left.
    pub member: String,
    /// The room it left.
    pub room: String,
    /// The last connection it had (how its peers knew it).
    pub last_conn: String,
    /// Who is still in the room, oldest first (empty: the room is gone).
    pub remaining: Vec<PeerAt>,
    /// Live peers in the room that had linked to it, with their connector for the link.
    pub linked: Vec<LinkedAt>,
}

/// A request to join a room.
#[derive(Debug, Clone, Copy)]
pub struct JoinArgs<'a> {
    /// Stable member key, unique within the realm.
    pub member: &'a str,
    /// Room name.
    pub room: &'a str,
    /// The connection asking, and its node.
    pub at: &'a Address,
    /// Display name; when set (and not empty) it must be unique within the room.
    pub name: Option<&'a str>,
    /// Most members the room may hold; 0 for no limit.
    pub capacity: usize,
    /// Most rooms the realm may hold; 0 for no limit.
    pub max_rooms: usize,
    /// Opaque fingerprint of who asks (see [`RebindResult::Live`]).
    pub source: &'a str,
    /// How long (ms) this member is kept away when its node dies, instead of the grace the
    /// node-death pass is given for the realm; `None`: that one. A realm whose members have
    /// different graces (cross-protocol rooms) sets it per member.
    pub reap_grace_ms: Option<u64>,
}

/// What a join decided. Every refusal changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinResult {
    /// The connection is now a member.
    Joined {
        /// The join's place in the realm-wide order, also the member's epoch (kept by the
        /// node so the membership can be restored after Redis lost its state).
        seq: u64,
        /// The members that were there before, oldest first.
        existing: Vec<PeerAt>,
        /// The room the connection had to leave to join this one, if any.
        left: Option<Gone>,
    },
    /// The connection already is that member of that room; nothing changed.
    AlreadyMember {
        /// The other members, oldest first.
        peers: Vec<PeerAt>,
    },
    /// The room holds `capacity` members already.
    Full,
    /// Another member of the room has that name.
    NameTaken,
    /// The member key belongs to another connection.
    MemberIdInUse,
    /// The join would open a room beyond `max_rooms`, and no room of away members could
    /// give way.
    TooManyRooms,
}

/// Who a relay is for.
#[derive(Debug, Clone, Copy)]
pub enum RouteTarget<'a> {
    /// A member, by key.
    Member(&'a str),
    /// Whoever is bound to this connection now.
    Conn(&'a str),
}

/// A link to record on the target of a relay.
#[derive(Debug, Clone, Copy)]
pub struct LinkArgs<'a> {
    /// The sender's connector id.
    pub connector: &'a str,
    /// The stream kind (a sender has at most one link per stream kind to a target).
    pub stream: &'a str,
    /// Most links the target may hold (a new one beyond it is refused); 0 for no limit.
    pub max_links: usize,
}

/// Where a relay goes, or why it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteResult {
    /// Deliver to `target`.
    Routed {
        /// The sender's member key (its true identity, whatever its payload claims).
        sender: String,
        /// Where the target is reached.
        target: Address,
        /// The room both are in.
        room: String,
        /// The target's member key.
        target_member: String,
        /// The target's own connector of its latest link to the sender, if it made one.
        target_connector: Option<String>,
    },
    /// The sending connection is no member.
    NotJoined,
    /// No member has that key, or no member is bound to that connection.
    UnknownTarget,
    /// The target is in another room.
    OtherRoom,
    /// The target is away (in its reconnect grace period).
    TargetAway,
    /// The target holds its maximum of links; the new one was not recorded.
    TooManyLinks,
}

/// A request to bind an existing member to a new connection.
#[derive(Debug, Clone, Copy)]
pub struct RebindArgs<'a> {
    /// The member's key.
    pub member: &'a str,
    /// The room the client believes it is in; must match.
    pub room: &'a str,
    /// The display name the client believes it has; must match when given (not empty).
    pub name: Option<&'a str>,
    /// The new connection, and its node.
    pub at: &'a Address,
    /// Opaque fingerprint of who asks (see [`RebindResult::Live`]).
    pub source: &'a str,
}

/// What a rebind found. Every refusal changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebindResult {
    /// The member is now reached at the new address.
    Rebound {
        /// Its room.
        room: String,
        /// The address it was still live at, when that was another connection (to close).
        previous: Option<Address>,
        /// Live members with no link to it, oldest first.
        unlinked: Vec<PeerAt>,
        /// Live peers linked to it, with their connector for the link.
        linked: Vec<LinkedAt>,
        /// Linked peers that are gone, by the connection the member knew them by.
        gone: Vec<String>,
        /// The connection it was bound to before (how its peers knew it).
        last_conn: String,
    },
    /// No such member (never joined, left, or its grace ended).
    Unknown,
    /// The member is in another room or has another name.
    Mismatch,
    /// The new connection already is another member.
    ConnBusy,
    /// The member is live on another connection bound by another source: a member whose
    /// drop was not noticed yet cannot tell a network switch from someone else presenting
    /// its key, so only the same source may take it over.
    Live,
}

/// What the removal of a dead node's members did to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// Now away until its grace ends (a protocol with a reconnect grace).
    Away {
        /// The member.
        member: String,
        /// Its room.
        room: String,
    },
    /// Removed (a protocol without a grace).
    Left(Gone),
}

/// What restoring one member after Redis lost its state did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Put back with its original place in the join order.
    Restored,
    /// Already there (restored before, or never lost).
    Present,
    /// Another member took its name meanwhile.
    NameTaken,
}

/// A room as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnap {
    /// Room name.
    pub name: String,
    /// Its members, oldest first.
    pub members: Vec<MemberSnap>,
}

/// A member as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnap {
    /// Member key.
    pub member: String,
    /// Display name, if it has one.
    pub name: Option<String>,
    /// The node it is (or was last) reached through.
    pub node: String,
    /// Its current connection, or its last one while away.
    pub conn: String,
    /// Whether it is in its reconnect grace period.
    pub away: bool,
    /// When it joined, in ms since the Unix epoch (Redis clock).
    pub joined_at_ms: u64,
}

/// An error talking to Redis, or a reply this code cannot read, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or refused the command.
    #[error("redis store, {action}: {source}")]
    Redis {
        /// What was being done.
        action: &'static str,
        /// What Redis (or the connection) said.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered something other than what the script promises (another version of
    /// the scripts, or keys written by something else).
    #[error("redis store, {action}: unexpected reply ({detail})")]
    Reply {
        /// What was being done.
        action: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

/// One realm's rooms and members in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: &'static Scripts,
}

/// The compiled scripts (their SHA1s are computed once; Redis caches the bodies).
struct Scripts {
    join: Script,
    leave: Script,
    route: Script,
    away: Script,
    rebind: Script,
    expire: Script,
    reap: Script,
    restore: Script,
    membership: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            join: with_common(include_str!("scripts/join.lua")),
            leave: with_common(include_str!("scripts/leave.lua")),
            route: with_common(include_str!("scripts/route.lua")),
            away: with_common(include_str!("scripts/away.lua")),
            rebind: with_common(include_str!("scripts/rebind.lua")),
            expire: with_common(include_str!("scripts/expire.lua")),
            reap: with_common(include_str!("scripts/reap.lua")),
            restore: with_common(include_str!("scripts/restore.lua")),
            membership: with_common(include_str!("scripts/membership.lua")),
        }
    })
}

const COMMON: &str = include_str!("scripts/common.lua");

impl RedisStore {
    /// The store of `realm` in the cluster named `cluster`, over a shared connection.
    pub fn new(conn: ConnectionManager, cluster: &str, realm: &str) -> Self {
        Self {
            conn,
            prefix: format!("{cluster}:{realm}"),
            scripts: scripts(),
        }
    }

    /// Puts the connection `a.at` into a room as `a.member`, leaving the room it was in
    /// first. The checks (already a member, member key in use, room limit, capacity, name)
    /// come before any change and in the memory core's order.
    pub async fn join(&self, a: &JoinArgs<'_>) -> Result<JoinResult, StoreError> {
        const ACTION: &str = "join";
        let mut invocation = self.scripts.join.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(a.member)
            .arg(a.room)
            .arg(&a.at.node)
            .arg(&a.at.conn)
            .arg(a.name.unwrap_or(""))
            .arg(a.capacity)
            .arg(a.max_rooms)
            .arg(a.source)
            .arg(a.reap_grace_ms.map_or_else(String::new, |g| g.to_string()));
        let mut r = Reader::new(ACTION, self.call(&invocation, ACTION).await?)?;
        Ok(match r.text("outcome")?.as_str() {
            "joined" => JoinResult::Joined {
                seq: r.number("seq")?,
                existing: peers(r.array("existing")?)?,
                left: r.opt_array("left")?.map(gone).transpose()?,
            },
            "already" => JoinResult::AlreadyMember {
                peers: peers(r.array("peers")?)?,
            },
            "full" => JoinResult::Full,
            "name_taken" => JoinResult::NameTaken,
            "member_id_in_use" => JoinResult::MemberIdInUse,
            "too_many_rooms" => JoinResult::TooManyRooms,
            other => return Err(r.unexpected(other)),
        })
    }

    /// Takes the member bound to connection `conn` out of its room. `None`: the connection
    /// is no member's current connection (nothing changed).
    pub async fn leave(&self, conn: &str) -> Result<Option<Gone>, StoreError> {
        const ACTION: &str = "leave";
        let mut invocation = self.scripts.leave.prepare_invoke();
        invocation.arg(&self.prefix).arg(conn);
        let mut r = Reader::new(ACTION, self.call(&invocation, ACTION).await?)?;
        if r.is_empty() {
            return Ok(None);
        }
        gone(r).map(Some)
    }

    /// Checks that the member bound to `conn` may reach `to`, and where it is. With `link`,
    /// also records on the target that the sender linked to it (replacing the sender's
    /// older link of the same stream kind, which then moves to the end).
    pub async fn route(
        &self,
        conn: &str,
        to: RouteTarget<'_>,
        link: Option<&LinkArgs<'_>>,
    ) -> Result<RouteResult, StoreError> {
        const ACTION: &str = "route";
        let (kind, target) = match to {
            RouteTarget::Member(m) => ("member", m),
            RouteTarget::Conn(c) => ("conn", c),
        };
        let mut invocation = self.scripts.route.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(conn)
            .arg(kind)
            .arg(target)
            .arg(link.map_or("", |l| l.connector))
            .arg(link.map_or("", |l| l.stream))
            .arg(link.map_or(0, |l| l.max_links))
            .arg(if link.is_some() { "1" } else { "0" });
        let mut r = Reader::new(ACTION, self.call(&invocation, ACTION).await?)?;
        Ok(match r.text("outcome")?.as_str() {
            "routed" => RouteResult::Routed {
                sender: r.text("sender")?,
                target: Address {
                    node: r.text("target node")?,
                    conn: r.text("target conn")?,
                },
                room: r.text("room")?,
                target_member: r.text("target member")?,
                target_connector: Some(r.text("target connector")?).filter(|c| !c.is_empty()),
            },
            "not_joined" => RouteResult::NotJoined,
            "unknown_target" => RouteResult::UnknownTarget,
            "other_room" => RouteResult::OtherRoom,
            "target_away" => RouteResult::TargetAway,
            "too_many_links" => RouteResult::TooManyLinks,
            other => return Err(r.unexpected(other)),
        })
    }

    /// The connection `conn` dropped: its member stays in its room, away, until
    /// `deadline_ms` (ms since the Unix epoch) unless it rebinds. Returns the member and its
    /// room, or `None` when `conn` is no member's current connection (never joined, or a
    /// stale drop after a rebind).
    pub async fn away(
        &self,
        conn: &str,
        deadline_ms: u64,
    ) -> Result<Option<(String, String)>, StoreError> {
        const ACTION: &str = "away";
        let mut invocation = self.scripts.away.prepare_invoke();
        invocation.arg(&self.prefix).arg(conn).arg(deadline_ms);
        let mut r = Reader::new(ACTION, self.call(&invocation, ACTION).await?)?;
        if r.is_empty() {
            return Ok(None);
        }
        Ok(Some((r.text("member")?, r.text("room")?)))
    }

    /// Removes up to `limit` away members whose grace ended by `now_ms`. Any node may call
    /// this; each expired member is returned by exactly one call, whichever node makes it.
    pub async fn expire(&self, now_ms: u64, limit: usize) -> Result<Vec<Gone>, StoreError> {
        const ACTION: &str = "expire";
        let mut invocation = self.scripts.expire.prepare_invoke();
        invocation.arg(&self.prefix).arg(now_ms).arg(limit);
        Reader::new(ACTION, self.call(&invocation, ACTION).await?)?.map_arrays(gone)
    }

    /// Binds an existing member to a new connection (a reconnect, possibly on another
    /// node), ending its grace period, and sorts out its links: those whose peer is still
    /// the same member of the room are kept, the others are dropped and reported `gone`.
    pub async fn rebind(&self, a: &RebindArgs<'_>) -> Result<RebindResult, StoreError> {
        const ACTION: &str = "rebind";
        let mut invocation = self.scripts.rebind.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(a.member)
            .arg(a.room)
            .arg(a.name.unwrap_or(""))
            .arg(&a.at.node)
            .arg(&a.at.conn)
            .arg(a.source);
        let mut r = Reader::new(ACTION, self.call(&invocation, ACTION).await?)?;
        Ok(match r.text("outcome")?.as_str() {
            "rebound" => RebindResult::Rebound {
                room: a.room.to_owned(),
                previous: {
                    let mut p = r.array("previous")?;
                    if p.is_empty() {
                        None
                    } else {
                        Some(Address {
                            node: p.text("previous node")?,
                            conn: p.text("previous conn")?,
                        })
                    }
                },
                unlinked: peers(r.array("unlinked")?)?,
                linked: linked(r.array("linked")?)?,
                gone: {
                    let mut g = r.array("gone")?;
                    let mut out = Vec::new();
                    while !g.is_empty() {
                        out.push(g.text("gone peer conn")?);
                    }
                    out
                },
                last_conn: r.text("last conn")?,
            },
            "unknown" => RebindResult::Unknown,
            "mismatch" => RebindResult::Mismatch,
            "conn_busy" => RebindResult::ConnBusy,
            "live" => RebindResult::Live,
            other => return Err(r.unexpected(other)),
        })
    }

    /// Deals with the live members reached through `node`, which is dead: with a grace
    /// (`grace_ms` above 0) each becomes away until `now_ms + grace_ms`, else each is
    /// removed. Either way their connections leave the index. Each member is reported by
    /// exactly one call; members already away keep their own deadline.
    pub async fn reap(
        &self,
        node: &str,
        now_ms: u64,
        grace_ms: u64,
    ) -> Result<Vec<Reaped>, StoreError> {
        const ACTION: &str = "reap";
        let mut invocation = self.scripts.reap.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(node)
            .arg(now_ms)
            .arg(grace_ms);
        Reader::new(ACTION, self.call(&invocation, ACTION).await?)?.map_arrays(
            |mut item| match item.text("kind")?.as_str() {
                "away" => Ok(Reaped::Away {
                    member: item.text("member")?,
                    room: item.text("room")?,
                }),
                "left" => Ok(Reaped::Left(gone(item.array("departure")?)?)),
                other => Err(item.unexpected(other)),
            },
        )
    }

    /// Puts back a live member this node still serves, with its original join `seq` (its
    /// epoch and place in the join order), name and source, after Redis lost its state.
    pub async fn restore(
        &self,
        member: &str,
        room: &str,
        at: &Address,
        name: Option<&str>,
        seq: u64,
        source: &str,
    ) -> Result<Restored, StoreError> {
        const ACTION: &str = "restore";
        let mut invocation = self.scripts.restore.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(member)
            .arg(room)
            .arg(&at.node)
            .arg(&at.conn)
            .arg(name.unwrap_or(""))
            .arg(seq)
            .arg(source);
        let reply = self.call(&invocation, ACTION).await?;
        match text_of(reply).as_deref() {
            Some("restored") => Ok(Restored::Restored),
            Some("present") => Ok(Restored::Present),
            Some("name_taken") => Ok(Restored::NameTaken),
            other => Err(StoreError::Reply {
                action: ACTION,
                detail: format!("outcome {other:?}"),
            }),
        }
    }

    /// Whether a member of `room` uses display name `name` (an empty name is no name).
    pub async fn name_taken(&self, room: &str, name: &str) -> Result<bool, StoreError> {
        if name.is_empty() {
            return Ok(false);
        }
        redis::cmd("HEXISTS")
            .arg(self.key(&["n", room]))
            .arg(name)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|source| StoreError::Redis {
                action: "name_taken",
                source,
            })
    }

    /// The room and member key of the member bound to `conn`, if any.
    pub async fn membership(&self, conn: &str) -> Result<Option<(String, String)>, StoreError> {
        const ACTION: &str = "membership";
        let mut invocation = self.scripts.membership.prepare_invoke();
        invocation.arg(&self.prefix).arg(conn);
        let mut r = Reader::new(ACTION, self.call(&invocation, ACTION).await?)?;
        if r.is_empty() {
            return Ok(None);
        }
        Ok(Some((r.text("room")?, r.text("member")?)))
    }

    /// Every room (sorted by name) with its members in join order, for operators.
    ///
    /// Read in three pipelined round trips rather than one script: a script over every
    /// room would stall Redis, and so every node's relays, for as long as it runs, while an
    /// operators' view can live with a member that left between two reads (it is skipped).
    pub async fn snapshot(&self) -> Result<Vec<RoomSnap>, StoreError> {
        let fail = |source| StoreError::Redis {
            action: "snapshot",
            source,
        };
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key(&["rooms"]))
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        names.sort();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("ZRANGE")
                .arg(self.key(&["r", name]))
                .arg(0)
                .arg(-1);
        }
        let keys: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(fail)?;
        let mut pipe = redis::pipe();
        for member in keys.iter().flatten() {
            pipe.cmd("HMGET").arg(self.key(&["m", member])).arg(&[
                "room",
                "name",
                "node",
                "conn",
                "live",
                "joined_at",
            ]);
        }
        type Fields = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<u64>,
        );
        let fields: Vec<Fields> = pipe.query_async(&mut conn).await.map_err(fail)?;
        let mut fields = fields.into_iter();
        let mut rooms = Vec::with_capacity(names.len());
        for (name, keys) in names.into_iter().zip(keys) {
            let mut members = Vec::with_capacity(keys.len());
            for member in keys {
                let Some((room, mname, node, conn, live, joined)) = fields.next() else {
                    break;
                };
                // Left (or moved) between the reads.
                if room.as_deref() != Some(name.as_str()) {
                    continue;
                }
                members.push(MemberSnap {
                    member,
                    name: mname.filter(|n| !n.is_empty()),
                    node: node.unwrap_or_default(),
                    conn: conn.unwrap_or_default(),
                    away: live.as_deref() != Some("1"),
                    joined_at_ms: joined.unwrap_or(0),
                });
            }
            if !members.is_empty() {
                rooms.push(RoomSnap { name, members });
            }
        }
        Ok(rooms)
    }

    /// Number of rooms and members now.
    pub async fn sizes(&self) -> Result<(usize, usize), StoreError> {
        let (rooms, members): (usize, Option<usize>) = redis::pipe()
            .atomic()
            .cmd("SCARD")
            .arg(self.key(&["rooms"]))
            .cmd("GET")
            .arg(self.key(&["count"]))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|source| StoreError::Redis {
                action: "sizes",
                source,
            })?;
        Ok((rooms, members.unwrap_or(0)))
    }

    /// One of this realm's keys (see the layout in `scripts/common.lua`).
    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Runs one script invocation on this node's connection.
    async fn call(
        &self,
        invocation: &ScriptInvocation<'_>,
        action: &'static str,
    ) -> Result<Value, StoreError> {
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|source| StoreError::Redis { action, source })
    }
}

/// Reads a departure: `{member, room, last_conn, {peer_at...}, {linked...}}`.
fn gone(mut r: Reader) -> Result<Gone, StoreError> {
    Ok(Gone {
        member: r.text("member")?,
        room: r.text("room")?,
        last_conn: r.text("last_conn")?,
        remaining: peers(r.array("remaining")?)?,
        linked: linked(r.array("linked")?)?,
    })
}

/// Reads peers: each `{member, node, conn}` (live) or `{member}` (away).
fn peers(r: Reader) -> Result<Vec<PeerAt>, StoreError> {
    r.map_arrays(|mut p| {
        let member = p.text("peer")?;
        let at = if p.is_empty() {
            None
        } else {
            Some(Address {
                node: p.text("peer node")?,
                conn: p.text("peer conn")?,
            })
        };
        Ok(PeerAt { member, at })
    })
}

/// Reads linked peers: each `{member, node, conn, connector}`.
fn linked(r: Reader) -> Result<Vec<LinkedAt>, StoreError> {
    r.map_arrays(|mut l| {
        Ok(LinkedAt {
            member: l.text("linked peer")?,
            at: Address {
                node: l.text("linked node")?,
                conn: l.text("linked conn")?,
            },
            connector: l.text("connector")?,
        })
    })
}

/// A script reply (an array, possibly nested) read item by item; a missing item or one of
/// the wrong type is an error naming the action and the item, never a panic.
struct Reader {
    action: &'static str,
    items: std::iter::Peekable<std::vec::IntoIter<Value>>,
}

impl Reader {
    fn new(action: &'static str, reply: Value) -> Result<Self, StoreError> {
        let items = match reply {
            Value::Array(items) => items,
            // Lua's empty table comes back as an empty array, but be lenient with nil.
            Value::Nil => Vec::new(),
            other => {
                return Err(StoreError::Reply {
                    action,
                    detail: format!("expected an array, got {other:?}"),
                })
            }
        };
        Ok(Self {
            action,
            items: items.into_iter().peekable(),
        })
    }

    fn is_empty(&mut self) -> bool {
        self.items.peek().is_none()
    }

    fn error(&self, detail: String) -> StoreError {
        StoreError::Reply {
            action: self.action,
            detail,
        }
    }

    fn unexpected(&self, outcome: &str) -> StoreError {
        self.error(format!("unknown outcome {outcome:?}"))
    }

    fn text(&mut self, what: &str) -> Result<String, StoreError> {
        match self.items.next() {
            Some(v) => text_of(v).ok_or_else(|| self.error(format!("{what} is not text"))),
            None => Err(self.error(format!("{what} missing"))),
        }
    }

    fn number(&mut self, what: &str) -> Result<u64, StoreError> {
        let text = self.text(what)?;
        text.parse()
            .map_err(|_| self.error(format!("{what} {text:?} is not a number")))
    }

    fn array(&mut self, what: &str) -> Result<Reader, StoreError> {
        match self.items.next() {
            Some(v @ Value::Array(_)) => Reader::new(self.action, v),
            Some(_) => Err(self.error(format!("{what} is not an array"))),
            None => Err(self.error(format!("{what} missing"))),
        }
    }

    /// The next item, an array, if there is one (an optional last item).
    fn opt_array(&mut self, what: &str) -> Result<Option<Reader>, StoreError> {
        if self.is_empty() {
            return Ok(None);
        }
        self.array(what).map(Some)
    }

    /// Reads every remaining item as an array, with `f`.
    fn map_arrays<T>(
        mut self,
        mut f: impl FnMut(Reader) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        while !self.is_empty() {
            out.push(f(self.array("item")?)?);
        }
        Ok(out)
    }
}

/// A text-like reply item (Lua numbers arrive as integers).
fn text_of(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}
