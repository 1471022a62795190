//! `gregor serve`: run a node until SIGINT or SIGTERM.

mod raft_noise;
mod seams;

use crate::config::{
    self, AddressList, ClusterConfig, ConfigSources, Flush, RawConfig, ServeConfig,
};
use crate::server;
use anyhow::Context;
use gregor_actors::{NodeConfig, NodeEnv};
use gregor_protocol::NodeId;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// Run a Gregor node.
///
/// Settings come from flags, then `GREGOR_*` environment variables (GREGOR_LISTEN,
/// GREGOR_NODE_ID, ...), then the config file, then defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; starts with `version = 1`. Keys: node_id, data_dir, listen,
    /// advertised_address, flush, produce_linger_ms, offsets_partitions,
    /// retention_check_interval_ms, cache_bytes, shards, max_frame_bytes, max_in_flight_per_connection,
    /// max_connections, handshake_timeout_ms, idle_timeout_ms, shutdown_grace_ms, peer_listen,
    /// advertised_peer_address, join, cluster_id, rack, metadata_voters, dead_node_grace_ms,
    /// election_timeout_ms, heartbeat_interval_ms, quiesce_after_heartbeats, group_session_timeout_ms,
    /// group_min_session_timeout_ms, group_max_session_timeout_ms, leader_imbalance_percent,
    /// leader_balance_interval_ms, max_leader_step_downs, max_partition_moves
    #[arg(long, value_name = "FILE", env = "GREGOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for this node's data [default: ./gregor-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for client connections; port 0 picks a free port [default: 127.0.0.1:9092]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// This node's id in the cluster [default: 1]
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,
    /// Address clients are told to connect to [default: the listen address]
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_address: Option<String>,
    /// always: acks=all waits for fsync, safe against power loss. never: page cache only,
    /// faster, a machine crash can lose acknowledged records [default: always]
    #[arg(long, value_enum)]
    pub flush: Option<Flush>,
    /// Threads partitions run on (shard-per-core): a partition's actor and Raft group stay on
    /// one; connections and the metadata stay on the main thread [default: one per core but
    /// one, at least 1]
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Address for peers (node-to-node TCP and gossip UDP, one port); setting it makes this
    /// node a member of a cluster [default: none, the node runs alone]
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_listen: Option<String>,
    /// Peer address other nodes are told to use [default: the peer listen address]
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_peer_address: Option<String>,
    /// Peer addresses of members to join through, separated by commas; none founds a new
    /// cluster (a node with data rejoins as the member it was)
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub join: Option<AddressList>,
    /// Nodes with another cluster id are refused [default: gregor]
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Rack or zone of this node: replicas of a partition go to distinct racks first
    #[arg(long, value_name = "NAME")]
    pub rack: Option<String>,
    /// Nodes voting in the metadata group: 1, 3 or 5 [default: 3]
    #[arg(long, value_name = "N")]
    pub metadata_voters: Option<u32>,
    /// How long a node may be dead before its replicas move elsewhere [default: 600000]
    #[arg(long, value_name = "MS")]
    pub dead_node_grace_ms: Option<u64>,
    /// Raft election timeout; a new leader is elected within about 1.5 times this after a
    /// leader dies [default: 800]
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<u64>,
    /// Raft heartbeat interval, at most half the election timeout [default: 250]
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Heartbeat intervals a partition must stay idle before it goes quiet (no heartbeats, no
    /// election timers until its next write); 0 keeps every partition beating [default: 4]
    #[arg(long, value_name = "N")]
    pub quiesce_after_heartbeats: Option<u32>,
    /// Consumer groups' session timeout for members that ask for none and groups configured
    /// with none (Kafka's group.consumer.session.timeout.ms) [default: 45000]
    #[arg(long, value_name = "MS")]
    pub group_session_timeout_ms: Option<u32>,
    /// Shortest session timeout a group or member may have [default: 1000]
    #[arg(long, value_name = "MS")]
    pub group_min_session_timeout_ms: Option<u32>,
    /// Longest session timeout a group or member may have [default: 1800000]
    #[arg(long, value_name = "MS")]
    pub group_max_session_timeout_ms: Option<u32>,
    /// A node leading more than its fair share of partitions by over this percentage is asked
    /// to hand some over [default: 10]
    #[arg(long, value_name = "PERCENT")]
    pub leader_imbalance_percent: Option<u32>,
    /// How often the metadata leader checks the balance of leaders [default: 300000]
    #[arg(long, value_name = "MS")]
    pub leader_balance_interval_ms: Option<u64>,
    /// Most leaderships handed over (leadership transfers) in one balance check [default: 32]
    #[arg(long, value_name = "N")]
    pub max_leader_step_downs: Option<u32>,
    /// Most replica moves running at once across the cluster [default: 8]
    #[arg(long, value_name = "N")]
    pub max_partition_moves: Option<u32>,
}

