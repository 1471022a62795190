//! `gregor serve` configuration: a versioned TOML file, `GREGOR_*` environment variables and
//! command-line flags, merged and validated into the [`NodeConfig`] the actors use plus the
//! settings of the client-facing server.
//!
//! Precedence, highest first: flags, environment, file, defaults. Every key can come from any of
//! the three sources; the environment variable of a key is `GREGOR_` plus the key in upper case
//! (`listen` → `GREGOR_LISTEN`). The file must start with `version = 1` and may not contain keys
//! this build does not read: a misspelt or retired key is an error, never silently ignored.
//! [`EXAMPLE_CONFIG`] is a complete file with every key at its default.
//!
//! The cluster keys (`peer_listen`, `join`, ...) are described in [`cluster`]: without
//! `peer_listen` the node runs alone, as `gregor serve` with no arguments does.
//!
//! Paths in the file are relative to the working directory of the process, as on the command
//! line, not to the file.
//!
//! ## `flush`: durability against speed
//! - `always` (default): an `acks=all` produce is answered only after the batch is fsynced on a
//!   majority of its replicas. Concurrent writes of every partition share one fsync (group
//!   commit), so the cost is latency (one disk sync per round) more than throughput. Survives
//!   power loss.
//! - `never`: writes are left in the OS page cache, as Kafka does by default. Much lower latency
//!   on slow disks; survives a crash of the process but not of the machine, unless the other
//!   replicas still hold the data. With one replica, a power cut can lose acknowledged records.

mod balancing;
mod cluster;
mod groups;

pub use cluster::{
    AddressList, ClusterConfig, DEFAULT_CLUSTER_ID, DEFAULT_DEAD_NODE_GRACE_MS,
    DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_METADATA_VOTERS,
};

use crate::server::ServerConfig;
use gregor_actors::operations::{OperationSettings, VoterTarget};
use gregor_actors::{ClusterSettings, NodeConfig};
use gregor_cluster::RaftTuning;
use gregor_protocol::api::MAX_PARTITIONS;
use gregor_protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use gregor_protocol::NodeId;
use gregor_storage::FlushPolicy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The config file format this build reads.
pub const CONFIG_VERSION: u32 = 1;
/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "GREGOR_";

pub const DEFAULT_NODE_ID: u64 = 1;
pub const DEFAULT_DATA_DIR: &str = "./gregor-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9092";
pub const DEFAULT_PRODUCE_LINGER_MS: u64 = 0;
/// Kafka's `offsets.topic.num.partitions`.
pub const DEFAULT_OFFSETS_PARTITIONS: u32 = 50;
pub const DEFAULT_RETENTION_CHECK_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: u32 = 1024;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

// Bounds that catch typos (an extra zero, ms taken for s) rather than tune anything.
const MAX_PRODUCE_LINGER_MS: u64 = 10_000;
const RETENTION_CHECK_INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=24 * 60 * 60 * 1000;
const MIN_CACHE_BYTES: u64 = 1024 * 1024;
/// More shard threads than this is a typo, not a machine.
const MAX_SHARDS: u32 = 1024;
/// A frame must hold at least a default-sized record batch plus its envelope.
const MIN_MAX_FRAME_BYTES: u32 = 64 * 1024;
const MAX_MAX_FRAME_BYTES: u32 = 1024 * 1024 * 1024;
const MAX_IN_FLIGHT_PER_CONNECTION: u32 = 65_536;
const MAX_CONNECTIONS: u32 = 1_000_000;
const HANDSHAKE_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=10 * 60 * 1000;
const IDLE_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1000..=7 * 24 * 60 * 60 * 1000;
const SHUTDOWN_GRACE_MS: std::ops::RangeInclusive<u64> = 0..=10 * 60 * 1000;

/// A complete config file with every key at its default value.
pub const EXAMPLE_CONFIG: &str = r#"# gregor serve configuration
version = 1

# This node's id in the cluster; unique per node, never reused for a different data dir.
node_id = 1
data_dir = "./gregor-data"
# Where the client protocol listens. Port 0 picks a free port.
listen = "127.0.0.1:9092"
# host:port that clients are told to use; defaults to the bound listen address.
# advertised_address = "broker1.example.com:9092"

# "always": acks=all waits for fsync (safe against power loss).
# "never": page cache only (faster; a machine crash can lose acknowledged records).
flush = "always"
# Extra wait for more produce requests before a partition leader writes.
produce_linger_ms = 0
# Partitions of __consumer_offsets; do not change it once groups have committed.
offsets_partitions = 50
retention_check_interval_ms = 30000
cache_bytes = 67108864
# Threads partitions run on, by default one per core but one (at least one): a partition's
# actor and Raft group stay on one of them; connections and the metadata run on the main
# thread. With 1, partitions run on the main thread too.
# shards = 3

# Largest request frame accepted, in bytes.
max_frame_bytes = 16777216
# Requests a connection may have outstanding before the server stops reading from it.
max_in_flight_per_connection = 1024
# Connections served at once; more wait in the kernel's accept queue.
max_connections = 10000
# A new connection that has not sent Hello by then is closed.
handshake_timeout_ms = 10000
# An established connection with no request in flight that sends nothing for this long is
# closed (Kafka's connections.max.idle.ms).
idle_timeout_ms = 600000
# On SIGINT/SIGTERM, how long requests in flight may take before their connections are dropped.
shutdown_grace_ms = 5000

