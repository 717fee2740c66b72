//! What operators see of a protocol (rooms, members, connections), without knowing anything
//! about the protocol.

use std::sync::Arc;

use socketioxide::extract::SocketRef;
use socketioxide::SocketIo;

use super::mixed::RealmStore;
use super::Reach;
use crate::core::{ConnInfo, RoomView};

/// What operators can see of a protocol.
pub trait Realm: Send + Sync {
    /// Protocol name.
    fn name(&self) -> &'static str;
    /// Rooms and their members.
    fn rooms(&self) -> Vec<RoomView>;
    /// One room and its members.
    fn room(&self, name: &str) -> Option<RoomView>;
    /// Number of rooms and members.
    fn sizes(&self) -> (usize, usize);
    /// Open connections of this node, by Engine.IO version and transport.
    fn connections(&self) -> Vec<(ConnInfo, usize)>;
}

/// Transport details of a socket.
pub fn describe(socket: &SocketRef) -> ConnInfo {
    ConnInfo {
        engine_io: match socket.protocol() {
            socketioxide::ProtocolVersion::V4 => 3,
            socketioxide::ProtocolVersion::V5 => 4,
        },
        transport: match socket.transport_type() {
            socketioxide::TransportType::Polling => "polling",
            socketioxide::TransportType::Websocket => "websocket",
        },
    }
}

/// Transport details of a member's connection; a connection on another node is described
/// by that node.
fn describe_reach(reach: &Reach) -> ConnInfo {
    match reach {
        Reach::Local(s) => describe(s),
        Reach::Remote(_) => ConnInfo {
            engine_io: 0,
            transport: "remote",
        },
    }
}

/// The operators' view of an adapter: its rooms, and the namespace its sockets live on.
pub struct SocketRealm {
    name: &'static str,
    store: Arc<RealmStore>,
    io: SocketIo,
    namespace: String,
}

impl SocketRealm {
    /// The view of protocol `name`, serving `store` on `namespace` of `io`.
    pub fn new(
        name: &'static str,
        store: Arc<RealmStore>,
        io: &SocketIo,
        namespace: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            store,
            io: io.clone(),
            namespace: namespace.to_owned(),
        })
    }
}

impl Realm for SocketRealm {
    fn name(&self) -> &'static str {
        self.name
    }
    fn rooms(&self) -> Vec<RoomView> {
        self.store.snapshot(describe_reach)
    }
    fn room(&self, name: &str) -> Option<RoomView> {
        self.store.room_snapshot(name, describe_reach)
    }
    fn sizes(&self) -> (usize, usize) {
        self.store.sizes()
    }
    fn connections(&self) -> Vec<(ConnInfo, usize)> {
        count_connections(&self.io, &self.namespace)
    }
}

/// Counts the sockets of namespace `ns` by Engine.IO version and transport.
fn count_connections(io: &SocketIo, ns: &str) -> Vec<(ConnInfo, usize)> {
    let mut counts: Vec<(ConnInfo, usize)> = Vec::new();
    let Some(op) = io.of(ns) else {
        return counts;
    };
    for socket in op.sockets() {
        let info = describe(&socket);
        match counts
            .iter_mut()
            .find(|(c, _)| c.engine_io == info.engine_io && c.transport == info.transport)
        {
            Some((_, n)) => *n += 1,
            None => counts.push((info, 1)),
        }
    }
    counts
}
