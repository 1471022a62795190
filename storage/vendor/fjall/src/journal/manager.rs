// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use super::writer::Writer;
use crate::Keyspace;
use lsm_tree::SeqNo;
use std::{
    path::{Path, PathBuf},
    sync::MutexGuard,
    time::Duration,
};

/// A removed journal's space is returned this much at a time...
const RELEASE_STEP_BYTES: u64 = 1024 * 1024;
/// ...with this pause between steps (about 400 MB/s; a 64 MB journal takes a sixth of a second).
const RELEASE_STEP_PAUSE: Duration = Duration::from_micros(2_500);

/// Journals that maintenance evicted, to delete with [`EvictedJournals::remove`] once the
/// journal manager's lock is released.
///
/// Deleting a 64 MB journal in one `unlink` frees all its extents in one filesystem
/// transaction; on ext4 mounted with `discard` that transaction also discards them, and every
/// `fdatasync` of the live journal issued meanwhile (each writer's commit) waited 50-100 ms
/// behind it. Truncating the file a step at a time, with a pause between steps, spreads that
/// work over many small transactions: the syncs meanwhile wait a few milliseconds at most.
/// A crash part way leaves a shortened journal whose writes were all flushed, which recovery
/// reads up to its cut and which maintenance evicts again.
#[must_use]
pub struct EvictedJournals(Vec<PathBuf>);

impl EvictedJournals {
    /// Deletes the journals, returning their space gradually.
    ///
    /// # Errors
    ///
    /// Will return `Err` if an IO error occurs.
    pub fn remove(self) -> crate::Result<()> {
        for path in self.0 {
            remove_gradually(&path).inspect_err(|e| {
                log::error!(
                    "Failed to clean up stale journal file at {}: {e:?}",
                    path.display(),
                );
            })?;
        }
        Ok(())
    }
}

fn remove_gradually(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => {
            let mut len = file.metadata()?.len();
            while len > RELEASE_STEP_BYTES {
                len -= RELEASE_STEP_BYTES;
                file.set_len(len)?;
                std::thread::sleep(RELEASE_STEP_PAUSE);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    std::fs::remove_file(path)
}

/// Stores the highest seqno of a keyspace found in a journal.
#[derive(Clone)]
pub struct EvictionWatermark {
    pub(crate) keyspace: Keyspace,
    pub(crate) lsn: SeqNo,
}

impl EvictionWatermark {
    /// Every write of the keyspace in the journal is persisted in tables, or was durably
    /// superseded in them (a compaction dropped it with the tombstone covering it).
    fn is_persisted(&self) -> bool {
        self.keyspace
            .persisted_seqno()
            .is_some_and(|seqno| seqno >= self.lsn)
    }
}

impl std::fmt::Debug for EvictionWatermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.keyspace.name, self.lsn)
    }
}

pub struct Item {
    pub(crate) path: PathBuf,
    pub(crate) size_in_bytes: u64,
    pub(crate) watermarks: Vec<EvictionWatermark>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JournalManagerItem {:?} => {:#?}",
            self.path, self.watermarks
        )
    }
}

/// The [`JournalManager`] keeps track of sealed journals that are being flushed.
///
/// Each journal may contain items of different keyspaces.
#[expect(clippy::module_name_repetitions)]
#[derive(Debug)]
pub struct JournalManager {
    items: Vec<Item>,
    disk_space_in_bytes: u64,
}

impl Drop for JournalManager {
    fn drop(&mut self) {
        log::trace!("Dropping journal manager");

        #[cfg(feature = "__internal_whitebox")]
        crate::drop::decrement_drop_counter();
    }
}

