//! Bad input against the real server over TCP: typed errors, the connection or the node keep
//! working, and nothing is written.

use bytes::Bytes;
use gregor_actors::api::{
    Acks, ErrorCode, Hello, ListTopics, Produce, Request, RequestFrame, Response, ResponseFrame,
    PROTOCOL_VERSION,
};
use gregor_protocol::batch::{BatchBuilder, Compression, NewRecord, HEADER_LEN};
use gregor_protocol::{Offset, PartitionId};
use gregor_tests::{success, Node};
use std::io::{Read, Write};
use std::net::TcpStream;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn request_frame(id: u64, request: Request) -> Vec<u8> {
    frame(&rmp_serde::to_vec_named(&RequestFrame { id, request }).unwrap())
}

fn read_reply(stream: &mut TcpStream) -> ResponseFrame {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    rmp_serde::from_slice(&body).unwrap()
}

fn connect(node: &Node) -> TcpStream {
    let mut stream = TcpStream::connect(&node.address).unwrap();
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: "e2e".into(),
    });
    stream.write_all(&request_frame(1, hello)).unwrap();
    let reply = read_reply(&mut stream);
    assert!(matches!(reply.result, Ok(Response::Hello(_))), "{reply:?}");
    stream
}

fn error_code(reply: &ResponseFrame) -> ErrorCode {
    reply.result.as_ref().unwrap_err().code
}

#[test]
fn malformed_and_unknown_requests_get_typed_errors_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let mut stream = connect(&node);

    stream.write_all(&frame(&[0xc1, 0x00, 0x13])).unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::MALFORMED_FRAME
    );

    #[derive(serde::Serialize)]
    struct Unknown {
        id: u64,
        request: Kind,
    }
    #[derive(serde::Serialize)]
    struct Kind {
        kind: &'static str,
        body: u8,
    }
    let unknown = rmp_serde::to_vec_named(&Unknown {
        id: 7,
        request: Kind {
            kind: "Teleport",
            body: 0,
        },
    })
    .unwrap();
    stream.write_all(&frame(&unknown)).unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(
        (reply.id, error_code(&reply)),
        (7, ErrorCode::UNKNOWN_REQUEST)
    );

    let bad_body = rmp_serde::to_vec_named(&Unknown {
        id: 8,
        request: Kind {
            kind: "Produce",
            body: 0,
        },
    })
    .unwrap();
    stream.write_all(&frame(&bad_body)).unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(
        (reply.id, error_code(&reply)),
        (8, ErrorCode::MALFORMED_REQUEST)
    );

    // The same connection still serves.
    stream
        .write_all(&request_frame(
            9,
            Request::ListTopics(ListTopics {
                include_internal: false,
            }),
        ))
        .unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(reply.id, 9);
    assert!(matches!(reply.result, Ok(Response::ListTopics(_))));
}

#[test]
fn oversized_truncated_and_versionless_connections_do_not_hurt_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());

    // A frame over the limit is refused from its length alone.
    let mut stream = connect(&node);
    stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::FRAME_TOO_LARGE
    );

    // A client that disconnects mid-frame.
    let mut stream = connect(&node);
    stream.write_all(&100u32.to_be_bytes()).unwrap();
    stream.write_all(&[0x80; 10]).unwrap();
    drop(stream);

    // A wrong protocol version.
    let mut stream = TcpStream::connect(&node.address).unwrap();
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        client_id: "future".into(),
    });
    stream.write_all(&request_frame(1, hello)).unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::UNSUPPORTED_VERSION
    );

    // No handshake.
    let mut stream = TcpStream::connect(&node.address).unwrap();
    stream
        .write_all(&request_frame(
            1,
            Request::ListTopics(ListTopics {
                include_internal: false,
            }),
        ))
        .unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::HANDSHAKE_REQUIRED
    );

    // The node is fine.
    success(&node.cli(&["topic", "create", "after"]));
    assert_eq!(success(&node.cli(&["topic", "list"])).trim(), "after");
}

