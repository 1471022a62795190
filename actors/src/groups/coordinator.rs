//! The coordinator of one consumer group: its members (the membership protocol's state,
//! [`ConsumerGroup`]) and its committed offsets ([`GroupCore`]). Both are key-value rows in the
//! `__consumer_offsets` partition the group hashes to, written through that partition's Raft
//! group before a reply says they changed, and rebuilt from its state machine by the next
//! coordinator. A coordinator lives for one leadership term of that partition and stops itself
//! when the term ends.

use super::assignor::Tp;
use super::core::{GroupCore, NewOffset};
use super::membership::{CommitBy, ConsumerGroup, Env, GroupConfig};
use super::records::{self, Rows};
use crate::api::{
    AlterGroupConfig, ApiError, CommitOffsets, CommittedOffset, ConsumerGroupHeartbeat,
    ConsumerGroupHeartbeatReply, DescribeGroup, DescribeGroupConfig, ErrorCode, FetchOffsets,
    GroupConfigDescription, GroupDescription, GroupPartitionLag, ListOffsets, OffsetReset,
    OffsetSpec, ResetOffsets, ResetTarget,
};
use crate::directory::Directory;
use crate::partition::{ConfirmLeadership, PartitionReplica, ProposeKv};
use actix::prelude::*;
use gregor_cluster::{GroupRole, KvWrite, RaftGroup};
use gregor_storage::{Clock, Offset, PartitionId, TopicId};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often sessions are checked and subscribed topics looked at for new partitions.
const TICK: Duration = Duration::from_millis(250);

pub struct GroupCoordinator {
    core: GroupCore,
    members: ConsumerGroup,
    /// The membership rows as last written, so that a change writes only its difference.
    persisted: Rows,
    config: GroupConfig,
    offsets_replica: Addr<PartitionReplica>,
    /// Weak: a coordinator must not keep a stopped group (and its database) alive.
    offsets_group: Weak<RaftGroup>,
    term: u64,
    directory: Arc<Directory>,
    clock: Arc<dyn Clock>,
    /// Sessions are measured on tokio's clock from here (not persisted: a new coordinator
    /// gives every member a fresh session).
    started: Instant,
}

/// Where a coordinator's state lives and the term it serves.
pub(crate) struct Placement {
    pub offsets_replica: Addr<PartitionReplica>,
    pub offsets_group: Arc<RaftGroup>,
    pub term: u64,
}

impl GroupCoordinator {
    pub(crate) fn new(
        core: GroupCore,
        members: ConsumerGroup,
        placement: Placement,
        config: GroupConfig,
        directory: Arc<Directory>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let persisted = if members.meta == Default::default() && members.is_empty() {
            Rows::new()
        } else {
            records::rows(core.name(), &members)
        };
        GroupCoordinator {
            core,
            members,
            persisted,
            config,
            offsets_replica: placement.offsets_replica,
            offsets_group: Arc::downgrade(&placement.offsets_group),
            term: placement.term,
            directory,
            clock,
            started: Instant::now(),
        }
    }

    /// Milliseconds on the session clock.
    fn session_now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// Every non-internal topic and its partition count, as this node's metadata has them.
    fn topics(&self) -> BTreeMap<String, u32> {
        self.directory
            .view()
            .topics()
            .filter(|t| !t.record.internal)
            .map(|t| (t.record.name.clone(), t.record.partitions))
            .collect()
    }

