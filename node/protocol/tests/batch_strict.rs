//! The broker's batch check against the reader: whatever bytes a producer sends, a batch the
//! broker accepts decodes to exactly `recordCount` records at offsets base..base+count, so a
//! consumer can never be handed a batch it cannot read or that skips offsets.

use gregor_protocol::batch::{BatchBuilder, BatchView, NewRecord, HEADER_LEN};
use proptest::prelude::*;

fn built(values: &[Vec<u8>]) -> Vec<u8> {
    let mut builder = BatchBuilder::with_capacity(256);
    for (i, value) in values.iter().enumerate() {
        builder.push(&NewRecord {
            key: (i % 2 == 0).then_some(&value[..value.len().min(3)]),
            value: Some(value),
            headers: &[(b"h", Some(b"v"))],
            timestamp: 1_000 + i as i64,
        });
    }
    builder.finish().to_vec()
}

/// Re-computes the CRC, so that mutations reach the record walk instead of the checksum.
fn recrc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_accepted_batch_always_reads_back_whole(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in 0usize..3,
    ) {
        let mut batch = built(&values);
        // Mutate only the records section and the count fields, then fix lengths and CRC.
        for (at, byte) in edits {
            let i = HEADER_LEN + at.index(batch.len() - HEADER_LEN);
            batch[i] = byte;
        }
        batch.truncate(batch.len() - cut.min(batch.len() - HEADER_LEN));
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        recrc(&mut batch);
        if let Ok(view) = BatchView::validate(&batch) {
            let offsets: Vec<u64> = view
                .records()
                .map(|r| r.expect("an accepted batch decodes").offset)
                .collect();
            let expected: Vec<u64> = (0..u64::from(view.record_count())).collect();
            prop_assert_eq!(offsets, expected);
        }
    }
}
