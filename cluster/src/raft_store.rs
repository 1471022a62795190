//! async-raft's `RaftStorage` over the node's [`Store`], for one group.
//!
//! The containment of async-raft 0.6.1's storage-side bugs lives here:
//! - apply calls apply *our* log up to the index given, so an apply async-raft skipped (bug 2)
//!   is applied by the next call, or by the group's applied-index watcher;
//! - `delete_logs_from` followed by `replicate_to_log` is made one atomic write (bug 3): the
//!   truncation is remembered and carried out by the append that follows it, by Raft's rule
//!   (only from the first conflicting entry), and the membership read in between ignores what
//!   it voids.

use crate::codec::{decode_membership, from_stored, to_stored};
use crate::command::{ApplyOutcome, Command};
use anyhow::{anyhow, Context, Result};
use async_raft::raft::{Entry, MembershipConfig};
use async_raft::storage::{CurrentSnapshotData, HardState, InitialState};
use async_raft::RaftStorage;
use gregor_storage::{Applied, GroupId, NodeId, PartitionState, Store};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Mutex;
use tokio::sync::{oneshot, watch};

/// How many recent apply outcomes are remembered for a late `apply_entry_to_state_machine`.
const RECENT_OUTCOMES: usize = 4096;

pub(crate) struct GroupStorage {
    store: Store,
    group: GroupId,
    node: NodeId,
    applied_tx: watch::Sender<PartitionState>,
    /// Index from which stored entries are void, pending the append that replaces them.
    pending_truncation: Mutex<Option<u64>>,
    /// Outcomes of entries applied by an earlier call, keyed by index.
    recent_outcomes: Mutex<BTreeMap<u64, ApplyOutcome>>,
    /// Serialises applies: async-raft applies from its core task and, on followers, from a
    /// spawned task; the watcher applies too. Our `apply_up_to` must see one caller at a time.
    apply_lock: tokio::sync::Mutex<()>,
}

