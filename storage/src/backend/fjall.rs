//! The production backend: one fjall database, one fjall keyspace per [`Space`].

use super::{Backend, Durability, KeyRange, Keys, Pairs, ReadView, Slice, Space, WriteBatch};
use crate::StorageError;
use fjall::{
    config::CompressionPolicy, CompressionType, Database, Keyspace, KeyspaceCreateOptions,
    KvSeparationOptions, OwnedWriteBatch, PersistMode, Readable, Snapshot,
};
use std::path::Path;

/// Memtable of the `log` keyspace, which takes nearly every byte written. Small enough that the
/// active memtable plus the few sealed ones waiting for a flush stay far below the node's memory
/// budget, large enough that flushes are not constant.
pub(crate) const LOG_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// Memtables of the index and state keyspaces, whose rows are tens of bytes.
pub(crate) const SMALL_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;
/// Journals are replayed on open: a cap keeps restarts short (fjall flushes memtables to
/// release old journals once the cap is reached).
const MAX_JOURNAL_BYTES: u64 = 128 * 1024 * 1024;
/// Values from this size up go to blob files, which compaction never rewrites: record payloads
/// then hit the disk twice (journal, blob) instead of once per LSM level.
const BLOB_THRESHOLD_BYTES: u32 = 1024;

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
                .compression(CompressionType::None),
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
