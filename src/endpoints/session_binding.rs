//! Binds each long-polling Engine.IO session to the address that opened it.
//!
//! A polling client has no connection of its own: every request names its session by the
//! `sid` query parameter, and a WebRtcRoom member's id *is* that sid, told to every member of
//! its room. Without a check, another member could POST on the victim's session (its offers
//! would reach peers "from" the victim) or GET on it (Engine.IO closes a session polled twice
//! at once), or upgrade it to a WebSocket of its own.
//!
//! So the handshake's peer address is remembered per sid, and a request on that sid from
//! another address is answered exactly like an unknown sid (`400 {"code":1,...}`) without
//! reaching Engine.IO, so the session is untouched. Only the address is compared: clients'
//! `User-Agent` differs between their polling and WebSocket requests (Node's `ws` sends none),
//! so it cannot bind an upgrade. A client whose address changes mid-session loses it and
//! reconnects as a new session, as after any network change; `engine.session_binding = "off"`
//! turns the check off. Sessions opened over WebSocket need no entry: Engine.IO refuses polling
//! and a second WebSocket on them.
//!
//! An entry lives while its session makes requests: a polling client has a request in flight
//! or starts one at least every ping interval, so an entry unused for twice
//! `ping_interval + ping_timeout` belongs to a closed (or upgraded) session and is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::source::peer_ip;

/// The largest handshake answer read to find its sid (an open packet is ~150 bytes).
const HANDSHAKE_BODY_LIMIT: usize = 16 * 1024;

/// The sessions of one listener and the address each was opened from.
pub struct SessionBindings {
    /// Unused this long, an entry belongs to a closed session.
    expiry: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<Box<str>, Entry>,
    /// When expired entries were last dropped.
    last_sweep: Option<Instant>,
}

struct Entry {
    ip: IpAddr,
    last_seen: Instant,
}

/// What the binding says about a request on a session.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// From the address that opened it, or a session the binding does not know.
    Pass,
    /// From another address: answer as for an unknown session.
    Refuse,
}

impl SessionBindings {
    /// Bindings whose entries expire after `expiry` without a request.
    pub fn new(expiry: Duration) -> Arc<Self> {
        Arc::new(Self {
            expiry,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that session `sid` was opened from `ip`.
    fn bind(&self, sid: &str, ip: IpAddr, now: Instant) {
        let mut state = self.lock();
        let due = state
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= self.expiry);
        if due {
            let expiry = self.expiry;
            state
                .sessions
                .retain(|_, e| now.duration_since(e.last_seen) < expiry);
            state.last_sweep = Some(now);
        }
        state
            .sessions
            .insert(sid.into(), Entry { ip, last_seen: now });
    }

    /// Judges a request on `sid` from `ip`; a passing request keeps its entry alive.
    fn check(&self, sid: &str, ip: Option<IpAddr>, now: Instant) -> Verdict {
        let mut state = self.lock();
        let Some(entry) = state.sessions.get_mut(sid) else {
            return Verdict::Pass;
        };
        if now.duration_since(entry.last_seen) >= self.expiry {
            state.sessions.remove(sid);
            return Verdict::Pass;
        }
        if ip != Some(entry.ip) {
            return Verdict::Refuse;
        }
        entry.last_seen = now;
        Verdict::Pass
    }

    /// A request on `sid` ended (a long poll can last a ping interval).
    fn touch(&self, sid: &str, now: Instant) {
        if let Some(entry) = self.lock().sessions.get_mut(sid) {
            entry.last_seen = now;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sessions.len()
    }
}

/// Middleware: refuses requests on a bound session from another address, and binds the
/// sessions that polling handshakes open.
pub async fn guard(bindings: Arc<SessionBindings>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(super::legacy::ENGINE_PATH) {
        return next.run(req).await;
    }
    let ip = peer_ip(req.extensions());
    let query = req.uri().query().unwrap_or("");
    // The same rule as Engine.IO's own parser: the first `sid=`, taken byte for byte.
    if let Some(sid) = query.split('&').find_map(|s| s.strip_prefix("sid=")) {
        let sid = sid.to_owned();
        if bindings.check(&sid, ip, Instant::now()) == Verdict::Refuse {
            tracing::debug!(?ip, %sid, "request on a session opened from another address refused");
            return unknown_session();
        }
        let res = next.run(req).await;
        bindings.touch(&sid, Instant::now());
        return res;
    }
    let opens_polling =
        req.method() == Method::GET && query.split('&').any(|kv| kv == "transport=polling");
    let res = next.run(req).await;
    match ip {
        Some(ip) if opens_polling && res.status() == StatusCode::OK => {
            bind_handshake(&bindings, ip, res).await
        }
        _ => res,
    }
}

/// Reads the sid out of a polling handshake's answer and binds it to `ip`.
async fn bind_handshake(bindings: &SessionBindings, ip: IpAddr, res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = to_bytes(body, HANDSHAKE_BODY_LIMIT).await else {
        // Not an open packet; its body is gone, so answer as Engine.IO does to a failure.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(sid) = open_packet_sid(&bytes) {
        bindings.bind(sid, ip, Instant::now());
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, bytes.len().into());
    Response::from_parts(parts, Body::from(bytes))
}

/// The `sid` of the open packet in a handshake body (`0{"sid":"…",…}`, with or without the v3
/// length prefix; bytes, since v3's binary framing is not UTF-8).
pub(super) fn open_packet_sid(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"sid\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

/// What Engine.IO answers for an unknown session (with the numeric code of the originals).
pub(super) fn unknown_session() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"code":1,"message":"Session ID unknown"}"#,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn another_address_is_refused_the_same_passes() {
        let b = SessionBindings::new(Duration::from_secs(60));
        let t = Instant::now();
        b.bind("s1", A, t);
        assert_eq!(b.check("s1", Some(A), t), Verdict::Pass);
        assert_eq!(b.check("s1", Some(B), t), Verdict::Refuse);
        assert_eq!(b.check("s1", None, t), Verdict::Refuse);
        assert_eq!(b.check("other", Some(B), t), Verdict::Pass);
    }

    #[test]
    fn unused_entries_expire() {
        let b = SessionBindings::new(Duration::from_secs(10));
        let t = Instant::now();
        b.bind("old", A, t);
        b.bind("live", A, t);
        assert_eq!(
            b.check("live", Some(A), t + Duration::from_secs(9)),
            Verdict::Pass
        );
        // The next handshake sweeps what nobody used for the expiry.
        b.bind("new", A, t + Duration::from_secs(15));
        assert_eq!(b.len(), 2);
        assert_eq!(
            b.check("live", Some(B), t + Duration::from_secs(15)),
            Verdict::Refuse
        );
    }

    #[test]
    fn finds_the_sid_of_open_packets() {
        let v3 = br#"96:0{"sid":"abcdefghijklmnop","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(open_packet_sid(v3), Some("abcdefghijklmnop"));
        assert_eq!(open_packet_sid(br#"0{"sid":"x_-1"}"#), Some("x_-1"));
        assert_eq!(open_packet_sid(b"ok"), None);
        let binary = b"\x00\x09\x06\xff0{\"sid\":\"abc\"}";
        assert_eq!(open_packet_sid(binary), Some("abc"));
    }
}
