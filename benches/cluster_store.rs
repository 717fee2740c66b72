//! What the cluster-mode foundation costs in Redis (issue 10), against a real redis-server
//! started here on a free loopback port: joins/s and Redis commands per join and leave
//! (from `INFO commandstats`), and cross-node transport throughput and latency.
//!
//! `cargo bench --bench cluster_store` (debug figures from `cargo test`-style builds are not
//! meaningful; this runs with the bench profile). Prints figures; asserts nothing.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use signal_gateway::cluster::transport::{Inbox, Publisher, TransportStats};
use signal_gateway::cluster::NodeId;
use signal_gateway::store::redis::{Address, JoinArgs, RedisStore};

const JOINS: usize = 20_000;
const CONCURRENCY: usize = 64;
const MESSAGES: u64 = 50_000;

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Commands Redis ran (scripts' inner commands included), and script calls among them.
async fn commands(c: &mut redis::aio::ConnectionManager) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap_or_default();
    let calls =
        |l: &str| -> Option<u64> { l.split("calls=").nth(1)?.split(',').next()?.parse().ok() };
    let all = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info"))
        .filter_map(calls)
        .sum();
    let scripts = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_eval"))
        .filter_map(calls)
        .sum();
    (all, scripts)
}

/// Runs `op` for 0..JOINS, CONCURRENCY callers at a time; how long it took.
async fn spread<F, Fut>(store: &RedisStore, op: F) -> Result<Duration, tokio::task::JoinError>
where
    F: Fn(RedisStore, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let (store, op) = (store.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..JOINS).step_by(CONCURRENCY) {
                op(store.clone(), i).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(started.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut admin = loop {
        if let Ok(c) = client.get_connection_manager().await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let store = RedisStore::new(client.get_connection_manager().await?, "bench", "chatroom");

    // Joins then leaves, CONCURRENCY at a time, rooms of 4 with unique names.
    let before = commands(&mut admin).await;
    let join_time = spread(&store, |store, i| async move {
        let m = format!("m{i}");
        let at = Address {
            node: "n1".into(),
            conn: m.clone(),
        };
        let _ = store
            .join(&JoinArgs {
                member: &m,
                room: &format!("room{}", i / 4),
                at: &at,
                name: Some(&m),
                capacity: 4,
                max_rooms: 0,
                source: "bench",
                reap_grace_ms: None,
            })
            .await;
    })
    .await?;
    let after_joins = commands(&mut admin).await;
    let leave_time = spread(&store, |store, i| async move {
        let _ = store.leave(&format!("m{i}")).await;
    })
    .await?;
    let after_leaves = commands(&mut admin).await;
    let per = |a: (u64, u64), b: (u64, u64)| {
        (
            (b.0 - a.0) as f64 / JOINS as f64,
            (b.1 - a.1) as f64 / JOINS as f64,
        )
    };
    let (cmds, calls) = per(before, after_joins);
    println!(
        "joins: {JOINS} in {join_time:.2?} = {:.0}/s, {calls:.2} round trips (script calls) \
         and {cmds:.2} Redis commands per join",
        JOINS as f64 / join_time.as_secs_f64(),
    );
    let (cmds, calls) = per(after_joins, after_leaves);
    println!(
        "leaves: {JOINS} in {leave_time:.2?} = {:.0}/s, {calls:.2} round trips (script calls) \
         and {cmds:.2} Redis commands per leave",
        JOINS as f64 / leave_time.as_secs_f64(),
    );

    // Cross-node messages: node A publishes MESSAGES (closed loop on its queue), node B
    // receives; latency from the send time carried in the payload.
    let stats = Arc::new(TransportStats::default());
    let b = NodeId::from_config("B");
    let mut inbox = Inbox::start(client.clone(), "bench", &b, 1 << 17, stats.clone()).await?;
    let publisher = Publisher::start(
        client.get_connection_manager().await?,
        "bench",
        &NodeId::from_config("A"),
        4096,
        stats.clone(),
    );
    let before = commands(&mut admin).await.0;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let mut i = 0;
        while i < MESSAGES {
            let payload = Bytes::from(micros_now().to_string());
            if publisher.send(Arc::from("B"), payload).is_ok() {
                i += 1;
            } else {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut received = 0;
    while received < MESSAGES {
        match tokio::time::timeout(Duration::from_secs(30), inbox.recv()).await {
            Ok(Some(_)) => received += 1,
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    sender.await?;
    let published = commands(&mut admin).await.0 - before;
    println!(
        "cross-node, closed loop: {received} messages in {elapsed:.2?} = {:.0}/s, \
         {:.3} Redis commands per message (PUBLISH, sent in pipelines)",
        received as f64 / elapsed.as_secs_f64(),
        published as f64 / MESSAGES as f64
    );

    // Latency at 5,000 messages/s for 2 s, from the send time carried in the payload.
    let publisher = Publisher::start(
        client.get_connection_manager().await?,
        "bench",
        &NodeId::from_config("A2"),
        4096,
        stats.clone(),
    );
    let paced = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(200));
        for _ in 0..10_000 {
            tick.tick().await;
            let _ = publisher.send(Arc::from("B"), Bytes::from(micros_now().to_string()));
        }
    });
    let mut latencies = Vec::with_capacity(10_000);
    while latencies.len() < 10_000 {
        let Ok(Some(env)) = tokio::time::timeout(Duration::from_secs(30), inbox.recv()).await
        else {
            break;
        };
        let sent: u64 = std::str::from_utf8(&env.payload)?.parse()?;
        latencies.push(micros_now().saturating_sub(sent));
    }
    paced.await?;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "cross-node at 5k msgs/s: {} messages, p50 {} µs, p99 {} µs (send to receive, \
         through Redis on loopback)",
        latencies.len(),
        pct(0.5),
        pct(0.99)
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
