//! `gregor perf produce`: the producer benchmark.
//!
//! The payloads are slices of one pool of random letters generated up front, so the per-record
//! work is the producer's own (choose a partition, copy the bytes into the open batch), and no
//! two records in a window share content: storage compression cannot flatter the figures the
//! way one payload repeated a million times would. Each value starts with its send time in
//! microseconds (`stamp`), for `perf consume`'s end-to-end latency. Latency is measured per
//! batch, from its first record's `send` to its acknowledgement, and counted once for every
//! record of the batch.

use super::stamp;
use super::stats::{progress_line, Recorder, Throttle};
use super::{report, ConnectArgs};
use crate::cli::args::parse_acks;
use crate::cli::UsageError;
use clap::Args;
use gregor_client::{
    Admin, BatchOutcome, ClientError, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use gregor_protocol::api::{Acks, ErrorCode};
use gregor_protocol::batch::Compression;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Args)]
pub struct ProducePerfArgs {
    /// Topic to use
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// Records to send in all
    #[arg(long, value_name = "N")]
    pub records: u64,
    /// Value size of each record, in bytes
    #[arg(long, default_value_t = 100, value_name = "B")]
    pub record_size: usize,
    /// Wait for 0 (nothing), 1 (the leader) or all (replicated and fsynced)
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_hyphen_values = true)]
    pub acks: Acks,
    /// Records per second, across all producers; -1 for as fast as possible
    #[arg(long, default_value_t = -1.0, value_name = "R", allow_hyphen_values = true)]
    pub throughput: f64,
    /// Independent producers (each with its own connections), sharing the records
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub producers: usize,
    /// Partitions to create the topic with if it does not exist
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub partitions: u32,
    /// Producer batch size in bytes
    #[arg(long, default_value_t = 128 * 1024, value_name = "B")]
    pub batch_size: usize,
    /// Largest produce request; with one request in flight per partition, this bounds the
    /// bytes per round trip
    #[arg(long, default_value_t = 1024 * 1024, value_name = "B")]
    pub max_request_bytes: usize,
    /// Producer linger
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// Batch compression: none, gzip, snappy, lz4 or zstd
    #[arg(long, default_value = "none", value_name = "CODEC")]
    pub compression: Compression,
    /// Record values: `letters` (random upper-case letters, Kafka's perf payload) or `orders`
    /// (JSON order events whose fields vary from record to record, cut or padded to the size)
    #[arg(long, value_enum, default_value = "letters")]
    pub payload: PayloadKind,
    /// Seed for the payload and the partitioner [default: from the clock]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(connect: &ConnectArgs, args: ProducePerfArgs) -> anyhow::Result<()> {
    let rate = if args.throughput > 0.0 {
        Some(args.throughput)
    } else if args.throughput == -1.0 {
        None
    } else {
        let message = format!(
            "--throughput {}: give records per second, or -1 for unlimited",
            args.throughput
        );
        return Err(UsageError(message).into());
    };
    if args.producers == 0 || args.records == 0 {
        return Err(UsageError("--records and --producers must be at least 1".into()).into());
    }
    let client = connect.client_config("gregor-perf");
    let seed = args.seed.unwrap_or(client.seed);
    let admin = Admin::connect(client.clone()).await?;
    ensure_topic(&admin, &args.topic, args.partitions).await?;

    let payload = match args.payload {
        PayloadKind::Letters => payload(args.record_size, seed),
        PayloadKind::Orders => orders(args.record_size, seed),
    };
    let recorder = Arc::new(Recorder::new());
    let observer = {
        let recorder = recorder.clone();
        let record_size = args.record_size as u64;
        Arc::new(move |outcome: &BatchOutcome<'_>| {
            let records = u64::from(outcome.records);
            match outcome.result {
                Ok(_) => recorder.record(
                    records,
                    records * record_size,
                    Some(outcome.opened_at.elapsed()),
                ),
                Err(e) => recorder.error(records, e.to_string()),
            }
        })
    };
    let mut producers = Vec::with_capacity(args.producers);
    for i in 0..args.producers {
        let config = ProducerConfig::from_client(client.clone().seed(seed.wrapping_add(i as u64)))
            .acks(args.acks)
            .linger_ms(args.linger_ms)
            .batch_size(args.batch_size)
            .compression(args.compression)
            .on_batch_complete(observer.clone());
        let config = ProducerConfig {
            max_request_bytes: args.max_request_bytes,
            ..config
        };
        producers.push(Producer::connect(config).await?);
    }

    let start = Instant::now();
    let progress = tokio::spawn(print_progress(recorder.clone(), "sent", start));
    let mut tasks = JoinSet::new();
    let share = args.records / args.producers as u64;
    for (i, producer) in producers.into_iter().enumerate() {
        let records = if i == 0 {
            args.records - share * (args.producers as u64 - 1)
        } else {
            share
        };
        let rate = rate.map(|r| r / args.producers as f64);
        tasks.spawn(send_all(
            producer,
            args.topic.clone(),
            payload.clone(),
            args.record_size,
            records,
            rate,
        ));
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                tasks.abort_all();
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    let elapsed = start.elapsed();
    progress.abort();
    if let Some(e) = failure {
        return Err(e.into());
    }
    let summary = recorder.summary(elapsed, args.acks != Acks::None);
    report("sent", &summary, args.json)?;
    if summary.errors > 0 {
        anyhow::bail!(
            "{} records were not acknowledged; the first failed with: {}",
            summary.errors,
            summary.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

async fn send_all(
    producer: Producer,
    topic: String,
    payload: Vec<u8>,
    size: usize,
    records: u64,
    rate: Option<f64>,
) -> Result<(), ClientError> {
    let mut throttle = Throttle::new(rate, Instant::now());
    let slots = payload.len() - size + 1;
    let mut value = Vec::with_capacity(size);
    for i in 0..records {
        throttle.acquire().await;
        // Consecutive records take consecutive, non-overlapping slices of the pool.
        let start = (i as usize).wrapping_mul(size) % slots;
        value.clear();
        value.extend_from_slice(&payload[start..start + size]);
        stamp::write(&mut value, stamp::wall_clock_us());
        let record = ProducerRecord::new(&topic, &value[..]);
        // The handle is dropped: outcomes arrive through the batch observer.
        producer.send(record).await?;
    }
    producer.flush().await;
    Ok(())
}

/// Bytes of distinct payload: far more than one request carries, little enough to generate in
/// a moment.
const POOL_BYTES: usize = 8 * 1024 * 1024;

/// How many distinct values of `size` bytes the pool holds (at least one).
fn values_in_pool(size: usize) -> usize {
    (POOL_BYTES / size.max(1)).max(1)
}

/// Kafka's perf payload is random upper-case letters; this is a pool of them holding
/// [`values_in_pool`] distinct values of `size` bytes.
fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..size * values_in_pool(size))
        .map(|_| rng.gen_range(b'A'..=b'Z'))
        .collect()
}

/// What the record values of a run look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadKind {
    /// Random upper-case letters: compresses only by the alphabet's size.
    Letters,
    /// JSON order events with varying ids, customers, items, amounts and states: compresses
    /// about as real event streams do.
    Orders,
}

