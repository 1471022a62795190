//! The client library against fake brokers that speak the real wire protocol over loopback:
//! a scripted one (the test answers each frame by hand) for the connection, and a small
//! in-memory one for the producer and consumer.

use bytes::Bytes;
use gregor_client::{
    Admin, AutoOffsetReset, ClientConfig, ClientError, Connection, ConnectionConfig, Consumer,
    ConsumerConfig, DeliveryHandle, NewTopic, Producer, ProducerConfig, ProducerRecord, SeekTo,
    TopicPartition,
};
use gregor_protocol::api::{
    Acks, ApiError, BrokerInfo, ClusterMetadata, CommittedOffset, ConsumerGroupHeartbeatReply,
    CreateTopic, ErrorCode, FetchReply, HelloReply, ListGroups, ListOffsetsReply, OffsetSpec,
    PartitionMetadata, Produce, ProduceReply, ProducerIdentity, Request, RequestFrame, Response,
    ResponseFrame, TopicConfig, TopicDescription, TopicMetadata, TopicPartitions, PROTOCOL_VERSION,
};
use gregor_protocol::batch::{
    stamp, BatchBuilder, BatchView, Compression, NewRecord, MAX_DECOMPRESSED_BYTES,
};
use gregor_protocol::frame::{decode_request, encode_frame, read_frame, DEFAULT_MAX_FRAME_BYTES};
use gregor_protocol::partitioner::partition_for_key;
use gregor_protocol::{NodeId, Offset, PartitionId, TopicId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const NODE: NodeId = NodeId(1);

fn hello_reply(node_id: NodeId, protocol_version: u16) -> Response {
    Response::Hello(HelloReply {
        protocol_version,
        node_id,
        server_version: "fake".into(),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
    })
}

/// Answers the handshake; returns `None` if the peer went away first.
async fn accept_hello(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    node_id: NodeId,
    protocol_version: u16,
) -> Option<()> {
    let body = read_frame(reader, DEFAULT_MAX_FRAME_BYTES).await.ok()??;
    let frame = decode_request(&body).ok()?;
    assert!(
        matches!(frame.request, Request::Hello(_)),
        "the first frame must be Hello"
    );
    let reply = ResponseFrame {
        id: frame.id,
        result: Ok(hello_reply(node_id, protocol_version)),
    };
    writer.write_all(&encode_frame(&reply)).await.ok()
}

// ------------------------------------------------------------------ the scripted broker

/// Replies to one connection of the scripted broker; `close` hangs up.
#[derive(Clone)]
struct Replies(mpsc::UnboundedSender<Option<ResponseFrame>>);

impl Replies {
    fn reply(&self, id: u64, result: Result<Response, ApiError>) {
        self.0
            .send(Some(ResponseFrame { id, result }))
            .expect("connection task alive");
    }
    fn close(&self) {
        let _ = self.0.send(None);
    }
}

/// Hands every request after the handshake to the test, which answers by hand.
struct Scripted {
    addr: String,
    incoming: mpsc::UnboundedReceiver<(RequestFrame, Replies)>,
}

impl Scripted {
    async fn start(protocol_version: u16) -> Scripted {
        Scripted::start_as(NODE, protocol_version).await
    }

    async fn start_as(node_id: NodeId, protocol_version: u16) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (to_test, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let to_test = to_test.clone();
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.into_split();
                    if accept_hello(&mut reader, &mut writer, node_id, protocol_version)
                        .await
                        .is_none()
                    {
                        return;
                    }
                    let (replies, mut queue) = mpsc::unbounded_channel::<Option<ResponseFrame>>();
                    let writing = tokio::spawn(async move {
                        while let Some(Some(frame)) = queue.recv().await {
                            if writer.write_all(&encode_frame(&frame)).await.is_err() {
                                return;
                            }
                        }
                        // Dropping the write half sends FIN: the client sees the broker hang up.
                    });
                    while let Ok(Some(body)) =
                        read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES).await
                    {
                        let frame = decode_request(&body).expect("the client sends valid frames");
                        if to_test.send((frame, Replies(replies.clone()))).is_err() {
                            break;
                        }
                    }
                    drop(replies);
                    let _ = writing.await;
                });
            }
        });
        Scripted { addr, incoming }
    }

    async fn next(&mut self) -> (RequestFrame, Replies) {
        self.incoming
            .recv()
            .await
            .expect("the fake broker is running")
    }
}

fn config(max_in_flight: usize) -> ConnectionConfig {
    ConnectionConfig {
        max_in_flight,
        ..ConnectionConfig::default()
    }
}

fn list_groups() -> Request {
    Request::ListGroups(ListGroups {})
}

fn groups_of(reply: Result<Response, ClientError>) -> Vec<String> {
    match reply {
        Ok(Response::ListGroups(groups)) => groups,
        other => panic!("expected a ListGroups reply, got {other:?}"),
    }
}

#[tokio::test]
async fn replies_in_any_order_reach_the_request_they_answer() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let conn = Connection::connect(&broker.addr, &config(16))
        .await
        .expect("connect");
    assert_eq!(conn.node_id(), NODE);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { groups_of(conn.send(list_groups()).await) })
        })
        .collect();
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(broker.next().await);
    }
    // Answer last to first; each reply names the id it answers.
    for (frame, replies) in received.iter().rev() {
        replies.reply(
            frame.id,
            Ok(Response::ListGroups(vec![frame.id.to_string()])),
        );
    }
    let mut answered = Vec::new();
    for call in calls {
        answered.extend(call.await.expect("task"));
    }
    answered.sort();
    let mut ids: Vec<String> = received.iter().map(|(f, _)| f.id.to_string()).collect();
    ids.sort();
    assert_eq!(answered, ids, "every caller got the reply with its own id");
    assert_eq!(conn.in_flight(), 0);
}

#[tokio::test]
async fn a_broker_error_keeps_its_code_and_message() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let conn = Connection::connect(&broker.addr, &config(4))
        .await
        .expect("connect");
    let call = tokio::spawn({
        let conn = conn.clone();
        async move { conn.send(list_groups()).await }
    });
    let (frame, replies) = broker.next().await;
    replies.reply(frame.id, Err(ApiError::unknown_topic("orders")));
    let err = call.await.expect("task").expect_err("an error reply");
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC));
    let api = err.api_error().expect("an API error");
    assert_eq!(
        api.message,
        "topic 'orders' does not exist; create it with: gregor topic create orders"
    );
    assert!(err.to_string().contains("gregor topic create orders"));
}

