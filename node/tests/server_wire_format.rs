//! PROTOCOL.md is checked here: every encoding it describes is built by hand with a minimal
//! msgpack writer (what a client in another language would write) and compared with what the
//! server's codec produces and accepts. The worked examples in the document are generated here.

use bytes::Bytes;
use gregor_actors::api::*;
use gregor_protocol::batch::{BatchBuilder, NewRecord};
use gregor_protocol::frame::encode_frame;
use gregor_storage::{NodeId, Offset, PartitionId, TopicId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

// ------------------------------------------------------------------ a minimal msgpack writer

/// A msgpack value; map keys are always strings in this protocol.
#[derive(Debug, Clone)]
enum V {
    Nil,
    Bool(bool),
    Int(i128),
    Str(String),
    Bin(Vec<u8>),
    Arr(Vec<V>),
    Map(Vec<(String, V)>),
}

fn s(text: &str) -> V {
    V::Str(text.into())
}
fn i(n: impl Into<i128>) -> V {
    V::Int(n.into())
}
fn map(entries: &[(&str, V)]) -> V {
    V::Map(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}
fn arr(items: &[V]) -> V {
    V::Arr(items.to_vec())
}
/// The `{"kind": ..., "body": ...}` envelope of requests and responses.
fn tagged(kind: &str, body: V) -> V {
    map(&[("kind", s(kind)), ("body", body)])
}
fn request_frame(id: u64, kind: &str, body: V) -> V {
    map(&[("id", i(id)), ("request", tagged(kind, body))])
}
fn ok_frame(id: u64, kind: &str, body: V) -> V {
    map(&[
        ("id", i(id)),
        ("result", map(&[("Ok", tagged(kind, body))])),
    ])
}

/// Smallest encoding of each value, per the msgpack spec.
fn mp(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, v);
    out
}

fn write(out: &mut Vec<u8>, v: &V) {
    match v {
        V::Nil => out.push(0xc0),
        V::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        V::Int(n) => write_int(out, *n),
        V::Str(text) => {
            let len = text.len();
            match len {
                0..=31 => out.push(0xa0 | len as u8),
                32..=0xff => out.extend([0xd9, len as u8]),
                0x100..=0xffff => {
                    out.push(0xda);
                    out.extend((len as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xdb);
                    out.extend((len as u32).to_be_bytes());
                }
            }
            out.extend(text.as_bytes());
        }
        V::Bin(bytes) => {
            let len = bytes.len();
            match len {
                0..=0xff => out.extend([0xc4, len as u8]),
                0x100..=0xffff => {
                    out.push(0xc5);
                    out.extend((len as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xc6);
                    out.extend((len as u32).to_be_bytes());
                }
            }
            out.extend(bytes);
        }
        V::Arr(items) => {
            write_len(out, items.len(), 0x90, 0xdc, 0xdd);
            items.iter().for_each(|item| write(out, item));
        }
        V::Map(entries) => {
            write_len(out, entries.len(), 0x80, 0xde, 0xdf);
            for (key, value) in entries {
                write(out, &V::Str(key.clone()));
                write(out, value);
            }
        }
    }
}

fn write_len(out: &mut Vec<u8>, len: usize, fix: u8, sixteen: u8, thirty_two: u8) {
    match len {
        0..=15 => out.push(fix | len as u8),
        16..=0xffff => {
            out.push(sixteen);
            out.extend((len as u16).to_be_bytes());
        }
        _ => {
            out.push(thirty_two);
            out.extend((len as u32).to_be_bytes());
        }
    }
}

fn write_int(out: &mut Vec<u8>, n: i128) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend([0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend((n as u32).to_be_bytes());
        }
        0x1_0000_0000..=0xffff_ffff_ffff_ffff => {
            out.push(0xcf);
            out.extend((n as u64).to_be_bytes());
        }
        -32..=-1 => out.push(n as i8 as u8),
        -128..=-33 => out.extend([0xd0, n as i8 as u8]),
        -32768..=-129 => {
            out.push(0xd1);
            out.extend((n as i16).to_be_bytes());
        }
        -2_147_483_648..=-32769 => {
            out.push(0xd2);
            out.extend((n as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend((n as i64).to_be_bytes());
        }
    }
}

/// The server's encoding of `value` is the hand-built one, and the hand-built bytes decode back.
#[track_caller]
fn same_both_ways<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, expected: &V) {
    let ours = rmp_serde::to_vec_named(value).expect("encode");
    let hand = mp(expected);
    assert_eq!(hex(&ours), hex(&hand), "encoding of {value:?}");
    let back: T = rmp_serde::from_slice(&hand).expect("hand-built bytes decode");
    assert_eq!(&back, value);
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 16 bytes a line, as in PROTOCOL.md.
fn hex_dump(bytes: &[u8]) -> String {
    bytes.chunks(16).map(hex).collect::<Vec<_>>().join("\n")
}

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    std::fs::read_to_string(path).expect("PROTOCOL.md at the repository root")
}

fn sample_batch() -> Bytes {
    let mut builder = BatchBuilder::with_capacity(128);
    builder.push(&NewRecord {
        key: Some(b"k"),
        value: Some(b"hello"),
        headers: &[],
        timestamp: 1_700_000_000_000,
    });
    builder.finish()
}

// ------------------------------------------------------------------ scalars and enums

#[test]
fn scalars_newtypes_and_small_enums_encode_as_documented() {
    same_both_ways(&NodeId(300), &i(300));
    same_both_ways(&PartitionId(2), &i(2));
    same_both_ways(&Offset(u64::MAX), &i(u64::MAX));
    same_both_ways(&ErrorCode::NOT_LEADER, &i(30));
    same_both_ways(&Acks::None, &i(0));
    same_both_ways(&Acks::Leader, &i(1));
    same_both_ways(&Acks::All, &i(-1));
    same_both_ways(&(), &V::Nil);
    same_both_ways(&Option::<u32>::None, &V::Nil);
    same_both_ways(&Some(5u32), &i(5));
    same_both_ways(&Bytes::from_static(b"\x00\xff"), &V::Bin(vec![0x00, 0xff]));
    same_both_ways(&-5i64, &i(-5));
    same_both_ways(&604_800_000i64, &i(604_800_000));

    same_both_ways(&OffsetSpec::Earliest, &s("Earliest"));
    same_both_ways(&OffsetSpec::Latest, &s("Latest"));
    same_both_ways(
        &OffsetSpec::Timestamp(1_700_000_000_000),
        &map(&[("Timestamp", i(1_700_000_000_000i64))]),
    );
    same_both_ways(&ResetTarget::Earliest, &s("Earliest"));
    same_both_ways(&ResetTarget::Latest, &s("Latest"));
    same_both_ways(&ResetTarget::Offset(Offset(42)), &map(&[("Offset", i(42))]));
    same_both_ways(&ResetTarget::Timestamp(-1), &map(&[("Timestamp", i(-1))]));
    same_both_ways(
        &ResetTarget::DurationAgo(3_600_000),
        &map(&[("DurationAgo", i(3_600_000))]),
    );

    same_both_ways(
        &ErrorDetail::OffsetRange {
            log_start_offset: Offset(1),
            log_end_offset: Offset(3),
        },
        &map(&[(
            "OffsetRange",
            map(&[("log_start_offset", i(1)), ("log_end_offset", i(3))]),
        )]),
    );
    same_both_ways(
        &ErrorDetail::Leader {
            leader: Some(NodeId(2)),
            address: None,
        },
        &map(&[("Leader", map(&[("leader", i(2))]))]),
    );
    same_both_ways(
        &ErrorDetail::Leader {
            leader: Some(NodeId(2)),
            address: Some("b:9092".into()),
        },
        &map(&[("Leader", map(&[("leader", i(2)), ("address", s("b:9092"))]))]),
    );
    same_both_ways(
        &ErrorDetail::Leader {
            leader: None,
            address: None,
        },
        &map(&[("Leader", map(&[("leader", V::Nil)]))]),
    );
}

// ------------------------------------------------------------------ requests

#[test]
fn every_request_kind_encodes_as_documented() {
    let overrides = TopicConfigOverrides {
        retention_ms: Some(86_400_000),
        retention_bytes: None,
        max_message_bytes: None,
    };
    let cases: Vec<(Request, V)> = vec![
        (
            Request::Hello(Hello {
                protocol_version: 1,
                client_id: "demo".into(),
            }),
            map(&[("protocol_version", i(1)), ("client_id", s("demo"))]),
        ),
        (
            Request::CreateTopic(CreateTopic {
                name: "orders".into(),
                partitions: 3,
                replication_factor: 1,
                config: overrides,
                creation_id: None,
            }),
            map(&[
                ("name", s("orders")),
                ("partitions", i(3)),
                ("replication_factor", i(1)),
                (
                    "config",
                    map(&[
                        ("retention_ms", i(86_400_000)),
                        ("retention_bytes", V::Nil),
                        ("max_message_bytes", V::Nil),
                    ]),
                ),
            ]),
        ),
        (
            Request::CreateTopic(CreateTopic {
                name: "orders".into(),
                partitions: 3,
                replication_factor: 1,
                config: TopicConfigOverrides::default(),
                creation_id: Some(7),
            }),
            map(&[
                ("name", s("orders")),
                ("partitions", i(3)),
                ("replication_factor", i(1)),
                (
                    "config",
                    map(&[
                        ("retention_ms", V::Nil),
                        ("retention_bytes", V::Nil),
                        ("max_message_bytes", V::Nil),
                    ]),
                ),
                ("creation_id", i(7)),
            ]),
        ),
        (
            Request::DeleteTopic(DeleteTopic {
                name: "orders".into(),
            }),
            map(&[("name", s("orders"))]),
        ),
        (
            Request::ListTopics(ListTopics {
                include_internal: true,
            }),
            map(&[("include_internal", V::Bool(true))]),
        ),
        (
            Request::DescribeTopic(DescribeTopic {
                name: "orders".into(),
            }),
            map(&[("name", s("orders"))]),
        ),
        (
            Request::Metadata(Metadata { topics: None }),
            map(&[("topics", V::Nil)]),
        ),
        (
            Request::Metadata(Metadata {
                topics: Some(vec!["orders".into()]),
            }),
            map(&[("topics", arr(&[s("orders")]))]),
        ),
        (
            Request::Produce(Produce {
                topic: "orders".into(),
                partition: PartitionId(0),
                acks: Acks::All,
                timeout_ms: 30_000,
                batches: vec![Bytes::from_static(b"batch")],
                topic_id: None,
            }),
            map(&[
                ("topic", s("orders")),
                ("partition", i(0)),
                ("acks", i(-1)),
                ("timeout_ms", i(30_000)),
                ("batches", arr(&[V::Bin(b"batch".to_vec())])),
            ]),
        ),
        (
            Request::Produce(Produce {
                topic: "orders".into(),
                partition: PartitionId(0),
                acks: Acks::All,
                timeout_ms: 30_000,
                batches: vec![Bytes::from_static(b"batch")],
                topic_id: Some(TopicId(7)),
            }),
            map(&[
                ("topic", s("orders")),
                ("partition", i(0)),
                ("acks", i(-1)),
                ("timeout_ms", i(30_000)),
                ("batches", arr(&[V::Bin(b"batch".to_vec())])),
                ("topic_id", i(7)),
            ]),
        ),
        (
            Request::Fetch(Fetch {
                topic: "orders".into(),
                partition: PartitionId(1),
                offset: Offset(100),
                max_bytes: 1_048_576,
                max_wait_ms: 500,
                min_bytes: 1,
            }),
            map(&[
                ("topic", s("orders")),
                ("partition", i(1)),
                ("offset", i(100)),
                ("max_bytes", i(1_048_576)),
                ("max_wait_ms", i(500)),
                ("min_bytes", i(1)),
            ]),
        ),
        (
            Request::ListOffsets(ListOffsets {
                topic: "orders".into(),
                partition: PartitionId(0),
                spec: OffsetSpec::Latest,
            }),
            map(&[
                ("topic", s("orders")),
                ("partition", i(0)),
                ("spec", s("Latest")),
            ]),
        ),
        (
            Request::CommitOffsets(CommitOffsets {
                group: "billing".into(),
                offsets: vec![OffsetCommit {
                    topic: "orders".into(),
                    partition: PartitionId(0),
                    offset: Offset(10),
                    metadata: None,
                }],
                member: None,
            }),
            map(&[
                ("group", s("billing")),
                (
                    "offsets",
                    arr(&[map(&[
                        ("topic", s("orders")),
                        ("partition", i(0)),
                        ("offset", i(10)),
                        ("metadata", V::Nil),
                    ])]),
                ),
            ]),
        ),
        (
            Request::FetchOffsets(FetchOffsets {
                group: "billing".into(),
                topic: Some("orders".into()),
            }),
            map(&[("group", s("billing")), ("topic", s("orders"))]),
        ),
        (Request::ListGroups(ListGroups {}), map(&[])),
        (
            Request::DescribeGroup(DescribeGroup {
                group: "billing".into(),
            }),
            map(&[("group", s("billing"))]),
        ),
        (
            Request::ResetOffsets(ResetOffsets {
                group: "billing".into(),
                topic: "orders".into(),
                to: ResetTarget::DurationAgo(3_600_000),
                dry_run: true,
            }),
            map(&[
                ("group", s("billing")),
                ("topic", s("orders")),
                ("to", map(&[("DurationAgo", i(3_600_000))])),
                ("dry_run", V::Bool(true)),
            ]),
        ),
        (Request::InitProducerId(InitProducerId {}), map(&[])),
        (Request::ClusterStatus(ClusterStatus {}), map(&[])),
        (
            Request::DrainNode(DrainNode { node_id: NodeId(3) }),
            map(&[("node_id", i(3))]),
        ),
        (
            Request::ConsumerGroupHeartbeat(ConsumerGroupHeartbeat {
                group: "billing".into(),
                member_id: "".into(),
                member_epoch: 0,
                instance_id: None,
                rack: None,
                client_id: "c".into(),
                subscription: Some(Subscription::Pattern("orders.*".into())),
                server_assignor: None,
                owned: Some(vec![]),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: None,
                host: None,
            }),
            map(&[
                ("group", s("billing")),
                ("member_id", s("")),
                ("member_epoch", i(0)),
                ("instance_id", V::Nil),
                ("rack", V::Nil),
                ("client_id", s("c")),
                ("subscription", map(&[("Pattern", s("orders.*"))])),
                ("server_assignor", V::Nil),
                ("owned", arr(&[])),
                ("rebalance_timeout_ms", i(300_000)),
                ("session_timeout_ms", V::Nil),
                ("host", V::Nil),
            ]),
        ),
        (
            Request::AlterGroupConfig(AlterGroupConfig {
                group: "billing".into(),
                session_timeout_ms: Some(10_000),
            }),
            map(&[("group", s("billing")), ("session_timeout_ms", i(10_000))]),
        ),
        (
            Request::DescribeGroupConfig(DescribeGroupConfig {
                group: "billing".into(),
            }),
            map(&[("group", s("billing"))]),
        ),
    ];
    let mut kinds_seen = std::collections::BTreeSet::new();
    for (id, (request, body)) in cases.into_iter().enumerate() {
        let id = id as u64 + 1;
        let kind = serde_kind(&request);
        kinds_seen.insert(kind.clone());
        same_both_ways(
            &RequestFrame { id, request },
            &request_frame(id, &kind, body),
        );
    }
    assert_eq!(
        kinds_seen.len(),
        Request::KINDS.len(),
        "a request kind has no encoding case"
    );
}

/// The `kind` string as the encoder writes it.
fn serde_kind<T: Serialize>(tagged_value: &T) -> String {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: String,
    }
    let bytes = rmp_serde::to_vec_named(tagged_value).expect("encode");
    rmp_serde::from_slice::<Kind>(&bytes).expect("tagged").kind
}

// ------------------------------------------------------------------ responses

#[test]
fn every_response_kind_encodes_as_documented() {
    let group_config = GroupConfigDescription {
        group: "billing".into(),
        session_timeout_ms: Some(10_000),
        effective_session_timeout_ms: 10_000,
        default_session_timeout_ms: 45_000,
        min_session_timeout_ms: 1_000,
        max_session_timeout_ms: 1_800_000,
    };
    let group_config_body = map(&[
        ("group", s("billing")),
        ("session_timeout_ms", i(10_000)),
        ("effective_session_timeout_ms", i(10_000)),
        ("default_session_timeout_ms", i(45_000)),
        ("min_session_timeout_ms", i(1_000)),
        ("max_session_timeout_ms", i(1_800_000)),
    ]);
    let description = TopicDescription {
        name: "orders".into(),
        replication_factor: 1,
        internal: false,
        config: TopicConfig {
            retention_ms: 604_800_000,
            retention_bytes: -1,
            max_message_bytes: 1_048_576,
        },
        partitions: vec![PartitionDescription {
            partition: PartitionId(0),
            leader: Some(NodeId(1)),
            replicas: vec![NodeId(1)],
            log_start_offset: Offset(0),
            high_watermark: Offset(7),
            lagging: vec![NodeId(2)],
        }],
    };
    let description_v = map(&[
        ("name", s("orders")),
        ("replication_factor", i(1)),
        ("internal", V::Bool(false)),
        (
            "config",
            map(&[
                ("retention_ms", i(604_800_000)),
                ("retention_bytes", i(-1)),
                ("max_message_bytes", i(1_048_576)),
            ]),
        ),
        (
            "partitions",
            arr(&[map(&[
                ("partition", i(0)),
                ("leader", i(1)),
                ("replicas", arr(&[i(1)])),
                ("log_start_offset", i(0)),
                ("high_watermark", i(7)),
                ("lagging", arr(&[i(2)])),
            ])]),
        ),
    ]);
    let cases: Vec<(Response, V)> = vec![
        (
            Response::Hello(HelloReply {
                protocol_version: 1,
                node_id: NodeId(1),
                server_version: "0.1.0".into(),
                max_frame_bytes: 16_777_216,
            }),
            map(&[
                ("protocol_version", i(1)),
                ("node_id", i(1)),
                ("server_version", s("0.1.0")),
                ("max_frame_bytes", i(16_777_216)),
            ]),
        ),
        (
            Response::CreateTopic(description.clone()),
            description_v.clone(),
        ),
        (Response::DeleteTopic(()), V::Nil),
        (
            Response::ListTopics(vec![TopicSummary {
                name: "orders".into(),
                partitions: 3,
                replication_factor: 1,
                internal: false,
            }]),
            arr(&[map(&[
                ("name", s("orders")),
                ("partitions", i(3)),
                ("replication_factor", i(1)),
                ("internal", V::Bool(false)),
            ])]),
        ),
        (Response::DescribeTopic(description), description_v),
        (
            Response::Metadata(ClusterMetadata {
                brokers: vec![BrokerInfo {
                    node_id: NodeId(1),
                    address: "127.0.0.1:9092".into(),
                }],
                topics: vec![TopicMetadata {
                    name: "orders".into(),
                    partitions: vec![PartitionMetadata {
                        partition: PartitionId(0),
                        leader: None,
                        replicas: vec![NodeId(1), NodeId(2)],
                    }],
                    topic_id: Some(TopicId(7)),
                }],
            }),
            map(&[
                (
                    "brokers",
                    arr(&[map(&[("node_id", i(1)), ("address", s("127.0.0.1:9092"))])]),
                ),
                (
                    "topics",
                    arr(&[map(&[
                        ("name", s("orders")),
                        (
                            "partitions",
                            arr(&[map(&[
                                ("partition", i(0)),
                                ("leader", V::Nil),
                                ("replicas", arr(&[i(1), i(2)])),
                            ])]),
                        ),
                        ("topic_id", i(7)),
                    ])]),
                ),
            ]),
        ),
        (
            Response::Produce(ProduceReply {
                base_offset: Offset(40),
                log_start_offset: Offset(0),
            }),
            map(&[("base_offset", i(40)), ("log_start_offset", i(0))]),
        ),
        (
            Response::Fetch(FetchReply {
                high_watermark: Offset(41),
                log_start_offset: Offset(0),
                batches: vec![Bytes::from_static(b"b1"), Bytes::from_static(b"b2")],
            }),
            map(&[
                ("high_watermark", i(41)),
                ("log_start_offset", i(0)),
                (
                    "batches",
                    arr(&[V::Bin(b"b1".to_vec()), V::Bin(b"b2".to_vec())]),
                ),
            ]),
        ),
        (
            Response::ListOffsets(ListOffsetsReply {
                offset: Offset(12),
                timestamp: Some(1_700_000_000_000),
            }),
            map(&[("offset", i(12)), ("timestamp", i(1_700_000_000_000i64))]),
        ),
        (Response::CommitOffsets(()), V::Nil),
        (
            Response::FetchOffsets(vec![CommittedOffset {
                topic: "orders".into(),
                partition: PartitionId(0),
                offset: Offset(10),
                metadata: Some("m".into()),
                commit_timestamp: 1_700_000_000_000,
            }]),
            arr(&[map(&[
                ("topic", s("orders")),
                ("partition", i(0)),
                ("offset", i(10)),
                ("metadata", s("m")),
                ("commit_timestamp", i(1_700_000_000_000i64)),
            ])]),
        ),
        (
            Response::ListGroups(vec!["billing".into()]),
            arr(&[s("billing")]),
        ),
        (
            Response::DescribeGroup(GroupDescription {
                group: "billing".into(),
                partitions: vec![GroupPartitionLag {
                    topic: "orders".into(),
                    partition: PartitionId(0),
                    committed: Offset(10),
                    log_end: Offset(15),
                    lag: 5,
                }],
                state: "empty".into(),
                group_epoch: 2,
                members: vec![],
                session_timeout_ms: 45_000,
            }),
            map(&[
                ("group", s("billing")),
                (
                    "partitions",
                    arr(&[map(&[
                        ("topic", s("orders")),
                        ("partition", i(0)),
                        ("committed", i(10)),
                        ("log_end", i(15)),
                        ("lag", i(5)),
                    ])]),
                ),
                ("state", s("empty")),
                ("group_epoch", i(2)),
                ("members", arr(&[])),
                ("session_timeout_ms", i(45_000)),
            ]),
        ),
        (
            Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatReply {
                member_id: "c-4.1".into(),
                member_epoch: 3,
                heartbeat_interval_ms: 5_000,
                assignment: Some(vec![TopicPartitions {
                    topic: "orders".into(),
                    partitions: vec![PartitionId(0), PartitionId(2)],
                }]),
            }),
            map(&[
                ("member_id", s("c-4.1")),
                ("member_epoch", i(3)),
                ("heartbeat_interval_ms", i(5_000)),
                (
                    "assignment",
                    arr(&[map(&[
                        ("topic", s("orders")),
                        ("partitions", arr(&[i(0), i(2)])),
                    ])]),
                ),
            ]),
        ),
        (
            Response::ResetOffsets(vec![OffsetReset {
                partition: PartitionId(0),
                previous: None,
                offset: Offset(3),
            }]),
            arr(&[map(&[
                ("partition", i(0)),
                ("previous", V::Nil),
                ("offset", i(3)),
            ])]),
        ),
        (
            Response::InitProducerId(ProducerIdentity {
                producer_id: 1000,
                producer_epoch: 0,
            }),
            map(&[("producer_id", i(1000)), ("producer_epoch", i(0))]),
        ),
        (
            Response::ClusterStatus(ClusterStatusReply {
                node_id: NodeId(1),
                metadata_leader: Some(NodeId(2)),
                nodes: vec![NodeStatus {
                    node_id: NodeId(2),
                    address: "broker-2:9092".into(),
                    peer_address: "broker-2:9093".into(),
                    rack: None,
                    state: "active".into(),
                    live: true,
                    metadata_role: "voter".into(),
                    replicas: 12,
                    leaders: 4,
                }],
            }),
            map(&[
                ("node_id", i(1)),
                ("metadata_leader", i(2)),
                (
                    "nodes",
                    arr(&[map(&[
                        ("node_id", i(2)),
                        ("address", s("broker-2:9092")),
                        ("peer_address", s("broker-2:9093")),
                        ("rack", V::Nil),
                        ("state", s("active")),
                        ("live", V::Bool(true)),
                        ("metadata_role", s("voter")),
                        ("replicas", i(12)),
                        ("leaders", i(4)),
                    ])]),
                ),
            ]),
        ),
        (Response::DrainNode(()), V::Nil),
        (
            Response::AlterGroupConfig(group_config.clone()),
            group_config_body.clone(),
        ),
        (
            Response::DescribeGroupConfig(group_config),
            group_config_body,
        ),
    ];
    let mut kinds_seen = std::collections::BTreeSet::new();
    for (id, (response, body)) in cases.into_iter().enumerate() {
        let id = id as u64 + 1;
        let kind = serde_kind(&response);
        assert!(
            Request::KINDS.contains(&kind.as_str()),
            "reply kind {kind} is a request kind"
        );
        kinds_seen.insert(kind.clone());
        same_both_ways(
            &ResponseFrame {
                id,
                result: Ok(response),
            },
            &ok_frame(id, &kind, body),
        );
    }
    assert_eq!(
        kinds_seen.len(),
        Request::KINDS.len(),
        "a response kind has no encoding case"
    );
}

#[test]
fn error_replies_encode_as_documented() {
    let frame = ResponseFrame {
        id: 9,
        result: Err(ApiError::new(ErrorCode::UNKNOWN_TOPIC, "no such topic")),
    };
    let expected = map(&[
        ("id", i(9)),
        (
            "result",
            map(&[(
                "Err",
                map(&[
                    ("code", i(10)),
                    ("message", s("no such topic")),
                    ("detail", V::Nil),
                ]),
            )]),
        ),
    ]);
    same_both_ways(&frame, &expected);

    let frame = ResponseFrame {
        id: 10,
        result: Err(ApiError::not_leader(Some(NodeId(2)))),
    };
    let message = ApiError::not_leader(None).message;
    let expected = map(&[
        ("id", i(10)),
        (
            "result",
            map(&[(
                "Err",
                map(&[
                    ("code", i(30)),
                    ("message", s(&message)),
                    ("detail", map(&[("Leader", map(&[("leader", i(2))]))])),
                ]),
            )]),
        ),
    ]);
    same_both_ways(&frame, &expected);
}

// ------------------------------------------------------------------ what decoders accept

#[test]
fn decoder_accepts_what_the_document_allows() {
    // Keys in any order, `body` before `kind`, `id` after `request`.
    let reordered = map(&[
        (
            "request",
            map(&[
                (
                    "body",
                    map(&[("client_id", s("c")), ("protocol_version", i(1))]),
                ),
                ("kind", s("Hello")),
            ]),
        ),
        ("id", i(4)),
    ]);
    let frame: RequestFrame = rmp_serde::from_slice(&mp(&reordered)).expect("any key order");
    assert_eq!(
        frame.request,
        Request::Hello(Hello {
            protocol_version: 1,
            client_id: "c".into()
        })
    );

    // Unknown keys are ignored, at every level.
    let extra = map(&[
        ("id", i(5)),
        ("trace", s("abc")),
        (
            "request",
            map(&[
                ("kind", s("ListTopics")),
                (
                    "body",
                    map(&[("include_internal", V::Bool(false)), ("future", i(1))]),
                ),
            ]),
        ),
    ]);
    let frame: RequestFrame = rmp_serde::from_slice(&mp(&extra)).expect("unknown keys ignored");
    assert_eq!(
        frame.request,
        Request::ListTopics(ListTopics {
            include_internal: false
        })
    );

    // A missing optional field reads as nil.
    let no_topics = request_frame(6, "Metadata", map(&[]));
    let frame: RequestFrame =
        rmp_serde::from_slice(&mp(&no_topics)).expect("optional field omitted");
    assert_eq!(frame.request, Request::Metadata(Metadata { topics: None }));

    // Integers in a wider format than needed.
    let mut wide = vec![0x82, 0xa2, b'i', b'd', 0xcf];
    wide.extend(7u64.to_be_bytes());
    wide.extend(mp(&s("request")));
    wide.extend(mp(&tagged(
        "ListTopics",
        map(&[("include_internal", V::Bool(false))]),
    )));
    let frame: RequestFrame = rmp_serde::from_slice(&wide).expect("uint64 id");
    assert_eq!(frame.id, 7);
    let mut acks = mp(&s("acks"));
    acks.push(0xd3);
    acks.extend((-1i64).to_be_bytes());
    assert_eq!(
        rmp_serde::from_slice::<Acks>(&acks[5..]).expect("int64 -1"),
        Acks::All
    );

    // Produce's `topic_id` may be nil or absent (old clients): the request goes by name.
    for topic_id in [Some(V::Nil), None] {
        let mut body = vec![
            ("topic", s("t")),
            ("partition", i(0)),
            ("acks", i(1)),
            ("timeout_ms", i(1_000)),
            ("batches", arr(&[V::Bin(b"b".to_vec())])),
        ];
        body.extend(topic_id.map(|id| ("topic_id", id)));
        let frame: RequestFrame =
            rmp_serde::from_slice(&mp(&request_frame(9, "Produce", map(&body))))
                .expect("topic_id nil or absent");
        let Request::Produce(produce) = frame.request else {
            panic!("a Produce");
        };
        assert_eq!(produce.topic_id, None);
    }

    // CreateTopic's `config` may be nil or absent: every default.
    for config in [Some(V::Nil), None] {
        let mut body = vec![
            ("name", s("t")),
            ("partitions", i(1)),
            ("replication_factor", i(1)),
        ];
        body.extend(config.map(|c| ("config", c)));
        let frame: RequestFrame =
            rmp_serde::from_slice(&mp(&request_frame(8, "CreateTopic", map(&body))))
                .expect("config nil or absent");
        let Request::CreateTopic(create) = frame.request else {
            panic!("a CreateTopic");
        };
        assert_eq!(create.config, TopicConfigOverrides::default());
    }

    // A unit variant may also be sent as a one-key map with a nil value.
    let spec: OffsetSpec =
        rmp_serde::from_slice(&mp(&map(&[("Earliest", V::Nil)]))).expect("map form");
    assert_eq!(spec, OffsetSpec::Earliest);
}

#[test]
fn decoder_rejects_what_the_document_forbids() {
    let bad_bodies = [
        // A required field missing.
        request_frame(1, "Hello", map(&[("client_id", s("c"))])),
        // A number where a string belongs.
        request_frame(1, "DescribeTopic", map(&[("name", V::Int(1))])),
        // A negative number in an unsigned field.
        request_frame(
            1,
            "Fetch",
            map(&[
                ("topic", s("t")),
                ("partition", i(-1)),
                ("offset", i(0)),
                ("max_bytes", i(1)),
                ("max_wait_ms", i(0)),
                ("min_bytes", i(0)),
            ]),
        ),
        // acks outside 0, 1, -1.
        request_frame(
            1,
            "Produce",
            map(&[
                ("topic", s("t")),
                ("partition", i(0)),
                ("acks", i(2)),
                ("timeout_ms", i(1)),
                ("batches", arr(&[])),
            ]),
        ),
        // No body at all, even for a request without fields.
        map(&[("id", i(1)), ("request", map(&[("kind", s("ListGroups"))]))]),
        // nil is not an empty map.
        request_frame(1, "ListGroups", V::Nil),
    ];
    for body in bad_bodies {
        assert!(
            matches!(
                gregor_protocol::frame::decode_request(&mp(&body)),
                Err(gregor_protocol::frame::RequestDecodeError::BadBody { id: 1, .. })
            ),
            "{body:?} should be refused"
        );
    }
    // Batches are bin: a str or an array of integers in their place is refused.
    for batches in [arr(&[s("abc")]), arr(&[arr(&[i(1), i(2)])])] {
        let produce = request_frame(
            1,
            "Produce",
            map(&[
                ("topic", s("t")),
                ("partition", i(0)),
                ("acks", i(1)),
                ("timeout_ms", i(1)),
                ("batches", batches.clone()),
            ]),
        );
        assert!(
            gregor_protocol::frame::decode_request(&mp(&produce)).is_err(),
            "{batches:?} should be refused as batches"
        );
    }
    let float_int = [0xcb, 0x40, 0, 0, 0, 0, 0, 0, 0];
    assert!(
        rmp_serde::from_slice::<u32>(&float_int).is_err(),
        "2.0 is not an integer"
    );
}

// ------------------------------------------------------------------ the document itself

#[test]
fn error_code_table_in_the_document_matches_the_code() {
    let doc = protocol_md();
    let mut rows = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | code | NAME | retriable | ...
        if cells.len() > 4 && cells[1].parse::<u16>().is_ok() && cells[2].starts_with('`') {
            let code: u16 = cells[1].parse().expect("number");
            let name = cells[2].trim_matches('`').to_owned();
            let retriable = match cells[3] {
                "yes" => true,
                "no" => false,
                other => panic!("retriable column must be yes or no, not {other}"),
            };
            rows.push((code, name, retriable));
        }
    }
    let expected: Vec<(u16, String, bool)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.0, c.name().to_owned(), c.is_retriable()))
        .collect();
    assert_eq!(
        rows, expected,
        "PROTOCOL.md's error table differs from ErrorCode::ALL"
    );
}

