//! Property fuzzing of both protocol adapters, in process.
//!
//! Arbitrary JSON (of every shape, often half-valid: real field names, real socket ids, ids of
//! sockets in other rooms, `__proto__`, huge strings) is sent as the payload of every event
//! of each protocol by a member X of a room shared with Y, while Z sits in another room.
//! After each batch, X's sentinel relay to Y proves the batch was handled (one sender's events
//! are handled in order), and then:
//! - nothing reached Z (no relay across rooms, whatever the payload says);
//! - everything Y received names X as its sender (no spoofed `from` / `memberId`);
//! - no handler panicked; and afterwards a fresh pair still completes a join and a relay.
//!
//! `FUZZ_CASES` sets the number of inputs per protocol (default 3000; the long run in the
//! README uses 1,000,000 with `--release`), `FUZZ_SEED` replays a run.

use std::sync::{Mutex, Once};
use std::time::Duration;

use engineioxide::Packet;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use signal_gateway::adapters::chatroom::Chatroom;
use signal_gateway::adapters::mixed::CrossProtocol;
use signal_gateway::adapters::webrtcroom::WebRtcRoom;
use signal_gateway::adapters::Stores;
use signal_gateway::config::{CrossProtocolConfig, Limits, ProtocolConfig};
use socketioxide::SocketIo;
use tokio::sync::mpsc::{Receiver, Sender};

/// Every panic seen in this process: the name of the thread it happened on, and its message.
/// A handler's panic is printed on a runtime thread whose output the test harness may not show,
/// so the message goes into the failure text.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Each test runs on a runtime of its own whose threads carry the test's name, so that a test
/// counts the panics of its own handlers only. (One counter for the whole binary, with a hook
/// installed by every test, once failed two tests for a panic of unknown origin, counted three
/// times.)
fn on_own_runtime(name: &'static str, test: impl std::future::Future<Output = ()>) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            if let Ok(mut panics) = PANICS.lock() {
                panics.push((thread, info.to_string()));
            }
            previous(info);
        }));
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a runtime for the test")
        .block_on(test);
}

/// Fails if a thread of runtime `name` (a handler or a task of socketioxide) has panicked.
fn assert_no_handler_panicked(name: &str) {
    let panics: Vec<String> = PANICS
        .lock()
        .map(|p| {
            p.iter()
                .filter(|(thread, _)| thread == name)
                .map(|(_, message)| message.clone())
                .collect()
        })
        .unwrap_or_default();
    assert!(panics.is_empty(), "a handler panicked: {panics:?}");
}

fn limits() -> Limits {
    Limits {
        rate: 1e9,
        burst: 1e9,
        ..Limits::default()
    }
}

fn cases() -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

/// One in-process client: packets in, packets out, and its socket id.
struct Client {
    tx: Sender<Packet>,
    rx: Receiver<Packet>,
    id: String,
    /// Its packets' namespace prefix (`/ns,`; empty on `/`).
    ns: String,
    /// What this client sent since the last sentinel (reported when a check fails).
    sent: std::sync::Mutex<Vec<String>>,
}

impl Client {
    async fn connect(io: &SocketIo) -> Client {
        Self::connect_to(io, "/").await
    }

    async fn connect_to(io: &SocketIo, namespace: &'static str) -> Client {
        let (tx, mut rx) = io.new_dummy_sock(namespace, ()).await;
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("connect packet in time")
            .expect("connect packet");
        let Packet::Message(text) = first else {
            panic!("unexpected first packet {first:?}")
        };
        // `0{...}` on `/`, `0/ns,{...}` on another namespace.
        let body = text.find('{').map_or("", |i| &text[i..]);
        let open: Value = serde_json::from_str(body).expect("connect payload is JSON");
        let id = open["sid"].as_str().expect("sid").to_owned();
        Client {
            tx,
            rx,
            id,
            ns: if namespace == "/" {
                String::new()
            } else {
                format!("{namespace},")
            },
            sent: std::sync::Mutex::new(Vec::new()),
        }
    }

