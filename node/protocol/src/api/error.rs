//! Error replies: stable codes, a message for people, structured detail.

use crate::ids::{NodeId, Offset, PartitionId, TopicId};
use serde::{Deserialize, Serialize};
use std::fmt;

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
    UNKNOWN_NODE = 18, false;
    UNKNOWN_TOPIC_ID = 19, false;
    RECORD_TOO_LARGE = 20, false;
    CORRUPT_BATCH = 21, false;
    INVALID_BATCH = 22, false;
    OFFSET_OUT_OF_RANGE = 23, false;
    OUT_OF_ORDER_SEQUENCE = 24, false;
    UNKNOWN_PRODUCER_ID = 25, false;
    INVALID_PRODUCER_EPOCH = 26, false;
    DUPLICATE_SEQUENCE = 27, false;
    NOT_LEADER = 30, true;
    TIMEOUT = 31, true;
    UNAVAILABLE = 32, true;
    INVALID_GROUP = 40, false;
    UNKNOWN_GROUP = 41, false;
    OFFSET_METADATA_TOO_LARGE = 42, false;
    UNKNOWN_MEMBER_ID = 43, false;
    FENCED_MEMBER_EPOCH = 44, false;
    STALE_MEMBER_EPOCH = 45, false;
    UNRELEASED_INSTANCE_ID = 46, true;
    GROUP_MAX_SIZE_REACHED = 47, false;
    INVALID_REGEX = 48, false;
    NON_EMPTY_GROUP = 49, false;
    UNSUPPORTED_ASSIGNOR = 51, false;
    INVALID_SESSION_TIMEOUT = 52, false;
    OFFSET_MOVES_BACK = 53, false;
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
    /// With `NOT_LEADER`: where to go instead, if known: the leader's id and the address
    /// clients reach it at (absent when this node does not know it).
    Leader {
        leader: Option<NodeId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
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

    /// `topic_id` names an incarnation of `topic` that no longer exists (or another topic).
    pub fn unknown_topic_id(topic: &str, topic_id: TopicId) -> Self {
        ApiError::new(
            ErrorCode::UNKNOWN_TOPIC_ID,
            format!(
                "topic id {topic_id} is not the topic '{topic}' any more: that incarnation was \
                 deleted; records meant for it are not written to a topic re-created under \
                 its name"
            ),
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
                "offset {offset} is outside the log: a fetch may start at {log_start} to \
                 {log_end} inclusive (from {log_start} for the oldest record, or at {log_end}, \
                 the log end, to wait for new ones)"
            ),
        )
        .with_detail(ErrorDetail::OffsetRange {
            log_start_offset: log_start,
            log_end_offset: log_end,
        })
    }

    pub fn not_leader(leader: Option<NodeId>) -> Self {
        ApiError::not_leader_at(leader, None)
    }

    /// `NOT_LEADER` naming the leader and, when known, where clients reach it.
    pub fn not_leader_at(leader: Option<NodeId>, address: Option<String>) -> Self {
        ApiError::new(
            ErrorCode::NOT_LEADER,
            "this node does not lead the partition; refresh metadata",
        )
        .with_detail(ErrorDetail::Leader { leader, address })
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
}
