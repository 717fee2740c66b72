//! Cluster-mode foundation against a real redis-server (issue 10): the Redis store's rules,
//! which are the memory core's (join, leave, route and links, away, rebind, expiry), racing
//! between "nodes"; node death, grace expiry once, Redis restart, ordered transport.
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
    Address, Gone, JoinArgs, JoinResult, LinkArgs, LinkedAt, PeerAt, Reaped, RebindArgs,
    RebindResult, RedisStore, Restored, RouteResult, RouteTarget,
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

/// A join with no name, no limits, from source "s".
fn args<'a>(member: &'a str, room: &'a str, at: &'a Address) -> JoinArgs<'a> {
    JoinArgs {
        member,
        room,
        at,
        name: None,
        capacity: 0,
        max_rooms: 0,
        source: "s",
        reap_grace_ms: None,
    }
}

/// Joins `member` on `node` with connection id = member key, expecting a fresh join.
async fn join(store: &RedisStore, member: &str, room: &str, node: &str) -> Vec<PeerAt> {
    match store
        .join(&args(member, room, &at(node, member)))
        .await
        .expect("join")
    {
        JoinResult::Joined { existing, .. } => existing,
        other => panic!("{member} not joined: {other:?}"),
    }
}

fn live(member: &str, node: &str) -> PeerAt {
    PeerAt {
        member: member.into(),
        at: Some(at(node, member)),
    }
}

fn away(member: &str) -> PeerAt {
    PeerAt {
        member: member.into(),
        at: None,
    }
}

fn linked(member: &str, node: &str, connector: &str) -> LinkedAt {
    LinkedAt {
        member: member.into(),
        at: at(node, member),
        connector: connector.into(),
    }
}

fn link<'a>(connector: &'a str, stream: &'a str, max_links: usize) -> LinkArgs<'a> {
    LinkArgs {
        connector,
        stream,
        max_links,
    }
}

/// Rebinds `member` of `room` to connection `conn` on `node`, from `source`.
async fn rebind(
    store: &RedisStore,
    member: &str,
    room: &str,
    node: &str,
    conn: &str,
    source: &str,
) -> RebindResult {
    store
        .rebind(&RebindArgs {
            member,
            room,
            name: None,
            at: &at(node, conn),
            source,
        })
        .await
        .expect("rebind")
}

/// The members of `room`, join order.
async fn members(store: &RedisStore, room: &str) -> Vec<String> {
    let rooms = store.snapshot().await.expect("snapshot");
    rooms
        .into_iter()
        .find(|r| r.name == room)
        .map(|r| r.members.into_iter().map(|m| m.member).collect())
        .unwrap_or_default()
}

