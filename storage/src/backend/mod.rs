//! The backend seam: the ordered key-value store everything in this crate is written against.
//!
//! A backend has named keyspaces ([`Space`]), atomic write batches across them, consistent
//! read views (every read of one view sees the same state, whatever commits meanwhile) with
//! point reads and double-ended range iteration, and an explicit `persist`. Production uses
//! fjall ([`fjall`]); the simulation uses an in-memory model of a disk ([`model`]) that can lose
//! unsynced writes, tear a write, fail an fsync or a read. `Store` holds one as `dyn Backend`,
//! so the log, apply, retention, snapshot and fetch code is the same for both.

pub(crate) mod fjall;
pub mod model;

use crate::StorageError;
use std::ops::{Bound, RangeBounds};

/// A byte string as backends hand it out: fjall's reference-counted slice, cheap to clone.
pub(crate) type Slice = ::fjall::Slice;

/// The keyspaces of the store (see `keys.rs` for what each holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Space {
    Log,
    Meta,
    Offsets,
    Times,
    Kv,
    Info,
}

impl Space {
    pub const ALL: [Space; 6] = [
        Space::Log,
        Space::Meta,
        Space::Offsets,
        Space::Times,
        Space::Kv,
        Space::Info,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Space::Log => "log",
            Space::Meta => "meta",
            Space::Offsets => "offsets",
            Space::Times => "times",
            Space::Kv => "kv",
            Space::Info => "info",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How far `persist` pushes earlier writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Into the OS (write(2)): survives a process crash, not a power cut.
    Buffer,
    /// Onto the disk (fdatasync): survives a power cut.
    SyncData,
}

pub(crate) type Pairs<'a> =
    Box<dyn DoubleEndedIterator<Item = Result<(Slice, Slice), StorageError>> + 'a>;
pub(crate) type Keys<'a> = Box<dyn DoubleEndedIterator<Item = Result<Slice, StorageError>> + 'a>;
pub(crate) type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

pub(crate) trait Backend: Send + Sync + 'static {
    /// A consistent read view of every keyspace.
    fn view(&self) -> Result<Box<dyn ReadView + '_>, StorageError>;
    /// An empty batch; nothing it holds is visible before `commit`.
    fn batch(&self) -> Box<dyn WriteBatch + '_>;
    /// Makes every committed batch durable to `mode`.
    fn persist(&self, mode: Durability) -> Result<(), StorageError>;
    /// Names the write buffers that hold the newest writes: it changes when they are flushed.
    fn write_buffer_mark(&self) -> u64;
    /// Whether a store just opened may hold removals whose space was not reclaimed (a pass is
    /// then due; see `reclaim.rs`).
    fn reclaim_pending(&self) -> bool;
    /// Returns to the file system what removed keys still occupy, as far as the backend can
    /// without changing any read and when what was removed justifies the cost; `flush` first
    /// moves the write buffers (and the removals in them) to disk. Blocks for as long as that
    /// takes, so call it off the request path; it gives up early (with `Ok`) once `stop`
    /// returns true. True: it compacted.
    fn reclaim(&self, flush: bool, stop: &dyn Fn() -> bool) -> Result<bool, StorageError>;
}

pub(crate) trait ReadView {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Slice>, StorageError>;
    /// Pairs in key order (reverse with `next_back`).
    fn range<'a>(&'a self, space: Space, range: KeyRange<'_>) -> Pairs<'a>;
    /// Keys only: a backend that stores large values apart need not load them.
    fn keys<'a>(&'a self, space: Space, range: KeyRange<'_>) -> Keys<'a>;
}

pub(crate) trait WriteBatch {
    fn insert(&mut self, space: Space, key: &[u8], value: Slice);
    fn remove(&mut self, space: Space, key: &[u8]);
    /// Applies every write at once, or none of them.
    fn commit(self: Box<Self>) -> Result<(), StorageError>;
}

/// The borrowed form of any range of byte-string keys.
pub(crate) fn key_range<'a, K: AsRef<[u8]> + 'a>(range: &'a impl RangeBounds<K>) -> KeyRange<'a> {
    (
        borrow_bound(range.start_bound()),
        borrow_bound(range.end_bound()),
    )
}

fn borrow_bound<'a, K: AsRef<[u8]> + 'a>(bound: Bound<&'a K>) -> Bound<&'a [u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_ref()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key above every key that starts with `prefix` (`None`: no such key).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
