//! The store against a plain in-memory model: random appends (with suffix overwrites that
//! repeat a matching prefix first, and stale repeats of stored entries, which Raft's rule keeps),
//! applies, fetches, timestamp lookups, retention (planned and applied as an `AdvanceLogStart`
//! entry, or enforced directly), snapshots installed on a fresh replica that then takes over, and
//! restarts. After every step the store's state, log, floor and membership must equal the
//! model's; fetches and lookups must return exactly the model's records; retention must never
//! move the log start back nor, under a time bound, remove a record younger than the bound; and
//! `verify_group` must find the store's own indexes consistent.

mod common;

use bytes::Bytes;
use common::*;
use gregor_storage::batch::BatchView;
use gregor_storage::{
    EntryPayload, LogEntry, LogFloor, Offset, PartitionState, RetentionPolicy, StorageError, Store,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Kind {
    Blank,
    Membership(u8),
    /// Batches of timestamp offsets from the model's clock.
    Records(Vec<Vec<i64>>),
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Kind>),
    /// Resends some stored entries (matching) and then new ones with a higher term, which
    /// replace the unapplied suffix from where they start.
    Overwrite(u8, u8, Vec<Kind>),
    /// Resends a stored slice of the log, as a stale or duplicate message would: nothing changes.
    Repeat(u8, u8),
    /// Plans retention and appends it as an `AdvanceLogStart` entry (applied by a later Apply),
    /// or appends a target picked in or around the log.
    Advance(Option<(Option<i64>, Option<u16>)>, u16),
    /// Snapshots the store, installs it on a fresh replica, copies the log after it over and
    /// applies as far: the replica replaces the store.
    Reinstall,
    Apply(u8),
    Read(u16, usize),
    /// A timestamp near a stored record's (picked by the first value), or anywhere around now.
    Lookup(u16, i64),
    Retention(Option<i64>, Option<u16>),
    Tick(i64),
    Restart,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        1 => Just(Kind::Blank),
        1 => any::<u8>().prop_map(Kind::Membership),
        6 => prop::collection::vec(prop::collection::vec(-60i64..60, 1..4), 0..3).prop_map(Kind::Records),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(kind(), 1..4).prop_map(Op::Append),
        1 => (any::<u8>(), any::<u8>(), prop::collection::vec(kind(), 1..3))
            .prop_map(|(a, b, c)| Op::Overwrite(a, b, c)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Repeat(a, b)),
        2 => (
            proptest::option::of((proptest::option::of(0i64..300), proptest::option::of(0u16..1500))),
            any::<u16>(),
        )
            .prop_map(|(a, b)| Op::Advance(a, b)),
        1 => Just(Op::Reinstall),
        4 => any::<u8>().prop_map(Op::Apply),
        4 => (any::<u16>(), 1usize..1500).prop_map(|(a, b)| Op::Read(a, b)),
        3 => (any::<u16>(), -300i64..300).prop_map(|(a, b)| Op::Lookup(a, b)),
        3 => (proptest::option::of(0i64..300), proptest::option::of(0u16..1500))
            .prop_map(|(a, b)| Op::Retention(a, b)),
        2 => (1i64..100).prop_map(Op::Tick),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone)]
struct RecordsEntry {
    first: u64,
    raft_index: u64,
    /// (timestamp, value) per record.
    records: Vec<(i64, Vec<u8>)>,
    max_timestamp: i64,
    bytes: u64,
}

