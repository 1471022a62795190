//! [`Directory`]: the node's routing table. It joins the applied metadata (which topics and
//! partitions exist, where their replicas are), the replicas this node runs (written by the
//! reconciler) and the leadership hints of the others, so every request finds where it goes
//! without an extra hop: to a local replica, or to the node a `NOT_LEADER` names.

use crate::api::ApiError;
use crate::hints::{LeaderHints, Leadership};
use crate::metadata::{MetadataView, TopicRecord, TopicView};
use crate::partition::PartitionReplica;
use crate::shards::ShardPlace;
use actix::Addr;
use gregor_cluster::{GroupChanges, RaftGroup};
use gregor_storage::{GroupId, NodeId, PartitionId, PartitionState, TopicId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;

/// A replica running on this node.
#[derive(Clone)]
pub struct ReplicaHandle {
    pub topic: TopicRecord,
    pub partition: PartitionId,
    pub addr: Addr<PartitionReplica>,
    pub group: Arc<RaftGroup>,
    pub state: watch::Receiver<PartitionState>,
    /// The shard the replica's actor and Raft group run on.
    pub shard: ShardPlace,
}

pub struct Directory {
    node: NodeId,
    view: watch::Receiver<Arc<MetadataView>>,
    replicas: RwLock<BTreeMap<GroupId, ReplicaHandle>>,
    /// Moves whenever a replica is inserted or removed.
    replicas_changed: AtomicU64,
    group_changes: GroupChanges,
    hints: RwLock<LeaderHints>,
}

/// What a pass over every local replica depends on: the applied metadata, the set of local
/// replicas, and their groups' statuses and voters. Two equal snapshots mean a pass would see
/// the same inputs (offsets aside), so periodic loops skip it.
#[derive(Clone)]
pub struct LocalSnapshot {
    view: Arc<MetadataView>,
    replicas: u64,
    groups: u64,
}

impl PartialEq for LocalSnapshot {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.view, &other.view)
            && (self.replicas, self.groups) == (other.replicas, other.groups)
    }
}