#[tokio::test]
async fn a_dropped_connection_fails_every_pending_request_and_later_ones() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let conn = Connection::connect(&broker.addr, &config(4))
        .await
        .expect("connect");
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.send(list_groups()).await })
        })
        .collect();
    let (_, replies) = broker.next().await;
    broker.next().await;
    replies.close();
    for call in calls {
        let err = call.await.expect("task").expect_err("the broker hung up");
        assert!(matches!(err, ClientError::Disconnected { .. }), "{err:?}");
        assert!(err.to_string().contains("closed"), "{err}");
    }
    assert!(conn.is_closed());
    assert!(matches!(
        conn.send(list_groups()).await,
        Err(ClientError::Disconnected { .. })
    ));
}

#[tokio::test]
async fn requests_beyond_max_in_flight_wait_for_a_slot() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let conn = Connection::connect(&broker.addr, &config(2))
        .await
        .expect("connect");
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { groups_of(conn.send(list_groups()).await) })
        })
        .collect();
    let (first, replies) = broker.next().await;
    let (second, _) = broker.next().await;
    assert_eq!(conn.in_flight(), 2);

    let mut third = Box::pin(conn.send(list_groups()));
    // Polled once: it waits for a slot instead of going out.
    assert!(tokio::time::timeout(Duration::ZERO, &mut third)
        .await
        .is_err());
    assert_eq!(conn.in_flight(), 2);

    replies.reply(first.id, Ok(Response::ListGroups(vec!["a".into()])));
    let answer = tokio::spawn(async move {
        let (frame, replies) = broker.next().await;
        replies.reply(frame.id, Ok(Response::ListGroups(vec!["c".into()])));
        replies.reply(second.id, Ok(Response::ListGroups(vec!["b".into()])));
        broker
    });
    assert_eq!(groups_of(third.await), vec!["c".to_owned()]);
    let _broker = answer.await.expect("task");
    for call in calls {
        call.await.expect("task");
    }
}

#[tokio::test]
async fn an_unanswered_request_times_out_and_frees_its_slot() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let conn = Connection::connect(&broker.addr, &config(1))
        .await
        .expect("connect");
    let call = tokio::spawn({
        let conn = conn.clone();
        async move {
            conn.send_timeout(list_groups(), Duration::from_millis(50))
                .await
        }
    });
    broker.next().await;
    let err = call.await.expect("task").expect_err("no reply");
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains("raise the request timeout"),
        "{err}"
    );
    assert_eq!(conn.in_flight(), 0);
}

#[tokio::test]
async fn fire_and_forget_returns_once_written_and_gets_no_reply() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let conn = Connection::connect(&broker.addr, &config(1))
        .await
        .expect("connect");
    let request = Request::Produce(Produce {
        topic: "t".into(),
        partition: PartitionId(0),
        acks: Acks::None,
        timeout_ms: 1_000,
        batches: vec![batch(&[b"x"])],
        topic_id: None,
    });
    conn.send_no_reply(request.clone()).await.expect("written");
    let (frame, _) = broker.next().await;
    assert_eq!(frame.request, request);
    assert_eq!(
        conn.in_flight(),
        0,
        "no slot is held for a request without reply"
    );
}

#[tokio::test]
async fn a_broker_of_another_protocol_version_is_refused_with_advice() {
    let broker = Scripted::start(PROTOCOL_VERSION + 1).await;
    let err = Connection::connect(&broker.addr, &config(1))
        .await
        .expect_err("version mismatch");
    assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
    assert!(
        err.to_string().contains("use matching gregor versions"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_broker_says_how_to_fix_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let err = Connection::connect(&addr, &config(1))
        .await
        .expect_err("nothing listens");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach {addr}: connection refused; is `gregor serve` running there? set --bootstrap or GREGOR_BOOTSTRAP"
        )
    );
}

// ------------------------------------------------------------------ the in-memory broker

fn batch(values: &[&[u8]]) -> Bytes {
    let mut b = BatchBuilder::with_capacity(256);
    for (i, v) in values.iter().enumerate() {
        b.push(&NewRecord {
            key: None,
            value: Some(v),
            headers: &[],
            timestamp: 1_000 + i as i64,
        });
    }
    b.finish()
}

#[derive(Default)]
struct PartitionLog {
    log_start: u64,
    next: u64,
    /// Stamped batches, in offset order.
    batches: Vec<Bytes>,
}

impl PartitionLog {
    fn append(&mut self, batch: &Bytes) -> u64 {
        let view = BatchView::validate(batch).expect("the producer builds valid batches");
        let mut stamped = batch.to_vec();
        let base = self.next;
        stamp(&mut stamped, base, 0);
        self.next += u64::from(view.record_count());
        self.batches.push(Bytes::from(stamped));
        base
    }

