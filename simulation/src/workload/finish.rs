//! The end of a run: the liveness phase (every stable partition must take a write within the
//! bound once the faults have healed), the final reads (every stable partition read from its log
//! start to its high watermark), and the replica dumps (every node's stored logs).

use super::{value_key, Ctx, Workload};
use crate::check::{Checker, Violation};
use crate::cluster::SimCluster;
use crate::history::{AckLevel, FinalRead, LogStartSeen, ReplicaDump, Send, SendOutcome, Tp};
use gregor_client::protocol::api::{ErrorCode, ErrorDetail, Fetch, Request, Response};
use gregor_client::protocol::batch::BatchView;
use gregor_client::{ClientError, Cluster, Producer, ProducerConfig, ProducerRecord, Route};
use gregor_protocol::{Offset, PartitionId};
use gregor_storage::{EntryPayload, GroupId, Store, TopicId};
use rand::rngs::SmallRng;
use rand::Rng;
use std::time::Duration;
use tokio::time::Instant;

/// The producer id liveness probes are recorded under.
pub const LIVENESS_PRODUCER: u32 = 9_999;

/// Every stable partition must acknowledge an acks=all write within `bound`.
pub async fn liveness(workload: &Workload, bound: Duration, rng: &mut SmallRng) -> Vec<Violation> {
    let ctx = workload.ctx();
    let deadline = Instant::now() + bound;
    let (_, mut client) = ctx.cluster.client_config(rng.gen(), Duration::from_secs(2));
    client.retries = 3;
    let mut config = ProducerConfig::from_client(client)
        .linger_ms(0)
        .enable_idempotence(false);
    config.clock = ctx.clock.clone();
    let mut violations = Vec::new();
    let mut seq = 0;
    let producer = loop {
        match Producer::connect(config.clone()).await {
            Ok(producer) => break Some(producer),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                violations.push(Violation::new(
                    Checker::Liveness,
                    format!("no node accepted a client within {bound:?} of the heal: {error}"),
                ));
                break None;
            }
        }
    };
    let Some(producer) = producer else {
        return violations;
    };
    for (topic, state) in ctx.stable_topics() {
        for partition in 0..state.partitions {
            let tp = Tp {
                topic: topic.clone(),
                incarnation: state.incarnation,
                partition,
            };
            if !write_once(ctx, &producer, &tp, &mut seq, deadline).await {
                violations.push(Violation::new(
                    Checker::Liveness,
                    format!("{tp} acknowledged no write within {bound:?} of the heal"),
                ));
            }
        }
    }
    violations
}

