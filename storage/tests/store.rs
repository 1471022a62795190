//! Each store operation on its own, through the public API.

mod common;

use bytes::Bytes;
use common::*;
use gregor_storage::batch::BatchView;
use gregor_storage::{
    Applied, EntryPayload, FlushPolicy, GroupId, KvOps, LogEntry, LogFloor, Offset, PartitionState,
    RetentionPolicy, StorageError, Store, StoreOptions, SyncMode,
};
use std::sync::mpsc;
use std::time::Duration;

fn indexes(entries: &[LogEntry]) -> Vec<(u64, u64)> {
    entries.iter().map(|e| (e.index, e.term)).collect()
}

/// Appends and applies `batches` as one records entry per element.
fn produce(store: &Store, first_index: u64, entries: &[Vec<Vec<i64>>]) -> u64 {
    let log: Vec<LogEntry> = entries
        .iter()
        .enumerate()
        .map(|(i, batches)| {
            records(
                first_index + i as u64,
                1,
                batches.iter().map(|t| batch(t)).collect(),
            )
        })
        .collect();
    store.append_entries(G, &log).expect("append");
    let last = first_index + entries.len() as u64 - 1;
    store.apply_up_to(G, last).expect("apply");
    last
}

on_both_backends! {
    fn appended_entries_read_back_in_ranges(disk) {
        let store = disk.open();
        let entries = vec![
            blank(1, 1),
            membership(2, 1, b"m"),
            records(3, 1, vec![batch(&[5, 6])]),
        ];
        store.append_entries(G, &entries).expect("append");
        assert_eq!(store.read_entries(G, 1, 4).expect("read"), entries);
        assert_eq!(store.read_entries(G, 2, 3).expect("read"), entries[1..2]);
        assert_eq!(store.read_entries(G, 3, 3).expect("read"), vec![]);
        assert_eq!(store.read_entries(G, 9, 20).expect("read"), vec![]);
        assert_eq!(store.last_entry(G).expect("last"), Some(entries[2].clone()));
        assert_eq!(
            store.read_entries(GroupId(43), 0, 10).expect("other group"),
            vec![]
        );
        assert_eq!(store.last_entry(GroupId(43)).expect("other group"), None);
    }
}

on_both_backends! {
    fn append_over_a_suffix_truncates_what_is_not_rewritten(disk) {
        let store = disk.open();
        let old: Vec<_> = (1..=5).map(|i| blank(i, 1)).collect();
        store.append_entries(G, &old).expect("append");
        store.append_entries(G, &[blank(3, 2)]).expect("overwrite");
        let log = store.read_entries(G, 0, 100).expect("read");
        assert_eq!(indexes(&log), vec![(1, 1), (2, 1), (3, 2)]);

        store.delete_entries_from(G, 2).expect("delete");
        assert_eq!(
            indexes(&store.read_entries(G, 0, 100).expect("read")),
            vec![(1, 1)]
        );
    }
}

on_both_backends! {
    fn membership_follows_truncation(disk) {
        let store = disk.open();
        store
            .append_entries(
                G,
                &[membership(1, 1, b"a"), blank(2, 1), membership(3, 1, b"b")],
            )
            .expect("append");
        assert_eq!(
            store.last_membership(G).expect("m"),
            Some((3, Bytes::from_static(b"b")))
        );
        store
            .append_entries(G, &[blank(3, 2), blank(4, 2)])
            .expect("overwrite");
        assert_eq!(
            store.last_membership(G).expect("m"),
            Some((1, Bytes::from_static(b"a")))
        );
        store
            .append_entries(G, &[membership(4, 3, b"c")])
            .expect("overwrite");
        assert_eq!(
            store.last_membership(G).expect("m"),
            Some((4, Bytes::from_static(b"c")))
        );
        store.delete_entries_from(G, 1).expect("delete");
        assert_eq!(store.last_membership(G).expect("m"), None);
    }
}

