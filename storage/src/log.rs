//! The Raft log of every group, and the Raft hard state.
//!
//! Entries are keyed by group and index. Truncate-then-append is one atomic write, so a crash can
//! never leave a truncated log without its replacement (async-raft 0.6.1 does the two as separate
//! storage calls). Entries the state machine applied are never changed or removed here: a request
//! to do so means consensus broke, and the store refuses it instead of diverging silently.
//!
//! The membership rows in `meta` mirror the log's `Membership` entries, so the newest one is a
//! point lookup rather than a scan back through every record batch.

use crate::backend::Space;
use crate::entry::{self, decode_term, LogEntry};
use crate::keys::{self, membership_key, trailing_u64, TAG_HARD_STATE};
use crate::state::{decode_membership, encode_membership, LogFloor};
use crate::store::{Batch, Tail};
use crate::{EntryPayload, GroupId, StorageError, Store};
use bytes::Bytes;
use std::collections::BTreeSet;

impl Store {
    /// Writes `entries` (contiguous, ascending) and removes every stored entry of the group with
    /// an index >= `entries[0].index` that is not rewritten: truncate-then-append in one atomic
    /// batch. Not synced: call `request_sync`.
    ///
    /// Entries at or below the last applied index are not rewritten: they must match the stored
    /// ones (same term), and entries retention already removed are taken as matching.
    ///
    /// # Errors
    /// `AppliedEntryConflict` if the write would change or remove an applied entry;
    /// `InvalidEntry` if an entry cannot be encoded (a batch without a proper frame).
    ///
    /// # Panics
    /// If the indexes are not contiguous and ascending.
    pub fn append_entries(&self, group: GroupId, entries: &[LogEntry]) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index + 1,
                "appended entries must be contiguous"
            );
        }
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let last_applied = view.group_state(group)?.public.last_applied;
        let floor = view.floor(group)?;
        let mut batch = self.batch();

        for entry in entries.iter().take_while(|e| e.index <= last_applied) {
            match view.get(Space::Log, keys::log_key(group, entry.index))? {
                Some(stored) if decode_term(entry.index, &stored)? == entry.term => {}
                Some(_) => {
                    return Err(StorageError::AppliedEntryConflict {
                        index: entry.index,
                        last_applied,
                    })
                }
                None if entry.index <= floor.index => {}
                None => {
                    return Err(StorageError::corrupt(format!(
                        "applied log entry {} of group {group} is missing",
                        entry.index
                    )))
                }
            }
        }
        let tail = self.tail(group);
        if last.index < u64::MAX && tail.log.is_none_or(|top| top > last.index) {
            truncate_from(&view, &mut batch, group, last.index + 1, last_applied)?;
        }
        let first_new = first.index.max(last_applied.saturating_add(1));
        let new_members: BTreeSet<u64> = entries
            .iter()
            .filter(|e| e.index >= first_new && matches!(e.payload, EntryPayload::Membership(_)))
            .map(|e| e.index)
            .collect();
        if tail.membership.is_none_or(|top| top >= first_new) {
            remove_membership_rows(&view, &mut batch, group, first_new, |index| {
                !new_members.contains(&index)
            })?;
        }
        for entry in entries.iter().filter(|e| e.index >= first_new) {
            batch.insert(
                Space::Log,
                keys::log_key(group, entry.index),
                entry::encode(entry)?,
            );
            if let EntryPayload::Membership(members) = &entry.payload {
                batch.insert(
                    Space::Meta,
                    membership_key(group, entry.index),
                    encode_membership(members),
                );
            }
        }
        self.commit(batch)?;
        // Nothing above the last entry survived, and no membership row at or above the first
        // new index but the new ones.
        let below_new = tail.membership.unwrap_or(u64::MAX).min(first_new - 1);
        let membership = new_members.last().copied().unwrap_or(below_new);
        let log = Some(last.index);
        self.set_tail(
            group,
            Some(Tail {
                log,
                membership: Some(membership),
            }),
        );
        Ok(())
    }

    /// Removes entries with index >= start (atomic).
    ///
    /// # Errors
    /// `AppliedEntryConflict` if that would remove an applied entry.
    pub fn delete_entries_from(&self, group: GroupId, start: u64) -> Result<(), StorageError> {
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let last_applied = view.group_state(group)?.public.last_applied;
        let mut batch = self.batch();
        truncate_from(&view, &mut batch, group, start, last_applied)?;
        remove_membership_rows(&view, &mut batch, group, start, |_| true)?;
        self.commit(batch)?;
        let below = start.saturating_sub(1);
        let tail = self.tail(group);
        self.set_tail(
            group,
            Some(Tail {
                log: Some(tail.log.unwrap_or(u64::MAX).min(below)),
                membership: Some(tail.membership.unwrap_or(u64::MAX).min(below)),
            }),
        );
        Ok(())
    }

    /// Entries in [start, stop), skipping removed ones.
    ///
    /// # Errors
    /// `Corrupt` if a stored entry does not decode.
    pub fn read_entries(
        &self,
        group: GroupId,
        start: u64,
        stop: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        if start >= stop {
            return Ok(Vec::new());
        }
        let view = self.view()?;
        let range = keys::log_key(group, start)..keys::log_key(group, stop);
        let mut out = Vec::new();
        for item in view.range(Space::Log, range) {
            let (key, value) = item?;
            out.push(entry::decode_owned(trailing_u64(&key, "log")?, &value)?);
        }
        Ok(out)
    }

    /// The newest stored entry. `None` when the log is empty, which happens once retention or
    /// compaction removed every entry: the last index and term are then the [`LogFloor`]'s.
    ///
    /// # Errors
    /// `Corrupt` if the entry does not decode.
    pub fn last_entry(&self, group: GroupId) -> Result<Option<LogEntry>, StorageError> {
        let view = self.view()?;
        let Some(item) = view
            .prefix(Space::Log, &keys::group_prefix(group))
            .next_back()
        else {
            return Ok(None);
        };
        let (key, value) = item?;
        Ok(Some(entry::decode_owned(
            trailing_u64(&key, "log")?,
            &value,
        )?))
    }

    /// Newest `Membership` payload at or below the end of the log, with its index; else the
    /// floor's, reported at the floor's index (the removed entry's own index is not kept).
    ///
    /// # Errors
    /// `Corrupt` if a membership row does not decode.
    pub fn last_membership(&self, group: GroupId) -> Result<Option<(u64, Bytes)>, StorageError> {
        let view = self.view()?;
        let rows = membership_key(group, 0)..=membership_key(group, u64::MAX);
        if let Some(item) = view.range(Space::Meta, rows).next_back() {
            let (key, value) = item?;
            return Ok(Some((
                trailing_u64(&key, "membership")?,
                decode_membership(&value)?,
            )));
        }
        let floor = view.floor(group)?;
        Ok(floor.membership.map(|members| (floor.index, members)))
    }

    /// # Errors
    /// `Corrupt` if the stored floor does not decode.
    pub fn log_floor(&self, group: GroupId) -> Result<LogFloor, StorageError> {
        self.view()?.floor(group)
    }

    /// Stores Raft's hard state (term, vote), opaque here. Not synced: call `request_sync`
    /// before answering the vote it records.
    ///
    /// # Errors
    /// `Poisoned` if the store failed earlier or this write fails.
    pub fn save_hard_state(&self, group: GroupId, state: &[u8]) -> Result<(), StorageError> {
        self.inner.poison.check()?;
        let mut batch = self.batch();
        batch.insert(Space::Meta, keys::meta_key(group, TAG_HARD_STATE), state);
        self.commit(batch)
    }

    /// # Errors
    /// `Poisoned` if the store failed earlier.
    pub fn hard_state(&self, group: GroupId) -> Result<Option<Bytes>, StorageError> {
        let view = self.view()?;
        let value = view.get(Space::Meta, keys::meta_key(group, TAG_HARD_STATE))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }
}

