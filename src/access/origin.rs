//! The origin allowlist: which web pages may open a session. Browsers always send `Origin`
//! on WebSocket upgrades and cross-origin requests, so a page on another site is refused
//! before any Socket.IO state exists. Requests without `Origin` (native apps, curl) are not
//! browsers: they pass unless `require_origin` is set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use crate::stats;

/// One allowed origin: `scheme://host[:port]`, where the host may start with `*.`
/// (any subdomain, not the bare domain) and the port may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    scheme: String,
    /// The host, or for `*.example.com` the suffix `.example.com`.
    host: String,
    wildcard_host: bool,
    /// `None`: any port.
    port: Option<String>,
}

impl Pattern {
    /// Parses `https://*.example.com`, `http://localhost:8080`, `http://127.0.0.1:*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?}: expected scheme://host[:port]"))?;
        if scheme.is_empty() || rest.is_empty() || rest.contains(['/', '?', '#']) {
            return Err(format!(
                "{text:?}: expected scheme://host[:port] with no path"
            ));
        }
        let (host, port) = split_port(rest);
        let port = match port {
            Some("*") => None,
            Some(p) if p.parse::<u16>().is_ok() => Some(p.to_owned()),
            Some(p) => return Err(format!("{text:?}: bad port {p:?}")),
            None => Some(default_port(scheme).to_owned()),
        };
        let (host, wildcard_host) = match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => (suffix, true),
            Some(_) => return Err(format!("{text:?}: a wildcard host must look like *.domain")),
            None => (host, false),
        };
        if host.contains('*') {
            return Err(format!("{text:?}: '*' is allowed only as the first label"));
        }
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            wildcard_host,
            port,
        })
    }

    fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        let (host, port) = split_port(rest);
        let host = host.to_ascii_lowercase();
        let host_ok = if self.wildcard_host {
            host.len() > self.host.len() && host.ends_with(&self.host)
        } else {
            host == self.host
        };
        let port = port.unwrap_or(default_port(scheme));
        host_ok && self.port.as_deref().is_none_or(|p| p == port)
    }
}

/// `host:port` → (`host`, `Some(port)`); IPv6 literals keep their brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    }
}

fn default_port(scheme: &str) -> &'static str {
    if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        "443"
    } else {
        "80"
    }
}

/// Why a request was refused (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRefusal {
    /// An `Origin` not in the list.
    NotAllowed,
    /// No `Origin` while `require_origin` is set.
    Missing,
}

impl OriginRefusal {
    /// Metric reason.
    pub fn kind(self) -> &'static str {
        match self {
            OriginRefusal::NotAllowed => "origin_not_allowed",
            OriginRefusal::Missing => "origin_missing",
        }
    }
}

/// Entries kept for "log once per origin per minute"; beyond it the memory is cleared
/// (an attacker cycling origins gets more log lines, never more memory).
const LOGGED_MAX: usize = 1024;
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A listener's origin policy.
#[derive(Debug)]
pub struct OriginPolicy {
    patterns: Vec<Pattern>,
    require: bool,
    logged: Mutex<HashMap<String, Instant>>,
}

