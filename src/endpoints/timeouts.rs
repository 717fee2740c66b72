//! The two connection timeouts of every listener, which keep silent, slow and idle
//! connections from holding descriptors forever:
//!
//! - `limits.header_timeout`: a new connection must deliver a complete request head within
//!   it, and so must a kept-alive connection once the next request head has started.
//! - `limits.idle_timeout`: a kept-alive connection with no request in flight is closed after
//!   it.
//!
//! hyper's own header-read timer starts as soon as a connection is idle, so it cannot tell the
//! two apart. Here each connection has an [`Activity`]: requests in flight (until their
//! response body is written), when it last became idle, and when the next head started (the
//! first byte read while idle). The connection's task closes it at the deadline these give,
//! only while nothing is in flight: a pending long-poll or a response being written is never
//! cut, and an upgraded WebSocket has left the task (its heartbeat is Engine.IO's).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The two timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `limits.header_timeout`.
    pub header: Duration,
    /// `limits.idle_timeout`.
    pub idle: Duration,
}

/// What one connection is doing, as far as its timeouts care.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Requests whose response is not fully written yet.
    busy: AtomicUsize,
    /// No request answered yet: the header timeout counts from the open.
    fresh: AtomicBool,
    /// Nanoseconds after `base` when the connection last became idle.
    idle_since: AtomicU64,
    /// Nanoseconds after `base` (plus one) when the next head started; 0: not started.
    head_since: AtomicU64,
    /// Wakes the connection's task when its deadline may have moved.
    changed: Notify,
}

impl Activity {
    /// A connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            busy: AtomicUsize::new(0),
            fresh: AtomicBool::new(true),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bytes were read from the connection: while idle, the next head has started.
    pub fn on_read(&self) {
        if self.head_since.load(Ordering::Relaxed) != 0 || self.busy.load(Ordering::Relaxed) != 0 {
            return;
        }
        let now = self.now().saturating_add(1);
        if self
            .head_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// A request is being served until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// When the connection is to be closed, or `None` while a request is in flight.
    pub fn deadline(&self, t: Timeouts) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) != 0 {
            return None;
        }
        let at = |nanos: u64, after: Duration| self.base + Duration::from_nanos(nanos) + after;
        let idle_since = self.idle_since.load(Ordering::Acquire);
        if self.fresh.load(Ordering::Acquire) {
            return Some(at(idle_since, t.header));
        }
        let idle = at(idle_since, t.idle);
        match self.head_since.load(Ordering::Acquire) {
            0 => Some(idle),
            started => Some(idle.min(at(started - 1, t.header))),
        }
    }

    /// Resolves when the deadline may have moved.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A request in flight; dropped when its response is fully written (or abandoned).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        if a.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle_since.store(a.now(), Ordering::Release);
            a.head_since.store(0, Ordering::Release);
            a.fresh.store(false, Ordering::Release);
            a.changed.notify_one();
        }
    }
}

/// `body` keeping `busy` until it is written out or dropped.
pub fn hold_until_written(body: Body, busy: Busy) -> Body {
    Body::new(Held { body, _busy: busy })
}

struct Held {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection() {
        let a = Activity::new();
        let opened = Instant::now();
        assert_eq!(
            a.deadline(T),
            Some(opened + T.header),
            "fresh: header timeout"
        );
        a.on_read();
        assert_eq!(
            a.deadline(T),
            Some(opened + T.header),
            "still from the open"
        );
        let busy = a.begin();
        assert_eq!(a.deadline(T), None, "in flight: no deadline");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(busy);
        let idle = Instant::now();
        assert_eq!(
            a.deadline(T),
            Some(idle + T.idle),
            "kept alive: idle timeout"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        a.on_read();
        assert_eq!(
            a.deadline(T),
            Some(idle + Duration::from_secs(5) + T.header),
            "a head started: header timeout from its first byte"
        );
    }
}
