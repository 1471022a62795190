//! What nodes say to each other outside Raft, over the peer transport's node messages: a typed,
//! versioned envelope (msgpack with field names). A node that receives a version it does not
//! know answers with a protocol error rather than guess.

use crate::api::{ApiError, Request, Response};
use crate::hints::LeadershipHint;
use crate::metadata::{MetadataCommand, MetadataOutcome};
use bytes::Bytes;
use gregor_storage::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

/// The node-message format this build writes and the newest it reads.
pub const NODE_MESSAGE_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// A client request the receiver serves for the sender: metadata writes on the metadata
    /// leader, consumer-group requests on the leader of the group's offsets partition.
    Request(Request),
    /// A metadata command for the metadata leader to propose (a completed move, a block of
    /// producer ids).
    Propose(MetadataCommand),
    /// The partitions the sender leads.
    Leadership(LeadershipHint),
    /// The sender (the metadata leader) asks the receiver to hand its leadership of `group`
    /// to `to`.
    HandOver { group: GroupId, to: NodeId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeReply {
    Response(Result<Response, ApiError>),
    Outcome(Result<MetadataOutcome, ApiError>),
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Envelope<T> {
    version: u16,
    body: T,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error("node message version {0} is newer than this build reads ({NODE_MESSAGE_VERSION})")]
    UnknownVersion(u16),
    #[error("node message does not decode: {0}")]
    Malformed(String),
}

pub fn encode<T: Serialize>(body: &T) -> Bytes {
    let envelope = Envelope {
        version: NODE_MESSAGE_VERSION,
        body,
    };
    Bytes::from(rmp_serde::to_vec_named(&envelope).expect("node messages encode"))
}

/// # Errors
/// A newer version, or bytes that are not an envelope of `T`.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MessageError> {
    #[derive(Deserialize)]
    struct Head {
        version: u16,
    }
    let head: Head =
        rmp_serde::from_slice(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if head.version > NODE_MESSAGE_VERSION {
        return Err(MessageError::UnknownVersion(head.version));
    }
    let envelope: Envelope<T> =
        rmp_serde::from_slice(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
    Ok(envelope.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CreateTopic, ErrorCode};
    use crate::hints::Led;

    #[test]
    fn messages_and_replies_round_trip() {
        let messages = [
            NodeMessage::Request(Request::CreateTopic(CreateTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 3,
                config: Default::default(),
                creation_id: None,
            })),
            NodeMessage::Propose(MetadataCommand::AllocateProducerIds { count: 1000 }),
            NodeMessage::Leadership(LeadershipHint {
                full: true,
                led: vec![Led {
                    group: GroupId(16384),
                    term: 4,
                    lagging: vec![gregor_storage::NodeId(3)],
                    log_start_offset: gregor_storage::Offset(5),
                    high_watermark: gregor_storage::Offset(90),
                }],
                lost: vec![],
            }),
            NodeMessage::HandOver {
                group: GroupId(16385),
                to: gregor_storage::NodeId(2),
            },
        ];
        for message in messages {
            assert_eq!(decode::<NodeMessage>(&encode(&message)).unwrap(), message);
        }
        let reply = NodeReply::Response(Err(ApiError::new(ErrorCode::NOT_LEADER, "elsewhere")));
        assert_eq!(decode::<NodeReply>(&encode(&reply)).unwrap(), reply);
    }

    #[test]
    fn a_newer_version_or_garbage_is_refused() {
        let newer = rmp_serde::to_vec_named(&Envelope {
            version: NODE_MESSAGE_VERSION + 1,
            body: NodeReply::Done,
        })
        .unwrap();
        assert!(matches!(
            decode::<NodeReply>(&newer),
            Err(MessageError::UnknownVersion(_))
        ));
        assert!(matches!(
            decode::<NodeReply>(b"\x93\x01"),
            Err(MessageError::Malformed(_))
        ));
    }
}
