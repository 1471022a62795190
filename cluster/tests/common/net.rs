//! An in-process network for cluster tests: every node's requests reach the other nodes'
//! dispatchers after a latency, links can be cut one way or both, a link can be made to fail
//! at once (to show what async-raft does with that), and every AppendEntries is recorded.

use async_raft::raft::{ConflictOpt, EntryPayload};
use gregor_cluster::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    RpcRequest, VoteRequest, VoteResponse,
};
use gregor_cluster::{Command, PeerHandler, RpcError, Transport};
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a call over a cut link takes to fail (transports never fail at once).
const FAILURE_DELAY: Duration = Duration::from_millis(50);
/// After this many immediate failures a `fail_at_once` link fails after a delay like a cut
/// one: a runtime spinning on them is stopped, so the test can see that it spun.
pub const IMMEDIATE_FAILURE_LIMIT: u64 = 20_000;

/// One AppendEntries as it went over the network.
#[derive(Debug, Clone)]
pub struct SentAppend {
    pub from: NodeId,
    pub to: NodeId,
    pub group: GroupId,
    pub term: u64,
    pub prev: (u64, u64),
    pub entries: Option<(u64, u64)>,
    pub leader_commit: u64,
    pub encoded_bytes: usize,
    /// The answer, once it came back (`None` for an error or a cut link).
    pub success: Option<bool>,
}

#[derive(Default)]
struct Links {
    cut: BTreeSet<(NodeId, NodeId)>,
    failing_at_once: BTreeSet<(NodeId, NodeId)>,
    extra_delay: BTreeMap<(NodeId, NodeId), Duration>,
    /// Nodes that get no AppendEntries carrying a settled (non-joint) configuration.
    holding_final_config: BTreeSet<NodeId>,
}

pub struct TestNet {
    latency: Duration,
    handlers: Mutex<BTreeMap<NodeId, Arc<dyn PeerHandler>>>,
    links: Mutex<Links>,
    appends: Mutex<Vec<SentAppend>>,
    record_bytes: bool,
    /// Off for the idle-cost measurement, which sends millions of heartbeats.
    record_appends: bool,
    /// Calls that failed at once over a `failing_at_once` link.
    pub immediate_failures: AtomicU64,
    /// Each node answers votes one at a time, each taking this long (see `set_vote_cost`).
    vote_cost: Mutex<Option<Duration>>,
    /// When each node's vote service is next free.
    voter_free_at: Mutex<BTreeMap<NodeId, tokio::time::Instant>>,
    /// A node to cut off from every other once it has taken a snapshot chunk past offset 0
    /// (see `cut_off_mid_snapshot`).
    cut_mid_snapshot: Mutex<Option<NodeId>>,
}

impl TestNet {
    pub fn new(latency: Duration) -> Arc<TestNet> {
        Arc::new(TestNet {
            latency,
            handlers: Mutex::new(BTreeMap::new()),
            links: Mutex::new(Links::default()),
            appends: Mutex::new(Vec::new()),
            record_bytes: true,
            record_appends: true,
            immediate_failures: AtomicU64::new(0),
            vote_cost: Mutex::new(None),
            voter_free_at: Mutex::new(BTreeMap::new()),
            cut_mid_snapshot: Mutex::new(None),
        })
    }

    /// A network that delivers at once and records nothing: for measuring what the groups
    /// themselves cost.
    pub fn bare() -> Arc<TestNet> {
        Arc::new(TestNet {
            latency: Duration::ZERO,
            handlers: Mutex::new(BTreeMap::new()),
            links: Mutex::new(Links::default()),
            appends: Mutex::new(Vec::new()),
            record_bytes: false,
            record_appends: false,
            immediate_failures: AtomicU64::new(0),
            vote_cost: Mutex::new(None),
            voter_free_at: Mutex::new(BTreeMap::new()),
            cut_mid_snapshot: Mutex::new(None),
        })
    }

    pub fn transport(self: &Arc<Self>, node: NodeId) -> Arc<dyn Transport> {
        Arc::new(NetTransport {
            me: node,
            net: self.clone(),
        })
    }

    /// Makes every node answer votes one at a time, `cost` each, like a node whose every vote
    /// costs a write and an fsync. A vote is served once it arrived whether or not its caller
    /// still waits, as a real node would: work for abandoned requests delays the others.
    pub fn set_vote_cost(&self, cost: Duration) {
        *self.vote_cost.lock().unwrap() = Some(cost);
    }

    /// The instant `node`'s vote service takes up a vote arriving now.
    fn reserve_vote(&self, node: NodeId, cost: Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut free_at = self.voter_free_at.lock().unwrap();
        let slot = free_at.entry(node).or_insert(now);
        let start = (*slot).max(now);
        *slot = start + cost;
        start + cost
    }

