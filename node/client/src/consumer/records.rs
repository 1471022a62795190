//! Turning fetched batches into records: IO-free, so the skipping rules are unit-tested.

use bytes::Bytes;
use gregor_protocol::batch::{BatchError, BatchView, MAX_DECOMPRESSED_BYTES};
use gregor_protocol::{Offset, PartitionId};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

/// One consumed record. Key, value and headers are slices of the fetched reply, not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The record's topic.
    pub topic: Arc<str>,
    /// The record's partition.
    pub partition: PartitionId,
    /// The record's offset in its partition.
    pub offset: Offset,
    /// Milliseconds since the epoch, as the producer set it.
    pub timestamp: i64,
    /// The key; `None` for a record without one (not the same as an empty key).
    pub key: Option<Bytes>,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers in the order they were sent: name and optional value.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

impl ConsumerRecord {
    /// Key plus value bytes: what throughput figures count.
    pub fn payload_len(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len)
    }
}

/// What [`decode_fetched`] added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The offset to fetch next: one past the last record seen (or `from` if none).
    pub next_offset: Offset,
    pub records: usize,
    pub bytes: usize,
}

/// Appends the records of `batches` at or after `from` to `out`. A fetch may start with a
/// batch that begins below `from` (the broker returns whole batches): those records were
/// consumed already and are skipped.
///
/// # Errors
/// The first corrupt batch or record; then nothing is added, so a retry cannot duplicate.
pub(crate) fn decode_fetched(
    topic: &Arc<str>,
    partition: PartitionId,
    batches: &[Bytes],
    from: Offset,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<Decoded, BatchError> {
    let kept = out.len();
    let result = decode_into(topic, partition, batches, from, out);
    if result.is_err() {
        out.truncate(kept);
    }
    result
}

fn decode_into(
    topic: &Arc<str>,
    partition: PartitionId,
    batches: &[Bytes],
    from: Offset,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<Decoded, BatchError> {
    let mut decoded = Decoded {
        next_offset: from,
        records: 0,
        bytes: 0,
    };
    for bytes in batches {
        // Every record is decoded below, so a malformed one fails there: the header check is
        // enough here, and the broker walked the records before it stored them.
        let view = BatchView::validate_header(bytes)?;
        if view.last_offset() < from.0 {
            continue;
        }
        let plain = match view.decompressed(MAX_DECOMPRESSED_BYTES)? {
            Cow::Borrowed(section) => bytes.slice_ref(section),
            Cow::Owned(inflated) => Bytes::from(inflated),
        };
        for record in view.records_in(&plain) {
            let record = record?;
            if record.offset < from.0 {
                continue;
            }
            let slice = |b: &[u8]| plain.slice_ref(b);
            let consumed = ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: Offset(record.offset),
                timestamp: record.timestamp,
                key: record.key.map(slice),
                value: record.value.map(slice),
                headers: record
                    .headers
                    .iter()
                    .map(|(k, v)| (slice(k), v.map(slice)))
                    .collect(),
            };
            decoded.bytes += consumed.payload_len();
            decoded.records += 1;
            out.push_back(consumed);
        }
        decoded.next_offset = decoded.next_offset.max(Offset(view.last_offset() + 1));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_protocol::batch::{stamp, BatchBuilder, NewRecord};

    fn batch(base: u64, values: &[&[u8]]) -> Bytes {
        let mut b = BatchBuilder::with_capacity(256);
        for (i, v) in values.iter().enumerate() {
            b.push(&NewRecord {
                key: Some(b"k"),
                value: Some(v),
                headers: &[],
                timestamp: 1_000 + i as i64,
            });
        }
        let mut bytes = b.finish().to_vec();
        stamp(&mut bytes, base, 0);
        Bytes::from(bytes)
    }

    #[test]
    fn records_below_the_position_are_skipped() {
        let topic: Arc<str> = Arc::from("t");
        // The fetch asked for offset 12; the broker returned the whole batch 10..=14 and 15..=16.
        let batches = [
            batch(10, &[b"a", b"b", b"c", b"d", b"e"]),
            batch(15, &[b"f", b"g"]),
        ];
        let mut out = VecDeque::new();
        let decoded =
            decode_fetched(&topic, PartitionId(2), &batches, Offset(12), &mut out).expect("valid");
        let offsets: Vec<u64> = out.iter().map(|r| r.offset.0).collect();
        assert_eq!(offsets, vec![12, 13, 14, 15, 16]);
        assert_eq!(out[0].value.as_deref(), Some(&b"c"[..]));
        assert_eq!(out[0].timestamp, 1_002);
        assert_eq!(
            decoded,
            Decoded {
                next_offset: Offset(17),
                records: 5,
                bytes: 10
            }
        );
    }

    #[test]
    fn a_batch_wholly_below_the_position_is_ignored() {
        let topic: Arc<str> = Arc::from("t");
        let batches = [batch(0, &[b"a", b"b"])];
        let mut out = VecDeque::new();
        let decoded =
            decode_fetched(&topic, PartitionId(0), &batches, Offset(5), &mut out).expect("valid");
        assert!(out.is_empty());
        assert_eq!(decoded.next_offset, Offset(5));
    }

    #[test]
    fn a_corrupt_batch_is_an_error_and_adds_nothing() {
        let topic: Arc<str> = Arc::from("t");
        let mut bad = batch(1, &[b"b"]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let batches = [batch(0, &[b"a"]), Bytes::from(bad)];
        let mut out = VecDeque::new();
        assert!(decode_fetched(&topic, PartitionId(0), &batches, Offset(0), &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn compressed_batches_decode_to_the_same_records_with_every_codec() {
        use gregor_protocol::batch::Compression;
        let topic: Arc<str> = Arc::from("t");
        for codec in Compression::ALL {
            let mut b = BatchBuilder::with_capacity(256).compression(codec);
            for value in [&b"first"[..], b"second", b"third"] {
                b.push(&NewRecord {
                    key: None,
                    value: Some(value),
                    headers: &[(b"h", Some(b"v"))],
                    timestamp: 7,
                });
            }
            let mut bytes = b.finish().to_vec();
            stamp(&mut bytes, 20, 0);
            let mut out = VecDeque::new();
            let batches = [Bytes::from(bytes)];
            decode_fetched(&topic, PartitionId(0), &batches, Offset(21), &mut out).expect("valid");
            let values: Vec<_> = out
                .iter()
                .map(|r| r.value.clone().expect("value"))
                .collect();
            assert_eq!(values, [&b"second"[..], b"third"], "{codec}");
            assert_eq!(out[0].headers[0].0, &b"h"[..]);
        }
    }
}
