//! Raft log entries and their on-disk encoding.
//!
//! The Raft log *is* the partition log: a `Records` entry's batches are stored here once, and
//! applying it only writes small index rows. So the encoding lets a reader slice one batch out
//! of an entry without decoding the others.
//!
//! The value of every `log` key (the raft index lives in the key):
//!
//! ```text
//! entry  := version:u8  kind:u8  term:u64  body
//! kind 0  Blank            body := (empty)
//! kind 1  Membership       body := len:u32 bytes
//! kind 2  Records          body := count:u32 (len:u32 batch){count}
//! kind 3  Kv               body := puts:u32 (klen:u32 key vlen:u32 value){puts}
//!                                  deletes:u32 (klen:u32 key){deletes}
//! kind 4  SnapshotPointer  body := len:u32 bytes
//! kind 5  Command          body := len:u32 bytes            (version 2 only)
//! kind 6  AdvanceLogStart  body := offset:u64               (version 2 only)
//! ```
//!
//! Version 2 (written today) adds kinds 5 and 6 to version 1, which is still read.
//!
//! Integers are big-endian; nothing may follow the body. A batch is a Kafka v2 batch as
//! validated on the way in, with the base offset and leader epoch it arrived with: the real ones
//! are stamped on every read, so assigning offsets never rewrites a payload. Decoding checks
//! every length and each batch's frame (header length, length field, record count), so code
//! that walks a decoded entry cannot index out of bounds on a damaged value. Batch CRCs are not
//! rechecked on reads: fjall checksums its journal and blocks, and consumers check CRCs anyway.

use crate::batch::{BatchView, HEADER_LEN};
use crate::{Offset, StorageError};
use bytes::Bytes;

/// The first format version, which the small rows of `state.rs` still use and entries written
/// before version 2 have.
pub(crate) const FORMAT_V1: u8 = 1;
/// The entry format this build writes.
pub(crate) const ENTRY_FORMAT: u8 = 2;

const KIND_BLANK: u8 = 0;
const KIND_MEMBERSHIP: u8 = 1;
const KIND_RECORDS: u8 = 2;
const KIND_KV: u8 = 3;
const KIND_SNAPSHOT_POINTER: u8 = 4;
const KIND_COMMAND: u8 = 5;
const KIND_ADVANCE_LOG_START: u8 = 6;

/// Bytes before the body: version, kind, term.
const ENTRY_HEADER_LEN: usize = 10;

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
    /// A command for the group's [`StateMachine`](crate::StateMachine), opaque here.
    Command(Bytes),
    /// Retention decided by the leader: every replica moves the log start up to this offset
    /// (rounded down to an entry boundary) when it applies the entry.
    AdvanceLogStart(Offset),
}

/// Key-value changes applied together. Puts go first, then deletes, so a key in both ends up
/// deleted; a key put twice keeps its last value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvOps {
    pub puts: Vec<(Bytes, Bytes)>,
    pub deletes: Vec<Bytes>,
}

/// A decoded entry that borrows the stored value.
#[derive(Debug, Clone)]
pub(crate) struct StoredEntry<'a> {
    pub term: u64,
    pub body: StoredBody<'a>,
}

