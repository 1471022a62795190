//! Consumer groups' committed offsets.

use crate::ids::{Offset, PartitionId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: PartitionId,
    /// The next offset the group will read (Kafka convention).
    pub offset: Offset,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsets {
    pub group: String,
    pub offsets: Vec<OffsetCommit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOffsets {
    pub group: String,
    /// `None`: every topic the group has committed for.
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: PartitionId,
    pub offset: Offset,
    pub metadata: Option<String>,
    /// Broker time of the commit, ms since the epoch.
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListGroups {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeGroup {
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    pub group: String,
    pub partitions: Vec<GroupPartitionLag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPartitionLag {
    pub topic: String,
    pub partition: PartitionId,
    pub committed: Offset,
    pub log_end: Offset,
    pub lag: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(Offset),
    /// First offset at or after this time, ms since the epoch.
    Timestamp(i64),
    /// First offset at or after `now - ms` (broker clock): "re-process the last 5 hours".
    DurationAgo(u64),
}

/// Move a group's committed offsets for every partition of `topic`. Offsets outside the log
/// are clamped into `[log start, log end]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsets {
    pub group: String,
    pub topic: String,
    pub to: ResetTarget,
    /// Report what would change without committing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetReset {
    pub partition: PartitionId,
    pub previous: Option<Offset>,
    pub offset: Offset,
}
