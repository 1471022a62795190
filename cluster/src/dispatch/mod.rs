//! The inbound dispatcher: the node's [`PeerHandler`]. It routes each group's Raft RPCs to the
//! group's local Raft, one message at a time per group (groups in parallel), and contains
//! async-raft's follower-side bugs on the way in (see `append` and `vote`): what it checked
//! against the log still holds when async-raft processes the message, because nothing else
//! reaches that group's Raft meanwhile.

mod append;
pub(crate) mod log;
mod quiet;
pub(crate) use quiet::QuietOffer;
mod snapshot;
mod vote;

use crate::codec::decode_membership;
use crate::containment::Containment;
use crate::group::GroupRaft;
use crate::network::elections::{ElectionGate, CANDIDACIES_AT_ONCE};
use crate::network::GroupNetwork;
use crate::quiescence::{GroupQuiet, PeerSight};
use crate::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    QuiescenceRequest, QuiescenceResponse, RpcError, VoteRequest, VoteResponse,
};
use crate::transport::PeerHandler;
use crate::Command;
use append::{AppendPlan, PlanError};
use async_raft::error::RaftError;
use async_raft::metrics::RaftMetrics;
use bytes::Bytes;
use gregor_storage::{GroupId, NodeId, Store};
use log::{LogView, StoredLog};
use snapshot::{Refusal, SnapshotStream};
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use vote::VotePlan;

/// The leader id of the local heartbeat that re-arms a restarted follower's election timer: no
/// node has it, and [`crate::RaftGroup::leader`] reports it as no leader.
pub(crate) const NO_LEADER: u64 = u64::MAX;

/// How many terms past a stale candidate a node that refuses it moves (see
/// `GroupInbound::outpace`): more than any candidate can start within one election timeout of
/// this node, since a candidate waits at least its minimum election timeout between terms and
/// no node's timeouts differ by such a factor.
pub(crate) const STALE_TERM_LEAD: u64 = 16;

/// What a node does with the messages its peers send that are not Raft (leadership hints,
/// forwarded requests): the actors install one.
#[async_trait::async_trait]
pub trait NodeMessageHandler: Send + Sync + 'static {
    async fn handle(&self, from: NodeId, message: Bytes) -> Result<Bytes, RpcError>;
}

/// Founders of several members that may stand for their first election at once on one node.
/// A topic of thousands of partitions would otherwise start a thousand elections per node at
/// once; every vote costs an fsync on both sides, and once answers take longer than the vote
/// timeout no candidate ever wins (seen at 3,000 partitions on a loaded machine).
const FOUNDING_ELECTIONS: usize = 16;

/// Every group hosted here, by id. Cheap to share; one per node.
pub struct Dispatcher {
    groups: RwLock<BTreeMap<GroupId, Arc<GroupInbound>>>,
    node_messages: RwLock<Option<Arc<dyn NodeMessageHandler>>>,
    changes: GroupChanges,
    /// Founders of several members campaigning at once (see `Dispatcher::founding_permit`).
    founding: Arc<tokio::sync::Semaphore>,
    /// Candidacies sending vote requests at once (see `network::elections`).
    elections: Arc<ElectionGate>,
    /// Leaderships given up here (leader balancing, after a membership addition): each leaves
    /// its group leaderless for an election timeout.
    step_downs: Arc<AtomicU64>,
    /// When each peer was last heard (see `crate::quiescence`); set once the loop runs.
    sight: std::sync::OnceLock<Arc<PeerSight>>,
    /// Groups to ask each peer to wake with the next beat.
    wake_requests: std::sync::Mutex<BTreeMap<NodeId, BTreeSet<GroupId>>>,
    /// Tells the quiescence loop that wake requests wait (sent at once, not at the next beat).
    wake_soon: Arc<tokio::sync::Notify>,
}

/// Counts changes of any hosted group's status (role, leader, term, readiness) or voters, so a
/// node-level loop over every replica can tell in one read that nothing it looks at has moved
/// since its last pass, and skip the pass: an idle node then costs nothing per replica between
/// heartbeats. Cheap to clone; every clone reads the same count.
#[derive(Debug, Clone, Default)]
pub struct GroupChanges(Arc<AtomicU64>);

