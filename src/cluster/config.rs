//! The `[cluster]` settings and their checks.
//!
//! Cluster mode is off while `redis_url` is empty (the default): one node, state in memory,
//! no Redis needed.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::node::check_key_part;

/// `[cluster]`: several nodes sharing every room through Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db`; empty: one node, state in memory, no Redis. A password in it
    /// is shown as `REDACTED` by `--check-config`.
    #[serde(serialize_with = "url_without_password")]
    pub redis_url: String,
    /// The cluster's name, the prefix of every Redis key and channel, so several clusters
    /// can share one Redis.
    pub name: String,
    /// This node's id; empty: generated at start.
    pub node_id: String,
    /// How other nodes reach this node's listeners, when a listener binds an unspecified
    /// address (`0.0.0.0`, `::`); empty: the listen address itself.
    pub advertise_host: String,
    /// A node whose heartbeat is older than this is dead: its members are removed.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            name: "gateway".into(),
            node_id: String::new(),
            advertise_host: String::new(),
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// Serializes a Redis URL with its password (if any) replaced, for `--check-config`.
fn url_without_password<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    match redis::parse_redis_url(url) {
        Some(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            s.serialize_str(parsed.as_str())
        }
        Some(_) => s.serialize_str(url),
        // Not a URL the client understands: it may still hold a password, show none of it.
        None if url.is_empty() => s.serialize_str(""),
        None => s.serialize_str("REDACTED (not a redis:// URL)"),
    }
}

impl ClusterConfig {
    /// Whether cluster mode is asked for.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// Checks the keys; `listeners` are the enabled protocols' `(key, address)`.
    /// Errors are `(key, message)`.
    pub fn check(&self, listeners: &[(&str, SocketAddr)]) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((format!("cluster.{key}"), message));
        if let Err(e) = check_key_part(&self.name) {
            return bad("name", e);
        }
        if self.name.is_empty() {
            return bad("name", "must not be empty".into());
        }
        if let Err(e) = check_key_part(&self.node_id) {
            return bad("node_id", e);
        }
        if self.node_timeout < Duration::from_secs(1) {
            return bad("node_timeout", "must be at least 1s".into());
        }
        if !self.enabled() {
            return Ok(());
        }
        if let Err(e) = redis::parse_redis_url(&self.redis_url).ok_or("not a redis:// URL") {
            return bad("redis_url", e.into());
        }
        if self.advertise_host.is_empty() {
            if let Some((key, addr)) = listeners.iter().find(|(_, a)| a.ip().is_unspecified()) {
                return bad(
                    "advertise_host",
                    format!(
                        "required in cluster mode: {key} = {addr} binds an unspecified \
                         address, so other nodes need a host name or IP to reach this node"
                    ),
                );
            }
        }
        Ok(())
    }

    /// The URL other nodes reach this node's listener bound at `bound` by.
    pub fn advertised_url(&self, scheme: &str, bound: SocketAddr) -> String {
        let host = self.advertised(bound);
        if host.contains(':') && !host.starts_with('[') {
            format!("{scheme}://[{host}]:{}", bound.port())
        } else {
            format!("{scheme}://{host}:{}", bound.port())
        }
    }

    /// The host other nodes reach this node's listener at `listen` by.
    pub fn advertised(&self, listen: SocketAddr) -> String {
        if self.advertise_host.is_empty() {
            listen.ip().to_string()
        } else {
            self.advertise_host.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Source};

    fn load(env: &[(&str, &str)]) -> Result<Config, String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let none = std::path::Path::new("/nonexistent/gateway.toml");
        Config::load(Source::Optional(none), env, &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default() {
        let c = load(&[]).expect("defaults load");
        assert!(!c.cluster.enabled());
        assert_eq!(c.cluster.name, "gateway");
        assert_eq!(c.cluster.node_timeout, std::time::Duration::from_secs(10));
        assert!(c.to_toml().contains("[cluster]"), "--check-config shows it");
    }

    #[test]
    fn a_set_redis_url_turns_cluster_mode_on() {
        let c = load(&[
            ("GATEWAY_CLUSTER__REDIS_URL", "redis://127.0.0.1:6379/"),
            ("GATEWAY_CLUSTER__ADVERTISE_HOST", "10.0.0.5"),
        ])
        .expect("loads");
        assert!(c.cluster.enabled());
    }

    #[test]
    fn advertise_host_is_required_behind_an_unspecified_listen_address() {
        let e = load(&[("GATEWAY_CLUSTER__REDIS_URL", "redis://127.0.0.1:6379/")])
            .expect_err("refused");
        assert!(e.starts_with("cluster.advertise_host: required"), "{e}");
        assert!(e.contains("webrtcroom.listen = 0.0.0.0:8443"), "{e}");
    }

    #[test]
    fn check_config_hides_the_redis_password() {
        let mut c = load(&[]).expect("defaults load");
        c.cluster.redis_url = "redis://:hunter2@10.0.0.2:6379/0".into();
        let shown = c.to_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("redis://:REDACTED@10.0.0.2:6379/0"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load(&[("GATEWAY_CLUSTER__NODE_ID", "a:b")]).expect_err("refused");
        assert!(e.starts_with("cluster.node_id:"), "{e}");
        let e = load(&[("GATEWAY_CLUSTER__NAME", "")]).expect_err("refused");
        assert!(e.starts_with("cluster.name:"), "{e}");
        let e = load(&[("GATEWAY_CLUSTER__NODE_TIMEOUT", "100ms")]).expect_err("refused");
        assert!(e.starts_with("cluster.node_timeout:"), "{e}");
        let e = load(&[
            ("GATEWAY_CLUSTER__REDIS_URL", "http://x"),
            ("GATEWAY_CLUSTER__ADVERTISE_HOST", "10.0.0.5"),
        ])
        .expect_err("refused");
        assert!(e.starts_with("cluster.redis_url: not a redis"), "{e}");
    }
}
