//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use gregor_storage::batch::{BatchBuilder, BatchView, NewRecord};
use gregor_storage::{
    EntryPayload, FlushPolicy, GroupId, LogEntry, ModelDisk, StorageError, Store, StoreOptions,
    SyncMode,
};
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

/// Where a test's store lives: a fjall directory or a model disk. Tests that hold for every
/// backend run on both (see `on_both_backends!`).
pub enum Disk {
    Fjall(tempfile::TempDir),
    Model(ModelDisk),
}

impl Disk {
    pub fn fjall() -> Disk {
        Disk::Fjall(tempdir())
    }

    pub fn model() -> Disk {
        Disk::Model(ModelDisk::new())
    }

    /// A new, empty disk of the same kind.
    pub fn fresh(&self) -> Disk {
        match self {
            Disk::Fjall(_) => Disk::fjall(),
            Disk::Model(_) => Disk::model(),
        }
    }

    pub fn open(&self) -> Store {
        self.open_with(options())
    }

    pub fn open_with(&self, options: StoreOptions) -> Store {
        self.try_open(options).expect("open store")
    }

    pub fn try_open(&self, options: StoreOptions) -> Result<Store, StorageError> {
        match self {
            Disk::Fjall(dir) => Store::open(dir.path(), options),
            Disk::Model(disk) => Store::open_model(disk, options),
        }
    }
}

/// Defines a test that runs its body once on fjall and once on the model disk, as
/// `name::fjall` and `name::model`.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$meta:meta])* fn $name:ident($disk:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($disk: &$crate::common::Disk) $body

            $(#[$meta])*
            #[test]
            fn fjall() {
                run(&$crate::common::Disk::fjall());
            }

            $(#[$meta])*
            #[test]
            fn model() {
                run(&$crate::common::Disk::model());
            }
        }
    };
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

/// A batch from an idempotent producer: `batch(timestamps)` with its producer fields set.
pub fn idempotent_batch(
    producer: i64,
    epoch: i16,
    first_sequence: i32,
    timestamps: &[i64],
) -> Bytes {
    let mut bytes = batch(timestamps).to_vec();
    bytes[43..51].copy_from_slice(&producer.to_be_bytes());
    bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
    bytes[53..57].copy_from_slice(&first_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

pub fn command(index: u64, term: u64, command: &'static [u8]) -> LogEntry {
    LogEntry {
        index,
        term,
        payload: EntryPayload::Command(Bytes::from_static(command)),
    }
}

pub fn advance(index: u64, term: u64, offset: u64) -> LogEntry {
    LogEntry {
        index,
        term,
        payload: EntryPayload::AdvanceLogStart(gregor_storage::Offset(offset)),
    }
}
