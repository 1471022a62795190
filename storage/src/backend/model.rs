//! A model of a disk for the deterministic simulation: every keyspace in memory, what a crash
//! keeps decided by the caller.
//!
//! The model keeps two states. *Durable* is what the disk holds as of the last successful
//! `persist(SyncData)`. *Unsynced* is the journal of batches committed since, in order: they sit
//! in the OS page cache, so reads see them and a process crash keeps them, but a power cut keeps
//! only a prefix (the journal is written sequentially), and the batch being written when the
//! power went may be torn, which recovery detects by its checksum and drops whole, as fjall's
//! journal recovery truncates a torn tail.
//!
//! Nothing here is random and nothing runs on a thread of its own: every fault is chosen by the
//! caller (the simulation, from its seeded generator). Reads and writes take one mutex, so the
//! disk can be shared by every `Store` handle of a node, as a real disk is.
//!
//! Read views are multi-version: each key keeps the versions an open view may still read, so a
//! view taken before a commit keeps seeing the state it was taken in.

use super::{Backend, Durability, KeyRange, Keys, Pairs, ReadView, Slice, Space, WriteBatch};
use crate::StorageError;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a simulated crash keeps of the writes not yet made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The process dies and the OS lives: the page cache reaches the disk, nothing is lost.
    ProcessCrash,
    /// The power goes: of the batches committed since the last successful persist, only the
    /// first `keep` reached the disk.
    PowerLoss { keep: usize },
    /// The power goes while batch `keep + 1` is being written: the first `keep` batches are on
    /// the disk, and so are the first `torn_bytes` bytes of the next one, which recovery must
    /// drop whole. With no such batch this is `PowerLoss { keep }`.
    TornWrite { keep: usize, torn_bytes: usize },
}

/// An in-memory disk. Clones share it: a node's `Store` reopened on a clone after a
/// [`crash`](ModelDisk::crash) finds what the crash kept.
#[derive(Clone, Default)]
pub struct ModelDisk {
    shared: Arc<Mutex<Disk>>,
}

impl std::fmt::Debug for ModelDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let disk = self.lock();
        f.debug_struct("ModelDisk")
            .field("generation", &disk.generation)
            .field("unsynced_batches", &disk.unsynced.len())
            .finish_non_exhaustive()
    }
}

type Table = BTreeMap<Slice, Slice>;
/// Versions of one key, oldest first: (commit sequence, value or tombstone).
type Versions = Vec<(u64, Option<Slice>)>;

#[derive(Debug, Clone)]
enum Op {
    Put(Space, Slice, Slice),
    Delete(Space, Slice),
}

#[derive(Default)]
struct Disk {
    /// Bumped by every crash: handles of an older generation are dead.
    generation: u64,
    /// A `Store` of the current generation has the disk open.
    open: bool,
    durable: [Table; 6],
    unsynced: Vec<Vec<Op>>,
    live: [BTreeMap<Slice, Versions>; 6],
    /// Sequence of the last commit; a view reads the versions at or below its own.
    seq: u64,
    /// Open views by sequence, with their count.
    views: BTreeMap<u64, usize>,
    /// Keys that kept old versions for an open view, pruned once no view needs them.
    to_prune: BTreeSet<(Space, Slice)>,
    fail_next_persist: bool,
    failing_reads: u64,
}

