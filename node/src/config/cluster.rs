//! The cluster half of `gregor serve`'s settings: where peers reach this node, whom it joins,
//! and the timing of gossip and Raft.
//!
//! A node runs in a cluster when `peer_listen` is set. The peer port carries both the
//! node-to-node TCP transport and chitchat's UDP gossip (one port number, two protocols). A
//! node with no `join` founds a new cluster on a pristine data directory; a node given the peer
//! address of any member joins that member's cluster. A node with data restarts as the member
//! it was, whatever `join` says.

use super::HostPort;
use gregor_cluster::RaftTuning;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_CLUSTER_ID: &str = "gregor";
pub const DEFAULT_METADATA_VOTERS: u32 = 3;
/// Ten minutes, as issue and docs say: long enough that a reboot or a rolling upgrade does not
/// move data, short enough that a lost machine is re-replicated the same hour.
pub const DEFAULT_DEAD_NODE_GRACE_MS: u64 = 10 * 60 * 1000;
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 800;
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 250;

const METADATA_VOTERS: [u32; 3] = [1, 3, 5];
const DEAD_NODE_GRACE_MS: std::ops::RangeInclusive<u64> = 1_000..=7 * 24 * 60 * 60 * 1000;
const ELECTION_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 50..=60_000;
const MIN_HEARTBEAT_INTERVAL_MS: u64 = 10;
/// Longer idle spells before going quiet buy nothing: a group that waits that long is idle.
const MAX_QUIESCE_AFTER_HEARTBEATS: u32 = 1_000;
const MAX_NAME_CHARS: usize = 64;

/// A list of `HOST:PORT`s: a TOML array, or one string separated by commas (as in flags and
/// environment variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressList(pub Vec<String>);

impl FromStr for AddressList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(AddressList(
            s.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl fmt::Display for AddressList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl<'de> Deserialize<'de> for AddressList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Form::deserialize(deserializer)? {
            Form::One(s) => s.parse().unwrap_or_default(),
            Form::Many(list) => AddressList(list),
        })
    }
}

/// The cluster settings, validated. Names are resolved to socket addresses only when the node
/// starts (see `serve`), so a config can be checked on a machine that cannot resolve them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `host:port` to bind for peers: TCP for the node transport, UDP for gossip.
    pub peer_listen: String,
    /// `host:port` peers are told to use; `None`: the bound peer address.
    pub advertised_peer_address: Option<String>,
    /// Peer addresses of members to join through; empty founds a new cluster.
    pub join: Vec<String>,
    /// Nodes of another cluster are refused at the transport's handshake and by gossip.
    pub cluster_id: String,
    /// How many nodes vote in the metadata group (1, 3 or 5); the rest follow as learners.
    pub metadata_voters: u32,
    /// How long a node may be dead before the metadata leader moves its replicas elsewhere.
    pub dead_node_grace: Duration,
}

/// What the cluster keys of one config layer hold, before validation.
pub(super) struct RawCluster {
    pub peer_listen: Option<String>,
    pub advertised_peer_address: Option<String>,
    pub join: Option<AddressList>,
    pub cluster_id: Option<String>,
    pub rack: Option<String>,
    pub metadata_voters: Option<u32>,
    pub dead_node_grace_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    pub quiesce_after_heartbeats: Option<u32>,
}

/// The validated cluster settings: `None` for a node alone, the rack (meaningful alone too:
/// it is published with the node) and the Raft timing.
pub(super) struct ValidCluster {
    pub cluster: Option<ClusterConfig>,
    pub rack: Option<String>,
    pub raft: RaftTuning,
}

