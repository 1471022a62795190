//! Starting a node: opening storage, starting the actors, and the [`Broker`] handle to them.
//!
//! ```
//! use gregor_actors::api::{CreateTopic, Fetch, Produce, Acks, OffsetSpec, ListOffsets};
//! use gregor_actors::{start_node, NodeConfig};
//! use gregor_storage::batch::{BatchBuilder, NewRecord};
//! use gregor_storage::{NodeId, Offset, PartitionId};
//!
//! actix::System::new().block_on(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let node = start_node(NodeConfig::single_node(dir.path())).await.unwrap();
//!     // The typed messages are the API: send them to the actors the broker routes to.
//!     node.metadata()
//!         .send(CreateTopic { name: "orders".into(), partitions: 1, replication_factor: 1, config: Default::default(), creation_id: None })
//!         .await.unwrap().unwrap();
//!     let mut batch = BatchBuilder::with_capacity(256);
//!     batch.push(&NewRecord { key: Some(b"seller-7"), value: Some(b"paid"), headers: &[], timestamp: 0 });
//!     let replica = node.replica("orders", PartitionId(0)).unwrap();
//!     let reply = replica
//!         .send(Produce { topic: "orders".into(), partition: PartitionId(0), acks: Acks::All, timeout_ms: 5_000,
//!                         batches: vec![batch.finish()], topic_id: None })
//!         .await.unwrap().unwrap();
//!     assert_eq!(reply.base_offset, Offset(0));
//!     node.shutdown().await;
//! });
//! ```

use crate::api::{ApiError, ErrorCode, Request, Response};
use crate::directory::Directory;
use crate::fail_stop::{self, FailStop};
use crate::groups::membership::GroupConfig;
use crate::groups::GroupRouter;
use crate::inbound::NodeMessages;
use crate::liveness::Liveness;
use crate::metadata::{MetadataService, MetadataState, MetadataView, OFFSETS_TOPIC};
use crate::operations::{Controller, LiveNode, OperationSettings, VoterTarget};
use crate::partition::ReplicaSettings;
use crate::publisher::HintPublisher;
use crate::reconcile::{Converger, Reconciler, ReplicaFactory, StopAll};
use crate::shards::{ShardPlace, Shards};
use actix::prelude::*;
use gregor_cluster::membership::{
    DiskUsage, GossipTransport, Membership, MembershipConfig, NodeInfo,
};
use gregor_cluster::peer::AddressBook;
use gregor_cluster::{
    ClusterNode, Dispatcher, NoPeers, NodeMessageHandler, RaftGroup, RaftTuning, RpcError, Start,
    Transport,
};
use gregor_storage::{
    Clock, FlushPolicy, GroupId, NodeId, PartitionId, Store, StoreOptions, SyncMode, SystemClock,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a starting node looks again at the voters of a replica it waits for.
const VOTERS_RECHECK: Duration = Duration::from_millis(100);

/// How long the metadata group of a node alone may take to elect it.
const LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster's knobs. The defaults suit a node alone and a small cluster alike.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The rack (or zone) of this node: replicas of a partition go to distinct racks first.
    pub rack: Option<String>,
    /// What the metadata leader does, and how much at once (see [`OperationSettings`]).
    pub operations: OperationSettings,
    /// How often the metadata leader plans its operations.
    pub operations_interval: Duration,
    /// How long a starting node may take to catch up with the metadata and start its
    /// replicas before it reports a failure.
    pub startup_timeout: Duration,
    /// How often a node tells its peers which partitions it started or stopped leading, and
    /// brings the partitions it leads toward their assigned replicas.
    pub hint_interval: Duration,
    /// Every this many hint rounds the whole list of leaderships goes out, which bounds how
    /// stale a lost hint leaves a peer.
    pub full_hint_every: u32,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            rack: None,
            operations: OperationSettings::default(),
            operations_interval: Duration::from_secs(1),
            startup_timeout: Duration::from_secs(60),
            hint_interval: Duration::from_millis(500),
            full_hint_every: 10,
        }
    }
}

