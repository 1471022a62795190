//! The node-to-node messages: every request one node can make of another, its response, the
//! typed error a call can end in, and their msgpack encoding. The TCP transport and the
//! simulated network both carry exactly these bytes, so the simulation exercises the codec too.

use crate::command::Command;
use crate::transport::PeerHandler;
use bytes::Bytes;
use gregor_storage::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

pub use async_raft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

/// Why a node-to-node call produced no answer. Every transport returns these only after
/// awaiting something (a delay, a timeout, the peer): async-raft retries a failed call at once
/// and would spin on an immediate error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RpcError {
    #[error("node hosts no replica of group {0}")]
    UnknownGroup(GroupId),
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String },
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("message of {bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge { bytes: usize, max_bytes: usize },
    #[error("the peer answered with an error: {0}")]
    Remote(String),
    #[error("malformed message: {0}")]
    Protocol(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A snapshot chunk that does not continue a stream this node saw begin at offset 0 since
    /// it started: refused, never installed; the leader sends the snapshot again from the start.
    #[error("snapshot chunk at offset {offset} continues no stream begun here")]
    SnapshotOutOfOrder { offset: u64 },
}

/// The body of one request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries {
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    },
    Vote {
        group: GroupId,
        rpc: VoteRequest,
    },
    InstallSnapshot {
        group: GroupId,
        rpc: WireSnapshotChunk,
    },
    /// Not Raft: leadership hints and whatever else nodes tell each other.
    NodeMessage(Bytes),
    /// The node-level beat that lets idle groups go quiet (see `crate::quiescence`).
    Quiescence(QuiescenceRequest),
    /// From the leader of `group` in `term`, handing leadership over: stand for election now
    /// (see `RaftGroup::transfer_leadership`).
    Campaign {
        group: GroupId,
        term: u64,
    },
}

/// The body of a successful response; each variant answers the request of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(AppendEntriesResponse),
    Vote(VoteResponse),
    InstallSnapshot(InstallSnapshotResponse),
    NodeMessage(Bytes),
    Quiescence(QuiescenceResponse),
    /// Whether the node stood for election.
    Campaign(bool),
}

/// One node's beat to a peer, sent every heartbeat interval whether or not it carries
/// anything: that it arrives is what tells the peer this node is there (see
/// `crate::quiescence`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiescenceRequest {
    /// From the leader of each group: go quiet if you hold what I hold.
    pub quiet: Vec<QuietNotice>,
    /// From a member of each group: wake up (the sender woke, or has just started).
    pub wake: Vec<GroupId>,
}

/// A leader's offer to quiet `group`: its log ends at `index`, every entry of it committed and
/// the commit told, in `term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietNotice {
    pub group: GroupId,
    pub term: u64,
    pub index: u64,
}

/// The groups of a request's `quiet` notices that the peer quieted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiescenceResponse {
    pub quieted: Vec<GroupId>,
}

/// async-raft's snapshot chunk with its data as one msgpack binary: serde would otherwise write
/// a `Vec<u8>` as an array of integers, up to twice the size.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireSnapshotChunk {
    pub term: u64,
    pub leader_id: u64,
    pub last_included_index: u64,
    pub last_included_term: u64,
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub done: bool,
}

impl From<InstallSnapshotRequest> for WireSnapshotChunk {
    fn from(rpc: InstallSnapshotRequest) -> Self {
        WireSnapshotChunk {
            term: rpc.term,
            leader_id: rpc.leader_id,
            last_included_index: rpc.last_included_index,
            last_included_term: rpc.last_included_term,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        }
    }
}

impl From<WireSnapshotChunk> for InstallSnapshotRequest {
    fn from(chunk: WireSnapshotChunk) -> Self {
        InstallSnapshotRequest {
            term: chunk.term,
            leader_id: chunk.leader_id,
            last_included_index: chunk.last_included_index,
            last_included_term: chunk.last_included_term,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        }
    }
}

