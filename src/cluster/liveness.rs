//! Node liveness: each node renews a heartbeat key with a time-to-live; a node whose key
//! expired is dead, and the survivors deal with its members (see `RedisStore::reap`).
//!
//! Keys, under `<cluster.name>:`: `nodes` (hash: node id -> advertised address, every node
//! that registered and was not yet forgotten) and `hb:<node id>` (the heartbeat, expiring
//! after `cluster.node_timeout`). A registered node without a heartbeat is dead.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::NodeId;

/// This node's heartbeat and its view of the other nodes.
#[derive(Clone)]
pub struct Liveness {
    conn: ConnectionManager,
    prefix: String,
    node: NodeId,
    advertise: String,
    timeout: Duration,
}

/// What renewing the heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The heartbeat was alive and is renewed.
    Renewed,
    /// It had expired (a long pause, or Redis lost its state): the other nodes may have
    /// removed this node's members. It is registered again; the caller must restore its
    /// live members.
    Lost,
}

/// An error talking to Redis about liveness, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    /// Redis refused or could not be reached.
    #[error("cluster liveness, {action}: {source}")]
    Redis {
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A live node already has this id (`cluster.node_id` given to two nodes).
    #[error("cluster.node_id: {0} is already used by a live node")]
    IdInUse(String),
}

/// The heartbeat key of `node` in cluster `prefix` (also read by the session directory, which
/// forwards only to live nodes).
pub(crate) fn heartbeat_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:hb:{node}")
}

fn redis_err(action: &'static str) -> impl FnOnce(redis::RedisError) -> LivenessError {
    move |source| LivenessError::Redis { action, source }
}

impl Liveness {
    /// The liveness of `node` in the cluster named `cluster`; `advertise` is how other nodes
    /// reach its listeners.
    pub fn new(
        conn: ConnectionManager,
        cluster: &str,
        node: NodeId,
        advertise: String,
        timeout: Duration,
    ) -> Self {
        Self {
            conn,
            prefix: cluster.to_owned(),
            node,
            advertise,
            timeout,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// How often to call [`Liveness::beat`]: three times per timeout, so one late renewal
    /// does not kill a node.
    pub fn interval(&self) -> Duration {
        self.timeout / 3
    }

    fn hb_key(&self, node: &str) -> String {
        heartbeat_key(&self.prefix, node)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Announces this node; fails if a live node has the same id.
    pub async fn register(&self) -> Result<(), LivenessError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.hb_key(self.node.as_str()))
            .arg(&self.advertise)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("register"))?;
        if set.is_none() {
            return Err(LivenessError::IdInUse(self.node.to_string()));
        }
        let () = redis::cmd("HSET")
            .arg(format!("{}:nodes", self.prefix))
            .arg(self.node.as_str())
            .arg(&self.advertise)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("register"))?;
        Ok(())
    }

    /// Renews the heartbeat; registers again when it had expired.
    pub async fn beat(&self) -> Result<Beat, LivenessError> {
        let renewed: Option<String> = redis::cmd("SET")
            .arg(self.hb_key(self.node.as_str()))
            .arg(&self.advertise)
            .arg("XX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("heartbeat"))?;
        if renewed.is_some() {
            return Ok(Beat::Renewed);
        }
        self.register().await?;
        Ok(Beat::Lost)
    }

    /// The registered nodes (id, advertised address) whose heartbeat expired.
    pub async fn dead_nodes(&self) -> Result<Vec<(String, String)>, LivenessError> {
        Ok(self
            .nodes()
            .await?
            .into_iter()
            .filter(|(_, _, alive)| !alive)
            .map(|(id, address, _)| (id, address))
            .collect())
    }

    /// Every registered node: (id, advertised address, heartbeat alive), sorted by id.
    pub async fn nodes(&self) -> Result<Vec<(String, String, bool)>, LivenessError> {
        let nodes: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(format!("{}:nodes", self.prefix))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("list nodes"))?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &nodes {
            pipe.cmd("EXISTS").arg(self.hb_key(id));
        }
        let alive: Vec<bool> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("check heartbeats"))?;
        let mut out: Vec<(String, String, bool)> = nodes
            .into_iter()
            .zip(alive)
            .map(|((id, address), alive)| (id, address, alive))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Forgets a dead node once its members were dealt with in every realm; `false` when
    /// it came back meanwhile (its heartbeat exists again) and was kept.
    pub async fn forget(&self, node: &str) -> Result<bool, LivenessError> {
        let script = redis::Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
             return redis.call('HDEL', KEYS[2], ARGV[1])",
        );
        let removed: i64 = script
            .key(self.hb_key(node))
            .key(format!("{}:nodes", self.prefix))
            .arg(node)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("forget node"))?;
        Ok(removed == 1)
    }

    /// A graceful stop: drops the heartbeat at once, so the survivors take over without
    /// waiting for the timeout.
    pub async fn stop(&self) -> Result<(), LivenessError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.hb_key(self.node.as_str()))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("stop"))?;
        Ok(())
    }
}
