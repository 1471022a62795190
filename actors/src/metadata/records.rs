//! What the metadata group records: members, topics and where each partition's replicas live.

use crate::api::{TopicConfig, TopicSummary};
use gregor_storage::{GroupId, NodeId, PartitionId, TopicId};
use serde::{Deserialize, Serialize};

/// A member's standing in the cluster. Only `Active` members receive new replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeState {
    Active,
    /// Everything is being moved off it; it receives nothing new.
    Draining,
    /// Gone for good: its id is never registered again.
    Removed,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
        }
    }
}

/// A registered member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Where clients reach it.
    pub client_addr: String,
    /// Where peers reach it (node transport and gossip).
    pub peer_addr: String,
    pub rack: Option<String>,
    pub state: NodeState,
}

/// A topic as the metadata group stores it, without its partitions' placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub internal: bool,
    pub config: TopicConfig,
    /// The id the creating client gave this creation, if it gave one; rows written before
    /// it existed have none.
    #[serde(default)]
    pub creation_id: Option<u64>,
}

impl TopicRecord {
    /// Whether a creation request for this topic's name is a retry of the one that made it:
    /// the same client-chosen id, partitions and replication factor.
    pub fn created_by(
        &self,
        creation_id: Option<u64>,
        partitions: u32,
        replication_factor: u16,
    ) -> bool {
        creation_id.is_some()
            && creation_id == self.creation_id
            && partitions == self.partitions
            && replication_factor == self.replication_factor
    }

    pub fn group_of(&self, partition: PartitionId) -> GroupId {
        GroupId::for_partition(self.id, partition)
    }

    pub fn summary(&self) -> TopicSummary {
        TopicSummary {
            name: self.name.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            internal: self.internal,
        }
    }
}

/// Where one partition's replicas are, and where they are going.
///
/// `revision` is the metadata log index of the last change to this assignment; a move names
/// the revision it was planned against, so two planners cannot both move from one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// The replica set in force. The first is the founding replica and preferred leader.
    pub replicas: Vec<NodeId>,
    /// A move in progress: the set the partition's Raft membership is converging to.
    pub target: Option<Vec<NodeId>>,
    /// Newcomers of a redirected move that the new target dropped. They may already be Raft
    /// members, so they keep their replicas until the move completes (the partition leader
    /// removes them from the membership first).
    #[serde(default)]
    pub retiring: Vec<NodeId>,
    pub revision: u64,
    /// The metadata log index at which `replicas` took force: the topic's creation, or the
    /// completion of the last move. Rows written before it was recorded have none.
    #[serde(default)]
    pub in_force_since: Option<u64>,
}

impl PartitionAssignment {
    /// Every node that must host a replica now: the set in force, then a move's newcomers,
    /// then the retiring ones.
    pub fn members(&self) -> Vec<NodeId> {
        let mut members = self.replicas.clone();
        for node in self.target.iter().flatten().chain(&self.retiring) {
            if !members.contains(node) {
                members.push(*node);
            }
        }
        members
    }

    pub fn hosts(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
            || self.target.as_ref().is_some_and(|t| t.contains(&node))
            || self.retiring.contains(&node)
    }

    pub fn preferred_leader(&self) -> NodeId {
        self.replicas[0]
    }

    /// Whether the set in force is still the one the partition was created with: no move has
    /// completed since (one may be in progress). Without the record of when the set took
    /// force, only an assignment unchanged since the creation counts.
    pub fn founding_set_in_force(&self, created_revision: u64) -> bool {
        match self.in_force_since {
            Some(since) => since == created_revision,
            None => self.revision == created_revision && self.target.is_none(),
        }
    }

    /// The set this partition ends up with once any move completes.
    pub fn destination(&self) -> &[NodeId] {
        self.target.as_deref().unwrap_or(&self.replicas)
    }
}

/// A topic with its partitions' placement, as the applied metadata holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    pub record: TopicRecord,
    /// The metadata log index of the topic's creation: a partition whose replicas in force
    /// took force then has never completed a move, so its first replica may found its Raft
    /// group.
    pub created_revision: u64,
    pub assignments: Vec<PartitionAssignment>,
}

impl TopicView {
    pub fn assignment(&self, partition: PartitionId) -> Option<&PartitionAssignment> {
        self.assignments.get(partition.0 as usize)
    }

    /// Whether `node` founds `partition`'s group: it is the first replica of the founding set,
    /// still in force.
    pub fn founds(&self, partition: PartitionId, node: NodeId) -> bool {
        self.founding_replicas(partition)
            .is_some_and(|replicas| replicas[0] == node)
    }

    /// The replicas `partition`'s group was founded with, while they are still the set in
    /// force (founder, the preferred leader, first). A move in progress does not end this: its
    /// first committed membership change needs a majority of the founding configuration, so
    /// until it completes a founding replica that holds no log may still be one the group
    /// needs for a quorum (five-node simulation seed 1625).
    pub fn founding_replicas(&self, partition: PartitionId) -> Option<&[NodeId]> {
        self.assignment(partition)
            .filter(|a| a.founding_set_in_force(self.created_revision))
            .map(|a| &a.replicas[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assignment row as written before the rows recorded when the set took force.
    #[derive(Serialize)]
    struct OldAssignment {
        replicas: Vec<NodeId>,
        target: Option<Vec<NodeId>>,
        retiring: Vec<NodeId>,
        revision: u64,
    }

    fn old_row(target: Option<Vec<NodeId>>, revision: u64) -> PartitionAssignment {
        let row = OldAssignment {
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
            target,
            retiring: Vec::new(),
            revision,
        };
        let bytes = rmp_serde::to_vec_named(&row).unwrap();
        rmp_serde::from_slice(&bytes).unwrap()
    }

    #[test]
    fn an_old_row_counts_as_founding_only_while_unchanged_since_the_creation() {
        let unchanged = old_row(None, 5);
        assert_eq!(unchanged.in_force_since, None);
        assert!(unchanged.founding_set_in_force(5));
        assert!(!old_row(Some(vec![NodeId(1), NodeId(2), NodeId(4)]), 6).founding_set_in_force(5));
        assert!(!old_row(None, 7).founding_set_in_force(5));
    }

    #[test]
    fn a_move_in_progress_keeps_the_founding_set_in_force_and_its_completion_ends_it() {
        let mut assignment = old_row(Some(vec![NodeId(1), NodeId(2), NodeId(4)]), 6);
        assignment.in_force_since = Some(5);
        assert!(assignment.founding_set_in_force(5));
        assignment.in_force_since = Some(7);
        assert!(!assignment.founding_set_in_force(5));
    }
}
