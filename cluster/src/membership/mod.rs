//! Membership by gossip (chitchat): which nodes are alive, and what each publishes about itself
//! ([`NodeInfo`]). Liveness is chitchat's phi-accrual failure detector, tuned by
//! [`GossipTuning`]. Gossip carries hints only; the metadata Raft group owns every fact that
//! must be agreed on, since two nodes can see different gossip at the same moment.
//!
//! The datagram seam is chitchat's own [`GossipTransport`]: production passes
//! [`UdpTransport`] bound on the peer port (the node transport's TCP listener shares the port
//! number), the simulation its in-memory network.

mod info;

pub use chitchat::transport::{Transport as GossipTransport, UdpTransport};
pub use info::{DiskUsage, NodeInfo, KEY_PREFIX};

use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use gregor_storage::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

/// Gossip and failure-detector timing.
///
/// chitchat declares a node dead when `phi = time since its last heartbeat / mean heartbeat
/// interval` exceeds `phi_threshold`, checked once per gossip round. The mean is smoothed with
/// `initial_interval` as a prior (weight 5) and ignores intervals above `max_interval`, so it
/// never exceeds `max(initial_interval, max_interval)`: [`GossipTuning::detection_bound`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GossipTuning {
    /// How often a node gossips (and so beats its heartbeat). Default 500 ms.
    pub gossip_interval: Duration,
    /// Default 8.0 (chitchat's and Cassandra's). Lower detects sooner, with more false alarms.
    pub phi_threshold: f64,
    /// The heartbeat interval assumed before any is observed. Default: the gossip interval.
    pub initial_interval: Duration,
    /// Longer gaps between heartbeats are left out of the mean (a node back from a pause does
    /// not make the detector lenient for ever). Default 4 gossip intervals.
    pub max_interval: Duration,
    /// How long a dead node's state is kept (and gossiped for half of it) before it is
    /// forgotten. Default 1 hour; re-placing a dead node's replicas is the metadata leader's
    /// decision with its own grace period, not this one.
    pub dead_node_grace_period: Duration,
}

impl Default for GossipTuning {
    fn default() -> Self {
        let gossip_interval = Duration::from_millis(500);
        GossipTuning {
            gossip_interval,
            phi_threshold: 8.0,
            initial_interval: gossip_interval,
            max_interval: gossip_interval * 4,
            dead_node_grace_period: Duration::from_secs(3600),
        }
    }
}

impl GossipTuning {
    /// The longest a node can stay live in others' views after it stops: phi crosses the
    /// threshold at most `phi_threshold * max(initial_interval, max_interval)` after its last
    /// heartbeat, and the next gossip round notices.
    pub fn detection_bound(&self) -> Duration {
        let mean_max = self.initial_interval.max(self.max_interval);
        mean_max.mul_f64(self.phi_threshold) + self.gossip_interval
    }

    fn failure_detector(&self) -> FailureDetectorConfig {
        FailureDetectorConfig {
            phi_threshold: self.phi_threshold,
            sampling_window_size: 1000,
            max_interval: self.max_interval,
            initial_interval: self.initial_interval,
            dead_node_grace_period: self.dead_node_grace_period,
        }
    }
}

/// How to start this node's membership.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Nodes of other clusters are ignored (chitchat answers their gossip with `BadCluster`).
    pub cluster_id: String,
    /// Bumped by the caller on every restart, so peers tell the new incarnation from the old;
    /// the caller supplies it (a persisted counter or the start time through the clock seam)
    /// so the simulation stays deterministic.
    pub generation: u64,
    /// Where to bind the gossip socket; usually the peer address itself.
    pub listen_addr: SocketAddr,
    /// Peer addresses of nodes to join through (`--join`); empty for a node founding a cluster.
    pub seeds: Vec<SocketAddr>,
    pub tuning: GossipTuning,
}

/// A node as gossip shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Which incarnation of the node this is.
    pub generation: u64,
    pub info: NodeInfo,
}

/// Who is alive and who was seen die. A node shows up here only once its published info is
/// complete; a restarted node counts under its newest live generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipView {
    /// Includes this node.
    pub live: BTreeMap<NodeId, Member>,
    /// Nodes the failure detector declared dead and that have no live generation, with the
    /// info they last published.
    pub dead: BTreeMap<NodeId, Member>,
}

/// This node's membership: its chitchat instance and the view derived from it.
pub struct Membership {
    node: NodeId,
    handle: ChitchatHandle,
    chitchat: Arc<Mutex<Chitchat>>,
    view: watch::Sender<MembershipView>,
    refresher: JoinHandle<()>,
}

