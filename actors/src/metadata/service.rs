//! [`MetadataService`]: serves the metadata requests. Reads (`ListTopics`, `DescribeTopic`,
//! `Metadata`) come from the local applied view; writes become metadata commands proposed by
//! the metadata leader, and the command's outcome (decided in apply, on every node alike) is
//! the answer.

use super::command::{decode_outcome, encode_command, MetadataCommand, MetadataOutcome};
use super::requests::{self, accepted, CreatePlan};
use super::validate::OFFSETS_TOPIC;
use super::{MetadataState, MetadataView, TopicView};
use crate::api::{
    ApiError, BrokerInfo, ClusterMetadata, ClusterStatus, ClusterStatusReply, CreateTopic,
    DeleteTopic, DescribeTopic, DrainNode, ErrorCode, InitProducerId, ListTopics, Metadata,
    NodeStatus, PartitionDescription, PartitionMetadata, ProducerIdentity, Response,
    TopicDescription, TopicMetadata, TopicSummary,
};
use crate::directory::Directory;
use crate::liveness::Liveness;
use crate::metadata::{NodeRecord, NodeState};
use crate::operations::planner::candidates;
use crate::operations::Observed;
use crate::partition::{compact_applied_log, propose_error_pub};
use crate::peers::{forward, no_leader, propose_at, FromPeer};
use actix::prelude::*;
use gregor_cluster::{ApplyOutcome, Command, GroupRole, ProposeError, RaftGroup, Transport};
use gregor_storage::{GroupId, NodeId, PartitionId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Proposes `command` through the metadata group and returns its outcome.
///
/// # Errors
/// `NOT_LEADER` (with the leader) when this node does not lead the metadata group, `TIMEOUT`
/// (the command may still commit), `UNAVAILABLE` while shutting down or while the group's
/// voters change.
pub async fn propose(
    metadata: &RaftGroup,
    command: &MetadataCommand,
    timeout: Duration,
) -> Result<MetadataOutcome, ApiError> {
    let (index, outcome) = metadata
        .propose(Command::Machine(encode_command(command)), timeout)
        .await
        .map_err(|error| match error {
            ProposeError::MembershipChanging => ApiError::new(
                ErrorCode::UNAVAILABLE,
                "the metadata group's voters are changing; retry",
            ),
            other => propose_error_pub(other),
        })?;
    match outcome {
        ApplyOutcome::Machine(bytes) => decode_outcome(&bytes).map_err(|e| {
            ApiError::internal(format!("metadata entry {index} answered unreadably: {e}"))
        }),
        other => Err(ApiError::internal(format!(
            "metadata entry {index} applied as {other:?}, not as a command"
        ))),
    }
}

pub struct MetadataService {
    node: NodeId,
    /// Reaches the metadata leader when this node is not it.
    transport: Arc<dyn Transport>,
    metadata: Arc<RaftGroup>,
    state: Arc<MetadataState>,
    directory: Arc<Directory>,
    liveness: Liveness,
    /// The metadata index the reconciler has carried out.
    settled: watch::Receiver<u64>,
    propose_timeout: Duration,
    /// How often applied metadata entries are removed from the log.
    compaction_interval: Option<Duration>,
    /// Producer ids this node may hand out: the rest of a block the metadata group gave it.
    producer_ids: std::ops::Range<i64>,
}

/// Producer ids a node takes from the metadata group at once: one metadata entry serves this
/// many `InitProducerId` requests. Ids left in a block when the node stops are never used.
pub const PRODUCER_ID_BLOCK: u64 = 1000;

impl MetadataService {
    pub fn new(
        transport: Arc<dyn Transport>,
        metadata: Arc<RaftGroup>,
        state: Arc<MetadataState>,
        directory: Arc<Directory>,
        liveness: Liveness,
        settled: watch::Receiver<u64>,
        propose_timeout: Duration,
    ) -> Self {
        MetadataService {
            node: directory.node(),
            transport,
            metadata,
            state,
            directory,
            liveness,
            settled,
            propose_timeout,
            compaction_interval: None,
            producer_ids: 0..0,
        }
    }

    /// Removes applied entries from the metadata log every `interval`.
    pub fn with_compaction(mut self, interval: Duration) -> Self {
        self.compaction_interval = Some(interval);
        self
    }

    /// The metadata's state lives in its rows: applied entries are history, removed in bounded
    /// steps. (And, should a snapshot have come in unannounced, the view is reloaded.)
    fn compact(&self) {
        let last_applied = self.metadata.applied().borrow().last_applied;
        compact_applied_log(self.metadata.store(), GroupId::METADATA, last_applied);
        self.refresh();
    }

    fn refresh(&self) {
        if let Err(error) = self.state.refresh(self.metadata.store()) {
            tracing::error!(%error, "reloading the metadata after a snapshot failed");
        }
    }

    /// Where a metadata write is carried out: here when this node leads the metadata group,
    /// else at the leader, unless the request already came from a peer.
    fn route(&self, from_peer: bool) -> Result<Route, ApiError> {
        if self.metadata.role() == GroupRole::Leader {
            return Ok(Route::Here);
        }
        match self.metadata.leader() {
            Some(leader) if leader != self.node && !from_peer => Ok(Route::Leader(leader)),
            _ => Err(no_leader("the metadata group")),
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            live: self.liveness.live(),
            ..Observed::default()
        }
    }
}

/// Where a metadata write goes.
#[derive(Debug, Clone, Copy)]
enum Route {
    Here,
    Leader(NodeId),
}

/// Describes a topic from the applied view and what this node knows of leaders and replicas.
pub fn describe(directory: &Directory, topic: &TopicView) -> TopicDescription {
    let partitions = topic
        .assignments
        .iter()
        .enumerate()
        .map(|(p, assignment)| {
            let partition = PartitionId(p as u32);
            let group = topic.record.group_of(partition);
            let hint = directory.leadership(group);
            // The node's own replica when it has one (committed, though possibly behind its
            // leader); else what the leader last said.
            let (log_start_offset, high_watermark) = match directory.local(group) {
                Some(replica) => {
                    let state = *replica.state.borrow();
                    (state.log_start_offset, state.next_offset)
                }
                None => hint
                    .as_ref()
                    .map(|h| (h.log_start_offset, h.high_watermark))
                    .unwrap_or_default(),
            };
            PartitionDescription {
                partition,
                leader: directory.leader(group),
                replicas: assignment.replicas.clone(),
                log_start_offset,
                high_watermark,
                lagging: lagging(directory, group, assignment)
                    .or_else(|| hint.map(|h| h.lagging))
                    .unwrap_or_default(),
            }
        })
        .collect();
    TopicDescription {
        name: topic.record.name.clone(),
        replication_factor: topic.record.replication_factor,
        internal: topic.record.internal,
        config: topic.record.config.clone(),
        partitions,
    }
}

/// When this node leads `group`: the replicas that are not (yet) voters of its Raft group.
fn lagging(
    directory: &Directory,
    group: GroupId,
    assignment: &super::PartitionAssignment,
) -> Option<Vec<NodeId>> {
    let local = directory.local(group)?;
    if local.group.role() != GroupRole::Leader {
        return None;
    }
    let voters = local.group.settled_voters();
    Some(
        assignment
            .members()
            .into_iter()
            .filter(|n| !voters.contains(n))
            .collect(),
    )
}

fn brokers(view: &MetadataView) -> Vec<BrokerInfo> {
    view.nodes()
        .filter(|n| n.state != NodeState::Removed)
        .map(|n| BrokerInfo {
            node_id: n.id,
            address: n.client_addr.clone(),
        })
        .collect()
}

/// Waits (up to `timeout`) until this node has carried out the metadata up to `revision` and
/// every partition group of `topic` it founded has a leader, so a client that created a topic
/// can use it at once.
async fn wait_until_usable(
    directory: &Directory,
    mut settled: watch::Receiver<u64>,
    topic: &TopicView,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let reached =
        tokio::time::timeout_at(deadline, settled.wait_for(|s| *s >= topic.created_revision));
    if !matches!(reached.await, Ok(Ok(_))) {
        return;
    }
    for p in 0..topic.record.partitions {
        let partition = PartitionId(p);
        if !topic.founds(partition, directory.node()) {
            continue;
        }
        if let Some(local) = directory.local(topic.record.group_of(partition)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            local.group.wait_for_leadership(left).await;
        }
    }
}

impl Actor for MetadataService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(interval) = self.compaction_interval {
            ctx.run_interval(interval, |act, _| act.compact());
        }
        // A snapshot moves the applied index without a command: reload the view then.
        let applied = futures::stream::unfold(self.metadata.applied(), |mut rx| async move {
            rx.changed().await.ok()?;
            rx.borrow_and_update();
            Some(((), rx))
        });
        ctx.add_stream(applied);
    }
}

