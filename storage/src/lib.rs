//! Gregor's storage: the node's one database and the on-disk formats in it.
//!
//! It holds every Raft group's log, hard state and log floor, the offset and time indexes of
//! partition logs, producer state, replicated key-value state (topic metadata, committed
//! offsets), retention and snapshots. It knows nothing of actors, sockets or async runtimes:
//! every call is synchronous. The threads it starts: `gregor-sync` runs fsyncs and `gregor-io-*`
//! run the blocking calls handed to [`Store::run_blocking`] (both under `SyncMode::Thread` only),
//! and `gregor-reclaim` returns the disk space of removed entries (fjall only, see `reclaim.rs`).
//!
//! The Raft log is the partition log. A `Records` entry is written once, by `append_entries`;
//! applying it assigns offsets by writing a small index row, and fetches slice batches out of
//! the log entries and stamp their offsets on the way out. Retention removes entries from the
//! head when an `AdvanceLogStart` entry is applied. See `keys.rs` for the layout of every
//! keyspace, `entry.rs`, `state.rs`, `producer.rs` and `snapshot.rs` for the value formats.
//!
//! Everything is written against a backend seam (`backend/`): fjall in production, a model of a
//! disk ([`ModelDisk`]) in the simulation, which can lose unsynced writes, tear one, fail an
//! fsync or a read.
//!
//! Durability: writes reach the OS when they return; `request_sync` makes them durable (one
//! fsync for everything pending), and a failed write or fsync poisons the store for good.

mod backend;
mod clock;
mod closed;
mod entry;
mod error;
mod fetch;
pub mod ids;
mod io;
mod keys;
mod log;
pub mod options;
mod poisoned;
mod producer;
mod producers;
mod reclaim;
mod retention;
mod signal;
mod snapshot;
mod state;
mod state_machine;
mod store;
mod sync;
mod verify;
mod worker;

pub use backend::model::{Crash, ModelDisk};
pub use clock::{Clock, SystemClock};
pub use closed::StoreClosed;
pub use entry::{EntryPayload, KvOps, LogEntry};
pub use error::StorageError;
pub use fetch::FetchedBatches;
/// The record batch format lives with the wire protocol; storage keeps the batches as they came.
pub use gregor_protocol::batch;
pub use ids::{GroupId, NodeId, Offset, PartitionId, TopicId};
pub use io::{IdleCallback, IoJob};
pub use log::LogSlice;
pub use options::{FlushPolicy, StoreOptions, SyncMode, SyncRunner, DEFAULT_CACHE_BYTES};
pub use poisoned::StorePoisoned;
pub use producer::{ProducerBatch, ProducerState, MAX_PRODUCERS_PER_PARTITION, PRODUCER_WINDOW};
pub use reclaim::ReclaimCounts;
pub use retention::{RetentionOutcome, RetentionPolicy};
pub use snapshot::GroupSnapshot;
pub use state::{LogFloor, PartitionState};
pub use state_machine::{Applied, RowTxn, StateMachine};
pub use store::Store;
pub use sync::SyncJob;

/// Hex helpers for the committed on-disk fixtures in the unit tests.
#[cfg(test)]
pub(crate) mod fixture_hex {
    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
