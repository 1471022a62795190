//! Gregor's deterministic simulation: whole clusters of real nodes (the unchanged actors,
//! cluster and storage code) in one process, on one thread, on virtual time, driven by one
//! seed. A seeded workload of real clients runs against them while seeded faults strike (crashes,
//! power loss, torn writes, failed fsyncs, partitions, lossy links, slow disks, skewed clocks),
//! and checkers named after Jepsen's Kafka workload judge the recorded history. The same seed
//! replays the same run: the digest of its event trace proves it.
//!
//! What is real and what is simulated: nodes run `start_node_with` with seams handed in: the
//! simulated network (`net`) for peer RPCs, gossip and client connections; a model disk
//! (`gregor_storage::ModelDisk`) that loses what was not fsynced when the power goes, or fjall
//! in a temporary directory for a share of the runs without power faults; fsyncs completed by
//! the harness after a virtual delay (slow disks); a virtual clock per node (skew). Clients are
//! the real `gregor-client` talking to each node's real `serve_connection` over simulated
//! streams.

pub mod check;
pub mod clock;
pub mod cluster;
pub mod determinism;
pub mod faults;
pub mod group_check;
pub mod history;
mod isolate;
pub mod leaders;
pub mod net;
pub mod node;
mod panics;
pub mod rng;
pub mod run;
mod tamper;
pub mod trace;
pub mod workload;

pub use run::{run, run_in_this_process, Report, RunConfig, Sabotage};