/// What kind of request a message is, for stats, traces and fault rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RpcKind {
    AppendEntries,
    Heartbeat,
    Vote,
    InstallSnapshot,
    NodeMessage,
    Quiescence,
    Campaign,
}

impl RpcRequest {
    pub fn group(&self) -> Option<GroupId> {
        match self {
            RpcRequest::AppendEntries { group, .. }
            | RpcRequest::Vote { group, .. }
            | RpcRequest::InstallSnapshot { group, .. }
            | RpcRequest::Campaign { group, .. } => Some(*group),
            RpcRequest::NodeMessage(_) | RpcRequest::Quiescence(_) => None,
        }
    }

    pub fn kind(&self) -> RpcKind {
        match self {
            RpcRequest::AppendEntries { rpc, .. } if rpc.entries.is_empty() => RpcKind::Heartbeat,
            RpcRequest::AppendEntries { .. } => RpcKind::AppendEntries,
            RpcRequest::Vote { .. } => RpcKind::Vote,
            RpcRequest::InstallSnapshot { .. } => RpcKind::InstallSnapshot,
            RpcRequest::NodeMessage(_) => RpcKind::NodeMessage,
            RpcRequest::Quiescence(_) => RpcKind::Quiescence,
            RpcRequest::Campaign { .. } => RpcKind::Campaign,
        }
    }

    /// # Errors
    /// Only if the request holds something msgpack cannot represent (never for our types).
    pub fn encode(&self) -> Result<Vec<u8>, RpcError> {
        encode(self)
    }

    /// # Errors
    /// `Protocol` when the bytes are not a request.
    pub fn decode(bytes: &[u8]) -> Result<RpcRequest, RpcError> {
        decode(bytes)
    }
}

/// The outcome of a request as it travels back: a response or the error the serving node gave.
pub type RpcResult = Result<RpcResponse, RpcError>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    rmp_serde::to_vec(value).map_err(|error| RpcError::Protocol(error.to_string()))
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RpcError> {
    rmp_serde::from_slice(bytes).map_err(|error| RpcError::Protocol(error.to_string()))
}

/// Encodes the outcome of a request for its way back.
///
/// # Errors
/// Only if msgpack cannot represent the response (never for our types).
pub fn encode_result(result: &RpcResult) -> Result<Vec<u8>, RpcError> {
    encode(result)
}

/// # Errors
/// `Protocol` when the bytes are not an outcome.
pub fn decode_result(bytes: &[u8]) -> Result<RpcResult, RpcError> {
    decode(bytes)
}

/// Hands one inbound request to the node's handler. Both the TCP transport and the simulated
/// network serve requests through here, so they behave alike.
pub async fn serve(handler: &dyn PeerHandler, from: NodeId, request: RpcRequest) -> RpcResult {
    match request {
        RpcRequest::AppendEntries { group, rpc } => handler
            .append_entries(from, group, rpc)
            .await
            .map(RpcResponse::AppendEntries),
        RpcRequest::Vote { group, rpc } => {
            handler.vote(from, group, rpc).await.map(RpcResponse::Vote)
        }
        RpcRequest::InstallSnapshot { group, rpc } => handler
            .install_snapshot(from, group, rpc.into())
            .await
            .map(RpcResponse::InstallSnapshot),
        RpcRequest::NodeMessage(message) => handler
            .node_message(from, message)
            .await
            .map(RpcResponse::NodeMessage),
        RpcRequest::Quiescence(request) => handler
            .quiescence(from, request)
            .await
            .map(RpcResponse::Quiescence),
        RpcRequest::Campaign { group, term } => handler
            .campaign(from, group, term)
            .await
            .map(RpcResponse::Campaign),
    }
}

fn mismatch(expected: &str, got: &RpcResponse) -> RpcError {
    RpcError::Protocol(format!("expected a {expected} response, got {got:?}"))
}

impl RpcResponse {
    /// # Errors
    /// `Protocol` when the response answers another kind of request.
    pub fn into_append_entries(self) -> Result<AppendEntriesResponse, RpcError> {
        match self {
            RpcResponse::AppendEntries(response) => Ok(response),
            other => Err(mismatch("AppendEntries", &other)),
        }
    }