#[derive(Debug, Clone)]
pub(crate) enum StoredBody<'a> {
    Blank,
    Membership(&'a [u8]),
    Records(Batches<'a>),
    Kv {
        puts: Vec<(&'a [u8], &'a [u8])>,
        deletes: Vec<&'a [u8]>,
    },
    SnapshotPointer(&'a [u8]),
    Command(&'a [u8]),
    AdvanceLogStart(Offset),
}

/// The batches of a `Records` entry, in order. Framing was checked when the entry was decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batches<'a> {
    remaining: u32,
    rest: &'a [u8],
}

impl<'a> Iterator for Batches<'a> {
    type Item = BatchView<'a>;

    fn next(&mut self) -> Option<BatchView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut reader = Reader { rest: self.rest };
        let batch = reader.sized().expect("batch framing was checked at decode");
        self.rest = reader.rest;
        Some(BatchView::trusted(batch))
    }
}

impl<'a> StoredEntry<'a> {
    /// # Errors
    /// `Corrupt` naming the entry if any length, kind or batch frame is wrong.
    pub fn decode(index: u64, value: &'a [u8]) -> Result<StoredEntry<'a>, StorageError> {
        decode(value).map_err(|why| StorageError::corrupt(format!("log entry {index}: {why}")))
    }

    /// Record count and newest timestamp over all batches (0 and `i64::MIN` if none), and the
    /// batch bytes: what applying the entry adds to the partition.
    pub fn records_summary(&self) -> Option<RecordsSummary> {
        let StoredBody::Records(batches) = &self.body else {
            return None;
        };
        let mut summary = RecordsSummary {
            record_count: 0,
            max_timestamp: i64::MIN,
            bytes: 0,
            batches: 0,
        };
        for batch in *batches {
            summary.record_count += u64::from(batch.record_count());
            summary.max_timestamp = summary.max_timestamp.max(batch.max_timestamp());
            summary.bytes += batch.bytes().len() as u64;
            summary.batches += 1;
        }
        Some(summary)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordsSummary {
    pub record_count: u64,
    pub max_timestamp: i64,
    pub bytes: u64,
    pub batches: u64,
}

/// Reads only the term: enough for floors and conflict checks.
pub(crate) fn decode_term(index: u64, value: &[u8]) -> Result<u64, StorageError> {
    let mut reader = Reader { rest: value };
    let header = (|| {
        let version = reader.u8()?;
        if version != FORMAT_V1 && version != ENTRY_FORMAT {
            return Err("unknown entry format version");
        }
        reader.u8()?;
        reader.u64()
    })();
    header.map_err(|why| StorageError::corrupt(format!("log entry {index}: {why}")))
}

/// Decodes an owned entry, copying the stored value once and slicing every payload out of that
/// copy.
pub(crate) fn decode_owned(index: u64, value: &[u8]) -> Result<LogEntry, StorageError> {
    let owned = Bytes::copy_from_slice(value);
    let stored = StoredEntry::decode(index, &owned)?;
    let payload = match stored.body {
        StoredBody::Blank => EntryPayload::Blank,
        StoredBody::Membership(b) => EntryPayload::Membership(owned.slice_ref(b)),
        StoredBody::SnapshotPointer(b) => EntryPayload::SnapshotPointer(owned.slice_ref(b)),
        StoredBody::Command(b) => EntryPayload::Command(owned.slice_ref(b)),
        StoredBody::AdvanceLogStart(offset) => EntryPayload::AdvanceLogStart(offset),
        StoredBody::Records(batches) => {
            EntryPayload::Records(batches.map(|b| owned.slice_ref(b.bytes())).collect())
        }
        StoredBody::Kv { puts, deletes } => EntryPayload::Kv(KvOps {
            puts: puts
                .iter()
                .map(|(k, v)| (owned.slice_ref(k), owned.slice_ref(v)))
                .collect(),
            deletes: deletes.iter().map(|k| owned.slice_ref(k)).collect(),
        }),
    };
    Ok(LogEntry {
        index,
        term: stored.term,
        payload,
    })
}

/// # Errors
/// `InvalidEntry` if a batch is not framed like a Kafka v2 batch or a length does not fit the
/// format: such an entry must never reach the disk, where it would poison every later read.
pub(crate) fn encode(entry: &LogEntry) -> Result<Vec<u8>, StorageError> {
    let invalid = |reason| StorageError::InvalidEntry {
        index: entry.index,
        reason,
    };
    let mut out = Vec::with_capacity(ENTRY_HEADER_LEN + payload_len_hint(&entry.payload));
    out.push(ENTRY_FORMAT);
    let kind = match &entry.payload {
        EntryPayload::Blank => KIND_BLANK,
        EntryPayload::Membership(_) => KIND_MEMBERSHIP,
        EntryPayload::Records(_) => KIND_RECORDS,
        EntryPayload::Kv(_) => KIND_KV,
        EntryPayload::SnapshotPointer(_) => KIND_SNAPSHOT_POINTER,
        EntryPayload::Command(_) => KIND_COMMAND,
        EntryPayload::AdvanceLogStart(_) => KIND_ADVANCE_LOG_START,
    };
    out.push(kind);
    out.extend_from_slice(&entry.term.to_be_bytes());
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Membership(b)
        | EntryPayload::SnapshotPointer(b)
        | EntryPayload::Command(b) => {
            put_sized(&mut out, b).map_err(invalid)?;
        }
        EntryPayload::AdvanceLogStart(offset) => out.extend_from_slice(&offset.0.to_be_bytes()),
        EntryPayload::Records(batches) => {
            put_count(&mut out, batches.len()).map_err(invalid)?;
            for batch in batches {
                check_batch_frame(batch).map_err(invalid)?;
                put_sized(&mut out, batch).map_err(invalid)?;
            }
        }
        EntryPayload::Kv(ops) => {
            put_count(&mut out, ops.puts.len()).map_err(invalid)?;
            for (key, value) in &ops.puts {
                put_sized(&mut out, key).map_err(invalid)?;
                put_sized(&mut out, value).map_err(invalid)?;
            }
            put_count(&mut out, ops.deletes.len()).map_err(invalid)?;
            for key in &ops.deletes {
                put_sized(&mut out, key).map_err(invalid)?;
            }
        }
    }
    Ok(out)
}

fn payload_len_hint(payload: &EntryPayload) -> usize {
    match payload {
        EntryPayload::Blank => 0,
        EntryPayload::AdvanceLogStart(_) => 8,
        EntryPayload::Membership(b)
        | EntryPayload::SnapshotPointer(b)
        | EntryPayload::Command(b) => 4 + b.len(),
        EntryPayload::Records(batches) => 4 + batches.iter().map(|b| 4 + b.len()).sum::<usize>(),
        EntryPayload::Kv(ops) => {
            8 + ops
                .puts
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>()
                + ops.deletes.iter().map(|k| 4 + k.len()).sum::<usize>()
        }
    }
}

fn put_count(out: &mut Vec<u8>, count: usize) -> Result<(), &'static str> {
    let count = u32::try_from(count).map_err(|_| "more than 2^32 items")?;
    out.extend_from_slice(&count.to_be_bytes());
    Ok(())
}

fn put_sized(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), &'static str> {
    let len = u32::try_from(bytes.len()).map_err(|_| "payload of 4 GiB or more")?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// The framing every stored batch must have so that `BatchView::trusted` and the offset
/// arithmetic built on `record_count` are sound. The CRC is the producer-facing validation's job.
fn check_batch_frame(batch: &[u8]) -> Result<(), &'static str> {
    if batch.len() < HEADER_LEN {
        return Err("batch shorter than its header");
    }
    let declared = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]);
    if i64::from(declared) != batch.len() as i64 - 12 {
        return Err("batch length field disagrees with its size");
    }
    let count = BatchView::trusted(batch).record_count();
    if count == 0 || count > i32::MAX as u32 {
        return Err("batch record count is not positive");
    }
    Ok(())
}

