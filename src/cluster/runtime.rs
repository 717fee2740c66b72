//! This node's life in the cluster: joining it at start, the tasks that keep it a member
//! (heartbeat, dead nodes, grace expiry, the inbox), what operators see of it, and leaving it
//! on a graceful stop.
//!
//! The gateway starts a [`Node`] when `cluster.redis_url` is set, opens the realms' stores
//! over its connection, then calls [`Node::run`] with them and consumes what comes back:
//! messages from other nodes (delivered by the adapters' inlets) and the supervisor's events
//! (departures its peers must hear of, and re-registration after Redis lost this node).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use tokio::sync::mpsc;

use super::link::Link;
use super::liveness::Liveness;
use super::supervisor::{self, Event};
use super::transport::{Inbox, Publisher, TransportStats};
use super::{ClusterConfig, NodeId};

/// Messages that may wait to be published (Redis slow or away) before sends are dropped.
const OUTBOX: usize = 65_536;
/// Messages from other nodes that may wait for delivery here.
const INBOX: usize = 65_536;

/// This node, a member of the cluster.
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// The connection its stores and liveness use.
    pub conn: ConnectionManager,
    /// How it sends to other nodes.
    pub link: Arc<Link>,
    /// What operators see of the cluster.
    pub status: Arc<Status>,
    liveness: Liveness,
    client: redis::Client,
    cluster: String,
}

/// The cluster as operators see it from this node.
pub struct Status {
    /// This node's id.
    pub node: String,
    /// Whether Redis answered the last time this node asked.
    reachable: Arc<AtomicBool>,
    /// The transport's counters.
    pub transport: Arc<TransportStats>,
    /// The nodes registered, with whether their heartbeat is alive (refreshed every 2 s).
    nodes: Mutex<Vec<NodeView>>,
    /// Redis round trips of the supervisor's passes.
    passes: AtomicU64,
}

/// A node as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Its id.
    pub id: String,
    /// The address it advertised.
    pub address: String,
    /// Whether its heartbeat is alive.
    pub alive: bool,
    /// Whether it is the node answering.
    pub this: bool,
}

impl Status {
    /// Whether the node can serve (Redis reachable).
    pub fn ready(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// The nodes seen.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.nodes.lock().clone()
    }

    /// Sets the cluster's gauges and counters, at scrape time.
    pub fn record_metrics(&self) {
        let t = &self.transport;
        let nodes = self.nodes.lock();
        metrics::gauge!("gateway_cluster_nodes", "state" => "alive")
            .set(nodes.iter().filter(|n| n.alive).count() as f64);
        metrics::gauge!("gateway_cluster_nodes", "state" => "dead")
            .set(nodes.iter().filter(|n| !n.alive).count() as f64);
        drop(nodes);
        metrics::gauge!("gateway_cluster_redis_up").set(if self.ready() { 1.0 } else { 0.0 });
        let counters = [
            ("sent", &t.sent),
            ("received", &t.received),
            ("dropped_queue_full", &t.dropped_queue_full),
            ("dropped_redis", &t.dropped_redis),
            ("dropped_inbox_full", &t.dropped_inbox_full),
            ("lost", &t.lost),
        ];
        for (what, n) in counters {
            metrics::counter!("gateway_cluster_messages_total", "what" => what)
                .absolute(n.load(Ordering::Relaxed));
        }
        metrics::counter!("gateway_cluster_redis_errors_total", "action" => "transport")
            .absolute(t.redis_errors.load(Ordering::Relaxed));
        metrics::counter!("gateway_cluster_supervisor_passes_total")
            .absolute(self.passes.load(Ordering::Relaxed));
    }
}

/// Records one Redis round trip of `action` in the cluster's histogram.
pub fn record_round_trip(action: &'static str, since: Instant) {
    metrics::histogram!("gateway_cluster_redis_seconds", "action" => action)
        .record(since.elapsed().as_secs_f64());
}

impl Node {
    /// Connects to Redis and registers this node, advertised as `advertise`. Fails when
    /// Redis cannot be reached at start or a live node already has the configured id.
    pub async fn join(config: &ClusterConfig, advertise: String) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.redis_url.as_str())
            .context("cluster.redis_url: not usable")?;
        // Short timeouts: while Redis is away, requests are refused at once rather than
        // held (the connection manager keeps reconnecting in the background).
        let manager = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(Duration::from_secs(2))
                .set_number_of_retries(1)
        };
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_connection_manager_with_config(manager()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer in 10 s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| {
            format!(
                "cluster: cannot reach Redis at {}",
                redacted(&config.redis_url)
            )
        })?;
        let publish = client
            .get_connection_manager_with_config(manager())
            .await
            .context("cluster: second Redis connection (publishing)")?;
        let id = NodeId::from_config(&config.node_id);
        let liveness = Liveness::new(
            conn.clone(),
            &config.name,
            id.clone(),
            advertise,
            config.node_timeout,
        );
        liveness
            .register()
            .await
            .context("cluster: registering this node")?;
        let transport = Arc::new(TransportStats::default());
        let publisher = Publisher::start(publish, &config.name, &id, OUTBOX, transport.clone());
        let status = Arc::new(Status {
            node: id.to_string(),
            reachable: Arc::new(AtomicBool::new(true)),
            transport,
            nodes: Mutex::default(),
            passes: AtomicU64::new(0),
        });
        tracing::info!(node = %id, cluster = %config.name, "joined the cluster");
        Ok(Self {
            id,
            conn,
            link: Link::new(publisher),
            status,
            liveness,
            client,
            cluster: config.name.clone(),
        })
    }

    /// Starts this node's inbox and supervisor over `realms`. Returns the messages from
    /// other nodes and the supervisor's events, in order.
    pub async fn run(
        &self,
        realms: Vec<supervisor::Realm>,
    ) -> anyhow::Result<(Inbox, mpsc::Receiver<Event>)> {
        let inbox = Inbox::start(
            self.client.clone(),
            &self.cluster,
            &self.id,
            INBOX,
            self.status.transport.clone(),
        )
        .await
        .context("cluster: subscribing this node's channel")?;
        let (tx, rx) = mpsc::channel(1024);
        supervisor::spawn(
            self.liveness.clone(),
            realms,
            tx,
            self.status.reachable.clone(),
        );
        let status = Arc::downgrade(&self.status);
        let liveness = self.liveness.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let Some(status) = status.upgrade() else {
                    return;
                };
                status.passes.fetch_add(1, Ordering::Relaxed);
                if let Ok(nodes) = liveness.nodes().await {
                    *status.nodes.lock() = nodes
                        .into_iter()
                        .map(|(id, address, alive)| NodeView {
                            this: id == status.node,
                            id,
                            address,
                            alive,
                        })
                        .collect();
                }
            }
        });
        Ok((inbox, rx))
    }

    /// A graceful stop: drops this node's heartbeat so the other nodes take over its
    /// members at once, without waiting for `cluster.node_timeout`.
    pub async fn leave(&self) {
        match self.liveness.stop().await {
            Ok(()) => tracing::info!(node = %self.id, "left the cluster"),
            Err(e) => tracing::warn!(node = %self.id, error = %e, "leaving the cluster"),
        }
    }
}

/// A Redis URL without its password, for messages.
fn redacted(url: &str) -> String {
    match redis::parse_redis_url(url) {
        Some(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Some(_) => url.to_owned(),
        None => "REDACTED".into(),
    }
}