on_both_backends! {
    fn applied_entries_cannot_be_changed_or_removed(disk) {
        let store = disk.open();
        store
            .append_entries(G, &[blank(1, 1), blank(2, 1), blank(3, 1)])
            .expect("append");
        store.apply_up_to(G, 2).expect("apply");

        let conflict = store.append_entries(G, &[blank(2, 2)]);
        assert!(matches!(
            conflict,
            Err(StorageError::AppliedEntryConflict { index: 2, .. })
        ));
        // A duplicate of applied entries matches them: nothing to truncate.
        store
            .append_entries(G, &[blank(1, 1)])
            .expect("matching duplicate");
        let deletion = store.delete_entries_from(G, 2);
        assert!(matches!(
            deletion,
            Err(StorageError::AppliedEntryConflict { index: 2, .. })
        ));

        // A duplicate of applied entries plus a conflicting unapplied one is fine.
        store
            .append_entries(G, &[blank(2, 1), blank(3, 2)])
            .expect("replace unapplied");
        assert_eq!(
            indexes(&store.read_entries(G, 0, 9).expect("read")),
            vec![(1, 1), (2, 1), (3, 2)]
        );
    }
}

on_both_backends! {
    fn malformed_batch_is_not_stored(disk) {
        let store = disk.open();
        let entry = records(1, 1, vec![Bytes::from_static(b"not a batch")]);
        assert!(matches!(
            store.append_entries(G, &[entry]),
            Err(StorageError::InvalidEntry { .. })
        ));
        assert_eq!(store.last_entry(G).expect("last"), None);
    }
}

on_both_backends! {
    fn hard_state_round_trips_per_group(disk) {
        let store = disk.open();
        assert_eq!(store.hard_state(G).expect("get"), None);
        store.save_hard_state(G, b"term 3 vote 2").expect("save");
        store.save_hard_state(GroupId(1), b"other").expect("save");
        assert_eq!(
            store.hard_state(G).expect("get"),
            Some(Bytes::from_static(b"term 3 vote 2"))
        );
    }
}

on_both_backends! {
    fn apply_assigns_contiguous_offsets_across_batches_and_entries(disk) {
        let store = disk.open();
        let entries = vec![
            blank(1, 1),
            records(2, 1, vec![batch(&[10, 11, 12]), batch(&[13])]),
            membership(3, 1, b"m"),
            records(4, 1, vec![]),
            records(5, 2, vec![batch(&[14, 15])]),
        ];
        store.append_entries(G, &entries).expect("append");
        let applied = store.apply_up_to(G, 5).expect("apply");
        assert_eq!(
            applied,
            vec![
                Applied::Other { index: 1 },
                Applied::Records {
                    index: 2,
                    base_offset: Offset(0),
                    record_count: 4
                },
                Applied::Other { index: 3 },
                Applied::Records {
                    index: 4,
                    base_offset: Offset(4),
                    record_count: 0
                },
                Applied::Records {
                    index: 5,
                    base_offset: Offset(4),
                    record_count: 2
                },
            ]
        );
        let state = store.partition_state(G).expect("state");
        let bytes: u64 = [batch(&[10, 11, 12]), batch(&[13]), batch(&[14, 15])]
            .iter()
            .map(|b| b.len() as u64)
            .sum();
        assert_eq!(
            state,
            PartitionState {
                last_applied: 5,
                log_start_offset: Offset(0),
                next_offset: Offset(6),
                size_bytes: bytes
            }
        );
        let fetched = store.read_records(G, Offset(0), usize::MAX).expect("read");
        let offsets: Vec<u64> = flatten(&fetched.batches).iter().map(|r| r.0).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5]);
        let epochs: Vec<i32> = fetched
            .batches
            .iter()
            .map(|b| BatchView::trusted(b).leader_epoch())
            .collect();
        assert_eq!(epochs, vec![1, 1, 2]);
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn apply_is_idempotent_and_never_skips_a_missing_entry(disk) {
        let store = disk.open();
        store
            .append_entries(G, &[records(1, 1, vec![batch(&[1])])])
            .expect("append");
        assert_eq!(store.apply_up_to(G, 1).expect("apply").len(), 1);
        assert_eq!(store.apply_up_to(G, 1).expect("again"), vec![]);
        assert_eq!(store.apply_up_to(G, 0).expect("below"), vec![]);
        assert!(matches!(
            store.apply_up_to(G, 2),
            Err(StorageError::Corrupt(_))
        ));
        // A gap in the log is corruption too, and nothing of the range is applied.
        store
            .append_entries(G, &[records(3, 1, vec![batch(&[2])])])
            .expect("append past a gap");
        assert!(matches!(
            store.apply_up_to(G, 3),
            Err(StorageError::Corrupt(_))
        ));
        assert_eq!(store.partition_state(G).expect("state").last_applied, 1);
        assert_eq!(
            store.partition_state(G).expect("state").next_offset,
            Offset(1)
        );
    }
}

