//! One simulated node: its disk, its clock, when its fsyncs complete, and its life: start,
//! crash (the node's I/O is fenced at that instant, then its actors are torn down), restart.

use crate::clock::SimClock;
use crate::net::{SimNetwork, SimStream};
use bytes::Bytes;
use gregor::server::{serve_connection, ServerConfig};
use gregor_actors::operations::{OperationSettings, VoterTarget};
use gregor_actors::{
    start_node_with, Broker, ClusterEnv, ClusterSettings, NodeConfig, NodeEnv, StartError,
    StorageSeam,
};
use gregor_cluster::membership::{GossipTuning, MembershipConfig};
use gregor_cluster::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    QuiescenceRequest, QuiescenceResponse, VoteRequest, VoteResponse,
};
use gregor_cluster::{Command, Dispatcher, PeerHandler, RaftTuning, RpcError};
use gregor_storage::{
    Crash, FlushPolicy, GroupId, ModelDisk, NodeId, Store, StoreOptions, SyncMode, SyncRunner,
};
use rand::rngs::SmallRng;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// What a node's store lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// The in-memory model disk: power loss, torn writes and failed fsyncs can strike.
    Model,
    /// Real fjall in a temporary directory: only process crashes (its page cache survives).
    Fjall,
}

/// How a crash treats the writes not yet fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// The process dies; the OS keeps everything written.
    Process,
    /// The power goes: of the batches written since the last fsync, the first `keep` survive.
    PowerLoss { keep: usize },
    /// As power loss, and the batch after the kept ones is half written (recovery drops it).
    TornWrite { keep: usize, torn_bytes: usize },
}

impl CrashKind {
    fn model(self) -> Crash {
        match self {
            CrashKind::Process => Crash::ProcessCrash,
            CrashKind::PowerLoss { keep } => Crash::PowerLoss { keep },
            CrashKind::TornWrite { keep, torn_bytes } => Crash::TornWrite { keep, torn_bytes },
        }
    }
}

impl fmt::Display for CrashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashKind::Process => write!(f, "process crash"),
            CrashKind::PowerLoss { keep } => write!(f, "power loss keeping {keep} unsynced"),
            CrashKind::TornWrite { keep, torn_bytes } => {
                write!(
                    f,
                    "power loss keeping {keep} unsynced, next torn at {torn_bytes} bytes"
                )
            }
        }
    }
}

/// A slow disk: every fsync takes `min_ms..=max_ms`, and now and then stalls `stall_ms` more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowDisk {
    pub min_ms: u64,
    pub max_ms: u64,
    pub stall_probability: f64,
    pub stall_ms: u64,
}

/// When a node's fsyncs complete; shared with its store's sync runner.
pub struct DiskLatency {
    rng: Mutex<SmallRng>,
    slow: Mutex<Option<SlowDisk>>,
}

impl DiskLatency {
    pub fn new(rng: SmallRng) -> DiskLatency {
        DiskLatency {
            rng: Mutex::new(rng),
            slow: Mutex::new(None),
        }
    }

    pub fn set(&self, slow: Option<SlowDisk>) {
        *self.slow.lock().unwrap_or_else(|p| p.into_inner()) = slow;
    }

    fn next_delay(&self) -> Duration {
        let slow = *self.slow.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slow) = slow else {
            return Duration::ZERO;
        };
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut ms = rng.gen_range(slow.min_ms..=slow.max_ms.max(slow.min_ms));
        if slow.stall_probability > 0.0 && rng.gen_bool(slow.stall_probability.min(1.0)) {
            ms += slow.stall_ms;
        }
        Duration::from_millis(ms)
    }
}

/// Everything that makes one node what it is, fixed for the run.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    pub id: NodeId,
    pub disk: DiskKind,
    /// Raft's election timeout is exactly this (async-raft draws in `min..min + 1`).
    pub election_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub offsets_partitions: u32,
    pub retention_check_ms: u64,
    /// `Always` in every real run; `Never` only in the self-test of a disk that acknowledges
    /// writes it did not make durable.
    pub flush: FlushPolicy,
    /// `None`: the node runs alone. `Some`: it is a member of a cluster of these nodes.
    pub cluster: Option<ClusterSetup>,
}

