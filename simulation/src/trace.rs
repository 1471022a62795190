//! The event trace: every event the harness sees, in order, with its virtual time. Its digest
//! (FNV-1a, stable across platforms and releases) identifies a run: the same seed must give the
//! same digest.
//!
//! Harness events (faults, client operations and their outcomes) are text. Network events are
//! far more numerous, so they enter the digest as numbers and are rendered as text only when
//! the trace is printed.

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Harness events kept for a failure report.
const TAIL_EVENTS: usize = 200;

pub struct Trace {
    origin: Instant,
    digest: u64,
    events: u64,
    print: bool,
    tail: VecDeque<String>,
}

impl Trace {
    /// A trace whose times count from `origin`; `print` writes every event to stdout.
    pub fn new(origin: Instant, print: bool) -> Trace {
        Trace {
            origin,
            digest: FNV_OFFSET,
            events: 0,
            print,
            tail: VecDeque::with_capacity(TAIL_EVENTS),
        }
    }

    /// Virtual milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.origin).as_millis() as u64
    }

    /// Records a harness event.
    pub fn event(&mut self, what: impl Display) {
        let line = format!("{:>9} {what}", self.now_ms());
        self.hash(line.as_bytes());
        self.hash(b"\n");
        self.events += 1;
        if self.print {
            println!("{line}");
        }
        if self.tail.len() == TAIL_EVENTS {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Records an event given as numbers; `render` is called only when printing.
    pub fn event_words(&mut self, words: &[u64], render: impl FnOnce() -> String) {
        for word in words {
            self.hash(&word.to_le_bytes());
        }
        self.events += 1;
        if self.print {
            println!("{:>9} {}", self.now_ms(), render());
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.digest ^= u64::from(*byte);
            self.digest = self.digest.wrapping_mul(FNV_PRIME);
        }
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// The last harness events, oldest first (for failure reports).
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

/// The trace as the run's components share it (the network's hook runs under its own lock on
/// the simulation thread, and must be `Send`).
#[derive(Clone)]
pub struct SharedTrace(Arc<Mutex<Trace>>);

impl SharedTrace {
    pub fn new(trace: Trace) -> SharedTrace {
        SharedTrace(Arc::new(Mutex::new(trace)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Trace> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn event(&self, what: impl Display) {
        self.lock().event(what);
    }

    pub fn now_ms(&self) -> u64 {
        self.lock().now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_digest_follows_content_and_order() {
        let origin = Instant::now();
        let digest = |events: &[&str]| {
            let mut trace = Trace::new(origin, false);
            for e in events {
                trace.event(e);
            }
            trace.digest()
        };
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a", "b"]), digest(&["b", "a"]));
        let mut words = Trace::new(origin, false);
        words.event_words(&[1, 2], || unreachable!("rendered without printing"));
        assert_eq!(words.events(), 1);
    }
}
