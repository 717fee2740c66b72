//! `loadgen`: drives a Socket.IO signalling server (WebRtcRoom or chatroom protocol) with
//! many simulated clients and prints what it measured as one JSON line on stdout (progress
//! lines go to stderr).
//!
//! ```text
//! loadgen join  --url http://127.0.0.1:3000 --proto chatroom --clients 2000 --room-size 4 \
//!               --concurrency 100 --idle 5 --server-pid PID
//! loadgen relay --url ... --proto webrtcroom --pairs 200 --window 8 --warmup 2 --duration 8
//! loadgen relay --url ... --proto webrtcroom --pairs 200 --rate 5000 --duration 8
//! loadgen churn --url ... --proto chatroom --pairs 50 --burst 20 --duration 10
//! ```
//! Common options: `--transport websocket|polling` (default websocket), `--polling-share S`
//! (this share of the clients, 0–1, on polling whatever `--transport` says; e.g. 0.5 for
//! every second client), `--eio 3|4` (default:
//! 3 for webrtcroom, 4 for chatroom), `--path /socket.io/`, `--server-pid PID` (RSS and CPU
//! of the server from /proc), `--label TEXT`, `--meta key=value` (copied into the JSON),
//! `--progress SECONDS` (0: none), `--max-time SECONDS` (hard limit of the whole run),
//! `--sources N` (spread connections over 127.0.0.1..N), `--join-timeout SECONDS`,
//! `--peer-url URL` (the odd-numbered clients — the second client of every relay pair, every
//! second member of a room — connect there instead: another node of a cluster),
//! `--watch-pid NAME=PID` (repeatable: CPU time of that process over the measured window, e.g.
//! the other cluster nodes and redis-server; also left out of the disturbance figure),
//! `--redis HOST:PORT` (a loopback redis-server whose `INFO commandstats` is read at the
//! start and end of the measured window: calls and µs per command in the window).
//!
//! Scenarios (see bench/README.md for what each figure means):
//! - `join`: N clients, at most C connecting at once, join rooms of K; then idle S seconds and
//!   sample the server's RSS: (RSS after − RSS before) / joined clients.
//! - `relay`: P pairs (rooms of two); each client sends ICE candidates to its partner carrying
//!   a sequence number and a send timestamp. Closed loop (`--window W`): W in flight per client,
//!   one more sent per message received. Open loop (`--rate R`): R messages/s in total, evenly
//!   spread over the clients. Delivered msgs/s, loss, reordering, latency percentiles.
//! - `churn`: P slots, each repeatedly: two clients connect and join a fresh room, relay a
//!   burst of B messages each way, leave and disconnect.

mod client;
mod conn;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use client::{Cfg, Load, Phase, Proto, Shared, Task};
use conn::{Target, Transport};

