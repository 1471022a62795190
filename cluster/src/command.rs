//! What a Raft entry carries and what applying it answers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The payload of a client entry. One enum for every group kind, so one storage implementation
/// and one transport serve them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Record batches for a partition log, already validated by the leader.
    Append {
        batches: Vec<Bytes>,
        /// The leader-local id under which [`crate::RaftGroup::propose_notifying`] waits for
        /// the entry to be durable in the leader's own log (acks=1). Neither stored nor sent.
        #[serde(skip)]
        proposal: Option<u64>,
    },
    /// Replicated key-value changes: topic metadata, committed group offsets.
    Kv(KvWrite),
    /// A command for the group's state machine (the metadata group's typed commands), opaque
    /// here: applying it runs the machine the group was started with.
    Machine(Bytes),
    /// Retention decided by the leader: every replica moves the partition's log start up to
    /// this offset, rounded down to an entry boundary.
    AdvanceLogStart { offset: u64 },
}

impl Command {
    /// Record batches to append, with no durability notice.
    pub fn append(batches: Vec<Bytes>) -> Command {
        Command::Append {
            batches,
            proposal: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWrite {
    pub puts: Vec<(Bytes, Bytes)>,
    pub deletes: Vec<Bytes>,
}

/// The state machine's answer for one applied entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    Appended {
        base_offset: u64,
        record_count: u64,
    },
    KvApplied,
    /// The state machine's outcome of a `Machine` command, for its proposer.
    Machine(Bytes),
    /// The log start after an `AdvanceLogStart` (unchanged if it was not forward).
    LogStartAdvanced {
        log_start_offset: u64,
    },
    /// The entry carried no application data (blank or membership entry).
    Nothing,
}

impl async_raft::AppData for Command {}
impl async_raft::AppDataResponse for ApplyOutcome {}
