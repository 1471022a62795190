//! The store handle: opening the database, per-group write locks, poisoning and group commit.
//!
//! Reads go through one fjall snapshot per call, so a call sees one consistent state across
//! keyspaces even while another thread applies or trims the same group. Writes that read state
//! first (append, apply, retention, deletion) hold their group's lock, so two of them never
//! interleave on one group; different groups proceed in parallel.

use crate::keys::{self, TAG_FLOOR, TAG_GROUP_STATE};
use crate::state::{decode_floor, GroupState, LogFloor};
use crate::sync::{self, Poison, SyncCallback, SyncThread};
use crate::{FlushPolicy, GroupId, StorageError, StoreOptions, SyncMode};
use fjall::{
    config::CompressionPolicy, CompressionType, Database, Keyspace, KeyspaceCreateOptions,
    KvSeparationOptions, OwnedWriteBatch, PersistMode, Readable, Snapshot,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

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
/// Stripes of the per-group write lock; collisions only serialize unrelated groups briefly.
const LOCK_STRIPES: usize = 64;

const FORMAT_KEY: &[u8] = b"format";
const STORE_FORMAT: u8 = 1;

/// The node's storage: a cheap, cloneable handle; every clone shares one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

// Field order is drop order: the sync thread runs its last fsync before the keyspaces and the
// database go.
pub(crate) struct Inner {
    sync_thread: Option<SyncThread>,
    pub poison: Arc<Poison>,
    locks: Vec<Mutex<()>>,
    tails: Mutex<BTreeMap<GroupId, Tail>>,
    pub options: StoreOptions,
    pub log: Keyspace,
    pub meta: Keyspace,
    pub offsets: Keyspace,
    pub times: Keyspace,
    pub kv: Keyspace,
    pub db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn small_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(SMALL_MEMTABLE_BYTES)
}

impl Store {
    /// Opens (or creates) the database in `path`.
    ///
    /// # Errors
    /// fjall's error if the directory cannot be opened or recovered (`Locked` while another
    /// handle has it open); `Corrupt` if it holds a store format this build does not know; `Io`
    /// if the sync thread cannot start.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StorageError> {
        // Record batches are opaque producer data: compressing them is the producer's choice,
        // and LZ4 on the write path cost half the broker's CPU in `gregor perf produce` (see
        // BENCHMARKS.md). Only the log's large values are affected; small rows stay as fjall sets.
        let db = Database::builder(path)
            .cache_size(options.cache_bytes)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .journal_compression(CompressionType::None)
            .open()?;
        let log = db.keyspace("log", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(LOG_MEMTABLE_BYTES)
                .data_block_compression_policy(CompressionPolicy::disabled())
                .with_kv_separation(Some(
                    KvSeparationOptions::default()
                        .separation_threshold(BLOB_THRESHOLD_BYTES)
                        .compression(CompressionType::None),
                ))
        })?;
        let meta = db.keyspace("meta", small_keyspace)?;
        let offsets = db.keyspace("offsets", small_keyspace)?;
        let times = db.keyspace("times", small_keyspace)?;
        let kv = db.keyspace("kv", small_keyspace)?;
        let info = db.keyspace("info", small_keyspace)?;
        match info.get(FORMAT_KEY)? {
            None => {
                let mut batch = db.batch();
                batch.insert(&info, FORMAT_KEY, [STORE_FORMAT]);
                batch.commit()?;
            }
            Some(format) if *format == [STORE_FORMAT] => {}
            Some(format) => {
                return Err(StorageError::corrupt(format!(
                    "store format {format:?} is not supported (this build reads {STORE_FORMAT})"
                )))
            }
        }
        let poison = Arc::new(Poison::default());
        let sync_thread = match (options.sync_mode, options.flush) {
            (SyncMode::Thread, FlushPolicy::Always) => Some(SyncThread::spawn(
                db.clone(),
                PersistMode::SyncData,
                Arc::clone(&poison),
            )?),
            _ => None,
        };
        let locks = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        let inner = Inner {
            sync_thread,
            poison,
            locks,
            tails: Mutex::new(BTreeMap::new()),
            options,
            log,
            meta,
            offsets,
            times,
            kv,
            db,
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Calls `done` once every write made before this call is durable per the flush policy.
    ///
    /// With `SyncMode::Thread` and `FlushPolicy::Always`, `done` runs on the `gregor-sync`
    /// thread, so it must be quick (send on a channel). Otherwise it runs before this returns.
    /// A failed fsync poisons the store: `done` and every later call get `Poisoned`.
    pub fn request_sync(&self, done: Box<dyn FnOnce(Result<(), StorageError>) + Send>) {
        let done: SyncCallback = done;
        if let Err(poisoned) = self.inner.poison.check() {
            return done(Err(poisoned));
        }
        match (&self.inner.sync_thread, self.inner.options.flush) {
            (Some(thread), _) => thread.request(done),
            (None, FlushPolicy::Always) => done(self.persist(PersistMode::SyncData)),
            // Every write already reached the OS with `write(2)` when it committed.
            (None, FlushPolicy::Never) => done(self.persist(PersistMode::Buffer)),
        }
    }

    /// Makes every earlier write durable per the flush policy, on the calling thread.
    ///
    /// # Errors
    /// `Poisoned` if this or an earlier fsync failed.
    pub fn sync(&self) -> Result<(), StorageError> {
        match self.inner.options.flush {
            FlushPolicy::Always => self.persist(PersistMode::SyncData),
            FlushPolicy::Never => self.persist(PersistMode::Buffer),
        }
    }

    fn persist(&self, mode: PersistMode) -> Result<(), StorageError> {
        sync::persist(&self.inner.db, mode, &self.inner.poison)
    }

    /// Takes the group's write lock after checking the store is still trustworthy.
    pub(crate) fn lock_group(&self, group: GroupId) -> Result<MutexGuard<'_, ()>, StorageError> {
        self.inner.poison.check()?;
        let stripe = &self.inner.locks[(group.0 % LOCK_STRIPES as u64) as usize];
        // The mutex guards no data, so a panic while it was held left nothing inconsistent.
        Ok(stripe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// A consistent read view, refused once the store is poisoned.
    pub(crate) fn view(&self) -> Result<View<'_>, StorageError> {
        self.inner.poison.check()?;
        Ok(View {
            snap: self.inner.db.snapshot(),
            inner: &self.inner,
        })
    }

    /// What is known about the top of the group's log; read and updated under the group lock.
    pub(crate) fn tail(&self, group: GroupId) -> Tail {
        let tails = self
            .inner
            .tails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tails.get(&group).copied().unwrap_or_default()
    }

    pub(crate) fn set_tail(&self, group: GroupId, tail: Option<Tail>) {
        let mut tails = self
            .inner
            .tails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match tail {
            Some(tail) => tails.insert(group, tail),
            None => tails.remove(&group),
        };
    }

    pub(crate) fn batch(&self) -> OwnedWriteBatch {
        // `Database::batch` writes with `PersistMode::Buffer`: durability is `request_sync`'s job.
        self.inner.db.batch()
    }

    /// Commits atomically. A failed journal write is as fatal as a failed fsync: fjall poisons
    /// its database, and so do we, so reads stop too.
    pub(crate) fn commit(&self, batch: OwnedWriteBatch) -> Result<(), StorageError> {
        batch
            .commit()
            .map_err(|e| self.inner.poison.poison(&format_args!("write failed: {e}")))
    }
}

/// Upper bounds on the highest index in a group's log and among its membership rows (`None`:
/// not known since the store opened). Appends check them before probing for a suffix to
/// truncate: on the `log` tree that probe costs more than the rest of an append together.
/// Removing entries never invalidates an upper bound, so only appends and truncations set them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tail {
    pub log: Option<u64>,
    pub membership: Option<u64>,
}

