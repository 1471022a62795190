//! Virtual wall-clock time for record timestamps and retention, driven by tokio's paused clock.

use gregor_storage::Clock;
use tokio::time::Instant;

/// Milliseconds since the epoch at virtual time zero: a fixed date, so timestamps replay.
pub const EPOCH_MS_AT_START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

pub struct VirtualClock {
    start: Instant,
}

impl VirtualClock {
    /// Must be created inside the simulation's runtime.
    pub fn new() -> Self {
        VirtualClock {
            start: Instant::now(),
        }
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> i64 {
        EPOCH_MS_AT_START + self.start.elapsed().as_millis() as i64
    }
}
