//! One simulated client: Engine.IO/Socket.IO handshake, the protocol's join, and the relay
//! traffic, as a state machine driven by its connection, its timers and the run's phase.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::conn::{push_u64, Conn, Out, Target, Transport};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    WebRtcRoom,
    Chatroom,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::WebRtcRoom => "webrtcroom",
            Proto::Chatroom => "chatroom",
        }
    }
}

/// What the whole run is doing; every client follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting and joining.
    Setup,
    /// Relay traffic flows (churn: new cycles start).
    Run,
    /// No new messages; in-flight ones are still counted.
    Drain,
    /// Close everything.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Each client keeps `window` messages in flight toward its partner: it starts with
    /// `window` and sends one more for every message it receives.
    Closed { window: u32 },
    /// Each client sends one message every `interval`.
    Open { interval: Duration },
}

/// Settings shared by every client of a run.
pub struct Cfg {
    pub target: Target,
    /// Where the odd-numbered clients connect (the second client of every relay pair, every
    /// second member of a room), when set: e.g. another node of a cluster. `None`: `target`.
    pub peer_target: Option<Target>,
    pub proto: Proto,
    pub eio: u8,
    pub transport: Transport,
    /// Share of the clients (0.0–1.0, spread evenly by client number) that use HTTP
    /// long-polling whatever `transport` says: mixed populations, e.g. half on polling.
    pub polling_share: f64,
    pub load: Load,
    pub join_timeout: Duration,
    /// Prefix making room and user names unique to this run.
    pub tag: String,
}

impl Cfg {
    /// The server client number `n` connects to: odd numbers go to `peer_target` when set.
    pub fn target_for(&self, n: usize) -> &Target {
        match &self.peer_target {
            Some(t) if n % 2 == 1 => t,
            _ => &self.target,
        }
    }

    /// The transport of client number `n`: with a polling share s, client n polls when
    /// ⌊(n+1)·s⌋ > ⌊n·s⌋, so any prefix of the clients has its share of pollers (s = 0.5:
    /// every second client).
    pub fn transport_for(&self, n: usize) -> Transport {
        let s = self.polling_share;
        if s > 0.0 && ((n + 1) as f64 * s).floor() > (n as f64 * s).floor() {
            Transport::Polling
        } else {
            self.transport
        }
    }
}

/// Counters and histograms of a run (single-threaded: cells).
pub struct Stats {
    pub connect_errors: Cell<u64>,
    pub join_timeouts: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub server_errors: Cell<u64>,
    pub closed_early: Cell<u64>,
    pub joined: Cell<u64>,
    pub first_start: Cell<Option<Instant>>,
    pub last_joined: Cell<Option<Instant>>,
    pub join_latency: RefCell<Histogram<u64>>,
    pub sent: Cell<u64>,
    pub received: Cell<u64>,
    pub reordered: Cell<u64>,
    pub gaps: Cell<u64>,
    pub foreign: Cell<u64>,
    pub latency: RefCell<Histogram<u64>>,
    /// Latency is recorded only for messages stamped inside [from, to) (ns since start).
    pub window_from: Cell<u64>,
    pub window_to: Cell<u64>,
    pub in_window: Cell<u64>,
    pub cycles: Cell<u64>,
    pub live: Cell<u64>,
}

impl Stats {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds");
        Stats {
            connect_errors: Cell::new(0),
            join_timeouts: Cell::new(0),
            protocol_errors: Cell::new(0),
            server_errors: Cell::new(0),
            closed_early: Cell::new(0),
            joined: Cell::new(0),
            first_start: Cell::new(None),
            last_joined: Cell::new(None),
            join_latency: RefCell::new(h()),
            sent: Cell::new(0),
            received: Cell::new(0),
            reordered: Cell::new(0),
            gaps: Cell::new(0),
            foreign: Cell::new(0),
            latency: RefCell::new(h()),
            window_from: Cell::new(0),
            window_to: Cell::new(u64::MAX),
            in_window: Cell::new(0),
            cycles: Cell::new(0),
            live: Cell::new(0),
        }
    }
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// A client's entry in the run's directory.
#[derive(Default)]
struct Slot {
    /// The id the protocol addresses this client by (WebRtcRoom: `created.id`; chatroom: the
    /// Socket.IO sid).
    id: Option<Rc<str>>,
    joined: bool,
    confirmed_at: Option<Instant>,
    burst_done: bool,
    notify: Rc<Notify>,
}

