//! Cluster mode without sticky sessions: a request for a polling session another node owns is
//! forwarded to that node (issue 10, DESIGN.md "No sticky sessions").
//!
//! # Installing it
//!
//! In cluster mode, per protocol listener (after its address is bound, so the URL is known):
//!
//! ```ignore
//! let directory = cluster::sessions::Directory::new(conn, &cluster.name, node_id.clone());
//! let forward = Forwarder::new(directory.clone(), &endpoint_name, "/socket.io").await?;
//! forward.advertise("https://10.0.0.5:8443").await?; // how the other nodes reach this listener
//! let listener = endpoints::build_with_forwarding(endpoint, Some(forward), bind_adapters)?;
//! ```
//!
//! On a graceful stop, `directory.forget_node(node_id.as_str())` after `Liveness::stop`; the
//! survivors do the same when they forget a dead node (`gateway::run_cluster`). Before that, a
//! dead node is already skipped once its heartbeat expires. `build_with_forwarding` installs two middlewares; without a `Forwarder` (one node)
//! neither exists and a request pays nothing:
//! - **accept**, outermost: a request whose forwarding headers carry a valid MAC under the
//!   cluster secret comes from another node on behalf of a client; its `ConnectInfo` becomes
//!   that client's address, so session binding, per-source admission and logs see the real
//!   client. Headers that fail the check are dropped and ignored (a client cannot spoof them).
//! - **route**, just inside admission (which resolved the client behind trusted proxies):
//!   - a request naming a `sid`: if this node registered it (a local record, so the common
//!     case costs no Redis call) or nobody owns it, it goes on to Engine.IO as usual (an
//!     unknown sid is Engine.IO's to refuse). If a live node owns it, the request is
//!     replayed there (method, path and query, relevant headers, body) and the owner's answer
//!     is returned; a WebSocket upgrade is performed against the owner, the client's upgrade
//!     is answered with the owner's `101`, and bytes are copied both ways until either side
//!     closes. An owner that does not answer is reported to the client exactly as an unknown
//!     session (`400 {"code":1,...}`), which makes it open a new session.
//!   - a polling handshake (no `sid`): the sid of the open packet in the answer is registered
//!     in the directory *before* the answer leaves, so the client's next request is found on
//!     any node.
//!
//! The route layer sits outside the legacy fixes, CORS and session binding, so the owner
//! applies all of them to the client's original request, exactly as if it had come directly;
//! the forwarding node only drops hop-by-hop headers from the answer.
//!
//! # Trust between nodes
//!
//! Forwarded requests carry `x-gateway-forwarded-{client,by,auth}`: the client's address,
//! the forwarding node's id, and `<unix seconds>.<HMAC-SHA1 under the cluster secret>` over
//! those, the method and the path with query. The owner accepts a MAC at most
//! [`MAX_SKEW`] old (or early), so a captured header cannot be reused for long or for another
//! request line. The secret lives in Redis (created once with `SET NX`), so anyone who can
//! read the cluster's Redis can forge; that is already the cluster's trust boundary.
//!
//! Nodes usually listen with self-signed certificates (`tls = "self-signed"`, made at start),
//! so a TLS owner's certificate is **not verified**: the connection is encrypted but its peer
//! unauthenticated. What matters for authenticity is the forwarded identity, and that is
//! carried by the MAC; a man in the middle between nodes could read forwarded traffic, as it
//! could read a plain-HTTP cluster's. Deployments that need more run the nodes' listeners on a
//! private network.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sha1::Sha1;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::legacy;
use super::session_binding::{open_packet_sid, unknown_session};
use super::source::peer_ip;
use crate::cluster::sessions::{Directory, Owner, REFRESH_EVERY, SESSION_TTL};

/// Header: the client's address (`ip:port`) as the forwarding node saw it.
const CLIENT: HeaderName = HeaderName::from_static("x-gateway-forwarded-client");
/// Header: the forwarding node's id.
const BY: HeaderName = HeaderName::from_static("x-gateway-forwarded-by");
/// Header: `<unix seconds>.<base64url HMAC-SHA1>` over the two above and the request line.
const AUTH: HeaderName = HeaderName::from_static("x-gateway-forwarded-auth");

