//! [`RaftGroup`]: the one handle the actors use for a Raft group. Everything async-raft offers
//! that is safe to use goes through here, with a timeout.

use crate::command::{ApplyOutcome, Command};
use crate::error::ProposeError;
use crate::raft_store::GroupStorage;
use crate::transport::{GroupNetwork, Transport};
use async_raft::error::{ClientWriteError, RaftError};
use async_raft::metrics::RaftMetrics;
use async_raft::raft::ClientWriteRequest;
use async_raft::{Config, Raft, SnapshotPolicy, State};
use gregor_storage::{GroupId, NodeId, PartitionState, StateMachine, Store};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

type GroupRaft = Raft<Command, ApplyOutcome, GroupNetwork, GroupStorage>;

/// Timing of a group's Raft. The simulation hands in a seeded election timeout per node: with
/// `max = min + 1` async-raft's own random draw has no effect (it uses `thread_rng`).
#[derive(Debug, Clone, Copy)]
pub struct RaftTuning {
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_payload_entries: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 100,
            max_payload_entries: 300,
        }
    }
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

pub struct RaftGroup {
    id: GroupId,
    node: NodeId,
    raft: GroupRaft,
    storage: Arc<GroupStorage>,
    metrics: watch::Receiver<RaftMetrics>,
    watcher: tokio::task::JoinHandle<()>,
}

impl RaftGroup {
    /// Starts this node's member of `group`. A group that has never run here is initialised
    /// with `initial_members` (a single member becomes leader at once).
    ///
    /// # Errors
    /// Reading the group's state from storage failed, or the Raft config is invalid.
    pub async fn start(
        store: Store,
        group: GroupId,
        node: NodeId,
        initial_members: &[NodeId],
        transport: Arc<dyn Transport>,
        tuning: RaftTuning,
    ) -> anyhow::Result<RaftGroup> {
        Self::start_with_machine(store, group, node, initial_members, transport, tuning, None).await
    }

    /// As [`RaftGroup::start`], with `machine` applying the group's `Command::Machine` entries.
    ///
    /// # Errors
    /// As [`RaftGroup::start`].
    pub async fn start_with_machine(
        store: Store,
        group: GroupId,
        node: NodeId,
        initial_members: &[NodeId],
        transport: Arc<dyn Transport>,
        tuning: RaftTuning,
        machine: Option<Box<dyn StateMachine>>,
    ) -> anyhow::Result<RaftGroup> {
        let config = Config::build(format!("group-{group}"))
            .election_timeout_min(tuning.election_timeout_min_ms)
            .election_timeout_max(tuning.election_timeout_max_ms)
            .heartbeat_interval(tuning.heartbeat_interval_ms)
            .max_payload_entries(tuning.max_payload_entries)
            // Retention, not async-raft, trims the log (see raft_store).
            .snapshot_policy(SnapshotPolicy::LogsSinceLast(u64::MAX))
            .validate()?;
        let pristine = store.hard_state(group)?.is_none() && store.last_entry(group)?.is_none();
        let storage = Arc::new(GroupStorage::new(store, group, node, machine)?);
        let network = Arc::new(GroupNetwork { group, transport });
        let raft = Raft::new(node.0, Arc::new(config), network, storage.clone());
        if pristine {
            let members: HashSet<u64> = initial_members.iter().map(|n| n.0).collect();
            // NotAllowed only means the group already has state; nothing to do then.
            let _ = raft.initialize(members).await;
        }
        let metrics = raft.metrics();
        let watcher = tokio::spawn(apply_watcher(metrics.clone(), storage.clone()));
        Ok(RaftGroup {
            id: group,
            node,
            raft,
            storage,
            metrics,
            watcher,
        })
    }

    pub fn id(&self) -> GroupId {
        self.id
    }

    /// Committed state: last applied index, log start, high watermark. Changes are published
    /// after every apply, so a long poll can wait on it instead of polling.
    pub fn applied(&self) -> watch::Receiver<PartitionState> {
        self.storage.subscribe()
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
        match self.metrics.borrow().state {
            State::Leader => GroupRole::Leader,
            State::Follower => GroupRole::Follower,
            State::Candidate => GroupRole::Candidate,
            State::NonVoter => GroupRole::Learner,
            State::Shutdown => GroupRole::Stopped,
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.metrics.borrow().current_leader.map(NodeId)
    }

    pub fn term(&self) -> u64 {
        self.metrics.borrow().current_term
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

    /// Replicates `command`, waits for it to commit and be applied, and returns the outcome.
    ///
    /// # Errors
    /// `NotLeader` with a hint, `Timeout` (an isolated async-raft leader never steps down, so
    /// every write is bounded), `ShuttingDown`, or `Fatal` when storage failed.
    pub async fn propose(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<(u64, ApplyOutcome), ProposeError> {
        let write = self.raft.client_write(ClientWriteRequest::new(command));
        match tokio::time::timeout(timeout, write).await {
            Err(_) => Err(ProposeError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
            Ok(Ok(response)) => Ok((response.index, response.data)),
            Ok(Err(ClientWriteError::ForwardToLeader(_, leader))) => Err(ProposeError::NotLeader {
                leader: leader.map(NodeId),
            }),
            Ok(Err(ClientWriteError::RaftError(RaftError::ShuttingDown))) => {
                Err(ProposeError::ShuttingDown)
            }
            Ok(Err(ClientWriteError::RaftError(other))) => {
                Err(ProposeError::Fatal(other.to_string()))
            }
        }
    }

    /// Stops the group's Raft core and its watcher.
    pub async fn shutdown(&self) {
        self.watcher.abort();
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(group = %self.id, %error, "raft group did not shut down cleanly");
        }
    }
}

/// Applies our log up to whatever async-raft reports as applied. async-raft advances
/// `last_applied` without calling the state machine in some paths (a new leader's blank entry,
/// and bug 2 in DEPENDENCY_NOTES.md); every index it reports there is committed, so applying
/// our own log up to it is safe and closes the gap.
async fn apply_watcher(mut metrics: watch::Receiver<RaftMetrics>, storage: Arc<GroupStorage>) {
    loop {
        let (last_applied, stopped) = {
            let m = metrics.borrow_and_update();
            (m.last_applied, m.state == State::Shutdown)
        };
        if last_applied > 0 {
            if let Err(error) = storage.apply_up_to(last_applied).await {
                tracing::error!(%error, "applying committed entries failed; the group stops serving");
                return;
            }
        }
        if stopped || metrics.changed().await.is_err() {
            return;
        }
    }
}
