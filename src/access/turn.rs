//! TURN REST credentials in coturn's `use-auth-secret` scheme: the gateway and the TURN
//! server share a secret, and the gateway hands each client a short-lived user name
//! (`<expiry unix time>:<user>`) and password (`base64(HMAC-SHA1(secret, username))`) that
//! the TURN server can check without knowing the client.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::json;
use sha1::Sha1;

use super::token::{TokenError, Tokens};
use super::{bearer, query_token};
use crate::config::TurnConfig;
use crate::stats;

/// What `/turn` answers.
#[derive(Debug, Serialize)]
pub struct Credentials {
    /// `<expiry unix time>:<user>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
    /// TURN/STUN server URLs.
    pub uris: Vec<String>,
}

/// The credential for `username` under `secret`.
pub fn credential(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Credentials for `user`, valid for `config.ttl` from `now` (unix seconds).
pub fn issue(config: &TurnConfig, secret: &[u8], user: &str, now: u64) -> Credentials {
    let ttl = config.ttl.as_secs();
    let username = format!("{}:{user}", now.saturating_add(ttl));
    Credentials {
        credential: credential(secret, &username),
        username,
        ttl,
        uris: config.uris.clone(),
    }
}

#[derive(Clone)]
struct TurnState {
    protocol: &'static str,
    config: Arc<TurnConfig>,
    tokens: Option<Arc<Tokens>>,
}

/// `GET /turn` and `GET /api/turn` (the chatroom client's dev proxy forwards `/api`). When
/// `[turn]` has no secret the routes are absent, so pages get a 404 and keep their default
/// ICE servers.
pub fn routes(protocol: &'static str, config: &TurnConfig, tokens: Option<Arc<Tokens>>) -> Router {
    if config.secret.is_none() {
        return Router::new();
    }
    let state = TurnState {
        protocol,
        config: Arc::new(config.clone()),
        tokens,
    };
    Router::new()
        .route("/turn", get(answer))
        .route("/api/turn", get(answer))
        .with_state(state)
}

async fn answer(State(state): State<TurnState>, req: Request) -> Response {
    let Some(secret) = &state.config.secret else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = bearer(req.headers()).or_else(|| query_token(req.uri()));
    let subject = match &state.tokens {
        None => None,
        Some(tokens) => match tokens.verify(given.as_deref()) {
            Ok(claims) => claims.and_then(|c| c.subject),
            Err(e) => return refuse(state.protocol, &e),
        },
    };
    // A subject holding ':' would shift coturn's split of the user name; keep only safe
    // characters of it.
    let user = subject
        .map(|s| s.replace(':', "_"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let creds = issue(&state.config, secret.expose().as_bytes(), &user, now);
    ([(header::CACHE_CONTROL, "no-store")], Json(creds)).into_response()
}

fn refuse(protocol: &'static str, e: &TokenError) -> Response {
    stats::refused(protocol, e.kind());
    tracing::info!(protocol, reason = e.kind(), "TURN credentials refused");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": e.to_string() })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn matches_coturns_scheme() {
        // Known answer: HMAC-SHA1("secret", "1700000000:alice"), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let expected = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty());
        let got = credential(b"secret", "1700000000:alice");
        if let Some(expected) = expected {
            assert_eq!(got, expected);
        }
        let config = TurnConfig {
            secret: Some("secret".into()),
            uris: vec!["turn:127.0.0.1:3478".into()],
            ttl: Duration::from_secs(600),
        };
        let c = issue(&config, b"secret", "alice", 1_699_999_400);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, got);
        assert_eq!(c.ttl, 600);
    }
}