# --- The cluster. Without peer_listen the node runs alone.
# Where peers reach this node: TCP for the node-to-node transport and UDP for gossip, one port.
# peer_listen = "127.0.0.1:9093"
# host:port that peers are told to use; defaults to the bound peer_listen address.
# advertised_peer_address = "broker1.example.com:9093"
# Peer addresses of any members to join through; none founds a new cluster. A node that has
# data restarts as the member it was, whatever this says.
# join = ["broker1.example.com:9093", "broker2.example.com:9093"]
# Replicas of a partition go to distinct racks (or zones) first.
# rack = "eu-west-1a"
# Nodes of another cluster id are refused.
cluster_id = "gregor"
# Nodes voting in the metadata group (1, 3 or 5); the others follow it as learners.
metadata_voters = 3
# How long a node may be dead before its replicas are placed on other nodes.
dead_node_grace_ms = 600000
# Raft: a follower that hears no leader for 1 to 1.5 times this stands for election.
election_timeout_ms = 800
# Raft: how often a leader tells its followers it is alive; at most half the election timeout.
heartbeat_interval_ms = 250
# Raft: a partition with nothing to replicate for this many heartbeat intervals goes quiet
# (no heartbeats, no election timers) until its next write; 0 keeps every partition beating.
quiesce_after_heartbeats = 4

# --- Consumer groups. A member that sends no heartbeat for its session timeout is expelled
# and its partitions go to the others. The timeout is the member's own request, else its
# group's (gregor group config G --session-timeout 10s), else this default; both must keep
# within the bounds (Kafka's group.consumer.*session.timeout.ms).
group_session_timeout_ms = 45000
group_min_session_timeout_ms = 1000
group_max_session_timeout_ms = 1800000

# --- Balancing (the metadata leader). A node leading more partitions than its fair share by
# over this percentage is asked to hand some over, checked this often (Kafka's
# leader.imbalance.per.broker.percentage and leader.imbalance.check.interval.seconds). Each
# hand-over is a leadership transfer to a chosen replica: the partition refuses writes
# (NOT_LEADER, naming the successor) for a vote round, milliseconds. While leaders are
# unbalanced the check repeats every 5 s.
leader_imbalance_percent = 10
leader_balance_interval_ms = 300000
# Most leaderships handed over in one check, and most replica moves (re-placement after a
# dead node's grace, drains) running at once across the cluster.
max_leader_step_downs = 32
max_partition_moves = 8
"#;

/// When acknowledged writes reach the disk; see the module documentation for the trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    Always,
    Never,
}

impl FromStr for Flush {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Flush::Always),
            "never" => Ok(Flush::Never),
            other => Err(format!("expected \"always\" or \"never\", not \"{other}\"")),
        }
    }
}

impl fmt::Display for Flush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flush::Always => "always",
            Flush::Never => "never",
        })
    }
}

impl From<Flush> for FlushPolicy {
    fn from(flush: Flush) -> FlushPolicy {
        match flush {
            Flush::Always => FlushPolicy::Always,
            Flush::Never => FlushPolicy::Never,
        }
    }
}

/// Where a setting came from, so an error can point at the place to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {} (check the path given to --config)", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid", path.display())]
    ParseFile {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {} has no version; add `version = {CONFIG_VERSION}` as its first line", path.display())]
    MissingVersion { path: PathBuf },
    #[error(
        "config file {} is version {found} but this gregor reads version {CONFIG_VERSION}; \
         rewrite it from `gregor serve --help` or use the gregor release that wrote it",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("environment variable {var}={value:?} is not valid: {reason}; fix or unset it")]
    InvalidEnv {
        var: String,
        value: String,
        reason: String,
    },
    #[error("environment variable {var} is not valid UTF-8; fix or unset it")]
    NonUnicodeEnv { var: String },
    #[error("{key} = {value} (from {origin}) is not valid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        origin: Origin,
        reason: String,
    },
}

