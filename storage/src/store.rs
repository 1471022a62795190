//! The store handle: opening the database, per-group write locks, poisoning and group commit.
//!
//! Reads go through one fjall snapshot per call, so a call sees one consistent state across
//! keyspaces even while another thread applies or trims the same group. Writes that read state
//! first (append, apply, retention, deletion) hold their group's lock, so two of them never
//! interleave on one group; different groups proceed in parallel.

use crate::backend::fjall::FjallBackend;
use crate::backend::model::ModelDisk;
use crate::backend::{
    key_range, prefix_end, Backend, Durability, Keys, Pairs, ReadView, Slice, Space, WriteBatch,
};
use crate::closed::{CloseGuard, StoreClosed};
use crate::io::IoPool;
use crate::keys::{self, TAG_FLOOR, TAG_GROUP_STATE};
use crate::poisoned::StorePoisoned;
use crate::reclaim::{ReclaimCounts, Reclaimer};
use crate::state::{decode_floor, GroupState, LogFloor};
use crate::sync::{self, Poison, SyncCallback, SyncJob, SyncThread};
use crate::{FlushPolicy, GroupId, StorageError, StoreOptions, SyncMode};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Stripes of the per-group write lock; collisions only serialize unrelated groups briefly.
const LOCK_STRIPES: usize = 64;

const FORMAT_KEY: &[u8] = b"format";
/// Version 2 adds entry kinds, producer rows and a longer group state (see `entry.rs` and
/// `state.rs`); every value version 1 wrote is still read as it is, so opening a version 1
/// store only records the new version, which keeps older builds from misreading it.
const STORE_FORMAT: u8 = 2;
const STORE_FORMAT_V1: u8 = 1;

/// The node's storage: a cheap, cloneable handle; every clone shares one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

