//! Removing the log's head (retention), compacting non-record prefixes, deleting whole groups.
//!
//! Retention removes whole `Records` entries from the head, oldest first, and with them every
//! Raft entry up to the last one removed. The leader plans it (`plan_retention`) and proposes an
//! `AdvanceLogStart` entry; applying that entry carries it out on every replica alike, with the
//! same code that `enforce_retention` runs on one replica. What Raft still needs to know about the removed prefix
//! (last index and term, the membership in force) moves into the group's [`LogFloor`]. Every call
//! does bounded work and says whether another call would do more, so a caller can spread the
//! work over ticks instead of holding a group's lock for long.

use crate::backend::Space;
use crate::entry::decode_term;
use crate::keys::{self, membership_key, trailing_u64, TAG_FLOOR, TAG_GROUP_STATE};
use crate::state::{decode_membership, encode_floor, GroupState, LogFloor, OffsetRow};
use crate::store::{Batch, View};
use crate::{GroupId, Offset, StorageError, Store};

/// Offset rows (whole entries) one retention plan or call covers at most.
const RETENTION_ENTRIES_PER_CALL: usize = 256;
/// Offset rows one `AdvanceLogStart` removes at most, whatever its target: a bound on one apply
/// batch that every replica applies alike (a planned target is within 256 entries anyway).
pub(crate) const ENTRIES_PER_ADVANCE: usize = 4 * RETENTION_ENTRIES_PER_CALL;
/// Keys one `compact_log` or `delete_group` call removes at most.
const KEYS_PER_CALL: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Remove batches whose newest record is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Remove the oldest batches while the log is larger than this; -1 is unlimited.
    pub retention_bytes: i64,
}

