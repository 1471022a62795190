//! Consumer groups: committed offsets, and membership through `ConsumerGroupHeartbeat`
//! (Kafka's KIP-848 protocol: the coordinator assigns partitions, members converge by
//! heartbeating).

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
    /// The committing member and its epoch; `None` for a commit outside the membership
    /// protocol (manual assignment, tools), allowed only while the group has no members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberRef>,
}

/// A group member as a commit names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRef {
    pub member_id: String,
    pub member_epoch: i32,
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
    /// `"empty"` (no members), `"assigning"`/`"reconciling"` (members converging to a new
    /// target assignment) or `"stable"`.
    #[serde(default)]
    pub state: String,
    /// The group epoch (Kafka's generation): bumped by every change of membership,
    /// subscriptions or subscribed topics' partitions.
    #[serde(default)]
    pub group_epoch: i32,
    #[serde(default)]
    pub members: Vec<MemberDescription>,
    /// The session timeout of members that do not ask for one of their own, ms (the group's
    /// configured value within the broker's bounds, else the broker's default); 0 from a
    /// broker that does not say.
    #[serde(default)]
    pub session_timeout_ms: u32,
}

/// A member as `DescribeGroup` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    /// The member's address as the broker saw it, when known.
    pub host: Option<String>,
    pub member_epoch: i32,
    pub subscription: Subscription,
    /// The partitions it owns now.
    pub assigned: Vec<TopicPartitions>,
    /// Partitions it was asked to release and has not yet released.
    pub revoking: Vec<TopicPartitions>,
}

/// What a member subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subscription {
    /// These topics (those that do not exist yet are picked up when they are created).
    Topics(Vec<String>),
    /// Every non-internal topic whose whole name matches this regular expression.
    Pattern(String),
}

/// Some partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<PartitionId>,
}

/// `member_epoch` to join a group.
pub const JOIN_EPOCH: i32 = 0;
/// `member_epoch` to leave a group.
pub const LEAVE_EPOCH: i32 = -1;
/// `member_epoch` for a static member to leave while keeping its partitions for its session
/// timeout, so that it can come back (a restart) without a rebalance.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// A member's heartbeat: joins (`member_id` empty, epoch 0), stays (its current epoch), or
/// leaves (epoch -1, or -2 for a static member that will be back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupHeartbeat {
    pub group: String,
    /// Empty to join: the coordinator names the member.
    pub member_id: String,
    pub member_epoch: i32,
    /// Static membership (Kafka's `group.instance.id`).
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub client_id: String,
    /// Required to join; `None` afterwards means unchanged.
    pub subscription: Option<Subscription>,
    /// `"range"`, `"uniform"` or `"cooperative-sticky"`; `None`: the group's (by default
    /// cooperative-sticky).
    pub server_assignor: Option<String>,
    /// The partitions the member owns now; `None`: unchanged since its last heartbeat.
    pub owned: Option<Vec<TopicPartitions>>,
    pub rebalance_timeout_ms: u32,
    /// The member's session timeout; `None`: the broker's default (45 s).
    pub session_timeout_ms: Option<u32>,
    /// The member's address, when the client knows it.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupHeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    /// When to heartbeat next at the latest.
    pub heartbeat_interval_ms: u32,
    /// The partitions the member is to own, when they differ from what it reported owning:
    /// release the ones it owns that are not here (committing first), then start the new ones.
    pub assignment: Option<Vec<TopicPartitions>>,
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

/// A group's configuration (Kafka's dynamic group configs): `AlterGroupConfig` sets it,
/// `DescribeGroupConfig` shows it. Durable in the group's rows; a group that does not exist
/// yet is created with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterGroupConfig {
    pub group: String,
    /// Kafka's `group.consumer.session.timeout.ms`: members that do not ask for a timeout of
    /// their own are expelled after this long without a heartbeat. Within the broker's
    /// bounds, else `INVALID_SESSION_TIMEOUT`; `None` goes back to the broker's default.
    pub session_timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeGroupConfig {
    pub group: String,
}

/// A group's configuration and the broker's bounds for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfigDescription {
    pub group: String,
    /// The group's own value; `None`: the broker's default applies.
    pub session_timeout_ms: Option<u32>,
    /// What members that do not ask for a timeout of their own get.
    pub effective_session_timeout_ms: u32,
    /// The broker's default and bounds (`group.consumer.session.timeout.ms`,
    /// `group.consumer.min.session.timeout.ms`, `group.consumer.max.session.timeout.ms`).
    pub default_session_timeout_ms: u32,
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
}
