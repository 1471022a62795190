//! Applying committed entries: offsets for records, key-value state for the rest.
//!
//! Apply reads the entries from the store's own log, never from the caller, so a lost or skipped
//! apply call cannot skip an entry (async-raft 0.6.1 can advance `last_applied` without applying).
//! A `Records` entry's payload stays where it is; applying it writes one offset row (and a time
//! row when it raises the partition's newest timestamp) in the same atomic batch as the new
//! state, so the state and the indexes never disagree, whatever crashes.

use crate::backend::{Slice, Space};
use crate::entry::{StoredBody, StoredEntry};
use crate::keys::{self, trailing_u64, TAG_GROUP_STATE};
use crate::state::{encode_time_row, GroupState, OffsetRow, PartitionState};
use crate::store::View;
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
    Other {
        index: u64,
    },
}

impl Applied {
    pub fn index(&self) -> u64 {
        match self {
            Applied::Records { index, .. } | Applied::Kv { index } | Applied::Other { index } => {
                *index
            }
        }
    }
}

/// Up to this many entries are read with point lookups: an apply usually follows its append
/// closely, finding the entries in the memtable, where a lookup costs a fraction of setting up a
/// range over every table of the `log` tree. Longer catch-ups amortize one range.
const POINT_READ_ENTRIES: u64 = 8;

/// The stored entries in [start, end], with their indexes, in order; missing ones are absent
/// (point reads report them as `Corrupt` right away).
fn entries<'a>(
    view: &'a View<'_>,
    group: GroupId,
    start: u64,
    end: u64,
) -> Box<dyn Iterator<Item = Result<(u64, Slice), StorageError>> + 'a> {
    if end - start < POINT_READ_ENTRIES {
        Box::new((start..=end).map(move |index| {
            match view.get(Space::Log, keys::log_key(group, index))? {
                Some(value) => Ok((index, value)),
                None => Err(StorageError::corrupt(format!(
                    "committed entry {index} of group {group} is missing"
                ))),
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

impl Store {
    /// Applies every stored entry in (last_applied, up_to] in order, in one atomic batch with the
    /// new state: a missed apply call can never skip an entry. Idempotent.
    ///
    /// Catch-ups longer than 1024 entries commit in several batches, each atomic with its own
    /// `last_applied`.
    ///
    /// # Errors
    /// `Corrupt` if an entry in the range is missing or does not decode, or offsets overflow.
    /// Earlier batches of a long catch-up stay applied when a later one fails.
    pub fn apply_up_to(&self, group: GroupId, up_to: u64) -> Result<Vec<Applied>, StorageError> {
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let mut state = view.group_state(group)?;
        let mut applied = Vec::new();
        while state.public.last_applied < up_to {
            let end = up_to.min(
                state
                    .public
                    .last_applied
                    .saturating_add(APPLY_BATCH_ENTRIES),
            );
            state = self.apply_batch(&view, group, state, end, &mut applied)?;
        }
        Ok(applied)
    }

    fn apply_batch(
        &self,
        view: &View<'_>,
        group: GroupId,
        before: GroupState,
        end: u64,
        applied: &mut Vec<Applied>,
    ) -> Result<GroupState, StorageError> {
        let mut state = before;
        let mut batch = self.batch();
        // One write per key: fjall gives every item of a batch the same sequence number, so two
        // writes to one key in a batch would race.
        let mut kv_writes: BTreeMap<Vec<u8>, Option<Bytes>> = BTreeMap::new();
        let mut expected = before.public.last_applied + 1;
        let missing = |index| {
            StorageError::corrupt(format!(
                "committed entry {index} of group {group} is missing"
            ))
        };
        for item in entries(view, group, expected, end) {
            let (index, value) = item?;
            if index != expected {
                return Err(missing(expected));
            }
            let entry = StoredEntry::decode(index, &value)?;
            match &entry.body {
                StoredBody::Records(_) => {
                    let summary = entry
                        .records_summary()
                        .expect("a records body has a summary");
                    let base_offset = state.public.next_offset;
                    if summary.record_count > 0 {
                        let row = OffsetRow {
                            raft_index: index,
                            record_count: summary.record_count,
                            max_timestamp: summary.max_timestamp,
                            bytes: summary.bytes,
                        };
                        batch.insert(
                            Space::Offsets,
                            keys::offsets_key(group, base_offset),
                            row.encode(),
                        );
                        if summary.max_timestamp > state.max_timestamp {
                            let key = keys::times_key(group, summary.max_timestamp);
                            batch.insert(Space::Times, key, encode_time_row(base_offset));
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
                    let record_count = summary.record_count;
                    applied.push(Applied::Records {
                        index,
                        base_offset,
                        record_count,
                    });
                }
                StoredBody::Kv { puts, deletes } => {
                    for (key, value) in puts {
                        kv_writes.insert(
                            keys::kv_key(group, key),
                            Some(Bytes::copy_from_slice(value)),
                        );
                    }
                    for key in deletes {
                        kv_writes.insert(keys::kv_key(group, key), None);
                    }
                    applied.push(Applied::Kv { index });
                }
                StoredBody::Blank | StoredBody::Membership(_) | StoredBody::SnapshotPointer(_) => {
                    applied.push(Applied::Other { index });
                }
            }
            expected += 1;
        }
        if expected != end + 1 {
            return Err(missing(expected));
        }
        for (key, value) in kv_writes {
            match value {
                Some(value) => batch.insert(Space::Kv, key, value.as_ref()),
                None => batch.remove(Space::Kv, key),
            }
        }
        state.public.last_applied = end;
        batch.insert(
            Space::Meta,
            keys::meta_key(group, TAG_GROUP_STATE),
            state.encode(),
        );
        self.commit(batch)?;
        Ok(state)
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
