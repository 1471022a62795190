//! Memory budget: a node must stay under ~256 MB RSS after storing 10M 100-byte records.
//! Slow (it writes over 1 GB), so ignored by default; run it with
//! `cargo test -p gregor-storage --release --test memory -- --ignored --nocapture`.

// A measurement harness: it reports wall time, which is what it measures.
#![allow(clippy::disallowed_methods)]

use gregor_storage::batch::{BatchBuilder, NewRecord};
use gregor_storage::{EntryPayload, GroupId, LogEntry, Offset, Store, StoreOptions};
use std::sync::mpsc;

const RECORDS: u64 = 10_000_000;
const RSS_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .expect("field");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("number");
    kib * 1024
}

fn write_and_read(records_per_batch: u64, batches_per_entry: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let group = GroupId(7);
    let value = [0x5a_u8; 100];
    let per_entry = records_per_batch * batches_per_entry;
    let entries = RECORDS / per_entry;
    let mut timestamp = 1_700_000_000_000_i64;
    let mut syncs = Vec::new();
    let started = std::time::Instant::now();
    for index in 1..=entries {
        let batches = (0..batches_per_entry)
            .map(|_| {
                let mut builder = BatchBuilder::with_capacity(128 * records_per_batch as usize);
                for _ in 0..records_per_batch {
                    timestamp += 1;
                    builder.push(&NewRecord {
                        key: None,
                        value: Some(&value),
                        headers: &[],
                        timestamp,
                    });
                }
                builder.finish()
            })
            .collect();
        let entry = LogEntry {
            index,
            term: 1,
            payload: EntryPayload::Records(batches),
        };
        store.append_entries(group, &[entry]).expect("append");
        store.apply_up_to(group, index).expect("apply");
        if index % 64 == 0 {
            let (tx, rx) = mpsc::channel();
            store.request_sync(Box::new(move |r| tx.send(r).expect("send")));
            syncs.push(rx);
            if syncs.len() > 4 {
                syncs.remove(0).recv().expect("answer").expect("sync");
            }
        }
    }
    for rx in syncs {
        rx.recv().expect("answer").expect("sync");
    }
    let write_time = started.elapsed();
    let after_write = status_bytes("VmRSS:");
    let started = std::time::Instant::now();
    let mut offset = Offset(0);
    let mut read = 0u64;
    while offset.0 < entries * per_entry {
        let fetched = store.read_records(group, offset, 1 << 20).expect("read");
        read += fetched.batches.iter().map(|b| b.len() as u64).sum::<u64>();
        offset = Offset(offset.0 + fetched.batches.len() as u64 * records_per_batch);
    }
    let read_time = started.elapsed();
    let after_read = status_bytes("VmRSS:");
    let peak = status_bytes("VmHWM:");
    println!(
        "{per_entry} records/entry: wrote in {write_time:?}, read in {read_time:?}; rss after write \
         {} MiB, after reading {} MiB back {} MiB, peak {} MiB",
        after_write >> 20,
        read >> 20,
        after_read >> 20,
        peak >> 20
    );
    assert!(peak < RSS_BUDGET_BYTES, "peak RSS {} MiB", peak >> 20);
}

#[test]
#[ignore = "writes over 1 GB; run explicitly in release"]
fn ten_million_records_in_large_entries_fit_the_memory_budget() {
    write_and_read(250, 4);
}

#[test]
#[ignore = "writes over 1 GB; run explicitly in release"]
fn ten_million_records_in_small_entries_fit_the_memory_budget() {
    write_and_read(10, 1);
}