impl Membership {
    /// Starts gossiping `info` under `config`, over `transport`.
    ///
    /// # Errors
    /// The transport could not bind `config.listen_addr`.
    pub async fn start(
        config: MembershipConfig,
        info: NodeInfo,
        transport: &dyn GossipTransport,
    ) -> anyhow::Result<Membership> {
        let node = info.node;
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(node.0.to_string(), config.generation, info.peer_addr),
            cluster_id: config.cluster_id,
            gossip_interval: config.tuning.gossip_interval,
            listen_addr: config.listen_addr,
            seed_nodes: config.seeds.iter().map(SocketAddr::to_string).collect(),
            failure_detector_config: config.tuning.failure_detector(),
            marked_for_deletion_grace_period: config.tuning.dead_node_grace_period,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // V1 compresses digests but must wait until every node decodes it.
            protocol_version: ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(chitchat_config, info.to_key_values(), transport).await?;
        let chitchat = handle.chitchat();
        let (view, _) = watch::channel(MembershipView::default());
        let refresher = tokio::spawn(refresh_view(
            chitchat.clone(),
            view.clone(),
            config.tuning.gossip_interval,
        ));
        let membership = Membership {
            node,
            handle,
            chitchat,
            view,
            refresher,
        };
        membership.refresh().await;
        Ok(membership)
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The live and dead members; changes whenever a node joins, dies, or changes its info.
    pub fn watch(&self) -> watch::Receiver<MembershipView> {
        self.view.subscribe()
    }

    pub async fn set_ready(&self, ready: bool) {
        self.publish(info::ready_pairs(ready)).await;
    }

    /// How many replicas this node hosts and how many of them it leads.
    pub async fn set_load(&self, replicas: u32, leaders: u32) {
        self.publish(info::load_pairs(replicas, leaders)).await;
    }

    pub async fn set_disk(&self, disk: DiskUsage) {
        self.publish(info::disk_pairs(disk)).await;
    }

    /// Stops gossiping; peers declare this node dead once the detector notices.
    ///
    /// # Errors
    /// The gossip task had already failed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.refresher.abort();
        self.handle.initiate_shutdown()?;
        let stopped = self.handle.termination_watcher();
        drop(self);
        stopped.await
    }

    async fn publish(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        {
            let mut chitchat = self.chitchat.lock().await;
            let state = chitchat.self_node_state();
            for (key, value) in pairs {
                state.set(key, value);
            }
        }
        self.refresh().await;
    }

    async fn refresh(&self) {
        publish_view(&self.chitchat, &self.view).await;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Dropping the chitchat handle stops gossip; the refresher holds no handle to notice.
        self.refresher.abort();
    }
}

/// Keeps the view current: chitchat signals joins, deaths and info changes of live nodes;
/// the periodic pass catches the rest (a dead node forgotten after its grace period).
async fn refresh_view(
    chitchat: Arc<Mutex<Chitchat>>,
    view: watch::Sender<MembershipView>,
    interval: Duration,
) {
    let mut live_changes = chitchat.lock().await.live_nodes_watcher();
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            biased;
            changed = live_changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ticks.tick() => {}
        }
        publish_view(&chitchat, &view).await;
    }
}

async fn publish_view(chitchat: &Mutex<Chitchat>, view: &watch::Sender<MembershipView>) {
    let current = build_view(&*chitchat.lock().await);
    view.send_if_modified(|published| {
        let changed = *published != current;
        if changed {
            *published = current;
        }
        changed
    });
}

fn build_view(chitchat: &Chitchat) -> MembershipView {
    let mut view = MembershipView::default();
    for id in chitchat.live_nodes() {
        if let Some(member) = member_of(chitchat, id) {
            insert_newest(&mut view.live, member);
        }
    }
    for id in chitchat.dead_nodes() {
        if let Some(member) = member_of(chitchat, id) {
            if !view.live.contains_key(&member.info.node) {
                insert_newest(&mut view.dead, member);
            }
        }
    }
    view
}

fn member_of(chitchat: &Chitchat, id: &ChitchatId) -> Option<Member> {
    let state = chitchat.node_state(id)?;
    let info = NodeInfo::from_lookup(|key| state.get(key))?;
    if info.node.0.to_string() != *id.node_id {
        tracing::warn!(chitchat_id = ?id, node = %info.node, "gossip node id disagrees with its published id");
        return None;
    }
    Some(Member {
        generation: id.generation_id,
        info,
    })
}

fn insert_newest(members: &mut BTreeMap<NodeId, Member>, member: Member) {
    let node = member.info.node;
    let newer = members
        .get(&node)
        .is_none_or(|known| known.generation < member.generation);
    if newer {
        members.insert(node, member);
    }
}
