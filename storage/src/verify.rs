//! A full consistency check of one group, for tests and the simulation's checkers.

use crate::backend::Space;
use crate::entry::{StoredBody, StoredEntry};
use crate::keys::{self, membership_key, trailing_u64};
use crate::keys::{TAG_PRODUCER, TAG_PRODUCER_AGE};
use crate::producer::ProducerState;
use crate::state::{decode_time_row, GroupState, OffsetRow};
use crate::store::View;
use crate::{GroupId, Offset, StorageError, Store};
use std::collections::BTreeSet;

impl Store {
    /// Checks everything stored for the group against everything else: the offset rows against
    /// the state and the log entries they point at, the time rows against the offset rows, the
    /// log against its floor and applied index, the membership rows against the log. Reads the
    /// whole group, so it is meant for tests and simulation checkers, not for serving.
    ///
    /// # Errors
    /// `Corrupt` naming the first disagreement found.
    pub fn verify_group(&self, group: GroupId) -> Result<(), StorageError> {
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let state = view.group_state(group)?;
        let floor = view.floor(group)?;
        let public = state.public;
        let fail = |what: String| Err(StorageError::corrupt(format!("group {group}: {what}")));

        // The log: nothing at or below the floor, every index up to the last applied present.
        let mut log_indexes = Vec::new();
        let mut memberships_in_log = BTreeSet::new();
        for item in view.prefix(Space::Log, &keys::group_prefix(group)) {
            let (key, value) = item?;
            let index = trailing_u64(&key, "log")?;
            if let StoredBody::Membership(_) = StoredEntry::decode(index, &value)?.body {
                memberships_in_log.insert(index);
            }
            log_indexes.push(index);
        }
        if let Some(&first) = log_indexes.first() {
            if first <= floor.index {
                return fail(format!(
                    "log entry {first} at or below the floor {}",
                    floor.index
                ));
            }
        }
        if public.last_applied < floor.index {
            return fail(format!(
                "last applied {} below the floor",
                public.last_applied
            ));
        }
        let applied_present = log_indexes
            .iter()
            .filter(|&&i| i <= public.last_applied)
            .count();
        if applied_present as u64 != public.last_applied - floor.index {
            return fail(format!(
                "{applied_present} entries between the floor {} and last applied {}",
                floor.index, public.last_applied
            ));
        }
        let tail = self.tail(group);
        let last_index = log_indexes.last().copied();
        if let (Some(bound), Some(last)) = (tail.log, last_index) {
            if last > bound {
                return fail(format!("log entry {last} above the cached bound {bound}"));
            }
        }

        // Membership rows mirror the log's membership entries.
        let mut rows = BTreeSet::new();
        let range = membership_key(group, 0)..=membership_key(group, u64::MAX);
        for key in view.keys(Space::Meta, range) {
            rows.insert(trailing_u64(&key?, "membership")?);
        }
        if rows != memberships_in_log {
            return fail(format!(
                "membership rows {rows:?}, entries {memberships_in_log:?}"
            ));
        }
        if let (Some(bound), Some(&last)) = (tail.membership, rows.last()) {
            if last > bound {
                return fail(format!(
                    "membership row {last} above the cached bound {bound}"
                ));
            }
        }

        // Offset rows: contiguous from the log start to the end, matching their entries.
        let mut next = public.log_start_offset;
        let mut size = 0u64;
        let mut previous_index = floor.index;
        let mut running_max = state.removed_max_timestamp;
        let mut expected_times = Vec::new();
        for item in view.prefix(Space::Offsets, &keys::group_prefix(group)) {
            let (key, value) = item?;
            let first = Offset(trailing_u64(&key, "offsets")?);
            let row = OffsetRow::decode(&value)?;
            if first != next {
                return fail(format!("offset row {first} where {next} was expected"));
            }
            if row.raft_index <= previous_index || row.raft_index > public.last_applied {
                return fail(format!(
                    "offset row {first} points at entry {}",
                    row.raft_index
                ));
            }
            let Some(value) = view.get(Space::Log, keys::log_key(group, row.raft_index))? else {
                return fail(format!(
                    "entry {} of offset row {first} is missing",
                    row.raft_index
                ));
            };
            let summary = StoredEntry::decode(row.raft_index, &value)?.records_summary();
            let matches = summary.is_some_and(|s| {
                (s.record_count, s.bytes, s.max_timestamp)
                    == (row.record_count, row.bytes, row.max_timestamp)
            });
            if !matches {
                return fail(format!("offset row {first} disagrees with its entry"));
            }
            if row.max_timestamp > running_max {
                running_max = row.max_timestamp;
                expected_times.push((row.max_timestamp, first));
            }
            previous_index = row.raft_index;
            next = Offset(first.0 + row.record_count);
            size += row.bytes;
        }
        if next != public.next_offset || size != public.size_bytes {
            return fail(format!(
                "offset rows end at {next} with {size} bytes, the state says {} and {}",
                public.next_offset, public.size_bytes
            ));
        }
        if running_max > state.max_timestamp {
            return fail(format!(
                "timestamps beyond the state's maximum {}",
                state.max_timestamp
            ));
        }

        // Time rows: exactly where the running maximum grew, counting what retention removed.
        let mut times = Vec::new();
        for item in view.prefix(Space::Times, &keys::group_prefix(group)) {
            let (key, value) = item?;
            let timestamp = (trailing_u64(&key, "times")? ^ (1 << 63)) as i64;
            times.push((timestamp, decode_time_row(&value)?));
        }
        if times != expected_times {
            return fail(format!("time rows {times:?}, expected {expected_times:?}"));
        }
        self.verify_producers(&view, group, &state)
    }