async fn two_nodes(redis: &Redis, realm: &str) -> [RedisStore; 2] {
    [
        RedisStore::new(redis.node().await, "gw", realm),
        RedisStore::new(redis.node().await, "gw", realm),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_a_full_room_exactly_capacity_win() {
    let redis = Redis::start().await;
    let nodes = two_nodes(&redis, "webrtcroom").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = nodes[i % 2].clone();
        let node = format!("n{}", i % 2);
        tasks.push(tokio::spawn(async move {
            let (member, address) = (format!("m{i}"), at(&node, &format!("c{i}")));
            store
                .join(&JoinArgs {
                    capacity: 4,
                    ..args(&member, "call", &address)
                })
                .await
        }));
    }
    let mut joined = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.expect("task").expect("join") {
            JoinResult::Joined { .. } => joined += 1,
            JoinResult::Full => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((joined, full), (4, 36));
    assert_eq!(members(&nodes[0], "call").await.len(), 4);
    assert_eq!(nodes[1].sizes().await.expect("sizes"), (1, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_chatroom_name_race_has_one_winner() {
    let redis = Redis::start().await;
    let nodes = two_nodes(&redis, "chatroom").await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let (member, address) = (format!("m{i}"), at("n", &format!("c{i}")));
            store
                .join(&JoinArgs {
                    name: Some("alice"),
                    ..args(&member, "lobby", &address)
                })
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task").expect("join"));
    }
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, JoinResult::Joined { .. }))
        .count();
    let taken = outcomes
        .iter()
        .filter(|o| **o == JoinResult::NameTaken)
        .count();
    assert_eq!((winners, taken), (1, 29));
    assert!(nodes[0].name_taken("lobby", "alice").await.expect("name"));
    // The name is free again once its holder leaves (by its connection).
    let snap = nodes[0].snapshot().await.expect("snapshot");
    let holder = &snap[0].members[0];
    assert_eq!(holder.name.as_deref(), Some("alice"));
    let gone = nodes[1].leave(&holder.conn).await.expect("leave");
    assert_eq!(gone.map(|g| g.remaining), Some(vec![]));
    assert!(!nodes[0].name_taken("lobby", "alice").await.expect("name"));
    let late = at("n", "c-late");
    let again = nodes[1]
        .join(&JoinArgs {
            name: Some("alice"),
            ..args("late", "lobby", &late)
        })
        .await
        .expect("join");
    assert!(matches!(again, JoinResult::Joined { .. }), "{again:?}");
}

#[tokio::test]
async fn join_rules_order_already_member_id_in_use_and_switching_rooms() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "webrtcroom").await;
    let mut expected: Vec<PeerAt> = Vec::new();
    for i in 0..6 {
        let (store, node) = if i % 2 == 0 { (&a, "A") } else { (&b, "B") };
        let member = format!("m{i}");
        assert_eq!(join(store, &member, "room", node).await, expected);
        expected.push(live(&member, node));
    }
    // An away member is listed where it joined, without an address.
    assert_eq!(
        b.away("m1", now_ms() + 60_000).await.expect("away"),
        Some(("m1".into(), "room".into()))
    );
    expected[1] = away("m1");
    assert_eq!(join(&a, "m6", "room", "A").await, expected);
    expected.push(live("m6", "A"));
    // The same connection asking again changes nothing.
    assert_eq!(
        a.join(&args("m2", "room", &at("A", "m2")))
            .await
            .expect("join"),
        JoinResult::AlreadyMember {
            peers: expected
                .iter()
                .filter(|p| p.member != "m2")
                .cloned()
                .collect()
        }
    );
    // The key of another connection (live or away) is refused.
    for taken in ["m2", "m1"] {
        assert_eq!(
            b.join(&args(taken, "room", &at("B", "intruder")))
                .await
                .expect("join"),
            JoinResult::MemberIdInUse
        );
    }
    // Joining another room leaves the first one, reported as a leave is.
    match a
        .join(&args("m2", "other", &at("A", "m2")))
        .await
        .expect("join")
    {
        JoinResult::Joined {
            existing,
            left: Some(left),
            ..
        } => {
            assert!(existing.is_empty());
            expected.retain(|p| p.member != "m2");
            assert_eq!(
                left,
                Gone {
                    member: "m2".into(),
                    room: "room".into(),
                    last_conn: "m2".into(),
                    remaining: expected.clone(),
                    linked: vec![],
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.membership("m2").await.expect("membership"),
        Some(("other".into(), "m2".into()))
    );
    // A connection that is no member's current one leaves nothing.
    assert_eq!(a.leave("stale").await.expect("leave"), None);
    assert_eq!(a.leave("m1").await.expect("leave"), None, "m1 is away");
    let snap = a.snapshot().await.expect("snapshot");
    assert_eq!(
        snap.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["other", "room"]
    );
    let m1 = &snap[1].members[1];
    assert!(m1.away && m1.conn == "m1" && m1.node == "B" && m1.joined_at_ms > 0);
    assert_eq!(a.sizes().await.expect("sizes"), (2, 7));
    // Everyone out: only the join sequence stays.
    for m in ["m0", "m2", "m3", "m4", "m5", "m6"] {
        assert!(a.leave(m).await.expect("leave").is_some(), "{m}");
    }
    assert_eq!(a.expire(u64::MAX, 10).await.expect("expire").len(), 1);
    assert_eq!(redis.keys().await, vec!["gw:webrtcroom:seq".to_string()]);
    assert_eq!(a.sizes().await.expect("sizes"), (0, 0));
}

#[tokio::test]
async fn at_the_room_limit_the_oldest_room_of_away_members_gives_way() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "webrtcroom").await;
    let limited = |member: &'static str, room: &'static str, node: &'static str| {
        let store = if node == "A" { a.clone() } else { b.clone() };
        async move {
            let address = at(node, member);
            store
                .join(&JoinArgs {
                    max_rooms: 3,
                    ..args(member, room, &address)
                })
                .await
                .expect("join")
        }
    };
    for (m, r) in [("m0", "r0"), ("m1", "r1"), ("m2", "r2")] {
        assert!(matches!(
            limited(m, r, "A").await,
            JoinResult::Joined { .. }
        ));
    }
    assert_eq!(limited("x", "r3", "B").await, JoinResult::TooManyRooms);
    assert!(
        matches!(limited("y", "r0", "B").await, JoinResult::Joined { .. }),
        "an existing room is no new room"
    );
    // A room with a live member never gives way.
    let far = now_ms() + 60_000;
    a.away("m0", far).await.expect("away");
    assert_eq!(limited("x", "r3", "B").await, JoinResult::TooManyRooms);
    // r0 becomes all away first (y drops too), then r1; r2 stays live.
    b.away("y", far).await.expect("away");
    a.away("m1", far).await.expect("away");
    assert!(matches!(
        limited("x", "r3", "B").await,
        JoinResult::Joined { .. }
    ));
    assert!(members(&a, "r0").await.is_empty(), "r0 was all away first");
    assert_eq!(
        rebind(&a, "m0", "r0", "A", "m0b", "s").await,
        RebindResult::Unknown,
        "closed silently, as after a grace"
    );
    // A room that becomes all away again counts from then: r2 drops, then r1's m1 comes
    // back and drops again, so r2 gives way before r1.
    a.away("m2", far).await.expect("away");
    assert!(matches!(
        rebind(&b, "m1", "r1", "B", "m1b", "s").await,
        RebindResult::Rebound { .. }
    ));
    b.away("m1b", far).await.expect("away");
    assert!(matches!(
        limited("z", "r4", "A").await,
        JoinResult::Joined { .. }
    ));
    assert!(members(&a, "r2").await.is_empty(), "r2 was all away longer");
    assert_eq!(members(&a, "r1").await, ["m1"]);
    assert!(matches!(
        limited("w", "r5", "A").await,
        JoinResult::Joined { .. }
    ));
    assert!(members(&a, "r1").await.is_empty());
    assert_eq!(
        limited("v", "r6", "A").await,
        JoinResult::TooManyRooms,
        "rooms with a live member never give way"
    );
    assert_eq!(a.sizes().await.expect("sizes"), (3, 3));
    // The evicted members are gone for good: nothing of them is left to expire.
    assert!(a.expire(u64::MAX, 100).await.expect("expire").is_empty());
}