/// A batch of `values`, optionally compressed.
fn batch(values: &[&[u8]], compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::with_capacity(256).compression(compression);
    for value in values {
        builder.push(&NewRecord {
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: 1_700_000_000_000,
        });
    }
    builder.finish().to_vec()
}

/// Sets the records section, `recordCount` and `lastOffsetDelta` of `batch`, with a valid CRC
/// and length: a header that is consistent whatever the records are.
fn forge(batch: &[u8], records: &[u8], count: i32) -> Vec<u8> {
    let mut out = batch[..HEADER_LEN].to_vec();
    out.extend_from_slice(records);
    let len = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    out[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn produce(stream: &mut TcpStream, id: u64, batch: Vec<u8>) -> ResponseFrame {
    produce_on(stream, id, "poison", batch)
}

fn produce_on(stream: &mut TcpStream, id: u64, topic: &str, batch: Vec<u8>) -> ResponseFrame {
    let request = Request::Produce(Produce {
        topic: topic.into(),
        partition: PartitionId(0),
        acks: Acks::All,
        timeout_ms: 10_000,
        batches: vec![Bytes::from(batch)],
        topic_id: None,
    });
    stream.write_all(&request_frame(id, request)).unwrap();
    let reply = read_reply(stream);
    assert_eq!(reply.id, id);
    reply
}

#[test]
fn batches_whose_records_contradict_their_header_are_refused_and_take_no_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    success(&node.cli(&["topic", "create", "poison"]));
    let mut stream = connect(&node);

    let one = batch(&[b"only"], Compression::None);
    let records = &one[HEADER_LEN..];
    let mut trailing = records.to_vec();
    trailing.push(0);
    let mut overlong = records.to_vec();
    overlong[0] = 0x7e; // record length 63, past the end of the batch
    let mut transactional = one.clone();
    transactional[22] |= 0x10;
    let transactional = forge(&transactional, records, 1);
    let poisoned = [
        ("recordCount 3 with one record", forge(&one, records, 3)),
        ("20 bytes of 0xff", forge(&one, &[0xff; 20], 1)),
        ("a byte after the last record", forge(&one, &trailing, 1)),
        ("a record length past the end", forge(&one, &overlong, 1)),
        ("transactional", transactional),
    ];
    for (id, (what, bad)) in poisoned.into_iter().enumerate() {
        let reply = produce(&mut stream, id as u64 + 10, bad);
        assert_eq!(error_code(&reply), ErrorCode::INVALID_BATCH, "{what}");
    }
    let mut corrupt = one.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    assert_eq!(
        error_code(&produce(&mut stream, 20, corrupt)),
        ErrorCode::CORRUPT_BATCH
    );

    // Nothing above took an offset; compressed batches are accepted with every codec.
    let mut expected = 0;
    for (id, codec) in Compression::ALL.into_iter().enumerate() {
        let reply = produce(&mut stream, 30 + id as u64, batch(&[b"a", b"b"], codec));
        let Ok(Response::Produce(stored)) = reply.result else {
            panic!("{codec}: {reply:?}");
        };
        assert_eq!(stored.base_offset, Offset(expected), "{codec}");
        expected += 2;
    }
}

// ------------------------------------------------------------------ PROTOCOL.md's error table

/// The `(code, NAME)` rows of PROTOCOL.md's error table.
fn documented_error_rows() -> Vec<(u16, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md"))
        .expect("PROTOCOL.md at the workspace root");
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells.get(1)?.parse::<u16>().ok()?;
            let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((code, name.to_owned()))
        })
        .collect()
}

