//! A consumer in a group of its own: sessions that start from the group's committed offsets,
//! poll every partition of the stable topics, and commit as they go.

use super::{value_key, Ctx};
use crate::history::{Commit, CommittedRead, Poll, Tp};
use gregor_client::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, TopicPartition};
use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

pub(super) async fn run(ctx: Rc<Ctx>, id: u32, mut rng: SmallRng) {
    let group = format!("group-{id}");
    let mut session = 0u64;
    while !ctx.stopped() {
        session += 1;
        let length = Duration::from_millis(rng.gen_range(2_000..12_000));
        run_session(&ctx, id, &group, session, length, &mut rng).await;
        if ctx
            .pause(Duration::from_millis(rng.gen_range(10..500)))
            .await
        {
            break;
        }
    }
}

async fn run_session(
    ctx: &Ctx,
    id: u32,
    group: &str,
    session: u64,
    length: Duration,
    rng: &mut SmallRng,
) {
    let client = ctx.admin_client(rng.gen());
    let mut config = ConsumerConfig::from_client(client)
        .group(group)
        .auto_offset_reset(AutoOffsetReset::Earliest);
    config.fetch_max_wait = Duration::from_millis(rng.gen_range(0..300));
    config.max_poll_records = rng.gen_range(1..200);
    let mut consumer = match Consumer::connect(config).await {
        Ok(consumer) => consumer,
        Err(error) => {
            ctx.recorder
                .note(format!("consumer {id} cannot connect: {error}"));
            return;
        }
    };
    let mut assigned: BTreeMap<TopicPartition, Tp> = BTreeMap::new();
    for (topic, state) in ctx.stable_topics() {
        let invoked_ms = ctx.recorder.now_ms();
        if let Err(error) = consumer.assign(&topic, None).await {
            ctx.recorder
                .note(format!("consumer {id} cannot assign {topic}: {error}"));
            return;
        }
        let completed_ms = ctx.recorder.now_ms();
        for partition in 0..state.partitions {
            let tp = Tp {
                topic: topic.clone(),
                incarnation: state.incarnation,
                partition,
            };
            let key = TopicPartition::new(&topic, gregor_protocol::PartitionId(partition));
            // Right after assignment a position is the group's committed offset.
            ctx.recorder.committed_read(CommittedRead {
                group: group.to_owned(),
                tp: tp.clone(),
                offset: consumer.position(&key).map(|o| o.0),
                invoked_ms,
                completed_ms,
            });
            assigned.insert(key, tp);
        }
    }
    let end = tokio::time::Instant::now() + length;
    let mut polls_since_commit = 0;
    while tokio::time::Instant::now() < end && !ctx.stopped() {
        let timeout = Duration::from_millis(rng.gen_range(10..400));
        let records = match consumer.poll(timeout).await {
            Ok(records) => records,
            Err(error) => {
                ctx.recorder
                    .note(format!("consumer {id} poll failed: {error}"));
                return;
            }
        };
        record_polls(ctx, id, session, &assigned, records);
        polls_since_commit += 1;
        if polls_since_commit >= rng.gen_range(1..8) {
            polls_since_commit = 0;
            commit(ctx, id, group, session, &assigned, &mut consumer).await;
        }
    }
}

fn record_polls(
    ctx: &Ctx,
    id: u32,
    session: u64,
    assigned: &BTreeMap<TopicPartition, Tp>,
    records: Vec<ConsumerRecord>,
) {
    let mut by_tp: BTreeMap<&Tp, Vec<(u64, String)>> = BTreeMap::new();
    for record in records {
        let key = TopicPartition {
            topic: record.topic.clone(),
            partition: record.partition,
        };
        let Some(tp) = assigned.get(&key) else {
            continue;
        };
        let value = value_key(record.value.as_deref().unwrap_or_default());
        by_tp.entry(tp).or_default().push((record.offset.0, value));
    }
    let at_ms = ctx.recorder.now_ms();
    for (tp, records) in by_tp {
        ctx.recorder.poll(Poll {
            consumer: id,
            session,
            tp: tp.clone(),
            at_ms,
            records,
        });
    }
}

async fn commit(
    ctx: &Ctx,
    id: u32,
    group: &str,
    session: u64,
    assigned: &BTreeMap<TopicPartition, Tp>,
    consumer: &mut Consumer,
) {
    let positions: Vec<(Tp, u64)> = assigned
        .iter()
        .filter_map(|(key, tp)| consumer.position(key).map(|o| (tp.clone(), o.0)))
        .collect();
    let invoked_ms = ctx.recorder.now_ms();
    let ok = match consumer.commit().await {
        Ok(()) => true,
        Err(error) => {
            ctx.recorder
                .note(format!("consumer {id} commit failed: {error}"));
            false
        }
    };
    let completed_ms = ctx.recorder.now_ms();
    for (tp, offset) in positions {
        ctx.recorder.commit(Commit {
            group: group.to_owned(),
            consumer: id,
            session,
            tp,
            offset,
            invoked_ms,
            completed_ms,
            ok,
        });
    }
}