/// How far a forwarded request's timestamp may be from the owner's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Giving up on an owner that does not accept a connection (a dead host drops SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis call on a request's path waits at most this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest handshake answer read to find its sid (an open packet is ~150 bytes).
const HANDSHAKE_BODY_LIMIT: usize = 16 * 1024;

/// Idle connections kept per owner; more concurrent forwards open more, then close them.
const POOL_PER_OWNER: usize = 32;

/// An idle pooled connection older than this is closed rather than reused: the owner's idle
/// timeout may be closing it just as a request is written.
const POOL_IDLE: Duration = Duration::from_secs(15);

type HmacSha1 = Hmac<Sha1>;

/// One listener's forwarding: the directory, the cluster secret and what this node knows.
pub struct Forwarder {
    directory: Directory,
    listener: String,
    engine_path: String,
    seal: Seal,
    known: Mutex<Known>,
    pool: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
    tls: tokio_rustls::TlsConnector,
    forwarded_polling: metrics::Counter,
    forwarded_upgrade: metrics::Counter,
    accepted: metrics::Counter,
}

/// Sessions this node registered or found on another node, by sid.
#[derive(Default)]
struct Known {
    sessions: HashMap<Box<str>, Entry>,
    last_sweep: Option<Instant>,
}

struct Entry {
    place: Place,
    last_seen: Instant,
}

#[derive(Clone)]
enum Place {
    /// Registered by this node; its directory entry was last written then.
    Here { refreshed: Instant },
    /// Owned by another live node.
    There(Arc<Target>),
}

/// Another node's listener.
struct Target {
    /// `scheme://host:port`, the pool's key.
    url: Arc<str>,
    tls: bool,
    host: String,
    port: u16,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// Why a forward failed (for the log; the client sees an unknown session).
///
/// Failures on a request's path are logged at debug level only and counted in
/// `gateway_forward_failures_total{reason}`: a dead node or a Redis outage fails every
/// request of many sessions at once, and the counter says as much without a flood of lines.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("connecting to {url}: {source}")]
    Connect {
        url: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(Arc<str>),
    #[error("HTTP to {url}: {source}")]
    Http {
        url: Arc<str>,
        #[source]
        source: hyper::Error,
    },
}

impl ForwardError {
    /// The metrics label.
    fn reason(&self) -> &'static str {
        match self {
            Self::Connect { .. } | Self::ConnectTimeout(_) => "unreachable",
            Self::Http { .. } => "owner_failed",
        }
    }
}

/// What the route layer does with a request naming a sid.
enum Route {
    Local,
    Forward(Arc<Target>),
}

impl Forwarder {
    /// The forwarding of `listener` (its name, the same on every node) whose Engine.IO
    /// requests start with `engine_path`. Reads (or creates) the cluster secret.
    pub async fn new(
        directory: Directory,
        listener: &str,
        engine_path: &str,
    ) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context as _;
        let secret = directory
            .cluster_secret()
            .await
            .context("forwarding of polling sessions between nodes")?;
        let config = unverified_tls_client().context("TLS client for forwarding")?;
        let label = listener.to_owned();
        let node = directory.node().as_str().to_owned();
        Ok(Arc::new(Self {
            directory,
            listener: listener.to_owned(),
            engine_path: engine_path.to_owned(),
            seal: Seal { secret, node },
            known: Mutex::new(Known::default()),
            pool: Mutex::new(HashMap::new()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            forwarded_polling: metrics::counter!("gateway_forwarded_requests_total", "listener" => label.clone(), "kind" => "polling"),
            forwarded_upgrade: metrics::counter!("gateway_forwarded_requests_total", "listener" => label.clone(), "kind" => "upgrade"),
            accepted: metrics::counter!("gateway_forwarded_received_total", "listener" => label),
        }))
    }

    /// Advertises `url` (`scheme://host:port`) as where other nodes reach this listener.
    pub async fn advertise(&self, url: &str) -> anyhow::Result<()> {
        self.directory
            .advertise(&self.listener, url)
            .await
            .map_err(anyhow::Error::from)
    }

