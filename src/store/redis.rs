//! Room state in Redis, for several gateway nodes sharing every room (cluster mode).
//!
//! **Not wired into the gateway yet**: this is the foundation of issue 10. The gateway still
//! runs on [`super::MemoryStore`]; a set `cluster.redis_url` is refused at start.
//!
//! Every rule that reads then writes shared state is one Lua script (in `scripts/`, beside
//! this file), so two nodes racing cannot both win: a join checks capacity and the unique name
//! and takes its place in the join order in one step; a leave, a rebind, an away mark, a grace
//! expiry and the removal of a dead node's members are each one step too, and each removal is
//! reported to exactly one caller. A member is addressed by [`Address`] (node + connection),
//! never by a socket handle, so any node can tell where to deliver.
//!
//! One `RedisStore` serves one realm (one protocol's rooms); its keys sit under
//! `<cluster.name>:<realm>:` (the layout is described in `scripts/common.lua`).

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script, ScriptInvocation, Value};

/// Where a member is reached: the node that holds its connection, and the connection there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The node id (see `cluster::NodeId`).
    pub node: String,
    /// The connection (socket) id on that node.
    pub conn: String,
}

/// What a join decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined; `peers` were already in the room, in join order. `seq` orders this join among
    /// all joins of the realm (kept so the membership can be restored after a Redis restart).
    Joined {
        /// The join's place in the realm-wide order.
        seq: u64,
        /// The members already in the room, oldest first.
        peers: Vec<String>,
    },
    /// The room holds `capacity` members already.
    Full,
    /// Another member of the room has that name.
    NameTaken,
    /// This member id is already in a room.
    AlreadyMember,
}

/// A member removed, and who is left in its room (oldest first) to be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The member that left.
    pub member: String,
    /// Its room.
    pub room: String,
    /// The members still in the room.
    pub peers: Vec<String>,
}

/// What a rebind found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebindOutcome {
    /// The member is now reached at the new address; `previous` is where it was (to close an
    /// older live connection), `was_away` whether it was in its grace period.
    Rebound {
        /// The member's room.
        room: String,
        /// The address it had.
        previous: Address,
        /// It had dropped and was waiting for a reconnect.
        was_away: bool,
    },
    /// No such member (never joined, left, or its grace ended).
    Unknown,
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
    Left(Departure),
}

/// What restoring one member after a Redis restart did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Put back with its original place in the join order.
    Restored,
    /// Already there (restored before, or never lost).
    Present,
    /// Another member took its name meanwhile.
    NameTaken,
}

/// An error talking to Redis, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("redis store, {action}: {source}")]
pub struct StoreError {
    action: &'static str,
    #[source]
    source: redis::RedisError,
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
    away: Script,
    rebind: Script,
    expire: Script,
    reap: Script,
    restore: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            join: with_common(include_str!("scripts/join.lua")),
            leave: with_common(include_str!("scripts/leave.lua")),
            away: with_common(include_str!("scripts/away.lua")),
            rebind: with_common(include_str!("scripts/rebind.lua")),
            expire: with_common(include_str!("scripts/expire.lua")),
            reap: with_common(include_str!("scripts/reap.lua")),
            restore: with_common(include_str!("scripts/restore.lua")),
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

    /// Puts `member` (reached at `at`) into `room`, if the room has space (`capacity` 0 means
    /// no limit) and, when `name` is given, no other member of the room has it.
    pub async fn join(
        &self,
        member: &str,
        room: &str,
        at: &Address,
        name: Option<&str>,
        capacity: usize,
    ) -> Result<JoinOutcome, StoreError> {
        let reply: Vec<Value> = self
            .call(
                self.placement(&self.scripts.join, member, room, at, name)
                    .arg(capacity),
                "join",
            )
            .await?;
        let mut items = reply.into_iter();
        let outcome = match text(items.next()).as_deref() {
            Some("joined") => JoinOutcome::Joined {
                seq: number(items.next()),
                peers: items.filter_map(|v| text(Some(v))).collect(),
            },
            Some("full") => JoinOutcome::Full,
            Some("name_taken") => JoinOutcome::NameTaken,
            _ => JoinOutcome::AlreadyMember,
        };
        Ok(outcome)
    }

    /// Removes `member` if it is still reached through connection `conn` (`None`: whatever
    /// its connection). `None` back means there was nothing to remove.
    pub async fn leave(
        &self,
        member: &str,
        conn: Option<&str>,
    ) -> Result<Option<Departure>, StoreError> {
        let reply: Vec<Value> = self
            .call(
                self.scripts
                    .leave
                    .arg(&self.prefix)
                    .arg(member)
                    .arg(conn.unwrap_or("")),
                "leave",
            )
            .await?;
        let mut items = reply.into_iter();
        Ok(text(items.next()).map(|room| Departure {
            member: member.to_owned(),
            room,
            peers: items.filter_map(|v| text(Some(v))).collect(),
        }))
    }

    /// Marks `member` away until `deadline_ms` (ms since the Unix epoch) if `conn` is still
    /// its connection; `false` when it was not (a stale drop after a rebind).
    pub async fn away(
        &self,
        member: &str,
        conn: &str,
        deadline_ms: u64,
    ) -> Result<bool, StoreError> {
        let marked: i64 = self
            .call(
                self.scripts
                    .away
                    .arg(&self.prefix)
                    .arg(member)
                    .arg(conn)
                    .arg(deadline_ms),
                "away",
            )
            .await?;
        Ok(marked == 1)
    }

