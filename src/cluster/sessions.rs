//! The session directory: which node owns each long-polling Engine.IO session, and where
//! each node's listeners can be reached (issue 10, "No sticky sessions").
//!
//! A polling session lives in the memory of the node that answered its handshake, but behind
//! a round-robin balancer its later requests reach any node. That node looks the sid up here
//! and forwards the request to the owner (`endpoints/forward.rs`).
//!
//! Keys, under `<cluster.name>:`:
//! - `sid:<sid>`: the owning node's id, written before the handshake answer leaves the owner.
//!   It expires after [`SESSION_TTL`]; the owner refreshes it at most once per
//!   [`REFRESH_EVERY`] while the session makes requests. A polling client makes a request at
//!   least every ping interval (25 s by default) and an upgraded session makes none, so five
//!   minutes outlive any live polling session by a wide margin while a closed or upgraded
//!   one costs Redis its key for at most that long. Refreshing once a minute (not on every
//!   request) keeps the owner's hot path free of Redis calls.
//! - `listeners:<listener>`: hash node id -> base URL (`scheme://host:port`) of that node's
//!   listener; `listeners`: the set of listener names, so a node's advertisements can be
//!   forgotten without scanning.
//! - `forward-secret`: the cluster secret, created once by whichever node starts first
//!   (`SET NX`) and read by every node; it authenticates forwarded requests.
//!
//! A node is only forwarded to while its heartbeat (`liveness.rs`) exists: a dead node's
//! sessions are gone with it, so their requests are answered as unknown sessions at once,
//! without waiting for a connection attempt to time out.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::liveness::heartbeat_key;
use super::NodeId;

/// How long a session's owner is remembered without a refresh.
pub const SESSION_TTL: Duration = Duration::from_secs(300);

/// The owner refreshes a used session's entry at most this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// An error talking to Redis about sessions, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("cluster session directory, {action}: {source}")]
pub struct DirectoryError {
    /// What was being done.
    pub action: &'static str,
    /// The client's error.
    #[source]
    pub source: redis::RedisError,
}

fn redis_err(action: &'static str) -> impl FnOnce(redis::RedisError) -> DirectoryError {
    move |source| DirectoryError { action, source }
}

/// Who owns a session, as the directory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// No node registered it (never existed, or expired).
    Nobody,
    /// This node.
    Here,
    /// A live node that serves the asked listener at this base URL.
    There {
        /// Its id.
        node: String,
        /// `scheme://host:port` of its listener.
        url: String,
    },
    /// A node that is dead (no heartbeat) or no longer advertises the listener.
    Gone {
        /// Its id.
        node: String,
    },
}

/// The session directory of one node; cheap to clone (one shared Redis connection).
#[derive(Clone)]
pub struct Directory {
    conn: ConnectionManager,
    prefix: String,
    node: NodeId,
}

impl Directory {
    /// The directory of cluster `cluster` (the key prefix, `cluster.name`) as seen by `node`.
    pub fn new(conn: ConnectionManager, cluster: &str, node: NodeId) -> Self {
        Self {
            conn,
            prefix: cluster.to_owned(),
            node,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    fn sid_key(&self, sid: &str) -> String {
        format!("{}:sid:{sid}", self.prefix)
    }

    fn listener_key(&self, listener: &str) -> String {
        format!("{}:listeners:{listener}", self.prefix)
    }

    fn ttl_ms() -> u64 {
        u64::try_from(SESSION_TTL.as_millis()).unwrap_or(u64::MAX)
    }

    /// Advertises `url` (`scheme://host:port`) as where other nodes reach this node's
    /// `listener`.
    pub async fn advertise(&self, listener: &str, url: &str) -> Result<(), DirectoryError> {
        let () = redis::pipe()
            .atomic()
            .cmd("SADD")
            .arg(format!("{}:listeners", self.prefix))
            .arg(listener)
            .ignore()
            .cmd("HSET")
            .arg(self.listener_key(listener))
            .arg(self.node.as_str())
            .arg(url)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("advertise a listener"))?;
        Ok(())
    }

    /// Forgets every listener `node` advertised (a stopped or dead node; this node's own id
    /// on a graceful stop). Its sessions' entries expire by themselves.
    pub async fn forget_node(&self, node: &str) -> Result<(), DirectoryError> {
        let listeners: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}:listeners", self.prefix))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("list listeners"))?;
        if listeners.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for listener in &listeners {
            pipe.cmd("HDEL")
                .arg(self.listener_key(listener))
                .arg(node)
                .ignore();
        }
        let () = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("forget a node's listeners"))?;
        Ok(())
    }

    /// Records that this node owns session `sid` (also the refresh: it rewrites the entry, so
    /// a Redis that lost its state learns it again).
    pub async fn register(&self, sid: &str) -> Result<(), DirectoryError> {
        let () = redis::cmd("SET")
            .arg(self.sid_key(sid))
            .arg(self.node.as_str())
            .arg("PX")
            .arg(Self::ttl_ms())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("register a session"))?;
        Ok(())
    }

    /// Who owns `sid`, and where its `listener` is, in one round trip.
    pub async fn owner(&self, sid: &str, listener: &str) -> Result<Owner, DirectoryError> {
        // The heartbeat key depends on the owner found, so it is built inside the script
        // (one Redis, not Redis Cluster: the cluster's keys all share one server anyway).
        let script = redis::Script::new(
            "local node = redis.call('GET', KEYS[1]) \
             if not node then return false end \
             local url = redis.call('HGET', KEYS[2], node) \
             local alive = redis.call('EXISTS', ARGV[1] .. node) \
             return {node, url or '', alive}",
        );
        let hb_prefix = heartbeat_key(&self.prefix, "");
        let found: Option<(String, String, i64)> = script
            .key(self.sid_key(sid))
            .key(self.listener_key(listener))
            .arg(hb_prefix)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("look up a session"))?;
        Ok(match found {
            None => Owner::Nobody,
            Some((node, _, _)) if node == self.node.as_str() => Owner::Here,
            Some((node, url, alive)) if alive == 1 && !url.is_empty() => Owner::There { node, url },
            Some((node, _, _)) => Owner::Gone { node },
        })
    }

    /// The cluster secret: created by the first node that asks, the same for every node
    /// after. 32 random bytes (two v4 UUIDs' worth of randomness), hex-encoded.
    pub async fn cluster_secret(&self) -> Result<Vec<u8>, DirectoryError> {
        let key = format!("{}:forward-secret", self.prefix);
        let fresh = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let (secret,): (String,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(fresh)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("read the cluster secret"))?;
        Ok(secret.into_bytes())
    }
}
