// Signatures the storage crate exposes (the helper implements these in real modules; this file
// is deleted once they exist). Everything is synchronous; nothing here knows about async.

use crate::{GroupId, Offset};
use bytes::Bytes;
use std::path::Path;

/// When an acknowledged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// fsync (fdatasync) before an append counts as durable; concurrent appends share one fsync.
    #[default]
    Always,
    /// Leave it to the OS page cache (Kafka's default): survives a process crash, not power loss.
    Never,
}

/// Where fsyncs run. `Thread` in production; `Inline` in the deterministic simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    #[default]
    Thread,
    Inline,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub flush: FlushPolicy,
    pub sync_mode: SyncMode,
    pub cache_bytes: u64,
}

/// Wall-clock time for record timestamps and retention. Production uses the system clock; the
/// simulation hands in a virtual one.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

/// One Raft log entry as stored. The cluster crate maps async-raft's `Entry<D>` to this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    pub payload: EntryPayload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPayload {
    /// A new leader's empty entry.
    Blank,
    /// A membership config, opaque here (the cluster crate encodes it).
    Membership(Bytes),
    /// Record batches for a partition log, validated before they got here.
    Records(Vec<Bytes>),
    /// Replicated key-value state (topic metadata, committed offsets).
    Kv(KvOps),
    /// Marks where a snapshot replaced the log prefix; opaque here.
    SnapshotPointer(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvOps {
    pub puts: Vec<(Bytes, Bytes)>,
    pub deletes: Vec<Bytes>,
}

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Records { index: u64, base_offset: Offset, record_count: u64 },
    Kv { index: u64 },
    Other { index: u64 },
}

/// The state machine of one group, as of its last applied entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionState {
    pub last_applied: u64,
    pub log_start_offset: Offset,
    /// One past the last committed record: the high watermark and log end offset.
    pub next_offset: Offset,
    pub size_bytes: u64,
}

/// The log prefix removed so far: async-raft needs the last removed index and term, and the
/// membership in force there, once the entries are gone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogFloor {
    pub index: u64,
    pub term: u64,
    pub membership: Option<Bytes>,
}

pub struct FetchedBatches {
    /// Stamped with their base offsets and leader epochs.
    pub batches: Vec<Bytes>,
    pub state: PartitionState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Remove batches whose newest record is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Remove the oldest batches while the log is larger than this; -1 is unlimited.
    pub retention_bytes: i64,
}

pub struct RetentionOutcome {
    pub removed_entries: u64,
    pub log_start_offset: Offset,
    /// More could be removed: call again (each call is bounded).
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { offset: Offset, log_start: Offset, log_end: Offset },
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Fjall(#[from] fjall::Error),
}

#[derive(Clone)]
pub struct Store {}

impl Store {
    pub fn open(_path: &Path, _options: StoreOptions) -> Result<Store, StorageError> { todo!() }
    /// Calls `done` once every write made before this call is durable per the flush policy.
    pub fn request_sync(&self, _done: Box<dyn FnOnce(Result<(), StorageError>) + Send>) { todo!() }

    // Raft log.
    /// Writes `entries` (contiguous, ascending) and removes every stored entry of the group with
    /// an index >= `entries[0].index` that is not rewritten: truncate-then-append in one atomic
    /// batch. Not synced: call `request_sync`.
    pub fn append_entries(&self, _group: GroupId, _entries: &[LogEntry]) -> Result<(), StorageError> { todo!() }
    /// Removes entries with index >= start (atomic).
    pub fn delete_entries_from(&self, _group: GroupId, _start: u64) -> Result<(), StorageError> { todo!() }
    /// Entries in [start, stop), skipping removed ones.
    pub fn read_entries(&self, _group: GroupId, _start: u64, _stop: u64) -> Result<Vec<LogEntry>, StorageError> { todo!() }
    pub fn last_entry(&self, _group: GroupId) -> Result<Option<LogEntry>, StorageError> { todo!() }
    /// Newest `Membership` payload at or below the end of the log, else the floor's.
    pub fn last_membership(&self, _group: GroupId) -> Result<Option<(u64, Bytes)>, StorageError> { todo!() }
    pub fn log_floor(&self, _group: GroupId) -> Result<LogFloor, StorageError> { todo!() }
    pub fn save_hard_state(&self, _group: GroupId, _state: &[u8]) -> Result<(), StorageError> { todo!() }
    pub fn hard_state(&self, _group: GroupId) -> Result<Option<Bytes>, StorageError> { todo!() }

    // State machine.
    /// Applies every stored entry in (last_applied, up_to] in order, in one atomic batch with the
    /// new state: a missed apply call can never skip an entry. Idempotent.
    pub fn apply_up_to(&self, _group: GroupId, _up_to: u64) -> Result<Vec<Applied>, StorageError> { todo!() }
    pub fn partition_state(&self, _group: GroupId) -> Result<PartitionState, StorageError> { todo!() }
    /// Committed batches from the one holding `offset`, up to about `max_bytes` (at least one
    /// batch when any is available). `offset == next_offset` gives no batches.
    pub fn read_records(&self, _group: GroupId, _offset: Offset, _max_bytes: usize) -> Result<FetchedBatches, StorageError> { todo!() }
    /// First offset whose record timestamp is >= `timestamp_ms`, with that timestamp.
    pub fn offset_for_timestamp(&self, _group: GroupId, _timestamp_ms: i64) -> Result<Option<(Offset, i64)>, StorageError> { todo!() }
    pub fn kv_get(&self, _group: GroupId, _key: &[u8]) -> Result<Option<Bytes>, StorageError> { todo!() }
    pub fn kv_scan_prefix(&self, _group: GroupId, _prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StorageError> { todo!() }
    /// Removes whole entries from the head while the policy says so; bounded work per call.
    pub fn enforce_retention(&self, _group: GroupId, _policy: RetentionPolicy, _now_ms: i64) -> Result<RetentionOutcome, StorageError> { todo!() }
    /// Removes everything the group has stored (topic deletion); bounded work per call, returns
    /// true when done.
    pub fn delete_group(&self, _group: GroupId) -> Result<bool, StorageError> { todo!() }
}
