//! Applying commands through a state machine, retention as a replicated entry, and producer
//! state, on both backends.

mod common;

use bytes::Bytes;
use common::*;
use gregor_storage::{
    Applied, Offset, ProducerBatch, ProducerState, RetentionPolicy, RowTxn, StateMachine,
    StorageError, Store, MAX_PRODUCERS_PER_PARTITION,
};

/// A counter machine: "next" assigns the next id (kept in row "id"), "name:X" creates X with
/// a fresh id unless it exists (a rejection is an outcome), "corrupt" fails.
struct Ids;

impl StateMachine for Ids {
    fn apply(
        &mut self,
        index: u64,
        command: &[u8],
        rows: &mut RowTxn<'_>,
    ) -> Result<Bytes, StorageError> {
        let next = |rows: &mut RowTxn<'_>| -> Result<u64, StorageError> {
            let id = rows
                .get(b"id")?
                .map_or(0, |v| u64::from_be_bytes(v[..].try_into().expect("u64")))
                + 1;
            rows.put(b"id", Bytes::copy_from_slice(&id.to_be_bytes()));
            Ok(id)
        };
        match command {
            b"next" => Ok(Bytes::from(format!("id {}", next(rows)?))),
            b"corrupt" => Err(StorageError::Corrupt(format!("entry {index}"))),
            name if name.starts_with(b"name:") => {
                let key = [b"n/", &name[5..]].concat();
                if rows.get(&key)?.is_some() {
                    return Ok(Bytes::from_static(b"exists"));
                }
                let id = next(rows)?;
                rows.put(&key, Bytes::copy_from_slice(&id.to_be_bytes()));
                let names = rows.scan_prefix(b"n/")?.len();
                Ok(Bytes::from(format!("id {id} of {names}")))
            }
            _ => Ok(Bytes::from_static(b"unknown")),
        }
    }
}

fn outcomes(applied: &[Applied]) -> Vec<String> {
    applied
        .iter()
        .filter_map(|a| match a {
            Applied::Command { outcome, .. } => {
                Some(String::from_utf8(outcome.to_vec()).expect("utf8"))
            }
            _ => None,
        })
        .collect()
}

on_both_backends! {
    fn commands_see_the_writes_of_earlier_commands_in_the_same_apply(disk) {
        let store = disk.open();
        let entries = vec![
            command(1, 1, b"next"),
            command(2, 1, b"name:a"),
            command(3, 1, b"name:a"),
            blank(4, 1),
            command(5, 1, b"name:b"),
        ];
        store.append_entries(G, &entries).expect("append");
        let applied = store.apply_up_to_with(G, 5, &mut Ids).expect("apply");
        assert_eq!(
            outcomes(&applied),
            vec!["id 1", "id 2 of 1", "exists", "id 3 of 2"]
        );
        assert_eq!(applied[3], Applied::Other { index: 4 });
        assert_eq!(
            store.kv_scan_prefix(G, b"n/").expect("scan"),
            vec![
                (Bytes::from_static(b"n/a"), Bytes::copy_from_slice(&2u64.to_be_bytes())),
                (Bytes::from_static(b"n/b"), Bytes::copy_from_slice(&3u64.to_be_bytes())),
            ]
        );
        // Later applies continue from the committed rows.
        store.append_entries(G, &[command(6, 2, b"next")]).expect("append");
        let applied = store.apply_up_to_with(G, 6, &mut Ids).expect("apply");
        assert_eq!(outcomes(&applied), vec!["id 4"]);
    }
}

on_both_backends! {
    fn a_failing_command_commits_nothing_of_its_batch(disk) {
        let store = disk.open();
        let entries = vec![command(1, 1, b"next"), command(2, 1, b"corrupt")];
        store.append_entries(G, &entries).expect("append");
        assert!(matches!(
            store.apply_up_to_with(G, 2, &mut Ids),
            Err(StorageError::Corrupt(_))
        ));
        assert_eq!(store.partition_state(G).expect("state").last_applied, 0);
        assert_eq!(store.kv_get(G, b"id").expect("get"), None);
        // Without a machine a command cannot be applied at all.
        assert!(matches!(store.apply_up_to(G, 1), Err(StorageError::Corrupt(_))));
        assert_eq!(store.partition_state(G).expect("state").last_applied, 0);
    }
}

