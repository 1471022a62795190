//! Snapshots: a group's state at a log index, for a replica that needs entries its leader no
//! longer holds.
//!
//! A partition group's snapshot is taken at its log floor (the last entry retention removed):
//! the next offset there (the log start once installed), the newest removed timestamp, and the
//! producer state. The records after the floor are not in it: the leader still has them and
//! sends them as entries. The producer state is the one as of the leader's last applied entry,
//! newer than the snapshot's index; it says which offsets it covers, and applying the entries
//! after the floor again leaves it alone below that offset. A key-value group's snapshot (a group
//! that never applied records: metadata, committed offsets) is taken at its last applied index
//! and holds every row, since its commands cannot be applied twice.
//!
//! Encoding, version 1, integers big-endian:
//!
//! ```text
//! snapshot := 1 index:u64 term:u64 has_membership:u8 [len:u32 membership]
//!             next_offset:u64 removed_max_timestamp:i64 producers_through:u64
//!             producers:u32 (producer_id:u64 producer_state){producers}
//!             rows:u32 (klen:u32 key vlen:u32 value){rows}
//! ```
//!
//! `producer_state` is a producer row's value (see `producer.rs`). A snapshot is built in
//! memory: a partition's is under 150 KB (at most 1024 producers); a key-value group's is the
//! size of its rows.

use crate::backend::Space;
use crate::entry::{decode_term, Reader, FORMAT_V1};
use crate::keys::{self, membership_key, trailing_u64, TAG_FLOOR, TAG_GROUP_STATE};
use crate::keys::{TAG_PRODUCER, TAG_PRODUCER_AGE};
use crate::producer::{self, ProducerState};
use crate::state::{decode_membership, encode_floor, GroupState, LogFloor, PartitionState};
use crate::store::{Batch, Tail, View};
use crate::{GroupId, Offset, StorageError, Store};
use bytes::Bytes;
use std::collections::BTreeSet;

/// A group's state at `index`; see the module documentation for what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSnapshot {
    pub index: u64,
    pub term: u64,
    /// The membership in force at `index` (opaque here).
    pub membership: Option<Bytes>,
    /// The partition's next offset at `index`: its log start once installed.
    pub next_offset: Offset,
    pub removed_max_timestamp: i64,
    /// The producer state includes every batch below this offset.
    pub producers_through: Offset,
    pub producers: Vec<(i64, ProducerState)>,
    /// Every key-value row of the group, in key order.
    pub rows: Vec<(Bytes, Bytes)>,
}

impl GroupSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let rows_len: usize = self.rows.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(64 + self.producers.len() * 112 + rows_len);
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        match &self.membership {
            None => out.push(0),
            Some(membership) => {
                out.push(1);
                put_sized(&mut out, membership);
            }
        }
        out.extend_from_slice(&self.next_offset.0.to_be_bytes());
        out.extend_from_slice(&self.removed_max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producers_through.0.to_be_bytes());
        out.extend_from_slice(&count(self.producers.len()).to_be_bytes());
        for (id, state) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&state.encode());
        }
        out.extend_from_slice(&count(self.rows.len()).to_be_bytes());
        for (key, value) in &self.rows {
            put_sized(&mut out, key);
            put_sized(&mut out, value);
        }
        out
    }

    /// # Errors
    /// `Corrupt` if any length, version or field is wrong.
    pub fn decode(bytes: &[u8]) -> Result<GroupSnapshot, StorageError> {
        let mut reader = Reader { rest: bytes };
        let snapshot = read(&mut reader)
            .and_then(|s| {
                if reader.rest.is_empty() {
                    Ok(s)
                } else {
                    Err("trailing bytes")
                }
            })
            .map_err(|why| StorageError::corrupt(format!("snapshot: {why}")))?;
        Ok(snapshot)
    }
}

fn count(n: usize) -> u32 {
    // A group's rows are far fewer than 2^32: each takes a key in the store.
    u32::try_from(n).expect("fewer than 2^32 items in a snapshot")
}

