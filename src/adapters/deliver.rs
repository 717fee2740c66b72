//! Where every message an adapter sends leaves it: [`deliver`].
//!
//! A member is reached through a [`Reach`]: this node's own socket, or (cluster mode) the
//! node that holds its connection. Local delivery enqueues on the socket without waiting,
//! within the receiver's budgets; remote delivery hands the message to the node's one ordered
//! publisher (`cluster::link`), and the receiving node delivers it here again, locally, after
//! checking that its socket is still in the room the sender stamped ([`Inlets`]). Each message
//! is delivered or counted as dropped, by reason, on the node that dropped it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError};

use super::{budget, quiet, transport, ConnState};
use crate::cluster::link::{Link, Message};
use crate::endpoints::source::Source;
use crate::stats;
use crate::store::redis::Address;
use crate::store::{Locator, SharedRooms};

/// How an adapter reaches a member's connection.
#[derive(Clone)]
pub enum Reach {
    /// A socket of this node.
    Local(SocketRef),
    /// A connection held by another node of the cluster.
    Remote(Arc<Remote>),
}

/// A connection on another node, and the room its member is in there (every message to it
/// carries the room, and the receiving node checks it).
pub struct Remote {
    node: Arc<str>,
    conn: Arc<str>,
    room: Arc<str>,
    link: Arc<Link>,
}

impl Reach {
    /// The connection's id (the socket id clients know it by).
    pub fn id(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Reach::Local(s) => s.id.to_string().into(),
            Reach::Remote(r) => (*r.conn).into(),
        }
    }

    /// The socket, when it is this node's.
    pub fn local(&self) -> Option<&SocketRef> {
        match self {
            Reach::Local(s) => Some(s),
            Reach::Remote(_) => None,
        }
    }
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::Local(s) => write!(f, "Local({})", s.id),
            Reach::Remote(r) => write!(f, "Remote({}@{})", r.conn, r.node),
        }
    }
}

/// A socket may be bound to a room while it is connected and its disconnect has not been
/// handled. The core checks this under the state lock; the disconnect handling marks the
/// socket before it takes that lock, so a join racing a disconnect either happens before it
/// (and is undone by it) or is refused. A remote connection is its own node's to check.
impl crate::core::Handle for Reach {
    fn is_open(&self) -> bool {
        match self {
            Reach::Local(s) => {
                s.connected()
                    && !s
                        .extensions
                        .get::<Arc<ConnState>>()
                        .is_some_and(|state| state.departed())
            }
            Reach::Remote(_) => true,
        }
    }
}

/// Sends one event to one member, counting the outcome. Never waits.
pub fn deliver<T: ?Sized + Serialize>(
    protocol: &'static str,
    to: &Reach,
    event: &'static str,
    payload: &T,
) -> bool {
    match to {
        Reach::Local(socket) => deliver_local(protocol, socket, event, payload),
        Reach::Remote(r) => {
            let message = Message::Deliver {
                realm: protocol.into(),
                conn: (*r.conn).into(),
                room: (*r.room).into(),
                event: event.into(),
            };
            match r.link.send(&r.node, &message, payload) {
                Ok(()) => true,
                Err(reason) => {
                    stats::dropped(protocol, reason);
                    if quiet::should_log(protocol, reason) {
                        tracing::warn!(protocol, event, node = %r.node, reason, "message to another node dropped");
                    }
                    false
                }
            }
        }
    }
}

/// Sends one event to one of this node's sockets. A full send buffer drops the message and
/// counts it; a receiver that keeps missing messages, or that would pin more than its byte
/// budget (`limits.send_budget`), is closed.
fn deliver_local<T: ?Sized + Serialize>(
    protocol: &'static str,
    to: &SocketRef,
    event: &'static str,
    payload: &T,
) -> bool {
    let state = to.extensions.get::<Arc<ConnState>>();
    if let Some(state) = &state {
        if state.has_budget() && !state.charge(budget::json_len(payload) + event.len() as u64) {
            stats::dropped(protocol, "send_budget");
            close_slow(protocol, to, state, "send_budget");
            return false;
        }
    }
    match to.emit(event, payload) {
        Ok(()) => {
            stats::sent(protocol, event);
            true
        }
        Err(e) => {
            let reason = match &e {
                SendError::Socket(SocketError::InternalChannelFull) => "send_buffer_full",
                SendError::Socket(SocketError::Closed) => "receiver_closed",
                SendError::Serialize(_) => "encode_error",
            };
            stats::dropped(protocol, reason);
            if reason == "receiver_closed" {
                tracing::debug!(protocol, event, to = %to.id, "drop: receiver closed");
                return false;
            }
            if quiet::should_log(protocol, reason) {
                tracing::warn!(protocol, event, to = %to.id, reason, "message dropped");
            }
            if let Some(state) = &state {
                if state.missed_one() {
                    close_slow(protocol, to, state, "send_buffer_full");
                }
            }
            false
        }
    }
}

