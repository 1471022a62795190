//! Snapshots on both backends: a replica that installs its leader's snapshot and then applies
//! the entries after it ends in the leader's state, for partition and key-value groups alike.

mod common;

use bytes::Bytes;
use common::*;
use gregor_storage::{
    Applied, GroupSnapshot, LogEntry, LogFloor, Offset, RowTxn, StateMachine, StorageError, Store,
};

/// Everything a replica's applied state consists of, for comparison.
fn applied_state(store: &Store) -> impl PartialEq + std::fmt::Debug {
    let producers: Vec<_> = [7, 8, 9]
        .iter()
        .map(|p| store.producer_state(G, *p).expect("producer"))
        .collect();
    let records = store
        .read_records(
            G,
            store.partition_state(G).expect("state").log_start_offset,
            1 << 20,
        )
        .expect("read")
        .batches;
    (
        store.partition_state(G).expect("state"),
        producers,
        records,
        store.kv_scan_prefix(G, b"").expect("rows"),
        store.offset_for_timestamp(G, 0).expect("lookup"),
    )
}

/// A leader with idempotent records in entries 1..=6, retention applied up to entry 3.
fn partition_leader(store: &Store) {
    let mut entries: Vec<LogEntry> = (0..6u64)
        .map(|i| {
            let seq = i as i32;
            records(
                i + 1,
                1,
                vec![
                    idempotent_batch(7 + (i % 3) as i64, 0, seq / 3, &[100 + i as i64]),
                    batch(&[50]),
                ],
            )
        })
        .collect();
    entries.push(membership(7, 1, b"members"));
    store.append_entries(G, &entries).expect("append");
    store.apply_up_to(G, 7).expect("apply");
    store
        .append_entries(G, &[advance(8, 1, 6)])
        .expect("append");
    store.apply_up_to(G, 8).expect("apply");
    assert_eq!(store.log_floor(G).expect("floor").index, 3);
}

fn catch_up(follower: &Store, leader: &Store, after: u64) {
    let entries = leader.read_entries(G, after + 1, u64::MAX).expect("read");
    follower.append_entries(G, &entries).expect("append");
    let last = entries.last().map_or(after, |e| e.index);
    follower.apply_up_to(G, last).expect("apply");
}

on_both_backends! {
    fn a_partition_replica_installing_a_snapshot_catches_up_to_the_leader(disk) {
        let leader = Disk::model().open();
        partition_leader(&leader);
        let snapshot = leader.snapshot(G).expect("snapshot");
        assert_eq!((snapshot.index, snapshot.term), (3, 1));
        assert_eq!(snapshot.next_offset, Offset(6));
        assert_eq!(snapshot.producers.len(), 3, "producer state as of the leader's last entry");
        assert!(snapshot.rows.is_empty());
        let wire = GroupSnapshot::decode(&snapshot.encode()).expect("decode");

        let follower = disk.open();
        // The follower had a stale, conflicting suffix of its own.
        follower.append_entries(G, &[blank(1, 1), blank(2, 1), blank(3, 0)]).expect("append");
        assert!(follower.install_snapshot(G, &wire, true).expect("install"));
        assert_eq!(follower.read_entries(G, 0, 100).expect("log"), vec![]);
        assert_eq!(
            follower.log_floor(G).expect("floor"),
            LogFloor { index: 3, term: 1, membership: None }
        );
        catch_up(&follower, &leader, 3);
        follower.verify_group(G).expect("consistent");
        assert_eq!(applied_state(&follower), applied_state(&leader));
        assert_eq!(
            follower.last_membership(G).expect("membership"),
            leader.last_membership(G).expect("membership")
        );
        // Both apply the same new batch the same way.
        let next = records(9, 2, vec![idempotent_batch(9, 0, 2, &[300])]);
        for store in [&leader, &follower] {
            store.append_entries(G, std::slice::from_ref(&next)).expect("append");
            store.apply_up_to(G, 9).expect("apply");
        }
        assert_eq!(applied_state(&follower), applied_state(&leader));
    }
}

/// Appends "name:X" for every name and counts the outcome bytes it returns.
struct Names;