fn put_sized(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a stored value is under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn read(r: &mut Reader<'_>) -> Result<GroupSnapshot, &'static str> {
    if r.u8()? != FORMAT_V1 {
        return Err("unknown format version");
    }
    let index = r.u64()?;
    let term = r.u64()?;
    let membership = match r.u8()? {
        0 => None,
        1 => Some(Bytes::copy_from_slice(r.sized()?)),
        _ => return Err("bad membership flag"),
    };
    let next_offset = Offset(r.u64()?);
    let removed_max_timestamp = r.i64()?;
    let producers_through = Offset(r.u64()?);
    let producer_count = r.u32()? as usize;
    // Each producer takes at least 12 bytes: a bound that stops a damaged count from reserving
    // gigabytes.
    let mut producers = Vec::with_capacity(producer_count.min(r.rest.len() / 12));
    for _ in 0..producer_count {
        let id = r.u64()? as i64;
        producers.push((id, producer::read(r)?));
    }
    let row_count = r.u32()? as usize;
    let mut rows = Vec::with_capacity(row_count.min(r.rest.len() / 8));
    for _ in 0..row_count {
        let key = Bytes::copy_from_slice(r.sized()?);
        rows.push((key, Bytes::copy_from_slice(r.sized()?)));
    }
    Ok(GroupSnapshot {
        index,
        term,
        membership,
        next_offset,
        removed_max_timestamp,
        producers_through,
        producers,
        rows,
    })
}

impl Store {
    /// The group's snapshot: at its log floor for a partition group, at its last applied index
    /// for a key-value group (one that never applied records).
    ///
    /// # Errors
    /// `Corrupt` if a stored row does not decode.
    pub fn snapshot(&self, group: GroupId) -> Result<GroupSnapshot, StorageError> {
        let view = self.view()?;
        let state = view.group_state(group)?;
        let floor = view.floor(group)?;
        let public = state.public;
        let mut snapshot = if public.next_offset > Offset(0) {
            GroupSnapshot {
                index: floor.index,
                term: floor.term,
                membership: floor.membership.clone(),
                next_offset: public.log_start_offset,
                ..GroupSnapshot::default()
            }
        } else {
            at_last_applied(&view, group, public, &floor)?
        };
        snapshot.removed_max_timestamp = state.removed_max_timestamp;
        snapshot.producers_through = public.next_offset;
        let producers = keys::meta_key(group, TAG_PRODUCER);
        for item in view.prefix(Space::Meta, &producers) {
            let (key, value) = item?;
            let id = trailing_u64(&key, "producer")? as i64;
            snapshot
                .producers
                .push((id, ProducerState::decode(&value)?));
        }
        for item in view.prefix(Space::Kv, &keys::group_prefix(group)) {
            let (key, value) = item?;
            let key = Bytes::copy_from_slice(&key[8..]);
            snapshot.rows.push((key, Bytes::copy_from_slice(&value)));
        }
        Ok(snapshot)
    }

    /// Replaces the group's state with `snapshot` in one atomic write: every row of the group
    /// goes (offsets, times, key-value, producers), the log up to the snapshot's index goes, and
    /// the floor and last applied index move to it. The entries after it stay only when
    /// `keep_log_after` says so and the stored entry at the index has the snapshot's term
    /// (Raft's rule); otherwise the whole log goes. A snapshot at or below the last applied
    /// index is older than what this replica holds: nothing changes and `false` is returned.
    ///
    /// # Errors
    /// `Corrupt` if the stored log or rows do not decode.
    pub fn install_snapshot(
        &self,
        group: GroupId,
        snapshot: &GroupSnapshot,
        keep_log_after: bool,
    ) -> Result<bool, StorageError> {
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let before = view.group_state(group)?;
        if snapshot.index <= before.public.last_applied {
            return Ok(false);
        }
        let at_index = view.get(Space::Log, keys::log_key(group, snapshot.index))?;
        let matches = match at_index {
            Some(value) => decode_term(snapshot.index, &value)? == snapshot.term,
            None => false,
        };
        let keep = keep_log_after && matches;
        let mut batch = self.batch();
        let through = if keep { snapshot.index } else { u64::MAX };
        remove_log_through(&view, &mut batch, group, through)?;
        replace_rows(&view, &mut batch, group, snapshot)?;
        let floor = LogFloor {
            index: snapshot.index,
            term: snapshot.term,
            membership: snapshot.membership.clone(),
        };
        batch.insert(
            Space::Meta,
            keys::meta_key(group, TAG_FLOOR),
            encode_floor(&floor),
        );
        let state = installed_state(snapshot);
        batch.insert(
            Space::Meta,
            keys::meta_key(group, TAG_GROUP_STATE),
            state.encode(),
        );
        self.commit(batch)?;
        self.removed_entries();
        if !keep {
            let tail = Tail {
                log: Some(snapshot.index),
                membership: Some(snapshot.index),
            };
            self.set_tail(group, Some(tail));
        }
        Ok(true)
    }
}

/// A key-value group's snapshot header: its last applied entry's index, term and membership.
fn at_last_applied(
    view: &View<'_>,
    group: GroupId,
    state: PartitionState,
    floor: &LogFloor,
) -> Result<GroupSnapshot, StorageError> {
    let index = state.last_applied;
    let term = if index == floor.index {
        floor.term
    } else {
        let value = view
            .get(Space::Log, keys::log_key(group, index))?
            .ok_or_else(|| {
                StorageError::corrupt(format!("applied entry {index} of group {group} is missing"))
            })?;
        decode_term(index, &value)?
    };
    let rows = membership_key(group, 0)..=membership_key(group, index);
    let membership = match view.range(Space::Meta, rows).next_back() {
        Some(item) => Some(decode_membership(&item?.1)?),
        None => floor.membership.clone(),
    };
    Ok(GroupSnapshot {
        index,
        term,
        membership,
        next_offset: state.next_offset,
        ..GroupSnapshot::default()
    })
}

fn installed_state(snapshot: &GroupSnapshot) -> GroupState {
    GroupState {
        public: PartitionState {
            last_applied: snapshot.index,
            log_start_offset: snapshot.next_offset,
            next_offset: snapshot.next_offset,
            size_bytes: 0,
        },
        // Every record before the next offset is gone: the newest of them is the newest removed.
        max_timestamp: snapshot.removed_max_timestamp,
        removed_max_timestamp: snapshot.removed_max_timestamp,
        producer_count: count(snapshot.producers.len()),
        producers_through: snapshot.producers_through,
    }
}

/// Queues removal of the group's log entries and membership rows up to `through`.
fn remove_log_through(
    view: &View<'_>,
    batch: &mut Batch<'_>,
    group: GroupId,
    through: u64,
) -> Result<(), StorageError> {
    let log = keys::log_key(group, 0)..=keys::log_key(group, through);
    for key in view.keys(Space::Log, log) {
        batch.remove(Space::Log, key?);
    }
    let rows = membership_key(group, 0)..=membership_key(group, through);
    for key in view.keys(Space::Meta, rows) {
        batch.remove(Space::Meta, key?);
    }
    Ok(())
}

/// Queues the snapshot's rows in place of the group's: offset and time rows go, key-value and
/// producer rows become the snapshot's (a key is written once, removed or replaced).
fn replace_rows(
    view: &View<'_>,
    batch: &mut Batch<'_>,
    group: GroupId,
    snapshot: &GroupSnapshot,
) -> Result<(), StorageError> {
    for space in [Space::Offsets, Space::Times] {
        for key in view.prefix_keys(space, &keys::group_prefix(group)) {
            batch.remove(space, key?);
        }
    }
    let mut kv = BTreeSet::new();
    for (key, value) in &snapshot.rows {
        let key = keys::kv_key(group, key);
        batch.insert(Space::Kv, &key, value.as_ref());
        kv.insert(key);
    }
    remove_others(view, batch, Space::Kv, &keys::group_prefix(group), &kv)?;
    let mut producers = BTreeSet::new();
    let mut ages = BTreeSet::new();
    for (id, state) in &snapshot.producers {
        let key = keys::producer_key(group, *id);
        let age = keys::producer_age_key(group, state.newest_offset(), *id);
        batch.insert(Space::Meta, key, state.encode());
        batch.insert(Space::Meta, age, &[][..]);
        producers.insert(key.to_vec());
        ages.insert(age.to_vec());
    }
    let prefix = keys::meta_key(group, TAG_PRODUCER);
    remove_others(view, batch, Space::Meta, &prefix, &producers)?;
    let prefix = keys::meta_key(group, TAG_PRODUCER_AGE);
    remove_others(view, batch, Space::Meta, &prefix, &ages)
}

fn remove_others(
    view: &View<'_>,
    batch: &mut Batch<'_>,
    space: Space,
    prefix: &[u8],
    keep: &BTreeSet<Vec<u8>>,
) -> Result<(), StorageError> {
    for key in view.prefix_keys(space, prefix) {
        let key = key?;
        if !keep.contains(&key[..]) {
            batch.remove(space, key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture_hex::{hex, unhex};
    use crate::producer::ProducerBatch;

    /// Format version 1 as committed.
    const SNAPSHOT_V1: &str = "01 0000000000000007 0000000000000002 01 00000002 6d31
        0000000000000064 00000000000003e8 000000000000006e
        00000001 0000000000000009 01 0001 01 00000000 00000003 0000000000000060 00000004
        00000001 00000001 6b 00000002 7631";

    fn sample() -> GroupSnapshot {
        GroupSnapshot {
            index: 7,
            term: 2,
            membership: Some(Bytes::from_static(b"m1")),
            next_offset: Offset(100),
            removed_max_timestamp: 1000,
            producers_through: Offset(110),
            producers: vec![(
                9,
                ProducerState {
                    epoch: 1,
                    batches: vec![ProducerBatch::new(0, 4, Offset(96))],
                },
            )],
            rows: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v1"))],
        }
    }

    #[test]
    fn v1_fixture_decodes_and_reencodes() {
        assert_eq!(
            GroupSnapshot::decode(&unhex(SNAPSHOT_V1)).expect("decode"),
            sample()
        );
        assert_eq!(hex(&sample().encode()), hex(&unhex(SNAPSHOT_V1)));
    }

    #[test]
    fn damaged_snapshots_are_corrupt_not_panics() {
        let encoded = sample().encode();
        for cut in 0..encoded.len() {
            assert!(GroupSnapshot::decode(&encoded[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = encoded;
        longer.push(0);
        assert!(GroupSnapshot::decode(&longer).is_err());
    }
}
