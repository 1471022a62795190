//! [`LocalRegistry`]: what this node hosts and what it is deleting, in rows of its own that no
//! other node sees.
//!
//! The rows live in a log of this node's own (group [`LOCAL_GROUP`], never replicated): a write
//! appends a key-value entry and applies it at once, so it is as atomic and durable as any
//! group's writes. Layout: `h/` + group id (u64 BE) for a hosted replica, `d/` + group id for a
//! deletion in progress (its marker). The hosted row is written before a replica first starts,
//! so data this node stores always has a row that leads back to it; the marker is made durable
//! before any of a group's data is removed, so a restart resumes the deletion.

use bytes::Bytes;
use gregor_storage::{EntryPayload, GroupId, KvOps, LogEntry, StorageError, Store};
use std::collections::BTreeSet;

/// The group whose rows are this node's own. Partition groups are `topic id * 2^14 +
/// partition`, so they reach it only past 2^50 topics.
pub const LOCAL_GROUP: GroupId = GroupId(u64::MAX);

const HOSTED: &[u8] = b"h/";
const DELETING: &[u8] = b"d/";

fn key(prefix: &[u8], group: GroupId) -> Bytes {
    Bytes::from([prefix, &group.0.to_be_bytes()].concat())
}

fn groups(rows: &[(Bytes, Bytes)], prefix: &[u8]) -> BTreeSet<GroupId> {
    rows.iter()
        .filter_map(|(k, _)| k.strip_prefix(prefix))
        .filter_map(|id| id.try_into().ok().map(u64::from_be_bytes))
        .map(GroupId)
        .collect()
}

/// What the registry holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registered {
    pub hosted: BTreeSet<GroupId>,
    pub deleting: BTreeSet<GroupId>,
}

#[derive(Clone)]
pub struct LocalRegistry {
    store: Store,
}

impl LocalRegistry {
    pub fn new(store: Store) -> LocalRegistry {
        LocalRegistry { store }
    }

    /// # Errors
    /// Reading the rows failed.
    pub fn load(&self) -> Result<Registered, StorageError> {
        let rows = self.store.kv_scan_prefix(LOCAL_GROUP, b"")?;
        Ok(Registered {
            hosted: groups(&rows, HOSTED),
            deleting: groups(&rows, DELETING),
        })
    }

    /// Records that this node hosts `group`, before its replica first writes anything.
    ///
    /// # Errors
    /// The write failed.
    pub fn hosted(&self, group: GroupId) -> Result<(), StorageError> {
        self.write(vec![(key(HOSTED, group), Bytes::new())], vec![])
    }

    /// Marks `group` as being deleted and waits until the mark is durable.
    ///
    /// # Errors
    /// The write or the sync failed.
    pub async fn deleting(&self, group: GroupId) -> Result<(), StorageError> {
        self.write(vec![(key(DELETING, group), Bytes::new())], vec![])?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.request_sync(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.await
            .unwrap_or_else(|_| Err(StorageError::Poisoned("the sync thread went away".into())))
    }

    /// Forgets `group` once its data is gone.
    ///
    /// # Errors
    /// The write failed.
    pub fn deleted(&self, group: GroupId) -> Result<(), StorageError> {
        self.write(vec![], vec![key(HOSTED, group), key(DELETING, group)])
    }

    fn write(&self, puts: Vec<(Bytes, Bytes)>, deletes: Vec<Bytes>) -> Result<(), StorageError> {
        // Compaction may have removed every entry: the floor remembers the last index.
        let last = match self.store.last_entry(LOCAL_GROUP)? {
            Some(entry) => entry.index,
            None => self.store.log_floor(LOCAL_GROUP)?.index,
        };
        let index = last + 1;
        let entry = LogEntry {
            index,
            term: 1,
            payload: EntryPayload::Kv(KvOps { puts, deletes }),
        };
        self.store.append_entries(LOCAL_GROUP, &[entry])?;
        self.store.apply_up_to(LOCAL_GROUP, index)?;
        // The rows are the state; applied entries are history. Bounded work: a few entries.
        self.store.compact_log(LOCAL_GROUP, index)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_storage::{FlushPolicy, StoreOptions, SyncMode};

    fn open(dir: &std::path::Path) -> Store {
        let options = StoreOptions {
            flush: FlushPolicy::Always,
            sync_mode: SyncMode::Thread,
            cache_bytes: 1 << 20,
        };
        Store::open(dir, options).unwrap()
    }

    #[tokio::test]
    async fn rows_survive_a_reopen_and_many_writes_stay_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let registry = LocalRegistry::new(store.clone());
        for id in 1..=300 {
            registry.hosted(GroupId(id)).unwrap();
        }
        registry.deleting(GroupId(7)).await.unwrap();
        registry.deleted(GroupId(8)).unwrap();
        assert!(
            store.last_entry(LOCAL_GROUP).unwrap().is_none(),
            "entries are compacted"
        );
        drop((registry, store));

        let registry = LocalRegistry::new(open(dir.path()));
        let registered = registry.load().unwrap();
        assert_eq!(registered.hosted.len(), 299);
        assert!(!registered.hosted.contains(&GroupId(8)));
        assert_eq!(registered.deleting, BTreeSet::from([GroupId(7)]));
        registry.deleted(GroupId(7)).unwrap();
        let registered = registry.load().unwrap();
        assert!(registered.deleting.is_empty() && !registered.hosted.contains(&GroupId(7)));
    }
}
