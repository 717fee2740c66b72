//! Per-source admission: one source address must not be able to take every slot.
//!
//! Three parts, each small:
//! - [`layer`], HTTP middleware in front of Socket.IO: works out the client's address
//!   ([`super::source`]), refuses new Engine.IO sessions beyond `connect_rate`/`connect_burst`
//!   per source (HTTP 429, before any session exists), and notes which polling sessions
//!   come back for their first poll. It hands the connect handler a [`Client`].
//! - [`SourceCounts`]: open connections per source, capped at `max_connections_per_ip`.
//! - closing what should not stay open: a polling handshake costs the client one request but
//!   holds a connection slot until the heartbeat times out (measured: 30 s for Engine.IO v3,
//!   20 s for v4 with the default settings). A session that never polls again within
//!   `handshake_timeout`, or whose connect was refused, is closed by the server.
//!
//! Refusals are counted by reason and logged in aggregate ([`RefusalLog`]): a flood must not
//! turn into a flood of log lines.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::Mutex;
use socketioxide::extract::SocketRef;
use socketioxide::{ProtocolVersion, TransportType};
use tower::ServiceExt;

use super::{legacy, source};
use crate::config::Limits;
use crate::stats;

/// How long a refused client gets to read its `connect_error` before its session is closed.
const REFUSAL_GRACE: Duration = Duration::from_millis(500);

/// Rate buckets kept before the first sweep of refilled ones.
const MIN_SWEEP: usize = 10_000;

/// How often repeated refusals are summarised in the log.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One listen address's view of its sources: connection-rate buckets and polling sessions
/// awaiting their first poll.
pub struct Admission {
    /// Name for metrics and logs (the protocols on the address).
    name: &'static str,
    /// Peers whose forwarding headers are believed.
    trusted: Vec<source::Cidr>,
    /// New sessions per second per source; 0: no limit.
    rate: f64,
    /// New sessions a source may open at once beyond the rate.
    burst: f64,
    /// How long a session may take to come back after its handshake.
    handshake_timeout: Duration,
    /// Connection-rate buckets by source key; a full bucket is forgotten.
    buckets: Mutex<Buckets>,
    /// Polling sessions (by sid) connected to a namespace that have not polled since.
    awaiting: Mutex<HashSet<String>>,
    /// The router behind this layer, to close sessions the way a client would.
    closer: OnceLock<Router>,
    /// Refusals at this address, for the log.
    log: Arc<RefusalLog>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets, swept of refilled ones whenever the table has doubled since the last sweep
/// (so a flood from many addresses costs amortised constant time per handshake).
struct Buckets {
    map: HashMap<IpAddr, Bucket>,
    sweep_at: usize,
}

/// Who opened an Engine.IO session, as the connect handler sees it (a request extension,
/// kept by socketioxide with the session's request parts).
#[derive(Clone)]
pub struct Client {
    /// The client's address (after trusted-proxy headers).
    pub ip: IpAddr,
    /// The TCP peer that sent the handshake.
    peer: SocketAddr,
    admission: Arc<Admission>,
}

impl Admission {
    /// The admission state of endpoint `name` with these limits.
    pub fn new(name: &str, limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            // One per listen address, made once at start.
            name: Box::leak(name.to_owned().into_boxed_str()),
            trusted: limits.trusted_proxies.clone(),
            rate: limits.connect_rate,
            burst: limits.connect_burst,
            handshake_timeout: limits.handshake_timeout,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
            awaiting: Mutex::new(HashSet::new()),
            closer: OnceLock::new(),
            log: Arc::new(RefusalLog::default()),
        })
    }

    /// Gives the admission the router it guards, for closing sessions.
    pub fn set_router(&self, router: Router) {
        let _ = self.closer.set(router);
    }

    /// Takes one new-session token from source `key`'s bucket.
    fn take_token(&self, key: IpAddr) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.map.len() > buckets.sweep_at {
            // Forget sources whose bucket has refilled: they are indistinguishable from new.
            let (rate, burst) = (self.rate, self.burst);
            buckets
                .map
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
            buckets.sweep_at = (buckets.map.len() * 2).max(MIN_SWEEP);
        }
        let b = buckets.map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Closes Engine.IO polling session `sid` as if its client had sent a close packet.
    async fn close_polling(&self, sid: &str, v3: bool, peer: SocketAddr) {
        let Some(router) = self.closer.get() else {
            return;
        };
        let (eio, body) = if v3 { (3, "1:1") } else { (4, "1") };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/socket.io/?EIO={eio}&transport=polling&sid={sid}"))
            .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .extension(ConnectInfo(peer))
            .body(Body::from(body));
        if let Ok(request) = request {
            let _ = router.clone().oneshot(request).await;
        }
    }
}

