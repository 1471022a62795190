//! What this node does with its peers' node messages: serves the requests they forward (as
//! [`FromPeer`], so they go no further), proposes the metadata commands they send when it leads
//! the metadata group, takes in their leadership hints, and steps down from leaderships when
//! the metadata leader asks.

use crate::api::{ApiError, ErrorCode, Request, Response};
use crate::directory::Directory;
use crate::groups::GroupRouter;
use crate::messages::{self, NodeMessage, NodeReply};
use crate::metadata::service::Propose;
use crate::metadata::MetadataService;
use crate::peers::FromPeer;
use actix::prelude::*;
use bytes::Bytes;
use gregor_storage::NodeId;
use std::sync::Arc;

#[derive(Clone)]
pub struct NodeMessages {
    pub metadata: Addr<MetadataService>,
    pub groups: Addr<GroupRouter>,
    pub directory: Arc<Directory>,
}

fn stopped() -> ApiError {
    ApiError::new(ErrorCode::UNAVAILABLE, "the node is shutting down; retry")
}

async fn ask<A, M>(addr: &Addr<A>, message: M) -> Result<M::Result, ApiError>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    addr.send(message).await.map_err(|_| stopped())
}

impl NodeMessages {
    /// Answers one node message.
    ///
    /// # Errors
    /// The message does not decode (a peer of an incompatible version): the text says why.
    pub async fn handle(&self, from: NodeId, bytes: &[u8]) -> Result<Bytes, String> {
        let message: NodeMessage = messages::decode(bytes).map_err(|e| e.to_string())?;
        let reply = match message {
            NodeMessage::Request(request) => NodeReply::Response(self.serve(request).await),
            NodeMessage::Propose(command) => {
                let outcome = ask(&self.metadata, FromPeer(Propose(command))).await;
                NodeReply::Outcome(outcome.and_then(|r| r))
            }
            NodeMessage::Leadership(hint) => {
                self.directory.hints().receive(from, &hint);
                NodeReply::Done
            }
            NodeMessage::HandOver { group, to } => {
                match self.directory.local(group) {
                    Some(replica) if self.directory.may_step_down(group) => {
                        if let Err(error) = replica.group.transfer_leadership(to).await {
                            tracing::info!(%group, %to, %error, "asked to hand leadership over, and could not");
                        }
                    }
                    _ => {
                        tracing::debug!(%group, "asked to hand leadership over while its replicas change: not now")
                    }
                }
                NodeReply::Done
            }
        };
        Ok(messages::encode(&reply))
    }

    /// Serves a request a peer forwarded, here and nowhere else.
    async fn serve(&self, request: Request) -> Result<Response, ApiError> {
        let directory = &self.directory;
        Ok(match request {
            Request::Hello(_) => {
                return Err(ApiError::new(
                    ErrorCode::MALFORMED_REQUEST,
                    "Hello is not forwarded",
                ))
            }
            Request::CreateTopic(r) => {
                Response::CreateTopic(ask(&self.metadata, FromPeer(r)).await??)
            }
            Request::DeleteTopic(r) => {
                Response::DeleteTopic(ask(&self.metadata, FromPeer(r)).await??)
            }
            Request::DrainNode(r) => Response::DrainNode(ask(&self.metadata, FromPeer(r)).await??),
            Request::ListTopics(r) => Response::ListTopics(ask(&self.metadata, r).await??),
            Request::DescribeTopic(r) => Response::DescribeTopic(ask(&self.metadata, r).await??),
            Request::Metadata(r) => Response::Metadata(ask(&self.metadata, r).await??),
            Request::ClusterStatus(r) => Response::ClusterStatus(ask(&self.metadata, r).await??),
            Request::InitProducerId(r) => Response::InitProducerId(ask(&self.metadata, r).await??),
            Request::Produce(r) => {
                let replica = directory.replica(&r.topic, r.partition)?;
                Response::Produce(ask(&replica.addr, r).await??)
            }
            Request::Fetch(r) => {
                let replica = directory.replica(&r.topic, r.partition)?;
                Response::Fetch(ask(&replica.addr, r).await??)
            }
            Request::ListOffsets(r) => {
                let replica = directory.replica(&r.topic, r.partition)?;
                Response::ListOffsets(ask(&replica.addr, r).await??)
            }
            Request::CommitOffsets(r) => {
                Response::CommitOffsets(ask(&self.groups, FromPeer(r)).await??)
            }
            Request::FetchOffsets(r) => {
                Response::FetchOffsets(ask(&self.groups, FromPeer(r)).await??)
            }
            Request::ListGroups(r) => Response::ListGroups(ask(&self.groups, FromPeer(r)).await??),
            Request::DescribeGroup(r) => {
                Response::DescribeGroup(ask(&self.groups, FromPeer(r)).await??)
            }
            Request::ResetOffsets(r) => {
                Response::ResetOffsets(ask(&self.groups, FromPeer(r)).await??)
            }
            Request::AlterGroupConfig(r) => {
                Response::AlterGroupConfig(ask(&self.groups, FromPeer(r)).await??)
            }
            Request::DescribeGroupConfig(r) => {
                Response::DescribeGroupConfig(ask(&self.groups, FromPeer(r)).await??)
            }
            Request::ConsumerGroupHeartbeat(r) => {
                Response::ConsumerGroupHeartbeat(ask(&self.groups, FromPeer(r)).await??)
            }
        })
    }
}
