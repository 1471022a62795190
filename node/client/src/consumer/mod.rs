//! The consumer: assigned partitions, a position in each, long-poll fetches.
//!
//! Every assigned partition has at most one fetch in flight and at most about one fetch's
//! worth of records buffered; a fetch starts as soon as the buffer runs low, so the next
//! records are on their way while the caller handles the current ones. `poll` hands out
//! buffered records round-robin across partitions and advances each position past what it
//! handed out: positions (and so commits) cover exactly what the caller received.
//!
//! With a group, assigned partitions start from the group's committed offsets; the rest (and
//! a position that falls off the log) follow `auto_offset_reset`. There is no group membership
//! protocol yet: partitions are assigned explicitly.

mod records;

pub use records::ConsumerRecord;

use super::admin::Admin;
use super::cluster::{expect_reply, ClientConfig, Cluster, Route};
use super::error::ClientError;
use gregor_protocol::api::{
    ApiError, CommittedOffset, ErrorCode, Fetch, FetchReply, OffsetCommit, OffsetSpec, Request,
};
use gregor_protocol::{Offset, PartitionId};
use records::decode_fetched;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Where to start when there is no valid position (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    #[default]
    /// The oldest record still stored.
    Earliest,
    /// The next record produced (the log end).
    Latest,
    /// Fail the poll; the caller must `seek`.
    Error,
}

