//! The one table of request kinds.
//!
//! A request kind is added here and nowhere else: the table generates the wire envelope
//! ([`Request`], [`Response`]), the list of known kinds the decoder checks against
//! ([`Request::KINDS`]), the name of a decoded request ([`Request::kind`]), the typed link from
//! a request to its reply that clients use ([`ApiRequest`]), and, with the `actix` feature, the
//! `actix::Message` impl that makes each request an in-process message of the broker's actors.

use super::cluster::{
    ClusterStatus, ClusterStatusReply, DrainNode, InitProducerId, ProducerIdentity,
};
use super::error::ApiError;
use super::groups::{
    AlterGroupConfig, CommitOffsets, CommittedOffset, ConsumerGroupHeartbeat,
    ConsumerGroupHeartbeatReply, DescribeGroup, DescribeGroupConfig, FetchOffsets,
    GroupConfigDescription, GroupDescription, ListGroups, OffsetReset, ResetOffsets,
};
use super::handshake::{Hello, HelloReply};
use super::records::{Fetch, FetchReply, ListOffsets, ListOffsetsReply, Produce, ProduceReply};
use super::topics::{
    ClusterMetadata, CreateTopic, DeleteTopic, DescribeTopic, ListTopics, Metadata,
    TopicDescription, TopicSummary,
};
use serde::{Deserialize, Serialize};

/// A request type of the protocol, tied to the reply it gets.
pub trait ApiRequest: Into<Request> {
    /// What a successful reply carries.
    type Reply;
    /// The `kind` that names this request on the wire.
    const KIND: &'static str;
    /// Takes this request's reply out of a [`Response`], or gives the response back when it
    /// is of another kind (a broker that breaks the protocol).
    ///
    /// # Errors
    /// The response itself when its kind is not this request's.
    fn reply_from(response: Response) -> Result<Self::Reply, Response>;
}

macro_rules! request_kinds {
    ($($(#[$doc:meta])* $kind:ident -> $reply:ty;)*) => {
        /// Every request, tagged by `kind` on the wire: `{"kind": "Produce", "body": {...}}`.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "kind", content = "body")]
        pub enum Request {
            $($(#[$doc])* $kind($kind),)*
        }

        /// Replies, tagged like requests; the `kind` of a reply is the `kind` of its request.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "kind", content = "body")]
        pub enum Response {
            $($(#[$doc])* $kind($reply),)*
        }

        impl Request {
            /// Every `kind` this build understands, for telling "unknown kind" from
            /// "malformed body".
            pub const KINDS: &'static [&'static str] = &[$(stringify!($kind),)*];

            /// This request's `kind` on the wire.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Request::$kind(_) => stringify!($kind),)*
                }
            }
        }

        impl Response {
            /// This reply's `kind` on the wire (that of its request).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Response::$kind(_) => stringify!($kind),)*
                }
            }
        }

        $(
            impl ApiRequest for $kind {
                type Reply = $reply;
                const KIND: &'static str = stringify!($kind);
                fn reply_from(response: Response) -> Result<$reply, Response> {
                    match response {
                        Response::$kind(reply) => Ok(reply),
                        other => Err(other),
                    }
                }
            }

            impl From<$kind> for Request {
                fn from(request: $kind) -> Request {
                    Request::$kind(request)
                }
            }

            #[cfg(feature = "actix")]
            impl actix::Message for $kind {
                type Result = Result<$reply, ApiError>;
            }
        )*
    };
}

request_kinds! {
    /// The handshake; answered by the server itself.
    Hello -> HelloReply;
    CreateTopic -> TopicDescription;
    DeleteTopic -> ();
    ListTopics -> Vec<TopicSummary>;
    DescribeTopic -> TopicDescription;
    Metadata -> ClusterMetadata;
    Produce -> ProduceReply;
    Fetch -> FetchReply;
    ListOffsets -> ListOffsetsReply;
    CommitOffsets -> ();
    FetchOffsets -> Vec<CommittedOffset>;
    ListGroups -> Vec<String>;
    DescribeGroup -> GroupDescription;
    ResetOffsets -> Vec<OffsetReset>;
    InitProducerId -> ProducerIdentity;
    ClusterStatus -> ClusterStatusReply;
    DrainNode -> ();
    ConsumerGroupHeartbeat -> ConsumerGroupHeartbeatReply;
    AlterGroupConfig -> GroupConfigDescription;
    DescribeGroupConfig -> GroupConfigDescription;
}

/// A request on the wire: `{"id": u64, "request": {"kind": ..., "body": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client, echoed in the reply; replies may come out of order.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// A reply on the wire: `{"id": u64, "result": {"Ok": {"kind": ..., "body": ...}}}` or
/// `{"id": u64, "result": {"Err": ApiError}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request this answers; 0 when the request could not be read.
    pub id: u64,
    /// The reply, or why there is none.
    pub result: Result<Response, ApiError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_travels_under_its_kind_and_round_trips() {
        let frame = RequestFrame {
            id: 1,
            request: ListGroups {}.into(),
        };
        assert_eq!(frame.request.kind(), ListGroups::KIND);
        assert!(Request::KINDS.contains(&ListGroups::KIND));
        let bytes = rmp_serde::to_vec_named(&frame).expect("encode");
        let value: rmpv_like::Head = rmp_serde::from_slice(&bytes).expect("head");
        assert_eq!(value.request.kind, "ListGroups");
        let back: RequestFrame = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, frame);
    }

    #[test]
    fn a_reply_of_another_kind_is_given_back() {
        let reply = Response::ListGroups(vec!["g".into()]);
        assert_eq!(ListGroups::reply_from(reply.clone()), Ok(vec!["g".into()]));
        assert_eq!(DeleteTopic::reply_from(reply.clone()), Err(reply));
    }

    #[test]
    fn kinds_are_unique() {
        let unique: std::collections::BTreeSet<_> = Request::KINDS.iter().collect();
        assert_eq!(unique.len(), Request::KINDS.len());
    }

    mod rmpv_like {
        #[derive(serde::Deserialize)]
        pub struct Head {
            pub request: Kind,
        }
        #[derive(serde::Deserialize)]
        pub struct Kind {
            pub kind: String,
        }
    }
}
