//! A receiver's byte budget: how many bytes may be waiting in its send buffer.
//!
//! A receiver that stops reading keeps every message sent to it in its Engine.IO send buffer.
//! That buffer is bounded in messages (`engine.send_buffer`), not bytes, and socketioxide does
//! not say how much of it is still waiting. What is known for certain is that the buffer is a
//! first-in first-out queue of at most `send_buffer` messages, so whatever is still waiting is
//! among the *last* `send_buffer` messages handed to it. Their total size is therefore an
//! upper bound of the bytes the receiver pins, whatever it reads or not, and that is what is
//! charged against the budget. The bound is conservative: a receiver that reads everything
//! but receives more than the budget within its last `send_buffer` messages is also stopped.
//! Real signalling never comes near it (an SDP is ~10 KiB, a candidate ~300 B: 4,096 of them
//! make ~2 MiB, the default budget is 8 MiB).
//!
//! The last `send_buffer` sizes are kept as sums over [`BUCKETS`] buckets of equal message
//! counts plus the one being filled, so the window costs a few hundred bytes per connection
//! and covers slightly more than `send_buffer` messages (still an upper bound).

/// Full buckets kept besides the one being filled.
const BUCKETS: usize = 16;

/// Bytes charged per message on top of its payload: the Socket.IO packet header, the event
/// name and the namespace.
pub const PACKET_OVERHEAD: u64 = 64;

/// The sizes of the last messages handed to one receiver.
#[derive(Debug)]
pub struct SendWindow {
    /// Byte sums, one per bucket; `head` is the bucket being filled.
    sums: [u64; BUCKETS + 1],
    head: usize,
    /// Messages in the bucket being filled.
    filled: usize,
    /// Messages per bucket.
    per_bucket: usize,
    /// Sum of `sums`.
    total: u64,
}

impl SendWindow {
    /// A window over the last `messages` messages (the receiver's send buffer size).
    pub fn new(messages: usize) -> Self {
        Self {
            sums: [0; BUCKETS + 1],
            head: 0,
            filled: 0,
            per_bucket: messages.div_ceil(BUCKETS).max(1),
            total: 0,
        }
    }

    /// Charges one message of `bytes` unless that would put the bound over `budget`; says
    /// whether it was charged.
    pub fn charge(&mut self, bytes: u64, budget: u64) -> bool {
        let bytes = bytes.saturating_add(PACKET_OVERHEAD);
        if self.filled == self.per_bucket {
            self.head = (self.head + 1) % self.sums.len();
            self.total -= self.sums[self.head];
            self.sums[self.head] = 0;
            self.filled = 0;
        }
        if self.total.saturating_add(bytes) > budget {
            return false;
        }
        self.sums[self.head] += bytes;
        self.total += bytes;
        self.filled += 1;
        true
    }

    /// The current bound, in bytes.
    #[cfg(test)]
    pub fn bound(&self) -> u64 {
        self.total
    }
}

/// Counts the bytes of a value's JSON encoding without building it.
pub fn json_len<T: ?Sized + serde::Serialize>(value: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting cannot fail; a value that cannot be encoded fails again (and is counted) in
    // the real send.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_covers_the_last_messages_and_refuses_beyond_the_budget() {
        let mut w = SendWindow::new(32);
        let budget = 10 * (1000 + PACKET_OVERHEAD);
        for _ in 0..10 {
            assert!(w.charge(1000, budget));
        }
        assert!(
            !w.charge(1000, budget),
            "an eleventh large message would exceed it"
        );
        assert_eq!(w.bound(), budget, "a refused message is not charged");
    }

    #[test]
    fn old_messages_leave_the_window_once_the_buffer_has_turned_over() {
        let mut w = SendWindow::new(32);
        let budget = 1_000_000;
        assert!(w.charge(500_000, budget));
        // 34 small messages later (32 + one bucket of 2), the large one cannot be queued any more.
        for _ in 0..34 {
            assert!(w.charge(10, budget));
        }
        assert!(w.charge(500_000, budget));
        assert!(w.bound() < budget);
    }

    #[test]
    fn json_len_counts_the_encoding() {
        assert_eq!(json_len(&serde_json::json!({"a": "bcd"})), 11);
    }
}
