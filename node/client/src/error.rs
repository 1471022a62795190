//! The client library's one error type.

use gregor_protocol::api::{ApiError, ErrorCode, ErrorDetail, Request};
use gregor_protocol::NodeId;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Why a client call failed. Every message ends with what to try next.
///
/// `Clone` because one failure can answer many waiters (every record of a failed batch).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error(
        "cannot reach {addr}: {}; is `gregor serve` running there? set --bootstrap or GREGOR_BOOTSTRAP",
        io_reason(error)
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// Why the connection failed.
        error: Arc<io::Error>,
    },

    /// Reading or writing an open connection failed.
    #[error(
        "i/o error talking to {addr}: {}; check that the broker is up, then retry",
        io_reason(error)
    )]
    Io {
        /// The broker's address.
        addr: String,
        /// The failure.
        error: Arc<io::Error>,
    },

    /// The peer sent something this client cannot understand.
    #[error(
        "protocol error talking to {addr}: {reason}; is it a gregor server of a compatible version?"
    )]
    Protocol {
        /// The peer's address.
        addr: String,
        /// What could not be understood.
        reason: String,
    },

    /// The broker refused the request; its message says why and what to do.
    #[error("{} [{}]", .0.message, .0.code)]
    Api(ApiError),

    /// No reply within the request timeout.
    #[error(
        "no reply from {addr} within {} ms; the broker may be overloaded or stuck: retry, or raise the request timeout",
        timeout.as_millis()
    )]
    Timeout {
        /// The broker's address.
        addr: String,
        /// The request timeout that passed.
        timeout: Duration,
    },

    /// The connection closed with the request in flight; it may or may not have been applied.
    #[error(
        "connection to {addr} closed: {reason}; requests in flight may or may not have been applied, retry once the broker is back"
    )]
    Disconnected {
        /// The broker's address.
        addr: String,
        /// Why the connection closed.
        reason: String,
    },

    /// The cluster named a node this client has no address for.
    #[error("node {0} is not in the cluster metadata; retry once membership settles")]
    UnknownNode(NodeId),

    /// One record does not fit in a request.
    #[error(
        "record of {size} bytes is larger than the {max}-byte request limit; send smaller records or raise max_request_bytes (the topic's max.message.bytes bounds it too)"
    )]
    RecordTooLarge {
        /// The record's encoded size, in bytes.
        size: usize,
        /// The largest request, in bytes.
        max: usize,
    },

    /// One request is larger than the broker's frame limit.
    #[error(
        "request of {size} bytes is over the broker's {max}-byte frame limit; send smaller batches (lower max_request_bytes or the fetch size)"
    )]
    RequestTooLarge {
        /// The request's frame size, in bytes.
        size: usize,
        /// The broker's frame limit, in bytes.
        max: usize,
    },

    /// A partition has no committed offset and `auto_offset_reset` is `Error` (Kafka's
    /// `none`).
    #[error(
        "partition {partition} has no committed offset and auto_offset_reset is 'error'; seek it \
         first or choose earliest or latest"
    )]
    NoPosition {
        /// The partition, as `topic/partition`.
        partition: String,
    },

    /// The call does not make sense in this state (for example, committing without a group).
    #[error("{0}")]
    Usage(String),

    /// The producer or consumer was closed.
    #[error("the client was closed; create a new one")]
    Closed,
}

fn io_reason(e: &io::Error) -> String {
    // The OS text ("Connection refused (os error 111)") is noise next to our own advice.
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::BrokenPipe => "broken pipe".into(),
        io::ErrorKind::UnexpectedEof => "connection closed unexpectedly".into(),
        _ => e.to_string(),
    }
}

impl ClientError {
    pub(crate) fn connect(addr: &str, source: io::Error) -> Self {
        ClientError::Connect {
            addr: addr.to_owned(),
            error: Arc::new(source),
        }
    }

    pub(crate) fn io(addr: &str, source: io::Error) -> Self {
        ClientError::Io {
            addr: addr.to_owned(),
            error: Arc::new(source),
        }
    }

    pub(crate) fn protocol(addr: &str, reason: impl Into<String>) -> Self {
        ClientError::Protocol {
            addr: addr.to_owned(),
            reason: reason.into(),
        }
    }

