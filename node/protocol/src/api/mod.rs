//! The public API: typed requests and their replies, and the error replies.
//!
//! Every request is a plain struct that is a msgpack body on the wire (the [`Request`] enum
//! names it by `kind`) and, with the `actix` feature, an `actix::Message` the broker's actors
//! handle in-process. Replies are `Result<_, ApiError>`; [`ErrorCode`]s are stable numbers,
//! append-only. PROTOCOL.md describes the encoding.

mod bin;
pub(crate) use bin::sharing;
mod cluster;
mod error;
mod groups;
mod handshake;
mod kinds;
mod records;
mod topics;

pub use cluster::{
    ClusterStatus, ClusterStatusReply, DrainNode, InitProducerId, NodeStatus, ProducerIdentity,
};
pub use error::{ApiError, ErrorCode, ErrorDetail};
pub use groups::{
    AlterGroupConfig, CommitOffsets, CommittedOffset, ConsumerGroupHeartbeat,
    ConsumerGroupHeartbeatReply, DescribeGroup, DescribeGroupConfig, FetchOffsets,
    GroupConfigDescription, GroupDescription, GroupPartitionLag, ListGroups, MemberDescription,
    MemberRef, OffsetCommit, OffsetReset, ResetOffsets, ResetTarget, Subscription, TopicPartitions,
    JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
pub use handshake::{Hello, HelloReply, PROTOCOL_VERSION};
pub use kinds::{ApiRequest, Request, RequestFrame, Response, ResponseFrame};
pub use records::{
    Acks, Fetch, FetchReply, ListOffsets, ListOffsetsReply, OffsetSpec, Produce, ProduceReply,
};
pub use topics::{
    BrokerInfo, ClusterMetadata, CreateTopic, DeleteTopic, DescribeTopic, ListTopics, Metadata,
    PartitionDescription, PartitionMetadata, TopicConfig, TopicConfigOverrides, TopicDescription,
    TopicMetadata, TopicSummary, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_RETENTION_MS, MAX_PARTITIONS,
    MAX_TOPIC_NAME_LEN,
};
