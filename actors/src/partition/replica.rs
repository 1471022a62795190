//! The partition replica actor: validates produce requests, gathers them into Raft entries,
//! serves fetches from committed data (parking long polls until data arrives), answers offset
//! lookups and runs retention.

use super::core::{distribute, EntryPlan, ProduceBuffer};
use crate::api::{
    ApiError, ErrorCode, Fetch, FetchReply, ListOffsets, ListOffsetsReply, OffsetSpec, Produce,
    ProduceReply,
};
use crate::metadata::TopicRecord;
use actix::prelude::*;
use gregor_cluster::{ApplyOutcome, Command, GroupRole, KvWrite, ProposeError, RaftGroup};
use gregor_storage::batch::{BatchError, BatchView};
use gregor_storage::{
    Clock, GroupId, Offset, PartitionId, PartitionState, RetentionPolicy, StorageError, Store,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Node-wide knobs every replica shares.
#[derive(Clone)]
pub struct ReplicaSettings {
    pub linger: Duration,
    pub retention_check_interval: Duration,
    pub clock: Arc<dyn Clock>,
    pub max_pending_bytes: usize,
    pub max_entry_bytes: usize,
    /// Upper bound on one Raft proposal; an isolated async-raft leader never answers.
    pub propose_timeout: Duration,
}

/// Most batch bytes one fetch reply carries, whatever the client asks for: replies are built in
/// memory, so a client asking for 4 GiB must not get it (Kafka's broker has `fetch.max.bytes`).
pub const MAX_FETCH_BYTES: u32 = 32 * 1024 * 1024;

type ProduceReplyTx = oneshot::Sender<Result<ProduceReply, ApiError>>;
type FetchReplyTx = oneshot::Sender<Result<FetchReply, ApiError>>;

struct ParkedFetch {
    id: u64,
    request: Fetch,
    reply: FetchReplyTx,
}

pub struct PartitionReplica {
    topic: TopicRecord,
    partition: PartitionId,
    group: Arc<RaftGroup>,
    store: Store,
    settings: ReplicaSettings,
    state: PartitionState,
    applied: watch::Receiver<PartitionState>,
    buffer: ProduceBuffer<ProduceReplyTx>,
    write_in_flight: bool,
    flush_scheduled: bool,
    parked: Vec<ParkedFetch>,
    next_park_id: u64,
}

impl PartitionReplica {
    pub fn new(
        topic: TopicRecord,
        partition: PartitionId,
        group: Arc<RaftGroup>,
        settings: ReplicaSettings,
    ) -> Self {
        let applied = group.applied();
        let state = *applied.borrow();
        let store = group.store().clone();
        let buffer = ProduceBuffer::new(settings.max_pending_bytes, settings.max_entry_bytes);
        PartitionReplica {
            topic,
            partition,
            group,
            store,
            settings,
            state,
            applied,
            buffer,
            write_in_flight: false,
            flush_scheduled: false,
            parked: Vec::new(),
            next_park_id: 0,
        }
    }

    /// Reads are served from the newest applied state, which the group may have published
    /// before this actor's stream delivered it (right after a restart re-applied the log).
    fn catch_up(&mut self) {
        self.state = *self.applied.borrow();
    }

    fn group_id(&self) -> GroupId {
        self.group.id()
    }

    fn check_leader(&self) -> Result<(), ApiError> {
        match self.group.role() {
            GroupRole::Leader => Ok(()),
            _ => Err(ApiError::not_leader(self.group.leader())),
        }
    }

    fn validate_produce(&self, request: &Produce) -> Result<(), ApiError> {
        if self.topic.internal {
            return Err(internal_topic(&self.topic.name));
        }
        if request.batches.is_empty() {
            return Err(ApiError::new(
                ErrorCode::INVALID_BATCH,
                "a produce request needs at least one batch",
            ));
        }
        for batch in &request.batches {
            if batch.len() > self.topic.config.max_message_bytes as usize {
                return Err(ApiError::new(
                    ErrorCode::RECORD_TOO_LARGE,
                    format!(
                        "a {}-byte batch is over topic '{}''s max.message.bytes of {}; send smaller batches",
                        batch.len(),
                        self.topic.name,
                        self.topic.config.max_message_bytes
                    ),
                ));
            }
            BatchView::validate(batch).map_err(|e| match e {
                BatchError::ChecksumMismatch { .. } => {
                    ApiError::new(ErrorCode::CORRUPT_BATCH, e.to_string())
                }
                other => ApiError::new(ErrorCode::INVALID_BATCH, other.to_string()),
            })?;
        }
        self.check_leader()
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.write_in_flight || self.buffer.is_empty() || self.flush_scheduled {
            return;
        }
        if self.settings.linger.is_zero() {
            self.flush(ctx);
        } else {
            self.flush_scheduled = true;
            ctx.run_later(self.settings.linger, |act, ctx| {
                act.flush_scheduled = false;
                act.flush(ctx);
            });
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.write_in_flight {
            return;
        }
        let Some(EntryPlan { batches, writes }) = self.buffer.take_entry() else {
            return;
        };
        self.write_in_flight = true;
        let group = self.group.clone();
        let timeout = self.settings.propose_timeout;
        let propose = async move { group.propose(Command::append(batches), timeout).await };
        ctx.spawn(propose.into_actor(self).map(move |result, act, ctx| {
            act.write_in_flight = false;
            let log_start = act.state.log_start_offset;
            match result {
                Ok((_, ApplyOutcome::Appended { base_offset, .. })) => {
                    for (reply, offset) in distribute(Offset(base_offset), writes) {
                        let _ = reply.send(Ok(ProduceReply {
                            base_offset: offset,
                            log_start_offset: log_start,
                        }));
                    }
                }
                Ok((index, other)) => {
                    let error = ApiError::internal(format!(
                        "entry {index} applied as {other:?}, not as records"
                    ));
                    for (reply, _) in writes {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    let error = propose_error(error);
                    for (reply, _) in writes {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            act.schedule_flush(ctx);
        }));
    }

    fn offset_range_error(&self, offset: Offset) -> ApiError {
        ApiError::offset_out_of_range(offset, self.state.log_start_offset, self.state.next_offset)
    }

    /// Reads committed batches; `None` when fewer than `min_bytes` are there yet.
    fn try_fetch(
        &self,
        request: &Fetch,
        must_answer: bool,
    ) -> Option<Result<FetchReply, ApiError>> {
        if request.offset < self.state.log_start_offset || request.offset > self.state.next_offset {
            return Some(Err(self.offset_range_error(request.offset)));
        }
        let reply = |batches| FetchReply {
            high_watermark: self.state.next_offset,
            log_start_offset: self.state.log_start_offset,
            batches,
        };
        if request.offset == self.state.next_offset {
            return (must_answer || request.min_bytes == 0).then(|| Ok(reply(Vec::new())));
        }
        match self.store.read_records(
            self.group_id(),
            request.offset,
            request.max_bytes.min(MAX_FETCH_BYTES) as usize,
        ) {
            Ok(fetched) => {
                let bytes: usize = fetched.batches.iter().map(|b| b.len()).sum();
                (must_answer || bytes >= request.min_bytes as usize)
                    .then(|| Ok(reply(fetched.batches)))
            }
            Err(StorageError::OffsetOutOfRange { .. }) => {
                Some(Err(self.offset_range_error(request.offset)))
            }
            Err(error) => Some(Err(ApiError::new(
                ErrorCode::STORAGE,
                format!("reading the log failed: {error}"),
            ))),
        }
    }

    fn wake_parked(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        for fetch in parked {
            match self.try_fetch(&fetch.request, false) {
                Some(result) => {
                    let _ = fetch.reply.send(result);
                }
                None => self.parked.push(fetch),
            }
        }
    }

    fn enforce_retention(&mut self) {
        if self.topic.internal {
            // Internal partitions keep their state in the key-value state machine, so applied
            // entries are history that only the log still holds: drop it.
            compact_applied_log(&self.store, self.group_id(), self.state.last_applied);
            return;
        }
        if self.topic.config.retention_ms < 0 && self.topic.config.retention_bytes < 0 {
            return;
        }
        let policy = RetentionPolicy {
            retention_ms: self.topic.config.retention_ms,
            retention_bytes: self.topic.config.retention_bytes,
        };
        // Bounded: a backlog is worked off over several ticks rather than blocking the actor.
        for _ in 0..16 {
            match self.store.enforce_retention(
                self.group_id(),
                policy,
                self.settings.clock.now_ms(),
            ) {
                Ok(outcome) => {
                    if outcome.removed_entries > 0 {
                        tracing::debug!(topic = %self.topic.name, partition = %self.partition,
                            log_start = %outcome.log_start_offset, "retention removed old batches");
                    }
                    if !outcome.more {
                        break;
                    }
                }
                Err(error) => {
                    tracing::error!(topic = %self.topic.name, partition = %self.partition, %error, "retention failed");
                    break;
                }
            }
        }
        // Subscribers (this actor, describe, group resets) learn the new log start.
        if let Err(error) = self.group.publish_state() {
            tracing::error!(topic = %self.topic.name, partition = %self.partition, %error, "reading partition state failed");
        }
    }
}

/// Removes applied entries of a key-value group through `last_applied`, in bounded steps.
pub(crate) fn compact_applied_log(store: &Store, group: GroupId, last_applied: u64) {
    for _ in 0..16 {
        match store.compact_log(group, last_applied) {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%group, %error, "compacting a key-value group's log failed");
                return;
            }
        }
    }
}

fn internal_topic(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::INTERNAL_TOPIC,
        format!("topic '{name}' is internal to Gregor; clients cannot read or write it"),
    )
}

pub(crate) fn propose_error(error: ProposeError) -> ApiError {
    match error {
        ProposeError::NotLeader { leader } => ApiError::not_leader(leader),
        ProposeError::Timeout { timeout_ms } => ApiError::new(
            ErrorCode::TIMEOUT,
            format!("the write did not commit within {timeout_ms} ms; retry"),
        ),
        ProposeError::ShuttingDown => ApiError::new(
            ErrorCode::UNAVAILABLE,
            "the partition is shutting down; retry",
        ),
        ProposeError::MembershipChanging => ApiError::new(
            ErrorCode::UNAVAILABLE,
            "the partition's replicas are changing; retry",
        ),
        other => ApiError::new(
            ErrorCode::STORAGE,
            format!("the partition cannot write: {other}"),
        ),
    }
}

impl Actor for PartitionReplica {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        let applied = self.applied.clone();
        let changes = futures::stream::unfold(applied, |mut rx| async move {
            rx.changed().await.ok()?;
            let state = *rx.borrow_and_update();
            Some((state, rx))
        });
        ctx.add_stream(changes);
        ctx.run_interval(self.settings.retention_check_interval, |act, _| {
            act.enforce_retention()
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let stopping = ApiError::new(
            ErrorCode::UNAVAILABLE,
            "the partition is shutting down; retry",
        );
        for reply in self.buffer.drain() {
            let _ = reply.send(Err(stopping.clone()));
        }
        for fetch in self.parked.drain(..) {
            let _ = fetch.reply.send(Err(stopping.clone()));
        }
        Running::Stop
    }
}

impl StreamHandler<PartitionState> for PartitionReplica {
    fn handle(&mut self, state: PartitionState, _: &mut Self::Context) {
        self.state = state;
        self.wake_parked();
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Produce> for PartitionReplica {
    type Result = ResponseFuture<Result<ProduceReply, ApiError>>;

    fn handle(&mut self, request: Produce, ctx: &mut Self::Context) -> Self::Result {
        if let Err(error) = self.validate_produce(&request) {
            return Box::pin(async move { Err(error) });
        }
        let (tx, rx) = oneshot::channel();
        if let Err(tx) = self.buffer.push(request.batches, tx) {
            let _ = tx.send(Err(ApiError::new(
                ErrorCode::UNAVAILABLE,
                "the partition's write queue is full; retry with backoff",
            )));
        }
        self.schedule_flush(ctx);
        let timeout_ms = request.timeout_ms.max(1);
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_millis(u64::from(timeout_ms)), rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ApiError::new(ErrorCode::UNAVAILABLE, "the partition stopped; retry")),
                // The write stays queued and may still commit, as in Kafka: a retry can duplicate.
                Err(_) => Err(ApiError::new(
                    ErrorCode::TIMEOUT,
                    format!("the batch was not acknowledged within {timeout_ms} ms; it may still be written"),
                )),
            }
        })
    }
}

impl Handler<Fetch> for PartitionReplica {
    type Result = ResponseFuture<Result<FetchReply, ApiError>>;

    fn handle(&mut self, request: Fetch, ctx: &mut Self::Context) -> Self::Result {
        self.catch_up();
        if self.topic.internal {
            let error = internal_topic(&self.topic.name);
            return Box::pin(async move { Err(error) });
        }
        let wait = Duration::from_millis(u64::from(request.max_wait_ms));
        if let Some(result) = self.try_fetch(&request, wait.is_zero()) {
            return Box::pin(async move { result });
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_park_id;
        self.next_park_id += 1;
        self.parked.push(ParkedFetch {
            id,
            request,
            reply: tx,
        });
        ctx.run_later(wait, move |act, _| {
            if let Some(at) = act.parked.iter().position(|p| p.id == id) {
                let fetch = act.parked.swap_remove(at);
                let result = act
                    .try_fetch(&fetch.request, true)
                    .expect("a must-answer fetch answers");
                let _ = fetch.reply.send(result);
            }
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ApiError::new(
                    ErrorCode::UNAVAILABLE,
                    "the partition stopped; retry",
                ))
            })
        })
    }
}

