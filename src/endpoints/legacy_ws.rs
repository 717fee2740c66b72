//! The one legacy fix that needs WebSocket frames: socket.io-client 1.x/2.x forced onto
//! WebSocket (`transports: ['websocket']`) with a query in its URL sends its namespace CONNECT
//! as `40/ns?query,` in the first WebSocket frame. socketioxide reads that as a namespace named
//! `/ns?query` and the client never connects (over polling, `legacy.rs` rewrites the body).
//!
//! Only for those handshakes (Engine.IO v3, `transport=websocket`, no `sid`, and a query
//! parameter of the application's own), the gateway accepts the WebSocket itself, opens an
//! in-process HTTP/1.1 connection to its own router, upgrades that too, and pumps messages
//! between the two, rewriting CONNECT packets on the way in. Every other request goes straight
//! to the router, so the ordinary path pays nothing.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower::ServiceExt;

use super::{admission, legacy};

/// Query parameters Engine.IO and Socket.IO clients add themselves.
const TRANSPORT_PARAMS: [&str; 6] = ["EIO", "transport", "t", "b64", "j", "sid"];

/// Whether `req` is a legacy WebSocket handshake whose CONNECT may carry a query.
pub fn needs_proxy(req: &Request) -> bool {
    if !req.uri().path().starts_with("/socket.io") {
        return false;
    }
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return false;
    }
    let query = req.uri().query().unwrap_or("");
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    let value = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    matches!(value("EIO"), None | Some("3"))
        && value("transport") == Some("websocket")
        && value("sid").is_none()
        && params.iter().any(|(k, _)| !TRANSPORT_PARAMS.contains(k))
}

/// Middleware: proxies the handshakes [`needs_proxy`] selects to `inner`, passes the rest on.
/// `max_message` is the engine's `max_payload`: the client side of the relay gets the same
/// message and frame limits as the direct path (not tungstenite's 64 MiB / 16 MiB).
pub async fn route(inner: Router, max_message: usize, req: Request, next: Next) -> Response {
    if needs_proxy(&req) {
        proxy(inner, max_message, req).await
    } else {
        next.run(req).await
    }
}

async fn proxy(inner: Router, max_message: usize, mut req: Request) -> Response {
    let outer_upgrade = hyper::upgrade::on(&mut req);
    match handshake_inside(inner, req).await {
        Ok((response, inner_upgrade)) => {
            tokio::spawn(async move {
                let (Ok(outer), Ok(inner)) = (outer_upgrade.await, inner_upgrade.await) else {
                    tracing::debug!("legacy websocket proxy: an upgrade failed");
                    return;
                };
                let limits = WebSocketConfig::default()
                    .max_message_size(Some(max_message))
                    .max_frame_size(Some(max_message));
                let outer = WebSocketStream::from_raw_socket(
                    TokioIo::new(outer),
                    Role::Server,
                    Some(limits),
                )
                .await;
                let inner =
                    WebSocketStream::from_raw_socket(TokioIo::new(inner), Role::Client, None).await;
                pump(outer, inner).await;
            });
            response
        }
        Err(e) => {
            tracing::debug!(error = %e, "legacy websocket proxy: inner handshake failed");
            (StatusCode::BAD_GATEWAY, "websocket handshake failed").into_response()
        }
    }
}

/// Sends the client's handshake to `inner` over an in-process connection; returns the answer
/// to give the client and the inner side's upgrade.
async fn handshake_inside(
    inner: Router,
    req: Request,
) -> Result<(Response, hyper::upgrade::OnUpgrade), hyper::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    // The inner request comes from the same peer: keep its address and its admission
    // record (the client behind a trusted proxy) for the routers.
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().copied();
    let client = req.extensions().get::<admission::Client>().cloned();
    tokio::spawn(async move {
        let service = TowerToHyperService::new(inner.map_request(
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                if let Some(peer) = peer {
                    req.extensions_mut().insert(peer);
                }
                if let Some(client) = client.clone() {
                    req.extensions_mut().insert(client);
                }
                req
            },
        ));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), service)
            .with_upgrades()
            .await;
    });
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let (parts, _) = req.into_parts();
    let mut forward = hyper::Request::builder()
        .method(parts.method)
        .uri(parts.uri);
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let forward = forward
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap_or_default();
    let mut answer = sender.send_request(forward).await?;
    let upgrade = hyper::upgrade::on(&mut answer);
    let (parts, _) = answer.into_parts();
    Ok((Response::from_parts(parts, Body::empty()), upgrade))
}

type Side<S> = WebSocketStream<TokioIo<S>>;

/// Moves messages both ways until either side closes; CONNECT packets from the client lose
/// the query in their namespace.
async fn pump<O, I>(outer: Side<O>, inner: Side<I>)
where
    O: hyper::rt::Read + hyper::rt::Write + Unpin,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let (mut to_client, mut from_client) = outer.split();
    let (mut to_server, mut from_server) = inner.split();
    let up = async {
        while let Some(Ok(msg)) = from_client.next().await {
            let msg = match msg {
                Message::Text(text) => match legacy::fixed_connect(&text) {
                    Some(fixed) => Message::text(fixed),
                    None => Message::Text(text),
                },
                other => other,
            };
            if to_server.send(msg).await.is_err() {
                break;
            }
        }
        let _ = to_server.close().await;
    };
    let down = async {
        while let Some(Ok(msg)) = from_server.next().await {
            if to_client.send(msg).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    // Either side ended (a message over the limit included): the client gets a close frame,
    // as on the direct path, unless it stopped reading.
    let _ = tokio::time::timeout(CLOSE_WAIT, to_client.close()).await;
}

/// How long the client may take to accept the relay's close frame.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(query: &str, upgrade: bool) -> Request {
        let mut b = Request::builder().uri(format!("/socket.io/?{query}"));
        if upgrade {
            b = b.header(header::UPGRADE, "websocket");
        }
        b.body(Body::empty()).expect("request")
    }

    #[test]
    fn selects_only_legacy_websocket_handshakes_with_an_app_query() {
        assert!(needs_proxy(&handshake(
            "EIO=3&transport=websocket&token=abc",
            true
        )));
        assert!(needs_proxy(&handshake(
            "transport=websocket&token=abc",
            true
        )));
        assert!(!needs_proxy(&handshake("EIO=3&transport=websocket", true)));
        assert!(!needs_proxy(&handshake(
            "EIO=4&transport=websocket&token=abc",
            true
        )));
        assert!(!needs_proxy(&handshake(
            "EIO=3&transport=websocket&token=abc&sid=x",
            true
        )));
        assert!(!needs_proxy(&handshake(
            "EIO=3&transport=polling&token=abc",
            false
        )));
        assert!(!needs_proxy(&handshake(
            "EIO=3&transport=websocket&token=abc",
            false
        )));
    }
}