    async fn emit_raw(&self, array: String) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(array.chars().take(300).collect());
        }
        self.tx
            .send(Packet::Message(format!("2{}{array}", self.ns).into()))
            .await
            .expect("client channel open");
    }

    async fn emit(&self, event: &str, payload: &Value) {
        self.emit_raw(json!([event, payload]).to_string()).await;
    }

    /// Events received until (and without) the one `stop` accepts; `sender` is whose
    /// inputs to report if it never comes.
    async fn until(
        &mut self,
        stop: impl Fn(&str, &Value) -> bool,
        sender: Option<&Client>,
    ) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let Ok(packet) = tokio::time::timeout(Duration::from_secs(10), self.rx.recv()).await
            else {
                let inputs = sender.and_then(|s| s.sent.lock().ok().map(|v| v.join("\n")));
                panic!(
                    "sentinel did not arrive; received {seen:?}; inputs since the last one:\n{}",
                    inputs.unwrap_or_default()
                );
            };
            let packet = packet.expect("channel open");
            let Packet::Message(text) = packet else {
                continue;
            };
            let Some(body) = text
                .strip_prefix('2')
                .and_then(|b| b.strip_prefix(self.ns.as_str()))
            else {
                continue;
            };
            let Ok(Value::Array(mut parts)) = serde_json::from_str::<Value>(body) else {
                panic!("server sent a malformed event: {text}");
            };
            let payload = if parts.len() > 1 {
                parts.remove(1)
            } else {
                Value::Null
            };
            let name = parts[0].as_str().unwrap_or_default().to_owned();
            if stop(&name, &payload) {
                return seen;
            }
            seen.push((name, payload));
        }
    }

    /// Reads and discards everything sent to this client from now on (a client that never
    /// reads would, rightly, be closed as a slow consumer on long runs).
    fn discard_incoming(&mut self) {
        let (_, empty) = tokio::sync::mpsc::channel(1);
        let mut rx = std::mem::replace(&mut self.rx, empty);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
    }

    /// Anything already queued for this client.
    fn pending(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(p) = self.rx.try_recv() {
            if let Packet::Message(text) = p {
                out.push(text.to_string());
            }
        }
        out
    }
}

/// Random JSON built from `pool` strings and `keys`, up to `depth` levels.
fn value(rng: &mut SmallRng, pool: &[String], keys: &[&str], depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => match rng.random_range(0..4) {
            0 => json!(rng.random::<i64>()),
            1 => json!(rng.random::<f64>() * 1e6),
            2 => json!(rng.random_range(-2..5)),
            _ => json!(u64::MAX),
        },
        3..=5 => {
            if rng.random_ratio(1, 60) {
                // Big strings: over and under the payload limit.
                let len = [300_000, 100_000, 5_000][rng.random_range(0..3)];
                Value::String("x".repeat(len))
            } else {
                Value::String(pool[rng.random_range(0..pool.len())].clone())
            }
        }
        6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| value(rng, pool, keys, depth - 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.random_range(0..6) {
                let key = if rng.random_ratio(1, 8) {
                    pool[rng.random_range(0..pool.len())].clone()
                } else {
                    keys[rng.random_range(0..keys.len())].to_owned()
                };
                map.insert(key, value(rng, pool, keys, depth - 1));
            }
            Value::Object(map)
        }
    }
}

/// Changes one to three fields of `payload`: a random value, a pool string, or removal.
fn mutate(rng: &mut SmallRng, payload: &mut Value, pool: &[String], keys: &[&str]) {
    let Value::Object(map) = payload else {
        return;
    };
    for _ in 0..rng.random_range(1..=3) {
        let key = if !map.is_empty() && rng.random_ratio(3, 4) {
            map.keys()
                .nth(rng.random_range(0..map.len()))
                .cloned()
                .unwrap_or_default()
        } else {
            keys[rng.random_range(0..keys.len())].to_owned()
        };
        match rng.random_range(0..4) {
            0 => {
                map.remove(&key);
            }
            1 => {
                map.insert(key, value(rng, pool, keys, 2));
            }
            _ => {
                map.insert(
                    key,
                    Value::String(pool[rng.random_range(0..pool.len())].clone()),
                );
            }
        }
    }
}

