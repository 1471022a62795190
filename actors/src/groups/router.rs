//! Finds a group's coordinator. A group lives on the `__consumer_offsets` partition it hashes
//! to; its coordinator runs on the node that leads that partition, started on first use from
//! the partition's committed rows. A request that reaches another node is forwarded to that
//! leader (once: a forwarded request is served or refused, never forwarded again).

use super::coordinator::{ForgetTopic, GroupCoordinator, Placement, StopCoordinator};
use super::core::{
    decode_offset_key, group_key_prefix, offsets_partition_for, validate_group_name, GroupCore,
    OffsetKey,
};
use super::membership::GroupConfig;
use super::records;
use crate::api::{
    AlterGroupConfig, ApiError, CommitOffsets, CommittedOffset, ConsumerGroupHeartbeat,
    ConsumerGroupHeartbeatReply, DescribeGroup, DescribeGroupConfig, ErrorCode, FetchOffsets,
    GroupConfigDescription, GroupDescription, ListGroups, OffsetReset, Request, ResetOffsets,
    Response,
};
use crate::directory::{Directory, ReplicaHandle};
use crate::metadata::{MetadataView, NodeState, OFFSETS_TOPIC};
use crate::partition::ProposeKv;
use crate::peers::{forward, no_leader, FromPeer};
use actix::prelude::*;
use gregor_cluster::{GroupRole, KvWrite, Transport};
use gregor_storage::{Clock, NodeId, TopicId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A running coordinator and the term of the offsets partition's leadership it was loaded in:
/// a coordinator outlives no leadership change (another leader may have committed since).
struct RunningCoordinator {
    addr: Addr<GroupCoordinator>,
    term: u64,
}

pub struct GroupRouter {
    directory: Arc<Directory>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    config: GroupConfig,
    coordinators: BTreeMap<String, RunningCoordinator>,
    /// The topics of the applied metadata: one that goes has its offsets tidied away.
    topics: BTreeSet<TopicId>,
}

/// Where a group request is served.
enum Route {
    Here(Addr<GroupCoordinator>),
    Leader(NodeId),
}

impl GroupRouter {
    pub(crate) fn new(
        directory: Arc<Directory>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        config: GroupConfig,
    ) -> Self {
        let topics = topic_ids(&directory.view());
        GroupRouter {
            directory,
            transport,
            clock,
            config,
            coordinators: BTreeMap::new(),
            topics,
        }
    }

    fn route(&mut self, group: &str, from_peer: bool) -> Result<Route, ApiError> {
        validate_group_name(group)?;
        let offsets = self.directory.topic(OFFSETS_TOPIC).map_err(|_| {
            ApiError::new(
                ErrorCode::UNAVAILABLE,
                "the offsets topic is not created yet; retry",
            )
        })?;
        let partition = offsets_partition_for(group, offsets.record.partitions);
        let offsets_group = offsets.record.group_of(partition);
        let local = self.directory.local(offsets_group);
        let Some(replica) = local.filter(|r| r.group.role() == GroupRole::Leader) else {
            self.stop_coordinator(group);
            return match self.directory.leader(offsets_group) {
                Some(leader) if leader != self.directory.node() && !from_peer => {
                    Ok(Route::Leader(leader))
                }
                _ => Err(no_leader(&format!(
                    "the offsets partition of group '{group}'"
                ))),
            };
        };
        let term = replica.group.term();
        if let Some(running) = self.coordinators.get(group) {
            if running.term == term && running.addr.connected() {
                return Ok(Route::Here(running.addr.clone()));
            }
        }
        if !replica.group.is_ready() {
            // Until this leader applied an entry of its leadership, its applied rows can lack
            // commits made before it (a power cut un-applies them; a new leader applies its
            // predecessors' entries only with its own): a coordinator loaded now would answer
            // with older offsets for its whole term.
            return Err(ApiError::new(
                ErrorCode::UNAVAILABLE,
                format!(
                    "the offsets partition of group '{group}' is catching up with its log; retry"
                ),
            ));
        }
        let addr = self.start_coordinator(group, &replica, term)?;
        self.stop_coordinator(group);
        self.coordinators.insert(
            group.to_string(),
            RunningCoordinator {
                addr: addr.clone(),
                term,
            },
        );
        Ok(Route::Here(addr))
    }

    /// Stops `group`'s coordinator of an earlier term at once, so that its timer cannot write
    /// the group's rows after another coordinator took over.
    fn stop_coordinator(&mut self, group: &str) {
        if let Some(previous) = self.coordinators.remove(group) {
            previous.addr.do_send(StopCoordinator);
        }
    }

    /// A coordinator for the term `term`, rebuilt from the group's rows.
    fn start_coordinator(
        &self,
        group: &str,
        replica: &ReplicaHandle,
        term: u64,
    ) -> Result<Addr<GroupCoordinator>, ApiError> {
        let scan = |prefix: &[u8]| {
            replica
                .group
                .store()
                .kv_scan_prefix(replica.group.id(), prefix)
                .map_err(|e| {
                    ApiError::new(ErrorCode::STORAGE, format!("reading group {group:?}: {e}"))
                })
        };
        let rows = scan(&group_key_prefix(group))?;
        let core = GroupCore::load(group, &rows).map_err(ApiError::internal)?;
        let mut membership_rows = Vec::new();
        for prefix in records::prefixes(group) {
            membership_rows.extend(scan(&prefix)?);
        }
        let members =
            records::load(group, &membership_rows, term, 0).map_err(ApiError::internal)?;
        let placement = Placement {
            offsets_replica: replica.addr.clone(),
            offsets_group: replica.group.clone(),
            term,
        };
        Ok(GroupCoordinator::new(
            core,
            members,
            placement,
            self.config,
            self.directory.clone(),
            self.clock.clone(),
        )
        .start())
    }

    fn serve<M>(
        &mut self,
        group: &str,
        message: M,
        from_peer: bool,
    ) -> ResponseFuture<Result<M::Reply, ApiError>>
    where
        M: Message<Result = Result<<M as Routed>::Reply, ApiError>>
            + Routed
            + Into<Request>
            + Send
            + 'static,
        GroupCoordinator: Handler<M>,
        <M as Routed>::Reply: Send + 'static,
    {
        let route = self.route(group, from_peer);
        let transport = self.transport.clone();
        Box::pin(async move {
            match route? {
                Route::Here(addr) => addr.send(message).await.map_err(|_| {
                    ApiError::new(
                        ErrorCode::UNAVAILABLE,
                        "the group coordinator stopped; retry",
                    )
                })?,
                Route::Leader(leader) => {
                    let response = forward(&*transport, leader, message.into()).await?;
                    M::reply(response)
                }
            }
        })
    }
}

/// The groups with a committed offset for a topic that exists, or with members (now or
/// before), in the offsets partitions this node has a replica of.
fn groups_with_offsets(directory: &Directory) -> Result<BTreeSet<String>, String> {
    let mut known = BTreeSet::new();
    for replica in offsets_replicas(directory) {
        let rows = replica
            .group
            .store()
            .kv_scan_prefix(replica.group.id(), b"")
            .map_err(|e| format!("reading committed offsets: {e}"))?;
        known.extend(rows.iter().filter_map(|(k, _)| match decode_offset_key(k) {
            Some(OffsetKey::Offset { group, topic, .. }) => directory.name_of(topic).map(|_| group),
            _ => records::group_of(k),
        }));
    }
    Ok(known)
}

/// The `__consumer_offsets` replicas running here.
fn offsets_replicas(directory: &Directory) -> Vec<ReplicaHandle> {
    directory
        .locals()
        .into_iter()
        .filter(|r| r.topic.name == OFFSETS_TOPIC)
        .collect()
}

/// Messages the router serves through a coordinator, with their success type.
pub trait Routed {
    type Reply;
    /// The reply in a peer's response.
    ///
    /// # Errors
    /// A response of another kind.
    fn reply(response: Response) -> Result<Self::Reply, ApiError>;
}

macro_rules! routed {
    ($($request:ident -> $reply:ty;)*) => {
        $(
            impl Routed for $request {
                type Reply = $reply;
                fn reply(response: Response) -> Result<$reply, ApiError> {
                    match response {
                        Response::$request(reply) => Ok(reply),
                        other => Err(ApiError::internal(format!(
                            "{} answered with {}", stringify!($request), other.kind()
                        ))),
                    }
                }
            }

            impl Handler<$request> for GroupRouter {
                type Result = ResponseFuture<Result<$reply, ApiError>>;
                fn handle(&mut self, request: $request, _: &mut Self::Context) -> Self::Result {
                    let group = request.group.clone();
                    self.serve(&group, request, false)
                }
            }

            impl Handler<FromPeer<$request>> for GroupRouter {
                type Result = ResponseFuture<Result<$reply, ApiError>>;
                fn handle(
                    &mut self,
                    FromPeer(request): FromPeer<$request>,
                    _: &mut Self::Context,
                ) -> Self::Result {
                    let group = request.group.clone();
                    self.serve(&group, request, true)
                }
            }
        )*
    };
}

routed! {
    CommitOffsets -> ();
    FetchOffsets -> Vec<CommittedOffset>;
    DescribeGroup -> GroupDescription;
    ResetOffsets -> Vec<OffsetReset>;
    ConsumerGroupHeartbeat -> ConsumerGroupHeartbeatReply;
    AlterGroupConfig -> GroupConfigDescription;
    DescribeGroupConfig -> GroupConfigDescription;
}

fn topic_ids(view: &MetadataView) -> BTreeSet<TopicId> {
    view.topics().map(|t| t.record.id).collect()
}

impl Actor for GroupRouter {
    type Context = Context<Self>;

    /// Coordinators run timers of their own: they stop with the router.
    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        for running in std::mem::take(&mut self.coordinators).into_values() {
            running.addr.do_send(StopCoordinator);
        }
        Running::Stop
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        let changes = futures::stream::unfold(self.directory.watch_view(), |mut rx| async move {
            rx.changed().await.ok()?;
            let view = rx.borrow_and_update().clone();
            Some((view, rx))
        });
        ctx.add_stream(changes);
    }
}