struct Args {
    scenario: String,
    url: String,
    path: String,
    proto: Proto,
    eio: u8,
    transport: Transport,
    polling_share: f64,
    clients: usize,
    room_size: usize,
    concurrency: usize,
    idle: f64,
    pairs: usize,
    window: u32,
    rate: f64,
    warmup: f64,
    duration: f64,
    burst: u64,
    server_pid: Option<u32>,
    label: String,
    meta: BTreeMap<String, String>,
    progress: f64,
    max_time: f64,
    sources: usize,
    join_timeout: f64,
    peer_url: Option<String>,
    watch: Vec<(String, u32)>,
    redis: Option<SocketAddr>,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}\nusage: loadgen join|relay|churn --url http://HOST:PORT --proto webrtcroom|chatroom [options] (see the top of bench/loadgen/src/main.rs)");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let scenario = it.next().unwrap_or_else(|| usage("missing scenario"));
    if !["join", "relay", "churn"].contains(&scenario.as_str()) {
        usage(&format!("unknown scenario {scenario:?}"));
    }
    let mut a = Args {
        scenario,
        url: String::new(),
        path: "/socket.io/".into(),
        proto: Proto::WebRtcRoom,
        eio: 0,
        transport: Transport::WebSocket,
        polling_share: 0.0,
        clients: 2000,
        room_size: 4,
        concurrency: 100,
        idle: 5.0,
        pairs: 200,
        window: 8,
        rate: 0.0,
        warmup: 2.0,
        duration: 8.0,
        burst: 20,
        server_pid: None,
        label: String::new(),
        meta: BTreeMap::new(),
        progress: 2.0,
        max_time: 300.0,
        sources: 1,
        join_timeout: 20.0,
        peer_url: None,
        watch: Vec::new(),
        redis: None,
    };
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{k} needs a value")))
        };
        fn num<T: std::str::FromStr>(k: &str, v: String) -> T {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad value for {k}: {v}")))
        }
        match k.as_str() {
            "--url" => a.url = v(),
            "--path" => a.path = v(),
            "--proto" => {
                a.proto = match v().as_str() {
                    "webrtcroom" => Proto::WebRtcRoom,
                    "chatroom" => Proto::Chatroom,
                    o => usage(&format!("unknown protocol {o}")),
                }
            }
            "--eio" => a.eio = num(&k, v()),
            "--transport" => {
                a.transport = match v().as_str() {
                    "websocket" | "ws" => Transport::WebSocket,
                    "polling" => Transport::Polling,
                    o => usage(&format!("unknown transport {o}")),
                }
            }
            "--polling-share" => a.polling_share = num::<f64>(&k, v()).clamp(0.0, 1.0),
            "--clients" => a.clients = num(&k, v()),
            "--room-size" => a.room_size = num(&k, v()),
            "--concurrency" => a.concurrency = num(&k, v()),
            "--idle" => a.idle = num(&k, v()),
            "--pairs" => a.pairs = num(&k, v()),
            "--window" => a.window = num(&k, v()),
            "--rate" => a.rate = num(&k, v()),
            "--warmup" => a.warmup = num(&k, v()),
            "--duration" => a.duration = num(&k, v()),
            "--burst" => a.burst = num(&k, v()),
            "--server-pid" => a.server_pid = Some(num(&k, v())),
            "--label" => a.label = v(),
            "--meta" => {
                let kv = v();
                let (key, val) = kv
                    .split_once('=')
                    .unwrap_or_else(|| usage("--meta wants key=value"));
                a.meta.insert(key.into(), val.into());
            }
            "--progress" => a.progress = num(&k, v()),
            "--max-time" => a.max_time = num(&k, v()),
            "--sources" => a.sources = num(&k, v()),
            "--join-timeout" => a.join_timeout = num(&k, v()),
            "--peer-url" => a.peer_url = Some(v()),
            "--watch-pid" => {
                let kv = v();
                let (name, pid) = kv
                    .split_once('=')
                    .unwrap_or_else(|| usage("--watch-pid wants NAME=PID"));
                a.watch.push((name.into(), num(&k, pid.into())));
            }
            "--redis" => {
                let addr: SocketAddr = num(&k, v());
                if !addr.ip().is_loopback() {
                    usage("--redis: only a loopback redis-server");
                }
                a.redis = Some(addr);
            }
            "-h" | "--help" => usage("help"),
            o => usage(&format!("unknown option {o}")),
        }
    }
    if a.url.is_empty() {
        usage("--url is required");
    }
    if a.eio == 0 {
        a.eio = match a.proto {
            Proto::WebRtcRoom => 3,
            Proto::Chatroom => 4,
        };
    }
    a.concurrency = a.concurrency.max(1);
    a.room_size = a.room_size.max(1);
    a
}

fn target(a: &Args, url: &str) -> Target {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or_else(|| usage("--url must be http://HOST:PORT (TLS is not supported)"));
    let host = rest.trim_end_matches('/').to_string();
    let addr: SocketAddr = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut i| i.next())
        .unwrap_or_else(|| usage(&format!("cannot resolve {host}")));
    if !addr.ip().is_loopback() {
        usage("only loopback targets are allowed");
    }
    let sources = if a.sources > 1 && addr.is_ipv4() {
        (1..=a.sources.min(250))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
            .collect()
    } else {
        Vec::new()
    };
    Target {
        addr,
        host,
        path: a.path.clone(),
        sources,
    }
}

// ---- /proc -------------------------------------------------------------------------------