    /// Makes `next` the group's membership: at once when its rows are unchanged, else once
    /// they are written.
    fn persist(&mut self, next: ConsumerGroup) -> ResponseActFuture<Self, Result<(), ApiError>> {
        let rows = records::rows(self.core.name(), &next);
        let write = records::diff(&self.persisted, &rows);
        if write.puts.is_empty() && write.deletes.is_empty() {
            self.members = next;
            return Box::pin(fut::ready(Ok(())));
        }
        let replica = self.offsets_replica.clone();
        Box::pin(
            async move { replicate(&replica, write).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    result?;
                    act.members = next;
                    act.persisted = rows;
                    Ok(())
                }),
        )
    }

    /// Ends sessions that ran out and picks up subscribed topics' new partitions; stops the
    /// coordinator once its term is over.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let leading = self
            .offsets_group
            .upgrade()
            .is_some_and(|g| g.role() == GroupRole::Leader && g.term() == self.term);
        if !leading {
            ctx.stop();
            return;
        }
        if self.members.is_empty() {
            return;
        }
        let topics = self.topics();
        let mut next = self.members.clone();
        let env = Env {
            now_ms: self.session_now_ms(),
            topics: &topics,
            config: &self.config,
        };
        let expired = next.expire(&env);
        if !expired.is_empty() {
            tracing::info!(group = self.core.name(), ?expired, "sessions ended");
        }
        ctx.wait(self.persist(next).map(|result, act, _| {
            if let Err(error) = result {
                tracing::warn!(group = act.core.name(), %error, "group change not written");
            }
        }));
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

    /// Checks one commit against the membership and against the committed offset, which
    /// never moves back except by a reset.
    fn check_commit(
        &self,
        by: &CommitBy,
        topic: &str,
        id: TopicId,
        partition: PartitionId,
        offset: Offset,
    ) -> Result<(), ApiError> {
        self.members.check_commit(
            by,
            &Tp {
                topic: topic.to_string(),
                partition,
            },
        )?;
        match self.core.committed(id, partition) {
            Some(c) if c.offset > offset => Err(ApiError::new(
                ErrorCode::OFFSET_MOVES_BACK,
                format!(
                    "{topic}/{partition} is committed at {}, past {offset}; committed offsets \
                     move back only by a reset (gregor group reset); nothing was committed",
                    c.offset
                ),
            )),
            _ => Ok(()),
        }
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

async fn confirm_leadership(replica: &Addr<PartitionReplica>) -> Result<(), ApiError> {
    replica.send(ConfirmLeadership).await.map_err(|_| {
        ApiError::new(
            ErrorCode::UNAVAILABLE,
            "the offsets partition stopped; retry",
        )
    })?
}

impl Actor for GroupCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, Self::tick);
    }
}

impl Handler<ConsumerGroupHeartbeat> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<ConsumerGroupHeartbeatReply, ApiError>>;

    fn handle(&mut self, hb: ConsumerGroupHeartbeat, _: &mut Self::Context) -> Self::Result {
        let topics = self.topics();
        let mut next = self.members.clone();
        let env = Env {
            now_ms: self.session_now_ms(),
            topics: &topics,
            config: &self.config,
        };
        match next.heartbeat(hb, &env) {
            Ok(reply) => AtomicResponse::new(Box::pin(
                self.persist(next)
                    .map(move |result, _, _| result.map(|()| reply)),
            )),
            Err(error) => AtomicResponse::new(Box::pin(fut::ready(Err(error)))),
        }
    }
}