/// Sends `n` random events from `x`, batch by batch; `rejoin` puts x back in its room and
/// `sentinel` is a relay from x to y that `is_sentinel` recognises on y's side.
#[allow(clippy::too_many_arguments)]
async fn fuzz(
    n: usize,
    rng: &mut SmallRng,
    x: &Client,
    y: &mut Client,
    z: &mut Client,
    events: &[&str],
    pool: &[String],
    keys: &[&str],
    template: impl Fn(&str) -> Value,
    rejoin: impl Fn(&Client) -> (String, Value),
    sentinel: impl Fn(&Client, &Client, usize) -> (String, Value),
    is_sentinel: impl Fn(&str, &Value, usize) -> bool,
    check_y: impl Fn(&str, &Value),
) {
    let batch = 100;
    for b in 0..n.div_ceil(batch) {
        for _ in 0..batch.min(n - b * batch) {
            let event = if rng.random_ratio(1, 20) {
                pool[rng.random_range(0..pool.len())].clone()
            } else {
                events[rng.random_range(0..events.len())].to_owned()
            };
            match rng.random_range(0..20) {
                // No payload at all, or several arguments.
                0 => x.emit_raw(json!([event]).to_string()).await,
                1 => {
                    let a = value(rng, pool, keys, 2);
                    x.emit_raw(json!([event, a, 1, "extra"]).to_string()).await
                }
                // A valid message of that event with some fields changed or removed.
                2..=11 => {
                    let mut payload = template(&event);
                    mutate(rng, &mut payload, pool, keys);
                    x.emit(&event, &payload).await
                }
                _ => x.emit(&event, &value(rng, pool, keys, 3)).await,
            }
        }
        // The batch may have taken X out of the room (exit, leave, another room): back in.
        let (event, payload) = rejoin(x);
        x.emit(&event, &payload).await;
        let (event, payload) = sentinel(x, y, b);
        x.emit(&event, &payload).await;
        let received = y.until(|name, p| is_sentinel(name, p, b), Some(x)).await;
        if let Ok(mut sent) = x.sent.lock() {
            sent.clear();
        }
        for (name, payload) in &received {
            check_y(name, payload);
        }
        let leaked = z.pending();
        assert!(
            leaked.is_empty(),
            "a client in another room received {leaked:?}"
        );
    }
}

#[test]
fn webrtcroom_survives_arbitrary_payloads() {
    on_own_runtime(
        "webrtcroom_survives_arbitrary_payloads",
        webrtcroom_survives_arbitrary_payloads_on_runtime(),
    );
}

