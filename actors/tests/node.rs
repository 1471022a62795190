//! The node through its public in-process API, on a single-threaded actix System with paused
//! time and real fjall storage in a temporary directory.

use gregor_actors::api::*;
use gregor_actors::{start_node_with, Broker, NodeConfig, NodeEnv, StorageSeam};
use gregor_storage::batch::{BatchBuilder, BatchView, NewRecord};
use gregor_storage::{
    Clock, Crash, FlushPolicy, ModelDisk, Offset, PartitionId, Store, StoreOptions, SyncMode,
    SyncRunner, TopicId,
};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A wall clock the test sets by hand.
struct ManualClock(AtomicI64);
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_767_225_600_000;

fn run<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(tempfile::TempDir, Arc<ManualClock>) -> F,
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(T0)));
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(test(dir, clock));
}

async fn start(dir: &Path, clock: &Arc<ManualClock>) -> Broker {
    let mut config = NodeConfig::single_node(dir);
    config.offsets_partitions = 3;
    config.retention_check_interval_ms = 1_000;
    config.flush = FlushPolicy::Always;
    let env = NodeEnv {
        clock: clock.clone(),
        sync_mode: SyncMode::Inline,
        ..NodeEnv::production()
    };
    start_node_with(config, env).await.unwrap()
}

fn batch(values: &[&str], timestamp: i64) -> bytes::Bytes {
    let mut b = BatchBuilder::with_capacity(128);
    for v in values {
        b.push(&NewRecord {
            key: None,
            value: Some(v.as_bytes()),
            headers: &[],
            timestamp,
        });
    }
    b.finish()
}

async fn create(node: &Broker, name: &str, partitions: u32, config: TopicConfigOverrides) {
    let request = CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: 1,
        config,
        creation_id: None,
    };
    node.handle(Request::CreateTopic(request)).await.unwrap();
}

async fn produce(
    node: &Broker,
    topic: &str,
    partition: u32,
    batches: Vec<bytes::Bytes>,
) -> Result<Offset, ApiError> {
    produce_to(node, topic, None, partition, batches).await
}

/// A produce bound to incarnation `topic_id` of `topic` (`None`: by name alone).
async fn produce_to(
    node: &Broker,
    topic: &str,
    topic_id: Option<TopicId>,
    partition: u32,
    batches: Vec<bytes::Bytes>,
) -> Result<Offset, ApiError> {
    let request = Produce {
        topic: topic.into(),
        partition: PartitionId(partition),
        acks: Acks::All,
        timeout_ms: 5_000,
        batches,
        topic_id,
    };
    match node.handle(Request::Produce(request)).await? {
        Response::Produce(reply) => Ok(reply.base_offset),
        other => panic!("unexpected {other:?}"),
    }
}

fn fetch_request(topic: &str, partition: u32, offset: u64, max_wait_ms: u32) -> Fetch {
    Fetch {
        topic: topic.into(),
        partition: PartitionId(partition),
        offset: Offset(offset),
        max_bytes: 1 << 20,
        max_wait_ms,
        min_bytes: 1,
    }
}