/// Queues removal of every stored entry with index >= `start`, refusing applied ones.
fn truncate_from(
    view: &crate::store::View<'_>,
    batch: &mut Batch<'_>,
    group: GroupId,
    start: u64,
    last_applied: u64,
) -> Result<(), StorageError> {
    let suffix = keys::log_key(group, start)..=keys::log_key(group, u64::MAX);
    for key in view.keys(Space::Log, suffix) {
        let index = trailing_u64(&key?, "log")?;
        if index <= last_applied {
            return Err(StorageError::AppliedEntryConflict {
                index,
                last_applied,
            });
        }
        batch.remove(Space::Log, keys::log_key(group, index));
    }
    Ok(())
}

/// Queues removal of the membership rows at or above `start` that `remove` selects.
fn remove_membership_rows(
    view: &crate::store::View<'_>,
    batch: &mut Batch<'_>,
    group: GroupId,
    start: u64,
    remove: impl Fn(u64) -> bool,
) -> Result<(), StorageError> {
    let rows = membership_key(group, start)..=membership_key(group, u64::MAX);
    for key in view.keys(Space::Meta, rows) {
        let index = trailing_u64(&key?, "membership")?;
        if remove(index) {
            batch.remove(Space::Meta, membership_key(group, index));
        }
    }
    Ok(())
}
