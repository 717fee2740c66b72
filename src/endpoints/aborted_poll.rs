//! A long-polling client that goes away (page closed, app killed) leaves its pending GET
//! behind; socket.io 2.1.1 and 4.x close the session as soon as that request's connection
//! closes, so peers get `exit`/the grace starts at once. socketioxide only notices at the
//! heartbeat timeout (~30 s), keeping a frozen video on the peers' screens.
//!
//! hyper drops the in-flight service future when the client closes the connection of a
//! pending request (HTTP/1 without half-close). A pending poll's future dropped before it
//! produced a response is that case: the session is then closed the way a client closes it,
//! with an Engine.IO close packet POSTed on its behalf (same URI, headers and connection
//! extensions), so the adapters see an ordinary transport close. A poll the server answered,
//! however it ended, closes nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::response::Response;
use axum::Router;
use tower::ServiceExt;

/// Whether `req` is an Engine.IO long-polling GET on an open session.
fn is_pending_poll(req: &Request) -> bool {
    if req.method() != Method::GET || !req.uri().path().starts_with("/socket.io") {
        return false;
    }
    let query = req.uri().query().unwrap_or("");
    let mut polling = false;
    let mut sid = false;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("transport", "polling")) => polling = true,
            Some(("sid", v)) if !v.is_empty() => sid = true,
            _ => {}
        }
    }
    polling && sid
}

/// The close packet in the session's framing: Engine.IO v4 sends packets bare, v3 (also a
/// request without `EIO`) prefixes their length.
fn close_packet(req: &Request) -> &'static str {
    let v4 = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "EIO=4");
    if v4 {
        "1"
    } else {
        "1:1"
    }
}

/// Serves `req` with `router`; if it is a pending poll whose future is dropped before it
/// answered, the session is closed.
pub fn serve(router: Router, req: Request) -> Watched {
    let on_abort = is_pending_poll(&req).then(|| {
        let mut close = Request::new(Body::from(close_packet(&req)));
        *close.method_mut() = Method::POST;
        *close.uri_mut() = req.uri().clone();
        *close.headers_mut() = req.headers().clone();
        *close.extensions_mut() = req.extensions().clone();
        let headers = close.headers_mut();
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=UTF-8"),
        );
        (router.clone(), close)
    });
    Watched {
        inner: Box::pin(router.oneshot(req)),
        on_abort,
    }
}

type Inner = Pin<Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send>>;

/// The response future of one request, watched for being dropped unfinished.
pub struct Watched {
    inner: Inner,
    on_abort: Option<(Router, Request)>,
}

impl Future for Watched {
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = self.inner.as_mut().poll(cx);
        if out.is_ready() {
            self.on_abort = None;
        }
        out
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Some((router, close)) = self.on_abort.take() else {
            return;
        };
        // No runtime: the process is stopping, and the session with it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            tracing::debug!(uri = %close.uri(), "pending poll aborted by the client: closing its session");
            rt.spawn(async move {
                let _ = router.oneshot(close).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str) -> Request {
        let mut r = Request::new(Body::empty());
        *r.method_mut() = method;
        *r.uri_mut() = uri.parse().expect("uri");
        r
    }

    #[test]
    fn only_polling_gets_on_a_session_are_watched() {
        assert!(is_pending_poll(&req(
            Method::GET,
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        )));
        assert!(!is_pending_poll(&req(
            Method::GET,
            "/socket.io/?EIO=4&transport=polling"
        )));
        assert!(!is_pending_poll(&req(
            Method::POST,
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        )));
        assert!(!is_pending_poll(&req(
            Method::GET,
            "/socket.io/?EIO=4&transport=websocket&sid=abc"
        )));
    }

    #[test]
    fn the_close_packet_follows_the_session_framing() {
        let v4 = req(Method::GET, "/socket.io/?EIO=4&transport=polling&sid=a");
        assert_eq!(close_packet(&v4), "1");
        let v3 = req(Method::GET, "/socket.io/?transport=polling&sid=a");
        assert_eq!(close_packet(&v3), "1:1");
    }
}
