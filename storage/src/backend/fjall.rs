//! The production backend: one fjall database, one fjall keyspace per [`Space`].

use super::{Backend, Durability, KeyRange, Keys, Pairs, ReadView, Slice, Space, WriteBatch};
use crate::StorageError;
use fjall::{
    config::CompressionPolicy, AbstractTree, CompressionType, Database, Keyspace,
    KeyspaceCreateOptions, KvSeparationOptions, OwnedWriteBatch, PersistMode, Readable, Snapshot,
};
use std::path::Path;
use std::time::Duration;

/// Memtable of the `log` keyspace, which takes nearly every byte written. Small enough that the
/// active memtable plus the few sealed ones waiting for a flush stay far below the node's memory
/// budget, large enough that flushes are not constant.
pub(crate) const LOG_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// Memtables of the index and state keyspaces, whose rows are tens of bytes.
pub(crate) const SMALL_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;
/// Journals are replayed on open: a cap keeps restarts short (fjall flushes memtables to
/// release old journals once the cap is reached).
const MAX_JOURNAL_BYTES: u64 = 128 * 1024 * 1024;
/// How fast a memtable flush writes its blob file while it keeps up with the writers: a 16 MiB
/// flush then takes half a second instead of a 30 ms burst, which every journal `fdatasync`
/// issued meanwhile (every acks=all write) had to wait behind. On one disk shared by three
/// replicas that flush the same writes at about the same moment, the burst set the produce
/// p99 at replication factor 3 (BENCHMARKS.md, "Flushes paced"). A flush that falls behind
/// (another memtable sealed) goes at full speed, so throughput is not capped by this.
const FLUSH_PACE_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;
/// Values from this size up go to blob files, which compaction never rewrites: record payloads
/// then hit the disk twice (journal, blob) instead of once per LSM level. Smaller entries (a
/// batch of a few small records, which a producer with little linger sends) stay in the tables
/// with their keys, where every compaction rewrites them.
const BLOB_THRESHOLD_BYTES: u32 = 1024;
/// A blob file whose removed share reaches this is rewritten with its live values only, when a
/// compaction meets it (every such file, not fjall's default of the oldest quarter of them,
/// which is none while fewer than four are stale). A file whose values are all removed is
/// deleted whatever this says; retention removes the oldest values first, so that is the
/// usual case, and this bounds what a deleted topic's values can leave in files it shared.
const BLOB_STALENESS: f32 = 0.5;

/// How long a reclaim pass waits for a flush it asked for, polling every [`FLUSH_POLL`].
const FLUSH_WAIT: Duration = Duration::from_secs(30);
const FLUSH_POLL: Duration = Duration::from_millis(10);
/// See `FjallBackend::reclaim`: no log key is this short, so removing it changes nothing.
const RECLAIM_NUDGE_KEY: &[u8] = b"reclaim";
/// A reclaim pass compacts the log's tables once tombstones make up this fraction (1/n) of
/// their items. A major compaction rewrites every table, so it must wait until it returns a
/// share of what it rewrites: with 1/8, tombstones `t` and their values `t` out of `live + 2t`
/// items, the removed entries make up at least a sixth of the live ones, so compactions write
/// at most about six times the table bytes that removals free, whatever the removal rate.
const COMPACT_AT_TOMBSTONE_FRACTION: u64 = 8;
/// A compacting pass ends with one nudge (see `reclaim`), whose tombstone is no removal.
const NUDGE_TOMBSTONES: u64 = 1;

// Field order is drop order: the keyspaces go before the database.
pub(crate) struct FjallBackend {
    spaces: Vec<Keyspace>,
    db: Database,
}

fn small_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(SMALL_MEMTABLE_BYTES)
}

fn log_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(LOG_MEMTABLE_BYTES)
        .data_block_compression_policy(CompressionPolicy::disabled())
        .with_kv_separation(Some(
            KvSeparationOptions::default()
                .separation_threshold(BLOB_THRESHOLD_BYTES)
                .compression(CompressionType::None)
                .staleness_threshold(BLOB_STALENESS)
                .age_cutoff(1.0),
        ))
}

