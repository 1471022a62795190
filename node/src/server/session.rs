//! The protocol rules of one connection, without IO: what to do with each frame that arrives.
//!
//! The connection driver reads frames and carries out the [`Action`]s; everything that decides
//! (handshake, error codes, which requests get no reply, when to close) lives here so it can be
//! tested without sockets.

use bytes::Bytes;
use gregor_protocol::api::{
    Acks, ApiError, ErrorCode, Hello, HelloReply, Request, ResponseFrame, PROTOCOL_VERSION,
};
use gregor_protocol::frame::{decode_shared_request, RequestDecodeError};
use gregor_protocol::NodeId;
use serde::Deserialize;

/// The id of replies that cannot be tied to a request (the frame could not be decoded).
pub const CONNECTION_ERROR_ID: u64 = 0;

/// What the connection should do with a frame.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Hand the request to the broker. `reply` is false for a produce with `acks = 0`.
    Dispatch {
        id: u64,
        request: Request,
        reply: bool,
    },
    /// Send this frame and go on reading.
    Reply(ResponseFrame),
    /// Send this frame, stop reading, and close once the replies in flight are out.
    ReplyAndClose(ResponseFrame),
}

/// What the server says about itself in `HelloReply`.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub node_id: NodeId,
    pub server_version: String,
    pub max_frame_bytes: u32,
}

#[derive(Debug)]
pub struct Session {
    identity: ServerIdentity,
    handshaken: bool,
    /// The client's address as this server sees it (its IP for TCP, `in-process` for a stream
    /// handed in by the process itself): a group member's `host` in `DescribeGroup`.
    peer: String,
}

/// The `peer` of a connection that is not a socket (the simulation's in-memory streams).
pub const IN_PROCESS_PEER: &str = "in-process";

impl Session {
    pub fn new(identity: ServerIdentity, peer: String) -> Session {
        Session {
            identity,
            handshaken: false,
            peer,
        }
    }

    /// Whether a `Hello` has been accepted; until then only `Hello` is served.
    pub fn is_handshaken(&self) -> bool {
        self.handshaken
    }

    /// A produce's batches stay slices of `body`: the frame's buffer becomes theirs.
    pub fn on_frame(&mut self, body: &Bytes) -> Action {
        match decode_shared_request(body) {
            Ok(frame) => self.on_request(frame.id, frame.request),
            Err(error) => self.on_decode_error(body, error),
        }
    }

    /// A frame whose length prefix is over the limit. Its body was not read, so the stream
    /// cannot be resynchronised: the connection closes.
    pub fn on_oversized_frame(&mut self, len: u32, max: u32) -> Action {
        Action::ReplyAndClose(error_frame(
            CONNECTION_ERROR_ID,
            ErrorCode::FRAME_TOO_LARGE,
            format!(
                "frame of {len} bytes is over this server's {max}-byte limit; send smaller \
                 requests (fewer or smaller batches per Produce) and reconnect: the connection \
                 is closed because the rest of that frame cannot be skipped reliably"
            ),
        ))
    }

    fn on_request(&mut self, id: u64, request: Request) -> Action {
        match (request, self.handshaken) {
            (Request::Hello(hello), _) => self.on_hello(id, &hello),
            (mut request, true) => {
                let reply = !matches!(&request, Request::Produce(p) if p.acks == Acks::None);
                // The member's host is what the server saw, never what the client claims; a
                // heartbeat forwarded to the coordinator's node keeps it.
                if let Request::ConsumerGroupHeartbeat(hb) = &mut request {
                    hb.host = Some(self.peer.clone());
                }
                Action::Dispatch { id, request, reply }
            }
            (request, false) => handshake_required(id, request.kind()),
        }
    }

