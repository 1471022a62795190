//! The group's driver task: applies our own log up to what is known committed, and publishes
//! the group's status.
//!
//! Two sources say what is committed. async-raft reports `last_applied`, which it advances
//! without calling the state machine in some paths (a new leader's blank entry, and bug 2 in
//! the dependency notes): every index it reports there is committed, so applying our own log
//! up to it closes the gap. And the dispatcher raises the apply target when a message verified
//! entries the leader says are committed, because async-raft's own follower apply depends on
//! its entries cache and can stall or skip.

use super::{leader_of, role_of, GroupRole, GroupStatus};
use crate::dispatch::log::{LogView, StoredLog};
use crate::raft_store::GroupStorage;
use async_raft::metrics::RaftMetrics;
use async_raft::State;
use gregor_storage::{GroupId, NodeId};
use std::sync::Arc;
use tokio::sync::watch;

pub(super) async fn drive(
    node: NodeId,
    group: GroupId,
    storage: Arc<GroupStorage>,
    mut metrics: watch::Receiver<RaftMetrics>,
    mut apply_target: watch::Receiver<u64>,
    status: watch::Sender<GroupStatus>,
) {
    let mut applied = storage.subscribe();
    // The term in which this node, leading, has applied an entry of its own term.
    let mut ready_term = None;
    loop {
        let m = metrics.borrow_and_update().clone();
        let target = m.last_applied.max(*apply_target.borrow_and_update());
        if let Err(error) = apply(&storage, target).await {
            tracing::error!(group = %group, %error, "applying committed entries failed; the group stops serving");
            publish(&status, stopped(&m));
            return;
        }
        let last_applied = applied.borrow_and_update().last_applied;
        let leads = m.state == State::Leader && m.current_leader == Some(node.0);
        if leads && ready_term != Some(m.current_term) {
            let log = StoredLog {
                store: storage.store(),
                group,
            };
            match log.term_of(last_applied) {
                Ok(Some(term)) if term == m.current_term => ready_term = Some(term),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(group = %group, %error, "reading the applied entry's term failed")
                }
            }
        }
        let next = GroupStatus {
            role: role_of(&m),
            leader: leader_of(&m),
            term: m.current_term,
            ready: leads && ready_term == Some(m.current_term),
        };
        if *status.borrow() != next {
            tracing::debug!(%group, role = ?next.role, leader = ?next.leader, term = next.term, ready = next.ready, last_log = m.last_log_index, last_applied, "group status");
        }
        publish(&status, next);
        if m.state == State::Shutdown {
            return;
        }
        tokio::select! {
            biased;
            changed = metrics.changed() => if changed.is_err() {
                publish(&status, stopped(&m));
                return;
            },
            _ = apply_target.changed() => {},
            _ = applied.changed() => {},
        }
    }
}

/// Applies our log up to `target`. Both sources name entries our log holds: async-raft's
/// applied index never passes its log, and the dispatcher's target is what a message verified
/// there (committed, so no later leader truncates it).
async fn apply(storage: &GroupStorage, target: u64) -> anyhow::Result<()> {
    let state = storage.subscribe().borrow().last_applied;
    if target > state {
        storage.apply_up_to(target).await?;
    }
    Ok(())
}

fn stopped(m: &RaftMetrics) -> GroupStatus {
    GroupStatus {
        role: GroupRole::Stopped,
        leader: None,
        term: m.current_term,
        ready: false,
    }
}

fn publish(status: &watch::Sender<GroupStatus>, next: GroupStatus) {
    status.send_if_modified(|current| {
        let changed = *current != next;
        if changed {
            *current = next;
        }
        changed
    });
}
