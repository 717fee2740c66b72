//! Per-protocol and per-connection limits, enforced before an adapter sees an event.
//!
//! Every protocol gets the same protection without knowing about it: a cap on open
//! connections, a cap on event size, and a token bucket per connection that refuses
//! messages beyond a sustained rate plus a burst, closing a connection that keeps going.
//! A receiver that keeps missing messages because it does not read, or that would pin more
//! than its byte budget, is closed too.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use socketioxide::extract::SocketRef;

use super::budget::SendWindow;
use crate::config::Limits;

/// A protocol's limits and its count of open connections.
pub struct Gate {
    limits: Limits,
    open: AtomicUsize,
    /// Messages a connection's send buffer holds (`engine.send_buffer`): the window over which
    /// a receiver's byte budget is counted.
    send_buffer: usize,
}

/// The outcome of asking to open a connection.
pub enum Admission {
    /// Welcome; here is the connection's own state.
    Admitted(Arc<ConnState>),
    /// Already at the maximum.
    Full(usize),
}

impl Gate {
    /// A gate with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: AtomicUsize::new(0),
            send_buffer: crate::config::EngineConfig::default().send_buffer,
        }
    }

    /// The same gate, for connections whose send buffer holds `messages` messages.
    pub fn with_send_buffer(mut self, messages: usize) -> Self {
        self.send_buffer = messages;
        self
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts a new connection in, unless the protocol is full.
    pub fn admit(&self) -> Admission {
        let max = self.limits.max_connections;
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Admission::Admitted(Arc::new(ConnState::new(&self.limits, self.send_buffer)))
        } else {
            Admission::Full(max)
        }
    }

    /// Counts a connection out.
    pub fn release(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Checks a name, room or id against `max_name_length`.
    pub fn check_name(&self, field: &str, value: &str) -> Result<(), LimitHit> {
        let max = self.limits.max_name_length;
        if value.chars().count() > max {
            return Err(LimitHit::new(
                "name_length",
                format!("{field} is longer than {max} characters"),
            ));
        }
        Ok(())
    }
}

/// A limit a client ran into.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LimitHit {
    /// Which limit (for metrics and the protocol's answer).
    pub kind: &'static str,
    /// What to tell the client.
    pub message: String,
}

