//! A cluster of nodes in one process: real actors, Raft groups, fjall stores in temporary
//! directories and chitchat gossip, over an in-process network, on a single-threaded actix
//! System with paused time.

#![allow(dead_code)]

pub mod net;

use chitchat::transport::ChannelTransport;
use gregor_actors::api::{ApiError, Request, Response};
use gregor_actors::operations::{OperationSettings, VoterTarget};
use gregor_actors::{start_node_with, Broker, ClusterEnv, ClusterSettings, NodeConfig, NodeEnv};
use gregor_cluster::membership::{GossipTuning, MembershipConfig};
use gregor_cluster::{Dispatcher, RaftTuning};
use gregor_storage::{FlushPolicy, NodeId, SyncMode};
use net::LocalNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn run<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(test());
}

/// Waits until `done` holds, checking every 100 ms of (virtual) time, for at most `within`.
///
/// # Panics
/// When the deadline passes first, saying what was awaited.
pub async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn peer_addr(node: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, node.0 as u8], 7000))
}

pub struct TestCluster {
    pub net: Arc<LocalNet>,
    gossip: ChannelTransport,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    generations: BTreeMap<NodeId, u64>,
    pub nodes: BTreeMap<NodeId, Broker>,
    pub settings: ClusterSettings,
}

impl TestCluster {
    pub fn new(dead_grace: Duration) -> TestCluster {
        let operations = OperationSettings {
            dead_grace,
            voters: VoterTarget::Count(3),
            offsets_partitions: 3,
            offsets_replication_factor: 3,
            ..OperationSettings::default()
        };
        TestCluster {
            net: LocalNet::new(),
            gossip: ChannelTransport::default(),
            dirs: BTreeMap::new(),
            generations: BTreeMap::new(),
            nodes: BTreeMap::new(),
            settings: ClusterSettings {
                operations,
                operations_interval: Duration::from_millis(200),
                startup_timeout: Duration::from_secs(120),
                hint_interval: Duration::from_millis(200),
                full_hint_every: 5,
                ..ClusterSettings::default()
            },
        }
    }

    /// Starts node `id`, joining through node 1 unless it is node 1 starting the cluster.
    pub async fn start(&mut self, id: u64) -> Result<(), gregor_actors::StartError> {
        let node = NodeId(id);
        let dir = self
            .dirs
            .entry(node)
            .or_insert_with(|| tempfile::tempdir().unwrap());
        let mut config = NodeConfig::single_node(dir.path());
        config.node_id = node;
        config.advertised_address = format!("node-{id}:9092");
        config.offsets_partitions = 3;
        config.flush = FlushPolicy::Always;
        config.cluster = self.settings.clone();
        let generation = self.generations.entry(node).or_insert(0);
        *generation += 1;
        let seeds = if id == 1 {
            vec![]
        } else {
            vec![peer_addr(NodeId(1))]
        };
        let membership = MembershipConfig {
            cluster_id: "test".into(),
            generation: *generation,
            listen_addr: peer_addr(node),
            seeds,
            tuning: GossipTuning {
                gossip_interval: Duration::from_millis(100),
                initial_interval: Duration::from_millis(100),
                max_interval: Duration::from_millis(400),
                ..GossipTuning::default()
            },
        };
        let dispatcher = Dispatcher::new();
        self.net.attach(node, dispatcher.clone());
        self.net.heal(node);
        let env = NodeEnv {
            transport: self.net.transport(node),
            raft_tuning: RaftTuning::default(),
            sync_mode: SyncMode::Inline,
            cluster: Some(ClusterEnv {
                dispatcher,
                gossip: Arc::new(self.gossip.clone()),
                membership,
                peer_addr: peer_addr(node),
                peer_addresses: None,
            }),
            ..NodeEnv::production()
        };
        let broker = start_node_with(config, env).await?;
        self.nodes.insert(node, broker);
        Ok(())
    }

    /// Stops node `id` cleanly; its data stays for a restart.
    pub async fn stop(&mut self, id: u64) {
        let node = NodeId(id);
        self.net.cut(node);
        if let Some(broker) = self.nodes.remove(&node) {
            broker.shutdown().await;
        }
        self.net.detach(node);
    }

    pub fn node(&self, id: u64) -> &Broker {
        &self.nodes[&NodeId(id)]
    }

    pub async fn request(
        &self,
        id: u64,
        request: impl Into<Request>,
    ) -> Result<Response, ApiError> {
        self.node(id).handle(request.into()).await
    }

    pub fn dir(&self, id: u64) -> &std::path::Path {
        self.dirs[&NodeId(id)].path()
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().map(|n| n.0).collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}