#[derive(Default)]
struct Model {
    log: BTreeMap<u64, LogEntry>,
    floor: LogFloor,
    term: u64,
    clock: i64,
    state: PartitionState,
    /// Applied records entries still in the partition log, oldest first.
    entries: Vec<RecordsEntry>,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.log
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.floor.index)
    }

    fn build(&self, start: u64, kinds: &[Kind]) -> Vec<LogEntry> {
        kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let index = start + i as u64;
                match kind {
                    Kind::Blank => blank(index, self.term),
                    Kind::Membership(m) => LogEntry {
                        index,
                        term: self.term,
                        payload: EntryPayload::Membership(Bytes::from(vec![*m])),
                    },
                    Kind::Records(batches) => {
                        let batches = batches
                            .iter()
                            .map(|ts| batch(&ts.iter().map(|t| self.clock + t).collect::<Vec<_>>()))
                            .collect();
                        records(index, self.term, batches)
                    }
                }
            })
            .collect()
    }

    fn write(&mut self, entries: Vec<LogEntry>) {
        let start = entries[0].index;
        self.log.retain(|&index, _| index < start);
        for entry in entries {
            self.log.insert(entry.index, entry);
        }
    }

    fn apply(&mut self, up_to: u64) {
        for index in self.state.last_applied + 1..=up_to {
            if let EntryPayload::AdvanceLogStart(target) = self.log[&index].payload {
                self.advance(target);
                continue;
            }
            if let EntryPayload::Records(batches) = &self.log[&index].payload {
                let mut records = Vec::new();
                let mut max_timestamp = i64::MIN;
                let mut bytes = 0;
                for b in batches {
                    let view = BatchView::trusted(b);
                    max_timestamp = max_timestamp.max(view.max_timestamp());
                    bytes += b.len() as u64;
                    for r in view.records() {
                        let r = r.expect("record");
                        records.push((r.timestamp, r.value.expect("value").to_vec()));
                    }
                }
                if !records.is_empty() {
                    let first = self.state.next_offset.0;
                    self.state.next_offset.0 += records.len() as u64;
                    self.state.size_bytes += bytes;
                    self.entries.push(RecordsEntry {
                        first,
                        raft_index: index,
                        records,
                        max_timestamp,
                        bytes,
                    });
                }
            }
        }
        self.state.last_applied = up_to;
    }

    fn record(&self, offset: u64) -> &(i64, Vec<u8>) {
        let entry = self
            .entries
            .iter()
            .rev()
            .find(|e| e.first <= offset)
            .expect("offset in the model");
        &entry.records[(offset - entry.first) as usize]
    }

    /// The log start retention would move to (whole entries, at most 256), as planned.
    fn plan(&self, policy: RetentionPolicy, now_ms: i64) -> Option<Offset> {
        let mut size = self.state.size_bytes;
        let mut target = None;
        for head in self.entries.iter().take(256) {
            let remaining = size - head.bytes;
            let old = policy.retention_ms >= 0 && head.max_timestamp < now_ms - policy.retention_ms;
            let big = policy.retention_bytes >= 0 && remaining >= policy.retention_bytes as u64;
            if !(old || big) {
                break;
            }
            size = remaining;
            target = Some(Offset(head.first + head.records.len() as u64));
        }
        target
    }

    fn retain(&mut self, policy: RetentionPolicy, now_ms: i64) -> Vec<RecordsEntry> {
        let mut removed = Vec::new();
        while let Some(target) = self.plan(policy, now_ms) {
            removed.extend(self.advance(target));
        }
        removed
    }

    /// Removes the whole entries that end at or below `target`, with the log up to them.
    fn advance(&mut self, target: Offset) -> Vec<RecordsEntry> {
        let mut removed = Vec::new();
        while let Some(head) = self.entries.first() {
            if head.first + head.records.len() as u64 > target.0 {
                break;
            }
            let head = self.entries.remove(0);
            self.state.size_bytes -= head.bytes;
            self.state.log_start_offset = Offset(head.first + head.records.len() as u64);
            self.remove_log_through(head.raft_index);
            removed.push(head);
        }
        removed
    }

    fn remove_log_through(&mut self, through: u64) {
        let gone: Vec<u64> = self.log.range(..=through).map(|(i, _)| *i).collect();
        for index in gone {
            let entry = self.log.remove(&index).expect("entry");
            if let EntryPayload::Membership(m) = entry.payload {
                self.floor.membership = Some(m);
            }
            self.floor.index = index;
            self.floor.term = entry.term;
        }
    }

    fn lookup(&self, timestamp_ms: i64) -> Option<(Offset, i64)> {
        self.entries.iter().find_map(|e| {
            e.records
                .iter()
                .position(|(t, _)| *t >= timestamp_ms)
                .map(|i| (Offset(e.first + i as u64), e.records[i].0))
        })
    }

    fn last_membership(&self) -> Option<(u64, Bytes)> {
        let in_log = self.log.values().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some((e.index, m.clone())),
            _ => None,
        });
        in_log.or_else(|| self.floor.membership.clone().map(|m| (self.floor.index, m)))
    }
}