/// A failed check: the key, its value and why.
pub(super) type Invalid = (&'static str, String, String);

pub(super) fn validate(raw: RawCluster) -> Result<ValidCluster, Invalid> {
    let rack = raw.rack.map(|rack| name("rack", rack)).transpose()?;
    let mut raft = raft_tuning(raw.election_timeout_ms, raw.heartbeat_interval_ms)?;
    if let Some(rounds) = raw.quiesce_after_heartbeats {
        if rounds > MAX_QUIESCE_AFTER_HEARTBEATS {
            return Err((
                "quiesce_after_heartbeats",
                rounds.to_string(),
                format!(
                    "must be at most {MAX_QUIESCE_AFTER_HEARTBEATS}; 0 keeps every partition \
                     beating"
                ),
            ));
        }
        raft.quiesce_after_heartbeats = rounds;
    }
    let cluster_id = name(
        "cluster_id",
        raw.cluster_id
            .unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_owned()),
    )?;
    let metadata_voters = raw.metadata_voters.unwrap_or(DEFAULT_METADATA_VOTERS);
    if !METADATA_VOTERS.contains(&metadata_voters) {
        return Err((
            "metadata_voters",
            metadata_voters.to_string(),
            "must be 1, 3 or 5: an odd count, so that a majority is well defined".into(),
        ));
    }
    let grace_ms = raw.dead_node_grace_ms.unwrap_or(DEFAULT_DEAD_NODE_GRACE_MS);
    if !DEAD_NODE_GRACE_MS.contains(&grace_ms) {
        return Err((
            "dead_node_grace_ms",
            grace_ms.to_string(),
            format!(
                "must be between {} ms and {} ms (a week)",
                DEAD_NODE_GRACE_MS.start(),
                DEAD_NODE_GRACE_MS.end()
            ),
        ));
    }
    let join = raw.join.map(|list| list.0).unwrap_or_default();
    for address in &join {
        peer_address("join", address)?;
    }
    let Some(peer_listen) = raw.peer_listen else {
        if let Some(first) = join.first() {
            return Err((
                "join",
                first.clone(),
                "joining a cluster needs this node's own peer address too: add \
                 --peer-listen HOST:PORT"
                    .into(),
            ));
        }
        if let Some(advertised) = raw.advertised_peer_address {
            return Err((
                "advertised_peer_address",
                advertised,
                "only a node of a cluster has a peer address: add --peer-listen HOST:PORT".into(),
            ));
        }
        return Ok(ValidCluster {
            cluster: None,
            rack,
            raft,
        });
    };
    let bind = HostPort::parse(&peer_listen)
        .map_err(|reason| ("peer_listen", peer_listen.clone(), reason))?;
    let advertised_peer_address = match raw.advertised_peer_address {
        Some(advertised) => {
            let parsed = peer_address("advertised_peer_address", &advertised)?;
            if parsed.is_wildcard() {
                return Err((
                    "advertised_peer_address",
                    advertised,
                    "peers cannot connect to a wildcard address; give this node's hostname or IP"
                        .into(),
                ));
            }
            Some(advertised)
        }
        None if bind.is_wildcard() => {
            return Err((
                "peer_listen",
                peer_listen,
                "listening on a wildcard address needs an advertised_peer_address that peers \
                 can reach (--advertised-peer-address HOST:PORT)"
                    .into(),
            ));
        }
        None => None,
    };
    Ok(ValidCluster {
        cluster: Some(ClusterConfig {
            peer_listen,
            advertised_peer_address,
            join,
            cluster_id,
            metadata_voters,
            dead_node_grace: Duration::from_millis(grace_ms),
        }),
        rack,
        raft,
    })
}

/// An address peers dial: a host and a port that is not 0.
fn peer_address<'a>(key: &'static str, address: &'a str) -> Result<HostPort<'a>, Invalid> {
    let parsed = HostPort::parse(address).map_err(|reason| (key, address.to_owned(), reason))?;
    if parsed.port == 0 {
        return Err((
            key,
            address.to_owned(),
            "port 0 cannot be connected to; give the peer port the node listens on".into(),
        ));
    }
    Ok(parsed)
}

/// A cluster id or rack: short, printable, no spaces (it travels in gossip and handshakes).
fn name(key: &'static str, value: String) -> Result<String, Invalid> {
    let valid = !value.is_empty()
        && value.chars().count() <= MAX_NAME_CHARS
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(value)
    } else {
        Err((
            key,
            format!("{value:?}"),
            format!("use 1 to {MAX_NAME_CHARS} characters from A-Z, a-z, 0-9, '.', '_' and '-'"),
        ))
    }
}

/// Raft timing: the election timeout is drawn from `[t, 1.5 t)` per election (async-raft's
/// jitter, which keeps candidates from splitting the vote forever); heartbeats must come often
/// enough that a healthy leader is never suspected.
fn raft_tuning(
    election_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
) -> Result<RaftTuning, Invalid> {
    let election = election_timeout_ms.unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS);
    if !ELECTION_TIMEOUT_MS.contains(&election) {
        return Err((
            "election_timeout_ms",
            election.to_string(),
            format!(
                "must be between {} and {} ms",
                ELECTION_TIMEOUT_MS.start(),
                ELECTION_TIMEOUT_MS.end()
            ),
        ));
    }
    let heartbeat = heartbeat_interval_ms.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
    let max_heartbeat = election / 2;
    if !(MIN_HEARTBEAT_INTERVAL_MS..=max_heartbeat).contains(&heartbeat) {
        return Err((
            "heartbeat_interval_ms",
            heartbeat.to_string(),
            format!(
                "must be between {MIN_HEARTBEAT_INTERVAL_MS} ms and half the election timeout \
                 ({max_heartbeat} ms), so that a leader's heartbeats arrive before followers \
                 give up on it"
            ),
        ));
    }
    Ok(RaftTuning {
        election_timeout_min_ms: election,
        election_timeout_max_ms: election + election / 2,
        heartbeat_interval_ms: heartbeat,
        ..RaftTuning::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_come_as_commas_or_arrays() {
        assert_eq!(
            " a:1, b:2 ,,".parse::<AddressList>(),
            Ok(AddressList(vec!["a:1".into(), "b:2".into()]))
        );
        #[derive(Deserialize)]
        struct Doc {
            join: AddressList,
        }
        let doc: Doc = toml::from_str("join = [\"a:1\", \"b:2\"]").expect("array");
        assert_eq!(doc.join.0, ["a:1", "b:2"]);
        let doc: Doc = toml::from_str("join = \"a:1,b:2\"").expect("string");
        assert_eq!(doc.join.0, ["a:1", "b:2"]);
    }

    #[test]
    fn the_default_election_timeout_matches_the_cluster_crates_defaults() {
        let tuning = raft_tuning(None, None).expect("defaults are valid");
        let defaults = RaftTuning::default();
        assert_eq!(
            (
                tuning.election_timeout_min_ms,
                tuning.election_timeout_max_ms,
                tuning.heartbeat_interval_ms
            ),
            (
                defaults.election_timeout_min_ms,
                defaults.election_timeout_max_ms,
                defaults.heartbeat_interval_ms
            )
        );
    }
}