impl GroupChanges {
    /// The number of changes so far; equal readings mean nothing changed in between.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub(crate) fn note(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher {
            groups: RwLock::default(),
            node_messages: RwLock::default(),
            changes: GroupChanges::default(),
            founding: Arc::new(tokio::sync::Semaphore::new(FOUNDING_ELECTIONS)),
            elections: ElectionGate::new(CANDIDACIES_AT_ONCE),
            step_downs: Arc::default(),
            sight: std::sync::OnceLock::new(),
            wake_requests: std::sync::Mutex::default(),
            wake_soon: Arc::default(),
        }
    }
}

impl Dispatcher {
    pub fn new() -> Arc<Dispatcher> {
        Arc::new(Dispatcher::default())
    }

    /// Waits for a turn to run a founding election (see [`FOUNDING_ELECTIONS`]).
    pub(crate) async fn founding_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.founding.clone().acquire_owned().await.ok()
    }

    /// The node's election gate, shared by every group's network.
    pub(crate) fn elections(&self) -> Arc<ElectionGate> {
        self.elections.clone()
    }

    /// Installs what answers node messages (replacing any earlier handler).
    pub fn set_node_message_handler(&self, handler: Arc<dyn NodeMessageHandler>) {
        *self
            .node_messages
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(handler);
    }

    /// The counter every hosted group's driver moves when its status or voters change.
    pub fn changes(&self) -> GroupChanges {
        self.changes.clone()
    }

    /// How many times a group hosted here stepped down from leadership since the node started.
    pub fn step_downs(&self) -> u64 {
        self.step_downs.load(Ordering::SeqCst)
    }

    pub(crate) fn step_down_counter(&self) -> Arc<AtomicU64> {
        self.step_downs.clone()
    }

    pub fn hosts(&self, group: GroupId) -> bool {
        self.inbound(group).is_some()
    }

    pub(crate) fn register(&self, inbound: Arc<GroupInbound>) {
        let previous = self.write().insert(inbound.group, inbound);
        assert!(
            previous.is_none(),
            "a group is registered with the dispatcher once"
        );
    }

    /// Removes `inbound` if it is still the registered handle of its group. Its members are
    /// asked to wake the group: if this replica led it, its quiet followers would otherwise
    /// wait for it for ever while this node goes on beating.
    pub(crate) fn unregister(&self, inbound: &Arc<GroupInbound>) {
        let removed = {
            let mut groups = self.write();
            let current = groups
                .get(&inbound.group)
                .is_some_and(|current| Arc::ptr_eq(current, inbound));
            current && groups.remove(&inbound.group).is_some()
        };
        if removed {
            inbound.ask_members_to_wake(self);
        }
    }

    fn inbound(&self, group: GroupId) -> Option<Arc<GroupInbound>> {
        self.groups
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&group)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<GroupId, Arc<GroupInbound>>> {
        self.groups
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hosted(&self, group: GroupId) -> Result<Arc<GroupInbound>, RpcError> {
        self.inbound(group).ok_or(RpcError::UnknownGroup(group))
    }
}

#[async_trait::async_trait]
impl PeerHandler for Dispatcher {
    async fn append_entries(
        &self,
        _from: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        self.hosted(group)?.append_entries(rpc).await
    }

    async fn vote(
        &self,
        _from: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        self.hosted(group)?.vote(rpc).await
    }

    async fn install_snapshot(
        &self,
        _from: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        self.hosted(group)?.install_snapshot(rpc).await
    }

    async fn node_message(&self, from: NodeId, message: Bytes) -> Result<Bytes, RpcError> {
        let handler = self
            .node_messages
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match handler {
            Some(handler) => handler.handle(from, message).await,
            None => Err(RpcError::Remote(
                "this node does not take node messages yet".into(),
            )),
        }
    }

    async fn quiescence(
        &self,
        from: NodeId,
        request: QuiescenceRequest,
    ) -> Result<QuiescenceResponse, RpcError> {
        Ok(self.serve_quiescence(from, request))
    }

    async fn campaign(&self, from: NodeId, group: GroupId, term: u64) -> Result<bool, RpcError> {
        self.hosted(group)?.campaign(from, term).await
    }
}