/// A pool of [`values_in_pool`] JSON order events, each cut or padded with spaces to `size`
/// bytes. Every field varies from one event to the next, so a batch is not one value repeated.
fn orders(size: usize, seed: u64) -> Vec<u8> {
    const STATES: [&str; 5] = ["created", "paid", "packed", "shipped", "delivered"];
    const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut pool = Vec::with_capacity(size * values_in_pool(size));
    for i in 0..values_in_pool(size) {
        let event = format!(
            "{{\"order_id\":{},\"customer\":\"c-{:06}\",\"sku\":\"SKU-{:05}\",\"qty\":{},\
             \"price_cents\":{},\"currency\":\"{}\",\"state\":\"{}\",\"ts\":{}}}",
            1_000_000 + i,
            rng.gen_range(0..200_000),
            rng.gen_range(0..50_000),
            rng.gen_range(1..10),
            rng.gen_range(99..250_000),
            CURRENCIES[rng.gen_range(0..CURRENCIES.len())],
            STATES[rng.gen_range(0..STATES.len())],
            1_700_000_000_000u64 + i as u64 * 7 + rng.gen_range(0..7),
        );
        let mut value = event.into_bytes();
        value.resize(size, b' ');
        pool.extend(value);
    }
    pool
}

/// Creates the topic if it does not exist, so a benchmark needs no setup step.
pub(super) async fn ensure_topic(
    admin: &Admin,
    topic: &str,
    partitions: u32,
) -> Result<(), ClientError> {
    match admin.describe_topic(topic).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC) => {
            match admin
                .create_topic(NewTopic::new(topic).partitions(partitions))
                .await
            {
                Ok(_) => {
                    eprintln!("created topic {topic} with {partitions} partition(s)");
                    Ok(())
                }
                Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Prints a progress line about every second until aborted; each is a point of the timeline.
pub(super) async fn print_progress(recorder: Arc<Recorder>, verb: &'static str, start: Instant) {
    let mut last = Instant::now();
    let mut ticks = tokio::time::interval_at(last + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let window = recorder.take_window(now - start, now - last);
        eprintln!("{}", progress_line(verb, &window, now - last));
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_upper_case_letters_and_reproducible() {
        let p = payload(100, 7);
        assert_eq!(p.len(), 100 * values_in_pool(100));
        assert_eq!(payload(0, 7).len(), 0);
        assert_eq!(
            payload(POOL_BYTES * 2, 7).len(),
            POOL_BYTES * 2,
            "one value even when larger than the pool"
        );
        assert!(p.iter().all(u8::is_ascii_uppercase));
        assert_eq!(p, payload(100, 7));
    }

    #[test]
    fn order_events_are_sized_distinct_and_reproducible() {
        let pool = orders(160, 3);
        assert_eq!(pool.len(), 160 * values_in_pool(160));
        let first = &pool[..160];
        let second = &pool[160..320];
        assert!(
            first.starts_with(b"{\"order_id\":1000000,"),
            "{}",
            String::from_utf8_lossy(first)
        );
        assert_ne!(first[20..], second[20..]);
        assert_eq!(pool, orders(160, 3));
    }
}
