//! The consumer: assigned partitions, a position in each, long-poll fetches.
//!
//! Every assigned partition has at most one fetch in flight and at most about one fetch's
//! worth of records buffered; a fetch starts as soon as the buffer runs low, so the next
//! records are on their way while the caller handles the current ones. `poll` hands out
//! buffered records round-robin across partitions and advances each position past what it
//! handed out: positions (and so commits) cover exactly what the caller received.
//!
//! Partitions come either from [`Consumer::subscribe`] (group membership: the group's
//! coordinator assigns them, and moves them between members as members come and go) or from
//! [`Consumer::assign`] (manual). With a group, partitions start from the group's committed
//! offsets; the rest (and a position that falls off the log) follow `auto_offset_reset`.

mod listener;
mod member;
mod records;

pub use listener::RebalanceListener;
pub use records::ConsumerRecord;

use super::admin::Admin;
use super::cluster::{expect_reply, ClientConfig, Cluster, Route};
use super::error::ClientError;
use gregor_protocol::api::{
    ApiError, CommittedOffset, ErrorCode, Fetch, FetchReply, MemberRef, OffsetCommit, OffsetSpec,
    Request, Subscription,
};
use gregor_protocol::{Offset, PartitionId};
use member::{Member, MemberSettings};
use records::decode_fetched;
use std::collections::BTreeSet;
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
    /// Fail the poll with a typed error (`NoPosition`); the caller must `seek` (Kafka's
    /// `none`).
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
    /// Commit every position this often from `poll` (Kafka's `enable.auto.commit` and
    /// `auto.commit.interval.ms`, default 5 s); `None`: only [`Consumer::commit`] commits.
    pub auto_commit_interval: Option<Duration>,
    /// Commit a partition's position when the group takes it away, before releasing it (on by
    /// default), so its next owner starts exactly where this one stopped.
    pub commit_on_revoke: bool,
    /// Static membership (Kafka's `group.instance.id`): a member that restarts within its
    /// session timeout gets its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// Rack of this consumer, for rack-aware assignment.
    pub rack: Option<String>,
    /// `"range"`, `"uniform"` or `"cooperative-sticky"`; `None`: the group's default.
    pub server_assignor: Option<String>,
    /// The member's session timeout; `None`: its group's (`gregor group config`), else the
    /// broker's (45 s).
    pub session_timeout: Option<Duration>,
    /// A consumer that does not poll for this long leaves the group (default 5 min); it is
    /// also how long the group waits for it to release a partition.
    pub max_poll_interval: Duration,
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
            auto_commit_interval: Some(Duration::from_secs(5)),
            commit_on_revoke: true,
            instance_id: None,
            rack: None,
            server_assignor: None,
            session_timeout: None,
            max_poll_interval: Duration::from_secs(300),
        }
    }

    /// Sets (or, with `None`, turns off) periodic commits from `poll`.
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.auto_commit_interval = interval;
        self
    }

    /// Makes this consumer a static member with this instance id.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets the member's session timeout (within the broker's bounds).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// Sets the server-side assignor the member asks for.
    pub fn server_assignor(mut self, name: impl Into<String>) -> Self {
        self.server_assignor = Some(name.into());
        self
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
    /// Paused: no fetches, no records handed out, until resumed.
    paused: bool,
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
            paused: false,
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

/// A consumer's group membership as it stands (see [`Consumer::membership`]).
#[derive(Clone)]
pub struct MembershipView(std::sync::Arc<std::sync::Mutex<member::Shared>>);

impl MembershipView {
    /// The member id and epoch, once the consumer has joined.
    pub fn current(&self) -> Option<(String, i32)> {
        let shared = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (!shared.member_id.is_empty()).then(|| (shared.member_id.clone(), shared.epoch))
    }
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
    /// Group membership, once subscribed.
    member: Option<Member>,
    /// In a mutex only so that the consumer stays `Sync`; it is used through `&mut self`.
    listener: Option<std::sync::Mutex<Box<dyn RebalanceListener>>>,
    last_auto_commit: Instant,
    async_commits: JoinSet<Result<Vec<(TopicPartition, Offset)>, ClientError>>,
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
            member: None,
            listener: None,
            last_auto_commit: Instant::now(),
            async_commits: JoinSet::new(),
        }
    }

    /// Joins the group (see [`ConsumerConfig::group`]) subscribed to `topics`; the group's
    /// coordinator assigns partitions, which arrive with the following polls. Topics that do not
    /// exist yet are picked up when they are created. Calling it again changes the subscription.
    ///
    /// # Errors
    /// [`ClientError::Usage`] without a group or after [`Consumer::assign`].
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        let topics = topics.iter().map(|t| t.to_string()).collect();
        self.subscribe_to(Subscription::Topics(topics))
    }

    /// As [`Consumer::subscribe`], to every topic whose whole name matches `pattern` (a
    /// regular expression the broker evaluates), including topics created later.
    ///
    /// # Errors
    /// As [`Consumer::subscribe`]; an invalid pattern fails the next poll with `INVALID_REGEX`.
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<(), ClientError> {
        self.subscribe_to(Subscription::Pattern(pattern.to_string()))
    }

    fn subscribe_to(&mut self, subscription: Subscription) -> Result<(), ClientError> {
        let Some(group) = self.config.group.clone() else {
            return Err(ClientError::Usage(
                "subscribing needs a consumer group; set one (--group), or assign partitions"
                    .into(),
            ));
        };
        if let Some(member) = &self.member {
            member.resubscribe(subscription);
            return Ok(());
        }
        if !self.partitions.is_empty() {
            return Err(ClientError::Usage(
                "this consumer has manually assigned partitions; use a new consumer to subscribe"
                    .into(),
            ));
        }
        let settings = MemberSettings {
            group,
            client_id: self.cluster.config().connection.client_id.clone(),
            instance_id: self.config.instance_id.clone(),
            rack: self.config.rack.clone(),
            server_assignor: self.config.server_assignor.clone(),
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.max_poll_interval,
            max_poll_interval: self.config.max_poll_interval,
        };
        self.member = Some(Member::start(self.admin(), settings, subscription));
        Ok(())
    }

    /// Called when the group gives this consumer partitions and takes them away.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(std::sync::Mutex::new(Box::new(listener)));
    }

    /// The member id and epoch the group knows this consumer by, once it has joined.
    pub fn member(&self) -> Option<(String, i32)> {
        self.membership()?.current()
    }

    /// A handle on this consumer's membership that a [`RebalanceListener`] can keep, to know
    /// the member epoch an assignment came with; `None` until [`Consumer::subscribe`].
    pub fn membership(&self) -> Option<MembershipView> {
        let member = self.member.as_ref()?;
        Some(MembershipView(member.shared.clone()))
    }

    /// Stops fetching `partitions` and handing out their records until resumed; they stay
    /// assigned.
    pub fn pause(&mut self, partitions: &[TopicPartition]) {
        self.set_paused(partitions, true);
    }

    /// Undoes [`Consumer::pause`].
    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        self.set_paused(partitions, false);
    }

    fn set_paused(&mut self, partitions: &[TopicPartition], paused: bool) {
        for tp in partitions {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.paused = paused;
            }
        }
    }

    /// The partitions paused now.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Commits (with auto-commit or commit-on-revoke) and leaves the group: the group moves
    /// this consumer's partitions at once (a static member's wait for it for its session
    /// timeout instead).
    ///
    /// # Errors
    /// The commit's or the leave's failure; the consumer is closed either way.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let commit = if self.config.group.is_some()
            && (self.config.auto_commit_interval.is_some() || self.config.commit_on_revoke)
        {
            self.commit().await
        } else {
            Ok(())
        };
        let leave = match self.member.take() {
            Some(member) => member.leave().await,
            None => Ok(()),
        };
        commit.and(leave)
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
        if self.member.is_some() {
            return Err(ClientError::Usage(
                "this consumer is subscribed: the group assigns its partitions".into(),
            ));
        }
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
    /// A subscribed consumer applies the group's assignment changes here: it commits and
    /// releases the partitions taken away (telling the rebalance listener), then starts the
    /// ones given, from the group's committed offsets.
    ///
    /// # Errors
    /// [`ClientError::Usage`] with nothing assigned or subscribed; `OFFSET_OUT_OF_RANGE` or
    /// no committed offset under [`AutoOffsetReset::Error`]; a fetch failure that outlasted the
    /// retries; a membership failure no retry mends (`INVALID_REGEX`, ...).
    pub async fn poll_records(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.partitions.is_empty() && self.member.is_none() {
            return Err(ClientError::Usage(
                "no partitions are assigned; call subscribe or assign first".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.apply_membership().await?;
            self.maybe_auto_commit().await?;
            self.resolve_positions().await?;
            while let Some(done) = self.fetches.try_join_next() {
                self.apply(joined(done))?;
            }
            let records = self.take_buffered(max.max(1));
            self.start_fetches();
            if !records.is_empty() {
                return Ok(records);
            }
            let changed = self.member.as_ref().map(|m| m.changed.clone());
            tokio::select! {
                biased;
                () = async { changed.as_ref().expect("guarded").notified().await }, if changed.is_some() => {}
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
    /// [`ClientError::Usage`] without a group, or the commit's failure (`STALE_MEMBER_EPOCH`
    /// when the group moved a partition away meanwhile).
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        self.collect_async_commits();
        let moved = self.moved_positions(None);
        let committed = self.commit_request(moved)?.await?;
        self.committed.extend(committed);
        Ok(())
    }

    /// Starts committing every position that moved; the result arrives with the returned
    /// handle (and the consumer records it at a later poll or commit).
    ///
    /// # Errors
    /// [`ClientError::Usage`] without a group.
    pub fn commit_async(
        &mut self,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), ClientError>>, ClientError> {
        self.collect_async_commits();
        let moved = self.moved_positions(None);
        let request = self.commit_request(moved)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.async_commits.spawn(async move {
            let result = request.await;
            let _ = tx.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
            result
        });
        Ok(rx)
    }

    fn collect_async_commits(&mut self) {
        while let Some(done) = self.async_commits.try_join_next() {
            match done {
                Ok(Ok(committed)) => self.committed.extend(committed),
                Ok(Err(e)) => tracing::debug!(error = %e, "an asynchronous commit failed"),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }

    /// Positions (of `only`, or of every partition) that moved since their last commit.
    fn moved_positions(
        &self,
        only: Option<&BTreeSet<TopicPartition>>,
    ) -> Vec<(TopicPartition, Offset)> {
        self.partitions
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(*tp)))
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .filter(|(tp, p)| self.committed.get(tp) != Some(p))
            .collect()
    }

    /// The commit of `moved`, as this consumer's member when it is one.
    fn commit_request(
        &self,
        moved: Vec<(TopicPartition, Offset)>,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<(TopicPartition, Offset)>, ClientError>>
            + Send
            + 'static,
        ClientError,
    > {
        let Some(group) = self.config.group.clone() else {
            return Err(ClientError::Usage(
                "committing needs a consumer group; set one (--group) or do not commit".into(),
            ));
        };
        let member = self.member().map(|(member_id, member_epoch)| MemberRef {
            member_id,
            member_epoch,
        });
        let admin = self.admin();
        Ok(async move {
            if moved.is_empty() {
                return Ok(moved);
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
            admin.commit_offsets_as(&group, offsets, member).await?;
            Ok(moved)
        })
    }

    async fn maybe_auto_commit(&mut self) -> Result<(), ClientError> {
        let Some(interval) = self.config.auto_commit_interval else {
            return Ok(());
        };
        if self.config.group.is_none() || self.last_auto_commit.elapsed() < interval {
            return Ok(());
        }
        self.last_auto_commit = Instant::now();
        match self.commit().await {
            // The group moved a partition away meanwhile: its new owner carries on from the
            // last good commit, and this consumer learns of the move at its next heartbeat.
            Err(e) if stale_member(&e) => {
                tracing::info!(error = %e, "auto-commit refused");
                Ok(())
            }
            other => other,
        }
    }

    /// Applies what the group's coordinator said since the last poll: partitions lost,
    /// taken away (committed first) or given.
    async fn apply_membership(&mut self) -> Result<(), ClientError> {
        let Some(member) = &self.member else {
            return Ok(());
        };
        member.polled();
        let (lost, target, fatal) = {
            let mut shared = member.lock();
            (
                std::mem::take(&mut shared.lost),
                shared.target.take(),
                shared.fatal.take(),
            )
        };
        if let Some(error) = fatal {
            return Err(error);
        }
        if lost {
            let dropped = self.assignment();
            tracing::info!(partitions = dropped.len(), "group membership lost");
            if let Some(listener) = self.listener_mut() {
                listener.on_lost(&dropped);
            }
            self.partitions.clear();
            self.committed.clear();
            self.set_owned();
        }
        let Some(target) = target else {
            return Ok(());
        };
        let owned: BTreeSet<TopicPartition> = self.partitions.keys().cloned().collect();
        let revoked: BTreeSet<TopicPartition> = owned.difference(&target).cloned().collect();
        if !revoked.is_empty() {
            self.revoke(&revoked).await?;
        }
        let added: Vec<TopicPartition> = target.difference(&owned).cloned().collect();
        if !added.is_empty() {
            // Reported as owned before their committed offsets are read: that read can last as
            // long as a network partition, and a member reporting only what it owned before
            // lets the group give these partitions to another member while this one still
            // starts them once the read returns. Owned, they move only once this member
            // releases them (a newer target revokes them at the next pass).
            self.report_owned(added.iter().cloned());
            if let Err(error) = self.add_assigned(&added).await {
                self.set_owned();
                if let Some(member) = &self.member {
                    member.lock().target.get_or_insert(target);
                }
                return Err(error);
            }
            if let Some(listener) = self.listener_mut() {
                listener.on_assigned(&added);
            }
        }
        self.set_owned();
        if let Some(member) = &self.member {
            // Released partitions wait for this heartbeat before going to their next owner.
            if !revoked.is_empty() {
                member.wake.notify_one();
            }
        }
        Ok(())
    }

    async fn revoke(&mut self, revoked: &BTreeSet<TopicPartition>) -> Result<(), ClientError> {
        if self.config.commit_on_revoke && self.config.group.is_some() {
            let moved = self.moved_positions(Some(revoked));
            match self.commit_request(moved)?.await {
                Ok(committed) => self.committed.extend(committed),
                Err(e) if stale_member(&e) => {
                    tracing::info!(error = %e, "commit on revoke refused")
                }
                Err(e) => return Err(e),
            }
        }
        let list: Vec<TopicPartition> = revoked.iter().cloned().collect();
        if let Some(listener) = self.listener_mut() {
            listener.on_revoked(&list);
        }
        self.partitions.retain(|tp, _| !revoked.contains(tp));
        self.committed.retain(|tp, _| !revoked.contains(tp));
        Ok(())
    }

    /// Starts `added` from the group's committed offsets.
    async fn add_assigned(&mut self, added: &[TopicPartition]) -> Result<(), ClientError> {
        let group = self.config.group.clone().expect("members have a group");
        let topics: BTreeSet<&str> = added.iter().map(|tp| &*tp.topic).collect();
        let mut committed = BTreeMap::new();
        for topic in topics {
            for c in self.admin().fetch_offsets(&group, Some(topic)).await? {
                committed.insert(TopicPartition::new(&c.topic, c.partition), c.offset);
            }
        }
        for tp in added {
            let position = committed.get(tp).copied();
            if let Some(offset) = position {
                self.committed.insert(tp.clone(), offset);
            }
            self.partitions
                .insert(tp.clone(), PartitionState::new(position));
        }
        Ok(())
    }

    fn listener_mut(&mut self) -> Option<&mut Box<dyn RebalanceListener>> {
        let mutex = self.listener.as_mut()?;
        Some(
            mutex
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn set_owned(&self) {
        if let Some(member) = &self.member {
            member.lock().owned = self.partitions.keys().cloned().collect();
        }
    }

    /// Adds `partitions` to what the heartbeats say this member owns.
    fn report_owned(&self, partitions: impl Iterator<Item = TopicPartition>) {
        if let Some(member) = &self.member {
            member.lock().owned.extend(partitions);
        }
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
                    return Err(ClientError::NoPosition {
                        partition: tp.to_string(),
                    })
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
                || state.paused
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
        for state in states.into_iter().filter(|s| !s.paused) {
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

fn stale_member(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::STALE_MEMBER_EPOCH | ErrorCode::UNKNOWN_MEMBER_ID)
    )
}

fn joined(result: Result<FetchDone, tokio::task::JoinError>) -> FetchDone {
    match result {
        Ok(done) => done,
        // A fetch task only panics on a bug; carry the panic over to the caller.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
