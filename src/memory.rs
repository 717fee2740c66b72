//! Giving memory back to the operating system after a peak.
//!
//! glibc's allocator keeps the pages of freed memory for reuse: after thousands of clients
//! come and go, the gateway's state is back to nothing but its resident memory stays near the
//! peak (measured by the soak: 8 MiB at start, 55 MiB after 24,000 connections had come and
//! gone, 17 MiB after a trim). This task asks glibc to release free pages once the number of
//! connections has fallen to half of its peak since the last release, so memory follows the
//! live load without trimming, which briefly locks the allocator, while the load is steady.
//!
//! A receiver closed as too slow can free megabytes at once (its send buffer); that asks for
//! a trim soon after, so the memory is returned without waiting for the connection count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::adapters::Realm;

/// How often the connection count is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Spawns the task; it ends with the runtime.
pub fn release_after_peaks(realms: Vec<Arc<dyn Realm>>) {
    tokio::spawn(async move {
        let mut peak = 0usize;
        let mut every = tokio::time::interval(CHECK_EVERY);
        loop {
            every.tick().await;
            let open: usize = realms
                .iter()
                .flat_map(|r| r.connections())
                .map(|(_, n)| n)
                .sum();
            peak = peak.max(open);
            if peak >= 64 && open <= peak / 2 {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(open, peak, released, "returned free memory to the system");
                peak = open;
            }
        }
    });
}

/// How long after a large release the trim runs (the closed connection's buffers are freed
/// when its tasks end, a few milliseconds after the close).
const TRIM_AFTER_RELEASE: Duration = Duration::from_millis(500);

/// Set while a trim asked for by [`trim_soon`] is pending: many releases, one trim.
static TRIM_PENDING: AtomicBool = AtomicBool::new(false);

/// Asks for free memory to be returned to the system shortly: a large buffer is being
/// released. Does nothing outside a Tokio runtime.
pub fn trim_soon() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if TRIM_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    runtime.spawn(async {
        tokio::time::sleep(TRIM_AFTER_RELEASE).await;
        TRIM_PENDING.store(false, Ordering::Release);
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(
            released,
            "returned free memory to the system after a release"
        );
    });
}

/// Returns free heap pages to the system; true when some were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks the allocator's own free lists under its own locks; it
    // takes no pointer from us and is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