/// Entries 1..=4 carry one single-record batch each (offsets 0..=3, 2 records in entry 3).
fn four_entries(store: &Store) {
    let entries = vec![
        records(1, 1, vec![batch(&[10])]),
        records(2, 1, vec![batch(&[20])]),
        records(3, 1, vec![batch(&[30, 31])]),
        records(4, 1, vec![batch(&[40])]),
    ];
    store.append_entries(G, &entries).expect("append");
}

on_both_backends! {
    fn advance_log_start_rounds_down_to_an_entry_and_never_moves_back(disk) {
        let store = disk.open();
        four_entries(&store);
        store
            .append_entries(
                G,
                &[advance(5, 1, 3), advance(6, 1, 1), records(7, 1, vec![batch(&[70])])],
            )
            .expect("append");
        let applied = store.apply_up_to(G, 7).expect("apply");
        // Offset 3 lies inside entry 3 (offsets 2 and 3): the start stops at its first offset.
        assert_eq!(applied[4], Applied::LogStart { index: 5, log_start: Offset(2) });
        assert_eq!(applied[5], Applied::LogStart { index: 6, log_start: Offset(2) });
        let state = store.partition_state(G).expect("state");
        assert_eq!((state.log_start_offset, state.next_offset), (Offset(2), Offset(6)));
        assert_eq!(store.log_floor(G).expect("floor").index, 2);
        assert!(matches!(
            store.read_records(G, Offset(1), 100),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            flatten(&store.read_records(G, Offset(2), 1000).expect("read").batches)[0].0,
            2
        );
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn an_advance_in_the_same_apply_as_the_records_it_removes_sees_them(disk) {
        let store = disk.open();
        four_entries(&store);
        store.append_entries(G, &[advance(5, 1, 100)]).expect("append");
        // One call applies the records and then the advance past all of them.
        store.apply_up_to(G, 5).expect("apply");
        let state = store.partition_state(G).expect("state");
        assert_eq!((state.log_start_offset, state.next_offset), (Offset(5), Offset(5)));
        assert_eq!(state.size_bytes, 0);
        assert_eq!(store.log_floor(G).expect("floor").index, 4);
        store.verify_group(G).expect("consistent");
    }
}

#[test]
fn replicas_applying_the_same_log_agree_on_the_log_start() {
    let disks = [Disk::fjall(), Disk::model(), Disk::model()];
    let stores: Vec<Store> = disks.iter().map(Disk::open).collect();
    let policy = RetentionPolicy {
        retention_ms: 25,
        retention_bytes: -1,
    };
    // The leader (stores[0]) plans from its applied state; every replica applies the entry.
    four_entries(&stores[0]);
    stores[0].apply_up_to(G, 4).expect("apply");
    let target = stores[0].plan_retention(G, policy, 50).expect("plan");
    assert_eq!(target, Some(Offset(2)));
    let log = {
        let mut log = stores[0].read_entries(G, 1, 5).expect("read");
        log.push(advance(5, 1, target.expect("target").0));
        log
    };
    for (i, store) in stores.iter().enumerate() {
        if i > 0 {
            store.append_entries(G, &log[..4]).expect("append");
        }
        store.append_entries(G, &log[4..]).expect("append");
        store.apply_up_to(G, 5).expect("apply");
        store.verify_group(G).expect("consistent");
    }
    let states: Vec<_> = stores
        .iter()
        .map(|s| {
            (
                s.partition_state(G).expect("state"),
                s.log_floor(G).expect("floor"),
            )
        })
        .collect();
    assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:?}");
    assert_eq!(states[0].0.log_start_offset, Offset(2));
}

on_both_backends! {
    fn plan_retention_covers_only_applied_whole_entries(disk) {
        let store = disk.open();
        four_entries(&store);
        let everything = RetentionPolicy { retention_ms: -1, retention_bytes: 0 };
        assert_eq!(store.plan_retention(G, everything, 0).expect("plan"), None);
        store.apply_up_to(G, 3).expect("apply");
        assert_eq!(store.plan_retention(G, everything, 0).expect("plan"), Some(Offset(4)));
        assert_eq!(
            store.plan_retention(G, RetentionPolicy::KEEP_FOREVER, 0).expect("plan"),
            None
        );
        // Planning changes nothing.
        assert_eq!(store.partition_state(G).expect("state").log_start_offset, Offset(0));
    }
}

on_both_backends! {
    fn a_retention_plan_is_bounded(disk) {
        let store = disk.open();
        let entries: Vec<_> = (1..=300).map(|i| records(i, 1, vec![batch(&[i as i64])])).collect();
        store.append_entries(G, &entries).expect("append");
        store.apply_up_to(G, 300).expect("apply");
        let everything = RetentionPolicy { retention_ms: -1, retention_bytes: 0 };
        assert_eq!(store.plan_retention(G, everything, 0).expect("plan"), Some(Offset(256)));
    }
}

on_both_backends! {
    fn apply_records_the_last_five_batches_of_each_producer(disk) {
        let store = disk.open();
        let mut entries = Vec::new();
        for i in 0..7u64 {
            let seq = (i * 2) as i32;
            entries.push(records(
                i + 1,
                1,
                vec![idempotent_batch(9, 0, seq, &[1, 2]), batch(&[3])],
            ));
        }
        entries.push(records(8, 1, vec![idempotent_batch(4, 2, 0, &[5])]));
        store.append_entries(G, &entries).expect("append");
        store.apply_up_to(G, 8).expect("apply");
        let nine = store.producer_state(G, 9).expect("read").expect("producer 9");
        assert_eq!(nine.epoch, 0);
        let firsts: Vec<(i32, i32, u64)> = nine
            .batches
            .iter()
            .map(|b| (b.first_sequence, b.last_sequence, b.first_offset.0))
            .collect();
        // Each entry holds 3 records: the producer's batch comes first.
        assert_eq!(firsts, vec![(4, 5, 6), (6, 7, 9), (8, 9, 12), (10, 11, 15), (12, 13, 18)]);
        assert_eq!(
            store.producer_state(G, 4).expect("read"),
            Some(ProducerState {
                epoch: 2,
                batches: vec![ProducerBatch::new(0, 1, Offset(21))]
            })
        );
        assert_eq!(store.producer_state(G, 5).expect("read"), None);
        store.verify_group(G).expect("consistent");
    }
}

on_both_backends! {
    fn producers_beyond_the_bound_evict_the_one_whose_newest_batch_is_oldest(disk) {
        let store = disk.open();
        let bound = u64::from(MAX_PRODUCERS_PER_PARTITION);
        // Producers 0..bound, one batch each, in entries of 64 batches.
        let batches: Vec<Bytes> = (0..bound as i64).map(|p| idempotent_batch(p, 0, 0, &[1])).collect();
        let entries: Vec<_> = batches
            .chunks(64)
            .enumerate()
            .map(|(i, chunk)| records(i as u64 + 1, 1, chunk.to_vec()))
            .collect();
        let last = entries.len() as u64;
        store.append_entries(G, &entries).expect("append");
        store.apply_up_to(G, last).expect("apply");
        // Producer 0 sends again, so producer 1 is now the oldest; a new producer arrives.
        let next = vec![
            records(last + 1, 1, vec![idempotent_batch(0, 0, 1, &[1])]),
            records(last + 2, 1, vec![idempotent_batch(5000, 0, 0, &[1])]),
        ];
        store.append_entries(G, &next).expect("append");
        store.apply_up_to(G, last + 2).expect("apply");
        assert!(store.producer_state(G, 0).expect("read").is_some());
        assert_eq!(store.producer_state(G, 1).expect("read"), None);
        assert!(store.producer_state(G, 2).expect("read").is_some());
        assert!(store.producer_state(G, 5000).expect("read").is_some());
        store.verify_group(G).expect("consistent");
    }
}