// Field order is drop order: the storage threads finish their job, the sync thread runs its
// last fsync, and the reclaim thread its last pass, before the backend goes; the close guard
// goes last and tells whoever waits that the database is released.
pub(crate) struct Inner {
    pub io: Option<IoPool>,
    sync_thread: Option<SyncThread>,
    reclaimer: Option<Reclaimer>,
    pub poison: Arc<Poison>,
    locks: Vec<Mutex<()>>,
    tails: Mutex<BTreeMap<GroupId, Tail>>,
    pub options: StoreOptions,
    pub backend: Arc<dyn Backend>,
    closed: CloseGuard,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the fjall database in `path`.
    ///
    /// # Errors
    /// fjall's error if the directory cannot be opened or recovered (`Locked` while another
    /// handle has it open); `Corrupt` if it holds a store format this build does not know; `Io`
    /// if the sync or the reclaim thread cannot start.
    ///
    /// The space of removed entries returns to the file system within a few seconds of the
    /// removal that brings them to a sixth of the live entries (see `reclaim.rs`), on the
    /// `gregor-reclaim` thread, which this starts.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StorageError> {
        let backend = FjallBackend::open(path, options.cache_bytes)?;
        Store::on_backend(Arc::new(backend), options, true)
    }

    /// Opens a store on a simulated disk: what an earlier store on it made durable (all of it
    /// after a clean close, what the crash kept after [`ModelDisk::crash`]).
    ///
    /// # Errors
    /// `Io` while another store has the disk open; `Corrupt` as [`Store::open`].
    pub fn open_model(disk: &ModelDisk, options: StoreOptions) -> Result<Store, StorageError> {
        Store::on_backend(Arc::new(disk.open()?), options, false)
    }

    fn on_backend(
        backend: Arc<dyn Backend>,
        options: StoreOptions,
        reclaim: bool,
    ) -> Result<Store, StorageError> {
        check_format(&*backend)?;
        let poison = Arc::new(Poison::default());
        let reclaimer = match reclaim {
            true => Some(Reclaimer::spawn(Arc::clone(&backend), Arc::clone(&poison))?),
            false => None,
        };
        let sync_thread = match (&options.sync_mode, options.flush) {
            (SyncMode::Thread, FlushPolicy::Always) => Some(SyncThread::spawn(
                Arc::clone(&backend),
                Durability::SyncData,
                Arc::clone(&poison),
            )?),
            _ => None,
        };
        let io = match options.sync_mode {
            SyncMode::Thread => Some(IoPool::spawn()?),
            _ => None,
        };
        let locks = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        let inner = Inner {
            io,
            sync_thread,
            reclaimer,
            poison,
            locks,
            tails: Mutex::new(BTreeMap::new()),
            options,
            backend,
            closed: CloseGuard::default(),
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Resolves once this store is closed: every handle dropped, the threads joined, the
    /// database released. Hold it, drop the handles, then await it before opening the same
    /// directory again in this process.
    pub fn when_closed(&self) -> StoreClosed {
        self.inner.closed.watch()
    }

    /// Resolves with the cause the moment this store poisons itself (a failed fsync or journal
    /// write) or is fenced, after which every call is refused for good; with `None` once it
    /// closes unpoisoned. A node waits on it to stop serving: nothing it could still answer
    /// from this store can be trusted, and only a restart (which recovers from the last
    /// successful fsync) makes the node useful again.
    pub fn when_poisoned(&self) -> StorePoisoned {
        self.inner.poison.watch()
    }

    /// Calls `done` once every write made before this call is durable per the flush policy.
    ///
    /// With `SyncMode::Thread` and `FlushPolicy::Always`, `done` runs on the `gregor-sync`
    /// thread, so it must be quick (send on a channel). With `SyncMode::External` it runs when
    /// the runner runs the job it was handed. Otherwise it runs before this returns.
    /// A failed fsync poisons the store: `done` and every later call get `Poisoned`.
    pub fn request_sync(&self, done: Box<dyn FnOnce(Result<(), StorageError>) + Send>) {
        let done: SyncCallback = done;
        if let Err(poisoned) = self.inner.poison.check() {
            return done(Err(poisoned));
        }
        let mode = self.durability();
        match (&self.inner.sync_thread, &self.inner.options.sync_mode) {
            (Some(thread), _) => thread.request(done),
            (None, SyncMode::External(runner)) => runner.run(SyncJob::new(
                Arc::clone(&self.inner.backend),
                Arc::clone(&self.inner.poison),
                mode,
                done,
            )),
            (None, _) => done(self.persist(mode)),
        }
    }

    /// Refuses every later read, write and fsync of this store and its clones, as a poisoned
    /// store does. The simulation fences a crashed node's store with it when the disk is real
    /// fjall (a model disk has its own crash): a dead process writes nothing more, whatever
    /// its actors still try while they are torn down.
    pub fn fence(&self, cause: &str) {
        self.inner.poison.poison(&cause);
    }

    /// Makes every earlier write durable per the flush policy, on the calling thread.
    ///
    /// # Errors
    /// `Poisoned` if this or an earlier fsync failed.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.persist(self.durability())
    }

    fn durability(&self) -> Durability {
        match self.inner.options.flush {
            FlushPolicy::Always => Durability::SyncData,
            // Every write already reached the OS with `write(2)` when it committed.
            FlushPolicy::Never => Durability::Buffer,
        }
    }

    fn persist(&self, mode: Durability) -> Result<(), StorageError> {
        sync::persist(&*self.inner.backend, mode, &self.inner.poison)
    }

    /// What the `gregor-reclaim` thread has done since this store opened (nothing on a model
    /// disk, which has no such thread).
    pub fn reclaim_counts(&self) -> ReclaimCounts {
        self.inner
            .reclaimer
            .as_ref()
            .map_or_else(ReclaimCounts::default, Reclaimer::counts)
    }

    /// A committed batch removed log entries: their disk space is to be reclaimed.
    pub(crate) fn removed_entries(&self) {
        if let Some(reclaimer) = &self.inner.reclaimer {
            reclaimer.removed();
        }
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
            read: self.inner.backend.view()?,
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

    /// An empty write batch. It is written with `write(2)` only: durability is `request_sync`'s
    /// job.
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch {
            writes: self.inner.backend.batch(),
        }
    }

    /// Commits atomically. A failed journal write is as fatal as a failed fsync: fjall poisons
    /// its database, and so do we, so reads stop too.
    pub(crate) fn commit(&self, batch: Batch<'_>) -> Result<(), StorageError> {
        batch
            .writes
            .commit()
            .map_err(|e| self.inner.poison.poison(&format_args!("write failed: {e}")))
    }
}