    /// Makes `member` reached at `at` from now on (a reconnect, possibly on another node).
    pub async fn rebind(&self, member: &str, at: &Address) -> Result<RebindOutcome, StoreError> {
        let reply: Vec<Value> = self
            .call(
                self.scripts
                    .rebind
                    .arg(&self.prefix)
                    .arg(member)
                    .arg(&at.node)
                    .arg(&at.conn),
                "rebind",
            )
            .await?;
        let mut items = reply.into_iter().map(|v| text(Some(v)).unwrap_or_default());
        if items.next().as_deref() != Some("rebound") {
            return Ok(RebindOutcome::Unknown);
        }
        let room = items.next().unwrap_or_default();
        let node = items.next().unwrap_or_default();
        let conn = items.next().unwrap_or_default();
        let was_away = items.next().as_deref() == Some("away");
        Ok(RebindOutcome::Rebound {
            room,
            previous: Address { node, conn },
            was_away,
        })
    }

    /// Removes up to `limit` members whose grace ended by `now_ms`. Any node may call this;
    /// each expired member is returned by exactly one call, whichever node makes it.
    pub async fn expire(&self, now_ms: u64, limit: usize) -> Result<Vec<Departure>, StoreError> {
        let reply: Vec<Value> = self
            .call(
                self.scripts.expire.arg(&self.prefix).arg(now_ms).arg(limit),
                "expire",
            )
            .await?;
        let mut items = reply.into_iter();
        let mut out = Vec::new();
        while let Some(member) = text(items.next()) {
            out.push(departure(member, &mut items));
        }
        Ok(out)
    }

    /// Deals with the members reached through `node`, which is dead: with `grace_ms` > 0
    /// each live one becomes away until `now_ms + grace_ms`, else each is removed. Each
    /// member is reported by exactly one call.
    pub async fn reap(
        &self,
        node: &str,
        now_ms: u64,
        grace_ms: u64,
    ) -> Result<Vec<Reaped>, StoreError> {
        let reply: Vec<Value> = self
            .call(
                self.scripts
                    .reap
                    .arg(&self.prefix)
                    .arg(node)
                    .arg(now_ms)
                    .arg(grace_ms),
                "reap",
            )
            .await?;
        let mut items = reply.into_iter();
        let mut out = Vec::new();
        while let Some(kind) = text(items.next()) {
            let member = text(items.next()).unwrap_or_default();
            if kind == "away" {
                let room = text(items.next()).unwrap_or_default();
                let _count = items.next();
                out.push(Reaped::Away { member, room });
            } else {
                out.push(Reaped::Left(departure(member, &mut items)));
            }
        }
        Ok(out)
    }

    /// Puts back a member this node still serves, with its original join `seq`, after Redis
    /// lost its state.
    pub async fn restore(
        &self,
        member: &str,
        room: &str,
        at: &Address,
        name: Option<&str>,
        seq: u64,
    ) -> Result<Restored, StoreError> {
        let reply: String = self
            .call(
                self.placement(&self.scripts.restore, member, room, at, name)
                    .arg(seq),
                "restore",
            )
            .await?;
        Ok(match reply.as_str() {
            "restored" => Restored::Restored,
            "name_taken" => Restored::NameTaken,
            _ => Restored::Present,
        })
    }

    /// A script invocation with the arguments that place a member: prefix, member, room,
    /// node, connection, name (join and restore take these, then one more).
    fn placement<'a>(
        &self,
        script: &'a Script,
        member: &str,
        room: &str,
        at: &Address,
        name: Option<&str>,
    ) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(member)
            .arg(room)
            .arg(&at.node)
            .arg(&at.conn)
            .arg(name.unwrap_or(""));
        invocation
    }

    /// Runs one script invocation on this node's connection.
    async fn call<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        action: &'static str,
    ) -> Result<T, StoreError> {
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|source| StoreError { action, source })
    }

    /// The members of `room`, oldest first.
    pub async fn members(&self, room: &str) -> Result<Vec<String>, StoreError> {
        redis::cmd("ZRANGE")
            .arg(format!("{}:r:{room}", self.prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|source| StoreError {
                action: "members",
                source,
            })
    }

    /// Where `member` is reached, if it is in a room.
    pub async fn address(&self, member: &str) -> Result<Option<Address>, StoreError> {
        let (node, conn): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(format!("{}:m:{member}", self.prefix))
            .arg("node")
            .arg("conn")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|source| StoreError {
                action: "address",
                source,
            })?;
        Ok(node.zip(conn).map(|(node, conn)| Address { node, conn }))
    }
}

/// Reads "room, count, peers..." of one departure from a flat script reply.
fn departure(member: String, items: &mut impl Iterator<Item = Value>) -> Departure {
    let room = text(items.next()).unwrap_or_default();
    let count = number(items.next());
    let peers = items
        .take(usize::try_from(count).unwrap_or(0))
        .filter_map(|v| text(Some(v)))
        .collect();
    Departure {
        member,
        room,
        peers,
    }
}

fn text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn number(v: Option<Value>) -> u64 {
    match v {
        Some(Value::Int(i)) => u64::try_from(i).unwrap_or(0),
        other => text(other).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}
