//! Joining, leaving and routing inside one realm (the rooms of one protocol).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::core::{ConnId, Handle, Label};
use crate::store::memory::{Link, Member, MemoryStore, Table};

/// The rooms of one realm and the rules that govern them.
///
/// `H` is the adapter's way of reaching a connection (a socket handle); the core stores it
/// and hands it back in outcomes, so the adapter can send without a second lookup.
pub struct Rooms<H> {
    pub(super) store: MemoryStore<H>,
}

/// A request to join a room.
pub struct Join<H> {
    /// Room name.
    pub room: Arc<str>,
    /// Stable member key, unique within the realm.
    pub member: Arc<str>,
    /// The connection asking.
    pub conn: ConnId,
    /// How to reach that connection.
    pub handle: H,
    /// Display name; when set, it must be unique within the room.
    pub name: Option<Arc<str>>,
    /// Most members the room may hold; 0 for no limit.
    pub capacity: usize,
    /// Most rooms the realm may hold; 0 for no limit.
    pub max_rooms: usize,
}

/// Another member of a room, as the adapter needs it to tell them something.
#[derive(Debug, Clone)]
pub struct Peer<H> {
    /// Its member key.
    pub member: Arc<str>,
    /// Its connection, if it has one now.
    pub handle: Option<H>,
    /// Its label (see [`Label`]).
    pub label: Label,
}

/// What a successful join did.
#[derive(Debug)]
pub enum JoinOutcome<H> {
    /// The connection is now a member.
    Joined(Joined<H>),
    /// The connection was already a member of that room; nothing changed.
    AlreadyMember {
        /// The other members, oldest first.
        peers: Vec<Peer<H>>,
    },
}

/// The details of a fresh join.
#[derive(Debug)]
pub struct Joined<H> {
    /// The members that were there before, oldest first.
    pub existing: Vec<Peer<H>>,
    /// The room the connection had to leave to join this one, if any.
    pub left: Option<Departure<H>>,
}

/// A member that left a room.
#[derive(Debug)]
pub struct Departure<H> {
    /// The room it left.
    pub room: Arc<str>,
    /// Who left.
    pub member: Arc<str>,
    /// The last connection it had (how its peers knew it).
    pub last_conn: Arc<str>,
    /// Who is still there, oldest first (empty: the room is gone).
    pub remaining: Vec<Peer<H>>,
    /// Connected peers that had linked to it, with their own connector for that link.
    pub linked: Vec<LinkedPeer<H>>,
    /// The label of the member that left (see [`Label`]).
    pub label: Label,
}

/// A connected peer with a link to some member.
#[derive(Debug, Clone)]
pub struct LinkedPeer<H> {
    /// The peer's member key.
    pub member: Arc<str>,
    /// The peer's connection.
    pub handle: H,
    /// The peer's own connector id for the link.
    pub connector: Arc<str>,
    /// The peer's label (see [`Label`]).
    pub label: Label,
}

/// Who a relay is for.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A member, by key.
    Member(&'a str),
    /// Whoever is bound to this connection.
    Conn(ConnId),
}

/// A link to record on the target of a relay: the sender's connector and stream kind.
#[derive(Debug, Clone)]
pub struct LinkNote {
    /// The sender's connector id.
    pub connector: Arc<str>,
    /// The stream kind.
    pub stream: Arc<str>,
    /// Most links the target may hold (a new one beyond it is refused); 0 for no limit.
    pub max_links: usize,
}

/// Why a join was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The room holds its maximum number of members.
    #[error("room is full ({capacity} members)")]
    RoomFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// Another member of the room already uses that name.
    #[error("name already taken in this room")]
    NameTaken,
    /// The member key belongs to another live connection.
    #[error("member id belongs to another connection")]
    MemberIdInUse,
    /// Opening the room would exceed the realm's room limit.
    #[error("too many rooms ({max})")]
    TooManyRooms {
        /// The configured limit.
        max: usize,
    },
    /// The connection closed before the join was handled.
    #[error("the connection is closed")]
    ConnectionClosed,
    /// The shared room state (cluster mode) could not be reached.
    #[error("room state unavailable, try again")]
    Unavailable,
}

impl Refusal {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::RoomFull { .. } => "room_full",
            Refusal::NameTaken => "name_taken",
            Refusal::MemberIdInUse => "member_id_in_use",
            Refusal::TooManyRooms { .. } => "max_rooms",
            Refusal::ConnectionClosed => "connection_closed",
            Refusal::Unavailable => "store_unavailable",
        }
    }
}

