//! [`RaftGroup`]: the one handle the actors use for a Raft group. Everything async-raft offers
//! that is safe to use goes through here, with a timeout; its inbound RPCs arrive through the
//! node's [`Dispatcher`], its outbound ones leave through the group's network.

mod driver;
mod membership;
mod start;

pub use membership::StepOutcome;
pub use start::Start;

use crate::command::{ApplyOutcome, Command, KvWrite};
use crate::containment::Containment;
use crate::dispatch::{Dispatcher, GroupInbound, NO_LEADER};
use crate::error::{AdminError, ProposeError};
use crate::network::{GroupNetwork, NetworkSettings};
use crate::quiescence::QuiescenceSettings;
use crate::raft_store::GroupStorage;
use crate::transport::Transport;
use async_raft::error::{ClientWriteError, RaftError};
use async_raft::metrics::RaftMetrics;
use async_raft::raft::ClientWriteRequest;
use async_raft::{Config, Raft, SnapshotPolicy, State};
use gregor_storage::{GroupId, NodeId, PartitionState, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub(crate) type GroupRaft = Raft<Command, ApplyOutcome, GroupNetwork, GroupStorage>;

/// Timing and bounds of a node's Raft groups.
///
/// Election timeouts: async-raft draws each one from `[min, max)` with `thread_rng`; the
/// simulation hands in a seeded `min` per node with `max = min + 1`, which makes the draw
/// constant. The defaults (heartbeat 250 ms, election 800-1200 ms) replace a killed leader well
/// within 2 s (825-1100 ms measured) while keeping an idle node's cost low: async-raft wakes
/// one timer per follower stream per heartbeat (BENCHMARKS.md has the figures).
#[derive(Debug, Clone, Copy)]
pub struct RaftTuning {
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Entries async-raft puts in one AppendEntries (the byte bound applies on top).
    pub max_payload_entries: u64,
    /// Bytes of entries in one AppendEntries message (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// How long one AppendEntries message may take, independent of async-raft's heartbeat
    /// interval (which cuts its own wait short; see `network`).
    pub append_timeout_ms: u64,
    pub vote_timeout_ms: u64,
    /// Bytes of one snapshot chunk, and how long its delivery may take.
    pub snapshot_chunk_bytes: u64,
    pub snapshot_timeout_ms: u64,
    /// The least time a failed call takes (async-raft retries failures at once).
    pub failure_delay_ms: u64,
    /// Bound of membership operations (learner catch-up, one configuration change).
    pub admin_timeout_ms: u64,
    /// Heartbeat intervals a group's log must stay settled before it goes quiet (no
    /// heartbeats, no election timers; see `quiescence`); 0 keeps every group ticking.
    pub quiesce_after_heartbeats: u32,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            election_timeout_min_ms: 800,
            election_timeout_max_ms: 1200,
            heartbeat_interval_ms: 250,
            max_payload_entries: 300,
            max_append_bytes: 1 << 20,
            append_timeout_ms: 2_000,
            vote_timeout_ms: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_timeout_ms: 30_000,
            failure_delay_ms: 50,
            admin_timeout_ms: 10_000,
            quiesce_after_heartbeats: 4,
        }
    }
}

impl RaftTuning {
    fn raft_config(&self, group: GroupId) -> anyhow::Result<Config> {
        Ok(Config::build(format!("group-{group}"))
            .election_timeout_min(self.election_timeout_min_ms)
            .election_timeout_max(self.election_timeout_max_ms)
            .heartbeat_interval(self.heartbeat_interval_ms)
            .max_payload_entries(self.max_payload_entries)
            .snapshot_max_chunk_size(self.snapshot_chunk_bytes)
            // Retention, not async-raft, trims the log (see raft_store).
            .snapshot_policy(SnapshotPolicy::LogsSinceLast(u64::MAX))
            .validate()?)
    }

    fn network(&self, containment: Containment) -> NetworkSettings {
        NetworkSettings {
            max_append_bytes: self.max_append_bytes,
            append_timeout: Duration::from_millis(self.append_timeout_ms),
            vote_timeout: Duration::from_millis(self.vote_timeout_ms),
            snapshot_timeout: Duration::from_millis(self.snapshot_timeout_ms),
            failure_delay: Duration::from_millis(self.failure_delay_ms),
            max_payload_entries: self.max_payload_entries,
            containment,
        }
    }