    fn values(&self) -> Vec<(u64, Vec<u8>)> {
        self.batches
            .iter()
            .flat_map(|b| {
                let view = BatchView::validate(b).expect("valid");
                let plain = view
                    .decompressed(MAX_DECOMPRESSED_BYTES)
                    .expect("decompresses");
                view.records_in(&plain)
                    .map(|r| {
                        let r = r.expect("record");
                        (r.offset, r.value.unwrap_or_default().to_vec())
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[derive(Default)]
struct BrokerState {
    topics: BTreeMap<String, Vec<PartitionLog>>,
    committed: BTreeMap<(String, String, u32), u64>,
    metadata_requests: usize,
    produce_requests: usize,
    /// Errors for the next produce requests, in order.
    produce_failures: VecDeque<ApiError>,
    /// Producer ids handed out so far.
    producer_ids: i64,
    /// Each topic's incarnation; a re-created topic gets the next id.
    topic_ids: BTreeMap<String, TopicId>,
    next_topic_id: u64,
    /// The `topic_id` of every produce request, in arrival order.
    produce_topic_ids: Vec<Option<TopicId>>,
}

impl BrokerState {
    /// Creates `name` afresh (deleting it first if it exists): empty logs, a new id.
    fn create(&mut self, name: &str, partitions: u32) {
        self.next_topic_id += 1;
        self.topic_ids
            .insert(name.into(), TopicId(self.next_topic_id));
        self.topics.insert(
            name.into(),
            (0..partitions).map(|_| PartitionLog::default()).collect(),
        );
    }
}

type Shared = Arc<Mutex<BrokerState>>;

/// Serves Metadata, Produce, Fetch, ListOffsets and group offsets from memory.
struct MemoryBroker {
    addr: String,
    state: Shared,
}

impl MemoryBroker {
    async fn start(topics: &[(&str, u32)]) -> MemoryBroker {
        let mut state = BrokerState::default();
        for (name, partitions) in topics {
            state.create(name, *partitions);
        }
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (serving, advertised) = (state.clone(), addr.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, advertised) = (serving.clone(), advertised.clone());
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.into_split();
                    if accept_hello(&mut reader, &mut writer, NODE, PROTOCOL_VERSION)
                        .await
                        .is_none()
                    {
                        return;
                    }
                    let (replies, mut queue) = mpsc::unbounded_channel::<ResponseFrame>();
                    tokio::spawn(async move {
                        while let Some(frame) = queue.recv().await {
                            if writer.write_all(&encode_frame(&frame)).await.is_err() {
                                return;
                            }
                        }
                    });
                    while let Ok(Some(body)) =
                        read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES).await
                    {
                        let frame = decode_request(&body).expect("the client sends valid frames");
                        serve(&state, &advertised, frame, &replies);
                    }
                });
            }
        });
        MemoryBroker { addr, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BrokerState> {
        self.state.lock().expect("broker state")
    }

    fn values(&self, topic: &str, partition: usize) -> Vec<(u64, Vec<u8>)> {
        self.state().topics[topic][partition].values()
    }

    /// The codec of every batch stored in `topic`/`partition`.
    fn codecs(&self, topic: &str, partition: usize) -> Vec<Compression> {
        self.state().topics[topic][partition]
            .batches
            .iter()
            .map(|b| {
                BatchView::validate(b)
                    .expect("valid")
                    .compression()
                    .expect("known")
            })
            .collect()
    }

    fn client(&self) -> ClientConfig {
        ClientConfig::new(&self.addr).seed(7)
    }
}

fn serve(
    state: &Shared,
    advertised: &str,
    frame: RequestFrame,
    replies: &mpsc::UnboundedSender<ResponseFrame>,
) {
    let mut s = state.lock().expect("broker state");
    let result = match frame.request {
        Request::Metadata(m) => {
            s.metadata_requests += 1;
            let topics = s
                .topics
                .iter()
                .filter(|(name, _)| m.topics.as_ref().is_none_or(|wanted| wanted.contains(name)))
                .map(|(name, parts)| TopicMetadata {
                    name: name.clone(),
                    partitions: (0..parts.len() as u32)
                        .map(|p| PartitionMetadata {
                            partition: PartitionId(p),
                            leader: Some(NODE),
                            replicas: vec![NODE],
                        })
                        .collect(),
                    topic_id: s.topic_ids.get(name).copied(),
                })
                .collect();
            let brokers = vec![BrokerInfo {
                node_id: NODE,
                address: advertised.into(),
            }];
            Ok(Response::Metadata(ClusterMetadata { brokers, topics }))
        }
        Request::Produce(p) => {
            s.produce_requests += 1;
            s.produce_topic_ids.push(p.topic_id);
            let current = s.topic_ids.get(&p.topic).copied();
            match s.produce_failures.pop_front() {
                Some(e) => Err(e),
                None if p.topic_id.is_some() && p.topic_id != current => Err(
                    ApiError::unknown_topic_id(&p.topic, p.topic_id.expect("checked")),
                ),
                None => {
                    let log = &mut s.topics.get_mut(&p.topic).expect("known topic")
                        [p.partition.0 as usize];
                    let bases: Vec<u64> = p.batches.iter().map(|b| log.append(b)).collect();
                    if p.acks == Acks::None {
                        return;
                    }
                    Ok(Response::Produce(ProduceReply {
                        base_offset: Offset(bases[0]),
                        log_start_offset: Offset(log.log_start),
                    }))
                }
            }
        }
        Request::Fetch(f) => {
            let log = &s.topics[&f.topic][f.partition.0 as usize];
            if f.offset.0 < log.log_start || f.offset.0 > log.next {
                Err(ApiError::offset_out_of_range(
                    f.offset,
                    Offset(log.log_start),
                    Offset(log.next),
                ))
            } else {
                let batches: Vec<Bytes> = log
                    .batches
                    .iter()
                    .filter(|b| BatchView::validate(b).expect("valid").last_offset() >= f.offset.0)
                    .cloned()
                    .collect();
                let reply = FetchReply {
                    high_watermark: Offset(log.next),
                    log_start_offset: Offset(log.log_start),
                    batches,
                };
                if reply.batches.is_empty() {
                    // Long poll: nothing new arrives here, so answer empty when the wait ends.
                    let replies = replies.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(u64::from(f.max_wait_ms))).await;
                        let _ = replies.send(ResponseFrame {
                            id: frame.id,
                            result: Ok(Response::Fetch(reply)),
                        });
                    });
                    return;
                }
                Ok(Response::Fetch(reply))
            }
        }
        Request::ListOffsets(l) => {
            let log = &s.topics[&l.topic][l.partition.0 as usize];
            let offset = match l.spec {
                OffsetSpec::Earliest => log.log_start,
                OffsetSpec::Latest => log.next,
                OffsetSpec::Timestamp(_) => log.log_start,
            };
            Ok(Response::ListOffsets(ListOffsetsReply {
                offset: Offset(offset),
                timestamp: None,
            }))
        }
        Request::CommitOffsets(c) => {
            for o in c.offsets {
                s.committed
                    .insert((c.group.clone(), o.topic, o.partition.0), o.offset.0);
            }
            Ok(Response::CommitOffsets(()))
        }
        Request::FetchOffsets(f) => {
            let offsets = s
                .committed
                .iter()
                .filter(|((g, t, _), _)| {
                    *g == f.group && f.topic.as_ref().is_none_or(|topic| topic == t)
                })
                .map(|((_, topic, partition), offset)| CommittedOffset {
                    topic: topic.clone(),
                    partition: PartitionId(*partition),
                    offset: Offset(*offset),
                    metadata: None,
                    commit_timestamp: 0,
                })
                .collect();
            Ok(Response::FetchOffsets(offsets))
        }
        Request::InitProducerId(_) => {
            s.producer_ids += 1;
            Ok(Response::InitProducerId(ProducerIdentity {
                producer_id: s.producer_ids,
                producer_epoch: 0,
            }))
        }
        other => Err(ApiError::new(
            ErrorCode::UNKNOWN_REQUEST,
            format!("the fake does not serve {other:?}"),
        )),
    };
    let _ = replies.send(ResponseFrame {
        id: frame.id,
        result,
    });
}

fn producer_config(broker: &MemoryBroker) -> ProducerConfig {
    ProducerConfig::from_client(broker.client().retries(3))
}