async fn webrtcroom_survives_arbitrary_payloads_on_runtime() {
    const RUNTIME: &str = "webrtcroom_survives_arbitrary_payloads";
    let seed = seed();
    println!("FUZZ_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let (_svc, io) = SocketIo::builder().max_buffer_size(100_000).build_svc();
    let config = ProtocolConfig::webrtcroom();
    WebRtcRoom::bind(&io, &config, limits(), &Stores::in_memory());
    let mut x = Client::connect(&io).await;
    x.discard_incoming();
    let mut y = Client::connect(&io).await;
    let mut z = Client::connect(&io).await;
    let w = Client::connect(&io).await;
    for (c, room) in [(&x, "r"), (&y, "r"), (&z, "s"), (&w, "s")] {
        c.emit("createAndJoinRoom", &json!({ "room": room })).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = (y.pending(), z.pending());
    let pool: Vec<String> = [
        &x.id,
        &y.id,
        &z.id,
        &w.id,
        "r",
        "other",
        "房间1",
        "",
        "__proto__",
        "constructor",
        "/#",
        "offer",
        "candidate",
        "exit",
        "createAndJoinRoom",
        "joined",
        "created",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let keys = [
        "from",
        "to",
        "room",
        "sdp",
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
        "__proto__",
        "id",
        "peers",
    ];
    let events = [
        "createAndJoinRoom",
        "offer",
        "answer",
        "candidate",
        "exit",
        "created",
        "joined",
    ];
    let (x_id, n) = (x.id.clone(), cases());
    let (xt, yt) = (x.id.clone(), y.id.clone());
    let template = move |event: &str| match event {
        "createAndJoinRoom" => json!({ "room": "r" }),
        "exit" => json!({ "from": xt, "room": "r" }),
        "candidate" => {
            json!({ "from": xt, "to": yt, "room": "r", "candidate": { "sdpMid": "0", "sdpMLineIndex": 0, "sdp": "candidate:1" } })
        }
        _ => json!({ "from": xt, "to": yt, "room": "r", "sdp": "v=0" }),
    };
    fuzz(
        n,
        &mut rng,
        &x,
        &mut y,
        &mut z,
        &events,
        &pool,
        &keys,
        template,
        |_| ("createAndJoinRoom".into(), json!({ "room": "r" })),
        |x, y, b| {
            let candidate =
                json!({ "from": x.id, "to": y.id, "room": "r", "candidate": { "sentinel": b } });
            ("candidate".into(), candidate)
        },
        |name, p, b| name == "candidate" && p["candidate"]["sentinel"] == json!(b),
        |name, p| match name {
            "offer" | "answer" | "candidate" | "exit" => {
                assert_eq!(
                    p["from"],
                    json!(x_id),
                    "{name} delivered with a spoofed from: {p}"
                )
            }
            "joined" => assert_eq!(p["id"], json!(x_id), "joined names someone else: {p}"),
            other => panic!("unexpected event {other} at a peer: {p}"),
        },
    )
    .await;
    assert_no_handler_panicked(RUNTIME);

    // A fresh pair still works. Joins of different sockets are not ordered with each
    // other: A's `created` must arrive before B joins.
    let mut a = Client::connect(&io).await;
    let mut b = Client::connect(&io).await;
    a.emit("createAndJoinRoom", &json!({ "room": "fresh" }))
        .await;
    let _ = a.until(|n, _| n == "created", None).await;
    b.emit("createAndJoinRoom", &json!({ "room": "fresh" }))
        .await;
    let b_created = b.until(|n, _| n == "created", None).await;
    assert!(b_created.is_empty());
    b.emit(
        "offer",
        &json!({ "from": b.id, "to": a.id, "room": "fresh", "sdp": "v=0" }),
    )
    .await;
    let before = a
        .until(|n, p| n == "offer" && p["sdp"] == "v=0", None)
        .await;
    assert!(before.iter().all(|(n, _)| n == "joined"));
}

#[test]
fn chatroom_survives_arbitrary_payloads() {
    on_own_runtime(
        "chatroom_survives_arbitrary_payloads",
        chatroom_survives_arbitrary_payloads_on_runtime(),
    );
}

async fn chatroom_survives_arbitrary_payloads_on_runtime() {
    const RUNTIME: &str = "chatroom_survives_arbitrary_payloads";
    let seed = seed();
    println!("FUZZ_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let (_svc, io) = SocketIo::builder().max_buffer_size(100_000).build_svc();
    let config = ProtocolConfig::chatroom();
    let _bound = Chatroom::bind(&io, &config, limits(), &Stores::in_memory());
    let mut x = Client::connect(&io).await;
    x.discard_incoming();
    let mut y = Client::connect(&io).await;
    let mut z = Client::connect(&io).await;
    let w = Client::connect(&io).await;
    for (c, user, room) in [
        (&x, "x", "room"),
        (&y, "y", "room"),
        (&z, "z", "zone"),
        (&w, "w", "zone"),
    ] {
        let join = json!({ "id": format!("u{user}"), "username": user, "roomname": room });
        c.emit("join", &join).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = (y.pending(), z.pending());
    // X knows every socket id (they are public) but not the other users' secret ids.
    let pool: Vec<String> = [
        &x.id,
        &y.id,
        &z.id,
        &w.id,
        "ux",
        "x",
        "room",
        "other",
        "y",
        "",
        "__proto__",
        "constructor",
        "user",
        "display",
        "remoteDisplay",
        "getOffer",
        "leave",
        "offer",
        "answer",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let keys = [
        "id",
        "username",
        "roomname",
        "connectorId",
        "remoteConnectorId",
        "memberId",
        "offer",
        "answer",
        "candidate",
        "streamType",
        "type",
        "data",
        "__proto__",
    ];
    let events = [
        "join",
        "offer",
        "answer",
        "icecandidate",
        "leave",
        "reconnect",
        "reconnectWork",
        "getOffer",
        "error",
    ];
    let (x_id, n) = (x.id.clone(), cases());
    let yt = y.id.clone();
    let template = move |event: &str| match event {
        "join" | "reconnect" => json!({ "id": "ux", "username": "x", "roomname": "room" }),
        "offer" => {
            json!({ "connectorId": "cXY", "memberId": yt, "offer": { "type": "offer", "sdp": "v=0" }, "streamType": "user" })
        }
        "answer" => {
            json!({ "remoteConnectorId": "cYX", "connectorId": "cXY", "memberId": yt, "answer": { "type": "answer", "sdp": "v=0" }, "streamType": "user" })
        }
        "icecandidate" => {
            json!({ "remoteConnectorId": "cYX", "memberId": yt, "candidate": { "candidate": "c" } })
        }
        "leave" => json!([{ "remoteConnectorId": "cYX", "memberId": yt }]),
        _ => {
            json!({ "type": "offer", "data": { "sdp": "v=0" }, "connectorId": "cXY", "memberId": yt })
        }
    };
    fuzz(
        n,
        &mut rng,
        &x,
        &mut y,
        &mut z,
        &events,
        &pool,
        &keys,
        template,
        |_| ("join".into(), json!({ "id": "ux", "username": "x", "roomname": "room" })),
        |_, y, b| {
            let ice = json!({ "remoteConnectorId": "sentinel", "memberId": y.id, "candidate": { "sentinel": b } });
            ("icecandidate".into(), ice)
        },
        |name, p, b| name == "icecandidate" && p["candidate"]["sentinel"] == json!(b),
        |name, p| match name {
            "offer" | "answer" | "getOffer" | "leave" => {
                assert_eq!(p["memberId"], json!(x_id), "{name} names someone else as sender: {p}")
            }
            // Relays without a sender field, and reconnect signalling passed through to Y.
            "icecandidate" | "reconnect" => {}
            other => panic!("unexpected event {other} at a peer: {p}"),
        },
    )
    .await;
    assert_no_handler_panicked(RUNTIME);

    let mut a = Client::connect(&io).await;
    let mut b = Client::connect(&io).await;
    a.emit(
        "join",
        &json!({ "id": "fa", "username": "a", "roomname": "fresh" }),
    )
    .await;
    // The joiner hears nothing back; a relay to itself proves A is in before B joins.
    let own = json!({ "remoteConnectorId": "self", "memberId": a.id, "candidate": {} });
    a.emit("icecandidate", &own).await;
    let _ = a.until(|n, _| n == "icecandidate", None).await;
    b.emit(
        "join",
        &json!({ "id": "fb", "username": "b", "roomname": "fresh" }),
    )
    .await;
    let _ = a
        .until(|n, p| n == "getOffer" && p["memberId"] == json!(b.id), None)
        .await;
    let offer = json!({ "connectorId": "c1", "memberId": b.id, "offer": { "sdp": "v=0" }, "streamType": "user" });
    a.emit("offer", &offer).await;
    let _ = b
        .until(|n, p| n == "offer" && p["memberId"] == json!(a.id), None)
        .await;
}

/// Both adapters on one Socket.IO instance (WebRtcRoom on `/w`, chatroom on `/c`) with
/// cross-protocol rooms on: a mixed room's members of the two protocols fuzz each other.
fn mixed_io() -> SocketIo {
    let (_svc, io) = SocketIo::builder().max_buffer_size(100_000).build_svc();
    let stores =
        Stores::in_memory().with_cross_protocol(CrossProtocol::from_config(&CrossProtocolConfig {
            enabled: true,
            rooms: vec!["mix*".into()],
        }));
    let mut w = ProtocolConfig::webrtcroom();
    w.namespace = "/w".into();
    let mut c = ProtocolConfig::chatroom();
    c.namespace = "/c".into();
    WebRtcRoom::bind(&io, &w, limits(), &stores);
    let _bound = Chatroom::bind(&io, &c, limits(), &stores);
    io
}

/// A chatroom member X fuzzes a mixed room whose other member Y speaks WebRtcRoom: whatever
/// X sends, Y gets only well-formed WebRtcRoom events that name X, and nothing reaches the
/// room "other" (a WebRtcRoom member Z there, in a room that is not shared).
#[test]
fn mixed_room_chatroom_sender_never_reaches_past_its_room() {
    on_own_runtime(
        "mixed_room_chatroom_sender_never_reaches_past_its_room",
        mixed_room_chatroom_sender_never_reaches_past_its_room_on_runtime(),
    );
}

async fn mixed_room_chatroom_sender_never_reaches_past_its_room_on_runtime() {
    const RUNTIME: &str = "mixed_room_chatroom_sender_never_reaches_past_its_room";
    let seed = seed();
    println!("FUZZ_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let io = mixed_io();
    let mut x = Client::connect_to(&io, "/c").await;
    x.discard_incoming();
    let mut y = Client::connect_to(&io, "/w").await;
    let mut z = Client::connect_to(&io, "/w").await;
    y.emit("createAndJoinRoom", &json!({ "room": "mix" })).await;
    z.emit("createAndJoinRoom", &json!({ "room": "other" }))
        .await;
    let join = json!({ "id": "ux", "username": "x", "roomname": "mix" });
    x.emit("join", &join).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = (y.pending(), z.pending());
    let pool: Vec<String> = [
        &x.id,
        &y.id,
        &z.id,
        "ux",
        "mix",
        "other",
        "",
        "__proto__",
        "user",
        "display",
        "webrtcroom:",
        "offer",
        "answer",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let keys = [
        "id",
        "username",
        "roomname",
        "connectorId",
        "remoteConnectorId",
        "memberId",
        "offer",
        "answer",
        "candidate",
        "sdp",
        "type",
        "streamType",
        "sdpMid",
        "sdpMLineIndex",
    ];
    let events = [
        "join",
        "offer",
        "answer",
        "icecandidate",
        "leave",
        "reconnect",
        "reconnectWork",
    ];
    let (xt, yt) = (x.id.clone(), y.id.clone());
    let template = move |event: &str| match event {
        "join" | "reconnect" => json!({ "id": "ux", "username": "x", "roomname": "mix" }),
        "offer" => {
            json!({ "connectorId": "k", "memberId": yt, "offer": { "type": "offer", "sdp": "v=0" }, "streamType": "user" })
        }
        "answer" => {
            json!({ "remoteConnectorId": "webrtcroom:y", "connectorId": "k", "memberId": yt, "answer": { "type": "answer", "sdp": "v=0" }, "streamType": "user" })
        }
        "icecandidate" => {
            json!({ "remoteConnectorId": "webrtcroom:y", "memberId": yt, "candidate": { "candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0 } })
        }
        "leave" => json!([{ "remoteConnectorId": "webrtcroom:y", "memberId": yt }]),
        _ => json!({ "type": "offer", "data": {}, "connectorId": "k", "memberId": yt }),
    };
    fuzz(
        cases(),
        &mut rng,
        &x,
        &mut y,
        &mut z,
        &events,
        &pool,
        &keys,
        template,
        |_| ("join".into(), json!({ "id": "ux", "username": "x", "roomname": "mix" })),
        |_, y, b| {
            let c = json!({ "remoteConnectorId": "webrtcroom:y", "memberId": y.id, "candidate": { "candidate": format!("sentinel-{b}"), "sdpMid": "0", "sdpMLineIndex": 0 } });
            ("icecandidate".into(), c)
        },
        |name, p, b| name == "candidate" && p["candidate"]["sdp"] == json!(format!("sentinel-{b}")),
        |name, p| match name {
            "offer" | "answer" | "candidate" => {
                assert_eq!(p["from"], json!(xt), "{name} names someone else: {p}");
                assert!(p["sdp"].is_string() || p["candidate"]["sdp"].is_string(), "{name} without its text: {p}");
            }
            "exit" => assert_eq!(p["from"], json!(xt), "exit names someone else: {p}"),
            "joined" => assert_eq!(p["id"], json!(xt), "joined names someone else: {p}"),
            other => panic!("unexpected event {other} at a WebRtcRoom peer: {p}"),
        },
    )
    .await;
    assert_no_handler_panicked(RUNTIME);
}

/// A WebRtcRoom member X fuzzes a mixed room whose other member Y is a chatroom client: Y
/// gets only chatroom events from X, naming X, and nothing reaches the room "other".
#[test]
fn mixed_room_webrtcroom_sender_never_reaches_past_its_room() {
    on_own_runtime(
        "mixed_room_webrtcroom_sender_never_reaches_past_its_room",
        mixed_room_webrtcroom_sender_never_reaches_past_its_room_on_runtime(),
    );
}

async fn mixed_room_webrtcroom_sender_never_reaches_past_its_room_on_runtime() {
    const RUNTIME: &str = "mixed_room_webrtcroom_sender_never_reaches_past_its_room";
    let seed = seed();
    println!("FUZZ_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let io = mixed_io();
    let mut x = Client::connect_to(&io, "/w").await;
    x.discard_incoming();
    let mut y = Client::connect_to(&io, "/c").await;
    let mut z = Client::connect_to(&io, "/c").await;
    y.emit(
        "join",
        &json!({ "id": "uy", "username": "y", "roomname": "mix" }),
    )
    .await;
    z.emit(
        "join",
        &json!({ "id": "uz", "username": "z", "roomname": "other" }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    x.emit("createAndJoinRoom", &json!({ "room": "mix" })).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = (y.pending(), z.pending());
    // Y links to X (so that X's answers and candidates have a connector to go to).
    let (xt, yt) = (x.id.clone(), y.id.clone());
    y.emit("offer", &json!({ "connectorId": "ky", "memberId": xt, "offer": { "type": "offer", "sdp": "v=0" }, "streamType": "user" })).await;
    let pool: Vec<String> = [
        &x.id,
        &y.id,
        &z.id,
        "uy",
        "mix",
        "other",
        "",
        "__proto__",
        "/w#",
        "exit",
        "candidate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let keys = [
        "from",
        "to",
        "room",
        "sdp",
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
        "id",
    ];
    let events = ["createAndJoinRoom", "offer", "answer", "candidate", "exit"];
    let template = move |event: &str| match event {
        "createAndJoinRoom" => json!({ "room": "mix" }),
        "exit" => json!({ "from": xt, "room": "mix" }),
        "candidate" => {
            json!({ "from": xt, "to": yt, "room": "mix", "candidate": { "sdpMid": "0", "sdpMLineIndex": 0, "sdp": "candidate:1" } })
        }
        _ => json!({ "from": xt, "to": yt, "room": "mix", "sdp": "v=0" }),
    };
    let x_id = x.id.clone();
    fuzz(
        cases(),
        &mut rng,
        &x,
        &mut y,
        &mut z,
        &events,
        &pool,
        &keys,
        template,
        |_| ("createAndJoinRoom".into(), json!({ "room": "mix" })),
        |x, y, b| {
            let offer =
                json!({ "from": x.id, "to": y.id, "room": "mix", "sdp": format!("sentinel-{b}") });
            ("offer".into(), offer)
        },
        |name, p, b| name == "offer" && p["offer"]["sdp"] == json!(format!("sentinel-{b}")),
        |name, p| match name {
            "offer" | "answer" | "leave" => {
                assert_eq!(p["memberId"], json!(x_id), "{name} names someone else: {p}")
            }
            "icecandidate" => assert_eq!(
                p["connectorId"],
                json!("ky"),
                "candidate for another connector: {p}"
            ),
            other => panic!("unexpected event {other} at a chatroom peer: {p}"),
        },
    )
    .await;
    assert_no_handler_panicked(RUNTIME);
}
