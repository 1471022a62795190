//! The Raft log of every group, and the Raft hard state.
//!
//! Entries are keyed by group and index. Writes follow Raft's rule: a stored entry goes only from
//! the first new entry whose term conflicts with it, so a stale or repeated append never removes
//! an entry this node already acknowledged. Truncate-then-append is one atomic write, so a crash
//! can never leave a truncated log without its replacement (async-raft 0.6.1 does the two as
//! separate storage calls). Entries the state machine applied are never changed or removed here:
//! a request to do so means consensus broke, and the store refuses it instead of diverging
//! silently.
//!
//! The membership rows in `meta` mirror the log's `Membership` entries, so the newest one is a
//! point lookup rather than a scan back through every record batch.

use crate::backend::Space;
use crate::entry::{self, decode_term, LogEntry};
use crate::keys::{self, membership_key, trailing_u64, TAG_HARD_STATE};
use crate::state::{decode_membership, encode_membership, LogFloor};
use crate::store::{Batch, Tail, View};
use crate::{EntryPayload, GroupId, StorageError, Store};
use bytes::Bytes;
use std::collections::BTreeSet;

/// What [`Store::read_log`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSlice {
    /// The floor, when the range starts at or below it: the entries up to it are gone.
    pub compacted: Option<LogFloor>,
    /// The stored entries of the range, in order.
    pub entries: Vec<LogEntry>,
}

impl Store {
    /// Writes `entries` (contiguous, ascending) by Raft's rule, in one atomic batch: see
    /// [`Store::write_log`]. Not synced: call `request_sync`.
    ///
    /// # Errors
    /// As [`Store::write_log`].
    ///
    /// # Panics
    /// If the indexes are not contiguous and ascending.
    pub fn append_entries(&self, group: GroupId, entries: &[LogEntry]) -> Result<(), StorageError> {
        self.write_log(group, None, entries)
    }

    /// Removes entries with index >= start (atomic).
    ///
    /// # Errors
    /// `AppliedEntryConflict` if that would remove an applied entry.
    pub fn delete_entries_from(&self, group: GroupId, start: u64) -> Result<(), StorageError> {
        self.write_log(group, Some(start), &[])
    }

    /// Writes `entries` (contiguous, ascending) by Raft's rule, in one atomic batch. Not synced:
    /// call `request_sync`.
    ///
    /// A new entry whose stored counterpart has the same term is kept as stored, and so is one
    /// at or below the log floor (retention or a snapshot removed it; it was committed). From
    /// the first new entry that conflicts (another term, or nothing stored), every stored entry
    /// at or above its index goes and the new entries are written. When every new entry
    /// matches, the entries stored after them stay: a stale or repeated append never removes
    /// what it does not replace.
    ///
    /// `void_from` is a truncation the consensus layer asked for and has not carried out
    /// (async-raft's `delete_logs_from`, which it follows with the replacing append). Without
    /// entries, every stored entry from it goes. With entries the rule above decides; a void
    /// point below the first new entry with stored entries in between is refused, as it would
    /// leave a gap.
    ///
    /// # Errors
    /// `AppliedEntryConflict` if the write would change or remove an applied entry;
    /// `InvalidEntry` if an entry cannot be encoded (a batch without a proper frame) or the
    /// write would leave a gap; `Corrupt` if an applied entry is missing.
    ///
    /// # Panics
    /// If the indexes are not contiguous and ascending.
    pub fn write_log(
        &self,
        group: GroupId,
        void_from: Option<u64>,
        entries: &[LogEntry],
    ) -> Result<(), StorageError> {
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index + 1,
                "appended entries must be contiguous"
            );
        }
        if entries.is_empty() && void_from.is_none() {
            return Ok(());
        }
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let last_applied = view.group_state(group)?.public.last_applied;
        let floor = view.floor(group)?.index;
        let tail = self.tail(group);
        let cut = match entries.first() {
            None => void_from,
            Some(first) => {
                refuse_gap(&view, group, void_from, first.index)?;
                first_conflict(&view, group, entries, floor, last_applied, tail)?
            }
        };
        // Every new entry matches what is stored: nothing to write.
        let Some(cut) = cut else {
            return Ok(());
        };
        let mut batch = self.batch();
        let write = Replacement {
            cut,
            entries,
            last_applied,
            tail,
        };
        let new_members = write.queue(&view, &mut batch, group)?;
        self.commit(batch)?;
        self.set_tail(group, Some(write.tail_after(&new_members)));
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

    /// Entries in [start, stop) and, when `start` lies at or below the log floor (entries
    /// there were removed), that floor, read in one consistent view: a replication stream
    /// asking for removed entries must switch to a snapshot, not send a log with a gap.
    ///
    /// # Errors
    /// `Corrupt` if a stored entry or the floor does not decode.
    pub fn read_log(
        &self,
        group: GroupId,
        start: u64,
        stop: u64,
    ) -> Result<LogSlice, StorageError> {
        let view = self.view()?;
        let floor = view.floor(group)?;
        let compacted = (floor.index > 0 && start <= floor.index).then_some(floor);
        let mut entries = Vec::new();
        if start < stop {
            let range = keys::log_key(group, start)..keys::log_key(group, stop);
            for item in view.range(Space::Log, range) {
                let (key, value) = item?;
                entries.push(entry::decode_owned(trailing_u64(&key, "log")?, &value)?);
            }
        }
        Ok(LogSlice { compacted, entries })
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
        self.last_membership_before(group, u64::MAX)
    }

    /// As [`Store::last_membership`], counting only entries below `end`: what the membership is
    /// once a pending truncation from `end` is carried out.
    ///
    /// # Errors
    /// `Corrupt` if a membership row does not decode.
    pub fn last_membership_before(
        &self,
        group: GroupId,
        end: u64,
    ) -> Result<Option<(u64, Bytes)>, StorageError> {
        let view = self.view()?;
        let rows = membership_key(group, 0)..membership_key(group, end);
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

/// Stored entries the consensus layer voided below the first new entry would leave a gap.
fn refuse_gap(
    view: &View<'_>,
    group: GroupId,
    void_from: Option<u64>,
    first: u64,
) -> Result<(), StorageError> {
    let Some(void) = void_from.filter(|&void| void < first) else {
        return Ok(());
    };
    let between = keys::log_key(group, void)..keys::log_key(group, first);
    if view.keys(Space::Log, between).next().is_some() {
        return Err(StorageError::InvalidEntry {
            index: first,
            reason: "the entries before it are void: the log would have a gap",
        });
    }
    Ok(())
}

/// Replacing the log from `cut` (the first new entry that conflicts, or a void point) with the
/// new entries from there on.
struct Replacement<'e> {
    cut: u64,
    entries: &'e [LogEntry],
    last_applied: u64,
    tail: Tail,
}

