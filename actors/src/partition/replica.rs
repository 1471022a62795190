//! The partition replica actor. As the group's ready leader (it has applied an entry of its own
//! term) it validates and deduplicates produce requests, gathers them into Raft entries, serves
//! fetches from committed data (parking long polls until data arrives), answers offset lookups
//! and proposes retention. Anywhere else it answers `NOT_LEADER` naming the leader; on losing
//! leadership it fails what waits on it with `NOT_LEADER`, which clients retry at the new leader.

use super::core::{distribute, EntryPlan, ProduceBuffer};
use super::idempotence::{Decision, Proposals, Stamp};
use super::ready_queue::{Fate, ReadyQueue};
use crate::api::{
    Acks, ApiError, ErrorCode, Fetch, FetchReply, ListOffsets, ListOffsetsReply, OffsetSpec,
    Produce, ProduceReply,
};
use crate::metadata::TopicRecord;
use crate::storage_io::off_thread;
use actix::prelude::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use gregor_cluster::{ApplyOutcome, Command, GroupStatus, KvWrite, ProposeError, RaftGroup};
use gregor_storage::batch::{BatchError, BatchView};
use gregor_storage::{
    Clock, FetchedBatches, GroupId, NodeId, Offset, PartitionId, PartitionState, RetentionPolicy,
    StorageError, Store, TopicId,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Where clients reach a node, if this node knows (from the applied metadata).
pub type AddressBook = Arc<dyn Fn(NodeId) -> Option<String> + Send + Sync>;

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
    /// Fills in the leader's address in `NOT_LEADER` replies.
    pub addresses: AddressBook,
}

/// Most batch bytes one fetch reply carries, whatever the client asks for: replies are built in
/// memory, so a client asking for 4 GiB must not get it (Kafka's broker has `fetch.max.bytes`).
pub const MAX_FETCH_BYTES: u32 = 32 * 1024 * 1024;
/// Longest a fetch may wait for data, whatever the client asks for: a parked fetch holds a
/// timer and its request, and a client that asks for days must not pin them that long.
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;
/// Most fetches waiting on one partition; beyond it a fetch is answered at once with what is
/// there, so waiting memory stays bounded whatever the clients do.
pub const MAX_PARKED_FETCHES: usize = 1024;
/// Longest a request waits for a leader elected moments ago to become ready (it applies the
/// blank entry of its term within a round trip) before it is answered `NOT_LEADER`.
const READY_WAIT: Duration = Duration::from_secs(5);
/// Reads expected to return at most this much run on the actor thread (see `read_for`).
const INLINE_READ_BYTES: u64 = 64 * 1024;
/// `AdvanceLogStart` proposals one retention check makes at most (each covers up to 256
/// entries): a backlog is worked off over several checks.
const RETENTION_ROUNDS: u32 = 16;

type ProduceReplyTx = oneshot::Sender<Result<ProduceReply, ApiError>>;
type FetchReplyTx = oneshot::Sender<Result<FetchReply, ApiError>>;

/// A produce request waiting for its entry.
#[derive(Debug)]
struct Waiter {
    /// Names the request's batches among this leader's proposals.
    write: u64,
    acks: Acks,
    reply: ProduceReplyTx,
}

struct ParkedFetch {
    id: u64,
    request: Fetch,
    reply: FetchReplyTx,
    /// The wait's timer, cancelled when the fetch is answered sooner.
    timer: SpawnHandle,
    /// A read for it is on a storage thread: new data does not start another.
    reading: bool,
}

/// What a fetch needs next, decided from the applied state without reading the log.
enum FetchStep {
    Answer(Result<FetchReply, ApiError>),
    /// Records are there: read them (on a storage thread).
    Read,
    /// Nothing to read yet, and the fetch may wait.
    Wait,
}

type FetchRead = Result<FetchedBatches, StorageError>;

