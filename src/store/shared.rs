//! A realm's rooms shared by every node of a cluster: the [`Store`](super::Store) interface
//! over [`RedisStore`].
//!
//! The rules themselves run in Redis, one atomic script each (see `redis.rs`); this type turns
//! their address-level answers into the core's outcomes. An address on this node becomes this
//! node's own handle for that connection; an address on another node becomes whatever the
//! adapter's [`Locator`] makes of it (a link that publishes to that node).
//!
//! Each node also remembers which of *its own* connections are members, and of which room.
//! That answers `membership` without a round trip, lets the inbox check that a message from
//! another node is for a connection that is in the room the sender stamped, and is what the
//! node puts back when Redis comes back empty.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::redis::{
    Address, Gone, JoinArgs, JoinResult, LinkArgs, PeerAt, RebindArgs, RebindResult, RedisStore,
    Restored, RoomSnap, RouteResult, RouteTarget,
};
use super::{OnDeparted, Unavailable};
use crate::cluster::runtime::record_round_trip;
use crate::core::{
    ConnId, ConnInfo, Departure, Disconnected, Handle, Join, JoinOutcome, Joined, Label, LinkNote,
    LinkedPeer, MemberView, Peer, Rebind, RebindError, Rebound, Refusal, RoomView, Route,
    RouteError, Target,
};

/// How an adapter reaches connections it does not hold.
pub trait Locator<H>: Send + Sync {
    /// A handle that delivers to connection `at` (on another node), stamped with `room`.
    fn remote(&self, at: &Address, room: &Arc<str>) -> H;
    /// Who opened the connection behind `handle` (address and client), as an opaque string:
    /// a returning member may take over its still-live connection only from the same source.
    fn source(&self, handle: &H) -> String;
    /// Connection `at` on another node is no longer its member's connection (the member came
    /// back on this node).
    fn detach(&self, at: &Address);
}

/// One of this node's connections that is a member.
#[derive(Clone)]
struct Local<H> {
    handle: H,
    member: Arc<str>,
    room: Arc<str>,
    name: Option<Arc<str>>,
    seq: u64,
    source: String,
}

/// This node's member connections, by connection and by member key.
struct LocalIndex<H> {
    conns: HashMap<ConnId, Local<H>>,
    members: HashMap<Arc<str>, ConnId>,
}

impl<H> Default for LocalIndex<H> {
    fn default() -> Self {
        Self {
            conns: HashMap::new(),
            members: HashMap::new(),
        }
    }
}

impl<H> LocalIndex<H> {
    fn insert(&mut self, conn: ConnId, local: Local<H>) -> Option<Local<H>> {
        self.members.insert(local.member.clone(), conn);
        let before = self.conns.insert(conn, local);
        if let Some(b) = &before {
            self.forget_member(&b.member, conn);
        }
        before
    }

    fn remove(&mut self, conn: &ConnId) -> Option<Local<H>> {
        let before = self.conns.remove(conn)?;
        self.forget_member(&before.member, *conn);
        Some(before)
    }

    /// Drops the member index entry of `member` if it still points at `conn`.
    fn forget_member(&mut self, member: &Arc<str>, conn: ConnId) {
        let other = self.conns.get(&conn).map(|l| &l.member);
        if self.members.get(member) == Some(&conn) && other != Some(member) {
            self.members.remove(member);
        }
    }

    fn get(&self, conn: &ConnId) -> Option<&Local<H>> {
        self.conns.get(conn)
    }

    fn get_mut(&mut self, conn: &ConnId) -> Option<&mut Local<H>> {
        self.conns.get_mut(conn)
    }

    fn contains_key(&self, conn: &ConnId) -> bool {
        self.conns.contains_key(conn)
    }

    fn iter(&self) -> impl Iterator<Item = (&ConnId, &Local<H>)> {
        self.conns.iter()
    }

    /// The connection of member `key`, if it is one of this node's.
    fn by_member(&self, key: &str) -> Option<(ConnId, &Local<H>)> {
        let conn = *self.members.get(key)?;
        self.conns.get(&conn).map(|l| (conn, l))
    }
}

/// A connection held in this node's index while its join or rebind script runs.
struct Held<'a, H> {
    local: &'a Mutex<LocalIndex<H>>,
    conn: ConnId,
    before: Option<Local<H>>,
}

