//! Producing, fetching and locating records.

use crate::ids::{Offset, PartitionId, TopicId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

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

/// Append record batches (Kafka v2 layout, see [`crate::batch`]) to one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produce {
    pub topic: String,
    pub partition: PartitionId,
    pub acks: Acks,
    pub timeout_ms: u32,
    #[serde(deserialize_with = "super::bin::batches")]
    pub batches: Vec<Bytes>,
    /// The incarnation of `topic` the client resolved when it built these batches (from
    /// `TopicMetadata::topic_id`). A broker that knows this incarnation was deleted refuses
    /// the request with `UNKNOWN_TOPIC_ID` instead of writing it to a topic re-created under
    /// the same name. Absent (old clients) or nil: the request is for whatever topic bears
    /// the name when it arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<TopicId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceReply {
    /// Offset of the first record of the first batch; the batches got contiguous offsets.
    pub base_offset: Offset,
    pub log_start_offset: Offset,
}

/// Read committed batches from `offset` on. The first batch may begin below `offset`: skip
/// those records, as Kafka clients do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(deserialize_with = "super::bin::batches")]
    pub batches: Vec<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose record timestamp is >= this (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_travel_as_kafka_numbers() {
        let bytes = rmp_serde::to_vec_named(&Acks::All).expect("encode");
        assert_eq!(rmp_serde::from_slice::<i8>(&bytes).expect("i8"), -1);
        assert!(rmp_serde::from_slice::<Acks>(&rmp_serde::to_vec(&5i8).expect("e")).is_err());
    }
}
