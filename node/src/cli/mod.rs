//! The command-line interface, in the style of kcat and the Kafka tools.
//!
//! Exit codes: 0 success, 1 error (the message says what went wrong and what to do), 2 usage
//! error (clap's, or a [`UsageError`] found after parsing).

pub mod args;
pub mod cluster;
pub mod consume;
pub mod dev;
pub mod format;
pub mod group;
pub mod perf;
pub mod produce;
pub mod serve;
pub mod table;
pub mod topic;

use clap::{Args, Parser, Subcommand};
use gregor_client::{ClientConfig, DEFAULT_BOOTSTRAP};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "gregor",
    version,
    about = "Gregor: a distributed, persistent, partitioned commit log",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker node
    Serve(serve::ServeArgs),
    /// Create, list, describe and delete topics
    Topic(topic::TopicArgs),
    /// Send stdin to a topic, one record per line
    Produce(produce::ProduceArgs),
    /// Print a topic's records
    Consume(consume::ConsumeArgs),
    /// List, describe and reset consumer groups
    Group(group::GroupArgs),
    /// Measure produce and consume throughput and latency
    Perf(perf::PerfArgs),
    /// Show the cluster's members, or drain a node
    Cluster(cluster::ClusterArgs),
    /// Development helpers: a local cluster in one command
    Dev(dev::DevArgs),
}

/// How every client command reaches the cluster.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Broker to connect to first (host:port; several separated by commas)
    #[arg(
        long,
        env = "GREGOR_BOOTSTRAP",
        default_value = DEFAULT_BOOTSTRAP,
        value_name = "HOST:PORT",
        global = true
    )]
    pub bootstrap: String,
    /// How long to wait for each reply from the broker
    #[arg(long, default_value_t = 30_000, value_name = "MS", global = true)]
    pub request_timeout_ms: u64,
}

impl ConnectArgs {
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        ClientConfig::new(&self.bootstrap)
            .client_id(client_id)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
            .request_timeout(Duration::from_millis(self.request_timeout_ms))
    }
}

/// A usage mistake found after parsing (e.g. a flag combination); exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2 (0 for --help and --version).
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        command => run_client(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<UsageError>() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(command: Command) -> anyhow::Result<()> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        match command {
            Command::Serve(_) => unreachable!("serve runs its own runtime"),
            Command::Topic(args) => topic::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Group(args) => group::run(args).await,
            Command::Perf(args) => perf::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Cluster(args) => cluster::run(args).await,
        }
    })
}

/// Client commands log warnings only, to stderr; `RUST_LOG` raises the level.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bootstrap_is_accepted_after_nested_subcommands() {
        let cli = Cli::try_parse_from(["gregor", "topic", "create", "t", "--bootstrap", "h:1"])
            .expect("parses");
        let Command::Topic(args) = cli.command else {
            panic!("not a topic command")
        };
        assert_eq!(args.connect.bootstrap, "h:1");
    }

    #[test]
    fn the_cluster_flags_reach_the_config_layer() {
        let cli = Cli::try_parse_from([
            "gregor",
            "serve",
            "--peer-listen",
            "127.0.0.1:7001",
            "--join",
            "127.0.0.1:7002,127.0.0.1:7003",
            "--rack",
            "r1",
            "--metadata-voters",
            "5",
            "--election-timeout-ms",
            "1000",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let raw = args.overrides();
        assert_eq!(raw.peer_listen.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(
            raw.join.map(|j| j.0),
            Some(vec![
                "127.0.0.1:7002".to_owned(),
                "127.0.0.1:7003".to_owned()
            ])
        );
        assert_eq!(raw.rack.as_deref(), Some("r1"));
        assert_eq!(raw.metadata_voters, Some(5));
        assert_eq!(raw.election_timeout_ms, Some(1000));
        assert_eq!(raw.heartbeat_interval_ms, None);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let err = Cli::try_parse_from(["gregor", "produce", "t", "--acks", "2"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err =
            Cli::try_parse_from(["gregor", "consume", "t", "--from", "yesterday"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["gregor", "consume", "t", "--format", "%x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
