//! `gregor consume TOPIC`: print records, like `kcat -C` and `kafka-console-consumer`.
//!
//! It follows the topic until Ctrl-C (as Kafka's console consumer does) unless told when to
//! stop: `--max N`, `--timeout-ms` of silence, or `--exit-at-end`.
//!
//! With `--group G` (and no `--partition`) it joins the group: several such processes share
//! the topic's partitions, each record going to one of them; partitions given and taken away
//! are reported on stderr. `--partition N` reads that partition alone (manual assignment),
//! committing to the group only while the group has no members.

use super::args::{parse_from, FromSpec};
use super::format::RecordFormat;
use super::ConnectArgs;
use clap::Args;
use gregor_client::{
    AutoOffsetReset, ClientError, Consumer, ConsumerConfig, RebalanceListener, SeekTo,
    TopicPartition,
};
use gregor_client::{Clock, SystemClock};
use gregor_protocol::{Offset, PartitionId};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// How often a group's positions are committed while consuming (from poll).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest single wait, so that commits and stop conditions are checked regularly.
const POLL_SLICE: Duration = Duration::from_millis(200);
/// Records handed out per poll.
const POLL_RECORDS: u64 = 2_000;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to read
    pub topic: String,
    /// Consumer group: resume from its committed offsets and commit progress
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Start at earliest, latest, an OFFSET, -N records before the end, a duration ago (-5h),
    /// an RFC 3339 time (2024-05-01T12:00:00Z) or @MS. With --group it applies only to
    /// partitions the group has no committed offset for.
    #[arg(long, default_value = "earliest", value_parser = parse_from, allow_hyphen_values = true)]
    pub from: FromSpec,
    /// Read only this partition
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Exit after printing N records
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Output format: %t topic, %p partition, %o offset, %k key, %s value, %T timestamp,
    /// %h headers, %K/%S key/value length, \n, \t
    #[arg(long, default_value = "%s\\n", value_parser = RecordFormat::parse, allow_hyphen_values = true)]
    pub format: RecordFormat,
    /// Exit when no record arrives for this long [default: follow until Ctrl-C]
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Exit once every partition has been read to its end
    #[arg(long)]
    pub exit_at_end: bool,
    /// With --group: a static member's instance id; a restart within the session timeout
    /// gets the same partitions back without a rebalance
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// With --group: the member's session timeout, overriding its group's (`gregor group
    /// config G --session-timeout`) [default: the group's, else the broker's 45 s]
    #[arg(long, value_name = "MS")]
    pub session_timeout_ms: Option<u64>,
}

/// Tells stderr which partitions the group gives and takes away.
struct ReportChanges;

impl RebalanceListener for ReportChanges {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        eprintln!("assigned: {}", list(partitions));
    }

    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        eprintln!("revoked: {}", list(partitions));
    }

    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        eprintln!("lost: {}", list(partitions));
    }
}

fn list(partitions: &[TopicPartition]) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    names.join(" ")
}

/// Why the loop stopped; all of them are a normal exit.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Max,
    Idle,
    End,
    Interrupted,
    OutputClosed,
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = ConsumerConfig::from_client(args.connect.client_config("gregor-consume"));
    config.group = args.group.clone();
    config.max_poll_records = POLL_RECORDS as usize;
    config.auto_commit_interval = Some(COMMIT_INTERVAL);
    config.instance_id = args.instance_id.clone();
    config.session_timeout = args.session_timeout_ms.map(Duration::from_millis);
    let member = args.group.is_some() && args.partition.is_none();
    if member {
        config.auto_offset_reset = match args.from {
            FromSpec::Earliest => AutoOffsetReset::Earliest,
            FromSpec::Latest => AutoOffsetReset::Latest,
            _ => anyhow::bail!(
                "with --group (and no --partition) the group assigns partitions, so --from takes \
                 earliest or latest (for partitions the group has not committed); move a \
                 group's offsets with: gregor group reset"
            ),
        };
    }
    let mut consumer = Consumer::connect(config).await?;
    if member {
        consumer.set_rebalance_listener(ReportChanges);
        consumer.subscribe(&[&args.topic])?;
    } else {
        let partitions = args.partition.map(|p| vec![PartitionId(p)]);
        consumer.assign(&args.topic, partitions.as_deref()).await?;
        for tp in consumer.assignment() {
            if consumer.position(&tp).is_none() {
                start_at(&mut consumer, &tp, args.from).await?;
            }
        }
    }

    let (printed, stop, result) = consume_loop(&mut consumer, &args).await;
    if args.group.is_some() {
        // Commits, and leaves the group so that its partitions move at once.
        consumer.close().await?;
    }
    result?;
    if stop != Stop::OutputClosed {
        eprintln!(
            "consumed {printed} record{} from {}",
            if printed == 1 { "" } else { "s" },
            args.topic
        );
    }
    Ok(())
}

/// Resolves `--from` for one partition.
pub(crate) async fn start_at(
    consumer: &mut Consumer,
    tp: &TopicPartition,
    from: FromSpec,
) -> Result<(), ClientError> {
    let to = match from {
        FromSpec::Earliest => SeekTo::Earliest,
        FromSpec::Latest => SeekTo::Latest,
        FromSpec::Offset(o) => SeekTo::Offset(Offset(o)),
        FromSpec::At(ms) => SeekTo::Timestamp(ms),
        FromSpec::Ago(ago) => {
            let ago_ms = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
            SeekTo::Timestamp(SystemClock.now_ms().saturating_sub(ago_ms))
        }
        FromSpec::FromEnd(n) => {
            let start = consumer.seek(tp, SeekTo::Earliest).await?;
            let end = consumer.seek(tp, SeekTo::Latest).await?;
            SeekTo::Offset(Offset(end.0.saturating_sub(n).max(start.0)))
        }
    };
    consumer.seek(tp, to).await.map(|_| ())
}

async fn consume_loop(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
) -> (u64, Stop, anyhow::Result<()>) {
    let mut stdout = tokio::io::stdout();
    let mut out = Vec::with_capacity(1 << 16);
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if args.max.is_some_and(|max| printed >= max) {
            return (printed, Stop::Max, Ok(()));
        }
        if args.exit_at_end && consumer.at_end() && !consumer.assignment().is_empty() {
            return (printed, Stop::End, Ok(()));
        }
        let mut wait = POLL_SLICE;
        if let Some(limit) = idle_limit {
            let left = limit.saturating_sub(last_record.elapsed());
            if left.is_zero() {
                return (printed, Stop::Idle, Ok(()));
            }
            wait = wait.min(left);
        }
        let want =
            args.max
                .map_or(POLL_RECORDS, |max| (max - printed).min(POLL_RECORDS)) as usize;
        let records = tokio::select! {
            biased;
            _ = &mut interrupted => return (printed, Stop::Interrupted, Ok(())),
            polled = consumer.poll_records(wait, want) => match polled {
                Ok(records) => records,
                Err(e) => return (printed, Stop::Interrupted, Err(e.into())),
            },
        };
        if !records.is_empty() {
            last_record = Instant::now();
            out.clear();
            for record in &records {
                args.format.render(record, &mut out);
            }
            let written = async {
                stdout.write_all(&out).await?;
                stdout.flush().await
            };
            match written.await {
                Ok(()) => printed += records.len() as u64,
                // A closed pipe (`| head`) is the reader saying it has enough.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return (printed, Stop::OutputClosed, Ok(()))
                }
                Err(e) => {
                    return (
                        printed,
                        Stop::Interrupted,
                        Err(anyhow::anyhow!("cannot write to stdout: {e}")),
                    )
                }
            }
        }
    }
}