/// CPU time (user + system) of a process, all threads. Ticks are 1/100 s on Linux.
fn cpu_time(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU time all processes on the machine spent busy (not idle, not waiting for I/O), in
/// seconds, from the first line of /proc/stat.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle) / 100.0)
}

/// CPU time of the kernel's softirq threads (ksoftirqd/N): network processing deferred
/// there is load the benchmark itself causes, not another process's.
fn softirq_threads() -> f64 {
    static PIDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let pids = PIDS.get_or_init(|| {
        let mut v = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.bytes().all(|b| b.is_ascii_digit()) {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{name}/comm")).unwrap_or_default();
                    if comm.starts_with("ksoftirqd/") {
                        v.push(name);
                    }
                }
            }
        }
        v
    });
    pids.iter().filter_map(|p| cpu_time(p)).sum()
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `INFO commandstats` of a loopback redis-server: per command, (calls, µs spent).
/// Commands run inside Lua scripts are counted under their own names too.
fn redis_commandstats(addr: SocketAddr) -> Option<BTreeMap<String, (u64, u64)>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"INFO commandstats\r\n").ok()?;
    // A bulk string: `$<len>\r\n<body>\r\n`.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let body = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(buf.get(1..eol)?).ok()?.parse().ok()?;
            if buf.len() >= eol + 2 + len {
                break String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into_owned();
            }
        }
    };
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let field = |k: &str| -> u64 {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_string(), (field("calls="), field("usec=")));
    }
    Some(out)
}

#[derive(Clone)]
struct Snap {
    at: Instant,
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
    machine: Option<f64>,
    softirq: f64,
    sent: u64,
    received: u64,
    joined: u64,
    /// CPU time of each `--watch-pid` process.
    watched: Vec<Option<f64>>,
    redis: Option<BTreeMap<String, (u64, u64)>>,
}

fn snap(sh: &Shared, a: &Args) -> Snap {
    let redis = a.redis.and_then(redis_commandstats);
    Snap {
        at: Instant::now(),
        server_cpu: a.server_pid.and_then(|p| cpu_time(&p.to_string())),
        own_cpu: cpu_time("self"),
        machine: machine_busy(),
        softirq: softirq_threads(),
        sent: sh.stats.sent.get(),
        received: sh.stats.received.get(),
        joined: sh.stats.joined.get(),
        watched: a
            .watch
            .iter()
            .map(|(_, p)| cpu_time(&p.to_string()))
            .collect(),
        redis,
    }
}

/// What happened between two snapshots, for per-message and per-join costs: CPU seconds of
/// the server and of every watched process, and Redis commands (calls and µs, the `INFO`
/// calls of the snapshots left out).
fn window(a: &Args, s0: &Snap, s1: &Snap) -> Value {
    let d = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| round6(y - x));
    let mut cpu = serde_json::Map::new();
    cpu.insert("server".into(), json!(d(s0.server_cpu, s1.server_cpu)));
    for (i, (name, _)) in a.watch.iter().enumerate() {
        cpu.insert(name.clone(), json!(d(s0.watched[i], s1.watched[i])));
    }
    let redis = match (&s0.redis, &s1.redis) {
        (Some(r0), Some(r1)) => {
            let mut calls = serde_json::Map::new();
            let mut usec = serde_json::Map::new();
            for (name, (c1, u1)) in r1 {
                if name == "info" {
                    continue;
                }
                let (c0, u0) = r0.get(name).copied().unwrap_or((0, 0));
                if c1 > &c0 {
                    calls.insert(name.clone(), json!(c1 - c0));
                    usec.insert(name.clone(), json!(u1.saturating_sub(u0)));
                }
            }
            json!({ "calls": calls, "usec": usec })
        }
        _ => Value::Null,
    };
    json!({
        "s": round6((s1.at - s0.at).as_secs_f64()),
        "sent": s1.sent - s0.sent,
        "received": s1.received - s0.received,
        "joined": s1.joined - s0.joined,
        "cpu_s": cpu,
        "redis": redis,
    })
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn util(a: Option<f64>, b: Option<f64>, wall: f64) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if wall > 0.0 => json!(round3((b - a) / wall)),
        _ => Value::Null,
    }
}