#[tokio::test]
async fn records_get_base_offset_plus_index_and_flush_waits_for_them() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    let producer = Producer::connect(producer_config(&broker))
        .await
        .expect("connect");
    let mut handles = Vec::new();
    for i in 0..10u8 {
        handles.push(
            producer
                .send(ProducerRecord::new("t", &[b'a' + i]))
                .await
                .expect("queued"),
        );
    }
    producer.flush().await;
    for (i, handle) in handles.into_iter().enumerate() {
        assert!(
            handle.try_result().is_some(),
            "flush returned before record {i} completed"
        );
        let md = handle.await.expect("delivered");
        assert_eq!(md.offset, Some(Offset(i as u64)));
        assert_eq!(md.partition, PartitionId(0));
    }
    let stored: Vec<Vec<u8>> = broker.values("t", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        stored,
        (0..10u8).map(|i| vec![b'a' + i]).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_lone_record_goes_out_when_its_linger_ends_without_a_flush() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    let producer = Producer::connect(producer_config(&broker).linger_ms(20))
        .await
        .expect("connect");
    let handle = producer
        .send(ProducerRecord::new("t", b"alone"))
        .await
        .expect("queued");
    // Only the linger timer can send it; the bound turns a hang into a failure.
    let delivered = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("sent by the linger timer");
    assert_eq!(delivered.expect("delivered").offset, Some(Offset(0)));
}

#[tokio::test]
async fn keyed_records_land_where_kafkas_partitioner_puts_them() {
    let broker = MemoryBroker::start(&[("t", 4)]).await;
    let producer = Producer::connect(producer_config(&broker))
        .await
        .expect("connect");
    let keys: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let mut handles = Vec::new();
    for key in &keys {
        handles.push(
            producer
                .send(ProducerRecord::new("t", key.as_bytes()).key(key.as_bytes()))
                .await
                .expect("queued"),
        );
    }
    producer.flush().await;
    for (key, handle) in keys.iter().zip(handles) {
        let md = handle.await.expect("delivered");
        assert_eq!(md.partition.0, partition_for_key(key.as_bytes(), 4));
        let stored = broker.values("t", md.partition.0 as usize);
        let offset = md.offset.expect("acks=all has offsets").0;
        assert!(
            stored.contains(&(offset, key.as_bytes().to_vec())),
            "{key} not at {md:?}"
        );
    }
}

#[tokio::test]
async fn keyless_records_fill_a_batch_on_one_partition_then_move_to_another() {
    let broker = MemoryBroker::start(&[("t", 3)]).await;
    // Batches of 1 KiB hold 8 records of 100 bytes; the linger is long enough never to fire.
    let config = producer_config(&broker).batch_size(1024).linger_ms(60_000);
    let producer = Producer::connect(config).await.expect("connect");
    let value = [b'v'; 100];
    let mut partitions = Vec::new();
    for _ in 0..40 {
        partitions.push(
            producer
                .send(ProducerRecord::new("t", &value))
                .await
                .expect("queued")
                .partition(),
        );
    }
    producer.flush().await;
    let mut runs: Vec<(PartitionId, usize)> = Vec::new();
    for p in partitions {
        match runs.last_mut() {
            Some((last, n)) if *last == p => *n += 1,
            _ => runs.push((p, 1)),
        }
    }
    let (_, full) = runs.split_last().expect("records were sent");
    assert!(full.len() >= 4, "several batches were filled: {runs:?}");
    assert!(
        full.iter().all(|(_, n)| *n == 8),
        "each run is one full batch: {runs:?}"
    );
    assert!(
        runs.windows(2).all(|w| w[0].0 != w[1].0),
        "the partition changes after every batch: {runs:?}"
    );
}

#[tokio::test]
async fn not_leader_is_retried_after_a_metadata_refresh_and_order_is_kept() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_failures
        .extend([ApiError::not_leader(None), ApiError::not_leader(None)]);
    let producer = Producer::connect(producer_config(&broker).linger_ms(0))
        .await
        .expect("connect");
    let metadata_before = broker.state().metadata_requests;
    let mut handles = Vec::new();
    for i in 0..20u8 {
        handles.push(
            producer
                .send(ProducerRecord::new("t", &[i]))
                .await
                .expect("queued"),
        );
    }
    producer.flush().await;
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(
            handle.await.expect("delivered after retries").offset,
            Some(Offset(i as u64))
        );
    }
    let values: Vec<Vec<u8>> = broker.values("t", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        values,
        (0..20u8).map(|i| vec![i]).collect::<Vec<_>>(),
        "send order survives retries"
    );
    assert!(
        broker.state().metadata_requests >= metadata_before + 2,
        "each NOT_LEADER refreshed metadata"
    );
}

#[tokio::test]
async fn a_send_bound_to_a_deleted_incarnation_fails_and_is_not_written_to_the_new_one() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    let producer = Producer::connect(producer_config(&broker).linger_ms(60_000))
        .await
        .expect("connect");
    let old = producer
        .send(ProducerRecord::new("t", b"old"))
        .await
        .expect("queued");
    broker.state().create("t", 1);
    // The client's metadata now names the new incarnation: the record must still go to the
    // one it was sent under.
    producer
        .cluster()
        .refresh_topic("t")
        .await
        .expect("refresh");
    producer.flush().await;
    let err = old.await.expect_err("its incarnation is gone");
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC_ID));
    assert!(
        broker.values("t", 0).is_empty(),
        "nothing reached the new topic"
    );
    assert_eq!(broker.state().produce_topic_ids, vec![Some(TopicId(1))]);

    // Records sent from now on resolve the name afresh.
    let new = producer
        .send(ProducerRecord::new("t", b"new"))
        .await
        .expect("queued");
    producer.flush().await;
    assert_eq!(new.await.expect("written").offset, Some(Offset(0)));
    assert_eq!(broker.values("t", 0), vec![(0, b"new".to_vec())]);
    assert_eq!(
        broker.state().produce_topic_ids,
        vec![Some(TopicId(1)), Some(TopicId(2))]
    );
}

#[tokio::test]
async fn a_retry_after_not_leader_keeps_the_incarnation_its_records_were_sent_under() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_failures
        .push_back(ApiError::not_leader(None));
    let producer = Producer::connect(producer_config(&broker).linger_ms(60_000))
        .await
        .expect("connect");
    let sent = producer
        .send(ProducerRecord::new("t", b"x"))
        .await
        .expect("queued");
    // Deleted and re-created while the first attempt is refused: the retry refreshes
    // metadata, which names the new incarnation, and must not follow it.
    broker.state().create("t", 1);
    producer.flush().await;
    let err = sent.await.expect_err("its incarnation is gone");
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC_ID));
    assert_eq!(
        broker.state().produce_topic_ids,
        vec![Some(TopicId(1)), Some(TopicId(1))],
        "both attempts carried the id the record was sent under"
    );
    assert!(broker.values("t", 0).is_empty());
}