impl FjallBackend {
    /// # Errors
    /// fjall's error if the directory cannot be opened or recovered (`Locked` while another
    /// handle has it open).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<FjallBackend, StorageError> {
        // Record batches are opaque producer data: compressing them is the producer's choice,
        // and LZ4 on the write path cost half the broker's CPU in `gregor perf produce` (see
        // BENCHMARKS.md). Only the log's large values are affected; small rows stay as fjall sets.
        let db = Database::builder(path)
            .cache_size(cache_bytes)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .journal_compression(CompressionType::None)
            .flush_pace(Some(FLUSH_PACE_BYTES_PER_SEC))
            .open()?;
        let spaces = Space::ALL
            .iter()
            .map(|space| match space {
                Space::Log => db.keyspace(space.name(), log_keyspace),
                _ => db.keyspace(space.name(), small_keyspace),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FjallBackend { spaces, db })
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space.index()]
    }
}

impl Backend for FjallBackend {
    fn view(&self) -> Result<Box<dyn ReadView + '_>, StorageError> {
        Ok(Box::new(FjallView {
            snap: self.db.snapshot(),
            backend: self,
        }))
    }

    fn batch(&self) -> Box<dyn WriteBatch + '_> {
        // `Database::batch` writes with `PersistMode::Buffer`: durability is `persist`'s job.
        Box::new(FjallBatch {
            batch: self.db.batch(),
            backend: self,
        })
    }

    fn persist(&self, mode: Durability) -> Result<(), StorageError> {
        let mode = match mode {
            Durability::Buffer => PersistMode::Buffer,
            Durability::SyncData => PersistMode::SyncData,
        };
        Ok(self.db.persist(mode)?)
    }

    fn write_buffer_mark(&self) -> u64 {
        self.space(Space::Log).tree.active_memtable().id()
    }

    /// Writes recovered from the journal sit in the memtables and may hold removals (besides
    /// taking memory until they are flushed); tombstones already in the tables are weighed as
    /// after any removal.
    fn reclaim_pending(&self) -> bool {
        let log = self.space(Space::Log);
        let buffered = !log.tree.active_memtable().is_empty() || log.sealed_memtable_count() > 0;
        buffered || worth_compacting(log)
    }

    /// Removing keys writes tombstones; the blob files their values live in are deleted (or
    /// rewritten, see [`BLOB_STALENESS`]) only once a compaction merges the tombstones with the
    /// pointers they cover. So: flush the memtables (when asked), which also lets fjall delete
    /// journals that only those memtables still needed, then, when the tombstones make up
    /// enough of the log's tables (see [`COMPACT_AT_TOMBSTONE_FRACTION`]), compact those tables
    /// into one run. The tables hold keys, blob pointers and the entries too small for a blob
    /// file (see [`BLOB_THRESHOLD_BYTES`]).
    ///
    /// After a compacting pass, every blob file whose values were all removed is gone; a file
    /// still holding live values is rewritten without the removed ones once they make up
    /// [`BLOB_STALENESS`] of it. Below the fraction the removals wait for more, or for fjall's
    /// own compactions, which drop what they meet as writes come.
    ///
    /// `rotate_memtable`, `sealed_memtable_count`, `major_compact` and the tree's
    /// `current_version` are public in fjall 3.1 but hidden from its documentation; fjall's own
    /// tests use them.
    fn reclaim(&self, flush: bool, stop: &dyn Fn() -> bool) -> Result<bool, StorageError> {
        if flush {
            for space in &self.spaces {
                if !flush_memtable(space, stop)? {
                    return Ok(false);
                }
            }
        }
        let log = self.space(Space::Log);
        if !worth_compacting(log) {
            return Ok(false);
        }
        if !major_compact(log, stop)? {
            return Ok(false);
        }
        if log.fragmented_blob_bytes() > 0 {
            // fjall drops a blob file whose values a compaction removed only at the next
            // compaction that changes the tree (it checks before counting what the current one
            // removed), and deletes the file once the versions listing it are released, which
            // happens at a memtable rotation after a newer write. With no writes coming, make
            // both happen.
            if !nudge(log, stop)? {
                return Ok(true);
            }
            major_compact(log, stop)?;
            nudge(log, stop)?;
        }
        Ok(true)
    }
}