async fn fetch_values(
    node: &Broker,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<Vec<(u64, String)>, ApiError> {
    let Response::Fetch(reply) = node
        .handle(Request::Fetch(fetch_request(topic, partition, offset, 0)))
        .await?
    else {
        panic!("not a fetch reply")
    };
    let mut out = Vec::new();
    for b in &reply.batches {
        for r in BatchView::validate(b).unwrap().records() {
            let r = r.unwrap();
            if r.offset >= offset {
                out.push((
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
    }
    Ok(out)
}

async fn high_watermark(node: &Broker, topic: &str, partition: u32) -> Offset {
    let request = ListOffsets {
        topic: topic.into(),
        partition: PartitionId(partition),
        spec: OffsetSpec::Latest,
    };
    match node.handle(Request::ListOffsets(request)).await.unwrap() {
        Response::ListOffsets(reply) => reply.offset,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn produced_batches_get_contiguous_offsets_and_read_back() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "orders", 2, Default::default()).await;
        assert_eq!(
            produce(&node, "orders", 0, vec![batch(&["a", "b"], T0)])
                .await
                .unwrap(),
            Offset(0)
        );
        assert_eq!(
            produce(
                &node,
                "orders",
                0,
                vec![batch(&["c"], T0), batch(&["d", "e"], T0)]
            )
            .await
            .unwrap(),
            Offset(2)
        );
        assert_eq!(
            produce(&node, "orders", 1, vec![batch(&["x"], T0)])
                .await
                .unwrap(),
            Offset(0)
        );
        let values = fetch_values(&node, "orders", 0, 1).await.unwrap();
        let expected: Vec<(u64, String)> = ["b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 + 1, v.to_string()))
            .collect();
        assert_eq!(values, expected);
        node.shutdown().await;
    });
}

#[test]
fn long_poll_fetch_is_woken_by_a_produce_before_its_wait_ends() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "events", 1, Default::default()).await;
        let started = tokio::time::Instant::now();
        let waiter = {
            let node = node.clone();
            actix_rt::spawn(async move {
                node.handle(Request::Fetch(fetch_request("events", 0, 0, 60_000)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        produce(&node, "events", 0, vec![batch(&["hello"], T0)])
            .await
            .unwrap();
        let Response::Fetch(reply) = waiter.await.unwrap().unwrap() else {
            panic!("not a fetch")
        };
        assert_eq!(reply.batches.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "woken on apply, not at the deadline"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "the fetch was parked until the produce, not answered before it"
        );

        // With nothing arriving, the poll ends at its deadline with no batches.
        let started = tokio::time::Instant::now();
        let Response::Fetch(reply) = node
            .handle(Request::Fetch(fetch_request("events", 0, 1, 500)))
            .await
            .unwrap()
        else {
            panic!("not a fetch")
        };
        assert!(reply.batches.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(500));
        node.shutdown().await;
    });
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        let small = TopicConfigOverrides {
            max_message_bytes: Some(200),
            ..Default::default()
        };
        create(&node, "t", 1, small).await;
        produce(&node, "t", 0, vec![batch(&["ok"], T0)])
            .await
            .unwrap();

        let code = |r: Result<Offset, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(produce(&node, "missing", 0, vec![batch(&["x"], T0)]).await),
            ErrorCode::UNKNOWN_TOPIC
        );
        assert_eq!(
            code(produce(&node, "t", 5, vec![batch(&["x"], T0)]).await),
            ErrorCode::UNKNOWN_PARTITION
        );
        let mut corrupt = batch(&["x"], T0).to_vec();
        *corrupt.last_mut().unwrap() ^= 0xff;
        assert_eq!(
            code(produce(&node, "t", 0, vec![corrupt.into()]).await),
            ErrorCode::CORRUPT_BATCH
        );
        let big = "x".repeat(300);
        assert_eq!(
            code(produce(&node, "t", 0, vec![batch(&[&big], T0)]).await),
            ErrorCode::RECORD_TOO_LARGE
        );
        assert_eq!(
            code(produce(&node, "t", 0, vec![bytes::Bytes::from_static(b"short")]).await),
            ErrorCode::INVALID_BATCH
        );
        assert_eq!(
            code(produce(&node, "t", 0, vec![]).await),
            ErrorCode::INVALID_BATCH
        );
        assert_eq!(
            code(produce(&node, "__consumer_offsets", 0, vec![batch(&["x"], T0)]).await),
            ErrorCode::INTERNAL_TOPIC
        );
        assert_eq!(
            high_watermark(&node, "t", 0).await,
            Offset(1),
            "refused batches were not written"
        );

        let past_end = fetch_values(&node, "t", 0, 2).await.unwrap_err();
        assert_eq!(past_end.code, ErrorCode::OFFSET_OUT_OF_RANGE);
        assert_eq!(
            past_end.detail,
            Some(ErrorDetail::OffsetRange {
                log_start_offset: Offset(0),
                log_end_offset: Offset(1)
            })
        );

        let bad_name = CreateTopic {
            name: "bad name".into(),
            partitions: 1,
            replication_factor: 1,
            config: Default::default(),
            creation_id: None,
        };
        assert_eq!(
            node.handle(Request::CreateTopic(bad_name))
                .await
                .unwrap_err()
                .code,
            ErrorCode::INVALID_TOPIC_NAME
        );
        let rf = CreateTopic {
            name: "rf".into(),
            partitions: 1,
            replication_factor: 3,
            config: Default::default(),
            creation_id: None,
        };
        assert_eq!(
            node.handle(Request::CreateTopic(rf))
                .await
                .unwrap_err()
                .code,
            ErrorCode::INVALID_REPLICATION_FACTOR
        );
        let Response::ListTopics(topics) = node
            .handle(Request::ListTopics(ListTopics {
                include_internal: false,
            }))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            vec!["t"]
        );
        node.shutdown().await;
    });
}

#[test]
fn records_topics_and_committed_offsets_survive_a_restart() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "orders", 1, Default::default()).await;
        produce(&node, "orders", 0, vec![batch(&["a", "b", "c"], T0)])
            .await
            .unwrap();
        let commit = CommitOffsets {
            group: "billing".into(),
            offsets: vec![OffsetCommit {
                topic: "orders".into(),
                partition: PartitionId(0),
                offset: Offset(2),
                metadata: Some("m".into()),
            }],
            member: None,
        };
        node.handle(Request::CommitOffsets(commit)).await.unwrap();
        node.shutdown().await;

        let node = start(dir.path(), &clock).await;
        assert_eq!(fetch_values(&node, "orders", 0, 0).await.unwrap().len(), 3);
        assert_eq!(
            produce(&node, "orders", 0, vec![batch(&["d"], T0)])
                .await
                .unwrap(),
            Offset(3),
            "offsets continue"
        );
        let Response::FetchOffsets(committed) = node
            .handle(Request::FetchOffsets(FetchOffsets {
                group: "billing".into(),
                topic: None,
            }))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0].offset, Offset(2));
        assert_eq!(committed[0].metadata.as_deref(), Some("m"));
        let Response::ListGroups(groups) = node
            .handle(Request::ListGroups(ListGroups {}))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(groups, vec!["billing".to_string()]);
        let Response::DescribeGroup(description) = node
            .handle(Request::DescribeGroup(DescribeGroup {
                group: "billing".into(),
            }))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(description.partitions[0].lag, 2);
        node.shutdown().await;
    });
}