/// Codes a single healthy node cannot be made to answer from outside, and where each is tested.
const NOT_PROVOKED_HERE: &[(&str, &str)] = &[
    ("INTERNAL", "needs a request handler that crashes: node/tests/server_behaviour.rs handler_panic_is_answered_with_internal_and_the_connection_goes_on"),
    ("NOT_LEADER", "needs a partition led by another node: a cluster of several nodes"),
    ("TIMEOUT", "needs a commit slower than the produce's timeout, which a healthy node does not give reliably"),
    ("UNAVAILABLE", "needs a partition without a leader, or a node starting or stopping"),
    ("STORAGE", "needs a failing disk"),
    ("OUT_OF_ORDER_SEQUENCE", "idempotent batches: actors/tests/replication.rs a_retried_idempotent_batch_is_written_once_even_across_failover and the leader's check in actors/src/partition/idempotence.rs"),
    ("UNKNOWN_PRODUCER_ID", "idempotent batches: actors/tests/replication.rs a_retried_idempotent_batch_is_written_once_even_across_failover"),
    ("INVALID_PRODUCER_EPOCH", "needs a newer epoch of a producer id, which InitProducerId never gives (epoch 0): actors/src/partition/idempotence.rs epochs_fence_and_restart_sequences"),
    ("DUPLICATE_SEQUENCE", "needs a retry older than the five batches a partition remembers: actors/src/partition/idempotence.rs batches_older_than_the_window_are_duplicates_without_an_offset"),
    ("GROUP_MAX_SIZE_REACHED", "needs 1000 members: actors/src/groups/membership_tests.rs bad_heartbeats_are_refused_and_change_nothing, with a smaller maximum"),
];

/// Sends `request` on a handshaken connection and returns its error code.
fn refused(stream: &mut TcpStream, id: u64, request: Request) -> ErrorCode {
    stream.write_all(&request_frame(id, request)).unwrap();
    let reply = read_reply(stream);
    assert_eq!(reply.id, id);
    error_code(&reply)
}

/// The code the server answers to a raw frame body, on a fresh connection (handshaken or not).
fn answer_to_raw(node: &Node, handshake: bool, body: &[u8]) -> ErrorCode {
    let mut stream = if handshake {
        connect(node)
    } else {
        TcpStream::connect(&node.address).unwrap()
    };
    stream.write_all(&frame(body)).unwrap();
    error_code(&read_reply(&mut stream))
}

fn create(name: &str, partitions: u32, replication_factor: u16) -> Request {
    Request::CreateTopic(gregor_actors::api::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor,
        config: Default::default(),
        creation_id: None,
    })
}

