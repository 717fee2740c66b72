//! Access control, all opt-in: which web origins may connect, JWT connection tokens and the
//! rooms and names they allow, TURN credentials, and the secret type that keeps keys out of
//! logs and `--check-config`.
//!
//! The endpoints call [`origin`] before Engine.IO sees a request; the adapters' connect
//! middleware calls [`connect`], and their join handlers ask [`may_join`].

pub mod origin;
pub mod token;
pub mod turn;

use std::sync::Arc;

use axum::http::{header, HeaderMap, Uri};
use socketioxide::extract::SocketRef;

use crate::config::TokenConfig;
pub use crate::secret::Secret;
pub use token::{ClaimRefusal, Claims, TokenError, Tokens};

/// The token of a `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The `token` query parameter. JWTs use only URL-safe characters, so it is taken as is.
pub fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// Checks a connecting socket's token: the v5 CONNECT `auth` payload's `token`, else the
/// handshake's `token` query parameter. Stores the claims for [`may_join`].
pub fn connect(
    tokens: &Tokens,
    socket: &SocketRef,
    auth: Option<&serde_json::Value>,
) -> Result<(), TokenError> {
    let from_auth = auth
        .and_then(|a| a.get("token"))
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    let token = from_auth.or_else(|| query_token(&socket.req_parts().uri));
    if let Some(claims) = tokens.verify(token.as_deref())? {
        socket.extensions.insert(Arc::new(claims));
    }
    Ok(())
}

/// The verifier for a protocol's `[<protocol>.token]`. The configuration was validated at
/// load; should the key file have become unreadable since, every connection is refused
/// rather than let in unchecked.
pub fn tokens_for(protocol: &'static str, config: &TokenConfig) -> Option<Arc<Tokens>> {
    match Tokens::from_config(config) {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::error!(protocol, error = %e, "token settings unusable: refusing every connection");
            Some(Tokens::refusing_all())
        }
    }
}

/// Whether `socket`'s token (if it connected with one) lets it join `room` as `name`.
pub fn may_join(socket: &SocketRef, room: &str, name: Option<&str>) -> Result<(), ClaimRefusal> {
    match socket.extensions.get::<Arc<Claims>>() {
        Some(claims) => claims.allow_join(room, name),
        None => Ok(()),
    }
}

/// Log filter directives that keep tokens out of the logs: socketioxide logs the CONNECT
/// `auth` payload and whole packets at debug level, so with tokens configured its (and
/// engineioxide's) logging stops at info whatever the configured level.
pub fn log_directives(config: &crate::config::Config) -> &'static [&'static str] {
    let on = |t: &TokenConfig| t.secret.is_some() || t.public_key_file.is_some();
    if on(&config.webrtcroom.token) || on(&config.chatroom.token) {
        &["socketioxide=info", "engineioxide=info"]
    } else {
        &[]
    }
}