impl MetadataService {
    fn create_topic(
        &self,
        request: CreateTopic,
        from_peer: bool,
    ) -> ResponseFuture<Result<TopicDescription, ApiError>> {
        let route = self.route(from_peer);
        let planned = || {
            let view = self.directory.view();
            let candidates = candidates(&view, &self.observed());
            requests::create_topic(&view, &candidates, &request)
        };
        let planned = match route {
            Ok(Route::Here) => Some(planned()),
            _ => None,
        };
        let (metadata, transport) = (self.metadata.clone(), self.transport.clone());
        let directory = self.directory.clone();
        let settled = self.settled.clone();
        let timeout = self.propose_timeout;
        Box::pin(async move {
            if let Route::Leader(leader) = route? {
                return match forward(&*transport, leader, request.into()).await? {
                    Response::CreateTopic(description) => Ok(description),
                    other => Err(ApiError::internal(format!(
                        "CreateTopic answered {other:?}"
                    ))),
                };
            }
            if let CreatePlan::Propose(command) = planned.expect("planned here")? {
                accepted(propose(&metadata, &command, timeout).await?)?;
            }
            let topic = directory.topic(&request.name)?;
            wait_until_usable(&directory, settled, &topic, timeout).await;
            Ok(describe(&directory, &topic))
        })
    }