/// Everything a node needs to start, already validated (the `node` crate parses TOML/env/flags
/// into this).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// `host:port` clients should use to reach this node (reported in `Metadata`).
    pub advertised_address: String,
    /// `Always`: acks=all waits for fsync (group commit). `Never`: page cache only.
    pub flush: FlushPolicy,
    /// Extra time a partition leader waits to gather more produce requests into one Raft entry
    /// while no write is in flight (0: write at once; requests arriving during a write are
    /// batched anyway).
    pub produce_linger_ms: u64,
    /// Partitions of `__consumer_offsets` (Kafka: 50).
    pub offsets_partitions: u32,
    pub retention_check_interval_ms: u64,
    /// Block cache for fjall.
    pub cache_bytes: u64,
    pub cluster: ClusterSettings,
    /// Consumer groups' session timeout: the default and the bounds a group's configuration
    /// or a member's request must keep within.
    pub groups: GroupConfig,
    /// Threads partition replicas run on (shard-per-core); 1 runs them on the caller's thread,
    /// as the simulation must.
    pub shards: usize,
}

impl NodeConfig {
    /// Node 1 with embedded defaults, storing its data in `data_dir`.
    pub fn single_node(data_dir: &Path) -> NodeConfig {
        NodeConfig {
            node_id: NodeId(1),
            data_dir: data_dir.to_path_buf(),
            advertised_address: "127.0.0.1:9092".into(),
            flush: FlushPolicy::Always,
            produce_linger_ms: 0,
            offsets_partitions: 50,
            retention_check_interval_ms: 30_000,
            cache_bytes: 64 * 1024 * 1024,
            cluster: ClusterSettings::default(),
            groups: GroupConfig::default(),
            shards: 1,
        }
    }
}

/// The seams a node reaches the world through. Production uses [`NodeEnv::production`]; the
/// simulation hands in a virtual clock, its own fsync scheduling, its own network and a model
/// disk.
#[derive(Clone)]
pub struct NodeEnv {
    pub clock: Arc<dyn Clock>,
    /// Where this node's requests to its peers go (`NoPeers` for a node alone).
    pub transport: Arc<dyn Transport>,
    pub raft_tuning: RaftTuning,
    pub sync_mode: SyncMode,
    /// Where the node's store comes from.
    pub storage: StorageSeam,
    /// `None`: the node runs alone. `Some`: it is (or joins) a cluster.
    pub cluster: Option<ClusterEnv>,
}

/// What a node of a cluster is handed besides its outbound transport.
#[derive(Clone)]
pub struct ClusterEnv {
    /// Serves the peers' requests: the transport must hand what arrives to it.
    pub dispatcher: Arc<Dispatcher>,
    /// Gossip's datagrams (UDP on the peer port in production).
    pub gossip: Arc<dyn GossipTransport>,
    /// Gossip's settings; its seeds are the `--join` peers: none founds a new cluster.
    pub membership: MembershipConfig,
    /// Where peers reach this node.
    pub peer_addr: SocketAddr,
    /// The peer transport's address book, kept in step with gossip from the moment gossip
    /// starts (a joining node must be reachable before it can finish starting). `None` when
    /// the transport routes by node id without addresses (tests, the simulation).
    pub peer_addresses: Option<AddressBook>,
}

/// Where a node's store comes from.
#[derive(Debug, Clone, Default)]
pub enum StorageSeam {
    /// fjall in [`NodeConfig::data_dir`], opened with the config's flush policy and the env's
    /// sync mode.
    #[default]
    DataDir,
    /// A store the caller opened, with the flush policy and sync mode it chose: the simulation
    /// opens one on its model disk (or on fjall) and keeps a handle to crash, fence and inspect
    /// it.
    Opened(Store),
}

impl NodeEnv {
    pub fn production() -> NodeEnv {
        NodeEnv {
            clock: Arc::new(SystemClock),
            transport: Arc::new(NoPeers),
            raft_tuning: RaftTuning::default(),
            sync_mode: SyncMode::Thread,
            storage: StorageSeam::DataDir,
            cluster: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot open the data directory {path}: {source}")]
    Storage {
        path: PathBuf,
        source: gregor_storage::StorageError,
    },
    #[error("the node could not start: {0}")]
    Actors(String),
    /// A cluster member could not reach its peers in time to catch up with the metadata and
    /// start its replicas (not a storage fault: the same start may succeed once they answer).
    #[error(
        "the node could not start: the node did not catch up with the metadata and start its \
         replicas within {timeout_s} s"
    )]
    CatchUpTimeout { timeout_s: u64 },
}

