//! Nodes with real storage in temporary directories, real async-raft groups, and the in-process
//! [`net::TestNet`] between them, on one current-thread runtime with paused time.

#![allow(dead_code)]

pub mod net;

use bytes::Bytes;
use gregor_cluster::{
    ApplyOutcome, ClusterNode, Command, Containment, GroupRole, ProposeError, RaftGroup,
    RaftTuning, Start, StepOutcome,
};
use gregor_storage::batch::{BatchBuilder, NewRecord};
use gregor_storage::{FlushPolicy, GroupId, NodeId, Store, StoreOptions, SyncMode};
use net::TestNet;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub const LATENCY: Duration = Duration::from_millis(1);

pub fn runtime() -> tokio::runtime::Runtime {
    // RUST_LOG=debug shows what the groups did (test output only).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

pub fn tuning() -> RaftTuning {
    RaftTuning::default()
}

/// A record batch of `records` records, `value_bytes` each.
pub fn batch(records: usize, value_bytes: usize) -> Bytes {
    let value = vec![b'v'; value_bytes];
    let mut b = BatchBuilder::with_capacity(64 + records * (value_bytes + 16));
    for _ in 0..records {
        b.push(&NewRecord {
            key: None,
            value: Some(&value),
            headers: &[],
            timestamp: 1,
        });
    }
    b.finish()
}

pub fn append(records: usize) -> Command {
    Command::append(vec![batch(records, 8)])
}

pub fn nodes(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

pub struct TestNode {
    pub cluster: Arc<ClusterNode>,
}

pub struct TestCluster {
    pub net: Arc<TestNet>,
    _dir: tempfile::TempDir,
    root: PathBuf,
    pub tuning: RaftTuning,
    pub containment: Containment,
    pub nodes: BTreeMap<NodeId, TestNode>,
    ids: Vec<NodeId>,
}

impl TestCluster {
    pub async fn new(ids: &[u64]) -> TestCluster {
        Self::with(ids, tuning(), Containment::default()).await
    }

    pub async fn with(ids: &[u64], tuning: RaftTuning, containment: Containment) -> TestCluster {
        Self::on(TestNet::new(LATENCY), ids, tuning, containment).await
    }

    pub async fn on(
        net: Arc<TestNet>,
        ids: &[u64],
        tuning: RaftTuning,
        containment: Containment,
    ) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = TestCluster {
            net,
            root: dir.path().to_path_buf(),
            _dir: dir,
            tuning,
            containment,
            nodes: BTreeMap::new(),
            ids: ids.iter().copied().map(NodeId).collect(),
        };
        for id in ids {
            cluster.start_node(NodeId(*id)).await;
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.ids.clone()
    }

    /// Opens the node's store (waiting for the tasks of a killed incarnation to let go of it)
    /// and attaches its dispatcher to the network.
    pub async fn start_node(&mut self, id: NodeId) {
        self.start_node_with(id, self.containment).await
    }

    pub async fn start_node_with(&mut self, id: NodeId, containment: Containment) {
        self.start_node_tuned(id, self.tuning, containment).await
    }

    /// Starts the node with a Raft tuning of its own (its election timeouts, say).
    pub async fn start_node_tuned(
        &mut self,
        id: NodeId,
        tuning: RaftTuning,
        containment: Containment,
    ) {
        let store = open_store(&self.root.join(format!("node-{id}"))).await;
        let dispatcher = gregor_cluster::Dispatcher::new();
        let cluster = ClusterNode::with_containment(
            id,
            store,
            self.net.transport(id),
            dispatcher.clone(),
            tuning,
            containment,
        );
        self.net.attach(id, dispatcher);
        self.nodes.insert(id, TestNode { cluster });
    }

    /// Stops every group of the node and takes it off the network.
    pub async fn kill(&mut self, id: NodeId) {
        self.net.detach(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.cluster.shutdown().await;
        }
    }

    pub fn node(&self, id: NodeId) -> &Arc<ClusterNode> {
        &self.nodes[&id].cluster
    }

    pub fn group(&self, id: NodeId, group: GroupId) -> Arc<RaftGroup> {
        self.node(id).group(group).expect("the group runs there")
    }

    /// Starts `group` on every node of `members`: the first founds it alone, the others join
    /// and are brought in one at a time. Returns once the voters are `members`.
    pub async fn form_group(&self, group: GroupId, members: &[u64]) {
        let founder = NodeId(members[0]);
        self.node(founder)
            .start_group(
                group,
                Start::Found {
                    members: [founder].into(),
                },
            )
            .await
            .unwrap();
        for id in &members[1..] {
            self.node(NodeId(*id))
                .start_group(group, Start::Join)
                .await
                .unwrap();
        }
        self.converge(group, &nodes(members), Duration::from_secs(60))
            .await;
    }

    /// Loops membership steps toward `target` on whichever node leads, until done.
    pub async fn converge(&self, group: GroupId, target: &BTreeSet<NodeId>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            assert!(
                Instant::now() < deadline,
                "group {group} did not reach {target:?}"
            );
            let Some(leader) = self.wait_leader(group, within).await else {
                continue;
            };
            match self
                .group(leader, group)
                .change_membership_step(target)
                .await
            {
                Ok(StepOutcome::Done) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "membership step");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// A cluster of `ids` with `group` formed on all of them and one write applied everywhere.
    pub async fn with_written_group(
        ids: &[u64],
        group: GroupId,
        tuning: RaftTuning,
    ) -> TestCluster {
        let cluster = TestCluster::with(ids, tuning, Containment::default()).await;
        cluster.form_group(group, ids).await;
        let within = Duration::from_secs(10);
        let (index, _) = cluster.propose(group, append(1), within).await.unwrap();
        cluster.wait_applied(group, index, within).await;
        cluster
    }

    /// The node that leads `group` and is ready, waiting up to `within`.
    pub async fn wait_leader(&self, group: GroupId, within: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + within;
        loop {
            for (id, node) in &self.nodes {
                if let Some(g) = node.cluster.group(group) {
                    if g.is_ready() {
                        return Some(*id);
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Proposes on whichever node leads, retrying until it commits or `within` passes.
    pub async fn propose(
        &self,
        group: GroupId,
        command: Command,
        within: Duration,
    ) -> Result<(u64, ApplyOutcome), ProposeError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(leader) = self.wait_leader(group, left).await else {
                return Err(ProposeError::Timeout {
                    timeout_ms: within.as_millis() as u64,
                });
            };
            let attempt = self
                .group(leader, group)
                .propose(command.clone(), Duration::from_secs(2))
                .await;
            match attempt {
                Ok(done) => return Ok(done),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits until every running replica of `group` has applied at least `index`.
    pub async fn wait_applied(&self, group: GroupId, index: u64, within: Duration) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.wait_applied_on(&all, group, index, within).await
    }

    /// Cuts one follower of `group` off, writes past it and has retention remove the head of
    /// the log on the others, so that the follower, once reachable, can only catch up by a
    /// snapshot. Returns the leader and that follower (still cut off).
    pub async fn leave_a_follower_needing_a_snapshot(&self, group: GroupId) -> (NodeId, NodeId) {
        let second = Duration::from_secs(1);
        let leader = self.wait_leader(group, 10 * second).await.unwrap();
        let behind = self.ids().into_iter().find(|n| *n != leader).unwrap();
        self.net.isolate(behind, &self.ids());
        for _ in 0..20 {
            self.propose(group, append(2), 10 * second).await.unwrap();
        }
        let (trimmed, _) = self
            .propose(group, Command::AdvanceLogStart { offset: 30 }, 10 * second)
            .await
            .unwrap();
        let others: Vec<NodeId> = self.ids().into_iter().filter(|n| *n != behind).collect();
        self.wait_applied_on(&others, group, trimmed, 10 * second)
            .await;
        assert!(
            self.node(leader).store().log_floor(group).unwrap().index > 0,
            "retention removed the head of the leader's log: the follower needs a snapshot"
        );
        (leader, behind)
    }

    /// Waits until the replicas of `group` on `on` have applied at least `index`.
    pub async fn wait_applied_on(
        &self,
        on: &[NodeId],
        group: GroupId,
        index: u64,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        for (id, node) in self.nodes.iter().filter(|(id, _)| on.contains(id)) {
            let Some(g) = node.cluster.group(group) else {
                continue;
            };
            let mut applied = g.applied();
            while applied.borrow_and_update().last_applied < index {
                let left = deadline.saturating_duration_since(Instant::now());
                if tokio::time::timeout(left, applied.changed()).await.is_err() {
                    let sent: Vec<_> = self
                        .net
                        .appends()
                        .into_iter()
                        .filter(|s| s.group == group && s.to == *id)
                        .collect();
                    for s in &sent[sent.len().saturating_sub(12)..] {
                        eprintln!("{s:?}");
                    }
                    eprintln!("roles {:?}", self.roles(group));
                    eprintln!("log of {id}: {:?}", self.logs(group)[id].last());
                    panic!(
                        "node {id} applied {} of group {group}, not {index}",
                        applied.borrow().last_applied
                    );
                }
            }
        }
    }

    /// Each running replica's log of `group` as (index, term) pairs from its floor on.
    pub fn logs(&self, group: GroupId) -> BTreeMap<NodeId, Vec<(u64, u64)>> {
        self.nodes
            .iter()
            .map(|(id, node)| {
                let store = node.cluster.store();
                let entries = store
                    .read_entries(group, 0, u64::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.index, e.term))
                    .collect();
                (*id, entries)
            })
            .collect()
    }

    pub fn roles(&self, group: GroupId) -> BTreeMap<NodeId, GroupRole> {
        self.nodes
            .iter()
            .filter_map(|(id, node)| node.cluster.group(group).map(|g| (*id, g.role())))
            .collect()
    }
}

/// Opens a store, retrying while a killed node's lingering tasks still hold its directory.
pub async fn open_store(path: &std::path::Path) -> Store {
    let options = StoreOptions {
        flush: FlushPolicy::Never,
        sync_mode: SyncMode::Inline,
        cache_bytes: 4 << 20,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::open(path, options.clone()) {
            Ok(store) => return store,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "store still held");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot reopen {}: {error}", path.display()),
        }
    }
}

/// Every pair of logs agrees on every index both hold.
pub fn assert_prefix_consistent(logs: &BTreeMap<NodeId, Vec<(u64, u64)>>) {
    let all: Vec<_> = logs.iter().collect();
    for (i, (a, log_a)) in all.iter().enumerate() {
        for (b, log_b) in &all[i + 1..] {
            let terms_b: BTreeMap<u64, u64> = log_b.iter().copied().collect();
            for (index, term) in log_a.iter() {
                if let Some(other) = terms_b.get(index) {
                    assert_eq!(term, other, "nodes {a} and {b} disagree at index {index}");
                }
            }
        }
    }
}