    /// The broker's error code, when the broker answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// The broker's error, when it answered with one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Whether trying again later can succeed. Timeouts and dropped connections count: the
    /// request may not have been applied, and a retry may apply it twice (at-least-once).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Api(e) => e.code.is_retriable(),
            ClientError::Connect { .. }
            | ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::Disconnected { .. }
            | ClientError::UnknownNode(_) => true,
            ClientError::Protocol { .. }
            | ClientError::RecordTooLarge { .. }
            | ClientError::RequestTooLarge { .. }
            | ClientError::Usage(_)
            | ClientError::NoPosition { .. }
            | ClientError::Closed => false,
        }
    }

    /// Whether `request` may be sent again after this error. A broker error code means the
    /// request was refused, so a retriable code is always safe to retry; an unanswered request
    /// (timeout, dropped connection) is retried only if applying it twice is harmless or, for
    /// records, accepted (at-least-once delivery, as in Kafka without idempotence).
    pub(crate) fn may_retry(&self, request: &Request) -> bool {
        match self {
            ClientError::Api(e) => e.code.is_retriable(),
            // Nothing reached the broker.
            ClientError::Connect { .. } | ClientError::UnknownNode(_) => true,
            ClientError::Io { .. }
            | ClientError::Timeout { .. }
            | ClientError::Disconnected { .. } => match request {
                // A creation with an id is recognised when it finds its own topic.
                Request::CreateTopic(create) => create.creation_id.is_some(),
                Request::DeleteTopic(_) | Request::ResetOffsets(_) => false,
                _ => true,
            },
            _ => false,
        }
    }

    /// Where the leader named by `NOT_LEADER` takes clients, if the broker said.
    pub(crate) fn leader_address(&self) -> Option<(NodeId, &str)> {
        match self {
            ClientError::Api(ApiError {
                code: ErrorCode::NOT_LEADER,
                detail:
                    Some(ErrorDetail::Leader {
                        leader: Some(leader),
                        address: Some(address),
                    }),
                ..
            }) => Some((*leader, address.as_str())),
            _ => None,
        }
    }

    /// The leader hint that came with `NOT_LEADER`, if any.
    pub(crate) fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ClientError::Api(ApiError {
                code: ErrorCode::NOT_LEADER,
                detail: Some(ErrorDetail::Leader { leader, .. }),
                ..
            }) => *leader,
            _ => None,
        }
    }
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Api(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connection_says_what_to_do() {
        let e = ClientError::connect(
            "127.0.0.1:9092",
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)",
            ),
        );
        assert_eq!(
            e.to_string(),
            "cannot reach 127.0.0.1:9092: connection refused; is `gregor serve` running there? \
             set --bootstrap or GREGOR_BOOTSTRAP"
        );
        assert!(e.is_retriable());
    }

    #[test]
    fn api_error_keeps_the_brokers_message_and_code() {
        let e = ClientError::from(ApiError::unknown_topic("orders"));
        assert_eq!(
            e.to_string(),
            "topic 'orders' does not exist; create it with: gregor topic create orders [UNKNOWN_TOPIC (10)]"
        );
        assert_eq!(e.code(), Some(ErrorCode::UNKNOWN_TOPIC));
        assert!(!e.is_retriable());
    }

    #[test]
    fn unanswered_topic_creation_is_retried_only_with_a_creation_id_but_a_fetch_is() {
        use gregor_protocol::api::{CreateTopic, Fetch, TopicConfigOverrides};
        use gregor_protocol::{Offset, PartitionId};
        let e = ClientError::Timeout {
            addr: "a".into(),
            timeout: Duration::from_secs(1),
        };
        let create = Request::CreateTopic(CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            config: TopicConfigOverrides::default(),
            creation_id: None,
        });
        let fetch = Request::Fetch(Fetch {
            topic: "t".into(),
            partition: PartitionId(0),
            offset: Offset(0),
            max_bytes: 1,
            max_wait_ms: 0,
            min_bytes: 1,
        });
        assert!(!e.may_retry(&create));
        assert!(e.may_retry(&fetch));
        let Request::CreateTopic(create_once) = create.clone() else {
            unreachable!()
        };
        let with_id = Request::CreateTopic(CreateTopic {
            creation_id: Some(9),
            ..create_once
        });
        assert!(e.may_retry(&with_id), "a creation with an id is retried");
        let not_leader = ClientError::from(ApiError::not_leader(Some(NodeId(3))));
        assert!(not_leader.may_retry(&create));
        assert_eq!(not_leader.leader_hint(), Some(NodeId(3)));
    }
}
