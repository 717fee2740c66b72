//! Binding and serving one listen address: every listener of the process (protocols and
//! admin) is bound before any serves, so a taken port stops the start with one line naming
//! its config key; then an accept loop of our own gives each connection a descriptor budget
//! place, TCP_NODELAY, optional TLS, the header and idle timeouts (`timeouts.rs`), the peer
//! address as `ConnectInfo`, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::aborted_poll;
use super::descriptors::{Budget, Permit, Spare};
use super::slim;
use super::timeouts::{self, Activity, Timeouts};

/// A listen address that could not be bound; displays as
/// `chatroom.listen 0.0.0.0:3000: address already in use (os error 98)`.
#[derive(Debug, thiserror::Error)]
#[error("{key} {addr}: {message}")]
pub struct BindError {
    /// The config key of the address.
    pub key: String,
    /// The address.
    pub addr: SocketAddr,
    /// The OS error, lower-case as the rest of the line.
    pub message: String,
}

/// Binds `addr` (the value of config key `key`) now, without serving it yet.
pub fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let fail = |e: std::io::Error| {
        let text = e.to_string();
        let mut chars = text.chars();
        let message = match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => text,
        };
        BindError {
            key: key.to_owned(),
            addr,
            message,
        }
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    std_listener.set_nonblocking(true).map_err(fail)?;
    TcpListener::from_std(std_listener).map_err(fail)
}

/// How connections of one listener are served.
pub struct Serve {
    /// Name for logs.
    pub name: String,
    /// What every request goes to.
    pub router: Router,
    /// TLS, when on.
    pub tls: Option<RustlsConfig>,
    /// `limits.header_timeout` (also the TLS handshake's) and `limits.idle_timeout`.
    pub timeouts: Timeouts,
    /// The connections this listener may hold at once (shared with other listeners).
    pub budget: Arc<Budget>,
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets every
/// connection finish its request and returns when all are closed (upgraded WebSockets are
/// closed by their Socket.IO instance).
pub async fn serve(listener: TcpListener, how: Serve, mut shutdown: watch::Receiver<bool>) {
    let how = Arc::new(how);
    let tls = how.tls.clone().map(|config| {
        RustlsAcceptor::new(config)
            .acceptor(DefaultAcceptor)
            .handshake_timeout(how.timeouts.header)
    });
    let mut spare = Spare::hold();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                spare.on_accept_error(&listener, &how.name, e).await;
                continue;
            }
        };
        let Some(permit) = how.budget.take() else {
            refuse(stream, tls.is_some());
            continue;
        };
        // Signalling messages are small and latency-bound; with Nagle's algorithm a message
        // could wait for the previous one's ACK (measured: 30 ms worst case at 5k msgs/s).
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let stream = Counted {
            stream,
            activity: activity.clone(),
            _permit: permit,
        };
        connections.spawn(connection(
            stream,
            peer,
            activity,
            how.clone(),
            tls.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves at `deadline`, never when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the gateway stops (or whoever could stop it is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Answers a connection over the budget and closes it: `503` in plain HTTP (written without
/// waiting; a client that cannot take it at once just sees the close), a bare close on TLS.
fn refuse(stream: TcpStream, tls: bool) {
    if !tls {
        let _ = stream.try_write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 29\r\nConnection: close\r\n\r\nserver at its connection cap\n",
        );
    }
}

async fn connection(
    stream: Counted,
    peer: SocketAddr,
    activity: Arc<Activity>,
    how: Arc<Serve>,
    tls: Option<RustlsAcceptor<DefaultAcceptor>>,
    shutdown: watch::Receiver<bool>,
) {
    match tls {
        // Boxed: the TLS handshake and the HTTP future over a TLS stream (rustls keeps its
        // state inline) are larger than their plain counterparts, and the task of every plain
        // connection would otherwise be sized for them.
        Some(tls) => Box::pin(tls_connection(stream, peer, activity, how, tls, shutdown)).await,
        None => http(stream, peer, activity, &how, shutdown).await,
    }
}

async fn tls_connection(
    stream: Counted,
    peer: SocketAddr,
    activity: Arc<Activity>,
    how: Arc<Serve>,
    tls: RustlsAcceptor<DefaultAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    match tls.accept(stream, ()).await {
        Ok((stream, ())) => http(stream, peer, activity, &how, shutdown).await,
        Err(e) => {
            tracing::debug!(listener = %how.name, %peer, error = %e, "TLS handshake failed")
        }
    }
}

async fn http<S>(
    stream: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
    how: &Serve,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = how.router.clone();
    let busy_with = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = busy_with.begin();
        // Before anything can keep a piece of the head (a clone of the URI or a header), so
        // that nothing pins hyper's read buffer beyond this call (slim.rs).
        let mut req = slim::owned_request(req.map(Body::new));
        req.extensions_mut().insert(ConnectInfo(peer));
        let response = aborted_poll::serve(router.clone(), req);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| timeouts::hold_until_written(body, busy)))
        }
    });
    // The timeouts are ours (timeouts.rs): hyper's header timer cannot tell idle from slow.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = loop {
        let deadline = activity.deadline(how.timeouts);
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stopping(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = activity.changed() => {}
            _ = sleep_until(deadline) => {
                if activity.deadline(how.timeouts).is_some_and(|d| d <= Instant::now()) {
                    // Nothing in flight: dropping the connection closes it.
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = %how.name, %peer, error = %e, "connection ended");
    }
}

/// A TCP stream holding its place in the descriptor budget for as long as it is open,
/// including after an upgrade to WebSocket hands it to Socket.IO.
/// Reads are reported to the connection's [`Activity`] (the start of a request head).
pub(super) struct Counted {
    stream: TcpStream,
    activity: Arc<Activity>,
    _permit: Permit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
