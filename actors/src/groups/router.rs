//! Finds a group's coordinator, starting it on first use from the committed rows of the
//! `__consumer_offsets` partition the group hashes to.

use super::coordinator::{ForgetTopic, GroupCoordinator};
use super::core::{
    decode_offset_key, group_key_prefix, offsets_partition_for, validate_group_name, GroupCore,
};
use crate::api::{
    ApiError, CommitOffsets, CommittedOffset, DescribeGroup, ErrorCode, FetchOffsets,
    GroupDescription, ListGroups, OffsetReset, ResetOffsets,
};
use crate::directory::Directory;
use crate::partition::ProposeKv;
use crate::topics::OFFSETS_TOPIC;
use actix::prelude::*;
use gregor_cluster::KvWrite;
use gregor_storage::Clock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub struct GroupRouter {
    directory: Arc<Directory>,
    clock: Arc<dyn Clock>,
    coordinators: BTreeMap<String, Addr<GroupCoordinator>>,
    /// Every group with committed offsets, for `ListGroups`.
    known: BTreeSet<String>,
}

impl GroupRouter {
    /// Scans the offsets state once to learn which groups exist.
    pub(crate) fn new(directory: Arc<Directory>, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let known = groups_with_offsets(&directory)?;
        Ok(GroupRouter {
            directory,
            clock,
            coordinators: BTreeMap::new(),
            known,
        })
    }

    fn coordinator(&mut self, group: &str) -> Result<Addr<GroupCoordinator>, ApiError> {
        validate_group_name(group)?;
        if let Some(addr) = self.coordinators.get(group) {
            if addr.connected() {
                return Ok(addr.clone());
            }
        }
        let entry = self.directory.topic(OFFSETS_TOPIC).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UNAVAILABLE,
                "the offsets topic is not loaded yet; retry",
            )
        })?;
        let partition = offsets_partition_for(group, entry.record.partitions);
        let replica = &entry.replicas[partition.0 as usize];
        let rows = replica
            .group
            .store()
            .kv_scan_prefix(replica.group.id(), &group_key_prefix(group))
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::STORAGE,
                    format!("reading committed offsets: {e}"),
                )
            })?;
        let core = GroupCore::load(group, &rows).map_err(ApiError::internal)?;
        let addr = GroupCoordinator::new(
            core,
            replica.addr.clone(),
            self.directory.clone(),
            self.clock.clone(),
        )
        .start();
        self.coordinators.insert(group.to_string(), addr.clone());
        Ok(addr)
    }

    fn forward<M>(&mut self, group: &str, message: M) -> ResponseFuture<Result<M::Reply, ApiError>>
    where
        M: Message<Result = Result<<M as Routed>::Reply, ApiError>> + Routed + Send + 'static,
        GroupCoordinator: Handler<M>,
        <M as Routed>::Reply: Send + 'static,
    {
        match self.coordinator(group) {
            Err(error) => Box::pin(async move { Err(error) }),
            Ok(addr) => Box::pin(async move {
                addr.send(message).await.map_err(|_| {
                    ApiError::new(
                        ErrorCode::UNAVAILABLE,
                        "the group coordinator stopped; retry",
                    )
                })?
            }),
        }
    }
}

/// Every group that has at least one committed offset row.
fn groups_with_offsets(directory: &Directory) -> Result<BTreeSet<String>, String> {
    let mut known = BTreeSet::new();
    if let Some(entry) = directory.topic(OFFSETS_TOPIC) {
        for replica in &entry.replicas {
            let rows = replica
                .group
                .store()
                .kv_scan_prefix(replica.group.id(), b"")
                .map_err(|e| format!("reading committed offsets: {e}"))?;
            known.extend(
                rows.iter()
                    .filter_map(|(k, _)| decode_offset_key(k))
                    .map(|(g, _, _)| g),
            );
        }
    }
    Ok(known)
}

