//! The partition replica in a 3-node cluster in one process (see `common`): who serves,
//! acks=1, the idempotent producer across failover, and retention on every replica.

mod common;

use common::{eventually, run, TestCluster};
use gregor_actors::api::*;
use gregor_storage::batch::{set_producer, BatchBuilder, BatchView, NewRecord};
use gregor_storage::{GroupId, NodeId, Offset, PartitionId};
use std::collections::BTreeMap;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);
const TOPIC: &str = "orders";

async fn start_three() -> TestCluster {
    start_three_with(|_| {}).await
}

async fn start_three_with(adjust: impl FnOnce(&mut TestCluster)) -> TestCluster {
    let mut cluster = TestCluster::new(Duration::from_secs(600));
    adjust(&mut cluster);
    for id in 1..=3 {
        cluster.start(id).await.unwrap();
    }
    cluster
}

/// Sends `request` through node `via` until it is not refused with a retriable error.
async fn retry(cluster: &TestCluster, via: u64, request: impl Into<Request> + Clone) -> Response {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        match cluster.request(via, request.clone()).await {
            Ok(response) => return response,
            Err(error) if error.code.is_retriable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("{error:?}"),
        }
    }
}

async fn create(cluster: &TestCluster, config: TopicConfigOverrides) -> GroupId {
    let request = CreateTopic {
        name: TOPIC.into(),
        partitions: 1,
        replication_factor: 3,
        config,
        creation_id: None,
    };
    retry(cluster, 1, request).await;
    let group = cluster
        .node(1)
        .view()
        .topic(TOPIC)
        .unwrap()
        .record
        .group_of(PartitionId(0));
    eventually(
        "the partition has three voters and a ready leader",
        LONG,
        || {
            leader(cluster, group).is_some_and(|l| {
                cluster
                    .node(l.0)
                    .replica_group(group)
                    .unwrap()
                    .voters()
                    .len()
                    == 3
            })
        },
    )
    .await;
    group
}

/// Records here carry timestamp 0, which the default `retention.ms` would remove at once.
fn keep_forever() -> TopicConfigOverrides {
    TopicConfigOverrides {
        retention_ms: Some(-1),
        ..Default::default()
    }
}

/// The node whose replica of `group` is a ready leader.
fn leader(cluster: &TestCluster, group: GroupId) -> Option<NodeId> {
    cluster
        .nodes
        .iter()
        .find(|(_, n)| n.replica_group(group).is_some_and(|g| g.is_ready()))
        .map(|(id, _)| *id)
}

fn records(values: &[String]) -> BatchBuilder {
    let mut batch = BatchBuilder::with_capacity(256);
    for value in values {
        batch.push(&NewRecord {
            key: None,
            value: Some(value.as_bytes()),
            headers: &[],
            timestamp: 0,
        });
    }
    batch
}

fn plain(value: &str) -> bytes::Bytes {
    records(&[value.to_owned()]).finish()
}

/// A batch of producer `producer` (epoch 0) from sequence `sequence`.
fn idempotent(producer: i64, sequence: i32, values: &[String]) -> bytes::Bytes {
    let mut bytes = bytes::BytesMut::from(&records(values).finish()[..]);
    set_producer(&mut bytes, producer, 0, sequence);
    bytes.freeze()
}

fn produce(batch: bytes::Bytes, acks: Acks, timeout_ms: u32) -> Produce {
    Produce {
        topic: TOPIC.into(),
        partition: PartitionId(0),
        acks,
        timeout_ms,
        batches: vec![batch],
        topic_id: None,
    }
}