    fn delete_topic(
        &self,
        request: DeleteTopic,
        from_peer: bool,
    ) -> ResponseFuture<Result<(), ApiError>> {
        let route = self.route(from_peer);
        let planned = requests::delete_topic(&self.directory.view(), &request.name);
        let (metadata, transport) = (self.metadata.clone(), self.transport.clone());
        let timeout = self.propose_timeout;
        Box::pin(async move {
            if let Route::Leader(leader) = route? {
                forward(&*transport, leader, request.into()).await?;
                return Ok(());
            }
            let command = planned?;
            accepted(propose(&metadata, &command, timeout).await?)?;
            Ok(())
        })
    }

    fn drain_node(
        &self,
        request: DrainNode,
        from_peer: bool,
    ) -> ResponseFuture<Result<(), ApiError>> {
        let route = self.route(from_peer);
        let planned = requests::drain_node(&self.directory.view(), request.node_id);
        let (metadata, transport) = (self.metadata.clone(), self.transport.clone());
        let timeout = self.propose_timeout;
        Box::pin(async move {
            if let Route::Leader(leader) = route? {
                forward(&*transport, leader, request.into()).await?;
                return Ok(());
            }
            accepted(propose(&metadata, &planned?, timeout).await?)?;
            Ok(())
        })
    }

    /// Proposes `command` here, or has the metadata leader propose it.
    fn propose(
        &self,
        command: MetadataCommand,
        from_peer: bool,
    ) -> ResponseFuture<Result<MetadataOutcome, ApiError>> {
        let route = self.route(from_peer);
        let (metadata, transport) = (self.metadata.clone(), self.transport.clone());
        let timeout = self.propose_timeout;
        Box::pin(async move {
            match route? {
                Route::Here => propose(&metadata, &command, timeout).await,
                Route::Leader(leader) => propose_at(&*transport, leader, command).await,
            }
        })
    }
}

macro_rules! writes {
    ($($request:ty => $method:ident -> $reply:ty;)*) => {
        $(
            impl Handler<$request> for MetadataService {
                type Result = ResponseFuture<Result<$reply, ApiError>>;

                fn handle(&mut self, request: $request, _: &mut Self::Context) -> Self::Result {
                    self.$method(request, false)
                }
            }

            impl Handler<FromPeer<$request>> for MetadataService {
                type Result = ResponseFuture<Result<$reply, ApiError>>;

                fn handle(
                    &mut self,
                    FromPeer(request): FromPeer<$request>,
                    _: &mut Self::Context,
                ) -> Self::Result {
                    self.$method(request, true)
                }
            }
        )*
    };
}

writes! {
    CreateTopic => create_topic -> TopicDescription;
    DeleteTopic => delete_topic -> ();
    DrainNode => drain_node -> ();
}

impl Handler<ListTopics> for MetadataService {
    type Result = Result<Vec<TopicSummary>, ApiError>;

    fn handle(&mut self, request: ListTopics, _: &mut Self::Context) -> Self::Result {
        Ok(self
            .directory
            .view()
            .topics()
            .filter(|t| request.include_internal || !t.record.internal)
            .map(|t| t.record.summary())
            .collect())
    }
}

impl Handler<DescribeTopic> for MetadataService {
    type Result = Result<TopicDescription, ApiError>;

    fn handle(&mut self, request: DescribeTopic, _: &mut Self::Context) -> Self::Result {
        let topic = self.directory.topic(&request.name)?;
        Ok(describe(&self.directory, &topic))
    }
}

impl Handler<Metadata> for MetadataService {
    type Result = Result<ClusterMetadata, ApiError>;

