//! Record batches: Kafka's v2 ("magic 2") batch layout, stored and shipped as opaque blobs.
//!
//! The broker validates a batch (header, CRC32C, and the framing of every record, decompressing
//! a compressed batch to walk it) and stamps its base offset and leader epoch, which sit outside
//! the CRC for exactly that reason; it stores the batch as it came. Clients build batches with
//! [`BatchBuilder`] (optionally compressed, see [`Compression`]) and read them with
//! [`BatchView`].

mod codec;
mod walk;

pub use codec::{Compression, MAX_DECOMPRESSED_BYTES};

use bytes::{BufMut, Bytes, BytesMut};
use std::borrow::Cow;

/// Size of the fixed batch header, in bytes.
pub const HEADER_LEN: usize = 61;
/// The only batch format version this broker accepts.
pub const MAGIC: u8 = 2;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;
/// `batchLength` counts the bytes after itself.
const LENGTH_FIELD_END: usize = 12;
/// Attribute bits 0..=2 carry the compression codec.
const COMPRESSION_MASK: i16 = 0x07;
/// Every attribute bit but the codec's is refused: timestamp type (3, log-append time is the
/// broker's to set), transactional (4), control (5), delete horizon (6) and the unused rest.
const UNSUPPORTED_ATTRIBUTES_MASK: i16 = !COMPRESSION_MASK;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("batch is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("batch length field says {declared} bytes but {actual} follow it")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("batch magic {0} is not supported (only magic 2)")]
    UnsupportedMagic(u8),
    #[error(
        "batch checksum mismatch: header says {expected:#010x}, content hashes to {actual:#010x}"
    )]
    ChecksumMismatch { expected: u32, actual: u32 },
    #[error("batch declares {0} records; a batch holds 1 or more")]
    BadRecordCount(i32),
    #[error(
        "batch last offset delta {last_offset_delta} does not match its {record_count} records"
    )]
    OffsetDeltaMismatch {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("batch compression codec {0} is not supported (use 0 none, 1 gzip, 2 snappy, 3 lz4 or 4 zstd)")]
    UnsupportedCompression(i16),
    #[error(
        "batch attributes {0:#06x} set unsupported bits: only bits 0-2 (compression) may be set; \
         transactional, control and log-append-time batches are not supported"
    )]
    UnsupportedAttributes(i16),
    #[error("record {index} of the batch is malformed: {reason}")]
    MalformedRecord { index: usize, reason: &'static str },
    #[error("{len} bytes follow the batch's last record")]
    TrailingBytes { len: usize },
    #[error("batch records decompress to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("batch records cannot be decompressed: {0}")]
    Decompression(String),
    #[error("the batch is compressed: read its records with `decompressed` and `records_in`")]
    Compressed,
}