/// What a cluster member is told about its cluster.
#[derive(Debug, Clone)]
pub struct ClusterSetup {
    /// Every node of the cluster (this one included). The lowest founds the cluster on its
    /// first start; every other start joins through the others.
    pub members: Vec<NodeId>,
    /// Voters of the metadata group the metadata leader grows to.
    pub voters: usize,
    /// How long a node may be dead before the metadata leader moves its replicas away.
    pub dead_grace_ms: u64,
    /// How often the metadata leader looks for unbalanced leaders: seconds, not production's
    /// minutes, so that runs hand leaderships over (leadership transfers) amid their faults.
    pub leader_balance_ms: u64,
}

/// The peer (and gossip) address of node `id`.
pub fn peer_address(id: NodeId) -> SocketAddr {
    let [.., high, low] = (id.0 as u16).to_be_bytes();
    SocketAddr::from(([10, 0, high, low], 7000))
}

/// The address clients dial for node `id`.
pub fn client_address(id: NodeId) -> String {
    format!("n{}:9092", id.0)
}

/// The node a client address names.
pub fn node_of_address(address: &str) -> Option<NodeId> {
    let host = address.strip_prefix('n')?.split(':').next()?;
    host.parse().ok().map(NodeId)
}

enum Disk {
    Model(ModelDisk),
    Fjall(tempfile::TempDir),
}

struct Running {
    broker: Broker,
    store: Store,
    /// Set at the crash: the incarnation's pending fsyncs never complete.
    fence: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    stop_serving: watch::Sender<bool>,
}

pub struct SimNode {
    pub setup: NodeSetup,
    pub clock: Arc<SimClock>,
    pub latency: Arc<DiskLatency>,
    disk: Disk,
    running: RefCell<Option<Running>>,
    /// The actors of the last crashed incarnation, being torn down.
    teardown: RefCell<Option<JoinHandle<()>>>,
    /// The longest a crashed incarnation's teardown took (virtual time): a restart waits for
    /// it, so a long one moves the node's restart past the time its fault plan says.
    slowest_teardown: Rc<Cell<Duration>>,
    registered: Cell<bool>,
    /// Incarnations started so far.
    pub starts: Cell<u32>,
    /// An injected fsync failure may still be waiting for this node's next fsync (which may
    /// come while it starts, and then stop the start).
    pub fsync_fault_armed: Cell<bool>,
    /// Notified when a running incarnation stops itself after its storage failed; the cluster
    /// shares one among its nodes (see [`SimNode::stopped_itself`]).
    pub self_stops: Rc<Notify>,
}

/// Why a node did not start.
#[derive(Debug, Clone)]
pub struct StartFailure {
    pub message: String,
    /// It opened its store and started, but did not catch up with the cluster's metadata
    /// within [`STARTUP_BOUND`]: cut off from its peers, not a recovery bug.
    pub catching_up: bool,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How long a crashed incarnation may take to stop before its restart gives up waiting.
const TEARDOWN_BOUND: Duration = Duration::from_secs(60);
/// How long a cluster member may take to catch up with the metadata and start its replicas;
/// one that cannot (cut off from the metadata leader) fails its start and is tried again.
pub const STARTUP_BOUND: Duration = Duration::from_secs(20);

impl SimNode {
    pub fn new(setup: NodeSetup, clock: Arc<SimClock>, latency: DiskLatency) -> SimNode {
        let disk = match setup.disk {
            DiskKind::Model => Disk::Model(ModelDisk::new()),
            DiskKind::Fjall => Disk::Fjall(tempfile::tempdir().expect("a temporary directory")),
        };
        SimNode {
            setup,
            clock,
            latency: Arc::new(latency),
            disk,
            running: RefCell::new(None),
            teardown: RefCell::new(None),
            slowest_teardown: Rc::default(),
            registered: Cell::new(false),
            starts: Cell::new(0),
            fsync_fault_armed: Cell::new(false),
            self_stops: Rc::new(Notify::new()),
        }
    }

    pub fn id(&self) -> NodeId {
        self.setup.id
    }

    pub fn is_up(&self) -> bool {
        self.running.borrow().is_some()
    }