impl ModelDisk {
    pub fn new() -> ModelDisk {
        ModelDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // Every critical section leaves the disk consistent before it can panic.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Batches committed since the last successful persist: the range a [`Crash`] chooses from.
    pub fn unsynced_batches(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// Crashes the node: every handle open on the disk dies (each later call fails), and the
    /// disk keeps what `crash` says. Open it again with `Store::open_model`.
    pub fn crash(&self, crash: Crash) {
        let mut disk = self.lock();
        let unsynced = std::mem::take(&mut disk.unsynced);
        let keep = match crash {
            Crash::ProcessCrash => unsynced.len(),
            Crash::PowerLoss { keep } => keep.min(unsynced.len()),
            Crash::TornWrite { keep, torn_bytes } => {
                let keep = keep.min(unsynced.len());
                if let Some(torn) = unsynced.get(keep) {
                    let record = journal::encode(torn);
                    let cut = torn_bytes.min(record.len().saturating_sub(1));
                    assert!(
                        journal::decode(&record[..cut]).is_none(),
                        "recovery must refuse a torn journal record"
                    );
                }
                keep
            }
        };
        for batch in &unsynced[..keep] {
            apply_durable(&mut disk.durable, batch);
        }
        disk.generation += 1;
        disk.open = false;
        // An armed fsync failure belongs to the incarnation it was armed for: the fault models
        // one failed fsync of a running node, which must then stop. A crash before it struck
        // ends that incarnation, and the next one starts on a disk that works (a disk that
        // fails again is another injected failure), so a restarted node can run again.
        disk.fail_next_persist = false;
        disk.live = Default::default();
        disk.views.clear();
        disk.to_prune.clear();
    }

    /// The next persist fails (as an fsync returning EIO): the store must poison itself. A
    /// crash first disarms it.
    pub fn fail_next_persist(&self) {
        self.lock().fail_next_persist = true;
    }

    /// The next `n` reads fail with an I/O error. A read is a point lookup or one step of a
    /// range iteration.
    pub fn fail_reads(&self, n: u64) {
        self.lock().failing_reads = n;
    }

    /// Opens the disk for a new store: everything persisted or left in the page cache by a
    /// clean close is there.
    pub(crate) fn open(&self) -> Result<ModelBackend, StorageError> {
        let mut disk = self.lock();
        if disk.open {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the model disk is open in another store",
            )));
        }
        disk.open = true;
        let live = std::array::from_fn(|i| {
            disk.durable[i]
                .iter()
                .map(|(k, v)| (k.clone(), vec![(0, Some(v.clone()))]))
                .collect()
        });
        disk.live = live;
        disk.seq = 0;
        Ok(ModelBackend {
            disk: self.clone(),
            generation: disk.generation,
        })
    }
}

fn apply_durable(durable: &mut [Table; 6], batch: &[Op]) {
    for op in batch {
        match op {
            Op::Put(space, key, value) => {
                durable[space.index()].insert(key.clone(), value.clone());
            }
            Op::Delete(space, key) => {
                durable[space.index()].remove(key);
            }
        }
    }
}

fn dead() -> StorageError {
    StorageError::Io(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the model disk crashed under this store",
    ))
}

impl Disk {
    fn check(&self, generation: u64) -> Result<(), StorageError> {
        if self.generation == generation {
            Ok(())
        } else {
            Err(dead())
        }
    }

    fn read(&mut self, generation: u64) -> Result<(), StorageError> {
        self.check(generation)?;
        if self.failing_reads > 0 {
            self.failing_reads -= 1;
            return Err(StorageError::Io(io::Error::other("model disk read failed")));
        }
        Ok(())
    }

    fn visible(versions: &Versions, seq: u64) -> Option<&Slice> {
        versions
            .iter()
            .rev()
            .find(|(at, _)| *at <= seq)
            .and_then(|(_, value)| value.as_ref())
    }

    /// Drops the versions of `key` that no open view can read.
    fn prune(&mut self, space: Space, key: &Slice) {
        let oldest_view = self.views.keys().next().copied();
        let map = &mut self.live[space.index()];
        let Some(versions) = map.get_mut(key) else {
            return;
        };
        // Keep the newest version every view at or above `oldest_view` can see, and all newer.
        let keep_from = match oldest_view {
            None => versions.len() - 1,
            Some(seq) => versions.iter().rposition(|(at, _)| *at <= seq).unwrap_or(0),
        };
        versions.drain(..keep_from);
        if versions.len() > 1 {
            self.to_prune.insert((space, key.clone()));
        } else if versions[0].1.is_none() {
            // A lone tombstone reads as absence to every view, as a missing key does.
            map.remove(key);
        }
    }

    fn commit(&mut self, ops: Vec<Op>) {
        self.seq += 1;
        let seq = self.seq;
        let mut written = BTreeSet::new();
        for op in &ops {
            let (space, key, value) = match op {
                Op::Put(space, key, value) => (*space, key, Some(value.clone())),
                Op::Delete(space, key) => (*space, key, None),
            };
            // fjall gives every write of a batch one sequence number, so two writes of one key
            // in a batch race there: the store must never make them.
            assert!(
                written.insert((space, key.clone())),
                "a batch writes {space:?} key {key:?} twice"
            );
            self.live[space.index()]
                .entry(key.clone())
                .or_default()
                .push((seq, value));
            self.prune(space, key);
        }
        self.unsynced.push(ops);
    }

    fn close_view(&mut self, seq: u64) {
        if let Some(count) = self.views.get_mut(&seq) {
            *count -= 1;
            if *count == 0 {
                self.views.remove(&seq);
            }
        }
        if self.views.is_empty() {
            for (space, key) in std::mem::take(&mut self.to_prune) {
                self.prune(space, &key);
            }
        }
    }
}