/// One snapshot of the whole database.
pub(crate) struct View<'a> {
    pub snap: Snapshot,
    pub inner: &'a Inner,
}

impl View<'_> {
    pub fn group_state(&self, group: GroupId) -> Result<GroupState, StorageError> {
        match self
            .snap
            .get(&self.inner.meta, keys::meta_key(group, TAG_GROUP_STATE))?
        {
            Some(value) => GroupState::decode(&value),
            None => Ok(GroupState::default()),
        }
    }

    pub fn floor(&self, group: GroupId) -> Result<LogFloor, StorageError> {
        match self
            .snap
            .get(&self.inner.meta, keys::meta_key(group, TAG_FLOOR))?
        {
            Some(value) => decode_floor(&value),
            None => Ok(LogFloor::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Offset, RetentionPolicy};

    fn options() -> StoreOptions {
        StoreOptions {
            flush: FlushPolicy::Always,
            sync_mode: SyncMode::Thread,
            cache_bytes: 1 << 20,
        }
    }

    #[test]
    fn poisoned_store_refuses_every_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), options()).expect("open");
        let group = GroupId(1);
        store.save_hard_state(group, b"x").expect("healthy write");
        // What the sync thread does when fdatasync fails.
        store.inner.poison.poison(&"fdatasync: EIO");
        let poisoned = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Poisoned(c)) if c == "fdatasync: EIO");
        assert!(poisoned(store.save_hard_state(group, b"y")));
        assert!(poisoned(store.hard_state(group).map(drop)));
        assert!(poisoned(
            store
                .append_entries(group, &[])
                .and(store.delete_entries_from(group, 1))
        ));
        assert!(poisoned(store.read_entries(group, 0, 9).map(drop)));
        assert!(poisoned(store.last_entry(group).map(drop)));
        assert!(poisoned(store.apply_up_to(group, 1).map(drop)));
        assert!(poisoned(store.partition_state(group).map(drop)));
        assert!(poisoned(store.read_records(group, Offset(0), 1).map(drop)));
        assert!(poisoned(store.offset_for_timestamp(group, 0).map(drop)));
        assert!(poisoned(store.kv_get(group, b"k").map(drop)));
        let policy = RetentionPolicy::KEEP_FOREVER;
        assert!(poisoned(
            store.enforce_retention(group, policy, 0).map(drop)
        ));
        assert!(poisoned(store.delete_group(group).map(drop)));
        assert!(poisoned(store.sync()));
        let (tx, rx) = std::sync::mpsc::channel();
        store.request_sync(Box::new(move |r| tx.send(r).expect("send")));
        assert!(poisoned(rx.recv().expect("answered")));
    }

    #[test]
    fn unknown_store_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), options()).expect("open");
            let info = store
                .inner
                .db
                .keyspace("info", small_keyspace)
                .expect("info");
            info.insert(FORMAT_KEY, [STORE_FORMAT + 1]).expect("write");
        }
        assert!(matches!(
            Store::open(dir.path(), options()),
            Err(StorageError::Corrupt(_))
        ));
    }
}