/// One group's inbound side: its Raft, its log, and the turn every message waits for.
pub(crate) struct GroupInbound {
    pub(crate) group: GroupId,
    raft: GroupRaft,
    store: Store,
    metrics: watch::Receiver<RaftMetrics>,
    /// Held while one message is checked and handed to async-raft.
    turn: tokio::sync::Mutex<()>,
    /// The highest index a message verified and the leader said is committed: the group's
    /// driver applies our log up to it.
    apply_target: watch::Sender<u64>,
    /// The candidates this replica may vote for before any configuration entry is stored
    /// (see `Start`); set late on a founder, once it has initialised.
    founding: RwLock<Option<BTreeSet<u64>>>,
    containment: Containment,
    /// Moves whenever the group's log may have changed (see `GroupStorage`).
    log_version: Arc<AtomicU64>,
    /// The highest term `outpace` moved async-raft to (see there).
    outpaced_to: AtomicU64,
    /// The last entry a message from a leader verified, with the log version after it: a
    /// heartbeat naming it as its previous entry needs no log read while the version holds.
    last_match: std::sync::Mutex<Option<(u64, u64, u64)>>,
    /// The node's count of step-downs (see [`Dispatcher::step_downs`]).
    step_downs: Arc<AtomicU64>,
    /// This group's own.
    own_step_downs: AtomicU64,
    /// The snapshot stream async-raft is taking (see `snapshot`); a new incarnation of the
    /// node starts with none.
    snapshot_stream: std::sync::Mutex<SnapshotStream>,
    /// Whether the group is quiet here (see `crate::quiescence`).
    quiet: GroupQuiet,
    /// The group's outbound side, which knows where a leader's log is settled.
    network: Arc<GroupNetwork>,
}

/// What a group's inbound side shares with its storage and its network.
pub(crate) struct GroupSides {
    pub(crate) store: Store,
    /// Moves whenever the group's log may have changed (see `GroupStorage`).
    pub(crate) log_version: Arc<AtomicU64>,
    pub(crate) network: Arc<GroupNetwork>,
}

impl GroupInbound {
    pub(crate) fn new(
        group: GroupId,
        raft: GroupRaft,
        apply_target: watch::Sender<u64>,
        founding: Option<BTreeSet<u64>>,
        containment: Containment,
        sides: GroupSides,
    ) -> GroupInbound {
        let GroupSides {
            store,
            log_version,
            network,
        } = sides;
        GroupInbound {
            quiet: GroupQuiet::new(raft.quiescence().clone()),
            network,
            step_downs: Arc::default(),
            own_step_downs: AtomicU64::new(0),
            snapshot_stream: std::sync::Mutex::default(),
            log_version,
            last_match: std::sync::Mutex::new(None),
            outpaced_to: AtomicU64::new(0),
            group,
            metrics: raft.metrics(),
            raft,
            store,
            turn: tokio::sync::Mutex::new(()),
            apply_target,
            founding: RwLock::new(founding),
            containment,
        }
    }

    /// Counts this group's step-downs in `counter` (the node's) instead of its own.
    pub(crate) fn counting_step_downs_in(mut self, counter: Arc<AtomicU64>) -> Self {
        self.step_downs = counter;
        self
    }

    /// From now on, before any configuration entry is stored, votes go to `members` (a
    /// founder that has just initialised).
    pub(crate) fn allow_votes_for(&self, members: BTreeSet<u64>) {
        *self
            .founding
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(members);
    }

    /// How many times this group stepped down here.
    pub(crate) fn step_downs(&self) -> u64 {
        self.own_step_downs.load(Ordering::SeqCst)
    }

    pub(crate) fn containment(&self) -> &Containment {
        &self.containment
    }