#[tokio::test]
async fn a_refused_batch_fails_every_record_in_it_with_the_brokers_error() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    broker.state().produce_failures.push_back(ApiError::new(
        ErrorCode::RECORD_TOO_LARGE,
        "batch over max.message.bytes",
    ));
    let producer = Producer::connect(producer_config(&broker).linger_ms(60_000))
        .await
        .expect("connect");
    let a = producer
        .send(ProducerRecord::new("t", b"a"))
        .await
        .expect("queued");
    let b = producer
        .send(ProducerRecord::new("t", b"b"))
        .await
        .expect("queued");
    producer.flush().await;
    for handle in [a, b] {
        let err = handle.await.expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::RECORD_TOO_LARGE));
    }
    assert_eq!(
        broker.state().produce_requests,
        1,
        "a non-retriable error is not retried"
    );
}

#[tokio::test]
async fn fire_and_forget_records_have_no_offset_but_arrive() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    let producer = Producer::connect(producer_config(&broker).acks(Acks::None))
        .await
        .expect("connect");
    let handle = producer
        .send(ProducerRecord::new("t", b"x"))
        .await
        .expect("queued");
    producer.flush().await;
    assert_eq!(handle.await.expect("written").offset, None);
    // The broker gets the frame after the client wrote it; a synchronous round trip on the
    // same connection orders after it.
    let admin = gregor_client::Admin::from_cluster(producer.cluster().clone());
    admin
        .list_offsets("t", PartitionId(0), OffsetSpec::Latest)
        .await
        .expect("list offsets");
    assert_eq!(broker.values("t", 0), vec![(0, b"x".to_vec())]);
}

#[tokio::test]
async fn sending_to_a_missing_topic_says_how_to_create_it() {
    let broker = MemoryBroker::start(&[]).await;
    let producer = Producer::connect(producer_config(&broker))
        .await
        .expect("connect");
    let err = producer
        .send(ProducerRecord::new("nope", b"x"))
        .await
        .expect_err("no topic");
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC));
    assert!(
        err.to_string().contains("gregor topic create nope"),
        "{err}"
    );
    let err = producer
        .send(ProducerRecord::new("nope", b"x").partition(PartitionId(0)))
        .await
        .expect_err("still no topic");
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_TOPIC));
}

fn fill(broker: &MemoryBroker, topic: &str, partition: usize, batches: &[&[&[u8]]]) {
    let mut state = broker.state();
    let log = &mut state.topics.get_mut(topic).expect("topic")[partition];
    for values in batches {
        log.append(&batch(values));
    }
}

fn offsets(records: &[gregor_client::ConsumerRecord]) -> Vec<u64> {
    records.iter().map(|r| r.offset.0).collect()
}

#[tokio::test]
async fn a_fetch_that_starts_mid_batch_skips_the_records_before_the_position() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    fill(
        &broker,
        "t",
        0,
        &[&[b"0", b"1", b"2", b"3", b"4"], &[b"5", b"6"]],
    );
    let mut consumer = Consumer::connect(ConsumerConfig::from_client(broker.client()))
        .await
        .expect("connect");
    consumer.assign("t", None).await.expect("assign");
    let tp = TopicPartition::new("t", PartitionId(0));
    consumer
        .seek(&tp, SeekTo::Offset(Offset(3)))
        .await
        .expect("seek");
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(consumer.poll(Duration::from_secs(5)).await.expect("poll"));
    }
    assert_eq!(offsets(&got), vec![3, 4, 5, 6]);
    assert_eq!(got[0].value.as_deref(), Some(&b"3"[..]));
    assert_eq!(consumer.position(&tp), Some(Offset(7)));
}

#[tokio::test]
async fn an_out_of_range_position_resets_to_the_earliest_offset() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    fill(&broker, "t", 0, &[&[b"0", b"1"], &[b"2", b"3"]]);
    // Retention removed the first batch.
    {
        let mut state = broker.state();
        let log = &mut state.topics.get_mut("t").expect("topic")[0];
        log.batches.remove(0);
        log.log_start = 2;
    }
    let mut consumer = Consumer::connect(ConsumerConfig::from_client(broker.client()))
        .await
        .expect("connect");
    consumer.assign("t", None).await.expect("assign");
    let tp = TopicPartition::new("t", PartitionId(0));
    consumer
        .seek(&tp, SeekTo::Offset(Offset(0)))
        .await
        .expect("seek");
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(consumer.poll(Duration::from_secs(5)).await.expect("poll"));
    }
    assert_eq!(offsets(&got), vec![2, 3]);
}

#[tokio::test]
async fn an_out_of_range_position_fails_the_poll_under_the_error_policy() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    fill(&broker, "t", 0, &[&[b"0"]]);
    let config =
        ConsumerConfig::from_client(broker.client()).auto_offset_reset(AutoOffsetReset::Error);
    let mut consumer = Consumer::connect(config).await.expect("connect");
    consumer.assign("t", None).await.expect("assign");
    consumer
        .seek(
            &TopicPartition::new("t", PartitionId(0)),
            SeekTo::Offset(Offset(9)),
        )
        .await
        .expect("seek");
    let err = consumer
        .poll(Duration::from_secs(5))
        .await
        .expect_err("out of range");
    assert_eq!(err.code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
}

#[tokio::test]
async fn a_group_resumes_from_its_committed_offsets_and_commits_what_was_handed_out() {
    let broker = MemoryBroker::start(&[("t", 2)]).await;
    fill(&broker, "t", 0, &[&[b"a", b"b", b"c", b"d"]]);
    fill(&broker, "t", 1, &[&[b"e"]]);
    broker
        .state()
        .committed
        .insert(("g".into(), "t".into(), 0), 2);
    let config = ConsumerConfig::from_client(broker.client()).group("g");
    let mut consumer = Consumer::connect(config).await.expect("connect");
    consumer.assign("t", None).await.expect("assign");
    let p0 = TopicPartition::new("t", PartitionId(0));
    let p1 = TopicPartition::new("t", PartitionId(1));
    assert_eq!(consumer.position(&p0), Some(Offset(2)));
    assert_eq!(
        consumer.position(&p1),
        None,
        "nothing committed: the reset policy decides"
    );

    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(
            consumer
                .poll_records(Duration::from_secs(5), 3 - got.len())
                .await
                .expect("poll"),
        );
    }
    let mut seen: Vec<(u32, u64)> = got.iter().map(|r| (r.partition.0, r.offset.0)).collect();
    seen.sort();
    assert_eq!(seen, vec![(0, 2), (0, 3), (1, 0)]);
    consumer.commit().await.expect("commit");
    let committed = broker.state().committed.clone();
    assert_eq!(committed[&("g".to_owned(), "t".to_owned(), 0)], 4);
    assert_eq!(committed[&("g".to_owned(), "t".to_owned(), 1)], 1);
    assert!(consumer.at_end());
}

