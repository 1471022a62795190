//! The public API: typed messages and their replies.
//!
//! Every request is a plain struct that is both an actix [`Message`] (send it to the actor that
//! owns it, in-process) and a msgpack body on the wire (the [`Request`] enum names it by `kind`).
//! Replies are `Result<_, ApiError>`; [`ErrorCode`]s are stable numbers, append-only.

use actix::Message;
use bytes::Bytes;
use gregor_storage::{NodeId, Offset, PartitionId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The wire protocol version this build speaks. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1024 * 1024;
pub const MAX_PARTITIONS: u32 = 10_000;
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// How much durability a producer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i8", into = "i8")]
pub enum Acks {
    /// Fire and forget: the broker sends no reply at all.
    None,
    /// Answered once the partition leader has the batch in its log.
    Leader,
    /// Answered once the batch is committed by the partition's Raft group (and fsynced).
    All,
}

impl TryFrom<i8> for Acks {
    type Error = String;
    fn try_from(v: i8) -> Result<Self, String> {
        match v {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            other => Err(format!("acks must be 0, 1 or -1 (all), not {other}")),
        }
    }
}
impl From<Acks> for i8 {
    fn from(a: Acks) -> i8 {
        match a {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

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

// ---------------------------------------------------------------- handshake

/// First frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub protocol_version: u16,
    pub node_id: NodeId,
    pub server_version: String,
    pub max_frame_bytes: u32,
}

// ---------------------------------------------------------------- topics

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<TopicDescription, ApiError>")]
pub struct CreateTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub config: TopicConfigOverrides,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct DeleteTopic {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<Vec<TopicSummary>, ApiError>")]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<TopicDescription, ApiError>")]
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
}

/// Where each partition's leader is, for client routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<ClusterMetadata, ApiError>")]
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: PartitionId,
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
}

// ---------------------------------------------------------------- records

/// Append record batches (Kafka v2 layout, see `gregor_storage::batch`) to one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<ProduceReply, ApiError>")]
pub struct Produce {
    pub topic: String,
    pub partition: PartitionId,
    pub acks: Acks,
    pub timeout_ms: u32,
    pub batches: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceReply {
    /// Offset of the first record of the first batch; the batches got contiguous offsets.
    pub base_offset: Offset,
    pub log_start_offset: Offset,
}

/// Read committed batches from `offset` on. The first batch may begin below `offset`: skip
/// those records, as Kafka clients do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<FetchReply, ApiError>")]
pub struct Fetch {
    pub topic: String,
    pub partition: PartitionId,
    pub offset: Offset,
    /// Soft limit: at least one batch is returned if one is available.
    pub max_bytes: u32,
    /// Wait up to this long for `min_bytes` to be available.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReply {
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub batches: Vec<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose record timestamp is >= this (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<ListOffsetsReply, ApiError>")]
pub struct ListOffsets {
    pub topic: String,
    pub partition: PartitionId,
    pub spec: OffsetSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsReply {
    /// For `Timestamp`, the log end offset when no record is that new.
    pub offset: Offset,
    /// For `Timestamp`, the timestamp of the record found.
    pub timestamp: Option<i64>,
}

// ---------------------------------------------------------------- consumer groups

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: PartitionId,
    /// The next offset the group will read (Kafka convention).
    pub offset: Offset,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct CommitOffsets {
    pub group: String,
    pub offsets: Vec<OffsetCommit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<Vec<CommittedOffset>, ApiError>")]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<Vec<String>, ApiError>")]
pub struct ListGroups {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<GroupDescription, ApiError>")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<Vec<OffsetReset>, ApiError>")]
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

// ---------------------------------------------------------------- the wire envelope

/// Every request, tagged by `kind` on the wire: `{"kind": "Produce", "body": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body")]
pub enum Request {
    Hello(Hello),
    CreateTopic(CreateTopic),
    DeleteTopic(DeleteTopic),
    ListTopics(ListTopics),
    DescribeTopic(DescribeTopic),
    Metadata(Metadata),
    Produce(Produce),
    Fetch(Fetch),
    ListOffsets(ListOffsets),
    CommitOffsets(CommitOffsets),
    FetchOffsets(FetchOffsets),
    ListGroups(ListGroups),
    DescribeGroup(DescribeGroup),
    ResetOffsets(ResetOffsets),
}

impl Request {
    /// Every `kind` this build understands, for telling "unknown kind" from "malformed body".
    pub const KINDS: &'static [&'static str] = &[
        "Hello",
        "CreateTopic",
        "DeleteTopic",
        "ListTopics",
        "DescribeTopic",
        "Metadata",
        "Produce",
        "Fetch",
        "ListOffsets",
        "CommitOffsets",
        "FetchOffsets",
        "ListGroups",
        "DescribeGroup",
        "ResetOffsets",
    ];
}

/// Replies, tagged like requests; the `kind` of a reply is the `kind` of its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body")]
pub enum Response {
    Hello(HelloReply),
    CreateTopic(TopicDescription),
    DeleteTopic(()),
    ListTopics(Vec<TopicSummary>),
    DescribeTopic(TopicDescription),
    Metadata(ClusterMetadata),
    Produce(ProduceReply),
    Fetch(FetchReply),
    ListOffsets(ListOffsetsReply),
    CommitOffsets(()),
    FetchOffsets(Vec<CommittedOffset>),
    ListGroups(Vec<String>),
    DescribeGroup(GroupDescription),
    ResetOffsets(Vec<OffsetReset>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client, echoed in the reply; replies may come out of order.
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    pub result: Result<Response, ApiError>,
}

// ---------------------------------------------------------------- errors

/// A stable error number. The list only grows; a retired code is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

macro_rules! error_codes {
    ($($name:ident = $value:expr, $retriable:expr;)*) => {
        impl ErrorCode {
            $(pub const $name: ErrorCode = ErrorCode($value);)*

            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => stringify!($name),)*
                    _ => "UNRECOGNIZED",
                }
            }

