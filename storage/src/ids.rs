//! Identifier newtypes. The ones clients see live in `gregor-protocol` and are re-exported
//! here; a Raft group is a storage and cluster concept only.

pub use gregor_protocol::ids::{NodeId, Offset, PartitionId, TopicId};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Raft group. Group 0 is the metadata group; every partition gets its own id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct GroupId(pub u64);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl GroupId {
    pub const METADATA: GroupId = GroupId(0);
    /// Partitions per topic are capped at 10,000, so 2^14 slots per topic keep ids disjoint.
    pub const PARTITION_SLOTS: u64 = 1 << 14;

    pub fn for_partition(topic: TopicId, partition: PartitionId) -> GroupId {
        assert!(
            u64::from(partition.0) < Self::PARTITION_SLOTS,
            "partition beyond the id space"
        );
        GroupId(topic.0 * Self::PARTITION_SLOTS + u64::from(partition.0))
    }
}
