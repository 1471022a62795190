//! Where replicas go, free of I/O. The metadata leader places a new topic's partitions and
//! picks the destination of every move here; the result is committed through the metadata
//! group, so nodes never compute placements of their own.
//!
//! Hard constraints: a partition's replicas are on distinct nodes, each a live `Active` member
//! (the caller passes only those as candidates). Soft ones, in this order: distinct racks, then
//! even counts in the topic, then even counts across the cluster. For the first replica (the
//! founding replica and preferred leader) the leader count comes before the replica count at
//! each level; a follower goes, among equally loaded nodes, to the one with the most leaders,
//! since the others will take leaders (and with them replicas) later. Over many topic shapes
//! (see the tests) this keeps a topic's counts within one and the cluster's within two. Ties
//! go to the highest rendezvous hash of (topic, partition, node), so the same inputs always
//! give the same placement and adding a node changes few choices.

#[cfg(test)]
mod tests;

use crate::api::ApiError;
use crate::metadata::validate::validate_replication_factor;
use crate::metadata::MetadataView;
use gregor_storage::{NodeId, PartitionId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A node that may receive replicas: live and `Active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub rack: Option<String>,
}

/// Replicas and preferred leaders per node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    pub replicas: BTreeMap<NodeId, u32>,
    pub leaders: BTreeMap<NodeId, u32>,
}

impl Load {
    /// The cluster's load as the metadata assigns it (moves' newcomers count; the preferred
    /// leader is the first replica in force).
    pub fn of_cluster(view: &MetadataView) -> Load {
        let mut load = Load::default();
        for topic in view.topics() {
            load.add_topic(
                topic
                    .assignments
                    .iter()
                    .map(|a| (a.members(), a.preferred_leader())),
            );
        }
        load
    }

    /// One topic's load.
    pub fn of_topic(view: &MetadataView, topic: &str) -> Load {
        let mut load = Load::default();
        if let Some(topic) = view.topic(topic) {
            load.add_topic(
                topic
                    .assignments
                    .iter()
                    .map(|a| (a.members(), a.preferred_leader())),
            );
        }
        load
    }

    fn add_topic(&mut self, partitions: impl Iterator<Item = (Vec<NodeId>, NodeId)>) {
        for (members, leader) in partitions {
            for node in members {
                self.add_replica(node);
            }
            *self.leaders.entry(leader).or_default() += 1;
        }
    }

    pub fn replicas_on(&self, node: NodeId) -> u32 {
        self.replicas.get(&node).copied().unwrap_or(0)
    }

    pub fn leaders_on(&self, node: NodeId) -> u32 {
        self.leaders.get(&node).copied().unwrap_or(0)
    }

    pub fn add_replica(&mut self, node: NodeId) {
        *self.replicas.entry(node).or_default() += 1;
    }

    pub fn remove_replica(&mut self, node: NodeId) {
        if let Some(count) = self.replicas.get_mut(&node) {
            *count = count.saturating_sub(1);
        }
    }
}

/// The tie-break: a 64-bit hash of (topic, partition, node), stable across builds and
/// platforms (FNV-1a, then a splitmix64 finaliser to spread close inputs).
pub fn rendezvous(topic: &str, partition: PartitionId, node: NodeId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let (partition, node) = (partition.0.to_be_bytes(), node.0.to_be_bytes());
    for byte in topic.as_bytes().iter().chain(&partition).chain(&node) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// What one choice weighs: cluster-wide and this topic's counts.
pub struct Placer<'a> {
    topic: &'a str,
    candidates: &'a [Candidate],
    cluster: Load,
    topic_load: Load,
}

impl<'a> Placer<'a> {
    pub fn new(
        topic: &'a str,
        candidates: &'a [Candidate],
        cluster: Load,
        topic_load: Load,
    ) -> Self {
        Placer {
            topic,
            candidates,
            cluster,
            topic_load,
        }
    }

    fn rack_of(&self, node: NodeId) -> Option<&str> {
        self.candidates
            .iter()
            .find(|c| c.node == node)
            .and_then(|c| c.rack.as_deref())
    }

    /// The best candidate for one more replica of `partition`, which already has `chosen` (and
    /// must also avoid `excluded`); `None` when no candidate is left.
    pub fn choose(
        &self,
        partition: PartitionId,
        chosen: &[NodeId],
        excluded: &[NodeId],
        leader: bool,
    ) -> Option<NodeId> {
        let racks: BTreeSet<&str> = chosen.iter().filter_map(|n| self.rack_of(*n)).collect();
        self.candidates
            .iter()
            .filter(|c| !chosen.contains(&c.node) && !excluded.contains(&c.node))
            .min_by_key(|c| {
                let node = c.node;
                let rack_taken = c.rack.as_deref().is_some_and(|r| racks.contains(r));
                let leaders = |load: &Load| {
                    let count = i64::from(load.leaders_on(node));
                    if leader {
                        count
                    } else {
                        -count
                    }
                };
                (
                    rack_taken,
                    leader.then(|| leaders(&self.topic_load)),
                    self.topic_load.replicas_on(node),
                    (!leader).then(|| leaders(&self.topic_load)),
                    leader.then(|| leaders(&self.cluster)),
                    self.cluster.replicas_on(node),
                    (!leader).then(|| leaders(&self.cluster)),
                    Reverse(rendezvous(self.topic, partition, node)),
                )
            })
            .map(|c| c.node)
    }

    /// Counts a placed replica, so later choices see it.
    pub fn record(&mut self, node: NodeId, leader: bool) {
        self.cluster.add_replica(node);
        self.topic_load.add_replica(node);
        if leader {
            *self.cluster.leaders.entry(node).or_default() += 1;
            *self.topic_load.leaders.entry(node).or_default() += 1;
        }
    }
}

/// Places every partition of a new topic: `factor` replicas each, founding replica first.
///
/// # Errors
/// `INVALID_REPLICATION_FACTOR` when the factor is outside 1..=5 or above the number of
/// candidates, saying how many nodes are live.
pub fn place_topic(
    topic: &str,
    partitions: u32,
    factor: u16,
    candidates: &[Candidate],
    cluster: &Load,
) -> Result<Vec<Vec<NodeId>>, ApiError> {
    validate_replication_factor(factor, candidates.len())?;
    let mut placer = Placer::new(topic, candidates, cluster.clone(), Load::default());
    let assignment = (0..partitions)
        .map(|p| {
            let partition = PartitionId(p);
            let mut replicas = Vec::with_capacity(usize::from(factor));
            for slot in 0..factor {
                let leader = slot == 0;
                let node = placer
                    .choose(partition, &replicas, &[], leader)
                    .expect("the factor is at most the number of candidates");
                placer.record(node, leader);
                replicas.push(node);
            }
            replicas
        })
        .collect();
    Ok(assignment)
}