/// Declares the settings once; the raw struct, the key list and the per-key plumbing follow.
macro_rules! settings {
    ($($(#[$doc:meta])* $key:ident: $ty:ty,)*) => {
        /// One layer of settings (file, environment or flags) before merging: every key optional.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawConfig {
            /// The file format version; read from the file only.
            pub version: Option<u32>,
            $($(#[$doc])* pub $key: Option<$ty>,)*
        }

        /// Every key a config file may contain besides `version`.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        impl RawConfig {
            /// Keys set in `top` replace those in `self`; `origins` records who set each one.
            fn overlay(&mut self, top: RawConfig, origin: impl Fn(&'static str) -> Origin, origins: &mut Origins) {
                $(if let Some(value) = top.$key {
                    self.$key = Some(value);
                    origins.insert(stringify!($key), origin(stringify!($key)));
                })*
            }

            fn from_env(env: &BTreeMap<String, String>) -> Result<RawConfig, ConfigError> {
                Ok(RawConfig {
                    version: None,
                    $($key: parse_env::<$ty>(env, stringify!($key))?,)*
                })
            }
        }
    };
}

settings! {
    node_id: u64,
    data_dir: PathBuf,
    listen: String,
    advertised_address: String,
    flush: Flush,
    produce_linger_ms: u64,
    offsets_partitions: u32,
    retention_check_interval_ms: u64,
    cache_bytes: u64,
    shards: u32,
    max_frame_bytes: u32,
    max_in_flight_per_connection: u32,
    max_connections: u32,
    handshake_timeout_ms: u64,
    idle_timeout_ms: u64,
    shutdown_grace_ms: u64,
    peer_listen: String,
    advertised_peer_address: String,
    join: AddressList,
    cluster_id: String,
    rack: String,
    metadata_voters: u32,
    dead_node_grace_ms: u64,
    election_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    quiesce_after_heartbeats: u32,
    group_session_timeout_ms: u32,
    group_min_session_timeout_ms: u32,
    group_max_session_timeout_ms: u32,
    leader_imbalance_percent: u32,
    leader_balance_interval_ms: u64,
    max_leader_step_downs: u32,
    max_partition_moves: u32,
}

type Origins = BTreeMap<&'static str, Origin>;

/// The environment variable that sets `key`.
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// The flag that sets `key`, for error messages (not every key has one).
fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

fn parse_env<T: FromStr>(
    env: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    let var = env_var_name(key);
    match env.get(&var) {
        None => Ok(None),
        Some(value) => {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: T::Err| ConfigError::InvalidEnv {
                    var,
                    value: value.clone(),
                    reason: e.to_string(),
                })
        }
    }
}

/// The process's `GREGOR_*` variables. Read once, so tests can hand in their own map instead of
/// mutating the process environment.
///
/// # Errors
/// [`ConfigError::NonUnicodeEnv`] if a `GREGOR_*` variable is not valid UTF-8.
pub fn env_snapshot() -> Result<BTreeMap<String, String>, ConfigError> {
    let mut env = BTreeMap::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::NonUnicodeEnv {
                var: name.to_owned(),
            })?;
        env.insert(name.to_owned(), value);
    }
    Ok(env)
}

/// Parses a config file's text. `path` is only used in error messages.
///
/// # Errors
/// Invalid TOML, an unknown key, a value of the wrong type, a missing or unsupported `version`.
pub fn parse_file(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    match raw.version {
        None => Err(ConfigError::MissingVersion {
            path: path.to_owned(),
        }),
        Some(CONFIG_VERSION) => Ok(raw),
        Some(found) => Err(ConfigError::UnsupportedVersion {
            path: path.to_owned(),
            found,
        }),
    }
}

/// The three sources of settings, highest precedence last.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources<'a> {
    pub file: Option<&'a Path>,
    /// `GREGOR_*` variables, usually from [`env_snapshot`].
    pub env: BTreeMap<String, String>,
    pub flags: RawConfig,
}

/// Everything `gregor serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub node: NodeConfig,
    /// `host:port` to bind; port 0 asks the OS for a free port.
    pub listen: String,
    pub server: ServerConfig,
    /// `None`: the node runs alone.
    pub cluster: Option<ClusterConfig>,
    /// The rack (or zone) this node is in, published to the cluster.
    pub rack: Option<String>,
    /// Election timeout and heartbeat interval of every Raft group of the node.
    pub raft: RaftTuning,
    /// Whether `node.advertised_address` is a stand-in copied from `listen`, to be replaced by
    /// the address actually bound.
    advertised_from_listen: bool,
}

impl ServeConfig {
    /// Reads the file (if any), overlays environment and flags, and validates the result.
    ///
    /// # Errors
    /// The first problem found, naming the key, where its value came from and what is accepted.
    pub fn load(sources: ConfigSources<'_>) -> Result<ServeConfig, ConfigError> {
        let mut merged = RawConfig::default();
        let mut origins = Origins::new();
        if let Some(path) = sources.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.to_owned(),
                source,
            })?;
            let file = parse_file(&text, path)?;
            merged.overlay(file, |_| Origin::File(path.to_owned()), &mut origins);
        }
        let env = RawConfig::from_env(&sources.env)?;
        merged.overlay(env, |key| Origin::Env(env_var_name(key)), &mut origins);
        merged.overlay(
            sources.flags,
            |key| Origin::Flag(flag_name(key)),
            &mut origins,
        );
        validate(merged, &origins)
    }

    /// Fills in what is only known once the listener is bound: with port 0 in `listen` and no
    /// explicit advertised address, clients must be told the real port.
    pub fn bound_to(mut self, bound: SocketAddr) -> ServeConfig {
        if self.advertised_from_listen {
            self.node.advertised_address = bound.to_string();
        }
        self
    }
}

