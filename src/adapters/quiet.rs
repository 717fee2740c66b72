//! Repeated warnings, aggregated: a client must not be able to write the log.
//!
//! Every dropped message, refused connection or closed flooder used to log its own line, so a
//! flood of them wrote megabytes of log (7.5 MB in two minutes). Now the first warning of a
//! kind (protocol and reason) in an interval is logged as before; the others in that interval
//! are only counted, and one summary line per interval says how many there were. The
//! counters in `stats` still count every occurrence; only the log is aggregated.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long one logged warning stands for the ones after it.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of warning: when its current interval began and how many were left out since.
struct Slot {
    since: Instant,
    left_out: u64,
}

type Kind = (&'static str, &'static str);

static SLOTS: LazyLock<Mutex<HashMap<Kind, Slot>>> = LazyLock::new(Default::default);

/// Set once the task that writes the summaries runs.
static SUMMARIES: OnceLock<()> = OnceLock::new();

/// Whether this warning of `reason` for `protocol` is to be logged. Otherwise it is counted
/// for the interval's summary line.
pub fn should_log(protocol: &'static str, reason: &'static str) -> bool {
    let now = Instant::now();
    let mut slots = SLOTS.lock();
    let slot = match slots.entry((protocol, reason)) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(Slot {
                since: now,
                left_out: 0,
            });
            return true;
        }
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
    };
    if slot.left_out == 0 && now.duration_since(slot.since) >= INTERVAL {
        slot.since = now;
        return true;
    }
    slot.left_out += 1;
    drop(slots);
    start_summaries();
    false
}

/// Starts the task that logs, once per interval, how many warnings of each kind were left
/// out (needs a Tokio runtime; without one, nothing is summarised).
fn start_summaries() {
    if SUMMARIES.get().is_some() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if SUMMARIES.set(()).is_err() {
        return;
    }
    runtime.spawn(async {
        let mut every = tokio::time::interval(INTERVAL);
        every.tick().await;
        loop {
            every.tick().await;
            summarise(Instant::now());
        }
    });
}

/// Logs one line per kind with warnings left out in an interval that has ended.
fn summarise(now: Instant) {
    let due: Vec<(Kind, u64)> = {
        let mut slots = SLOTS.lock();
        slots.retain(|_, slot| slot.left_out > 0 || now.duration_since(slot.since) < INTERVAL);
        slots
            .iter_mut()
            .filter(|(_, slot)| slot.left_out > 0 && now.duration_since(slot.since) >= INTERVAL)
            .map(|(kind, slot)| {
                let n = std::mem::take(&mut slot.left_out);
                slot.since = now;
                (*kind, n)
            })
            .collect()
    };
    for ((protocol, reason), n) in due {
        tracing::warn!(
            protocol,
            reason,
            repeated = n,
            interval = ?INTERVAL,
            "more warnings of this kind (counted in /metrics, not logged one by one)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_and_the_rest_of_the_interval_only_counted() {
        assert!(should_log("test", "quiet_first"));
        for _ in 0..1000 {
            assert!(!should_log("test", "quiet_first"));
        }
        let left_out = SLOTS
            .lock()
            .get(&("test", "quiet_first"))
            .map(|s| s.left_out);
        assert_eq!(left_out, Some(1000));
        summarise(Instant::now() + INTERVAL);
        let left_out = SLOTS
            .lock()
            .get(&("test", "quiet_first"))
            .map(|s| s.left_out);
        assert_eq!(left_out, Some(0), "the summary took the count");
    }
}