    fn fail(&self, reason: &'static str) {
        metrics::counter!("gateway_forward_failures_total", "listener" => self.listener.clone(), "reason" => reason)
            .increment(1);
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where a request on `sid` is served.
    async fn route_of(self: &Arc<Self>, sid: &str) -> Route {
        if !is_sid(sid) {
            // No node ever made it: Engine.IO refuses it here, without a Redis call.
            return Route::Local;
        }
        let now = Instant::now();
        let cached = {
            let mut known = self.known();
            match known.sessions.get_mut(sid) {
                Some(entry) if now.duration_since(entry.last_seen) < SESSION_TTL => {
                    entry.last_seen = now;
                    if let Place::Here { refreshed } = &mut entry.place {
                        if now.duration_since(*refreshed) >= REFRESH_EVERY {
                            *refreshed = now;
                            self.refresh(sid);
                        }
                    }
                    Some(entry.place.clone())
                }
                _ => None,
            }
        };
        match cached {
            Some(Place::Here { .. }) => return Route::Local,
            Some(Place::There(target)) => return Route::Forward(target),
            None => {}
        }
        let found = tokio::time::timeout(REDIS_TIMEOUT, self.directory.owner(sid, &self.listener));
        match found.await {
            Ok(Ok(Owner::Nobody)) => Route::Local,
            Ok(Ok(Owner::Here)) => {
                self.remember(sid, Place::Here { refreshed: now });
                Route::Local
            }
            Ok(Ok(Owner::There { node, url })) => match Target::parse(&url) {
                Some(target) => {
                    let target = Arc::new(target);
                    self.remember(sid, Place::There(target.clone()));
                    Route::Forward(target)
                }
                None => {
                    tracing::warn!(%node, %url, listener = %self.listener, "a node advertises an unusable URL");
                    self.fail("bad_url");
                    Route::Local
                }
            },
            Ok(Ok(Owner::Gone { node })) => {
                tracing::debug!(%sid, %node, "session of a stopped node");
                self.fail("owner_gone");
                Route::Local
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "session lookup failed; served as unknown here");
                self.fail("directory");
                Route::Local
            }
            Err(_) => {
                tracing::debug!("session lookup timed out; served as unknown here");
                self.fail("directory");
                Route::Local
            }
        }
    }