fn check_same(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    if let Err(e) = store.verify_group(G) {
        return Err(TestCaseError::fail(format!("inconsistent store: {e}")));
    }
    prop_assert_eq!(store.partition_state(G).expect("state"), model.state);
    let log = store.read_entries(G, 0, u64::MAX).expect("log");
    prop_assert_eq!(log, model.log.values().cloned().collect::<Vec<_>>());
    prop_assert_eq!(
        store.last_entry(G).expect("last"),
        model.log.values().next_back().cloned()
    );
    prop_assert_eq!(store.log_floor(G).expect("floor"), model.floor.clone());
    prop_assert_eq!(
        store.last_membership(G).expect("membership"),
        model.last_membership()
    );
    Ok(())
}

fn run(first_disk: Disk, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut disk = first_disk;
    let mut store = disk.open();
    let mut model = Model {
        term: 1,
        clock: 1_000,
        ..Model::default()
    };
    for op in ops {
        match op {
            Op::Append(kinds) => {
                let entries = model.build(model.last_index() + 1, &kinds);
                store.append_entries(G, &entries).expect("append");
                model.write(entries);
            }
            Op::Overwrite(back, resend, kinds) => {
                let unapplied = model.last_index() - model.state.last_applied;
                let start = model.state.last_applied + 1 + u64::from(back) % (unapplied + 1);
                model.term += 1;
                let first_stored = model.floor.index + 1;
                let resent = u64::from(resend) % (start - first_stored + 1);
                let mut entries: Vec<LogEntry> = model
                    .log
                    .range(start - resent..start)
                    .map(|(_, e)| e.clone())
                    .collect();
                entries.extend(model.build(start, &kinds));
                store.append_entries(G, &entries).expect("overwrite");
                model.write(model.build(start, &kinds));
            }
            Op::Repeat(from, len) => {
                let stored: Vec<LogEntry> = model.log.values().cloned().collect();
                if !stored.is_empty() {
                    let from = usize::from(from) % stored.len();
                    let to = (from + 1 + usize::from(len) % 4).min(stored.len());
                    store.append_entries(G, &stored[from..to]).expect("repeat");
                }
            }
            Op::Advance(planned, pick) => {
                let target = match planned {
                    Some((retention_ms, retention_bytes)) => {
                        let policy = RetentionPolicy {
                            retention_ms: retention_ms.unwrap_or(-1),
                            retention_bytes: retention_bytes.map_or(-1, i64::from),
                        };
                        let plan = store.plan_retention(G, policy, model.clock).expect("plan");
                        prop_assert_eq!(plan, model.plan(policy, model.clock));
                        plan
                    }
                    None => Some(Offset(u64::from(pick) % (model.state.next_offset.0 + 3))),
                };
                if let Some(target) = target {
                    let entry = advance(model.last_index() + 1, model.term, target.0);
                    store
                        .append_entries(G, std::slice::from_ref(&entry))
                        .expect("append");
                    model.write(vec![entry]);
                }
            }
            Op::Reinstall => {
                let snapshot = store.snapshot(G).expect("snapshot");
                if model.state.next_offset == Offset(0) {
                    // A group without records snapshots at its last applied entry.
                    model.remove_log_through(model.state.last_applied);
                }
                prop_assert_eq!(snapshot.index, model.floor.index);
                let replica_disk = disk.fresh();
                let replica = replica_disk.open();
                replica
                    .install_snapshot(G, &snapshot, false)
                    .expect("install");
                let rest: Vec<LogEntry> = model.log.values().cloned().collect();
                replica.append_entries(G, &rest).expect("copy the log");
                replica
                    .apply_up_to(G, model.state.last_applied)
                    .expect("apply");
                drop(store);
                disk = replica_disk;
                store = replica;
            }
            Op::Apply(fraction) => {
                let unapplied = model.last_index() - model.state.last_applied;
                let up_to =
                    model.state.last_applied + (unapplied * u64::from(fraction)).div_ceil(255);
                store.apply_up_to(G, up_to).expect("apply");
                model.apply(up_to);
            }
            Op::Read(position, max_bytes) => {
                let start = model.state.log_start_offset.0;
                let span = model.state.next_offset.0 - start + 3;
                let offset = (start + u64::from(position) % span).saturating_sub(1);
                let result = store.read_records(G, Offset(offset), max_bytes);
                if offset < start || offset > model.state.next_offset.0 {
                    let out_of_range = matches!(result, Err(StorageError::OffsetOutOfRange { .. }));
                    prop_assert!(
                        out_of_range,
                        "offset {} gave {:?}",
                        offset,
                        result.map(|f| f.batches.len())
                    );
                    continue;
                }
                let fetched = result.expect("read");
                prop_assert_eq!(fetched.state, model.state);
                if offset == model.state.next_offset.0 {
                    prop_assert!(fetched.batches.is_empty());
                    continue;
                }
                prop_assert!(!fetched.batches.is_empty());
                let total: usize = fetched.batches.iter().map(Bytes::len).sum();
                prop_assert!(fetched.batches.len() == 1 || total <= max_bytes);
                let got = flatten(&fetched.batches);
                prop_assert!(got[0].0 <= offset && got.iter().any(|r| r.0 == offset));
                for (i, (o, t, v)) in got.iter().enumerate() {
                    prop_assert_eq!(*o, got[0].0 + i as u64, "offsets are contiguous");
                    prop_assert!(*o < model.state.next_offset.0);
                    prop_assert_eq!(model.record(*o), &(*t, v.clone()));
                }
            }
            Op::Lookup(pick, relative) => {
                let stored: Vec<i64> = model
                    .entries
                    .iter()
                    .flat_map(|e| e.records.iter().map(|r| r.0))
                    .collect();
                let timestamp = if stored.is_empty() || pick % 4 == 0 {
                    model.clock + relative
                } else {
                    stored[usize::from(pick) % stored.len()] + relative % 3
                };
                prop_assert_eq!(
                    store.offset_for_timestamp(G, timestamp).expect("lookup"),
                    model.lookup(timestamp)
                );
            }
            Op::Retention(retention_ms, retention_bytes) => {
                let policy = RetentionPolicy {
                    retention_ms: retention_ms.unwrap_or(-1),
                    retention_bytes: retention_bytes.map_or(-1, i64::from),
                };
                let before = model.state.log_start_offset;
                let mut calls = 0;
                loop {
                    let outcome = store
                        .enforce_retention(G, policy, model.clock)
                        .expect("retention");
                    prop_assert!(outcome.log_start_offset >= before, "log start moved back");
                    calls += 1;
                    if !outcome.more || calls > 10 {
                        break;
                    }
                }
                let removed = model.retain(policy, model.clock);
                if policy.retention_bytes < 0 {
                    let bound = model.clock - policy.retention_ms;
                    for entry in &removed {
                        prop_assert!(
                            entry.records.iter().all(|(t, _)| *t < bound),
                            "young record removed"
                        );
                    }
                }
            }
            Op::Tick(ms) => model.clock += ms,
            Op::Restart => {
                drop(store);
                store = disk.open();
            }
        }
        check_same(&store, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fjall_store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(Disk::fjall(), ops)?;
    }

    #[test]
    fn model_disk_store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(Disk::model(), ops)?;
    }
}