    pub fn broker(&self) -> Option<Broker> {
        self.running.borrow().as_ref().map(|r| r.broker.clone())
    }

    /// The running incarnation's store, to read replicas from.
    pub fn store(&self) -> Option<Store> {
        self.running.borrow().as_ref().map(|r| r.store.clone())
    }

    /// Whether the running incarnation's store refuses work after a failed write or fsync: the
    /// node no longer serves and waits for its process to be restarted.
    pub fn is_poisoned(&self) -> bool {
        self.store().is_some_and(|store| {
            matches!(
                store.partition_state(GroupId::METADATA),
                Err(gregor_storage::StorageError::Poisoned(_))
            )
        })
    }

    /// Why the running incarnation stopped serving, if its storage failed: it waits to be
    /// taken down as a crashed process is (see [`crate::faults`]).
    pub fn stopped_itself(&self) -> Option<String> {
        self.broker().and_then(|broker| broker.failure())
    }

    /// The model disk, for faults only a model disk can have.
    pub fn model_disk(&self) -> Option<&ModelDisk> {
        match &self.disk {
            Disk::Model(disk) => Some(disk),
            Disk::Fjall(_) => None,
        }
    }

    /// Starts an incarnation: opens the store on what the disk kept, starts the node's actors
    /// with the simulation's seams, and serves clients and peers through `net`.
    ///
    /// # Errors
    /// The store or the node could not start: after a crash that is a bug (what the disk kept
    /// must always be recoverable).
    pub async fn start(&self, net: &SimNetwork) -> Result<(), StartFailure> {
        assert!(!self.is_up(), "node {} is already running", self.id());
        self.wait_for_teardown().await;
        let fence = Arc::new(AtomicBool::new(false));
        let sync_mode = SyncMode::External(sync_runner(fence.clone(), self.latency.clone()));
        let options = StoreOptions {
            flush: self.setup.flush,
            sync_mode: sync_mode.clone(),
            cache_bytes: 4 << 20,
        };
        let opened = match &self.disk {
            Disk::Model(disk) => Store::open_model(disk, options),
            Disk::Fjall(dir) => Store::open(dir.path(), options),
        };
        let store = opened.map_err(|e| StartFailure {
            message: format!("node {} cannot open its store: {e:?}", self.id()),
            catching_up: false,
        })?;
        // A cluster member serves its peers from the start (gossip needs its socket, and the
        // metadata leader must reach it to bring it in); a node alone refuses them.
        let cluster = self.cluster_env(net);
        let handler: Arc<dyn PeerHandler> = match &cluster {
            Some(cluster) => cluster.dispatcher.clone(),
            None => Arc::new(NoDispatcher),
        };
        if self.registered.replace(true) {
            net.restart(self.id(), handler);
        } else {
            net.register(self.id(), handler);
        }
        let env = NodeEnv {
            clock: self.clock.clone(),
            transport: net.transport(self.id()),
            raft_tuning: self.raft_tuning(),
            sync_mode,
            storage: StorageSeam::Opened(store.clone()),
            cluster,
        };
        let broker = match start_node_with(self.node_config(), env).await {
            Ok(broker) => broker,
            Err(error) => {
                // Whatever the failed start left running must not touch the disk or the
                // network again.
                fence.store(true, Ordering::SeqCst);
                match &self.disk {
                    Disk::Model(disk) => disk.crash(Crash::ProcessCrash),
                    Disk::Fjall(_) => store.fence("the simulated node failed to start"),
                }
                net.crash(self.id());
                // The one failure that is not about the disk: a cluster member that could not
                // reach its peers in time to catch up with the metadata.
                let catching_up = matches!(error, StartError::CatchUpTimeout { .. });
                let message = format!("node {} cannot start: {error}", self.id());
                return Err(StartFailure {
                    message,
                    catching_up,
                });
            }
        };
        let failed = broker.when_failed();
        let self_stops = self.self_stops.clone();
        actix_rt::spawn(async move {
            if failed.await.is_some() {
                self_stops.notify_one();
            }
        });
        let (stop_serving, stopping) = watch::channel(false);
        let accept = actix_rt::spawn(accept_clients(
            net.listen(self.id()),
            broker.clone(),
            stopping,
        ));
        self.starts.set(self.starts.get() + 1);
        *self.running.borrow_mut() = Some(Running {
            broker,
            store,
            fence,
            accept,
            stop_serving,
        });
        Ok(())
    }

