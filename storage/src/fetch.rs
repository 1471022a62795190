//! Reading the partition log: by offset for fetches, by timestamp for `ListOffsets`.
//!
//! Offsets are not stored in the batches. Each `Records` entry has an offset row (its first
//! offset, keyed, pointing at its raft index), and a batch's base offset is its entry's first
//! offset plus the record counts of the batches before it. Reads copy each returned batch once,
//! to stamp that base offset and the leader epoch (the entry's term) into it.

use crate::backend::Space;
use crate::batch::{stamp, BatchView};
use crate::entry::{StoredBody, StoredEntry};
use crate::keys::{self, trailing_u64};
use crate::state::{decode_time_row, OffsetRow, PartitionState};
use crate::store::View;
use crate::{GroupId, Offset, StorageError, Store};
use bytes::{Bytes, BytesMut};

/// Kafka's attribute bit for "timestamps are the broker's append time": every record then
/// carries the batch's max timestamp.
const LOG_APPEND_TIME: i16 = 0x08;

/// A fetch's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatches {
    /// Stamped with their base offsets and leader epochs.
    pub batches: Vec<Bytes>,
    pub state: PartitionState,
}

impl Store {
    /// Committed batches from the one holding `offset`, up to about `max_bytes` (at least one
    /// batch when any is available). `offset == next_offset` gives no batches.
    ///
    /// As in Kafka, the first batch may start before `offset` and may alone exceed `max_bytes`;
    /// after it, a batch that would exceed `max_bytes` ends the answer.
    ///
    /// # Errors
    /// `OffsetOutOfRange` below the log start or beyond the log end; `Corrupt` if the indexes
    /// and the log disagree.
    pub fn read_records(
        &self,
        group: GroupId,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<FetchedBatches, StorageError> {
        let view = self.view()?;
        let state = view.group_state(group)?.public;
        check_range(&state, offset)?;
        let mut batches = Vec::new();
        if offset == state.next_offset {
            return Ok(FetchedBatches { batches, state });
        }
        let (first, row) = row_at_or_before(&view, group, offset)?;
        if first < state.log_start_offset {
            return Err(StorageError::corrupt(format!(
                "group {group}: offset row {first} lies below the log start"
            )));
        }
        let mut taken = 0usize;
        let mut entry_first = first;
        let range = keys::log_key(group, row.raft_index)..=keys::log_key(group, state.last_applied);
        'entries: for item in view.range(Space::Log, range) {
            let (key, value) = item?;
            let index = trailing_u64(&key, "log")?;
            if entry_first == first && index != row.raft_index {
                return Err(StorageError::corrupt(format!(
                    "group {group}: entry {} of offset row {first} is missing",
                    row.raft_index
                )));
            }
            let entry = StoredEntry::decode(index, &value)?;
            let StoredBody::Records(stored) = entry.body else {
                continue;
            };
            let epoch = i32::try_from(entry.term).unwrap_or(i32::MAX);
            let mut base = entry_first;
            for batch in stored {
                let count = u64::from(batch.record_count());
                let batch_base = base;
                base = Offset(base.0 + count);
                if base <= offset {
                    continue;
                }
                let len = batch.bytes().len();
                if !batches.is_empty() && taken.saturating_add(len) > max_bytes {
                    break 'entries;
                }
                let mut copy = BytesMut::from(batch.bytes());
                stamp(&mut copy, batch_base.0, epoch);
                batches.push(copy.freeze());
                taken += len;
                if taken >= max_bytes {
                    break 'entries;
                }
            }
            entry_first = base;
        }
        if batches.is_empty() {
            return Err(StorageError::corrupt(format!(
                "group {group}: offset {offset} is below the log end but in no stored batch"
            )));
        }
        Ok(FetchedBatches { batches, state })
    }

