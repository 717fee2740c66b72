//! Room state in this process's memory: the default, single-node store.
//!
//! The core's rules ([`crate::core::Rooms`]) run over this table. All of a realm's state sits
//! behind one mutex that is held only for the few map operations of one core call, never
//! across an `.await` or a send, so a slow client can never hold it. `parking_lot`'s mutex
//! does not poison: a panic in one call cannot wedge the state for everyone else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::core::ConnId;

/// One realm's rooms and members, in memory.
pub struct MemoryStore<H> {
    table: Mutex<Table<H>>,
}

impl<H> Default for MemoryStore<H> {
    fn default() -> Self {
        Self {
            table: Mutex::new(Table {
                rooms: HashMap::new(),
                members: HashMap::new(),
                conns: HashMap::default(),
                away: BTreeMap::new(),
                away_seq: 0,
            }),
        }
    }
}

impl<H> MemoryStore<H> {
    /// Runs `f` with exclusive access to the table. Keep `f` short: no I/O, no sends.
    pub fn transact<R>(&self, f: impl FnOnce(&mut Table<H>) -> R) -> R {
        f(&mut self.table.lock())
    }
}

/// The rooms and members of one realm, with the primitive operations the core builds on.
///
/// Invariants kept here: every member is listed in exactly its room's member list; a room
/// with no members does not exist; `conns` maps exactly the bound connections.
pub struct Table<H> {
    rooms: HashMap<Arc<str>, Room>,
    members: HashMap<Arc<str>, Member<H>>,
    /// Keyed by socket ids, which the server draws at random: hashed with foldhash rather
    /// than SipHash (a relay looks the sender up here on every message), since clients
    /// cannot choose these keys.
    conns: HashMap<ConnId, Arc<str>, foldhash::fast::RandomState>,
    /// Rooms whose members are all away, by when they became so (oldest first): the rooms
    /// that may give way when a live join needs a room slot.
    away: BTreeMap<u64, Arc<str>>,
    away_seq: u64,
}

/// A room: its members' keys in the order they joined (peers are listed in that order).
#[derive(Debug, Default)]
pub struct Room {
    /// Member keys, oldest first.
    pub members: Vec<Arc<str>>,
    /// Members bound to a connection now.
    connected: usize,
    /// Its key in [`Table`]'s away index while every member is away.
    away_since: Option<u64>,
}

/// A member: where it is and how to reach it.
#[derive(Debug)]
pub struct Member<H> {
    /// The room it is in.
    pub room: Arc<str>,
    /// The connection it is currently bound to, if any (none while it is away).
    pub conn: Option<ConnId>,
    /// How the adapter sends to that connection.
    pub handle: Option<H>,
    /// A display name, for protocols that require names to be unique within a room.
    pub name: Option<Arc<str>>,
    /// When it joined, for operators.
    pub joined_at: SystemTime,
    /// Distinguishes this member from a later one that reuses its key.
    pub epoch: u64,
    /// The last connection it was bound to (its wire id while it is away or gone).
    pub last_conn: ConnId,
    /// Bumped on every disconnect and rebind, so a grace timer can tell whether the
    /// absence it was started for is still the current one.
    pub absence: u64,
    /// Peers that set up a link *to* this member: their key, epoch and their connector.
    pub links: Vec<Link>,
}

/// A media link that a peer opened to a member, recorded on that member.
#[derive(Debug, Clone)]
pub struct Link {
    /// The peer's member key.
    pub peer: Arc<str>,
    /// The peer's epoch when the link was made (a reused key is another peer).
    pub peer_epoch: u64,
    /// The peer's connection when the link was made (how the member's client knows it).
    pub peer_conn: ConnId,
    /// The peer's own connector id for this link (opaque to the gateway).
    pub connector: Arc<str>,
    /// The stream kind (opaque to the gateway).
    pub stream: Arc<str>,
}

impl<H> Table<H> {
    /// The member bound to `conn`, with its key.
    pub fn member_by_conn(&self, conn: ConnId) -> Option<(&Arc<str>, &Member<H>)> {
        let key = self.conns.get(&conn)?;
        self.members.get(key).map(|m| (key, m))
    }

    /// The member with key `key`.
    pub fn member(&self, key: &str) -> Option<&Member<H>> {
        self.members.get(key)
    }

    /// The member with key `key`, with its key as stored (shared, not copied).
    pub fn member_entry(&self, key: &str) -> Option<(&Arc<str>, &Member<H>)> {
        self.members.get_key_value(key)
    }

    /// The room named `name`.
    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// The room named `name`, with its name as stored (shared, not copied).
    pub fn room_entry(&self, name: &str) -> Option<(&Arc<str>, &Room)> {
        self.rooms.get_key_value(name)
    }

    /// The member with key `key`, to change it. Use [`Table::bind`] and [`Table::unbind`]
    /// for its connection, which is indexed.
    pub fn member_mut(&mut self, key: &str) -> Option<&mut Member<H>> {
        self.members.get_mut(key)
    }