/// Messages the router forwards, with their success type.
pub trait Routed {
    type Reply;
}
impl Routed for CommitOffsets {
    type Reply = ();
}
impl Routed for FetchOffsets {
    type Reply = Vec<CommittedOffset>;
}
impl Routed for DescribeGroup {
    type Reply = GroupDescription;
}
impl Routed for ResetOffsets {
    type Reply = Vec<OffsetReset>;
}

impl Actor for GroupRouter {
    type Context = Context<Self>;
}

impl Handler<CommitOffsets> for GroupRouter {
    type Result = ResponseFuture<Result<(), ApiError>>;
    fn handle(&mut self, request: CommitOffsets, _: &mut Self::Context) -> Self::Result {
        let group = request.group.clone();
        // An empty commit changes no offset, so it does not make a group exist either (one
        // that exists only in memory would vanish at the next restart).
        if validate_group_name(&group).is_ok() && !request.offsets.is_empty() {
            self.known.insert(group.clone());
        }
        self.forward(&group, request)
    }
}

impl Handler<ResetOffsets> for GroupRouter {
    type Result = ResponseFuture<Result<Vec<OffsetReset>, ApiError>>;
    fn handle(&mut self, request: ResetOffsets, _: &mut Self::Context) -> Self::Result {
        let group = request.group.clone();
        if !request.dry_run
            && validate_group_name(&group).is_ok()
            && self.directory.topic(&request.topic).is_some()
        {
            self.known.insert(group.clone());
        }
        self.forward(&group, request)
    }
}

impl Handler<FetchOffsets> for GroupRouter {
    type Result = ResponseFuture<Result<Vec<CommittedOffset>, ApiError>>;
    fn handle(&mut self, request: FetchOffsets, _: &mut Self::Context) -> Self::Result {
        let group = request.group.clone();
        self.forward(&group, request)
    }
}

impl Handler<DescribeGroup> for GroupRouter {
    type Result = ResponseFuture<Result<GroupDescription, ApiError>>;
    fn handle(&mut self, request: DescribeGroup, _: &mut Self::Context) -> Self::Result {
        let group = request.group.clone();
        if let Err(invalid) = validate_group_name(&group) {
            return Box::pin(async move { Err(invalid) });
        }
        if !self.known.contains(&group) {
            let error = ApiError::new(
                ErrorCode::UNKNOWN_GROUP,
                format!(
                    "group '{group}' has no committed offsets; list groups with: gregor group list"
                ),
            );
            return Box::pin(async move { Err(error) });
        }
        self.forward(&group, request)
    }
}

impl Handler<ListGroups> for GroupRouter {
    type Result = Result<Vec<String>, ApiError>;
    fn handle(&mut self, _: ListGroups, _: &mut Self::Context) -> Self::Result {
        Ok(self.known.iter().cloned().collect())
    }
}

/// A topic was deleted: remove its committed offsets from every group.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub(crate) struct TopicDeleted(pub String);

impl Handler<TopicDeleted> for GroupRouter {
    type Result = AtomicResponse<Self, Result<(), ApiError>>;

    fn handle(&mut self, TopicDeleted(topic): TopicDeleted, _: &mut Self::Context) -> Self::Result {
        let coordinators: Vec<Addr<GroupCoordinator>> =
            self.coordinators.values().cloned().collect();
        let partitions = self
            .directory
            .topic(OFFSETS_TOPIC)
            .map(|entry| entry.replicas)
            .unwrap_or_default();
        let forget = async move {
            let stopped =
                || ApiError::new(ErrorCode::UNAVAILABLE, "a group coordinator stopped; retry");
            // Running coordinators forget through their own mailbox, so their cached offsets
            // and the stored rows stay in step.
            for coordinator in coordinators {
                if coordinator.connected() {
                    coordinator
                        .send(ForgetTopic(topic.clone()))
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
                    .filter(|(key, _)| decode_offset_key(key).is_some_and(|(_, t, _)| t == topic))
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
        };
        // Groups whose only offsets were for this topic are no longer listed.
        AtomicResponse::new(Box::pin(forget.into_actor(self).map(|result, act, _| {
            result?;
            act.known = groups_with_offsets(&act.directory).map_err(ApiError::internal)?;
            Ok(())
        })))
    }
}
