//! What a 1 MiB produce request costs to decode and a 1 MiB fetch reply to encode, with the
//! record batches copied (`decode_request`, `encode_frame`) and shared with the frame's buffer
//! (`decode_shared_request`, `encode_chunked_frame`): heap allocations, bytes allocated and
//! wall time per request. The megabyte is cut into 64 batches of 16 KiB (Kafka's default
//! `batch.size`) and into 8 of 128 KiB (`gregor perf produce`'s). Issue 9; BENCHMARKS.md has
//! the figures.
//!
//! ```sh
//! cargo run --release -p gregor-protocol --example copy_cost
//! ```

use bytes::{Buf, Bytes};
use gregor_protocol::api::{
    Acks, FetchReply, Produce, Request, RequestFrame, Response, ResponseFrame,
};
use gregor_protocol::frame::{
    decode_request, decode_shared_request, encode_chunked_frame, encode_frame, LENGTH_PREFIX_BYTES,
};
use gregor_protocol::{Offset, PartitionId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const REQUEST_BYTES: usize = 1024 * 1024;
const ROUNDS: u32 = 2000;

/// The system allocator, counting what it is asked for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    for batch_bytes in [16 * 1024, 128 * 1024] {
        compare(batch_bytes);
    }
}

fn compare(batch_bytes: usize) {
    let count = REQUEST_BYTES / batch_bytes;
    let batches: Vec<Bytes> = (0..count)
        .map(|i| Bytes::from(vec![i as u8; batch_bytes]))
        .collect();
    let produce = RequestFrame {
        id: 1,
        request: Request::Produce(Produce {
            topic: "p1".into(),
            partition: PartitionId(0),
            acks: Acks::All,
            timeout_ms: 30_000,
            batches: batches.clone(),
            topic_id: None,
        }),
    };
    let body = encode_frame(&produce).slice(LENGTH_PREFIX_BYTES..);
    let fetch = ResponseFrame {
        id: 2,
        result: Ok(Response::Fetch(FetchReply {
            high_watermark: Offset(1 << 20),
            log_start_offset: Offset(0),
            batches,
        })),
    };
    println!("{count} batches of {batch_bytes} bytes; {ROUNDS} rounds each; per request:");
    report("produce decode, copying (decode_request)", || {
        black_box(decode_request(&body).expect("valid"));
    });
    report("produce decode, shared (decode_shared_request)", || {
        black_box(decode_shared_request(&body).expect("valid"));
    });
    report("fetch reply encode, one buffer (encode_frame)", || {
        black_box(encode_frame(&fetch));
    });
    report("fetch reply encode, chunked (encode_chunked_frame)", || {
        let frame = black_box(encode_chunked_frame(&fetch));
        black_box(frame.remaining());
    });
}

fn report(name: &str, mut f: impl FnMut()) {
    f();
    let (allocations, bytes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED_BYTES.load(Ordering::Relaxed),
    );
    let elapsed = time(&mut f);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - bytes;
    println!(
        "  {name:<52} {:>6} allocations {:>9} bytes allocated {:>9.1} us",
        allocations / u64::from(ROUNDS),
        bytes / u64::from(ROUNDS),
        elapsed.as_secs_f64() * 1e6 / f64::from(ROUNDS),
    );
}

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn time(f: &mut impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    start.elapsed()
}