#[tokio::test]
async fn a_poll_with_nothing_new_returns_empty_after_its_timeout() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    let mut config = ConsumerConfig::from_client(broker.client());
    config.fetch_max_wait = Duration::from_millis(20);
    let mut consumer = Consumer::connect(config).await.expect("connect");
    consumer.assign("t", None).await.expect("assign");
    let got = consumer
        .poll(Duration::from_millis(100))
        .await
        .expect("poll");
    assert!(got.is_empty());
    assert!(
        consumer.at_end(),
        "an empty partition is at its end once fetched"
    );
}

#[tokio::test]
async fn committing_without_a_group_is_a_usage_error() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    let mut consumer = Consumer::connect(ConsumerConfig::from_client(broker.client()))
        .await
        .expect("connect");
    consumer.assign("t", None).await.expect("assign");
    assert!(matches!(
        consumer.commit().await,
        Err(ClientError::Usage(_))
    ));
}

#[tokio::test]
async fn compressed_batches_reach_the_broker_compressed_and_consumers_read_them_back() {
    for codec in Compression::ALL {
        let broker = MemoryBroker::start(&[("t", 1)]).await;
        let producer = Producer::connect(producer_config(&broker).compression(codec))
            .await
            .expect("connect");
        let values: Vec<Vec<u8>> = (0..200u32)
            .map(|i| format!("{{\"order\":{i},\"state\":\"paid\"}}").into_bytes())
            .collect();
        for value in &values {
            producer
                .send(ProducerRecord::new("t", value))
                .await
                .expect("queued");
        }
        producer.flush().await;
        let stored: Vec<Vec<u8>> = broker.values("t", 0).into_iter().map(|(_, v)| v).collect();
        assert_eq!(stored, values, "{codec}");
        let codecs = broker.codecs("t", 0);
        assert!(
            codecs.iter().all(|c| *c == codec),
            "{codec}: stored as {codecs:?}"
        );

        let mut consumer = Consumer::connect(ConsumerConfig::from_client(broker.client()))
            .await
            .expect("connect");
        consumer.assign("t", None).await.expect("assign");
        let mut got = Vec::new();
        while got.len() < values.len() {
            got.extend(consumer.poll(Duration::from_secs(5)).await.expect("poll"));
        }
        let read: Vec<Vec<u8>> = got
            .iter()
            .map(|r| r.value.clone().unwrap().to_vec())
            .collect();
        assert_eq!(read, values, "{codec}");
    }
}

/// `(producer id, epoch, base sequence, records)` of every batch the partition stored.
fn stamps(broker: &MemoryBroker, topic: &str, partition: usize) -> Vec<(i64, i16, i32, u32)> {
    broker.state().topics[topic][partition]
        .batches
        .iter()
        .map(|b| {
            let view = BatchView::validate(b).expect("valid");
            (
                view.producer_id(),
                view.producer_epoch(),
                view.base_sequence(),
                view.record_count(),
            )
        })
        .collect()
}

async fn send_and_flush(producer: &Producer, values: &[&[u8]]) -> Vec<DeliveryHandle> {
    let mut handles = Vec::new();
    for value in values {
        handles.push(
            producer
                .send(ProducerRecord::new("t", value))
                .await
                .expect("queued"),
        );
    }
    producer.flush().await;
    handles
}

#[tokio::test]
async fn an_idempotent_producer_numbers_its_batches_and_retries_keep_the_number() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_failures
        .push_back(ApiError::new(ErrorCode::TIMEOUT, "lost reply"));
    let producer = Producer::connect(producer_config(&broker).linger_ms(0))
        .await
        .expect("connect");
    for handle in send_and_flush(&producer, &[b"a", b"b", b"c"]).await {
        handle.await.expect("delivered after a retry");
    }
    for handle in send_and_flush(&producer, &[b"d"]).await {
        handle.await.expect("delivered");
    }
    let first = stamps(&broker, "t", 0);
    let mut next = 0;
    for (producer_id, epoch, sequence, records) in &first {
        assert_eq!((*producer_id, *epoch, *sequence), (1, 0, next), "{first:?}");
        next += *records as i32;
    }
    assert_eq!(next, 4);
    // A request refused for good leaves the sequence in doubt: a new producer id follows.
    broker
        .state()
        .produce_failures
        .push_back(ApiError::new(ErrorCode::OUT_OF_ORDER_SEQUENCE, "gap"));
    for handle in send_and_flush(&producer, &[b"e"]).await {
        handle.await.expect_err("refused");
    }
    for handle in send_and_flush(&producer, &[b"f"]).await {
        handle.await.expect("delivered");
    }
    assert_eq!(stamps(&broker, "t", 0).last(), Some(&(2, 0, 0, 1)));
}

#[tokio::test]
async fn a_producer_without_idempotence_sends_unnumbered_batches() {
    let broker = MemoryBroker::start(&[("t", 1)]).await;
    let producer = Producer::connect(producer_config(&broker).enable_idempotence(false))
        .await
        .expect("connect");
    for handle in send_and_flush(&producer, &[b"a"]).await {
        handle.await.expect("delivered");
    }
    assert_eq!(stamps(&broker, "t", 0), vec![(-1, -1, -1, 1)]);
    assert_eq!(broker.state().producer_ids, 0);
}

// ------------------------------------------------------------------ group membership

