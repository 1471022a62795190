//! What each node publishes by gossip, and its encoding as chitchat key-value pairs.
//!
//! Every key starts with [`KEY_PREFIX`]; values are plain text, so `chitchat` state dumps stay
//! readable. The whole set is a few hundred bytes: chitchat sends a rejoining node everything,
//! and Quickwit saw multi-megabyte states stall that. Nothing here is authoritative: replica
//! sets, leaders and offsets belong to the metadata Raft group; these are liveness hints.

use gregor_storage::NodeId;
use std::net::SocketAddr;

/// Every key this crate publishes starts with it.
pub const KEY_PREFIX: &str = "gregor.";

const NODE: &str = "gregor.node";
const CLIENT_ADDR: &str = "gregor.client_addr";
const PEER_ADDR: &str = "gregor.peer_addr";
const VERSION: &str = "gregor.version";
const RACK: &str = "gregor.rack";
const READY: &str = "gregor.ready";
const REPLICAS: &str = "gregor.replicas";
const LEADERS: &str = "gregor.leaders";
const DISK_USED: &str = "gregor.disk_used_bytes";
const DISK_CAPACITY: &str = "gregor.disk_capacity_bytes";

/// Disk use as the node last measured it; capacity 0 means unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: NodeId,
    /// Where clients reach it (`--listen`, as advertised).
    pub client_addr: String,
    /// Where peers reach it: TCP for the node transport, UDP for gossip, one port number.
    pub peer_addr: SocketAddr,
    /// The software version it runs.
    pub version: String,
    pub rack: Option<String>,
    /// It serves requests (storage opened, metadata caught up).
    pub ready: bool,
    /// Replicas it hosts and how many of them it leads.
    pub replicas: u32,
    pub leaders: u32,
    pub disk: DiskUsage,
}

impl NodeInfo {
    /// The key-value pairs that publish this info.
    pub(crate) fn to_key_values(&self) -> Vec<(String, String)> {
        let mut pairs = vec![
            (NODE.to_string(), self.node.0.to_string()),
            (CLIENT_ADDR.to_string(), self.client_addr.clone()),
            (PEER_ADDR.to_string(), self.peer_addr.to_string()),
            (VERSION.to_string(), self.version.clone()),
            (RACK.to_string(), self.rack.clone().unwrap_or_default()),
        ];
        pairs.extend(ready_pairs(self.ready));
        pairs.extend(load_pairs(self.replicas, self.leaders));
        pairs.extend(disk_pairs(self.disk));
        pairs
    }

    /// Reads a node's info back from its published pairs; `None` when a key is missing or
    /// malformed (a node still starting, or one running an incompatible version).
    pub(crate) fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<NodeInfo> {
        let rack = get(RACK)?;
        Some(NodeInfo {
            node: NodeId(get(NODE)?.parse().ok()?),
            client_addr: get(CLIENT_ADDR)?.to_string(),
            peer_addr: get(PEER_ADDR)?.parse().ok()?,
            version: get(VERSION)?.to_string(),
            rack: (!rack.is_empty()).then(|| rack.to_string()),
            ready: get(READY)?.parse().ok()?,
            replicas: get(REPLICAS)?.parse().ok()?,
            leaders: get(LEADERS)?.parse().ok()?,
            disk: DiskUsage {
                used_bytes: get(DISK_USED)?.parse().ok()?,
                capacity_bytes: get(DISK_CAPACITY)?.parse().ok()?,
            },
        })
    }
}

pub(crate) fn ready_pairs(ready: bool) -> [(String, String); 1] {
    [(READY.to_string(), ready.to_string())]
}

pub(crate) fn load_pairs(replicas: u32, leaders: u32) -> [(String, String); 2] {
    [
        (REPLICAS.to_string(), replicas.to_string()),
        (LEADERS.to_string(), leaders.to_string()),
    ]
}

pub(crate) fn disk_pairs(disk: DiskUsage) -> [(String, String); 2] {
    [
        (DISK_USED.to_string(), disk.used_bytes.to_string()),
        (DISK_CAPACITY.to_string(), disk.capacity_bytes.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn sample() -> NodeInfo {
        NodeInfo {
            node: NodeId(3),
            client_addr: "broker-3.example:9092".into(),
            peer_addr: "127.0.0.1:7003".parse().unwrap(),
            version: "0.1.0".into(),
            rack: Some("rack-b".into()),
            ready: true,
            replicas: 1200,
            leaders: 400,
            disk: DiskUsage {
                used_bytes: 1 << 40,
                capacity_bytes: 4 << 40,
            },
        }
    }

    #[test]
    fn info_round_trips_through_its_key_values_and_stays_small() {
        for info in [
            sample(),
            NodeInfo {
                rack: None,
                ..sample()
            },
        ] {
            let pairs: BTreeMap<String, String> = info.to_key_values().into_iter().collect();
            assert!(pairs.keys().all(|key| key.starts_with(KEY_PREFIX)));
            let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(bytes < 512, "{bytes} bytes published");
            let back = NodeInfo::from_lookup(|key| pairs.get(key).map(String::as_str));
            assert_eq!(back, Some(info));
        }
    }

    #[test]
    fn a_missing_or_malformed_key_means_no_info() {
        let mut pairs: BTreeMap<String, String> = sample().to_key_values().into_iter().collect();
        pairs.insert(REPLICAS.into(), "many".into());
        assert_eq!(
            NodeInfo::from_lookup(|key| pairs.get(key).map(String::as_str)),
            None
        );
        pairs.remove(REPLICAS);
        assert_eq!(
            NodeInfo::from_lookup(|key| pairs.get(key).map(String::as_str)),
            None
        );
    }
}