    fn remember(&self, sid: &str, place: Place) {
        let now = Instant::now();
        let mut known = self.known();
        let due = known
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= SESSION_TTL);
        if due {
            known
                .sessions
                .retain(|_, e| now.duration_since(e.last_seen) < SESSION_TTL);
            known.last_sweep = Some(now);
        }
        known.sessions.insert(
            sid.into(),
            Entry {
                place,
                last_seen: now,
            },
        );
    }

    fn forget(&self, sid: &str) {
        self.known().sessions.remove(sid);
    }

    /// Rewrites this node's directory entry for `sid` in the background (a session in use).
    fn refresh(self: &Arc<Self>, sid: &str) {
        let this = self.clone();
        let sid = sid.to_owned();
        tokio::spawn(async move {
            let done = tokio::time::timeout(REDIS_TIMEOUT, this.directory.register(&sid)).await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::debug!(%sid, "refreshing a session's directory entry failed");
                this.fail("refresh");
            }
        });
    }

    /// Registers the sid of a polling handshake's answer before it is returned.
    async fn register_handshake(&self, res: Response) -> Response {
        let (mut parts, body) = res.into_parts();
        let bytes = match to_bytes(body, HANDSHAKE_BODY_LIMIT).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!(error = %e, "reading a handshake answer");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        if let Some(sid) = open_packet_sid(&bytes).filter(|sid| is_sid(sid)) {
            let done = tokio::time::timeout(REDIS_TIMEOUT, self.directory.register(sid)).await;
            match done {
                Ok(Ok(())) => self.remember(
                    sid,
                    Place::Here {
                        refreshed: Instant::now(),
                    },
                ),
                // The session still works when the balancer brings its requests here.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "a new session is reachable on this node only");
                    self.fail("register");
                }
                Err(_) => {
                    tracing::debug!("registering a session timed out; reachable on this node only");
                    self.fail("register");
                }
            }
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, bytes.len().into());
        Response::from_parts(parts, bytes.into())
    }

    /// A connection to `target`'s listener (TLS when it is `https`).
    async fn connect(&self, target: &Target) -> Result<SendRequest<Body>, ForwardError> {
        let connecting = TcpStream::connect((target.host.as_str(), target.port));
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => {
                return Err(ForwardError::Connect {
                    url: target.url.clone(),
                    source,
                })
            }
            Err(_) => return Err(ForwardError::ConnectTimeout(target.url.clone())),
        };
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if target.tls {
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                    ForwardError::Connect {
                        url: target.url.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                    }
                })?;
            let handshake = self.tls.connect(name, tcp);
            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(source)) => {
                    return Err(ForwardError::Connect {
                        url: target.url.clone(),
                        source,
                    })
                }
                Err(_) => return Err(ForwardError::ConnectTimeout(target.url.clone())),
            }
        } else {
            Box::new(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|source| ForwardError::Http {
                url: target.url.clone(),
                source,
            })?;
        let url = target.url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%url, error = %e, "forwarding connection ended");
            }
        });
        Ok(sender)
    }

    /// An idle connection to `target`, if one is ready.
    fn pooled(&self, target: &Target) -> Option<SendRequest<Body>> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = pool.get_mut(&target.url)?;
        let now = Instant::now();
        idle.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < POOL_IDLE);
        let ready = idle.iter().position(|i| i.sender.is_ready())?;
        Some(idle.swap_remove(ready).sender)
    }

    /// Keeps a connection whose response head arrived; it is reused once ready again (its
    /// response read).
    fn give_back(&self, target: &Target, sender: SendRequest<Body>) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = pool.entry(target.url.clone()).or_default();
        if idle.len() < POOL_PER_OWNER {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Replays a polling request on the owner and returns its answer.
    async fn forward_polling(
        &self,
        target: &Target,
        req: Request,
    ) -> Result<Response, ForwardError> {
        let mut req = req;
        loop {
            let (mut sender, pooled) = match self.pooled(target) {
                Some(sender) => (sender, true),
                None => (self.connect(target).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(res) => {
                    self.give_back(target, sender);
                    return Ok(answer(res));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection that closed before the request was written: the
                    // request is untouched, try it on another.
                    Some(unsent) if pooled => req = unsent,
                    _ => {
                        return Err(ForwardError::Http {
                            url: target.url.clone(),
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
    }

    /// Performs a WebSocket upgrade against the owner and pipes the two upgraded streams.
    async fn forward_upgrade(
        &self,
        target: &Target,
        client_upgrade: hyper::upgrade::OnUpgrade,
        req: Request,
    ) -> Result<Response, ForwardError> {
        let mut sender = self.connect(target).await?;
        let mut res = sender
            .send_request(req)
            .await
            .map_err(|source| ForwardError::Http {
                url: target.url.clone(),
                source,
            })?;
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The owner refused the upgrade (a closed session, a bad request): its answer.
            return Ok(answer(res));
        }
        let owner_upgrade = hyper::upgrade::on(&mut res);
        let url = target.url.clone();
        tokio::spawn(async move {
            let (client, owner) = match (client_upgrade.await, owner_upgrade.await) {
                (Ok(client), Ok(owner)) => (client, owner),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%url, error = %e, "forwarded upgrade failed");
                    return;
                }
            };
            let (mut client, mut owner) = (TokioIo::new(client), TokioIo::new(owner));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut owner).await {
                tracing::debug!(%url, error = %e, "forwarded websocket ended");
            }
        });
        let (parts, _) = res.into_parts();
        Ok(Response::from_parts(parts, Body::empty()))
    }
}

/// The owner's answer as this node returns it: hop-by-hop headers are this connection's own.
fn answer(res: hyper::Response<hyper::body::Incoming>) -> Response {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, Body::new(body))
}

/// Removes the headers that belong to one connection; `upgrade` keeps the two an upgrade
/// request needs.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers the `Connection` header names are hop-by-hop too (RFC 9110 7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Signs and checks the forwarding headers with the cluster secret.
struct Seal {
    secret: Vec<u8>,
    /// This node's id, the `by` of what it signs.
    node: String,
}

impl Seal {
    /// The MAC of a forwarded request's identity and request line.
    /// (`None` cannot happen: HMAC takes keys of any length.)
    fn mac(&self, by: &str, client: &str, ts: u64, method: &Method, uri: &Uri) -> Option<HmacSha1> {
        let mut mac = HmacSha1::new_from_slice(&self.secret).ok()?;
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        for part in [by, client, &ts.to_string(), method.as_str(), target] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        Some(mac)
    }

    /// The forwarding headers for a request from `client`.
    fn sign(
        &self,
        client: SocketAddr,
        method: &Method,
        uri: &Uri,
        ts: u64,
    ) -> [(HeaderName, String); 3] {
        let by = self.node.as_str();
        let client = client.to_string();
        let tag = self
            .mac(by, &client, ts, method, uri)
            .map(|mac| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            })
            .unwrap_or_default();
        [
            (CLIENT, client),
            (BY, by.to_owned()),
            (AUTH, format!("{ts}.{tag}")),
        ]
    }

    /// The client address and forwarding node of a request with valid forwarding headers.
    fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        now: u64,
    ) -> Option<(SocketAddr, String)> {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let (client, by, auth) = (text(&CLIENT)?, text(&BY)?, text(&AUTH)?);
        let (ts, tag) = auth.split_once('.')?;
        let ts: u64 = ts.parse().ok()?;
        if now.abs_diff(ts) > MAX_SKEW.as_secs() {
            return None;
        }
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .ok()?;
        self.mac(by, client, ts, method, uri)?
            .verify_slice(&tag)
            .ok()?;
        Some((client.parse().ok()?, by.to_owned()))
    }
}

