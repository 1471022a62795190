//! The checkers: pure functions from a recorded [`History`] to the violations it shows, named
//! as in Jepsen's Kafka workload where one exists. They know nothing of the harness, so each
//! is tested on histories written by hand, and end to end by runs that break the system on
//! purpose (see `tests/checkers.rs`).

mod index;
mod offsets;
mod polls;
mod replicas;
mod writes;

pub use index::Observed;

use crate::history::{History, Send};
use std::fmt;

/// What a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    /// An acks=all record at or below the high watermark that no read returned.
    LostWrite,
    /// An acks=all record acknowledged at an offset the log never reached.
    Unseen,
    /// One offset holding two values (across acknowledgements, reads and replicas).
    InconsistentOffsets,
    /// One idempotent send stored at two offsets.
    Duplicate,
    /// A producer's acknowledged sends to one partition out of send order.
    NonmonotonicSend,
    /// A consumer skipped records that were there (and not removable by retention).
    PollSkip,
    /// A consumer went back.
    NonmonotonicPoll,
    /// A read of a send that definitely failed.
    AbortedRead,
    /// A committed offset read back lower than an acknowledged commit (or an earlier read).
    CommittedOffsetMovedBack,
    /// Two members of one consumer group owning one partition at once (`group_check`).
    GroupTwoOwners,
    /// A log start offset reported lower than one reported before.
    LogStartMovedBack,
    /// Two nodes leading one group in one term.
    TwoLeadersInTerm,
    /// Two replicas holding different committed entries or records.
    ReplicaDivergence,
    /// Retention removed a record younger than the topic's retention bound.
    RetentionBound,
    /// After the faults healed, a partition did not accept a write and serve it within the
    /// bound (reported by the harness).
    Liveness,
    /// A node could not restart from what its disk kept.
    Recovery,
    /// Code under test panicked.
    Panic,
    /// The harness itself could not do its job (a node that did not stop or start).
    Harness,
}

impl Checker {
    pub const ALL: [Checker; 18] = [
        Checker::LostWrite,
        Checker::Unseen,
        Checker::InconsistentOffsets,
        Checker::Duplicate,
        Checker::NonmonotonicSend,
        Checker::PollSkip,
        Checker::NonmonotonicPoll,
        Checker::AbortedRead,
        Checker::CommittedOffsetMovedBack,
        Checker::GroupTwoOwners,
        Checker::LogStartMovedBack,
        Checker::TwoLeadersInTerm,
        Checker::ReplicaDivergence,
        Checker::RetentionBound,
        Checker::Liveness,
        Checker::Recovery,
        Checker::Panic,
        Checker::Harness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Checker::LostWrite => "lost-write",
            Checker::Unseen => "unseen",
            Checker::InconsistentOffsets => "inconsistent-offsets",
            Checker::Duplicate => "duplicate",
            Checker::NonmonotonicSend => "nonmonotonic-send",
            Checker::PollSkip => "poll-skip",
            Checker::NonmonotonicPoll => "nonmonotonic-poll",
            Checker::AbortedRead => "aborted-read",
            Checker::CommittedOffsetMovedBack => "committed-offset-moved-back",
            Checker::GroupTwoOwners => "group-two-owners",
            Checker::LogStartMovedBack => "log-start-moved-back",
            Checker::TwoLeadersInTerm => "two-leaders-in-term",
            Checker::ReplicaDivergence => "replica-divergence",
            Checker::RetentionBound => "retention-bound",
            Checker::Liveness => "liveness",
            Checker::Recovery => "recovery",
            Checker::Panic => "panic",
            Checker::Harness => "harness",
        }
    }
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub checker: Checker,
    pub detail: String,
}

impl Violation {
    pub fn new(checker: Checker, detail: impl Into<String>) -> Violation {
        Violation {
            checker,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker, self.detail)
    }
}

/// Facts worth reporting that break no promise (documented windows, at-least-once delivery).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notes {
    /// acks=1 records acknowledged and then lost (the documented window of a leader failure).
    pub leader_acked_lost: usize,
    /// Records of producers without idempotence stored more than once (at-least-once).
    pub duplicates_allowed: usize,
}

/// Every checker over `history`, most important first.
pub fn check(history: &History) -> (Vec<Violation>, Notes) {
    let observed = Observed::build(history);
    let mut violations = Vec::new();
    let mut notes = Notes::default();
    writes::check(history, &observed, &mut violations, &mut notes);
    polls::check(history, &observed, &mut violations);
    offsets::check(history, &mut violations);
    replicas::check(history, &observed, &mut violations);
    (violations, notes)
}

/// Whether retention may have removed `send`'s record by `at_ms`: its topic has a time bound
/// and the record was older than it on some node's clock (clocks may run ahead by the largest
/// skew of the run).
pub(crate) fn removable_by(history: &History, send: &Send, at_ms: u64) -> bool {
    let Some(retention_ms) = history.topic(&send.tp).and_then(|t| t.retention_ms) else {
        return false;
    };
    let latest_node_clock = history.epoch_ms + at_ms as i64 + history.max_skew_ms;
    send.timestamp_ms <= latest_node_clock - retention_ms
}

/// Limits a list of offsets or values in a message.
pub(crate) fn sample<T: fmt::Debug>(items: &[T]) -> String {
    const SHOWN: usize = 8;
    if items.len() <= SHOWN {
        format!("{items:?}")
    } else {
        format!("{:?} and {} more", &items[..SHOWN], items.len() - SHOWN)
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