/// A validated, borrowed view of one encoded batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Checks everything the broker checks before it accepts a batch: the header (see
    /// [`BatchView::validate_header`]), then every record's framing, walked without copying
    /// (a compressed batch is decompressed into a scratch buffer for the walk, up to
    /// [`MAX_DECOMPRESSED_BYTES`]).
    ///
    /// # Errors
    /// A [`BatchError`] naming the first check that failed.
    pub fn validate(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let view = Self::validate_header(bytes)?;
        let plain = view.decompressed(MAX_DECOMPRESSED_BYTES)?;
        walk::check_records(&plain, view.record_count())?;
        Ok(view)
    }

    /// Checks framing, magic, CRC32C, attributes, record count and last offset delta, without
    /// looking at the records. Enough for a reader that decodes every record anyway and fails
    /// on a malformed one.
    ///
    /// # Errors
    /// A [`BatchError`] naming the first check that failed.
    pub fn validate_header(bytes: &'a [u8]) -> Result<Self, BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::TooShort { len: bytes.len() });
        }
        let declared = i64::from(read_i32(bytes, LENGTH_AT));
        let actual = bytes.len() - LENGTH_FIELD_END;
        if declared != actual as i64 {
            return Err(BatchError::LengthMismatch { declared, actual });
        }
        let magic = bytes[MAGIC_AT];
        if magic != MAGIC {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let expected = read_u32(bytes, CRC_AT);
        let actual_crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        if expected != actual_crc {
            return Err(BatchError::ChecksumMismatch {
                expected,
                actual: actual_crc,
            });
        }
        let view = BatchView { bytes };
        view.compression()?;
        if view.attributes() & UNSUPPORTED_ATTRIBUTES_MASK != 0 {
            return Err(BatchError::UnsupportedAttributes(view.attributes()));
        }
        let record_count = read_i32(bytes, RECORD_COUNT_AT);
        if record_count < 1 {
            return Err(BatchError::BadRecordCount(record_count));
        }
        let last_offset_delta = read_i32(bytes, LAST_OFFSET_DELTA_AT);
        if i64::from(last_offset_delta) + 1 != i64::from(record_count) {
            return Err(BatchError::OffsetDeltaMismatch {
                last_offset_delta,
                record_count,
            });
        }
        Ok(view)
    }

    /// Wraps bytes that were validated before (for example when they were stored).
    ///
    /// # Panics
    /// If the slice is shorter than a header: stored batches were validated on the way in.
    pub fn trusted(bytes: &'a [u8]) -> Self {
        assert!(
            bytes.len() >= HEADER_LEN,
            "stored batch shorter than its header"
        );
        BatchView { bytes }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn base_offset(&self) -> u64 {
        read_i64(self.bytes, BASE_OFFSET_AT) as u64
    }
    pub fn leader_epoch(&self) -> i32 {
        read_i32(self.bytes, LEADER_EPOCH_AT)
    }
    pub fn attributes(&self) -> i16 {
        read_i16(self.bytes, ATTRIBUTES_AT)
    }
    /// The codec of the records section.
    ///
    /// # Errors
    /// [`BatchError::UnsupportedCompression`] for an unknown codec.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_code(self.attributes() & COMPRESSION_MASK)
    }
    pub fn record_count(&self) -> u32 {
        read_i32(self.bytes, RECORD_COUNT_AT) as u32
    }
    /// Offset of the last record, once the base offset is assigned.
    pub fn last_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.record_count()) - 1
    }
    pub fn base_timestamp(&self) -> i64 {
        read_i64(self.bytes, BASE_TIMESTAMP_AT)
    }
    pub fn max_timestamp(&self) -> i64 {
        read_i64(self.bytes, MAX_TIMESTAMP_AT)
    }
    pub fn producer_id(&self) -> i64 {
        read_i64(self.bytes, PRODUCER_ID_AT)
    }
    pub fn producer_epoch(&self) -> i16 {
        read_i16(self.bytes, PRODUCER_EPOCH_AT)
    }
    pub fn base_sequence(&self) -> i32 {
        read_i32(self.bytes, BASE_SEQUENCE_AT)
    }

    /// The records section as it is stored: compressed if the batch is.
    pub fn records_section(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The records section, decompressed (borrowed as is when the batch is not compressed).
    ///
    /// # Errors
    /// An unknown codec, data the codec cannot read, or more than `limit` bytes once inflated.
    pub fn decompressed(&self, limit: usize) -> Result<Cow<'a, [u8]>, BatchError> {
        match self.compression()? {
            Compression::None => Ok(Cow::Borrowed(self.records_section())),
            codec => codec::decompress(codec, self.records_section(), limit).map(Cow::Owned),
        }
    }

    /// Decodes the records one by one; each item fails alone if that record is malformed. A
    /// compressed batch yields one [`BatchError::Compressed`]: use [`BatchView::decompressed`]
    /// and [`BatchView::records_in`], which work for every batch.
    pub fn records(&self) -> RecordIter<'a> {
        match self.compression() {
            Ok(Compression::None) => self.records_in(self.records_section()),
            _ => RecordIter {
                rest: &[],
                remaining: 1,
                index: 0,
                base_offset: self.base_offset(),
                base_timestamp: self.base_timestamp(),
                failure: Some(BatchError::Compressed),
            },
        }
    }

    /// Decodes the records of this batch from `plain`, its records section decompressed.
    pub fn records_in<'p>(&self, plain: &'p [u8]) -> RecordIter<'p> {
        RecordIter {
            rest: plain,
            remaining: self.record_count() as usize,
            index: 0,
            base_offset: self.base_offset(),
            base_timestamp: self.base_timestamp(),
            failure: None,
        }
    }
}