    fn admin_timeout(&self) -> Duration {
        Duration::from_millis(self.admin_timeout_ms)
    }

    /// A node beats its peers every heartbeat interval, and counts one unheard for two of them
    /// as gone: a killed leader's quiet groups then elect within two heartbeat intervals plus
    /// an election timeout (1.3-1.7 s with the defaults).
    pub(crate) fn quiescence(&self) -> QuiescenceSettings {
        let beat = Duration::from_millis(self.heartbeat_interval_ms.max(1));
        QuiescenceSettings {
            beat,
            rounds: self.quiesce_after_heartbeats,
            silence: beat * 2,
        }
    }
}

/// What a group needs from its node.
#[derive(Clone)]
pub struct GroupEnv {
    pub node: NodeId,
    pub store: Store,
    pub transport: Arc<dyn Transport>,
    pub dispatcher: Arc<Dispatcher>,
    pub tuning: RaftTuning,
    pub containment: Containment,
}

/// The role this node plays in a group right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Stopped,
}

/// A group's role, leader and readiness as this node sees them, published on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    pub role: GroupRole,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Leader, and has applied an entry of its own term: its applied state holds everything
    /// its predecessors committed, so it may serve reads and check writes against it.
    pub ready: bool,
}

/// How often a leadership transfer looks whether its target has caught up.
const HANDOVER_POLL: Duration = Duration::from_millis(2);

pub struct RaftGroup {
    id: GroupId,
    node: NodeId,
    raft: GroupRaft,
    storage: Arc<GroupStorage>,
    network: Arc<GroupNetwork>,
    inbound: Arc<GroupInbound>,
    dispatcher: Arc<Dispatcher>,
    metrics: watch::Receiver<RaftMetrics>,
    status: watch::Receiver<GroupStatus>,
    driver: tokio::task::JoinHandle<()>,
    /// The leader term in which this node began adding a member: proposals are refused until
    /// the term changes (this node stepped down).
    fenced_term: AtomicU64,
    /// The leader term in which this node is handing leadership over, and to whom: proposals
    /// are refused meanwhile, so the new leader's log can hold all of this one's.
    /// (Two atomics, not a lock: every proposal reads them; `handover_to` is written first.)
    handover_term: AtomicU64,
    handover_to: AtomicU64,
    /// Ids for the durability notices of proposals (leader-local, never stored).
    next_proposal: AtomicU64,
    tuning: RaftTuning,
}

impl RaftGroup {
    pub fn id(&self) -> GroupId {
        self.id
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Committed state: last applied index, log start, high watermark. Changes are published
    /// after every apply, so a long poll can wait on it instead of polling.
    pub fn applied(&self) -> watch::Receiver<PartitionState> {
        self.storage.subscribe()
    }

    /// Role, leader, term and readiness, published on every change.
    pub fn status(&self) -> watch::Receiver<GroupStatus> {
        self.status.clone()
    }

    /// Publishes the group's stored state to [`RaftGroup::applied`] subscribers; call it after
    /// changing the state outside Raft (retention moving the log start).
    ///
    /// # Errors
    /// Reading the state from storage failed.
    pub fn publish_state(&self) -> anyhow::Result<()> {
        self.storage.publish_state()
    }

    pub fn store(&self) -> &Store {
        self.storage.store()
    }

    pub fn role(&self) -> GroupRole {
        if self.core_ended() {
            return GroupRole::Stopped;
        }
        role_of(&self.metrics.borrow())
    }

    pub fn leader(&self) -> Option<NodeId> {
        if self.core_ended() {
            return None;
        }
        leader_of(&self.metrics.borrow())
    }

    /// Whether async-raft's core has returned. It shuts down on a fatal storage error without
    /// publishing metrics again, so its last metrics can say `Leader` for ever: a coordinator or
    /// a replica trusting them would go on serving from memory while another node leads.
    fn core_ended(&self) -> bool {
        self.metrics.has_changed().is_err()
    }

    pub fn term(&self) -> u64 {
        self.metrics.borrow().current_term
    }

    /// Whether the group is quiet on this node: no heartbeats from a leader, no election timer
    /// on a follower (see `RaftTuning::quiesce_after_heartbeats`).
    pub fn is_quiet(&self) -> bool {
        self.inbound.quiet().is_quiet()
    }

    /// This node leads and has applied an entry of its own term (see [`GroupStatus::ready`]).
    pub fn is_ready(&self) -> bool {
        let status = *self.status.borrow();
        status.ready && status.term == self.term() && self.role() == GroupRole::Leader
    }

    /// The members of the newest configuration this node knows (both sets while joint).
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        self.metrics
            .borrow()
            .membership_config
            .all_nodes()
            .into_iter()
            .map(NodeId)
            .collect()
    }