/// Everything the clients of one run share.
pub struct Shared {
    pub cfg: Cfg,
    pub start: Instant,
    pub stats: Stats,
    pub phase: watch::Sender<Phase>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    by_sid: RefCell<HashMap<Rc<str>, usize>>,
    seq_key: Finder<'static>,
    ts_key: Finder<'static>,
    id_key: Finder<'static>,
}

impl Shared {
    pub fn new(cfg: Cfg) -> Rc<Self> {
        let (phase, _) = watch::channel(Phase::Setup);
        Rc::new(Shared {
            cfg,
            start: Instant::now(),
            stats: Stats::new(),
            phase,
            slots: RefCell::default(),
            free: RefCell::default(),
            by_sid: RefCell::default(),
            seq_key: Finder::new(b"\"seq\":").into_owned(),
            ts_key: Finder::new(b"\"ts\":").into_owned(),
            id_key: Finder::new(b"\"memberId\":\"").into_owned(),
        })
    }

    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Allocates `n` consecutive-in-meaning client slots (reusing freed ones).
    pub fn alloc(&self) -> usize {
        if let Some(i) = self.free.borrow_mut().pop() {
            self.slots.borrow_mut()[i] = Slot::default();
            return i;
        }
        let mut s = self.slots.borrow_mut();
        s.push(Slot::default());
        s.len() - 1
    }

    pub fn release(&self, i: usize) {
        let id = self.slots.borrow_mut()[i].id.take();
        if let Some(id) = id {
            self.by_sid.borrow_mut().remove(&id);
        }
        self.free.borrow_mut().push(i);
    }

    fn set_id(&self, i: usize, id: Rc<str>) {
        self.by_sid.borrow_mut().insert(id.clone(), i);
        self.slots.borrow_mut()[i].id = Some(id);
    }

    fn id(&self, i: usize) -> Option<Rc<str>> {
        self.slots.borrow()[i].id.clone()
    }

    fn notify(&self, i: usize) -> Rc<Notify> {
        self.slots.borrow()[i].notify.clone()
    }

    /// Marks client `i` as a member of its room (first time only), waking it.
    fn confirm(&self, i: usize, at: Instant) {
        let n = {
            let mut s = self.slots.borrow_mut();
            if s[i].confirmed_at.is_some() {
                return;
            }
            s[i].confirmed_at = Some(at);
            s[i].notify.clone()
        };
        n.notify_one();
    }

    fn is_joined(&self, i: usize) -> bool {
        self.slots.borrow()[i].joined
    }

    fn burst_done(&self, i: usize) -> bool {
        self.slots.borrow()[i].burst_done
    }
}

/// What one client is asked to do.
pub struct Task {
    pub idx: usize,
    /// The partner it relays to, if any.
    pub peer: Option<usize>,
    pub room: String,
    /// Churn: messages to send to the partner, after which the client leaves.
    pub burst: Option<u64>,
    /// Connection number (spreads source addresses).
    pub n: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Handshake,
    Joining,
    Member,
    Leaving,
}

struct Client {
    sh: Rc<Shared>,
    t: Task,
    stage: Stage,
    eio_sid: Option<String>,
    ping_every: Option<Duration>,
    next_ping: Option<Instant>,
    started: Instant,
    /// Sending is on (phase Run, partner known).
    sending: bool,
    msg_prefix: Vec<u8>,
    scratch: Vec<u8>,
    seq: u64,
    expect: u64,
    got: u64,
    next_send: Option<Instant>,
    /// Churn: leave by then even if part of the burst never arrived.
    leave_by: Option<Instant>,
    error: bool,
    permit: Option<OwnedSemaphorePermit>,
}