/// Sends `request` to the partition's leader as a client does: following `NOT_LEADER`,
/// retrying what is retriable, until `LONG` passes. Non-retriable errors are returned.
async fn to_leader(
    cluster: &TestCluster,
    request: impl Into<Request> + Clone,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + LONG;
    let mut via = *cluster.nodes.keys().next().unwrap();
    loop {
        match cluster.request(via.0, request.clone()).await {
            Ok(response) => return Ok(response),
            Err(error) if !error.code.is_retriable() => return Err(error),
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "{error:?}");
                via = match error.detail {
                    Some(ErrorDetail::Leader {
                        leader: Some(leader),
                        ..
                    }) if cluster.nodes.contains_key(&leader) => leader,
                    _ => {
                        let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
                        let at = ids.iter().position(|n| *n == via).unwrap_or(0);
                        ids[(at + 1) % ids.len()]
                    }
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn base_offset(cluster: &TestCluster, request: Produce) -> Result<Offset, ApiError> {
    match to_leader(cluster, request).await? {
        Response::Produce(reply) => Ok(reply.base_offset),
        other => panic!("{other:?}"),
    }
}

/// Every record the partition holds, in offset order, read at its leader.
async fn read_all(cluster: &TestCluster) -> Vec<(Offset, String)> {
    let mut out = Vec::new();
    let earliest = ListOffsets {
        topic: TOPIC.into(),
        partition: PartitionId(0),
        spec: OffsetSpec::Earliest,
    };
    let Ok(Response::ListOffsets(start)) = to_leader(cluster, earliest).await else {
        panic!("list offsets failed")
    };
    let mut offset = start.offset;
    loop {
        let fetch = Fetch {
            topic: TOPIC.into(),
            partition: PartitionId(0),
            offset,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 0,
        };
        let Ok(Response::Fetch(reply)) = to_leader(cluster, fetch).await else {
            panic!("fetch failed")
        };
        if reply.batches.is_empty() {
            return out;
        }
        for batch in &reply.batches {
            for record in BatchView::validate(batch).unwrap().records() {
                let record = record.unwrap();
                if record.offset >= offset.0 {
                    let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                    out.push((Offset(record.offset), value));
                }
            }
        }
        offset = Offset(out.last().unwrap().0 .0 + 1);
    }
}

#[test]
fn a_follower_answers_not_leader_naming_the_leader_and_its_address() {
    run(|| async {
        let cluster = start_three().await;
        let group = create(&cluster, keep_forever()).await;
        let leader = leader(&cluster, group).unwrap();
        let follower = (1..=3).find(|id| NodeId(*id) != leader).unwrap();
        let error = cluster
            .request(follower, produce(plain("x"), Acks::All, 5_000))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::NOT_LEADER);
        assert_eq!(
            error.detail,
            Some(ErrorDetail::Leader {
                leader: Some(leader),
                address: Some(format!("node-{}:9092", leader.0)),
            })
        );
        let fetch = Fetch {
            topic: TOPIC.into(),
            partition: PartitionId(0),
            offset: Offset(0),
            max_bytes: 1024,
            max_wait_ms: 0,
            min_bytes: 0,
        };
        let error = cluster.request(follower, fetch).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::NOT_LEADER);
        cluster.shutdown().await;
    });
}

#[test]
fn acks_one_is_answered_once_the_leader_has_the_entry_before_it_commits() {
    run(|| async {
        // Leader balancing would move the leadership this test watches.
        let cluster = start_three_with(|c| c.settings.operations.max_step_downs = 0).await;
        let group = create(&cluster, keep_forever()).await;
        assert_eq!(
            base_offset(&cluster, produce(plain("committed"), Acks::All, 10_000)).await,
            Ok(Offset(0))
        );
        let leader = leader(&cluster, group).unwrap();
        // The followers are cut off for less than an election timeout (800 ms): nothing the
        // leader appends meanwhile can commit, and it stays the leader.
        for id in cluster.nodes.keys().filter(|n| **n != leader) {
            cluster.net.cut(*id);
        }
        let cut_at = tokio::time::Instant::now();
        let reply = cluster
            .request(leader.0, produce(plain("leader only"), Acks::Leader, 5_000))
            .await
            .unwrap();
        let Response::Produce(reply) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            reply.base_offset,
            Offset(1),
            "the offset it gets if it commits"
        );
        let state = *cluster
            .node(leader.0)
            .replica_group(group)
            .unwrap()
            .applied()
            .borrow();
        assert_eq!(state.next_offset, Offset(1), "answered before it committed");
        let error = cluster
            .request(leader.0, produce(plain("all"), Acks::All, 300))
            .await
            .unwrap_err();
        assert_eq!(
            error.code,
            ErrorCode::TIMEOUT,
            "acks=all waits for the commit"
        );
        assert!(cut_at.elapsed() < Duration::from_millis(700));
        for id in cluster.nodes.keys() {
            cluster.net.heal(*id);
        }
        // The followers are back before any of them campaigned: the entry commits at the
        // offset the acks=1 reply gave (and the acks=all batch after it).
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let all = read_all(&cluster).await;
            if all.len() >= 3 {
                assert_eq!(all[1], (Offset(1), "leader only".to_owned()));
                assert_eq!(all[2], (Offset(2), "all".to_owned()));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{all:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.shutdown().await;
    });
}

/// A leader cut off from its group goes on believing it leads (async-raft has no
/// check-quorum). Asked for offsets, it must not answer from its own applied state, which
/// misses what the new leader took since: its log end is older than acknowledged records, and
/// with retention its log start is older than one already reported (seen in the simulation:
/// log start 41 reported, then 6 from the cut-off leader).
#[test]
fn a_cut_off_leader_does_not_answer_offsets_from_its_stale_state() {
    run(|| async {
        let cluster = start_three_with(|c| c.settings.operations.max_step_downs = 0).await;
        let group = create(&cluster, keep_forever()).await;
        let first = produce(plain("before the cut"), Acks::All, 10_000);
        assert_eq!(base_offset(&cluster, first).await, Ok(Offset(0)));
        let old = leader(&cluster, group).unwrap();
        cluster.net.cut(old);
        let others: Vec<u64> = (1..=3).filter(|id| NodeId(*id) != old).collect();
        let new_leader = |c: &TestCluster| {
            others.iter().copied().find(|id| {
                c.node(*id)
                    .replica_group(group)
                    .is_some_and(|g| g.is_ready())
            })
        };
        eventually("the majority elects a new leader", LONG, || {
            new_leader(&cluster).is_some()
        })
        .await;
        let new = new_leader(&cluster).unwrap();
        let reply = cluster
            .request(new, produce(plain("after the cut"), Acks::All, 10_000))
            .await
            .unwrap();
        assert!(
            matches!(reply, Response::Produce(ref r) if r.base_offset == Offset(1)),
            "{reply:?}"
        );
        assert!(
            cluster.node(old.0).replica_group(group).unwrap().is_ready(),
            "the cut-off leader still believes it leads"
        );
        let latest = ListOffsets {
            topic: TOPIC.into(),
            partition: PartitionId(0),
            spec: OffsetSpec::Latest,
        };
        let answer = cluster.request(old.0, latest.clone()).await;
        assert!(
            answer.as_ref().is_err_and(|e| e.code.is_retriable()),
            "a cut-off leader answers a retriable error, not its own log end: {answer:?}"
        );
        let Response::ListOffsets(at_new) = cluster.request(new, latest).await.unwrap() else {
            panic!()
        };
        assert_eq!(at_new.offset, Offset(2));
        cluster.shutdown().await;
    });
}

#[test]
fn a_retried_idempotent_batch_is_written_once_even_across_failover() {
    run(|| async {
        let mut cluster = start_three().await;
        let group = create(&cluster, keep_forever()).await;
        let Response::InitProducerId(identity) = retry(&cluster, 2, InitProducerId {}).await else {
            panic!()
        };
        let pid = identity.producer_id;
        let first = idempotent(pid, 0, &["a".into(), "b".into()]);
        let second = idempotent(pid, 2, &["c".into()]);
        let at = |b: &bytes::Bytes| produce(b.clone(), Acks::All, 10_000);
        assert_eq!(base_offset(&cluster, at(&first)).await, Ok(Offset(0)));
        assert_eq!(base_offset(&cluster, at(&first)).await, Ok(Offset(0)));
        // A gap, and a producer the partition never saw starting past 0, are refused.
        let gap = idempotent(pid, 5, &["z".into()]);
        assert_eq!(
            base_offset(&cluster, at(&gap)).await.unwrap_err().code,
            ErrorCode::OUT_OF_ORDER_SEQUENCE
        );
        let stranger = idempotent(pid + 1, 3, &["z".into()]);
        assert_eq!(
            base_offset(&cluster, at(&stranger)).await.unwrap_err().code,
            ErrorCode::UNKNOWN_PRODUCER_ID
        );
        assert_eq!(base_offset(&cluster, at(&second)).await, Ok(Offset(2)));
        // The leader goes; its successor knows both batches from the replicated state.
        let old = leader(&cluster, group).unwrap();
        cluster.stop(old.0).await;
        assert_eq!(base_offset(&cluster, at(&first)).await, Ok(Offset(0)));
        assert_eq!(base_offset(&cluster, at(&second)).await, Ok(Offset(2)));
        let third = idempotent(pid, 3, &["d".into()]);
        assert_eq!(base_offset(&cluster, at(&third)).await, Ok(Offset(3)));
        let values: Vec<String> = read_all(&cluster).await.into_iter().map(|r| r.1).collect();
        assert_eq!(values, vec!["a", "b", "c", "d"]);
        cluster.shutdown().await;
    });
}

/// One idempotent producer's loop: sends batches of one record in sequence, retrying each
/// (same sequence) until it is acknowledged; returns what was acknowledged, at which offset.
async fn producer_loop(
    cluster: std::rc::Rc<std::cell::RefCell<Option<TestCluster>>>,
    pid: i64,
    count: i32,
) -> Vec<(Offset, String)> {
    let mut acked = Vec::new();
    for sequence in 0..count {
        let value = format!("p{pid}-{sequence}");
        let request = produce(
            idempotent(pid, sequence, std::slice::from_ref(&value)),
            Acks::All,
            5_000,
        );
        let deadline = tokio::time::Instant::now() + LONG;
        let mut via = NodeId(1);
        loop {
            let node = {
                let guard = cluster.borrow();
                let cluster = guard.as_ref().unwrap();
                if !cluster.nodes.contains_key(&via) {
                    via = *cluster.nodes.keys().next().unwrap();
                }
                cluster.node(via.0).clone()
            };
            let response = node.handle(request.clone().into()).await;
            match response {
                Ok(Response::Produce(reply)) => {
                    acked.push((reply.base_offset, value));
                    break;
                }
                Ok(other) => panic!("{other:?}"),
                Err(error) => {
                    assert!(error.code.is_retriable(), "{error:?}");
                    assert!(tokio::time::Instant::now() < deadline, "{error:?}");
                    if let Some(ErrorDetail::Leader {
                        leader: Some(leader),
                        ..
                    }) = error.detail
                    {
                        via = leader;
                    } else {
                        via = NodeId(via.0 % 3 + 1);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    acked
}

#[test]
fn killing_the_leader_under_idempotent_load_loses_and_duplicates_nothing() {
    run(|| async {
        let cluster = start_three().await;
        let group = create(&cluster, keep_forever()).await;
        let mut pids = Vec::new();
        for via in 1..=3 {
            let Response::InitProducerId(identity) = retry(&cluster, via, InitProducerId {}).await
            else {
                panic!()
            };
            pids.push(identity.producer_id);
        }
        let shared = std::rc::Rc::new(std::cell::RefCell::new(Some(cluster)));
        let loops: Vec<_> = pids
            .iter()
            .map(|pid| tokio::task::spawn_local(producer_loop(shared.clone(), *pid, 40)))
            .collect();
        // Kill the leader once some records are in.
        eventually("records before the kill", LONG, || {
            let guard = shared.borrow();
            let cluster = guard.as_ref().unwrap();
            leader(cluster, group).is_some_and(|l| {
                let group = cluster.node(l.0).replica_group(group).unwrap();
                let next = group.applied().borrow().next_offset;
                next >= Offset(20)
            })
        })
        .await;
        // Cut off and shut down, as `TestCluster::stop` does, without holding the cluster
        // while the producers use it.
        let old = leader(shared.borrow().as_ref().unwrap(), group).unwrap();
        let broker = {
            let mut guard = shared.borrow_mut();
            let cluster = guard.as_mut().unwrap();
            cluster.net.cut(old);
            cluster.nodes.remove(&old).unwrap()
        };
        broker.shutdown().await;
        shared.borrow().as_ref().unwrap().net.detach(old);
        let mut acked = BTreeMap::new();
        for (pid, task) in pids.iter().zip(loops) {
            acked.insert(*pid, task.await.unwrap());
        }
        let cluster = shared.borrow_mut().take().unwrap();
        let log = read_all(&cluster).await;
        // No duplicates: every value once; each producer's records in its order.
        let mut seen = std::collections::BTreeSet::new();
        for (_, value) in &log {
            assert!(seen.insert(value.clone()), "{value} written twice");
        }
        for (pid, records) in &acked {
            assert_eq!(records.len(), 40);
            for (offset, value) in records {
                assert!(
                    log.contains(&(*offset, value.clone())),
                    "acknowledged {value} at {offset} is not there"
                );
            }
            let order: Vec<&String> = log
                .iter()
                .map(|(_, v)| v)
                .filter(|v| v.starts_with(&format!("p{pid}-")))
                .collect();
            let expected: Vec<String> = (0..40).map(|s| format!("p{pid}-{s}")).collect();
            assert_eq!(order, expected.iter().collect::<Vec<_>>());
        }
        cluster.shutdown().await;
    });
}

#[test]
fn retention_advances_the_log_start_alike_on_every_replica() {
    run(|| async {
        let cluster = start_three().await;
        // Records carry timestamp 0, so only the size bound may remove them.
        let config = TopicConfigOverrides {
            retention_bytes: Some(1),
            retention_ms: Some(-1),
            ..Default::default()
        };
        let group = create(&cluster, config).await;
        for i in 0..10 {
            base_offset(
                &cluster,
                produce(plain(&format!("r{i}")), Acks::All, 10_000),
            )
            .await
            .unwrap();
        }
        // The retention check runs every 30 s: the leader proposes, every replica applies.
        // Everything but the newest batch goes (the size bound keeps at least one byte).
        eventually(
            "every replica moved its log start to the newest batch",
            LONG,
            || {
                cluster.nodes.values().all(|n| {
                    n.replica_group(group)
                        .unwrap()
                        .applied()
                        .borrow()
                        .log_start_offset
                        == Offset(9)
                })
            },
        )
        .await;
        let all = read_all(&cluster).await;
        assert_eq!(all, vec![(Offset(9), "r9".to_owned())]);
        cluster.shutdown().await;
    });
}