/// Cores used by everything else on the machine between two snapshots (other processes;
/// not the server, the generator or the kernel's softirq threads): a measurement is
/// disturbed when this is well above zero.
fn others(s0: &Snap, s1: &Snap) -> Value {
    let wall = (s1.at - s0.at).as_secs_f64();
    let (Some(m0), Some(m1)) = (s0.machine, s1.machine) else {
        return Value::Null;
    };
    let srv = s0
        .server_cpu
        .zip(s1.server_cpu)
        .map(|(a, b)| b - a)
        .unwrap_or(0.0);
    let own = s0
        .own_cpu
        .zip(s1.own_cpu)
        .map(|(a, b)| b - a)
        .unwrap_or(0.0);
    let watched: f64 = s0
        .watched
        .iter()
        .zip(&s1.watched)
        .filter_map(|(a, b)| a.zip(*b).map(|(a, b)| b - a))
        .sum();
    let own = own + (s1.softirq - s0.softirq) + watched;
    if wall <= 0.0 {
        return Value::Null;
    }
    json!(round3(((m1 - m0) - srv - own).max(0.0) / wall))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn us(ns: u64) -> f64 {
    round3(ns as f64 / 1000.0)
}

fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "count": h.len(),
        "min": us(h.min()),
        "mean": round3(h.mean() / 1000.0),
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
    })
}

/// Latency by quantile, for the chart: [[quantile, µs], ...].
fn curve(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let mut qs: Vec<f64> = (0..18).map(|i| i as f64 * 0.05).collect();
    qs.extend([
        0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.993, 0.995, 0.997, 0.999, 0.9993, 0.9995,
        0.9997, 0.9999, 0.99999, 1.0,
    ]);
    Value::Array(
        qs.into_iter()
            .map(|q| json!([q, us(h.value_at_quantile(q))]))
            .collect(),
    )
}

// ---- scenarios ---------------------------------------------------------------------------

struct Run {
    a: Args,
    sh: Rc<Shared>,
    sem: std::sync::Arc<Semaphore>,
    began: Instant,
    own_cpu0: Option<f64>,
}

impl Run {
    fn spawn(&self, t: Task) -> tokio::task::JoinHandle<()> {
        tokio::task::spawn_local(client::run(self.sh.clone(), t, self.sem.clone()))
    }

    fn progress(&self, what: &str) {
        if self.a.progress <= 0.0 {
            return;
        }
        let st = &self.sh.stats;
        let srv = self
            .a
            .server_pid
            .and_then(|p| rss_kib(&p.to_string()))
            .map(|k| format!(" server_rss={:.1}MiB", k as f64 / 1024.0))
            .unwrap_or_default();
        eprintln!(
            "[{}] {:6.1}s {what}: live={} joined={} sent={} received={} lost_so_far={} errors={}{srv}",
            self.a.label,
            self.began.elapsed().as_secs_f64(),
            st.live.get(),
            st.joined.get(),
            st.sent.get(),
            st.received.get(),
            st.sent.get().saturating_sub(st.received.get()),
            failures(&self.sh),
        );
    }

