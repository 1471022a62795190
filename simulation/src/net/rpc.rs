//! A simulated node's outbound peer transport: each request is encoded, carried over the
//! simulated link to the target's handler in a task of its own (as the TCP transport's
//! listener does), and its reply carried back over the reverse link.

use super::{Channel, NetMessage, NetOutcome, SimNetwork};
use crate::net::faults::Fate;
use bytes::Bytes;
use gregor_cluster::rpc::{
    self, AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, QuiescenceRequest, QuiescenceResponse, RpcResult, VoteRequest,
    VoteResponse,
};
use gregor_cluster::{Command, RpcError, RpcRequest, RpcResponse, Transport};
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub struct SimTransport {
    net: SimNetwork,
    node: NodeId,
    incarnation: u64,
}

/// One request on its way: who sent it, as which incarnation, and where.
#[derive(Clone, Copy)]
struct Route {
    from: NodeId,
    from_incarnation: u64,
    to: NodeId,
    message: NetMessage,
    id: u64,
}

impl SimTransport {
    pub(super) fn new(net: SimNetwork, node: NodeId, incarnation: u64) -> SimTransport {
        SimTransport {
            net,
            node,
            incarnation,
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Sends `request` and waits for its reply. A failure never comes sooner than the
    /// network's failure delay, whatever its cause.
    async fn call(&self, target: NodeId, request: RpcRequest) -> Result<RpcResponse, RpcError> {
        let started = Instant::now();
        let outcome = self.round_trip(target, request).await;
        if outcome.is_err() {
            tokio::time::sleep_until(started + self.net.shared.config.failure_delay).await;
        }
        outcome
    }

    async fn round_trip(
        &self,
        target: NodeId,
        request: RpcRequest,
    ) -> Result<RpcResponse, RpcError> {
        let timeout = self.net.shared.config.rpc_timeout;
        let deadline = Instant::now() + timeout;
        let timed_out = RpcError::Timeout {
            timeout_ms: timeout.as_millis() as u64,
        };
        let encoded = Bytes::from(request.encode()?);
        let (route, fate) = {
            let mut state = self.net.lock();
            if !state.is_running(self.node, self.incarnation) {
                return Err(RpcError::ShuttingDown);
            }
            let id = state.next_id();
            let message = NetMessage::Request {
                id,
                kind: request.kind(),
                group: request.group(),
            };
            let route = Route {
                from: self.node,
                from_incarnation: self.incarnation,
                to: target,
                message,
                id,
            };
            (route, state.send(Channel::Rpc, self.node, target, message))
        };
        let Fate::Delivered {
            delay,
            duplicate_delay,
        } = fate
        else {
            tokio::time::sleep_until(deadline).await;
            return Err(timed_out);
        };
        let (reply_to, reply) = oneshot::channel();
        let net = self.net.clone();
        tokio::spawn(deliver(net, route, encoded.clone(), delay, Some(reply_to)));
        if let Some(delay) = duplicate_delay {
            tokio::spawn(deliver(self.net.clone(), route, encoded, delay, None));
        }
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(outcome)) => outcome,
            // The reply was lost or vanished: the caller learns nothing before its timeout.
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep_until(deadline).await;
                Err(timed_out)
            }
        }
    }
}

/// Carries a request to its target after `delay`, serves it, and carries the reply back to
/// `reply_to` (none for a duplicate, whose reply is discarded).
async fn deliver(
    net: SimNetwork,
    route: Route,
    request: Bytes,
    delay: Duration,
    reply_to: Option<oneshot::Sender<RpcResult>>,
) {
    tokio::time::sleep(delay).await;
    let arrival = {
        let mut state = net.lock();
        let handler = state
            .nodes
            .get(&route.to)
            .and_then(|slot| slot.handler.clone());
        let target_incarnation = state.running_incarnation(route.to);
        let outcome = if state.is_running(route.from, route.from_incarnation) && handler.is_some() {
            NetOutcome::Delivered
        } else {
            NetOutcome::Vanished
        };
        state.record(Channel::Rpc, route.from, route.to, route.message, outcome);
        handler.zip(target_incarnation)
    };
    let Some((handler, target_incarnation)) = arrival else {
        return;
    };
    if !net.lock().is_running(route.from, route.from_incarnation) {
        return;
    }
    let outcome = match RpcRequest::decode(&request) {
        Ok(request) => rpc::serve(handler.as_ref(), route.from, request).await,
        Err(error) => Err(error),
    };
    let Some(reply_to) = reply_to else {
        let reply = NetMessage::Reply { id: route.id };
        net.lock().record(
            Channel::Rpc,
            route.to,
            route.from,
            reply,
            NetOutcome::ReplyDiscarded,
        );
        return;
    };
    send_reply(net, route, target_incarnation, outcome, reply_to).await;
}

async fn send_reply(
    net: SimNetwork,
    route: Route,
    responder_incarnation: u64,
    outcome: RpcResult,
    reply_to: oneshot::Sender<RpcResult>,
) {
    let reply = NetMessage::Reply { id: route.id };
    let encoded = match rpc::encode_result(&outcome) {
        Ok(encoded) => encoded,
        Err(error) => rpc::encode_result(&Err(error)).expect("an error always encodes"),
    };
    let fate = {
        let mut state = net.lock();
        if !state.is_running(route.to, responder_incarnation) {
            state.record(
                Channel::Rpc,
                route.to,
                route.from,
                reply,
                NetOutcome::Vanished,
            );
            return;
        }
        state.send(Channel::Rpc, route.to, route.from, reply)
    };
    // A reply cannot usefully arrive twice: the caller takes the first.
    let Fate::Delivered { delay, .. } = fate else {
        return;
    };
    tokio::time::sleep(delay).await;
    {
        let mut state = net.lock();
        let both_running = state.is_running(route.to, responder_incarnation)
            && state.is_running(route.from, route.from_incarnation);
        let outcome = if both_running {
            NetOutcome::Delivered
        } else {
            NetOutcome::Vanished
        };
        state.record(Channel::Rpc, route.to, route.from, reply, outcome);
        if !both_running {
            return;
        }
    }
    let decoded = rpc::decode_result(&encoded).unwrap_or_else(Err);
    let _ = reply_to.send(decoded);
}

#[async_trait::async_trait]
impl Transport for SimTransport {
    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        self.call(target, RpcRequest::AppendEntries { group, rpc })
            .await?
            .into_append_entries()
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        let request = RpcRequest::InstallSnapshot {
            group,
            rpc: rpc.into(),
        };
        self.call(target, request).await?.into_install_snapshot()
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        self.call(target, RpcRequest::Vote { group, rpc })
            .await?
            .into_vote()
    }

    async fn node_message(&self, target: NodeId, message: Bytes) -> Result<Bytes, RpcError> {
        self.call(target, RpcRequest::NodeMessage(message))
            .await?
            .into_node_message()
    }

    async fn quiescence(
        &self,
        target: NodeId,
        request: QuiescenceRequest,
    ) -> Result<QuiescenceResponse, RpcError> {
        self.call(target, RpcRequest::Quiescence(request))
            .await?
            .into_quiescence()
    }
    async fn campaign(&self, target: NodeId, group: GroupId, term: u64) -> Result<bool, RpcError> {
        self.call(target, RpcRequest::Campaign { group, term })
            .await?
            .into_campaign()
    }
}