    fn on_hello(&mut self, id: u64, hello: &Hello) -> Action {
        if hello.protocol_version != PROTOCOL_VERSION {
            return self.version_mismatch(id, u64::from(hello.protocol_version));
        }
        self.handshaken = true;
        Action::Reply(ResponseFrame {
            id,
            result: Ok(gregor_protocol::api::Response::Hello(HelloReply {
                protocol_version: PROTOCOL_VERSION,
                node_id: self.identity.node_id,
                server_version: self.identity.server_version.clone(),
                max_frame_bytes: self.identity.max_frame_bytes,
            })),
        })
    }

    /// Before the handshake the connection is unusable, so it closes; after it, the client
    /// keeps the version it agreed on and only this one request fails.
    fn version_mismatch(&self, id: u64, asked: u64) -> Action {
        let frame = error_frame(
            id,
            ErrorCode::UNSUPPORTED_VERSION,
            format!(
                "this server (gregor {}) speaks protocol version {PROTOCOL_VERSION}, the client \
                 asked for {asked}; use a client that speaks version {PROTOCOL_VERSION}",
                self.identity.server_version
            ),
        );
        if self.handshaken {
            Action::Reply(frame)
        } else {
            Action::ReplyAndClose(frame)
        }
    }

    fn on_decode_error(&mut self, body: &[u8], error: RequestDecodeError) -> Action {
        match error {
            RequestDecodeError::Malformed(reason) => {
                let frame = error_frame(
                    CONNECTION_ERROR_ID,
                    ErrorCode::MALFORMED_FRAME,
                    format!(
                        "frame body is not a msgpack map with an integer `id` and a `request` \
                         {{kind, body}}: {reason}"
                    ),
                );
                // A stranger (another protocol, a port scanner) gets one answer, not a session.
                if self.handshaken {
                    Action::Reply(frame)
                } else {
                    Action::ReplyAndClose(frame)
                }
            }
            RequestDecodeError::UnknownKind { id, kind } if self.handshaken => {
                Action::Reply(error_frame(
                    id,
                    ErrorCode::UNKNOWN_REQUEST,
                    format!(
                        "request kind \"{kind}\" is not one this server (protocol version \
                     {PROTOCOL_VERSION}) serves; known kinds: {}",
                        Request::KINDS.join(", ")
                    ),
                ))
            }
            RequestDecodeError::UnknownKind { id, kind } => handshake_required(id, &kind),
            RequestDecodeError::BadBody { id, reason } => {
                let kind = kind_in(body).unwrap_or_default();
                if kind == "Hello" {
                    // A Hello from a newer client may have a body this build cannot read; its
                    // version number still tells the client what went wrong.
                    if let Some(asked) = hello_version(body) {
                        if asked != u64::from(PROTOCOL_VERSION) {
                            return self.version_mismatch(id, asked);
                        }
                    }
                } else if !self.handshaken {
                    return handshake_required(id, &kind);
                }
                let frame = error_frame(
                    id,
                    ErrorCode::MALFORMED_REQUEST,
                    format!("body of {kind} request does not match its kind: {reason}"),
                );
                if self.handshaken {
                    Action::Reply(frame)
                } else {
                    Action::ReplyAndClose(frame)
                }
            }
        }
    }
}

fn handshake_required(id: u64, kind: &str) -> Action {
    Action::ReplyAndClose(error_frame(
        id,
        ErrorCode::HANDSHAKE_REQUIRED,
        format!(
            "the first request on a connection must be Hello, not {kind}; send Hello \
             {{protocol_version: {PROTOCOL_VERSION}, client_id}} first"
        ),
    ))
}

pub fn error_frame(id: u64, code: ErrorCode, message: String) -> ResponseFrame {
    ResponseFrame {
        id,
        result: Err(ApiError::new(code, message)),
    }
}

#[derive(Deserialize)]
struct Head<R> {
    request: R,
}

#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

#[derive(Deserialize)]
struct BodyOnly<B> {
    body: B,
}

#[derive(Deserialize)]
struct VersionOnly {
    protocol_version: u64,
}

