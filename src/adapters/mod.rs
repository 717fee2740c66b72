//! Protocol adapters: each turns one protocol's wire events into core calls and the core's
//! outcomes back into that protocol's wire events.
//!
//! Shared plumbing, one concept per module: [`inbound`] (a socket's events reach its adapter
//! in the order the client sent them), [`deliver`] (every message leaves through one function,
//! to a local socket or another node), [`stores`] (an adapter opens its realm's store without
//! knowing which kind), [`view`] (what operators see). Limits per connection are in `guard`.

mod budget;
pub mod chatroom;
pub mod deliver;
mod guard;
mod inbound;
pub mod mixed;
mod quiet;
pub mod stores;
mod transport;
pub mod view;
pub mod webrtcroom;
mod wire;

use std::future::Future;
use std::sync::Arc;

use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::SocketIo;

use crate::access::{self, Tokens};
use crate::endpoints::admission::{Client, SourceCounts};
use crate::stats;
pub use deliver::{deliver, Reach};
pub use guard::{Admission, ConnState, Gate, LimitHit};
pub use inbound::drained;
use inbound::Inbound;
pub use stores::Stores;
pub use view::{describe, Realm, SocketRealm};
pub use wire::EventFrame;

/// What an adapter implements to receive a socket's events.
pub trait Protocol: Send + Sync + 'static {
    /// Protocol name, for metrics and logs.
    const NAME: &'static str;

    /// The protocol's limits and connection count.
    fn gate(&self) -> &Gate;

    /// Whether its store may wait (cluster mode): each connection's events are then queued
    /// and handled by a task of its own, in order.
    fn waits(&self) -> bool;

    /// The protocol's connection-token verifier, when tokens are configured.
    fn tokens(&self) -> Option<&Tokens> {
        None
    }

    /// A socket connected to the protocol's namespace (handlers are already attached).
    fn on_connect(&self, socket: &SocketRef) {
        let _ = socket;
    }

    /// One event from a socket, in arrival order, within the limits.
    fn on_event(
        &self,
        socket: &SocketRef,
        frame: EventFrame<'_>,
    ) -> impl Future<Output = ()> + Send;

    /// The socket is gone; called once, after its last event.
    fn on_disconnect(
        &self,
        socket: &SocketRef,
        reason: DisconnectReason,
    ) -> impl Future<Output = ()> + Send;

    /// Tells a client that its message was refused by a limit, in the protocol's words.
    /// Protocols without an error event say nothing (the refusal is logged and counted).
    fn refuse(&self, socket: &SocketRef, hit: &LimitHit) {
        let _ = (socket, hit);
    }
}

/// A bound adapter: its view for operators and the HTTP routes it serves.
pub struct Bound {
    /// The operators' view.
    pub realm: Arc<dyn Realm>,
    /// Extra HTTP routes (e.g. chatroom's `/checkUsername`).
    pub routes: axum::Router,
}