/// How long a churn cycle waits for its burst before leaving anyway.
const BURST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one client until the run ends (or, under churn, until it has left).
pub async fn run(sh: Rc<Shared>, t: Task, sem: std::sync::Arc<Semaphore>) {
    let permit = sem.acquire_owned().await.ok();
    let started = Instant::now();
    if sh.stats.first_start.get().is_none() {
        sh.stats.first_start.set(Some(started));
    }
    bump_live(&sh, 1);
    let cfg = &sh.cfg;
    let conn = tokio::time::timeout(
        cfg.join_timeout,
        Conn::connect(cfg.target_for(t.n), cfg.transport_for(t.n), cfg.eio, t.n),
    )
    .await;
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if sh.stats.connect_errors.get() < 3 {
                eprintln!("loadgen: connect: {e}");
            }
            bump(&sh.stats.connect_errors);
            bump_live(&sh, -1);
            return;
        }
        Err(_) => {
            bump(&sh.stats.join_timeouts);
            bump_live(&sh, -1);
            return;
        }
    };
    let mut c = Client {
        sh: sh.clone(),
        t,
        stage: Stage::Handshake,
        eio_sid: None,
        ping_every: None,
        next_ping: None,
        started,
        sending: false,
        msg_prefix: Vec::new(),
        scratch: Vec::with_capacity(512),
        seq: 0,
        expect: 0,
        got: 0,
        next_send: None,
        leave_by: None,
        error: false,
        permit,
    };
    c.drive(&mut conn).await;
    bump_live(&sh, -1);
    if c.stage == Stage::Leaving || *sh.phase.borrow() == Phase::Done {
        conn.close().await;
    }
}

fn bump_live(sh: &Shared, d: i64) {
    sh.stats.live.set((sh.stats.live.get() as i64 + d) as u64);
}

impl Client {
    async fn drive(&mut self, conn: &mut Conn) {
        let sh = self.sh.clone();
        let mut phase_rx = sh.phase.subscribe();
        let notify = sh.notify(self.t.idx);
        let mut out = conn.out();
        let join_deadline = self.started + sh.cfg.join_timeout;
        let sleep = tokio::time::sleep_until(join_deadline.into());
        tokio::pin!(sleep);
        let mut armed = join_deadline;
        // Frames that arrived together with the handshake response are already buffered.
        {
            let now = Instant::now();
            let now_ns = sh.ns(now);
            let phase = *phase_rx.borrow();
            let mut handler = |p: &[u8], out: &mut Out| self.on_packet(p, out, now, now_ns, phase);
            if let Err(e) = conn.drain(&mut out, &mut handler) {
                self.fail(&format!("frame: {e}"));
                return;
            }
        }
        loop {
            // Everything the phase, the directory and the timers ask for now.
            let now = Instant::now();
            let phase = *phase_rx.borrow_and_update();
            if phase == Phase::Done {
                return;
            }
            self.tick(now, phase, &mut out);
            if let Err(e) = conn.flush(&mut out).await {
                self.fail(&format!("write: {e}"));
            }
            if self.error || self.stage == Stage::Leaving {
                return;
            }
            let deadline = self.deadline(join_deadline);
            if deadline != armed {
                sleep.as_mut().reset(deadline.into());
                armed = deadline;
            }
            tokio::select! {
                r = conn.readable() => {
                    match r {
                        Ok(true) => {}
                        Ok(false) => { self.closed(); return; }
                        Err(e) => { self.fail(&format!("read: {e}")); return; }
                    }
                    let now = Instant::now();
                    let now_ns = sh.ns(now);
                    let phase = *phase_rx.borrow();
                    let mut handler = |p: &[u8], out: &mut Out| self.on_packet(p, out, now, now_ns, phase);
                    match conn.drain(&mut out, &mut handler) {
                        Ok(true) => {}
                        Ok(false) => { self.closed(); return; }
                        Err(e) => { self.fail(&format!("frame: {e}")); return; }
                    }
                }
                r = phase_rx.changed() => { if r.is_err() { return; } }
                _ = notify.notified() => {}
                _ = &mut sleep => {}
            }
        }
    }

