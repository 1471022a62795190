//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use gregor_storage::batch::{BatchBuilder, BatchView, NewRecord};
use gregor_storage::{EntryPayload, FlushPolicy, GroupId, LogEntry, Store, StoreOptions, SyncMode};
use std::path::Path;

pub const G: GroupId = GroupId(42);

pub fn options() -> StoreOptions {
    StoreOptions {
        flush: FlushPolicy::Never,
        sync_mode: SyncMode::Inline,
        cache_bytes: 8 << 20,
    }
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, options()).expect("open store")
}

/// A batch with one record per timestamp, values naming their timestamp and position.
pub fn batch(timestamps: &[i64]) -> Bytes {
    let mut builder = BatchBuilder::with_capacity(256);
    let values: Vec<String> = timestamps
        .iter()
        .enumerate()
        .map(|(i, t)| format!("v{t}-{i}"))
        .collect();
    for (value, &timestamp) in values.iter().zip(timestamps) {
        builder.push(&NewRecord {
            key: None,
            value: Some(value.as_bytes()),
            headers: &[],
            timestamp,
        });
    }
    builder.finish()
}

pub fn records(index: u64, term: u64, batches: Vec<Bytes>) -> LogEntry {
    LogEntry {
        index,
        term,
        payload: EntryPayload::Records(batches),
    }
}

pub fn blank(index: u64, term: u64) -> LogEntry {
    LogEntry {
        index,
        term,
        payload: EntryPayload::Blank,
    }
}

pub fn membership(index: u64, term: u64, config: &'static [u8]) -> LogEntry {
    LogEntry {
        index,
        term,
        payload: EntryPayload::Membership(Bytes::from_static(config)),
    }
}

/// (offset, timestamp, value) of every record in fetched batches, checking their stamps.
pub fn flatten(batches: &[Bytes]) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    for bytes in batches {
        let view = BatchView::validate(bytes).expect("fetched batch validates");
        for record in view.records() {
            let record = record.expect("record");
            out.push((
                record.offset,
                record.timestamp,
                record.value.expect("value").to_vec(),
            ));
        }
    }
    out
}

/// A scratch directory, in memory where the OS offers one: fjall fsyncs when it creates, flushes
/// and closes a database, and on a busy disk those fsyncs take longer than everything the tests
/// do. Durability itself is not what these tests check.
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}