    /// Sleeps `secs`, printing progress lines.
    async fn wait(&self, secs: f64, what: &str) {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let step = if self.a.progress > 0.0 {
            self.a.progress
        } else {
            secs.max(0.001)
        };
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            tokio::time::sleep((end - now).min(Duration::from_secs_f64(step))).await;
            if Instant::now() < end || secs >= step {
                self.progress(what);
            }
        }
    }

    /// Waits until every client in `idx` joined or failed, up to the join timeout after the
    /// last one could have started.
    async fn await_joins(&self, n: usize) -> bool {
        let limit = Instant::now()
            + Duration::from_secs_f64(self.a.join_timeout)
            + Duration::from_secs_f64(n as f64 / 200.0);
        let mut next_progress = Instant::now() + Duration::from_secs_f64(self.a.progress.max(0.5));
        loop {
            let st = &self.sh.stats;
            if st.joined.get() + failures(&self.sh) >= n as u64 {
                return st.joined.get() == n as u64;
            }
            if Instant::now() > limit {
                return false;
            }
            if self.a.progress > 0.0 && Instant::now() >= next_progress {
                self.progress("joining");
                next_progress += Duration::from_secs_f64(self.a.progress);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn join_figures(&self) -> Value {
        let st = &self.sh.stats;
        let rate = match (st.first_start.get(), st.last_joined.get()) {
            (Some(a), Some(b)) if b > a => {
                json!(round3(st.joined.get() as f64 / (b - a).as_secs_f64()))
            }
            _ => Value::Null,
        };
        json!({
            "joined": st.joined.get(),
            "joins_per_s": rate,
            "latency_us": summary(&st.join_latency.borrow()),
        })
    }

    fn relay_figures(&self, s0: &Snap, s1: &Snap, lost: u64) -> Value {
        let st = &self.sh.stats;
        let dt = (s1.at - s0.at).as_secs_f64();
        let h = st.latency.borrow();
        json!({
            "window_s": round3(dt),
            "delivered_per_s": round3((s1.received - s0.received) as f64 / dt),
            "sent_per_s": round3((s1.sent - s0.sent) as f64 / dt),
            "sent": st.sent.get(),
            "received": st.received.get(),
            "lost": lost,
            "loss_ratio": if st.sent.get() > 0 { json!(lost as f64 / st.sent.get() as f64) } else { Value::Null },
            "reordered": st.reordered.get(),
            "gaps": st.gaps.get(),
            "foreign": st.foreign.get(),
            "latency_us": summary(&h),
            "latency_curve": curve(&h),
            "server_cpu_util": util(s0.server_cpu, s1.server_cpu, dt),
            "loadgen_cpu_util": util(s0.own_cpu, s1.own_cpu, dt),
            "other_cpu_util": others(s0, s1),
        })
    }

    fn common(&self) -> Value {
        let a = &self.a;
        let st = &self.sh.stats;
        let wall = self.began.elapsed().as_secs_f64();
        let own = cpu_time("self");
        json!({
            "loadgen": 1,
            "scenario": a.scenario,
            "label": a.label,
            "meta": a.meta,
            "proto": a.proto.name(),
            "eio": a.eio,
            "transport": match a.transport { Transport::WebSocket => "websocket", Transport::Polling => "polling" },
            "polling_share": a.polling_share,
            "url": a.url,
            "peer_url": a.peer_url,
            "errors": {
                "connect": st.connect_errors.get(),
                "join_timeout": st.join_timeouts.get(),
                "protocol": st.protocol_errors.get(),
                "server_error_events": st.server_errors.get(),
                "closed_early": st.closed_early.get(),
            },
            "wall_s": round3(wall),
            "loadgen_cpu": {
                "cpu_s": own.zip(self.own_cpu0).map(|(b, a)| round3(b - a)),
                "util": util(self.own_cpu0, own, wall),
                "max_rss_kib": rss_kib("self"),
            },
        })
    }
}

fn failures(sh: &Shared) -> u64 {
    let st = &sh.stats;
    st.connect_errors.get()
        + st.join_timeouts.get()
        + st.protocol_errors.get()
        + st.closed_early.get()
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

async fn scenario_join(r: &Run) -> Value {
    let a = &r.a;
    let pid = a.server_pid.map(|p| p.to_string());
    let rss0 = pid.as_deref().and_then(rss_kib);
    let s0 = snap(&r.sh, a);
    let mut handles = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let idx = r.sh.alloc();
        handles.push(r.spawn(Task {
            idx,
            peer: None,
            room: format!("{}-r{}", r.sh.cfg.tag, i / a.room_size),
            burst: None,
            n: i,
        }));
    }
    let all = r.await_joins(a.clients).await;
    let s1 = snap(&r.sh, a);
    let join_wall = (s1.at - s0.at).as_secs_f64();
    r.progress("joined");
    r.wait(a.idle, "idle").await;
    let rss1 = pid.as_deref().and_then(rss_kib);
    let joined = r.sh.stats.joined.get();
    let per_client = match (rss0, rss1) {
        (Some(b), Some(e)) if joined > 0 => json!(round3((e as f64 - b as f64) / joined as f64)),
        _ => Value::Null,
    };
    let out = json!({
        "params": { "clients": a.clients, "room_size": a.room_size, "concurrency": a.concurrency, "idle_s": a.idle },
        "complete": all,
        "join": r.join_figures(),
        "server": {
            "pid": a.server_pid,
            "rss_kib_before": rss0,
            "rss_kib_after": rss1,
            "rss_per_client_kib": per_client,
            "cpu_util_joining": util(s0.server_cpu, s1.server_cpu, join_wall),
            "other_cpu_util_joining": others(&s0, &s1),
        },
        "window": window(a, &s0, &s1),
    });
    r.sh.phase.send_replace(Phase::Done);
    out
}

async fn scenario_relay(r: &Run) -> Value {
    let a = &r.a;
    let n = a.pairs * 2;
    let pid = a.server_pid.map(|p| p.to_string());
    let rss0 = pid.as_deref().and_then(rss_kib);
    let mut idx = Vec::with_capacity(n);
    for _ in 0..n {
        idx.push(r.sh.alloc());
    }
    for i in 0..n {
        r.spawn(Task {
            idx: idx[i],
            peer: Some(idx[i ^ 1]),
            room: format!("{}-p{}", r.sh.cfg.tag, i / 2),
            burst: None,
            n: i,
        });
    }
    let all = r.await_joins(n).await;
    r.progress("joined");
    r.sh.phase.send_replace(Phase::Run);
    r.wait(a.warmup, "warmup").await;
    let s0 = snap(&r.sh, a);
    r.sh.stats.window_from.set(r.sh.ns(s0.at));
    r.wait(a.duration, "measuring").await;
    let s1 = snap(&r.sh, a);
    r.sh.stats.window_to.set(r.sh.ns(s1.at));
    r.sh.phase.send_replace(Phase::Drain);
    // In-flight messages still count; what has not arrived after the drain is lost.
    let drain_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_end && r.sh.stats.received.get() < r.sh.stats.sent.get() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = &r.sh.stats;
    let lost = st.sent.get().saturating_sub(st.received.get());
    let rss1 = pid.as_deref().and_then(rss_kib);
    let out = json!({
        "params": {
            "pairs": a.pairs,
            "mode": match r.sh.cfg.load { Load::Closed { .. } => "closed", Load::Open { .. } => "open" },
            "window": match r.sh.cfg.load { Load::Closed { window } => json!(window), _ => Value::Null },
            "rate": if a.rate > 0.0 { json!(a.rate) } else { Value::Null },
            "warmup_s": a.warmup, "duration_s": a.duration, "concurrency": a.concurrency,
        },
        "complete": all,
        "join": r.join_figures(),
        "relay": r.relay_figures(&s0, &s1, lost),
        "window": window(a, &s0, &s1),
        "server": { "pid": a.server_pid, "rss_kib_before": rss0, "rss_kib_after": rss1 },
    });
    r.sh.phase.send_replace(Phase::Done);
    out
}

async fn scenario_churn(r: &Run) -> Value {
    let a = &r.a;
    let pid = a.server_pid.map(|p| p.to_string());
    let rss0 = pid.as_deref().and_then(rss_kib);
    let max_rss = Rc::new(std::cell::Cell::new(rss0.unwrap_or(0)));
    r.sh.phase.send_replace(Phase::Run);
    let s0 = snap(&r.sh, a);
    r.sh.stats.window_from.set(0);
    let counter = Rc::new(std::cell::Cell::new(0usize));
    let mut slots = Vec::new();
    for slot in 0..a.pairs {
        let sh = r.sh.clone();
        let sem = r.sem.clone();
        let counter = counter.clone();
        let burst = a.burst;
        slots.push(tokio::task::spawn_local(async move {
            let mut rx = sh.phase.subscribe();
            let mut cycle = 0u64;
            while *rx.borrow_and_update() == Phase::Run {
                let (x, y) = (sh.alloc(), sh.alloc());
                let n = counter.get();
                counter.set(n + 2);
                let room = format!("{}-s{slot}c{cycle}", sh.cfg.tag);
                let hx = tokio::task::spawn_local(client::run(
                    sh.clone(),
                    Task {
                        idx: x,
                        peer: Some(y),
                        room: room.clone(),
                        burst: Some(burst),
                        n,
                    },
                    sem.clone(),
                ));
                let hy = tokio::task::spawn_local(client::run(
                    sh.clone(),
                    Task {
                        idx: y,
                        peer: Some(x),
                        room,
                        burst: Some(burst),
                        n: n + 1,
                    },
                    sem.clone(),
                ));
                let _ = hx.await;
                let _ = hy.await;
                sh.release(x);
                sh.release(y);
                cycle += 1;
            }
        }));
    }
    let end = Instant::now() + Duration::from_secs_f64(a.duration);
    let step = Duration::from_secs_f64(if a.progress > 0.0 { a.progress } else { 1.0 });
    while Instant::now() < end {
        tokio::time::sleep(step.min(end - Instant::now())).await;
        if let Some(k) = pid.as_deref().and_then(rss_kib) {
            max_rss.set(max_rss.get().max(k));
        }
        r.progress("churn");
    }
    let s1 = snap(&r.sh, a);
    let cycles_in_window = r.sh.stats.cycles.get();
    r.sh.phase.send_replace(Phase::Drain);
    // Let the cycles under way finish (bounded by the clients' own timeouts).
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        for s in slots {
            let _ = s.await;
        }
    })
    .await
    .is_ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = pid.as_deref().and_then(rss_kib);
    let st = &r.sh.stats;
    let lost = st.sent.get().saturating_sub(st.received.get());
    let dt = (s1.at - s0.at).as_secs_f64();
    let h = st.latency.borrow();
    let out = json!({
        "params": { "pairs": a.pairs, "burst": a.burst, "duration_s": a.duration },
        "complete": drained,
        "churn": {
            "cycles": st.cycles.get() / 2,
            "cycles_per_s": round3(cycles_in_window as f64 / 2.0 / dt),
            "connections_per_s": round3(cycles_in_window as f64 / dt),
            "sent": st.sent.get(),
            "received": st.received.get(),
            "lost": lost,
            "reordered": st.reordered.get(),
            "latency_us": summary(&h),
            "server_cpu_util": util(s0.server_cpu, s1.server_cpu, dt),
            "loadgen_cpu_util": util(s0.own_cpu, s1.own_cpu, dt),
            "other_cpu_util": others(&s0, &s1),
        },
        "join": r.join_figures(),
        "server": { "pid": a.server_pid, "rss_kib_before": rss0, "rss_kib_after": rss1, "rss_kib_max": max_rss.get() },
    });
    drop(h);
    r.sh.phase.send_replace(Phase::Done);
    out
}