/// Sends probes to `tp` until one is acknowledged or the deadline passes.
async fn write_once(
    ctx: &Ctx,
    producer: &Producer,
    tp: &Tp,
    seq: &mut u64,
    deadline: Instant,
) -> bool {
    while Instant::now() < deadline {
        let send = Send {
            producer: LIVENESS_PRODUCER,
            idempotent: false,
            retries: true,
            acks: AckLevel::All,
            tp: tp.clone(),
            seq: *seq,
            value: format!("{}#{}/live/{seq}", tp.topic, tp.incarnation),
            timestamp_ms: ctx.clock.read_ms(),
            invoked_ms: ctx.recorder.now_ms(),
            completed_ms: None,
            outcome: SendOutcome::Pending,
        };
        *seq += 1;
        let value = send.value.clone();
        let timestamp = send.timestamp_ms;
        let index = ctx.recorder.send_invoked(send);
        let record = ProducerRecord::new(&tp.topic, value.as_bytes())
            .partition(PartitionId(tp.partition))
            .timestamp(timestamp);
        let outcome = match producer.send(record).await {
            Ok(handle) => tokio::time::timeout_at(deadline, handle.wait()).await,
            Err(error) => Ok(Err(error)),
        };
        match outcome {
            Ok(Ok(meta)) => {
                let offset = meta.offset.expect("acks=all answers with an offset").0;
                ctx.recorder
                    .send_completed(index, SendOutcome::Acked(offset));
                return true;
            }
            Ok(Err(error)) => {
                ctx.recorder.send_completed(
                    index,
                    SendOutcome::Failed {
                        definite: false,
                        error: error.to_string(),
                    },
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Left pending: it may still be stored.
            Err(_) => return false,
        }
    }
    false
}

/// Reads every stable partition from its log start to its high watermark, each within
/// `bound`.
pub async fn final_reads(
    workload: &Workload,
    bound: Duration,
    rng: &mut SmallRng,
) -> Vec<Violation> {
    let ctx = workload.ctx();
    let mut violations = Vec::new();
    let client = ctx.admin_client(rng.gen());
    let cluster = match Cluster::connect(client).await {
        Ok(cluster) => cluster,
        Err(error) => {
            return vec![Violation::new(
                Checker::Liveness,
                format!("no node accepted the final reader: {error}"),
            )]
        }
    };
    for (topic, state) in ctx.stable_topics() {
        for partition in 0..state.partitions {
            let tp = Tp {
                topic: topic.clone(),
                incarnation: state.incarnation,
                partition,
            };
            let deadline = Instant::now() + bound;
            let read = loop {
                match read_partition(ctx, &cluster, &tp).await {
                    Ok(read) => break Some(read),
                    Err(ClientError::Api(e))
                        if e.code == ErrorCode::UNKNOWN_TOPIC
                            || e.code == ErrorCode::UNKNOWN_PARTITION =>
                    {
                        // The cluster acknowledged the topic's creation and lost it: its log
                        // is gone, and every record in it with it.
                        violations.push(Violation::new(
                            Checker::LostWrite,
                            format!("{tp} vanished: {e}"),
                        ));
                        break Some(FinalRead {
                            tp: tp.clone(),
                            log_start: 0,
                            high_watermark: 0,
                            records: Vec::new(),
                            at_ms: ctx.recorder.now_ms(),
                        });
                    }
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(error) => {
                        violations.push(Violation::new(
                            Checker::Liveness,
                            format!("{tp} could not be read to its end within {bound:?}: {error}"),
                        ));
                        break None;
                    }
                }
            };
            if let Some(read) = read {
                ctx.recorder.final_read(read);
            }
        }
    }
    violations
}

async fn read_partition(ctx: &Ctx, cluster: &Cluster, tp: &Tp) -> Result<FinalRead, ClientError> {
    let invoked_ms = ctx.recorder.now_ms();
    let mut offset = 0u64;
    let mut log_start = None;
    let mut records = Vec::new();
    loop {
        let request = Request::Fetch(Fetch {
            topic: tp.topic.clone(),
            partition: PartitionId(tp.partition),
            offset: Offset(offset),
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 0,
        });
        let route = Route::Leader {
            topic: tp.topic.clone(),
            partition: PartitionId(tp.partition),
        };
        let reply = match cluster.request(route, request).await {
            Ok(Response::Fetch(reply)) => reply,
            Err(ClientError::Api(e))
                if e.code == ErrorCode::OFFSET_OUT_OF_RANGE && records.is_empty() =>
            {
                let Some(ErrorDetail::OffsetRange {
                    log_start_offset, ..
                }) = e.detail
                else {
                    return Err(ClientError::Api(e));
                };
                offset = log_start_offset.0;
                continue;
            }
            Err(error) => return Err(error),
            Ok(other) => {
                return Err(ClientError::Usage(format!(
                    "a fetch was answered with {other:?}"
                )))
            }
        };
        let start = *log_start.get_or_insert(reply.log_start_offset.0.max(offset));
        let before = offset;
        for batch in &reply.batches {
            let view = BatchView::validate(batch)
                .map_err(|e| ClientError::Usage(format!("fetched a bad batch: {e}")))?;
            for record in view.records() {
                let record = record.map_err(|e| ClientError::Usage(format!("bad record: {e}")))?;
                if record.offset >= offset {
                    records.push((record.offset, value_key(record.value.unwrap_or_default())));
                    offset = record.offset + 1;
                }
            }
        }
        if offset >= reply.high_watermark.0 || offset == before {
            ctx.recorder.log_start(LogStartSeen {
                tp: tp.clone(),
                offset: start,
                invoked_ms,
                completed_ms: ctx.recorder.now_ms(),
            });
            return Ok(FinalRead {
                tp: tp.clone(),
                log_start: start,
                high_watermark: reply.high_watermark.0,
                records,
                at_ms: ctx.recorder.now_ms(),
            });
        }
    }
}

/// Every running node's stored replicas: group 0 and the partition groups of topic ids
/// `1..=max_topic_id` with up to `max_partitions` partitions.
pub fn dump_replicas(
    cluster: &SimCluster,
    max_topic_id: u64,
    max_partitions: u32,
) -> Vec<ReplicaDump> {
    let mut groups = vec![GroupId::METADATA];
    for topic in 1..=max_topic_id {
        for partition in 0..max_partitions {
            groups.push(GroupId::for_partition(
                TopicId(topic),
                PartitionId(partition),
            ));
        }
    }
    let mut dumps = Vec::new();
    for node in cluster.nodes() {
        let Some(store) = node.store() else {
            continue;
        };
        for group in &groups {
            if let Some(mut dump) = dump_group(&store, *group) {
                dump.node = node.id();
                dumps.push(dump);
            }
        }
    }
    dumps
}

fn dump_group(store: &Store, group: GroupId) -> Option<ReplicaDump> {
    let state = store.partition_state(group).ok()?;
    if state.last_applied == 0 {
        return None;
    }
    let floor = store.log_floor(group).ok()?.index;
    let entries = store
        .read_entries(group, floor + 1, state.last_applied + 1)
        .ok()?
        .iter()
        .map(|e| (e.index, e.term, payload_digest(&e.payload)))
        .collect();
    let mut records = std::collections::BTreeMap::new();
    let mut offset = state.log_start_offset;
    while offset < state.next_offset {
        let fetched = store.read_records(group, offset, 1 << 20).ok()?;
        let before = offset;
        for batch in &fetched.batches {
            let view = BatchView::validate(batch).ok()?;
            for record in view.records().flatten() {
                if record.offset >= offset.0 {
                    records.insert(record.offset, value_key(record.value.unwrap_or_default()));
                    offset = Offset(record.offset + 1);
                }
            }
        }
        if offset == before {
            break;
        }
    }
    Some(ReplicaDump {
        node: gregor_storage::NodeId(0),
        group: group.0,
        log_start: state.log_start_offset.0,
        next_offset: state.next_offset.0,
        last_applied: state.last_applied,
        entries,
        records,
    })
}

/// async-raft's membership configuration as the cluster crate stores it (msgpack of its two
/// sets), read in order.
#[derive(serde::Deserialize)]
struct Membership {
    members: std::collections::BTreeSet<u64>,
    members_after_consensus: Option<std::collections::BTreeSet<u64>>,
}

fn payload_digest(payload: &EntryPayload) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match payload {
        EntryPayload::Blank => eat(b"blank"),
        EntryPayload::Membership(bytes) => {
            eat(b"membership");
            // async-raft keeps members in hash sets, so equal configurations can be encoded in
            // different orders: their digest is of the sets, sorted.
            match rmp_serde::from_slice::<Membership>(bytes) {
                Ok(membership) => {
                    for node in &membership.members {
                        eat(&node.to_be_bytes());
                    }
                    eat(b"after");
                    for node in membership.members_after_consensus.iter().flatten() {
                        eat(&node.to_be_bytes());
                    }
                }
                Err(_) => eat(bytes),
            }
        }
        EntryPayload::Records(batches) => {
            eat(b"records");
            for batch in batches {
                eat(batch);
            }
        }
        EntryPayload::Kv(ops) => {
            eat(b"kv");
            for (key, value) in &ops.puts {
                eat(key);
                eat(value);
            }
            for key in &ops.deletes {
                eat(key);
            }
        }
        EntryPayload::SnapshotPointer(bytes) => {
            eat(b"snapshot");
            eat(bytes);
        }
        EntryPayload::Command(bytes) => {
            eat(b"command");
            eat(bytes);
        }
        EntryPayload::AdvanceLogStart(offset) => {
            eat(b"advance");
            eat(&offset.0.to_be_bytes());
        }
    }
    hash
}
