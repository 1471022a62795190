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
//!     node.topics()
//!         .send(CreateTopic { name: "orders".into(), partitions: 1, replication_factor: 1, config: Default::default() })
//!         .await.unwrap().unwrap();
//!     let mut batch = BatchBuilder::with_capacity(256);
//!     batch.push(&NewRecord { key: Some(b"seller-7"), value: Some(b"paid"), headers: &[], timestamp: 0 });
//!     let replica = node.replica("orders", PartitionId(0)).unwrap();
//!     let reply = replica
//!         .send(Produce { topic: "orders".into(), partition: PartitionId(0), acks: Acks::All, timeout_ms: 5_000,
//!                         batches: vec![batch.finish()] })
//!         .await.unwrap().unwrap();
//!     assert_eq!(reply.base_offset, Offset(0));
//!     node.shutdown().await;
//! });
//! ```

use crate::api::{ApiError, ErrorCode, Request, Response};
use crate::directory::Directory;
use crate::groups::GroupRouter;
use crate::partition::{PartitionReplica, ReplicaSettings};
use crate::topics::{AttachGroups, ReplicaFactory};
use crate::topics::{Shutdown, TopicManager};
use actix::prelude::*;
use gregor_cluster::{ClusterNode, Dispatcher, NoPeers, RaftTuning, Transport};
use gregor_storage::{
    Clock, FlushPolicy, NodeId, PartitionId, Store, StoreOptions, SyncMode, SystemClock,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
        }
    }
}

/// The seams a node reaches the world through. Production uses [`NodeEnv::production`]; the
/// simulation hands in a virtual clock, its own fsync scheduling, its own network and a model
/// disk.
#[derive(Clone)]
pub struct NodeEnv {
    pub clock: Arc<dyn Clock>,
    pub transport: Arc<dyn Transport>,
    pub raft_tuning: RaftTuning,
    pub sync_mode: SyncMode,
    pub storage: StorageSeam,
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
}

/// A running node; cheap to clone, `Send + Sync`, usable from any thread.
#[derive(Clone)]
pub struct Broker {
    node_id: NodeId,
    topics: Addr<TopicManager>,
    groups: Addr<GroupRouter>,
    directory: Arc<Directory>,
    store: Store,
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

    /// The topic manager: send it `CreateTopic`, `DeleteTopic`, `ListTopics`, `DescribeTopic`,
    /// `Metadata`.
    pub fn topics(&self) -> Addr<TopicManager> {
        self.topics.clone()
    }

    /// The group router: send it `CommitOffsets`, `FetchOffsets`, `ListGroups`,
    /// `DescribeGroup`, `ResetOffsets`.
    pub fn groups(&self) -> Addr<GroupRouter> {
        self.groups.clone()
    }

    /// The replica of one partition: send it `Produce`, `Fetch`, `ListOffsets`.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` or `UNKNOWN_PARTITION`.
    pub fn replica(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Addr<PartitionReplica>, ApiError> {
        self.directory
            .replica(topic, partition)
            .map(|(_, r)| r.addr)
    }

    /// Serves one request (not `Hello`, which the connection layer answers). For a produce with
    /// `acks = 0` the reply is computed but the caller drops it.
    pub async fn handle(&self, request: Request) -> Result<Response, ApiError> {
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
            Request::CreateTopic(r) => Response::CreateTopic(ask(self.topics(), r).await??),
            Request::DeleteTopic(r) => Response::DeleteTopic(ask(self.topics(), r).await??),
            Request::ListTopics(r) => Response::ListTopics(ask(self.topics(), r).await??),
            Request::DescribeTopic(r) => Response::DescribeTopic(ask(self.topics(), r).await??),
            Request::Metadata(r) => Response::Metadata(ask(self.topics(), r).await??),
            Request::Produce(r) => {
                Response::Produce(ask(self.replica(&r.topic, r.partition)?, r).await??)
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
        })
    }

    /// Stops every actor and Raft group and waits for them, then makes everything written
    /// durable. After this the data directory can be reopened.
    pub async fn shutdown(self) {
        let _ = self.topics.send(Shutdown).await;
        self.groups.do_send(StopRouter);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.request_sync(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        if let Ok(Err(error)) = rx.await {
            tracing::error!(%error, "final sync failed");
        }
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
    let options = StoreOptions {
        flush: config.flush,
        sync_mode: env.sync_mode,
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
    let settings = ReplicaSettings {
        linger: Duration::from_millis(config.produce_linger_ms),
        retention_check_interval: Duration::from_millis(config.retention_check_interval_ms.max(1)),
        clock: env.clock.clone(),
        max_pending_bytes: 64 * 1024 * 1024,
        max_entry_bytes: 8 * 1024 * 1024,
        propose_timeout: Duration::from_secs(30),
    };
    // Peers reach this node's groups through the dispatcher once a transport serves it.
    let cluster = ClusterNode::new(
        config.node_id,
        store.clone(),
        env.transport.clone(),
        Dispatcher::new(),
        env.raft_tuning,
    );
    let factory = ReplicaFactory {
        store: store.clone(),
        node: config.node_id,
        cluster,
        settings,
    };
    let directory = Arc::new(Directory::default());
    let topics = TopicManager::start(
        factory,
        directory.clone(),
        config.advertised_address.clone(),
        config.offsets_partitions,
    )
    .await
    .map_err(StartError::Actors)?;
    let groups = GroupRouter::new(directory.clone(), env.clock.clone())
        .map_err(StartError::Actors)?
        .start();
    topics
        .send(AttachGroups(groups.clone()))
        .await
        .map_err(|_| StartError::Actors("the topic manager stopped while starting".into()))?;
    tracing::info!(node = %config.node_id, data_dir = %config.data_dir.display(), "node started");
    Ok(Broker {
        node_id: config.node_id,
        topics,
        groups,
        directory,
        store,
    })
}
