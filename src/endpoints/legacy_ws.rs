//! The one legacy fix that needs WebSocket frames: socket.io-client 1.x/2.x forced onto
//! WebSocket (`transports: ['websocket']`) with a query in its URL sends its namespace CONNECT
//! as `40/ns?query,` in the first WebSocket frame. socketioxide reads that as a namespace named
//! `/ns?query` and the client never connects (over polling, `legacy.rs` rewrites the body).
//!
//! Only for those handshakes (Engine.IO v3, `transport=websocket`, no `sid`, and a query
//! parameter of the application's own), the gateway answers the handshake itself
//! (`upgrade.rs`), gives socketioxide one end of an in-memory pipe with the client's request,
//! and relays messages between the client's WebSocket and a client-side WebSocket on the
//! pipe's other end, rewriting CONNECT packets on the way in. Every other request goes
//! straight to socketioxide, so the ordinary path pays nothing.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use axum::extract::Request;
use axum::http::header;

use super::legacy;

/// Most bytes in flight in each direction of the pipe to socketioxide (the pipe allocates
/// only what is in flight; a larger message just waits for the other side to read).
pub const PIPE_SIZE: usize = 16 * 1024;

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

/// Relays between the `client`'s WebSocket and socketioxide's end of the pipe (`engine`)
/// until either side closes. `max_message` is the engine's `max_payload`: the client side of
/// the relay gets the same message and frame limits as the direct path (not tungstenite's
/// 64 MiB / 16 MiB). Both sides read with the engine's `ws_read_buffer` (`read_buffer`):
/// tungstenite's default is 128 KiB, allocated and zero-filled at the first read, which made
/// each legacy connection cost over 256 KiB.
pub async fn relay<C>(client: C, engine: DuplexStream, max_message: usize, read_buffer: usize)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let small = WebSocketConfig::default().read_buffer_size(read_buffer);
    let limits = small
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let outer = WebSocketStream::from_raw_socket(client, Role::Server, Some(limits)).await;
    let inner = WebSocketStream::from_raw_socket(engine, Role::Client, Some(small)).await;
    pump(outer, inner).await;
}

type Side<S> = WebSocketStream<S>;

/// Moves messages both ways until either side closes; CONNECT packets from the client lose
/// the query in their namespace.
async fn pump<O, I>(outer: Side<O>, inner: Side<I>)
where
    O: AsyncRead + AsyncWrite + Unpin,
    I: AsyncRead + AsyncWrite + Unpin,
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
    use axum::body::Body;

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
