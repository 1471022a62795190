//! Applying committed entries: offsets and producer state for records, the log start for
//! retention, key-value rows for the rest (directly, or through a caller's [`StateMachine`]).
//!
//! Apply reads the entries from the store's own log, never from the caller, so a lost or skipped
//! apply call cannot skip an entry (async-raft 0.6.1 can advance `last_applied` without applying).
//! A `Records` entry's payload stays where it is; applying it writes one offset row (and a time
//! row when it raises the partition's newest timestamp) and the windows of the producers it
//! carries, in the same atomic batch as the new state, so the state and the indexes never
//! disagree, whatever crashes.

use crate::backend::{Slice, Space};
use crate::entry::{Batches, StoredBody, StoredEntry};
use crate::keys::{self, trailing_u64, TAG_GROUP_STATE};
use crate::producer::ProducerBatch;
use crate::producers::Producers;
use crate::retention::{advance_log_start, ENTRIES_PER_ADVANCE};
use crate::state::{encode_time_row, GroupState, OffsetRow, PartitionState};
use crate::store::{Batch, View};
use crate::{GroupId, Offset, StorageError, Store};
use bytes::Bytes;
use std::collections::BTreeMap;

/// Entries per atomic apply batch: bounds the memory a long catch-up holds. Each batch carries
/// its own `last_applied`, so a crash between two leaves a consistent prefix applied.
const APPLY_BATCH_ENTRIES: u64 = 1024;

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Records {
        index: u64,
        base_offset: Offset,
        record_count: u64,
    },
    Kv {
        index: u64,
    },
    /// A command, with the state machine's outcome for its proposer.
    Command {
        index: u64,
        outcome: Bytes,
    },
    /// An `AdvanceLogStart`, with the log start it left (unchanged if it was not forward).
    LogStart {
        index: u64,
        log_start: Offset,
    },
    Other {
        index: u64,
    },
}

impl Applied {
    pub fn index(&self) -> u64 {
        match self {
            Applied::Records { index, .. }
            | Applied::Kv { index }
            | Applied::Command { index, .. }
            | Applied::LogStart { index, .. }
            | Applied::Other { index } => *index,
        }
    }
}

/// A group's own state machine: what `Command` entries mean. The metadata group assigns ids
/// and validates requests here, so every replica decides the same from the same log.
pub trait StateMachine: Send {
    /// Applies the command of entry `index`. Reads and writes go through `rows`, the group's
    /// key-value rows as of this apply, committed atomically with `last_applied`.
    ///
    /// Must be deterministic. A request that cannot be carried out is an outcome (the bytes
    /// say so to the proposer), not an error.
    ///
    /// # Errors
    /// Only when the stored state is corrupt: the apply stops and nothing of its batch is
    /// committed.
    fn apply(
        &mut self,
        index: u64,
        command: &[u8],
        rows: &mut RowTxn<'_>,
    ) -> Result<Bytes, StorageError>;
}

/// The key-value rows of the group being applied: reads see the stored rows plus the writes
/// made earlier in the same apply batch; writes commit with it.
pub struct RowTxn<'a> {
    view: &'a View<'a>,
    group: GroupId,
    writes: &'a mut BTreeMap<Vec<u8>, Option<Bytes>>,
}

impl RowTxn<'_> {
    /// # Errors
    /// A failed read.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let full = keys::kv_key(self.group, key);
        if let Some(write) = self.writes.get(&full) {
            return Ok(write.clone());
        }
        let value = self.view.get(Space::Kv, &full)?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    pub fn put(&mut self, key: &[u8], value: Bytes) {
        self.writes
            .insert(keys::kv_key(self.group, key), Some(value));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.writes.insert(keys::kv_key(self.group, key), None);
    }

    /// Every row whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// A failed read.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let full = keys::kv_key(self.group, prefix);
        let mut rows = BTreeMap::new();
        for item in self.view.prefix(Space::Kv, &full) {
            let (key, value) = item?;
            rows.insert(key.to_vec(), Some(Bytes::copy_from_slice(&value)));
        }
        for (key, write) in self.writes.iter().filter(|(k, _)| k.starts_with(&full)) {
            rows.insert(key.clone(), write.clone());
        }
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| Some((Bytes::copy_from_slice(&key[8..]), value?)))
            .collect())
    }
}