    /// Crashes the running incarnation: from this instant nothing it does reaches its disk or
    /// the network (pending fsyncs never complete, connections reset), then its actors are torn
    /// down in the background. `false` if it was not running.
    ///
    /// # Panics
    /// A crash that loses unsynced writes on a fjall disk, which cannot model it.
    pub fn crash(&self, kind: CrashKind, net: &SimNetwork) -> bool {
        let Some(running) = self.running.borrow_mut().take() else {
            return false;
        };
        running.fence.store(true, Ordering::SeqCst);
        match &self.disk {
            Disk::Model(disk) => disk.crash(kind.model()),
            Disk::Fjall(_) => {
                assert_eq!(
                    kind,
                    CrashKind::Process,
                    "fjall cannot lose unsynced writes"
                );
                running.store.fence("the simulated node crashed");
            }
        }
        net.crash(self.id());
        let _ = running.stop_serving.send(true);
        running.accept.abort();
        drop(running.store);
        let broker = running.broker;
        let slowest = self.slowest_teardown.clone();
        let teardown = actix_rt::spawn(async move {
            let started = tokio::time::Instant::now();
            let _ = tokio::time::timeout(TEARDOWN_BOUND, broker.shutdown()).await;
            slowest.set(slowest.get().max(started.elapsed()));
        });
        *self.teardown.borrow_mut() = Some(teardown);
        true
    }

    /// A store on this node's disk while the node is down (for the tampering self-test); the
    /// caller drops it before starting the node again.
    ///
    /// # Errors
    /// The store cannot be opened.
    pub async fn open_offline(&self) -> Result<Store, String> {
        assert!(!self.is_up(), "node {} is running", self.id());
        self.wait_for_teardown().await;
        let options = StoreOptions {
            flush: FlushPolicy::Always,
            sync_mode: SyncMode::Inline,
            cache_bytes: 4 << 20,
        };
        match &self.disk {
            Disk::Model(disk) => Store::open_model(disk, options),
            Disk::Fjall(dir) => Store::open(dir.path(), options),
        }
        .map_err(|e| format!("node {} store: {e}", self.id()))
    }

    /// The longest teardown of a crashed incarnation so far (one still running not counted).
    pub fn slowest_teardown(&self) -> Duration {
        self.slowest_teardown.get()
    }

    /// Waits (bounded) until the last crashed incarnation's actors have stopped.
    pub async fn wait_for_teardown(&self) {
        let teardown = self.teardown.borrow_mut().take();
        if let Some(teardown) = teardown {
            let _ = tokio::time::timeout(TEARDOWN_BOUND, teardown).await;
        }
    }

    /// The cluster seams of this incarnation: its dispatcher, and gossip over `net`.
    fn cluster_env(&self, net: &SimNetwork) -> Option<ClusterEnv> {
        let setup = self.setup.cluster.as_ref()?;
        let founding = self.starts.get() == 0 && setup.members.first() == Some(&self.id());
        let seeds = if founding {
            Vec::new()
        } else {
            setup
                .members
                .iter()
                .filter(|n| **n != self.id())
                .map(|n| peer_address(*n))
                .collect()
        };
        let membership = MembershipConfig {
            cluster_id: "simulation".into(),
            generation: u64::from(self.starts.get()) + 1,
            listen_addr: peer_address(self.id()),
            seeds,
            tuning: GossipTuning {
                gossip_interval: Duration::from_millis(200),
                initial_interval: Duration::from_millis(200),
                max_interval: Duration::from_millis(800),
                ..GossipTuning::default()
            },
        };
        Some(ClusterEnv {
            dispatcher: Dispatcher::new(),
            gossip: Arc::new(net.gossip_transport(self.id())),
            membership,
            peer_addr: peer_address(self.id()),
            // The simulated network routes by node id: no address book to follow.
            peer_addresses: None,
        })
    }