    /// # Errors
    /// `Protocol` when the response answers another kind of request.
    pub fn into_vote(self) -> Result<VoteResponse, RpcError> {
        match self {
            RpcResponse::Vote(response) => Ok(response),
            other => Err(mismatch("Vote", &other)),
        }
    }

    /// # Errors
    /// `Protocol` when the response answers another kind of request.
    pub fn into_install_snapshot(self) -> Result<InstallSnapshotResponse, RpcError> {
        match self {
            RpcResponse::InstallSnapshot(response) => Ok(response),
            other => Err(mismatch("InstallSnapshot", &other)),
        }
    }

    /// # Errors
    /// `Protocol` when the response answers another kind of request.
    pub fn into_node_message(self) -> Result<Bytes, RpcError> {
        match self {
            RpcResponse::NodeMessage(reply) => Ok(reply),
            other => Err(mismatch("NodeMessage", &other)),
        }
    }

    /// # Errors
    /// `Protocol` when the response answers another kind of request.
    pub fn into_campaign(self) -> Result<bool, RpcError> {
        match self {
            RpcResponse::Campaign(stood) => Ok(stood),
            other => Err(mismatch("Campaign", &other)),
        }
    }

    /// # Errors
    /// `Protocol` when the response answers another kind of request.
    pub fn into_quiescence(self) -> Result<QuiescenceResponse, RpcError> {
        match self {
            RpcResponse::Quiescence(response) => Ok(response),
            other => Err(mismatch("Quiescence", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_raft::raft::{Entry, EntryNormal, EntryPayload};

    #[test]
    fn a_request_survives_encoding_with_its_payload_as_binary() {
        let batch = Bytes::from(vec![7u8; 1000]);
        let request = RpcRequest::AppendEntries {
            group: GroupId(9),
            rpc: AppendEntriesRequest {
                term: 3,
                leader_id: 1,
                prev_log_index: 4,
                prev_log_term: 2,
                leader_commit: 4,
                entries: vec![Entry {
                    term: 3,
                    index: 5,
                    payload: EntryPayload::Normal(EntryNormal {
                        data: Command::append(vec![batch.clone()]),
                    }),
                }],
            },
        };
        let bytes = request.encode().unwrap();
        // Binary, not an array of integers: at most a few dozen bytes of framing.
        assert!(bytes.len() < 1100, "{} bytes", bytes.len());
        let RpcRequest::AppendEntries { group, rpc } = RpcRequest::decode(&bytes).unwrap() else {
            panic!("decoded another kind of request");
        };
        assert_eq!(group, GroupId(9));
        assert_eq!(rpc.entries.len(), 1);
        assert_eq!(
            rpc.entries[0].payload,
            EntryPayload::Normal(EntryNormal {
                data: Command::append(vec![batch])
            })
        );
    }

    #[test]
    fn snapshot_data_is_binary_on_the_wire() {
        let chunk = RpcRequest::InstallSnapshot {
            group: GroupId(1),
            rpc: WireSnapshotChunk {
                term: 1,
                leader_id: 1,
                last_included_index: 10,
                last_included_term: 1,
                offset: 0,
                data: vec![200u8; 4096],
                done: true,
            },
        };
        assert!(chunk.encode().unwrap().len() < 4096 + 64);
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(matches!(
            RpcRequest::decode(&[0xc1, 0x00]),
            Err(RpcError::Protocol(_))
        ));
        assert!(matches!(decode_result(b"\x92"), Err(RpcError::Protocol(_))));
    }

    #[test]
    fn an_error_outcome_round_trips() {
        let outcome: RpcResult = Err(RpcError::UnknownGroup(GroupId(4)));
        let back = decode_result(&encode_result(&outcome).unwrap()).unwrap();
        assert_eq!(back.unwrap_err(), RpcError::UnknownGroup(GroupId(4)));
    }
}
