//! The simulated network: every simulated node's peer [`Transport`](gregor_cluster::Transport)
//! and chitchat transport, in memory, on tokio's paused clock, with faults set by the
//! simulation at any time.
//!
//! Deterministic: every random choice (loss, duplication, delay) is drawn from the network's own
//! generator, seeded from the run seed with a salt of its own, in the order the sends happen,
//! and a single-threaded runtime makes that order the same on every run. Requests and replies
//! are encoded and decoded with the production codec on the way, as the TCP transport does.
//!
//! Faults per directed link ([`LinkFaults`]): up or down (one-way partitions), loss,
//! duplication, delay with jitter (hence reordering) and spikes. Helpers cut whole partitions,
//! isolate a node, crash and restart one. Whatever the fault, a request fails only after its
//! caller has waited (the RPC timeout, or a short delay for a crashed sender), because
//! async-raft spins on an immediate error.

mod faults;
mod gossip;
mod rpc;
mod stream;

pub use faults::{Delay, DelaySpike, LinkFaults};
pub use gossip::SimGossipTransport;
pub use rpc::SimTransport;
pub use stream::SimStream;

use faults::Fate;
use gregor_cluster::{PeerHandler, RpcKind};
use gregor_storage::{GroupId, NodeId};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Salt of the network's random stream, so other components drawing from the same run seed do
/// not shift its draws (and the other way round).
const NET_SALT: u64 = 0x6e65_745f_7361_6c74;

#[derive(Debug, Clone, Copy)]
pub struct SimNetConfig {
    /// How long a request waits for its reply before failing with `Timeout`; also how long a
    /// request over a down link or a lost one takes to fail.
    pub rpc_timeout: Duration,
    /// The least time a failed call takes, whatever failed (a crashed sender's transport, an
    /// error the handler answered at once): async-raft spins on an immediate error.
    pub failure_delay: Duration,
    /// The faults every link starts with.
    pub default_link: LinkFaults,
}

impl Default for SimNetConfig {
    fn default() -> Self {
        SimNetConfig {
            rpc_timeout: Duration::from_millis(500),
            failure_delay: Duration::from_millis(50),
            default_link: LinkFaults::default(),
        }
    }
}

/// Counts of messages, RPC requests and replies apart from gossip datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub sent: u64,
    /// Lost, cut by a down link, or vanished with a crashed node.
    pub dropped: u64,
    pub duplicated: u64,
    pub delivered: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rpc: NetCounters,
    pub gossip: NetCounters,
    /// Client connections: connects and stream chunks.
    pub client: NetCounters,
}

/// What a traced message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMessage {
    Request {
        id: u64,
        kind: RpcKind,
        group: Option<GroupId>,
    },
    Reply {
        id: u64,
    },
    Gossip {
        bytes: usize,
    },
    /// A client connecting to a node.
    Connect {
        conn: u64,
    },
    /// A chunk of a client connection's bytes (0 bytes: the connection itself, when reset).
    Stream {
        conn: u64,
        bytes: usize,
    },
}

/// What happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetOutcome {
    Sent,
    /// The link was down.
    Cut,
    Lost,
    /// A second copy is on its way.
    Duplicated,
    Delivered,
    /// The sender or the receiver crashed while it was in flight, or nobody listens there.
    Vanished,
    /// A duplicate request's reply, which nobody waits for.
    ReplyDiscarded,
    /// A client connection was torn down (its link went down, or an end crashed).
    Reset,
}

/// One entry of the network's trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetEvent {
    /// Virtual milliseconds since the network was created.
    pub at_ms: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub message: NetMessage,
    pub outcome: NetOutcome,
}

/// Called with every event, under the network's lock: it must not call back into the network.
pub type EventHook = Box<dyn FnMut(&NetEvent) + Send>;

/// The simulated network; cheap to clone (every clone is the same network).
#[derive(Clone)]
pub struct SimNetwork {
    shared: Arc<Shared>,
}

struct Shared {
    config: SimNetConfig,
    state: Mutex<NetState>,
}

struct NodeSlot {
    handler: Option<Arc<dyn PeerHandler>>,
    /// Bumped by every crash: transports and sockets made before it are dead.
    incarnation: u64,
}

struct GossipSocket {
    node: NodeId,
    /// Tells a socket apart from a later one opened on the same address.
    socket_id: u64,
    inbox: mpsc::UnboundedSender<(SocketAddr, chitchat::ChitchatEnvelope, usize)>,
}