#[test]
fn a_group_rewinds_by_five_hours() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "orders", 1, Default::default()).await;
        // Records from 8, 6, 4 and 1 hours before "now".
        let now = T0 + 10 * HOUR_MS;
        for (i, hours_ago) in [8, 6, 4, 1].iter().enumerate() {
            let offset = produce(
                &node,
                "orders",
                0,
                vec![batch(&[&format!("r{i}")], now - hours_ago * HOUR_MS)],
            )
            .await
            .unwrap();
            assert_eq!(offset, Offset(i as u64));
        }
        clock.0.store(now, Ordering::SeqCst);
        let reset = |to, dry_run| ResetOffsets {
            group: "g".into(),
            topic: "orders".into(),
            to,
            dry_run,
        };
        let resets = |r: Response| match r {
            Response::ResetOffsets(r) => r,
            other => panic!("{other:?}"),
        };
        let five_hours = node
            .handle(Request::ResetOffsets(reset(
                ResetTarget::DurationAgo(5 * HOUR_MS as u64),
                false,
            )))
            .await;
        let five_hours = resets(five_hours.unwrap());
        assert_eq!(
            five_hours,
            vec![OffsetReset {
                partition: PartitionId(0),
                previous: None,
                offset: Offset(2)
            }]
        );
        let latest = resets(
            node.handle(Request::ResetOffsets(reset(ResetTarget::Latest, true)))
                .await
                .unwrap(),
        );
        assert_eq!(latest[0].offset, Offset(4));
        assert_eq!(
            latest[0].previous,
            Some(Offset(2)),
            "the dry run saw the committed reset"
        );
        let clamped = resets(
            node.handle(Request::ResetOffsets(reset(
                ResetTarget::Offset(Offset(99)),
                false,
            )))
            .await
            .unwrap(),
        );
        assert_eq!(clamped[0].offset, Offset(4));
        let earliest = resets(
            node.handle(Request::ResetOffsets(reset(ResetTarget::Earliest, false)))
                .await
                .unwrap(),
        );
        assert_eq!(earliest[0].offset, Offset(0));
        let at = resets(
            node.handle(Request::ResetOffsets(reset(
                ResetTarget::Timestamp(now - 7 * HOUR_MS),
                false,
            )))
            .await
            .unwrap(),
        );
        assert_eq!(at[0].offset, Offset(1));
        node.shutdown().await;
    });
}