#[tokio::test]
async fn routes_only_between_live_members_of_one_room() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "webrtcroom").await;
    join(&a, "a", "r", "A").await;
    join(&b, "b", "r", "B").await;
    join(&b, "c", "s", "B").await;
    join(&a, "d", "r", "A").await;
    let route = |conn: &'static str, to: RouteTarget<'static>| {
        let a = a.clone();
        async move { a.route(conn, to, None).await.expect("route") }
    };
    assert_eq!(
        route("a", RouteTarget::Member("b")).await,
        RouteResult::Routed {
            sender: "a".into(),
            target: at("B", "b"),
            room: "r".into(),
            target_member: "b".into(),
            target_connector: None,
        }
    );
    assert_eq!(
        route("b", RouteTarget::Conn("a")).await,
        RouteResult::Routed {
            sender: "b".into(),
            target: at("A", "a"),
            room: "r".into(),
            target_member: "a".into(),
            target_connector: None,
        }
    );
    assert_eq!(
        route("a", RouteTarget::Member("c")).await,
        RouteResult::OtherRoom
    );
    assert_eq!(
        route("a", RouteTarget::Conn("c")).await,
        RouteResult::OtherRoom
    );
    assert_eq!(
        route("a", RouteTarget::Member("zz")).await,
        RouteResult::UnknownTarget
    );
    assert_eq!(
        route("zz", RouteTarget::Member("a")).await,
        RouteResult::NotJoined
    );
    // An away member is known by key but not by its old connection.
    b.away("d", now_ms() + 60_000).await.expect("away");
    assert_eq!(
        route("a", RouteTarget::Member("d")).await,
        RouteResult::TargetAway
    );
    assert_eq!(
        route("a", RouteTarget::Conn("d")).await,
        RouteResult::UnknownTarget
    );
    assert_eq!(
        route("d", RouteTarget::Member("a")).await,
        RouteResult::NotJoined
    );
    assert_eq!(a.membership("d").await.expect("membership"), None);
    // Back on a new connection: reachable there, not at the old one.
    rebind(&b, "d", "r", "B", "d2", "s").await;
    assert_eq!(
        route("a", RouteTarget::Conn("d2")).await,
        RouteResult::Routed {
            sender: "a".into(),
            target: at("B", "d2"),
            room: "r".into(),
            target_member: "d".into(),
            target_connector: None,
        }
    );
    assert_eq!(
        b.membership("d2").await.expect("membership"),
        Some(("r".into(), "d".into()))
    );
}

