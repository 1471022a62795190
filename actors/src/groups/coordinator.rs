//! The coordinator of one consumer group. Its committed offsets are key-value rows in the
//! `__consumer_offsets` partition the group hashes to, written through that partition's Raft
//! group, so they are durable and rebuilt from the state machine after a restart.

use super::core::{GroupCore, NewOffset};
use crate::api::{
    ApiError, CommitOffsets, CommittedOffset, DescribeGroup, ErrorCode, FetchOffsets,
    GroupDescription, GroupPartitionLag, ListOffsets, OffsetReset, OffsetSpec, ResetOffsets,
    ResetTarget,
};
use crate::directory::Directory;
use crate::partition::{PartitionReplica, ProposeKv};
use actix::prelude::*;
use gregor_cluster::KvWrite;
use gregor_storage::{Clock, Offset, PartitionId, TopicId};
use std::sync::Arc;

pub struct GroupCoordinator {
    core: GroupCore,
    offsets_replica: Addr<PartitionReplica>,
    directory: Arc<Directory>,
    clock: Arc<dyn Clock>,
}

impl GroupCoordinator {
    pub(crate) fn new(
        core: GroupCore,
        offsets_replica: Addr<PartitionReplica>,
        directory: Arc<Directory>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        GroupCoordinator {
            core,
            offsets_replica,
            directory,
            clock,
        }
    }

    /// Replicates `commits`, then records them; the mailbox stays closed meanwhile, so two
    /// commits of one group never interleave.
    fn commit(&mut self, commits: Vec<NewOffset>) -> AtomicResponse<Self, Result<(), ApiError>> {
        let now_ms = self.clock.now_ms();
        let planned = self.core.plan_commit(&commits, now_ms);
        let replica = self.offsets_replica.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let (write, committed) = planned?;
                replicate(&replica, write).await?;
                Ok(committed)
            }
            .into_actor(self)
            .map(move |result: Result<Vec<NewOffset>, ApiError>, act, _| {
                act.core.apply(result?, now_ms);
                Ok(())
            }),
        ))
    }

    /// The group's committed offsets as the API shows them: by topic name, for topics that
    /// still exist (offsets of a deleted topic's id belong to no topic).
    fn named(&self, topic: Option<&str>) -> Vec<CommittedOffset> {
        self.core
            .all()
            .filter_map(|(id, partition, c)| {
                let name = self.directory.name_of(id)?;
                topic.is_none_or(|t| t == name).then(|| CommittedOffset {
                    topic: name,
                    partition,
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                    commit_timestamp: c.commit_timestamp,
                })
            })
            .collect()
    }
}

/// Writes offset rows through the group's `__consumer_offsets` partition.
async fn replicate(replica: &Addr<PartitionReplica>, write: KvWrite) -> Result<(), ApiError> {
    replica.send(ProposeKv(write)).await.map_err(|_| {
        ApiError::new(
            ErrorCode::UNAVAILABLE,
            "the offsets partition stopped; retry",
        )
    })?
}

impl Actor for GroupCoordinator {
    type Context = Context<Self>;
}

impl Handler<CommitOffsets> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<(), ApiError>>;

    fn handle(&mut self, request: CommitOffsets, _: &mut Self::Context) -> Self::Result {
        let mut commits = Vec::with_capacity(request.offsets.len());
        for commit in request.offsets {
            match self.directory.partition(&commit.topic, commit.partition) {
                Ok((topic, _)) if !topic.record.internal => commits.push(NewOffset {
                    topic: topic.record.id,
                    partition: commit.partition,
                    offset: commit.offset,
                    metadata: commit.metadata,
                }),
                Ok(_) => {
                    let error = internal_topic(&commit.topic);
                    return AtomicResponse::new(Box::pin(fut::ready(Err(error))));
                }
                Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
            }
        }
        self.commit(commits)
    }
}

fn internal_topic(topic: &str) -> ApiError {
    ApiError::new(
        ErrorCode::INTERNAL_TOPIC,
        format!("topic '{topic}' is internal; groups cannot consume it"),
    )
}

impl Handler<FetchOffsets> for GroupCoordinator {
    type Result = Result<Vec<CommittedOffset>, ApiError>;

    fn handle(&mut self, request: FetchOffsets, _: &mut Self::Context) -> Self::Result {
        Ok(self.named(request.topic.as_deref()))
    }
}

impl Handler<DescribeGroup> for GroupCoordinator {
    type Result = Result<GroupDescription, ApiError>;

    fn handle(&mut self, _: DescribeGroup, _: &mut Self::Context) -> Self::Result {
        let partitions: Vec<GroupPartitionLag> = self
            .named(None)
            .into_iter()
            .map(|c| {
                let log_end = self
                    .directory
                    .replica(&c.topic, c.partition)
                    .map(|r| r.state.borrow().next_offset)
                    .unwrap_or(c.offset);
                GroupPartitionLag {
                    topic: c.topic,
                    partition: c.partition,
                    committed: c.offset,
                    log_end,
                    lag: log_end.0.saturating_sub(c.offset.0),
                }
            })
            .collect();
        if partitions.is_empty() {
            let group = self.core.name();
            return Err(ApiError::new(
                ErrorCode::UNKNOWN_GROUP,
                format!(
                    "group '{group}' has no committed offsets; list groups with: gregor group list"
                ),
            ));
        }
        Ok(GroupDescription {
            group: self.core.name().to_string(),
            partitions,
        })
    }
}

