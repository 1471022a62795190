//! `gregor produce TOPIC`: one record per stdin line, like `kafka-console-producer` and `kcat -P`.

use super::args::parse_acks;
use super::ConnectArgs;
use clap::Args;
use gregor_client::{ClientError, DeliveryHandle, Producer, ProducerConfig, ProducerRecord};
use gregor_protocol::api::Acks;
use gregor_protocol::batch::Compression;
use gregor_protocol::PartitionId;
use std::collections::VecDeque;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Handles kept before the oldest is awaited: bounds memory on endless input.
const MAX_PENDING: usize = 100_000;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to write to
    pub topic: String,
    /// Split each line at the first SEP into key and value (e.g. --key-separator :)
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Wait for 0 (nothing), 1 (the leader) or all (replicated and fsynced)
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_hyphen_values = true)]
    pub acks: Acks,
    /// Send every record to this partition instead of choosing by key
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// How long to gather records into a batch before sending
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// Batch compression: none, gzip, snappy, lz4 or zstd
    #[arg(long, default_value = "none", value_name = "CODEC")]
    pub compression: Compression,
    /// Number batches with a producer id so that a retried batch is written once (true or
    /// false; with --acks 0 batches are never numbered)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub idempotence: bool,
}

/// Splits a line into key and value at the first `separator`.
///
/// # Errors
/// A message when the separator is missing: guessing would put data in the wrong field.
pub fn split_line<'a>(
    line: &'a [u8],
    separator: Option<&[u8]>,
    number: u64,
) -> Result<(Option<&'a [u8]>, &'a [u8]), String> {
    let Some(sep) = separator else {
        return Ok((None, line));
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(at) => Ok((Some(&line[..at]), &line[at + sep.len()..])),
        None => Err(format!(
            "line {number} has no key separator '{}'; write each line as KEY{}VALUE",
            String::from_utf8_lossy(sep),
            String::from_utf8_lossy(sep)
        )),
    }
}

/// Drops the line ending: `\n` or `\r\n`.
fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

struct Tally {
    sent: u64,
    failed: u64,
    first_error: Option<ClientError>,
}

impl Tally {
    fn record(&mut self, outcome: Result<(), ClientError>) {
        if let Err(e) = outcome {
            self.failed += 1;
            self.first_error.get_or_insert(e);
        }
    }
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    if args.key_separator.as_deref() == Some("") {
        return Err(super::UsageError("--key-separator must not be empty".into()).into());
    }
    let config = ProducerConfig::from_client(args.connect.client_config("gregor-produce"))
        .acks(args.acks)
        .linger_ms(args.linger_ms)
        .compression(args.compression)
        .enable_idempotence(args.idempotence);
    let producer = Producer::connect(config).await?;
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut stdin = BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let mut line = Vec::new();
    let mut pending: VecDeque<DeliveryHandle> = VecDeque::new();
    let mut tally = Tally {
        sent: 0,
        failed: 0,
        first_error: None,
    };
    let mut input_error = None;
    loop {
        line.clear();
        let n = stdin
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read stdin: {e}"))?;
        if n == 0 {
            break;
        }
        let (key, value) = match split_line(trim_newline(&line), separator, tally.sent + 1) {
            Ok(parts) => parts,
            Err(e) => {
                input_error = Some(e);
                break;
            }
        };
        let mut record = ProducerRecord::new(&args.topic, value);
        record.key = key;
        record.partition = args.partition.map(PartitionId);
        pending.push_back(producer.send(record).await?);
        tally.sent += 1;
        while pending.front().is_some_and(|h| h.try_result().is_some())
            || pending.len() > MAX_PENDING
        {
            let handle = pending.pop_front().expect("front checked");
            tally.record(handle.await.map(|_| ()));
        }
    }
    producer.flush().await;
    for handle in pending {
        tally.record(handle.await.map(|_| ()));
    }
    let delivered = tally.sent - tally.failed;
    eprintln!(
        "produced {delivered} record{} to {}",
        if delivered == 1 { "" } else { "s" },
        args.topic
    );
    if let Some(e) = tally.first_error {
        anyhow::bail!(
            "{} of {} records were not delivered; the first failed with: {e}",
            tally.failed,
            tally.sent
        );
    }
    if let Some(e) = input_error {
        anyhow::bail!("{e}; the records before it were sent");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        assert_eq!(
            split_line(b"k:v:w", Some(b":"), 1),
            Ok((Some(&b"k"[..]), &b"v:w"[..]))
        );
        assert_eq!(
            split_line(b"k::v", Some(b"::"), 1),
            Ok((Some(&b"k"[..]), &b"v"[..]))
        );
        assert_eq!(
            split_line(b":v", Some(b":"), 1),
            Ok((Some(&b""[..]), &b"v"[..]))
        );
        assert_eq!(split_line(b"plain", None, 1), Ok((None, &b"plain"[..])));
        let err = split_line(b"novalue", Some(b":"), 7).unwrap_err();
        assert!(err.contains("line 7") && err.contains("KEY:VALUE"), "{err}");
    }

    #[test]
    fn line_endings_are_dropped_but_inner_carriage_returns_kept() {
        assert_eq!(trim_newline(b"a\r\n"), b"a");
        assert_eq!(trim_newline(b"a\n"), b"a");
        assert_eq!(trim_newline(b"a\rb"), b"a\rb");
        assert_eq!(trim_newline(b"last"), b"last");
    }
}