#[tokio::test]
async fn links_are_capped_replaced_at_the_end_and_reported_to_live_peers() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "chatroom").await;
    for (m, node) in [("ua", "A"), ("ub", "B"), ("uc", "A"), ("ud", "B")] {
        join(if node == "A" { &a } else { &b }, m, "y", node).await;
    }
    let to_b = |from: &'static str, l: LinkArgs<'static>| {
        let a = a.clone();
        async move {
            a.route(from, RouteTarget::Member("ub"), Some(&l))
                .await
                .expect("route")
        }
    };
    assert!(matches!(
        to_b("ua", link("cAB", "user", 2)).await,
        RouteResult::Routed { .. }
    ));
    assert!(matches!(
        to_b("uc", link("cCB", "user", 2)).await,
        RouteResult::Routed { .. }
    ));
    assert_eq!(
        to_b("ud", link("cDB", "user", 2)).await,
        RouteResult::TooManyLinks
    );
    // Replacing a link adds none, and moves it to the end.
    assert!(matches!(
        to_b("ua", link("cAB2", "user", 2)).await,
        RouteResult::Routed { .. }
    ));
    // ud's relay without a link still goes through.
    assert!(matches!(
        a.route("ud", RouteTarget::Member("ub"), None)
            .await
            .expect("route"),
        RouteResult::Routed { .. }
    ));
    // ub leaves: its live linked peers are told, in link order, with their connectors.
    let gone = b.leave("ub").await.expect("leave").expect("was a member");
    assert_eq!(gone.last_conn, "ub");
    assert_eq!(
        gone.remaining,
        vec![live("ua", "A"), live("uc", "A"), live("ud", "B")]
    );
    assert_eq!(
        gone.linked,
        vec![linked("uc", "A", "cCB"), linked("ua", "A", "cAB2")]
    );
    // A link of a peer that left, or left and came back (another epoch), is not reported.
    join(&b, "ub", "y", "B").await;
    for from in ["ua", "uc", "ud"] {
        assert!(matches!(
            to_b(from, link(from, "user", 0)).await,
            RouteResult::Routed { .. }
        ));
    }
    // As in the memory core, the sender's older link of the stream goes before the limit is
    // checked, so a limit lowered below the links held refuses even a replacement, which
    // then leaves no link of that sender at all.
    assert_eq!(
        to_b("ud", link("ud2", "user", 2)).await,
        RouteResult::TooManyLinks
    );
    b.away("ub", now_ms() + 60_000).await.expect("away");
    match rebind(&b, "ub", "y", "B", "ub", "s").await {
        RebindResult::Rebound {
            linked: l,
            unlinked,
            ..
        } => {
            assert_eq!(l, vec![linked("ua", "A", "ua"), linked("uc", "A", "uc")]);
            assert_eq!(unlinked, vec![live("ud", "B")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        to_b("ud", link("ud", "user", 0)).await,
        RouteResult::Routed { .. }
    ));
    a.leave("uc").await.expect("leave");
    let uc = at("A", "uc-again");
    join_at(&a, "uc", "y", &uc).await;
    b.away("ud", now_ms() + 60_000).await.expect("away");
    let gone = b.leave("ub").await.expect("leave").expect("member");
    assert_eq!(gone.linked, vec![linked("ua", "A", "ua")]);
}

async fn join_at(store: &RedisStore, member: &str, room: &str, address: &Address) {
    let r = store
        .join(&args(member, room, address))
        .await
        .expect("join");
    assert!(matches!(r, JoinResult::Joined { .. }), "{r:?}");
}

#[tokio::test]
async fn a_removal_drops_live_peers_links_to_it_but_away_peers_learn_on_return() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "chatroom").await;
    for m in ["ua", "ub", "uc", "ue"] {
        join(&a, m, "y", "A").await;
    }
    let l = |connector: &'static str| link(connector, "user", 0);
    // ua links to ub and to uc; ue links to ub. ub is away when ua leaves, uc is live.
    a.route("ua", RouteTarget::Member("ub"), Some(&l("cAB")))
        .await
        .expect("route");
    a.route("ue", RouteTarget::Member("ub"), Some(&l("cEB")))
        .await
        .expect("route");
    a.route("ua", RouteTarget::Member("uc"), Some(&l("cAC")))
        .await
        .expect("route");
    assert_eq!(
        a.away("ub", now_ms() + 60_000).await.expect("away"),
        Some(("ub".into(), "y".into()))
    );
    assert_eq!(a.away("ub", now_ms()).await.expect("away"), None, "once");
    let gone = a.leave("ua").await.expect("leave").expect("member");
    assert_eq!(
        gone.remaining,
        vec![away("ub"), live("uc", "A"), live("ue", "A")]
    );
    assert!(gone.linked.is_empty(), "nobody linked to ua");
    // ub comes back on another node: ue still linked (told), ua gone (by its old conn),
    // uc live and not linked to ub.
    match rebind(&b, "ub", "y", "B", "ub2", "s").await {
        RebindResult::Rebound {
            room,
            previous,
            unlinked,
            linked: l,
            gone,
            last_conn,
        } => {
            assert_eq!(last_conn, "ub", "how its peers knew it");
            assert_eq!(room, "y");
            assert_eq!(previous, None, "it was away");
            assert_eq!(unlinked, vec![live("uc", "A")]);
            assert_eq!(l, vec![linked("ue", "A", "cEB")]);
            assert_eq!(gone, vec!["ua".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    // The gone link was dropped: a second rebind reports it no more.
    match rebind(&b, "ub", "y", "B", "ub3", "s").await {
        RebindResult::Rebound {
            previous,
            gone,
            linked: l,
            ..
        } => {
            assert_eq!(previous, Some(at("B", "ub2")));
            assert!(gone.is_empty());
            assert_eq!(l, vec![linked("ue", "A", "cEB")]);
        }
        other => panic!("{other:?}"),
    }
    // uc was live when ua left, so it dropped ua's link at once: nothing to report later.
    a.away("uc", now_ms() + 60_000).await.expect("away");
    match rebind(&a, "uc", "y", "A", "uc2", "s").await {
        RebindResult::Rebound {
            gone,
            linked: l,
            unlinked,
            ..
        } => {
            assert!(gone.is_empty() && l.is_empty());
            assert_eq!(
                unlinked,
                vec![
                    PeerAt {
                        member: "ub".into(),
                        at: Some(at("B", "ub3"))
                    },
                    live("ue", "A")
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rebind_checks_room_name_connection_and_who_holds_a_live_member() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "chatroom").await;
    let (ua, ub) = (at("A", "ua"), at("A", "ub"));
    for (m, address) in [("ua", &ua), ("ub", &ub)] {
        let r = a
            .join(&JoinArgs {
                name: Some(m),
                source: "phone",
                reap_grace_ms: None,
                ..args(m, "y", address)
            })
            .await
            .expect("join");
        assert!(matches!(r, JoinResult::Joined { .. }));
    }
    let req = |member: &'static str, room: &'static str, name, conn: &'static str, source| {
        let b = b.clone();
        async move {
            b.rebind(&RebindArgs {
                member,
                room,
                name,
                at: &at("B", conn),
                source,
            })
            .await
            .expect("rebind")
        }
    };
    assert_eq!(
        req("nobody", "y", None, "n1", "phone").await,
        RebindResult::Unknown
    );
    assert_eq!(
        req("ua", "z", None, "n1", "phone").await,
        RebindResult::Mismatch
    );
    assert_eq!(
        req("ua", "y", Some("other"), "n1", "phone").await,
        RebindResult::Mismatch
    );
    assert_eq!(
        req("ua", "y", None, "ub", "phone").await,
        RebindResult::ConnBusy
    );
    // Live on `ua`, bound by "phone": another source may not take it over.
    assert_eq!(
        req("ua", "y", Some("ua"), "n1", "laptop").await,
        RebindResult::Live
    );
    assert_eq!(
        a.membership("ua").await.expect("membership"),
        Some(("y".into(), "ua".into()))
    );
    // The same source may (a network switch before the old drop was noticed).
    match req("ua", "y", Some("ua"), "n1", "phone").await {
        RebindResult::Rebound {
            previous, unlinked, ..
        } => {
            assert_eq!(previous, Some(ua.clone()));
            assert_eq!(unlinked, vec![live("ub", "A")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.membership("ua").await.expect("membership"), None);
    assert_eq!(
        a.away("ua", now_ms()).await.expect("away"),
        None,
        "stale drop"
    );
    assert_eq!(
        a.membership("n1").await.expect("membership"),
        Some(("y".into(), "ua".into()))
    );
    // Rebinding the connection it already has changes nothing and closes nothing.
    match req("ua", "y", None, "n1", "laptop").await {
        RebindResult::Rebound { previous, .. } => assert_eq!(previous, None),
        other => panic!("{other:?}"),
    }
    // Away: any source may bind it (it then holds it).
    b.away("n1", now_ms() + 60_000).await.expect("away");
    assert!(matches!(
        req("ua", "y", None, "n2", "laptop").await,
        RebindResult::Rebound { previous: None, .. }
    ));
    assert_eq!(
        req("ua", "y", None, "n3", "phone").await,
        RebindResult::Live
    );
    assert_eq!(b.sizes().await.expect("sizes"), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_to_rebind_an_away_member_have_one_winner() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "chatroom").await;
    for round in 0..20 {
        let member = format!("u{round}");
        join(&a, &member, "y", "A").await;
        a.away(&member, now_ms() + 60_000).await.expect("away");
        let race = |store: &RedisStore, node: &'static str| {
            let (store, member) = (store.clone(), member.clone());
            tokio::spawn(async move {
                let conn = format!("{member}-{node}");
                rebind(&store, &member, "y", node, &conn, node).await
            })
        };
        let (ra, rb) = (race(&a, "A"), race(&b, "B"));
        let outcomes = [ra.await.expect("task"), rb.await.expect("task")];
        let won = outcomes
            .iter()
            .filter(|o| matches!(o, RebindResult::Rebound { .. }))
            .count();
        let lost = outcomes
            .iter()
            .filter(|o| **o == RebindResult::Live)
            .count();
        assert_eq!((won, lost), (1, 1), "{outcomes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_members_are_removed_exactly_once() {
    let redis = Redis::start().await;
    let timeout = Duration::from_secs(2);
    let live_node = |id: &str| {
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
    let (a, b, c) = (
        live_node("A").await,
        live_node("B").await,
        live_node("C").await,
    );
    for n in [&a, &b, &c] {
        n.register().await.expect("register");
    }
    assert!(matches!(
        live_node("A").await.register().await,
        Err(signal_gateway::cluster::liveness::LivenessError::IdInUse(_))
    ));
    let mut stores: Vec<RedisStore> = Vec::new();
    for _ in 0..3 {
        stores.push(RedisStore::new(redis.node().await, "gw", "webrtcroom"));
    }
    // Rooms spanning the three nodes; A holds m0, m3, m6, m9.
    let names = ["A", "B", "C"];
    for i in 0..12 {
        let member = format!("m{i}");
        join(
            &stores[i % 3],
            &member,
            &format!("room{}", i % 4),
            names[i % 3],
        )
        .await;
    }
    // m4 (on B) linked to m0 (on A).
    stores[1]
        .route(
            "m4",
            RouteTarget::Member("m0"),
            Some(&link("c40", "video", 0)),
        )
        .await
        .expect("route");
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
    let mut left: Vec<Gone> = rb
        .expect("reap")
        .into_iter()
        .chain(rc.expect("reap"))
        .map(|r| match r {
            Reaped::Left(g) => g,
            other => panic!("{other:?}"),
        })
        .collect();
    left.sort_by(|x, y| x.member.cmp(&y.member));
    assert_eq!(
        left.iter().map(|l| l.member.as_str()).collect::<Vec<_>>(),
        ["m0", "m3", "m6", "m9"]
    );
    // m0 was in room0 with m4 and m8, which stay and are told; m4 had linked to it.
    assert_eq!(
        left[0],
        Gone {
            member: "m0".into(),
            room: "room0".into(),
            last_conn: "m0".into(),
            remaining: vec![live("m4", "B"), live("m8", "C")],
            linked: vec![linked("m4", "B", "c40")],
        }
    );
    assert!(b.forget("A").await.expect("forget"));
    assert!(!c.forget("A").await.expect("forget"), "forgotten once");
    // Nothing of A stays in Redis, its connections included.
    for key in redis.keys().await {
        assert!(
            !key.ends_with(":A") && !key.contains(":A:"),
            "left over: {key}"
        );
    }
    for conn in ["m0", "m3", "m6", "m9"] {
        assert_eq!(stores[1].membership(conn).await.expect("membership"), None);
    }
    assert_eq!(stores[1].sizes().await.expect("sizes"), (4, 8));
    assert!(b.dead_nodes().await.expect("dead").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_expires_once_after_the_observing_node_died() {
    let redis = Redis::start().await;
    let a = RedisStore::new(redis.node().await, "gw", "chatroom");
    let b = RedisStore::new(redis.node().await, "gw", "chatroom");
    let c = RedisStore::new(redis.node().await, "gw", "chatroom");
    for (i, node) in ["A", "A", "B", "C"].iter().enumerate() {
        join(&a, &format!("m{i}"), "lobby", node).await;
    }
    // m2 (on B) linked to m0.
    b.route(
        "m2",
        RouteTarget::Member("m0"),
        Some(&link("c20", "user", 0)),
    )
    .await
    .expect("route");
    // A saw m0 drop and marked it away, then died before the grace ended. A drop of a
    // connection that is no member's marks nothing.
    assert_eq!(
        a.away("m0", now_ms() + 300).await.expect("away"),
        Some(("m0".into(), "lobby".into()))
    );
    assert_eq!(
        a.away("old-conn", now_ms() + 300).await.expect("away"),
        None
    );
    // A's death is detected: its other member (m1) becomes away with the same grace; m0
    // keeps its own deadline. Reported once.
    let reaped = b.reap("A", now_ms(), 300).await.expect("reap");
    assert_eq!(
        reaped,
        vec![Reaped::Away {
            member: "m1".into(),
            room: "lobby".into()
        }]
    );
    assert_eq!(c.reap("A", now_ms(), 300).await.expect("reap"), vec![]);
    assert_eq!(b.membership("m1").await.expect("membership"), None);
    // m1 reconnects to C within the grace and keeps its place.
    match rebind(&c, "m1", "lobby", "C", "m1-new", "s").await {
        RebindResult::Rebound { room, previous, .. } => {
            assert_eq!(room, "lobby");
            assert_eq!(previous, None, "it was away");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(members(&c, "lobby").await, ["m0", "m1", "m2", "m3"]);
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
        vec![Gone {
            member: "m0".into(),
            room: "lobby".into(),
            last_conn: "m0".into(),
            remaining: vec![
                PeerAt {
                    member: "m1".into(),
                    at: Some(at("C", "m1-new"))
                },
                live("m2", "B"),
                live("m3", "C"),
            ],
            linked: vec![linked("m2", "B", "c20")],
        }]
    );
    assert_eq!(
        rebind(&b, "m0", "lobby", "B", "x", "s").await,
        RebindResult::Unknown
    );
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
        let JoinResult::Joined { seq, .. } = store
            .join(&JoinArgs {
                name: Some(&name),
                source: "src",
                reap_grace_ms: None,
                ..args(&member, room, &address)
            })
            .await
            .expect("join")
        else {
            panic!("join refused");
        };
        served.push((member, room, address, name, seq));
    }
    let before_one = members(&store, "one").await;
    redis.kill();
    assert!(store.snapshot().await.is_err(), "Redis is down");
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
    // Meanwhile a member of another node joins room "one" (after the restart), and one
    // takes a restored member's name in room "two".
    let other = RedisStore::new(redis.node().await, "gw", "chatroom");
    let (late, thief) = (at("B", "late"), at("B", "thief"));
    join_at(&other, "late", "one", &late).await;
    let taken = other
        .join(&JoinArgs {
            name: Some("user4"),
            ..args("thief", "two", &thief)
        })
        .await
        .expect("join");
    assert!(matches!(taken, JoinResult::Joined { .. }));
    let mut outcomes = Vec::new();
    for (member, room, address, name, seq) in &served {
        outcomes.push(
            store
                .restore(member, room, address, Some(name), *seq, "src")
                .await
                .expect("restore"),
        );
    }
    use Restored::{NameTaken as Taken, Restored as Back};
    assert_eq!(outcomes, [Back, Back, Back, Back, Taken]);
    let mut after_one = before_one.clone();
    after_one.push("late".into());
    assert_eq!(members(&store, "one").await, after_one);
    assert_eq!(members(&store, "two").await, ["m3", "thief"]);
    // Names, connections, epochs and sources are held again.
    let dup = at("B", "dup");
    assert_eq!(
        other
            .join(&JoinArgs {
                name: Some("user3"),
                ..args("dup", "two", &dup)
            })
            .await
            .expect("join"),
        JoinResult::NameTaken
    );
    assert_eq!(
        store.membership("m1").await.expect("membership"),
        Some(("one".into(), "m1".into()))
    );
    other
        .route(
            "late",
            RouteTarget::Member("m1"),
            Some(&link("cL1", "user", 0)),
        )
        .await
        .expect("route");
    assert_eq!(
        rebind(&other, "m1", "one", "B", "m1-b", "elsewhere").await,
        RebindResult::Live
    );
    assert_eq!(
        store
            .restore("m0", "one", &served[0].2, Some("user0"), served[0].4, "src")
            .await
            .expect("restore"),
        Restored::Present
    );
    // A join after the restore still sorts after the restored members.
    let newest = at("B", "newest");
    join_at(&other, "newest", "two", &newest).await;
    assert_eq!(members(&store, "two").await, ["m3", "thief", "newest"]);
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
    join(&a_web, "wa", "call", "A").await;
    join(&b_web, "wb", "call", "B").await;
    join(&a_chat, "ca", "lobby", "A").await;
    join(&b_chat, "cb", "lobby", "B").await;
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
            departure: Gone {
                member: "wa".into(),
                room: "call".into(),
                last_conn: "wa".into(),
                remaining: vec![live("wb", "B")],
                linked: vec![],
            },
        },
        Event::Away {
            realm: "chatroom",
            member: "ca".into(),
            room: "lobby".into(),
        },
        Event::Expired {
            realm: "chatroom",
            departure: Gone {
                member: "ca".into(),
                room: "lobby".into(),
                last_conn: "ca".into(),
                remaining: vec![live("cb", "B")],
                linked: vec![],
            },
        },
    ];
    // The dead node is forgotten once too (its listeners can go).
    let forgotten = Event::Forgotten { node: "A".into() };
    assert_eq!(
        events.iter().filter(|x| **x == forgotten).count(),
        1,
        "{events:?}"
    );
    let events: Vec<Event> = events.into_iter().filter(|x| *x != forgotten).collect();
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
    let lobby = b_chat.snapshot().await.expect("snapshot");
    assert!(lobby[0].members[0].member == "cb" && lobby[0].members[0].away);
}

/// Cross-protocol rooms: a relay reports the target's connector of its own link to the
/// sender (how a chatroom client knows a link a WebRtcRoom sender cannot name).
#[tokio::test]
async fn a_route_reports_the_targets_connector_of_its_link_to_the_sender() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "mixed").await;
    join(&a, "w", "r", "A").await;
    join(&b, "c", "r", "B").await;
    let target_connector = |r: RouteResult| match r {
        RouteResult::Routed {
            target_connector, ..
        } => target_connector,
        other => panic!("{other:?}"),
    };
    let w_to_c = || a.route("w", RouteTarget::Conn("c"), None);
    assert_eq!(target_connector(w_to_c().await.expect("route")), None);
    // c offers to w with its connector "kc": recorded on w.
    b.route("c", RouteTarget::Member("w"), Some(&link("kc", "user", 0)))
        .await
        .expect("route");
    assert_eq!(
        target_connector(w_to_c().await.expect("route")),
        Some("kc".into())
    );
    // The other way nothing was recorded on c.
    let c_to_w = b.route("c", RouteTarget::Member("w"), None).await;
    assert_eq!(target_connector(c_to_w.expect("route")), None);
}

/// A realm shared by two protocols: a member that joined with a grace of its own (0) leaves
/// at once when its node dies, the others get the realm's grace.
#[tokio::test]
async fn a_member_with_its_own_reap_grace_leaves_a_dead_node_at_once() {
    let redis = Redis::start().await;
    let [a, b] = two_nodes(&redis, "mixed").await;
    let address = at("A", "w");
    a.join(&JoinArgs {
        reap_grace_ms: Some(0),
        ..args("w", "r", &address)
    })
    .await
    .expect("join");
    join(&a, "c", "r", "A").await;
    join(&b, "d", "r", "B").await;
    let reaped = b.reap("A", now_ms(), 60_000).await.expect("reap");
    assert_eq!(reaped.len(), 2, "{reaped:?}");
    assert!(reaped
        .iter()
        .any(|r| matches!(r, Reaped::Left(g) if g.member == "w")));
    assert!(reaped
        .iter()
        .any(|r| matches!(r, Reaped::Away { member, .. } if member == "c")));
    assert_eq!(members(&b, "r").await, ["c", "d"]);
}