impl Target {
    /// `http://host:port` or `https://host:port`.
    fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let tls = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = uri.host()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Some(Self {
            url: url.into(),
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// Whether `sid` has the form of the sids Engine.IO makes (16 URL-safe base64 characters),
/// so a made-up one costs no directory lookup and cannot shape a Redis key.
fn is_sid(sid: &str) -> bool {
    sid.len() == 16
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A forwarding connection's stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Middleware, outermost: believes valid forwarding headers, drops all of them. See the
/// module doc.
pub(super) async fn accept(fwd: Arc<Forwarder>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    if !(headers.contains_key(&CLIENT) || headers.contains_key(&BY) || headers.contains_key(&AUTH))
    {
        return next.run(req).await;
    }
    match fwd
        .seal
        .verify(req.headers(), req.method(), req.uri(), unix_now())
    {
        Some((client, by)) => {
            fwd.accepted.increment(1);
            tracing::trace!(%client, %by, "request forwarded by another node");
            req.extensions_mut().insert(ConnectInfo(client));
            req.extensions_mut().insert(ForwardedBy(by));
        }
        None => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            tracing::debug!(?peer, "forwarding headers without a valid MAC ignored");
            fwd.fail("bad_signature");
        }
    }
    let headers = req.headers_mut();
    for name in [CLIENT, BY, AUTH] {
        headers.remove(name);
    }
    next.run(req).await
}

/// The node that forwarded a request (a request extension, set by [`accept`]).
#[derive(Debug, Clone)]
pub struct ForwardedBy(pub String);

/// Middleware inside admission: forwards requests on other nodes' sessions, registers the
/// sessions this node opens. See the module doc.
pub(super) async fn route(fwd: Arc<Forwarder>, mut req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(fwd.engine_path.as_str()) {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("");
    let Some(sid) = legacy::query_param(query, "sid") else {
        let opens_polling = req.method() == Method::GET
            && legacy::query_param(query, "transport") == Some("polling");
        let res = next.run(req).await;
        if opens_polling && res.status() == StatusCode::OK {
            return fwd.register_handshake(res).await;
        }
        return res;
    };
    let sid = sid.to_owned();
    let Route::Forward(target) = fwd.route_of(&sid).await else {
        return next.run(req).await;
    };
    let client = client_addr(&req);
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let client_upgrade = if upgrade {
        match req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
            Some(on) => Some(on),
            // Not from a connection that can upgrade (an in-process request): nothing to pipe.
            None => return next.run(req).await,
        }
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let mut out = Request::new(if upgrade { Body::empty() } else { body });
    *out.method_mut() = parts.method.clone();
    if let Some(pq) = parts.uri.path_and_query() {
        *out.uri_mut() = Uri::from(pq.clone());
    }
    *out.headers_mut() = parts.headers;
    strip_hop_by_hop(out.headers_mut(), upgrade);
    for (name, value) in fwd.seal.sign(client, &parts.method, &parts.uri, unix_now()) {
        if let Ok(value) = HeaderValue::try_from(value) {
            out.headers_mut().insert(name, value);
        }
    }
    let result = match client_upgrade {
        Some(on) => {
            fwd.forwarded_upgrade.increment(1);
            fwd.forward_upgrade(&target, on, out).await
        }
        None => {
            fwd.forwarded_polling.increment(1);
            fwd.forward_polling(&target, out).await
        }
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(%sid, error = %e, "forwarding to the session's node failed; answered as unknown");
        fwd.fail(e.reason());
        fwd.forget(&sid);
        unknown_session()
    })
}

/// The client's address for the forwarding headers: the one admission resolved (behind
/// trusted proxies) with the peer's port, else the peer.
fn client_addr(req: &Request) -> SocketAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = peer_ip(req.extensions())
        .or(peer.map(|p| p.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    SocketAddr::new(ip, peer.map_or(0, |p| p.port()))
}

/// A TLS client configuration that accepts the other nodes' (usually self-signed) certificates
/// without verifying them: see the module doc, authenticity comes from the MAC.
pub fn unverified_tls_client() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    )
}

/// Accepts any server certificate (see the module doc: authenticity comes from the MAC),
/// while still checking the handshake signatures so the session keys are the peer's.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(secret: &str, node: &str) -> Seal {
        Seal {
            secret: secret.into(),
            node: node.into(),
        }
    }