/// Up to this many entries are read with point lookups: an apply usually follows its append
/// closely, finding the entries in the memtable, where a lookup costs a fraction of setting up a
/// range over every table of the `log` tree. Longer catch-ups amortize one range.
const POINT_READ_ENTRIES: u64 = 8;

type StoredValues<'a> = Box<dyn Iterator<Item = Result<(u64, Slice), StorageError>> + 'a>;

/// The stored entries in [start, end], with their indexes, in order; missing ones are absent
/// (point reads report them as `Corrupt` right away).
fn entries<'a>(view: &'a View<'_>, group: GroupId, start: u64, end: u64) -> StoredValues<'a> {
    if end - start < POINT_READ_ENTRIES {
        Box::new((start..=end).map(move |index| {
            match view.get(Space::Log, keys::log_key(group, index))? {
                Some(value) => Ok((index, value)),
                None => Err(missing(group, index)),
            }
        }))
    } else {
        let range = keys::log_key(group, start)..=keys::log_key(group, end);
        Box::new(view.range(Space::Log, range).map(|item| {
            let (key, value) = item?;
            Ok((trailing_u64(&key, "log")?, value))
        }))
    }
}

fn missing(group: GroupId, index: u64) -> StorageError {
    StorageError::corrupt(format!(
        "committed entry {index} of group {group} is missing"
    ))
}

impl Store {
    /// Applies every stored entry in (last_applied, up_to] in order, in one atomic batch with the
    /// new state: a missed apply call can never skip an entry. Idempotent.
    ///
    /// Catch-ups longer than 1024 entries commit in several batches, each atomic with its own
    /// `last_applied`; an `AdvanceLogStart` starts a batch of its own.
    ///
    /// # Errors
    /// `Corrupt` if an entry in the range is missing or does not decode, offsets overflow, or a
    /// `Command` entry has no state machine to apply it (use [`Store::apply_up_to_with`]).
    /// Earlier batches of a long catch-up stay applied when a later one fails.
    pub fn apply_up_to(&self, group: GroupId, up_to: u64) -> Result<Vec<Applied>, StorageError> {
        self.apply(group, up_to, None)
    }

    /// As [`Store::apply_up_to`], with `machine` applying the group's `Command` entries.
    ///
    /// # Errors
    /// As [`Store::apply_up_to`], and whatever `machine` returns.
    pub fn apply_up_to_with(
        &self,
        group: GroupId,
        up_to: u64,
        machine: &mut dyn StateMachine,
    ) -> Result<Vec<Applied>, StorageError> {
        self.apply(group, up_to, Some(machine))
    }

    fn apply(
        &self,
        group: GroupId,
        up_to: u64,
        mut machine: Option<&mut dyn StateMachine>,
    ) -> Result<Vec<Applied>, StorageError> {
        let _guard = self.lock_group(group)?;
        let mut applied = Vec::new();
        loop {
            // A fresh view per batch: a retention entry must see the offset rows that the
            // batches before it wrote.
            let view = self.view()?;
            let state = view.group_state(group)?;
            let last_applied = state.public.last_applied;
            if last_applied >= up_to {
                return Ok(applied);
            }
            let end = up_to.min(last_applied.saturating_add(APPLY_BATCH_ENTRIES));
            let mut applier = Applier::new(&view, group, state, self.batch());
            applier.run(end, &mut machine, &mut applied)?;
            let removed = applier.removed_entries;
            let (batch, reached) = applier.finish()?;
            self.commit(batch)?;
            // An `AdvanceLogStart` at or below the log start removes nothing.
            if removed > 0 {
                self.removed_entries();
            }
            if reached >= up_to {
                return Ok(applied);
            }
        }
    }

