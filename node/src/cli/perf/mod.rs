//! `gregor perf produce|consume`: throughput and latency, in the manner of Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test`. A progress line goes to stderr
//! about every second; the summary goes to stderr, or to stdout as one JSON object with
//! `--json`.

pub mod consume;
pub mod produce;
pub mod stamp;
pub mod stats;

use super::ConnectArgs;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct PerfArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: PerfCommand,
}

#[derive(Debug, Subcommand)]
pub enum PerfCommand {
    /// Send records as fast as allowed and report throughput and ack latency
    Produce(produce::ProducePerfArgs),
    /// Read records as fast as possible and report throughput
    Consume(consume::ConsumePerfArgs),
}

pub async fn run(args: PerfArgs) -> anyhow::Result<()> {
    match args.command {
        PerfCommand::Produce(produce) => produce::run(&args.connect, produce).await,
        PerfCommand::Consume(consume) => consume::run(&args.connect, consume).await,
    }
}

/// Prints the summary: JSON on stdout, or the human line on stderr.
fn report(verb: &str, summary: &stats::Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        eprintln!("{}", stats::summary_line(verb, summary));
    }
    Ok(())
}
