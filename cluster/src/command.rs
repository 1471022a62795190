//! What a Raft entry carries and what applying it answers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The payload of a client entry. One enum for every group kind, so one storage implementation
/// and one transport serve them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Record batches for a partition log, already validated by the leader.
    Append { batches: Vec<Bytes> },
    /// Replicated key-value changes: topic metadata, committed group offsets.
    Kv(KvWrite),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWrite {
    pub puts: Vec<(Bytes, Bytes)>,
    pub deletes: Vec<Bytes>,
}

/// The state machine's answer for one applied entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    Appended {
        base_offset: u64,
        record_count: u64,
    },
    KvApplied,
    /// The entry carried no application data (blank or membership entry).
    Nothing,
}

impl async_raft::AppData for Command {}
impl async_raft::AppDataResponse for ApplyOutcome {}
