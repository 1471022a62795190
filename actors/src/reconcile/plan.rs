//! The reconciler's decisions, free of I/O: what the applied metadata says this node must host,
//! against what it runs and stores, gives the replicas to start, stop and delete.

use crate::metadata::{HostedPartition, MetadataView};
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// How a replica's Raft group comes to be on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartMode {
    /// The founding replica (the preferred leader) of a partition that has completed no move
    /// (one may be in progress) and whose log here is empty: initialises the group with every replica of the assignment as its
    /// members and stands for election at once, so the partition's first leader is its
    /// preferred one and no membership change (nor the step-down after one) is needed. Only
    /// this replica ever initialises the group.
    Found,
    /// Another replica of such a partition: starts with the founding configuration, votes for
    /// founding members only, and stands only after async-raft's first-election delay.
    Seed { founder: NodeId },
    /// Placed here later: starts empty, as a learner, and waits for the leader to bring it in.
    Join,
    /// The group has state here: carries on from it.
    Restart,
}

/// What this node has, as the reconciler's executor knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// Replicas running now.
    pub running: BTreeSet<GroupId>,
    /// Groups recorded as hosted in the node-local registry (running or not).
    pub stored: BTreeSet<GroupId>,
    /// Groups with a durable deletion marker: their data is being removed.
    pub deleting: BTreeSet<GroupId>,
    /// Groups that have Raft state in storage (a hard state or log entries).
    pub with_state: BTreeSet<GroupId>,
    /// Groups whose log holds entries (or a snapshot's floor): a subset of `with_state`.
    pub with_log: BTreeSet<GroupId>,
}

/// One step for the executor. Within a plan, stops come first, then deletions, then starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop the running replica (its data is deleted by the `Delete` that follows).
    Stop { group: GroupId },
    /// Write the deletion marker if there is none, then remove the group's data in bounded
    /// steps; resumed from the marker after a restart.
    Delete { group: GroupId },
    Start {
        replica: HostedPartition,
        mode: StartMode,
    },
}

/// The steps that bring `local` to what `view` assigns to `node`.
///
/// A group that is both wanted and being deleted (a replica moved away and back) finishes its
/// deletion first and starts on a later plan, as a `Join`: a replica never starts on half its
/// old data.
pub fn plan(view: &MetadataView, node: NodeId, local: &Local) -> Vec<Action> {
    let desired: BTreeMap<GroupId, HostedPartition> = view
        .hosted_by(node)
        .into_iter()
        .map(|replica| (replica.group(), replica))
        .collect();
    let mut stops = Vec::new();
    let mut deletes = BTreeSet::new();
    let mut starts = Vec::new();
    for group in &local.running {
        if !desired.contains_key(group) {
            stops.push(Action::Stop { group: *group });
            deletes.insert(*group);
        }
    }
    for group in local.stored.iter().chain(&local.deleting) {
        if !desired.contains_key(group) || local.deleting.contains(group) {
            deletes.insert(*group);
        }
    }
    for (group, replica) in desired {
        if local.running.contains(&group) || local.deleting.contains(&group) {
            continue;
        }
        let founders = replica
            .topic
            .founding_replicas(replica.partition)
            .filter(|founders| founders.contains(&node));
        // A founding replica whose log is empty keeps its founding configuration even if it
        // has voted (its term and vote are kept): restarted like any replica with state it
        // would start with no configuration, refuse every vote, and a group whose founding
        // members all voted once and crashed before their first entry would never elect
        // (five-node simulation seed 122).
        let mode = match founders {
            _ if local.with_log.contains(&group) => StartMode::Restart,
            Some(founders) if founders[0] == node => StartMode::Found,
            Some(founders) => StartMode::Seed {
                founder: founders[0],
            },
            None if local.with_state.contains(&group) => StartMode::Restart,
            None => StartMode::Join,
        };
        starts.push(Action::Start { replica, mode });
    }
    let mut actions = stops;
    actions.extend(deletes.into_iter().map(|group| Action::Delete { group }));
    actions.extend(starts);
    actions
}