/// Closes a receiver too slow to keep up, once: its member leaves at once (peers are told in
/// the protocol's words), and its transport is shut down so that its send buffer is freed
/// now rather than at the heartbeat timeout.
fn close_slow(protocol: &'static str, to: &SocketRef, state: &ConnState, why: &'static str) {
    if !state.start_closing() {
        return;
    }
    stats::dropped(protocol, "slow_consumer_disconnect");
    if quiet::should_log(protocol, "slow_consumer_disconnect") {
        tracing::warn!(protocol, to = %to.id, why, "closing a receiver too slow to keep up");
    }
    // With room in its buffer, socketioxide queues a disconnect packet and runs the
    // disconnect handler; with a full buffer it does neither, so the handler runs here.
    if to.clone().disconnect().is_err() {
        state.evict(to);
    }
    let shut = transport::shut_down(to);
    tracing::debug!(protocol, to = %to.id, shut, "slow receiver's transport shut down");
    crate::memory::trim_soon();
}

/// How one realm reaches members on other nodes (cluster mode).
pub struct ClusterLocator {
    realm: &'static str,
    link: Arc<Link>,
}

impl ClusterLocator {
    /// The locator of realm `realm`, publishing through `link`.
    pub fn new(realm: &'static str, link: Arc<Link>) -> Arc<Self> {
        Arc::new(Self { realm, link })
    }
}

impl Locator<Reach> for ClusterLocator {
    fn remote(&self, at: &Address, room: &Arc<str>) -> Reach {
        Reach::Remote(Arc::new(Remote {
            node: at.node.as_str().into(),
            conn: at.conn.as_str().into(),
            room: room.clone(),
            link: self.link.clone(),
        }))
    }

    fn source(&self, handle: &Reach) -> String {
        match handle {
            Reach::Local(s) => {
                let source = Source::of_parts(s.req_parts());
                match source.ip {
                    Some(ip) => format!("{ip} {}", String::from_utf8_lossy(&source.agent)),
                    // Matches nothing, as `Source::same_as` does.
                    None => format!("unknown {}", uuid::Uuid::new_v4().simple()),
                }
            }
            Reach::Remote(r) => format!("remote {}", r.conn),
        }
    }

    fn detach(&self, at: &Address) {
        let message = Message::Detach {
            realm: self.realm.into(),
            conn: at.conn.as_str().into(),
        };
        if let Err(reason) = self.link.send(&at.node, &message, &()) {
            tracing::warn!(realm = self.realm, node = %at.node, reason, "cluster: could not tell a node its connection lost its member");
        }
    }
}

/// The realms of this node that messages from other nodes are delivered into.
#[derive(Default)]
pub struct Inlets {
    realms: HashMap<&'static str, Inlet>,
}

struct Inlet {
    rooms: Arc<SharedRooms<Reach>>,
    /// The protocol's event names (a received name is matched to its static label).
    events: &'static [&'static str],
}

impl Inlets {
    /// Adds protocol `protocol`'s realm, whose events are `events`. Messages name the
    /// protocol of their receiver: with cross-protocol rooms both protocols' entries lead to
    /// the one realm they share.
    pub fn add(
        &mut self,
        protocol: &'static str,
        rooms: Arc<SharedRooms<Reach>>,
        events: &'static [&'static str],
    ) {
        self.realms.insert(protocol, Inlet { rooms, events });
    }

    /// Delivers one message from another node.
    pub fn receive(&self, raw: &[u8]) {
        let Some((message, payload)) = Message::decode(raw) else {
            stats::cluster_bad_message();
            return;
        };
        match message {
            Message::Deliver {
                realm,
                conn,
                room,
                event,
            } => {
                let Some(inlet) = self.realms.get(&*realm) else {
                    stats::cluster_bad_message();
                    return;
                };
                let Some((&realm, _)) = self.realms.get_key_value(&*realm) else {
                    stats::cluster_bad_message();
                    return;
                };
                let Some(event) = inlet.events.iter().find(|e| **e == &*event) else {
                    stats::cluster_bad_message();
                    return;
                };
                let Some(payload) = payload else {
                    stats::cluster_bad_message();
                    return;
                };
                match inlet.rooms.member_in(&conn, &room) {
                    Some(to) => {
                        deliver(realm, &to, event, payload);
                    }
                    None => {
                        stats::dropped(realm, "not_in_stamped_room");
                        tracing::debug!(realm, conn = %conn, room = %room, "message from another node: connection not in that room here");
                    }
                }
            }
            Message::Detach { realm, conn } => {
                // Named by the realm (shared by both protocols' entries, or one's own).
                if let Some(inlet) = self.realms.values().find(|i| i.rooms.realm() == &*realm) {
                    inlet.rooms.detached(&conn);
                    if let Ok(sid) = Sid::from_str(&conn) {
                        tracing::debug!(realm = %realm, %sid, "connection's member moved to another node");
                    }
                }
            }
        }
    }
}