on_both_backends! {
    fn long_catch_up_applies_everything(disk) {
        let store = disk.open();
        let entries: Vec<_> = (1..=2500)
            .map(|i| records(i, 1, vec![batch(&[i as i64])]))
            .collect();
        store.append_entries(G, &entries).expect("append");
        let applied = store.apply_up_to(G, 2500).expect("apply");
        assert_eq!(applied.len(), 2500);
        assert_eq!(
            applied[2499],
            Applied::Records {
                index: 2500,
                base_offset: Offset(2499),
                record_count: 1
            }
        );
        assert_eq!(
            store.partition_state(G).expect("state").next_offset,
            Offset(2500)
        );
    }
}

on_both_backends! {
    fn read_from_mid_batch_offset_starts_with_the_holding_batch(disk) {
        let store = disk.open();
        produce(
            &store,
            1,
            &[vec![vec![1, 2, 3], vec![4, 5]], vec![vec![6, 7, 8]]],
        );
        let fetched = store.read_records(G, Offset(4), usize::MAX).expect("read");
        let got = flatten(&fetched.batches);
        assert_eq!(
            got.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 7]
        );
        assert_eq!(got[1].2, b"v5-1".to_vec());
        let fetched = store.read_records(G, Offset(5), usize::MAX).expect("read");
        assert_eq!(flatten(&fetched.batches)[0].0, 5);
        assert_eq!(fetched.state.next_offset, Offset(8));
    }
}

on_both_backends! {
    fn read_outside_the_log_is_out_of_range_and_at_the_end_is_empty(disk) {
        let store = disk.open();
        let empty = store
            .read_records(G, Offset(0), 100)
            .expect("empty partition");
        assert!(empty.batches.is_empty());
        produce(&store, 1, &[vec![vec![1, 2]]]);
        assert!(store
            .read_records(G, Offset(2), 100)
            .expect("end")
            .batches
            .is_empty());
        let beyond = store.read_records(G, Offset(3), 100);
        assert!(matches!(
            beyond,
            Err(StorageError::OffsetOutOfRange {
                offset: Offset(3),
                log_start: Offset(0),
                log_end: Offset(2)
            })
        ));
    }
}