fn decode(value: &[u8]) -> Result<StoredEntry<'_>, &'static str> {
    let mut reader = Reader { rest: value };
    let version = reader.u8()?;
    let kind = reader.u8()?;
    let known = match version {
        FORMAT_V1 => kind <= KIND_SNAPSHOT_POINTER,
        ENTRY_FORMAT => kind <= KIND_ADVANCE_LOG_START,
        _ => return Err("unknown entry format version"),
    };
    if !known {
        return Err("unknown entry kind");
    }
    let term = reader.u64()?;
    let body = match kind {
        KIND_BLANK => StoredBody::Blank,
        KIND_MEMBERSHIP => StoredBody::Membership(reader.sized()?),
        KIND_SNAPSHOT_POINTER => StoredBody::SnapshotPointer(reader.sized()?),
        KIND_COMMAND => StoredBody::Command(reader.sized()?),
        KIND_ADVANCE_LOG_START => StoredBody::AdvanceLogStart(Offset(reader.u64()?)),
        KIND_RECORDS => {
            let remaining = reader.u32()?;
            let start = reader.rest;
            for _ in 0..remaining {
                check_batch_frame(reader.sized()?)?;
            }
            let used = start.len() - reader.rest.len();
            StoredBody::Records(Batches {
                remaining,
                rest: &start[..used],
            })
        }
        KIND_KV => {
            let put_count = reader.u32()? as usize;
            // Each put takes at least 8 bytes: a bound that stops a damaged count from
            // reserving gigabytes.
            let mut puts = Vec::with_capacity(put_count.min(reader.rest.len() / 8));
            for _ in 0..put_count {
                puts.push((reader.sized()?, reader.sized()?));
            }
            let delete_count = reader.u32()? as usize;
            let mut deletes = Vec::with_capacity(delete_count.min(reader.rest.len() / 4));
            for _ in 0..delete_count {
                deletes.push(reader.sized()?);
            }
            StoredBody::Kv { puts, deletes }
        }
        _ => return Err("unknown entry kind"),
    };
    if !reader.rest.is_empty() {
        return Err("trailing bytes after the entry");
    }
    Ok(StoredEntry { term, body })
}

