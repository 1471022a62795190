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
use crate::dispatch::GroupChanges;
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
    changes: GroupChanges,
) {
    let mut applied = storage.subscribe();
    let mut voters = None;
    let log = StoredLog {
        store: storage.store(),
        group,
    };
    let mut readiness = Readiness::default();
    loop {
        let m = metrics.borrow_and_update().clone();
        let target = m.last_applied.max(*apply_target.borrow_and_update());
        if let Err(error) = apply(&storage, target).await {
            tracing::error!(group = %group, %error, "applying committed entries failed; the group stops serving");
            publish(&status, stopped(&m));
            changes.note();
            return;
        }
        let last_applied = applied.borrow_and_update().last_applied;
        let leads = m.state == State::Leader && m.current_leader == Some(node.0);
        if let Err(error) = readiness.observe(&log, leads, m.current_term, last_applied) {
            tracing::warn!(group = %group, %error, "reading the log for readiness failed");
        }
        let next = GroupStatus {
            role: role_of(&m),
            leader: leader_of(&m),
            term: m.current_term,
            ready: leads && readiness.ready_in(m.current_term),
        };
        if *status.borrow() != next {
            tracing::debug!(%node, %group, role = ?next.role, leader = ?next.leader, term = next.term, ready = next.ready, last_log = m.last_log_index, last_applied, "group status");
        }
        let moved = publish(&status, next);
        if moved || voters.as_ref() != Some(&m.membership_config) {
            voters = Some(m.membership_config.clone());
            changes.note();
        }
        if m.state == State::Shutdown {
            return;
        }
        tokio::select! {
            biased;
            changed = metrics.changed() => if changed.is_err() {
                publish(&status, stopped(&m));
                changes.note();
                return;
            },
            _ = apply_target.changed() => {},
            _ = applied.changed() => {},
        }
    }
}

/// Whether this node, leading, has applied everything committed before its leadership began.
///
/// Applying an entry of its own term is the usual test, but async-raft restarts a lone member
/// as leader in its stored term, without an election: after a power cut took the (unsynced)
/// apply of committed entries, the applied state can already end on an entry of that term
/// while committed entries after it wait to be applied again. So the leader must also have
/// applied up to the end of its log as it stood when its leadership was first seen: every
/// entry committed before then is in that log (Raft's leader completeness).
#[derive(Debug, Default)]
struct Readiness {
    /// The term of the leadership seen and the last index of our log when it was first seen.
    leading: Option<(u64, u64)>,
    /// The term in which this node, leading, became ready.
    ready_term: Option<u64>,
}

impl Readiness {
    fn observe(
        &mut self,
        log: &impl LogView,
        leads: bool,
        term: u64,
        last_applied: u64,
    ) -> anyhow::Result<()> {
        if !leads {
            self.leading = None;
            return Ok(());
        }
        if self.ready_term == Some(term) {
            return Ok(());
        }
        let floor = match self.leading {
            Some((seen, floor)) if seen == term => floor,
            _ => {
                let (last_index, _) = log.last()?;
                self.leading = Some((term, last_index));
                last_index
            }
        };
        if last_applied >= floor && log.term_of(last_applied)? == Some(term) {
            self.ready_term = Some(term);
        }
        Ok(())
    }

    fn ready_in(&self, term: u64) -> bool {
        self.ready_term == Some(term)
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

/// Returns whether the status changed.
fn publish(status: &watch::Sender<GroupStatus>, next: GroupStatus) -> bool {
    status.send_if_modified(|current| {
        let changed = *current != next;
        if changed {
            *current = next;
        }
        changed
    })
}

#[cfg(test)]
mod tests {
    use super::Readiness;
    use crate::dispatch::log::MemoryLog;

    #[test]
    fn a_leader_in_its_old_term_is_ready_once_it_applied_its_log_as_it_found_it() {
        // A lone member restarted in term 2: entries 1..=4 (terms 1, 2, 2, 2), applied to 2.
        let mut log = MemoryLog {
            floor: (0, 0),
            terms: vec![1, 2, 2, 2],
        };
        let mut readiness = Readiness::default();
        readiness.observe(&log, true, 2, 2).unwrap();
        assert!(
            !readiness.ready_in(2),
            "entry 2 is of term 2, but 3 and 4 wait"
        );
        log.terms.push(2); // its blank entry
        readiness.observe(&log, true, 2, 3).unwrap();
        assert!(!readiness.ready_in(2));
        readiness.observe(&log, true, 2, 4).unwrap();
        assert!(readiness.ready_in(2), "everything it found is applied");
    }

    #[test]
    fn an_elected_leader_still_needs_an_entry_of_its_own_term() {
        let mut log = MemoryLog {
            floor: (0, 0),
            terms: vec![1, 1],
        };
        let mut readiness = Readiness::default();
        readiness.observe(&log, true, 3, 2).unwrap();
        assert!(!readiness.ready_in(3), "entry 2 is of an older term");
        log.terms.push(3);
        readiness.observe(&log, true, 3, 3).unwrap();
        assert!(readiness.ready_in(3));
        readiness.observe(&log, false, 3, 3).unwrap();
        readiness.observe(&log, true, 4, 3).unwrap();
        assert!(!readiness.ready_in(4), "a new leadership is judged afresh");
    }
}
