//! Protocol adapters: each turns one protocol's wire events into core calls and the core's
//! outcomes back into that protocol's wire events.
//!
//! This module holds the plumbing every adapter shares: how a socket's events reach the
//! adapter *in the order the client sent them*, and how sends are counted.
//!
//! Ordering: socketioxide spawns one task per incoming message for ordinary handlers, which
//! lets a later message of a socket run before an earlier one. Signalling cannot tolerate that
//! (a candidate before its offer breaks the call), so adapters do not use those handlers.
//! [`Inbound`] implements socketioxide's handler traits directly and handles each event
//! synchronously inside the socket's read path: the next message of that socket is not read
//! until the previous one is handled. Handling never waits (core calls take a short lock,
//! sends only enqueue), so this costs nothing in concurrency between sockets.

mod budget;
pub mod chatroom;
mod guard;
mod quiet;
mod transport;
pub mod webrtcroom;
mod wire;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, DisconnectHandler, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{SendError, SocketError, SocketIo};

use crate::access::{self, Tokens};
use crate::core::{ConnInfo, RoomView, Rooms};
use crate::endpoints::admission::{Client, SourceCounts, SourceSlot};
use crate::stats;
pub use guard::{Admission, ConnState, Gate, LimitHit};
pub use wire::EventFrame;

/// What an adapter implements to receive a socket's events.
pub trait Protocol: Send + Sync + 'static {
    /// Protocol name, for metrics and logs.
    const NAME: &'static str;

    /// The protocol's limits and connection count.
    fn gate(&self) -> &Gate;

    /// The protocol's connection-token verifier, when tokens are configured.
    fn tokens(&self) -> Option<&Tokens> {
        None
    }

    /// A socket connected to the protocol's namespace (handlers are already attached).
    fn on_connect(&self, socket: &SocketRef) {
        let _ = socket;
    }

    /// One event from a socket, in arrival order, within the limits.
    fn on_event(&self, socket: &SocketRef, frame: EventFrame<'_>);

    /// The socket is gone; called once, after its last event.
    fn on_disconnect(&self, socket: &SocketRef, reason: DisconnectReason);

    /// Tells a client that its message was refused by a limit, in the protocol's words.
    /// Protocols without an error event say nothing (the refusal is logged and counted).
    fn refuse(&self, socket: &SocketRef, hit: &LimitHit) {
        let _ = (socket, hit);
    }
}

/// What operators can see of a protocol, without knowing anything about the protocol.
pub trait Realm: Send + Sync {
    /// Protocol name.
    fn name(&self) -> &'static str;
    /// Rooms and their members.
    fn rooms(&self) -> Vec<RoomView>;
    /// One room and its members.
    fn room(&self, name: &str) -> Option<RoomView>;
    /// Number of rooms and members.
    fn sizes(&self) -> (usize, usize);
    /// Open connections, by Engine.IO version and transport.
    fn connections(&self) -> Vec<(ConnInfo, usize)>;
}

/// A bound adapter: its view for operators and the HTTP routes it serves.
pub struct Bound {
    /// The operators' view.
    pub realm: Arc<dyn Realm>,
    /// Extra HTTP routes (e.g. chatroom's `/checkUsername`).
    pub routes: axum::Router,
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

/// The operators' view of an adapter whose rooms hold socket handles: its rooms, and the
/// namespace its sockets live on.
pub struct SocketRealm {
    name: &'static str,
    rooms: Arc<Rooms<SocketRef>>,
    io: SocketIo,
    namespace: String,
}

impl SocketRealm {
    /// The view of protocol `name`, serving `rooms` on `namespace` of `io`.
    pub fn new(
        name: &'static str,
        rooms: Arc<Rooms<SocketRef>>,
        io: &SocketIo,
        namespace: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            rooms,
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
        self.rooms.snapshot(describe)
    }
    fn room(&self, name: &str) -> Option<RoomView> {
        self.rooms.room_snapshot(name, describe)
    }
    fn sizes(&self) -> (usize, usize) {
        self.rooms.sizes()
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
                        protocol.on_disconnect(s, DisconnectReason::ServerNSDisconnect);
                    }
                }));
                s.extensions.insert(state.clone());
                let inbound = Inbound {
                    protocol,
                    state,
                    slot,
                };
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

/// Delivers one socket's events and its disconnect to an adapter, synchronously, after the
/// per-connection limits.
struct Inbound<P> {
    protocol: Arc<P>,
    state: Arc<ConnState>,
    /// The connection's place in its source address's count.
    slot: Option<Arc<SourceSlot>>,
}