/// Why a relay was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The sender is not in any room.
    #[error("sender has not joined a room")]
    NotJoined,
    /// No member has that key.
    #[error("no such member")]
    UnknownTarget,
    /// The target is in another room.
    #[error("target is in another room")]
    OtherRoom,
    /// The target is a member but has no connection right now.
    #[error("target is not connected")]
    TargetAway,
    /// Recording the link would give the target more than its maximum of links.
    #[error("too many links to that member ({max})")]
    TooManyLinks {
        /// The limit.
        max: usize,
    },
    /// The shared room state (cluster mode) could not be reached.
    #[error("room state unavailable")]
    Unavailable,
}

impl RouteError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RouteError::NotJoined => "not_joined",
            RouteError::UnknownTarget => "unknown_target",
            RouteError::OtherRoom => "other_room",
            RouteError::TargetAway => "target_away",
            RouteError::TooManyLinks { .. } => "max_links",
            RouteError::Unavailable => "store_unavailable",
        }
    }
}

/// Where a relay goes.
#[derive(Debug)]
pub struct Route<H> {
    /// The sender's member key (its true identity).
    pub sender: Arc<str>,
    /// The target's connection.
    pub target: H,
    /// The target's member key.
    pub target_member: Arc<str>,
    /// The target's own connector for its latest link to the sender (recorded on the sender
    /// by an earlier relay the other way), if it made one: how the target's client knows the
    /// link, for a protocol whose sender does not name it.
    pub target_connector: Option<Arc<str>>,
    /// The target's label (see [`Label`]).
    pub target_label: Label,
}

/// A room as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomView {
    /// Room name.
    pub name: String,
    /// Members, oldest first.
    pub members: Vec<MemberView>,
}

/// A member as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    /// Member id.
    pub id: String,
    /// Display name, where the protocol has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its current (or last) connection id.
    pub connection: String,
    /// The node that holds its connection (cluster mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `connected`, or `away` during a reconnect grace period.
    pub state: &'static str,
    /// When it joined (RFC 3339).
    pub joined_at: String,
    /// Transport details of its connection, when connected.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnInfo>,
}

/// Transport details of a connection, as an adapter describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnInfo {
    /// Engine.IO protocol version (3 or 4).
    pub engine_io: u8,
    /// `polling` or `websocket`.
    pub transport: &'static str,
}

/// Hands out member epochs, unique for the life of the process.
static EPOCH: AtomicU64 = AtomicU64::new(1);

impl<H> Default for Rooms<H> {
    fn default() -> Self {
        Self {
            store: MemoryStore::default(),
        }
    }
}

impl<H: Handle> Rooms<H> {
    /// An empty realm.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a connection into a room, leaving the room it was in first.
    ///
    /// Checks come before any change, so a refused join leaves the connection where it was.
    pub fn join(&self, req: Join<H>) -> Result<JoinOutcome<H>, Refusal> {
        let outcome = self.store.transact(|t| {
            if !req.handle.is_open() {
                return Err(Refusal::ConnectionClosed);
            }
            if let Some((key, m)) = t.member_by_conn(req.conn) {
                if m.room == req.room && *key == req.member {
                    let peers = peers_except(t, &m.room, key);
                    return Ok(JoinOutcome::AlreadyMember { peers });
                }
            }
            if t.member(&req.member).is_some() {
                // Only reachable with another connection (same connection, same room returned
                // above; same connection, other room: its key is free once it leaves, but a key
                // is never reused across rooms by one connection without leaving).
                if t.member_by_conn(req.conn).map(|(k, _)| k) != Some(&req.member) {
                    return Err(Refusal::MemberIdInUse);
                }
            }
            let opens_room = t.room(&req.room).is_none();
            if opens_room && req.max_rooms > 0 && t.room_count() >= req.max_rooms {
                // Rooms of members that are all away (in a reconnect grace period) give way
                // to a live join, oldest first: dropped connections cannot hold the slots.
                let Some(away) = t.oldest_away_room() else {
                    return Err(Refusal::TooManyRooms { max: req.max_rooms });
                };
                close_away_room(t, &away);
            }
            if let Some(room) = t.room(&req.room) {
                if req.capacity > 0 && room.members.len() >= req.capacity {
                    return Err(Refusal::RoomFull {
                        capacity: req.capacity,
                    });
                }
                if let Some(name) = &req.name {
                    let taken = room.members.iter().any(|k| {
                        t.member(k)
                            .and_then(|m| m.name.as_ref())
                            .is_some_and(|n| n == name)
                    });
                    if taken {
                        return Err(Refusal::NameTaken);
                    }
                }
            }
            let left = leave_in(t, req.conn);
            let existing = t
                .room(&req.room)
                .map(|r| r.members.iter().map(|k| peer(t, k)).collect())
                .unwrap_or_default();
            t.insert(
                req.member,
                Member {
                    room: req.room,
                    conn: Some(req.conn),
                    handle: Some(req.handle),
                    name: req.name,
                    joined_at: SystemTime::now(),
                    epoch: EPOCH.fetch_add(1, Ordering::Relaxed),
                    last_conn: req.conn,
                    absence: 0,
                    links: Vec::new(),
                },
            );
            Ok(JoinOutcome::Joined(Joined { existing, left }))
        });
        outcome
    }