#[test]
fn retention_removes_old_batches_only_and_fetch_below_start_is_out_of_range() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        let one_hour = TopicConfigOverrides {
            retention_ms: Some(HOUR_MS),
            ..Default::default()
        };
        create(&node, "logs", 1, one_hour).await;
        produce(&node, "logs", 0, vec![batch(&["old1", "old2"], T0)])
            .await
            .unwrap();
        produce(&node, "logs", 0, vec![batch(&["new"], T0 + 2 * HOUR_MS)])
            .await
            .unwrap();
        clock.0.store(T0 + 2 * HOUR_MS, Ordering::SeqCst);
        // The retention task runs every second of (paused) time.
        let mut log_start = Offset(0);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let request = ListOffsets {
                topic: "logs".into(),
                partition: PartitionId(0),
                spec: OffsetSpec::Earliest,
            };
            let Response::ListOffsets(reply) =
                node.handle(Request::ListOffsets(request)).await.unwrap()
            else {
                panic!()
            };
            log_start = reply.offset;
            if log_start > Offset(0) {
                break;
            }
        }
        assert_eq!(
            log_start,
            Offset(2),
            "the old batch went, the new one stayed"
        );
        // Everything that reads the published state sees the new start, not only the replica.
        let Response::DescribeTopic(description) = node
            .handle(Request::DescribeTopic(DescribeTopic {
                name: "logs".into(),
            }))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(description.partitions[0].log_start_offset, Offset(2));
        let reset = ResetOffsets {
            group: "g".into(),
            topic: "logs".into(),
            to: ResetTarget::Earliest,
            dry_run: true,
        };
        let Response::ResetOffsets(resets) =
            node.handle(Request::ResetOffsets(reset)).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(resets[0].offset, Offset(2));
        assert_eq!(
            fetch_values(&node, "logs", 0, 2).await.unwrap(),
            vec![(2, "new".to_string())]
        );
        assert_eq!(
            fetch_values(&node, "logs", 0, 0).await.unwrap_err().code,
            ErrorCode::OFFSET_OUT_OF_RANGE
        );
        node.shutdown().await;
    });
}