/// Middleware on every listener: see the module doc.
pub async fn layer(
    State(admission): State<Arc<Admission>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !req.uri().path().starts_with(legacy::ENGINE_PATH) {
        return next.run(req).await;
    }
    let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
    else {
        return next.run(req).await;
    };
    let ip = source::client(peer.ip(), req.headers(), &admission.trusted);
    match legacy::query_param(req.uri().query().unwrap_or(""), "sid") {
        Some(sid) => {
            if req.method() == Method::GET {
                admission.awaiting.lock().remove(sid);
            }
        }
        None => {
            if !admission.take_token(source::key(ip)) {
                stats::refused(admission.name, "connect_rate");
                admission.log.record(admission.name, "connect_rate", ip);
                let body = r#"{"code":4,"message":"Too many new connections from your address, try again later"}"#;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::RETRY_AFTER, "1"),
                    ],
                    body,
                )
                    .into_response();
            }
        }
    }
    req.extensions_mut().insert(Client {
        ip,
        peer,
        admission,
    });
    next.run(req).await
}

impl Client {
    /// The client of `socket`'s session, when it came through [`layer`].
    pub fn of(socket: &SocketRef) -> Option<Client> {
        let extensions = &socket.req_parts().extensions;
        extensions.get::<Client>().cloned().or_else(|| {
            // Sessions opened through the legacy WebSocket proxy (`legacy_ws.rs`).
            extensions.get::<Option<Client>>().cloned().flatten()
        })
    }

    /// The key this client is counted under.
    pub fn key(&self) -> IpAddr {
        source::key(self.ip)
    }

    /// Records a refused connection and closes its session once the client has had time to
    /// read the `connect_error`.
    pub fn refused(&self, protocol: &'static str, reason: &'static str, socket: SocketRef) {
        stats::refused(protocol, reason);
        self.admission.log.record(protocol, reason, self.ip);
        let client = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REFUSAL_GRACE).await;
            client.close(socket).await;
        });
    }

    /// A connected polling session must poll again within `handshake_timeout`, or it is taken
    /// for an abandoned handshake and closed (counted as `abandoned_handshake`). A session that
    /// has upgraded to WebSocket came back too: its upgrade request and polls may all have
    /// arrived before its connect was handled here, and it will not poll again.
    pub fn expect_poll(&self, protocol: &'static str, socket: &SocketRef) {
        if socket.transport_type() != TransportType::Polling {
            return;
        }
        let sid = socket.id.to_string();
        self.admission.awaiting.lock().insert(sid.clone());
        let client = self.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(client.admission.handshake_timeout).await;
            if !client.admission.awaiting.lock().remove(&sid)
                || socket.transport_type() == TransportType::Websocket
            {
                return;
            }
            stats::refused(protocol, "abandoned_handshake");
            client
                .admission
                .log
                .record(protocol, "abandoned_handshake", client.ip);
            let _ = socket.clone().disconnect();
            client.close(socket).await;
        });
    }

    /// Ends `socket`'s Engine.IO session from the server side.
    async fn close(&self, socket: SocketRef) {
        let v3 = socket.protocol() == ProtocolVersion::V4;
        match socket.transport_type() {
            TransportType::Polling => {
                self.admission
                    .close_polling(&socket.id.to_string(), v3, self.peer)
                    .await;
            }
            // socket.io-client 1.x/2.x close their connection on a DISCONNECT of `/`; v4 clients
            // close it on the connect_error themselves, and Socket.IO's connect timeout
            // (`handshake_timeout`) closes a session that stays without a namespace.
            TransportType::Websocket if v3 => {
                let _ = socket.disconnect();
            }
            TransportType::Websocket => {}
        }
    }
}