/// One open of a [`ModelDisk`]; dead once the disk crashes.
pub(crate) struct ModelBackend {
    disk: ModelDisk,
    generation: u64,
}

impl Drop for ModelBackend {
    /// A clean close, like fjall's: everything written reaches the disk.
    fn drop(&mut self) {
        let mut disk = self.disk.lock();
        if disk.generation == self.generation {
            let unsynced = std::mem::take(&mut disk.unsynced);
            for batch in &unsynced {
                apply_durable(&mut disk.durable, batch);
            }
            disk.open = false;
            disk.live = Default::default();
            disk.views.clear();
            disk.to_prune.clear();
        }
    }
}

impl Backend for ModelBackend {
    fn view(&self) -> Result<Box<dyn ReadView + '_>, StorageError> {
        let mut disk = self.disk.lock();
        disk.check(self.generation)?;
        let seq = disk.seq;
        *disk.views.entry(seq).or_default() += 1;
        Ok(Box::new(ModelView { backend: self, seq }))
    }

    fn batch(&self) -> Box<dyn WriteBatch + '_> {
        Box::new(ModelBatch {
            backend: self,
            ops: Vec::new(),
        })
    }

    /// The model has no write buffers apart from its unsynced batches, which reads see.
    fn write_buffer_mark(&self) -> u64 {
        0
    }

    /// A removed key leaves the model's maps when its batch commits: there is nothing to return.
    fn reclaim_pending(&self) -> bool {
        false
    }

    fn reclaim(&self, _flush: bool, _stop: &dyn Fn() -> bool) -> Result<bool, StorageError> {
        Ok(false)
    }

    fn persist(&self, mode: Durability) -> Result<(), StorageError> {
        let mut disk = self.disk.lock();
        disk.check(self.generation)?;
        if mode == Durability::Buffer {
            return Ok(());
        }
        if std::mem::take(&mut disk.fail_next_persist) {
            return Err(StorageError::Io(io::Error::other(
                "model disk fsync failed",
            )));
        }
        let unsynced = std::mem::take(&mut disk.unsynced);
        for batch in &unsynced {
            apply_durable(&mut disk.durable, batch);
        }
        Ok(())
    }
}

struct ModelView<'a> {
    backend: &'a ModelBackend,
    seq: u64,
}

impl Drop for ModelView<'_> {
    fn drop(&mut self) {
        let mut disk = self.backend.disk.lock();
        if disk.generation == self.backend.generation {
            disk.close_view(self.seq);
        }
    }
}

impl ReadView for ModelView<'_> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Slice>, StorageError> {
        let mut disk = self.backend.disk.lock();
        disk.read(self.backend.generation)?;
        Ok(disk.live[space.index()]
            .get(key)
            .and_then(|versions| Disk::visible(versions, self.seq))
            .cloned())
    }

    fn range<'a>(&'a self, space: Space, range: KeyRange<'_>) -> Pairs<'a> {
        Box::new(Cursor::new(self, space, range))
    }

    fn keys<'a>(&'a self, space: Space, range: KeyRange<'_>) -> Keys<'a> {
        Box::new(Cursor::new(self, space, range).map(|item| item.map(|(key, _)| key)))
    }
}

/// A range iteration that takes the lock for each step and resumes after the last key it gave,
/// so commits can interleave with it (the view's sequence keeps what it sees fixed).
struct Cursor<'a> {
    view: &'a ModelView<'a>,
    space: Space,
    low: Bound<Slice>,
    high: Bound<Slice>,
    done: bool,
}

