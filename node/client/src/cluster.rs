//! A handle on the cluster: one connection per broker, the metadata that routes a request to
//! its partition's leader, and the retry policy.

mod health;
mod order;

use super::connection::{Connection, ConnectionConfig};
use super::error::ClientError;
use gregor_protocol::api::{
    ApiError, ApiRequest, ClusterMetadata, ErrorCode, Metadata, PartitionMetadata, Request,
    Response,
};
use gregor_protocol::{NodeId, PartitionId, TopicId};
use health::{Broker, Health};
pub(crate) use order::{Turn, WriteOrder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Default broker address, as in `gregor serve`'s default listener.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";
/// Salt for the retry-jitter random stream, so adding another stream does not shift it.
const BACKOFF_SALT: u64 = 0x6261_636b_6f66_6600;

/// Settings shared by [`super::Admin`], [`super::Producer`] and [`super::Consumer`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Brokers to try first, in order; the rest of the cluster is learnt from metadata.
    pub bootstrap: Vec<String>,
    /// Timeouts and limits of each broker connection.
    pub connection: ConnectionConfig,
    /// Extra attempts after a retriable failure (see [`ClientError::is_retriable`]).
    pub retries: u32,
    /// First pause before a retry; it doubles with each attempt... (The first `NOT_LEADER`
    /// of a request that names the new leader is followed without a pause.)
    pub retry_backoff: Duration,
    /// ...up to this.
    pub retry_backoff_max: Duration,
    /// A broker that could not be reached (or dropped a request) is skipped this long; the
    /// skip doubles with each consecutive failure... Zero (the default of
    /// [`ClientConfig::new`]) never skips; [`ClientConfig::reconnect_backoff`] sets it.
    pub reconnect_backoff: Duration,
    /// ...up to this. One answer clears it.
    pub reconnect_backoff_max: Duration,
    /// Seed of every random choice the client makes (retry jitter, sticky partitions), so a
    /// run can be replayed. [`ClientConfig::new`] takes it from the clock.
    pub seed: u64,
}

impl ClientConfig {
    /// `bootstrap` is `host:port`, or several separated by commas.
    pub fn new(bootstrap: &str) -> Self {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            connection: ConnectionConfig::default(),
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            reconnect_backoff: Duration::ZERO,
            reconnect_backoff_max: Duration::ZERO,
            seed: super::seed_from_clock(),
        }
    }

    /// Sets the id sent in the handshake (it appears in the broker's logs).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.connection.client_id = id.into();
        self
    }

    /// Sets how long a request may wait for its reply.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.connection.request_timeout = timeout;
        self
    }

    /// Sets how many times a retriable failure is retried (0: never).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Skips a broker that failed for `first`, doubling per consecutive failure up to `max`
    /// (Kafka's reconnect backoff; 50 ms and 1 s are its defaults), so a dead broker is not
    /// dialled in a tight loop while metadata catches up.
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_backoff = first;
        self.reconnect_backoff_max = max.max(first);
        self
    }

    /// Sets the seed of the client's random choices, so that a run replays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Where a request must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Any broker: the one reached through bootstrap, or the one a `NOT_LEADER` reply names.
    Any,
    /// The current leader of a partition.
    Leader {
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: PartitionId,
    },
    /// One broker.
    Node(NodeId),
}

/// Clones share connections and metadata.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

struct ClusterInner {
    config: ClientConfig,
    state: Mutex<ClusterState>,
    jitter: Mutex<SmallRng>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct ClusterState {
    /// The node the bootstrap connection reached. Its connection is reused for it even if the
    /// broker advertises an address this client cannot dial (e.g. `0.0.0.0:9092`).
    home: Option<NodeId>,
    connections: BTreeMap<NodeId, Connection>,
    brokers: BTreeMap<NodeId, String>,
    /// What each topic's name resolved to last.
    topics: BTreeMap<String, CachedTopic>,
}

/// A topic as the last metadata answer about it said.
struct CachedTopic {
    /// Its incarnation; `None` from brokers that do not say.
    id: Option<TopicId>,
    /// Indexed by partition number.
    partitions: Vec<PartitionMetadata>,
}

impl CachedTopic {
    fn incarnation(&self) -> TopicIncarnation {
        TopicIncarnation {
            id: self.id,
            partitions: self.partitions.len() as u32,
        }
    }
}

/// The incarnation of a topic a name resolved to: records sent for it are bound to its id, so
/// they are never written to a topic re-created under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicIncarnation {
    /// `None` when the broker does not say (requests then go by name alone).
    pub id: Option<TopicId>,
    /// How many partitions it has.
    pub partitions: u32,
}