impl GroupStorage {
    pub(crate) fn new(store: Store, group: GroupId, node: NodeId) -> Result<Self> {
        let state = store.partition_state(group)?;
        let (applied_tx, _) = watch::channel(state);
        Ok(GroupStorage {
            store,
            group,
            node,
            applied_tx,
            pending_truncation: Mutex::new(None),
            recent_outcomes: Mutex::new(BTreeMap::new()),
            apply_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<PartitionState> {
        self.applied_tx.subscribe()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    async fn sync(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.store.request_sync(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.await
            .map_err(|_| anyhow!("the sync thread went away"))?
            .context("fsync of the log failed")
    }

    /// Applies our own log up to `up_to` (a committed index) and publishes the new state.
    pub(crate) async fn apply_up_to(&self, up_to: u64) -> Result<()> {
        let _guard = self.apply_lock.lock().await;
        let applied = self.store.apply_up_to(self.group, up_to)?;
        if applied.is_empty() {
            return Ok(());
        }
        {
            let mut recent = self.recent_outcomes.lock().expect("outcome cache poisoned");
            for item in &applied {
                let (index, outcome) = outcome_of(item);
                recent.insert(index, outcome);
            }
            while recent.len() > RECENT_OUTCOMES {
                recent.pop_first();
            }
        }
        self.publish_state()
    }

    /// Re-reads the group's state and tells every subscriber: after an apply, and after
    /// retention moved the log start.
    pub(crate) fn publish_state(&self) -> Result<()> {
        let state = self.store.partition_state(self.group)?;
        self.applied_tx.send_replace(state);
        Ok(())
    }

    fn last_log(&self) -> Result<(u64, u64)> {
        if let Some(entry) = self.store.last_entry(self.group)? {
            return Ok((entry.index, entry.term));
        }
        let floor = self.store.log_floor(self.group)?;
        Ok((floor.index, floor.term))
    }

    /// Carries out a pending truncation and the append that follows it as one atomic write, by
    /// Raft's rule (see `Store::write_log`).
    fn write_entries(&self, entries: &[&Entry<Command>]) -> Result<()> {
        let stored = entries
            .iter()
            .map(|e| to_stored(e))
            .collect::<Result<Vec<_>>>()?;
        let pending = self
            .pending_truncation
            .lock()
            .expect("truncation lock poisoned")
            .take();
        self.store.write_log(self.group, pending, &stored)?;
        Ok(())
    }
}

fn outcome_of(applied: &Applied) -> (u64, ApplyOutcome) {
    match applied {
        Applied::Records {
            index,
            base_offset,
            record_count,
        } => (
            *index,
            ApplyOutcome::Appended {
                base_offset: base_offset.0,
                record_count: *record_count,
            },
        ),
        Applied::Kv { index } => (*index, ApplyOutcome::KvApplied),
        Applied::Other { index } => (*index, ApplyOutcome::Nothing),
    }
}

#[async_trait::async_trait]
impl RaftStorage<Command, ApplyOutcome> for GroupStorage {
    type Snapshot = Cursor<Vec<u8>>;
    type ShutdownError = std::io::Error;

    async fn get_membership_config(&self) -> Result<MembershipConfig> {
        // async-raft asks right after `delete_logs_from`, before the append that carries the
        // truncation out: rows it voids must not count.
        let pending = *self
            .pending_truncation
            .lock()
            .expect("truncation lock poisoned");
        let last = match pending {
            Some(end) => self.store.last_membership_before(self.group, end)?,
            None => self.store.last_membership(self.group)?,
        };
        match last {
            Some((_, bytes)) => decode_membership(&bytes),
            None => Ok(MembershipConfig::new_initial(self.node.0)),
        }
    }

    async fn get_initial_state(&self) -> Result<InitialState> {
        let hard_state = match self.store.hard_state(self.group)? {
            Some(bytes) => {
                rmp_serde::from_slice::<HardState>(&bytes).context("decoding hard state")?
            }
            None => return Ok(InitialState::new_initial(self.node.0)),
        };
        let (last_log_index, last_log_term) = self.last_log()?;
        let state = self.store.partition_state(self.group)?;
        Ok(InitialState {
            last_log_index,
            last_log_term,
            last_applied_log: state.last_applied,
            hard_state,
            membership: self.get_membership_config().await?,
        })
    }

    async fn save_hard_state(&self, hs: &HardState) -> Result<()> {
        self.store
            .save_hard_state(self.group, &rmp_serde::to_vec(hs)?)?;
        self.sync().await
    }

    async fn get_log_entries(&self, start: u64, stop: u64) -> Result<Vec<Entry<Command>>> {
        if start >= stop {
            return Ok(Vec::new());
        }
        self.store
            .read_entries(self.group, start, stop)?
            .into_iter()
            .map(from_stored)
            .collect()
    }

    async fn delete_logs_from(&self, start: u64, stop: Option<u64>) -> Result<()> {
        // async-raft only ever deletes a suffix here (stop = None) on conflict, and a bounded
        // range when compacting, which our log compaction does not do.
        if stop.is_some() {
            return Err(anyhow!("bounded log deletion is not used by this storage"));
        }
        let mut pending = self
            .pending_truncation
            .lock()
            .expect("truncation lock poisoned");
        *pending = Some(pending.map_or(start, |p| p.min(start)));
        Ok(())
    }

    async fn append_entry_to_log(&self, entry: &Entry<Command>) -> Result<()> {
        self.write_entries(&[entry])?;
        self.sync().await
    }

    async fn replicate_to_log(&self, entries: &[Entry<Command>]) -> Result<()> {
        let refs: Vec<&Entry<Command>> = entries.iter().collect();
        self.write_entries(&refs)?;
        self.sync().await
    }

    async fn apply_entry_to_state_machine(
        &self,
        index: &u64,
        _data: &Command,
    ) -> Result<ApplyOutcome> {
        self.apply_up_to(*index).await?;
        let recent = self.recent_outcomes.lock().expect("outcome cache poisoned");
        recent.get(index).copied().ok_or_else(|| {
            anyhow!(
                "entry {index} of group {} was applied but its outcome is gone",
                self.group
            )
        })
    }

    async fn replicate_to_state_machine(&self, entries: &[(&u64, &Command)]) -> Result<()> {
        match entries.iter().map(|(index, _)| **index).max() {
            Some(last) => self.apply_up_to(last).await,
            None => Ok(()),
        }
    }

    async fn do_log_compaction(&self) -> Result<CurrentSnapshotData<Self::Snapshot>> {
        // Retention trims the log; Raft snapshots (and InstallSnapshot) arrive with multi-node
        // replication. The group's snapshot policy never triggers this.
        Err(anyhow!(
            "raft log compaction is done by retention, not by async-raft"
        ))
    }

    async fn create_snapshot(&self) -> Result<(String, Box<Self::Snapshot>)> {
        Err(anyhow!(
            "installing snapshots is not supported before multi-node replication"
        ))
    }

    async fn finalize_snapshot_installation(
        &self,
        _index: u64,
        _term: u64,
        _delete_through: Option<u64>,
        _id: String,
        _snapshot: Box<Self::Snapshot>,
    ) -> Result<()> {
        Err(anyhow!(
            "installing snapshots is not supported before multi-node replication"
        ))
    }

    async fn get_current_snapshot(&self) -> Result<Option<CurrentSnapshotData<Self::Snapshot>>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_raft::raft::{EntryConfigChange, EntryPayload};
    use gregor_storage::{FlushPolicy, ModelDisk, StoreOptions, SyncMode};
    use std::collections::HashSet;

    const GROUP: GroupId = GroupId(7);

    fn storage(disk: &ModelDisk) -> GroupStorage {
        let options = StoreOptions {
            flush: FlushPolicy::Never,
            sync_mode: SyncMode::Inline,
            cache_bytes: 1 << 20,
        };
        let store = Store::open_model(disk, options).expect("open");
        GroupStorage::new(store, GROUP, NodeId(1)).expect("storage")
    }

    fn blank(index: u64, term: u64) -> Entry<Command> {
        Entry {
            index,
            term,
            payload: EntryPayload::Blank,
        }
    }

    fn members(index: u64, term: u64, nodes: &[u64]) -> Entry<Command> {
        Entry {
            index,
            term,
            payload: EntryPayload::ConfigChange(EntryConfigChange {
                membership: MembershipConfig {
                    members: nodes.iter().copied().collect::<HashSet<_>>(),
                    members_after_consensus: None,
                },
            }),
        }
    }

    async fn log(storage: &GroupStorage) -> Vec<(u64, u64)> {
        storage
            .get_log_entries(0, 100)
            .await
            .expect("read")
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    #[tokio::test]
    async fn membership_ignores_rows_a_pending_truncation_voids() {
        let disk = ModelDisk::new();
        let storage = storage(&disk);
        storage
            .replicate_to_log(&[
                members(1, 1, &[1, 2]),
                blank(2, 1),
                members(3, 1, &[1, 2, 3]),
            ])
            .await
            .expect("append");
        // async-raft found the leader's log agrees up to 2 and asks for the membership before it
        // hands over the entries that replace 3.
        storage.delete_logs_from(3, None).await.expect("void");
        let membership = storage.get_membership_config().await.expect("membership");
        assert_eq!(membership.members, HashSet::from([1, 2]));
    }

    #[tokio::test]
    async fn a_truncation_and_its_replacement_are_one_write() {
        let disk = ModelDisk::new();
        let storage = storage(&disk);
        let old: Vec<_> = (1..=5).map(|i| blank(i, 1)).collect();
        storage.replicate_to_log(&old).await.expect("append");
        storage.store().sync().expect("sync");
        drop(storage);
        let storage = self::storage(&disk);
        let before = disk.unsynced_batches();
        storage.delete_logs_from(3, None).await.expect("void");
        storage
            .replicate_to_log(&[blank(3, 2), blank(4, 2)])
            .await
            .expect("replace");
        assert_eq!(disk.unsynced_batches(), before + 1);
        assert_eq!(log(&storage).await, vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    }

    #[tokio::test]
    async fn a_truncation_below_the_new_entries_is_refused_and_changes_nothing() {
        let disk = ModelDisk::new();
        let storage = storage(&disk);
        let old: Vec<_> = (1..=5).map(|i| blank(i, 1)).collect();
        storage.replicate_to_log(&old).await.expect("append");
        storage.delete_logs_from(3, None).await.expect("void");
        // Entries that would leave entry 3 voided but nothing in its place: a gap.
        let gap = storage.replicate_to_log(&[blank(4, 2), blank(5, 2)]).await;
        assert!(gap.is_err());
        assert_eq!(
            log(&storage).await,
            vec![(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
        );
    }
}