pub struct PartitionReplica {
    topic: TopicRecord,
    partition: PartitionId,
    group: Arc<RaftGroup>,
    store: Store,
    settings: ReplicaSettings,
    state: PartitionState,
    applied: watch::Receiver<PartitionState>,
    status: watch::Receiver<GroupStatus>,
    buffer: ProduceBuffer<Waiter>,
    /// Idempotent batches this leader proposed in its term and has not seen applied.
    proposals: Proposals,
    next_write: u64,
    /// The term in which an entry of this leader had an unknown outcome (timed out): offsets
    /// cannot be predicted for acks=1 in that term, which then waits for the apply.
    unsettled_term: Option<u64>,
    write_in_flight: bool,
    flush_scheduled: bool,
    retention_in_flight: bool,
    parked: Vec<ParkedFetch>,
    next_park_id: u64,
    /// Produce requests waiting, in order, for this new leader to become ready.
    ready_queue: ReadyQueue,
    /// The leader term in which the requests in `buffer` were accepted.
    buffer_term: u64,
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
        let status = group.status();
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
            status,
            buffer,
            proposals: Proposals::default(),
            next_write: 0,
            unsettled_term: None,
            write_in_flight: false,
            flush_scheduled: false,
            retention_in_flight: false,
            parked: Vec::new(),
            next_park_id: 0,
            ready_queue: ReadyQueue::default(),
            buffer_term: 0,
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

    fn not_leader(&self) -> ApiError {
        let leader = self.group.leader().filter(|l| *l != self.group.node());
        let address = leader.and_then(|l| (self.settings.addresses)(l));
        ApiError::not_leader_at(leader, address)
    }

    /// Whether this node leads but has not applied its own term's entry yet: a request waits
    /// for it (see [`wait_ready`]) rather than bouncing off `NOT_LEADER`.
    fn becoming_ready(&self) -> bool {
        self.group.role() == gregor_cluster::GroupRole::Leader && !self.group.is_ready()
    }

    /// Serving needs a ready leader: its applied state holds everything committed before it.
    fn check_ready(&self) -> Result<(), ApiError> {
        if self.group.is_ready() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    fn validate_produce(&self, request: &Produce) -> Result<Vec<Option<Stamp>>, ApiError> {
        if self.topic.internal {
            return Err(internal_topic(&self.topic.name));
        }
        self.check_incarnation(request.topic_id)?;
        if request.batches.is_empty() {
            return Err(ApiError::new(
                ErrorCode::INVALID_BATCH,
                "a produce request needs at least one batch",
            ));
        }
        let mut stamps = Vec::with_capacity(request.batches.len());
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
            stamps.push(Stamp::of(batch)?);
        }
        self.check_ready()?;
        Ok(stamps)
    }

    /// A produce bound to another incarnation of the topic than this replica's is not written
    /// here: an older one was deleted (ids grow with each creation), a newer one lives in
    /// another group.
    fn check_incarnation(&self, wanted: Option<TopicId>) -> Result<(), ApiError> {
        match wanted {
            Some(id) if id < self.topic.id => Err(ApiError::unknown_topic_id(&self.topic.name, id)),
            Some(id) if id > self.topic.id => Err(ApiError::not_leader(None)),
            _ => Ok(()),
        }
    }