enum Expect {
    Reply(Option<Duration>),
    NoReply,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few map operations that leave the maps consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps `conn` as the connection to its node unless another task connected meanwhile, and
/// returns the one kept. One connection per node is what orders a producer's pipelined
/// requests: each is queued in its turn, but requests queued on two connections to one broker
/// reach it in whatever order the two streams deliver them.
fn keep_one_connection(state: &mut ClusterState, conn: Connection) -> Connection {
    let kept = state
        .connections
        .entry(conn.node_id())
        .or_insert_with(|| conn.clone());
    if kept.is_closed() {
        *kept = conn;
    }
    kept.clone()
}

impl Cluster {
    /// Connects to the first reachable bootstrap broker.
    ///
    /// # Errors
    /// The last connection error when no bootstrap broker can be reached.
    pub async fn connect(config: ClientConfig) -> Result<Cluster, ClientError> {
        let jitter = SmallRng::seed_from_u64(config.seed ^ BACKOFF_SALT);
        let health = Health::new(config.reconnect_backoff, config.reconnect_backoff_max);
        let cluster = Cluster {
            inner: Arc::new(ClusterInner {
                config,
                state: Mutex::new(ClusterState::default()),
                jitter: Mutex::new(jitter),
                health: Mutex::new(health),
            }),
        };
        cluster.bootstrap().await?;
        Ok(cluster)
    }

    /// The settings this cluster connection was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends `request` where `route` says and returns the reply, retrying retriable failures
    /// with exponential backoff and following `NOT_LEADER` to the new leader.
    ///
    /// # Errors
    /// The last failure once retries are exhausted, or the first one that is not retriable.
    pub async fn request(&self, route: Route, request: Request) -> Result<Response, ClientError> {
        self.call(route, request, Expect::Reply(None), None)
            .await
            .map(|r| r.expect("a reply was expected"))
    }

    /// [`Cluster::request`] whose first attempt is written only when `turn` comes, after
    /// every request that took an earlier turn of the same order was queued (or failed).
    /// Resolving the route (metadata, a connection) still happens side by side.
    pub(crate) async fn request_in_turn(
        &self,
        route: Route,
        request: Request,
        turn: Turn,
    ) -> Result<Response, ClientError> {
        self.call(route, request, Expect::Reply(None), Some(turn))
            .await
            .map(|r| r.expect("a reply was expected"))
    }

    /// [`Cluster::send_no_reply`], written in turn as [`Cluster::request_in_turn`] is.
    pub(crate) async fn send_no_reply_in_turn(
        &self,
        route: Route,
        request: Request,
        turn: Turn,
    ) -> Result<(), ClientError> {
        self.call(route, request, Expect::NoReply, Some(turn))
            .await
            .map(|_| ())
    }

    /// [`Cluster::request`] with a per-attempt timeout (long-polling fetches wait longer).
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub async fn request_with_timeout(
        &self,
        route: Route,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.call(route, request, Expect::Reply(Some(timeout)), None)
            .await
            .map(|r| r.expect("a reply was expected"))
    }

