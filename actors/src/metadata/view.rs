//! [`MetadataView`]: the applied metadata in memory. Every node holds one, rebuilt from the
//! rows at start and updated by every apply; readers get it as a shared snapshot.

use super::records::{NodeRecord, NodeState, PartitionAssignment, TopicView};
use gregor_storage::{GroupId, NodeId, PartitionId, TopicId};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataView {
    pub(super) nodes: BTreeMap<NodeId, NodeRecord>,
    /// Topics by name. Each behind an `Arc`, so publishing a view after an apply copies
    /// pointers, not every partition's assignment.
    pub(super) topics: BTreeMap<String, Arc<TopicView>>,
    pub(super) names: BTreeMap<TopicId, String>,
    pub(super) next_topic_id: u64,
    pub(super) next_producer_id: u64,
    /// The metadata log index of the last command applied into this view.
    pub(super) last_index: u64,
}

impl Default for MetadataView {
    fn default() -> Self {
        MetadataView {
            nodes: BTreeMap::new(),
            topics: BTreeMap::new(),
            names: BTreeMap::new(),
            next_topic_id: 1,
            next_producer_id: 0,
            last_index: 0,
        }
    }
}

/// One replica a node hosts (or must host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedPartition {
    pub topic: Arc<TopicView>,
    pub partition: PartitionId,
}

impl HostedPartition {
    pub fn group(&self) -> GroupId {
        self.topic.record.group_of(self.partition)
    }

    pub fn assignment(&self) -> &PartitionAssignment {
        &self.topic.assignments[self.partition.0 as usize]
    }
}

impl MetadataView {
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn next_topic_id(&self) -> u64 {
        self.next_topic_id
    }

    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    pub fn node(&self, node: NodeId) -> Option<&NodeRecord> {
        self.nodes.get(&node)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// Registered members in `state`.
    pub fn nodes_in(&self, state: NodeState) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(move |n| n.state == state)
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicView>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: TopicId) -> Option<&Arc<TopicView>> {
        self.names.get(&id).and_then(|name| self.topics.get(name))
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicView>> {
        self.topics.values()
    }

    /// The (topic, partition) a partition group belongs to.
    pub fn partition_of_group(&self, group: GroupId) -> Option<HostedPartition> {
        let topic = self.topic_by_id(TopicId(group.0 / GroupId::PARTITION_SLOTS))?;
        let partition = PartitionId((group.0 % GroupId::PARTITION_SLOTS) as u32);
        (partition.0 < topic.record.partitions).then(|| HostedPartition {
            topic: topic.clone(),
            partition,
        })
    }

    /// Every partition `node` must host now (replica sets in force, plus moves' targets).
    pub fn hosted_by(&self, node: NodeId) -> Vec<HostedPartition> {
        let mut hosted = Vec::new();
        for topic in self.topics.values() {
            for (p, assignment) in topic.assignments.iter().enumerate() {
                if assignment.hosts(node) {
                    hosted.push(HostedPartition {
                        topic: topic.clone(),
                        partition: PartitionId(p as u32),
                    });
                }
            }
        }
        hosted
    }

    /// Replicas per node, counting moves' newcomers.
    pub fn replica_counts(&self) -> BTreeMap<NodeId, u32> {
        let mut counts: BTreeMap<NodeId, u32> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for topic in self.topics.values() {
            for assignment in &topic.assignments {
                for node in assignment.members() {
                    *counts.entry(node).or_default() += 1;
                }
            }
        }
        counts
    }

    /// Partitions whose move has not completed.
    pub fn moves_in_progress(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| t.assignments.iter())
            .filter(|a| a.target.is_some())
            .count()
    }
}