#[test]
fn a_deleted_topic_is_gone_and_a_recreated_one_starts_empty() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "tmp", 1, Default::default()).await;
        produce(&node, "tmp", 0, vec![batch(&["a"], T0)])
            .await
            .unwrap();
        node.handle(Request::DeleteTopic(DeleteTopic { name: "tmp".into() }))
            .await
            .unwrap();
        assert_eq!(
            node.handle(Request::DescribeTopic(DescribeTopic { name: "tmp".into() }))
                .await
                .unwrap_err()
                .code,
            ErrorCode::UNKNOWN_TOPIC
        );
        create(&node, "tmp", 1, Default::default()).await;
        assert_eq!(high_watermark(&node, "tmp", 0).await, Offset(0));
        assert_eq!(
            produce(&node, "tmp", 0, vec![batch(&["b"], T0)])
                .await
                .unwrap(),
            Offset(0)
        );
        node.shutdown().await;
        let node = start(dir.path(), &clock).await;
        assert_eq!(
            fetch_values(&node, "tmp", 0, 0).await.unwrap(),
            vec![(0, "b".to_string())]
        );
        node.shutdown().await;
    });
}

/// The incarnation `topic` resolves to, as a client learns it.
async fn topic_id(node: &Broker, topic: &str) -> TopicId {
    let request = Metadata {
        topics: Some(vec![topic.into()]),
    };
    let Response::Metadata(metadata) = node.handle(Request::Metadata(request)).await.unwrap()
    else {
        panic!("not a metadata reply")
    };
    metadata.topics[0]
        .topic_id
        .expect("brokers say each topic's id")
}

#[test]
fn a_produce_bound_to_a_deleted_incarnation_is_refused_and_writes_nothing() {
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "tmp", 1, Default::default()).await;
        let first = topic_id(&node, "tmp").await;
        let written = produce_to(&node, "tmp", Some(first), 0, vec![batch(&["a"], T0)]).await;
        assert_eq!(written.unwrap(), Offset(0));
        node.handle(Request::DeleteTopic(DeleteTopic { name: "tmp".into() }))
            .await
            .unwrap();
        let gone = produce_to(&node, "tmp", Some(first), 0, vec![batch(&["x"], T0)]).await;
        assert_eq!(gone.unwrap_err().code, ErrorCode::UNKNOWN_TOPIC_ID);

        create(&node, "tmp", 1, Default::default()).await;
        let second = topic_id(&node, "tmp").await;
        assert!(second > first, "a re-created topic gets a new, larger id");
        let stale = produce_to(&node, "tmp", Some(first), 0, vec![batch(&["x"], T0)]).await;
        let stale = stale.unwrap_err();
        assert_eq!(stale.code, ErrorCode::UNKNOWN_TOPIC_ID);
        assert!(
            !stale.code.is_retriable(),
            "the incarnation will not come back"
        );
        // The replica checks too, for requests sent to it in-process.
        let direct = Produce {
            topic: "tmp".into(),
            partition: PartitionId(0),
            acks: Acks::All,
            timeout_ms: 5_000,
            batches: vec![batch(&["x"], T0)],
            topic_id: Some(first),
        };
        let replica = node.replica("tmp", PartitionId(0)).unwrap();
        let refused = replica.send(direct).await.unwrap().unwrap_err();
        assert_eq!(refused.code, ErrorCode::UNKNOWN_TOPIC_ID);
        // An id this node has not applied the creation of: it may yet, so the client retries.
        let ahead = TopicId(second.0 + 1);
        let early = produce_to(&node, "tmp", Some(ahead), 0, vec![batch(&["x"], T0)]).await;
        let early = early.unwrap_err();
        assert_eq!(early.code, ErrorCode::NOT_LEADER);
        assert!(early.code.is_retriable());
        assert_eq!(high_watermark(&node, "tmp", 0).await, Offset(0));

        let current = produce_to(&node, "tmp", Some(second), 0, vec![batch(&["b"], T0)]).await;
        assert_eq!(current.unwrap(), Offset(0));
        let by_name = produce(&node, "tmp", 0, vec![batch(&["c"], T0)]).await;
        assert_eq!(by_name.unwrap(), Offset(1));
        assert_eq!(
            fetch_values(&node, "tmp", 0, 0).await.unwrap(),
            vec![(0, "b".to_string()), (1, "c".to_string())]
        );
        node.shutdown().await;
    });
}