    /// Producer rows: each has one age row at its newest batch, and the state counts them.
    fn verify_producers(
        &self,
        view: &View<'_>,
        group: GroupId,
        state: &GroupState,
    ) -> Result<(), StorageError> {
        let fail = |what: String| Err(StorageError::corrupt(format!("group {group}: {what}")));
        let mut expected = BTreeSet::new();
        for item in view.prefix(Space::Meta, &keys::meta_key(group, TAG_PRODUCER)) {
            let (key, value) = item?;
            let producer = trailing_u64(&key, "producer")?;
            expected.insert((ProducerState::decode(&value)?.newest_offset().0, producer));
        }
        let mut ages = BTreeSet::new();
        for key in view.prefix_keys(Space::Meta, &keys::meta_key(group, TAG_PRODUCER_AGE)) {
            let key = key?;
            let producer = trailing_u64(&key, "producer age")?;
            ages.insert((
                trailing_u64(&key[..key.len() - 8], "producer age")?,
                producer,
            ));
        }
        if ages != expected {
            return fail(format!("producer age rows {ages:?}, expected {expected:?}"));
        }
        if expected.len() != state.producer_count as usize {
            return fail(format!(
                "{} producer rows, the state counts {}",
                expected.len(),
                state.producer_count
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, NewRecord};
    use crate::{EntryPayload, LogEntry, StoreOptions, SyncMode};

    #[test]
    fn a_lost_offset_row_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions {
            sync_mode: SyncMode::Inline,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).expect("open");
        let group = GroupId(3);
        let entries: Vec<LogEntry> = (1..=3)
            .map(|index| {
                let mut builder = BatchBuilder::with_capacity(64);
                let value: &[u8] = b"v";
                let record = NewRecord {
                    value: Some(value),
                    timestamp: 10,
                    ..NewRecord::default()
                };
                builder.push(&record);
                let payload = EntryPayload::Records(vec![builder.finish()]);
                LogEntry {
                    index,
                    term: 1,
                    payload,
                }
            })
            .collect();
        store.append_entries(group, &entries).expect("append");
        store.apply_up_to(group, 3).expect("apply");
        store.verify_group(group).expect("consistent");
        let mut batch = store.batch();
        batch.remove(Space::Offsets, keys::offsets_key(group, Offset(1)));
        store.commit(batch).expect("remove");
        assert!(matches!(
            store.verify_group(group),
            Err(StorageError::Corrupt(_))
        ));
    }
}
