//! Fixes, in front of socketioxide, for legacy clients it would otherwise turn away.
//!
//! 1. A request with no `EIO` query parameter is Engine.IO v3. Socket.IO-Client-Swift 13
//!    (the WebRtcRoom iOS app) sends none; the original Node server treated that as v3,
//!    socketioxide answers 400. We add `EIO=3`.
//! 2. socket.io-client 1.x/2.x append the URL's query to a namespace CONNECT packet
//!    (`0/ns?token=abc`), which socketioxide takes as a namespace named `/ns?token=abc`, so
//!    the client never connects. We strip the query from CONNECT packets in polling POST
//!    bodies. (Those clients open over polling by default, so their CONNECT travels there;
//!    a client forced onto WebSocket-only sends it in a WebSocket frame: `legacy_ws.rs`.)
//! 3. Engine.IO error bodies carry a numeric `code`, as the originals sent them;
//!    socketioxide writes it as a string.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{self, header, Method, StatusCode};
use axum::response::Response;

/// Request path prefix of Engine.IO.
pub(super) const ENGINE_PATH: &str = "/socket.io";

/// Rewrites a legacy request into one socketioxide serves. Other requests pass unchanged.
pub async fn fix_request(max_body: usize, req: Request) -> Request {
    if !req.uri().path().starts_with(ENGINE_PATH) {
        return req;
    }
    let query = req.uri().query().unwrap_or("");
    let eio = query_param(query, "EIO");
    let (missing, legacy) = (eio.is_none(), matches!(eio, None | Some("3")));
    let req = if missing { add_eio3(req) } else { req };
    if legacy && req.method() == Method::POST {
        return rewrite_body(max_body, req).await;
    }
    req
}

/// Engine.IO error bodies with a numeric `code`, as both original servers sent them
/// (`{"code":1,"message":"Session ID unknown"}`); socketioxide writes the code as a string.
pub async fn fix_response(res: Response) -> Response {
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if res.status() != StatusCode::BAD_REQUEST || !json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = to_bytes(body, 4096).await.unwrap_or_default();
    let body = match std::str::from_utf8(&bytes).ok().and_then(numeric_code) {
        Some(fixed) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from(fixed)
        }
        None => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// `{"code":"1",...}` → `{"code":1,...}`; `None` when the body is not of that form.
fn numeric_code(body: &str) -> Option<String> {
    let rest = body.strip_prefix("{\"code\":\"")?;
    let end = rest.find('"')?;
    let code = &rest[..end];
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{{\"code\":{code}{}", &rest[end + 1..]))
}

pub(super) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn add_eio3(mut req: Request) -> Request {
    let uri = req.uri();
    let path_and_query = match uri.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}&EIO=3", uri.path()),
        _ => format!("{}?EIO=3", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return req,
    }
    if let Ok(new_uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = new_uri;
    }
    req
}

async fn rewrite_body(max_body: usize, req: Request) -> Request {
    let (parts, body) = req.into_parts();
    // Over the limit: pass an empty body on; socketioxide answers it like any bad payload.
    let bytes = to_bytes(body, max_body).await.unwrap_or_default();
    let body = match std::str::from_utf8(&bytes)
        .ok()
        .and_then(strip_connect_queries)
    {
        Some(fixed) => Body::from(fixed),
        None => Body::from(bytes),
    };
    Request::from_parts(parts, body)
}

/// Strips `?query` from the namespace of CONNECT packets in an Engine.IO v3 polling payload
/// (`<len>:<packet>` repeated, `len` in UTF-16 code units). `None` when nothing changed or the
/// payload is not v3 framing (then socketioxide judges it as it is).
pub fn strip_connect_queries(payload: &str) -> Option<String> {
    if !payload.contains("0/") || !payload.contains('?') {
        return None;
    }
    let mut out = String::with_capacity(payload.len());
    let mut rest = payload;
    let mut changed = false;
    while !rest.is_empty() {
        let (len, after) = rest.split_once(':')?;
        let units: usize = len.parse().ok()?;
        let split = byte_offset_of_utf16(after, units)?;
        let (packet, tail) = after.split_at(split);
        let packet = match fixed_connect(packet) {
            Some(fixed) => {
                changed = true;
                fixed
            }
            None => packet.to_owned(),
        };
        out.push_str(&packet.encode_utf16().count().to_string());
        out.push(':');
        out.push_str(&packet);
        rest = tail;
    }
    changed.then_some(out)
}

/// `40/ns?q,data` → `40/ns,data`; `40/ns?q` → `40/ns`. Engine.IO type 4 (message) carrying
/// Socket.IO type 0 (CONNECT).
pub fn fixed_connect(packet: &str) -> Option<String> {
    let ns_and_rest = packet.strip_prefix("40/")?;
    let end = ns_and_rest.find(',').unwrap_or(ns_and_rest.len());
    let q = ns_and_rest[..end].find('?')?;
    Some(format!("40/{}{}", &ns_and_rest[..q], &ns_and_rest[end..]))
}

fn byte_offset_of_utf16(s: &str, units: usize) -> Option<usize> {
    let mut count = 0;
    for (i, c) in s.char_indices() {
        if count == units {
            return Some(i);
        }
        count += c.len_utf16();
    }
    (count == units).then_some(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_query_from_namespace_connect() {
        assert_eq!(
            strip_connect_queries("16:40/ns?token=abc,").as_deref(),
            Some("6:40/ns,")
        );
        assert_eq!(
            strip_connect_queries("15:40/ns?token=abc1:2").as_deref(),
            Some("5:40/ns1:2")
        );
    }

    #[test]
    fn counts_utf16_units() {
        // 房间 are one unit each; the rewritten connect keeps the other packet intact.
        let body = "10:40/n?a=房间,38:42[\"createAndJoinRoom\",{\"room\":\"房间1\"}]";
        let fixed = strip_connect_queries(body).expect("rewritten");
        assert_eq!(
            fixed,
            "5:40/n,38:42[\"createAndJoinRoom\",{\"room\":\"房间1\"}]"
        );
    }

    #[test]
    fn leaves_other_payloads_alone() {
        assert_eq!(strip_connect_queries("1:2"), None);
        assert_eq!(strip_connect_queries("6:40/ns,"), None);
        assert_eq!(strip_connect_queries("8:42[\"a?\"]"), None);
        assert_eq!(strip_connect_queries("garbage 0/ ?"), None);
    }

    #[test]
    fn error_codes_become_numbers() {
        assert_eq!(
            numeric_code(r#"{"code":"1","message":"Session ID unknown"}"#).as_deref(),
            Some(r#"{"code":1,"message":"Session ID unknown"}"#)
        );
        assert_eq!(numeric_code(r#"{"code":1,"message":"x"}"#), None);
        assert_eq!(numeric_code(r#"{"code":"x","message":"x"}"#), None);
    }

    #[test]
    fn finds_query_params() {
        assert_eq!(query_param("transport=polling&b64=1", "EIO"), None);
        assert_eq!(query_param("EIO=3&transport=polling", "EIO"), Some("3"));
    }
}