/// How long [`Broker::shutdown`] waits for the store's last handle to go once everything that
/// holds one has stopped: the last may be dropped by an actor finishing on the next turn.
pub const STORE_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A running node; cheap to clone, `Send + Sync`, usable from any thread.
#[derive(Clone)]
pub struct Broker {
    node_id: NodeId,
    metadata: Addr<MetadataService>,
    controller: Addr<Controller>,
    reconciler: Addr<Reconciler>,
    converger: Addr<Converger>,
    publisher: Option<Addr<HintPublisher>>,
    groups: Addr<GroupRouter>,
    metadata_group: Arc<RaftGroup>,
    cluster: Arc<ClusterNode>,
    membership: Option<Arc<Membership>>,
    directory: Arc<Directory>,
    shards: Arc<Shards>,
    store: Store,
    /// Set once the store poisoned itself: the node then refuses everything (see `fail_stop`).
    failure: fail_stop::Failure,
}

fn stopped() -> ApiError {
    ApiError::new(
        ErrorCode::UNAVAILABLE,
        "the node is shutting down; retry against another node",
    )
}

impl Broker {
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The metadata service: send it `CreateTopic`, `DeleteTopic`, `ListTopics`,
    /// `DescribeTopic`, `Metadata`.
    pub fn metadata(&self) -> Addr<MetadataService> {
        self.metadata.clone()
    }

    /// The group router: send it `CommitOffsets`, `FetchOffsets`, `ListGroups`,
    /// `DescribeGroup`, `ResetOffsets`, `ConsumerGroupHeartbeat`, `AlterGroupConfig`,
    /// `DescribeGroupConfig`.
    pub fn groups(&self) -> Addr<GroupRouter> {
        self.groups.clone()
    }

    /// The reconciler, which starts, stops and deletes this node's replicas.
    pub fn reconciler(&self) -> Addr<Reconciler> {
        self.reconciler.clone()
    }

    /// The applied metadata, as this node has it now.
    pub fn view(&self) -> Arc<MetadataView> {
        self.directory.view()
    }

    /// The applied metadata, published after every metadata command this node applies.
    pub fn watch_view(&self) -> watch::Receiver<Arc<MetadataView>> {
        self.directory.watch_view()
    }