fn validate(raw: RawConfig, origins: &Origins) -> Result<ServeConfig, ConfigError> {
    let invalid =
        |key: &'static str, value: &dyn fmt::Display, reason: String| ConfigError::Invalid {
            key,
            value: value.to_string(),
            origin: origins.get(key).cloned().unwrap_or(Origin::Default),
            reason,
        };

    let node_id = raw.node_id.unwrap_or(DEFAULT_NODE_ID);
    if node_id == 0 {
        return Err(invalid("node_id", &node_id, "node ids start at 1".into()));
    }

    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", &"\"\"", "give a directory path".into()));
    }

    let listen = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen_addr =
        HostPort::parse(&listen).map_err(|reason| invalid("listen", &listen, reason))?;

    let advertised_from_listen = raw.advertised_address.is_none();
    let advertised = match raw.advertised_address {
        Some(address) => {
            let parsed = HostPort::parse(&address)
                .map_err(|reason| invalid("advertised_address", &address, reason))?;
            if parsed.is_wildcard() {
                return Err(invalid(
                    "advertised_address",
                    &address,
                    "clients cannot connect to a wildcard address; give this node's hostname or IP"
                        .into(),
                ));
            }
            if parsed.port == 0 {
                return Err(invalid(
                    "advertised_address",
                    &address,
                    "port 0 cannot be connected to; give the port clients should use".into(),
                ));
            }
            address
        }
        None if listen_addr.is_wildcard() => {
            return Err(invalid(
                "listen",
                &listen,
                "listening on a wildcard address needs an advertised_address that clients can \
                 reach (--advertised-address HOST:PORT)"
                    .into(),
            ));
        }
        None => listen.clone(),
    };

    let produce_linger_ms = raw.produce_linger_ms.unwrap_or(DEFAULT_PRODUCE_LINGER_MS);
    if produce_linger_ms > MAX_PRODUCE_LINGER_MS {
        return Err(invalid(
            "produce_linger_ms",
            &produce_linger_ms,
            format!("at most {MAX_PRODUCE_LINGER_MS} ms; a few ms is usually enough"),
        ));
    }

    let offsets_partitions = raw.offsets_partitions.unwrap_or(DEFAULT_OFFSETS_PARTITIONS);
    if !(1..=MAX_PARTITIONS).contains(&offsets_partitions) {
        return Err(invalid(
            "offsets_partitions",
            &offsets_partitions,
            format!("must be between 1 and {MAX_PARTITIONS}"),
        ));
    }

    let retention_check_interval_ms = raw
        .retention_check_interval_ms
        .unwrap_or(DEFAULT_RETENTION_CHECK_INTERVAL_MS);
    if !RETENTION_CHECK_INTERVAL_MS.contains(&retention_check_interval_ms) {
        return Err(invalid(
            "retention_check_interval_ms",
            &retention_check_interval_ms,
            format!(
                "must be between {} ms and {} ms (one day)",
                RETENTION_CHECK_INTERVAL_MS.start(),
                RETENTION_CHECK_INTERVAL_MS.end()
            ),
        ));
    }

    let cache_bytes = raw.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
    if cache_bytes < MIN_CACHE_BYTES {
        return Err(invalid(
            "cache_bytes",
            &cache_bytes,
            format!("at least {MIN_CACHE_BYTES} bytes (1 MiB); the value is in bytes, not MiB"),
        ));
    }

    let shards = raw.shards.unwrap_or_else(default_shards);
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(invalid(
            "shards",
            &shards,
            format!("must be between 1 and {MAX_SHARDS} (the default is one per core but one)"),
        ));
    }

    let max_frame_bytes = raw.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
    if !(MIN_MAX_FRAME_BYTES..=MAX_MAX_FRAME_BYTES).contains(&max_frame_bytes) {
        return Err(invalid(
            "max_frame_bytes",
            &max_frame_bytes,
            format!(
                "must be between {MIN_MAX_FRAME_BYTES} (64 KiB) and {MAX_MAX_FRAME_BYTES} (1 GiB)"
            ),
        ));
    }

    let max_in_flight = raw
        .max_in_flight_per_connection
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION);
    if !(1..=MAX_IN_FLIGHT_PER_CONNECTION).contains(&max_in_flight) {
        return Err(invalid(
            "max_in_flight_per_connection",
            &max_in_flight,
            format!("must be between 1 and {MAX_IN_FLIGHT_PER_CONNECTION}"),
        ));
    }

    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
        return Err(invalid(
            "max_connections",
            &max_connections,
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        ));
    }

    let ms_in = |key: &'static str,
                 value: Option<u64>,
                 default: std::time::Duration,
                 range: std::ops::RangeInclusive<u64>| {
        let ms = value.unwrap_or(default.as_millis() as u64);
        if range.contains(&ms) {
            Ok(std::time::Duration::from_millis(ms))
        } else {
            Err(invalid(
                key,
                &ms,
                format!("must be between {} and {} ms", range.start(), range.end()),
            ))
        }
    };
    let handshake_timeout = ms_in(
        "handshake_timeout_ms",
        raw.handshake_timeout_ms,
        crate::server::DEFAULT_HANDSHAKE_TIMEOUT,
        HANDSHAKE_TIMEOUT_MS,
    )?;
    let idle_timeout = ms_in(
        "idle_timeout_ms",
        raw.idle_timeout_ms,
        crate::server::DEFAULT_IDLE_TIMEOUT,
        IDLE_TIMEOUT_MS,
    )?;
    let shutdown_grace = ms_in(
        "shutdown_grace_ms",
        raw.shutdown_grace_ms,
        crate::server::DEFAULT_SHUTDOWN_GRACE,
        SHUTDOWN_GRACE_MS,
    )?;

    let clustered = cluster::validate(cluster::RawCluster {
        peer_listen: raw.peer_listen,
        advertised_peer_address: raw.advertised_peer_address,
        join: raw.join,
        cluster_id: raw.cluster_id,
        rack: raw.rack,
        metadata_voters: raw.metadata_voters,
        dead_node_grace_ms: raw.dead_node_grace_ms,
        election_timeout_ms: raw.election_timeout_ms,
        heartbeat_interval_ms: raw.heartbeat_interval_ms,
        quiesce_after_heartbeats: raw.quiesce_after_heartbeats,
    })
    .map_err(|(key, value, reason)| invalid(key, &value, reason))?;

    let group_config = groups::validate(groups::RawGroups {
        session_timeout_ms: raw.group_session_timeout_ms,
        min_session_timeout_ms: raw.group_min_session_timeout_ms,
        max_session_timeout_ms: raw.group_max_session_timeout_ms,
    })
    .map_err(|(key, value, reason)| invalid(key, &value, reason))?;

    let mut cluster = cluster_settings(&clustered);
    balancing::apply(
        &balancing::RawBalancing {
            leader_imbalance_percent: raw.leader_imbalance_percent,
            leader_balance_interval_ms: raw.leader_balance_interval_ms,
            max_leader_step_downs: raw.max_leader_step_downs,
            max_partition_moves: raw.max_partition_moves,
        },
        &mut cluster.operations,
    )
    .map_err(|(key, value, reason)| invalid(key, &value, reason))?;

    Ok(ServeConfig {
        node: NodeConfig {
            node_id: NodeId(node_id),
            data_dir,
            advertised_address: advertised,
            flush: raw.flush.unwrap_or(Flush::Always).into(),
            produce_linger_ms,
            offsets_partitions,
            retention_check_interval_ms,
            cache_bytes,
            cluster,
            groups: group_config,
            shards: shards as usize,
        },
        listen,
        server: ServerConfig {
            max_frame_bytes,
            max_in_flight_per_connection: max_in_flight as usize,
            max_connections: max_connections as usize,
            handshake_timeout,
            idle_timeout,
            shutdown_grace,
            ..ServerConfig::default()
        },
        cluster: clustered.cluster,
        rack: clustered.rack,
        raft: clustered.raft,
        advertised_from_listen,
    })
}