    async fn costly_vote(
        &self,
        from: NodeId,
        to: NodeId,
        group: GroupId,
        rpc: VoteRequest,
        cost: Duration,
    ) -> Result<VoteResponse, RpcError> {
        pause(self.delay(from, to)).await;
        let handler = self.handlers.lock().unwrap().get(&to).cloned();
        let Some(handler) = handler.filter(|_| !self.is_cut(from, to)) else {
            tokio::time::sleep(FAILURE_DELAY).await;
            return Err(unreachable(to));
        };
        let served_at = self.reserve_vote(to, cost);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep_until(served_at).await;
            let _ = tx.send(handler.vote(from, group, rpc).await);
        });
        let result = rx.await.map_err(|_| unreachable(to))?;
        pause(self.delay(to, from)).await;
        result
    }

    pub fn attach(&self, node: NodeId, handler: Arc<dyn PeerHandler>) {
        self.handlers.lock().unwrap().insert(node, handler);
    }

    pub fn detach(&self, node: NodeId) {
        self.handlers.lock().unwrap().remove(&node);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut links = self.links.lock().unwrap();
        links.cut.insert((a, b));
        links.cut.insert((b, a));
    }

    /// Cuts the link from `from` to `to` only.
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.links.lock().unwrap().cut.insert((from, to));
    }

    /// Cuts every link of `node`.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        for other in others {
            self.cut(node, *other);
        }
    }

    pub fn heal(&self) {
        let mut links = self.links.lock().unwrap();
        links.cut.clear();
        links.failing_at_once.clear();
        links.extra_delay.clear();
        links.holding_final_config.clear();
    }

    /// `to` gets no settled configuration naming it, until `heal`: an AppendEntries carrying
    /// one is cut short before it, and the leader is told to continue after the entries that
    /// arrived (or, when none did, the call fails as over a cut link). So `to` can be held
    /// between the joint configuration that adds it and the final one.
    pub fn hold_final_configs(&self, to: NodeId) {
        self.links.lock().unwrap().holding_final_config.insert(to);
    }

    /// How many of the message's entries `to` may get, when it is being held.
    fn held_from(&self, to: NodeId, rpc: &AppendEntriesRequest<Command>) -> Option<usize> {
        if !self
            .links
            .lock()
            .unwrap()
            .holding_final_config
            .contains(&to)
        {
            return None;
        }
        rpc.entries.iter().position(|entry| {
            matches!(&entry.payload, EntryPayload::ConfigChange(change)
                if change.membership.members_after_consensus.is_none()
                    && change.membership.members.contains(&to.0))
        })
    }

    /// Calls from `from` to `to` fail without awaiting anything: what a careless transport
    /// does, and what makes async-raft's replication loop spin.
    pub fn fail_at_once(&self, from: NodeId, to: NodeId) {
        self.links
            .lock()
            .unwrap()
            .failing_at_once
            .insert((from, to));
    }

    /// Adds `delay` to every message from `from` to `to` (each way of a call is one message).
    pub fn slow_down(&self, from: NodeId, to: NodeId, delay: Duration) {
        self.links
            .lock()
            .unwrap()
            .extra_delay
            .insert((from, to), delay);
    }

    /// Once `node` has taken a snapshot chunk past offset 0, every link to and from it is cut,
    /// before the chunk's answer leaves it: a power cut in the middle of a snapshot stream.
    pub fn cut_off_mid_snapshot(&self, node: NodeId) {
        *self.cut_mid_snapshot.lock().unwrap() = Some(node);
    }

    /// Whether the cut `cut_off_mid_snapshot` asked for has happened.
    pub fn cut_mid_snapshot_done(&self) -> bool {
        self.cut_mid_snapshot.lock().unwrap().is_none()
    }

    fn cut_if_mid_snapshot(&self, to: NodeId, offset: u64) {
        let mut pending = self.cut_mid_snapshot.lock().unwrap();
        if offset == 0 || *pending != Some(to) {
            return;
        }
        *pending = None;
        let others: Vec<NodeId> = self.handlers.lock().unwrap().keys().copied().collect();
        self.isolate(to, &others);
    }

    pub fn appends(&self) -> Vec<SentAppend> {
        self.appends.lock().unwrap().clone()
    }

    pub fn clear_appends(&self) {
        self.appends.lock().unwrap().clear();
    }

    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.links.lock().unwrap().cut.contains(&(from, to))
    }

    fn delay(&self, from: NodeId, to: NodeId) -> Duration {
        self.latency
            + self
                .links
                .lock()
                .unwrap()
                .extra_delay
                .get(&(from, to))
                .copied()
                .unwrap_or_default()
    }

    async fn call<T, F, Fut>(&self, from: NodeId, to: NodeId, serve: F) -> Result<T, RpcError>
    where
        F: FnOnce(Arc<dyn PeerHandler>) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        if self
            .links
            .lock()
            .unwrap()
            .failing_at_once
            .contains(&(from, to))
            && self.immediate_failures.fetch_add(1, Ordering::SeqCst) < IMMEDIATE_FAILURE_LIMIT
        {
            return Err(unreachable(to));
        }
        pause(self.delay(from, to)).await;
        let handler = self.handlers.lock().unwrap().get(&to).cloned();
        let failing = self
            .links
            .lock()
            .unwrap()
            .failing_at_once
            .contains(&(from, to));
        let Some(handler) = handler.filter(|_| !self.is_cut(from, to) && !failing) else {
            tokio::time::sleep(FAILURE_DELAY).await;
            return Err(unreachable(to));
        };
        let result = serve(handler).await;
        pause(self.delay(to, from)).await;
        if self.is_cut(to, from) {
            return Err(unreachable(to));
        }
        result
    }
}