/// A bounds-checked cursor over a stored value.
pub(crate) struct Reader<'a> {
    pub rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.rest.len() {
            return Err("value is truncated");
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().map_err(|_| "short u16")?,
        ))
    }
    pub fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().map_err(|_| "short u32")?,
        ))
    }
    pub fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|_| "short u64")?,
        ))
    }
    pub fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(self.u64()? as i64)
    }
    pub fn sized(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, NewRecord};

    fn batch(values: &[&[u8]], timestamp: i64) -> Bytes {
        let mut builder = BatchBuilder::with_capacity(128);
        for (i, value) in values.iter().enumerate() {
            let record = NewRecord {
                key: None,
                value: Some(value),
                headers: &[],
                timestamp: timestamp + i as i64,
            };
            builder.push(&record);
        }
        builder.finish()
    }

    use crate::fixture_hex::{hex, unhex};

    /// Format version 1 as committed. If this test fails, the on-disk format changed: add a new
    /// version (and a reader for the old one) instead of editing the fixture.
    const RECORDS_V1: &str = "
        0102 0000000000000007 00000001 00000049
        0000000000000000 0000003d ffffffff 02 5d035a13 0000 00000000
        00000000000003e8 00000000000003e8 ffffffffffffffff ffff ffffffff 00000001
        16 00 00 00 01 0a 68656c6c6f 00";
    const KV_V1: &str = "
        0103 0000000000000002 00000001 00000001 6b 00000002 7631 00000001 00000001 64";

    #[test]
    fn v1_fixtures_decode() {
        let records = decode_owned(9, &unhex(RECORDS_V1)).expect("records fixture");
        assert_eq!(records.term, 7);
        assert_eq!(
            records.payload,
            EntryPayload::Records(vec![batch(&[b"hello"], 1000)])
        );
        let kv = decode_owned(3, &unhex(KV_V1)).expect("kv fixture");
        let ops = KvOps {
            puts: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v1"))],
            deletes: vec![Bytes::from_static(b"d")],
        };
        assert_eq!(
            kv,
            LogEntry {
                index: 3,
                term: 2,
                payload: EntryPayload::Kv(ops)
            }
        );
    }

    /// Format version 2 as committed: what this build writes.
    const RECORDS_V2: &str = "
        0202 0000000000000007 00000001 00000049
        0000000000000000 0000003d ffffffff 02 5d035a13 0000 00000000
        00000000000003e8 00000000000003e8 ffffffffffffffff ffff ffffffff 00000001
        16 00 00 00 01 0a 68656c6c6f 00";
    const KV_V2: &str = "
        0203 0000000000000002 00000001 00000001 6b 00000002 7631 00000001 00000001 64";
    const COMMAND_V2: &str = "0205 0000000000000004 00000003 637265";
    const ADVANCE_V2: &str = "0206 0000000000000005 0000000000000400";

    #[test]
    fn v2_fixtures_are_what_we_encode() {
        let records = LogEntry {
            index: 9,
            term: 7,
            payload: EntryPayload::Records(vec![batch(&[b"hello"], 1000)]),
        };
        let kv = decode_owned(3, &unhex(KV_V1)).expect("kv fixture");
        let command = LogEntry {
            index: 2,
            term: 4,
            payload: EntryPayload::Command(Bytes::from_static(b"cre")),
        };
        let advance = LogEntry {
            index: 8,
            term: 5,
            payload: EntryPayload::AdvanceLogStart(Offset(1024)),
        };
        for (entry, fixture) in [
            (records, RECORDS_V2),
            (kv, KV_V2),
            (command, COMMAND_V2),
            (advance, ADVANCE_V2),
        ] {
            assert_eq!(hex(&encode(&entry).expect("encode")), hex(&unhex(fixture)));
            assert_eq!(
                decode_owned(entry.index, &unhex(fixture)).expect("decode"),
                entry
            );
        }
    }

    #[test]
    fn version_1_knows_no_later_kinds() {
        let mut command = unhex(COMMAND_V2);
        command[0] = FORMAT_V1;
        assert!(StoredEntry::decode(2, &command).is_err());
        let mut advance = unhex(ADVANCE_V2);
        advance[0] = FORMAT_V1;
        assert!(StoredEntry::decode(8, &advance).is_err());
        assert!(decode_term(8, &advance).is_ok(), "the header is the same");
    }

    #[test]
    fn every_payload_round_trips() {
        let payloads = [
            EntryPayload::Blank,
            EntryPayload::Membership(Bytes::from_static(b"members")),
            EntryPayload::SnapshotPointer(Bytes::new()),
            EntryPayload::Records(vec![]),
            EntryPayload::Records(vec![batch(&[b"a", b"bb"], 5), batch(&[b""], -3)]),
            EntryPayload::Kv(KvOps::default()),
            EntryPayload::Command(Bytes::from_static(b"create topic")),
            EntryPayload::AdvanceLogStart(Offset(u64::MAX)),
        ];
        for payload in payloads {
            let entry = LogEntry {
                index: 1,
                term: u64::MAX,
                payload,
            };
            let encoded = encode(&entry).expect("encode");
            assert_eq!(decode_owned(1, &encoded).expect("decode"), entry);
            assert_eq!(decode_term(1, &encoded).expect("term"), u64::MAX);
        }
    }

    #[test]
    fn damaged_values_are_corrupt_not_panics() {
        let entry = LogEntry {
            index: 1,
            term: 1,
            payload: EntryPayload::Records(vec![batch(&[b"x"], 1), batch(&[b"y"], 2)]),
        };
        let encoded = encode(&entry).expect("encode");
        for cut in 0..encoded.len() {
            assert!(
                StoredEntry::decode(1, &encoded[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(StoredEntry::decode(1, &longer).is_err());
        let mut bad_kind = encoded;
        bad_kind[1] = 99;
        assert!(StoredEntry::decode(1, &bad_kind).is_err());
    }

    #[test]
    fn malformed_batch_is_refused_before_it_is_stored() {
        let mut short = batch(&[b"x"], 1).to_vec();
        short.pop();
        let entry = LogEntry {
            index: 4,
            term: 1,
            payload: EntryPayload::Records(vec![Bytes::from(short)]),
        };
        assert!(matches!(
            encode(&entry),
            Err(StorageError::InvalidEntry { index: 4, .. })
        ));
    }

    #[test]
    fn summary_adds_up_batches() {
        let entry = LogEntry {
            index: 1,
            term: 1,
            payload: EntryPayload::Records(vec![batch(&[b"a", b"b"], 50), batch(&[b"c"], 10)]),
        };
        let encoded = encode(&entry).expect("encode");
        let stored = StoredEntry::decode(1, &encoded).expect("decode");
        let summary = stored.records_summary().expect("records");
        assert_eq!(summary.record_count, 3);
        assert_eq!(summary.max_timestamp, 51);
        assert_eq!(summary.batches, 2);
        let EntryPayload::Records(batches) = &entry.payload else {
            unreachable!()
        };
        assert_eq!(
            summary.bytes,
            batches.iter().map(|b| b.len() as u64).sum::<u64>()
        );
    }
}
