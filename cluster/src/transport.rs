//! The node-to-node seams. Outbound, every group's Raft RPCs and the nodes' own messages go
//! through one [`Transport`]; inbound, a transport hands what arrives to the node's
//! [`PeerHandler`]. Production plugs in [`crate::peer::PeerTransport`] (one multiplexed TCP
//! connection per peer), the simulation an in-memory network with faults.
//!
//! The one rule every [`Transport`] keeps: an error is returned only after awaiting something
//! (a delay, a timeout, the peer). async-raft retries a failed RPC at once, so an immediate
//! error would make its replication loop spin and wedge a single-threaded runtime.

use crate::command::Command;
use crate::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    QuiescenceRequest, QuiescenceResponse, RpcError, VoteRequest, VoteResponse,
};
use bytes::Bytes;
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;

/// The outbound seam: sends a request to `target` and waits for its answer.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError>;
    async fn install_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError>;
    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError>;
    /// A message that is not Raft (leadership hints, later more); the bytes are the caller's.
    async fn node_message(&self, target: NodeId, message: Bytes) -> Result<Bytes, RpcError>;
    /// This node's beat to `target`, with the quiet and wake requests of its groups.
    async fn quiescence(
        &self,
        target: NodeId,
        request: QuiescenceRequest,
    ) -> Result<QuiescenceResponse, RpcError>;
    /// Asks `target`, a follower of this node in `group` and `term`, to stand for election now;
    /// answers whether it stood.
    async fn campaign(&self, target: NodeId, group: GroupId, term: u64) -> Result<bool, RpcError>;
}

/// The inbound seam: what a node does with the requests its peers send it. The node's
/// dispatcher implements it (routing each group's RPC to its Raft, with async-raft's bugs
/// contained); transports call it concurrently, but hand over the requests of one group in the
/// order they arrived.
#[async_trait::async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    async fn append_entries(
        &self,
        from: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError>;
    async fn vote(
        &self,
        from: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError>;
    async fn install_snapshot(
        &self,
        from: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError>;
    async fn node_message(&self, from: NodeId, message: Bytes) -> Result<Bytes, RpcError>;
    async fn quiescence(
        &self,
        from: NodeId,
        request: QuiescenceRequest,
    ) -> Result<QuiescenceResponse, RpcError>;
    async fn campaign(&self, from: NodeId, group: GroupId, term: u64) -> Result<bool, RpcError>;
}

/// A node with no peers: every group has one member, so Raft never sends an RPC. Should one be
/// sent anyway, it fails only after a delay, because async-raft spins on an immediate error.
pub struct NoPeers;

const NO_PEER_FAILURE_DELAY: Duration = Duration::from_millis(100);

async fn no_peer<T>(target: NodeId) -> Result<T, RpcError> {
    tokio::time::sleep(NO_PEER_FAILURE_DELAY).await;
    Err(RpcError::Unreachable {
        node: target,
        reason: "this node runs without peers".into(),
    })
}

#[async_trait::async_trait]
impl Transport for NoPeers {
    async fn append_entries(
        &self,
        target: NodeId,
        _group: GroupId,
        _rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        no_peer(target).await
    }
    async fn install_snapshot(
        &self,
        target: NodeId,
        _group: GroupId,
        _rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        no_peer(target).await
    }
    async fn vote(
        &self,
        target: NodeId,
        _group: GroupId,
        _rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        no_peer(target).await
    }
    async fn node_message(&self, target: NodeId, _message: Bytes) -> Result<Bytes, RpcError> {
        no_peer(target).await
    }
    async fn quiescence(
        &self,
        target: NodeId,
        _request: QuiescenceRequest,
    ) -> Result<QuiescenceResponse, RpcError> {
        no_peer(target).await
    }
    async fn campaign(
        &self,
        target: NodeId,
        _group: GroupId,
        _term: u64,
    ) -> Result<bool, RpcError> {
        no_peer(target).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_peers_fails_only_after_a_delay() {
        let started = tokio::time::Instant::now();
        let error = NoPeers
            .node_message(NodeId(2), Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Unreachable { .. }));
        assert!(started.elapsed() >= NO_PEER_FAILURE_DELAY);
    }
}