struct NetState {
    rng: SmallRng,
    origin: Instant,
    default_link: LinkFaults,
    links: BTreeMap<(NodeId, NodeId), LinkFaults>,
    nodes: BTreeMap<NodeId, NodeSlot>,
    gossip_sockets: BTreeMap<SocketAddr, GossipSocket>,
    listeners: BTreeMap<NodeId, stream::Listener>,
    connections: BTreeMap<u64, stream::Connection>,
    next_message_id: u64,
    next_socket_id: u64,
    stats: NetStats,
    hook: Option<EventHook>,
}

/// Which counters an event moves.
#[derive(Clone, Copy)]
enum Channel {
    Rpc,
    Gossip,
    Client,
}

impl SimNetwork {
    /// A network whose random draws follow `run_seed` (salted, see [`NET_SALT`]). Create it
    /// inside the runtime whose clock it uses.
    pub fn new(run_seed: u64, config: SimNetConfig) -> SimNetwork {
        let state = NetState {
            rng: SmallRng::seed_from_u64(run_seed ^ NET_SALT),
            origin: Instant::now(),
            default_link: config.default_link,
            links: BTreeMap::new(),
            nodes: BTreeMap::new(),
            gossip_sockets: BTreeMap::new(),
            listeners: BTreeMap::new(),
            connections: BTreeMap::new(),
            next_message_id: 0,
            next_socket_id: 0,
            stats: NetStats::default(),
            hook: None,
        };
        SimNetwork {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state),
            }),
        }
    }

    pub fn config(&self) -> SimNetConfig {
        self.shared.config
    }

    /// Adds a node whose inbound requests go to `handler`.
    pub fn register(&self, node: NodeId, handler: Arc<dyn PeerHandler>) {
        let mut state = self.lock();
        let incarnation = state.nodes.get(&node).map_or(0, |slot| slot.incarnation);
        state.nodes.insert(
            node,
            NodeSlot {
                handler: Some(handler),
                incarnation,
            },
        );
    }

    /// The peer transport `node` sends with. A transport taken before a crash of `node` stays
    /// dead after its restart: take a new one.
    pub fn transport(&self, node: NodeId) -> Arc<SimTransport> {
        let incarnation = self.lock().incarnation(node);
        Arc::new(SimTransport::new(self.clone(), node, incarnation))
    }

    /// The datagram transport `node`'s chitchat runs on.
    pub fn gossip_transport(&self, node: NodeId) -> SimGossipTransport {
        SimGossipTransport::new(self.clone(), node)
    }

    /// Replaces the faults of the link from `from` to `to` (one direction).
    pub fn set_link(&self, from: NodeId, to: NodeId, faults: LinkFaults) {
        self.lock().links.insert((from, to), faults);
    }

    /// The faults of the link from `from` to `to` right now.
    pub fn link(&self, from: NodeId, to: NodeId) -> LinkFaults {
        self.lock().link(from, to)
    }

    /// Applies `change` to every link between registered nodes, both directions, and to the
    /// default for links not yet used.
    pub fn update_all_links(&self, change: impl Fn(&mut LinkFaults)) {
        let mut state = self.lock();
        change(&mut state.default_link);
        for (from, to) in state.node_pairs() {
            let mut faults = state.link(from, to);
            change(&mut faults);
            state.links.insert((from, to), faults);
        }
    }

    /// Cuts every link between nodes of different groups, both ways, and restores the links
    /// inside each group. A registered node named in no group is a group of its own.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut state = self.lock();
        let mut side: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (index, group) in groups.iter().enumerate() {
            for node in group.iter() {
                side.insert(*node, index);
            }
        }
        let unnamed: Vec<NodeId> = state
            .nodes
            .keys()
            .filter(|node| !side.contains_key(node))
            .copied()
            .collect();
        for (offset, node) in unnamed.into_iter().enumerate() {
            side.insert(node, groups.len() + offset);
        }
        for (from, to) in state.node_pairs() {
            let up = side.get(&from) == side.get(&to);
            state.set_up(from, to, up);
        }
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&self, node: NodeId) {
        let mut state = self.lock();
        for (from, to) in state.node_pairs() {
            if from == node || to == node {
                state.set_up(from, to, false);
            }
        }
    }

    /// Cuts the link from `from` to `to` only: `to` still reaches `from`.
    pub fn isolate_one_way(&self, from: NodeId, to: NodeId) {
        self.lock().set_up(from, to, false);
    }

    /// Brings every link back up; loss, duplication and delays stay as they are.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.default_link.up = true;
        for faults in state.links.values_mut() {
            faults.up = true;
        }
    }

    /// `node` stops: its in-flight messages vanish, its transports and gossip sockets die (calls
    /// fail after [`SimNetConfig::failure_delay`]) and nothing reaches it until
    /// [`SimNetwork::restart`].
    pub fn crash(&self, node: NodeId) {
        let mut state = self.lock();
        let slot = state
            .nodes
            .get_mut(&node)
            .expect("crash of a node the network does not know");
        slot.handler = None;
        slot.incarnation += 1;
        state.gossip_sockets.retain(|_, socket| socket.node != node);
        state.reset_connections_of(node);
    }

    /// `node` is back, serving inbound requests with `handler`. Take new transports for it.
    pub fn restart(&self, node: NodeId, handler: Arc<dyn PeerHandler>) {
        let mut state = self.lock();
        let slot = state
            .nodes
            .get_mut(&node)
            .expect("restart of a node the network does not know");
        assert!(
            slot.handler.is_none(),
            "restart of node {node}, which is running"
        );
        slot.handler = Some(handler);
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Every event from now on goes to `hook` (the simulation's trace).
    pub fn set_event_hook(&self, hook: EventHook) {
        self.lock().hook = Some(hook);
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // A panic elsewhere in the simulation must not hide behind a poisoned lock here.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl NetState {
    fn link(&self, from: NodeId, to: NodeId) -> LinkFaults {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    fn set_up(&mut self, from: NodeId, to: NodeId, up: bool) {
        let mut faults = self.link(from, to);
        faults.up = up;
        self.links.insert((from, to), faults);
    }

    /// Every ordered pair of distinct registered nodes.
    fn node_pairs(&self) -> Vec<(NodeId, NodeId)> {
        let nodes: BTreeSet<NodeId> = self.nodes.keys().copied().collect();
        let mut pairs = Vec::new();
        for from in &nodes {
            for to in &nodes {
                if from != to {
                    pairs.push((*from, *to));
                }
            }
        }
        pairs
    }

    fn incarnation(&self, node: NodeId) -> u64 {
        self.nodes.get(&node).map_or(0, |slot| slot.incarnation)
    }

    /// Whether `node` runs the incarnation a transport or a message was made by.
    fn is_running(&self, node: NodeId, incarnation: u64) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|slot| slot.incarnation == incarnation && slot.handler.is_some())
    }

    fn running_incarnation(&self, node: NodeId) -> Option<u64> {
        self.nodes
            .get(&node)
            .filter(|slot| slot.handler.is_some())
            .map(|slot| slot.incarnation)
    }

    fn next_id(&mut self) -> u64 {
        self.next_message_id += 1;
        self.next_message_id
    }

    /// Draws the fate of a message sent now and records it. Gossip datagrams cannot be
    /// duplicated (see the gossip module); the draw is made all the same, so switching gossip
    /// duplication on later would not shift the run's other draws.
    fn send(&mut self, channel: Channel, from: NodeId, to: NodeId, message: NetMessage) -> Fate {
        let mut fate = self.link(from, to).draw(&mut self.rng);
        if let (
            Channel::Gossip,
            Fate::Delivered {
                duplicate_delay, ..
            },
        ) = (channel, &mut fate)
        {
            *duplicate_delay = None;
        }
        self.record(channel, from, to, message, NetOutcome::Sent);
        match fate {
            Fate::Cut => self.record(channel, from, to, message, NetOutcome::Cut),
            Fate::Lost => self.record(channel, from, to, message, NetOutcome::Lost),
            Fate::Delivered {
                duplicate_delay: Some(_),
                ..
            } => self.record(channel, from, to, message, NetOutcome::Duplicated),
            Fate::Delivered { .. } => {}
        }
        fate
    }

    fn record(
        &mut self,
        channel: Channel,
        from: NodeId,
        to: NodeId,
        message: NetMessage,
        outcome: NetOutcome,
    ) {
        let counters = match channel {
            Channel::Rpc => &mut self.stats.rpc,
            Channel::Gossip => &mut self.stats.gossip,
            Channel::Client => &mut self.stats.client,
        };
        match outcome {
            NetOutcome::Sent => counters.sent += 1,
            NetOutcome::Cut | NetOutcome::Lost | NetOutcome::Vanished | NetOutcome::Reset => {
                counters.dropped += 1
            }
            NetOutcome::Duplicated => counters.duplicated += 1,
            NetOutcome::Delivered => counters.delivered += 1,
            NetOutcome::ReplyDiscarded => {}
        }
        if let Some(hook) = self.hook.as_mut() {
            let at_ms = Instant::now().duration_since(self.origin).as_millis() as u64;
            hook(&NetEvent {
                at_ms,
                from,
                to,
                message,
                outcome,
            });
        }
    }
}