    /// # Errors
    /// `Corrupt` if the stored state does not decode.
    pub fn partition_state(&self, group: GroupId) -> Result<PartitionState, StorageError> {
        Ok(self.view()?.group_state(group)?.public)
    }

    /// Applied key-value state.
    ///
    /// # Errors
    /// `Poisoned` if the store failed earlier.
    pub fn kv_get(&self, group: GroupId, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let view = self.view()?;
        let value = view.get(Space::Kv, keys::kv_key(group, key))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Every applied key starting with `prefix`, in key order, with the group stripped.
    ///
    /// # Errors
    /// `Poisoned` if the store failed earlier.
    pub fn kv_scan_prefix(
        &self,
        group: GroupId,
        prefix: &[u8],
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let view = self.view()?;
        let mut out = Vec::new();
        for item in view.prefix(Space::Kv, &keys::kv_key(group, prefix)) {
            let (key, value) = item?;
            out.push((
                Bytes::copy_from_slice(&key[8..]),
                Bytes::copy_from_slice(&value),
            ));
        }
        Ok(out)
    }
}

/// One atomic apply batch in the making.
struct Applier<'v> {
    view: &'v View<'v>,
    group: GroupId,
    state: GroupState,
    batch: Batch<'v>,
    /// One write per key: fjall gives every item of a batch the same sequence number, so two
    /// writes to one key in a batch would race.
    kv_writes: BTreeMap<Vec<u8>, Option<Bytes>>,
    producers: Producers,
    /// Entries that `AdvanceLogStart`s removed: their disk space is to be reclaimed.
    removed_entries: u64,
}

impl<'v> Applier<'v> {
    fn new(view: &'v View<'v>, group: GroupId, state: GroupState, batch: Batch<'v>) -> Self {
        Applier {
            view,
            group,
            state,
            batch,
            kv_writes: BTreeMap::new(),
            producers: Producers::default(),
            removed_entries: 0,
        }
    }

    /// Applies the entries after `last_applied` up to `end`, or up to the one before an
    /// `AdvanceLogStart` that is not the first: it opens the next batch.
    fn run(
        &mut self,
        end: u64,
        machine: &mut Option<&mut dyn StateMachine>,
        applied: &mut Vec<Applied>,
    ) -> Result<(), StorageError> {
        let first = self.state.public.last_applied + 1;
        let mut expected = first;
        for item in entries(self.view, self.group, first, end) {
            let (index, value) = item?;
            if index != expected {
                return Err(missing(self.group, expected));
            }
            let entry = StoredEntry::decode(index, &value)?;
            if matches!(entry.body, StoredBody::AdvanceLogStart(_)) && index != first {
                return Ok(());
            }
            let outcome = self.apply_entry(index, &entry, machine)?;
            applied.push(outcome);
            self.state.public.last_applied = index;
            expected += 1;
        }
        if expected != end + 1 {
            return Err(missing(self.group, expected));
        }
        Ok(())
    }

