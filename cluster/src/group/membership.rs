//! Membership changes as async-raft 0.6.1 can carry them safely.
//!
//! Its leader keeps members added by a change in its "non-voter" bookkeeping until the next
//! election, so it counts them for nothing (and with no other voter commits alone), and it
//! computes a joint configuration's commit from that bookkeeping. So: one node at a time (any
//! majority of the old configuration then meets any majority of the new one, whatever the
//! leader miscounts), except that a group of one voter takes all its newcomers at once (see
//! `grows_at_once`); removals before additions, except one that would leave a single voter
//! (which async-raft can neither commit from the leader alone nor elect; see
//! `change_membership_step`); an addition only to a learner that has caught up; client
//! proposals fenced from the start of an addition until the leader that carried it out has
//! stepped down, and then it steps down, so the next leader's bookkeeping holds the real
//! membership. The outgoing `leader_commit` is clamped by the group's network meanwhile, so no
//! follower applies what the miscount would call committed.

use super::{admin_raft_error, RaftGroup};
use crate::error::AdminError;
use async_raft::error::ChangeConfigError;
use gregor_storage::NodeId;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;

/// What one call of [`RaftGroup::change_membership_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The voters are the target.
    Done,
    /// `node` is being brought up to date as a learner; call again to promote it.
    CatchingUp(NodeId),
    /// `node` became a voter; this node stepped down, so the next step belongs to the next
    /// leader.
    Added(NodeId),
    /// A group of one voter took every newcomer of the target (this many) in one change, so it
    /// never passed through two voters, which cannot lose one; this node stepped down.
    Grown(usize),
    /// `node` is no longer a voter.
    Removed(NodeId),
}

impl RaftGroup {
    /// Does the next single safe step from the current voters toward `target`: removes one
    /// member not in it (this node last), else brings one missing node in (first as a learner
    /// until it has caught up, then as a voter, after which this node steps down); a group of
    /// one voter brings every missing node in at once, once all have caught up. A removal
    /// that would leave one voter comes after the addition; a target of one voter is refused
    /// once there are more. Callers loop, on whichever node leads, until `Done`.
    ///
    /// # Errors
    /// `NotLeader`, `ChangeInProgress` (a joint configuration is in the log: retry),
    /// `Timeout`, `InvalidTarget` (empty, or one voter where there are more), `ShuttingDown`,
    /// `Fatal`.
    pub async fn change_membership_step(
        &self,
        target: &BTreeSet<NodeId>,
    ) -> Result<StepOutcome, AdminError> {
        if target.is_empty() {
            return Err(AdminError::InvalidTarget("no voters".into()));
        }
        let term = self.require_leader()?;
        let _awake = self.inbound.quiet().busy();
        let config = self.metrics.borrow().membership_config.clone();
        if config.members_after_consensus.is_some() {
            return Err(AdminError::ChangeInProgress);
        }
        let current: BTreeSet<NodeId> = config.members.iter().copied().map(NodeId).collect();
        // async-raft 0.6.1 cannot bring a group down to one voter: its leader computes the new
        // configuration's quorum from its followers only, so a configuration of the leader alone
        // never commits and the group accepts nothing again; and a lone voter that does not
        // lead stays a candidate for ever (it counts votes only as answers arrive, and has
        // nobody to ask). Refused before any step, so no voter is taken away for nothing.
        if target.len() == 1 && current.len() > 1 {
            return Err(AdminError::InvalidTarget(format!(
                "{target:?} has one voter, and async-raft cannot shrink a group of {} to one",
                current.len()
            )));
        }
        let removable = current.difference(target).copied();
        let removal = removable
            .clone()
            .find(|n| *n != self.node)
            .or_else(|| removable.clone().next());
        if let Some(gone) = removal {
            let mut next = current.clone();
            next.remove(&gone);
            // A removal that would leave one voter waits for the addition (see above).
            if next.len() > 1 {
                self.change_to(&next).await?;
                return Ok(StepOutcome::Removed(gone));
            }
        }
        let joining: BTreeSet<NodeId> = target.difference(&current).copied().collect();
        let Some(first) = joining.first().copied() else {
            return Ok(StepOutcome::Done);
        };
        // From one voter every newcomer comes in at once (see `grows_at_once`); otherwise one.
        let adding = if grows_at_once(&current, target) {
            joining
        } else {
            [first].into()
        };
        for node in &adding {
            if !self.learner_caught_up(term, *node).await? {
                return Ok(StepOutcome::CatchingUp(*node));
            }
        }
        self.fenced_term.store(term, Ordering::SeqCst);
        let next: BTreeSet<NodeId> = current.union(&adding).copied().collect();
        let changed = self.change_to(&next).await;
        // Whatever happened, this leader's bookkeeping may now miss a voter.
        if let Err(error) = self.inbound.step_down(self.node).await {
            tracing::warn!(group = %self.id, %error, "stepping down after a membership change failed");
        }
        changed.map(|()| match adding.len() {
            1 => StepOutcome::Added(first),
            added => StepOutcome::Grown(added),
        })
    }

