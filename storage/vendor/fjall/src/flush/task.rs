// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use crate::Keyspace;
use lsm_tree::SeqNo;

pub struct Task {
    pub(crate) keyspace: Keyspace,

    /// The highest seqno of the memtable sealed for this task, if known: once the task's flush
    /// has run, every write of the keyspace up to it is in tables (see
    /// [`crate::keyspace::FlushedSeqno`]).
    pub(crate) sealed_seqno: Option<SeqNo>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlushTask({})", self.keyspace.name)
    }
}
