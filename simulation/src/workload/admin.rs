//! Administrative tasks: probing log starts, and topics created and deleted under load.

use super::{Ctx, TopicState};
use crate::history::{LogStartSeen, TopicLife, Tp};
use gregor_client::protocol::api::{ErrorCode, OffsetSpec};
use gregor_client::{Admin, ClientError, NewTopic};
use gregor_protocol::PartitionId;
use rand::rngs::SmallRng;
use rand::Rng;
use std::rc::Rc;
use std::time::Duration;

async fn admin(ctx: &Ctx, rng: &mut SmallRng) -> Option<Admin> {
    loop {
        match Admin::connect(ctx.admin_client(rng.gen())).await {
            Ok(admin) => return Some(admin),
            Err(_) => {
                if ctx.pause(Duration::from_millis(500)).await {
                    return None;
                }
            }
        }
    }
}

/// Asks for the log start of a random stable partition every second or so.
pub(super) async fn probe_log_starts(ctx: Rc<Ctx>, mut rng: SmallRng) {
    let Some(admin) = admin(&ctx, &mut rng).await else {
        return;
    };
    loop {
        if ctx
            .pause(Duration::from_millis(rng.gen_range(300..2_000)))
            .await
        {
            return;
        }
        let stable = ctx.stable_topics();
        if stable.is_empty() {
            continue;
        }
        let (topic, state) = &stable[rng.gen_range(0..stable.len())];
        let tp = Tp {
            topic: topic.clone(),
            incarnation: state.incarnation,
            partition: rng.gen_range(0..state.partitions),
        };
        probe(&ctx, &admin, tp).await;
    }
}

pub(crate) async fn probe(ctx: &Ctx, admin: &Admin, tp: Tp) {
    let invoked_ms = ctx.recorder.now_ms();
    let reply = admin
        .list_offsets(&tp.topic, PartitionId(tp.partition), OffsetSpec::Earliest)
        .await;
    if let Ok(reply) = reply {
        ctx.recorder.log_start(LogStartSeen {
            tp,
            offset: reply.offset.0,
            invoked_ms,
            completed_ms: ctx.recorder.now_ms(),
        });
    }
}

/// Names of churning topics: few, so that deleted names come back as new incarnations.
const CHURN_NAMES: [&str; 2] = ["churn-a", "churn-b"];

/// Creates and deletes topics every few seconds.
pub(super) async fn churn_topics(ctx: Rc<Ctx>, mut rng: SmallRng) {
    let Some(admin) = admin(&ctx, &mut rng).await else {
        return;
    };
    loop {
        if ctx
            .pause(Duration::from_millis(rng.gen_range(1_000..5_000)))
            .await
        {
            return;
        }
        let name = CHURN_NAMES[rng.gen_range(0..CHURN_NAMES.len())];
        let live = ctx.topics.borrow().get(name).is_some_and(|t| t.live);
        if live {
            delete(&ctx, &admin, name).await;
        } else {
            let partitions = rng.gen_range(1..=3);
            create(&ctx, &admin, name, partitions).await;
        }
    }
}

async fn create(ctx: &Ctx, admin: &Admin, name: &str, partitions: u32) {
    let topic = NewTopic::new(name)
        .partitions(partitions)
        .replication_factor(ctx.config.replication_factor);
    let result = admin.create_topic(topic).await;
    let created = match &result {
        Ok(_) => true,
        // Created by an earlier attempt whose answer was lost.
        Err(ClientError::Api(e)) if e.code == ErrorCode::TOPIC_ALREADY_EXISTS => true,
        Err(error) => {
            ctx.recorder
                .note(format!("creating {name} failed: {error}"));
            false
        }
    };
    if !created {
        return;
    }
    let partitions = match &result {
        Ok(description) => description.partitions.len() as u32,
        Err(_) => admin
            .describe_topic(name)
            .await
            .map_or(partitions, |d| d.partitions.len() as u32),
    };
    let incarnation = ctx
        .topics
        .borrow()
        .get(name)
        .map_or(0, |t| t.incarnation + 1);
    ctx.recorder.topic_created(TopicLife {
        topic: name.to_owned(),
        incarnation,
        partitions,
        retention_ms: None,
        created_ms: ctx.recorder.now_ms(),
        deleted_ms: None,
        stable: false,
    });
    ctx.topics.borrow_mut().insert(
        name.to_owned(),
        TopicState {
            incarnation,
            partitions,
            live: true,
            stable: false,
            max_message_bytes: None,
        },
    );
}

async fn delete(ctx: &Ctx, admin: &Admin, name: &str) {
    let Some(incarnation) = ctx.topics.borrow().get(name).map(|t| t.incarnation) else {
        return;
    };
    // Its records may vanish from the moment the deletion is asked for.
    ctx.recorder.topic_deleted(name, incarnation);
    match admin.delete_topic(name).await {
        Ok(()) => {}
        Err(ClientError::Api(e)) if e.code == ErrorCode::UNKNOWN_TOPIC => {}
        Err(error) => {
            ctx.recorder
                .note(format!("deleting {name} failed: {error}"));
            return;
        }
    }
    if let Some(topic) = ctx.topics.borrow_mut().get_mut(name) {
        topic.live = false;
    }
}
