//! Wire fuzzing of a running gateway: arbitrary Engine.IO / Socket.IO frames over WebSocket
//! and long-polling, Engine.IO v3, v4 and no version at all, to both protocols.
//!
//! A pair of clients that joined before the barrage must still relay afterwards, a fresh pair
//! must complete a join and a relay, and the process must still be running.
//! `FUZZ_FRAMES` sets the number of frames (default 3000), `FUZZ_SEED` replays a run; with
//! `-- --nocapture` the run prints its seed and how long the barrage took.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The gateway under test, killed when dropped.
struct Gateway {
    child: Child,
    webrtcroom: String,
    chatroom: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Gateway {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(env!("CARGO_BIN_EXE_signal-gateway"))
        .args(["--config", &format!("{root}/tests/fixtures/test.toml")])
        .args(["--set", "log.level=error", "--set", "admin.enabled=false"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let (mut webrtcroom, mut chatroom) = (String::new(), String::new());
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("webrtcroom listening on http://") {
            webrtcroom = rest.split(' ').next().unwrap_or_default().to_owned();
        }
        if let Some(rest) = line.strip_prefix("chatroom listening on http://") {
            chatroom = rest.split(' ').next().unwrap_or_default().to_owned();
        }
        if !webrtcroom.is_empty() && !chatroom.is_empty() {
            break;
        }
    }
    assert!(
        !webrtcroom.is_empty() && !chatroom.is_empty(),
        "gateway announced its addresses"
    );
    Gateway {
        child,
        webrtcroom,
        chatroom,
    }
}

/// A raw Socket.IO client over WebSocket. Once connected, a task of its own keeps the
/// heartbeat going (Engine.IO v3: the client pings; v4: it answers the server's pings), so the
/// client stays alive however long the test keeps it waiting (the long fuzz runs outlast
/// `pingInterval + pingTimeout`); the other frames are queued for [`Raw::expect`].
struct Raw {
    out: mpsc::UnboundedSender<Message>,
    frames: mpsc::UnboundedReceiver<String>,
    sid: String,
}

impl Raw {
    async fn connect(addr: &str, eio: u8) -> Raw {
        let url = format!("ws://{addr}/socket.io/?EIO={eio}&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        let open = next_text(&mut ws).await;
        let sid = if eio == 3 {
            let open: Value = serde_json::from_str(&open[1..]).expect("open packet");
            assert_eq!(next_text(&mut ws).await, "40");
            open["sid"].as_str().expect("sid").to_owned()
        } else {
            ws.send(Message::text("40")).await.expect("send connect");
            let connect = loop {
                let text = next_text(&mut ws).await;
                if let Some(body) = text.strip_prefix("40") {
                    break body.to_owned();
                }
                assert_eq!(text, "2", "only a ping may come before the connect ack");
                ws.send(Message::text("3")).await.expect("pong");
            };
            let connect: Value = serde_json::from_str(&connect).expect("connect packet");
            connect["sid"].as_str().expect("sid").to_owned()
        };
        let (out, frames) = pump(ws, eio);
        Raw { out, frames, sid }
    }

    async fn emit(&mut self, event: &str, payload: Value) {
        let frame = format!("42{}", json!([event, payload]));
        self.out
            .send(Message::text(frame))
            .expect("connection open");
    }

    /// The payload of the next event named `event` (skipping other events).
    async fn expect(&mut self, event: &str) -> Value {
        loop {
            let text = tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
                .await
                .expect("a frame in time")
                .expect("connection open");
            if let Some(body) = text.strip_prefix("42") {
                let v: Value = serde_json::from_str(body).expect("event JSON");
                if v[0] == event {
                    return v[1].clone();
                }
            }
        }
    }
}

/// Runs `ws` on its own task: keeps the heartbeat of Engine.IO version `eio` (v3: sends `2`
/// well within the gateway's ping interval; v4: answers `2` with `3`), sends what arrives on
/// the returned sender, and passes every other text frame to the returned receiver.
fn pump(
    ws: Ws,
    eio: u8,
) -> (
    mpsc::UnboundedSender<Message>,
    mpsc::UnboundedReceiver<String>,
) {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = ping.tick(), if eio == 3 => {
                    if sink.send(Message::text("2")).await.is_err() { break }
                }
                outgoing = out_rx.recv() => match outgoing {
                    Some(msg) => if sink.send(msg).await.is_err() { break },
                    None => break,
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(t))) if eio != 3 && t.as_str() == "2" => {
                        if sink.send(Message::text("3")).await.is_err() { break }
                    }
                    Some(Ok(Message::Text(t))) if eio == 3 && t.as_str() == "3" => {}
                    Some(Ok(Message::Text(t))) => {
                        if in_tx.send(t.to_string()).is_err() { break }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
    });
    (out_tx, in_rx)
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("valid frame");
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`; the status and body, or None on a
/// transport error (the fuzzer does not care why).
async fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// A random frame: often a near-valid packet, sometimes noise.
fn frame(rng: &mut SmallRng, sids: &[String]) -> String {
    let sid = &sids[rng.random_range(0..sids.len())];
    let pieces = [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "40",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "2probe",
        "3probe",
        "40/",
        "40/nope,",
        "40/room?token=x,",
        "42/nope,",
        "4{",
        "42[",
        "42[\"",
        "42[\"offer\"",
        "42[\"createAndJoinRoom\"]",
        "42[\"join\",null]",
        "451-[\"x\",{\"_placeholder\":true,\"num\":0}]",
        "42[1,2,3]",
        "42{}",
        "42[\"__proto__\",{}]",
        "42[\"leave\",{}]",
    ];
    match rng.random_range(0..10) {
        0 => (0..rng.random_range(0..64))
            .map(|_| char::from(rng.random_range(0u8..128)))
            .collect(),
        1 => "x".repeat(rng.random_range(100_000..1_200_000)),
        2..=4 => pieces[rng.random_range(0..pieces.len())].to_owned(),
        _ => {
            let events = [
                "createAndJoinRoom",
                "offer",
                "answer",
                "candidate",
                "exit",
                "join",
                "icecandidate",
                "reconnect",
                "reconnectWork",
                "leave",
            ];
            let event = events[rng.random_range(0..events.len())];
            let payload = match rng.random_range(0..5) {
                0 => json!({ "room": "r", "roomname": "r", "id": "u", "username": "u" }),
                1 => json!({ "from": sid, "to": sid, "memberId": sid, "room": {"__proto__": 1} }),
                2 => json!([{ "memberId": sid }]),
                3 => json!(null),
                _ => json!(rng.random::<u32>()),
            };
            format!("42{}", json!([event, payload]))
        }
    }
}

/// `len:packet` framing (v3) or `\x1e`-separated packets (v4), sometimes with a wrong length.
fn polling_body(rng: &mut SmallRng, sids: &[String], v3: bool) -> String {
    let packets: Vec<String> = (0..rng.random_range(1..4))
        .map(|_| frame(rng, sids))
        .collect();
    if v3 {
        packets
            .iter()
            .map(|p| {
                let len = p.encode_utf16().count() as i64
                    + rng.random_range(-1..=1) * i64::from(rng.random_ratio(1, 4));
                format!("{len}:{p}")
            })
            .collect()
    } else {
        packets.join("\u{1e}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_survives_arbitrary_frames() {
    let gw = start();
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("FUZZ_SEED={seed}");
    let frames: usize = std::env::var("FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = SmallRng::seed_from_u64(seed);
    let started = std::time::Instant::now();

    // A pair that is in a call before the barrage.
    let mut a = Raw::connect(&gw.webrtcroom, 3).await;
    let mut b = Raw::connect(&gw.webrtcroom, 3).await;
    a.emit("createAndJoinRoom", json!({ "room": "canary" }))
        .await;
    a.expect("created").await;
    b.emit("createAndJoinRoom", json!({ "room": "canary" }))
        .await;
    b.expect("created").await;
    let sids = vec![
        a.sid.clone(),
        b.sid.clone(),
        "nope".to_owned(),
        String::new(),
    ];

    let mut sent = 0;
    while sent < frames {
        let protocol = if rng.random() {
            &gw.webrtcroom
        } else {
            &gw.chatroom
        };
        match rng.random_range(0..3) {
            // WebSocket: a connection per burst, frames without waiting for answers.
            0 => {
                let eio = if rng.random() { 3 } else { 4 };
                let url = format!("ws://{protocol}/socket.io/?EIO={eio}&transport=websocket");
                if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await {
                    for _ in 0..rng.random_range(1..40) {
                        let msg = if rng.random_ratio(1, 10) {
                            Message::binary(
                                (0..rng.random_range(0..32))
                                    .map(|_| rng.random::<u8>())
                                    .collect::<Vec<u8>>(),
                            )
                        } else {
                            Message::text(frame(&mut rng, &sids))
                        };
                        sent += 1;
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                    let _ = ws.close(None).await;
                }
            }
            // Polling: a handshake, then posts and polls with random bodies and sids.
            1 => {
                let version = ["EIO=3&", "EIO=4&", ""][rng.random_range(0..3)];
                let v3 = version != "EIO=4&";
                let open = http(
                    protocol,
                    "GET",
                    &format!("/socket.io/?{version}transport=polling"),
                    b"",
                )
                .await;
                let sid = open
                    .and_then(|(_, body)| {
                        let start = body.find("\"sid\":\"")? + 7;
                        Some(body[start..].split('"').next()?.to_owned())
                    })
                    .unwrap_or_else(|| "bogus".into());
                for _ in 0..rng.random_range(1..6) {
                    let path = format!("/socket.io/?{version}transport=polling&sid={sid}");
                    let body = polling_body(&mut rng, &sids, v3);
                    sent += 1;
                    let _ = http(protocol, "POST", &path, body.as_bytes()).await;
                }
                let _ = http(
                    protocol,
                    "GET",
                    &format!("/socket.io/?{version}transport=polling&sid={sid}"),
                    b"",
                )
                .await;
            }
            // Odd requests: unknown sids, methods, versions, paths.
            _ => {
                let paths = [
                    "/socket.io/?EIO=9&transport=polling",
                    "/socket.io/?EIO=3&transport=websocket",
                    "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA",
                    "/socket.io/?transport=flash",
                    "/socket.io/?EIO=3&transport=polling&sid=%FF%FE",
                    "/checkUsername?username=%00&roomname=__proto__",
                    "/demo/../../etc/passwd",
                ];
                let methods = ["GET", "POST", "PUT", "OPTIONS", "DELETE"];
                let path = paths[rng.random_range(0..paths.len())];
                let method = methods[rng.random_range(0..methods.len())];
                sent += 1;
                let _ = http(protocol, method, path, frame(&mut rng, &sids).as_bytes()).await;
            }
        }
    }

    let barrage = started.elapsed();
    // The pair from before still relays, in order.
    for n in 0..20 {
        let c = json!({ "from": b.sid, "to": a.sid, "room": "canary", "candidate": { "n": n } });
        b.emit("candidate", c).await;
    }
    for n in 0..20 {
        let got = a.expect("candidate").await;
        assert_eq!(got["candidate"]["n"], n, "canary relay {n} in order");
    }

    // A fresh chatroom pair completes a join and a relay. Joins of two sockets are not
    // ordered with each other: a relay to itself proves C is in before D joins.
    let mut c = Raw::connect(&gw.chatroom, 4).await;
    let mut d = Raw::connect(&gw.chatroom, 4).await;
    c.emit(
        "join",
        json!({ "id": "fc", "username": "c", "roomname": "after-fuzz" }),
    )
    .await;
    c.emit(
        "icecandidate",
        json!({ "remoteConnectorId": "self", "memberId": c.sid, "candidate": {} }),
    )
    .await;
    c.expect("icecandidate").await;
    d.emit(
        "join",
        json!({ "id": "fd", "username": "d", "roomname": "after-fuzz" }),
    )
    .await;
    let get = c.expect("getOffer").await;
    assert_eq!(get["memberId"], d.sid);
    c.emit("offer", json!({ "connectorId": "c1", "memberId": d.sid, "offer": { "sdp": "v=0" }, "streamType": "user" })).await;
    let offer = d.expect("offer").await;
    assert_eq!(offer["memberId"], c.sid);

    let mut gw = gw;
    assert!(
        gw.child.try_wait().expect("process status").is_none(),
        "gateway still running"
    );
    println!(
        "fuzz_wire: {sent} frames in {:.1} s ({:.0} frames/s); canary pair kept relaying in order, fresh pair joined and relayed, gateway still running",
        barrage.as_secs_f64(),
        sent as f64 / barrage.as_secs_f64().max(1e-9)
    );
}