    fn headers(signed: [(HeaderName, String); 3]) -> HeaderMap {
        signed
            .into_iter()
            .filter_map(|(name, value)| Some((name, HeaderValue::try_from(value).ok()?)))
            .collect()
    }

    #[test]
    fn only_the_cluster_secret_signs_a_client_address() {
        let client: SocketAddr = "203.0.113.7:5555".parse().expect("address");
        let uri: Uri = "/socket.io/?EIO=4&transport=polling&sid=abc"
            .parse()
            .expect("uri");
        let t = 1_700_000_000;
        let signed = headers(seal("s", "n2").sign(client, &Method::POST, &uri, t));
        let owner = seal("s", "n1");
        assert_eq!(
            owner.verify(&signed, &Method::POST, &uri, t + 10),
            Some((client, "n2".to_owned()))
        );
        // Another secret, another request line, a stale or missing MAC: not believed.
        assert_eq!(
            seal("x", "n1").verify(&signed, &Method::POST, &uri, t),
            None
        );
        assert_eq!(owner.verify(&signed, &Method::GET, &uri, t), None);
        let other: Uri = "/socket.io/?EIO=4&transport=polling&sid=abd"
            .parse()
            .expect("uri");
        assert_eq!(owner.verify(&signed, &Method::POST, &other, t), None);
        assert_eq!(owner.verify(&signed, &Method::POST, &uri, t + 301), None);
        let mut tampered = signed.clone();
        tampered.insert(CLIENT, HeaderValue::from_static("198.51.100.1:1"));
        assert_eq!(owner.verify(&tampered, &Method::POST, &uri, t), None);
        let mut bare = signed;
        bare.remove(AUTH);
        assert_eq!(owner.verify(&bare, &Method::POST, &uri, t), None);
    }

    #[test]
    fn only_engine_io_sids_are_looked_up() {
        assert!(is_sid("MGkO_WCiduVBTq9E"));
        assert!(!is_sid("MGkO_WCiduVBTq9"));
        assert!(!is_sid("MGkO_WCiduVBTq9:"));
        assert!(!is_sid("MGkO_WCiduVBTq9é"));
    }

    #[test]
    fn targets_parse() {
        let t = Target::parse("https://10.0.0.5:8443").expect("valid");
        assert!(t.tls && t.host == "10.0.0.5" && t.port == 8443);
        let t = Target::parse("http://[::1]:3000").expect("valid");
        assert!(!t.tls && t.host == "::1" && t.port == 3000);
        assert!(Target::parse("ftp://x:1").is_none());
        assert!(Target::parse("not a url").is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "an upgrade keeps Connection and Upgrade: {h:?}");
    }
}