/// Where [`Consumer::seek`] moves a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This offset.
    Offset(Offset),
    /// The oldest record still stored.
    Earliest,
    /// The log end: only records produced from now on.
    Latest,
    /// The first record at or after this time (ms since the epoch); the log end if none.
    Timestamp(i64),
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: PartitionId,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: &str, partition: PartitionId) -> Self {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[derive(Debug, Clone)]
/// Consumer settings. `ConsumerConfig::new("host:9092").group("billing")`.
pub struct ConsumerConfig {
    /// How to reach the cluster.
    pub client: ClientConfig,
    /// Consumer group whose committed offsets are used and updated; `None`: no commits.
    pub group: Option<String>,
    /// Where to start without a valid committed or sought position.
    pub auto_offset_reset: AutoOffsetReset,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`.
    pub fetch_max_wait: Duration,
    /// A fetch answers once this many bytes are available (or its wait ends).
    pub fetch_min_bytes: u32,
    /// Per partition and fetch (Kafka's `max.partition.fetch.bytes`); at least one batch is
    /// returned whatever its size.
    pub fetch_max_bytes: u32,
    /// Records one [`Consumer::poll`] returns at most.
    pub max_poll_records: usize,
}

impl ConsumerConfig {
    /// Settings for a consumer without a group, bootstrapping from `bootstrap`.
    pub fn new(bootstrap: &str) -> Self {
        ConsumerConfig::from_client(ClientConfig::new(bootstrap))
    }

    /// Settings for a consumer without a group, over `client`.
    pub fn from_client(client: ClientConfig) -> Self {
        ConsumerConfig {
            client,
            group: None,
            auto_offset_reset: AutoOffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 1024 * 1024,
            max_poll_records: 500,
        }
    }

    /// Joins the consumer group `group`: positions start from its committed offsets and `commit` stores them.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets where to start without a valid position.
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }
}

struct PartitionState {
    /// The next offset to hand out; `None` until resolved from the reset policy.
    position: Option<Offset>,
    /// The next offset to fetch (past what is buffered).
    fetch_offset: Offset,
    buffer: VecDeque<ConsumerRecord>,
    buffered_bytes: usize,
    fetching: bool,
    /// Bumped by every seek, so a fetch started before it is recognised and dropped.
    epoch: u64,
    high_watermark: Option<Offset>,
}

impl PartitionState {
    fn new(position: Option<Offset>) -> Self {
        PartitionState {
            position,
            fetch_offset: position.unwrap_or_default(),
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            fetching: false,
            epoch: 0,
            high_watermark: None,
        }
    }

    fn reposition(&mut self, position: Option<Offset>) {
        self.position = position;
        self.fetch_offset = position.unwrap_or_default();
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.fetching = false;
        self.epoch += 1;
    }
}

struct FetchDone {
    tp: TopicPartition,
    epoch: u64,
    offset: Offset,
    result: Result<FetchReply, ClientError>,
}

/// Reads assigned partitions. Not shared: one task polls it.
pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    fetches: JoinSet<FetchDone>,
    /// Where the next poll starts handing out records, so no partition starves.
    rotation: usize,
    committed: BTreeMap<TopicPartition, Offset>,
}

impl Consumer {
    /// Connects to the cluster. Nothing is assigned yet.
    ///
    /// # Errors
    /// As [`Cluster::connect`].
    pub async fn connect(config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        Ok(Consumer::with_cluster(cluster, config))
    }

    /// A consumer over an existing cluster connection (shared with a producer or admin client).
    pub fn with_cluster(cluster: Cluster, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            partitions: BTreeMap::new(),
            fetches: JoinSet::new(),
            rotation: 0,
            committed: BTreeMap::new(),
        }
    }

    /// The settings this consumer was made with.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The cluster connection this consumer uses.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Group and offset requests are the admin client's; the consumer shares its connections.
    fn admin(&self) -> Admin {
        Admin::from_cluster(self.cluster.clone())
    }

    async fn offset_of(
        &self,
        tp: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<Offset, ClientError> {
        let reply = self
            .admin()
            .list_offsets(&tp.topic, tp.partition, spec)
            .await?;
        Ok(reply.offset)
    }

    /// Adds partitions of `topic` (all of them for `None`) to the assignment. With a group,
    /// each starts at the group's committed offset; without one (or with none committed) at
    /// the reset policy, unless [`Consumer::seek`] says otherwise before the next poll.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, or the failure of the committed-offsets request.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: Option<&[PartitionId]>,
    ) -> Result<(), ClientError> {
        let count = self.cluster.refresh_topic(topic).await?.len() as u32;
        let wanted: Vec<PartitionId> = match partitions {
            Some(list) => list.to_vec(),
            None => (0..count).map(PartitionId).collect(),
        };
        if let Some(&bad) = wanted.iter().find(|p| p.0 >= count) {
            return Err(ClientError::Api(ApiError::unknown_partition(
                topic, bad, count,
            )));
        }
        let committed: BTreeMap<PartitionId, Offset> = match &self.config.group {
            Some(group) => self
                .admin()
                .fetch_offsets(group, Some(topic))
                .await?
                .into_iter()
                .filter(|c| c.topic == topic)
                .map(|c| (c.partition, c.offset))
                .collect(),
            None => BTreeMap::new(),
        };
        for partition in wanted {
            let tp = TopicPartition::new(topic, partition);
            let position = committed.get(&partition).copied();
            if let Some(offset) = position {
                self.committed.insert(tp.clone(), offset);
            }
            self.partitions
                .entry(tp)
                .or_insert_with(|| PartitionState::new(position));
        }
        Ok(())
    }

    /// Removes every partition of `topic` from the assignment.
    pub fn unassign(&mut self, topic: &str) {
        self.partitions.retain(|tp, _| &*tp.topic != topic);
        self.committed.retain(|tp, _| &*tp.topic != topic);
    }

    /// The partitions currently assigned, in order.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The next offset `poll` will return for `tp`; `None` if unassigned or not yet resolved.
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.partitions.get(tp).and_then(|s| s.position)
    }

    /// The high watermark seen in the last fetch of `tp`.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<Offset> {
        self.partitions.get(tp).and_then(|s| s.high_watermark)
    }

    /// Whether every assigned partition has been read up to the high watermark its last fetch
    /// reported (kcat's `-e`).
    pub fn at_end(&self) -> bool {
        self.partitions
            .values()
            .all(|s| match (s.position, s.high_watermark) {
                (Some(position), Some(hw)) => s.buffer.is_empty() && position >= hw,
                _ => false,
            })
    }

    /// Moves `tp`'s position; buffered records of that partition are dropped.
    ///
    /// # Errors
    /// [`ClientError::Usage`] if `tp` is not assigned, or the `ListOffsets` failure.
    pub async fn seek(&mut self, tp: &TopicPartition, to: SeekTo) -> Result<Offset, ClientError> {
        if !self.partitions.contains_key(tp) {
            return Err(ClientError::Usage(format!(
                "partition {tp} is not assigned to this consumer; assign it before seeking"
            )));
        }
        let offset = match to {
            SeekTo::Offset(offset) => offset,
            SeekTo::Earliest => self.offset_of(tp, OffsetSpec::Earliest).await?,
            SeekTo::Latest => self.offset_of(tp, OffsetSpec::Latest).await?,
            SeekTo::Timestamp(ms) => self.offset_of(tp, OffsetSpec::Timestamp(ms)).await?,
        };
        if let Some(state) = self.partitions.get_mut(tp) {
            state.reposition(Some(offset));
        }
        Ok(offset)
    }

    /// Up to `max_poll_records` records, waiting up to `timeout` for the first ones.
    ///
    /// # Errors
    /// As [`Consumer::poll_records`].
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let max = self.config.max_poll_records;
        self.poll_records(timeout, max).await
    }

    /// Up to `max` records, waiting up to `timeout` for the first ones; empty if none came.
    ///
    /// # Errors
    /// [`ClientError::Usage`] with nothing assigned; `OFFSET_OUT_OF_RANGE` under
    /// [`AutoOffsetReset::Error`]; a fetch failure that outlasted the retries.
    pub async fn poll_records(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.partitions.is_empty() {
            return Err(ClientError::Usage(
                "no partitions are assigned; call assign first".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.resolve_positions().await?;
            while let Some(done) = self.fetches.try_join_next() {
                self.apply(joined(done))?;
            }
            let records = self.take_buffered(max.max(1));
            self.start_fetches();
            if !records.is_empty() {
                return Ok(records);
            }
            tokio::select! {
                biased;
                Some(done) = self.fetches.join_next(), if !self.fetches.is_empty() => {
                    self.apply(joined(done))?;
                }
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    /// Commits every position that moved since the last commit.
    ///
    /// # Errors
    /// [`ClientError::Usage`] without a group, or the commit's failure.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let Some(group) = self.config.group.clone() else {
            return Err(ClientError::Usage(
                "committing needs a consumer group; set one (--group) or do not commit".into(),
            ));
        };
        let moved: Vec<(TopicPartition, Offset)> = self
            .partitions
            .iter()
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .filter(|(tp, p)| self.committed.get(tp) != Some(p))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        let offsets = moved
            .iter()
            .map(|(tp, offset)| OffsetCommit {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                offset: *offset,
                metadata: None,
            })
            .collect();
        self.admin().commit_offsets(&group, offsets).await?;
        self.committed.extend(moved);
        Ok(())
    }

    /// The group's committed offsets for `topic` (all topics for `None`).
    ///
    /// # Errors
    /// [`ClientError::Usage`] without a group, or the request's failure.
    pub async fn committed(
        &self,
        topic: Option<&str>,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let Some(group) = &self.config.group else {
            return Err(ClientError::Usage(
                "committed offsets belong to a group; set one (--group)".into(),
            ));
        };
        self.admin().fetch_offsets(group, topic).await
    }

    /// Gives every partition without a position one, from the reset policy.
    async fn resolve_positions(&mut self) -> Result<(), ClientError> {
        let unresolved: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in unresolved {
            let spec = match self.config.auto_offset_reset {
                AutoOffsetReset::Earliest => OffsetSpec::Earliest,
                AutoOffsetReset::Latest => OffsetSpec::Latest,
                AutoOffsetReset::Error => {
                    return Err(ClientError::Usage(format!(
                        "partition {tp} has no committed offset and auto_offset_reset is 'error'; seek it first"
                    )))
                }
            };
            let offset = self.offset_of(&tp, spec).await?;
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.reposition(Some(offset));
            }
        }
        Ok(())
    }

    fn start_fetches(&mut self) {
        let config = &self.config;
        let max_wait_ms = config
            .fetch_max_wait
            .as_millis()
            .try_into()
            .unwrap_or(u32::MAX);
        let timeout = config.client.connection.request_timeout + config.fetch_max_wait;
        for (tp, state) in &mut self.partitions {
            // One fetch in flight while up to one fetch's worth waits in the buffer: the caller
            // works through one while the next is on its way, and memory stays bounded.
            if state.position.is_none()
                || state.fetching
                || state.buffered_bytes > config.fetch_max_bytes as usize
            {
                continue;
            }
            state.fetching = true;
            let cluster = self.cluster.clone();
            let (tp, epoch, offset) = (tp.clone(), state.epoch, state.fetch_offset);
            let request = Request::Fetch(Fetch {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                offset,
                max_bytes: config.fetch_max_bytes,
                max_wait_ms,
                min_bytes: config.fetch_min_bytes,
            });
            self.fetches.spawn(async move {
                let route = Route::Leader {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                };
                let result = match cluster.request_with_timeout(route, request, timeout).await {
                    Ok(reply) => expect_reply::<Fetch>(reply),
                    Err(e) => Err(e),
                };
                FetchDone {
                    tp,
                    epoch,
                    offset,
                    result,
                }
            });
        }
    }

    fn apply(&mut self, done: FetchDone) -> Result<(), ClientError> {
        let Some(state) = self.partitions.get_mut(&done.tp) else {
            return Ok(());
        };
        if state.epoch != done.epoch {
            return Ok(());
        }
        state.fetching = false;
        match done.result {
            Ok(reply) => {
                state.high_watermark = Some(reply.high_watermark);
                let decoded = decode_fetched(
                    &done.tp.topic,
                    done.tp.partition,
                    &reply.batches,
                    done.offset,
                    &mut state.buffer,
                )
                .map_err(|e| ClientError::Protocol {
                    addr: "the broker".into(),
                    reason: format!("corrupt batch fetched from {}: {e}", done.tp),
                })?;
                state.fetch_offset = decoded.next_offset;
                state.buffered_bytes += decoded.bytes;
                Ok(())
            }
            Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                if self.config.auto_offset_reset == AutoOffsetReset::Error {
                    return Err(e);
                }
                tracing::info!(partition = %done.tp, offset = %done.offset, "offset out of range; resetting");
                state.reposition(None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn take_buffered(&mut self, max: usize) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        let count = self.partitions.len();
        if count == 0 {
            return out;
        }
        let mut states: Vec<&mut PartitionState> = self.partitions.values_mut().collect();
        states.rotate_left(self.rotation % count);
        self.rotation = self.rotation.wrapping_add(1);
        for state in states {
            while out.len() < max {
                let Some(record) = state.buffer.pop_front() else {
                    break;
                };
                state.buffered_bytes = state.buffered_bytes.saturating_sub(record.payload_len());
                state.position = Some(Offset(record.offset.0 + 1));
                out.push(record);
            }
            if out.len() >= max {
                break;
            }
        }
        out
    }
}

fn joined(result: Result<FetchDone, tokio::task::JoinError>) -> FetchDone {
    match result {
        Ok(done) => done,
        // A fetch task only panics on a bug; carry the panic over to the caller.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