fn kind_in(body: &[u8]) -> Option<String> {
    rmp_serde::from_slice::<Head<KindOnly>>(body)
        .ok()
        .map(|head| head.request.kind)
}

/// The `protocol_version` of a Hello whose body does not otherwise decode.
fn hello_version(body: &[u8]) -> Option<u64> {
    let head = rmp_serde::from_slice::<Head<BodyOnly<VersionOnly>>>(body).ok()?;
    Some(head.request.body.protocol_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_protocol::api::{ListGroups, Produce, RequestFrame, Response};
    use gregor_protocol::PartitionId;
    use serde::Serialize;

    fn session() -> Session {
        Session::new(
            ServerIdentity {
                node_id: NodeId(3),
                server_version: "9.9.9".into(),
                max_frame_bytes: 4096,
            },
            "192.0.2.7".into(),
        )
    }

    fn frame(id: u64, request: Request) -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(&RequestFrame { id, request }).expect("encode"))
    }

    fn hello(version: u16) -> Request {
        Request::Hello(Hello {
            protocol_version: version,
            client_id: "t".into(),
        })
    }

    fn produce(acks: Acks) -> Request {
        Request::Produce(Produce {
            topic: "t".into(),
            partition: PartitionId(0),
            acks,
            timeout_ms: 1000,
            batches: vec![Bytes::from_static(b"x")],
            topic_id: None,
        })
    }

    fn code_of(action: &Action) -> (u64, ErrorCode, bool) {
        match action {
            Action::Reply(ResponseFrame { id, result: Err(e) }) => (*id, e.code, false),
            Action::ReplyAndClose(ResponseFrame { id, result: Err(e) }) => (*id, e.code, true),
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    #[derive(Serialize)]
    struct RawFrame<'a, B: Serialize> {
        id: u64,
        request: RawRequest<'a, B>,
    }
    #[derive(Serialize)]
    struct RawRequest<'a, B: Serialize> {
        kind: &'a str,
        body: B,
    }
    fn raw<B: Serialize>(id: u64, kind: &str, body: B) -> Bytes {
        let body = rmp_serde::to_vec_named(&RawFrame {
            id,
            request: RawRequest { kind, body },
        });
        Bytes::from(body.expect("encode"))
    }

    #[test]
    fn hello_with_our_version_is_answered_with_identity() {
        let mut s = session();
        let action = s.on_frame(&frame(5, hello(PROTOCOL_VERSION)));
        let Action::Reply(ResponseFrame {
            id: 5,
            result: Ok(Response::Hello(reply)),
        }) = action
        else {
            panic!("expected a HelloReply, got {action:?}");
        };
        assert_eq!(reply.node_id, NodeId(3));
        assert_eq!(reply.server_version, "9.9.9");
        assert_eq!(reply.max_frame_bytes, 4096);
        assert_eq!(reply.protocol_version, PROTOCOL_VERSION);
        assert!(s.is_handshaken());
    }

    #[test]
    fn hello_with_another_version_closes_before_handshake_but_not_after() {
        let mut s = session();
        assert_eq!(
            code_of(&s.on_frame(&frame(1, hello(99)))),
            (1, ErrorCode::UNSUPPORTED_VERSION, true)
        );
        assert!(!s.is_handshaken());
        s.on_frame(&frame(2, hello(PROTOCOL_VERSION)));
        assert_eq!(
            code_of(&s.on_frame(&frame(3, hello(99)))),
            (3, ErrorCode::UNSUPPORTED_VERSION, false)
        );
    }

    #[test]
    fn hello_from_a_future_client_with_an_unreadable_body_still_gets_version_error() {
        #[derive(Serialize)]
        struct FutureHello {
            protocol_version: u64,
            client_id: u64,
        }
        let mut s = session();
        let body = raw(
            8,
            "Hello",
            FutureHello {
                protocol_version: 70_000,
                client_id: 1,
            },
        );
        assert_eq!(
            code_of(&s.on_frame(&body)),
            (8, ErrorCode::UNSUPPORTED_VERSION, true)
        );
        let body = raw(
            9,
            "Hello",
            FutureHello {
                protocol_version: u64::from(PROTOCOL_VERSION),
                client_id: 1,
            },
        );
        assert_eq!(
            code_of(&s.on_frame(&body)),
            (9, ErrorCode::MALFORMED_REQUEST, true)
        );
    }

    #[test]
    fn anything_before_hello_requires_handshake_and_closes() {
        for body in [
            frame(4, Request::ListGroups(ListGroups {})),
            raw(4, "Teleport", ()),
            raw(4, "Produce", 1u8),
        ] {
            assert_eq!(
                code_of(&session().on_frame(&body)),
                (4, ErrorCode::HANDSHAKE_REQUIRED, true)
            );
        }
        assert_eq!(
            code_of(&session().on_frame(&Bytes::from_static(&[0xc1]))),
            (0, ErrorCode::MALFORMED_FRAME, true)
        );
    }

    #[test]
    fn after_handshake_decode_errors_keep_the_connection() {
        let mut s = session();
        s.on_frame(&frame(1, hello(PROTOCOL_VERSION)));
        assert_eq!(
            code_of(&s.on_frame(&Bytes::from_static(&[0xc1]))),
            (0, ErrorCode::MALFORMED_FRAME, false)
        );
        assert_eq!(
            code_of(&s.on_frame(&raw(6, "Teleport", ()))),
            (6, ErrorCode::UNKNOWN_REQUEST, false)
        );
        assert_eq!(
            code_of(&s.on_frame(&raw(7, "Produce", 1u8))),
            (7, ErrorCode::MALFORMED_REQUEST, false)
        );
    }

    #[test]
    fn acks_zero_produce_is_dispatched_without_reply() {
        let mut s = session();
        s.on_frame(&frame(1, hello(PROTOCOL_VERSION)));
        for (acks, reply) in [(Acks::None, false), (Acks::Leader, true), (Acks::All, true)] {
            match s.on_frame(&frame(2, produce(acks))) {
                Action::Dispatch {
                    id: 2, reply: r, ..
                } => assert_eq!(r, reply, "{acks:?}"),
                other => panic!("expected dispatch, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_produce_s_batches_are_dispatched_as_slices_of_the_frame() {
        let mut s = session();
        s.on_frame(&frame(1, hello(PROTOCOL_VERSION)));
        let body = frame(2, produce(Acks::All));
        let Action::Dispatch {
            request: Request::Produce(produce),
            ..
        } = s.on_frame(&body)
        else {
            panic!("a produce after the handshake is dispatched");
        };
        assert_eq!(produce.batches, [&b"x"[..]]);
        assert!(body.as_ptr_range().contains(&produce.batches[0].as_ptr()));
    }

    #[test]
    fn oversized_frame_closes_with_id_zero() {
        assert_eq!(
            code_of(&session().on_oversized_frame(1 << 30, 4096)),
            (0, ErrorCode::FRAME_TOO_LARGE, true)
        );
    }

    #[test]
    fn a_heartbeat_carries_the_connection_s_address_not_the_client_s_claim() {
        let mut s = session();
        s.on_frame(&frame(1, hello(PROTOCOL_VERSION)));
        let hb = gregor_protocol::api::ConsumerGroupHeartbeat {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            instance_id: None,
            rack: None,
            client_id: "c".into(),
            subscription: None,
            server_assignor: None,
            owned: None,
            rebalance_timeout_ms: 1_000,
            session_timeout_ms: None,
            host: Some("claimed".into()),
        };
        let Action::Dispatch {
            request: Request::ConsumerGroupHeartbeat(dispatched),
            ..
        } = s.on_frame(&frame(2, hb.into()))
        else {
            panic!("a heartbeat after the handshake is dispatched");
        };
        assert_eq!(dispatched.host.as_deref(), Some("192.0.2.7"));
    }
}
