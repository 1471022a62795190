//! The cluster: its members, draining one, and producer ids.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// Asks for a producer id, as Kafka's `InitProducerId` without transactions: an idempotent
/// producer gets one at start and numbers its batches per partition from 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProducerId {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdentity {
    /// Never handed out twice in the cluster's life.
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// The members of the cluster and how they are doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusReply {
    /// The node answering.
    pub node_id: NodeId,
    /// The node leading the metadata group, as the answering node knows it.
    pub metadata_leader: Option<NodeId>,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    /// Where clients reach it.
    pub address: String,
    /// Where peers reach it.
    pub peer_address: String,
    pub rack: Option<String>,
    /// `"active"`, `"draining"` or `"removed"`.
    pub state: String,
    /// Alive as gossip shows it to the answering node.
    pub live: bool,
    /// `"voter"`, `"learner"` or `"none"`: its part in the metadata group.
    pub metadata_role: String,
    /// Replicas assigned to it (a move's newcomers included).
    pub replicas: u32,
    /// Partitions it leads, as the answering node knows.
    pub leaders: u32,
}

/// Moves every replica off a node, so it can be removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainNode {
    pub node_id: NodeId,
}
