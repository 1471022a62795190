// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use crate::{
    flush::Task, snapshot_tracker::SnapshotTracker, stats::Stats,
    write_buffer_manager::WriteBufferManager,
};
use lsm_tree::AbstractTree;

/// Runs flush logic.
pub fn run(
    task: &Task,
    write_buffer_manager: &WriteBufferManager,
    snapshot_tracker: &SnapshotTracker,
    _stats: &Stats,
) -> crate::Result<()> {
    log::debug!("Flushing keyspace {:?}", task.keyspace.name);

    let gc_watermark = snapshot_tracker.get_seqno_safe_to_gc();

    let flush_lock = task.keyspace.tree.get_flush_lock();

    match task
        .keyspace
        .tree
        .flush(&flush_lock, gc_watermark)
        .inspect_err(|e| {
            log::error!("Flush error: {e:?}");
        })? {
        Some(flushed_bytes) => {
            write_buffer_manager.free(flushed_bytes);

            log::debug!("Flush completed");
        }
        None => {
            log::trace!("Flush did not return a table");
        }
    }

    // The task's memtable was sealed before the task was queued, and a sealed memtable leaves
    // the tree only with a durable version: a flush's, once its tables are written, or a
    // clear's, which supersedes it. Whether this flush took it or an earlier one did (`None`
    // above), its writes are persisted now.
    if let Some(seqno) = task.sealed_seqno {
        task.keyspace.flushed_seqno.advance(seqno);
    }

    Ok(())
}
