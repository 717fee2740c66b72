//! Refuses admin requests whose `Host` is not a name of the admin endpoint itself.
//!
//! The admin endpoint listens on loopback and, by default, without a token; a web page the
//! operator opens could still reach it by DNS rebinding (its own name, re-pointed at
//! 127.0.0.1), and would then read `/api/rooms` from the operator's browser. Such a request
//! carries the attacker's name in `Host`. Rebinding needs a name, so IP literals (and
//! `localhost`, which browsers never resolve through DNS) are always accepted; any other
//! name must be listed in `admin.allowed_hosts`. Refused requests get `421 Misdirected
//! Request`. A request without `Host` (HTTP/1.0) cannot come from a browser and passes.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

/// Wraps the admin routes in the check; `allowed` are the extra host names (any port).
pub fn guard(routes: Router, allowed: &[String]) -> Router {
    let allowed: Arc<[String]> = allowed.iter().map(|h| normalized(h)).collect();
    routes.layer(middleware::from_fn(move |req: Request, next: Next| {
        let allowed = allowed.clone();
        async move { check(&allowed, req, next).await }
    }))
}

async fn check(allowed: &[String], req: Request, next: Next) -> Response {
    let from_header = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().map_err(|_| ()));
    let host = match (from_header, req.uri().authority()) {
        (Some(Ok(h)), _) => Some(h.to_owned()),
        (Some(Err(())), _) => return misdirected(),
        (None, Some(authority)) => Some(authority.as_str().to_owned()),
        (None, None) => None,
    };
    match host {
        Some(h) if !is_allowed(&h, allowed) => {
            tracing::debug!(host = %h, "admin request for another host refused");
            misdirected()
        }
        _ => next.run(req).await,
    }
}

/// Whether `host` (a `Host` value: name or address, optional port) names this endpoint.
fn is_allowed(host: &str, allowed: &[String]) -> bool {
    let name = normalized(strip_port(host));
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    name.parse::<IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

/// `name:port` → `name`; `[v6]:port` → `[v6]`; anything else unchanged.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// Lower case, without a trailing dot (`LocalHost.` is `localhost`).
fn normalized(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn misdirected() -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        Json(json!({ "error": "this host name is not served here (admin.allowed_hosts)" })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_addresses_localhost_and_listed_names_only() {
        let allowed = vec!["ops.example".to_owned()];
        for host in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:9090",
            "[::1]",
            "localhost:9090",
            "LocalHost.",
            "ops.example",
            "OPS.example:9090",
        ] {
            assert!(is_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9090",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "",
        ] {
            assert!(!is_allowed(host, &allowed), "{host}");
        }
    }
}
