//! File descriptors: every open connection costs one, and when the process runs out,
//! `accept()` fails with `EMFILE` while the connection waits in the kernel's backlog, so
//! nobody (not even `/metrics`) gets an answer.
//!
//! At start the soft `RLIMIT_NOFILE` is raised towards what `limits.max_connections` needs.
//! Protocol connections then share a budget of the limit minus [`RESERVED`] descriptors, and
//! the admin listener has its own small budget inside that reserve, so admin and the refusal
//! of a connection over the budget always find a free descriptor. Should `accept()` still hit
//! `EMFILE` (descriptors used elsewhere), a spare descriptor is given up to accept and close
//! the waiting connection, and the accept loop backs off instead of spinning.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

/// Descriptors kept out of the protocols' budget: the admin budget, the spare descriptors,
/// refusals in flight, files served, and the runtime's own.
pub const RESERVED: u64 = 96;

/// Admin connections served at once (inside [`RESERVED`]).
pub const ADMIN_CONNECTIONS: usize = 32;

/// What [`raise_limit`] did, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force after raising it.
    pub soft: u64,
    /// The hard limit (the ceiling an unprivileged process may raise to).
    pub hard: u64,
    /// What the configured limits need (`None`: some `max_connections` is unlimited).
    pub needed: Option<u64>,
}

impl FdLimit {
    /// Protocol connections the gateway serves at once.
    pub fn budget(&self) -> usize {
        usize::try_from(self.soft.saturating_sub(RESERVED).max(1)).unwrap_or(usize::MAX)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `needed` descriptors (every protocol's
/// `max_connections` plus [`RESERVED`]), or to the hard limit when that is lower or when
/// `needed` is `None` (unlimited connections).
pub fn raise_limit(needed: Option<u64>) -> io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let hard = lim.rlim_max;
    let want = needed.map_or(hard, |n| n.min(hard)).max(lim.rlim_cur);
    if want != lim.rlim_cur {
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        soft: want,
        hard,
        needed,
    })
}

/// A count of open connections with a ceiling, shared by the listeners it covers.
#[derive(Debug)]
pub struct Budget {
    open: AtomicUsize,
    max: usize,
    /// Which budget, for the log line.
    pub name: &'static str,
    warn: RareWarning,
}

impl Budget {
    /// A budget of `max` connections at once.
    pub fn new(name: &'static str, max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            name,
            warn: RareWarning::new(),
        })
    }

    /// Takes one place, or `None` (and a rate-limited log line) when the budget is full.
    pub fn take(self: &Arc<Self>) -> Option<Permit> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(Permit(self.clone())),
            Err(open) => {
                if let Some(refused) = self.warn.due() {
                    tracing::warn!(
                        budget = self.name,
                        open,
                        max = self.max,
                        refused,
                        "connection refused: descriptor budget full"
                    );
                }
                None
            }
        }
    }
}

/// One place in a [`Budget`], given back when dropped (with the connection).
#[derive(Debug)]
pub struct Permit(Arc<Budget>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A warning logged at most once per interval, with the count of occurrences it stands for.
#[derive(Debug)]
struct RareWarning {
    last: Mutex<Option<Instant>>,
    count: AtomicU64,
}

impl RareWarning {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self {
            last: Mutex::new(None),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; `Some(occurrences since the last line)` when a line is due.
    fn due(&self) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::INTERVAL) {
            return None;
        }
        *last = Some(now);
        Some(self.count.swap(0, Ordering::Relaxed))
    }
}

/// A descriptor held back so that, when `accept()` fails for lack of descriptors, one can be
/// freed to accept the waiting connection and close it.
pub struct Spare {
    file: Option<File>,
    warn: RareWarning,
}

impl Spare {
    /// Holds one descriptor (`/dev/null`).
    pub fn hold() -> Self {
        Self {
            file: File::open("/dev/null").ok(),
            warn: RareWarning::new(),
        }
    }

    /// After `accept()` failed with `err`: when it was for lack of descriptors, frees the
    /// spare, accepts and closes one waiting connection, takes the spare back, and waits a
    /// moment so the loop does not spin. Other errors (a connection reset before it was
    /// accepted, …) only get the pause.
    pub async fn on_accept_error(&mut self, listener: &TcpListener, name: &str, err: io::Error) {
        let out_of_fds = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if out_of_fds {
            if let Some(refused) = self.warn.due() {
                tracing::warn!(
                    listener = name,
                    refused,
                    "accept failed: out of file descriptors; refusing connections"
                );
            }
            self.file = None;
            if let Ok(Ok((stream, _))) =
                tokio::time::timeout(Duration::from_millis(1), listener.accept()).await
            {
                drop::<TcpStream>(stream);
            }
            self.file = File::open("/dev/null").ok();
        } else {
            tracing::debug!(listener = name, error = %err, "accept failed");
        }
        tokio::time::sleep(Duration::from_millis(if out_of_fds { 20 } else { 1 })).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_beyond_its_ceiling_and_frees_on_drop() {
        let b = Budget::new("test", 2);
        let one = b.take().expect("first");
        let _two = b.take().expect("second");
        assert!(b.take().is_none());
        drop(one);
        assert!(b.take().is_some());
    }

    #[test]
    fn a_rare_warning_counts_what_it_held_back() {
        let w = RareWarning::new();
        assert_eq!(w.due(), Some(1));
        assert_eq!(w.due(), None);
        assert_eq!(w.due(), None);
        *w.last.lock() = Instant::now().checked_sub(Duration::from_secs(11));
        assert_eq!(w.due(), Some(3));
    }
}
