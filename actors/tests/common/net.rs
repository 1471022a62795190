//! An in-process network for multi-node actor tests: a node's requests reach the other
//! nodes' handlers after a small latency; a node can be cut off (its calls, and calls to it,
//! fail after a delay, as transports must).

use gregor_cluster::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use gregor_cluster::{Command, PeerHandler, RpcError, Transport};
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LATENCY: Duration = Duration::from_millis(1);
/// Transports never fail at once: async-raft retries a failure immediately.
const FAILURE_DELAY: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct LocalNet {
    handlers: Mutex<BTreeMap<NodeId, Arc<dyn PeerHandler>>>,
    cut: Mutex<BTreeSet<NodeId>>,
}

impl LocalNet {
    pub fn new() -> Arc<LocalNet> {
        Arc::new(LocalNet::default())
    }

    /// `node`'s outbound transport.
    pub fn transport(self: &Arc<Self>, node: NodeId) -> Arc<dyn Transport> {
        Arc::new(Link {
            net: self.clone(),
            from: node,
        })
    }

    pub fn attach(&self, node: NodeId, handler: Arc<dyn PeerHandler>) {
        self.handlers.lock().unwrap().insert(node, handler);
    }

    pub fn detach(&self, node: NodeId) {
        self.handlers.lock().unwrap().remove(&node);
    }

    pub fn cut(&self, node: NodeId) {
        self.cut.lock().unwrap().insert(node);
    }

    pub fn heal(&self, node: NodeId) {
        self.cut.lock().unwrap().remove(&node);
    }

    async fn route(&self, from: NodeId, to: NodeId) -> Result<Arc<dyn PeerHandler>, RpcError> {
        tokio::time::sleep(LATENCY).await;
        let cut = {
            let cut = self.cut.lock().unwrap();
            cut.contains(&from) || cut.contains(&to)
        };
        let handler = self.handlers.lock().unwrap().get(&to).cloned();
        match handler {
            Some(handler) if !cut => Ok(handler),
            _ => {
                tokio::time::sleep(FAILURE_DELAY).await;
                Err(RpcError::Unreachable {
                    node: to,
                    reason: "cut off".into(),
                })
            }
        }
    }
}

struct Link {
    net: Arc<LocalNet>,
    from: NodeId,
}

#[async_trait::async_trait]
impl Transport for Link {
    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        let handler = self.net.route(self.from, target).await?;
        handler.append_entries(self.from, group, rpc).await
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        let handler = self.net.route(self.from, target).await?;
        handler.install_snapshot(self.from, group, rpc).await
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        let handler = self.net.route(self.from, target).await?;
        handler.vote(self.from, group, rpc).await
    }

    async fn node_message(
        &self,
        target: NodeId,
        message: bytes::Bytes,
    ) -> Result<bytes::Bytes, RpcError> {
        let handler = self.net.route(self.from, target).await?;
        handler.node_message(self.from, message).await
    }

    async fn quiescence(
        &self,
        target: NodeId,
        request: gregor_cluster::rpc::QuiescenceRequest,
    ) -> Result<gregor_cluster::rpc::QuiescenceResponse, RpcError> {
        let handler = self.net.route(self.from, target).await?;
        handler.quiescence(self.from, request).await
    }
    async fn campaign(&self, target: NodeId, group: GroupId, term: u64) -> Result<bool, RpcError> {
        let handler = self.net.route(self.from, target).await?;
        handler.campaign(self.from, group, term).await
    }
}