#[test]
fn committed_offsets_survive_log_compaction_and_restart() {
    use gregor_actors::groups::core::offsets_partition_for;
    use gregor_storage::{GroupId, Store, StoreOptions, TopicId};
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "orders", 1, Default::default()).await;
        for offset in 1..=5 {
            let commit = CommitOffsets {
                group: "billing".into(),
                offsets: vec![OffsetCommit {
                    topic: "orders".into(),
                    partition: PartitionId(0),
                    offset: Offset(offset),
                    metadata: None,
                }],
                member: None,
            };
            node.handle(Request::CommitOffsets(commit)).await.unwrap();
        }
        // The compaction task runs every second of (paused) time.
        tokio::time::sleep(Duration::from_secs(3)).await;
        node.shutdown().await;

        // __consumer_offsets was the first topic the node created: topic id 1.
        let group = GroupId::for_partition(TopicId(1), offsets_partition_for("billing", 3));
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let floor = store.log_floor(group).unwrap();
            assert!(
                floor.index >= 5,
                "the applied commit entries were compacted away: floor {floor:?}"
            );
            assert!(
                store.log_floor(GroupId::METADATA).unwrap().index > 0,
                "metadata log compacted too"
            );
        }

        let node = start(dir.path(), &clock).await;
        let Response::FetchOffsets(committed) = node
            .handle(Request::FetchOffsets(FetchOffsets {
                group: "billing".into(),
                topic: None,
            }))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(committed[0].offset, Offset(5));
        // And the group keeps committing after the restart.
        let commit = CommitOffsets {
            group: "billing".into(),
            offsets: vec![OffsetCommit {
                topic: "orders".into(),
                partition: PartitionId(0),
                offset: Offset(6),
                metadata: None,
            }],
            member: None,
        };
        node.handle(Request::CommitOffsets(commit)).await.unwrap();
        assert_eq!(
            produce(&node, "orders", 0, vec![batch(&["x"], T0)])
                .await
                .unwrap(),
            Offset(0)
        );
        node.shutdown().await;
    });
}

#[test]
fn deleting_a_topic_forgets_its_committed_offsets_in_every_group() {
    run(|dir, clock| async move {
        let commit = |group: &str, topic: &str| CommitOffsets {
            group: group.into(),
            offsets: vec![OffsetCommit {
                topic: topic.into(),
                partition: PartitionId(0),
                offset: Offset(0),
                metadata: None,
            }],
            member: None,
        };
        let committed = |node: Broker, group: &'static str| async move {
            match node
                .handle(Request::FetchOffsets(FetchOffsets {
                    group: group.into(),
                    topic: None,
                }))
                .await
                .unwrap()
            {
                Response::FetchOffsets(offsets) => {
                    offsets.into_iter().map(|c| c.topic).collect::<Vec<_>>()
                }
                other => panic!("{other:?}"),
            }
        };
        let node = start(dir.path(), &clock).await;
        create(&node, "tmp", 1, Default::default()).await;
        create(&node, "kept", 1, Default::default()).await;
        node.handle(Request::CommitOffsets(commit("idle", "tmp")))
            .await
            .unwrap();
        node.handle(Request::CommitOffsets(commit("idle", "kept")))
            .await
            .unwrap();
        node.shutdown().await;
        // After a restart group "idle" has no running coordinator; "busy" has one.
        let node = start(dir.path(), &clock).await;
        node.handle(Request::CommitOffsets(commit("busy", "tmp")))
            .await
            .unwrap();
        node.handle(Request::DeleteTopic(DeleteTopic { name: "tmp".into() }))
            .await
            .unwrap();
        create(&node, "tmp", 1, Default::default()).await;
        assert_eq!(committed(node.clone(), "busy").await, Vec::<String>::new());
        assert_eq!(
            committed(node.clone(), "idle").await,
            vec!["kept".to_string()]
        );
        let Response::ListGroups(groups) = node
            .handle(Request::ListGroups(ListGroups {}))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            groups,
            vec!["idle".to_string()],
            "a group with no offsets left is not listed"
        );
        node.shutdown().await;
    });
}

