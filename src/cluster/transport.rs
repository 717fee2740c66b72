//! The cross-node transport: ordered messages from one node to another over Redis pub/sub.
//!
//! Each node listens on one channel, `<cluster.name>:to:<node id>`, through one dedicated
//! subscriber connection. Each node publishes through one task that drains a bounded queue
//! in order and writes each batch as one pipeline on one connection. Redis runs one
//! connection's commands in order and delivers one channel's messages to a subscriber in
//! publish order, so one sender's messages reach each receiver in the order sent, with no
//! per-message task on the way.
//!
//! Pub/sub delivers at most once: a message published while Redis is unreachable is lost.
//! Nothing vanishes silently: the sender counts what it could not queue or publish, and each
//! envelope carries a per-(sender, receiver) sequence number, so the receiver counts gaps.
//!
//! Across a Redis outage: while Redis is away, publishes fail (counted as `dropped_redis`) or
//! wait in the bounded queue (beyond it, `dropped_queue_full`); the subscriber reconnects and
//! subscribes again every 200 ms until Redis answers; the first batch after Redis comes back is
//! retried on the reconnected connection rather than lost (`tests/cluster.test.mjs` restarts
//! Redis under two nodes and relays again).
//!
//! Envelope: one byte (length of the sender's id), the sender's id, the sequence number
//! (8 bytes, big-endian), then the payload as given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::NodeId;

/// How many queued messages one pipeline carries at most.
const BATCH: usize = 256;

/// What the transport did, for `/metrics`.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Messages published.
    pub sent: AtomicU64,
    /// Messages not sent: the outgoing queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Messages not sent: Redis refused or could not be reached.
    pub dropped_redis: AtomicU64,
    /// Messages received and handed on.
    pub received: AtomicU64,
    /// Messages received but not handed on: the consumer's queue was full.
    pub dropped_inbox_full: AtomicU64,
    /// Messages a sender numbered that never arrived (seen as gaps in its numbering).
    pub lost: AtomicU64,
    /// Errors from Redis (publish, subscribe, lost subscriber connection).
    pub redis_errors: AtomicU64,
}

/// A message from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sending node.
    pub from: String,
    /// Its number among the messages that node sent to this one (1, 2, ...).
    pub seq: u64,
    /// What it carries.
    pub payload: Bytes,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The outgoing queue is full (Redis slow or away); the message is counted as dropped.
    #[error("cluster transport: outgoing queue full")]
    Full,
    /// The publishing task has stopped.
    #[error("cluster transport: stopped")]
    Closed,
}

fn channel(cluster: &str, node: &str) -> String {
    format!("{cluster}:to:{node}")
}

/// Sends to other nodes; cheap to clone, all clones feed one ordered queue.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<(Arc<str>, Bytes)>,
    stats: Arc<TransportStats>,
    /// Messages queued and not yet published (or given up on), for a graceful stop.
    pending: Arc<AtomicU64>,
}

impl Publisher {
    /// Starts the publishing task of node `me` with a queue of `capacity` messages.
    pub fn start(
        conn: ConnectionManager,
        cluster: &str,
        me: &NodeId,
        capacity: usize,
        stats: Arc<TransportStats>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let pending = Arc::new(AtomicU64::new(0));
        tokio::spawn(publish_loop(
            conn,
            cluster.to_owned(),
            me.as_str().to_owned(),
            rx,
            stats.clone(),
            pending.clone(),
        ));
        Self {
            queue,
            stats,
            pending,
        }
    }

    /// Waits until every message queued so far was published or given up on, at most
    /// `limit`; `false` when some were still waiting.
    pub async fn flushed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Queues `payload` for node `to`, without waiting. Messages queued by one caller reach
    /// `to` in this order.
    pub fn send(&self, to: Arc<str>, payload: Bytes) -> Result<(), SendError> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.queue.try_send((to, payload)).map_err(|e| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.stats
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                    SendError::Full
                }
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            }
        })
    }
}