fn main() {
    let a = parse_args();
    let load = if a.rate > 0.0 {
        let per_client = a.rate / (a.pairs.max(1) * 2) as f64;
        Load::Open {
            interval: Duration::from_secs_f64(1.0 / per_client),
        }
    } else {
        Load::Closed { window: a.window }
    };
    let tag = format!(
        "b{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 100_000_000)
            .unwrap_or(0)
    );
    let cfg = Cfg {
        target: target(&a, &a.url),
        peer_target: a.peer_url.as_deref().map(|u| target(&a, u)),
        proto: a.proto,
        eio: a.eio,
        transport: a.transport,
        polling_share: a.polling_share,
        load,
        join_timeout: Duration::from_secs_f64(a.join_timeout),
        tag,
    };
    let permits = if a.scenario == "churn" {
        a.pairs * 2
    } else {
        a.concurrency
    };
    let run = Run {
        sh: Shared::new(cfg),
        sem: std::sync::Arc::new(Semaphore::new(permits.max(1))),
        began: Instant::now(),
        own_cpu0: cpu_time("self"),
        a,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let max_time = Duration::from_secs_f64(run.a.max_time);
    let result = local.block_on(&rt, async {
        let body = async {
            match run.a.scenario.as_str() {
                "join" => scenario_join(&run).await,
                "relay" => scenario_relay(&run).await,
                _ => scenario_churn(&run).await,
            }
        };
        match tokio::time::timeout(max_time, body).await {
            Ok(v) => v,
            Err(_) => json!({ "error": format!("gave up after --max-time {}s", run.a.max_time), "join": run.join_figures() }),
        }
    });
    let line = merge(run.common(), result);
    println!("{line}");
    // Exit without tearing down thousands of connections one by one.
    std::process::exit(0);
}