impl<H: Clone> Held<'_, H> {
    /// The script refused: the connection is what it was before.
    fn undo(&self) {
        let mut local = self.local.lock();
        match self.before.clone() {
            Some(b) => local.insert(self.conn, b),
            None => local.remove(&self.conn),
        };
    }
}

/// The operators' view, refreshed in the background while someone looks.
#[derive(Default)]
struct View {
    rooms: Vec<RoomSnap>,
    sizes: (usize, usize),
    asked: Option<Instant>,
}

/// How long a member (by key) stays away when its node dies, when that differs from the
/// realm's grace (`None`: the realm's).
pub type ReapGrace = Arc<dyn Fn(&str) -> Option<Duration> + Send + Sync>;

/// One realm's rooms in Redis, as this node sees them.
pub struct SharedRooms<H> {
    redis: RedisStore,
    realm: &'static str,
    node: Arc<str>,
    locator: Arc<dyn Locator<H>>,
    local: Mutex<LocalIndex<H>>,
    on_departed: OnDeparted<H>,
    reap_grace: Option<ReapGrace>,
    view: Mutex<View>,
    /// Whether the last call reached Redis, for readiness.
    reachable: AtomicBool,
    /// Departures Redis could not take (it was unreachable), tried again every second, so a
    /// member whose connection closed during an outage does not stay in Redis for good.
    pending: Mutex<Vec<Pending>>,
    /// This realm itself, for the timers it starts.
    me: Weak<Self>,
    /// Whether a relay with both ends on this node may be checked here, without Redis. Off
    /// for a realm whose routes must report what only Redis holds (the target's connector for
    /// its link to the sender, which mixed rooms translate with).
    local_routes: bool,
}

/// A departure to write again.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// The member of this connection leaves (its peers are told when it succeeds).
    Leave(ConnId),
    /// The member of this connection is away until this deadline (ms).
    Away(ConnId, u64),
}

/// Most members one on-time expiry removes (the supervisor's passes take the rest).
const EXPIRE_BATCH: usize = 64;

/// How long operators' views are refreshed after the last look.
const VIEW_INTEREST: Duration = Duration::from_secs(30);