/// A message's flight time; none at all for a zero latency (the idle-cost measurement).
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn unreachable(node: NodeId) -> RpcError {
    RpcError::Unreachable {
        node,
        reason: "the test network cut this link".into(),
    }
}

struct NetTransport {
    me: NodeId,
    net: Arc<TestNet>,
}

impl NetTransport {
    /// Delivers the first `keep` entries of `rpc` (see [`TestNet::hold_final_configs`]).
    async fn deliver_held(
        &self,
        target: NodeId,
        group: GroupId,
        mut rpc: AppendEntriesRequest<Command>,
        keep: usize,
    ) -> Result<AppendEntriesResponse, RpcError> {
        rpc.entries.truncate(keep);
        let Some(last) = rpc.entries.last().map(|e| (e.index, e.term)) else {
            tokio::time::sleep(FAILURE_DELAY).await;
            return Err(unreachable(target));
        };
        let me = self.me;
        let response = self
            .net
            .call(me, target, |h| async move {
                h.append_entries(me, group, rpc).await
            })
            .await?;
        if !response.success {
            return Ok(response);
        }
        Ok(AppendEntriesResponse {
            term: response.term,
            success: false,
            conflict_opt: Some(ConflictOpt {
                term: last.1,
                index: last.0,
            }),
        })
    }
}

#[async_trait::async_trait]
impl Transport for NetTransport {
    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        let (first, last) = (rpc.entries.first(), rpc.entries.last());
        let record = SentAppend {
            from: self.me,
            to: target,
            group,
            term: rpc.term,
            prev: (rpc.prev_log_index, rpc.prev_log_term),
            entries: first.zip(last).map(|(f, l)| (f.index, l.index)),
            leader_commit: rpc.leader_commit,
            encoded_bytes: 0,
            success: None,
        };
        // Through the codec, as a real transport would carry it.
        let request = RpcRequest::AppendEntries { group, rpc };
        let bytes = request.encode()?;
        let record = SentAppend {
            encoded_bytes: if self.net.record_bytes {
                bytes.len()
            } else {
                0
            },
            ..record
        };
        let RpcRequest::AppendEntries { rpc, .. } = RpcRequest::decode(&bytes)? else {
            unreachable!("decoded what was encoded");
        };
        let me = self.me;
        if let Some(keep) = self.net.held_from(target, &rpc) {
            return self.deliver_held(target, group, rpc, keep).await;
        }
        if !self.net.record_appends {
            return self
                .net
                .call(me, target, |h| async move {
                    h.append_entries(me, group, rpc).await
                })
                .await;
        }
        let slot = {
            let mut appends = self.net.appends.lock().unwrap();
            appends.push(record);
            appends.len() - 1
        };
        let result = self
            .net
            .call(me, target, |h| async move {
                h.append_entries(me, group, rpc).await
            })
            .await;
        if let Ok(response) = &result {
            if let Some(sent) = self.net.appends.lock().unwrap().get_mut(slot) {
                sent.success = Some(response.success);
            }
        }
        result
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        let me = self.me;
        let net = self.net.clone();
        self.net
            .call(me, target, |h| async move {
                let offset = rpc.offset;
                let answer = h.install_snapshot(me, group, rpc).await;
                net.cut_if_mid_snapshot(target, offset);
                answer
            })
            .await
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        let me = self.me;
        let cost = *self.net.vote_cost.lock().unwrap();
        if let Some(cost) = cost {
            return self.net.costly_vote(me, target, group, rpc, cost).await;
        }
        self.net
            .call(me, target, |h| async move { h.vote(me, group, rpc).await })
            .await
    }

    async fn node_message(
        &self,
        target: NodeId,
        message: bytes::Bytes,
    ) -> Result<bytes::Bytes, RpcError> {
        let me = self.me;
        self.net
            .call(
                me,
                target,
                |h| async move { h.node_message(me, message).await },
            )
            .await
    }

    async fn quiescence(
        &self,
        target: NodeId,
        request: gregor_cluster::rpc::QuiescenceRequest,
    ) -> Result<gregor_cluster::rpc::QuiescenceResponse, RpcError> {
        let me = self.me;
        self.net
            .call(
                me,
                target,
                |h| async move { h.quiescence(me, request).await },
            )
            .await
    }

    async fn campaign(&self, target: NodeId, group: GroupId, term: u64) -> Result<bool, RpcError> {
        let me = self.me;
        self.net
            .call(me, target, move |h| async move {
                h.campaign(me, group, term).await
            })
            .await
    }
}