    /// Takes the member bound to `conn` out of its room.
    pub fn leave(&self, conn: ConnId) -> Option<Departure<H>> {
        self.store.transact(|t| leave_in(t, conn))
    }

    /// Checks that `conn` may reach `to`, and returns how. With `link`, also records on the
    /// target that the sender linked to it (replacing an older link of the same stream kind).
    pub fn route(
        &self,
        conn: ConnId,
        to: Target<'_>,
        link: Option<LinkNote>,
    ) -> Result<Route<H>, RouteError> {
        self.store.transact(|t| {
            // One lookup per member on the relay path; the target's entry is looked up again,
            // mutably, only to record a link.
            let (sender, from) = t.member_by_conn(conn).ok_or(RouteError::NotJoined)?;
            let (target_key, target) = match to {
                Target::Member(key) => t.member_entry(key),
                Target::Conn(c) => t.member_by_conn(c),
            }
            .ok_or(RouteError::UnknownTarget)?;
            if target.room != from.room {
                return Err(RouteError::OtherRoom);
            }
            let handle = target.handle.clone().ok_or(RouteError::TargetAway)?;
            let target_connector = from
                .links
                .iter()
                .rev()
                .find(|l| l.peer == *target_key && l.peer_epoch == target.epoch)
                .map(|l| l.connector.clone());
            let (sender, sender_epoch, target_key) =
                (sender.clone(), from.epoch, target_key.clone());
            if let Some(note) = link {
                let target = t.member_mut(&target_key).ok_or(RouteError::UnknownTarget)?;
                target
                    .links
                    .retain(|l| !(l.peer == sender && l.stream == note.stream));
                if note.max_links > 0 && target.links.len() >= note.max_links {
                    return Err(RouteError::TooManyLinks {
                        max: note.max_links,
                    });
                }
                target.links.push(Link {
                    peer: sender.clone(),
                    peer_epoch: sender_epoch,
                    peer_conn: conn,
                    connector: note.connector,
                    stream: note.stream,
                });
            }
            Ok(Route {
                sender,
                target: handle,
                target_member: target_key,
                target_connector,
                target_label: Label::default(),
            })
        })
    }

    /// Whether a member of `room` uses display name `name`.
    pub fn name_taken(&self, room: &str, name: &str) -> bool {
        self.store.transact(|t| {
            t.room(room).is_some_and(|r| {
                r.members
                    .iter()
                    .any(|k| t.member(k).and_then(|m| m.name.as_deref()) == Some(name))
            })
        })
    }

    /// The room and member key of `conn`, if it is in one.
    pub fn membership(&self, conn: ConnId) -> Option<(Arc<str>, Arc<str>)> {
        self.store.transact(|t| {
            t.member_by_conn(conn)
                .map(|(k, m)| (m.room.clone(), k.clone()))
        })
    }