    fn handle(&mut self, request: Metadata, _: &mut Self::Context) -> Self::Result {
        let view = self.directory.view();
        let topics: Vec<Arc<TopicView>> = match &request.topics {
            None => view
                .topics()
                .filter(|t| !t.record.internal)
                .cloned()
                .collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    view.topic(n)
                        .cloned()
                        .ok_or_else(|| ApiError::unknown_topic(n))
                })
                .collect::<Result<_, _>>()?,
        };
        let topics = topics
            .iter()
            .map(|topic| TopicMetadata {
                name: topic.record.name.clone(),
                partitions: topic
                    .assignments
                    .iter()
                    .enumerate()
                    .map(|(p, assignment)| {
                        let partition = PartitionId(p as u32);
                        PartitionMetadata {
                            partition,
                            leader: self.directory.leader(topic.record.group_of(partition)),
                            replicas: assignment.replicas.clone(),
                        }
                    })
                    .collect(),
                topic_id: Some(topic.record.id),
            })
            .collect();
        Ok(ClusterMetadata {
            brokers: brokers(&view),
            topics,
        })
    }
}

impl Handler<InitProducerId> for MetadataService {
    type Result = AtomicResponse<Self, Result<ProducerIdentity, ApiError>>;

    fn handle(&mut self, _: InitProducerId, _: &mut Self::Context) -> Self::Result {
        let identity = |id: i64| ProducerIdentity {
            producer_id: id,
            producer_epoch: 0,
        };
        if let Some(id) = self.producer_ids.next() {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(identity(id)))));
        }
        // A new block: the mailbox stays closed until it is in, so two requests never take
        // two blocks.
        let fetch = self.propose(
            MetadataCommand::AllocateProducerIds {
                count: PRODUCER_ID_BLOCK,
            },
            false,
        );
        AtomicResponse::new(Box::pin(
            async move { accepted(fetch.await?) }
                .into_actor(self)
                .map(move |outcome, act, _| match outcome? {
                    MetadataOutcome::ProducerIds { first, count } => {
                        act.producer_ids = first..first + count as i64;
                        let id = act.producer_ids.next().expect("a block is not empty");
                        Ok(identity(id))
                    }
                    other => Err(ApiError::internal(format!(
                        "producer ids were answered with {other:?}"
                    ))),
                }),
        ))
    }
}

impl Handler<ClusterStatus> for MetadataService {
    type Result = Result<ClusterStatusReply, ApiError>;

    fn handle(&mut self, _: ClusterStatus, _: &mut Self::Context) -> Self::Result {
        let view = self.directory.view();
        let replicas = view.replica_counts();
        let leaders = self.directory.leader_counts();
        let voters = self.metadata.voters();
        // Every live registered member that is not a voter follows the metadata log as a
        // learner (the metadata leader sees to it); a dead or removed one follows nothing.
        let role = |node: &NodeRecord| {
            if voters.contains(&node.id) {
                "voter"
            } else if node.state != NodeState::Removed && self.liveness.is_live(node.id) {
                "learner"
            } else {
                "none"
            }
        };
        let nodes = view
            .nodes()
            .map(|n| NodeStatus {
                node_id: n.id,
                address: n.client_addr.clone(),
                peer_address: n.peer_addr.clone(),
                rack: n.rack.clone(),
                state: n.state.name().to_string(),
                live: self.liveness.is_live(n.id),
                metadata_role: role(n).into(),
                replicas: replicas.get(&n.id).copied().unwrap_or(0),
                leaders: leaders.get(&n.id).copied().unwrap_or(0),
            })
            .collect();
        Ok(ClusterStatusReply {
            node_id: self.directory.node(),
            metadata_leader: self.metadata.leader(),
            nodes,
        })
    }
}

impl StreamHandler<()> for MetadataService {
    fn handle(&mut self, (): (), _: &mut Self::Context) {
        self.refresh();
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Proposes a metadata command here, or at the metadata leader (a completed move, a block of
/// producer ids).
#[derive(Message)]
#[rtype(result = "Result<MetadataOutcome, ApiError>")]
pub struct Propose(pub MetadataCommand);

impl Handler<Propose> for MetadataService {
    type Result = ResponseFuture<Result<MetadataOutcome, ApiError>>;

    fn handle(&mut self, Propose(command): Propose, _: &mut Self::Context) -> Self::Result {
        self.propose(command, false)
    }
}

impl Handler<FromPeer<Propose>> for MetadataService {
    type Result = ResponseFuture<Result<MetadataOutcome, ApiError>>;

    fn handle(
        &mut self,
        FromPeer(Propose(command)): FromPeer<Propose>,
        _: &mut Self::Context,
    ) -> Self::Result {
        self.propose(command, true)
    }
}

/// Whether the offsets topic exists yet (the node serves groups only once it does).
pub fn offsets_topic_exists(view: &MetadataView) -> bool {
    view.topic(OFFSETS_TOPIC).is_some()
}

/// The group of the `__consumer_offsets` partition `partition`.
pub fn offsets_group(view: &MetadataView, partition: PartitionId) -> Option<GroupId> {
    view.topic(OFFSETS_TOPIC)
        .map(|t| t.record.group_of(partition))
}
