//! `gregor perf consume`: the consumer benchmark. It reads from the start (or `--from`) of
//! every partition until `--records` have arrived.
//!
//! Its latency is end to end: the time a record is handed to the consumer minus its send time,
//! in microseconds from the stamp `perf produce` writes into each value, else in milliseconds
//! from the record's timestamp. Run it while `perf produce` writes and it measures how long
//! records take from producer to consumer; run it over a backlog and it measures their age.

use super::produce::print_progress;
use super::stamp;
use super::stats::Recorder;
use super::{report, ConnectArgs};
use crate::cli::args::{parse_from, parse_message_size, FromSpec};
use crate::cli::consume::start_at;
use crate::cli::UsageError;
use clap::Args;
use gregor_client::{Consumer, ConsumerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Records handed out per poll.
const POLL_RECORDS: usize = 10_000;

#[derive(Debug, Args)]
pub struct ConsumePerfArgs {
    /// Topic to use
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// Records to read
    #[arg(long, value_name = "N")]
    pub records: u64,
    /// Consumer group to resume from and commit to at the end
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Where to start where the group has no committed offset (as `consume --from`)
    #[arg(long, default_value = "earliest", value_parser = parse_from, allow_hyphen_values = true)]
    pub from: FromSpec,
    /// Give up after this long without a record
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Bytes per partition per fetch
    #[arg(long, default_value = "1MiB", value_parser = parse_message_size, value_name = "SIZE")]
    pub fetch_max_bytes: u32,
    /// Print the summary as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(connect: &ConnectArgs, args: ConsumePerfArgs) -> anyhow::Result<()> {
    if args.records == 0 {
        return Err(UsageError("--records must be at least 1".into()).into());
    }
    let mut config = ConsumerConfig::from_client(connect.client_config("gregor-perf"));
    config.group = args.group.clone();
    config.fetch_max_bytes = args.fetch_max_bytes;
    config.max_poll_records = POLL_RECORDS;
    let mut consumer = Consumer::connect(config).await?;
    consumer.assign(&args.topic, None).await?;
    for tp in consumer.assignment() {
        if consumer.position(&tp).is_none() {
            start_at(&mut consumer, &tp, args.from).await?;
        }
    }

    let recorder = Arc::new(Recorder::new());
    let idle_limit = Duration::from_millis(args.timeout_ms);
    let start = Instant::now();
    let progress = tokio::spawn(print_progress(recorder.clone(), "received", start));
    let mut consumed = 0u64;
    let mut last_record = Instant::now();
    let mut latencies = Vec::with_capacity(POLL_RECORDS);
    let outcome = loop {
        if consumed >= args.records {
            break Ok(());
        }
        let left = idle_limit.saturating_sub(last_record.elapsed());
        if left.is_zero() {
            break Err(anyhow::anyhow!(
                "only {consumed} of {} records arrived before {} ms without any; produce more first \
                 (gregor perf produce --topic {} --records {}) or lower --records",
                args.records,
                args.timeout_ms,
                args.topic,
                args.records
            ));
        }
        let want = (args.records - consumed).min(POLL_RECORDS as u64) as usize;
        let records = match consumer.poll_records(left, want).await {
            Ok(records) => records,
            Err(e) => break Err(e.into()),
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        consumed += records.len() as u64;
        // One clock reading per poll. A value `perf produce` stamped carries its send time in
        // microseconds; any other record is measured from its millisecond timestamp.
        let now_us = stamp::wall_clock_us();
        latencies.clear();
        let mut bytes = 0u64;
        for record in &records {
            bytes += record.payload_len() as u64;
            let sent_us = match record.value.as_deref().and_then(stamp::read) {
                Some(sent_us) => sent_us,
                None => (record.timestamp.max(0) as u64).saturating_mul(1_000),
            };
            latencies.push(now_us.saturating_sub(sent_us));
        }
        recorder.record_each(bytes, &latencies);
    };
    let elapsed = start.elapsed();
    progress.abort();
    if args.group.is_some() {
        consumer.commit().await?;
    }
    report("received", &recorder.summary(elapsed, true), args.json)?;
    outcome
}