impl<H: Handle + Send + Sync + 'static> SharedRooms<H> {
    /// The realm `realm` of node `node`, over `redis`.
    pub fn new(
        redis: RedisStore,
        realm: &'static str,
        node: &str,
        locator: Arc<dyn Locator<H>>,
        on_departed: OnDeparted<H>,
        reap_grace: Option<ReapGrace>,
        local_routes: bool,
    ) -> Arc<Self> {
        let rooms = Arc::new_cyclic(|me| Self {
            redis,
            realm,
            node: node.into(),
            locator,
            local: Mutex::default(),
            on_departed,
            reap_grace,
            view: Mutex::default(),
            reachable: AtomicBool::new(true),
            pending: Mutex::default(),
            me: me.clone(),
            local_routes,
        });
        let weak = Arc::downgrade(&rooms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(rooms) = weak.upgrade() else { return };
                rooms.retry_pending().await;
                rooms.refresh_view().await;
            }
        });
        rooms
    }

    /// The realm's name.
    pub fn realm(&self) -> &'static str {
        self.realm
    }

    /// Whether the last call reached Redis.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn failed(&self, action: &str, e: &dyn std::fmt::Display) {
        self.reachable.store(false, Ordering::Relaxed);
        crate::stats::cluster_redis_error(action);
        tracing::warn!(realm = self.realm, action, error = %e, "cluster: room state unreachable");
    }

    fn reached(&self) {
        self.reachable.store(true, Ordering::Relaxed);
    }

    fn here(&self, conn: ConnId) -> Address {
        Address {
            node: self.node.to_string(),
            conn: conn.to_string(),
        }
    }

    /// A handle for a member reached at `at` (none while it is away, or when it is one of
    /// this node's connections that has closed meanwhile).
    fn resolve(&self, at: Option<&Address>, room: &Arc<str>) -> Option<H> {
        let at = at?;
        if *at.node == *self.node {
            let conn = ConnId::from_str(&at.conn).ok()?;
            return self.local.lock().get(&conn).map(|l| l.handle.clone());
        }
        Some(self.locator.remote(at, room))
    }

    fn peers(&self, peers: Vec<PeerAt>, room: &Arc<str>) -> Vec<Peer<H>> {
        peers
            .into_iter()
            .map(|p| Peer {
                handle: self.resolve(p.at.as_ref(), room),
                member: p.member.into(),
                label: Label::default(),
            })
            .collect()
    }

    fn departure(&self, gone: Gone) -> Departure<H> {
        let room: Arc<str> = gone.room.into();
        Departure {
            member: gone.member.into(),
            last_conn: gone.last_conn.into(),
            remaining: self.peers(gone.remaining, &room),
            linked: gone
                .linked
                .into_iter()
                .filter_map(|l| {
                    Some(LinkedPeer {
                        handle: self.resolve(Some(&l.at), &room)?,
                        member: l.member.into(),
                        connector: l.connector.into(),
                        label: Label::default(),
                    })
                })
                .collect(),
            room,
            label: Label::default(),
        }
    }

    /// Puts a connection into a room, leaving the room it was in first.
    pub async fn join(&self, req: Join<H>) -> Result<JoinOutcome<H>, Refusal> {
        if !req.handle.is_open() {
            return Err(Refusal::ConnectionClosed);
        }
        let at = self.here(req.conn);
        let source = self.locator.source(&req.handle);
        let args = JoinArgs {
            member: &req.member,
            room: &req.room,
            at: &at,
            name: req.name.as_deref(),
            capacity: req.capacity,
            max_rooms: req.max_rooms,
            source: &source,
            reap_grace_ms: self
                .reap_grace
                .as_ref()
                .and_then(|f| f(&req.member))
                .map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
        };
        // The connection is this node's member of the room *before* the script runs: a peer
        // joining on this node right after it must find it here, or it would be taken for
        // away and never be told of the newcomer. Undone if the join does not happen.
        let held = self.hold(
            req.conn,
            &req.handle,
            &req.member,
            &req.room,
            &req.name,
            &source,
        );
        let Some(result) = self.under(&held, "join", self.redis.join(&args)).await else {
            return Err(Refusal::Unavailable);
        };
        match result {
            JoinResult::Joined {
                seq,
                existing,
                left,
            } => {
                if let Some(l) = self.local.lock().get_mut(&req.conn) {
                    l.seq = seq;
                }
                Ok(JoinOutcome::Joined(Joined {
                    existing: self.peers(existing, &req.room),
                    left: left.map(|g| self.departure(g)),
                }))
            }
            refused => {
                held.undo();
                match refused {
                    JoinResult::AlreadyMember { peers } => Ok(JoinOutcome::AlreadyMember {
                        peers: self.peers(peers, &req.room),
                    }),
                    JoinResult::Full => Err(Refusal::RoomFull {
                        capacity: req.capacity,
                    }),
                    JoinResult::NameTaken => Err(Refusal::NameTaken),
                    JoinResult::MemberIdInUse => Err(Refusal::MemberIdInUse),
                    JoinResult::TooManyRooms | JoinResult::Joined { .. } => {
                        Err(Refusal::TooManyRooms { max: req.max_rooms })
                    }
                }
            }
        }
    }

    /// Makes `conn` this node's member `member` of `room` now, before the script that decides
    /// it runs; the returned [`Held`] puts back what was there if the script refuses.
    fn hold(
        &self,
        conn: ConnId,
        handle: &H,
        member: &Arc<str>,
        room: &Arc<str>,
        name: &Option<Arc<str>>,
        source: &str,
    ) -> Held<'_, H> {
        let before = self.local.lock().insert(
            conn,
            Local {
                handle: handle.clone(),
                member: member.clone(),
                room: room.clone(),
                name: name.clone(),
                seq: 0,
                source: source.to_owned(),
            },
        );
        Held {
            local: &self.local,
            conn,
            before,
        }
    }

    /// Runs the script `call` while `held` is in the index; an unreachable Redis undoes the
    /// hold and is recorded (`None`).
    async fn under<T>(
        &self,
        held: &Held<'_, H>,
        action: &'static str,
        call: impl std::future::Future<Output = Result<T, super::redis::StoreError>>,
    ) -> Option<T> {
        match timed(action, call).await {
            Ok(result) => {
                self.reached();
                Some(result)
            }
            Err(e) => {
                held.undo();
                self.failed(action, &e);
                None
            }
        }
    }

    /// Takes the member bound to `conn` out of its room.
    pub async fn leave(&self, conn: ConnId) -> Option<Departure<H>> {
        self.local.lock().remove(&conn)?;
        match timed("leave", self.redis.leave(&conn.to_string())).await {
            Ok(gone) => {
                self.reached();
                gone.map(|g| self.departure(g))
            }
            Err(e) => {
                self.failed("leave", &e);
                self.pending.lock().push(Pending::Leave(conn));
                None
            }
        }
    }

    async fn route_timed(
        &self,
        conn: &str,
        to: RouteTarget<'_>,
        link: Option<&LinkArgs<'_>>,
    ) -> Result<RouteResult, super::redis::StoreError> {
        timed("route", self.redis.route(conn, to, link)).await
    }

    /// Checks that `conn` may reach `to` and returns how.
    pub async fn route(
        &self,
        conn: ConnId,
        to: Target<'_>,
        link: Option<LinkNote>,
    ) -> Result<Route<H>, RouteError> {
        if link.is_none() && self.local_routes {
            // Both ends on this node: this node alone binds its connections to rooms, so its
            // own index answers without a round trip (a relay that records nothing).
            let local = self.local.lock();
            let Some(sender) = local.get(&conn) else {
                return Err(RouteError::NotJoined);
            };
            let target = match to {
                Target::Member(key) => local.by_member(key),
                Target::Conn(c) => local.get(&c).map(|l| (c, l)),
            };
            if let Some((_, t)) = target {
                if t.room != sender.room {
                    return Err(RouteError::OtherRoom);
                }
                return Ok(Route {
                    sender: sender.member.clone(),
                    target: t.handle.clone(),
                    target_member: t.member.clone(),
                    target_connector: None,
                    target_label: Label::default(),
                });
            }
        } else if !self.local.lock().contains_key(&conn) {
            return Err(RouteError::NotJoined);
        }
        let target_conn;
        let target = match to {
            Target::Member(key) => RouteTarget::Member(key),
            Target::Conn(c) => {
                target_conn = c.to_string();
                RouteTarget::Conn(&target_conn)
            }
        };
        let args = link.as_ref().map(|l| LinkArgs {
            connector: &l.connector,
            stream: &l.stream,
            max_links: l.max_links,
        });
        let result = self
            .route_timed(&conn.to_string(), target, args.as_ref())
            .await
            .map_err(|e| {
                self.failed("route", &e);
                RouteError::Unavailable
            })?;
        self.reached();
        match result {
            RouteResult::Routed {
                sender,
                target,
                room,
                target_member,
                target_connector,
            } => {
                let room: Arc<str> = room.into();
                let target = self
                    .resolve(Some(&target), &room)
                    .ok_or(RouteError::TargetAway)?;
                Ok(Route {
                    sender: sender.into(),
                    target,
                    target_member: target_member.into(),
                    target_connector: target_connector.map(Into::into),
                    target_label: Label::default(),
                })
            }
            RouteResult::NotJoined => Err(RouteError::NotJoined),
            RouteResult::UnknownTarget => Err(RouteError::UnknownTarget),
            RouteResult::OtherRoom => Err(RouteError::OtherRoom),
            RouteResult::TargetAway => Err(RouteError::TargetAway),
            RouteResult::TooManyLinks => Err(RouteError::TooManyLinks {
                max: link.map_or(0, |l| l.max_links),
            }),
        }
    }

    /// The connection `conn` dropped.
    pub async fn disconnect(&self, conn: ConnId, grace: Duration) -> Disconnected<H> {
        let Some(local) = self.local.lock().remove(&conn) else {
            return Disconnected::NotMember;
        };
        let id = conn.to_string();
        if grace.is_zero() {
            return match timed("leave", self.redis.leave(&id)).await {
                Ok(Some(g)) => {
                    self.reached();
                    Disconnected::Left(self.departure(g))
                }
                Ok(None) => Disconnected::NotMember,
                Err(e) => {
                    self.failed("leave", &e);
                    self.pending.lock().push(Pending::Leave(conn));
                    Disconnected::NotMember
                }
            };
        }
        let deadline = now_ms().saturating_add(u64::try_from(grace.as_millis()).unwrap_or(0));
        match timed("away", self.redis.away(&id, deadline)).await {
            Ok(Some((member, room))) => {
                self.reached();
                self.expire_at(grace);
                Disconnected::Away {
                    room: room.into(),
                    member: member.into(),
                }
            }
            Ok(None) => Disconnected::NotMember,
            Err(e) => {
                self.failed("away", &e);
                self.pending.lock().push(Pending::Away(conn, deadline));
                Disconnected::Away {
                    room: local.room,
                    member: local.member,
                }
            }
        }
    }

    /// Ends the grace periods due in `after`, on time: every node's supervisor also ends them
    /// within a second (so a grace ends even when this node is gone), and the store hands
    /// each expired member to exactly one caller.
    fn expire_at(&self, after: Duration) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(rooms) = me.upgrade() else { return };
            match timed("expire", rooms.redis.expire(now_ms(), EXPIRE_BATCH)).await {
                Ok(gone) => {
                    for g in gone {
                        rooms.departed(g);
                    }
                }
                Err(e) => rooms.failed("expire", &e),
            }
        });
    }

    /// Binds an existing member (possibly of another node) to a connection of this node.
    pub async fn rebind(&self, req: Rebind<H>) -> Result<Rebound<H>, RebindError> {
        if !req.handle.is_open() {
            return Err(RebindError::ConnectionClosed);
        }
        let at = self.here(req.conn);
        let source = self.locator.source(&req.handle);
        let args = RebindArgs {
            member: &req.member,
            room: &req.room,
            name: req.name.as_deref(),
            at: &at,
            source: &source,
        };
        // As for a join: this node holds the member on its new connection before the script
        // runs, so a peer joining here meanwhile finds it live; undone on a refusal.
        let held = self.hold(
            req.conn,
            &req.handle,
            &req.member,
            &req.room,
            &req.name,
            &source,
        );
        let Some(result) = self.under(&held, "rebind", self.redis.rebind(&args)).await else {
            return Err(RebindError::Unavailable);
        };
        let refused = match result {
            RebindResult::Rebound {
                room,
                previous,
                unlinked,
                linked,
                gone,
                last_conn,
            } => Ok((room, previous, unlinked, linked, gone, last_conn)),
            RebindResult::Unknown => Err(RebindError::Unknown),
            RebindResult::Mismatch => Err(RebindError::Mismatch),
            RebindResult::ConnBusy => Err(RebindError::ConnBusy),
            RebindResult::Live => Err(RebindError::Live),
        };
        let (room, previous, unlinked, linked, gone, last_conn) = match refused {
            Ok(rebound) => rebound,
            Err(e) => {
                held.undo();
                return Err(e);
            }
        };
        let room: Arc<str> = room.into();
        if let Some(prev) = &previous {
            if *prev.node == *self.node {
                if let Ok(c) = ConnId::from_str(&prev.conn) {
                    if c != req.conn {
                        self.local.lock().remove(&c);
                    }
                }
            } else {
                self.locator.detach(prev);
            }
        }
        Ok(Rebound {
            previous_conn: previous.map(|p| p.conn.into()),
            unlinked: self.peers(unlinked, &room),
            linked: linked
                .into_iter()
                .filter_map(|l| {
                    Some(LinkedPeer {
                        handle: self.resolve(Some(&l.at), &room)?,
                        member: l.member.into(),
                        connector: l.connector.into(),
                        label: Label::default(),
                    })
                })
                .collect(),
            gone: gone.into_iter().map(Into::into).collect(),
            last_conn: last_conn.into(),
            room,
        })
    }

    /// Whether a member of `room` uses display name `name`.
    pub async fn name_taken(&self, room: &str, name: &str) -> Result<bool, Unavailable> {
        match timed("name_taken", self.redis.name_taken(room, name)).await {
            Ok(taken) => {
                self.reached();
                Ok(taken)
            }
            Err(e) => {
                self.failed("name_taken", &e);
                Err(Unavailable)
            }
        }
    }

    /// The room and member of one of this node's connections.
    pub fn membership(&self, conn: ConnId) -> Option<(Arc<str>, Arc<str>)> {
        self.local
            .lock()
            .get(&conn)
            .map(|l| (l.room.clone(), l.member.clone()))
    }

    /// This node's handle for `conn` if it is a member of `room`: where a message from
    /// another node, stamped with that room, may be delivered.
    pub fn member_in(&self, conn: &str, room: &str) -> Option<H> {
        let conn = ConnId::from_str(conn).ok()?;
        let local = self.local.lock();
        let l = local.get(&conn)?;
        (*l.room == *room).then(|| l.handle.clone())
    }

    /// Connection `conn` of this node lost its member to a connection on another node.
    pub fn detached(&self, conn: &str) {
        if let Ok(conn) = ConnId::from_str(conn) {
            self.local.lock().remove(&conn);
        }
    }

    /// A member left without a request of its own (grace ended, or its node died): its
    /// peers are told through the realm's handler.
    pub fn departed(&self, gone: Gone) {
        let departure = self.departure(gone);
        (self.on_departed)(departure);
    }

    /// Puts this node's live members back after Redis lost them (a restart without
    /// persistence, or this node was taken for dead). Returns how many were restored.
    pub async fn restore(&self) -> usize {
        let members: Vec<(ConnId, Local<H>)> = self
            .local
            .lock()
            .iter()
            .filter(|(_, l)| l.handle.is_open())
            .map(|(c, l)| (*c, l.clone()))
            .collect();
        let mut restored = 0;
        for (conn, l) in members {
            let at = self.here(conn);
            let seq = if l.seq == 0 { now_ms() * 1000 } else { l.seq };
            let (member, room) = (&l.member, &l.room);
            match self
                .redis
                .restore(member, room, &at, l.name.as_deref(), seq, &l.source)
                .await
            {
                Ok(Restored::Restored) => restored += 1,
                Ok(Restored::Present) => {}
                Ok(Restored::NameTaken) => {
                    tracing::warn!(realm = self.realm, %member, %room, "cluster: a member could not be restored: its name was taken meanwhile");
                }
                Err(e) => {
                    self.failed("restore", &e);
                    return restored;
                }
            }
        }
        restored
    }

    /// Every room of the cluster with its members, for operators. Served from a view
    /// refreshed every second while someone looks (the first look may show the state of up
    /// to a second ago, or nothing yet).
    pub fn snapshot(&self, describe: impl Fn(&H) -> ConnInfo) -> Vec<RoomView> {
        let rooms: Vec<RoomSnap> = {
            let mut view = self.view.lock();
            view.asked = Some(Instant::now());
            view.rooms.clone()
        };
        let local = self.local.lock();
        rooms
            .into_iter()
            .map(|r| RoomView {
                name: r.name,
                members: r
                    .members
                    .into_iter()
                    .map(|m| {
                        let here = *m.node == *self.node;
                        let conn = here
                            .then(|| ConnId::from_str(&m.conn).ok())
                            .flatten()
                            .and_then(|c| local.get(&c))
                            .filter(|_| !m.away)
                            .map(|l| describe(&l.handle));
                        MemberView {
                            id: m.member,
                            name: m.name,
                            connection: m.conn,
                            node: Some(m.node),
                            state: if m.away { "away" } else { "connected" },
                            joined_at: humantime::format_rfc3339_seconds(
                                UNIX_EPOCH + Duration::from_millis(m.joined_at_ms),
                            )
                            .to_string(),
                            conn,
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Number of rooms and members in the cluster (refreshed every second).
    pub fn sizes(&self) -> (usize, usize) {
        let mut view = self.view.lock();
        view.asked = Some(Instant::now());
        view.sizes
    }

    /// Writes the departures Redis missed; those it still cannot take wait for the next try.
    async fn retry_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.lock());
        let mut again = Vec::new();
        for p in pending {
            let done = match p {
                Pending::Leave(conn) => match self.redis.leave(&conn.to_string()).await {
                    Ok(gone) => {
                        if let Some(g) = gone {
                            self.departed(g);
                        }
                        true
                    }
                    Err(_) => false,
                },
                Pending::Away(conn, deadline) => {
                    self.redis.away(&conn.to_string(), deadline).await.is_ok()
                }
            };
            if !done {
                again.push(p);
            }
        }
        if !again.is_empty() {
            self.pending.lock().extend(again);
        }
    }

    async fn refresh_view(&self) {
        let wanted = self
            .view
            .lock()
            .asked
            .is_some_and(|t| t.elapsed() < VIEW_INTEREST);
        if !wanted {
            return;
        }
        let sizes = match self.redis.sizes().await {
            Ok(s) => s,
            Err(e) => return self.failed("sizes", &e),
        };
        let rooms = match self.redis.snapshot().await {
            Ok(r) => r,
            Err(e) => return self.failed("snapshot", &e),
        };
        let mut view = self.view.lock();
        view.sizes = sizes;
        view.rooms = rooms;
    }
}

/// Awaits one Redis call, recording its round trip (`gateway_cluster_redis_seconds`).
async fn timed<T>(action: &'static str, call: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = call.await;
    record_round_trip(action, started);
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
