//! What the broker's batch check costs per record: `BatchView::validate` (header, CRC and the
//! walk of every record) against `validate_header` (header and CRC only), on 1 MiB batches of
//! 100-byte records, uncompressed and with each codec.
//!
//! ```sh
//! cargo run --release -p gregor-protocol --example validation_cost
//! ```

use gregor_protocol::batch::{BatchBuilder, BatchView, Compression, NewRecord};
use std::time::{Duration, Instant};

const BATCH_BYTES: usize = 1024 * 1024;
const ROUNDS: u32 = 200;

fn main() {
    for codec in Compression::ALL {
        let batch = build(codec);
        let records = BatchView::validate(&batch).expect("valid").record_count();
        let header = time(|| {
            BatchView::validate_header(&batch).expect("valid");
        });
        let full = time(|| {
            BatchView::validate(&batch).expect("valid");
        });
        let per_record = |d: Duration| d.as_nanos() as f64 / f64::from(ROUNDS * records);
        println!(
            "{codec:>6}: {records} records, {} bytes; header+crc {:.1} ns/record, full check {:.1} ns/record",
            batch.len(),
            per_record(header),
            per_record(full),
        );
    }
}

/// 1 MiB of 100-byte JSON-like values that differ from record to record.
fn build(codec: Compression) -> bytes::Bytes {
    let mut builder = BatchBuilder::with_capacity(BATCH_BYTES).compression(codec);
    let mut i = 0u64;
    while builder.len() < BATCH_BYTES - 200 {
        let value = format!(
            "{{\"order\":{i},\"sku\":\"SKU-{:05}\",\"qty\":{},\"price\":{}.{:02},\"state\":\"{}\"}}",
            i.wrapping_mul(7919) % 100_000,
            i % 9 + 1,
            i.wrapping_mul(31) % 500,
            i % 100,
            ["new", "paid", "shipped"][(i % 3) as usize],
        );
        let mut value = value.into_bytes();
        value.resize(100, b' ');
        builder.push(&NewRecord {
            key: None,
            value: Some(&value),
            headers: &[],
            timestamp: 1_700_000_000_000 + i as i64,
        });
        i += 1;
    }
    builder.finish()
}

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn time(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    start.elapsed()
}
