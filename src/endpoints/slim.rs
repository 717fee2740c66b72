//! Copies a request's URI and header values out of hyper's read buffer before Socket.IO
//! keeps them.
//!
//! hyper parses a request head in place: the URI and every header value are `Bytes` slices of
//! its 8 KiB connection read buffer (hyperium/hyper#4060). engineioxide keeps the handshake
//! request's `Parts` for the whole life of the session (`Socket::req_parts`), and axum keeps a
//! clone of the URI in the `OriginalUri` extension, so each idle client would pin that whole
//! buffer. This layer rebuilds those values in one small owned allocation (the bytes the head
//! really uses), so the buffer is freed once hyper is done with it. Everything else, the
//! extensions in particular (hyper's upgrade handle lives there), is passed on untouched.

use std::ops::Range;

use axum::extract::OriginalUri;
use axum::http::{HeaderMap, HeaderValue, Request, Uri};
use bytes::{Bytes, BytesMut};

/// Returns `req` with its URI, header values and `OriginalUri` held in memory of their own.
/// A value that cannot be rebuilt (never expected: it was valid a moment ago) is kept as it
/// was, so the request is never refused or altered here.
pub fn owned_request<B>(req: Request<B>) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let uri = parts.uri.to_string();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.to_string());
    let values: usize = parts.headers.values().map(|v| v.len()).sum();

    // One allocation for every byte kept; each value becomes a slice of it.
    let mut buf =
        BytesMut::with_capacity(uri.len() + original.as_ref().map_or(0, String::len) + values);
    let uri_at = push(&mut buf, uri.as_bytes());
    let original_at = original.as_ref().map(|o| push(&mut buf, o.as_bytes()));
    let value_at: Vec<Range<usize>> = parts
        .headers
        .values()
        .map(|v| push(&mut buf, v.as_bytes()))
        .collect();
    let buf = buf.freeze();

    if let Some(u) = owned_uri(&buf, uri_at) {
        parts.uri = u;
    }
    if let Some(u) = original_at.and_then(|at| owned_uri(&buf, at)) {
        parts.extensions.insert(OriginalUri(u));
    }
    parts.headers = owned_headers(&parts.headers, &buf, &value_at);
    Request::from_parts(parts, body)
}

/// Appends `bytes`, returning where they landed.
fn push(buf: &mut BytesMut, bytes: &[u8]) -> Range<usize> {
    let start = buf.len();
    buf.extend_from_slice(bytes);
    start..buf.len()
}

fn owned_uri(buf: &Bytes, at: Range<usize>) -> Option<Uri> {
    Uri::from_maybe_shared(buf.slice(at)).ok()
}

/// The same names and values in the same order; `value_at[i]` locates the i-th value in `buf`.
fn owned_headers(old: &HeaderMap, buf: &Bytes, value_at: &[Range<usize>]) -> HeaderMap {
    let mut new = HeaderMap::with_capacity(old.len());
    for ((name, value), at) in old.iter().zip(value_at) {
        let copy = match HeaderValue::from_maybe_shared(buf.slice(at.clone())) {
            Ok(mut v) => {
                v.set_sensitive(value.is_sensitive());
                v
            }
            Err(_) => value.clone(),
        };
        new.append(name.clone(), copy);
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_uri_headers_order_and_extensions() {
        let mut req = Request::builder()
            .uri("/socket.io/?EIO=3&transport=websocket&token=a%20b")
            .header("host", "127.0.0.1:3000")
            .header("x-many", "one")
            .header("x-many", "two")
            .header("user-agent", "ua \u{e9}".as_bytes())
            .body(())
            .unwrap_or_default();
        req.extensions_mut().insert(OriginalUri(Uri::from_static(
            "/socket.io/?transport=websocket",
        )));
        req.extensions_mut().insert(7u32);
        let before = req.headers().clone();

        let req = owned_request(req);

        assert_eq!(
            req.uri(),
            "/socket.io/?EIO=3&transport=websocket&token=a%20b"
        );
        assert_eq!(req.headers(), &before);
        let many: Vec<_> = req.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["one", "two"]);
        assert_eq!(
            req.extensions().get::<OriginalUri>().map(|o| o.0.clone()),
            Some(Uri::from_static("/socket.io/?transport=websocket"))
        );
        assert_eq!(req.extensions().get::<u32>(), Some(&7));
    }

    #[test]
    fn values_no_longer_share_the_source_buffer() {
        // A stand-in for hyper's read buffer: the head's values are slices of one big block.
        let head = Bytes::from(vec![b'a'; 8192]);
        let uri = Uri::from_maybe_shared(Bytes::from_static(b"/x?y=1")).unwrap_or_default();
        let value = HeaderValue::from_maybe_shared(head.slice(0..10))
            .unwrap_or(HeaderValue::from_static("z"));
        let mut req = Request::builder().uri(uri).body(()).unwrap_or_default();
        req.headers_mut().insert("x-a", value);
        let req = owned_request(req);
        // The copied value is at most as long as what the head uses, not the whole block.
        let kept = req.headers().get("x-a").map(HeaderValue::as_bytes);
        assert_eq!(kept, Some(&b"aaaaaaaaaa"[..]));
        let kept_ptr = kept.map(<[u8]>::as_ptr);
        let head_range = head.as_ptr_range();
        assert!(kept_ptr.is_some_and(|p| !head_range.contains(&p)));
    }
}