impl<P> Clone for Inbound<P> {
    fn clone(&self) -> Self {
        Self {
            protocol: self.protocol.clone(),
            state: self.state.clone(),
            slot: self.slot.clone(),
        }
    }
}

/// Type marker for socketioxide's handler traits.
#[doc(hidden)]
pub struct InOrder;

impl<P: Protocol> Inbound<P> {
    fn handle(&self, socket: &SocketRef, v: &Value) {
        let text = match v {
            Value::Str(text, None) => text.as_str(),
            Value::Str(_, Some(_)) | Value::Bytes(_) => {
                stats::bad_input(P::NAME, "binary");
                tracing::debug!(protocol = P::NAME, sid = %socket.id, "binary event ignored");
                return;
            }
        };
        if let Err(hit) = self.state.check(text.len(), self.protocol.gate()) {
            self.refuse(socket, &hit);
            return;
        }
        match EventFrame::parse(text) {
            Ok(frame) => {
                let received = Instant::now();
                self.protocol.on_event(socket, frame);
                stats::handled(P::NAME, received.elapsed());
            }
            Err(e) => {
                stats::bad_input(P::NAME, "malformed_frame");
                tracing::debug!(protocol = P::NAME, sid = %socket.id, error = %e, "malformed event");
            }
        }
    }

    fn refuse(&self, socket: &SocketRef, hit: &LimitHit) {
        stats::refused(P::NAME, hit.kind);
        tracing::debug!(protocol = P::NAME, sid = %socket.id, limit = hit.kind, "message refused");
        if hit.kind == "rate" {
            if self.state.flooding(self.protocol.gate()) {
                if quiet::should_log(P::NAME, "flood_disconnect") {
                    tracing::warn!(protocol = P::NAME, sid = %socket.id, "closing a connection that keeps flooding");
                }
                stats::refused(P::NAME, "flood_disconnect");
                let _ = socket.clone().disconnect();
                return;
            }
            if !self.state.first_strike() {
                return;
            }
        }
        self.protocol.refuse(socket, hit);
    }
}

impl<P: Protocol> MessageHandler<LocalAdapter, InOrder> for Inbound<P> {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, v: Value, _ack: Option<i64>) {
        let socket = SocketRef::from(s);
        // A bug reached by one client's input must not take its connection's read task (or
        // the process) down with it: contain it, count it, carry on. State stays usable:
        // the store's mutex does not poison and no lock is held across this call.
        if catch_unwind(AssertUnwindSafe(|| self.handle(&socket, &v))).is_err() {
            stats::bad_input(P::NAME, "internal_error");
            tracing::error!(protocol = P::NAME, sid = %socket.id, "event handler panicked; event ignored");
        }
    }
}

impl<P: Protocol> DisconnectHandler<LocalAdapter, InOrder> for Inbound<P> {
    fn call_with_defer(
        &self,
        s: Arc<Socket<LocalAdapter>>,
        reason: DisconnectReason,
        defer: fn(Arc<Socket<LocalAdapter>>),
    ) {
        let socket = SocketRef::from(s.clone());
        self.protocol.gate().release();
        if let Some(slot) = &self.slot {
            slot.release();
        }
        // An eviction may have run the protocol's handling already (see `deliver`).
        if self.state.claim_departure()
            && catch_unwind(AssertUnwindSafe(|| {
                self.protocol.on_disconnect(&socket, reason)
            }))
            .is_err()
        {
            stats::bad_input(P::NAME, "internal_error");
            tracing::error!(protocol = P::NAME, sid = %socket.id, "disconnect handler panicked");
        }
        defer(s);
    }
}

/// A socket may be bound to a room while it is connected and its disconnect has not been
/// handled. The core checks this under the state lock; the disconnect handling marks the
/// socket before it takes that lock, so a join racing a disconnect either happens before it
/// (and is undone by it) or is refused.
impl crate::core::Handle for SocketRef {
    fn is_open(&self) -> bool {
        self.connected()
            && !self
                .extensions
                .get::<Arc<ConnState>>()
                .is_some_and(|state| state.departed())
    }
}

/// Sends one event to one socket, counting the outcome. Never waits: a full send buffer
/// drops the message and counts it; a receiver that keeps missing messages, or that would
/// pin more than its byte budget (`limits.send_budget`), is closed.
pub fn deliver<T: ?Sized + Serialize>(
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
    ],
    bad_input: &["binary", "malformed_frame", "internal_error"],
};