#[test]
fn a_fetch_asking_for_4_gib_gets_at_most_the_broker_cap() {
    use gregor_actors::partition::MAX_FETCH_BYTES;
    run(|dir, clock| async move {
        let node = start(dir.path(), &clock).await;
        create(&node, "big", 1, Default::default()).await;
        let value = "x".repeat(1_000_000);
        let batches = (MAX_FETCH_BYTES as usize / value.len()) + 2;
        for _ in 0..batches {
            produce(&node, "big", 0, vec![batch(&[&value], T0)])
                .await
                .unwrap();
        }
        let request = Fetch {
            max_bytes: u32::MAX,
            ..fetch_request("big", 0, 0, 0)
        };
        let Response::Fetch(reply) = node.handle(Request::Fetch(request)).await.unwrap() else {
            panic!("not a fetch")
        };
        let bytes: usize = reply.batches.iter().map(|b| b.len()).sum();
        assert!(!reply.batches.is_empty());
        assert!(
            bytes <= MAX_FETCH_BYTES as usize,
            "{bytes} bytes in one reply"
        );
        assert!(reply.batches.len() < batches);
        node.shutdown().await;
    });
}

/// A single node on the in-memory model disk, syncing every write.
fn start_on_model_disk(
    dir: &std::path::Path,
    clock: &Arc<ManualClock>,
    disk: &ModelDisk,
    offsets_partitions: u32,
) -> impl std::future::Future<Output = Result<Broker, gregor_actors::StartError>> {
    let mut config = NodeConfig::single_node(dir);
    config.offsets_partitions = offsets_partitions;
    let options = StoreOptions {
        flush: FlushPolicy::Always,
        sync_mode: SyncMode::Inline,
        cache_bytes: 1 << 20,
    };
    let store = Store::open_model(disk, options).unwrap();
    let env = NodeEnv {
        clock: clock.clone(),
        storage: StorageSeam::Opened(store),
        ..NodeEnv::production()
    };
    start_node_with(config, env)
}

#[test]
fn a_node_on_a_model_disk_keeps_what_was_synced_and_writes_nothing_to_its_data_dir() {
    run(|dir, clock| async move {
        let disk = ModelDisk::new();
        let start_on_model = || start_on_model_disk(dir.path(), &clock, &disk, 3);
        let node = start_on_model().await.unwrap();
        create(&node, "t", 1, TopicConfigOverrides::default()).await;
        let acked = produce(&node, "t", 0, vec![batch(&["a", "b"], T0)]).await;
        assert_eq!(acked, Ok(Offset(0)));
        // acks=all waited for the fsync, so even a power cut keeping nothing unsynced keeps it.
        disk.crash(Crash::PowerLoss { keep: 0 });
        node.shutdown().await;
        let node = start_on_model().await.unwrap();
        let values = fetch_values(&node, "t", 0, 0).await.unwrap();
        assert_eq!(values, vec![(0, "a".to_string()), (1, "b".to_string())]);
        node.shutdown().await;
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 0, "the data directory was written to");
    });
}