    /// The voters a majority is counted among whatever change is under way: while a change is
    /// joint these are the old configuration's alone, since until it completes a majority of
    /// the old one is still needed (a newcomer does not yet make the group survive a loss).
    pub fn settled_voters(&self) -> std::collections::BTreeSet<NodeId> {
        self.metrics
            .borrow()
            .membership_config
            .members
            .iter()
            .copied()
            .map(NodeId)
            .collect()
    }

    /// Waits until this node leads the group, or `timeout` passes.
    pub async fn wait_for_leadership(&self, timeout: Duration) -> bool {
        let mut metrics = self.metrics.clone();
        let node = self.node.0;
        tokio::time::timeout(timeout, async move {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if m.state == State::Leader && m.current_leader == Some(node) {
                        return true;
                    }
                    if m.state == State::Shutdown {
                        return false;
                    }
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Waits until this node leads the group and is ready (see [`GroupStatus::ready`]).
    pub async fn wait_until_ready(&self, timeout: Duration) -> bool {
        let mut status = self.status.clone();
        tokio::time::timeout(timeout, async move {
            loop {
                {
                    let s = status.borrow_and_update();
                    if s.ready {
                        return true;
                    }
                    if s.role == GroupRole::Stopped {
                        return false;
                    }
                }
                if status.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Confirms that this node still leads: commits an empty entry of its term, which a
    /// leader cut off from its group, or already replaced, cannot do. async-raft has no
    /// check-quorum (a cut-off leader believes it leads for ever) and its `client_read`
    /// counts a quorum one short, so a read that a stale leader would answer wrongly from
    /// its own state waits for this first.
    ///
    /// # Errors
    /// As [`RaftGroup::propose`].
    pub async fn confirm_leadership(&self, timeout: Duration) -> Result<(), ProposeError> {
        self.propose(Command::Kv(KvWrite::default()), timeout)
            .await
            .map(|_| ())
    }

    /// Replicates `command`, waits for it to commit and be applied, and returns the outcome.
    ///
    /// # Errors
    /// `NotLeader` with a hint, `MembershipChanging` (retry), `Timeout` (an isolated
    /// async-raft leader never steps down, so every write is bounded), `ShuttingDown`, or
    /// `Fatal` when storage failed.
    pub async fn propose(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<(u64, ApplyOutcome), ProposeError> {
        // In flight before the fences are read: a handover that fences and then finds nothing
        // in flight knows every later proposal will see its fence.
        let _awake = self.inbound.quiet().busy();
        let term = self.term();
        if term != 0 && self.fenced_term.load(Ordering::SeqCst) == term {
            return Err(ProposeError::MembershipChanging);
        }
        if term != 0 && self.handover_term.load(Ordering::SeqCst) == term {
            let to = NodeId(self.handover_to.load(Ordering::SeqCst));
            return Err(ProposeError::LeadershipMoving { to });
        }
        let write = self.raft.client_write(ClientWriteRequest::new(command));
        match tokio::time::timeout(timeout, write).await {
            Err(_) => Err(ProposeError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
            Ok(Ok(response)) => Ok((response.index, response.data)),
            Ok(Err(ClientWriteError::ForwardToLeader(_, leader))) => Err(ProposeError::NotLeader {
                leader: leader.filter(|l| *l != NO_LEADER).map(NodeId),
            }),
            Ok(Err(ClientWriteError::RaftError(RaftError::ShuttingDown))) => {
                Err(ProposeError::ShuttingDown)
            }
            Ok(Err(ClientWriteError::RaftError(other))) => {
                Err(ProposeError::Fatal(other.to_string()))
            }
        }
    }

    /// As [`RaftGroup::propose`]; besides, `durable` is told the entry's index as soon as this
    /// leader's own log holds it durably, before it commits (what acks=1 answers on: a leader
    /// that dies before replicating it loses it). Only an `Append` command carries the notice;
    /// `durable` is dropped unanswered for other commands and for a proposal that never reached
    /// this node's log.
    ///
    /// # Errors
    /// As [`RaftGroup::propose`].
    pub async fn propose_notifying(
        &self,
        command: Command,
        durable: oneshot::Sender<u64>,
        timeout: Duration,
    ) -> Result<(u64, ApplyOutcome), ProposeError> {
        let Command::Append { batches, .. } = command else {
            return self.propose(command, timeout).await;
        };
        let proposal = self.next_proposal.fetch_add(1, Ordering::Relaxed);
        self.storage.notify_durable(proposal, durable);
        let command = Command::Append {
            batches,
            proposal: Some(proposal),
        };
        let outcome = self.propose(command, timeout).await;
        self.storage.forget_durable(proposal);
        outcome
    }

    /// Leaves leadership (for leader balancing, and after a membership addition): this node
    /// adopts the next term as a follower; the group elects a leader after an election
    /// timeout, possibly this node again.
    ///
    /// A group whose only voter is this node is not stepped down: async-raft's candidate
    /// counts votes only as replies arrive, and a lone member asks no one, so it would stand
    /// for election in term after term and never lead again.
    ///
    /// # Errors
    /// `NotLeader` if this node does not lead; `OnlyVoter`; `ShuttingDown`.
    pub async fn step_down(&self) -> Result<(), AdminError> {
        self.require_leader()?;
        if self.inbound.containment().keep_lone_leader && self.is_only_voter() {
            return Err(AdminError::OnlyVoter);
        }
        self.inbound
            .step_down(self.node)
            .await
            .map_err(admin_raft_error)?;
        // The followers may be quiet: this node, whose word they take, asks them to wake and
        // elect.
        for peer in self.inbound.peers(self.node) {
            self.dispatcher.request_wake(peer, self.id);
        }
        Ok(())
    }

    /// Hands leadership to `to`, a voter of the group (leader balancing), as the Raft
    /// dissertation's leadership transfer (§3.10) does: proposals are refused until it ends;
    /// once every proposal in flight has committed and `to` holds the whole log, `to` is asked
    /// to stand at once, and its vote requests say the leader asked, so voters that heard this
    /// leader moments ago still vote. Resolves when this node no longer leads: the group had
    /// no leader for one vote round instead of an election timeout.
    ///
    /// # Errors
    /// `NotLeader`; `InvalidTarget` if `to` is this node or not a voter; `NotHandedOver` if
    /// `to` could not be asked or did not stand; `Timeout` if `to` did not catch up or win
    /// within the minimum election timeout. This node then leads on and takes proposals again,
    /// unless the attempt deposed it (the group then elects as after any lost leader);
    /// `ShuttingDown`.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), AdminError> {
        let term = self.require_leader()?;
        let voter = {
            let m = self.metrics.borrow();
            let config = &m.membership_config;
            config.members_after_consensus.is_none() && config.members.contains(&to.0)
        };
        if to == self.node || !voter {
            return Err(AdminError::InvalidTarget(format!(
                "node {to} is not another voter of the group"
            )));
        }
        self.handover_to.store(to.0, Ordering::SeqCst);
        self.handover_term.store(term, Ordering::SeqCst);
        let outcome = self.hand_over(term, to).await;
        self.handover_term.store(0, Ordering::SeqCst);
        if outcome.is_ok() {
            self.inbound.count_step_down();
        }
        outcome
    }

    async fn hand_over(&self, term: u64, to: NodeId) -> Result<(), AdminError> {
        let bound = Duration::from_millis(self.tuning.election_timeout_min_ms);
        let deadline = tokio::time::Instant::now() + bound;
        let timeout = AdminError::Timeout {
            timeout_ms: bound.as_millis() as u64,
        };
        // A quiet leader's followers arm no election timer; the candidacy wakes them anyway,
        // but this leader's own flag must not hold its streams back meanwhile.
        self.inbound.quiet().wake_if_quiet();
        let mut status = self.status.clone();
        // Waits for responses, not for an event: the tracker is polled, briefly, and only here.
        while self.inbound.quiet().is_busy() || !self.network.holds_everything_sent(term, to) {
            if tokio::time::Instant::now() >= deadline {
                return Err(timeout);
            }
            if self.require_leader()? != term {
                return Err(AdminError::NotLeader { leader: None });
            }
            tokio::time::sleep(HANDOVER_POLL).await;
        }
        let stood = self
            .network
            .ask_to_campaign(to, term)
            .await
            .map_err(|error| AdminError::NotHandedOver(format!("asking node {to}: {error}")))?;
        if !stood {
            return Err(AdminError::NotHandedOver(format!(
                "node {to} did not stand: it follows another leader or term"
            )));
        }
        let deposed = async {
            status
                .wait_for(|s| s.term != term || s.role != GroupRole::Leader)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout_at(deadline, deposed).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(AdminError::ShuttingDown),
            Err(_) => Err(timeout),
        }
    }

    /// How many times this node's replica gave up leading the group since it started (a
    /// hand-over for leader balancing, a step-down after a membership addition).
    pub fn step_downs(&self) -> u64 {
        self.inbound.step_downs()
    }

    /// The newest configuration is this node alone (settled, not joint).
    fn is_only_voter(&self) -> bool {
        let m = self.metrics.borrow();
        let config = &m.membership_config;
        config.members_after_consensus.is_none()
            && config.members.len() == 1
            && config.members.contains(&self.node.0)
    }

    fn require_leader(&self) -> Result<u64, AdminError> {
        let m = self.metrics.borrow();
        if m.state == State::Leader && m.current_leader == Some(self.node.0) {
            Ok(m.current_term)
        } else {
            Err(AdminError::NotLeader {
                leader: leader_of(&m),
            })
        }
    }

    /// Stops the group's Raft core and its tasks; the dispatcher stops routing to it.
    pub async fn shutdown(&self) {
        self.dispatcher.unregister(&self.inbound);
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(group = %self.id, %error, "raft group did not shut down cleanly");
        }
        // The core has ended (`shutdown` joins it, whether it ended now or on an error before).
        self.network.dismiss_streams();
        self.driver.abort();
    }
}

impl Drop for RaftGroup {
    /// A group dropped without [`RaftGroup::shutdown`] is shut down in the background: once
    /// every handle to an async-raft core is gone, the core polls its completed shutdown
    /// channel again and panics.
    fn drop(&mut self) {
        self.dispatcher.unregister(&self.inbound);
        self.driver.abort();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let raft = self.raft.clone();
            // Not the network itself: it holds the store, which the caller may reopen at once.
            let dismissal = self.network.stream_dismissal();
            runtime.spawn(async move {
                let _ = raft.shutdown().await;
                dismissal.dismiss_streams();
            });
        }
    }
}

pub(crate) fn role_of(m: &RaftMetrics) -> GroupRole {
    match m.state {
        State::Leader => GroupRole::Leader,
        State::Follower => GroupRole::Follower,
        State::Candidate => GroupRole::Candidate,
        State::NonVoter => GroupRole::Learner,
        State::Shutdown => GroupRole::Stopped,
    }
}

/// async-raft keeps naming a node that stepped down (after a membership change) as the leader
/// in its own metrics until an election: a node that is not in the leader state leads nothing.
pub(crate) fn leader_of(m: &RaftMetrics) -> Option<NodeId> {
    m.current_leader
        .filter(|l| *l != NO_LEADER && (*l != m.id || m.state == State::Leader))
        .map(NodeId)
}

fn admin_raft_error(error: RaftError) -> AdminError {
    match error {
        RaftError::ShuttingDown => AdminError::ShuttingDown,
        other => AdminError::Fatal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_raft::raft::MembershipConfig;

    fn metrics(id: u64, state: State, current_leader: Option<u64>) -> RaftMetrics {
        RaftMetrics {
            id,
            state,
            current_term: 2,
            last_log_index: 3,
            last_applied: 3,
            current_leader,
            membership_config: MembershipConfig::new_initial(id),
        }
    }

    #[test]
    fn a_node_that_stepped_down_does_not_name_itself_leader() {
        assert_eq!(
            leader_of(&metrics(1, State::Leader, Some(1))),
            Some(NodeId(1))
        );
        assert_eq!(leader_of(&metrics(1, State::Follower, Some(1))), None);
        assert_eq!(
            leader_of(&metrics(1, State::Follower, Some(2))),
            Some(NodeId(2))
        );
        assert_eq!(leader_of(&metrics(1, State::Candidate, None)), None);
    }
}