/// Binds an adapter to a namespace of a Socket.IO instance.
pub fn bind<P: Protocol>(io: &SocketIo, namespace: &str, protocol: Arc<P>) {
    let sources = SourceCounts::new(protocol.gate().limits().max_connections_per_ip);
    let attach = {
        let protocol = protocol.clone();
        // Runs as connect middleware, i.e. before the server acknowledges the connect, so a
        // client's first event always finds its handler.
        move |s: SocketRef, TryData(auth): TryData<serde_json::Value>| {
            let protocol = protocol.clone();
            let sources = sources.clone();
            async move {
                if let Some(tokens) = protocol.tokens() {
                    if let Err(e) = access::connect(tokens, &s, auth.ok().as_ref()) {
                        stats::refused(P::NAME, e.kind());
                        tracing::info!(protocol = P::NAME, sid = %s.id, reason = e.kind(), "connection refused: token");
                        return Err(LimitHit::new(e.kind(), e.to_string()));
                    }
                }
                let client = Client::of(&s);
                let slot = match client.as_ref().map(|c| (c, sources.acquire(c.key()))) {
                    Some((_, Ok(slot))) => Some(Arc::new(slot)),
                    Some((c, Err(max))) => {
                        c.refused(P::NAME, "max_connections_per_ip", s);
                        return Err(LimitHit::new(
                            "max_connections_per_ip",
                            format!("too many connections from your address ({max})"),
                        ));
                    }
                    None => None,
                };
                let state = match protocol.gate().admit() {
                    Admission::Admitted(state) => state,
                    Admission::Full(max) => {
                        match &client {
                            Some(c) => c.refused(P::NAME, "max_connections", s),
                            None => {
                                // Only the in-process legacy WebSocket proxy has no client.
                                stats::refused(P::NAME, "max_connections");
                                tracing::debug!(protocol = P::NAME, sid = %s.id, max, "connection refused: too many connections");
                            }
                        }
                        return Err(LimitHit::new(
                            "max_connections",
                            format!("the server is full ({max} connections)"),
                        ));
                    }
                };
                if let Some(c) = &client {
                    c.expect_poll(P::NAME, &s);
                }
                let weak = Arc::downgrade(&protocol);
                state.set_evictor(Box::new(move |s: &SocketRef| {
                    if let Some(protocol) = weak.upgrade() {
                        let s = s.clone();
                        inbound::drive(async move {
                            protocol
                                .on_disconnect(&s, DisconnectReason::ServerNSDisconnect)
                                .await;
                        });
                    }
                }));
                s.extensions.insert(state.clone());
                let inbound = Inbound::new(protocol, state, slot, &s);
                s.on_fallback(inbound.clone());
                s.on_disconnect(inbound);
                Ok(())
            }
        }
    };
    let connected = move |s: SocketRef| {
        let protocol = protocol.clone();
        async move { protocol.on_connect(&s) }
    };
    io.ns(namespace.to_owned(), connected.with(attach));
}

/// Runs the departure of every connection of `io` now, as if each had dropped, without closing
/// any: a node leaving the cluster hands its members over this way (peers are told, chatroom
/// members become away and may reconnect to another node), then closes the transports so the
/// clients reconnect. socketioxide's own close does not run disconnect handlers.
pub fn depart_all(io: &SocketIo) {
    for ns in io.nsps() {
        for socket in ns.sockets() {
            if let Some(state) = socket.extensions.get::<Arc<ConnState>>() {
                state.evict(&socket);
            }
        }
    }
}

/// Label values every adapter can count: the connection guard's limits, frame decoding,
/// delivery to send buffers, and the core's refusals and routing errors. Each adapter adds
/// its own list; see [`stats::register`].
pub const SHARED_LABELS: stats::Known = stats::Known {
    sent: &[],
    relayed: &[],
    dropped: &[
        "send_buffer_full",
        "receiver_closed",
        "encode_error",
        "slow_consumer_disconnect",
        "not_joined",
        "unknown_target",
        "other_room",
        "target_away",
        "send_budget",
        "store_unavailable",
        "cluster_queue_full",
        "cluster_stopped",
        "not_in_stamped_room",
        "mixed_no_connector",
        "mixed_incomplete",
    ],
    refused: &[
        "max_connections",
        "max_connections_per_ip",
        "abandoned_handshake",
        "origin_not_allowed",
        "origin_missing",
        "token_missing",
        "token_malformed",
        "token_expired",
        "token_bad_signature",
        "token_rejected",
        "token_room",
        "token_name",
        "payload_size",
        "rate",
        "flood_disconnect",
        "name_length",
        "room_full",
        "name_taken",
        "member_id_in_use",
        "max_rooms",
        "store_unavailable",
        "inbound_queue_full",
        "mixed_display",
        "mixed_renegotiation",
    ],
    bad_input: &["binary", "malformed_frame", "internal_error"],
};