/// One shard per core the process may use but one (at least one): the main thread (client
/// connections, decoding requests and writing replies), fjall's workers, group commit and the
/// storage threads are busy threads too. On two cores two shards measured worse than one
/// (BENCHMARKS.md, "Shards"): about 5 points of a core more for the hand-overs, a higher
/// median, no more throughput.
fn default_shards() -> u32 {
    default_shards_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn default_shards_for(cores: usize) -> u32 {
    u32::try_from(cores.saturating_sub(1))
        .unwrap_or(MAX_SHARDS)
        .clamp(1, MAX_SHARDS)
}

/// What the node's actors need of the cluster settings: its rack, the dead-node grace and the
/// metadata voter count.
fn cluster_settings(clustered: &cluster::ValidCluster) -> ClusterSettings {
    let mut operations = OperationSettings::default();
    if let Some(cluster) = &clustered.cluster {
        operations.dead_grace = cluster.dead_node_grace;
        operations.voters = VoterTarget::Count(cluster.metadata_voters as usize);
    }
    ClusterSettings {
        rack: clustered.rack.clone(),
        operations,
        ..ClusterSettings::default()
    }
}

/// A `host:port` checked for shape only; names are resolved when binding or connecting.
#[derive(Debug)]
struct HostPort<'a> {
    host: &'a str,
    port: u16,
}

