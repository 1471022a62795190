//! async-raft's `RaftStorage` over the node's [`Store`], for one group.
//!
//! The containment of async-raft 0.6.1's storage-side bugs lives here:
//! - apply calls apply *our* log up to the index given, so an apply async-raft skipped (bug 2)
//!   is applied by the next call, or by the group's applied-index watcher;
//! - `delete_logs_from` followed by `replicate_to_log` is made one atomic write (bug 3): the
//!   truncation is remembered and carried out by the append that follows it, by Raft's rule
//!   (only from the first conflicting entry), and the membership read in between ignores what
//!   it voids.

use crate::codec::{decode_membership, from_stored, hollow_from_stored, to_stored};
use crate::command::{ApplyOutcome, Command};
use crate::restart_role::{self, RestartRole};
use crate::snapshot_bytes::{SnapshotBytes, StreamRestarts};
use anyhow::{anyhow, Context, Result};
use async_raft::raft::{Entry, EntryPayload, EntrySnapshotPointer, MembershipConfig};
use async_raft::storage::{CurrentSnapshotData, HardState, InitialState};
use async_raft::RaftStorage;
use gregor_storage::{
    Applied, GroupId, GroupSnapshot, LogFloor, NodeId, PartitionState, StateMachine, Store,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// Outcomes kept for async-raft to ask for: those of entries applied before the call that
/// asks (entries applied by the watcher or a follower's catch-up; a leader's own entries are
/// answered by the apply that the call itself runs). A follower is never asked, so this is a
/// bound, not a working set.
const PENDING_OUTCOMES: usize = 64;

/// A `get_log_entries` range longer than this is answered without record payloads. async-raft
/// reads every entry after its commit index when it becomes leader, only to find the newest
/// membership entry; after a restart its commit index is 0, so that read is the whole log,
/// records and all (1.1 GB held for a 10M-record log, and kept by the allocator). Its
/// replication reads at most `max_payload_entries + 1` entries at a time (301 by default),
/// which stay whole; the network puts the records back into any blank entry below the highest
/// index a hollow scan reached before sending it, so no follower ever stores a blank in place
/// of records whatever the range (a larger `max_payload_entries` costs re-reads, not safety).
/// The limit counts entries, not bytes: one entry holds up to 8 MiB of batches.
const HOLLOW_SCAN_ENTRIES: u64 = 301;

/// Entries read at once by such a scan: its memory is one chunk's records (at most 16 entries
/// of 8 MiB), not the log's.
const HOLLOW_SCAN_CHUNK: u64 = 16;

pub(crate) struct GroupStorage {
    store: Store,
    group: GroupId,
    node: NodeId,
    applied_tx: watch::Sender<PartitionState>,
    /// Index from which stored entries are void, pending the append that replaces them.
    pending_truncation: Mutex<Option<u64>>,
    /// Outcomes of entries applied before async-raft asked for them, keyed by index.
    pending_outcomes: Mutex<BTreeMap<u64, ApplyOutcome>>,
    /// What the group's `Command::Machine` entries mean (the metadata group's); none for
    /// partition and offsets groups.
    machine: Mutex<Option<Box<dyn StateMachine>>>,
    /// Serialises applies: async-raft applies from its core task and, on followers, from a
    /// spawned task; the watcher applies too. Our `apply_up_to` must see one caller at a time.
    apply_lock: tokio::sync::Mutex<()>,
    /// Proposals waiting to hear that the leader's own log holds them durably (acks=1), by the
    /// id their `Append` command carries. Each is removed when told or when its proposal ends.
    durable_waiters: Mutex<BTreeMap<u64, oneshot::Sender<u64>>>,
    /// The highest index this node appended as leader, once durable: the group's network
    /// resends what a follower's stream dropped up to it.
    leader_tail: Arc<AtomicU64>,
    /// Every index below this may have been answered without its records by a long scan:
    /// the group's network reads a blank entry below it again before sending it.
    hollow_below: Arc<AtomicU64>,
    /// Counts the writes that can change the log (appends, truncations, snapshots): what the
    /// dispatcher checked against the log stays true while it does not move.
    log_version: Arc<AtomicU64>,
    /// Whether a restart may leave async-raft leading a term this node did not win (see
    /// `restart_role`): only the containment's test turns this off.
    contain_restart_leadership: bool,
    /// Moved by the group's network when a follower refuses a snapshot stream: the copies
    /// handed out before then fail, and async-raft sends a fresh one from offset 0.
    snapshot_restarts: StreamRestarts,
    /// The founding configuration of a group this node joins as a founding member (not its
    /// founder): until a configuration entry is stored, it is the group's configuration, so
    /// async-raft follows it (and does not turn into a follower of itself alone after voting).
    founding: Option<MembershipConfig>,
}

impl GroupStorage {
    pub(crate) fn new(
        store: Store,
        group: GroupId,
        node: NodeId,
        machine: Option<Box<dyn StateMachine>>,
        contain_restart_leadership: bool,
    ) -> Result<Self> {
        let state = store.partition_state(group)?;
        let (applied_tx, _) = watch::channel(state);
        Ok(GroupStorage {
            store,
            group,
            node,
            applied_tx,
            pending_truncation: Mutex::new(None),
            pending_outcomes: Mutex::new(BTreeMap::new()),
            machine: Mutex::new(machine),
            apply_lock: tokio::sync::Mutex::new(()),
            durable_waiters: Mutex::new(BTreeMap::new()),
            leader_tail: Arc::new(AtomicU64::new(0)),
            hollow_below: Arc::new(AtomicU64::new(0)),
            log_version: Arc::new(AtomicU64::new(0)),
            contain_restart_leadership,
            snapshot_restarts: StreamRestarts::default(),
            founding: None,
        })
    }

    /// See the `founding` field.
    pub(crate) fn with_founding(mut self, members: MembershipConfig) -> Self {
        self.founding = Some(members);
        self
    }

    /// See the field: the dispatcher's cache of its last check is keyed by it.
    pub(crate) fn log_version(&self) -> Arc<AtomicU64> {
        self.log_version.clone()
    }

    /// The highest index this node appended as leader (see the network's tail resend).
    pub(crate) fn leader_tail(&self) -> Arc<AtomicU64> {
        self.leader_tail.clone()
    }

    /// See the field.
    pub(crate) fn snapshot_restarts(&self) -> StreamRestarts {
        self.snapshot_restarts.clone()
    }

    pub(crate) fn hollow_below(&self) -> Arc<AtomicU64> {
        self.hollow_below.clone()
    }

    /// `durable` is told the index of the entry whose `Append` command carries `proposal` once
    /// it is durable in this node's log.
    pub(crate) fn notify_durable(&self, proposal: u64, durable: oneshot::Sender<u64>) {
        self.waiters().insert(proposal, durable);
    }

    /// The proposal ended (committed, refused or timed out): nobody waits any more.
    pub(crate) fn forget_durable(&self, proposal: u64) {
        self.waiters().remove(&proposal);
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<u64>>> {
        self.durable_waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        self.apply(up_to, None).await.map(drop)
    }

    /// Applies up to `up_to`; returns the outcome of entry `wanted` if this call applied it,
    /// and keeps the others for a later `apply_entry_to_state_machine`.
    async fn apply(&self, up_to: u64, wanted: Option<u64>) -> Result<Option<ApplyOutcome>> {
        let _guard = self.apply_lock.lock().await;
        let applied = {
            let mut machine = self.machine.lock().expect("state machine lock poisoned");
            match machine.as_deref_mut() {
                Some(machine) => self.store.apply_up_to_with(self.group, up_to, machine)?,
                None => self.store.apply_up_to(self.group, up_to)?,
            }
        };
        if applied.is_empty() {
            return Ok(None);
        }
        let mut found = None;
        {
            let mut pending = self.pending_outcomes.lock().expect("outcome lock poisoned");
            for item in &applied {
                let Some((index, outcome)) = outcome_of(item) else {
                    continue;
                };
                if Some(index) == wanted {
                    found = Some(outcome);
                } else {
                    pending.insert(index, outcome);
                }
            }
            while pending.len() > PENDING_OUTCOMES {
                pending.pop_first();
            }
        }
        self.publish_state()?;
        Ok(found)
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
        self.log_version.fetch_add(1, Ordering::SeqCst);
        self.store.write_log(self.group, pending, &stored)?;
        self.log_version.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// What async-raft hands the proposer of an entry; `None` for entries it never asks about
/// (blank and membership entries).
fn outcome_of(applied: &Applied) -> Option<(u64, ApplyOutcome)> {
    let outcome = match applied {
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
        Applied::Command { index, outcome } => (*index, ApplyOutcome::Machine(outcome.clone())),
        Applied::LogStart { index, log_start } => (
            *index,
            ApplyOutcome::LogStartAdvanced {
                log_start_offset: log_start.0,
            },
        ),
        _ => return None,
    };
    Some(outcome)
}

impl GroupStorage {
    /// What async-raft needs of a snapshot, around our encoding of it.
    fn current_snapshot(
        &self,
        snapshot: &GroupSnapshot,
    ) -> Result<CurrentSnapshotData<SnapshotBytes>> {
        Ok(CurrentSnapshotData {
            term: snapshot.term,
            index: snapshot.index,
            membership: self.membership_or_initial(snapshot.membership.as_deref())?,
            snapshot: Box::new(SnapshotBytes::outgoing(
                snapshot.encode(),
                &self.snapshot_restarts,
            )),
        })
    }

    fn membership_or_initial(&self, membership: Option<&[u8]>) -> Result<MembershipConfig> {
        match membership {
            Some(bytes) => decode_membership(bytes),
            None => Ok(self
                .founding
                .clone()
                .unwrap_or_else(|| MembershipConfig::new_initial(self.node.0))),
        }
    }

    /// The entry that stands for the removed log up to `floor`: async-raft's replication stream
    /// switches to sending a snapshot when it reads one.
    /// `start..stop` a chunk at a time, each record entry without its records (see
    /// [`HOLLOW_SCAN_ENTRIES`]).
    fn hollow_entries(&self, start: u64, stop: u64) -> Result<Vec<Entry<Command>>> {
        self.hollow_below.fetch_max(stop, Ordering::SeqCst);
        let mut entries = Vec::new();
        let mut from = start;
        while from < stop {
            let to = stop.min(from.saturating_add(HOLLOW_SCAN_CHUNK));
            let slice = self.store.read_log(self.group, from, to)?;
            if from == start {
                if let Some(floor) = &slice.compacted {
                    entries.push(self.snapshot_pointer(floor)?);
                }
            }
            for entry in slice.entries {
                entries.push(hollow_from_stored(entry)?);
            }
            from = to;
        }
        Ok(entries)
    }

    fn snapshot_pointer(&self, floor: &LogFloor) -> Result<Entry<Command>> {
        Ok(Entry {
            index: floor.index,
            term: floor.term,
            payload: EntryPayload::SnapshotPointer(EntrySnapshotPointer {
                id: format!("group-{}-{}-{}", self.group, floor.index, floor.term),
                membership: self.membership_or_initial(floor.membership.as_deref())?,
            }),
        })
    }
}

#[async_trait::async_trait]
impl RaftStorage<Command, ApplyOutcome> for GroupStorage {
    type Snapshot = SnapshotBytes;
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
        self.membership_or_initial(last.as_ref().map(|(_, bytes)| &bytes[..]))
    }

    async fn get_initial_state(&self) -> Result<InitialState> {
        let hard_state = match self.store.hard_state(self.group)? {
            Some(bytes) => {
                rmp_serde::from_slice::<HardState>(&bytes).context("decoding hard state")?
            }
            None => {
                let mut initial = InitialState::new_initial(self.node.0);
                if let Some(founding) = &self.founding {
                    initial.membership = founding.clone();
                }
                return Ok(initial);
            }
        };
        let (last_log_index, last_log_term) = self.last_log()?;
        let state = self.store.partition_state(self.group)?;
        let mut membership = self.get_membership_config().await?;
        let mut hard_state = hard_state;
        if self.contain_restart_leadership {
            match restart_role::contain(self.node.0, &hard_state, last_log_index > 0, &membership) {
                RestartRole::AsStored => {}
                RestartRole::Follower(shown) => {
                    tracing::info!(group = %self.group, stored = ?membership, "restarting as a follower: async-raft would lead a term this node did not win");
                    membership = shown;
                }
                RestartRole::NextTerm(next) => {
                    tracing::info!(group = %self.group, term = next.current_term, "a lone member that did not win its stored term votes for itself in the next one");
                    self.save_hard_state(&next).await?;
                    hard_state = next;
                }
            }
        }
        Ok(InitialState {
            last_log_index,
            last_log_term,
            last_applied_log: state.last_applied,
            hard_state,
            membership,
        })
    }

    async fn save_hard_state(&self, hs: &HardState) -> Result<()> {
        self.store
            .save_hard_state(self.group, &rmp_serde::to_vec(hs)?)?;
        self.sync().await
    }

    /// Entries in [start, stop). When `start` lies at or below the log floor, the removed
    /// entries are answered by one snapshot pointer at the floor, followed by the stored
    /// entries of the range: async-raft then streams a snapshot instead of a log with a gap,
    /// and a reader looking for the latest membership still finds those after the floor.
    async fn get_log_entries(&self, start: u64, stop: u64) -> Result<Vec<Entry<Command>>> {
        if start >= stop {
            return Ok(Vec::new());
        }
        if stop - start > HOLLOW_SCAN_ENTRIES {
            return self.hollow_entries(start, stop);
        }
        let slice = self.store.read_log(self.group, start, stop)?;
        let mut entries = Vec::with_capacity(slice.entries.len() + 1);
        if let Some(floor) = &slice.compacted {
            entries.push(self.snapshot_pointer(floor)?);
        }
        for entry in slice.entries {
            entries.push(from_stored(entry)?);
        }
        Ok(entries)
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

    /// The leader's own append: once synced, a proposal waiting for it (acks=1) is told.
    async fn append_entry_to_log(&self, entry: &Entry<Command>) -> Result<()> {
        self.write_entries(&[entry])?;
        self.sync().await?;
        self.leader_tail.fetch_max(entry.index, Ordering::SeqCst);
        if let EntryPayload::Normal(async_raft::raft::EntryNormal {
            data:
                Command::Append {
                    proposal: Some(proposal),
                    ..
                },
        }) = &entry.payload
        {
            if let Some(waiter) = self.waiters().remove(proposal) {
                let _ = waiter.send(entry.index);
            }
        }
        Ok(())
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
        let applied_now = self.apply(*index, Some(*index)).await?;
        let mut pending = self.pending_outcomes.lock().expect("outcome lock poisoned");
        let outcome = applied_now.or_else(|| pending.remove(index));
        // async-raft asks in index order: nothing at or below this index is asked for again.
        *pending = pending.split_off(&index.saturating_add(1));
        outcome.ok_or_else(|| {
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

    /// async-raft never compacts on its own (its snapshot policy is off): retention and
    /// `compact_log` remove the log. Should it ask, the current snapshot is the answer.
    async fn do_log_compaction(&self) -> Result<CurrentSnapshotData<Self::Snapshot>> {
        self.get_current_snapshot()
            .await?
            .ok_or_else(|| anyhow!("group {} has removed no entries to snapshot", self.group))
    }

    /// A buffer for a snapshot streaming in from the leader.
    async fn create_snapshot(&self) -> Result<(String, Box<Self::Snapshot>)> {
        let id = format!("group-{}-incoming", self.group);
        Ok((id, Box::new(SnapshotBytes::incoming())))
    }

    /// Installs the snapshot the leader streamed: the group's state is replaced in one atomic
    /// write and made durable before async-raft answers the leader.
    async fn finalize_snapshot_installation(
        &self,
        index: u64,
        term: u64,
        delete_through: Option<u64>,
        _id: String,
        snapshot: Box<Self::Snapshot>,
    ) -> Result<()> {
        let snapshot = GroupSnapshot::decode(&snapshot.into_inner())?;
        if (snapshot.index, snapshot.term) != (index, term) {
            return Err(anyhow!(
                "the snapshot holds entry {} of term {}, the leader said {index} of term {term}",
                snapshot.index,
                snapshot.term
            ));
        }
        {
            let _guard = self.apply_lock.lock().await;
            *self
                .pending_truncation
                .lock()
                .expect("truncation lock poisoned") = None;
            // async-raft keeps the log after the snapshot only when it reaches past it.
            let keep_log_after = delete_through.is_some();
            self.store
                .install_snapshot(self.group, &snapshot, keep_log_after)?;
            self.log_version.fetch_add(1, Ordering::SeqCst);
            self.pending_outcomes
                .lock()
                .expect("outcome lock poisoned")
                .clear();
        }
        self.sync().await?;
        self.publish_state()
    }

    /// The snapshot a lagging follower needs: none while no entry was ever removed (every
    /// entry is still there to send).
    async fn get_current_snapshot(&self) -> Result<Option<CurrentSnapshotData<Self::Snapshot>>> {
        if self.store.log_floor(self.group)?.index == 0 {
            return Ok(None);
        }
        let snapshot = self.store.snapshot(self.group)?;
        Ok(Some(self.current_snapshot(&snapshot)?))
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
        GroupStorage::new(store, GROUP, NodeId(1), None, true).expect("storage")
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

    /// A scan of the whole log (async-raft's, on becoming leader after a restart) comes back
    /// without records; a replication-sized read keeps them; and what the network sends has
    /// them back, blanks and all, as stored.
    #[tokio::test]
    async fn long_scans_come_back_hollow_and_the_network_fills_them_again() {
        let disk = ModelDisk::new();
        let storage = storage(&disk);
        let last = HOLLOW_SCAN_ENTRIES + 10;
        let stored: Vec<Entry<Command>> = (1..=last)
            .map(|i| {
                if i == 2 {
                    blank(i, 1)
                } else {
                    records(i, 1, 1)
                }
            })
            .collect();
        storage.replicate_to_log(&stored).await.expect("append");

        let mut scanned = storage.get_log_entries(1, last + 1).await.expect("scan");
        assert_eq!(scanned.len() as u64, last);
        assert!(scanned
            .iter()
            .all(|e| matches!(e.payload, EntryPayload::Blank)));
        assert_eq!(
            scanned
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            stored.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>()
        );

        let short = storage.get_log_entries(1, 301).await.expect("read");
        assert_eq!(short, stored[..300].to_vec());

        crate::network::hydrate(
            &storage.store,
            GROUP,
            storage.hollow_below.load(Ordering::SeqCst),
            &mut scanned,
        )
        .expect("hydrate");
        assert_eq!(scanned, stored);
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

    fn records(index: u64, term: u64, count: usize) -> Entry<Command> {
        let mut builder = gregor_storage::batch::BatchBuilder::with_capacity(64);
        for _ in 0..count {
            builder.push(&gregor_storage::batch::NewRecord {
                value: Some(b"v"),
                timestamp: 10,
                ..Default::default()
            });
        }
        Entry {
            index,
            term,
            payload: EntryPayload::Normal(async_raft::raft::EntryNormal {
                data: Command::append(vec![builder.finish()]),
            }),
        }
    }

    fn normal(index: u64, term: u64, data: Command) -> Entry<Command> {
        Entry {
            index,
            term,
            payload: EntryPayload::Normal(async_raft::raft::EntryNormal { data }),
        }
    }

    /// A leader's storage with entries 1..=5 (membership, four records entries of 2 records)
    /// whose first two records entries retention removed.
    async fn compacted_leader(disk: &ModelDisk) -> GroupStorage {
        let storage = storage(disk);
        let mut log = vec![members(1, 1, &[1, 2])];
        log.extend((2..=5).map(|i| records(i, 1, 2)));
        log.push(normal(6, 1, Command::AdvanceLogStart { offset: 4 }));
        storage.replicate_to_log(&log).await.expect("append");
        storage
            .replicate_to_state_machine(&[])
            .await
            .expect("nothing");
        storage.apply_up_to(6).await.expect("apply");
        assert_eq!(storage.store().log_floor(GROUP).expect("floor").index, 3);
        storage
    }

    #[tokio::test]
    async fn reading_removed_entries_yields_a_snapshot_pointer_then_the_rest() {
        let disk = ModelDisk::new();
        let storage = compacted_leader(&disk).await;
        let entries = storage.get_log_entries(1, 6).await.expect("read");
        let shape: Vec<(u64, bool)> = entries
            .iter()
            .map(|e| {
                (
                    e.index,
                    matches!(e.payload, EntryPayload::SnapshotPointer(_)),
                )
            })
            .collect();
        assert_eq!(shape, vec![(3, true), (4, false), (5, false)]);
        let EntryPayload::SnapshotPointer(pointer) = &entries[0].payload else {
            unreachable!()
        };
        assert_eq!(pointer.membership.members, HashSet::from([1, 2]));
        let above = storage.get_log_entries(4, 6).await.expect("read");
        assert_eq!(
            above.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }

    #[tokio::test]
    async fn a_follower_installs_the_leaders_snapshot_and_catches_up() {
        let leader_disk = ModelDisk::new();
        let leader = compacted_leader(&leader_disk).await;
        let fresh = storage(&ModelDisk::new());
        assert!(fresh.get_current_snapshot().await.expect("none").is_none());

        let current = leader
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("some");
        assert_eq!((current.index, current.term), (3, 1));
        assert_eq!(current.membership.members, HashSet::from([1, 2]));
        let bytes = current.snapshot.into_inner();

        let follower_disk = ModelDisk::new();
        let follower = storage(&follower_disk);
        // async-raft records the leader's term before it takes the snapshot.
        let term = HardState {
            current_term: 1,
            voted_for: None,
        };
        follower.save_hard_state(&term).await.expect("hard state");
        let (id, mut incoming) = follower.create_snapshot().await.expect("create");
        tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes)
            .await
            .expect("write");
        follower
            .finalize_snapshot_installation(3, 1, None, id, incoming)
            .await
            .expect("install");
        let initial = follower.get_initial_state().await.expect("state");
        assert_eq!((initial.last_log_index, initial.last_log_term), (3, 1));
        assert_eq!(initial.last_applied_log, 3);
        assert_eq!(initial.membership.members, HashSet::from([1, 2]));

        let rest = leader.get_log_entries(4, 7).await.expect("read");
        follower.replicate_to_log(&rest).await.expect("append");
        follower.apply_up_to(6).await.expect("apply");
        let state = |s: &GroupStorage| s.store().partition_state(GROUP).expect("state");
        assert_eq!(state(&follower), state(&leader));
        follower.store().verify_group(GROUP).expect("consistent");
    }

    #[tokio::test]
    async fn a_snapshot_that_disagrees_with_the_leaders_header_is_refused() {
        let disk = ModelDisk::new();
        let leader = compacted_leader(&disk).await;
        let bytes = leader
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("some")
            .snapshot
            .into_inner();
        let follower = storage(&ModelDisk::new());
        let (id, mut incoming) = follower.create_snapshot().await.expect("create");
        tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes)
            .await
            .expect("write");
        let wrong = follower
            .finalize_snapshot_installation(4, 1, None, id, incoming)
            .await;
        assert!(wrong.is_err());
        assert_eq!(
            follower
                .store()
                .partition_state(GROUP)
                .expect("state")
                .last_applied,
            0
        );
    }

    struct Echo;

    impl StateMachine for Echo {
        fn apply(
            &mut self,
            index: u64,
            command: &[u8],
            rows: &mut gregor_storage::RowTxn<'_>,
        ) -> std::result::Result<bytes::Bytes, gregor_storage::StorageError> {
            rows.put(command, bytes::Bytes::copy_from_slice(&index.to_be_bytes()));
            Ok(bytes::Bytes::from(format!("{index}")))
        }
    }

    #[tokio::test]
    async fn outcomes_are_answered_once_and_the_cache_stays_bounded() {
        let store = Store::open_model(
            &ModelDisk::new(),
            StoreOptions {
                flush: FlushPolicy::Never,
                sync_mode: SyncMode::Inline,
                cache_bytes: 1 << 20,
            },
        )
        .expect("open");
        let storage = GroupStorage::new(store, GROUP, NodeId(1), Some(Box::new(Echo)), true)
            .expect("storage");
        let machine = |i: u64| normal(i, 1, Command::Machine(bytes::Bytes::from(format!("k{i}"))));
        let log: Vec<_> = (1..=200).map(machine).collect();
        storage.replicate_to_log(&log).await.expect("append");
        // The leader's own entry: applied by the call that asks for it.
        let outcome = storage
            .apply_entry_to_state_machine(&1, &log[0].payload_data())
            .await
            .expect("outcome");
        assert_eq!(
            outcome,
            ApplyOutcome::Machine(bytes::Bytes::from_static(b"1"))
        );
        // Entries applied before anyone asks (a watcher, a follower's catch-up) are kept, up
        // to the bound.
        storage.apply_up_to(200).await.expect("apply");
        assert_eq!(
            storage.pending_outcomes.lock().expect("lock").len(),
            PENDING_OUTCOMES
        );
        let outcome = storage
            .apply_entry_to_state_machine(&190, &log[189].payload_data())
            .await
            .expect("outcome");
        assert_eq!(
            outcome,
            ApplyOutcome::Machine(bytes::Bytes::from_static(b"190"))
        );
        assert_eq!(storage.pending_outcomes.lock().expect("lock").len(), 10);
        assert!(storage
            .apply_entry_to_state_machine(&100, &log[99].payload_data())
            .await
            .is_err());
    }

    trait PayloadData {
        fn payload_data(&self) -> Command;
    }

    impl PayloadData for Entry<Command> {
        fn payload_data(&self) -> Command {
            match &self.payload {
                EntryPayload::Normal(normal) => normal.data.clone(),
                _ => unreachable!("a normal entry"),
            }
        }
    }
}