on_both_backends! {
    fn read_stops_at_max_bytes_but_returns_at_least_one_batch(disk) {
        let store = disk.open();
        produce(&store, 1, &[vec![vec![1], vec![2], vec![3]], vec![vec![4]]]);
        let one = batch(&[1]).len();
        let tiny = store.read_records(G, Offset(0), 1).expect("read");
        assert_eq!(tiny.batches.len(), 1);
        let two = store
            .read_records(G, Offset(1), 2 * one + one / 2)
            .expect("read");
        assert_eq!(
            flatten(&two.batches)
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        let all = store.read_records(G, Offset(0), 100 * one).expect("read");
        assert_eq!(all.batches.len(), 4);
    }
}

on_both_backends! {
    fn unapplied_records_are_invisible(disk) {
        let store = disk.open();
        produce(&store, 1, &[vec![vec![1]]]);
        store
            .append_entries(G, &[records(2, 1, vec![batch(&[2])])])
            .expect("append");
        let fetched = store.read_records(G, Offset(0), usize::MAX).expect("read");
        assert_eq!(flatten(&fetched.batches).len(), 1);
        assert!(matches!(
            store.read_records(G, Offset(2), 10),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
    }
}

on_both_backends! {
    fn offset_for_timestamp_handles_timestamps_going_backwards(disk) {
        let store = disk.open();
        // Offsets:          0    1    2         3    4          5    6
        produce(
            &store,
            1,
            &[
                vec![vec![100, 300], vec![200]],
                vec![vec![150, 250]],
                vec![vec![400, 50]],
            ],
        );
        let at = |t| store.offset_for_timestamp(G, t).expect("lookup");
        assert_eq!(at(i64::MIN), Some((Offset(0), 100)));
        assert_eq!(at(100), Some((Offset(0), 100)));
        assert_eq!(at(101), Some((Offset(1), 300)));
        assert_eq!(at(300), Some((Offset(1), 300)));
        assert_eq!(at(301), Some((Offset(5), 400)));
        assert_eq!(at(400), Some((Offset(5), 400)));
        assert_eq!(at(401), None);
        assert_eq!(
            store.offset_for_timestamp(GroupId(1), 0).expect("empty"),
            None
        );
    }
}

on_both_backends! {
    fn offset_for_timestamp_after_retention_finds_younger_records_behind_an_old_maximum(disk) {
        let store = disk.open();
        produce(
            &store,
            1,
            &[vec![vec![100]], vec![vec![50]], vec![vec![150]]],
        );
        let keep_two = RetentionPolicy {
            retention_ms: -1,
            retention_bytes: 2 * batch(&[1]).len() as i64,
        };
        let outcome = store.enforce_retention(G, keep_two, 0).expect("retention");
        assert_eq!(outcome.log_start_offset, Offset(1));
        assert_eq!(
            store.offset_for_timestamp(G, 40).expect("lookup"),
            Some((Offset(1), 50))
        );
        assert_eq!(
            store.offset_for_timestamp(G, 100).expect("lookup"),
            Some((Offset(2), 150))
        );
        assert_eq!(store.offset_for_timestamp(G, 151).expect("lookup"), None);
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn kv_entries_apply_in_order_and_scan_by_prefix(disk) {
        let store = disk.open();
        let b = Bytes::from_static;
        let kv = |index, puts: Vec<(Bytes, Bytes)>, deletes: Vec<Bytes>| LogEntry {
            index,
            term: 1,
            payload: EntryPayload::Kv(KvOps { puts, deletes }),
        };
        let entries = vec![
            kv(
                1,
                vec![
                    (b(b"t/a"), b(b"1")),
                    (b(b"t/b"), b(b"2")),
                    (b(b"u/x"), b(b"9")),
                ],
                vec![],
            ),
            kv(2, vec![(b(b"t/a"), b(b"3"))], vec![b(b"t/b")]),
            kv(3, vec![(b(b"t/c"), b(b"4")), (b(b"t/c"), b(b"5"))], vec![]),
        ];
        store.append_entries(G, &entries).expect("append");
        let applied = store.apply_up_to(G, 3).expect("apply");
        assert_eq!(
            applied,
            vec![
                Applied::Kv { index: 1 },
                Applied::Kv { index: 2 },
                Applied::Kv { index: 3 }
            ]
        );
        assert_eq!(store.kv_get(G, b"t/a").expect("get"), Some(b(b"3")));
        assert_eq!(store.kv_get(G, b"t/b").expect("get"), None);
        assert_eq!(store.kv_get(GroupId(1), b"t/a").expect("other group"), None);
        assert_eq!(
            store.kv_scan_prefix(G, b"t/").expect("scan"),
            vec![(b(b"t/a"), b(b"3")), (b(b"t/c"), b(b"5"))]
        );
        assert_eq!(store.kv_scan_prefix(G, b"").expect("scan").len(), 3);
    }
}

on_both_backends! {
    fn time_retention_removes_only_entries_older_than_the_bound(disk) {
        let store = disk.open();
        produce(
            &store,
            1,
            &[
                vec![vec![1000, 1100]],
                vec![vec![1500]],
                vec![vec![900]],
                vec![vec![3000]],
            ],
        );
        let policy = RetentionPolicy {
            retention_ms: 1000,
            retention_bytes: -1,
        };
        // Bound 1500: the first entry (newest 1100) goes; the second (1500) is not older, so the
        // third stays too although its record is older: retention removes the head only.
        let outcome = store.enforce_retention(G, policy, 2500).expect("retention");
        assert_eq!(
            (
                outcome.removed_entries,
                outcome.log_start_offset,
                outcome.more
            ),
            (1, Offset(2), false)
        );
        assert!(matches!(
            store.read_records(G, Offset(1), 10),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            flatten(
                &store
                    .read_records(G, Offset(2), 1000)
                    .expect("read")
                    .batches
            )[0]
            .1,
            1500
        );
        // Time going backwards must not move the start back; nothing more expires.
        let outcome = store.enforce_retention(G, policy, 0).expect("retention");
        assert_eq!(
            (outcome.removed_entries, outcome.log_start_offset),
            (0, Offset(2))
        );
        let outcome = store.enforce_retention(G, policy, 3500).expect("retention");
        assert_eq!(outcome.log_start_offset, Offset(4));
        let state = store.partition_state(G).expect("state");
        assert_eq!(state.size_bytes, batch(&[3000]).len() as u64);
        assert_eq!(
            store.offset_for_timestamp(G, 0).expect("lookup"),
            Some((Offset(4), 3000))
        );
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn size_retention_keeps_at_least_the_bound(disk) {
        let store = disk.open();
        produce(
            &store,
            1,
            &[vec![vec![1]], vec![vec![2]], vec![vec![3]], vec![vec![4]]],
        );
        let one = batch(&[1]).len() as i64;
        let policy = RetentionPolicy {
            retention_ms: -1,
            retention_bytes: 2 * one - 1,
        };
        let outcome = store.enforce_retention(G, policy, 0).expect("retention");
        assert_eq!(outcome.log_start_offset, Offset(2));
        assert_eq!(
            store.partition_state(G).expect("state").size_bytes,
            2 * one as u64
        );
        let everything = RetentionPolicy {
            retention_ms: -1,
            retention_bytes: 0,
        };
        let outcome = store
            .enforce_retention(G, everything, 0)
            .expect("retention");
        assert_eq!(outcome.log_start_offset, Offset(4));
        assert!(store
            .read_records(G, Offset(4), 10)
            .expect("end")
            .batches
            .is_empty());
        assert_eq!(store.offset_for_timestamp(G, 0).expect("lookup"), None);
        // The log keeps growing from where it was.
        produce(&store, 5, &[vec![vec![5]]]);
        let fetched = store.read_records(G, Offset(4), 100).expect("read");
        assert_eq!(flatten(&fetched.batches)[0].0, 4);
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn retention_is_bounded_per_call(disk) {
        let store = disk.open();
        let entries: Vec<_> = (0..300).map(|i| vec![vec![i]]).collect();
        produce(&store, 1, &entries);
        let policy = RetentionPolicy {
            retention_ms: 0,
            retention_bytes: -1,
        };
        let first = store
            .enforce_retention(G, policy, 1_000_000)
            .expect("retention");
        assert_eq!((first.removed_entries, first.more), (256, true));
        let second = store
            .enforce_retention(G, policy, 1_000_000)
            .expect("retention");
        assert_eq!(
            (second.removed_entries, second.more, second.log_start_offset),
            (44, false, Offset(300))
        );
    }
}

on_both_backends! {
    fn retention_moves_the_floor_and_removes_raft_entries_up_to_it(disk) {
        let store = disk.open();
        let entries = vec![
            membership(1, 1, b"one"),
            records(2, 1, vec![batch(&[1])]),
            blank(3, 2),
            membership(4, 2, b"two"),
            records(5, 2, vec![batch(&[2])]),
            records(6, 3, vec![batch(&[99])]),
        ];
        store.append_entries(G, &entries).expect("append");
        store.apply_up_to(G, 6).expect("apply");
        let policy = RetentionPolicy {
            retention_ms: 10,
            retention_bytes: -1,
        };
        store.enforce_retention(G, policy, 50).expect("retention");
        assert_eq!(
            store.log_floor(G).expect("floor"),
            LogFloor {
                index: 5,
                term: 2,
                membership: Some(Bytes::from_static(b"two"))
            }
        );
        assert_eq!(
            indexes(&store.read_entries(G, 0, 10).expect("read")),
            vec![(6, 3)]
        );
        assert_eq!(
            store.last_membership(G).expect("m"),
            Some((5, Bytes::from_static(b"two")))
        );
        store.enforce_retention(G, policy, 1000).expect("retention");
        assert_eq!(store.last_entry(G).expect("last"), None);
        assert_eq!(store.log_floor(G).expect("floor").index, 6);
        // The log continues above the floor.
        store
            .append_entries(G, &[records(7, 3, vec![batch(&[5])])])
            .expect("append");
        store.apply_up_to(G, 7).expect("apply");
        assert_eq!(
            flatten(&store.read_records(G, Offset(3), 100).expect("read").batches)[0].0,
            3
        );
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn compact_log_removes_applied_kv_entries_but_not_records(disk) {
        let store = disk.open();
        let kv = |index| LogEntry {
            index,
            term: 1,
            payload: EntryPayload::Kv(KvOps::default()),
        };
        store
            .append_entries(G, &[kv(1), kv(2), records(3, 1, vec![batch(&[1])]), kv(4)])
            .expect("append");
        store.apply_up_to(G, 3).expect("apply");
        assert!(store.compact_log(G, 10).expect("compact"));
        assert_eq!(store.log_floor(G).expect("floor").index, 2);
        assert_eq!(
            indexes(&store.read_entries(G, 0, 10).expect("read")),
            vec![(3, 1), (4, 1)]
        );
        assert_eq!(
            flatten(&store.read_records(G, Offset(0), 100).expect("read").batches).len(),
            1
        );
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn delete_group_removes_everything_of_that_group_only(disk) {
        let store = disk.open();
        let other = GroupId(G.0 + 1);
        let entries: Vec<_> = (1..=3000)
            .map(|i| records(i, 1, vec![batch(&[i as i64])]))
            .collect();
        store.append_entries(G, &entries).expect("append");
        store.append_entries(other, &entries[..2]).expect("append");
        store.apply_up_to(G, 3000).expect("apply");
        store.apply_up_to(other, 2).expect("apply");
        store.save_hard_state(G, b"hs").expect("hard state");
        let mut calls = 0;
        while !store.delete_group(G).expect("delete") {
            calls += 1;
            assert!(calls < 10, "delete_group makes progress");
        }
        assert!(
            calls >= 1,
            "3000 entries and their rows take more than one bounded call"
        );
        assert_eq!(
            store.partition_state(G).expect("state"),
            PartitionState::default()
        );
        assert_eq!(store.last_entry(G).expect("last"), None);
        assert_eq!(store.hard_state(G).expect("hs"), None);
        assert_eq!(store.offset_for_timestamp(G, 0).expect("lookup"), None);
        assert_eq!(
            store.partition_state(other).expect("state").next_offset,
            Offset(2)
        );
        assert_eq!(store.read_entries(other, 0, 10).expect("read").len(), 2);
    }
}

on_both_backends! {
    fn reopened_store_has_the_same_state(disk) {
        let before = {
            let store = disk.open();
            store.save_hard_state(G, b"vote").expect("hard state");
            produce(&store, 1, &[vec![vec![1, 2]], vec![vec![3]], vec![vec![4]]]);
            store
                .append_entries(G, &[membership(4, 2, b"m")])
                .expect("unapplied");
            let policy = RetentionPolicy {
                retention_ms: -1,
                retention_bytes: 0,
            };
            store.enforce_retention(G, policy, 0).expect("retention");
            let kv = LogEntry {
                index: 1,
                term: 1,
                payload: EntryPayload::Kv(KvOps {
                    puts: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))],
                    deletes: vec![],
                }),
            };
            store.append_entries(GroupId(0), &[kv]).expect("kv");
            store.apply_up_to(GroupId(0), 1).expect("apply");
            store.sync().expect("sync");
            (
                store.partition_state(G).expect("state"),
                store.read_entries(G, 0, 100).expect("entries"),
                store.log_floor(G).expect("floor"),
            )
        };
        let store = disk.open();
        assert_eq!(store.partition_state(G).expect("state"), before.0);
        assert_eq!(store.read_entries(G, 0, 100).expect("entries"), before.1);
        assert_eq!(store.log_floor(G).expect("floor"), before.2);
        assert_eq!(
            store.hard_state(G).expect("hs"),
            Some(Bytes::from_static(b"vote"))
        );
        assert_eq!(
            store.kv_get(GroupId(0), b"k").expect("kv"),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(
            store.last_membership(G).expect("m"),
            Some((4, Bytes::from_static(b"m")))
        );
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn a_second_open_of_the_same_directory_is_refused(disk) {
        let _store = disk.open();
        assert!(disk.try_open(options()).is_err());
    }
}

on_both_backends! {
    fn sync_requests_are_answered_in_every_mode(disk) {
        for (flush, sync_mode) in [
            (FlushPolicy::Always, SyncMode::Thread),
            (FlushPolicy::Always, SyncMode::Inline),
            (FlushPolicy::Never, SyncMode::Thread),
            (FlushPolicy::Never, SyncMode::Inline),
        ] {
                let disk = disk.fresh();
            let store = disk.open_with(StoreOptions {
                flush,
                sync_mode: sync_mode.clone(),
                cache_bytes: 1 << 20,
            });
            let (tx, rx) = mpsc::channel();
            for i in 0..20u64 {
                store.append_entries(G, &[blank(i + 1, 1)]).expect("append");
                let tx = tx.clone();
                store.request_sync(Box::new(move |result| {
                    tx.send((i, result.is_ok())).expect("send");
                }));
            }
            let mut answered: Vec<_> = (0..20)
                .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("answered"))
                .collect();
            answered.sort();
            assert_eq!(
                answered,
                (0..20).map(|i| (i, true)).collect::<Vec<_>>(),
                "{flush:?} {sync_mode:?}"
            );
        }
    }
}

on_both_backends! {
    fn dropping_the_last_handle_in_a_sync_callback_does_not_hang(disk) {
        let options = StoreOptions {
            flush: FlushPolicy::Always,
            sync_mode: SyncMode::Thread,
            cache_bytes: 1 << 20,
        };
        let store = disk.open_with(options);
        let (tx, rx) = mpsc::channel();
        let handle = store.clone();
        store.request_sync(Box::new(move |result| {
            drop(handle);
            tx.send(result.is_ok()).expect("send");
        }));
        drop(store);
        assert!(rx.recv_timeout(Duration::from_secs(10)).expect("answered"));
    }
}

on_both_backends! {
    fn a_stale_append_of_matching_entries_keeps_the_entries_after_them(disk) {
        let store = disk.open();
        let log: Vec<_> = (1..=5).map(|i| blank(i, 1)).collect();
        store.append_entries(G, &log).expect("append");
        store
            .append_entries(G, &[membership(6, 1, b"m")])
            .expect("append");
        // A duplicate of entries 2 and 3 arrives late: Raft keeps everything after them.
        store.append_entries(G, &log[1..3]).expect("duplicate");
        assert_eq!(
            indexes(&store.read_entries(G, 0, 100).expect("read")),
            vec![(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]
        );
        assert_eq!(
            store.last_membership(G).expect("m"),
            Some((6, Bytes::from_static(b"m")))
        );
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn an_append_truncates_from_its_first_conflicting_entry_only(disk) {
        let store = disk.open();
        let log: Vec<_> = (1..=5).map(|i| blank(i, 1)).collect();
        store.append_entries(G, &log).expect("append");
        store
            .append_entries(G, &[blank(3, 1), membership(4, 2, b"n")])
            .expect("conflict at 4");
        assert_eq!(
            indexes(&store.read_entries(G, 0, 100).expect("read")),
            vec![(1, 1), (2, 1), (3, 1), (4, 2)]
        );
        assert_eq!(
            store.last_membership(G).expect("m"),
            Some((4, Bytes::from_static(b"n")))
        );
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn a_fenced_store_writes_nothing_more_and_reopens_with_what_came_before(disk) {
        let store = disk.open();
        produce(&store, 1, &[vec![vec![1]]]);
        let clone = store.clone();
        store.fence("simulated crash");
        assert!(matches!(
            clone.append_entries(G, &[records(2, 1, vec![batch(&[2])])]),
            Err(StorageError::Poisoned(_))
        ));
        assert!(matches!(clone.last_entry(G), Err(StorageError::Poisoned(_))));
        assert!(matches!(clone.sync(), Err(StorageError::Poisoned(_))));
        drop((store, clone));
        let store = disk.open();
        assert_eq!(store.last_entry(G).expect("last").map(|e| e.index), Some(1));
    }
}