    fn deadline(&self, join_deadline: Instant) -> Instant {
        let far = self.started + Duration::from_secs(100_000); // fixed: no re-arming per batch
        let mut d = if self.stage == Stage::Member {
            far
        } else {
            join_deadline
        };
        if let Some(p) = self.next_ping {
            d = d.min(p);
        }
        if self.sending {
            if let Some(s) = self.next_send {
                d = d.min(s);
            }
        }
        if let Some(l) = self.leave_by {
            d = d.min(l);
        }
        d
    }

    fn fail(&mut self, what: &str) {
        if !self.error {
            if self.sh.stats.protocol_errors.get() < 3 {
                eprintln!("loadgen: client {}: {what}", self.t.idx);
            }
            bump(&self.sh.stats.protocol_errors);
        }
        self.error = true;
    }

    fn closed(&mut self) {
        if *self.sh.phase.borrow() != Phase::Done {
            bump(&self.sh.stats.closed_early);
        }
    }

    /// Work that depends on time, the phase or the directory rather than on input.
    fn tick(&mut self, now: Instant, phase: Phase, out: &mut Out) {
        let sh = self.sh.clone();
        if self.stage != Stage::Member && now >= self.started + sh.cfg.join_timeout {
            bump(&sh.stats.join_timeouts);
            self.error = true;
            return;
        }
        if let (Some(p), Some(every)) = (self.next_ping, self.ping_every) {
            if now >= p {
                out.packet(b"2");
                self.next_ping = Some(now + every);
            }
        }
        if self.stage == Stage::Joining {
            // Chatroom has no join acknowledgement: others may have seen us.
            let at = sh.slots.borrow()[self.t.idx].confirmed_at;
            if let Some(at) = at {
                self.joined(at);
            }
        }
        if self.stage != Stage::Member {
            return;
        }
        let want_send = match self.t.burst {
            Some(_) => true,
            None => phase == Phase::Run,
        };
        if want_send && !self.sending {
            self.start_sending(now, out);
        } else if !want_send && self.sending {
            self.sending = false;
        }
        if self.sending {
            if let Load::Open { interval } = sh.cfg.load {
                if self.t.burst.is_none() {
                    let ns = sh.ns(now);
                    while let Some(at) = self.next_send {
                        if at > now {
                            break;
                        }
                        self.send_one(out, ns);
                        self.next_send = Some(at + interval);
                    }
                }
            }
        }
        if let Some(b) = self.t.burst {
            // Churn: leave once both directions of the burst are through.
            let peer_done = self.t.peer.is_none_or(|p| sh.burst_done(p));
            let late = self.leave_by.is_some_and(|l| now >= l);
            if (self.got >= b && peer_done) || late {
                self.leave(out);
            }
        }
    }