    /// Replicates the log to `node` as a learner (a non-voter); resolves once it has caught up
    /// or is already being brought in. Learners are forgotten when the leader changes: a new
    /// leader re-adds them.
    ///
    /// # Errors
    /// `NotLeader`, `Timeout` (still catching up), `ShuttingDown`, `Fatal`.
    pub async fn add_learner(&self, node: NodeId) -> Result<(), AdminError> {
        self.require_leader()?;
        let _awake = self.inbound.quiet().busy();
        let timeout = self.tuning.admin_timeout();
        match tokio::time::timeout(timeout, self.raft.add_non_voter(node.0)).await {
            Err(_) => Err(AdminError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
            Ok(Ok(())) | Ok(Err(ChangeConfigError::Noop)) => Ok(()),
            Ok(Err(error)) => Err(change_error(error)),
        }
    }

    /// Whether `node` holds the log up to what is committed, by what its responses proved in
    /// this term; starts replicating to it if that has not begun.
    async fn learner_caught_up(&self, term: u64, node: NodeId) -> Result<bool, AdminError> {
        let timeout = self.tuning.admin_timeout();
        match tokio::time::timeout(timeout, self.raft.add_non_voter(node.0)).await {
            // async-raft resolves `add_non_voter` once the learner is "at line rate": within
            // 1,000 entries of the leader's log, which a learner that holds nothing is while
            // the log is short. Only what the learner's responses proved counts.
            Ok(Ok(())) | Ok(Err(ChangeConfigError::Noop)) | Err(_) => Ok(self
                .network
                .progress(term, node)
                .is_some_and(|(matched, committed)| matched > 0 && matched >= committed)),
            Ok(Err(error)) => Err(change_error(error)),
        }
    }

    async fn change_to(&self, members: &BTreeSet<NodeId>) -> Result<(), AdminError> {
        let members: HashSet<u64> = members.iter().map(|n| n.0).collect();
        let timeout = self.tuning.admin_timeout();
        match tokio::time::timeout(timeout, self.raft.change_membership(members)).await {
            Err(_) => Err(AdminError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(change_error(error)),
        }
    }
}

/// Whether a change may add every newcomer of `target` at once: only to a group of one voter
/// that keeps it. Safe although async-raft's leader then commits the joint and the new
/// configuration alone (it counts no newcomer): proposals are fenced from the change until the
/// leader has stepped down, so its log ends with the new configuration, and every later
/// candidate either holds only the old configuration (not a member: it never stands), or the
/// joint one (it needs the old leader's vote, which goes only to a log as long as its own), or
/// the new one, which it holds only with every entry before it, and so with everything the old
/// leader committed. Adding one at a time instead would pass through two voters, where the
/// loss of either stops the group.
fn grows_at_once(current: &BTreeSet<NodeId>, target: &BTreeSet<NodeId>) -> bool {
    current.len() == 1 && target.is_superset(current) && target.len() > 2
}

fn change_error(error: ChangeConfigError) -> AdminError {
    match error {
        ChangeConfigError::NodeNotLeader(leader) => AdminError::NotLeader {
            leader: leader
                .filter(|l| *l != crate::dispatch::NO_LEADER)
                .map(NodeId),
        },
        ChangeConfigError::ConfigChangeInProgress => AdminError::ChangeInProgress,
        ChangeConfigError::RaftError(error) => admin_raft_error(error),
        other => AdminError::Fatal(other.to_string()),
    }
}
