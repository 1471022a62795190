//! The producer rows one apply batch changes: loaded once, updated per batch, written once
//! with the bound on producers per partition enforced.

use crate::backend::Space;
use crate::keys::{self, trailing_u64, TAG_PRODUCER_AGE};
use crate::producer::{ProducerBatch, ProducerState, MAX_PRODUCERS_PER_PARTITION};
use crate::state::GroupState;
use crate::store::{Batch, View};
use crate::{GroupId, Offset, StorageError, Store};
use std::collections::{BTreeMap, BTreeSet};

/// A producer this batch touched: its stored state (if any) and the new one.
struct Touched {
    before: Option<ProducerState>,
    after: ProducerState,
    changed: bool,
}

#[derive(Default)]
pub(crate) struct Producers {
    touched: BTreeMap<i64, Touched>,
}

impl Producers {
    /// Records `batch` in the window of `producer`.
    pub fn record(
        &mut self,
        view: &View<'_>,
        group: GroupId,
        producer: i64,
        epoch: i16,
        batch: ProducerBatch,
    ) -> Result<(), StorageError> {
        let touched = match self.touched.entry(producer) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let before = load(view, group, producer)?;
                let after = before.clone().unwrap_or_default();
                e.insert(Touched {
                    before,
                    after,
                    changed: false,
                })
            }
        };
        touched.changed |= touched.after.record(epoch, batch);
        Ok(())
    }

    /// Queues the changed producers' rows, evicting the producers whose newest batch is oldest
    /// while the partition holds more than the bound, and updates the count in `state`.
    pub fn write(
        self,
        view: &View<'_>,
        batch: &mut Batch<'_>,
        group: GroupId,
        state: &mut GroupState,
    ) -> Result<(), StorageError> {
        let changed: BTreeMap<i64, Touched> = self
            .touched
            .into_iter()
            .filter(|(_, t)| t.changed)
            .collect();
        let added = changed.values().filter(|t| t.before.is_none()).count() as u32;
        let count = state.producer_count + added;
        let excess = count.saturating_sub(MAX_PRODUCERS_PER_PARTITION);
        let Evictions { stale, fresh } = choose_evictions(view, group, &changed, excess)?;
        for (newest, producer) in &stale {
            batch.remove(Space::Meta, keys::producer_key(group, *producer));
            batch.remove(
                Space::Meta,
                keys::producer_age_key(group, *newest, *producer),
            );
        }
        for (producer, touched) in &changed {
            if let Some(before) = &touched.before {
                let age = keys::producer_age_key(group, before.newest_offset(), *producer);
                batch.remove(Space::Meta, age);
            }
            let key = keys::producer_key(group, *producer);
            if fresh.contains(producer) {
                if touched.before.is_some() {
                    batch.remove(Space::Meta, key);
                }
                continue;
            }
            batch.insert(Space::Meta, key, touched.after.encode());
            let age = keys::producer_age_key(group, touched.after.newest_offset(), *producer);
            batch.insert(Space::Meta, age, &[][..]);
        }
        state.producer_count = count - (stale.len() + fresh.len()) as u32;
        assert!(
            state.producer_count <= MAX_PRODUCERS_PER_PARTITION,
            "producers of group {group} beyond the bound"
        );
        Ok(())
    }
}

fn load(
    view: &View<'_>,
    group: GroupId,
    producer: i64,
) -> Result<Option<ProducerState>, StorageError> {
    view.get(Space::Meta, keys::producer_key(group, producer))?
        .map(|value| ProducerState::decode(&value))
        .transpose()
}

/// Producers to evict: untouched ones by (newest offset, id), and touched ones by id.
struct Evictions {
    stale: Vec<(Offset, i64)>,
    fresh: BTreeSet<i64>,
}

/// The `excess` producers whose newest batch is oldest: first those this batch did not touch
/// (every batch applied now is newer than theirs), by their age rows; then, only if more than
/// the bound were touched at once, the oldest touched ones.
fn choose_evictions(
    view: &View<'_>,
    group: GroupId,
    changed: &BTreeMap<i64, Touched>,
    excess: u32,
) -> Result<Evictions, StorageError> {
    let mut stale = Vec::new();
    let fresh = BTreeSet::new();
    if excess == 0 {
        return Ok(Evictions { stale, fresh });
    }
    for key in view.prefix_keys(Space::Meta, &keys::meta_key(group, TAG_PRODUCER_AGE)) {
        let key = key?;
        let producer = trailing_u64(&key, "producer age")? as i64;
        if changed.contains_key(&producer) {
            continue;
        }
        let newest = Offset(trailing_u64(&key[..key.len() - 8], "producer age")?);
        stale.push((newest, producer));
        if stale.len() == excess as usize {
            return Ok(Evictions { stale, fresh });
        }
    }
    let mut by_age: Vec<(Offset, i64)> = changed
        .iter()
        .map(|(producer, t)| (t.after.newest_offset(), *producer))
        .collect();
    by_age.sort_unstable();
    let fresh = by_age
        .into_iter()
        .take(excess as usize - stale.len())
        .map(|(_, producer)| producer)
        .collect();
    Ok(Evictions { stale, fresh })
}

impl Store {
    /// The applied state of `producer` in the partition `group`: the leader's deduplication
    /// check reads it (with what it proposed itself since).
    ///
    /// # Errors
    /// `Corrupt` if the row does not decode.
    pub fn producer_state(
        &self,
        group: GroupId,
        producer: i64,
    ) -> Result<Option<ProducerState>, StorageError> {
        load(&self.view()?, group, producer)
    }
}
