//! Property tests of the record batch codec: whatever bytes arrive, validation and record
//! decoding return errors instead of panicking, and every batch the builder makes decodes to
//! the records it was given.

use gregor_storage::batch::{stamp, BatchBuilder, BatchView, NewRecord};
use proptest::prelude::*;

type Header = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
struct OwnedRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
    timestamp: i64,
}

fn record() -> impl Strategy<Value = OwnedRecord> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..10),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            ),
            0..3,
        ),
        any::<i64>(),
    )
        .prop_map(|(key, value, headers, timestamp)| OwnedRecord {
            key,
            value,
            headers,
            timestamp,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(view) = BatchView::validate(&bytes) {
            for record in view.records() {
                let _ = record;
            }
        }
    }

    #[test]
    fn a_valid_batch_with_flipped_bytes_never_panics(
        records in proptest::collection::vec(record(), 1..8),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut bytes = build(&records).to_vec();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if let Ok(view) = BatchView::validate(&bytes) {
            let _ = view.records().count();
        }
    }

    #[test]
    fn built_batches_round_trip(records in proptest::collection::vec(record(), 1..16), base in 0u64..1 << 40) {
        let mut bytes = build(&records).to_vec();
        stamp(&mut bytes, base, 3);
        let view = BatchView::validate(&bytes).expect("a built batch validates");
        prop_assert_eq!(view.record_count() as usize, records.len());
        prop_assert_eq!(view.max_timestamp(), records.iter().map(|r| r.timestamp).max().unwrap());
        let decoded: Vec<_> = view.records().collect::<Result<_, _>>().expect("records decode");
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(got.offset, base + i as u64);
            prop_assert_eq!(got.timestamp, want.timestamp);
            prop_assert_eq!(got.key, want.key.as_deref());
            prop_assert_eq!(got.value, want.value.as_deref());
            let headers: Vec<(&[u8], Option<&[u8]>)> =
                want.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
            prop_assert_eq!(&got.headers, &headers);
        }
    }
}

fn build(records: &[OwnedRecord]) -> bytes::Bytes {
    let mut builder = BatchBuilder::with_capacity(256);
    for r in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        builder.push(&NewRecord {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: &headers,
            timestamp: r.timestamp,
        });
    }
    builder.finish()
}
