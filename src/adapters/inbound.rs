//! How a socket's events reach its adapter: in the order the client sent them, within the
//! per-connection limits, with panics contained.
//!
//! socketioxide spawns one task per incoming message for ordinary handlers, which lets a later
//! message of a socket run before an earlier one. Signalling cannot tolerate that (a candidate
//! before its offer breaks the call), so adapters do not use those handlers: [`Inbound`]
//! implements socketioxide's handler traits directly and is called inside the socket's read
//! path, one message after the other.
//!
//! - With the in-memory store nothing an adapter does waits (core calls take a short lock,
//!   sends only enqueue), so each event is handled right there, synchronously: the next
//!   message of that socket is not read until the previous one is handled.
//! - With the shared store (cluster mode) a handler awaits Redis. Each connection then gets
//!   one queue and one task that handles its events, and finally its disconnect, one after
//!   the other: still in order, and other connections are never held up.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures_util::FutureExt;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{DisconnectHandler, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::sync::mpsc;

use super::{quiet, ConnState, EventFrame, LimitHit, Protocol};
use crate::endpoints::admission::SourceSlot;
use crate::stats;

/// Most events one connection may have waiting for its handler in cluster mode (beyond the
/// rate limit's burst, a client cannot get there).
const QUEUE: usize = 1024;

