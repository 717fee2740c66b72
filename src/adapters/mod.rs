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

pub mod chatroom;
pub mod webrtcroom;
mod wire;

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, DisconnectHandler, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{SendError, SocketError, SocketIo};

use crate::stats;
pub use wire::EventFrame;

/// What an adapter implements to receive a socket's events.
pub trait Protocol: Send + Sync + 'static {
    /// Protocol name, for metrics and logs.
    const NAME: &'static str;

    /// A socket connected to the protocol's namespace (handlers are already attached).
    fn on_connect(&self, socket: &SocketRef) {
        let _ = socket;
    }

    /// One event from a socket, in arrival order. `frame` is the decoded event array.
    fn on_event(&self, socket: &SocketRef, frame: EventFrame<'_>);

    /// The socket is gone; called once, after its last event.
    fn on_disconnect(&self, socket: &SocketRef, reason: DisconnectReason);
}

/// Binds an adapter to a namespace of a Socket.IO instance.
pub fn bind<P: Protocol>(io: &SocketIo, namespace: &str, protocol: Arc<P>) {
    let attach = {
        let protocol = protocol.clone();
        // Runs as connect middleware, i.e. before the server acknowledges the connect, so a
        // client's first event always finds its handler.
        move |s: SocketRef| {
            let inbound = Inbound(protocol.clone());
            async move {
                s.on_fallback(inbound.clone());
                s.on_disconnect(inbound);
                Ok::<(), std::convert::Infallible>(())
            }
        }
    };
    let connected = move |s: SocketRef| {
        let protocol = protocol.clone();
        async move { protocol.on_connect(&s) }
    };
    io.ns(namespace.to_owned(), connected.with(attach));
}

/// Delivers a socket's events and its disconnect to an adapter, synchronously.
struct Inbound<P>(Arc<P>);

impl<P> Clone for Inbound<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Type marker for socketioxide's handler traits.
#[doc(hidden)]
pub struct InOrder;

impl<P: Protocol> MessageHandler<LocalAdapter, InOrder> for Inbound<P> {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, v: Value, _ack: Option<i64>) {
        let socket = SocketRef::from(s);
        let text = match &v {
            Value::Str(text, None) => text.as_str(),
            Value::Str(_, Some(_)) | Value::Bytes(_) => {
                stats::bad_input(P::NAME, "binary");
                tracing::debug!(protocol = P::NAME, sid = %socket.id, "binary event ignored");
                return;
            }
        };
        match EventFrame::parse(text) {
            Ok(frame) => self.0.on_event(&socket, frame),
            Err(e) => {
                stats::bad_input(P::NAME, "malformed_frame");
                tracing::debug!(protocol = P::NAME, sid = %socket.id, error = %e, "malformed event");
            }
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
        self.0.on_disconnect(&socket, reason);
        defer(s);
    }
}

/// Sends one event to one socket, counting the outcome. Never waits: a full send buffer
/// drops the message and counts it (the client is too slow to keep up).
pub fn deliver<T: ?Sized + Serialize>(
    protocol: &'static str,
    to: &SocketRef,
    event: &'static str,
    payload: &T,
) -> bool {
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
            } else {
                tracing::warn!(protocol, event, to = %to.id, reason, "message dropped");
            }
            false
        }
    }
}

/// A raw JSON value that is serialized exactly as received.
pub type Raw<'a> = &'a RawValue;
