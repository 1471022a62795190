//! The metadata group's commands and their outcomes, and their encoding in log entries.
//!
//! Every entry carries an [`Envelope`] (msgpack with field names, so fields can be added with
//! defaults). A node that meets a version it does not know stops applying the metadata log
//! rather than guess: applying a command differently from its peers would split the cluster's
//! view of the truth.

use super::records::NodeState;
use crate::api::TopicConfig;
use gregor_storage::{NodeId, PartitionId, TopicId};
use serde::{Deserialize, Serialize};

/// The command format this build writes and the newest it reads.
pub const COMMAND_VERSION: u16 = 1;

/// Most producer ids one allocation hands out.
pub const MAX_PRODUCER_ID_BLOCK: u64 = 1 << 20;

/// A change to the cluster's metadata, applied identically by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Adds a member, or updates the addresses and rack of a registered one.
    RegisterNode {
        node: NodeId,
        client_addr: String,
        peer_addr: String,
        rack: Option<String>,
    },
    SetNodeState {
        node: NodeId,
        state: NodeState,
    },
    /// The topic id is assigned when this is applied, so a creation that commits late can
    /// never share an id with another topic.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        config: TopicConfig,
        internal: bool,
        /// The replica set of each partition, founding replica first.
        assignment: Vec<Vec<NodeId>>,
        /// The client's id for this creation (`CreateTopic::creation_id`), kept in the topic's
        /// record: a retry of the same creation that commits after it is a success, not a
        /// second topic. Absent in entries written before it existed.
        #[serde(default)]
        creation_id: Option<u64>,
    },
    /// Deletes the topic named `name` only while it is still the topic `id`: a delete planned
    /// against a topic that was since re-created does not remove the new one.
    DeleteTopic {
        name: String,
        id: TopicId,
    },
    /// Starts (or redirects) a move of a partition to `target`, planned against the
    /// assignment's `expected_revision`. A move is never dropped, only redirected (back to the
    /// set in force, to undo it): a newcomer may already be a Raft member, and only the
    /// partition leader's `CompleteMove` says it no longer is.
    MovePartition {
        topic: TopicId,
        partition: PartitionId,
        target: Vec<NodeId>,
        expected_revision: u64,
    },
    /// The partition's Raft membership reached the target of the move at `revision`.
    CompleteMove {
        topic: TopicId,
        partition: PartitionId,
        revision: u64,
    },
    AllocateProducerIds {
        count: u64,
    },
}

impl MetadataCommand {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            MetadataCommand::RegisterNode { .. } => "RegisterNode",
            MetadataCommand::SetNodeState { .. } => "SetNodeState",
            MetadataCommand::CreateTopic { .. } => "CreateTopic",
            MetadataCommand::DeleteTopic { .. } => "DeleteTopic",
            MetadataCommand::MovePartition { .. } => "MovePartition",
            MetadataCommand::CompleteMove { .. } => "CompleteMove",
            MetadataCommand::AllocateProducerIds { .. } => "AllocateProducerIds",
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataOutcome {
    NodeRegistered,
    NodeStateSet,
    TopicCreated {
        id: TopicId,
        revision: u64,
    },
    TopicDeleted,
    MoveStarted {
        revision: u64,
    },
    MoveCancelled {
        revision: u64,
    },
    MoveCompleted {
        revision: u64,
    },
    ProducerIds {
        first: i64,
        count: u64,
    },
    /// Nothing changed, for the reason given. Rejections are decided from the applied state,
    /// so every node decides the same.
    Rejected(Rejection),
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    TopicExists {
        name: String,
    },
    UnknownTopic {
        name: String,
    },
    UnknownTopicId {
        id: TopicId,
    },
    UnknownPartition {
        partition: PartitionId,
    },
    InternalTopic {
        name: String,
    },
    /// The command breaks a rule every command must keep (names, counts, configs).
    Invalid {
        reason: String,
    },
    /// A replica set names a node that is not registered, is removed, repeats a node, or has
    /// the wrong size.
    InvalidAssignment {
        reason: String,
    },
    UnknownNode {
        node: NodeId,
    },
    NodeRemoved {
        node: NodeId,
    },
    /// The assignment changed since the command was planned.
    StaleRevision {
        current: u64,
    },
    NoMoveInProgress,
    ProducerIdsExhausted,
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub command: MetadataCommand,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("metadata command version {0} is newer than this build reads ({COMMAND_VERSION}); upgrade this node")]
    UnknownVersion(u16),
    #[error("metadata entry does not decode: {0}")]
    Malformed(String),
}

pub fn encode_command(command: &MetadataCommand) -> bytes::Bytes {
    let envelope = Envelope {
        version: COMMAND_VERSION,
        command: command.clone(),
    };
    bytes::Bytes::from(rmp_serde::to_vec_named(&envelope).expect("commands encode"))
}

/// # Errors
/// A version newer than [`COMMAND_VERSION`], or bytes that are not an envelope.
pub fn decode_command(bytes: &[u8]) -> Result<MetadataCommand, CodecError> {
    #[derive(Deserialize)]
    struct Head {
        version: u16,
    }
    let head: Head =
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if head.version > COMMAND_VERSION {
        return Err(CodecError::UnknownVersion(head.version));
    }
    let envelope: Envelope =
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(envelope.command)
}

pub fn encode_outcome(outcome: &MetadataOutcome) -> bytes::Bytes {
    bytes::Bytes::from(rmp_serde::to_vec_named(outcome).expect("outcomes encode"))
}

/// # Errors
/// Bytes that are not an outcome.
pub fn decode_outcome(bytes: &[u8]) -> Result<MetadataOutcome, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_a_newer_version_is_refused() {
        let command = MetadataCommand::MovePartition {
            topic: TopicId(4),
            partition: PartitionId(2),
            target: vec![NodeId(1), NodeId(3)],
            expected_revision: 17,
        };
        let bytes = encode_command(&command);
        assert_eq!(decode_command(&bytes).unwrap(), command);
        let newer = rmp_serde::to_vec_named(&Envelope {
            version: COMMAND_VERSION + 1,
            command,
        })
        .unwrap();
        assert!(matches!(
            decode_command(&newer),
            Err(CodecError::UnknownVersion(v)) if v == COMMAND_VERSION + 1
        ));
        assert!(matches!(
            decode_command(b"\x01\x02"),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn outcomes_round_trip() {
        for outcome in [
            MetadataOutcome::TopicCreated {
                id: TopicId(9),
                revision: 40,
            },
            MetadataOutcome::Rejected(Rejection::StaleRevision { current: 3 }),
            MetadataOutcome::ProducerIds {
                first: 1000,
                count: 50,
            },
        ] {
            assert_eq!(decode_outcome(&encode_outcome(&outcome)).unwrap(), outcome);
        }
    }
}