    /// Sends a request that gets no reply (`acks=0`); resolves once it is written.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub async fn send_no_reply(&self, route: Route, request: Request) -> Result<(), ClientError> {
        self.call(route, request, Expect::NoReply, None)
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        route: Route,
        request: Request,
        expect: Expect,
        mut turn: Option<Turn>,
    ) -> Result<Option<Response>, ClientError> {
        let mut attempt = 0;
        let mut redirect: Option<NodeId> = None;
        let mut followed_a_hint = false;
        loop {
            // Only the first attempt keeps its place: a retry is written when it is ready.
            let err = match self
                .try_once(&route, redirect, request.clone(), &expect, turn.take())
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(err) => err,
            };
            self.learn_from(&route, &err);
            if attempt >= self.inner.config.retries || !err.may_retry(&request) {
                return Err(err);
            }
            if route == Route::Any {
                redirect = err.leader_hint().or(redirect);
            }
            // A refusal naming the leader (a hand-over, or an election the refusing node has
            // already seen end) is followed at once: the leader is known, so a backoff would
            // only add latency to every write of a moved partition. Once per request, so two
            // nodes naming each other (views still settling) cannot loop without pauses.
            let pause = if !followed_a_hint && err.leader_hint().is_some() {
                followed_a_hint = true;
                Duration::ZERO
            } else {
                self.backoff(attempt)
            };
            tracing::debug!(
                attempt = attempt + 1,
                of = self.inner.config.retries,
                route = ?route,
                request = request.kind(),
                pause_ms = pause.as_millis() as u64,
                error = %err,
                "retrying"
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    async fn try_once(
        &self,
        route: &Route,
        redirect: Option<NodeId>,
        request: Request,
        expect: &Expect,
        turn: Option<Turn>,
    ) -> Result<Option<Response>, ClientError> {
        // A failure here drops the turn, which passes it on.
        let conn = match (route, redirect) {
            (Route::Any, Some(node)) => self.node_connection(node).await?,
            (Route::Any, None) => self.home_connection().await?,
            (Route::Node(node), _) => self.node_connection(*node).await?,
            (Route::Leader { topic, partition }, _) => {
                self.leader_connection(topic, *partition).await?
            }
        };
        if let Some(turn) = &turn {
            turn.wait_for(conn.node_id()).await;
        }
        let result = Self::exchange(&conn, request, expect, turn).await;
        self.record(&Broker::Node(conn.node_id()), &result);
        result
    }

    /// Queues `request` on `conn`, passes the turn on once it is queued, then waits for the
    /// reply (or the write), counted as unanswered at the node until then.
    async fn exchange(
        conn: &Connection,
        request: Request,
        expect: &Expect,
        turn: Option<Turn>,
    ) -> Result<Option<Response>, ClientError> {
        let queued_for = |turn: Option<Turn>| turn.map(|t| t.queued_for(conn.node_id()));
        match expect {
            Expect::Reply(timeout) => {
                let queued = match timeout {
                    None => conn.enqueue(request).await,
                    Some(timeout) => conn.enqueue_timeout(request, *timeout).await,
                };
                let _unanswered = queued_for(turn);
                queued?.reply().await.map(Some)
            }
            Expect::NoReply => {
                let queued = conn.enqueue_no_reply(request).await;
                let _unanswered = queued_for(turn);
                queued?.written().await.map(|()| None)
            }
        }
    }

    /// Remembers whether a broker answered: one that did not is skipped for a while.
    fn record<T>(&self, broker: &Broker, result: &Result<T, ClientError>) {
        let unreachable = matches!(
            result,
            Err(ClientError::Connect { .. }
                | ClientError::Io { .. }
                | ClientError::Timeout { .. }
                | ClientError::Disconnected { .. })
        );
        let mut health = lock(&self.inner.health);
        if unreachable {
            let skip = health.failed(broker.clone(), Instant::now());
            tracing::debug!(%broker, skip_ms = skip.as_millis() as u64, failures = health.consecutive_failures(broker), "broker skipped");
        } else if result.is_ok() || matches!(result, Err(ClientError::Api(_))) {
            health.succeeded(broker);
        }
    }

    /// Fails at once, without dialling, if `broker` failed lately and its skip has not run out.
    fn check_skipped(&self, broker: &Broker, addr: &str) -> Result<(), ClientError> {
        let health = lock(&self.inner.health);
        match health.skipped_until(broker, Instant::now()) {
            None => Ok(()),
            Some(until) => Err(ClientError::connect(
                addr,
                std::io::Error::other(format!(
                    "{broker} failed {} times in a row and is skipped for {} ms more",
                    health.consecutive_failures(broker),
                    until.saturating_duration_since(Instant::now()).as_millis()
                )),
            )),
        }
    }

    /// Opens a connection and records whether it worked.
    async fn dial(&self, broker: Broker, addr: &str) -> Result<Connection, ClientError> {
        let result = Connection::connect(addr, &self.inner.config.connection).await;
        self.record(&broker, &result);
        if let Ok(conn) = &result {
            lock(&self.inner.health).succeeded(&Broker::Node(conn.node_id()));
        }
        result
    }

    /// Updates the routing cache from a failure, so the retry goes somewhere better.
    fn learn_from(&self, route: &Route, err: &ClientError) {
        let mut state = lock(&self.inner.state);
        if let Some((leader, address)) = err.leader_address() {
            // Saves a metadata round trip before dialling a leader this client never met.
            state
                .brokers
                .entry(leader)
                .or_insert_with(|| address.to_owned());
        }
        let Route::Leader { topic, partition } = route else {
            return;
        };
        match (err.code(), err.leader_hint()) {
            (Some(ErrorCode::NOT_LEADER), Some(leader)) => {
                if let Some(p) = state
                    .topics
                    .get_mut(topic)
                    .and_then(|cached| cached.partitions.get_mut(partition.0 as usize))
                {
                    p.leader = Some(leader);
                }
            }
            (
                Some(
                    ErrorCode::NOT_LEADER
                    | ErrorCode::UNKNOWN_PARTITION
                    | ErrorCode::UNKNOWN_TOPIC
                    | ErrorCode::UNKNOWN_TOPIC_ID
                    | ErrorCode::UNAVAILABLE,
                ),
                _,
            )
            | (None, _) => {
                // Unreachable leaders may have moved too.
                state.topics.remove(topic);
            }
            _ => {}
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.inner.config;
        let exp = config.retry_backoff.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(config.retry_backoff_max);
        // ±20 % jitter keeps many clients from retrying in lockstep.
        let factor = lock(&self.inner.jitter).gen_range(0.8..1.2);
        capped.mul_f64(factor)
    }

    /// Connects to the first broker that answers among the bootstrap addresses and the brokers
    /// metadata named, those not skipped after a recent failure first, and makes it home.
    async fn bootstrap(&self) -> Result<Connection, ClientError> {
        let candidates = self.bootstrap_candidates();
        let mut last_error = None;
        for (broker, addr) in candidates {
            match self.dial(broker, &addr).await {
                Ok(conn) => {
                    let node = conn.node_id();
                    let mut state = lock(&self.inner.state);
                    state.home = Some(node);
                    state.brokers.entry(node).or_insert_with(|| addr.clone());
                    tracing::debug!(%addr, %node, "connected to a broker");
                    return Ok(keep_one_connection(&mut state, conn));
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "broker unreachable; trying the next");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            ClientError::Usage(
                "no bootstrap broker given; set --bootstrap host:port or GREGOR_BOOTSTRAP".into(),
            )
        }))
    }

    /// The bootstrap addresses, then the brokers learnt from metadata at addresses not already
    /// listed, healthy ones first.
    fn bootstrap_candidates(&self) -> Vec<(Broker, String)> {
        let bootstrap = &self.inner.config.bootstrap;
        let mut candidates: Vec<(Broker, String)> = bootstrap
            .iter()
            .map(|addr| (Broker::Address(addr.clone()), addr.clone()))
            .collect();
        {
            let state = lock(&self.inner.state);
            for (node, addr) in &state.brokers {
                if !bootstrap.contains(addr) {
                    candidates.push((Broker::Node(*node), addr.clone()));
                }
            }
        }
        lock(&self.inner.health).order(candidates, Instant::now())
    }

    /// The bootstrap broker's connection, or any live one, or a fresh bootstrap.
    async fn home_connection(&self) -> Result<Connection, ClientError> {
        let live = {
            let state = lock(&self.inner.state);
            let health = lock(&self.inner.health);
            let now = Instant::now();
            let usable = |c: &&Connection| {
                !c.is_closed()
                    && health
                        .skipped_until(&Broker::Node(c.node_id()), now)
                        .is_none()
            };
            let home = state
                .home
                .and_then(|id| state.connections.get(&id))
                .filter(usable);
            home.or_else(|| state.connections.values().find(usable))
                .cloned()
        };
        match live {
            Some(conn) => Ok(conn),
            None => self.bootstrap().await,
        }
    }

    /// A live connection to `node`, dialling it if needed.
    ///
    /// # Errors
    /// [`ClientError::UnknownNode`] if metadata has no address for it, or the connect error.
    pub async fn node_connection(&self, node: NodeId) -> Result<Connection, ClientError> {
        let (live, addr) = {
            let state = lock(&self.inner.state);
            let live = state
                .connections
                .get(&node)
                .filter(|c| !c.is_closed())
                .cloned();
            (live, state.brokers.get(&node).cloned())
        };
        if let Some(conn) = live {
            return Ok(conn);
        }
        // The bootstrap address is known to work for the home node, whatever it advertises.
        if lock(&self.inner.state).home == Some(node) {
            let conn = self.bootstrap().await?;
            if conn.node_id() == node {
                return Ok(conn);
            }
        }
        let addr = match addr {
            Some(addr) => addr,
            None => {
                self.fetch_metadata(Some(Vec::new())).await?;
                lock(&self.inner.state)
                    .brokers
                    .get(&node)
                    .cloned()
                    .ok_or(ClientError::UnknownNode(node))?
            }
        };
        self.check_skipped(&Broker::Node(node), &addr)?;
        let conn = match self.dial(Broker::Node(node), &addr).await {
            Ok(conn) => conn,
            Err(e) => {
                // The node may have moved, or be gone: the next metadata says.
                lock(&self.inner.state).brokers.remove(&node);
                return Err(e);
            }
        };
        if conn.node_id() != node {
            tracing::warn!(%addr, expected = %node, found = %conn.node_id(), "address belongs to another node");
        }
        Ok(keep_one_connection(&mut lock(&self.inner.state), conn))
    }

    async fn leader_connection(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Connection, ClientError> {
        let partitions = self.partitions(topic).await?;
        let meta = partitions.get(partition.0 as usize).ok_or_else(|| {
            ClientError::Api(ApiError::unknown_partition(
                topic,
                partition,
                partitions.len() as u32,
            ))
        })?;
        let leader = meta.leader.ok_or_else(|| {
            ClientError::Api(ApiError::new(
                ErrorCode::UNAVAILABLE,
                format!("partition {partition} of '{topic}' has no leader right now; retry once an election completes"),
            ))
        })?;
        self.node_connection(leader).await
    }

    /// The partitions of `topic`, from cache or from a metadata request.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` when the topic does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionMetadata>, ClientError> {
        if let Some(cached) = lock(&self.inner.state).topics.get(topic) {
            return Ok(cached.partitions.clone());
        }
        self.refresh_topic(topic).await
    }

    /// The incarnation `topic` resolves to now (cached): its id and partition count.
    ///
    /// # Errors
    /// As [`Cluster::partitions`].
    pub async fn incarnation(&self, topic: &str) -> Result<TopicIncarnation, ClientError> {
        if let Some(cached) = lock(&self.inner.state).topics.get(topic) {
            return Ok(cached.incarnation());
        }
        let metadata = self.fetch_metadata(Some(vec![topic.to_owned()])).await?;
        metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| TopicIncarnation {
                id: t.topic_id,
                partitions: t.partitions.len() as u32,
            })
            .ok_or_else(|| ClientError::Api(ApiError::unknown_topic(topic)))
    }

    /// How many partitions `topic` has (cached).
    ///
    /// # Errors
    /// As [`Cluster::partitions`].
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        Ok(self.partitions(topic).await?.len() as u32)
    }