    /// Binds a member to a (new) connection. Returns the connection it was bound to before.
    pub fn bind(&mut self, key: &Arc<str>, conn: ConnId, handle: H) -> Option<ConnId> {
        let member = self.members.get_mut(key)?;
        let old = member.conn.replace(conn);
        member.handle = Some(handle);
        member.last_conn = conn;
        let room = member.room.clone();
        match old {
            Some(old) => {
                self.conns.remove(&old);
            }
            None => self.count_connected(&room, true),
        }
        self.conns.insert(conn, key.clone());
        old
    }

    /// Unbinds a member from its connection (it stays in its room, away).
    pub fn unbind(&mut self, key: &str) {
        if let Some(member) = self.members.get_mut(key) {
            member.handle = None;
            if let Some(conn) = member.conn.take() {
                self.conns.remove(&conn);
                let room = member.room.clone();
                self.count_connected(&room, false);
            }
        }
    }

    /// Counts a member of `room` in (`up`) or out of its connected members, keeping the
    /// away index: a room is in it exactly while it has members and none is connected.
    fn count_connected(&mut self, room: &Arc<str>, up: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.connected = if up {
            r.connected + 1
        } else {
            r.connected.saturating_sub(1)
        };
        match (r.connected == 0 && !r.members.is_empty(), r.away_since) {
            (true, None) => {
                self.away_seq += 1;
                r.away_since = Some(self.away_seq);
                self.away.insert(self.away_seq, room.clone());
            }
            (false, Some(since)) => {
                r.away_since = None;
                self.away.remove(&since);
            }
            _ => {}
        }
    }

    /// The room whose members have all been away the longest.
    pub fn oldest_away_room(&self) -> Option<Arc<str>> {
        self.away.values().next().cloned()
    }

    /// Adds a member to its room, creating the room if needed. The key must be free.
    pub fn insert(&mut self, key: Arc<str>, member: Member<H>) {
        debug_assert!(!self.members.contains_key(&key));
        let room = member.room.clone();
        let connected = member.conn.is_some();
        if let Some(conn) = member.conn {
            self.conns.insert(conn, key.clone());
        }
        self.rooms
            .entry(room.clone())
            .or_default()
            .members
            .push(key.clone());
        self.members.insert(key, member);
        if connected {
            self.count_connected(&room, true);
        }
    }

    /// Removes a member, and its room when it was the last one.
    pub fn remove(&mut self, key: &str) -> Option<Member<H>> {
        let member = self.members.remove(key)?;
        if let Some(room) = self.rooms.get_mut(&member.room) {
            room.members.retain(|k| &**k != key);
        }
        if let Some(conn) = member.conn {
            self.conns.remove(&conn);
            self.count_connected(&member.room, false);
        }
        if self
            .rooms
            .get(&member.room)
            .is_some_and(|r| r.members.is_empty())
        {
            if let Some(since) = self.rooms.remove(&member.room).and_then(|r| r.away_since) {
                self.away.remove(&since);
            }
        }
        Some(member)
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Every room name with its members, for operators.
    pub fn rooms(&self) -> impl Iterator<Item = (&Arc<str>, &Room)> {
        self.rooms.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(room: &str) -> Member<()> {
        Member {
            room: room.into(),
            conn: Some(ConnId::new()),
            handle: Some(()),
            name: None,
            joined_at: SystemTime::now(),
            epoch: 0,
            last_conn: ConnId::new(),
            absence: 0,
            links: Vec::new(),
        }
    }

    #[test]
    fn rooms_whose_members_are_all_away_are_indexed_oldest_first() {
        let store = MemoryStore::<()>::default();
        store.transact(|t| {
            let (a, b, c) = (member("r1"), member("r1"), member("r2"));
            let (conn_a, conn_b) = (a.conn, b.conn);
            t.insert("a".into(), a);
            t.insert("b".into(), b);
            t.insert("c".into(), c);
            assert_eq!(t.oldest_away_room(), None);
            t.unbind("c");
            t.unbind("a");
            assert_eq!(t.oldest_away_room().as_deref(), Some("r2"));
            t.unbind("b");
            t.remove("c");
            assert_eq!(t.oldest_away_room().as_deref(), Some("r1"), "r2 is gone");
            if let Some(conn) = conn_b {
                t.bind(&"b".into(), conn, ());
            }
            assert_eq!(t.oldest_away_room(), None, "b came back");
            t.unbind("b");
            t.remove("b");
            assert_eq!(
                t.oldest_away_room().as_deref(),
                Some("r1"),
                "a is still away"
            );
            t.remove("a");
            assert_eq!(t.oldest_away_room(), None);
            assert!(t.away.is_empty() && t.rooms.is_empty());
            let _ = conn_a;
        });
    }

    #[test]
    fn last_member_out_removes_the_room() {
        let store = MemoryStore::<()>::default();
        store.transact(|t| {
            t.insert("a".into(), member("r"));
            t.insert("b".into(), member("r"));
            assert_eq!(t.room_count(), 1);
            t.remove("a");
            assert_eq!(t.room("r").map(|r| r.members.len()), Some(1));
            t.remove("b");
            assert_eq!(t.room_count(), 0);
            assert_eq!(t.member_count(), 0);
            assert!(t.conns.is_empty());
        });
    }
}