impl ServeArgs {
    /// The settings given as flags, as the top config layer.
    pub fn overrides(&self) -> RawConfig {
        RawConfig {
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            node_id: self.node_id,
            advertised_address: self.advertised_address.clone(),
            flush: self.flush,
            shards: self.shards,
            peer_listen: self.peer_listen.clone(),
            advertised_peer_address: self.advertised_peer_address.clone(),
            join: self.join.clone(),
            cluster_id: self.cluster_id.clone(),
            rack: self.rack.clone(),
            metadata_voters: self.metadata_voters,
            dead_node_grace_ms: self.dead_node_grace_ms,
            election_timeout_ms: self.election_timeout_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            quiesce_after_heartbeats: self.quiesce_after_heartbeats,
            group_session_timeout_ms: self.group_session_timeout_ms,
            group_min_session_timeout_ms: self.group_min_session_timeout_ms,
            group_max_session_timeout_ms: self.group_max_session_timeout_ms,
            leader_imbalance_percent: self.leader_imbalance_percent,
            leader_balance_interval_ms: self.leader_balance_interval_ms,
            max_leader_step_downs: self.max_leader_step_downs,
            max_partition_moves: self.max_partition_moves,
            ..RawConfig::default()
        }
    }
}

/// Runs a node in the foreground until SIGINT or SIGTERM.
///
/// # Errors
/// Invalid configuration, a listen address that cannot be bound, a node that fails to start, or
/// a node stopped by a fatal error. Each message says what to change.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = ServeConfig::load(ConfigSources {
        file: args.config.as_deref(),
        env: config::env_snapshot()?,
        flags: args.overrides(),
    })?;
    let system = actix_rt::System::new();
    let system_stopped = system.stop_future();
    let served = system.block_on(serve(config, async {
        // Someone else (a fatal storage error in the node) may stop the System first.
        let _ = system_stopped.await;
    }));
    actix_rt::System::current().stop();
    let code = system
        .run_with_code()
        .context("stopping the actor system")?;
    served?;
    if code != 0 {
        anyhow::bail!("the node stopped after a fatal error (exit code {code}); see the log above");
    }
    Ok(())
}

async fn serve(
    config: ServeConfig,
    system_stopped: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Registered before anything slow so a signal during startup is not lost.
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;

    // Binding first means a taken port fails before any data is opened.
    let listener = bind(&config.listen).await?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {}", config.listen))?;
    let config = config.bound_to(bound);
    let node = config.node.clone();
    actix_rt::spawn(raft_noise::report());

    let (env, peers) = match &config.cluster {
        None => {
            let env = NodeEnv {
                raft_tuning: config.raft,
                ..NodeEnv::production()
            };
            (env, None)
        }
        Some(cluster) => {
            let seams = seams::bind(&config, cluster).await?;
            announce(&node, cluster, &seams);
            (seams.env, Some(seams.transport))
        }
    };
    let broker = with_progress(
        node.node_id,
        peers.is_some(),
        gregor_actors::start_node_with(node.clone(), env),
    )
    .await
    .with_context(|| {
        format!(
            "cannot start node {} with data directory {}; check that it is writable and not \
             used by another gregor process{}",
            node.node_id,
            node.data_dir.display(),
            if peers.is_some() {
                ", and that the --join peers are up and of the same --cluster-id"
            } else {
                ""
            }
        )
    })?;

    info!(
        "gregor node {} serving on {} (data in {})",
        node.node_id,
        bound,
        node.data_dir.display()
    );
    if node.advertised_address != bound.to_string() {
        info!("advertising {} to clients", node.advertised_address);
    }

    let failed = broker.when_failed();
    let shutdown = async {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT received; shutting down"),
            _ = terminate.recv() => info!("SIGTERM received; shutting down"),
            () = system_stopped => info!("actor system stopped; shutting down"),
            Some(_) = failed => info!("the node's storage failed; closing every connection"),
        }
    };
    server::serve(listener, broker.clone(), config.server, shutdown).await;
    // Only after the last connection is gone: nothing can append any more, so what the node
    // makes durable now is everything it acknowledged.
    let failure = broker.failure();
    broker.shutdown().await;
    if let Some(cause) = failure {
        anyhow::bail!(storage_failed(node.node_id, &node.data_dir, &cause));
    }
    info!("gregor node {} stopped", node.node_id);
    Ok(())
}

