//! async-raft's `RaftStorage` over the node's [`Store`], for one group.
//!
//! The containment of async-raft 0.6.1's storage-side bugs lives here:
//! - apply calls apply *our* log up to the index given, so an apply async-raft skipped (bug 2)
//!   is applied by the next call, or by the group's applied-index watcher;
//! - `delete_logs_from` followed by `replicate_to_log` is made one atomic write (bug 3): the
//!   truncation is remembered and carried out by the append that follows it.

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
        match (pending, stored.first()) {
            // The truncation point is below the new entries: void the gap first, in the same
            // logical step (entries between are stale and must not survive).
            (Some(from), Some(first)) if from < first.index => {
                self.store.delete_entries_from(self.group, from)?;
                self.store.append_entries(self.group, &stored)?;
            }
            // append_entries itself removes every stored entry at or above its first index.
            (_, Some(_)) => self.store.append_entries(self.group, &stored)?,
            (Some(from), None) => self.store.delete_entries_from(self.group, from)?,
            (None, None) => {}
        }
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
        match self.store.last_membership(self.group)? {
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