    /// Reloads `topic`'s metadata.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` when the topic does not exist, or the request's failure.
    pub async fn refresh_topic(&self, topic: &str) -> Result<Vec<PartitionMetadata>, ClientError> {
        let metadata = self.fetch_metadata(Some(vec![topic.to_owned()])).await?;
        metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| sorted_partitions(t.partitions))
            .ok_or_else(|| ClientError::Api(ApiError::unknown_topic(topic)))
    }

    /// Forgets `topic`'s cached metadata; the next use reloads it.
    pub fn invalidate(&self, topic: &str) {
        lock(&self.inner.state).topics.remove(topic);
    }

    /// Sends a `Metadata` request and caches what it says.
    ///
    /// # Errors
    /// The request's failure.
    pub async fn fetch_metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<ClusterMetadata, ClientError> {
        // Every node keeps a read copy of the metadata, so the home connection can always
        // answer; going through `call` would recurse into routing.
        let request = Request::Metadata(Metadata { topics });
        let mut attempt = 0;
        let reply = loop {
            let result = match self.home_connection().await {
                Ok(conn) => {
                    let result = conn.send(request.clone()).await;
                    self.record(&Broker::Node(conn.node_id()), &result);
                    if result.is_err() {
                        // Ask another broker next time: this one may be going away.
                        lock(&self.inner.state).home = None;
                    }
                    result
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(reply) => break reply,
                Err(e) if attempt < self.inner.config.retries && e.may_retry(&request) => {
                    let pause = self.backoff(attempt);
                    tracing::debug!(attempt = attempt + 1, pause_ms = pause.as_millis() as u64, error = %e, "retrying a metadata request");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let metadata = expect_reply::<Metadata>(reply)?;
        let mut state = lock(&self.inner.state);
        for broker in &metadata.brokers {
            state.brokers.insert(broker.node_id, broker.address.clone());
        }
        for topic in &metadata.topics {
            let cached = CachedTopic {
                id: topic.topic_id,
                partitions: sorted_partitions(topic.partitions.clone()),
            };
            state.topics.insert(topic.name.clone(), cached);
        }
        Ok(metadata)
    }
}

fn sorted_partitions(mut partitions: Vec<PartitionMetadata>) -> Vec<PartitionMetadata> {
    partitions.sort_by_key(|p| p.partition);
    partitions
}

/// Takes the reply of request kind `R` out of `reply`, or fails with a protocol error (the
/// broker answered with another kind).
pub(crate) fn expect_reply<R: ApiRequest>(reply: Response) -> Result<R::Reply, ClientError> {
    R::reply_from(reply).map_err(|other| unexpected_reply(R::KIND, &other))
}

/// The error for a reply of the wrong kind: the broker broke the protocol.
fn unexpected_reply(expected: &str, got: &Response) -> ClientError {
    ClientError::Protocol {
        addr: "the broker".into(),
        reason: format!("expected a {expected} reply, got {}", got.kind()),
    }
}