    fn log(&self) -> StoredLog<'_> {
        StoredLog {
            store: &self.store,
            group: self.group,
        }
    }

    pub(crate) async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        let _turn = self.turn.lock().await;
        if self.brings_news(&rpc) {
            self.quiet.wake_if_quiet();
        }
        if self.containment.append_shape {
            append::check_shape(&rpc).map_err(|why| {
                tracing::warn!(group = %self.group, leader = rpc.leader_id, %why, "refused a malformed AppendEntries");
                RpcError::Protocol(why)
            })?;
        }
        let term = rpc.term;
        let version = self.log_version.load(Ordering::SeqCst);
        let matched_before = self
            .last_match
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .filter(|(at, index, term)| {
                *at == version && (*index, *term) == (rpc.prev_log_index, rpc.prev_log_term)
            });
        // The previous entry was verified by the last message, and the log has not moved since
        // (a heartbeat after it, or the next append in a stream): no read needed.
        let prev_known = matched_before.is_some();
        let plan = if rpc.entries.is_empty() && prev_known {
            append::pass_checked(rpc, &self.containment)
        } else {
            self.plan(rpc, prev_known)?
        };
        match plan {
            AppendPlan::Pass { request, verified } => {
                let commit = request.leader_commit.min(verified);
                let last = request
                    .entries
                    .last()
                    .map_or((request.prev_log_index, request.prev_log_term), |e| {
                        (e.index, e.term)
                    });
                let response = self
                    .raft
                    .append_entries(request)
                    .await
                    .map_err(raft_error)?;
                if response.success {
                    let version = self.log_version.load(Ordering::SeqCst);
                    *self.last_match.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((version, last.0, last.1));
                }
                if response.success && self.containment.follower_commit_clamp {
                    self.apply_target.send_if_modified(|target| {
                        let raise = commit > *target;
                        if raise {
                            *target = commit;
                        }
                        raise
                    });
                }
                Ok(response)
            }
            AppendPlan::Mismatch { heartbeat, hint } => {
                let response = self
                    .raft
                    .append_entries(heartbeat)
                    .await
                    .map_err(raft_error)?;
                if response.term > term {
                    return Ok(response);
                }
                Ok(AppendEntriesResponse {
                    term: response.term,
                    success: false,
                    conflict_opt: Some(hint),
                })
            }
        }
    }

    fn plan(
        &self,
        rpc: AppendEntriesRequest<Command>,
        prev_known: bool,
    ) -> Result<AppendPlan, RpcError> {
        append::plan(&self.log(), rpc, &self.containment, prev_known).map_err(|error| {
            match &error {
                PlanError::Malformed(_) => tracing::warn!(group = %self.group, %error, "refused an AppendEntries"),
                PlanError::Storage(_) => tracing::error!(group = %self.group, %error, "reading the log for an AppendEntries failed"),
            }
            RpcError::Remote(error.to_string())
        })
    }

    pub(crate) async fn vote(&self, rpc: VoteRequest) -> Result<VoteResponse, RpcError> {
        let _turn = self.turn.lock().await;
        // A member stands: its leader is gone, or it thinks so; either way the group must tick.
        self.quiet.wake_if_quiet();
        if !self.containment.vote_rules {
            return self.raft.vote(rpc).await.map_err(raft_error);
        }
        let (members, ours) = self.vote_context().map_err(|error| {
            tracing::error!(group = %self.group, %error, "reading the log for a vote failed");
            RpcError::Remote(error.to_string())
        })?;
        let candidate_term = rpc.term;
        let plan = vote::plan_vote(members.as_ref(), ours, rpc);
        tracing::debug!(group = %self.group, term = self.metrics.borrow().current_term, outpaced_to = self.outpaced_to.load(Ordering::SeqCst), ?ours, ?plan, "vote request");
        match plan {
            VotePlan::Pass(rpc) => self.raft.vote(rpc).await.map_err(raft_error),
            VotePlan::RefuseTakingTerm(_) if self.leads() => Ok(self.refusal()),
            VotePlan::RefuseTakingTerm(rpc) if self.containment.outpace_stale_candidates => {
                self.outpace(rpc).await
            }
            VotePlan::RefuseTakingTerm(rpc) => {
                let response = self.raft.vote(rpc).await.map_err(raft_error)?;
                if response.vote_granted {
                    // Our log holds entries, so async-raft cannot grant an empty one; if its
                    // view of the log is empty the group is broken, and no vote may count.
                    tracing::error!(group = %self.group, "async-raft granted a vote to an empty log over ours");
                    return Err(RpcError::Remote(
                        "vote refused: inconsistent log view".into(),
                    ));
                }
                Ok(response)
            }
            VotePlan::Refuse => Ok(self.refusal_of_stranger(candidate_term)),
        }
    }

    /// Refuses a candidate outside our configuration (or any, on a pristine replica) without
    /// telling it a higher term of ours: it would adopt it and stand again above it. A former
    /// voter whose log still makes it one would so climb to every term the group reaches, stay
    /// past each new leader's, and keep refusing (and, as a learner, deposing) it.
    fn refusal_of_stranger(&self, candidate_term: u64) -> VoteResponse {
        let refusal = self.refusal();
        if !self.containment.outpace_stale_learners {
            return refusal;
        }
        VoteResponse {
            term: refusal.term.min(candidate_term),
            vote_granted: false,
        }
    }

    /// Refuses a member candidate whose log is behind ours, in a term above ours.
    ///
    /// async-raft resets its election timer whenever it adopts a higher term, vote granted or
    /// not, so taking the stale candidate's term as Raft says would keep this node (whose log
    /// could win) from ever standing while the stale one stands every election timeout (for
    /// ever, when its timeout is the shorter one). Instead this node moves
    /// [`STALE_TERM_LEAD`] terms past the candidate, with one timer reset; the candidate's
    /// next terms stay below that, are refused without touching the timer, and when this
    /// node's timeout runs out it stands in a term the stale candidate will take and grant.
    ///
    /// The stale candidate is always answered in its own term, never in ours: a candidate that
    /// learns our term from each refusal resets its timer at the moment we (or another voter
    /// refused by us) took that term, and standing first again in lockstep with the voters that
    /// could win, it pushes us past their next term every time (three-node simulation seed
    /// 14918: two voters with equal logs refused each other's terms for 130 s behind a stale
    /// third with a timeout 5 ms shorter).
    async fn outpace(&self, rpc: VoteRequest) -> Result<VoteResponse, RpcError> {
        let (reported, me) = {
            let m = self.metrics.borrow();
            (m.current_term, m.id)
        };
        let refused_in_its_term = VoteResponse {
            term: rpc.term,
            vote_granted: false,
        };
        // async-raft reports no metrics when it adopts a term through a refused vote.
        let ours = reported.max(self.outpaced_to.load(Ordering::SeqCst));
        if rpc.term <= ours {
            return Ok(refused_in_its_term);
        }
        // An empty log: async-raft takes the term and refuses (our log holds entries).
        let ahead = VoteRequest::new(rpc.term + STALE_TERM_LEAD, me, 0, 0);
        self.outpaced_to.fetch_max(ahead.term, Ordering::SeqCst);
        let response = self.raft.vote(ahead).await.map_err(raft_error)?;
        if response.vote_granted {
            tracing::error!(group = %self.group, "async-raft granted a vote to an empty log over ours");
            return Err(RpcError::Remote(
                "vote refused: inconsistent log view".into(),
            ));
        }
        Ok(refused_in_its_term)
    }

    fn refusal(&self) -> VoteResponse {
        VoteResponse {
            term: self.metrics.borrow().current_term,
            vote_granted: false,
        }
    }

    /// A leader keeps its term against a candidate that cannot win: async-raft's leader would
    /// step down for any higher term (it ignores the recent-heartbeat rule its followers keep),
    /// so a node cut off from the leader alone could depose it again and again.
    fn leads(&self) -> bool {
        self.metrics.borrow().state == async_raft::State::Leader
    }

    /// The members of the newest stored configuration (else the founding one) and our last
    /// log index and term.
    fn vote_context(&self) -> anyhow::Result<VoteContext> {
        let members = match self.store.last_membership(self.group)? {
            Some((_, bytes)) => Some(decode_membership(&bytes)?.all_nodes().into_iter().collect()),
            None => self
                .founding
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        };
        Ok((members, self.log().last()?))
    }

    pub(crate) async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        let _turn = self.turn.lock().await;
        self.quiet.wake_if_quiet();
        if self.containment.redundant_snapshot
            && self.holds(rpc.last_included_index, rpc.last_included_term)?
        {
            // Nothing to install; async-raft still learns the leader's term and leader and
            // restarts its election timer, as for any message from a leader.
            let heartbeat = AppendEntriesRequest {
                term: rpc.term,
                leader_id: rpc.leader_id,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: Vec::new(),
                leader_commit: 0,
            };
            let response = self
                .raft
                .append_entries(heartbeat)
                .await
                .map_err(raft_error)?;
            return Ok(InstallSnapshotResponse {
                term: response.term,
            });
        }
        if !self.containment.snapshot_chunk_order {
            return self.raft.install_snapshot(rpc).await.map_err(raft_error);
        }
        let expected = (rpc.last_included_index, rpc.last_included_term);
        let taken = self
            .stream()
            .take(&rpc, |whole| check_snapshot(whole, expected));
        match taken {
            Ok(()) => {}
            Err(Refusal::OutOfOrder) => {
                tracing::warn!(group = %self.group, leader = rpc.leader_id, offset = rpc.offset, "refused a snapshot chunk that continues no stream begun here");
                return Err(RpcError::SnapshotOutOfOrder { offset: rpc.offset });
            }
            Err(Refusal::Malformed(why)) => {
                tracing::warn!(group = %self.group, leader = rpc.leader_id, %why, "refused a snapshot that does not decode");
                return Err(RpcError::Protocol(format!("snapshot refused: {why}")));
            }
        }
        let term = rpc.term;
        match self.raft.install_snapshot(rpc).await {
            // A chunk of an older term is ignored by async-raft: its stream is not this one.
            Ok(response) if response.term != term => {
                self.stream().forget();
                Ok(response)
            }
            Ok(response) => Ok(response),
            Err(error) => {
                self.stream().forget();
                Err(raft_error(error))
            }
        }
    }

    fn stream(&self) -> std::sync::MutexGuard<'_, SnapshotStream> {
        self.snapshot_stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether our log holds the leader's entry `index` of `term`: stored with that term, or
    /// at or below our floor (committed, so the leader's).
    fn holds(&self, index: u64, term: u64) -> Result<bool, RpcError> {
        let log = self.log();
        let held = log.floor().and_then(|(floor, _)| {
            if index < floor {
                return Ok(true);
            }
            Ok(log.term_of(index)? == Some(term))
        });
        held.map_err(|error| {
            tracing::error!(group = %self.group, %error, "reading the log for a snapshot failed");
            RpcError::Remote(error.to_string())
        })
    }

    /// After a restart async-raft waits 30 s before a multi-member group's first election. A
    /// local empty AppendEntries of our own term, from no leader, makes it re-arm a normal
    /// election timeout instead. Returns whether it was handed over: only while this node is
    /// still a follower that has heard no leader.
    pub(crate) async fn rescue_restart(&self) -> bool {
        let _turn = self.turn.lock().await;
        let (term, waiting) = {
            let m = self.metrics.borrow();
            (
                m.current_term,
                m.state == async_raft::State::Follower && m.current_leader.is_none(),
            )
        };
        if !waiting {
            return false;
        }
        let heartbeat = AppendEntriesRequest {
            term,
            leader_id: NO_LEADER,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: Vec::new(),
            leader_commit: 0,
        };
        matches!(self.raft.append_entries(heartbeat).await, Ok(r) if r.success)
    }

    /// The follower's half of a leadership transfer: stands for election now if `leader` leads
    /// us in `term` (async-raft checks, in its core, so no message can slip in between), with
    /// vote requests voters grant although they heard the leader moments ago.
    pub(crate) async fn campaign(&self, leader: NodeId, term: u64) -> Result<bool, RpcError> {
        let _turn = self.turn.lock().await;
        self.quiet.wake_if_quiet();
        let stood = self
            .raft
            .campaign(term, leader.0)
            .await
            .map_err(raft_error)?;
        tracing::debug!(group = %self.group, %leader, term, stood, "asked to stand by the leader");
        Ok(stood)
    }

    /// Makes this node's Raft leave leadership: a vote request from itself for the next term
    /// with an empty log makes it adopt the term, become a follower and refuse the vote.
    pub(crate) async fn step_down(&self, node: NodeId) -> Result<(), RaftError> {
        let _turn = self.turn.lock().await;
        let term = self.metrics.borrow().current_term;
        let request = VoteRequest::new(term + 1, node.0, 0, 0);
        let response = self.raft.vote(request).await?;
        assert!(
            !response.vote_granted,
            "a vote for an empty log is never granted by a node holding entries"
        );
        self.count_step_down();
        Ok(())
    }

    /// Counts one leadership given up (a step-down or a hand-over), here and on the node.
    pub(crate) fn count_step_down(&self) {
        self.step_downs.fetch_add(1, Ordering::SeqCst);
        self.own_step_downs.fetch_add(1, Ordering::SeqCst);
    }
}

/// The members a vote is checked against (none for a pristine replica) and our last log
/// index and term.
type VoteContext = (Option<BTreeSet<u64>>, (u64, u64));

/// Whether `whole` is a snapshot storage will install as the leader's entry `expected`
/// (index, term): async-raft treats any failure to install one as fatal.
fn check_snapshot(whole: &[u8], expected: (u64, u64)) -> Result<(), String> {
    let snapshot = gregor_storage::GroupSnapshot::decode(whole).map_err(|e| e.to_string())?;
    if (snapshot.index, snapshot.term) != expected {
        return Err(format!(
            "it holds entry {} of term {}, the leader said {} of term {}",
            snapshot.index, snapshot.term, expected.0, expected.1
        ));
    }
    if let Some(membership) = snapshot.membership.as_deref() {
        decode_membership(membership).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn raft_error(error: RaftError) -> RpcError {
    match error {
        RaftError::ShuttingDown => RpcError::ShuttingDown,
        other => RpcError::Remote(other.to_string()),
    }
}