/// A member given partitions reports them as owned before it reads their committed offsets:
/// if that read hangs (a network partition) and the member reported nothing meanwhile, the
/// group could move the partitions to another member while this one still starts them once
/// the read returns, and two members would consume one partition (the 3-node simulation's
/// group-two-owners, seed 659).
#[tokio::test]
async fn a_member_reports_assigned_partitions_owned_while_their_offsets_are_read() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let addr = broker.addr.clone();
    let client_addr = addr.clone();
    let (owned_tx, mut owned_rx) = mpsc::unbounded_channel::<Vec<TopicPartitions>>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (frame, replies) = broker.next().await;
            let result = match frame.request {
                Request::Metadata(_) => Ok(Response::Metadata(ClusterMetadata {
                    brokers: vec![BrokerInfo {
                        node_id: NODE,
                        address: addr.clone(),
                    }],
                    topics: vec![TopicMetadata {
                        name: "t".into(),
                        partitions: (0..2)
                            .map(|p| PartitionMetadata {
                                partition: PartitionId(p),
                                leader: Some(NODE),
                                replicas: vec![NODE],
                            })
                            .collect(),
                        topic_id: None,
                    }],
                })),
                Request::ConsumerGroupHeartbeat(hb) => {
                    let joining = hb.member_epoch == 0;
                    let _ = owned_tx.send(hb.owned.unwrap_or_default());
                    Ok(Response::ConsumerGroupHeartbeat(
                        ConsumerGroupHeartbeatReply {
                            member_id: "m".into(),
                            member_epoch: 1,
                            heartbeat_interval_ms: 10,
                            assignment: joining.then(|| {
                                vec![TopicPartitions {
                                    topic: "t".into(),
                                    partitions: vec![PartitionId(0), PartitionId(1)],
                                }]
                            }),
                        },
                    ))
                }
                // The committed offsets never come: the read hangs as in a partition.
                Request::FetchOffsets(_) => {
                    held.push(replies);
                    continue;
                }
                other => panic!("unexpected request {other:?}"),
            };
            replies.reply(frame.id, result);
        }
    });
    let config = ConsumerConfig::from_client(ClientConfig::new(&client_addr).seed(7))
        .group("g")
        .auto_commit(None);
    let mut consumer = Consumer::connect(config).await.expect("connect");
    consumer.subscribe(&["t"]).expect("subscribe");
    let polling = tokio::spawn(async move { consumer.poll(Duration::from_secs(60)).await });
    let reported = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(owned) = owned_rx.recv().await {
            let partitions: usize = owned.iter().map(|t| t.partitions.len()).sum();
            if partitions == 2 {
                return true;
            }
        }
        false
    })
    .await;
    polling.abort();
    assert_eq!(
        reported,
        Ok(true),
        "while its committed offsets were being read, the member never reported owning its \
         assigned partitions"
    );
}

// ------------------------------------------------------------------ a partition's write order

/// A producer without idempotence whose every 64-byte record fills a batch of its own, sent
/// as a request of its own; the linger never fires.
fn one_request_per_record(client: ClientConfig) -> ProducerConfig {
    let mut config = ProducerConfig::from_client(client)
        .enable_idempotence(false)
        .acks(Acks::Leader)
        .batch_size(64)
        .linger_ms(60_000);
    config.max_request_bytes = 200;
    config
}

/// The first byte of the value of each batch's first record in a `Produce` request.
fn produced_marks(request: &Request) -> String {
    let Request::Produce(produce) = request else {
        panic!("expected a Produce request, got {request:?}");
    };
    produce
        .batches
        .iter()
        .map(|b| {
            let view = BatchView::validate(b).expect("valid");
            let plain = view
                .decompressed(MAX_DECOMPRESSED_BYTES)
                .expect("decompresses");
            let mut records = view.records_in(&plain);
            let record = records.next().expect("one record").expect("record");
            char::from(record.value.expect("a value")[0])
        })
        .collect()
}

/// The broker's next request, or a failure if the client sends nothing for ten seconds.
async fn next_within(broker: &mut Scripted) -> (RequestFrame, Replies) {
    tokio::time::timeout(Duration::from_secs(10), broker.next())
        .await
        .expect("the client sent its next request")
}

/// A producer without retries keeps several requests of a partition in flight. When they all
/// wait for the partition's leader (here: a metadata refresh whose answers come back newest
/// first), they must still reach the broker in the order their batches were sent, or the
/// partition stores them out of order.
#[tokio::test]
async fn pipelined_requests_of_a_partition_reach_the_broker_in_send_order() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let config = one_request_per_record(ClientConfig::new(&broker.addr).seed(7).retries(0));
    assert!(config.max_in_flight_per_partition >= 3);
    let producer = Producer::connect(config).await.expect("connect");
    let values: Vec<[u8; 64]> = (0..3u8).map(|i| [b'a' + i; 64]).collect();
    fn record(value: &[u8]) -> ProducerRecord<'_> {
        ProducerRecord::new("orders", value).partition(PartitionId(0))
    }

    // The first send learns the partition count (and fills the routing cache).
    let (first, ()) = tokio::join!(producer.send(record(&values[0])), async {
        let (frame, replies) = next_within(&mut broker).await;
        assert!(matches!(frame.request, Request::Metadata(_)), "{frame:?}");
        replies.reply(
            frame.id,
            Ok(partition_led_by(
                NODE,
                &[(NODE, broker.addr.clone())],
                "orders",
            )),
        );
    });
    // Forgotten before the sender runs: every request must look the leader up again.
    producer.cluster().invalidate("orders");
    let mut handles = vec![first.expect("queued")];
    for v in &values[1..] {
        handles.push(producer.send(record(v)).await.expect("queued"));
    }

    let mut lookups = Vec::new();
    for _ in 0..3 {
        let (frame, replies) = next_within(&mut broker).await;
        assert!(matches!(frame.request, Request::Metadata(_)), "{frame:?}");
        lookups.push((frame.id, replies));
    }
    for (id, replies) in lookups.iter().rev() {
        replies.reply(
            *id,
            Ok(partition_led_by(
                NODE,
                &[(NODE, broker.addr.clone())],
                "orders",
            )),
        );
    }
    let mut arrived = String::new();
    for _ in 0..3 {
        let (frame, replies) = next_within(&mut broker).await;
        let base = arrived.len() as u64;
        arrived.push_str(&produced_marks(&frame.request));
        replies.reply(
            frame.id,
            Ok(Response::Produce(ProduceReply {
                base_offset: Offset(base),
                log_start_offset: Offset(0),
            })),
        );
    }
    assert_eq!(arrived, "abc", "requests written in send order");
    for (i, handle) in handles.into_iter().enumerate() {
        let md = handle.await.expect("delivered");
        assert_eq!(md.offset, Some(Offset(i as u64)));
    }
}

/// The metadata of one partition led by `leader`, among the brokers `(node, address)`.
fn partition_led_by(leader: NodeId, brokers: &[(NodeId, String)], topic: &str) -> Response {
    Response::Metadata(ClusterMetadata {
        brokers: brokers
            .iter()
            .map(|(node_id, address)| BrokerInfo {
                node_id: *node_id,
                address: address.clone(),
            })
            .collect(),
        topics: vec![TopicMetadata {
            name: topic.into(),
            partitions: vec![PartitionMetadata {
                partition: PartitionId(0),
                leader: Some(leader),
                replicas: brokers.iter().map(|(node, _)| *node).collect(),
            }],
            topic_id: None,
        }],
    })
}

fn produced_at(offset: u64) -> Result<Response, ApiError> {
    Ok(Response::Produce(ProduceReply {
        base_offset: Offset(offset),
        log_start_offset: Offset(0),
    }))
}