/// Provokes every documented error this node can answer, and returns the codes it answered.
fn provoke_every_error(node: &Node) -> Vec<ErrorCode> {
    use gregor_actors::api::{
        DescribeGroup, DescribeTopic, Fetch, FetchOffsets, TopicConfigOverrides,
    };
    #[derive(serde::Serialize)]
    struct Raw<B> {
        id: u64,
        request: RawKind<B>,
    }
    #[derive(serde::Serialize)]
    struct RawKind<B> {
        kind: &'static str,
        body: B,
    }
    let raw = |kind, body: u8| {
        rmp_serde::to_vec_named(&Raw {
            id: 5,
            request: RawKind { kind, body },
        })
        .unwrap()
    };
    let hello = |version| {
        rmp_serde::to_vec_named(&RequestFrame {
            id: 1,
            request: Request::Hello(Hello {
                protocol_version: version,
                client_id: "e2e".into(),
            }),
        })
        .unwrap()
    };
    let mut stream = connect(node);
    let mut codes = vec![
        answer_to_raw(node, true, &[0xc1]),
        answer_to_raw(node, false, &hello(PROTOCOL_VERSION + 1)),
        answer_to_raw(node, true, &raw("Teleport", 0)),
        answer_to_raw(node, false, &raw("ListGroups", 0)),
        answer_to_raw(node, true, &raw("Produce", 0)),
    ];
    let mut oversized = connect(node);
    oversized.write_all(&u32::MAX.to_be_bytes()).unwrap();
    codes.push(error_code(&read_reply(&mut oversized)));

    let describe = |name: &str| Request::DescribeTopic(DescribeTopic { name: name.into() });
    codes.push(refused(&mut stream, 10, describe("nowhere")));
    codes.push(refused(&mut stream, 11, create("taken", 1, 1)));
    assert!(matches!(
        read_ok(&mut stream, 12, create("small", 1, 1)),
        Response::CreateTopic(_)
    ));
    codes.push(refused(&mut stream, 13, create("small", 1, 1)));
    codes.push(refused(&mut stream, 14, create("bad name", 1, 1)));
    let mut bad_config = create("config", 1, 1);
    if let Request::CreateTopic(c) = &mut bad_config {
        c.config = TopicConfigOverrides {
            retention_ms: Some(-7),
            ..Default::default()
        };
    }
    codes.push(refused(&mut stream, 15, bad_config));
    codes.push(refused(&mut stream, 16, create("none", 0, 1)));
    codes.push(refused(&mut stream, 17, create("many", 1, 3)));
    codes.push(refused(&mut stream, 18, create("__mine", 1, 1)));

    let fetch = |partition, offset| {
        Request::Fetch(Fetch {
            topic: "small".into(),
            partition: PartitionId(partition),
            offset: Offset(offset),
            max_bytes: 1024,
            max_wait_ms: 0,
            min_bytes: 0,
        })
    };
    codes.push(refused(&mut stream, 19, fetch(7, 0)));
    codes.push(refused(&mut stream, 20, fetch(0, 100)));
    let big = vec![b'x'; 2 * 1024 * 1024];
    let mut produce_to = |id, batch: Vec<u8>| {
        let reply = produce_on(&mut stream, id, "small", batch);
        error_code(&reply)
    };
    codes.push(produce_to(21, batch(&[&big], Compression::None)));
    let mut corrupt = batch(&[b"v"], Compression::None);
    *corrupt.last_mut().unwrap() ^= 1;
    codes.push(produce_to(22, corrupt));
    let one = batch(&[b"v"], Compression::None);
    codes.push(produce_to(23, forge(&one, &one[HEADER_LEN..], 2)));

    let group = |name: &str| {
        Request::FetchOffsets(FetchOffsets {
            group: name.into(),
            topic: None,
        })
    };
    codes.push(refused(&mut stream, 24, group("")));
    let commit = Request::CommitOffsets(gregor_actors::api::CommitOffsets {
        group: "g".into(),
        offsets: vec![gregor_actors::api::OffsetCommit {
            topic: "small".into(),
            partition: PartitionId(0),
            offset: Offset(0),
            metadata: Some("m".repeat(4097)),
        }],
        member: None,
    });
    codes.push(refused(&mut stream, 26, commit));
    let describe_group = |name: &str| Request::DescribeGroup(DescribeGroup { group: name.into() });
    codes.push(refused(&mut stream, 25, describe_group("never-committed")));
    let drain = gregor_actors::api::DrainNode {
        node_id: gregor_protocol::NodeId(99),
    };
    codes.push(refused(&mut stream, 27, Request::DrainNode(drain)));
    codes.push(produce_to_a_deleted_incarnation(&mut stream));
    codes.extend(provoke_group_errors(&mut stream));
    codes
}

/// A produce bound to the id of a topic deleted since: `UNKNOWN_TOPIC_ID`.
fn produce_to_a_deleted_incarnation(stream: &mut TcpStream) -> ErrorCode {
    use gregor_actors::api::{CreateTopic, DeleteTopic, Metadata};
    let create = CreateTopic {
        name: "gone".into(),
        partitions: 1,
        replication_factor: 1,
        config: Default::default(),
        creation_id: None,
    };
    read_ok(stream, 30, Request::CreateTopic(create));
    let metadata = Metadata {
        topics: Some(vec!["gone".into()]),
    };
    let Response::Metadata(metadata) = read_ok(stream, 31, Request::Metadata(metadata)) else {
        panic!("metadata answered with another kind")
    };
    let topic_id = metadata.topics[0].topic_id;
    assert!(topic_id.is_some(), "metadata names each topic's id");
    read_ok(
        stream,
        32,
        Request::DeleteTopic(DeleteTopic {
            name: "gone".into(),
        }),
    );
    let produce = Request::Produce(Produce {
        topic: "gone".into(),
        partition: PartitionId(0),
        acks: Acks::All,
        timeout_ms: 10_000,
        batches: vec![Bytes::from(batch(&[b"v"], Compression::None))],
        topic_id,
    });
    refused(stream, 33, produce)
}

