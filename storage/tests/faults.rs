//! The model disk's faults seen through the store: a power cut loses exactly the writes not yet
//! synced, a torn write is never half applied, a failed fsync poisons the store for good, a
//! crash kills every handle, failed reads are errors that change nothing, and an external sync
//! runner decides when an fsync completes.

mod common;

use common::*;
use gregor_storage::{
    Crash, FlushPolicy, LogEntry, ModelDisk, StorageError, Store, StoreOptions, SyncJob, SyncMode,
    SyncRunner,
};
use std::sync::{Arc, Mutex};

fn durable_options() -> StoreOptions {
    StoreOptions {
        flush: FlushPolicy::Always,
        sync_mode: SyncMode::Inline,
        cache_bytes: 1 << 20,
    }
}

fn open(disk: &ModelDisk) -> Store {
    Store::open_model(disk, durable_options()).expect("open")
}

fn last_index(store: &Store) -> Option<u64> {
    store.last_entry(G).expect("last").map(|e| e.index)
}

fn sync(store: &Store) -> Result<(), StorageError> {
    let outcome = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&outcome);
    store.request_sync(Box::new(move |r| *slot.lock().expect("slot") = Some(r)));
    let answered = outcome.lock().expect("slot").take();
    answered.expect("inline sync answers at once")
}

/// Appends entries `from..=to`, one batch (one commit) per entry.
fn append_one_by_one(store: &Store, from: u64, to: u64) {
    for index in from..=to {
        let entry = records(index, 1, vec![batch(&[index as i64])]);
        store.append_entries(G, &[entry]).expect("append");
    }
}

#[test]
fn power_loss_keeps_the_synced_writes_and_the_chosen_prefix_of_the_rest() {
    for keep in 0..=3 {
        let disk = ModelDisk::new();
        let store = open(&disk);
        append_one_by_one(&store, 1, 2);
        sync(&store).expect("sync");
        append_one_by_one(&store, 3, 5);
        assert_eq!(disk.unsynced_batches(), 3);
        disk.crash(Crash::PowerLoss { keep });
        drop(store);
        let store = open(&disk);
        assert_eq!(last_index(&store), Some(2 + keep as u64), "keep {keep}");
        store.verify_group(G).expect("consistent");
    }
}

#[test]
fn a_process_crash_loses_nothing() {
    let disk = ModelDisk::new();
    let store = open(&disk);
    append_one_by_one(&store, 1, 4);
    store.apply_up_to(G, 3).expect("apply");
    disk.crash(Crash::ProcessCrash);
    let store = open(&disk);
    assert_eq!(last_index(&store), Some(4));
    assert_eq!(store.partition_state(G).expect("state").last_applied, 3);
    store.verify_group(G).expect("consistent");
}

#[test]
fn a_torn_write_is_dropped_whole() {
    // One append of three entries, one of them a membership change: a single batch over the
    // log and meta keyspaces.
    let entries: Vec<LogEntry> = vec![
        records(2, 1, vec![batch(&[1])]),
        membership(3, 1, b"m"),
        records(4, 1, vec![batch(&[2])]),
    ];
    for torn_bytes in [0, 1, 9, 40, 100, 10_000] {
        let disk = ModelDisk::new();
        let store = open(&disk);
        append_one_by_one(&store, 1, 1);
        sync(&store).expect("sync");
        store.append_entries(G, &entries).expect("append");
        disk.crash(Crash::TornWrite {
            keep: 0,
            torn_bytes,
        });
        let store = open(&disk);
        assert_eq!(last_index(&store), Some(1), "torn at {torn_bytes}");
        assert_eq!(store.last_membership(G).expect("membership"), None);
        store.verify_group(G).expect("consistent");
    }
}

