//! The gateway's counters and gauges, named in one place.
//!
//! Everything that happens to a message or a join is counted here through the `metrics`
//! facade; the admin endpoint renders them for Prometheus. Labels are low-cardinality by
//! construction: protocol names, event names and reason strings from fixed lists, never room
//! names or ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use parking_lot::RwLock;

type Labels = (Lit, Lit, Lit);

/// A `&'static str` hashed and compared by address and length, not by its text: the names and
/// label values are literals, so a cache lookup costs three words of hashing instead of three
/// strings. The same text at two addresses only makes two entries for the one counter
/// `metrics` returns for both keys.
#[derive(Clone, Copy)]
struct Lit(&'static str);

impl PartialEq for Lit {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Lit {}

impl std::hash::Hash for Lit {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.as_ptr() as usize);
        state.write_usize(self.0.len());
    }
}

/// Counter handles by (metric, protocol, label value). Building a labelled key and looking it
/// up in the registry on every message cost about a sixth of a relay; a cached handle is one
/// atomic add. (Handles are taken after the recorder is installed: the gateway installs it
/// before it serves anything.)
static COUNTERS: LazyLock<RwLock<HashMap<Labels, Counter, foldhash::fast::RandomState>>> =
    LazyLock::new(Default::default);

/// The handling-time histogram of each protocol.
static HISTOGRAMS: LazyLock<RwLock<HashMap<Lit, Histogram, foldhash::fast::RandomState>>> =
    LazyLock::new(Default::default);

/// Adds one to counter `metric{protocol, <label>=value}`.
fn bump(metric: &'static str, label: &'static str, protocol: &'static str, value: &'static str) {
    let key = (Lit(metric), Lit(protocol), Lit(value));
    if let Some(counter) = COUNTERS.read().get(&key) {
        counter.increment(1);
        return;
    }
    let counter = metrics::counter!(metric, "protocol" => protocol, label => value);
    counter.increment(1);
    COUNTERS.write().insert(key, counter);
}

/// Running totals per protocol, for the live dashboard (Prometheus has the full detail).
pub struct Totals {
    relayed: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    bad_input: AtomicU64,
}

impl Totals {
    const fn new() -> Self {
        Self {
            relayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bad_input: AtomicU64::new(0),
        }
    }
}

/// A snapshot of [`Totals`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TotalsView {
    /// Relayed messages.
    pub relayed: u64,
    /// Messages not delivered.
    pub dropped: u64,
    /// Joins, connections and messages refused by a limit or rule.
    pub refused: u64,
    /// Malformed or unknown input ignored.
    pub bad_input: u64,
}

/// Totals slots, handed out to protocol names as they first count something; the last slot
/// is shared by any beyond the first seven.
static TOTALS: [Totals; 8] = [
    Totals::new(),
    Totals::new(),
    Totals::new(),
    Totals::new(),
    Totals::new(),
    Totals::new(),
    Totals::new(),
    Totals::new(),
];

/// Which protocol owns which slot of [`TOTALS`].
static SLOTS: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

