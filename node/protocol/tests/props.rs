//! Property tests of the client protocol codec: arbitrary bytes never panic the decoders, and
//! every request and reply survives a trip through a frame.

use bytes::Buf;
use bytes::Bytes;
use gregor_protocol::api::*;
use gregor_protocol::frame::{
    decode_request, decode_response, decode_shared_request, encode_chunked_frame, encode_frame,
    read_frame,
};
use gregor_protocol::{Offset, PartitionId, TopicId};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{0,20}"
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            name(),
            any::<u32>(),
            prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)],
            any::<u32>(),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(topic, p, acks, timeout_ms, batches, topic_id)| Request::Produce(Produce {
                    topic,
                    partition: PartitionId(p),
                    acks,
                    timeout_ms,
                    batches: batches.into_iter().map(Bytes::from).collect(),
                    topic_id: topic_id.map(TopicId),
                })
            ),
        (
            name(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(topic, p, offset, max_bytes, max_wait_ms, min_bytes)| {
                Request::Fetch(Fetch {
                    topic,
                    partition: PartitionId(p),
                    offset: Offset(offset),
                    max_bytes,
                    max_wait_ms,
                    min_bytes,
                })
            }),
        (
            name(),
            name(),
            any::<u32>(),
            any::<u64>(),
            proptest::option::of(".{0,10}")
        )
            .prop_map(
                |(group, topic, p, offset, metadata)| Request::CommitOffsets(CommitOffsets {
                    group,
                    offsets: vec![OffsetCommit {
                        topic,
                        partition: PartitionId(p),
                        offset: Offset(offset),
                        metadata
                    }],
                    member: None,
                })
            ),
        (
            name(),
            name(),
            prop_oneof![
                Just(ResetTarget::Earliest),
                Just(ResetTarget::Latest),
                any::<u64>().prop_map(|o| ResetTarget::Offset(Offset(o))),
                any::<i64>().prop_map(ResetTarget::Timestamp),
                any::<u64>().prop_map(ResetTarget::DurationAgo),
            ],
            any::<bool>()
        )
            .prop_map(
                |(group, topic, to, dry_run)| Request::ResetOffsets(ResetOffsets {
                    group,
                    topic,
                    to,
                    dry_run
                })
            ),
        (
            name(),
            any::<u32>(),
            prop_oneof![
                Just(OffsetSpec::Earliest),
                Just(OffsetSpec::Latest),
                any::<i64>().prop_map(OffsetSpec::Timestamp),
            ]
        )
            .prop_map(|(topic, p, spec)| Request::ListOffsets(ListOffsets {
                topic,
                partition: PartitionId(p),
                spec
            })),
        (
            name(),
            any::<u32>(),
            any::<u16>(),
            proptest::option::of(any::<i64>())
        )
            .prop_map(|(name, partitions, replication_factor, retention_ms)| {
                Request::CreateTopic(CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    config: TopicConfigOverrides {
                        retention_ms,
                        ..Default::default()
                    },
                    creation_id: None,
                })
            }),
        any::<bool>()
            .prop_map(|include_internal| Request::ListTopics(ListTopics { include_internal })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip_through_a_frame(id in any::<u64>(), request in request()) {
        let frame = RequestFrame { id, request };
        let bytes = encode_frame(&frame);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let body = runtime
            .block_on(read_frame(&mut &bytes[..], u32::MAX))
            .expect("a frame we encoded reads back")
            .expect("one frame");
        prop_assert_eq!(&decode_request(&body).expect("decodes"), &frame);
        prop_assert_eq!(&decode_shared_request(&body).expect("decodes"), &frame);
        let mut chunked = encode_chunked_frame(&frame);
        prop_assert_eq!(chunked.copy_to_bytes(chunked.remaining()), bytes);
    }

    #[test]
    fn errors_round_trip(id in any::<u64>(), code in any::<u16>(), message in ".{0,40}", start in any::<u64>(), end in any::<u64>()) {
        let error = ApiError::new(ErrorCode(code), message)
            .with_detail(ErrorDetail::OffsetRange { log_start_offset: Offset(start), log_end_offset: Offset(end) });
        let frame = ResponseFrame { id, result: Err(error) };
        let bytes = encode_frame(&frame);
        prop_assert_eq!(decode_response(&bytes[4..]).expect("decodes"), frame);
    }

    #[test]
    fn arbitrary_bodies_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(decode_shared_request(&bytes::Bytes::from(bytes.clone())), decode_request(&bytes));
        let _ = decode_response(&bytes);
    }

    #[test]
    fn arbitrary_streams_never_panic_the_frame_reader(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0u32..128) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut reader = &bytes[..];
        // Frames until the stream ends or a frame is refused; none of it may panic.
        while let Ok(Some(_)) = runtime.block_on(read_frame(&mut reader, max)) {}
    }
}
