//! The last five minutes of each protocol's running totals, one sample a second, kept in
//! the gateway so that a dashboard opened now draws its chart at once instead of starting
//! empty.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use crate::adapters::Realm;
use crate::stats::{self, TotalsView};

/// Samples kept: five minutes at one a second.
pub const SAMPLES: usize = 300;

/// One second's totals of every protocol.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// Running totals by protocol name.
    pub realms: BTreeMap<&'static str, TotalsView>,
}

/// The ring of recent samples.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Starts sampling `realms` once a second on the current runtime.
    pub fn start(realms: Arc<Vec<Arc<dyn Realm>>>) -> Arc<History> {
        let history = Arc::new(History::default());
        let weak = Arc::downgrade(&history);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let Some(history) = weak.upgrade() else {
                    return;
                };
                history.record(Sample {
                    time: now(),
                    realms: realms
                        .iter()
                        .map(|r| (r.name(), stats::totals(r.name())))
                        .collect(),
                });
            }
        });
        history
    }

    fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock();
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Every kept sample, oldest first.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().iter().cloned().collect()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_five_minutes() {
        let h = History::default();
        for i in 0..SAMPLES + 10 {
            h.record(Sample {
                time: i as f64,
                realms: BTreeMap::new(),
            });
        }
        let kept = h.snapshot();
        assert_eq!(kept.len(), SAMPLES);
        assert_eq!(kept[0].time, 10.0);
        assert_eq!(kept[SAMPLES - 1].time, (SAMPLES + 9) as f64);
    }
}