#[test]
fn every_request_kind_has_a_section_in_the_document() {
    let doc = protocol_md();
    for kind in Request::KINDS {
        assert!(
            doc.contains(&format!("### `{kind}`")),
            "PROTOCOL.md has no section for {kind}"
        );
    }
    assert!(doc.contains(&format!("`PROTOCOL_VERSION` = {PROTOCOL_VERSION}")));
}

#[test]
fn worked_examples_in_the_document_are_real() {
    let doc = protocol_md();
    let hello = encode_frame(&RequestFrame {
        id: 1,
        request: Request::Hello(Hello {
            protocol_version: 1,
            client_id: "demo".into(),
        }),
    });
    let hello_reply = encode_frame(&ResponseFrame {
        id: 1,
        result: Ok(Response::Hello(HelloReply {
            protocol_version: 1,
            node_id: NodeId(1),
            server_version: "0.1.0".into(),
            max_frame_bytes: 16_777_216,
        })),
    });
    let error = encode_frame(&ResponseFrame {
        id: 0,
        result: Err(ApiError::new(ErrorCode::MALFORMED_FRAME, "bad")),
    });
    let batch = sample_batch();
    let produce = encode_frame(&RequestFrame {
        id: 2,
        request: Request::Produce(Produce {
            topic: "demo".into(),
            partition: PartitionId(0),
            acks: Acks::All,
            timeout_ms: 30_000,
            batches: vec![batch.clone()],
            topic_id: None,
        }),
    });
    let mut stamped = batch.to_vec();
    gregor_protocol::batch::stamp(&mut stamped, 42, 3);
    let mut missing = Vec::new();
    for (name, bytes) in [
        ("Hello frame", &hello[..]),
        ("HelloReply frame", &hello_reply[..]),
        ("error frame", &error[..]),
        ("record batch", &batch[..]),
        ("stamped batch", &stamped[..]),
        ("Produce frame", &produce[..]),
    ] {
        let dump = hex_dump(bytes);
        if !doc.contains(&dump) {
            missing.push(format!("{name}:\n{dump}\n"));
        }
    }
    assert!(
        missing.is_empty(),
        "PROTOCOL.md lacks these examples:\n{}",
        missing.join("\n")
    );
    // The CRC32C check value quoted in the document.
    assert!(doc.contains(&format!("{:#010x}", crc32c(b"123456789"))));
}