    /// Every room with its members, for operators; `describe` tells what it can about a
    /// connection handle (the core does not know what a handle is).
    ///
    /// Only reference counts are taken under the state lock; names, times and connection
    /// details are formatted after it is released, so an open dashboard does not hold up
    /// relays (it asks once a second, for every room).
    pub fn snapshot(&self, describe: impl Fn(&H) -> ConnInfo) -> Vec<RoomView> {
        let copied: Vec<RoomCopy<H>> = self.store.transact(|t| {
            t.rooms()
                .map(|(name, room)| copy_room(t, name, &room.members))
                .collect()
        });
        let mut rooms: Vec<RoomView> = copied.into_iter().map(|r| r.view(&describe)).collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// One room with its members, for operators, without copying the others.
    pub fn room_snapshot(&self, room: &str, describe: impl Fn(&H) -> ConnInfo) -> Option<RoomView> {
        let copied = self.store.transact(|t| {
            let (name, r) = t.room_entry(room)?;
            Some(copy_room(t, name, &r.members))
        });
        copied.map(|r| r.view(&describe))
    }

    /// Number of rooms and members now.
    pub fn sizes(&self) -> (usize, usize) {
        self.store.transact(|t| (t.room_count(), t.member_count()))
    }
}

/// What an operators' view needs of a room, copied under the state lock (reference counts
/// only) to be formatted after it.
struct RoomCopy<H> {
    name: Arc<str>,
    members: Vec<MemberCopy<H>>,
}

struct MemberCopy<H> {
    key: Arc<str>,
    name: Option<Arc<str>>,
    last_conn: ConnId,
    joined_at: SystemTime,
    handle: Option<H>,
}

fn copy_room<H: Clone>(t: &Table<H>, name: &Arc<str>, members: &[Arc<str>]) -> RoomCopy<H> {
    RoomCopy {
        name: name.clone(),
        members: members
            .iter()
            .filter_map(|k| {
                let m = t.member(k)?;
                Some(MemberCopy {
                    key: k.clone(),
                    name: m.name.clone(),
                    last_conn: m.last_conn,
                    joined_at: m.joined_at,
                    handle: m.handle.clone(),
                })
            })
            .collect(),
    }
}

impl<H> RoomCopy<H> {
    fn view(self, describe: &impl Fn(&H) -> ConnInfo) -> RoomView {
        RoomView {
            name: self.name.to_string(),
            members: self
                .members
                .into_iter()
                .map(|m| MemberView {
                    id: m.key.to_string(),
                    name: m.name.as_deref().map(str::to_owned),
                    connection: m.last_conn.to_string(),
                    node: None,
                    state: if m.handle.is_some() {
                        "connected"
                    } else {
                        "away"
                    },
                    joined_at: humantime::format_rfc3339_seconds(m.joined_at).to_string(),
                    conn: m.handle.as_ref().map(describe),
                })
                .collect(),
        }
    }
}

pub(super) fn peer<H: Clone>(t: &Table<H>, key: &Arc<str>) -> Peer<H> {
    Peer {
        member: key.clone(),
        handle: t.member(key).and_then(|m| m.handle.clone()),
        label: Label::default(),
    }
}

pub(super) fn peers_except<H: Clone>(t: &Table<H>, room: &str, except: &str) -> Vec<Peer<H>> {
    t.room(room)
        .map(|r| {
            r.members
                .iter()
                .filter(|k| &***k != except)
                .map(|k| peer(t, k))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes a room whose members are all away. Nobody is connected to be told; a member that
/// comes back later finds itself unknown, as after its grace period.
fn close_away_room<H: Clone>(t: &mut Table<H>, room: &str) {
    let members = t.room(room).map(|r| r.members.clone()).unwrap_or_default();
    for key in &members {
        t.remove(key);
    }
    tracing::info!(
        room,
        members = members.len(),
        "room of away members closed for a live join (max_rooms reached)"
    );
}

fn leave_in<H: Clone>(t: &mut Table<H>, conn: ConnId) -> Option<Departure<H>> {
    let key = t.member_by_conn(conn)?.0.clone();
    remove_in(t, &key)
}

/// Removes a member and works out who must hear of it.
///
/// Connected members drop their links to it (they are told now, by the adapter); members
/// that are away keep theirs, so that when they come back they learn the peer is gone.
pub(super) fn remove_in<H: Clone>(t: &mut Table<H>, key: &Arc<str>) -> Option<Departure<H>> {
    let member = t.remove(key)?;
    let remaining = peers_except(t, &member.room, key);
    for p in &remaining {
        if p.handle.is_some() {
            if let Some(m) = t.member_mut(&p.member) {
                m.links.retain(|l| l.peer != *key);
            }
        }
    }
    let linked = member
        .links
        .iter()
        .filter_map(|l| {
            let peer = t.member(&l.peer)?;
            if peer.epoch != l.peer_epoch || peer.room != member.room {
                return None;
            }
            Some(LinkedPeer {
                member: l.peer.clone(),
                handle: peer.handle.clone()?,
                connector: l.connector.clone(),
                label: Label::default(),
            })
        })
        .collect();
    Some(Departure {
        room: member.room,
        member: key.clone(),
        last_conn: member.last_conn.to_string().into(),
        remaining,
        linked,
        label: Label::default(),
    })
}

/// Test handles are always open.
#[cfg(test)]
impl Handle for u32 {
    fn is_open(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        rooms: Rooms<u32>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                rooms: Rooms::new(),
            }
        }
        fn join(
            &self,
            room: &str,
            member: &str,
            conn: ConnId,
            cap: usize,
        ) -> Result<JoinOutcome<u32>, Refusal> {
            self.rooms.join(Join {
                room: room.into(),
                member: member.into(),
                conn,
                handle: 0,
                name: None,
                capacity: cap,
                max_rooms: 3,
            })
        }
    }

    fn existing(o: JoinOutcome<u32>) -> Vec<String> {
        match o {
            JoinOutcome::Joined(j) => j.existing.iter().map(|p| p.member.to_string()).collect(),
            JoinOutcome::AlreadyMember { .. } => panic!("expected a fresh join"),
        }
    }

    #[test]
    fn existing_members_come_in_join_order() {
        let f = Fixture::new();
        let (a, b, c) = (ConnId::new(), ConnId::new(), ConnId::new());
        assert!(existing(f.join("r", "a", a, 0).unwrap()).is_empty());
        assert_eq!(existing(f.join("r", "b", b, 0).unwrap()), ["a"]);
        assert_eq!(existing(f.join("r", "c", c, 0).unwrap()), ["a", "b"]);
    }

    #[test]
    fn joining_twice_changes_nothing() {
        let f = Fixture::new();
        let (a, b) = (ConnId::new(), ConnId::new());
        f.join("r", "a", a, 0).unwrap();
        f.join("r", "b", b, 0).unwrap();
        match f.join("r", "b", b, 0).unwrap() {
            JoinOutcome::AlreadyMember { peers } => {
                assert_eq!(peers.len(), 1);
                assert_eq!(&*peers[0].member, "a");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.rooms.sizes(), (1, 2));
    }

    #[test]
    fn joining_another_room_leaves_the_first() {
        let f = Fixture::new();
        let (a, b) = (ConnId::new(), ConnId::new());
        f.join("r1", "a", a, 0).unwrap();
        f.join("r1", "b", b, 0).unwrap();
        match f.join("r2", "b", b, 0).unwrap() {
            JoinOutcome::Joined(j) => {
                let left = j.left.expect("left r1");
                assert_eq!(&*left.room, "r1");
                assert_eq!(left.remaining.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            f.rooms.route(b, Target::Member("a"), None).unwrap_err(),
            RouteError::OtherRoom
        );
    }

    #[test]
    fn full_room_refuses_and_changes_nothing() {
        let f = Fixture::new();
        let (a, b, c) = (ConnId::new(), ConnId::new(), ConnId::new());
        f.join("r", "a", a, 2).unwrap();
        f.join("r", "b", b, 2).unwrap();
        f.join("other", "c", c, 2).unwrap();
        assert_eq!(
            f.join("r", "c", c, 2).unwrap_err(),
            Refusal::RoomFull { capacity: 2 }
        );
        assert_eq!(
            f.rooms.membership(c).map(|(r, _)| r.to_string()),
            Some("other".into())
        );
    }

    #[test]
    fn room_limit_refuses_a_new_room_but_not_an_existing_one() {
        let f = Fixture::new();
        for i in 0..3 {
            f.join(&format!("r{i}"), &format!("m{i}"), ConnId::new(), 0)
                .unwrap();
        }
        assert_eq!(
            f.join("r3", "x", ConnId::new(), 0).unwrap_err(),
            Refusal::TooManyRooms { max: 3 }
        );
        assert!(f.join("r0", "y", ConnId::new(), 0).is_ok());
    }

    #[test]
    fn at_the_room_limit_the_oldest_room_of_away_members_gives_way() {
        let f = Fixture::new();
        let conns: Vec<ConnId> = (0..3).map(|_| ConnId::new()).collect();
        for (i, c) in conns.iter().enumerate() {
            f.join(&format!("r{i}"), &format!("m{i}"), *c, 0).unwrap();
        }
        f.rooms.store.transact(|t| {
            t.unbind("m1");
            t.unbind("m0");
        });
        assert!(f.join("r3", "x", ConnId::new(), 0).is_ok());
        assert!(
            f.rooms.store.transact(|t| t.room("r1").is_none()),
            "r1 was away first"
        );
        assert!(f.join("r4", "y", ConnId::new(), 0).is_ok());
        assert_eq!(
            f.join("r5", "z", ConnId::new(), 0).unwrap_err(),
            Refusal::TooManyRooms { max: 3 },
            "rooms with a connected member never give way"
        );
    }

    #[test]
    fn member_key_of_another_connection_is_refused() {
        let f = Fixture::new();
        let (a, b) = (ConnId::new(), ConnId::new());
        f.join("r", "a", a, 0).unwrap();
        assert_eq!(f.join("r", "a", b, 0).unwrap_err(), Refusal::MemberIdInUse);
    }

    #[test]
    fn routes_only_inside_a_room() {
        let f = Fixture::new();
        let (a, b, c, d) = (ConnId::new(), ConnId::new(), ConnId::new(), ConnId::new());
        f.join("r", "a", a, 0).unwrap();
        f.join("r", "b", b, 0).unwrap();
        f.join("s", "c", c, 0).unwrap();
        let route = |c, to| f.rooms.route(c, Target::Member(to), None);
        assert_eq!(&*route(a, "b").unwrap().sender, "a");
        assert_eq!(route(a, "c").unwrap_err(), RouteError::OtherRoom);
        assert_eq!(route(a, "zz").unwrap_err(), RouteError::UnknownTarget);
        assert_eq!(route(d, "a").unwrap_err(), RouteError::NotJoined);
        let by_conn = |c, to| f.rooms.route(c, Target::Conn(to), None);
        assert_eq!(&*by_conn(b, a).unwrap().sender, "b");
        assert_eq!(by_conn(b, c).unwrap_err(), RouteError::OtherRoom);
    }

    #[test]
    fn links_per_member_are_capped_but_a_link_can_be_replaced() {
        let f = Fixture::new();
        let (a, b) = (ConnId::new(), ConnId::new());
        f.join("r", "a", a, 0).unwrap();
        f.join("r", "b", b, 0).unwrap();
        let note = |stream: &str| LinkNote {
            connector: "c".into(),
            stream: stream.into(),
            max_links: 2,
        };
        let link = |stream| f.rooms.route(a, Target::Member("b"), Some(note(stream)));
        assert!(link("user").is_ok());
        assert!(link("display").is_ok());
        assert_eq!(
            link("third").unwrap_err(),
            RouteError::TooManyLinks { max: 2 }
        );
        assert!(link("user").is_ok(), "replacing a link adds none");
    }

    #[test]
    fn a_route_reports_the_targets_connector_of_its_link_to_the_sender() {
        let f = Fixture::new();
        let (a, b) = (ConnId::new(), ConnId::new());
        f.join("r", "a", a, 0).unwrap();
        f.join("r", "b", b, 0).unwrap();
        let connector = |from, to| {
            f.rooms
                .route(from, Target::Conn(to), None)
                .unwrap()
                .target_connector
        };
        assert_eq!(connector(a, b), None);
        let note = LinkNote {
            connector: "kb".into(),
            stream: "user".into(),
            max_links: 0,
        };
        f.rooms.route(b, Target::Member("a"), Some(note)).unwrap();
        assert_eq!(
            connector(a, b).as_deref(),
            Some("kb"),
            "b's link, recorded on a"
        );
        assert_eq!(connector(b, a), None, "nothing recorded on b");
        assert_eq!(
            &*f.rooms
                .route(a, Target::Conn(b), None)
                .unwrap()
                .target_member,
            "b"
        );
    }

    #[test]
    fn state_is_released_when_everyone_leaves() {
        let f = Fixture::new();
        for i in 0..1000 {
            let conn = ConnId::new();
            f.join(&format!("room{i}"), &format!("m{i}"), conn, 0)
                .unwrap();
            let d = f.rooms.leave(conn).expect("was in a room");
            assert!(d.remaining.is_empty());
        }
        assert_eq!(f.rooms.sizes(), (0, 0));
    }
}
