//! Asking another node: a request served where it must be (metadata writes on the metadata
//! leader, consumer-group requests on the leader of the group's offsets partition), a command
//! for the metadata leader, a leadership hint. Over the peer transport's node messages, each
//! with a timeout of its own.

use crate::api::{ApiError, ErrorCode, Request, Response};
use crate::messages::{self, NodeMessage, NodeReply};
use crate::metadata::{MetadataCommand, MetadataOutcome};
use gregor_cluster::{RpcError, Transport};
use gregor_storage::NodeId;
use std::time::Duration;

/// How long a node waits for a peer's answer.
pub const NODE_MESSAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// A request marked as sent by a peer on a client's behalf: served here or refused, never
/// forwarded again, so two nodes that disagree about a leader cannot bounce it between them.
#[derive(Debug, Clone)]
pub struct FromPeer<M>(pub M);

impl<M: actix::Message> actix::Message for FromPeer<M> {
    type Result = M::Result;
}

fn unreachable(node: NodeId, error: &RpcError) -> ApiError {
    ApiError::new(
        ErrorCode::UNAVAILABLE,
        format!("node {node} did not answer ({error}); retry"),
    )
}

/// Sends `message` to `target` and waits for its reply.
///
/// # Errors
/// `UNAVAILABLE` when the peer cannot be reached or does not answer in time, `INTERNAL` when
/// its answer does not decode.
pub async fn ask(
    transport: &dyn Transport,
    target: NodeId,
    message: &NodeMessage,
) -> Result<NodeReply, ApiError> {
    let sent = transport.node_message(target, messages::encode(message));
    let bytes = match tokio::time::timeout(NODE_MESSAGE_TIMEOUT, sent).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return Err(unreachable(target, &error)),
        Err(_) => {
            let error = RpcError::Timeout {
                timeout_ms: NODE_MESSAGE_TIMEOUT.as_millis() as u64,
            };
            return Err(unreachable(target, &error));
        }
    };
    messages::decode(&bytes)
        .map_err(|e| ApiError::internal(format!("node {target} answered unreadably: {e}")))
}

/// Has `target` serve `request` for a client of this node.
///
/// # Errors
/// The peer's error, or as [`ask`].
pub async fn forward(
    transport: &dyn Transport,
    target: NodeId,
    request: Request,
) -> Result<Response, ApiError> {
    match ask(transport, target, &NodeMessage::Request(request)).await? {
        NodeReply::Response(result) => result,
        other => Err(ApiError::internal(format!(
            "node {target} answered a request with {other:?}"
        ))),
    }
}

/// Has `target` (the metadata leader) propose `command`.
///
/// # Errors
/// The peer's error, or as [`ask`].
pub async fn propose_at(
    transport: &dyn Transport,
    target: NodeId,
    command: MetadataCommand,
) -> Result<MetadataOutcome, ApiError> {
    match ask(transport, target, &NodeMessage::Propose(command)).await? {
        NodeReply::Outcome(result) => result,
        other => Err(ApiError::internal(format!(
            "node {target} answered a proposal with {other:?}"
        ))),
    }
}

/// The error for a request that must go to a leader nobody knows yet.
pub fn no_leader(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UNAVAILABLE,
        format!("{what} has no leader right now; retry"),
    )
}