    /// Checks idempotent batches against the applied producer state and this term's proposals.
    fn deduplicate(&mut self, stamps: &[Option<Stamp>]) -> Result<Decision, ApiError> {
        self.proposals.enter_term(self.group.term());
        let (store, group) = (&self.store, self.group.id());
        self.proposals.decide(stamps, |producer| {
            store.producer_state(group, producer).map_err(|error| {
                ApiError::new(
                    ErrorCode::STORAGE,
                    format!("reading the producer state failed: {error}"),
                )
            })
        })
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

    /// Where the next entry's records will go if it commits, when this leader can tell: every
    /// earlier entry of its term has been applied, so the applied log end is exact.
    fn predicted_base(&self) -> Option<Offset> {
        if self.unsettled_term == Some(self.group.term()) {
            return None;
        }
        self.store
            .partition_state(self.group_id())
            .ok()
            .map(|s| s.next_offset)
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.write_in_flight {
            return;
        }
        if !self.group.is_ready() || self.group.term() != self.buffer_term {
            self.fail_waiting(self.not_leader());
            return;
        }
        let Some(EntryPlan { batches, writes }) = self.buffer.take_entry() else {
            return;
        };
        self.write_in_flight = true;
        let log_start = self.state.log_start_offset;
        let ids: Vec<u64> = writes.iter().map(|(w, _)| w.write).collect();
        let (early, mut writes) = split_early(writes, self.predicted_base());
        let group = self.group.clone();
        let timeout = self.settings.propose_timeout;
        let term = self.group.term();
        let propose = async move {
            let command = Command::append(batches);
            if early.is_empty() {
                return group.propose(command, timeout).await;
            }
            let (durable, on_durable) = oneshot::channel();
            let proposal = group.propose_notifying(command, durable, timeout);
            tokio::pin!(proposal);
            tokio::select! {
                biased;
                result = &mut proposal => return result,
                notice = on_durable => if notice.is_ok() {
                    for (reply, offset) in early {
                        let _ = reply.send(Ok(ProduceReply { base_offset: offset, log_start_offset: log_start }));
                    }
                },
            }
            proposal.await
        };
        ctx.spawn(propose.into_actor(self).map(move |result, act, ctx| {
            act.write_in_flight = false;
            let log_start = act.state.log_start_offset;
            match result {
                Ok((_, ApplyOutcome::Appended { base_offset, .. })) => {
                    act.proposals.applied(&ids);
                    for (reply, offset) in distribute(Offset(base_offset), writes) {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(ProduceReply {
                                base_offset: offset,
                                log_start_offset: log_start,
                            }));
                        }
                    }
                }
                Ok((index, other)) => {
                    let error = ApiError::internal(format!(
                        "entry {index} applied as {other:?}, not as records"
                    ));
                    answer_all(&mut writes, &error);
                }
                Err(error) => {
                    // The entry may still commit: its batches stay among this term's proposals
                    // (a retry of them waits for the outcome) and offsets are not predicted.
                    if !matches!(
                        error,
                        ProposeError::MembershipChanging | ProposeError::LeadershipMoving { .. }
                    ) {
                        act.unsettled_term = Some(term);
                    }
                    answer_all(&mut writes, &propose_error(error));
                }
            }
            act.schedule_flush(ctx);
        }));
    }

    /// Fails every produce request still queued.
    fn fail_waiting(&mut self, error: ApiError) {
        for waiter in self.buffer.drain() {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }

    /// Leadership changed: what waits on this node as leader goes to the new one.
    fn on_status(&mut self, ctx: &mut Context<Self>) {
        self.settle_ready_queue(ctx);
        if !self.buffer.is_empty() && self.buffer_term != self.group.term() {
            self.fail_waiting(self.not_leader());
        }
        if self.group.is_ready() {
            return;
        }
        let error = self.not_leader();
        self.fail_waiting(error.clone());
        for fetch in std::mem::take(&mut self.parked) {
            ctx.cancel_future(fetch.timer);
            let _ = fetch.reply.send(Err(error.clone()));
        }
        self.proposals.clear();
    }

    /// A fetch past the end of this replica's log. A consumer only reaches offsets that were
    /// committed, and a leader holds every committed entry, so either the consumer asked for
    /// an offset that never existed (out of range: it resets its position) or this node is a
    /// stale leader (cut off, or already replaced: async-raft has no check-quorum) whose log
    /// lacks what the real leader committed since. Answering the second with out of range
    /// would make the consumer reset to its reset policy's end and read the partition again
    /// (or skip it); so out of range is answered only once this node confirmed its leadership
    /// after the fetch came.
    fn past_the_end(
        &mut self,
        request: Fetch,
    ) -> ResponseActFuture<Self, Result<FetchReply, ApiError>> {
        self.once_leadership_confirmed(move |act| {
            if request.offset > act.state.next_offset {
                Err(act.offset_range_error(request.offset))
            } else {
                Ok(act.fetch_reply(Vec::new(), None))
            }
        })
    }

    /// Answers with `answer` once an empty write of this leader's term, proposed now, has
    /// committed; with the proposal's error (retriable) if it does not. For the answers a
    /// stale leader would get wrong from its own applied state.
    fn once_leadership_confirmed<T: 'static>(
        &mut self,
        answer: impl FnOnce(&mut Self) -> Result<T, ApiError> + 'static,
    ) -> ResponseActFuture<Self, Result<T, ApiError>> {
        let group = self.group.clone();
        let timeout = self.settings.propose_timeout;
        Box::pin(
            async move { group.confirm_leadership(timeout).await }
                .into_actor(self)
                .map(move |confirmed, act, _| {
                    confirmed.map_err(propose_error)?;
                    answer(act)
                }),
        )
    }

    fn offset_range_error(&self, offset: Offset) -> ApiError {
        ApiError::offset_out_of_range(offset, self.state.log_start_offset, self.state.next_offset)
    }

    /// Decides a fetch from the applied state alone: reading the log is the caller's next step.
    fn fetch_step(&self, request: &Fetch, must_answer: bool) -> FetchStep {
        if request.offset < self.state.log_start_offset || request.offset > self.state.next_offset {
            return FetchStep::Answer(Err(self.offset_range_error(request.offset)));
        }
        if request.offset < self.state.next_offset {
            return FetchStep::Read;
        }
        if must_answer || request.min_bytes == 0 {
            FetchStep::Answer(Ok(self.fetch_reply(Vec::new(), None)))
        } else {
            FetchStep::Wait
        }
    }

    /// Reads the batches a fetch asks for: on a storage thread when the read may be large (up
    /// to 32 MiB, from the disk) and would hold up every other partition on the actor thread;
    /// here when it reads only the newest few records (a consumer at the end of the log), which
    /// come from memory faster than a hand-over to another thread and back.
    fn read_for(&self, request: &Fetch) -> BoxFuture<'static, FetchRead> {
        match self.read_here(request) {
            Some(read) => Box::pin(futures::future::ready(read)),
            None => self.read_off_thread(request),
        }
    }

    /// The read on a storage thread, whatever its size.
    fn read_off_thread(&self, request: &Fetch) -> BoxFuture<'static, FetchRead> {
        let (store, group, offset) = (self.store.clone(), self.group_id(), request.offset);
        let max_bytes = request.max_bytes.min(MAX_FETCH_BYTES) as usize;
        Box::pin(async move {
            off_thread(&store, move |store| {
                store.read_records(group, offset, max_bytes)
            })
            .await
        })
    }

    /// The read, done on this thread, when it is small enough for that (see `read_for`).
    fn read_here(&self, request: &Fetch) -> Option<FetchRead> {
        let max_bytes = request.max_bytes.min(MAX_FETCH_BYTES) as usize;
        (self.expected_read_bytes(request.offset, max_bytes) <= INLINE_READ_BYTES).then(|| {
            self.store
                .read_records(self.group_id(), request.offset, max_bytes)
        })
    }

    /// About how many bytes a read from `offset` returns, from the log's mean record size.
    fn expected_read_bytes(&self, offset: Offset, max_bytes: usize) -> u64 {
        let state = &self.state;
        let records = state.next_offset.0.saturating_sub(offset.0);
        let held = state
            .next_offset
            .0
            .saturating_sub(state.log_start_offset.0)
            .max(1);
        let mean = state.size_bytes / held + 1;
        records.saturating_mul(mean).min(max_bytes as u64)
    }

    /// The answer a read gives: `None` when it holds fewer than `min_bytes` and the fetch may
    /// wait for more.
    fn answer_read(
        &self,
        request: &Fetch,
        read: FetchRead,
        must_answer: bool,
    ) -> Option<Result<FetchReply, ApiError>> {
        match read {
            Ok(fetched) => {
                let bytes: usize = fetched.batches.iter().map(|b| b.len()).sum();
                (must_answer || bytes >= request.min_bytes as usize)
                    .then(|| Ok(self.fetch_reply(fetched.batches, Some(fetched.state))))
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

    /// `read` is the state the batches were read at, which may be newer than this actor's.
    fn fetch_reply(&self, batches: Vec<Bytes>, read: Option<PartitionState>) -> FetchReply {
        let (mut high_watermark, mut log_start_offset) =
            (self.state.next_offset, self.state.log_start_offset);
        if let Some(read) = read {
            high_watermark = high_watermark.max(read.next_offset);
            log_start_offset = log_start_offset.max(read.log_start_offset);
        }
        FetchReply {
            high_watermark,
            log_start_offset,
            batches,
        }
    }

    /// New data was applied: parked fetches at the old end read it.
    fn wake_parked(&mut self, ctx: &mut Context<Self>) {
        let mut reads = Vec::new();
        let mut kept = Vec::with_capacity(self.parked.len());
        for mut fetch in std::mem::take(&mut self.parked) {
            if fetch.reading {
                kept.push(fetch);
                continue;
            }
            match self.fetch_step(&fetch.request, false) {
                FetchStep::Answer(result) => {
                    ctx.cancel_future(fetch.timer);
                    let _ = fetch.reply.send(result);
                }
                FetchStep::Wait => kept.push(fetch),
                // A consumer at the end of the log: answered now, as before storage threads.
                FetchStep::Read if let Some(read) = self.read_here(&fetch.request) => {
                    match self.answer_read(&fetch.request, read, false) {
                        Some(result) => {
                            ctx.cancel_future(fetch.timer);
                            let _ = fetch.reply.send(result);
                        }
                        None => kept.push(fetch),
                    }
                }
                // `read_here` just declined it: too large for this thread.
                FetchStep::Read => {
                    fetch.reading = true;
                    reads.push((fetch.id, self.read_off_thread(&fetch.request)));
                    kept.push(fetch);
                }
            }
        }
        self.parked = kept;
        for (id, read) in reads {
            ctx.spawn(read.into_actor(self).map(move |read, act, ctx| {
                // Gone: its timer answered it meanwhile.
                let Some(at) = act.parked.iter().position(|p| p.id == id) else {
                    return;
                };
                let read_to = read.as_ref().map(|fetched| fetched.state.next_offset).ok();
                match act.answer_read(&act.parked[at].request, read, false) {
                    Some(result) => {
                        let fetch = act.parked.swap_remove(at);
                        ctx.cancel_future(fetch.timer);
                        let _ = fetch.reply.send(result);
                    }
                    None => {
                        act.parked[at].reading = false;
                        act.offer_newer_than(read_to, ctx);
                    }
                }
            }));
        }
    }

    /// A read that came back short ran while data was being applied, and `wake_parked` skips a
    /// fetch whose read is running: offer what was applied after `read_to` now, rather than at
    /// the next apply or the fetch's timeout.
    fn offer_newer_than(&mut self, read_to: Option<Offset>, ctx: &mut Context<Self>) {
        self.catch_up();
        if read_to.is_some_and(|read_to| self.state.next_offset > read_to) {
            self.wake_parked(ctx);
        }
    }

    /// Answers `request` with what there is once `wait` is over, or sooner when enough data
    /// arrives (see [`Self::wake_parked`]).
    fn park(
        &mut self,
        request: Fetch,
        wait: Duration,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<FetchReply, ApiError>> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_park_id;
        self.next_park_id += 1;
        let timer = ctx.run_later(wait, move |act, ctx| {
            if let Some(at) = act.parked.iter().position(|p| p.id == id) {
                act.catch_up();
                let fetch = act.parked.swap_remove(at);
                act.answer_now(fetch.request, fetch.reply, ctx);
            }
        });
        self.parked.push(ParkedFetch {
            id,
            request,
            reply: tx,
            timer,
            reading: false,
        });
        rx
    }

    /// Answers with whatever is there, reading it first if need be.
    fn answer_now(&mut self, request: Fetch, reply: FetchReplyTx, ctx: &mut Context<Self>) {
        match self.fetch_step(&request, true) {
            FetchStep::Answer(result) => {
                let _ = reply.send(result);
            }
            FetchStep::Read | FetchStep::Wait => {
                let read = self.read_for(&request);
                ctx.spawn(read.into_actor(self).map(move |read, act, _| {
                    let result = act
                        .answer_read(&request, read, true)
                        .expect("a must-answer read answers");
                    let _ = reply.send(result);
                }));
            }
        }
    }

    fn check_retention(&mut self, ctx: &mut Context<Self>) {
        if self.topic.internal {
            // Internal partitions keep their state in the key-value state machine, so applied
            // entries are history that only the log still holds: each replica drops its own.
            compact_applied_log(&self.store, self.group_id(), self.state.last_applied);
            return;
        }
        if self.retention_in_flight || !self.group.is_ready() {
            return;
        }
        self.propose_retention(RETENTION_ROUNDS, ctx);
    }

    /// The leader decides how far the log start moves and proposes it; every replica carries
    /// it out when it applies the entry, so all agree on the log start.
    fn propose_retention(&mut self, rounds: u32, ctx: &mut Context<Self>) {
        let policy = RetentionPolicy {
            retention_ms: self.topic.config.retention_ms,
            retention_bytes: self.topic.config.retention_bytes,
        };
        if rounds == 0 || policy == RetentionPolicy::KEEP_FOREVER {
            return;
        }
        let now = self.settings.clock.now_ms();
        let target = match self.store.plan_retention(self.group_id(), policy, now) {
            Ok(Some(target)) => target,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(topic = %self.topic.name, partition = %self.partition, %error, "planning retention failed");
                return;
            }
        };
        self.retention_in_flight = true;
        let group = self.group.clone();
        let timeout = self.settings.propose_timeout;
        let command = Command::AdvanceLogStart { offset: target.0 };
        let propose = async move { group.propose(command, timeout).await };
        ctx.spawn(propose.into_actor(self).map(move |result, act, ctx| {
            act.retention_in_flight = false;
            match result {
                Ok((_, outcome)) => {
                    tracing::debug!(topic = %act.topic.name, partition = %act.partition, ?outcome, "retention advanced the log start");
                    act.propose_retention(rounds - 1, ctx);
                }
                Err(error) => {
                    tracing::debug!(topic = %act.topic.name, partition = %act.partition, %error, "retention not proposed")
                }
            }
        }));
    }
}

/// Takes out the acks=1 requests to answer once the entry is durable here, with the offsets
/// they will get (when `base` is known); the rest keep their reply for the apply.
#[allow(clippy::type_complexity)]
fn split_early(
    writes: Vec<(Waiter, u64)>,
    base: Option<Offset>,
) -> (
    Vec<(ProduceReplyTx, Offset)>,
    Vec<(Option<ProduceReplyTx>, u64)>,
) {
    let mut early = Vec::new();
    let mut rest = Vec::with_capacity(writes.len());
    let mut next = base;
    for (waiter, count) in writes {
        match next {
            Some(offset) if waiter.acks == Acks::Leader => {
                early.push((waiter.reply, offset));
                rest.push((None, count));
            }
            _ => rest.push((Some(waiter.reply), count)),
        }
        next = next.map(|o| Offset(o.0 + count));
    }
    (early, rest)
}

fn answer_all(writes: &mut Vec<(Option<ProduceReplyTx>, u64)>, error: &ApiError) {
    for (reply, _) in writes.drain(..) {
        if let Some(reply) = reply {
            let _ = reply.send(Err(error.clone()));
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
        ProposeError::LeadershipMoving { to } => ApiError::not_leader(Some(to)),
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

/// A stream of a watch channel's values after the current one.
fn changes<T: Clone + Send + Sync + 'static>(
    rx: watch::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let value = rx.borrow_and_update().clone();
        Some((value, rx))
    })
}

impl Actor for PartitionReplica {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        ctx.add_stream(changes(self.applied.clone()));
        ctx.add_stream(changes(self.status.clone()));
        ctx.run_interval(self.settings.retention_check_interval, |act, ctx| {
            act.check_retention(ctx)
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let stopping = ApiError::new(
            ErrorCode::UNAVAILABLE,
            "the partition is shutting down; retry",
        );
        self.fail_waiting(stopping.clone());
        for fetch in self.parked.drain(..) {
            let _ = fetch.reply.send(Err(stopping.clone()));
        }
        Running::Stop
    }
}

impl StreamHandler<PartitionState> for PartitionReplica {
    fn handle(&mut self, state: PartitionState, ctx: &mut Self::Context) {
        self.state = state;
        self.wake_parked(ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<GroupStatus> for PartitionReplica {
    fn handle(&mut self, _: GroupStatus, ctx: &mut Self::Context) {
        self.on_status(ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Produce> for PartitionReplica {
    type Result = ResponseFuture<Result<ProduceReply, ApiError>>;

    fn handle(&mut self, request: Produce, ctx: &mut Self::Context) -> Self::Result {
        self.settle_ready_queue(ctx);
        if self.becoming_ready() || !self.ready_queue.is_empty() {
            return self.queue_until_ready(request, ctx);
        }
        let decision = self
            .validate_produce(&request)
            .and_then(|stamps| self.deduplicate(&stamps));
        let stamps = match decision {
            Ok(Decision::Write(stamps)) => stamps,
            Ok(Decision::Duplicate(base_offset)) => {
                let reply = ProduceReply {
                    base_offset,
                    log_start_offset: self.state.log_start_offset,
                };
                return Box::pin(async move { Ok(reply) });
            }
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        let (tx, rx) = oneshot::channel();
        let write = self.next_write;
        self.next_write += 1;
        let waiter = Waiter {
            write,
            acks: request.acks,
            reply: tx,
        };
        self.leave_older_terms();
        match self.buffer.push(request.batches, waiter) {
            Ok(()) => self.proposals.add(write, &stamps),
            Err(waiter) => {
                let _ = waiter.reply.send(Err(ApiError::new(
                    ErrorCode::UNAVAILABLE,
                    "the partition's write queue is full; retry with backoff",
                )));
            }
        }
        self.schedule_flush(ctx);
        let timeout_ms = request.timeout_ms.max(1);
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_millis(u64::from(timeout_ms)), rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ApiError::new(ErrorCode::UNAVAILABLE, "the partition stopped; retry")),
                // The write stays queued and may still commit, as in Kafka: a retry of an
                // idempotent batch is deduplicated, of another one can duplicate.
                Err(_) => Err(ApiError::new(
                    ErrorCode::TIMEOUT,
                    format!("the batch was not acknowledged within {timeout_ms} ms; it may still be written"),
                )),
            }
        })
    }
}

impl Handler<Fetch> for PartitionReplica {
    type Result = ResponseActFuture<Self, Result<FetchReply, ApiError>>;

    fn handle(&mut self, request: Fetch, ctx: &mut Self::Context) -> Self::Result {
        if self.becoming_ready() {
            return Box::pin(fut::wrap_future(wait_ready(self, ctx, request, READY_WAIT)));
        }
        self.catch_up();
        if self.topic.internal {
            let error = internal_topic(&self.topic.name);
            return Box::pin(fut::ready(Err(error)));
        }
        if let Err(error) = self.check_ready() {
            return Box::pin(fut::ready(Err(error)));
        }
        if request.offset > self.state.next_offset {
            return self.past_the_end(request);
        }
        let wait = Duration::from_millis(u64::from(request.max_wait_ms.min(MAX_FETCH_WAIT_MS)));
        let must_answer = wait.is_zero() || self.parked.len() >= MAX_PARKED_FETCHES;
        match self.fetch_step(&request, must_answer) {
            FetchStep::Answer(result) => Box::pin(fut::ready(result)),
            FetchStep::Wait => {
                let parked = parked_answer(self.park(request, wait, ctx));
                Box::pin(fut::wrap_future(parked))
            }
            FetchStep::Read => {
                let read = self.read_for(&request);
                Box::pin(read.into_actor(self).then(move |read, act, ctx| {
                    let read_to = read.as_ref().map(|fetched| fetched.state.next_offset).ok();
                    match act.answer_read(&request, read, must_answer) {
                        Some(result) => futures::future::Either::Left(fut::ready(result)),
                        // Too little for `min_bytes`: wait for more like any parked fetch,
                        // first reading what was applied while this read ran.
                        None => {
                            let parked = parked_answer(act.park(request, wait, ctx));
                            act.offer_newer_than(read_to, ctx);
                            futures::future::Either::Right(fut::wrap_future(parked))
                        }
                    }
                }))
            }
        }
    }
}

async fn parked_answer(
    rx: oneshot::Receiver<Result<FetchReply, ApiError>>,
) -> Result<FetchReply, ApiError> {
    rx.await.unwrap_or_else(|_| {
        Err(ApiError::new(
            ErrorCode::UNAVAILABLE,
            "the partition stopped; retry",
        ))
    })
}

impl Handler<ListOffsets> for PartitionReplica {
    type Result = ResponseActFuture<Self, Result<ListOffsetsReply, ApiError>>;

    /// Answered only once this node confirmed its leadership after the request came: a
    /// leader cut off from its group (async-raft has no check-quorum) or already replaced
    /// would answer from its own applied state, with a log start older than one the real
    /// leader has reported since (the log start only moves forward) and a log end older than
    /// records already acknowledged.
    fn handle(&mut self, request: ListOffsets, ctx: &mut Self::Context) -> Self::Result {
        if self.becoming_ready() {
            return Box::pin(fut::wrap_future(wait_ready(self, ctx, request, READY_WAIT)));
        }
        if let Err(error) = self.check_ready() {
            return Box::pin(fut::ready(Err(error)));
        }
        self.once_leadership_confirmed(move |act| act.list_offsets(request))
    }
}

impl PartitionReplica {
    fn list_offsets(&mut self, request: ListOffsets) -> Result<ListOffsetsReply, ApiError> {
        self.check_ready()?;
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

impl PartitionReplica {
    /// Holds `request` until this leader is ready (at most `READY_WAIT`, and the request's
    /// own timeout), behind every produce that came before it.
    fn queue_until_ready(
        &mut self,
        request: Produce,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<ProduceReply, ApiError>> {
        let wait = Duration::from_millis(u64::from(request.timeout_ms.max(1)));
        let term = self.group.term();
        let (answer, first) = self.ready_queue.push(request, term);
        if first {
            let group = self.group.clone();
            let ready = async move { group.wait_until_ready(READY_WAIT).await };
            ctx.spawn(ready.into_actor(self).map(move |_, act, ctx| {
                act.settle_ready_queue(ctx);
                // Still waiting for that term: it did not become ready in time.
                if act.ready_queue.term() == Some(term) {
                    act.ready_queue.fail(&act.not_leader());
                }
            }));
        }
        let not_leader = self.not_leader();
        Box::pin(async move {
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ApiError::new(
                    ErrorCode::UNAVAILABLE,
                    "the partition stopped; retry",
                )),
                Err(_) => Err(not_leader),
            }
        })
    }

    /// Hands the queued requests to the produce path in arrival order once the leadership
    /// they wait for is ready, or tells each where the leader is once this node no longer
    /// leads in that term (see `ready_queue`).
    fn settle_ready_queue(&mut self, ctx: &mut Context<Self>) {
        let leading = self.group.role() == gregor_cluster::GroupRole::Leader;
        let fate = self
            .ready_queue
            .fate(self.group.term(), leading, self.group.is_ready());
        match fate {
            None | Some(Fate::Wait) => {}
            Some(Fate::Fail) => {
                tracing::debug!(
                    group = %self.group_id(),
                    queued_term = ?self.ready_queue.term(),
                    term = self.group.term(),
                    "produce requests queued for a leadership that ended: not leader"
                );
                self.ready_queue.fail(&self.not_leader());
            }
            Some(Fate::Release) => {
                for (request, answer) in self.ready_queue.release() {
                    let reply = <Self as Handler<Produce>>::handle(self, request, ctx);
                    actix::spawn(async move {
                        let _ = answer.send(reply.await);
                    });
                }
            }
        }
    }

    /// Fails the buffered produce requests of an earlier leadership of this node: they were
    /// accepted by a leader that has lost its term since, and written in a later term they
    /// would land after what other leaders appended in between (out of their send order).
    fn leave_older_terms(&mut self) {
        let term = self.group.term();
        if !self.buffer.is_empty() && self.buffer_term != term {
            self.fail_waiting(self.not_leader());
        }
        self.buffer_term = term;
    }
}

/// Waits (at most `wait`, and `READY_WAIT`) for this new leader to become ready, then hands
/// `request` to the replica again.
fn wait_ready<M, T>(
    replica: &PartitionReplica,
    ctx: &mut Context<PartitionReplica>,
    request: M,
    wait: Duration,
) -> ResponseFuture<Result<T, ApiError>>
where
    M: Message<Result = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
    PartitionReplica: Handler<M>,
{
    let group = replica.group.clone();
    let not_leader = replica.not_leader();
    let me = ctx.address();
    Box::pin(async move {
        if !group.wait_until_ready(wait.min(READY_WAIT)).await {
            return Err(not_leader);
        }
        me.send(request).await.unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::UNAVAILABLE,
                "the partition stopped; retry",
            ))
        })
    })
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

/// Confirms that this node still leads the partition (see
/// [`RaftGroup::confirm_leadership`]), for a reader answering from state of its own.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct ConfirmLeadership;

impl Handler<ConfirmLeadership> for PartitionReplica {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, _: ConfirmLeadership, _: &mut Self::Context) -> Self::Result {
        let group = self.group.clone();
        let timeout = self.settings.propose_timeout;
        Box::pin(async move {
            group
                .confirm_leadership(timeout)
                .await
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