fn owned(bound: Bound<&[u8]>) -> Bound<Slice> {
    match bound {
        Bound::Included(k) => Bound::Included(Slice::from(k)),
        Bound::Excluded(k) => Bound::Excluded(Slice::from(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<'a> Cursor<'a> {
    fn new(view: &'a ModelView<'a>, space: Space, range: KeyRange<'_>) -> Cursor<'a> {
        Cursor {
            view,
            space,
            low: owned(range.0),
            high: owned(range.1),
            done: false,
        }
    }

    fn step(&mut self, forward: bool) -> Option<Result<(Slice, Slice), StorageError>> {
        if self.done {
            return None;
        }
        let mut disk = self.view.backend.disk.lock();
        if let Err(e) = disk.read(self.view.backend.generation) {
            self.done = true;
            return Some(Err(e));
        }
        if bounds_empty(&self.low, &self.high) {
            self.done = true;
            return None;
        }
        let map = &disk.live[self.space.index()];
        let range = map.range::<[u8], _>((borrowed(&self.low), borrowed(&self.high)));
        let seq = self.view.seq;
        let visible = |(key, versions): (&Slice, &Versions)| {
            Disk::visible(versions, seq).map(|value| (key.clone(), value.clone()))
        };
        let found = if forward {
            range.filter_map(visible).next()
        } else {
            range.rev().filter_map(visible).next()
        };
        match found {
            Some((key, value)) => {
                if forward {
                    self.low = Bound::Excluded(key.clone());
                } else {
                    self.high = Bound::Excluded(key.clone());
                }
                Some(Ok((key, value)))
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

fn borrowed(bound: &Bound<Slice>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// BTreeMap::range panics on a range whose start lies after its end.
fn bounds_empty(low: &Bound<Slice>, high: &Bound<Slice>) -> bool {
    match (low, high) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

impl Iterator for Cursor<'_> {
    type Item = Result<(Slice, Slice), StorageError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

impl DoubleEndedIterator for Cursor<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

struct ModelBatch<'a> {
    backend: &'a ModelBackend,
    ops: Vec<Op>,
}

impl WriteBatch for ModelBatch<'_> {
    fn insert(&mut self, space: Space, key: &[u8], value: Slice) {
        self.ops.push(Op::Put(space, Slice::from(key), value));
    }

    fn remove(&mut self, space: Space, key: &[u8]) {
        self.ops.push(Op::Delete(space, Slice::from(key)));
    }

    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let mut disk = self.backend.disk.lock();
        disk.check(self.backend.generation)?;
        disk.commit(self.ops);
        Ok(())
    }
}

/// The journal record a batch would be on disk: what a torn write leaves half of.
mod journal {
    use super::{Op, Space};

    /// `len:u32 crc32c:u32 payload`, payload = per op `kind:u8 space:u8 klen:u32 key
    /// [vlen:u32 value]`.
    pub fn encode(batch: &[Op]) -> Vec<u8> {
        let mut payload = Vec::new();
        for op in batch {
            let (kind, space, key, value) = match op {
                Op::Put(space, key, value) => (1u8, space, key, Some(value)),
                Op::Delete(space, key) => (0u8, space, key, None),
            };
            payload.push(kind);
            payload.push(*space as u8);
            put(&mut payload, key);
            if let Some(value) = value {
                put(&mut payload, value);
            }
        }
        let mut record = Vec::with_capacity(8 + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        record.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        record.extend_from_slice(&payload);
        record
    }

    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    /// The ops of a complete record with a matching checksum; `None` for anything else.
    pub fn decode(record: &[u8]) -> Option<Vec<(u8, u8, Vec<u8>)>> {
        let len = u32::from_be_bytes(record.get(..4)?.try_into().ok()?) as usize;
        let crc = u32::from_be_bytes(record.get(4..8)?.try_into().ok()?);
        let payload = record.get(8..8 + len)?;
        if crc32c::crc32c(payload) != crc {
            return None;
        }
        let mut ops = Vec::new();
        let mut rest = payload;
        while let [kind, space, tail @ ..] = rest {
            if usize::from(*space) >= Space::ALL.len() {
                return None;
            }
            let (key, tail) = take(tail)?;
            rest = if *kind == 1 { take(tail)?.1 } else { tail };
            ops.push((*kind, *space, key.to_vec()));
        }
        Some(ops)
    }

    fn take(input: &[u8]) -> Option<(&[u8], &[u8])> {
        let len = u32::from_be_bytes(input.get(..4)?.try_into().ok()?) as usize;
        let bytes = input.get(4..4 + len)?;
        Some((bytes, &input[4 + len..]))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::backend::Slice;

        #[test]
        fn every_cut_of_a_record_is_refused_and_the_whole_one_decodes() {
            let batch = vec![
                Op::Put(Space::Log, Slice::from(&b"k1"[..]), Slice::from(&b"v1"[..])),
                Op::Delete(Space::Kv, Slice::from(&b"k2"[..])),
            ];
            let record = encode(&batch);
            for cut in 0..record.len() {
                assert!(decode(&record[..cut]).is_none(), "cut at {cut}");
            }
            assert_eq!(
                decode(&record).expect("whole record"),
                vec![(1, 0, b"k1".to_vec()), (0, 4, b"k2".to_vec())]
            );
        }
    }
}
