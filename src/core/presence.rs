//! Connections that drop and come back: grace periods and rebinding a member to a new
//! connection.
//!
//! A member whose connection drops can be kept, away, for a grace period. Each absence gets a
//! number; the grace timer removes the member only if that same absence is still going on
//! when it fires. A member that came back (even on a connection opened before the old one's
//! drop was noticed) has a newer number, so an old timer can never evict it.

use std::sync::Arc;
use std::time::Duration;

use crate::core::room::{peer, remove_in, Departure, LinkedPeer, Peer, Rooms};
use crate::core::{ConnId, Handle, Label};

/// What a disconnect did.
#[derive(Debug)]
pub enum Disconnected<H> {
    /// The connection was not a member of any room.
    NotMember,
    /// The member left at once (no grace period).
    Left(Departure<H>),
    /// The member is kept, away, until the grace period ends or it comes back.
    Away {
        /// Its room.
        room: Arc<str>,
        /// Its key.
        member: Arc<str>,
    },
}

/// A request to bind an existing member to a new connection.
pub struct Rebind<H> {
    /// The member's key.
    pub member: Arc<str>,
    /// The room the client believes it is in; must match.
    pub room: Arc<str>,
    /// The display name the client believes it has; must match when given.
    pub name: Option<Arc<str>>,
    /// The new connection.
    pub conn: ConnId,
    /// How to reach it.
    pub handle: H,
    /// Whether the new connection may take the member from the connection it is still bound
    /// to (`current`, `new`): a member whose drop has not been noticed yet cannot tell a
    /// network switch from someone else presenting its key; the adapter decides.
    pub may_replace_live: fn(current: &H, new: &H) -> bool,
}

/// Why a rebind did not happen. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RebindError {
    /// No member has that key (never joined, or its grace period ended).
    #[error("unknown member")]
    Unknown,
    /// The member exists but in another room or under another name.
    #[error("member is in another room or has another name")]
    Mismatch,
    /// The new connection is already another member.
    #[error("connection already belongs to another member")]
    ConnBusy,
    /// The member is still bound to a live connection that `may_replace_live` would not
    /// let the new one replace.
    #[error("member is still connected elsewhere")]
    Live,
    /// The new connection closed before the rebind was handled.
    #[error("the connection is closed")]
    ConnectionClosed,
    /// The shared room state (cluster mode) could not be reached.
    #[error("room state unavailable, try again")]
    Unavailable,
}

/// What a rebind found.
#[derive(Debug)]
pub struct Rebound<H> {
    /// The room.
    pub room: Arc<str>,
    /// The connection the member was still bound to, if its drop had not been noticed yet.
    pub previous_conn: Option<Arc<str>>,
    /// Connected members with no link to it, oldest first.
    pub unlinked: Vec<Peer<H>>,
    /// Connected peers linked to it, with their own connector for the link.
    pub linked: Vec<LinkedPeer<H>>,
    /// Linked peers that are gone, by the connection the member knew them by.
    pub gone: Vec<Arc<str>>,
    /// The connection it was bound to before (how its peers knew it until now).
    pub last_conn: Arc<str>,
}

