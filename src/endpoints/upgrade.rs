//! The WebSocket upgrade of a new Engine.IO session, done here instead of in engineioxide.
//!
//! engineioxide's own path (`transport::ws::new_req`) keeps the whole handshake request for
//! the session's life, headers of the finished HTTP handshake included, and talks to the
//! client through hyper's upgrade wrapper (a boxed, type-erased stream with a rewind buffer).
//! Right in front of socketioxide, after every other layer (origin, admission, session
//! binding, the legacy fixes) has seen the request, this layer answers the handshake itself,
//! takes the connection back from hyper with its own stream type, and gives socketioxide the
//! stream with a small owned request (`(stream, axum::http::Request<()>)`, public since socketioxide
//! 0.18.8): the request line, the headers the application can still use and the extensions
//! (peer address, admission record). socketioxide then runs the session exactly as on its
//! own path.
//!
//! Only handshakes socketioxide would accept as they are are taken over: a `GET` on the
//! Engine.IO path with `transport=websocket`, Engine.IO 3 or 4, a WebSocket key, and no `sid`.
//! An upgrade of a polling session (`sid`) stays on socketioxide's path: there a failed probe
//! closes the session, which its stream service does not do. Anything odd goes on too, so
//! socketioxide answers it as it always did.
//!
//! The legacy proxy (`legacy_ws.rs`) starts here too: the client's stream goes to a relay that
//! rewrites its CONNECT packets, and an in-memory pipe to socketioxide, instead of a second
//! HTTP connection into our own router.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::{Buf, Bytes};
use futures_util::future::{Either, Ready};
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::layer::SocketIoLayer;
use socketioxide::service::SocketIoService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::legacy::ENGINE_PATH;
use super::listener::Counted;
use super::{legacy_ws, slim};

/// socketioxide's service, used only for its `(stream, request)` entry point.
type Engine = SocketIoService<(), LocalAdapter>;

/// Layer putting [`TakeOver`] in front of socketioxide's service.
#[derive(Clone)]
pub struct TakeOverLayer {
    engine: Engine,
    max_message: usize,
    read_buffer: usize,
}

impl TakeOverLayer {
    /// `layer` is socketioxide's layer of the same listener; `max_message` the engine's
    /// `max_payload` (the legacy relay's limit on the client side), `read_buffer` its
    /// `ws_read_buffer` (the legacy relay's WebSocket read buffers).
    pub fn new(
        layer: &SocketIoLayer<LocalAdapter>,
        max_message: usize,
        read_buffer: usize,
    ) -> Self {
        use tower::Layer as _;
        Self {
            engine: layer.layer(()),
            max_message,
            read_buffer,
        }
    }
}

impl<S> tower::Layer<S> for TakeOverLayer {
    type Service = TakeOver<S>;

    fn layer(&self, inner: S) -> TakeOver<S> {
        TakeOver {
            inner,
            engine: self.engine.clone(),
            max_message: self.max_message,
            read_buffer: self.read_buffer,
        }
    }
}

/// See the module doc. Other requests go to `inner` without any allocation of ours.
#[derive(Clone)]
pub struct TakeOver<S> {
    inner: S,
    engine: Engine,
    max_message: usize,
    read_buffer: usize,
}

impl<S> tower::Service<Request> for TakeOver<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(key) = new_websocket_session(&req) else {
            return Either::Right(self.inner.call(req));
        };
        let accept = derive_accept_key(key.as_bytes());
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty());
        let Ok(response) = response else {
            // Not expected (the accept key is base64); socketioxide answers instead.
            return Either::Right(self.inner.call(req));
        };
        let legacy = legacy_ws::needs_proxy(&req);
        let (on_upgrade, engine_req) = engine_request(req);
        let engine = self.engine.clone();
        let (max_message, read_buffer) = (self.max_message, self.read_buffer);
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let client = Upgraded::from(upgraded);
            if legacy {
                let (relay_end, engine_end) = tokio::io::duplex(legacy_ws::PIPE_SIZE);
                if start(&engine, engine_end, engine_req) {
                    legacy_ws::relay(client, relay_end, max_message, read_buffer).await;
                }
            } else {
                start(&engine, client, engine_req);
            }
        });
        Either::Left(futures_util::future::ready(Ok(response)))
    }
}

/// Hands `stream` to socketioxide; false when it refused the request (not expected: the
/// request was checked as it checks it).
fn start<St>(engine: &Engine, stream: St, req: axum::http::Request<()>) -> bool
where
    St: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match engine.call((stream, req)).into_inner() {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "websocket session refused");
            false
        }
    }
}