            /// Whether retrying the same request later can succeed.
            pub fn is_retriable(self) -> bool {
                match self.0 {
                    $($value => $retriable,)*
                    _ => false,
                }
            }

            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode($value),)*];
        }
    };
}

error_codes! {
    INTERNAL = 1, false;
    MALFORMED_FRAME = 2, false;
    FRAME_TOO_LARGE = 3, false;
    UNSUPPORTED_VERSION = 4, false;
    UNKNOWN_REQUEST = 5, false;
    HANDSHAKE_REQUIRED = 6, false;
    MALFORMED_REQUEST = 7, false;
    UNKNOWN_TOPIC = 10, false;
    UNKNOWN_PARTITION = 11, false;
    TOPIC_ALREADY_EXISTS = 12, false;
    INVALID_TOPIC_NAME = 13, false;
    INVALID_CONFIG = 14, false;
    INVALID_PARTITIONS = 15, false;
    INVALID_REPLICATION_FACTOR = 16, false;
    INTERNAL_TOPIC = 17, false;
    RECORD_TOO_LARGE = 20, false;
    CORRUPT_BATCH = 21, false;
    INVALID_BATCH = 22, false;
    OFFSET_OUT_OF_RANGE = 23, false;
    NOT_LEADER = 30, true;
    TIMEOUT = 31, true;
    UNAVAILABLE = 32, true;
    INVALID_GROUP = 40, false;
    UNKNOWN_GROUP = 41, false;
    STORAGE = 50, false;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Structured facts that come with some errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorDetail {
    /// With `OFFSET_OUT_OF_RANGE`: the offsets that can be fetched are `[log_start, log_end)`.
    OffsetRange {
        log_start_offset: Offset,
        log_end_offset: Offset,
    },
    /// With `NOT_LEADER`: where to go instead, if known.
    Leader { leader: Option<NodeId> },
}

/// An error reply: a stable code, a message for people, optional structured detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<ErrorDetail>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: ErrorDetail) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn unknown_topic(topic: &str) -> Self {
        ApiError::new(
            ErrorCode::UNKNOWN_TOPIC,
            format!("topic '{topic}' does not exist; create it with: gregor topic create {topic}"),
        )
    }

    pub fn unknown_partition(topic: &str, partition: PartitionId, partitions: u32) -> Self {
        ApiError::new(
            ErrorCode::UNKNOWN_PARTITION,
            format!(
                "topic '{topic}' has no partition {partition}; it has partitions 0..={}",
                partitions.saturating_sub(1)
            ),
        )
    }

    pub fn offset_out_of_range(offset: Offset, log_start: Offset, log_end: Offset) -> Self {
        ApiError::new(
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!(
                "offset {offset} is outside the log: valid offsets are {log_start}..{log_end} \
                 (fetch from {log_start} for the oldest record or {log_end} for new ones)"
            ),
        )
        .with_detail(ErrorDetail::OffsetRange {
            log_start_offset: log_start,
            log_end_offset: log_end,
        })
    }

    pub fn not_leader(leader: Option<NodeId>) -> Self {
        ApiError::new(
            ErrorCode::NOT_LEADER,
            "this node does not lead the partition; refresh metadata",
        )
        .with_detail(ErrorDetail::Leader { leader })
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::INTERNAL, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_unique_and_named() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.0), "duplicate error code {}", code.0);
            assert_ne!(code.name(), "UNRECOGNIZED");
        }
        assert_eq!(ErrorCode(9999).name(), "UNRECOGNIZED");
    }

    #[test]
    fn request_kinds_list_matches_the_enum() {
        let frame = RequestFrame {
            id: 1,
            request: Request::ListGroups(ListGroups {}),
        };
        let bytes = rmp_serde::to_vec_named(&frame).expect("encode");
        let back: RequestFrame = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, frame);
        assert_eq!(Request::KINDS.len(), 14);
    }

    #[test]
    fn acks_travel_as_kafka_numbers() {
        let bytes = rmp_serde::to_vec_named(&Acks::All).expect("encode");
        assert_eq!(rmp_serde::from_slice::<i8>(&bytes).expect("i8"), -1);
        assert!(rmp_serde::from_slice::<Acks>(&rmp_serde::to_vec(&5i8).expect("e")).is_err());
    }
}