    /// The replica of one partition, when it runs on this node: send it `Produce`, `Fetch`,
    /// `ListOffsets`.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` or `UNKNOWN_PARTITION`; `NOT_LEADER` (naming the leader if known) when
    /// the partition has no replica here.
    pub fn replica(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Addr<crate::partition::PartitionReplica>, ApiError> {
        self.directory.replica(topic, partition).map(|r| r.addr)
    }

    /// Serves one request (not `Hello`, which the connection layer answers). For a produce with
    /// `acks = 0` the reply is computed but the caller drops it.
    pub async fn handle(&self, request: Request) -> Result<Response, ApiError> {
        if let Some(cause) = self.failure() {
            return Err(fail_stop::refusal(self.node_id, &cause));
        }
        async fn ask<A, M>(addr: Addr<A>, message: M) -> Result<M::Result, ApiError>
        where
            A: Actor<Context = Context<A>> + Handler<M>,
            M: Message + Send + 'static,
            M::Result: Send,
        {
            addr.send(message).await.map_err(|_| stopped())
        }
        Ok(match request {
            Request::Hello(_) => {
                return Err(ApiError::new(
                    ErrorCode::MALFORMED_REQUEST,
                    "Hello is only valid as the first frame",
                ))
            }
            Request::CreateTopic(r) => Response::CreateTopic(ask(self.metadata(), r).await??),
            Request::DeleteTopic(r) => Response::DeleteTopic(ask(self.metadata(), r).await??),
            Request::ListTopics(r) => Response::ListTopics(ask(self.metadata(), r).await??),
            Request::DescribeTopic(r) => Response::DescribeTopic(ask(self.metadata(), r).await??),
            Request::Metadata(r) => Response::Metadata(ask(self.metadata(), r).await??),
            Request::Produce(r) => {
                let replica =
                    self.directory
                        .replica_of_incarnation(&r.topic, r.partition, r.topic_id)?;
                Response::Produce(ask(replica.addr, r).await??)
            }
            Request::Fetch(r) => {
                Response::Fetch(ask(self.replica(&r.topic, r.partition)?, r).await??)
            }
            Request::ListOffsets(r) => {
                Response::ListOffsets(ask(self.replica(&r.topic, r.partition)?, r).await??)
            }
            Request::CommitOffsets(r) => Response::CommitOffsets(ask(self.groups(), r).await??),
            Request::FetchOffsets(r) => Response::FetchOffsets(ask(self.groups(), r).await??),
            Request::ListGroups(r) => Response::ListGroups(ask(self.groups(), r).await??),
            Request::DescribeGroup(r) => Response::DescribeGroup(ask(self.groups(), r).await??),
            Request::ResetOffsets(r) => Response::ResetOffsets(ask(self.groups(), r).await??),
            Request::ConsumerGroupHeartbeat(r) => {
                Response::ConsumerGroupHeartbeat(ask(self.groups(), r).await??)
            }
            Request::AlterGroupConfig(r) => {
                Response::AlterGroupConfig(ask(self.groups(), r).await??)
            }
            Request::DescribeGroupConfig(r) => {
                Response::DescribeGroupConfig(ask(self.groups(), r).await??)
            }
            Request::InitProducerId(r) => Response::InitProducerId(ask(self.metadata(), r).await??),
            Request::ClusterStatus(r) => Response::ClusterStatus(ask(self.metadata(), r).await??),
            Request::DrainNode(r) => Response::DrainNode(ask(self.metadata(), r).await??),
        })
    }

    /// Why the node stopped serving, once its store poisoned itself (a failed fsync or journal
    /// write); `None` while it serves.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Resolves with the cause once the node has stopped serving after a storage failure, or
    /// with `None` once it shut down without one. Whoever runs the node waits on it and ends
    /// the process (after [`Broker::shutdown`]), which must then be restarted: it holds no
    /// handle of the node, so waiting never keeps the node's store open.
    pub fn when_failed(&self) -> impl std::future::Future<Output = Option<String>> + 'static {
        fail_stop::when_failed(self.failure.clone())
    }

