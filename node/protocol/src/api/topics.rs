//! Topic administration and cluster metadata.

use crate::ids::{NodeId, Offset, PartitionId, TopicId};
use serde::{Deserialize, Serialize};

pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1024 * 1024;
pub const MAX_PARTITIONS: u32 = 10_000;
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic's effective configuration. `-1` means unlimited, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// Largest record batch accepted, in bytes (Kafka's `max.message.bytes`).
    pub max_message_bytes: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: -1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Settings given at creation; `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfigOverrides {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub max_message_bytes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    /// nil or absent: every setting at its default.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub config: TopicConfigOverrides,
    /// Chosen by the client once per creation and sent again on every retry of it: a create
    /// that finds its topic already made with this id (and the same partitions and replication
    /// factor) is answered as a success, since an earlier attempt whose answer was lost made
    /// it. Absent (old clients) or nil: a topic that exists is `TOPIC_ALREADY_EXISTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_id: Option<u64>,
}

/// Reads nil (or, with `#[serde(default)]`, nothing) as the type's default.
fn nil_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopic {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopics {
    pub include_internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTopic {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub replication_factor: u16,
    pub internal: bool,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDescription {
    pub partition: PartitionId,
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
    pub log_start_offset: Offset,
    /// One past the last committed offset: the next offset a consumer will read.
    pub high_watermark: Offset,
    /// Replicas that are not caught-up voters of the partition's group, as its leader last
    /// said (empty when unknown).
    #[serde(default)]
    pub lagging: Vec<NodeId>,
}

/// Where each partition's leader is, for client routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// `None`: every non-internal topic.
    pub topics: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub node_id: NodeId,
    /// `host:port` of the client listener.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    pub partitions: Vec<PartitionMetadata>,
    /// This incarnation of the topic: ids are never reused and grow with each creation, so a
    /// topic deleted and created again under the same name has a new, larger id. Absent from
    /// brokers that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<TopicId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: PartitionId,
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
}