/// Writes the broker-assigned base offset and leader epoch into an encoded batch. Neither field
/// is covered by the CRC, so the checksum stays valid.
///
/// # Panics
/// If `batch` is shorter than a header.
pub fn stamp(batch: &mut [u8], base_offset: u64, leader_epoch: i32) {
    assert!(
        batch.len() >= HEADER_LEN,
        "stamping a batch shorter than its header"
    );
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Writes an idempotent producer's id, epoch and first sequence into an encoded batch and
/// recomputes its CRC (the fields are covered by it). A producer numbers its batches when it
/// sends them, so a sealed batch gets them afterwards; a retry resends the same bytes.
///
/// # Panics
/// If `batch` is shorter than a header.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    assert!(
        batch.len() >= HEADER_LEN,
        "stamping a batch shorter than its header"
    );
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// One decoded record, borrowing from its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// The records of a batch, decoded one at a time.
pub struct RecordIter<'a> {
    rest: &'a [u8],
    remaining: usize,
    index: usize,
    base_offset: u64,
    base_timestamp: i64,
    /// Yielded instead of records when they cannot be read at all.
    failure: Option<BatchError>,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if let Some(failure) = self.failure.take() {
            self.remaining = 0;
            return Some(Err(failure));
        }
        let index = self.index;
        self.index += 1;
        let result = decode_record(&mut self.rest, self.base_offset, self.base_timestamp)
            .map_err(|reason| BatchError::MalformedRecord { index, reason });
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}

fn decode_record<'a>(
    input: &mut &'a [u8],
    base_offset: u64,
    base_timestamp: i64,
) -> Result<Record<'a>, &'static str> {
    let length = read_varint(input)?;
    let length = usize::try_from(length).map_err(|_| "negative record length")?;
    if length > input.len() {
        return Err("record length runs past the batch");
    }
    let (mut body, rest) = input.split_at(length);
    *input = rest;
    let _attributes = take(&mut body, 1)?;
    let timestamp_delta = read_varint(&mut body)?;
    let offset_delta = read_varint(&mut body)?;
    if offset_delta < 0 {
        return Err("negative offset delta");
    }
    let key = read_nullable_bytes(&mut body)?;
    let value = read_nullable_bytes(&mut body)?;
    let header_count = read_varint(&mut body)?;
    if header_count < 0 || header_count as usize > body.len() {
        return Err("bad header count");
    }
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let name = read_nullable_bytes(&mut body)?.ok_or("null header name")?;
        let value = read_nullable_bytes(&mut body)?;
        headers.push((name, value));
    }
    if !body.is_empty() {
        return Err("trailing bytes after record");
    }
    Ok(Record {
        offset: base_offset + offset_delta as u64,
        timestamp: base_timestamp.wrapping_add(timestamp_delta),
        key,
        value,
        headers,
    })
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if n > input.len() {
        return Err("field runs past the record");
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn read_nullable_bytes<'a>(input: &mut &'a [u8]) -> Result<Option<&'a [u8]>, &'static str> {
    let len = read_varint(input)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| "negative length")?;
    take(input, len).map(Some)
}

/// Zigzag LEB128, as in Kafka and protobuf's `sint64`.
pub fn read_varint(input: &mut &[u8]) -> Result<i64, &'static str> {
    // Most varints in a batch (deltas, small lengths) are one byte: skip the loop for them,
    // which is most of the cost of the broker's walk over every record.
    if let Some((&byte, rest)) = input.split_first() {
        if byte < 0x80 {
            *input = rest;
            return Ok(i64::from(byte >> 1) ^ -i64::from(byte & 1));
        }
    }
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or("varint runs past the record")?;
        *input = rest;
        if shift == 63 && byte > 1 {
            return Err("varint overflows 64 bits");
        }
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes")
}

pub fn put_varint(out: &mut BytesMut, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.put_u8(raw as u8);
}

