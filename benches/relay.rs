//! The relay hot path inside the process, per protocol: one ICE candidate from the decoded
//! Engine.IO message (what engineioxide hands socketioxide) through socketioxide's parser,
//! the adapter (decode, route, re-encode) and into the receiver's packet buffer.
//!
//! `cargo bench --bench relay` (add `-- --quick` for a short run). Uses socketioxide's
//! in-process dummy sockets (dev feature `__test_harness`): `tx` injects a client's packets
//! into the server exactly where a transport would, `rx` is the receiving socket's outgoing
//! packet buffer. Benchmarks:
//! - `relay/<protocol>/one`: one message in, wait until it is in the receiver's buffer
//!   (includes one task wake-up: the dummy socket's reader task);
//! - `relay/<protocol>/batch64`: 64 messages in, 64 out; reported per message (the wake-up
//!   amortized, closest to the server under load);
//! - `parse/event_frame`: the adapters' decoding of the event array alone.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engineioxide::Packet;
use serde_json::Value;
use signal_gateway::adapters::chatroom::Chatroom;
use signal_gateway::adapters::webrtcroom::WebRtcRoom;
use signal_gateway::adapters::{EventFrame, Stores};
use signal_gateway::config::{Limits, ProtocolConfig};
use socketioxide::SocketIo;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{Receiver, Sender};

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 198.51.100.23 51234 typ srflx raddr 192.168.1.20 rport 51234 generation 0 ufrag 7bTx network-cost 999";

struct Client {
    tx: Sender<Packet>,
    rx: Receiver<Packet>,
    id: String,
}

impl Client {
    async fn connect(io: &SocketIo) -> Client {
        let (tx, mut rx) = io.new_dummy_sock("/", ()).await;
        let first = rx.recv().await.expect("connect packet");
        let Packet::Message(text) = first else {
            panic!("unexpected first packet {first:?}")
        };
        let ack: Value = serde_json::from_str(&text[1..]).expect("connect payload is JSON");
        let id = ack["sid"].as_str().expect("sid").to_owned();
        Client { tx, rx, id }
    }

    async fn send(&self, socketio_packet: &str) {
        self.tx
            .send(Packet::Message(socketio_packet.to_owned().into()))
            .await
            .expect("server side open");
    }

    /// The next event packet's text.
    async fn next_event(&mut self) -> String {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.rx.recv()).await {
                Ok(Some(Packet::Message(text))) if text.starts_with('2') => {
                    return text.to_string()
                }
                Ok(Some(_)) => continue,
                other => panic!("no event: {other:?}"),
            }
        }
    }

    fn drain(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }
}

fn limits() -> Limits {
    Limits {
        rate: 1e12,
        burst: 1e12,
        flood_disconnect: 0,
        ..Limits::default()
    }
}

/// A joined pair and the Socket.IO packet A sends to B.
struct Pair {
    a: Client,
    b: Client,
    msg: String,
    expect: &'static str,
    _io: SocketIo,
}

async fn webrtcroom_pair() -> Pair {
    let (_svc, io) = SocketIo::builder().max_buffer_size(4096).build_svc();
    WebRtcRoom::bind(
        &io,
        &ProtocolConfig::webrtcroom(),
        limits(),
        &Stores::in_memory(),
    );
    let a = Client::connect(&io).await;
    let mut b = Client::connect(&io).await;
    a.send(r#"2["createAndJoinRoom",{"room":"bench"}]"#).await;
    b.send(r#"2["createAndJoinRoom",{"room":"bench"}]"#).await;
    let created = b.next_event().await;
    assert!(created.contains("created"), "{created}");
    let msg = format!(
        r#"2["candidate",{{"from":"{}","to":"{}","room":"bench","candidate":{{"sdpMid":"0","sdpMLineIndex":0,"sdp":"{CANDIDATE}","seq":12345,"ts":987654321}}}}]"#,
        a.id, b.id
    );
    let mut pair = Pair {
        a,
        b,
        msg,
        expect: "[\"candidate\"",
        _io: io,
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    pair.a.drain();
    pair.b.drain();
    pair.a.send(&pair.msg).await;
    let got = pair.b.next_event().await;
    assert!(
        got.contains(pair.expect) && got.contains("987654321"),
        "relay works: {got}"
    );
    pair
}

async fn chatroom_pair() -> Pair {
    let (_svc, io) = SocketIo::builder().max_buffer_size(4096).build_svc();
    let _bound = Chatroom::bind(
        &io,
        &ProtocolConfig::chatroom(),
        limits(),
        &Stores::in_memory(),
    );
    let mut a = Client::connect(&io).await;
    let b = Client::connect(&io).await;
    a.send(r#"2["join",{"id":"ua","username":"a","roomname":"bench"}]"#)
        .await;
    b.send(r#"2["join",{"id":"ub","username":"b","roomname":"bench"}]"#)
        .await;
    let get_offer = a.next_event().await;
    assert!(get_offer.contains("getOffer"), "{get_offer}");
    let msg = format!(
        r#"2["icecandidate",{{"remoteConnectorId":"cb","memberId":"{}","candidate":{{"candidate":"{CANDIDATE}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"7bTx","seq":12345,"ts":987654321}}}}]"#,
        b.id
    );
    let mut pair = Pair {
        a,
        b,
        msg,
        expect: "[\"icecandidate\"",
        _io: io,
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    pair.a.drain();
    pair.b.drain();
    pair.a.send(&pair.msg).await;
    let got = pair.b.next_event().await;
    assert!(
        got.contains(pair.expect) && got.contains("987654321"),
        "relay works: {got}"
    );
    pair
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, setup) in [("webrtcroom", 0), ("chatroom", 1)] {
        let mut pair = rt.block_on(async {
            if setup == 0 {
                webrtcroom_pair().await
            } else {
                chatroom_pair().await
            }
        });
        let mut g = c.benchmark_group(format!("relay/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("one", |bench| {
            bench.iter_custom(|iters| run(&rt, &mut pair, iters, 1));
        });
        g.throughput(Throughput::Elements(64));
        g.bench_function("batch64", |bench| {
            bench.iter_custom(|iters| run(&rt, &mut pair, iters, 64));
        });
        g.finish();
    }
}

/// `iters` rounds of `batch` messages A → B; returns the time taken.
fn run(rt: &Runtime, pair: &mut Pair, iters: u64, batch: usize) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            for _ in 0..batch {
                pair.a
                    .tx
                    .send(Packet::Message(pair.msg.clone().into()))
                    .await
                    .expect("open");
            }
            for _ in 0..batch {
                match pair.b.rx.recv().await {
                    Some(Packet::Message(_)) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        start.elapsed()
    })
}

fn parse(c: &mut Criterion) {
    let frame = format!(
        r#"["candidate",{{"from":"AAAAAAAAAAAAAAAAAAAA","to":"BBBBBBBBBBBBBBBBBBBB","room":"bench","candidate":{{"sdpMid":"0","sdpMLineIndex":0,"sdp":"{CANDIDATE}","seq":12345,"ts":987654321}}}}]"#
    );
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("event_frame", |b| {
        b.iter(|| {
            let f = EventFrame::parse(std::hint::black_box(&frame)).expect("parses");
            std::hint::black_box(f.payload().map(|p| p.get().len()))
        })
    });
    g.finish();
}

criterion_group!(benches, relay, parse);
criterion_main!(benches);