    /// Where a partition's replica runs on this node: its shard and that shard's thread.
    ///
    /// # Errors
    /// As [`Broker::replica`].
    pub fn replica_shard(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<ShardPlace, ApiError> {
        self.directory.replica(topic, partition).map(|r| r.shard)
    }

    /// The Raft group of a partition replica running here.
    pub fn replica_group(&self, group: GroupId) -> Option<Arc<RaftGroup>> {
        self.directory.local(group).map(|r| r.group)
    }

    /// The metadata group's Raft (its voters, its leader).
    pub fn metadata_group(&self) -> Arc<RaftGroup> {
        self.metadata_group.clone()
    }

    /// Stops every actor and Raft group and waits for them and for the storage threads' jobs,
    /// makes everything written durable, and waits until the store is closed. After this the
    /// data directory can be reopened, in this process too, unless a warning said that something
    /// still holds the store after [`STORE_CLOSE_WAIT`] (a bug: every holder stops here).
    pub async fn shutdown(self) {
        let closed = self.store.when_closed();
        let node = self.node_id;
        self.stop_everything().await;
        if tokio::time::timeout(STORE_CLOSE_WAIT, closed)
            .await
            .is_err()
        {
            tracing::warn!(
                node = node.0,
                "the store is still open {STORE_CLOSE_WAIT:?} after the node stopped: something \
                 still holds it, and opening its directory again in this process will fail"
            );
        }
    }

    /// Everything `shutdown` does but waiting for the store to close; the node's own handles
    /// go when this returns.
    async fn stop_everything(self) {
        if let Some(membership) = &self.membership {
            membership.set_ready(false).await;
        }
        if let Some(publisher) = &self.publisher {
            let _ = publisher.send(Stop).await;
        }
        let _ = self.converger.send(Stop).await;
        let _ = self.controller.send(Stop).await;
        let _ = self.metadata.send(Stop).await;
        let _ = self.groups.send(StopRouter).await;
        let _ = self.reconciler.send(StopAll).await;
        self.cluster.shutdown().await;
        // Every replica and Raft group has stopped: what their threads still run (timers,
        // finished streams) goes with them.
        self.shards.stop().await;
        if let Some(membership) = self.membership {
            match Arc::try_unwrap(membership) {
                Ok(membership) => {
                    if let Err(error) = membership.shutdown().await {
                        tracing::warn!(%error, "gossip did not stop cleanly");
                    }
                }
                Err(_) => tracing::warn!("gossip is still shared at shutdown"),
            }
        }
        // A job started before the actors stopped (a deletion step, a large read) holds a
        // handle of the store until it returns; what it wrote belongs in the final sync.
        crate::storage_io::storage_threads_idle(&self.store).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.request_sync(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        if let Ok(Err(error)) = rx.await {
            tracing::error!(%error, "final sync failed");
        }
    }
}

/// Stops an actor that holds no replicas.
#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for Controller {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Stop> for MetadataService {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Stop> for Converger {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Stop> for HintPublisher {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopRouter;

impl Handler<StopRouter> for GroupRouter {
    type Result = ();
    fn handle(&mut self, _: StopRouter, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Starts the node's actors inside the current actix `System`, with production seams.
///
/// # Errors
/// The data directory cannot be opened or the node's state cannot be loaded.
pub async fn start_node(config: NodeConfig) -> Result<Broker, StartError> {
    start_node_with(config, NodeEnv::production()).await
}

/// Starts a node with the given seams (the simulation's entry point).
///
/// # Errors
/// As [`start_node`].
pub async fn start_node_with(config: NodeConfig, env: NodeEnv) -> Result<Broker, StartError> {
    let node = config.node_id;
    let options = StoreOptions {
        flush: config.flush,
        sync_mode: env.sync_mode.clone(),
        cache_bytes: config.cache_bytes,
    };
    let opened = match &env.storage {
        StorageSeam::DataDir => Store::open(&config.data_dir, options),
        StorageSeam::Opened(store) => Ok(store.clone()),
    };
    let store = opened.map_err(|source| StartError::Storage {
        path: config.data_dir.clone(),
        source,
    })?;
    let state = MetadataState::load(&store).map_err(|e| failed("reading the metadata", &e))?;
    let dispatcher = match &env.cluster {
        Some(cluster) => cluster.dispatcher.clone(),
        None => Dispatcher::new(),
    };
    let cluster = ClusterNode::new(
        node,
        store.clone(),
        env.transport.clone(),
        dispatcher.clone(),
        env.raft_tuning,
    );
    let metadata_group = start_metadata_group(&cluster, &store, &state, &env).await?;
    let directory = Arc::new(Directory::new(
        node,
        state.subscribe(),
        dispatcher.changes(),
    ));
    let settings = ReplicaSettings {
        linger: Duration::from_millis(config.produce_linger_ms),
        retention_check_interval: Duration::from_millis(config.retention_check_interval_ms.max(1)),
        clock: env.clock.clone(),
        max_pending_bytes: 64 * 1024 * 1024,
        max_entry_bytes: 8 * 1024 * 1024,
        propose_timeout: Duration::from_secs(30),
        addresses: {
            let view = state.subscribe();
            Arc::new(move |node| view.borrow().node(node).map(|n| n.client_addr.clone()))
        },
    };
    let propose_timeout = settings.propose_timeout;
    let shards =
        Arc::new(Shards::new(config.shards).map_err(|e| failed("starting the shard threads", &e))?);
    let factory = ReplicaFactory {
        cluster: cluster.clone(),
        settings: settings.clone(),
        shards: shards.clone(),
    };
    let reconciler = Reconciler::new(factory, directory.clone())
        .map_err(|e| failed("reading the replicas this node hosts", &e))?;
    let settled = reconciler.settled();
    let reconciler = reconciler.start();
    let (liveness, membership) = start_liveness(&config, &env).await?;
    let metadata = MetadataService::new(
        env.transport.clone(),
        metadata_group.clone(),
        state.clone(),
        directory.clone(),
        liveness.clone(),
        settled.clone(),
        propose_timeout,
    )
    .with_compaction(settings.retention_check_interval)
    .start();
    let groups = GroupRouter::new(
        directory.clone(),
        env.transport.clone(),
        env.clock.clone(),
        config.groups,
    )
    .start();
    dispatcher.set_node_message_handler(Arc::new(Inbound(NodeMessages {
        metadata: metadata.clone(),
        groups: groups.clone(),
        directory: directory.clone(),
    })));
    let controller = Controller::new(
        metadata_group.clone(),
        directory.clone(),
        env.transport.clone(),
        liveness.clone(),
        operation_settings(&config, env.cluster.is_some()),
        config.cluster.operations_interval,
        propose_timeout,
    )
    .start();
    let converger = Converger::new(
        directory.clone(),
        metadata.clone(),
        config.cluster.hint_interval,
    )
    .start();
    let publisher = membership.as_ref().map(|membership| {
        HintPublisher::new(
            directory.clone(),
            env.transport.clone(),
            liveness.clone(),
            Some(membership.clone()),
            config.cluster.hint_interval,
            config.cluster.full_hint_every,
        )
        .start()
    });
    wait_until_ready(&directory, settled, config.cluster.startup_timeout).await?;
    if let Some(membership) = &membership {
        membership.set_ready(true).await;
    }
    let failure = FailStop {
        node,
        reconciler: reconciler.downgrade(),
        cluster: Arc::downgrade(&cluster),
        membership: membership.as_ref().map(Arc::downgrade),
    }
    .spawn(store.when_poisoned());
    tracing::info!(node = %node, data_dir = %config.data_dir.display(), "node started");
    Ok(Broker {
        node_id: node,
        metadata,
        controller,
        reconciler,
        converger,
        publisher,
        groups,
        metadata_group,
        cluster,
        membership,
        directory,
        shards,
        store,
        failure,
    })
}

fn failed(what: &str, error: &dyn std::fmt::Display) -> StartError {
    StartError::Actors(format!("{what}: {error}"))
}

/// The metadata group: restarted from its state, founded by a node that joins nobody, joined
/// (as a learner the metadata leader brings in) by one that does.
async fn start_metadata_group(
    cluster: &ClusterNode,
    store: &Store,
    state: &Arc<MetadataState>,
    env: &NodeEnv,
) -> Result<Arc<RaftGroup>, StartError> {
    let node = cluster.node();
    let has_state = store
        .hard_state(GroupId::METADATA)
        .map_err(|e| failed("reading the metadata group", &e))?
        .is_some()
        || store
            .last_entry(GroupId::METADATA)
            .map_err(|e| failed("reading the metadata group", &e))?
            .is_some();
    let joining = env
        .cluster
        .as_ref()
        .is_some_and(|c| !c.membership.seeds.is_empty());
    let start = match (has_state, joining) {
        (true, _) => Start::Restart,
        (false, true) => Start::Join,
        (false, false) => Start::Found {
            members: [node].into(),
        },
    };
    let founding = matches!(start, Start::Found { .. });
    let group = cluster
        .start_group_with_machine(GroupId::METADATA, start, Some(state.machine()))
        .await
        .map_err(|e| failed("starting the metadata group", &e))?;
    // A node alone must lead its metadata; in a cluster the leader may be another node.
    let alone = env.cluster.is_none();
    let elected = if founding || alone {
        group.wait_for_leadership(LEADERSHIP_TIMEOUT).await
    } else {
        true
    };
    if alone && !elected {
        return Err(StartError::Actors(
            "the metadata group did not elect this node".into(),
        ));
    }
    Ok(group)
}

/// This node alone, or gossip with its peers.
async fn start_liveness(
    config: &NodeConfig,
    env: &NodeEnv,
) -> Result<(Liveness, Option<Arc<Membership>>), StartError> {
    let Some(cluster) = &env.cluster else {
        let info = LiveNode {
            client_addr: config.advertised_address.clone(),
            peer_addr: String::new(),
            rack: config.cluster.rack.clone(),
        };
        let liveness = Liveness::Alone {
            node: config.node_id,
            info,
        };
        return Ok((liveness, None));
    };
    let info = NodeInfo {
        node: config.node_id,
        client_addr: config.advertised_address.clone(),
        peer_addr: cluster.peer_addr,
        version: env!("CARGO_PKG_VERSION").to_string(),
        rack: config.cluster.rack.clone(),
        ready: false,
        replicas: 0,
        leaders: 0,
        disk: DiskUsage::default(),
    };
    let membership = Membership::start(cluster.membership.clone(), info, &*cluster.gossip)
        .await
        .map_err(|e| failed("starting gossip", &e))?;
    if let Some(book) = &cluster.peer_addresses {
        // The task ends when gossip stops.
        drop(book.follow(membership.watch()));
    }
    let liveness = Liveness::Gossip(membership.watch());
    Ok((liveness, Some(Arc::new(membership))))
}

fn operation_settings(config: &NodeConfig, clustered: bool) -> OperationSettings {
    let mut settings = OperationSettings {
        offsets_partitions: config.offsets_partitions,
        ..config.cluster.operations.clone()
    };
    if !clustered {
        // A node alone: one replica of everything, one voter.
        settings.offsets_replication_factor = 1;
        settings.voters = VoterTarget::Count(1);
    }
    settings
}

/// Hands the peers' node messages to the actors.
struct Inbound(NodeMessages);

#[async_trait::async_trait]
impl NodeMessageHandler for Inbound {
    async fn handle(&self, from: NodeId, message: bytes::Bytes) -> Result<bytes::Bytes, RpcError> {
        self.0
            .handle(from, &message)
            .await
            .map_err(RpcError::Protocol)
    }
}

/// Whether the group has log entries here (or removed some): a replica that joined and was
/// never reached by its leader has none.
fn holds_log(group: &gregor_cluster::RaftGroup) -> bool {
    let store = group.store();
    let id = group.id();
    let stored = store.last_entry(id).map(|entry| entry.is_some());
    let removed = store.log_floor(id).map(|floor| floor.index > 0);
    // A store that cannot be read: keep waiting, as before.
    stored.unwrap_or(true) || removed.unwrap_or(true)
}

/// Waits until this node is registered, the offsets topic exists, the reconciler has carried
/// out the metadata as applied then (every replica assigned here runs), and every replica that
/// only this node can lead has re-applied its committed log: before that it would serve reads
/// from state a power cut rolled back.
async fn wait_until_ready(
    directory: &Directory,
    mut settled: watch::Receiver<u64>,
    timeout: Duration,
) -> Result<(), StartError> {
    let node = directory.node();
    let ready = async {
        let mut view = directory.watch_view();
        let view = view
            .wait_for(|v| v.node(node).is_some() && v.topic(OFFSETS_TOPIC).is_some())
            .await
            .map(|v| v.last_index())
            .map_err(|_| ())?;
        settled.wait_for(|s| *s >= view).await.map_err(|_| ())?;
        let only_here = std::collections::BTreeSet::from([node]);
        for replica in directory.locals() {
            // A replica that joins has async-raft's initial configuration (itself alone) until
            // its leader first reaches it: it is waited for until it shows its real voters, or
            // is ready, rather than taken for a replica only this node can lead. One that holds
            // no log yet has nothing to re-apply, and its leader may be down: not waited for.
            while replica.group.voters() == only_here
                && !replica.group.is_ready()
                && holds_log(&replica.group)
            {
                tokio::time::sleep(VOTERS_RECHECK).await;
            }
        }
        Ok::<(), ()>(())
    };
    match tokio::time::timeout(timeout, ready).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(StartError::CatchUpTimeout {
            timeout_s: timeout.as_secs(),
        }),
    }
}