impl RetentionPolicy {
    pub const KEEP_FOREVER: RetentionPolicy = RetentionPolicy {
        retention_ms: -1,
        retention_bytes: -1,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub removed_entries: u64,
    pub log_start_offset: Offset,
    /// More could be removed: call again (each call is bounded).
    pub more: bool,
}

impl Store {
    /// How far retention may move the log start now: the end of the last of up to 256 whole
    /// applied entries from the head that the policy lets go (`None`: nothing to remove). The
    /// leader proposes it as an `AdvanceLogStart` entry, so every replica removes the same.
    ///
    /// An entry goes when its newest timestamp is older than `now_ms - retention_ms`, or when
    /// the log without it would still hold at least `retention_bytes`.
    ///
    /// # Errors
    /// `Corrupt` if the offset rows and the state disagree.
    pub fn plan_retention(
        &self,
        group: GroupId,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<Option<Offset>, StorageError> {
        let view = self.view()?;
        let state = view.group_state(group)?;
        Ok(plan(&view, group, &state, policy, now_ms)?.target)
    }

    /// Plans retention and carries it out on this replica alone, as applying an
    /// `AdvanceLogStart` would; bounded work per call. Only applied entries are ever removed,
    /// and the log start only moves forward.
    ///
    /// # Errors
    /// `Corrupt` if the offset rows, the state and the log disagree.
    pub fn enforce_retention(
        &self,
        group: GroupId,
        policy: RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionOutcome, StorageError> {
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let mut state = view.group_state(group)?;
        let plan = plan(&view, group, &state, policy, now_ms)?;
        let Some(target) = plan.target else {
            return Ok(RetentionOutcome {
                removed_entries: 0,
                log_start_offset: state.public.log_start_offset,
                more: false,
            });
        };
        let mut batch = self.batch();
        let removed = advance_log_start(
            &view,
            &mut batch,
            group,
            &mut state,
            target,
            RETENTION_ENTRIES_PER_CALL,
        )?;
        batch.insert(
            Space::Meta,
            keys::meta_key(group, TAG_GROUP_STATE),
            state.encode(),
        );
        self.commit(batch)?;
        if removed > 0 {
            self.removed_entries();
        }
        Ok(RetentionOutcome {
            removed_entries: removed,
            log_start_offset: state.public.log_start_offset,
            more: plan.more,
        })
    }

    /// Removes applied entries up to `through_index` that hold no records still in the partition
    /// log (key-value, blank and membership entries), moving the [`LogFloor`] up. For groups
    /// whose state lives in the `kv` keyspace (metadata, committed offsets) this is what keeps
    /// the log bounded. Bounded work per call; returns true when nothing up to the index is left.
    ///
    /// # Errors
    /// `Corrupt` if the indexes and the log disagree.
    pub fn compact_log(&self, group: GroupId, through_index: u64) -> Result<bool, StorageError> {
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let state = view.group_state(group)?.public;
        let mut through = through_index.min(state.last_applied);
        if state.log_start_offset < state.next_offset {
            let rows = keys::offsets_key(group, state.log_start_offset)
                ..=keys::offsets_key(group, Offset(u64::MAX));
            if let Some(item) = view.range(Space::Offsets, rows).next() {
                let row = OffsetRow::decode(&item?.1)?;
                through = through.min(row.raft_index.saturating_sub(1));
            }
        }
        let mut floor = view.floor(group)?;
        if through <= floor.index {
            return Ok(true);
        }
        let mut batch = self.batch();
        let (_, done) = remove_log_prefix(
            &view,
            &mut batch,
            group,
            through,
            &mut floor,
            Some(KEYS_PER_CALL),
        )?;
        // No reclaim pass: these entries hold key-value writes, small values that live in the
        // tables, whose space fjall's own compactions return; a pass would flush and fsync.
        self.commit(batch)?;
        Ok(done)
    }

    /// Removes everything the group has stored (topic deletion); bounded work per call, returns
    /// true when done.
    ///
    /// The state goes first, so from the first call on the group reads as empty; stop its
    /// replica before deleting, or it may see a log whose state is gone.
    ///
    /// # Errors
    /// `Poisoned` if the store failed earlier or a write fails.
    pub fn delete_group(&self, group: GroupId) -> Result<bool, StorageError> {
        let _guard = self.lock_group(group)?;
        let view = self.view()?;
        let mut batch = self.batch();
        let mut budget = KEYS_PER_CALL;
        for space in [
            Space::Meta,
            Space::Log,
            Space::Offsets,
            Space::Times,
            Space::Kv,
        ] {
            for key in view.prefix_keys(space, &keys::group_prefix(group)) {
                if budget == 0 {
                    self.commit(batch)?;
                    self.removed_entries();
                    return Ok(false);
                }
                batch.remove(space, key?);
                budget -= 1;
            }
        }
        self.commit(batch)?;
        self.removed_entries();
        // Bounds stay valid as keys go; dropping them just frees the memory.
        self.set_tail(group, None);
        Ok(true)
    }
}

struct Plan {
    target: Option<Offset>,
    /// The policy would remove more than one plan covers.
    more: bool,
}

/// The offset rows of the group from its log start, each checked against the one before.
fn head_rows<'a>(
    view: &'a View<'_>,
    group: GroupId,
    state: &'a GroupState,
) -> impl Iterator<Item = Result<(Offset, OffsetRow), StorageError>> + 'a {
    let start = state.public.log_start_offset;
    let rows = keys::offsets_key(group, start)..=keys::offsets_key(group, Offset(u64::MAX));
    let mut expected = start;
    view.range(Space::Offsets, rows).map(move |item| {
        let (key, value) = item?;
        let first = Offset(trailing_u64(&key, "offsets")?);
        let row = OffsetRow::decode(&value)?;
        if first != expected {
            return Err(StorageError::corrupt(format!(
                "group {group}: offset row {first} where {expected} was expected"
            )));
        }
        expected = Offset(first.0 + row.record_count);
        Ok((first, row))
    })
}

fn plan(
    view: &View<'_>,
    group: GroupId,
    state: &GroupState,
    policy: RetentionPolicy,
    now_ms: i64,
) -> Result<Plan, StorageError> {
    let time_bound = (policy.retention_ms >= 0).then(|| now_ms.saturating_sub(policy.retention_ms));
    let size_bound = u64::try_from(policy.retention_bytes).ok();
    let mut size = state.public.size_bytes;
    let mut plan = Plan {
        target: None,
        more: false,
    };
    for (taken, item) in head_rows(view, group, state).enumerate() {
        let (first, row) = item?;
        let remaining = size.checked_sub(row.bytes).ok_or_else(|| {
            StorageError::corrupt(format!(
                "group {group}: offset row {first} is larger than the log size {size}"
            ))
        })?;
        let expired = time_bound.is_some_and(|bound| row.max_timestamp < bound)
            || size_bound.is_some_and(|bound| remaining >= bound);
        if !expired {
            break;
        }
        if taken == RETENTION_ENTRIES_PER_CALL {
            plan.more = true;
            break;
        }
        size = remaining;
        plan.target = Some(Offset(first.0 + row.record_count));
    }
    Ok(plan)
}

/// Queues the removal of every whole entry that ends at or below `target` (at most `limit`
/// entries, from the head) with its offset and time rows and every Raft entry up to it, moves
/// the floor, and updates `state` (not written: the caller writes it). A target at or below
/// the log start removes nothing. Returns the number of records entries removed.
pub(crate) fn advance_log_start(
    view: &View<'_>,
    batch: &mut Batch<'_>,
    group: GroupId,
    state: &mut GroupState,
    target: Offset,
    limit: usize,
) -> Result<u64, StorageError> {
    let mut removed: Vec<(Offset, OffsetRow)> = Vec::new();
    for item in head_rows(view, group, state).take(limit) {
        let (first, row) = item?;
        if first.0 + row.record_count > target.0 {
            break;
        }
        removed.push((first, row));
    }
    let Some(&(last_first, last_row)) = removed.last() else {
        return Ok(0);
    };
    let mut size = state.public.size_bytes;
    let mut removed_max = state.removed_max_timestamp;
    for (first, row) in &removed {
        batch.remove(Space::Offsets, keys::offsets_key(group, *first));
        removed_max = removed_max.max(row.max_timestamp);
        size = size.checked_sub(row.bytes).ok_or_else(|| {
            StorageError::corrupt(format!("group {group}: offset rows exceed the log size"))
        })?;
    }
    // Time rows at or below the newest removed timestamp all point into the removed prefix:
    // a row for a remaining entry is above every timestamp that came before it.
    let stale = keys::times_key(group, i64::MIN)..=keys::times_key(group, removed_max);
    for key in view.keys(Space::Times, stale) {
        batch.remove(Space::Times, key?);
    }
    let mut floor = view.floor(group)?;
    let through = last_row.raft_index;
    let (last_removed, _) = remove_log_prefix(view, batch, group, through, &mut floor, None)?;
    if last_removed != Some(through) {
        return Err(StorageError::corrupt(format!(
            "group {group}: entry {through} of offset row {last_first} is missing"
        )));
    }
    let new_start = Offset(last_first.0 + last_row.record_count);
    // Offset rows hold at least one record (their decoder refuses empty ones).
    assert!(
        new_start > state.public.log_start_offset,
        "retention must move the log start forward"
    );
    if new_start > state.public.next_offset {
        return Err(StorageError::corrupt(format!(
            "group {group}: offset rows run past the log end {}",
            state.public.next_offset
        )));
    }
    state.public.log_start_offset = new_start;
    state.public.size_bytes = size;
    state.removed_max_timestamp = removed_max;
    Ok(removed.len() as u64)
}

/// Queues removal of the group's log entries with index <= `through` (at most `limit`), moving
/// `floor` to the last one removed, with the newest membership among them. Returns that index and
/// whether every entry up to `through` is now gone.
fn remove_log_prefix(
    view: &View<'_>,
    batch: &mut Batch<'_>,
    group: GroupId,
    through: u64,
    floor: &mut LogFloor,
    limit: Option<usize>,
) -> Result<(Option<u64>, bool), StorageError> {
    let mut last_removed = None;
    let mut done = true;
    let prefix = keys::log_key(group, 0)..=keys::log_key(group, through);
    for (taken, key) in view.keys(Space::Log, prefix).enumerate() {
        if limit.is_some_and(|limit| taken == limit) {
            done = false;
            break;
        }
        let index = trailing_u64(&key?, "log")?;
        batch.remove(Space::Log, keys::log_key(group, index));
        last_removed = Some(index);
    }
    let Some(last) = last_removed else {
        return Ok((None, done));
    };
    let value = view
        .get(Space::Log, keys::log_key(group, last))?
        .ok_or_else(|| {
            StorageError::corrupt(format!(
                "group {group}: log entry {last} vanished while read"
            ))
        })?;
    floor.index = last;
    floor.term = decode_term(last, &value)?;
    let rows = membership_key(group, 0)..=membership_key(group, last);
    for item in view.range(Space::Meta, rows) {
        let (key, value) = item?;
        floor.membership = Some(decode_membership(&value)?);
        batch.remove(Space::Meta, key);
    }
    batch.insert(
        Space::Meta,
        keys::meta_key(group, TAG_FLOOR),
        encode_floor(floor),
    );
    Ok((Some(last), done))
}