impl<'a> HostPort<'a> {
    fn parse(s: &'a str) -> Result<HostPort<'a>, String> {
        const SHAPE: &str = "expected HOST:PORT, e.g. 127.0.0.1:9092 or [::1]:9092";
        let (host, port) = s.rsplit_once(':').ok_or_else(|| SHAPE.to_owned())?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port \"{port}\" is not a number from 0 to 65535; {SHAPE}"))?;
        let valid_host = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && !host.contains(':')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        };
        if !valid_host {
            return Err(format!(
                "\"{host}\" is not a hostname or IP address; {SHAPE}"
            ));
        }
        Ok(HostPort { host, port })
    }

    fn is_wildcard(&self) -> bool {
        let ip = self.host.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: RawConfig,
    ) -> Result<ServeConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gregor.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).expect("write config");
        }
        ServeConfig::load(ConfigSources {
            file: file.map(|_| path.as_path()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags,
        })
    }

    fn invalid_key(err: ConfigError) -> (&'static str, Origin) {
        match err {
            ConfigError::Invalid { key, origin, .. } => (key, origin),
            other => panic!("expected an invalid value, got {other}"),
        }
    }

    #[test]
    fn no_sources_gives_the_documented_defaults() {
        let config = load(None, &[], RawConfig::default()).expect("defaults are valid");
        assert_eq!(config.node.node_id, NodeId(1));
        assert_eq!(config.node.data_dir, PathBuf::from("./gregor-data"));
        assert_eq!(config.listen, "127.0.0.1:9092");
        assert_eq!(config.node.advertised_address, "127.0.0.1:9092");
        assert_eq!(config.node.flush, FlushPolicy::Always);
        assert_eq!(config.node.produce_linger_ms, 0);
        assert_eq!(config.node.offsets_partitions, 50);
        assert_eq!(config.node.retention_check_interval_ms, 30_000);
        assert_eq!(config.node.cache_bytes, 64 * 1024 * 1024);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.node.shards, cores.saturating_sub(1).max(1));
        assert_eq!(config.server.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(config.server.max_in_flight_per_connection, 1024);
        assert_eq!(config.server.max_connections, 10_000);
        assert_eq!(config.server.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.server.idle_timeout, Duration::from_secs(600));
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.cluster, None);
        assert_eq!(config.rack, None);
        assert_eq!(config.raft.election_timeout_min_ms, 800);
        assert_eq!(config.raft.election_timeout_max_ms, 1200);
        assert_eq!(config.raft.heartbeat_interval_ms, 250);
    }

    #[test]
    fn example_file_parses_to_the_defaults() {
        let raw = parse_file(EXAMPLE_CONFIG, Path::new("example.toml")).expect("example parses");
        let from_file = load(Some(EXAMPLE_CONFIG), &[], RawConfig::default()).expect("valid");
        let defaults = load(None, &[], RawConfig::default()).expect("valid");
        assert_eq!(
            format!("{:?}", from_file.node),
            format!("{:?}", defaults.node)
        );
        assert_eq!(from_file.server, defaults.server);
        // Every key is in the example: those without a default commented out, the rest set.
        let commented_out = [
            "advertised_address",
            "shards",
            "peer_listen",
            "advertised_peer_address",
            "join",
            "rack",
        ];
        for key in KEYS {
            let line = if commented_out.contains(key) {
                format!("\n# {key} = ")
            } else {
                format!("\n{key} = ")
            };
            assert!(
                EXAMPLE_CONFIG.contains(&line),
                "{key} is not in the example"
            );
        }
        let uncommented: String = EXAMPLE_CONFIG
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(setting) if KEYS.iter().any(|k| setting.starts_with(&format!("{k} = "))) => {
                    setting
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let everything = parse_file(&uncommented, Path::new("all.toml")).expect("all keys parse");
        assert!(everything.peer_listen.is_some() && everything.join.is_some());
        assert_eq!(raw.version, Some(CONFIG_VERSION));
    }

    #[test]
    fn file_values_are_read() {
        let text = r#"
            version = 1
            node_id = 7
            data_dir = "/var/lib/gregor"
            listen = "0.0.0.0:19092"
            advertised_address = "broker7.example.com:19092"
            flush = "never"
            produce_linger_ms = 5
            offsets_partitions = 3
            retention_check_interval_ms = 1000
            cache_bytes = 2097152
            max_frame_bytes = 1048576
            max_in_flight_per_connection = 8
            max_connections = 100
            handshake_timeout_ms = 2500
            idle_timeout_ms = 60000
            shutdown_grace_ms = 0
            peer_listen = "0.0.0.0:19093"
            advertised_peer_address = "broker7.example.com:19093"
            join = ["broker1.example.com:19093", "10.0.0.2:19093"]
            cluster_id = "prod-eu"
            rack = "eu-1a"
            metadata_voters = 5
            dead_node_grace_ms = 60000
            election_timeout_ms = 2000
            heartbeat_interval_ms = 500
        "#;
        let config = load(Some(text), &[], RawConfig::default()).expect("valid");
        assert_eq!(config.node.node_id, NodeId(7));
        assert_eq!(config.node.data_dir, PathBuf::from("/var/lib/gregor"));
        assert_eq!(config.listen, "0.0.0.0:19092");
        assert_eq!(config.node.advertised_address, "broker7.example.com:19092");
        assert_eq!(config.node.flush, FlushPolicy::Never);
        assert_eq!(config.node.produce_linger_ms, 5);
        assert_eq!(config.node.offsets_partitions, 3);
        assert_eq!(config.node.retention_check_interval_ms, 1000);
        assert_eq!(config.node.cache_bytes, 2 * 1024 * 1024);
        assert_eq!(config.server.max_frame_bytes, 1024 * 1024);
        assert_eq!(config.server.max_in_flight_per_connection, 8);
        assert_eq!(config.server.max_connections, 100);
        assert_eq!(config.server.handshake_timeout, Duration::from_millis(2500));
        assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.server.shutdown_grace, Duration::ZERO);
        assert_eq!(
            config.cluster,
            Some(ClusterConfig {
                peer_listen: "0.0.0.0:19093".into(),
                advertised_peer_address: Some("broker7.example.com:19093".into()),
                join: vec!["broker1.example.com:19093".into(), "10.0.0.2:19093".into()],
                cluster_id: "prod-eu".into(),
                metadata_voters: 5,
                dead_node_grace: Duration::from_secs(60),
            })
        );
        assert_eq!(config.rack.as_deref(), Some("eu-1a"));
        assert_eq!(config.raft.election_timeout_min_ms, 2000);
        assert_eq!(config.raft.election_timeout_max_ms, 3000);
        assert_eq!(config.raft.heartbeat_interval_ms, 500);
    }

    #[test]
    fn join_comes_from_a_comma_separated_flag_or_variable() {
        let config = load(
            None,
            &[
                ("GREGOR_PEER_LISTEN", "127.0.0.1:7001"),
                ("GREGOR_JOIN", "127.0.0.1:7002, 127.0.0.1:7003"),
            ],
            RawConfig::default(),
        )
        .expect("valid");
        let cluster = config.cluster.expect("a cluster node");
        assert_eq!(cluster.join, ["127.0.0.1:7002", "127.0.0.1:7003"]);
        assert_eq!(cluster.peer_listen, "127.0.0.1:7001");
        assert_eq!(cluster.advertised_peer_address, None);
        assert_eq!(cluster.cluster_id, "gregor");
        assert_eq!(cluster.metadata_voters, 3);
        assert_eq!(cluster.dead_node_grace, Duration::from_secs(600));
    }

    #[test]
    fn cluster_keys_without_a_peer_address_say_to_add_one() {
        for (line, expected_key) in [
            ("join = \"127.0.0.1:7002\"", "join"),
            (
                "advertised_peer_address = \"10.0.0.1:7001\"",
                "advertised_peer_address",
            ),
        ] {
            let err = load(
                Some(&format!("version = 1\n{line}\n")),
                &[],
                RawConfig::default(),
            )
            .expect_err(line);
            assert!(err.to_string().contains("--peer-listen"), "{err}");
            assert_eq!(invalid_key(err).0, expected_key);
        }
    }

    #[test]
    fn unknown_file_key_is_rejected_with_its_name() {
        let err = load(
            Some("version = 1\nlisten_address = \"x:1\"\n"),
            &[],
            RawConfig::default(),
        )
        .expect_err("unknown key");
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");
        let cause = std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(cause.contains("listen_address"), "{cause}");
    }

    #[test]
    fn file_without_supported_version_is_rejected() {
        let err = load(Some("node_id = 2\n"), &[], RawConfig::default()).expect_err("no version");
        assert!(matches!(err, ConfigError::MissingVersion { .. }), "{err}");
        let err = load(Some("version = 2\n"), &[], RawConfig::default()).expect_err("version 2");
        assert!(
            matches!(err, ConfigError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_in_file_is_rejected() {
        let err = load(
            Some("version = 1\nnode_id = \"one\"\n"),
            &[],
            RawConfig::default(),
        )
        .expect_err("string node id");
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");
        let err = load(
            Some("version = 1\nflush = \"sometimes\"\n"),
            &[],
            RawConfig::default(),
        )
        .expect_err("bad flush");
        let cause = std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(cause.contains("sometimes"), "{cause}");
    }

    #[test]
    fn missing_file_says_which_path() {
        let err = ServeConfig::load(ConfigSources {
            file: Some(Path::new("/nonexistent/gregor.toml")),
            ..ConfigSources::default()
        })
        .expect_err("missing file");
        assert!(matches!(err, ConfigError::ReadFile { .. }));
        assert!(
            err.to_string().contains("/nonexistent/gregor.toml"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let file = "version = 1\nnode_id = 2\nlisten = \"127.0.0.1:1000\"\nflush = \"always\"\n";
        let env = [
            ("GREGOR_NODE_ID", "3"),
            ("GREGOR_FLUSH", "never"),
            ("GREGOR_UNRELATED", "x"),
        ];
        let config = load(Some(file), &env, RawConfig::default()).expect("valid");
        assert_eq!(config.node.node_id, NodeId(3));
        assert_eq!(config.node.flush, FlushPolicy::Never);
        assert_eq!(config.listen, "127.0.0.1:1000");
    }

    #[test]
    fn flags_override_env_and_file() {
        let file = "version = 1\nnode_id = 2\ndata_dir = \"/file\"\n";
        let env = [("GREGOR_NODE_ID", "3"), ("GREGOR_DATA_DIR", "/env")];
        let flags = RawConfig {
            node_id: Some(4),
            ..RawConfig::default()
        };
        let config = load(Some(file), &env, flags).expect("valid");
        assert_eq!(config.node.node_id, NodeId(4));
        assert_eq!(config.node.data_dir, PathBuf::from("/env"));
    }

    #[test]
    fn unparsable_env_value_names_the_variable() {
        let err = load(
            None,
            &[("GREGOR_CACHE_BYTES", "64MiB")],
            RawConfig::default(),
        )
        .expect_err("not a number");
        match &err {
            ConfigError::InvalidEnv { var, .. } => assert_eq!(var, "GREGOR_CACHE_BYTES"),
            other => panic!("expected InvalidEnv, got {other}"),
        }
    }

    #[test]
    fn invalid_values_name_key_and_origin() {
        let flags = RawConfig {
            node_id: Some(0),
            ..RawConfig::default()
        };
        assert_eq!(
            invalid_key(load(None, &[], flags).expect_err("node 0")),
            ("node_id", Origin::Flag("--node-id".into()))
        );
        let (key, origin) = invalid_key(
            load(
                None,
                &[("GREGOR_LISTEN", "localhost")],
                RawConfig::default(),
            )
            .expect_err("no port"),
        );
        assert_eq!(
            (key, origin),
            ("listen", Origin::Env("GREGOR_LISTEN".into()))
        );

        let bad_files = [
            ("listen = \"host:99999\"", "listen"),
            ("listen = \"bad host:1\"", "listen"),
            ("listen = \"[::1:1\"", "listen"),
            (
                "advertised_address = \"0.0.0.0:9092\"",
                "advertised_address",
            ),
            ("advertised_address = \"broker:0\"", "advertised_address"),
            ("produce_linger_ms = 60000", "produce_linger_ms"),
            ("offsets_partitions = 0", "offsets_partitions"),
            ("offsets_partitions = 10001", "offsets_partitions"),
            (
                "retention_check_interval_ms = 0",
                "retention_check_interval_ms",
            ),
            ("cache_bytes = 64", "cache_bytes"),
            ("shards = 0", "shards"),
            ("shards = 100000", "shards"),
            ("max_frame_bytes = 100", "max_frame_bytes"),
            (
                "max_in_flight_per_connection = 0",
                "max_in_flight_per_connection",
            ),
            ("max_connections = 0", "max_connections"),
            ("handshake_timeout_ms = 5", "handshake_timeout_ms"),
            ("idle_timeout_ms = 10", "idle_timeout_ms"),
            ("shutdown_grace_ms = 3600000", "shutdown_grace_ms"),
            ("data_dir = \"\"", "data_dir"),
            ("peer_listen = \"nohost\"", "peer_listen"),
            ("peer_listen = \"0.0.0.0:7001\"", "peer_listen"),
            (
                "peer_listen = \"127.0.0.1:7001\"\nadvertised_peer_address = \"[::]:7001\"",
                "advertised_peer_address",
            ),
            (
                "peer_listen = \"127.0.0.1:7001\"\njoin = [\"127.0.0.1:0\"]",
                "join",
            ),
            ("join = [\"host\"]", "join"),
            ("cluster_id = \"\"", "cluster_id"),
            ("cluster_id = \"my cluster\"", "cluster_id"),
            ("rack = \"a/b\"", "rack"),
            ("metadata_voters = 2", "metadata_voters"),
            ("metadata_voters = 7", "metadata_voters"),
            ("dead_node_grace_ms = 10", "dead_node_grace_ms"),
            ("election_timeout_ms = 10", "election_timeout_ms"),
            ("heartbeat_interval_ms = 500", "heartbeat_interval_ms"),
            ("heartbeat_interval_ms = 1", "heartbeat_interval_ms"),
        ];
        for (line, expected_key) in bad_files {
            let err = load(
                Some(&format!("version = 1\n{line}\n")),
                &[],
                RawConfig::default(),
            )
            .expect_err(line);
            let (key, origin) = invalid_key(err);
            assert_eq!(key, expected_key, "{line}");
            assert!(matches!(origin, Origin::File(_)), "{line}");
        }
    }

    #[test]
    fn wildcard_listen_needs_an_advertised_address() {
        let flags = RawConfig {
            listen: Some("0.0.0.0:9092".into()),
            ..RawConfig::default()
        };
        let (key, _) = invalid_key(load(None, &[], flags.clone()).expect_err("wildcard"));
        assert_eq!(key, "listen");
        let flags = RawConfig {
            advertised_address: Some("10.0.0.5:9092".into()),
            ..flags
        };
        let config = load(None, &[], flags).expect("advertised given");
        assert_eq!(config.node.advertised_address, "10.0.0.5:9092");
        let ipv6 = RawConfig {
            listen: Some("[::]:9092".into()),
            ..RawConfig::default()
        };
        assert!(load(None, &[], ipv6).is_err());
    }

    #[test]
    fn port_zero_advertises_the_bound_port_unless_told_otherwise() {
        let flags = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            ..RawConfig::default()
        };
        let bound: SocketAddr = "127.0.0.1:40123".parse().expect("addr");
        let config = load(None, &[], flags.clone())
            .expect("valid")
            .bound_to(bound);
        assert_eq!(config.node.advertised_address, "127.0.0.1:40123");
        let explicit = RawConfig {
            advertised_address: Some("gw:9092".into()),
            ..flags
        };
        let config = load(None, &[], explicit).expect("valid").bound_to(bound);
        assert_eq!(config.node.advertised_address, "gw:9092");
    }

    #[test]
    fn the_default_leaves_a_core_to_the_main_thread() {
        assert_eq!(default_shards_for(0), 1);
        assert_eq!(default_shards_for(1), 1);
        assert_eq!(default_shards_for(2), 1);
        assert_eq!(default_shards_for(8), 7);
        assert_eq!(default_shards_for(1_000_000), MAX_SHARDS);
    }

    #[test]
    fn shards_come_from_the_flag_the_environment_or_the_file() {
        let file = "version = 1\nshards = 3\n";
        assert_eq!(
            load(Some(file), &[], RawConfig::default())
                .expect("valid")
                .node
                .shards,
            3
        );
        let env = [("GREGOR_SHARDS", "4")];
        assert_eq!(
            load(Some(file), &env, RawConfig::default())
                .expect("valid")
                .node
                .shards,
            4
        );
        let flag = RawConfig {
            shards: Some(1),
            ..RawConfig::default()
        };
        assert_eq!(load(Some(file), &env, flag).expect("valid").node.shards, 1);
    }

    #[test]
    fn every_key_has_an_env_variable() {
        for key in KEYS {
            let var = env_var_name(key);
            assert!(
                var.starts_with("GREGOR_")
                    && var.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            );
        }
        assert_eq!(env_var_name("max_frame_bytes"), "GREGOR_MAX_FRAME_BYTES");
    }
}