impl OriginPolicy {
    /// The policy for `allowed` patterns (validated by the config) and `require`.
    pub fn new(allowed: &[String], require: bool) -> Result<Self, String> {
        Ok(Self {
            patterns: allowed
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<_, _>>()?,
            require,
            logged: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this policy lets everything through (the default).
    pub fn is_open(&self) -> bool {
        self.patterns.is_empty() && !self.require
    }

    /// Whether a page on `origin` may talk to the listener. `host` is the request's `Host`:
    /// a page served by this very listener (same host and port) is always allowed.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let same_site = origin
            .split_once("://")
            .is_some_and(|(_, authority)| host.is_some_and(|h| h.eq_ignore_ascii_case(authority)));
        same_site || self.patterns.iter().any(|p| p.matches(origin))
    }

    /// Checks an Engine.IO request's `Origin` header.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), OriginRefusal> {
        match origin {
            None if self.require => Err(OriginRefusal::Missing),
            None => Ok(()),
            Some(o) if self.allows(o, host) => Ok(()),
            Some(_) => Err(OriginRefusal::NotAllowed),
        }
    }

    /// True at most once a minute per origin: whether to log a refusal of `origin`.
    pub fn should_log(&self, origin: &str) -> bool {
        let now = Instant::now();
        let mut logged = self.logged.lock();
        if let Some(at) = logged.get(origin) {
            if now.duration_since(*at) < LOG_EVERY {
                return false;
            }
        }
        if logged.len() >= LOGGED_MAX {
            logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
            if logged.len() >= LOGGED_MAX {
                logged.clear();
            }
        }
        logged.insert(origin.to_owned(), now);
        true
    }
}

/// A listener's origin check, as an HTTP middleware in front of Engine.IO.
#[derive(Debug)]
pub struct OriginGuard {
    /// Protocol named in metrics and logs (the first one served on the listener).
    pub protocol: &'static str,
    /// The policy.
    pub policy: OriginPolicy,
}

impl OriginGuard {
    /// The guard for a protocol's settings; `None` when they allow everything (the default),
    /// so the default path adds no work.
    pub fn new(
        protocol: &'static str,
        allowed: &[String],
        require: bool,
    ) -> Result<Option<Arc<Self>>, String> {
        let policy = OriginPolicy::new(allowed, require)?;
        Ok((!policy.is_open()).then(|| Arc::new(Self { protocol, policy })))
    }

    /// Refuses an Engine.IO request (polling or WebSocket upgrade) from a page whose origin
    /// is not allowed, with 403, before Socket.IO sees it.
    pub async fn check(self: Arc<Self>, req: Request, next: Next) -> Response {
        let headers = req.headers();
        let engine_io =
            req.uri().path().starts_with("/socket.io") || headers.contains_key(header::UPGRADE);
        if !engine_io {
            return next.run(req).await;
        }
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match self.policy.check(origin, host) {
            Ok(()) => next.run(req).await,
            Err(refusal) => {
                stats::refused(self.protocol, refusal.kind());
                let shown = origin.unwrap_or("(none)");
                if self.policy.should_log(shown) {
                    tracing::warn!(protocol = self.protocol, origin = %shown, reason = refusal.kind(), "request refused: origin (logged once a minute per origin)");
                }
                (StatusCode::FORBIDDEN, "origin not allowed\n").into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &[&str]) -> OriginPolicy {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        OriginPolicy::new(&p, false).expect("valid")
    }

    #[test]
    fn patterns_match_what_they_say() {
        let p = policy(&[
            "https://*.example.com",
            "http://localhost:8080",
            "http://127.0.0.1:*",
        ]);
        assert!(p.allows("https://app.example.com", None));
        assert!(p.allows("https://a.b.example.com:443", None));
        assert!(!p.allows("https://example.com", None));
        assert!(!p.allows("https://evilexample.com", None));
        assert!(!p.allows("http://app.example.com", None));
        assert!(!p.allows("https://app.example.com:8443", None));
        assert!(p.allows("http://localhost:8080", None));
        assert!(!p.allows("http://localhost:8081", None));
        assert!(p.allows("http://127.0.0.1:5555", None));
        assert!(!p.allows("null", None));
        assert!(
            p.allows("http://gw.test:3000", Some("gw.test:3000")),
            "same site"
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "example.com",
            "https://",
            "https://a.*.com",
            "https://x.com/path",
            "http://x:99999",
            "https://*",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_origin_passes_unless_required() {
        assert_eq!(policy(&["https://a.com"]).check(None, None), Ok(()));
        let strict = OriginPolicy::new(&["https://a.com".into()], true).expect("valid");
        assert_eq!(strict.check(None, None), Err(OriginRefusal::Missing));
        assert_eq!(
            strict.check(Some("https://b.com"), None),
            Err(OriginRefusal::NotAllowed)
        );
        assert!(strict.should_log("https://b.com"));
        assert!(!strict.should_log("https://b.com"));
    }
}