impl LimitHit {
    /// A hit of limit `kind`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// One connection's rate state, what it may still be sent, and whether it is gone.
pub struct ConnState {
    bucket: Mutex<Bucket>,
    /// Messages this connection failed to receive (send buffer full).
    missed: AtomicU32,
    slow_limit: u32,
    /// The sizes of the last messages sent to it, against `send_budget` bytes.
    window: Mutex<SendWindow>,
    send_budget: u64,
    /// Set once the server decided to close it as too slow.
    closing: AtomicBool,
    /// Set by whoever runs the protocol's disconnect handling first: the socket's own
    /// disconnect, or an eviction that could not go through socketioxide. A join under the
    /// state lock refuses a connection with this set, so nothing can bind it after its
    /// disconnect has been handled.
    departed: AtomicBool,
    /// The protocol's disconnect handling, for an eviction (set when the socket connects).
    evictor: OnceLock<Evictor>,
}

/// Runs a protocol's disconnect handling for a socket.
pub type Evictor = Box<dyn Fn(&SocketRef) + Send + Sync>;

struct Bucket {
    tokens: f64,
    last: Instant,
    /// Rate refusals since the bucket was last full: a flooder that gets an occasional
    /// token keeps accumulating them; a client that pauses long enough starts afresh.
    strikes: u32,
}

impl ConnState {
    fn new(limits: &Limits, send_buffer: usize) -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                tokens: limits.burst,
                last: Instant::now(),
                strikes: 0,
            }),
            missed: AtomicU32::new(0),
            slow_limit: limits.slow_consumer_drops,
            window: Mutex::new(SendWindow::new(send_buffer)),
            send_budget: limits.send_budget as u64,
            closing: AtomicBool::new(false),
            departed: AtomicBool::new(false),
            evictor: OnceLock::new(),
        }
    }

    /// Charges a message of `bytes` to this receiver's budget; false when it would exceed it
    /// (nothing charged). Always true without a budget.
    pub fn charge(&self, bytes: u64) -> bool {
        self.send_budget == 0 || self.window.lock().charge(bytes, self.send_budget)
    }

    /// Whether a byte budget applies (so sizes are worth counting).
    pub fn has_budget(&self) -> bool {
        self.send_budget != 0
    }

    /// Marks the connection as being closed by the server; true only for the first caller.
    pub fn start_closing(&self) -> bool {
        !self.closing.swap(true, Ordering::AcqRel)
    }

    /// Claims the protocol's disconnect handling; true only for the first caller.
    pub fn claim_departure(&self) -> bool {
        !self.departed.swap(true, Ordering::SeqCst)
    }

    /// Whether the protocol's disconnect handling has run (or is running).
    pub fn departed(&self) -> bool {
        self.departed.load(Ordering::SeqCst)
    }

    /// Sets how an eviction runs the protocol's disconnect handling.
    pub fn set_evictor(&self, evictor: Evictor) {
        let _ = self.evictor.set(evictor);
    }

    /// Runs the protocol's disconnect handling for `socket`, unless it already ran.
    pub fn evict(&self, socket: &SocketRef) {
        if self.claim_departure() {
            if let Some(evictor) = self.evictor.get() {
                evictor(socket);
            }
        }
    }

    /// Admits one incoming event of `len` bytes, or says which limit it hits.
    pub fn check(&self, len: usize, gate: &Gate) -> Result<(), LimitHit> {
        let limits = &gate.limits;
        if len > limits.max_payload {
            return Err(LimitHit::new(
                "payload_size",
                format!(
                    "message of {len} bytes is over the {} byte limit",
                    limits.max_payload
                ),
            ));
        }
        let mut b = self.bucket.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * limits.rate).min(limits.burst);
        if b.tokens >= limits.burst {
            b.strikes = 0;
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            b.strikes = b.strikes.saturating_add(1);
            Err(LimitHit::new(
                "rate",
                format!("more than {} messages per second", limits.rate),
            ))
        }
    }

    /// Whether this is the first rate refusal of a streak (the one worth answering: answering
    /// every refused message would amplify a flood).
    pub fn first_strike(&self) -> bool {
        self.bucket.lock().strikes == 1
    }

    /// Whether the refusals in a row have reached `flood_disconnect`.
    pub fn flooding(&self, gate: &Gate) -> bool {
        let max = gate.limits.flood_disconnect;
        max > 0 && self.bucket.lock().strikes >= max
    }

    /// Counts a message this connection could not take; true exactly once, when it has
    /// missed `slow_consumer_drops` of them.
    pub fn missed_one(&self) -> bool {
        let missed = self.missed.fetch_add(1, Ordering::AcqRel) + 1;
        self.slow_limit > 0 && missed == self.slow_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: f64, burst: f64, max_connections: usize) -> Gate {
        Gate::new(Limits {
            rate,
            burst,
            max_connections,
            flood_disconnect: 5,
            ..Limits::default()
        })
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let g = gate(1.0, 3.0, 0);
        let Admission::Admitted(c) = g.admit() else {
            panic!("admitted")
        };
        for _ in 0..3 {
            assert!(c.check(10, &g).is_ok());
        }
        assert_eq!(c.check(10, &g).unwrap_err().kind, "rate");
        assert!(c.first_strike());
        for _ in 0..4 {
            assert!(c.check(10, &g).is_err());
        }
        assert!(!c.first_strike());
        assert!(c.flooding(&g));
    }

    #[test]
    fn a_receiver_is_reported_too_slow_once() {
        let g = Gate::new(Limits {
            slow_consumer_drops: 3,
            ..Limits::default()
        });
        let Admission::Admitted(c) = g.admit() else {
            panic!("admitted")
        };
        let verdicts: Vec<bool> = (0..6).map(|_| c.missed_one()).collect();
        assert_eq!(verdicts, [false, false, true, false, false, false]);
    }

    #[test]
    fn oversized_messages_are_refused() {
        let g = gate(100.0, 100.0, 0);
        let Admission::Admitted(c) = g.admit() else {
            panic!("admitted")
        };
        assert_eq!(c.check(10_000_000, &g).unwrap_err().kind, "payload_size");
    }

    #[test]
    fn connections_are_capped_and_released() {
        let g = gate(1.0, 1.0, 2);
        assert!(matches!(g.admit(), Admission::Admitted(_)));
        assert!(matches!(g.admit(), Admission::Admitted(_)));
        assert!(matches!(g.admit(), Admission::Full(2)));
        g.release();
        assert!(matches!(g.admit(), Admission::Admitted(_)));
        assert_eq!(g.open(), 2);
    }
}