impl Handler<CommitOffsets> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<(), ApiError>>;

    fn handle(&mut self, request: CommitOffsets, _: &mut Self::Context) -> Self::Result {
        let mut commits = Vec::with_capacity(request.offsets.len());
        let by = CommitBy {
            member: request
                .member
                .as_ref()
                .map(|m| (m.member_id.as_str(), m.member_epoch)),
        };
        for commit in request.offsets {
            let checked = self
                .directory
                .partition(&commit.topic, commit.partition)
                .and_then(|(topic, p)| {
                    let id = topic.record.id;
                    self.check_commit(&by, &commit.topic, id, commit.partition, commit.offset)?;
                    Ok((topic, p))
                });
            match checked {
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
    type Result = AtomicResponse<Self, Result<Vec<CommittedOffset>, ApiError>>;

    fn handle(&mut self, request: FetchOffsets, _: &mut Self::Context) -> Self::Result {
        self.read_confirmed(move |act| Ok(act.named(request.topic.as_deref())))
    }
}

impl Handler<DescribeGroup> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<GroupDescription, ApiError>>;

    fn handle(&mut self, _: DescribeGroup, _: &mut Self::Context) -> Self::Result {
        self.read_confirmed(Self::describe)
    }
}

impl GroupCoordinator {
    /// Answers a read from this coordinator's memory once the offsets partition's leader here
    /// confirmed its leadership after the read arrived: a leader cut off from its group (or
    /// already replaced) goes on believing it leads, and its coordinator would answer with
    /// offsets older than ones another coordinator has since acknowledged.
    fn read_confirmed<T: 'static>(
        &mut self,
        answer: impl FnOnce(&mut Self) -> Result<T, ApiError> + 'static,
    ) -> AtomicResponse<Self, Result<T, ApiError>> {
        let replica = self.offsets_replica.clone();
        AtomicResponse::new(Box::pin(
            async move { confirm_leadership(&replica).await }
                .into_actor(self)
                .map(move |confirmed, act, _| {
                    confirmed?;
                    answer(act)
                }),
        ))
    }

    fn describe(&mut self) -> Result<GroupDescription, ApiError> {
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
        if partitions.is_empty() && self.members.is_empty() && self.persisted.is_empty() {
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
            state: self.members.state().to_string(),
            group_epoch: self.members.meta.epoch,
            members: self.members.describe_members(),
            session_timeout_ms: self.members.group_session_timeout_ms(&self.config),
        })
    }

    fn describe_config(&self) -> GroupConfigDescription {
        GroupConfigDescription {
            group: self.core.name().to_string(),
            session_timeout_ms: self.members.meta.session_timeout_ms,
            effective_session_timeout_ms: self.members.group_session_timeout_ms(&self.config),
            default_session_timeout_ms: self.config.session_timeout_ms,
            min_session_timeout_ms: self.config.min_session_timeout_ms,
            max_session_timeout_ms: self.config.max_session_timeout_ms,
        }
    }
}

impl Handler<DescribeGroupConfig> for GroupCoordinator {
    type Result = Result<GroupConfigDescription, ApiError>;

    fn handle(&mut self, _: DescribeGroupConfig, _: &mut Self::Context) -> Self::Result {
        Ok(self.describe_config())
    }
}

/// The group's configuration is a field of its group row, written like any membership change.
impl Handler<AlterGroupConfig> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<GroupConfigDescription, ApiError>>;

    fn handle(&mut self, request: AlterGroupConfig, _: &mut Self::Context) -> Self::Result {
        let mut next = self.members.clone();
        if let Err(error) = next.set_session_timeout(request.session_timeout_ms, &self.config) {
            return AtomicResponse::new(Box::pin(fut::ready(Err(error))));
        }
        AtomicResponse::new(Box::pin(self.persist(next).map(|result, act, _| {
            result?;
            tracing::info!(
                group = act.core.name(),
                session_timeout_ms = ?act.members.meta.session_timeout_ms,
                "group config changed"
            );
            Ok(act.describe_config())
        })))
    }
}

impl Handler<ResetOffsets> for GroupCoordinator {
    type Result = AtomicResponse<Self, Result<Vec<OffsetReset>, ApiError>>;

    fn handle(&mut self, request: ResetOffsets, _: &mut Self::Context) -> Self::Result {
        if !self.members.is_empty() {
            let error = ApiError::new(
                ErrorCode::NON_EMPTY_GROUP,
                format!(
                    "group '{}' has {} active members; stop them (or wait for their sessions to \
                     end) before resetting its offsets",
                    self.core.name(),
                    self.members.members.len()
                ),
            );
            return AtomicResponse::new(Box::pin(fut::ready(Err(error))));
        }
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

/// Stop now (the node is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopCoordinator;

impl Handler<StopCoordinator> for GroupCoordinator {
    type Result = ();

    fn handle(&mut self, _: StopCoordinator, ctx: &mut Self::Context) {
        ctx.stop();
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