/// Open connections per source address, capped.
pub struct SourceCounts {
    /// Most connections one source may hold; 0: no limit.
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`SourceCounts`]; given back on [`SourceSlot::release`] or drop.
pub struct SourceSlot {
    counts: Arc<SourceCounts>,
    key: IpAddr,
    released: AtomicBool,
}

impl SourceCounts {
    /// A table allowing `max` connections per source (0: no limit).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection of source `key` in, unless the source is at the maximum (returned).
    pub fn acquire(self: &Arc<Self>, key: IpAddr) -> Result<SourceSlot, usize> {
        if self.max == 0 {
            return Ok(self.slot(key, true));
        }
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return Err(self.max);
        }
        *n += 1;
        Ok(self.slot(key, false))
    }

    fn slot(self: &Arc<Self>, key: IpAddr, released: bool) -> SourceSlot {
        SourceSlot {
            counts: self.clone(),
            key,
            released: AtomicBool::new(released),
        }
    }

    /// Connections open from source `key`.
    pub fn open(&self, key: IpAddr) -> usize {
        self.open.lock().get(&key).copied().unwrap_or(0)
    }
}

impl SourceSlot {
    /// Counts the connection out (once).
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut open = self.counts.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Refusal log lines, aggregated: the first refusal of a quiet period is logged at once with
/// its source, later ones are summarised per protocol and reason every [`LOG_INTERVAL`].
#[derive(Default)]
pub struct RefusalLog {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Whether a summary is due at the end of the current interval.
    open: bool,
    /// Refusals since the last line, by protocol and reason, with the last source seen.
    counts: Vec<(&'static str, &'static str, u64, IpAddr)>,
}

impl RefusalLog {
    /// Records one refusal.
    pub fn record(self: &Arc<Self>, protocol: &'static str, reason: &'static str, source: IpAddr) {
        let mut w = self.window.lock();
        if !w.open {
            w.open = true;
            tracing::warn!(protocol, reason, %source, "connection refused (further refusals are summarised every {}s)", LOG_INTERVAL.as_secs());
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let log = self.clone();
                runtime.spawn(async move { log.summarise().await });
            }
            return;
        }
        match w
            .counts
            .iter_mut()
            .find(|(p, r, _, _)| *p == protocol && *r == reason)
        {
            Some(entry) => {
                entry.2 += 1;
                entry.3 = source;
            }
            None => w.counts.push((protocol, reason, 1, source)),
        }
    }

    /// Logs one line per protocol and reason every interval while refusals go on.
    async fn summarise(&self) {
        loop {
            tokio::time::sleep(LOG_INTERVAL).await;
            let mut w = self.window.lock();
            if w.counts.is_empty() {
                w.open = false;
                return;
            }
            for (protocol, reason, refused, last_source) in w.counts.drain(..) {
                tracing::warn!(protocol, reason, refused, %last_source, "connections refused in the last {}s", LOG_INTERVAL.as_secs());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_capped_and_released() {
        let counts = SourceCounts::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let s1 = counts.acquire(a);
        let s2 = counts.acquire(a);
        assert!(s1.is_ok() && s2.is_ok());
        assert_eq!(counts.acquire(a).err(), Some(2));
        assert!(counts.acquire(b).is_ok());
        if let Ok(s) = &s1 {
            s.release();
            s.release();
        }
        assert_eq!(counts.open(a), 1);
        drop(s2);
        assert_eq!(counts.open(a), 0);
    }

    #[test]
    fn no_cap_counts_nothing() {
        let counts = SourceCounts::new(0);
        let a: IpAddr = [10, 0, 0, 1].into();
        let slots: Vec<_> = (0..100).map(|_| counts.acquire(a)).collect();
        assert!(slots.iter().all(Result::is_ok));
        assert_eq!(counts.open(a), 0);
    }

    #[test]
    fn connect_rate_is_a_token_bucket_per_source() {
        let limits = Limits {
            connect_rate: 1.0,
            connect_burst: 3.0,
            ..Limits::default()
        };
        let adm = Admission::new("test", &limits);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!((0..3).all(|_| adm.take_token(a)));
        assert!(!adm.take_token(a));
        assert!(adm.take_token(b));
    }
}