/// A producer without retries pipelines a partition's requests. When the partition's leader
/// moves while a request is still unanswered at the old leader, the next request waits for that
/// answer before it goes to the new leader: the old one may still write its request later (it
/// can lead again, and reads a connection's requests only as fast as it answers them), and the
/// later send the new leader acknowledged would then come first in the log (seen in the
/// simulation, seed 193).
#[tokio::test]
async fn a_request_for_a_new_leader_waits_for_the_old_leaders_answer() {
    let (old_id, new_id) = (NodeId(1), NodeId(2));
    let mut old = Scripted::start_as(old_id, PROTOCOL_VERSION).await;
    let mut new = Scripted::start_as(new_id, PROTOCOL_VERSION).await;
    let brokers = [(old_id, old.addr.clone()), (new_id, new.addr.clone())];
    let config = one_request_per_record(ClientConfig::new(&old.addr).seed(7).retries(0));
    assert!(config.max_in_flight_per_partition >= 2);
    let producer = Producer::connect(config).await.expect("connect");
    let (a, b) = ([b'a'; 64], [b'b'; 64]);
    let record = |value| ProducerRecord::new("orders", value).partition(PartitionId(0));

    let (first, ()) = tokio::join!(producer.send(record(&a)), async {
        let (frame, replies) = next_within(&mut old).await;
        assert!(matches!(frame.request, Request::Metadata(_)), "{frame:?}");
        replies.reply(frame.id, Ok(partition_led_by(old_id, &brokers, "orders")));
    });
    let (held, old_replies) = next_within(&mut old).await;
    assert_eq!(produced_marks(&held.request), "a");

    // The leader moved: the next request looks it up again and is bound for the new one.
    producer.cluster().invalidate("orders");
    let second = producer.send(record(&b)).await.expect("queued");
    let (frame, replies) = next_within(&mut old).await;
    assert!(matches!(frame.request, Request::Metadata(_)), "{frame:?}");
    replies.reply(frame.id, Ok(partition_led_by(new_id, &brokers, "orders")));
    let early = tokio::time::timeout(Duration::from_millis(300), new.next()).await;
    assert!(
        early.is_err(),
        "the new leader got a request while an earlier one was unanswered at the old leader"
    );

    old_replies.reply(held.id, produced_at(0));
    let (frame, replies) = next_within(&mut new).await;
    assert_eq!(produced_marks(&frame.request), "b");
    replies.reply(frame.id, produced_at(1));
    let first = first.expect("queued");
    assert_eq!(first.await.expect("delivered").offset, Some(Offset(0)));
    assert_eq!(second.await.expect("delivered").offset, Some(Offset(1)));
}

/// Tasks that all find their broker's connection gone (it hung up) and reconnect at once
/// must share the one connection the first of them makes: a producer's pipelined requests are
/// queued in send order, but two connections to one broker deliver them in whatever order
/// the two streams happen to, and the partition stores them out of order (seen in the
/// simulation: three requests of one partition written on three connections to the home node).
#[tokio::test]
async fn tasks_reconnecting_to_the_home_broker_at_once_share_one_connection() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let cluster = gregor_client::Cluster::connect(ClientConfig::new(&broker.addr).seed(7))
        .await
        .expect("connect");
    let first = cluster
        .node_connection(NODE)
        .await
        .expect("home connection");
    let asked = first.enqueue(list_groups()).await.expect("queued");
    let (_, replies) = next_within(&mut broker).await;
    replies.close();
    assert!(asked.reply().await.is_err(), "the broker hung up");
    assert!(first.is_closed());

    let (a, b, c) = tokio::join!(
        cluster.node_connection(NODE),
        cluster.node_connection(NODE),
        cluster.node_connection(NODE)
    );
    let connections = [a, b, c].map(|conn| conn.expect("reconnected"));
    let mut pending = Vec::new();
    for conn in &connections {
        pending.push(conn.enqueue(list_groups()).await.expect("queued"));
    }
    let in_flight: Vec<usize> = connections.iter().map(Connection::in_flight).collect();
    assert_eq!(
        in_flight,
        vec![3, 3, 3],
        "every task queues on the one connection kept for the node"
    );
    let mut arrived_on: Vec<Replies> = Vec::new();
    for _ in 0..3 {
        let (frame, replies) = next_within(&mut broker).await;
        replies.reply(frame.id, Ok(Response::ListGroups(Vec::new())));
        arrived_on.push(replies);
    }
    assert!(arrived_on
        .iter()
        .all(|r| r.0.same_channel(&arrived_on[0].0)));
    for reply in pending {
        reply.reply().await.expect("answered");
    }
}

// ------------------------------------------------------------------ topic creation retried

fn creation_of(frame: &RequestFrame) -> CreateTopic {
    match &frame.request {
        Request::CreateTopic(create) => create.clone(),
        other => panic!("expected a CreateTopic request, got {other:?}"),
    }
}

/// A create whose answer never comes is sent again with the same creation id (the broker
/// answers a retry that finds the topic its first attempt made with that topic); the next
/// creation draws another id.
#[tokio::test]
async fn an_unanswered_create_is_retried_with_its_creation_id() {
    let mut broker = Scripted::start(PROTOCOL_VERSION).await;
    let client = ClientConfig::new(&broker.addr)
        .seed(7)
        .retries(2)
        .request_timeout(Duration::from_millis(200));
    let admin = Admin::connect(client).await.expect("connect");
    let creating = tokio::spawn({
        let admin = admin.clone();
        async move { admin.create_topic(NewTopic::new("orders")).await }
    });
    let (lost, _unanswered) = next_within(&mut broker).await;
    let (retry, replies) = next_within(&mut broker).await;
    let (first, second) = (creation_of(&lost), creation_of(&retry));
    assert!(first.creation_id.is_some(), "{first:?}");
    assert_eq!(first, second, "the retry is the same creation");
    let description = TopicDescription {
        name: "orders".into(),
        replication_factor: 1,
        internal: false,
        config: TopicConfig::default(),
        partitions: Vec::new(),
    };
    replies.reply(retry.id, Ok(Response::CreateTopic(description.clone())));
    let created = creating.await.expect("task").expect("created");
    assert_eq!(created, description);

    let another = tokio::spawn(async move { admin.create_topic(NewTopic::new("audit")).await });
    let (frame, replies) = next_within(&mut broker).await;
    assert_ne!(creation_of(&frame).creation_id, first.creation_id);
    replies.reply(
        frame.id,
        Err(ApiError::new(ErrorCode::TOPIC_ALREADY_EXISTS, "exists")),
    );
    let refused = another.await.expect("task").expect_err("refused");
    assert_eq!(refused.code(), Some(ErrorCode::TOPIC_ALREADY_EXISTS));
}