fn slot(protocol: &'static str) -> &'static Totals {
    let index = |names: &[&'static str]| names.iter().position(|n| *n == protocol);
    if let Some(i) = index(&SLOTS.read()) {
        return &TOTALS[i];
    }
    let mut names = SLOTS.write();
    let i = match index(&names) {
        Some(i) => i,
        None if names.len() < TOTALS.len() - 1 => {
            names.push(protocol);
            names.len() - 1
        }
        None => TOTALS.len() - 1,
    };
    &TOTALS[i]
}

/// The running totals of `protocol`.
pub fn totals(protocol: &'static str) -> TotalsView {
    let t = slot(protocol);
    TotalsView {
        relayed: t.relayed.load(Ordering::Relaxed),
        dropped: t.dropped.load(Ordering::Relaxed),
        refused: t.refused.load(Ordering::Relaxed),
        bad_input: t.bad_input.load(Ordering::Relaxed),
    }
}

/// Time from receiving an event to having handed every resulting message to its
/// receivers' send buffers.
pub fn handled(protocol: &'static str, took: Duration) {
    if let Some(h) = HISTOGRAMS.read().get(&Lit(protocol)) {
        h.record(took.as_secs_f64());
        return;
    }
    let h = metrics::histogram!("gateway_handling_seconds", "protocol" => protocol);
    h.record(took.as_secs_f64());
    HISTOGRAMS.write().insert(Lit(protocol), h);
}

/// A join was accepted.
pub fn joined(protocol: &'static str) {
    metrics::counter!("gateway_joins_total", "protocol" => protocol).increment(1);
}

/// A member left a room (by request, by switching rooms or by disconnecting).
pub fn left(protocol: &'static str) {
    metrics::counter!("gateway_leaves_total", "protocol" => protocol).increment(1);
}

/// A join was refused by a rule of the core.
pub fn refused(protocol: &'static str, reason: &'static str) {
    bump("gateway_refused_total", "reason", protocol, reason);
    slot(protocol).refused.fetch_add(1, Ordering::Relaxed);
}

/// A client sent something the protocol does not allow; it was ignored.
pub fn bad_input(protocol: &'static str, kind: &'static str) {
    bump("gateway_bad_input_total", "kind", protocol, kind);
    slot(protocol).bad_input.fetch_add(1, Ordering::Relaxed);
}

/// A message was handed to a receiver's send buffer.
pub fn sent(protocol: &'static str, event: &'static str) {
    bump("gateway_sent_total", "event", protocol, event);
}

/// A relayed message reached its receiver's send buffer.
pub fn relayed(protocol: &'static str, event: &'static str) {
    bump("gateway_relayed_total", "event", protocol, event);
    slot(protocol).relayed.fetch_add(1, Ordering::Relaxed);
}

/// A message was not delivered; `reason` says why.
pub fn dropped(protocol: &'static str, reason: &'static str) {
    bump("gateway_dropped_total", "reason", protocol, reason);
    slot(protocol).dropped.fetch_add(1, Ordering::Relaxed);
}

/// Rooms and members of a protocol, set at scrape time.
pub fn set_sizes(protocol: &'static str, rooms: usize, members: usize) {
    metrics::gauge!("gateway_rooms", "protocol" => protocol).set(rooms as f64);
    metrics::gauge!("gateway_members", "protocol" => protocol).set(members as f64);
}

/// Open connections of a protocol by Engine.IO version and transport, set at scrape time.
pub fn set_connections(protocol: &'static str, engine_io: u8, transport: &'static str, n: usize) {
    let eio = if engine_io == 3 { "3" } else { "4" };
    metrics::gauge!("gateway_connections", "protocol" => protocol, "engine_io" => eio, "transport" => transport)
        .set(n as f64);
}

/// The label values one protocol can count. Registering them at start makes every series
/// exist at 0 before its first event, so that `rate()` and absence alerts work from the
/// first scrape. Each adapter lists its own; [`register`] takes several lists.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// Events handed to receivers (`gateway_sent_total{event}`).
    pub sent: &'static [&'static str],
    /// Events relayed from one client to another (`gateway_relayed_total{event}`).
    pub relayed: &'static [&'static str],
    /// Reasons a message was not delivered (`gateway_dropped_total{reason}`).
    pub dropped: &'static [&'static str],
    /// Reasons something was refused (`gateway_refused_total{reason}`).
    pub refused: &'static [&'static str],
    /// Kinds of bad input (`gateway_bad_input_total{kind}`).
    pub bad_input: &'static [&'static str],
}

/// Creates every series of `protocol` at 0 (the label values of `known`, the unlabelled
/// counters, the gauges and the handling-time histogram).
pub fn register(protocol: &'static str, known: &[&Known]) {
    metrics::counter!("gateway_joins_total", "protocol" => protocol).increment(0);
    metrics::counter!("gateway_leaves_total", "protocol" => protocol).increment(0);
    HISTOGRAMS
        .write()
        .entry(Lit(protocol))
        .or_insert_with(|| metrics::histogram!("gateway_handling_seconds", "protocol" => protocol));
    set_sizes(protocol, 0, 0);
    for engine_io in [3, 4] {
        for transport in ["polling", "websocket"] {
            set_connections(protocol, engine_io, transport, 0);
        }
    }
    let mut counters = COUNTERS.write();
    for k in known {
        for (metric, label, values) in [
            ("gateway_sent_total", "event", k.sent),
            ("gateway_relayed_total", "event", k.relayed),
            ("gateway_dropped_total", "reason", k.dropped),
            ("gateway_refused_total", "reason", k.refused),
            ("gateway_bad_input_total", "kind", k.bad_input),
        ] {
            for &value in values {
                counters
                    .entry((Lit(metric), Lit(protocol), Lit(value)))
                    .or_insert_with(|| {
                        let counter =
                            metrics::counter!(metric, "protocol" => protocol, label => value);
                        counter.increment(0);
                        counter
                    });
            }
        }
    }
    drop(counters);
    slot(protocol);
}

/// Cluster mode: a call to Redis failed; `action` says which.
pub fn cluster_redis_error(action: &str) {
    metrics::counter!("gateway_cluster_redis_errors_total", "action" => action.to_owned())
        .increment(1);
}

/// Cluster mode: a message from another node could not be read.
pub fn cluster_bad_message() {
    metrics::counter!("gateway_cluster_bad_messages_total").increment(1);
}

#[cfg(test)]
mod tests {
    use crate::adapters::SHARED_LABELS;
    use crate::core::{Refusal, RouteError};

    /// The core's reasons are registered at start (a reason missing from the list would only
    /// appear after its first event).
    #[test]
    fn shared_labels_cover_the_core_reasons() {
        let refusals = [
            Refusal::RoomFull { capacity: 1 },
            Refusal::NameTaken,
            Refusal::MemberIdInUse,
            Refusal::TooManyRooms { max: 1 },
        ];
        for r in refusals {
            assert!(SHARED_LABELS.refused.contains(&r.kind()), "{}", r.kind());
        }
        let routes = [
            RouteError::NotJoined,
            RouteError::UnknownTarget,
            RouteError::OtherRoom,
            RouteError::TargetAway,
        ];
        for r in routes {
            assert!(SHARED_LABELS.dropped.contains(&r.kind()), "{}", r.kind());
        }
    }
}