/// Departures run by an eviction still being handled on a task of their own (cluster mode):
/// a graceful stop evicts every connection and waits for these, so that every departure is
/// written and told before the node leaves the cluster.
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Waits (at most `limit`) until every eviction's departure was handled.
pub async fn drained(limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while QUEUED.load(Ordering::Acquire) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

/// What a connection's queue carries (cluster mode).
enum Item {
    Event(Value),
    Disconnect(DisconnectReason),
}

/// Delivers one socket's events and its disconnect to an adapter, in order, after the
/// per-connection limits.
pub(super) struct Inbound<P> {
    pub(super) protocol: Arc<P>,
    pub(super) state: Arc<ConnState>,
    /// The connection's place in its source address's count.
    pub(super) slot: Option<Arc<SourceSlot>>,
    /// The connection's queue, when its adapter's store may wait.
    queue: Option<mpsc::Sender<Item>>,
}

impl<P> Clone for Inbound<P> {
    fn clone(&self) -> Self {
        Self {
            protocol: self.protocol.clone(),
            state: self.state.clone(),
            slot: self.slot.clone(),
            queue: self.queue.clone(),
        }
    }
}

/// Type marker for socketioxide's handler traits.
#[doc(hidden)]
pub struct InOrder;

impl<P: Protocol> Inbound<P> {
    /// The handlers of `socket`; with a store that may wait, also its queue and task.
    pub(super) fn new(
        protocol: Arc<P>,
        state: Arc<ConnState>,
        slot: Option<Arc<SourceSlot>>,
        socket: &SocketRef,
    ) -> Self {
        let mut inbound = Self {
            protocol,
            state,
            slot,
            queue: None,
        };
        if inbound.protocol.waits() {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(inbound.clone().drain(socket.clone(), rx));
            inbound.queue = Some(tx);
        }
        inbound
    }

    /// Cluster mode: handles a connection's queued events, then its disconnect, in order.
    async fn drain(self, socket: SocketRef, mut rx: mpsc::Receiver<Item>) {
        while let Some(item) = rx.recv().await {
            match item {
                Item::Event(v) => {
                    let handled = AssertUnwindSafe(self.dispatch(&socket, &v))
                        .catch_unwind()
                        .await;
                    if handled.is_err() {
                        self.panicked(&socket, "event handler panicked; event ignored");
                    }
                }
                Item::Disconnect(reason) => {
                    self.departure(&socket, reason).await;
                    return;
                }
            }
        }
    }

    /// Checks an event against the limits; `false` when it was refused.
    fn admit(&self, socket: &SocketRef, v: &Value) -> bool {
        let text = match v {
            Value::Str(text, None) => text.as_str(),
            Value::Str(_, Some(_)) | Value::Bytes(_) => {
                stats::bad_input(P::NAME, "binary");
                tracing::debug!(protocol = P::NAME, sid = %socket.id, "binary event ignored");
                return false;
            }
        };
        if let Err(hit) = self.state.check(text.len(), self.protocol.gate()) {
            self.refuse(socket, &hit);
            return false;
        }
        true
    }

    /// Parses an admitted event and hands it to the adapter.
    async fn dispatch(&self, socket: &SocketRef, v: &Value) {
        let Value::Str(text, None) = v else {
            return;
        };
        match EventFrame::parse(text.as_str()) {
            Ok(frame) => {
                let received = Instant::now();
                self.protocol.on_event(socket, frame).await;
                stats::handled(P::NAME, received.elapsed());
            }
            Err(e) => {
                stats::bad_input(P::NAME, "malformed_frame");
                tracing::debug!(protocol = P::NAME, sid = %socket.id, error = %e, "malformed event");
            }
        }
    }

    /// The adapter's disconnect handling, once (an eviction may have run it already).
    async fn departure(&self, socket: &SocketRef, reason: DisconnectReason) {
        if !self.state.claim_departure() {
            return;
        }
        let handled = AssertUnwindSafe(self.protocol.on_disconnect(socket, reason))
            .catch_unwind()
            .await;
        if handled.is_err() {
            self.panicked(socket, "disconnect handler panicked");
        }
    }

    fn panicked(&self, socket: &SocketRef, what: &'static str) {
        stats::bad_input(P::NAME, "internal_error");
        tracing::error!(protocol = P::NAME, sid = %socket.id, "{what}");
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

/// Runs a handler's future to completion from a synchronous caller: at once when nothing in
/// it waits (the in-memory store), else on a task of its own.
pub(super) fn drive(fut: impl Future<Output = ()> + Send + 'static) {
    let mut fut = Box::pin(fut);
    if (&mut fut).now_or_never().is_none() {
        QUEUED.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            fut.await;
            QUEUED.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

impl<P: Protocol> MessageHandler<LocalAdapter, InOrder> for Inbound<P> {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, v: Value, _ack: Option<i64>) {
        let socket = SocketRef::from(s);
        // A bug reached by one client's input must not take its connection's read task (or
        // the process) down with it: contain it, count it, carry on. State stays usable:
        // the store's mutex does not poison and no lock is held across this call.
        let admitted = std::panic::catch_unwind(AssertUnwindSafe(|| self.admit(&socket, &v)));
        match admitted {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => return self.panicked(&socket, "event handler panicked; event ignored"),
        }
        match &self.queue {
            None => {
                // In memory nothing waits: the handler completes within this one poll. The
                // future is polled where it is built (no move of its state into wrappers: this
                // is the relay's hot path).
                let handled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let handler = std::pin::pin!(self.dispatch(&socket, &v));
                    handler.poll(&mut Context::from_waker(Waker::noop()))
                }));
                match handled {
                    Ok(Poll::Ready(())) => {}
                    Err(_) => self.panicked(&socket, "event handler panicked; event ignored"),
                    Ok(Poll::Pending) => {
                        stats::bad_input(P::NAME, "internal_error");
                        tracing::error!(protocol = P::NAME, sid = %socket.id, "event handler waited with the in-memory store; event abandoned");
                    }
                }
            }
            Some(queue) => {
                if queue.try_send(Item::Event(v)).is_err() {
                    stats::refused(P::NAME, "inbound_queue_full");
                    tracing::debug!(protocol = P::NAME, sid = %socket.id, "event refused: queue full");
                }
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
        self.protocol.gate().release();
        if let Some(slot) = &self.slot {
            slot.release();
        }
        match &self.queue {
            None => {
                if self.departure(&socket, reason).now_or_never().is_none() {
                    stats::bad_input(P::NAME, "internal_error");
                    tracing::error!(protocol = P::NAME, sid = %socket.id, "disconnect handler waited with the in-memory store");
                }
            }
            Some(queue) => {
                // After the events already queued; the queue's task ends with it. A full
                // queue (a flood cut short) must not lose the departure.
                if let Err(mpsc::error::TrySendError::Full(item)) =
                    queue.try_send(Item::Disconnect(reason))
                {
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        let _ = queue.send(item).await;
                    });
                }
            }
        }
        defer(s);
    }
}