impl Replacement<'_> {
    /// Queues the writes; returns the indexes of the new membership entries.
    fn queue(
        &self,
        view: &View<'_>,
        batch: &mut Batch<'_>,
        group: GroupId,
    ) -> Result<BTreeSet<u64>, StorageError> {
        let (cut, tail) = (self.cut, self.tail);
        // The new entries overwrite [cut, last] in place (a key written twice in one batch
        // races in fjall); only what lies beyond them is removed.
        let remove_from = self
            .entries
            .last()
            .map_or(Some(cut), |last| last.index.checked_add(1));
        if let Some(from) = remove_from.filter(|&from| tail.log.is_none_or(|top| top >= from)) {
            truncate_from(view, batch, group, from, self.last_applied)?;
        }
        let new = self.entries.iter().filter(|e| e.index >= cut);
        let new_members: BTreeSet<u64> = new
            .clone()
            .filter(|e| matches!(e.payload, EntryPayload::Membership(_)))
            .map(|e| e.index)
            .collect();
        if tail.membership.is_none_or(|top| top >= cut) {
            remove_membership_rows(view, batch, group, cut, |index| {
                !new_members.contains(&index)
            })?;
        }
        for entry in new {
            let key = keys::log_key(group, entry.index);
            batch.insert(Space::Log, key, entry::encode(entry)?);
            if let EntryPayload::Membership(members) = &entry.payload {
                let key = membership_key(group, entry.index);
                batch.insert(Space::Meta, key, encode_membership(members));
            }
        }
        Ok(new_members)
    }

    /// Nothing at or above the cut survives but the new entries and their membership rows.
    fn tail_after(&self, new_members: &BTreeSet<u64>) -> Tail {
        let below_cut = self.cut.saturating_sub(1);
        let log = self
            .entries
            .last()
            .map_or(self.tail.log.unwrap_or(u64::MAX).min(below_cut), |last| {
                last.index
            });
        let below_new = self.tail.membership.unwrap_or(u64::MAX).min(below_cut);
        Tail {
            log: Some(log),
            membership: Some(new_members.last().copied().unwrap_or(below_new)),
        }
    }
}

/// The index of the first new entry that does not match the stored log (`None`: all match).
/// Entries at or below the floor were committed and removed: they match by definition.
fn first_conflict(
    view: &View<'_>,
    group: GroupId,
    entries: &[LogEntry],
    floor: u64,
    last_applied: u64,
    tail: Tail,
) -> Result<Option<u64>, StorageError> {
    for entry in entries.iter().filter(|e| e.index > floor) {
        // Nothing is stored this high: the common append at the end of the log reads nothing.
        if tail.log.is_some_and(|top| top < entry.index) {
            return Ok(Some(entry.index));
        }
        let stored = view.get(Space::Log, keys::log_key(group, entry.index))?;
        let matches = match &stored {
            Some(value) => decode_term(entry.index, value)? == entry.term,
            None => false,
        };
        if matches {
            continue;
        }
        if entry.index <= last_applied {
            return Err(match stored {
                Some(_) => StorageError::AppliedEntryConflict {
                    index: entry.index,
                    last_applied,
                },
                None => StorageError::corrupt(format!(
                    "applied log entry {} of group {group} is missing",
                    entry.index
                )),
            });
        }
        return Ok(Some(entry.index));
    }
    Ok(None)
}

/// Queues removal of every stored entry with index >= `start`, refusing applied ones.
fn truncate_from(
    view: &View<'_>,
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
    view: &View<'_>,
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