/// Whether the tombstones in the log's tables make up [`COMPACT_AT_TOMBSTONE_FRACTION`] of
/// their items. Counting reads table metadata only. The count covers what fjall's own
/// compactions have not yet dropped, so a restart sees what an earlier run left.
fn worth_compacting(log: &Keyspace) -> bool {
    let removed = log.tree.tombstone_count().saturating_sub(NUDGE_TOMBSTONES);
    let items = log.approximate_len() as u64;
    removed > 0 && removed.saturating_mul(COMPACT_AT_TOMBSTONE_FRACTION) >= items
}

/// Compacts every table of `log` into one run. fjall's major compaction silently does nothing
/// while one of its own compactions holds a table (as one may after the flush a pass asked
/// for), so this retries until the tree has changed; false when `stop` said to give up first.
///
/// # Errors
/// fjall's error; `Io` if the tables stay busy for [`FLUSH_WAIT`].
fn major_compact(log: &Keyspace, stop: &dyn Fn() -> bool) -> Result<bool, StorageError> {
    let polls = FLUSH_WAIT.as_millis() / FLUSH_POLL.as_millis();
    for _ in 0..polls {
        let before = log.tree.current_version().id();
        log.major_compact()?;
        if log.tree.current_version().id() != before {
            return Ok(true);
        }
        if stop() {
            return Ok(false);
        }
        std::thread::sleep(FLUSH_POLL);
    }
    Err(StorageError::Io(std::io::Error::other(format!(
        "the log's tables stayed busy for {FLUSH_WAIT:?}; no compaction ran"
    ))))
}

/// Writes a tombstone for a key that never exists (log keys are 16 bytes) and flushes it: a
/// write and a memtable rotation that change no read. False: stopped before the flush ended.
fn nudge(log: &Keyspace, stop: &dyn Fn() -> bool) -> Result<bool, StorageError> {
    if stop() {
        return Ok(false);
    }
    log.remove(RECLAIM_NUDGE_KEY)?;
    flush_memtable(log, stop)
}

/// Seals the keyspace's memtable and waits until fjall's workers have flushed it; false when
/// `stop` said to give up first.
///
/// # Errors
/// `Io` if the flush does not end within [`FLUSH_WAIT`] (fjall's workers stopped or are stuck).
fn flush_memtable(space: &Keyspace, stop: &dyn Fn() -> bool) -> Result<bool, StorageError> {
    space.rotate_memtable()?;
    let polls = FLUSH_WAIT.as_millis() / FLUSH_POLL.as_millis();
    for _ in 0..polls {
        if space.sealed_memtable_count() == 0 {
            return Ok(true);
        }
        if stop() {
            return Ok(false);
        }
        std::thread::sleep(FLUSH_POLL);
    }
    Err(StorageError::Io(std::io::Error::other(format!(
        "a flush of keyspace {:?} did not end within {FLUSH_WAIT:?}",
        space.name()
    ))))
}

struct FjallView<'a> {
    snap: Snapshot,
    backend: &'a FjallBackend,
}

impl ReadView for FjallView<'_> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Slice>, StorageError> {
        Ok(self.snap.get(self.backend.space(space), key)?)
    }

    fn range<'a>(&'a self, space: Space, range: KeyRange<'_>) -> Pairs<'a> {
        let iter = self
            .snap
            .range::<&[u8], _>(self.backend.space(space), range);
        Box::new(iter.map(|guard| Ok(guard.into_inner()?)))
    }

    fn keys<'a>(&'a self, space: Space, range: KeyRange<'_>) -> Keys<'a> {
        let iter = self
            .snap
            .range::<&[u8], _>(self.backend.space(space), range);
        Box::new(iter.map(|guard| Ok(guard.key()?)))
    }
}

struct FjallBatch<'a> {
    batch: OwnedWriteBatch,
    backend: &'a FjallBackend,
}

impl WriteBatch for FjallBatch<'_> {
    fn insert(&mut self, space: Space, key: &[u8], value: Slice) {
        self.batch.insert(self.backend.space(space), key, value);
    }

    fn remove(&mut self, space: Space, key: &[u8]) {
        self.batch.remove(self.backend.space(space), key);
    }

    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        Ok(self.batch.commit()?)
    }
}
