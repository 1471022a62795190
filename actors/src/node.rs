//! Starting a node: opening storage, starting the actors, and the [`Broker`] handle to them.

use crate::api::{ApiError, Request, Response};
use gregor_storage::NodeId;
use std::path::PathBuf;

/// Everything a node needs to start, already validated (the `node` crate parses TOML/env/flags
/// into this).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// `host:port` clients should use to reach this node (reported in `Metadata`).
    pub advertised_address: String,
    /// `Always`: acks=all waits for fsync (group commit). `Never`: page cache only.
    pub flush: gregor_storage::FlushPolicy,
    /// Extra time a partition leader waits to gather more produce requests into one Raft entry
    /// while no write is in flight (0: write at once; requests arriving during a write are
    /// batched anyway).
    pub produce_linger_ms: u64,
    /// Partitions of `__consumer_offsets` (Kafka: 50).
    pub offsets_partitions: u32,
    pub retention_check_interval_ms: u64,
    /// Block cache for fjall.
    pub cache_bytes: u64,
}

/// A running node; cheap to clone, `Send + Sync`, usable from any thread.
#[derive(Clone)]
pub struct Broker {}

impl Broker {
    pub fn node_id(&self) -> NodeId {
        todo!()
    }
    /// Serves one request (not `Hello`, which the connection layer answers). For a produce with
    /// `acks = 0` the reply is computed but the caller drops it.
    pub async fn handle(&self, _request: Request) -> Result<Response, ApiError> {
        todo!()
    }
}

/// Starts the node's actors inside the current actix `System`.
pub async fn start_node(_config: NodeConfig) -> Result<Broker, StartError> {
    todo!()
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {}
