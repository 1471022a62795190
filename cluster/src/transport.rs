//! The node-to-node seam. Every group's Raft RPCs go through one [`Transport`]; production plugs
//! in a multiplexed TCP connection per peer, the simulation an in-memory network with faults.

use crate::command::Command;
use anyhow::{anyhow, Result};
use async_raft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use async_raft::RaftNetwork;
use gregor_storage::{GroupId, NodeId};
use std::sync::Arc;
use std::time::Duration;

#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse>;
    async fn install_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse>;
    async fn vote(&self, target: NodeId, group: GroupId, rpc: VoteRequest) -> Result<VoteResponse>;
}

/// A node with no peers: every group has one member, so Raft never sends an RPC. Should one be
/// sent anyway, it fails only after a delay, because async-raft spins on an immediate error.
pub struct NoPeers;

const NO_PEER_FAILURE_DELAY: Duration = Duration::from_millis(100);

async fn no_peer<T>(target: NodeId) -> Result<T> {
    tokio::time::sleep(NO_PEER_FAILURE_DELAY).await;
    Err(anyhow!(
        "node {target} is unreachable: this node runs without peers"
    ))
}

#[async_trait::async_trait]
impl Transport for NoPeers {
    async fn append_entries(
        &self,
        target: NodeId,
        _group: GroupId,
        _rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse> {
        no_peer(target).await
    }
    async fn install_snapshot(
        &self,
        target: NodeId,
        _group: GroupId,
        _rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse> {
        no_peer(target).await
    }
    async fn vote(
        &self,
        target: NodeId,
        _group: GroupId,
        _rpc: VoteRequest,
    ) -> Result<VoteResponse> {
        no_peer(target).await
    }
}

/// async-raft's per-group network: tags each RPC with its group and hands it to the transport.
pub(crate) struct GroupNetwork {
    pub(crate) group: GroupId,
    pub(crate) transport: Arc<dyn Transport>,
}

#[async_trait::async_trait]
impl RaftNetwork<Command> for GroupNetwork {
    async fn append_entries(
        &self,
        target: u64,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse> {
        self.transport
            .append_entries(NodeId(target), self.group, rpc)
            .await
    }
    async fn install_snapshot(
        &self,
        target: u64,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse> {
        self.transport
            .install_snapshot(NodeId(target), self.group, rpc)
            .await
    }
    async fn vote(&self, target: u64, rpc: VoteRequest) -> Result<VoteResponse> {
        self.transport.vote(NodeId(target), self.group, rpc).await
    }
}
