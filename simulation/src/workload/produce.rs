//! A producer: rounds of sends to a random partition of a live topic, each send recorded
//! with its outcome.

use super::{Ctx, ProducerSpec};
use crate::history::{Send, SendOutcome, Tp};
use gregor_client::protocol::api::ErrorCode;
use gregor_client::{ClientError, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use gregor_protocol::PartitionId;
use rand::rngs::SmallRng;
use rand::Rng;
use std::rc::Rc;
use std::time::Duration;

/// How long a stopping producer waits for the outcomes of its sends in flight.
const DRAIN: Duration = Duration::from_secs(30);

pub(super) async fn run(ctx: Rc<Ctx>, id: u32, spec: ProducerSpec, mut rng: SmallRng) {
    let Some(producer) = connect(&ctx, spec, &mut rng).await else {
        return;
    };
    let mut seq = 0u64;
    let mut deliveries = Vec::new();
    loop {
        let (low, high) = ctx.config.send_pause_ms;
        if ctx
            .pause(Duration::from_millis(rng.gen_range(low..=high)))
            .await
        {
            break;
        }
        let Some((topic, state)) = ctx.pick_topic(&mut rng) else {
            continue;
        };
        let tp = Tp {
            topic: topic.clone(),
            incarnation: state.incarnation,
            partition: rng.gen_range(0..state.partitions),
        };
        for _ in 0..rng.gen_range(1..=4) {
            let oversized = match state.max_message_bytes {
                Some(max) if ctx.config.oversized_records && rng.gen_bool(0.03) => Some(max),
                _ => None,
            };
            let send = new_send(&ctx, id, spec, &tp, seq);
            seq += 1;
            let mut bytes = send.value.clone().into_bytes();
            if let Some(max) = oversized {
                bytes.push(b'|');
                bytes.resize(max as usize + 64, b'x');
            }
            let timestamp = send.timestamp_ms;
            let index = ctx.recorder.send_invoked(send);
            let record = ProducerRecord::new(&topic, &bytes)
                .partition(PartitionId(tp.partition))
                .timestamp(timestamp);
            match producer.send(record).await {
                Ok(handle) => {
                    let ctx = ctx.clone();
                    deliveries.push(actix_rt::spawn(async move {
                        let outcome = outcome_of(
                            handle.wait().await,
                            spec,
                            ctx.config.claim_failures_definite,
                        );
                        ctx.recorder.send_completed(index, outcome);
                    }));
                }
                Err(error) => ctx.recorder.send_completed(
                    index,
                    failure(&error, spec, ctx.config.claim_failures_definite),
                ),
            }
        }
        deliveries.retain(|d| !d.is_finished());
    }
    let drained = async {
        for delivery in deliveries {
            let _ = delivery.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN, drained).await;
}

async fn connect(ctx: &Ctx, spec: ProducerSpec, rng: &mut SmallRng) -> Option<Producer> {
    let (_, mut client) = ctx
        .cluster
        .client_config(rng.gen(), ctx.config.request_timeout);
    client.retries = spec.retries;
    // The workload models its producers' idempotence itself (`spec.idempotent`, which the
    // sabotage can claim falsely), so the client's own is off.
    let mut config = ProducerConfig::from_client(client)
        .acks(spec.acks.acks())
        .linger_ms(rng.gen_range(0..10))
        .enable_idempotence(false);
    config.clock = ctx.clock.clone();
    loop {
        match Producer::connect(config.clone()).await {
            Ok(producer) => return Some(producer),
            Err(error) => {
                ctx.recorder
                    .note(format!("producer connect failed: {error}"));
                if ctx.pause(Duration::from_millis(500)).await {
                    return None;
                }
            }
        }
    }
}

fn new_send(ctx: &Ctx, producer: u32, spec: ProducerSpec, tp: &Tp, seq: u64) -> Send {
    Send {
        producer,
        idempotent: spec.idempotent,
        retries: spec.retries > 0,
        acks: spec.acks,
        tp: tp.clone(),
        seq,
        value: format!("{}#{}/p{producer}/{seq}", tp.topic, tp.incarnation),
        timestamp_ms: ctx.clock.read_ms(),
        invoked_ms: ctx.recorder.now_ms(),
        completed_ms: None,
        outcome: SendOutcome::Pending,
    }
}

fn outcome_of(
    result: Result<RecordMetadata, ClientError>,
    spec: ProducerSpec,
    claim_definite: bool,
) -> SendOutcome {
    match result {
        Ok(RecordMetadata {
            offset: Some(offset),
            ..
        }) => SendOutcome::Acked(offset.0),
        Ok(_) => SendOutcome::Unacknowledged,
        Err(error) => failure(&error, spec, claim_definite),
    }
}

/// Whether a failure proves the record was never stored: the request's content was refused
/// (every attempt would have been), or it never left the client, or, for a producer that
/// does not retry, the broker refused its only attempt before appending.
fn failure(error: &ClientError, spec: ProducerSpec, claim_definite: bool) -> SendOutcome {
    let refused_content = matches!(
        error.code(),
        Some(
            ErrorCode::RECORD_TOO_LARGE
                | ErrorCode::CORRUPT_BATCH
                | ErrorCode::INVALID_BATCH
                | ErrorCode::MALFORMED_REQUEST
        )
    );
    let never_sent = matches!(
        error,
        ClientError::RecordTooLarge { .. } | ClientError::RequestTooLarge { .. }
    );
    let refused_once = spec.retries == 0
        && (matches!(error, ClientError::Connect { .. })
            || matches!(
                error.code(),
                Some(
                    ErrorCode::UNKNOWN_TOPIC
                        | ErrorCode::UNKNOWN_PARTITION
                        | ErrorCode::UNKNOWN_TOPIC_ID
                )
            ));
    SendOutcome::Failed {
        definite: refused_content || never_sent || refused_once || claim_definite,
        error: error.to_string(),
    }
}
