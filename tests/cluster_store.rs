//! Cluster-mode foundation against a real redis-server (issue 10): the atomic store rules
//! racing between "nodes", node death, grace expiry once, Redis restart, ordered transport.
//!
//! Each test starts its own `redis-server` on a free loopback port (no persistence) and stops
//! it at the end. Each "node" is its own Redis connection, as separate gateway processes are.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use signal_gateway::cluster::liveness::{Beat, Liveness};
use signal_gateway::cluster::supervisor::{self, Event, Realm};
use signal_gateway::cluster::transport::{Inbox, Publisher, TransportStats};
use signal_gateway::cluster::NodeId;
use signal_gateway::store::redis::{
    Address, Departure, JoinOutcome, Reaped, RebindOutcome, RedisStore, Restored,
};

/// A redis-server of this test's own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        Self::start_on(port).await
    }

    async fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (tests/run.sh installs it)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = redis.client().get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return redis;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("redis url")
    }

    /// A new node's connection.
    async fn node(&self) -> ConnectionManager {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5));
        self.client()
            .get_connection_manager_with_config(config)
            .await
            .expect("connection manager")
    }

    async fn keys(&self) -> Vec<String> {
        let mut c = self.node().await;
        redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .expect("KEYS")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn at(node: &str, conn: &str) -> Address {
    Address {
        node: node.into(),
        conn: conn.into(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_a_full_room_exactly_capacity_win() {
    let redis = Redis::start().await;
    let nodes = [
        RedisStore::new(redis.node().await, "gw", "webrtcroom"),
        RedisStore::new(redis.node().await, "gw", "webrtcroom"),
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = nodes[i % 2].clone();
        let node = format!("n{}", i % 2);
        tasks.push(tokio::spawn(async move {
            store
                .join(
                    &format!("m{i}"),
                    "call",
                    &at(&node, &format!("c{i}")),
                    None,
                    4,
                )
                .await
        }));
    }
    let mut joined = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.expect("task").expect("join") {
            JoinOutcome::Joined { .. } => joined += 1,
            JoinOutcome::Full => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((joined, full), (4, 36));
    assert_eq!(nodes[0].members("call").await.expect("members").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_chatroom_name_race_has_one_winner() {
    let redis = Redis::start().await;
    let nodes = [
        RedisStore::new(redis.node().await, "gw", "chatroom"),
        RedisStore::new(redis.node().await, "gw", "chatroom"),
    ];
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .join(
                    &format!("m{i}"),
                    "lobby",
                    &at("n", &format!("c{i}")),
                    Some("alice"),
                    0,
                )
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task").expect("join"));
    }
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, JoinOutcome::Joined { .. }))
        .count();
    let taken = outcomes
        .iter()
        .filter(|o| **o == JoinOutcome::NameTaken)
        .count();
    assert_eq!((winners, taken), (1, 29));
    // The name is free again once its holder leaves.
    let holder = nodes[0].members("lobby").await.expect("members");
    assert_eq!(holder.len(), 1);
    let gone = nodes[1].leave(&holder[0], None).await.expect("leave");
    assert_eq!(gone.map(|d| d.peers), Some(vec![]));
    let again = nodes[1]
        .join("late", "lobby", &at("n", "c-late"), Some("alice"), 0)
        .await
        .expect("join");
    assert!(matches!(again, JoinOutcome::Joined { .. }), "{again:?}");
}

#[tokio::test]
async fn join_order_is_kept_across_nodes_and_leaves() {
    let redis = Redis::start().await;
    let a = RedisStore::new(redis.node().await, "gw", "webrtcroom");
    let b = RedisStore::new(redis.node().await, "gw", "webrtcroom");
    let mut expected: Vec<String> = Vec::new();
    for i in 0..10 {
        let (store, node) = if i % 2 == 0 { (&a, "A") } else { (&b, "B") };
        let member = format!("m{i}");
        match store
            .join(&member, "room", &at(node, &member), None, 0)
            .await
            .expect("join")
        {
            JoinOutcome::Joined { peers, .. } => assert_eq!(peers, expected),
            other => panic!("{other:?}"),
        }
        expected.push(member);
    }
    assert_eq!(
        a.join("m3", "other", &at("A", "x"), None, 0)
            .await
            .expect("join"),
        JoinOutcome::AlreadyMember
    );
    let left = b.leave("m3", Some("m3")).await.expect("leave");
    expected.retain(|m| m != "m3");
    assert_eq!(
        left,
        Some(Departure {
            member: "m3".into(),
            room: "room".into(),
            peers: expected.clone(),
        })
    );
    // A leave from a connection the member no longer uses changes nothing.
    assert_eq!(a.leave("m4", Some("stale")).await.expect("leave"), None);
    assert_eq!(a.members("room").await.expect("members"), expected);
    for m in expected.clone() {
        a.leave(&m, None).await.expect("leave");
    }
    assert_eq!(redis.keys().await, vec!["gw:webrtcroom:seq".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_members_are_removed_exactly_once() {
    let redis = Redis::start().await;
    let timeout = Duration::from_secs(2);
    let live = |id: &str| {
        let id = id.to_owned();
        let redis = &redis;
        async move {
            Liveness::new(
                redis.node().await,
                "gw",
                NodeId::from_config(&id),
                format!("{id}.example:8443"),
                timeout,
            )
        }
    };
    let (a, b, c) = (live("A").await, live("B").await, live("C").await);
    for n in [&a, &b, &c] {
        n.register().await.expect("register");
    }
    assert!(matches!(
        live("A").await.register().await,
        Err(signal_gateway::cluster::liveness::LivenessError::IdInUse(_))
    ));
    let stores: Vec<RedisStore> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(RedisStore::new(redis.node().await, "gw", "webrtcroom"));
        }
        v
    };
    // Rooms spanning the three nodes; A holds m0, m3, m6, m9.
    let names = ["A", "B", "C"];
    for i in 0..12 {
        let node = names[i % 3];
        let member = format!("m{i}");
        let room = format!("room{}", i % 4);
        stores[i % 3]
            .join(&member, &room, &at(node, &member), None, 0)
            .await
            .expect("join");
    }
    // A beats a last time, then stops (SIGKILL); B and C keep beating.
    assert_eq!(a.beat().await.expect("beat"), Beat::Renewed);
    let started = Instant::now();
    let dead = loop {
        assert_eq!(b.beat().await.expect("beat"), Beat::Renewed);
        assert_eq!(c.beat().await.expect("beat"), Beat::Renewed);
        let dead = b.dead_nodes().await.expect("dead nodes");
        if !dead.is_empty() {
            break dead;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "A never died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead, vec![("A".to_string(), "A.example:8443".to_string())]);
    assert!(started.elapsed() >= timeout - Duration::from_millis(50));
    // B and C both see it and reap at once: each departure is reported once in all.
    let (rb, rc) = tokio::join!(
        stores[1].reap("A", now_ms(), 0),
        stores[2].reap("A", now_ms(), 0)
    );
    let mut reaped: Vec<Reaped> = rb
        .expect("reap")
        .into_iter()
        .chain(rc.expect("reap"))
        .collect();
    reaped.sort_by_key(|r| format!("{r:?}"));
    let left: Vec<(String, String, Vec<String>)> = reaped
        .into_iter()
        .map(|r| match r {
            Reaped::Left(d) => (d.member, d.room, d.peers),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        left.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        ["m0", "m3", "m6", "m9"]
    );
    // m0 was in room0 with m4 and m8, which stay and are told.
    assert_eq!(left[0].1, "room0");
    assert_eq!(left[0].2, ["m4", "m8"]);
    assert!(b.forget("A").await.expect("forget"));
    assert!(!c.forget("A").await.expect("forget"), "forgotten once");
    // Nothing of A stays in Redis.
    for key in redis.keys().await {
        assert!(
            !key.ends_with(":A") && !key.contains(":A:"),
            "left over: {key}"
        );
    }
    for (i, store) in stores.iter().enumerate().take(4) {
        let members = store.members(&format!("room{i}")).await.expect("members");
        assert!(members
            .iter()
            .all(|m| !["m0", "m3", "m6", "m9"].contains(&m.as_str())));
    }
    assert!(b.dead_nodes().await.expect("dead").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_expires_once_after_the_observing_node_died() {
    let redis = Redis::start().await;
    let a = RedisStore::new(redis.node().await, "gw", "chatroom");
    let b = RedisStore::new(redis.node().await, "gw", "chatroom");
    let c = RedisStore::new(redis.node().await, "gw", "chatroom");
    for (i, node) in ["A", "A", "B", "C"].iter().enumerate() {
        let m = format!("m{i}");
        a.join(&m, "lobby", &at(node, &m), Some(&format!("user{i}")), 0)
            .await
            .expect("join");
    }
    // A saw m0 drop and marked it away, then died before the grace ended. A stale drop of
    // an old connection marks nothing.
    assert!(a.away("m0", "m0", now_ms() + 300).await.expect("away"));
    assert!(!a
        .away("m1", "old-conn", now_ms() + 300)
        .await
        .expect("away"));
    // A's death is detected: its other member (m1) becomes away with the same grace.
    let reaped = b.reap("A", now_ms(), 300).await.expect("reap");
    assert_eq!(
        reaped,
        vec![Reaped::Away {
            member: "m1".into(),
            room: "lobby".into()
        }]
    );
    assert_eq!(c.reap("A", now_ms(), 300).await.expect("reap"), vec![]);
    // m1 reconnects to C within the grace and keeps its place.
    match c.rebind("m1", &at("C", "m1-new")).await.expect("rebind") {
        RebindOutcome::Rebound {
            room,
            previous,
            was_away,
        } => {
            assert_eq!(room, "lobby");
            assert_eq!(previous, at("A", "m1"));
            assert!(was_away);
        }
        other => panic!("{other:?}"),
    }
    // B and C both run expiry repeatedly past the deadline: m0 expires exactly once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut all = Vec::new();
    let mut tasks = Vec::new();
    for store in [b.clone(), c.clone(), b.clone(), c.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                got.extend(store.expire(now_ms(), 100).await.expect("expire"));
            }
            got
        }));
    }
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    assert_eq!(
        all,
        vec![Departure {
            member: "m0".into(),
            room: "lobby".into(),
            peers: vec!["m1".into(), "m2".into(), "m3".into()],
        }]
    );
    assert_eq!(
        b.address("m1").await.expect("address"),
        Some(at("C", "m1-new"))
    );
    assert_eq!(
        b.rebind("m0", &at("B", "x")).await.expect("rebind"),
        RebindOutcome::Unknown
    );
    // m0's name is free again; nothing references node A.
    for key in redis.keys().await {
        assert!(!key.ends_with(":A"), "left over: {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_the_membership_back() {
    let mut redis = Redis::start().await;
    let port = redis.port;
    let conn = redis.node().await;
    let store = RedisStore::new(conn.clone(), "gw", "chatroom");
    let me = Liveness::new(
        conn.clone(),
        "gw",
        NodeId::from_config(""),
        "10.0.0.1:3000".into(),
        Duration::from_secs(5),
    );
    me.register().await.expect("register");
    // The node remembers what it serves (its members' rooms, names and join order).
    let mut served = Vec::new();
    for i in 0..5 {
        let member = format!("m{i}");
        let name = format!("user{i}");
        let room = if i < 3 { "one" } else { "two" };
        let address = at(me.node().as_str(), &member);
        let JoinOutcome::Joined { seq, .. } = store
            .join(&member, room, &address, Some(&name), 0)
            .await
            .expect("join")
        else {
            panic!("join refused");
        };
        served.push((member, room, address, name, seq));
    }
    let before_one = store.members("one").await.expect("members");
    redis.kill();
    assert!(store.members("one").await.is_err(), "Redis is down");
    drop(redis);
    let redis = Redis::start_on(port).await;
    assert!(redis.keys().await.is_empty());
    // The connection comes back by itself; the heartbeat finds itself lost.
    let deadline = Instant::now() + Duration::from_secs(15);
    let beat = loop {
        match me.beat().await {
            Ok(beat) => break beat,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no reconnect: {e}"),
        }
    };
    assert_eq!(beat, Beat::Lost);
    // Meanwhile a member of another node joins room "one" (after the restart).
    let other = RedisStore::new(redis.node().await, "gw", "chatroom");
    other
        .join("late", "one", &at("B", "late"), Some("late"), 0)
        .await
        .expect("join");
    for (member, room, address, name, seq) in &served {
        let r = store
            .restore(member, room, address, Some(name), *seq)
            .await
            .expect("restore");
        assert_eq!(r, Restored::Restored);
    }
    let mut after_one = before_one.clone();
    after_one.push("late".into());
    assert_eq!(store.members("one").await.expect("members"), after_one);
    assert_eq!(store.members("two").await.expect("members"), ["m3", "m4"]);
    // Names are held again.
    assert_eq!(
        other
            .join("dup", "two", &at("B", "dup"), Some("user3"), 0)
            .await
            .expect("join"),
        JoinOutcome::NameTaken
    );
    assert_eq!(
        store
            .restore("m0", "one", &served[0].2, Some("user0"), served[0].4)
            .await
            .expect("restore"),
        Restored::Present
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_messages_reach_another_node_in_order_under_load() {
    const PER_SENDER: u64 = 20_000;
    let redis = Redis::start().await;
    let receiver = NodeId::from_config("C");
    let stats_c = Arc::new(TransportStats::default());
    let mut inbox = Inbox::start(redis.client(), "gw", &receiver, 100_000, stats_c.clone())
        .await
        .expect("subscribe");
    let to: Arc<str> = Arc::from("C");
    let mut senders = Vec::new();
    for id in ["A", "B"] {
        let stats = Arc::new(TransportStats::default());
        let publisher = Publisher::start(
            redis.node().await,
            "gw",
            &NodeId::from_config(id),
            4096,
            stats.clone(),
        );
        let to = to.clone();
        senders.push((
            stats,
            tokio::spawn(async move {
                let mut i = 1;
                while i <= PER_SENDER {
                    match publisher.send(to.clone(), Bytes::from(i.to_string())) {
                        Ok(()) => i += 1,
                        // A full queue is back-pressure in this closed loop: wait, resend.
                        Err(_) => tokio::task::yield_now().await,
                    }
                }
            }),
        ));
    }
    let mut next: HashMap<String, u64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut total = 0;
    while total < 2 * PER_SENDER {
        let env = tokio::time::timeout_at(deadline.into(), inbox.recv())
            .await
            .expect("all messages within 60 s")
            .expect("inbox open");
        let n: u64 = std::str::from_utf8(&env.payload)
            .expect("utf8")
            .parse()
            .expect("number");
        let expected = next.entry(env.from.clone()).or_insert(1);
        assert_eq!(n, *expected, "message of {} out of order", env.from);
        assert_eq!(env.seq, n);
        *expected += 1;
        total += 1;
    }
    let froms: HashSet<&String> = next.keys().collect();
    assert_eq!(froms.len(), 2);
    for (stats, task) in senders {
        task.await.expect("sender");
        assert_eq!(stats.dropped_redis.load(Ordering::Relaxed), 0);
        assert_eq!(stats.sent.load(Ordering::Relaxed), PER_SENDER);
    }
    assert_eq!(stats_c.lost.load(Ordering::Relaxed), 0);
    assert_eq!(stats_c.received.load(Ordering::Relaxed), 2 * PER_SENDER);
}

/// A node with its cluster loop, as the gateway will run it.
async fn supervised(
    redis: &Redis,
    id: &str,
    timeout: Duration,
) -> (
    Liveness,
    RedisStore,
    RedisStore,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Event>,
) {
    let conn = redis.node().await;
    let liveness = Liveness::new(
        conn.clone(),
        "gw",
        NodeId::from_config(id),
        format!("{id}:1"),
        timeout,
    );
    liveness.register().await.expect("register");
    let webrtcroom = RedisStore::new(conn.clone(), "gw", "webrtcroom");
    let chatroom = RedisStore::new(conn, "gw", "chatroom");
    let realms = vec![
        Realm {
            name: "webrtcroom",
            store: webrtcroom.clone(),
            grace: Duration::ZERO,
        },
        Realm {
            name: "chatroom",
            store: chatroom.clone(),
            grace: Duration::from_millis(500),
        },
    ];
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let task = supervisor::spawn(
        liveness.clone(),
        realms,
        tx,
        Arc::new(AtomicBool::new(false)),
    );
    (liveness, webrtcroom, chatroom, task, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_report_a_killed_nodes_departures_once_and_a_stopped_one_at_once() {
    let redis = Redis::start().await;
    let timeout = Duration::from_secs(2);
    let (_a, a_web, a_chat, a_task, _a_rx) = supervised(&redis, "A", timeout).await;
    let (b, b_web, b_chat, b_task, mut b_rx) = supervised(&redis, "B", timeout).await;
    let (_c, _, _, _c_task, mut c_rx) = supervised(&redis, "C", timeout).await;
    a_web
        .join("wa", "call", &at("A", "wa"), None, 0)
        .await
        .expect("join");
    b_web
        .join("wb", "call", &at("B", "wb"), None, 0)
        .await
        .expect("join");
    a_chat
        .join("ca", "lobby", &at("A", "ca"), Some("ann"), 0)
        .await
        .expect("join");
    b_chat
        .join("cb", "lobby", &at("B", "cb"), Some("bob"), 0)
        .await
        .expect("join");
    // SIGKILL of A: its loop stops, its heartbeat is no longer renewed.
    a_task.abort();
    let killed = Instant::now();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while events.len() < 3 && Instant::now() < deadline {
        tokio::select! {
            Some(e) = b_rx.recv() => events.push(e),
            Some(e) = c_rx.recv() => events.push(e),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // A little longer, to catch any duplicate.
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        tokio::select! {
            Some(e) = b_rx.recv() => events.push(e),
            Some(e) = c_rx.recv() => events.push(e),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    assert!(killed.elapsed() < timeout + Duration::from_secs(6));
    // Each departure exactly once. The two realms are reaped independently (and reported on two
    // nodes' channels), so only the order within one member is fixed: away before expired.
    let expected = vec![
        Event::Left {
            realm: "webrtcroom",
            departure: Departure {
                member: "wa".into(),
                room: "call".into(),
                peers: vec!["wb".into()],
            },
        },
        Event::Away {
            realm: "chatroom",
            member: "ca".into(),
            room: "lobby".into(),
        },
        Event::Expired {
            realm: "chatroom",
            departure: Departure {
                member: "ca".into(),
                room: "lobby".into(),
                peers: vec!["cb".into()],
            },
        },
    ];
    assert_eq!(events.len(), expected.len(), "{events:?}");
    for e in &expected {
        assert_eq!(
            events.iter().filter(|x| *x == e).count(),
            1,
            "{e:?} once in {events:?}"
        );
    }
    let at = |e: &Event| events.iter().position(|x| x == e);
    assert!(
        at(&expected[1]) < at(&expected[2]),
        "away before expired: {events:?}"
    );
    for key in redis.keys().await {
        assert!(
            !key.ends_with(":A") && !key.contains(":A:"),
            "left over: {key}"
        );
    }
    // A graceful stop of B hands over at once, without waiting for the timeout.
    let stopped = Instant::now();
    b_task.abort();
    b.stop().await.expect("stop");
    let first = tokio::time::timeout(Duration::from_secs(10), c_rx.recv())
        .await
        .expect("departure of B's member")
        .expect("event");
    assert!(
        matches!(&first, Event::Left { departure, .. } if departure.member == "wb"),
        "{first:?}"
    );
    assert!(stopped.elapsed() < timeout, "took {:?}", stopped.elapsed());
    let second = tokio::time::timeout(Duration::from_secs(10), c_rx.recv())
        .await
        .expect("B's chatroom member away")
        .expect("event");
    assert_eq!(
        second,
        Event::Away {
            realm: "chatroom",
            member: "cb".into(),
            room: "lobby".into(),
        }
    );
    assert!(b_chat.address("cb").await.expect("address").is_some());
}