impl Handler<ResetOffsets> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<Vec<OffsetReset>, ApiError>>;

    fn handle(&mut self, request: ResetOffsets, _: &mut Self::Context) -> Self::Result {
        let topic = match self.directory.topic(&request.topic) {
            Ok(topic) if !topic.record.internal => topic,
            Ok(_) => {
                let error = ApiError::new(
                    ErrorCode::INTERNAL_TOPIC,
                    format!("topic '{}' is internal", request.topic),
                );
                return AtomicResponse::new(Box::pin(fut::ready(Err(error))));
            }
            Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        };
        let replicas: Result<Vec<_>, ApiError> = (0..topic.record.partitions)
            .map(|p| self.directory.replica(&request.topic, PartitionId(p)))
            .collect();
        let replicas = match replicas {
            Ok(replicas) => replicas,
            Err(error) => return AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        };
        let timestamp = match request.to {
            ResetTarget::Timestamp(ts) => Some(ts),
            ResetTarget::DurationAgo(ms) => Some(
                self.clock
                    .now_ms()
                    .saturating_sub(ms.min(i64::MAX as u64) as i64),
            ),
            _ => None,
        };
        let topic_id = topic.record.id;
        let previous: Vec<Option<Offset>> = (0..topic.record.partitions)
            .map(|p| {
                self.core
                    .committed(topic_id, PartitionId(p))
                    .map(|c| c.offset)
            })
            .collect();
        let targets = async move {
            let mut resets = Vec::with_capacity(replicas.len());
            for (p, replica) in replicas.iter().enumerate() {
                let partition = PartitionId(p as u32);
                let state = *replica.state.borrow();
                let offset = match (request.to, timestamp) {
                    (ResetTarget::Earliest, _) => state.log_start_offset,
                    (ResetTarget::Latest, _) => state.next_offset,
                    (ResetTarget::Offset(o), _) => {
                        o.clamp(state.log_start_offset, state.next_offset)
                    }
                    (_, Some(ts)) => {
                        let lookup = ListOffsets {
                            topic: request.topic.clone(),
                            partition,
                            spec: OffsetSpec::Timestamp(ts),
                        };
                        replica
                            .addr
                            .send(lookup)
                            .await
                            .map_err(|_| {
                                ApiError::new(
                                    ErrorCode::UNAVAILABLE,
                                    "the partition stopped; retry",
                                )
                            })??
                            .offset
                    }
                    (_, None) => unreachable!("timestamp targets carry a timestamp"),
                };
                resets.push(OffsetReset {
                    partition,
                    previous: previous[p],
                    offset,
                });
            }
            Ok::<_, ApiError>(resets)
        };
        let dry_run = request.dry_run;
        AtomicResponse::new(Box::pin(targets.into_actor(self).then(
            move |resets, act, _| {
                let commit = match (&resets, dry_run) {
                    (Ok(resets), false) => Some(
                        resets
                            .iter()
                            .map(|r| NewOffset {
                                topic: topic_id,
                                partition: r.partition,
                                offset: r.offset,
                                metadata: None,
                            })
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                };
                let now_ms = act.clock.now_ms();
                let planned = commit.map(|c| act.core.plan_commit(&c, now_ms));
                let replica = act.offsets_replica.clone();
                async move {
                    let resets = resets?;
                    let committed = match planned {
                        None => None,
                        Some(planned) => {
                            let (write, committed) = planned?;
                            replicate(&replica, write).await?;
                            Some(committed)
                        }
                    };
                    Ok((resets, committed))
                }
                .into_actor(act)
                .map(
                    move |result: Result<(Vec<OffsetReset>, Option<Vec<NewOffset>>), ApiError>,
                          act,
                          _| {
                        let (resets, committed) = result?;
                        if let Some(committed) = committed {
                            act.core.apply(committed, now_ms);
                        }
                        Ok(resets)
                    },
                )
            },
        )))
    }
}

/// Drop every committed offset of a deleted topic. Tidying only: a topic re-created under the
/// same name has a new id, so it never sees these.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub(crate) struct ForgetTopic(pub TopicId);

impl Handler<ForgetTopic> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<(), ApiError>>;

    fn handle(&mut self, ForgetTopic(topic): ForgetTopic, _: &mut Self::Context) -> Self::Result {
        let write = self.core.plan_forget_topic(topic);
        let replica = self.offsets_replica.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if !write.deletes.is_empty() {
                    replicate(&replica, write).await?;
                }
                Ok(())
            }
            .into_actor(self)
            .map(move |result: Result<(), ApiError>, act, _| {
                result?;
                act.core.forget_topic(topic);
                Ok(())
            }),
        ))
    }
}