impl StateMachine for Names {
    fn apply(
        &mut self,
        index: u64,
        command: &[u8],
        rows: &mut RowTxn<'_>,
    ) -> Result<Bytes, StorageError> {
        let count = rows.scan_prefix(b"n/")?.len();
        rows.put(
            &[b"n/", command].concat(),
            Bytes::copy_from_slice(&index.to_be_bytes()),
        );
        Ok(Bytes::from(format!("{} names", count + 1)))
    }
}

on_both_backends! {
    fn a_key_value_snapshot_holds_every_row_at_the_last_applied_entry(disk) {
        let leader = Disk::model().open();
        let entries = vec![
            membership(1, 1, b"m"),
            command(2, 1, b"a"),
            command(3, 1, b"b"),
            command(4, 2, b"c"),
        ];
        leader.append_entries(G, &entries).expect("append");
        leader.apply_up_to_with(G, 4, &mut Names).expect("apply");
        assert!(leader.compact_log(G, 3).expect("compact"));
        let snapshot = leader.snapshot(G).expect("snapshot");
        assert_eq!((snapshot.index, snapshot.term), (4, 2));
        assert_eq!(snapshot.membership, Some(Bytes::from_static(b"m")));
        assert_eq!(snapshot.rows.len(), 3);

        let follower = disk.open();
        assert!(follower.install_snapshot(G, &snapshot, false).expect("install"));
        assert_eq!(follower.partition_state(G).expect("state").last_applied, 4);
        let next = command(5, 2, b"d");
        let mut outcomes = Vec::new();
        for store in [&leader, &follower] {
            store.append_entries(G, std::slice::from_ref(&next)).expect("append");
            outcomes.push(store.apply_up_to_with(G, 5, &mut Names).expect("apply"));
        }
        assert_eq!(outcomes[0], outcomes[1]);
        assert_eq!(
            outcomes[0],
            vec![Applied::Command { index: 5, outcome: Bytes::from_static(b"4 names") }]
        );
        assert_eq!(
            follower.kv_scan_prefix(G, b"").expect("rows"),
            leader.kv_scan_prefix(G, b"").expect("rows")
        );
    }
}

on_both_backends! {
    fn a_snapshot_older_than_the_applied_state_changes_nothing(disk) {
        let leader = Disk::model().open();
        partition_leader(&leader);
        let snapshot = leader.snapshot(G).expect("snapshot");
        let follower = disk.open();
        let entries = leader.read_entries(G, 4, 9).expect("read");
        follower.install_snapshot(G, &snapshot, false).expect("install");
        follower.append_entries(G, &entries).expect("append");
        follower.apply_up_to(G, 8).expect("apply");
        let before = follower.read_entries(G, 0, 100).expect("log");
        assert!(!follower.install_snapshot(G, &snapshot, false).expect("stale"));
        assert_eq!(follower.read_entries(G, 0, 100).expect("log"), before);
        assert_eq!(follower.partition_state(G).expect("state").last_applied, 8);
    }
}

on_both_backends! {
    fn the_log_after_a_snapshot_is_kept_only_if_it_agrees_at_the_snapshot_index(disk) {
        let snapshot = GroupSnapshot { index: 2, term: 1, ..GroupSnapshot::default() };
        let store = disk.open();
        store
            .append_entries(G, &[blank(1, 1), blank(2, 1), blank(3, 1), membership(4, 1, b"x")])
            .expect("append");
        assert!(store.install_snapshot(G, &snapshot, true).expect("install"));
        assert_eq!(
            store.read_entries(G, 0, 10).expect("log"),
            vec![blank(3, 1), membership(4, 1, b"x")]
        );
        store.verify_group(G).expect("consistent");

        let other = disk.fresh().open();
        other
            .append_entries(G, &[blank(1, 1), blank(2, 0), blank(3, 0)])
            .expect("append");
        assert!(other.install_snapshot(G, &snapshot, true).expect("install"));
        assert_eq!(other.read_entries(G, 0, 10).expect("log"), vec![]);
        other.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn reading_removed_entries_reports_the_floor(disk) {
        let store = disk.open();
        partition_leader(&store);
        let below = store.read_log(G, 2, 6).expect("read");
        assert_eq!(below.compacted.map(|f| f.index), Some(3));
        assert_eq!(below.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![4, 5]);
        let above = store.read_log(G, 4, 6).expect("read");
        assert_eq!(above.compacted, None);
        let fresh = disk.fresh().open();
        assert_eq!(fresh.read_log(G, 0, 5).expect("read").compacted, None);
    }
}
