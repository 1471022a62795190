//! Hand-written histories for the checkers' unit tests: one stable topic "t" with one
//! partition, producer 0, consumer 1.

use super::{check, Checker};
use crate::history::{AckLevel, FinalRead, History, Poll, Send, SendOutcome, TopicLife, Tp};

pub const EPOCH_MS: i64 = 1_767_225_600_000;

pub fn tp() -> Tp {
    Tp {
        topic: "t".into(),
        incarnation: 0,
        partition: 0,
    }
}

pub fn history() -> History {
    History {
        topics: vec![TopicLife {
            topic: "t".into(),
            incarnation: 0,
            partitions: 1,
            retention_ms: None,
            created_ms: 0,
            deleted_ms: None,
            stable: true,
        }],
        epoch_ms: EPOCH_MS,
        retention_check_ms: 1_000,
        ..History::default()
    }
}

/// A send by producer `producer` at virtual time 0.
pub fn send(
    h: &mut History,
    producer: u32,
    seq: u64,
    value: &str,
    acks: AckLevel,
    outcome: SendOutcome,
) {
    h.sends.push(Send {
        producer,
        idempotent: false,
        retries: false,
        acks,
        tp: tp(),
        seq,
        value: value.into(),
        timestamp_ms: EPOCH_MS,
        invoked_ms: 0,
        completed_ms: Some(1),
        outcome,
    });
}

/// A poll by `consumer` in `session`; returns its index in `h.polls`.
pub fn poll(h: &mut History, consumer: u32, session: u64, records: &[(u64, &str)]) -> usize {
    h.polls.push(Poll {
        consumer,
        session,
        tp: tp(),
        at_ms: 100,
        records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
    });
    h.polls.len() - 1
}

pub fn final_read(h: &mut History, log_start: u64, high_watermark: u64, records: &[(u64, &str)]) {
    h.final_reads.push(FinalRead {
        tp: tp(),
        log_start,
        high_watermark,
        records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
        at_ms: 1_000,
    });
}

/// The checkers that fired, each once, in order.
pub fn checkers(h: &History) -> Vec<Checker> {
    let mut fired: Vec<Checker> = check(h).0.iter().map(|v| v.checker).collect();
    fired.sort();
    fired.dedup();
    fired
}
