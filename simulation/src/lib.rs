//! Gregor's deterministic simulation: a node (later, many) in one process, on one actix System
//! over a current-thread tokio runtime with paused time, driven by a seeded workload with
//! seeded faults, checked against Gregor's invariants. A seed replays the same run: the event
//! trace's digest proves it.
//!
//! What is simulated and what is real: time is virtual (tokio's paused clock, and a virtual
//! [`gregor_storage::Clock`] for record timestamps); randomness comes from the seed; storage is
//! real fjall in a temporary directory with fsyncs made inline (no sync thread, whose timing
//! would not replay). A crash drops every actor, Raft group and storage handle and reopens the
//! directory; it cannot lose unsynced writes (they sit in the OS page cache), so power loss is
//! tested with real process kills in `tests/`, not here.

pub mod clock;
pub mod group_check;
pub mod net;
pub mod scenario;
pub mod trace;

pub use scenario::{run, ScenarioConfig, SimReport};