/// The membership protocol's refusals, on a group with one static member.
fn provoke_group_errors(stream: &mut TcpStream) -> Vec<ErrorCode> {
    use gregor_actors::api::{
        CommitOffsets, ConsumerGroupHeartbeat, MemberRef, OffsetCommit, ResetOffsets, ResetTarget,
        Subscription,
    };
    let join = ConsumerGroupHeartbeat {
        group: "members".into(),
        member_id: String::new(),
        member_epoch: 0,
        instance_id: Some("i".into()),
        rack: None,
        client_id: "c".into(),
        subscription: Some(Subscription::Topics(vec!["small".into()])),
        server_assignor: None,
        owned: None,
        rebalance_timeout_ms: 60_000,
        session_timeout_ms: None,
        host: None,
    };
    let Response::ConsumerGroupHeartbeat(member) =
        read_ok(stream, 100, Request::ConsumerGroupHeartbeat(join.clone()))
    else {
        panic!("a heartbeat answered with another kind")
    };
    let heartbeat = |changes: &dyn Fn(&mut ConsumerGroupHeartbeat)| {
        let mut hb = join.clone();
        changes(&mut hb);
        Request::ConsumerGroupHeartbeat(hb)
    };
    let commit = |group: &str, offset: u64, member: Option<MemberRef>| {
        Request::CommitOffsets(CommitOffsets {
            group: group.into(),
            offsets: vec![OffsetCommit {
                topic: "small".into(),
                partition: PartitionId(0),
                offset: Offset(offset),
                metadata: None,
            }],
            member,
        })
    };
    let mut codes = vec![
        refused(stream, 101, heartbeat(&|_| {})),
        refused(
            stream,
            102,
            heartbeat(&|hb| {
                hb.member_id = "nobody".into();
                hb.member_epoch = 1;
            }),
        ),
        refused(
            stream,
            103,
            heartbeat(&|hb| hb.member_id = member.member_id.clone()),
        ),
        refused(
            stream,
            104,
            commit(
                "members",
                1,
                Some(MemberRef {
                    member_id: member.member_id.clone(),
                    member_epoch: member.member_epoch + 5,
                }),
            ),
        ),
        refused(
            stream,
            105,
            heartbeat(&|hb| {
                hb.instance_id = None;
                hb.subscription = Some(Subscription::Pattern("(".into()));
            }),
        ),
        refused(
            stream,
            106,
            heartbeat(&|hb| {
                hb.instance_id = None;
                hb.server_assignor = Some("roundrobin".into());
            }),
        ),
        refused(
            stream,
            107,
            heartbeat(&|hb| {
                hb.instance_id = None;
                hb.session_timeout_ms = Some(10);
            }),
        ),
    ];
    let reset = ResetOffsets {
        group: "members".into(),
        topic: "small".into(),
        to: ResetTarget::Earliest,
        dry_run: false,
    };
    codes.push(refused(stream, 108, Request::ResetOffsets(reset)));
    read_ok(stream, 109, commit("back", 5, None));
    codes.push(refused(stream, 110, commit("back", 3, None)));
    codes
}

fn read_ok(stream: &mut TcpStream, id: u64, request: Request) -> Response {
    stream.write_all(&request_frame(id, request)).unwrap();
    let reply = read_reply(stream);
    reply.result.expect("the request succeeds")
}

#[test]
fn every_error_row_of_the_document_is_answered_by_the_server_or_named_as_untestable_here() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    success(&node.cli(&["topic", "create", "taken"]));
    let answered: std::collections::BTreeSet<u16> = provoke_every_error(&node)
        .into_iter()
        .map(|c| c.0)
        .collect();
    let rows = documented_error_rows();
    assert!(
        rows.len() >= 25,
        "the error table was not found in PROTOCOL.md"
    );
    for (code, name) in rows {
        assert_eq!(
            ErrorCode(code).name(),
            name,
            "row {code} names another code"
        );
        let untestable = NOT_PROVOKED_HERE.iter().any(|(n, _)| *n == name);
        assert!(
            answered.contains(&code) != untestable,
            "PROTOCOL.md row {code} {name}: provoke it in provoke_every_error, or name it in \
             NOT_PROVOKED_HERE with where it is tested (answered: {}, listed: {untestable})",
            answered.contains(&code)
        );
    }
}