impl<H: Handle + Send + Sync + 'static> Rooms<H> {
    /// The connection `conn` dropped. With a zero `grace` its member leaves now; otherwise
    /// it is kept away and `on_expiry` runs with its departure if the grace period ends
    /// before it comes back.
    pub fn disconnect(
        self: &Arc<Self>,
        conn: ConnId,
        grace: Duration,
        on_expiry: impl FnOnce(Departure<H>) + Send + 'static,
    ) -> Disconnected<H> {
        if grace.is_zero() {
            return match self.leave(conn) {
                Some(d) => Disconnected::Left(d),
                None => Disconnected::NotMember,
            };
        }
        let marked = self.store.transact(|t| {
            let key = t.member_by_conn(conn)?.0.clone();
            t.unbind(&key);
            let member = t.member_mut(&key)?;
            member.absence += 1;
            Some((key, member.room.clone(), member.absence))
        });
        let Some((member, room, absence)) = marked else {
            return Disconnected::NotMember;
        };
        let rooms = Arc::downgrade(self);
        let key = member.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(rooms) = rooms.upgrade() else {
                return;
            };
            if let Some(departure) = rooms.expire(&key, absence) {
                on_expiry(departure);
            }
        });
        Disconnected::Away { room, member }
    }

    /// Ends absence number `absence` of member `key`, if it is still the current one.
    fn expire(&self, key: &Arc<str>, absence: u64) -> Option<Departure<H>> {
        self.store.transact(|t| {
            let member = t.member(key)?;
            if member.conn.is_some() || member.absence != absence {
                return None;
            }
            remove_in(t, key)
        })
    }

    /// Binds an existing member to a new connection, cancelling its grace period.
    pub fn rebind(&self, req: Rebind<H>) -> Result<Rebound<H>, RebindError> {
        self.store.transact(|t| {
            if !req.handle.is_open() {
                return Err(RebindError::ConnectionClosed);
            }
            let member = t.member(&req.member).ok_or(RebindError::Unknown)?;
            let name_differs = req.name.is_some() && req.name != member.name;
            if member.room != req.room || name_differs {
                return Err(RebindError::Mismatch);
            }
            if let Some((owner, _)) = t.member_by_conn(req.conn) {
                if *owner != req.member {
                    return Err(RebindError::ConnBusy);
                }
            }
            if let (Some(conn), Some(current)) = (member.conn, &member.handle) {
                if conn != req.conn && !(req.may_replace_live)(current, &req.handle) {
                    return Err(RebindError::Live);
                }
            }
            let last_conn: Arc<str> = member.last_conn.to_string().into();
            let previous = t.bind(&req.member, req.conn, req.handle);
            let previous_conn = previous
                .filter(|c| *c != req.conn)
                .map(|c| c.to_string().into());
            let links = match t.member_mut(&req.member) {
                Some(m) => {
                    m.absence += 1;
                    std::mem::take(&mut m.links)
                }
                None => return Err(RebindError::Unknown),
            };
            let mut kept = Vec::with_capacity(links.len());
            let mut linked = Vec::new();
            let mut gone = Vec::new();
            for link in links {
                match t.member(&link.peer) {
                    Some(p) if p.epoch == link.peer_epoch && p.room == req.room => {
                        if let Some(handle) = &p.handle {
                            linked.push(LinkedPeer {
                                member: link.peer.clone(),
                                handle: handle.clone(),
                                connector: link.connector.clone(),
                                label: Label::default(),
                            });
                        }
                        kept.push(link);
                    }
                    _ => gone.push(link.peer_conn.to_string().into()),
                }
            }
            let unlinked = t
                .room(&req.room)
                .map(|r| {
                    r.members
                        .iter()
                        .filter(|k| **k != req.member && !kept.iter().any(|l| l.peer == **k))
                        .map(|k| peer(t, k))
                        .filter(|p| p.handle.is_some())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(m) = t.member_mut(&req.member) {
                m.links = kept;
            }
            Ok(Rebound {
                room: req.room,
                previous_conn,
                unlinked,
                linked,
                gone,
                last_conn,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Join, LinkNote, Target};

    fn join(rooms: &Rooms<u32>, room: &str, key: &str, conn: ConnId, handle: u32) {
        rooms
            .join(Join {
                room: room.into(),
                member: key.into(),
                conn,
                handle,
                name: Some(key.into()),
                capacity: 0,
                max_rooms: 0,
            })
            .expect("joins");
    }

    fn link(rooms: &Rooms<u32>, from: ConnId, to: ConnId, connector: &str) {
        rooms
            .route(
                from,
                Target::Conn(to),
                Some(LinkNote {
                    connector: connector.into(),
                    stream: "user".into(),
                    max_links: 0,
                }),
            )
            .expect("routes");
    }

    #[tokio::test(start_paused = true)]
    async fn grace_expiry_tells_linked_peers() {
        let rooms = Arc::new(Rooms::<u32>::new());
        let (a, c) = (ConnId::new(), ConnId::new());
        join(&rooms, "y", "uA", a, 1);
        join(&rooms, "y", "uC", c, 3);
        link(&rooms, a, c, "cAC");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = rooms.disconnect(c, Duration::from_secs(15), move |d| {
            let _ = tx.send(d);
        });
        assert!(matches!(d, Disconnected::Away { .. }));
        let departure = rx.await.expect("expired");
        assert_eq!(&*departure.last_conn, c.to_string());
        assert_eq!(departure.linked.len(), 1);
        assert_eq!(departure.linked[0].handle, 1);
        assert_eq!(&*departure.linked[0].connector, "cAC");
        assert_eq!(rooms.sizes(), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_timer_never_evicts_a_member_that_came_back() {
        let rooms = Arc::new(Rooms::<u32>::new());
        let (b, b2) = (ConnId::new(), ConnId::new());
        join(&rooms, "y", "uB", b, 2);
        // The new connection rebinds before the old one's drop is noticed.
        let r = rooms
            .rebind(Rebind {
                member: "uB".into(),
                room: "y".into(),
                name: Some("uB".into()),
                conn: b2,
                handle: 22,
                may_replace_live: |_, _| true,
            })
            .expect("rebinds");
        assert_eq!(r.previous_conn.as_deref(), Some(b.to_string().as_str()));
        // The old connection's drop is noticed now: it is no longer the member's.
        let d = rooms.disconnect(b, Duration::from_secs(1), |_| panic!("must not expire"));
        assert!(matches!(d, Disconnected::NotMember));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(rooms.sizes(), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn rebind_inside_grace_cancels_the_timer_and_reports_links() {
        let rooms = Arc::new(Rooms::<u32>::new());
        let (a, b, c, b2) = (ConnId::new(), ConnId::new(), ConnId::new(), ConnId::new());
        join(&rooms, "y", "uA", a, 1);
        join(&rooms, "y", "uB", b, 2);
        join(&rooms, "y", "uC", c, 3);
        link(&rooms, a, b, "cAB");
        link(&rooms, c, b, "cCB");
        rooms.disconnect(b, Duration::from_secs(15), |_| panic!("must not expire"));
        // C leaves for good while B is away: B must learn it on return.
        rooms.leave(c);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = rooms
            .rebind(Rebind {
                member: "uB".into(),
                room: "y".into(),
                name: None,
                conn: b2,
                handle: 22,
                may_replace_live: |_, _| true,
            })
            .expect("rebinds");
        assert_eq!(r.linked.len(), 1);
        assert_eq!(&*r.linked[0].connector, "cAB");
        assert_eq!(r.gone, vec![Arc::<str>::from(c.to_string())]);
        assert!(r.unlinked.is_empty());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(rooms.sizes(), (1, 2));
    }

    #[test]
    fn rebind_checks_room_name_and_connection() {
        let rooms = Rooms::<u32>::new();
        let (a, b) = (ConnId::new(), ConnId::new());
        join(&rooms, "y", "uA", a, 1);
        join(&rooms, "y", "uB", b, 2);
        let req = |member: &str, room: &str, conn| Rebind {
            member: member.into(),
            room: room.into(),
            name: None,
            conn,
            handle: 9,
            may_replace_live: |_, _| false,
        };
        assert_eq!(
            rooms.rebind(req("nobody", "y", ConnId::new())).unwrap_err(),
            RebindError::Unknown
        );
        assert_eq!(
            rooms.rebind(req("uA", "z", ConnId::new())).unwrap_err(),
            RebindError::Mismatch
        );
        assert_eq!(
            rooms.rebind(req("uA", "y", b)).unwrap_err(),
            RebindError::ConnBusy
        );
        // uA is still connected on `a`, and the policy lets nobody replace it.
        assert_eq!(
            rooms.rebind(req("uA", "y", ConnId::new())).unwrap_err(),
            RebindError::Live
        );
        assert_eq!(rooms.membership(a).map(|(_, k)| k), Some("uA".into()));
    }

    /// A connection whose disconnect has been handled.
    #[derive(Clone)]
    struct Closed;
    impl Handle for Closed {
        fn is_open(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_closed_connection_can_neither_join_nor_rebind() {
        let rooms = Rooms::<Closed>::new();
        let joined = rooms.join(Join {
            room: "y".into(),
            member: "uA".into(),
            conn: ConnId::new(),
            handle: Closed,
            name: None,
            capacity: 0,
            max_rooms: 0,
        });
        assert_eq!(joined.err(), Some(crate::core::Refusal::ConnectionClosed));
        let rebound = rooms.rebind(Rebind {
            member: "uA".into(),
            room: "y".into(),
            name: None,
            conn: ConnId::new(),
            handle: Closed,
            may_replace_live: |_, _| true,
        });
        assert_eq!(rebound.err(), Some(RebindError::ConnectionClosed));
        assert_eq!(rooms.sizes(), (0, 0), "no ghost member");
    }
}