#[test]
fn a_failed_fsync_poisons_the_store_for_good() {
    let disk = ModelDisk::new();
    let store = open(&disk);
    append_one_by_one(&store, 1, 1);
    sync(&store).expect("sync");
    append_one_by_one(&store, 2, 2);
    disk.fail_next_persist();
    assert!(matches!(sync(&store), Err(StorageError::Poisoned(_))));
    // Every later call fails, the next fsync (which would succeed) included.
    assert!(matches!(sync(&store), Err(StorageError::Poisoned(_))));
    assert!(matches!(
        store.last_entry(G),
        Err(StorageError::Poisoned(_))
    ));
    assert!(matches!(
        store.append_entries(G, &[blank(3, 1)]),
        Err(StorageError::Poisoned(_))
    ));
    assert!(matches!(
        store.apply_up_to(G, 1),
        Err(StorageError::Poisoned(_))
    ));
    disk.crash(Crash::PowerLoss { keep: 0 });
    let store = open(&disk);
    assert_eq!(last_index(&store), Some(1));
}

#[test]
fn a_crash_kills_every_handle_of_the_store() {
    let disk = ModelDisk::new();
    let store = open(&disk);
    let clone = store.clone();
    append_one_by_one(&store, 1, 2);
    disk.crash(Crash::ProcessCrash);
    assert!(store.last_entry(G).is_err());
    assert!(clone.read_entries(G, 0, 10).is_err());
    assert!(store.append_entries(G, &[blank(3, 1)]).is_err());
    assert!(store.save_hard_state(G, b"vote").is_err());
    assert!(sync(&clone).is_err());
    // The new store does not see what the dead one tried to write.
    let reopened = open(&disk);
    assert_eq!(last_index(&reopened), Some(2));
    assert_eq!(reopened.hard_state(G).expect("hard state"), None);
}

#[test]
fn a_second_store_cannot_open_an_open_disk_but_can_after_a_clean_close() {
    let disk = ModelDisk::new();
    let store = open(&disk);
    append_one_by_one(&store, 1, 1);
    assert!(Store::open_model(&disk, durable_options()).is_err());
    drop(store);
    // A clean close reaches the disk, as fjall's does: even a power cut then loses nothing.
    disk.crash(Crash::PowerLoss { keep: 0 });
    assert_eq!(last_index(&open(&disk)), Some(1));
}

#[test]
fn failed_reads_are_errors_that_change_nothing() {
    let disk = ModelDisk::new();
    let store = open(&disk);
    append_one_by_one(&store, 1, 3);
    disk.fail_reads(2);
    assert!(matches!(store.last_entry(G), Err(StorageError::Io(_))));
    assert!(matches!(
        store.read_entries(G, 1, 4),
        Err(StorageError::Io(_))
    ));
    assert_eq!(store.read_entries(G, 1, 4).expect("read").len(), 3);
    store.apply_up_to(G, 3).expect("the store is not poisoned");
}

#[test]
fn an_external_runner_decides_when_an_fsync_completes() {
    let jobs: Arc<Mutex<Vec<SyncJob>>> = Arc::default();
    let queue = Arc::clone(&jobs);
    let options = StoreOptions {
        sync_mode: SyncMode::External(SyncRunner::new(move |job| {
            queue.lock().expect("queue").push(job);
        })),
        ..durable_options()
    };
    let disk = ModelDisk::new();
    let store = Store::open_model(&disk, options.clone()).expect("open");
    let answers = Arc::new(Mutex::new(Vec::new()));
    append_one_by_one(&store, 1, 1);
    let answer = Arc::clone(&answers);
    store.request_sync(Box::new(move |r| answer.lock().expect("a").push(r.is_ok())));
    assert!(
        answers.lock().expect("a").is_empty(),
        "not before the job runs"
    );
    let job = jobs.lock().expect("queue").pop().expect("a job");
    job.run();
    assert_eq!(*answers.lock().expect("a"), vec![true]);

    // A node that dies with an fsync in flight: the job runs against a dead store and fails,
    // and the write it would have covered is lost to the power cut.
    append_one_by_one(&store, 2, 2);
    let answer = Arc::clone(&answers);
    store.request_sync(Box::new(move |r| answer.lock().expect("a").push(r.is_ok())));
    disk.crash(Crash::PowerLoss { keep: 0 });
    jobs.lock().expect("queue").pop().expect("a job").run();
    assert_eq!(*answers.lock().expect("a"), vec![true, false]);
    let store = Store::open_model(&disk, options).expect("reopen");
    assert_eq!(last_index(&store), Some(1));
}