// ------------------------------------------------------------------ record batches by hand

/// CRC-32C (Castagnoli), reflected, polynomial 0x82F63B78, as the document describes it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint(out, -1),
        Some(bytes) => {
            varint(out, bytes.len() as i64);
            out.extend(bytes);
        }
    }
}

struct HandRecord<'a> {
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// A batch built from the document's description alone.
fn hand_built_batch(records: &[HandRecord<'_>]) -> Vec<u8> {
    let base_timestamp = records[0].timestamp;
    let max_timestamp = records.iter().map(|r| r.timestamp).max().expect("records");
    let mut body = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let mut fields = vec![0u8]; // attributes
        varint(&mut fields, record.timestamp - base_timestamp);
        varint(&mut fields, index as i64);
        nullable(&mut fields, record.key);
        nullable(&mut fields, record.value);
        varint(&mut fields, record.headers.len() as i64);
        for (name, value) in &record.headers {
            nullable(&mut fields, Some(name));
            nullable(&mut fields, *value);
        }
        varint(&mut body, fields.len() as i64);
        body.extend(fields);
    }
    let mut crc_covered = Vec::new();
    crc_covered.extend(0i16.to_be_bytes()); // attributes
    crc_covered.extend((records.len() as i32 - 1).to_be_bytes()); // lastOffsetDelta
    crc_covered.extend(base_timestamp.to_be_bytes());
    crc_covered.extend(max_timestamp.to_be_bytes());
    crc_covered.extend((-1i64).to_be_bytes()); // producerId
    crc_covered.extend((-1i16).to_be_bytes()); // producerEpoch
    crc_covered.extend((-1i32).to_be_bytes()); // baseSequence
    crc_covered.extend((records.len() as i32).to_be_bytes());
    crc_covered.extend(body);
    let mut batch = Vec::new();
    batch.extend(0i64.to_be_bytes()); // baseOffset
    batch.extend(((4 + 1 + 4 + crc_covered.len()) as i32).to_be_bytes()); // batchLength
    batch.extend((-1i32).to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend(crc32c(&crc_covered).to_be_bytes());
    batch.extend(crc_covered);
    batch
}

#[test]
fn batches_built_from_the_document_match_the_server_format() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    let one = hand_built_batch(&[HandRecord {
        timestamp: 1_700_000_000_000,
        key: Some(b"k"),
        value: Some(b"hello"),
        headers: vec![],
    }]);
    assert_eq!(hex_dump(&one), hex_dump(&sample_batch()));

    let headers: &[(&[u8], Option<&[u8]>)] = &[(b"trace", Some(b"1")), (b"empty", None)];
    let two = hand_built_batch(&[
        HandRecord {
            timestamp: 1000,
            key: None,
            value: Some(&[7; 200]),
            headers: headers.to_vec(),
        },
        HandRecord {
            timestamp: 990,
            key: Some(b""),
            value: None,
            headers: vec![],
        },
    ]);
    let mut builder = BatchBuilder::with_capacity(512);
    builder.push(&NewRecord {
        key: None,
        value: Some(&[7; 200]),
        headers,
        timestamp: 1000,
    });
    builder.push(&NewRecord {
        key: Some(b""),
        value: None,
        headers: &[],
        timestamp: 990,
    });
    assert_eq!(hex_dump(&two), hex_dump(&builder.finish()));

    let view = gregor_protocol::batch::BatchView::validate(&two).expect("the broker accepts it");
    let records: Vec<_> = view
        .records()
        .collect::<Result<_, _>>()
        .expect("records decode");
    assert_eq!(records[1].timestamp, 990);
    assert_eq!(records[1].key, Some(&b""[..]));
    assert_eq!(records[1].value, None);
}
