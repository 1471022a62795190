//! Virtual wall-clock time for record timestamps and retention, driven by tokio's paused
//! clock, with a skew the fault scheduler can set per node.

use std::sync::atomic::{AtomicI64, Ordering};
use tokio::time::Instant;

/// Milliseconds since the epoch at virtual time zero: a fixed date, so timestamps replay.
pub const EPOCH_MS_AT_START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A node's (or a client's) wall clock: the run's virtual time plus this clock's skew.
pub struct SimClock {
    origin: Instant,
    skew_ms: AtomicI64,
}

impl SimClock {
    /// A clock reading [`EPOCH_MS_AT_START`] at `origin`, the run's virtual time zero.
    pub fn new(origin: Instant) -> SimClock {
        SimClock {
            origin,
            skew_ms: AtomicI64::new(0),
        }
    }

    /// From now on the clock reads `skew_ms` away from true virtual time (it may jump back).
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    pub fn read_ms(&self) -> i64 {
        let elapsed = Instant::now().duration_since(self.origin).as_millis();
        EPOCH_MS_AT_START + elapsed as i64 + self.skew_ms()
    }
}

impl gregor_storage::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.read_ms()
    }
}

impl gregor_client::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.read_ms()
    }
}