/// The `Sec-WebSocket-Key` of a handshake this layer takes over (see the module doc), or
/// `None` for a request socketioxide gets as it is.
fn new_websocket_session(req: &Request) -> Option<&str> {
    if req.method() != Method::GET || !is_engine_path(req.uri().path()) {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    if !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    // The query as engineioxide reads it (`RequestInfo::parse`): the first parameter of each
    // name counts, and the value is what follows its first `=` up to the next one.
    let query = req.uri().query()?;
    let value = |name: &str| {
        query
            .split('&')
            .find(|kv| kv.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
            .and_then(|kv| kv.split('=').nth(1))
    };
    let eio_ok = matches!(value("EIO"), Some("3" | "4"));
    let has_sid = query.split('&').any(|kv| kv.starts_with("sid="));
    if !eio_ok || has_sid || value("transport") != Some("websocket") {
        return None;
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY)?;
    key.to_str().ok().filter(|k| !k.is_empty())
}

/// `/socket.io` and what is below it, as engineioxide matches its path.
fn is_engine_path(path: &str) -> bool {
    path.strip_prefix(ENGINE_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Headers that belong to the HTTP handshake, which is over once the socket exists.
const HANDSHAKE_HEADERS: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_PROTOCOL,
];

/// Takes hyper's upgrade handle out of `req` and returns the request socketioxide keeps for
/// the session: the same request line, every header but the handshake's (in one allocation),
/// and the extensions but axum's copy of the URI.
fn engine_request(mut req: Request) -> (hyper::upgrade::OnUpgrade, axum::http::Request<()>) {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _body) = req.into_parts();
    parts.extensions.remove::<OriginalUri>();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    let mut last = None;
    for (name, value) in std::mem::take(&mut parts.headers) {
        // `into_iter` names only the first value of each name.
        if let Some(name) = name {
            last = Some(name);
        }
        match &last {
            Some(name) if !HANDSHAKE_HEADERS.contains(name) => {
                headers.append(name.clone(), value);
            }
            _ => {}
        }
    }
    parts.headers = headers;
    (
        on_upgrade,
        slim::owned_request(axum::http::Request::from_parts(parts, ())),
    )
}

/// A connection taken back from hyper after the handshake: the stream our listener gave it
/// when it is one of ours (no box, no dynamic calls), else hyper's wrapper.
pub enum Upgraded {
    /// Plain TCP.
    Plain(Rewound<Counted>),
    /// TLS, boxed: rustls keeps its session state inline (over 1 KiB), and engineioxide's
    /// futures hold the stream in several places, so an unboxed variant made every plain
    /// connection pay for it (measured: +8 KiB per WebSocket client).
    Tls(Box<Rewound<tokio_rustls::server::TlsStream<Counted>>>),
    /// Any other stream (an in-process connection).
    Other(TokioIo<hyper::upgrade::Upgraded>),
}

impl From<hyper::upgrade::Upgraded> for Upgraded {
    fn from(upgraded: hyper::upgrade::Upgraded) -> Self {
        let upgraded = match upgraded.downcast::<TokioIo<Counted>>() {
            Ok(parts) => {
                return Upgraded::Plain(Rewound::new(parts.io.into_inner(), parts.read_buf))
            }
            Err(other) => other,
        };
        match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<Counted>>>() {
            Ok(parts) => Upgraded::Tls(Box::new(Rewound::new(
                parts.io.into_inner(),
                parts.read_buf,
            ))),
            Err(other) => Upgraded::Other(TokioIo::new(other)),
        }
    }
}

/// A stream with the bytes hyper had read past the handshake put back in front (clients
/// normally send nothing before the `101`, so there are none).
pub struct Rewound<T> {
    pre: Bytes,
    io: T,
}

impl<T> Rewound<T> {
    fn new(io: T, pre: Bytes) -> Self {
        // An empty remainder is still a slice of hyper's 8 KiB read buffer: do not keep it.
        // A non-empty one is copied for the same reason.
        let pre = if pre.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&pre)
        };
        Self { pre, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Calls `$method` on whichever stream `$self` holds.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Upgraded::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Upgraded::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Upgraded::Other($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upgraded::Plain(s) => s.is_write_vectored(),
            Upgraded::Tls(s) => s.is_write_vectored(),
            Upgraded::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(uri: &str, key: bool) -> Request {
        let mut b = Request::builder()
            .uri(uri)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::USER_AGENT, "ua");
        if key {
            b = b.header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
        }
        b.body(Body::empty()).unwrap_or_default()
    }

    #[test]
    fn the_stream_stays_small() {
        // engineioxide holds the stream inline in its per-connection futures.
        assert!(std::mem::size_of::<Upgraded>() <= 128);
    }

    #[test]
    fn takes_over_only_new_sessions_socketioxide_would_accept() {
        let yes = |uri| new_websocket_session(&handshake(uri, true)).is_some();
        assert!(yes("/socket.io/?EIO=4&transport=websocket"));
        assert!(yes("/socket.io/?EIO=3&transport=websocket&token=a"));
        assert!(yes("/socket.io?transport=websocket&EIO=3"));
        // Upgrades of polling sessions, other versions, transports and paths: socketioxide.
        assert!(!yes(
            "/socket.io/?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAA"
        ));
        assert!(!yes("/socket.io/?EIO=5&transport=websocket"));
        assert!(!yes("/socket.io/?transport=websocket"));
        assert!(!yes("/socket.io/?EIO=4&transport=polling"));
        assert!(!yes("/socket.io-admin/?EIO=4&transport=websocket"));
        assert!(!yes("/other?EIO=4&transport=websocket"));
        assert!(
            new_websocket_session(&handshake("/socket.io/?EIO=4&transport=websocket", false))
                .is_none()
        );
    }

    #[test]
    fn the_kept_request_drops_only_the_handshake() {
        let mut req = handshake("/socket.io/?EIO=4&transport=websocket", true);
        req.headers_mut().append(
            "x-many",
            "1".parse().unwrap_or(header::HeaderValue::from_static("1")),
        );
        req.headers_mut().append(
            "x-many",
            "2".parse().unwrap_or(header::HeaderValue::from_static("2")),
        );
        req.extensions_mut().insert(7u32);
        req.extensions_mut()
            .insert(OriginalUri("/x".parse().unwrap_or_default()));
        let (_, kept) = engine_request(req);
        assert_eq!(kept.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(kept.headers().len(), 3);
        assert_eq!(
            kept.headers().get(header::USER_AGENT).map(|v| v.as_bytes()),
            Some(&b"ua"[..])
        );
        let many: Vec<_> = kept.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["1", "2"]);
        assert!(kept.headers().get(header::SEC_WEBSOCKET_KEY).is_none());
        assert_eq!(kept.extensions().get::<u32>(), Some(&7));
        assert!(kept.extensions().get::<OriginalUri>().is_none());
    }
}