fn varint_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    (64 - raw.max(1).leading_zeros() as usize).div_ceil(7)
}

/// A record to be appended; borrowed so that building a batch copies each payload once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    pub timestamp: i64,
}

/// Builds one batch in a single buffer; `finish` compresses the records if asked and fills in
/// the header and CRC.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    record_count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    compression: Compression,
}

impl BatchBuilder {
    /// An empty, uncompressed batch with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes.max(HEADER_LEN));
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            record_count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            compression: Compression::None,
        }
    }

    /// Compresses the records with `codec` when the batch is finished.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    pub fn record_count(&self) -> usize {
        self.record_count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }
    /// Encoded size so far, header included, before compression.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Size `record` would add to the batch.
    pub fn encoded_len(&self, record: &NewRecord<'_>) -> usize {
        let body = self.body_len(record);
        varint_len(body as i64) + body
    }

    fn body_len(&self, record: &NewRecord<'_>) -> usize {
        let nullable = |b: Option<&[u8]>| match b {
            None => varint_len(-1),
            Some(b) => varint_len(b.len() as i64) + b.len(),
        };
        let base = if self.record_count == 0 {
            record.timestamp
        } else {
            self.base_timestamp
        };
        1 + varint_len(record.timestamp.wrapping_sub(base))
            + varint_len(i64::from(self.record_count))
            + nullable(record.key)
            + nullable(record.value)
            + varint_len(record.headers.len() as i64)
            + record
                .headers
                .iter()
                .map(|(k, v)| nullable(Some(k)) + nullable(*v))
                .sum::<usize>()
    }

    pub fn push(&mut self, record: &NewRecord<'_>) {
        if self.record_count == 0 {
            self.base_timestamp = record.timestamp;
        }
        let body_len = self.body_len(record);
        let out = &mut self.buf;
        put_varint(out, body_len as i64);
        out.put_u8(0);
        put_varint(out, record.timestamp.wrapping_sub(self.base_timestamp));
        put_varint(out, i64::from(self.record_count));
        put_nullable(out, record.key);
        put_nullable(out, record.value);
        put_varint(out, record.headers.len() as i64);
        for (name, value) in record.headers {
            put_nullable(out, Some(name));
            put_nullable(out, *value);
        }
        self.record_count += 1;
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
    }

    /// Seals the batch. Base offset 0 and leader epoch -1: the broker assigns both.
    ///
    /// # Panics
    /// If no record was pushed: an empty batch is a programming error.
    pub fn finish(mut self) -> Bytes {
        assert!(self.record_count > 0, "finishing an empty batch");
        if self.compression == Compression::None {
            let mut buf = std::mem::take(&mut self.buf);
            self.seal(&mut buf);
            return buf.freeze();
        }
        let plain = &self.buf[HEADER_LEN..];
        let mut packed = Vec::with_capacity(HEADER_LEN + plain.len() / 2);
        packed.resize(HEADER_LEN, 0);
        codec::compress(self.compression, plain, &mut packed);
        self.seal(&mut packed);
        Bytes::from(packed)
    }

    /// Fills in the header of `batch` (this builder's records, compressed or not) and its CRC.
    fn seal(&self, batch: &mut [u8]) {
        let len = batch.len();
        let header = &mut batch[..HEADER_LEN];
        header[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&0i64.to_be_bytes());
        header[LENGTH_AT..LENGTH_AT + 4]
            .copy_from_slice(&((len - LENGTH_FIELD_END) as i32).to_be_bytes());
        header[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        header[MAGIC_AT] = MAGIC;
        header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
            .copy_from_slice(&self.compression.code().to_be_bytes());
        header[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(self.record_count - 1).to_be_bytes());
        header[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        header[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
        header[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&(-1i16).to_be_bytes());
        header[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        header[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
            .copy_from_slice(&self.record_count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

fn put_nullable(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

fn read_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn read_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        let mut b = BatchBuilder::with_capacity(256);
        b.push(&NewRecord {
            key: Some(b"k1"),
            value: Some(b"v1"),
            headers: &[],
            timestamp: 1000,
        });
        let headers: &[(&[u8], Option<&[u8]>)] = &[(b"h", Some(b"x")), (b"n", None)];
        b.push(&NewRecord {
            key: None,
            value: Some(b"v2"),
            headers,
            timestamp: 990,
        });
        b.finish()
    }

    #[test]
    fn built_batch_validates_and_round_trips_records() {
        let bytes = sample();
        let view = BatchView::validate(&bytes).expect("valid");
        assert_eq!(view.record_count(), 2);
        assert_eq!(view.max_timestamp(), 1000);
        let records: Vec<_> = view.records().collect::<Result<_, _>>().expect("records");
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].timestamp, 990);
        assert_eq!(
            records[1].headers,
            vec![(&b"h"[..], Some(&b"x"[..])), (&b"n"[..], None)]
        );
    }

    #[test]
    fn stamping_keeps_checksum_valid() {
        let mut bytes = sample().to_vec();
        stamp(&mut bytes, 4242, 7);
        let view = BatchView::validate(&bytes).expect("still valid");
        assert_eq!(view.base_offset(), 4242);
        assert_eq!(view.leader_epoch(), 7);
        assert_eq!(view.last_offset(), 4243);
        let offsets: Vec<u64> = view.records().map(|r| r.expect("record").offset).collect();
        assert_eq!(offsets, vec![4242, 4243]);
    }

    #[test]
    fn flipped_payload_bit_fails_checksum() {
        let mut bytes = sample().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            BatchView::validate(&bytes),
            Err(BatchError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn truncated_batch_is_refused() {
        let bytes = sample();
        assert!(matches!(
            BatchView::validate(&bytes[..bytes.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            BatchView::validate(&bytes[..10]),
            Err(BatchError::TooShort { .. })
        ));
    }

    #[test]
    fn encoded_len_predicts_growth() {
        let mut b = BatchBuilder::with_capacity(64);
        let r = NewRecord {
            key: Some(b"key"),
            value: Some(&[7; 300]),
            headers: &[],
            timestamp: 5,
        };
        let before = b.len();
        let predicted = b.encoded_len(&r);
        b.push(&r);
        assert_eq!(b.len() - before, predicted);
    }

    /// Replaces the records section of `batch` and fixes the length, count and CRC fields.
    fn with_records(batch: &[u8], records: &[u8], count: i32) -> Vec<u8> {
        let mut out = batch[..HEADER_LEN].to_vec();
        out.extend_from_slice(records);
        let len = (out.len() - LENGTH_FIELD_END) as i32;
        out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        out[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        out[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
        recrc(&mut out);
        out
    }

    fn recrc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    fn set_attributes(batch: &mut [u8], attributes: i16) {
        batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        recrc(batch);
    }

    fn one_record(offset_delta: i64) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_varint(&mut body, 0);
        put_varint(&mut body, offset_delta);
        put_nullable(&mut body, Some(b"k"));
        put_nullable(&mut body, Some(b"v"));
        put_varint(&mut body, 0);
        let mut record = BytesMut::new();
        put_varint(&mut record, body.len() as i64);
        record.put_slice(&body);
        record.to_vec()
    }

    fn refusal(batch: &[u8]) -> BatchError {
        let header_ok = BatchView::validate_header(batch).is_ok();
        let error = BatchView::validate(batch).expect_err("the broker must refuse this batch");
        assert!(
            header_ok || !matches!(error, BatchError::MalformedRecord { .. }),
            "record errors come from the walk, after the header passed"
        );
        error
    }

    #[test]
    fn a_header_promising_more_records_than_present_is_refused() {
        let batch = with_records(&sample(), &one_record(0), 3);
        assert!(
            BatchView::validate_header(&batch).is_ok(),
            "the header alone is consistent"
        );
        assert!(matches!(
            refusal(&batch),
            BatchError::MalformedRecord { index: 1, .. }
        ));
    }

    #[test]
    fn garbage_records_trailing_bytes_and_overlong_lengths_are_refused() {
        let sample = sample();
        let garbage = with_records(&sample, &[0xff; 20], 1);
        assert!(matches!(
            refusal(&garbage),
            BatchError::MalformedRecord { index: 0, .. }
        ));

        let mut trailing = sample[HEADER_LEN..].to_vec();
        trailing.push(0);
        let trailing = with_records(&sample, &trailing, 2);
        assert_eq!(refusal(&trailing), BatchError::TrailingBytes { len: 1 });

        let mut overlong = one_record(0);
        overlong[0] = 0x7e; // a record length of 63, past the end
        let overlong = with_records(&sample, &overlong, 1);
        assert!(matches!(
            refusal(&overlong),
            BatchError::MalformedRecord { index: 0, .. }
        ));
    }

    #[test]
    fn a_producer_stamp_keeps_the_batch_valid() {
        let mut builder = BatchBuilder::with_capacity(128);
        builder.push(&NewRecord {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp: 5,
        });
        let mut bytes = builder.finish().to_vec();
        set_producer(&mut bytes, 42, 3, 17);
        let view = BatchView::validate(&bytes).expect("still valid");
        assert_eq!(
            (
                view.producer_id(),
                view.producer_epoch(),
                view.base_sequence()
            ),
            (42, 3, 17)
        );
    }

    #[test]
    fn offset_deltas_out_of_sequence_are_refused() {
        let mut records = one_record(0);
        records.extend(one_record(0));
        let repeated = with_records(&sample(), &records, 2);
        assert!(matches!(
            refusal(&repeated),
            BatchError::MalformedRecord { index: 1, .. }
        ));
        let skipped = with_records(&sample(), &one_record(1), 1);
        assert!(matches!(
            refusal(&skipped),
            BatchError::MalformedRecord { index: 0, .. }
        ));
    }

    #[test]
    fn unsupported_attribute_bits_and_codecs_are_refused() {
        for bit in [0x08, 0x10, 0x20, 0x40, 0x80, 0x4000] {
            let mut batch = sample().to_vec();
            set_attributes(&mut batch, bit);
            assert_eq!(refusal(&batch), BatchError::UnsupportedAttributes(bit));
        }
        for codec in 5..=7 {
            let mut batch = sample().to_vec();
            set_attributes(&mut batch, codec);
            assert_eq!(refusal(&batch), BatchError::UnsupportedCompression(codec));
        }
    }

    #[test]
    fn compressed_batches_validate_and_decode_with_every_codec() {
        for codec in Compression::ALL {
            let mut b = BatchBuilder::with_capacity(256).compression(codec);
            for i in 0..50u8 {
                b.push(&NewRecord {
                    key: Some(&[i]),
                    value: Some(b"a value that repeats, a value that repeats"),
                    headers: &[],
                    timestamp: 1000 + i64::from(i),
                });
            }
            let bytes = b.finish();
            let view = BatchView::validate(&bytes).expect("valid");
            assert_eq!(view.compression(), Ok(codec));
            let plain = view
                .decompressed(MAX_DECOMPRESSED_BYTES)
                .expect("decompresses");
            let keys: Vec<u8> = view
                .records_in(&plain)
                .map(|r| r.expect("record").key.expect("key")[0])
                .collect();
            assert_eq!(keys, (0..50).collect::<Vec<u8>>(), "{codec}");
            if codec != Compression::None {
                assert_eq!(view.records().next(), Some(Err(BatchError::Compressed)));
            }
        }
    }

    #[test]
    fn a_compressed_batch_with_bad_records_inside_is_refused() {
        let mut packed = vec![0; HEADER_LEN];
        codec::compress(Compression::Lz4, &one_record(0), &mut packed);
        let mut batch = with_records(&sample(), &packed[HEADER_LEN..], 3);
        set_attributes(&mut batch, Compression::Lz4.code());
        assert!(matches!(
            refusal(&batch),
            BatchError::MalformedRecord { index: 1, .. }
        ));

        let mut batch = with_records(&sample(), &[0xff; 30], 1);
        set_attributes(&mut batch, Compression::Zstd.code());
        assert!(matches!(refusal(&batch), BatchError::Decompression(_)));
    }

    #[test]
    fn varints_round_trip_extremes() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 300, -300] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut slice = &out[..];
            assert_eq!(read_varint(&mut slice), Ok(v));
            assert!(slice.is_empty());
        }
    }
}