/// The group of `partition` of `topic`.
///
/// # Errors
/// `UNKNOWN_PARTITION`.
fn group_of(topic: &TopicView, partition: PartitionId) -> Result<GroupId, ApiError> {
    if partition.0 >= topic.record.partitions {
        return Err(ApiError::unknown_partition(
            &topic.record.name,
            partition,
            topic.record.partitions,
        ));
    }
    Ok(topic.record.group_of(partition))
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Directory {
    /// `group_changes`: the node's counter of group status and voter changes (its
    /// dispatcher's).
    pub fn new(
        node: NodeId,
        view: watch::Receiver<Arc<MetadataView>>,
        group_changes: GroupChanges,
    ) -> Directory {
        Directory {
            node,
            view,
            replicas: RwLock::new(BTreeMap::new()),
            replicas_changed: AtomicU64::new(0),
            group_changes,
            hints: RwLock::new(LeaderHints::default()),
        }
    }

    /// Read before a pass over the local replicas; see [`LocalSnapshot`]. The counts are read
    /// before the view, so a change racing with the read shows as a change next time.
    pub fn snapshot(&self) -> LocalSnapshot {
        let replicas = self.replicas_changed.load(Ordering::SeqCst);
        let groups = self.group_changes.count();
        LocalSnapshot {
            view: self.view(),
            replicas,
            groups,
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The applied metadata as of now.
    pub fn view(&self) -> Arc<MetadataView> {
        self.view.borrow().clone()
    }

    pub fn watch_view(&self) -> watch::Receiver<Arc<MetadataView>> {
        self.view.clone()
    }

    pub fn insert(&self, replica: ReplicaHandle) {
        let group = replica.group.id();
        write(&self.replicas).insert(group, replica);
        self.replicas_changed.fetch_add(1, Ordering::SeqCst);
    }

    pub fn remove(&self, group: GroupId) -> Option<ReplicaHandle> {
        let removed = write(&self.replicas).remove(&group);
        self.replicas_changed.fetch_add(1, Ordering::SeqCst);
        removed
    }

    pub fn drain(&self) -> Vec<ReplicaHandle> {
        let drained = std::mem::take(&mut *write(&self.replicas));
        self.replicas_changed.fetch_add(1, Ordering::SeqCst);
        drained.into_values().collect()
    }

    /// The replica of `group` if it runs here.
    pub fn local(&self, group: GroupId) -> Option<ReplicaHandle> {
        read(&self.replicas).get(&group).cloned()
    }

    /// Every replica running here.
    pub fn locals(&self) -> Vec<ReplicaHandle> {
        read(&self.replicas).values().cloned().collect()
    }

    pub fn running(&self) -> std::collections::BTreeSet<GroupId> {
        read(&self.replicas).keys().copied().collect()
    }

    /// # Errors
    /// `UNKNOWN_TOPIC`.
    pub fn topic(&self, name: &str) -> Result<Arc<TopicView>, ApiError> {
        self.view()
            .topic(name)
            .cloned()
            .ok_or_else(|| ApiError::unknown_topic(name))
    }

    pub fn name_of(&self, id: TopicId) -> Option<String> {
        self.view().topic_by_id(id).map(|t| t.record.name.clone())
    }

    /// # Errors
    /// `UNKNOWN_TOPIC` or `UNKNOWN_PARTITION`.
    pub fn partition(
        &self,
        name: &str,
        partition: PartitionId,
    ) -> Result<(Arc<TopicView>, GroupId), ApiError> {
        let topic = self.topic(name)?;
        let group = group_of(&topic, partition)?;
        Ok((topic, group))
    }

    /// The local replica of a partition.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` or `UNKNOWN_PARTITION`; `NOT_LEADER` naming the leader when the
    /// partition has no replica here.
    pub fn replica(&self, name: &str, partition: PartitionId) -> Result<ReplicaHandle, ApiError> {
        let (_, group) = self.partition(name, partition)?;
        self.local(group)
            .ok_or_else(|| ApiError::not_leader(self.leader(group)))
    }

    /// The local replica of a partition of the incarnation `topic_id` of topic `name` (the one
    /// a client resolved the name to); `None`: whatever topic bears the name now. The group is
    /// derived from the id, so the replica found is of that incarnation even if the topic is
    /// deleted meanwhile.
    ///
    /// # Errors
    /// As [`Directory::replica`]; `UNKNOWN_TOPIC_ID` when the applied metadata shows that
    /// incarnation gone; `NOT_LEADER` without a leader when it has not applied its creation yet
    /// (the client learned of it from a node further ahead and retries once this one catches
    /// up).
    pub fn replica_of_incarnation(
        &self,
        name: &str,
        partition: PartitionId,
        topic_id: Option<TopicId>,
    ) -> Result<ReplicaHandle, ApiError> {
        let Some(id) = topic_id else {
            return self.replica(name, partition);
        };
        let view = self.view();
        let topic = match view.topic(name) {
            Some(topic) if topic.record.id == id => topic,
            _ if id.0 >= view.next_topic_id() => return Err(ApiError::not_leader(None)),
            _ => return Err(ApiError::unknown_topic_id(name, id)),
        };
        let group = group_of(topic, partition)?;
        self.local(group)
            .ok_or_else(|| ApiError::not_leader(self.leader(group)))
    }

    /// Whether the local leader of `group` may step down: its Raft voters are exactly the
    /// partition's replicas, at least two, and no move is under way. A single voter that steps
    /// down never wins an election again (async-raft counts a candidate's own vote only when
    /// another answers), and a step-down in the middle of a membership change can strand it.
    pub fn may_step_down(&self, group: GroupId) -> bool {
        let Some(local) = self.local(group) else {
            return false;
        };
        let Some(partition) = self.view().partition_of_group(group) else {
            return false;
        };
        let assignment = partition.assignment();
        let replicas: std::collections::BTreeSet<NodeId> =
            assignment.replicas.iter().copied().collect();
        assignment.target.is_none() && replicas.len() >= 2 && local.group.voters() == replicas
    }

    /// Who leads `group`: the local group knows best; otherwise the newest hint.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        if let Some(local) = self.local(group) {
            if let Some(leader) = local.group.leader() {
                return Some(leader);
            }
        }
        read(&self.hints).get(group).map(|l| l.leader)
    }

    /// A hint's detail for `group` (its lagging replicas).
    pub fn leadership(&self, group: GroupId) -> Option<Leadership> {
        read(&self.hints).get(group).cloned()
    }

    pub fn hints(&self) -> RwLockWriteGuard<'_, LeaderHints> {
        write(&self.hints)
    }

    /// Leaders per node, from the local groups and the hints.
    pub fn leader_counts(&self) -> BTreeMap<NodeId, u32> {
        let mut leaders: BTreeMap<GroupId, NodeId> = read(&self.hints)
            .iter()
            .map(|(group, l)| (*group, l.leader))
            .collect();
        for (group, replica) in read(&self.replicas).iter() {
            if let Some(leader) = replica.group.leader() {
                leaders.insert(*group, leader);
            }
        }
        let mut counts = BTreeMap::new();
        for leader in leaders.into_values() {
            *counts.entry(leader).or_default() += 1;
        }
        counts
    }
}