/// After a failed fsync the kernel may have dropped writes it had accepted: a node that went
/// on answering from that store could serve (or acknowledge) what is not on its disk. It must
/// stop at once, say why, and come back on what its last successful fsync kept.
#[test]
fn a_failed_fsync_stops_the_node_until_it_is_restarted() {
    run(|dir, clock| async move {
        let disk = ModelDisk::new();
        let start_on_model = || start_on_model_disk(dir.path(), &clock, &disk, 1);
        let node = start_on_model().await.unwrap();
        create(&node, "t", 1, TopicConfigOverrides::default()).await;
        assert_eq!(
            produce(&node, "t", 0, vec![batch(&["a"], T0)]).await,
            Ok(Offset(0))
        );
        assert_eq!(node.failure(), None);

        disk.fail_next_persist();
        let unsynced = produce(&node, "t", 0, vec![batch(&["b"], T0)]).await;
        assert!(
            unsynced.is_err(),
            "a write whose fsync failed was acknowledged"
        );
        let cause = tokio::time::timeout(Duration::from_secs(5), node.when_failed())
            .await
            .expect("the node stops")
            .expect("with the cause");
        assert!(cause.contains("journal persist failed"), "{cause}");
        assert_eq!(node.failure(), Some(cause));

        // Nothing is answered any more, not even what the node holds in memory.
        let unavailable = |r: Result<Response, ApiError>| matches!(r, Err(e) if e.code == ErrorCode::UNAVAILABLE && e.message.contains("storage failed"));
        let fetch = Request::Fetch(fetch_request("t", 0, 0, 0));
        assert!(unavailable(node.handle(fetch).await));
        let list = Request::ListTopics(ListTopics {
            include_internal: true,
        });
        assert!(unavailable(node.handle(list).await));
        // Its Raft groups stop too: it votes and replicates no more.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while node.metadata_group().leader().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the metadata group still runs"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        node.shutdown().await;
        let node = start_on_model().await.unwrap();
        assert_eq!(node.failure(), None);
        let values = fetch_values(&node, "t", 0, 0).await.unwrap();
        assert_eq!(values.first(), Some(&(0, "a".to_string())));
        node.shutdown().await;
    });
}

/// Completes each fsync 300 ms after it was asked for, as a slow disk does.
fn slow_fsyncs() -> SyncMode {
    SyncMode::External(SyncRunner::new(|job| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            job.run();
        });
    }))
}

async fn commit_offset(node: &Broker, group: &str, topic: &str, offset: u64) {
    let commit = CommitOffsets {
        group: group.into(),
        offsets: vec![OffsetCommit {
            topic: topic.into(),
            partition: PartitionId(0),
            offset: Offset(offset),
            metadata: None,
        }],
        member: None,
    };
    node.handle(Request::CommitOffsets(commit)).await.unwrap();
}

/// A power cut takes the unsynced apply of the offsets partition's last entries; the restarted
/// node (a lone member leads again in its old term) must answer from its committed log, not
/// from that rolled-back applied state, for its partitions as for its group coordinators.
#[test]
fn acknowledged_offsets_and_records_survive_a_power_cut_on_a_slow_disk() {
    run(|dir, clock| async move {
        let disk = ModelDisk::new();
        let start_on_model = || {
            let mut config = NodeConfig::single_node(dir.path());
            config.offsets_partitions = 1;
            let options = StoreOptions {
                flush: FlushPolicy::Always,
                sync_mode: slow_fsyncs(),
                cache_bytes: 1 << 20,
            };
            let store = Store::open_model(&disk, options).unwrap();
            let env = NodeEnv {
                clock: clock.clone(),
                storage: StorageSeam::Opened(store),
                ..NodeEnv::production()
            };
            start_node_with(config, env)
        };
        let node = start_on_model().await.unwrap();
        create(&node, "t", 1, TopicConfigOverrides::default()).await;
        for value in ["a", "b", "c"] {
            produce(&node, "t", 0, vec![batch(&[value], T0)])
                .await
                .unwrap();
        }
        for offset in 1..=3 {
            commit_offset(&node, "g", "t", offset).await;
        }
        disk.crash(Crash::PowerLoss { keep: 0 });
        node.shutdown().await;

        let node = start_on_model().await.unwrap();
        assert_eq!(high_watermark(&node, "t", 0).await, Offset(3));
        let Response::FetchOffsets(committed) = node
            .handle(Request::FetchOffsets(FetchOffsets {
                group: "g".into(),
                topic: None,
            }))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(committed.len(), 1);
        assert_eq!(
            committed[0].offset,
            Offset(3),
            "an acknowledged commit went back"
        );
        node.shutdown().await;
    });
}