    fn start_sending(&mut self, now: Instant, out: &mut Out) {
        let sh = self.sh.clone();
        let Some(peer) = self.t.peer else { return };
        if !sh.is_joined(peer) {
            return; // woken again when it joins
        }
        let Some(peer_id) = sh.id(peer) else { return };
        let Some(me) = sh.id(self.t.idx) else { return };
        self.msg_prefix = build_prefix(sh.cfg.proto, &me, &peer_id, &self.t.room, peer);
        self.sending = true;
        let ns = sh.ns(now);
        if let Some(b) = self.t.burst {
            for _ in 0..b {
                self.send_one(out, ns);
            }
            return;
        }
        match sh.cfg.load {
            Load::Closed { window } => {
                for _ in 0..window {
                    self.send_one(out, ns);
                }
            }
            Load::Open { interval } => {
                // Spread the clients' schedules over one interval.
                let k = (self.t.idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                let offset = interval.mul_f64((k % 1_000_000) as f64 / 1_000_000.0);
                self.next_send = Some(now + offset);
            }
        }
    }

    fn send_one(&mut self, out: &mut Out, ns: u64) {
        let b = &mut self.scratch;
        b.clear();
        b.extend_from_slice(&self.msg_prefix);
        push_u64(b, self.seq);
        b.extend_from_slice(b",\"ts\":");
        push_u64(b, ns);
        b.extend_from_slice(b"}}]");
        out.packet(b);
        self.seq += 1;
        bump(&self.sh.stats.sent);
    }

    fn leave(&mut self, out: &mut Out) {
        let sh = &self.sh;
        let me = sh.id(self.t.idx).unwrap_or_else(|| "".into());
        let b = &mut self.scratch;
        b.clear();
        match sh.cfg.proto {
            Proto::WebRtcRoom => {
                b.extend_from_slice(b"42[\"exit\",{\"from\":\"");
                b.extend_from_slice(me.as_bytes());
                b.extend_from_slice(b"\",\"room\":\"");
                b.extend_from_slice(self.t.room.as_bytes());
                b.extend_from_slice(b"\"}]");
            }
            Proto::Chatroom => {
                b.extend_from_slice(b"42[\"leave\",[");
                if let Some(peer) = self.t.peer.and_then(|p| sh.id(p)) {
                    b.extend_from_slice(b"{\"remoteConnectorId\":\"c");
                    push_u64(b, self.t.peer.unwrap_or(0) as u64);
                    b.extend_from_slice(b"\",\"memberId\":\"");
                    b.extend_from_slice(peer.as_bytes());
                    b.extend_from_slice(b"\"}");
                }
                b.extend_from_slice(b"]]");
            }
        }
        out.packet(b);
        self.stage = Stage::Leaving;
        bump(&sh.stats.cycles);
    }

    fn joined(&mut self, at: Instant) {
        let sh = self.sh.clone();
        self.stage = Stage::Member;
        {
            let mut slots = sh.slots.borrow_mut();
            slots[self.t.idx].joined = true;
            slots[self.t.idx].confirmed_at.get_or_insert(at);
        }
        let lat = at.saturating_duration_since(self.started).as_nanos() as u64;
        let _ = sh.stats.join_latency.borrow_mut().record(lat.max(1));
        bump(&sh.stats.joined);
        let last = sh.stats.last_joined.get();
        if last.is_none_or(|l| at > l) {
            sh.stats.last_joined.set(Some(at));
        }
        self.permit = None;
        if self.t.burst.is_some() {
            self.leave_by = Some(at + BURST_TIMEOUT);
        }
        // The partner may be waiting for us before it starts sending.
        if let Some(p) = self.t.peer {
            sh.notify(p).notify_one();
        }
    }

    fn send_join(&mut self, out: &mut Out) {
        let b = &mut self.scratch;
        b.clear();
        match self.sh.cfg.proto {
            Proto::WebRtcRoom => {
                b.extend_from_slice(b"42[\"createAndJoinRoom\",{\"room\":\"");
                b.extend_from_slice(self.t.room.as_bytes());
                b.extend_from_slice(b"\"}]");
            }
            Proto::Chatroom => {
                let user = format!("{}-u{}", self.sh.cfg.tag, self.t.n);
                b.extend_from_slice(b"42[\"join\",{\"id\":\"");
                b.extend_from_slice(user.as_bytes());
                b.extend_from_slice(b"\",\"username\":\"");
                b.extend_from_slice(user.as_bytes());
                b.extend_from_slice(b"\",\"roomname\":\"");
                b.extend_from_slice(self.t.room.as_bytes());
                b.extend_from_slice(b"\"}]");
            }
        }
        out.packet(b);
        self.stage = Stage::Joining;
    }

    fn on_packet(&mut self, p: &[u8], out: &mut Out, now: Instant, now_ns: u64, phase: Phase) {
        let Some(&kind) = p.first() else { return };
        match kind {
            b'4' => match p.get(1) {
                Some(b'2') => self.on_event(&p[2..], out, now, now_ns, phase),
                Some(b'0') => self.on_connect(&p[2..], out),
                Some(b'4') => {
                    bump(&self.sh.stats.server_errors);
                    self.fail(&format!("connect error: {}", String::from_utf8_lossy(p)));
                }
                _ => {}
            },
            // v4: the server pings, the client answers.
            b'2' if self.sh.cfg.eio >= 4 => out.packet(b"3"),
            b'0' => self.on_open(&p[1..], out),
            _ => {}
        }
    }

    fn on_open(&mut self, json: &[u8], out: &mut Out) {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Open {
            sid: String,
            #[serde(default)]
            ping_interval: Option<u64>,
        }
        let Ok(open) = serde_json::from_slice::<Open>(json) else {
            self.fail("bad open packet");
            return;
        };
        self.eio_sid = Some(open.sid);
        if self.sh.cfg.eio == 3 {
            // v3: the client pings.
            let every = Duration::from_millis(open.ping_interval.unwrap_or(25_000));
            self.ping_every = Some(every);
            self.next_ping = Some(Instant::now() + every);
        } else {
            out.packet(b"40");
        }
    }

    fn on_connect(&mut self, json: &[u8], out: &mut Out) {
        if self.stage != Stage::Handshake {
            return;
        }
        // v4 (Socket.IO 5): `40{"sid":"..."}`; v3: `40` and the socket id is the engine sid.
        #[derive(serde::Deserialize)]
        struct Ack {
            sid: String,
        }
        let sid = serde_json::from_slice::<Ack>(json)
            .ok()
            .map(|a| a.sid)
            .or_else(|| self.eio_sid.clone());
        let Some(sid) = sid else {
            self.fail("no socket id");
            return;
        };
        if self.sh.cfg.proto == Proto::Chatroom {
            self.sh.set_id(self.t.idx, sid.into());
        }
        self.send_join(out);
    }

    fn on_event(&mut self, body: &[u8], out: &mut Out, now: Instant, now_ns: u64, phase: Phase) {
        // body: ["name",payload...]
        let Some(rest) = body.strip_prefix(b"[\"") else {
            return;
        };
        let Some(q) = memchr::memchr(b'"', rest) else {
            return;
        };
        let name = &rest[..q];
        let payload = &rest[q + 1..];
        match (self.sh.cfg.proto, name) {
            (Proto::WebRtcRoom, b"candidate") | (Proto::Chatroom, b"icecandidate") => {
                self.on_relayed(payload, out, now_ns, phase)
            }
            (Proto::WebRtcRoom, b"created") => {
                if self.stage != Stage::Joining {
                    return;
                }
                #[derive(serde::Deserialize)]
                struct Created {
                    id: String,
                }
                let json = payload.strip_prefix(b",").unwrap_or(payload);
                let json = json.strip_suffix(b"]").unwrap_or(json);
                match serde_json::from_slice::<Created>(json) {
                    Ok(c) => {
                        self.sh.set_id(self.t.idx, c.id.into());
                        self.joined(now);
                    }
                    Err(e) => self.fail(&format!("bad created: {e}")),
                }
            }
            (Proto::Chatroom, b"getOffer") => {
                // We are in the room; and so is the member named.
                self.sh.confirm(self.t.idx, now);
                if let Some(i) = self.sh.id_key.find(payload) {
                    let v = &payload[i + 12..];
                    if let Some(e) = memchr::memchr(b'"', v) {
                        let sid = String::from_utf8_lossy(&v[..e]);
                        let other = self.sh.by_sid.borrow().get(sid.as_ref()).copied();
                        if let Some(o) = other {
                            self.sh.confirm(o, now);
                        }
                    }
                }
                if self.stage == Stage::Joining {
                    self.joined(now);
                }
            }
            (Proto::Chatroom, b"error") => {
                bump(&self.sh.stats.server_errors);
                if self.sh.stats.server_errors.get() <= 3 {
                    eprintln!(
                        "loadgen: server error event: {}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
            _ => {}
        }
    }

    fn on_relayed(&mut self, payload: &[u8], out: &mut Out, now_ns: u64, phase: Phase) {
        let sh = self.sh.clone();
        let sh = &*sh;
        let (Some(seq), Some(ts)) = (
            field_u64(&sh.seq_key, payload),
            field_u64(&sh.ts_key, payload),
        ) else {
            bump(&sh.stats.foreign);
            return;
        };
        let st = &sh.stats;
        bump(&st.received);
        if ts >= st.window_from.get() && ts < st.window_to.get() {
            let _ = st
                .latency
                .borrow_mut()
                .record(now_ns.saturating_sub(ts).max(1));
            bump(&st.in_window);
        }
        if seq == self.expect {
            self.expect += 1;
        } else if seq > self.expect {
            st.gaps.set(st.gaps.get() + (seq - self.expect));
            self.expect = seq + 1;
        } else {
            bump(&st.reordered);
        }
        self.got += 1;
        if self.sending && phase == Phase::Run && self.t.burst.is_none() {
            if let Load::Closed { .. } = sh.cfg.load {
                self.send_one(out, now_ns);
            }
        }
        if let Some(b) = self.t.burst {
            if self.got == b {
                sh.slots.borrow_mut()[self.t.idx].burst_done = true;
                if let Some(p) = self.t.peer {
                    sh.notify(p).notify_one();
                }
                sh.notify(self.t.idx).notify_one();
            }
        }
    }
}

fn field_u64(key: &Finder<'_>, hay: &[u8]) -> Option<u64> {
    let i = key.find(hay)? + key.needle().len();
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &hay[i..] {
        if !b.is_ascii_digit() {
            break;
        }
        v = v * 10 + (b - b'0') as u64;
        any = true;
    }
    any.then_some(v)
}

/// A relayed message up to its sequence number; `seq`, `,"ts":`, `ts` and `}}]` follow.
/// A realistic trickled ICE candidate (~280 bytes on the wire), with the two numbers last.
fn build_prefix(proto: Proto, me: &str, peer: &str, room: &str, peer_idx: usize) -> Vec<u8> {
    const CAND: &str = "candidate:842163049 1 udp 1677729535 198.51.100.23 51234 typ srflx raddr 192.168.1.20 rport 51234 generation 0 ufrag 7bTx network-cost 999";
    match proto {
        Proto::WebRtcRoom => format!(
            "42[\"candidate\",{{\"from\":\"{me}\",\"to\":\"{peer}\",\"room\":\"{room}\",\"candidate\":{{\"sdpMid\":\"0\",\"sdpMLineIndex\":0,\"sdp\":\"{CAND}\",\"seq\":"
        ),
        Proto::Chatroom => format!(
            "42[\"icecandidate\",{{\"remoteConnectorId\":\"c{peer_idx}\",\"memberId\":\"{peer}\",\"candidate\":{{\"candidate\":\"{CAND}\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0,\"usernameFragment\":\"7bTx\",\"seq\":"
        ),
    }
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_after_keys() {
        let f = Finder::new(b"\"seq\":");
        assert_eq!(field_u64(&f, br#"{"a":1,"seq":12345,"ts":9}"#), Some(12345));
        assert_eq!(field_u64(&f, br#"{"a":1}"#), None);
    }
}