    fn apply_entry(
        &mut self,
        index: u64,
        entry: &StoredEntry<'_>,
        machine: &mut Option<&mut dyn StateMachine>,
    ) -> Result<Applied, StorageError> {
        match &entry.body {
            StoredBody::Records(batches) => self.apply_records(index, entry, *batches),
            StoredBody::Kv { puts, deletes } => {
                for (key, value) in puts {
                    let key = keys::kv_key(self.group, key);
                    self.kv_writes
                        .insert(key, Some(Bytes::copy_from_slice(value)));
                }
                for key in deletes {
                    self.kv_writes.insert(keys::kv_key(self.group, key), None);
                }
                Ok(Applied::Kv { index })
            }
            StoredBody::Command(command) => {
                let Some(machine) = machine.as_deref_mut() else {
                    return Err(StorageError::corrupt(format!(
                        "command entry {index} of group {} has no state machine to apply it",
                        self.group
                    )));
                };
                let mut rows = RowTxn {
                    view: self.view,
                    group: self.group,
                    writes: &mut self.kv_writes,
                };
                let outcome = machine.apply(index, command, &mut rows)?;
                Ok(Applied::Command { index, outcome })
            }
            StoredBody::AdvanceLogStart(target) => {
                self.removed_entries += advance_log_start(
                    self.view,
                    &mut self.batch,
                    self.group,
                    &mut self.state,
                    *target,
                    ENTRIES_PER_ADVANCE,
                )?;
                let log_start = self.state.public.log_start_offset;
                Ok(Applied::LogStart { index, log_start })
            }
            StoredBody::Blank | StoredBody::Membership(_) | StoredBody::SnapshotPointer(_) => {
                Ok(Applied::Other { index })
            }
        }
    }

    fn apply_records(
        &mut self,
        index: u64,
        entry: &StoredEntry<'_>,
        batches: Batches<'_>,
    ) -> Result<Applied, StorageError> {
        let summary = entry
            .records_summary()
            .expect("a records body has a summary");
        let group = self.group;
        let state = &mut self.state;
        let base_offset = state.public.next_offset;
        if summary.record_count > 0 {
            let row = OffsetRow {
                raft_index: index,
                record_count: summary.record_count,
                max_timestamp: summary.max_timestamp,
                bytes: summary.bytes,
            };
            let key = keys::offsets_key(group, base_offset);
            self.batch.insert(Space::Offsets, key, row.encode());
            if summary.max_timestamp > state.max_timestamp {
                let key = keys::times_key(group, summary.max_timestamp);
                self.batch
                    .insert(Space::Times, key, encode_time_row(base_offset));
                state.max_timestamp = summary.max_timestamp;
            }
            let next = base_offset.0.checked_add(summary.record_count);
            let size = state.public.size_bytes.checked_add(summary.bytes);
            let (Some(next), Some(size)) = (next, size) else {
                return Err(StorageError::corrupt(format!(
                    "offsets of group {group} overflow at entry {index}"
                )));
            };
            state.public.next_offset = Offset(next);
            state.public.size_bytes = size;
        }
        self.record_producers(base_offset, batches)?;
        Ok(Applied::Records {
            index,
            base_offset,
            record_count: summary.record_count,
        })
    }

    /// Adds each idempotent batch to its producer's window, unless an installed snapshot's
    /// producer state already covers its offset.
    fn record_producers(&mut self, base: Offset, batches: Batches<'_>) -> Result<(), StorageError> {
        let mut offset = base.0;
        for batch in batches {
            let first_offset = Offset(offset);
            offset += u64::from(batch.record_count());
            let (producer, sequence) = (batch.producer_id(), batch.base_sequence());
            if producer < 0 || sequence < 0 || first_offset < self.state.producers_through {
                continue;
            }
            let applied = ProducerBatch::new(sequence, batch.record_count(), first_offset);
            self.producers.record(
                self.view,
                self.group,
                producer,
                batch.producer_epoch(),
                applied,
            )?;
        }
        Ok(())
    }

    /// The batch with every queued write, the producers' rows and the new state, and the last
    /// applied index it commits.
    fn finish(mut self) -> Result<(Batch<'v>, u64), StorageError> {
        for (key, value) in std::mem::take(&mut self.kv_writes) {
            match value {
                Some(value) => self.batch.insert(Space::Kv, key, value.as_ref()),
                None => self.batch.remove(Space::Kv, key),
            }
        }
        let producers = std::mem::take(&mut self.producers);
        producers.write(self.view, &mut self.batch, self.group, &mut self.state)?;
        self.batch.insert(
            Space::Meta,
            keys::meta_key(self.group, TAG_GROUP_STATE),
            self.state.encode(),
        );
        Ok((self.batch, self.state.public.last_applied))
    }
}
