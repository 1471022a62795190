//! The dispatcher's side of quiescence (see `crate::quiescence`): what a group's replica here
//! says about going quiet, and the beats peers send.

use super::log::LogView;
use super::{Dispatcher, GroupInbound};
use crate::quiescence::{GroupQuiet, PeerSight};
use crate::rpc::{AppendEntriesRequest, QuiescenceRequest, QuiescenceResponse, QuietNotice};
use crate::Command;
use async_raft::State;
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A leader's offer to quiet its group, made at the group's wake count `wakes`.
pub(crate) struct QuietOffer {
    pub(crate) notice: QuietNotice,
    /// The followers that must agree: every other voter heard from lately.
    pub(crate) followers: BTreeSet<NodeId>,
    pub(crate) wakes: u64,
}

impl GroupInbound {
    pub(crate) fn quiet(&self) -> &GroupQuiet {
        &self.quiet
    }

    /// Whether a quiet replica learns something from `rpc`: entries, a newer commit, another
    /// term or leader. A bare heartbeat from its leader tells it nothing, and may still be on
    /// its way when the replica agreed to go quiet.
    pub(super) fn brings_news(&self, rpc: &AppendEntriesRequest<Command>) -> bool {
        if !self.quiet.is_quiet() {
            return false;
        }
        let m = self.metrics.borrow();
        !rpc.entries.is_empty()
            || rpc.term != m.current_term
            || m.current_leader != Some(rpc.leader_id)
            || rpc.leader_commit > *self.apply_target.borrow()
    }

    /// The other members of the newest configuration async-raft holds here (both sets while
    /// joint).
    pub(crate) fn peers(&self, node: NodeId) -> BTreeSet<NodeId> {
        self.metrics
            .borrow()
            .membership_config
            .all_nodes()
            .into_iter()
            .filter(|n| *n != node.0)
            .map(NodeId)
            .collect()
    }

    /// An offer to quiet the group, when this node leads it and has found it settled (see
    /// `CommitTracker::settled`, counting only `present` voters) for `rounds` rounds in a row.
    pub(crate) fn offer_quiet(
        &self,
        node: NodeId,
        rounds: u32,
        present: &dyn Fn(NodeId) -> bool,
    ) -> Option<QuietOffer> {
        // Taken first: a proposal from here on voids the offer.
        let wakes = self.quiet.offer();
        let (term, followers) = {
            let m = self.metrics.borrow();
            let leads = m.state == State::Leader && m.current_leader == Some(node.0);
            if !leads
                || self.quiet.is_quiet()
                || m.membership_config.members_after_consensus.is_some()
            {
                self.quiet.idle_rounds(None);
                return None;
            }
            let followers: BTreeSet<NodeId> = m
                .membership_config
                .members
                .iter()
                .map(|n| NodeId(*n))
                .filter(|n| *n != node && present(*n))
                .collect();
            (m.current_term, followers)
        };
        let settled = match self.quiet.is_busy() {
            true => None,
            false => self.network.settled(term, |n| present(NodeId(n))),
        };
        let rounds_settled = self.quiet.idle_rounds(settled.map(|index| (term, index)));
        if rounds_settled < rounds || followers.is_empty() {
            return None;
        }
        Some(QuietOffer {
            notice: QuietNotice {
                group: self.group,
                term,
                index: settled?,
            },
            followers,
            wakes,
        })
    }

    /// Quiets this follower if its log ends where its leader `from` said its own does, and it
    /// knows that committed (what it applies up to was verified against that leader's log).
    fn accept_quiet(&self, from: NodeId, notice: &QuietNotice) -> bool {
        let agreed = {
            let m = self.metrics.borrow();
            m.state == State::Follower
                && m.current_term == notice.term
                && m.current_leader == Some(from.0)
                && *self.apply_target.borrow() >= notice.index
        };
        let holds = agreed
            && self
                .log()
                .last()
                .is_ok_and(|(index, _)| index == notice.index);
        if holds {
            self.quiet.quiet();
        }
        holds
    }

    /// Asks the other members to wake the group with the next beat (they do if this replica
    /// leads them).
    pub(crate) fn ask_members_to_wake(&self, dispatcher: &Dispatcher) {
        let node = NodeId(self.metrics.borrow().id);
        for peer in self.peers(node) {
            dispatcher.request_wake(peer, self.group);
        }
    }

    /// Whether async-raft's core here has ended (a fatal storage error, say) while the group is
    /// still registered: a leader that ended so beats no more, yet its node does.
    pub(crate) fn core_ended(&self) -> bool {
        self.metrics.has_changed().is_err()
    }

    /// The leader of a quiet follower: the node whose silence must wake it.
    pub(crate) fn quiet_leader(&self) -> Option<NodeId> {
        if !self.quiet.is_quiet() {
            return None;
        }
        let m = self.metrics.borrow();
        (m.state == State::Follower)
            .then_some(m.current_leader)
            .flatten()
            .map(NodeId)
    }
}

impl Dispatcher {
    /// Every group hosted here.
    pub(crate) fn hosted_groups(&self) -> Vec<Arc<GroupInbound>> {
        self.groups
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Asks `peer` to wake `group`, at once: a leader stepping down wants its followers'
    /// election timers running as soon as its own is, or it would stand first and likely lead
    /// again (leader balancing would move nothing).
    pub(crate) fn request_wake(&self, peer: NodeId, group: GroupId) {
        self.wake_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_default()
            .insert(group);
        self.wake_soon.notify_one();
    }

    /// Notified whenever a wake request waits.
    pub(crate) fn wake_soon(&self) -> Arc<tokio::sync::Notify> {
        self.wake_soon.clone()
    }

    pub(crate) fn take_wake_requests(&self) -> BTreeMap<NodeId, BTreeSet<GroupId>> {
        std::mem::take(&mut *self.wake_requests.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// From now on, beats from peers are noted in `sight`.
    pub(crate) fn note_peers_in(&self, sight: Arc<PeerSight>) {
        let _ = self.sight.set(sight);
    }

    pub(super) fn serve_quiescence(
        &self,
        from: NodeId,
        request: QuiescenceRequest,
    ) -> QuiescenceResponse {
        if let Some(sight) = self.sight.get() {
            sight.heard(from);
        }
        // A follower wakes only at its leader's request: woken alone it would stand for
        // election while its leader, still quiet, sends nothing.
        for group in request.wake {
            let wakes = |g: &Arc<GroupInbound>| g.quiet_leader().is_none_or(|l| l == from);
            if let Some(inbound) = self.inbound(group).filter(wakes) {
                inbound.quiet.wake_if_quiet();
            }
        }
        let quieted = request
            .quiet
            .iter()
            .filter(|notice| {
                self.inbound(notice.group)
                    .is_some_and(|inbound| inbound.accept_quiet(from, notice))
            })
            .map(|notice| notice.group)
            .collect();
        QuiescenceResponse { quieted }
    }
}