impl Handler<ListOffsets> for PartitionReplica {
    type Result = Result<ListOffsetsReply, ApiError>;

    fn handle(&mut self, request: ListOffsets, _: &mut Self::Context) -> Self::Result {
        self.catch_up();
        match request.spec {
            OffsetSpec::Earliest => Ok(ListOffsetsReply {
                offset: self.state.log_start_offset,
                timestamp: None,
            }),
            OffsetSpec::Latest => Ok(ListOffsetsReply {
                offset: self.state.next_offset,
                timestamp: None,
            }),
            OffsetSpec::Timestamp(ts) => match self.store.offset_for_timestamp(self.group_id(), ts)
            {
                Ok(Some((offset, timestamp))) => Ok(ListOffsetsReply {
                    offset: offset
                        .max(self.state.log_start_offset)
                        .min(self.state.next_offset),
                    timestamp: Some(timestamp),
                }),
                Ok(None) => Ok(ListOffsetsReply {
                    offset: self.state.next_offset,
                    timestamp: None,
                }),
                Err(error) => Err(ApiError::new(
                    ErrorCode::STORAGE,
                    format!("time index lookup failed: {error}"),
                )),
            },
        }
    }
}

/// Replicate a key-value write through this (internal) partition's Raft group.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct ProposeKv(pub KvWrite);

impl Handler<ProposeKv> for PartitionReplica {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, ProposeKv(write): ProposeKv, _: &mut Self::Context) -> Self::Result {
        let group = self.group.clone();
        let timeout = self.settings.propose_timeout;
        Box::pin(async move {
            group
                .propose(Command::Kv(write), timeout)
                .await
                .map(|_| ())
                .map_err(propose_error)
        })
    }
}

/// Stop serving: answer waiting requests and stop the actor. The Raft group is shut down by
/// whoever owns the last handle to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopReplica;

impl Handler<StopReplica> for PartitionReplica {
    type Result = ();

    fn handle(&mut self, _: StopReplica, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
