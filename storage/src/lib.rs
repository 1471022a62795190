//! Gregor's storage: the node's one fjall database and the on-disk formats in it.
//!
//! It holds every Raft group's log, hard state and snapshot metadata, the offset and time
//! indexes of partition logs, replicated key-value state (topic metadata, committed offsets),
//! and retention. It knows nothing of actors, sockets or async runtimes.

pub mod batch;
pub mod ids;
pub mod options;

pub use options::{FlushPolicy, StoreOptions, SyncMode};

pub use ids::{GroupId, NodeId, Offset, PartitionId, TopicId};