fn check_format(backend: &dyn Backend) -> Result<(), StorageError> {
    let format = backend.view()?.get(Space::Info, FORMAT_KEY)?;
    match format.as_deref() {
        Some([STORE_FORMAT]) => Ok(()),
        None | Some([STORE_FORMAT_V1]) => {
            let mut batch = backend.batch();
            batch.insert(Space::Info, FORMAT_KEY, Slice::from([STORE_FORMAT]));
            batch.commit()
        }
        Some(format) => Err(StorageError::corrupt(format!(
            "store format {format:?} is not supported (this build reads {STORE_FORMAT_V1} and \
             {STORE_FORMAT})"
        ))),
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

/// Writes queued for one atomic commit.
pub(crate) struct Batch<'a> {
    writes: Box<dyn WriteBatch + 'a>,
}

impl Batch<'_> {
    pub fn insert(&mut self, space: Space, key: impl AsRef<[u8]>, value: impl Into<Slice>) {
        self.writes.insert(space, key.as_ref(), value.into());
    }

    pub fn remove(&mut self, space: Space, key: impl AsRef<[u8]>) {
        self.writes.remove(space, key.as_ref());
    }
}

/// One consistent read of the whole store.
pub(crate) struct View<'a> {
    read: Box<dyn ReadView + 'a>,
}

impl View<'_> {
    pub fn get(&self, space: Space, key: impl AsRef<[u8]>) -> Result<Option<Slice>, StorageError> {
        self.read.get(space, key.as_ref())
    }

    pub fn range<K: AsRef<[u8]>>(&self, space: Space, range: impl RangeBounds<K>) -> Pairs<'_> {
        self.read.range(space, key_range(&range))
    }

    pub fn keys<K: AsRef<[u8]>>(&self, space: Space, range: impl RangeBounds<K>) -> Keys<'_> {
        self.read.keys(space, key_range(&range))
    }

    pub fn prefix(&self, space: Space, prefix: &[u8]) -> Pairs<'_> {
        let end = prefix_end(prefix);
        let high = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.read.range(space, (Bound::Included(prefix), high))
    }

    pub fn prefix_keys(&self, space: Space, prefix: &[u8]) -> Keys<'_> {
        let end = prefix_end(prefix);
        let high = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.read.keys(space, (Bound::Included(prefix), high))
    }

    pub fn group_state(&self, group: GroupId) -> Result<GroupState, StorageError> {
        match self.get(Space::Meta, keys::meta_key(group, TAG_GROUP_STATE))? {
            Some(value) => GroupState::decode(&value),
            None => Ok(GroupState::default()),
        }
    }

    pub fn floor(&self, group: GroupId) -> Result<LogFloor, StorageError> {
        match self.get(Space::Meta, keys::meta_key(group, TAG_FLOOR))? {
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
        StoreOptions::for_tests(SyncMode::Thread)
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
    fn a_version_1_store_opens_and_is_marked_version_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), options()).expect("open");
            let mut batch = store.batch();
            batch.insert(Space::Info, FORMAT_KEY, Slice::from([STORE_FORMAT_V1]));
            store.commit(batch).expect("write");
        }
        let store = Store::open(dir.path(), options()).expect("a version 1 store opens");
        let format = store.view().expect("view").get(Space::Info, FORMAT_KEY);
        assert_eq!(format.expect("read").as_deref(), Some(&[2u8][..]));
    }

    #[test]
    fn unknown_store_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), options()).expect("open");
            let mut batch = store.batch();
            batch.insert(Space::Info, FORMAT_KEY, Slice::from([STORE_FORMAT + 1]));
            store.commit(batch).expect("write");
        }
        assert!(matches!(
            Store::open(dir.path(), options()),
            Err(StorageError::Corrupt(_))
        ));
    }
}