async fn publish_loop(
    mut conn: ConnectionManager,
    cluster: String,
    me: String,
    mut rx: mpsc::Receiver<(Arc<str>, Bytes)>,
    stats: Arc<TransportStats>,
    pending: Arc<AtomicU64>,
) {
    let mut seqs: HashMap<Arc<str>, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for (to, payload) in batch.drain(..) {
            let seq = seqs.entry(to.clone()).or_insert(0);
            *seq += 1;
            pipe.cmd("PUBLISH")
                .arg(channel(&cluster, &to))
                .arg(encode(&me, *seq, &payload).as_ref())
                .ignore();
        }
        let count = pipe.cmd_iter().count() as u64;
        match publish(&mut conn, &pipe, &stats).await {
            Ok(()) => {
                stats.sent.fetch_add(count, Ordering::Relaxed);
            }
            Err(e) => {
                stats.dropped_redis.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(error = %e, messages = count, "cluster transport: publish failed");
            }
        }
        pending.fetch_sub(count, Ordering::AcqRel);
    }
}

/// How often a batch is tried when the connection broke under it.
const PUBLISH_ATTEMPTS: u32 = 4;

/// Publishes one batch. A connection that broke (Redis restarted, network blip) fails the
/// first command sent on it while the connection manager reconnects; such a batch was not
/// written, so it is sent again after a short pause (the queue holds later messages meanwhile,
/// keeping the order). Other errors are not retried.
async fn publish(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
    stats: &TransportStats,
) -> redis::RedisResult<()> {
    let mut attempt = 1;
    loop {
        match pipe.query_async::<()>(conn).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                let broken =
                    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
                if !broken || attempt >= PUBLISH_ATTEMPTS {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
        }
    }
}

fn encode(me: &str, seq: u64, payload: &[u8]) -> Bytes {
    let id = &me.as_bytes()[..me.len().min(255)];
    let mut out = BytesMut::with_capacity(1 + id.len() + 8 + payload.len());
    out.put_u8(id.len() as u8);
    out.put_slice(id);
    out.put_u64(seq);
    out.put_slice(payload);
    out.freeze()
}

fn decode(raw: &[u8]) -> Option<Envelope> {
    let (&len, rest) = raw.split_first()?;
    let len = usize::from(len);
    let from = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
    let seq = u64::from_be_bytes(rest.get(len..len + 8)?.try_into().ok()?);
    let payload = Bytes::copy_from_slice(rest.get(len + 8..)?);
    Some(Envelope { from, seq, payload })
}

/// Receives what other nodes send to this one.
pub struct Inbox {
    rx: mpsc::Receiver<Envelope>,
}

impl Inbox {
    /// Subscribes node `me`'s channel (waiting until the subscription is in place) and
    /// starts the task that reads it, resubscribing after a lost connection.
    pub async fn start(
        client: redis::Client,
        cluster: &str,
        me: &NodeId,
        capacity: usize,
        stats: Arc<TransportStats>,
    ) -> Result<Self, redis::RedisError> {
        let name = channel(cluster, me.as_str());
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&name).await?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            let mut last: HashMap<String, u64> = HashMap::new();
            loop {
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    let Some(env) = decode(msg.get_payload_bytes()) else {
                        continue;
                    };
                    let prev = last.insert(env.from.clone(), env.seq).unwrap_or(0);
                    if env.seq > prev + 1 {
                        stats.lost.fetch_add(env.seq - prev - 1, Ordering::Relaxed);
                    }
                    match tx.try_send(env) {
                        Ok(()) => {
                            stats.received.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            stats.dropped_inbox_full.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                // The subscriber connection is gone: subscribe again until Redis answers.
                stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                pubsub = loop {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match client.get_async_pubsub().await {
                        Ok(mut p) => match p.subscribe(&name).await {
                            Ok(()) => break p,
                            Err(e) => tracing::warn!(error = %e, "cluster transport: subscribe"),
                        },
                        Err(e) => tracing::warn!(error = %e, "cluster transport: reconnect"),
                    }
                };
            }
        });
        Ok(Self { rx })
    }

    /// The next message, in the order its sender sent it; `None` once stopped.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let raw = encode("node-a", 42, b"[\"x\"]");
        let env = decode(&raw);
        assert_eq!(
            env,
            Some(Envelope {
                from: "node-a".into(),
                seq: 42,
                payload: Bytes::from_static(b"[\"x\"]"),
            })
        );
        assert_eq!(decode(&raw[..5]), None);
    }
}