    fn raft_tuning(&self) -> RaftTuning {
        RaftTuning {
            election_timeout_min_ms: self.setup.election_timeout_ms,
            election_timeout_max_ms: self.setup.election_timeout_ms + 1,
            heartbeat_interval_ms: self.setup.heartbeat_ms,
            ..RaftTuning::default()
        }
    }

    fn node_config(&self) -> NodeConfig {
        let data_dir = match &self.disk {
            Disk::Fjall(dir) => dir.path().to_path_buf(),
            Disk::Model(_) => format!("/simulated/node-{}", self.id()).into(),
        };
        let mut config = NodeConfig::single_node(&data_dir);
        config.node_id = self.id();
        config.advertised_address = client_address(self.id());
        config.flush = self.setup.flush;
        config.offsets_partitions = self.setup.offsets_partitions;
        config.retention_check_interval_ms = self.setup.retention_check_ms;
        config.cache_bytes = 4 << 20;
        if let Some(cluster) = &self.setup.cluster {
            config.cluster = ClusterSettings {
                operations: OperationSettings {
                    dead_grace: Duration::from_millis(cluster.dead_grace_ms),
                    leader_balance_interval: Duration::from_millis(cluster.leader_balance_ms),
                    voters: VoterTarget::Count(cluster.voters),
                    offsets_partitions: self.setup.offsets_partitions,
                    offsets_replication_factor: 3,
                    ..OperationSettings::default()
                },
                operations_interval: Duration::from_millis(500),
                startup_timeout: STARTUP_BOUND,
                hint_interval: Duration::from_millis(250),
                full_hint_every: 8,
                ..ClusterSettings::default()
            };
        }
        config
    }
}

/// Completes each fsync of one incarnation after the disk's current latency, unless the
/// incarnation crashed first (then never: the requester sees its callback dropped).
fn sync_runner(fence: Arc<AtomicBool>, latency: Arc<DiskLatency>) -> SyncRunner {
    SyncRunner::new(move |job| {
        if fence.load(Ordering::SeqCst) {
            return;
        }
        let delay = latency.next_delay();
        if delay.is_zero() {
            job.run();
            return;
        }
        let fence = fence.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !fence.load(Ordering::SeqCst) {
                job.run();
            }
        });
    })
}

/// Serves each client connection the network hands this node, as its TCP listener would.
async fn accept_clients(
    mut accepted: mpsc::UnboundedReceiver<SimStream>,
    broker: Broker,
    stopping: watch::Receiver<bool>,
) {
    while let Some(stream) = accepted.recv().await {
        let config = ServerConfig::default();
        actix_rt::spawn(serve_connection(
            stream,
            broker.clone(),
            config,
            stopping.clone(),
        ));
    }
}

/// A node without an inbound peer path (the single-node foundation): every request fails,
/// after a delay, as async-raft needs.
struct NoDispatcher;

const REFUSAL_DELAY: Duration = Duration::from_millis(50);

async fn refuse<T>() -> Result<T, RpcError> {
    tokio::time::sleep(REFUSAL_DELAY).await;
    Err(RpcError::Remote("this node serves no peer requests".into()))
}

#[async_trait::async_trait]
impl PeerHandler for NoDispatcher {
    async fn append_entries(
        &self,
        _from: NodeId,
        _group: GroupId,
        _rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        refuse().await
    }
    async fn vote(
        &self,
        _from: NodeId,
        _group: GroupId,
        _rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        refuse().await
    }
    async fn install_snapshot(
        &self,
        _from: NodeId,
        _group: GroupId,
        _rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        refuse().await
    }
    async fn node_message(&self, _from: NodeId, _message: Bytes) -> Result<Bytes, RpcError> {
        refuse().await
    }
    async fn quiescence(
        &self,
        _from: NodeId,
        _request: QuiescenceRequest,
    ) -> Result<QuiescenceResponse, RpcError> {
        refuse().await
    }
    async fn campaign(&self, _from: NodeId, _group: GroupId, _term: u64) -> Result<bool, RpcError> {
        refuse().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_name_their_node() {
        assert_eq!(node_of_address(&client_address(NodeId(3))), Some(NodeId(3)));
        assert_eq!(node_of_address("localhost:9092"), None);
    }
}
