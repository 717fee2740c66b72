//! Relay latency while operators watch: does an open dashboard on a large server slow the
//! relays down?
//!
//! `cargo bench --bench dashboard` (numbers printed, no pass/fail). In process, through
//! socketioxide's dummy sockets like `benches/relay.rs`: 20,000 WebRtcRoom rooms of one member
//! each, and one pair relaying candidates at a fixed rate (open loop, 2,000 msgs/s, so
//! messages that arrive while the state lock is held wait and show in the tail). Each phase
//! runs for `DASH_SECS` seconds (default 10) with 0, 1 or 10 dashboards open: a dashboard
//! takes the operators' view of every room once a second and encodes it as JSON, as
//! `/api/events` does. Printed per phase: relay latency p50, p99, p99.9 and max, and how long
//! one view took.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engineioxide::Packet;
use signal_gateway::adapters::webrtcroom::WebRtcRoom;
use signal_gateway::adapters::{Realm, Stores};
use signal_gateway::config::{Limits, ProtocolConfig};
use socketioxide::SocketIo;
use tokio::sync::mpsc::{Receiver, Sender};

const ROOMS: usize = 20_000;
const RATE: u64 = 2_000;

struct Client {
    tx: Sender<Packet>,
    rx: Receiver<Packet>,
    id: String,
}

async fn connect(io: &SocketIo) -> Client {
    let (tx, mut rx) = io.new_dummy_sock("/", ()).await;
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    let Ok(Some(Packet::Message(text))) = first else {
        panic!("no connect packet")
    };
    let ack: serde_json::Value = serde_json::from_str(&text[1..]).expect("connect JSON");
    let id = ack["sid"].as_str().expect("sid").to_owned();
    Client { tx, rx, id }
}

async fn send(c: &Client, text: String) {
    c.tx.send(Packet::Message(text.into())).await.expect("open");
}

/// Waits for the next event packet of `c`.
async fn next_event(c: &mut Client) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.rx.recv()).await {
            Ok(Some(Packet::Message(t))) if t.starts_with('2') => return t.to_string(),
            Ok(Some(_)) => continue,
            other => panic!("no event: {other:?}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let secs: u64 = std::env::var("DASH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (_svc, io) = SocketIo::builder().max_buffer_size(4096).build_svc();
        let limits = Limits {
            rate: 1e12,
            burst: 1e12,
            flood_disconnect: 0,
            max_connections: 0,
            max_rooms: 0,
            ..Limits::default()
        };
        let realm = WebRtcRoom::bind(
            &io,
            &ProtocolConfig::webrtcroom(),
            limits,
            &Stores::in_memory(),
        )
        .realm;
        let started = Instant::now();
        let mut members = Vec::with_capacity(ROOMS);
        for i in 0..ROOMS {
            let mut c = connect(&io).await;
            send(
                &c,
                format!(r#"2["createAndJoinRoom",{{"room":"room-{i}"}}]"#),
            )
            .await;
            next_event(&mut c).await;
            members.push(c);
            if (i + 1) % 5000 == 0 {
                println!("{} rooms...", i + 1);
            }
        }
        let a = connect(&io).await;
        let mut b = connect(&io).await;
        send(&a, r#"2["createAndJoinRoom",{"room":"bench"}]"#.into()).await;
        send(&b, r#"2["createAndJoinRoom",{"room":"bench"}]"#.into()).await;
        next_event(&mut b).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        while b.rx.try_recv().is_ok() {}
        println!(
            "{ROOMS} rooms set up in {:.1} s; relaying {RATE} msgs/s for {secs} s per phase",
            started.elapsed().as_secs_f64()
        );
        let (a, mut b) = (Arc::new(a), b);
        for dashboards in [0usize, 1, 10] {
            let stop = Arc::new(AtomicBool::new(false));
            let views: Vec<_> = (0..dashboards)
                .map(|d| {
                    let (realm, stop) = (realm.clone(), stop.clone());
                    std::thread::spawn(move || watch(realm.as_ref(), &stop, d))
                })
                .collect();
            let latencies = relay_phase(&a, &mut b, secs).await;
            stop.store(true, Ordering::Release);
            let mut view_times: Vec<Duration> = views
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect();
            view_times.sort();
            report(dashboards, &latencies, &view_times);
        }
        drop(members);
    });
}

/// One dashboard: a view of every room, encoded, once a second (dashboard `d` of several
/// starts a little later, so they do not all look at once). Returns how long each view took.
fn watch(realm: &dyn Realm, stop: &AtomicBool, d: usize) -> Vec<Duration> {
    std::thread::sleep(Duration::from_millis(97 * d as u64));
    let mut took = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let start = Instant::now();
        let json = serde_json::to_string(&realm.rooms()).unwrap_or_default();
        took.push(start.elapsed());
        std::hint::black_box(json);
        let mut slept = Duration::ZERO;
        while slept < Duration::from_secs(1) && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
            slept += Duration::from_millis(50);
        }
    }
    took
}

/// Sends candidates A → B at `RATE` for `secs` seconds; returns each one's latency.
async fn relay_phase(a: &Arc<Client>, b: &mut Client, secs: u64) -> Vec<Duration> {
    let total = RATE * secs;
    let epoch = Instant::now();
    let sender = {
        let a = a.clone();
        let to = b.id.clone();
        let from = a.id.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..total {
                tick.tick().await;
                let ns = epoch.elapsed().as_nanos();
                let msg = format!(
                    r#"2["candidate",{{"from":"{from}","to":"{to}","room":"bench","candidate":{{"sdpMid":"0","sdpMLineIndex":0,"t":{ns}}}}}]"#
                );
                send(&a, msg).await;
            }
        })
    };
    let mut latencies = Vec::with_capacity(total as usize);
    while latencies.len() < total as usize {
        let text = next_event(b).await;
        let Some(at) = text.find("\"t\":") else {
            continue;
        };
        let digits: String = text[at + 4..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let Ok(sent_ns) = digits.parse::<u128>() else {
            continue;
        };
        let now = epoch.elapsed().as_nanos();
        latencies.push(Duration::from_nanos(
            u64::try_from(now.saturating_sub(sent_ns)).unwrap_or(u64::MAX),
        ));
    }
    let _ = sender.await;
    latencies
}

fn report(dashboards: usize, latencies: &[Duration], views: &[Duration]) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let view = if views.is_empty() {
        String::from("-")
    } else {
        format!(
            "median {:.1} ms, max {:.1} ms ({} views)",
            us(percentile(views, 0.5)) / 1000.0,
            us(views[views.len() - 1]) / 1000.0,
            views.len()
        )
    };
    println!(
        "dashboards open: {dashboards:>2} | relay p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  max {:>8.1} us | one view of {ROOMS} rooms: {view}",
        us(percentile(&sorted, 0.5)),
        us(percentile(&sorted, 0.99)),
        us(percentile(&sorted, 0.999)),
        us(sorted[sorted.len() - 1]),
    );
}