/// A deleted topic's offsets are tidied away by every node, in the offsets partitions it leads.
impl StreamHandler<Arc<MetadataView>> for GroupRouter {
    fn handle(&mut self, view: Arc<MetadataView>, ctx: &mut Self::Context) {
        let now = topic_ids(&view);
        for &topic in self.topics.difference(&now) {
            let me = ctx.address();
            ctx.spawn(
                async move {
                    // Tidying only: a topic created again under this name has another id.
                    if !matches!(me.send(TopicDeleted(topic)).await, Ok(Ok(()))) {
                        tracing::warn!(%topic, "a deleted topic's offsets were not tidied away");
                    }
                }
                .into_actor(self),
            );
        }
        self.topics = now;
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl GroupRouter {
    /// Every group this node and, unless the request came from a peer, every other live
    /// member knows of.
    fn list_groups(&mut self, from_peer: bool) -> ResponseFuture<Result<Vec<String>, ApiError>> {
        let local = groups_with_offsets(&self.directory).map_err(ApiError::internal);
        let view = self.directory.view();
        let me = self.directory.node();
        let peers: Vec<NodeId> = if from_peer {
            Vec::new()
        } else {
            view.nodes()
                .filter(|n| n.id != me && n.state != NodeState::Removed)
                .map(|n| n.id)
                .collect()
        };
        let transport = self.transport.clone();
        Box::pin(async move {
            let mut groups = local?;
            for peer in peers {
                // A node that does not answer only shrinks the list: every partition has
                // replicas elsewhere.
                match forward(&*transport, peer, ListGroups {}.into()).await {
                    Ok(Response::ListGroups(more)) => groups.extend(more),
                    Ok(other) => {
                        tracing::warn!(%peer, kind = other.kind(), "ListGroups answered oddly")
                    }
                    Err(error) => tracing::debug!(%peer, %error, "a node did not list its groups"),
                }
            }
            Ok(groups.into_iter().collect())
        })
    }
}

impl Handler<ListGroups> for GroupRouter {
    type Result = ResponseFuture<Result<Vec<String>, ApiError>>;
    fn handle(&mut self, _: ListGroups, _: &mut Self::Context) -> Self::Result {
        self.list_groups(false)
    }
}

impl Handler<FromPeer<ListGroups>> for GroupRouter {
    type Result = ResponseFuture<Result<Vec<String>, ApiError>>;
    fn handle(&mut self, _: FromPeer<ListGroups>, _: &mut Self::Context) -> Self::Result {
        self.list_groups(true)
    }
}

/// A topic was deleted: tidy its committed offsets away in the offsets partitions this node
/// leads (their followers apply the same writes). Tidying only: a topic created again under
/// the same name has another id.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub(crate) struct TopicDeleted(pub TopicId);

impl Handler<TopicDeleted> for GroupRouter {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, TopicDeleted(topic): TopicDeleted, _: &mut Self::Context) -> Self::Result {
        let coordinators: Vec<Addr<GroupCoordinator>> =
            self.coordinators.values().map(|r| r.addr.clone()).collect();
        let partitions: Vec<ReplicaHandle> = offsets_replicas(&self.directory)
            .into_iter()
            .filter(|r| r.group.role() == GroupRole::Leader)
            .collect();
        Box::pin(async move {
            let stopped =
                || ApiError::new(ErrorCode::UNAVAILABLE, "a group coordinator stopped; retry");
            // Running coordinators forget through their own mailbox, so their cached offsets
            // and the stored rows stay in step.
            for coordinator in coordinators {
                if coordinator.connected() {
                    coordinator
                        .send(ForgetTopic(topic))
                        .await
                        .map_err(|_| stopped())??;
                }
            }
            // Then the rows of groups with no running coordinator.
            for replica in partitions {
                let rows = replica
                    .group
                    .store()
                    .kv_scan_prefix(replica.group.id(), b"")
                    .map_err(|e| {
                        ApiError::new(
                            ErrorCode::STORAGE,
                            format!("reading committed offsets: {e}"),
                        )
                    })?;
                let deletes: Vec<_> = rows
                    .into_iter()
                    .filter(|(key, _)| {
                        matches!(
                            decode_offset_key(key),
                            Some(OffsetKey::Offset { topic: t, .. }) if t == topic
                        )
                    })
                    .map(|(key, _)| key)
                    .collect();
                if !deletes.is_empty() {
                    let write = KvWrite {
                        puts: vec![],
                        deletes,
                    };
                    replica
                        .addr
                        .send(ProposeKv(write))
                        .await
                        .map_err(|_| stopped())??;
                }
            }
            Ok(())
        })
    }
}