    /// First offset whose record timestamp is >= `timestamp_ms`, with that timestamp.
    ///
    /// The time index is built from batch headers' max timestamps, as Kafka's is: with honest
    /// headers the answer is exact even when timestamps go backwards. A lookup for a time at or
    /// before the newest timestamp retention removed scans the offset rows from the log start.
    ///
    /// # Errors
    /// `Corrupt` if the indexes and the log disagree or a record does not decode.
    pub fn offset_for_timestamp(
        &self,
        group: GroupId,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, StorageError> {
        let view = self.view()?;
        let state = view.group_state(group)?;
        if state.public.log_start_offset == state.public.next_offset {
            return Ok(None);
        }
        // Time rows above `removed_max_timestamp` mark where the running max since the log start
        // first reached each value, so the first one at or above the target names the entry.
        let start = if timestamp_ms > state.removed_max_timestamp {
            let rows = keys::times_key(group, timestamp_ms)..=keys::times_key(group, i64::MAX);
            match view.range(Space::Times, rows).next() {
                None => return Ok(None),
                Some(item) => decode_time_row(&item?.1)?.max(state.public.log_start_offset),
            }
        } else {
            state.public.log_start_offset
        };
        let rows = keys::offsets_key(group, start)..=keys::offsets_key(group, Offset(u64::MAX));
        for item in view.range(Space::Offsets, rows) {
            let (key, value) = item?;
            let row = OffsetRow::decode(&value)?;
            if row.max_timestamp < timestamp_ms {
                continue;
            }
            let first = Offset(trailing_u64(&key, "offsets")?);
            if let Some(found) = find_in_entry(&view, group, first, &row, timestamp_ms)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

fn check_range(state: &PartitionState, offset: Offset) -> Result<(), StorageError> {
    if offset < state.log_start_offset || offset > state.next_offset {
        return Err(StorageError::OffsetOutOfRange {
            offset,
            log_start: state.log_start_offset,
            log_end: state.next_offset,
        });
    }
    Ok(())
}

/// The offset row of the entry holding `offset`: the one with the largest first offset <= it.
fn row_at_or_before(
    view: &View<'_>,
    group: GroupId,
    offset: Offset,
) -> Result<(Offset, OffsetRow), StorageError> {
    let rows = keys::offsets_key(group, Offset(0))..=keys::offsets_key(group, offset);
    let item = view
        .range(Space::Offsets, rows)
        .next_back()
        .ok_or_else(|| {
            StorageError::corrupt(format!("group {group}: no offset row at or below {offset}"))
        })?;
    let (key, value) = item?;
    Ok((
        Offset(trailing_u64(&key, "offsets")?),
        OffsetRow::decode(&value)?,
    ))
}

/// The first record at or after `timestamp_ms` in the entry whose offset row is `row`.
fn find_in_entry(
    view: &View<'_>,
    group: GroupId,
    first: Offset,
    row: &OffsetRow,
    timestamp_ms: i64,
) -> Result<Option<(Offset, i64)>, StorageError> {
    let value = view
        .get(Space::Log, keys::log_key(group, row.raft_index))?
        .ok_or_else(|| {
            StorageError::corrupt(format!(
                "group {group}: entry {} of offset row {first} is missing",
                row.raft_index
            ))
        })?;
    let entry = StoredEntry::decode(row.raft_index, &value)?;
    let StoredBody::Records(stored) = entry.body else {
        return Err(StorageError::corrupt(format!(
            "group {group}: offset row {first} points at entry {} without records",
            row.raft_index
        )));
    };
    let mut base = first.0;
    for batch in stored {
        let batch_base = base;
        base += u64::from(batch.record_count());
        if batch.max_timestamp() < timestamp_ms {
            continue;
        }
        if let Some((delta, timestamp)) = first_record_at_or_after(&batch, timestamp_ms)? {
            return Ok(Some((Offset(batch_base + delta), timestamp)));
        }
    }
    Ok(None)
}

/// Offset delta and timestamp of the batch's first record at or after `timestamp_ms`.
fn first_record_at_or_after(
    batch: &BatchView<'_>,
    timestamp_ms: i64,
) -> Result<Option<(u64, i64)>, StorageError> {
    let append_time = batch.attributes() & LOG_APPEND_TIME != 0;
    let plain = batch
        .decompressed(crate::batch::MAX_DECOMPRESSED_BYTES)
        .map_err(|e| StorageError::corrupt(format!("stored batch: {e}")))?;
    for record in batch.records_in(&plain) {
        let record = record.map_err(|e| StorageError::corrupt(format!("stored batch: {e}")))?;
        let timestamp = if append_time {
            batch.max_timestamp()
        } else {
            record.timestamp
        };
        if timestamp >= timestamp_ms {
            return Ok(Some((
                record.offset.wrapping_sub(batch.base_offset()),
                timestamp,
            )));
        }
    }
    Ok(None)
}