impl JournalManager {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "__internal_whitebox")]
        crate::drop::increment_drop_counter();

        Self {
            items: Vec::with_capacity(10),
            disk_space_in_bytes: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    pub(crate) fn enqueue(&mut self, item: Item) {
        self.disk_space_in_bytes = self.disk_space_in_bytes.saturating_add(item.size_in_bytes);
        self.items.push(item);
    }

    /// Returns the number of journals
    pub(crate) fn journal_count(&self) -> usize {
        // NOTE: + 1 = active journal
        self.sealed_journal_count() + 1
    }

    /// Returns the number of sealed journals
    pub(crate) fn sealed_journal_count(&self) -> usize {
        self.items.len()
    }

    /// Returns the number of bytes used on disk by journals
    pub(crate) fn disk_space_used(&self) -> u64 {
        self.disk_space_in_bytes
    }

    /// Gets keyspaces to be flushed so that the oldest journal can be safely evicted
    pub(crate) fn get_keyspaces_to_flush_for_oldest_journal_eviction(&self) -> Vec<Keyspace> {
        let mut items = vec![];

        if let Some(item) = self.items.first() {
            for item in &item.watermarks {
                if !item.is_persisted() {
                    items.push(item.keyspace.clone());
                }
            }
        }

        items
    }

    /// Performs maintenance, evicting the old journals whose writes are all persisted; the
    /// caller deletes them ([`EvictedJournals::remove`]) after releasing the manager's lock.
    pub(crate) fn maintenance(&mut self) -> EvictedJournals {
        log::debug!("Running journal maintenance");

        let mut evicted = EvictedJournals(Vec::new());
        loop {
            let Some(item) = self.items.first() else {
                return evicted;
            };

            // TODO: unit test: check deleted keyspace does not prevent journal eviction
            for item in &item.watermarks {
                // Only check keyspace seqno if not deleted
                if !item
                    .keyspace
                    .is_deleted
                    .load(std::sync::atomic::Ordering::Acquire)
                    && !item.is_persisted()
                {
                    log::trace!(
                        "Keyspace {:?} not flushed enough to evict journal",
                        item.keyspace.name,
                    );
                    return evicted;
                }
            }

            // NOTE: Once the LSN of *every* keyspace's tables [1] is higher than the journal's stored keyspace seqno,
            // it can be deleted from disk, as we know the entire journal has been flushed to tables [2].
            //
            // [1] We cannot use the keyspace's max seqno, because the memtable will get writes, which increase the seqno.
            // We *need* to check the tables specifically, they are the source of truth for flushed data;
            // or what flushes persisted into tables that compactions have dropped since (see `FlushedSeqno`).
            //
            // [2] Checking the seqno is safe because the queues inside the flush manager are FIFO.
            //
            // IMPORTANT: On recovery, the journals need to be flushed from oldest to newest.
            log::trace!("Evicting fully flushed journal at {}", item.path.display());

            evicted.0.push(item.path.clone());
            self.disk_space_in_bytes = self.disk_space_in_bytes.saturating_sub(item.size_in_bytes);
            self.items.remove(0);
        }
    }

    pub(crate) fn rotate_journal(
        &mut self,
        journal_writer: &mut MutexGuard<Writer>,
        watermarks: Vec<EvictionWatermark>,
        prepared: Option<Writer>,
    ) -> crate::Result<()> {
        let journal_size = journal_writer.len()?;

        let (sealed_path, _) = journal_writer.rotate_into(prepared)?;

        self.enqueue(Item {
            path: sealed_path,
            watermarks,
            size_in_bytes: journal_size,
        });

        Ok(())
    }
}

#[cfg(test)]
mod release_tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn an_evicted_journal_is_released_a_step_at_a_time_then_removed() -> crate::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("7.jnl");
        std::fs::write(&path, vec![1u8; (4 * RELEASE_STEP_BYTES + 1000) as usize])?;

        let start = Instant::now();
        EvictedJournals(vec![path.clone()]).remove()?;

        assert!(!path.try_exists()?);
        // Four steps down to 1,000 bytes, each followed by a pause; one unlink would not wait.
        assert!(start.elapsed() >= 4 * RELEASE_STEP_PAUSE, "{:?}", start.elapsed());
        Ok(())
    }

    #[test]
    fn a_journal_already_gone_is_not_an_error() -> crate::Result<()> {
        let dir = tempfile::tempdir()?;
        EvictedJournals(vec![dir.path().join("8.jnl")]).remove()
    }
}
