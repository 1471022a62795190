//! The simulated cluster: its nodes, the network between them and their clients, and the
//! trace every component writes to.

use crate::net::{NetEvent, NetMessage, SimNetConfig, SimNetwork};
use crate::node::{client_address, node_of_address, SimNode};
use crate::trace::SharedTrace;
use gregor_client::{BrokerStream, ClientConfig, Connector};
use gregor_cluster::{GroupRole, RaftGroup};
use gregor_storage::{GroupId, NodeId, PartitionId};
use rand::rngs::SmallRng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Network ids of clients start here, apart from nodes.
pub const FIRST_CLIENT_ID: u64 = 1001;

pub struct SimCluster {
    pub seed: u64,
    pub net: SimNetwork,
    pub trace: SharedTrace,
    nodes: BTreeMap<NodeId, Rc<SimNode>>,
    next_client: Cell<u64>,
    /// Choices faults make when they strike (which group's leader steps down).
    pub fault_rng: RefCell<SmallRng>,
    /// Notified whenever a node stops itself after its storage failed.
    pub self_stops: Rc<Notify>,
}

impl SimCluster {
    /// A cluster of `nodes` (not yet started) on a network seeded from `seed`, tracing into
    /// `trace`. Create it inside the simulation's runtime.
    pub fn new(
        seed: u64,
        nodes: Vec<SimNode>,
        net_config: SimNetConfig,
        trace: SharedTrace,
    ) -> SimCluster {
        let net = SimNetwork::new(seed, net_config);
        let hook_trace = trace.clone();
        let self_stops = Rc::new(Notify::new());
        net.set_event_hook(Box::new(move |event| trace_net_event(&hook_trace, event)));
        SimCluster {
            seed,
            net,
            trace,
            nodes: nodes
                .into_iter()
                .map(|mut n| {
                    n.self_stops = self_stops.clone();
                    (n.id(), Rc::new(n))
                })
                .collect(),
            self_stops,
            next_client: Cell::new(FIRST_CLIENT_ID),
            fault_rng: RefCell::new(crate::rng::stream(seed, "fault-choices")),
        }
    }

    /// The Raft groups running on node `id` now: its metadata group and every partition
    /// replica the applied metadata names that runs there. None while the node is down.
    pub fn groups_on(&self, id: NodeId) -> Vec<Arc<RaftGroup>> {
        let Some(broker) = self.node(id).broker() else {
            return Vec::new();
        };
        let view = broker.view();
        let mut groups = vec![broker.metadata_group()];
        for topic in view.topics() {
            for partition in 0..topic.assignments.len() {
                let group = topic.record.group_of(PartitionId(partition as u32));
                groups.extend(broker.replica_group(group));
            }
        }
        groups
    }

    /// Every group led by a running node, with its leader, in node and group order.
    pub fn leaderships(&self) -> Vec<(NodeId, Arc<RaftGroup>)> {
        let mut led = Vec::new();
        for id in self.up_ids() {
            for group in self.groups_on(id) {
                if group.role() == GroupRole::Leader {
                    led.push((id, group));
                }
            }
        }
        led
    }

    /// The running node that leads the metadata group in the newest term, if any.
    pub fn metadata_leader(&self) -> Option<NodeId> {
        self.leaderships()
            .into_iter()
            .filter(|(_, group)| group.id() == GroupId::METADATA)
            .max_by_key(|(_, group)| group.term())
            .map(|(node, _)| node)
    }

    pub fn node(&self, id: NodeId) -> &Rc<SimNode> {
        &self.nodes[&id]
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Rc<SimNode>> {
        self.nodes.values()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id())
            .collect()
    }

    /// Starts every node that is down; the errors of those that could not start.
    pub async fn start_all(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for node in self.nodes.values() {
            if !node.is_up() {
                self.trace.event(format!("start node {}", node.id()));
                if let Err(error) = node.start(&self.net).await {
                    self.trace
                        .event(format!("node {} failed to start: {error}", node.id()));
                    errors.push(error.to_string());
                }
            }
        }
        errors
    }

    /// Every node's client address, comma separated.
    pub fn bootstrap(&self) -> String {
        let addresses: Vec<String> = self.nodes.keys().map(|id| client_address(*id)).collect();
        addresses.join(",")
    }

    /// The network ids of every client made so far.
    pub fn issued_client_ids(&self) -> std::ops::Range<u64> {
        FIRST_CLIENT_ID..self.next_client.get()
    }

    /// A new client's network id.
    pub fn new_client_id(&self) -> NodeId {
        let id = self.next_client.get();
        self.next_client.set(id + 1);
        NodeId(id)
    }

    /// Settings for a new client (its own network id) that dials through the simulated
    /// network, with its random choices seeded by `seed`.
    pub fn client_config(&self, seed: u64, request_timeout: Duration) -> (NodeId, ClientConfig) {
        let client = self.new_client_id();
        let mut config = ClientConfig::new(&self.bootstrap())
            .client_id(format!("sim-client-{}", client.0))
            .seed(seed)
            .request_timeout(request_timeout);
        config.connection.connector = Some(self.connector(client));
        config.connection.connect_timeout = Duration::from_secs(5);
        config.retry_backoff = Duration::from_millis(50);
        config.retry_backoff_max = Duration::from_millis(1_000);
        (client, config)
    }

    /// Dials node addresses over the simulated network as `client`.
    pub fn connector(&self, client: NodeId) -> Connector {
        let net = self.net.clone();
        Connector::new(move |address| {
            let net = net.clone();
            let node = node_of_address(address);
            Box::pin(async move {
                let Some(node) = node else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "no simulated node has this address",
                    ));
                };
                let stream = net.connect(client, node).await?;
                Ok(Box::new(stream) as Box<dyn BrokerStream>)
            })
        })
    }
}

/// Network events enter the digest as numbers and print as text.
fn trace_net_event(trace: &SharedTrace, event: &NetEvent) {
    let (kind, a, b) = match event.message {
        NetMessage::Request { id, kind, group } => (
            1,
            id,
            group.map_or(u64::MAX, |g| g.0) ^ ((kind as u64) << 56),
        ),
        NetMessage::Reply { id } => (2, id, 0),
        NetMessage::Gossip { bytes } => (3, bytes as u64, 0),
        NetMessage::Connect { conn } => (4, conn, 0),
        NetMessage::Stream { conn, bytes } => (5, conn, bytes as u64),
    };
    let words = [
        event.at_ms,
        event.from.0,
        event.to.0,
        kind,
        a,
        b,
        event.outcome as u64,
    ];
    trace.lock().event_words(&words, || {
        format!(
            "net {} -> {} {:?} {:?}",
            event.from, event.to, event.message, event.outcome
        )
    });
}