/// Why a node that stopped on a failed fsync or write exits non-zero, and what to do.
fn storage_failed(node: NodeId, data_dir: &std::path::Path, cause: &str) -> String {
    format!(
        "node {node} stopped because its storage failed ({cause}); after a failed fsync the \
         operating system may have dropped writes it had accepted, so the node does not go on \
         from that state. Check the disk holding {} (kernel log, free space, SMART) and the log \
         above, then start the node again: it recovers from its last successful fsync and \
         catches up from its peers",
        data_dir.display()
    )
}

/// Says whether this node founds, joins or rejoins its cluster, before the wait that follows.
fn announce(node: &NodeConfig, cluster: &ClusterConfig, seams: &seams::ClusterSeams) {
    let has_data = std::fs::read_dir(&node.data_dir).is_ok_and(|mut d| d.next().is_some());
    let id = node.node_id;
    if has_data {
        info!(
            "node {id} restarting as a member of cluster '{}' (peers reach it at {})",
            cluster.cluster_id, seams.advertised
        );
    } else if seams.seeds.is_empty() {
        info!(
            "node {id} founding a new cluster '{}' (peers reach it at {}; others join with \
             --join {})",
            cluster.cluster_id, seams.advertised, seams.advertised
        );
    } else {
        let seeds: Vec<String> = seams.seeds.iter().map(ToString::to_string).collect();
        info!(
            "node {id} joining cluster '{}' through {} (peers reach it at {})",
            cluster.cluster_id,
            seeds.join(","),
            seams.advertised
        );
    }
}

/// Runs the node's start, saying every few seconds what it is still waiting for.
async fn with_progress<T>(
    node: NodeId,
    clustered: bool,
    start: impl std::future::Future<Output = T>,
) -> T {
    const EVERY: Duration = Duration::from_secs(5);
    tokio::pin!(start);
    let mut waited = Duration::ZERO;
    loop {
        tokio::select! {
            done = &mut start => return done,
            () = tokio::time::sleep(EVERY) => {
                waited += EVERY;
                if clustered {
                    info!(
                        "node {node} still starting after {} s: waiting for the metadata leader \
                         to register it and for its replicas to start",
                        waited.as_secs()
                    );
                } else {
                    info!("node {node} still starting after {} s", waited.as_secs());
                }
            }
        }
    }
}

async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|e| {
        let advice = match e.kind() {
            ErrorKind::AddrInUse => "another process is using it; stop it or pick another address with --listen HOST:PORT",
            ErrorKind::PermissionDenied => "ports below 1024 need privileges; pick another with --listen HOST:PORT",
            ErrorKind::AddrNotAvailable => "that IP is not on this machine; use one of its addresses, 127.0.0.1, or 0.0.0.0 with --advertised-address",
            _ => "check the address given with --listen, GREGOR_LISTEN or `listen` in the config file",
        };
        anyhow::anyhow!("cannot listen on {listen}: {e}; {advice}")
    })
}

/// Logs go to stderr, filtered by RUST_LOG (default `info`), without async-raft's line per
/// message or vote request it failed to send (`raft_noise` counts them). A subscriber installed earlier (by a
/// test harness, say) is kept.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, not in files and pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .finish()
        .with(raft_noise::filter(raft_noise::ASYNC_RAFT_SEND_FAILURES));
    let _ = tracing::subscriber::set_global_default(subscriber);
}
