//! Offsets that must never move back: committed group offsets and log starts; and the
//! retention bound (a log start may pass a record only once retention could remove it).

use super::{removable_by, sample, Checker, Violation};
use crate::history::{AckLevel, History, LogStartSeen, SendOutcome, Tp};
use std::collections::BTreeMap;

pub(super) fn check(history: &History, violations: &mut Vec<Violation>) {
    committed_offsets(history, violations);
    log_starts(history, violations);
    retention_bound(history, violations);
}

/// A committed-offset read must return at least every commit acknowledged before the read
/// began, and at least what any read that ended before it began returned.
fn committed_offsets(history: &History, violations: &mut Vec<Violation>) {
    for read in &history.committed_reads {
        let found = read.offset.unwrap_or(0);
        let committed = history
            .commits
            .iter()
            .filter(|c| c.ok && c.group == read.group && c.tp == read.tp)
            .filter(|c| c.completed_ms < read.invoked_ms)
            .map(|c| c.offset)
            .max();
        if let Some(committed) = committed.filter(|c| *c > found) {
            violations.push(Violation::new(
                Checker::CommittedOffsetMovedBack,
                format!(
                    "group {} on {}: read {:?} at {} ms after a commit of {committed} was acknowledged",
                    read.group, read.tp, read.offset, read.invoked_ms
                ),
            ));
            continue;
        }
        let earlier = history
            .committed_reads
            .iter()
            .filter(|r| r.group == read.group && r.tp == read.tp)
            .filter(|r| r.completed_ms < read.invoked_ms)
            .filter_map(|r| r.offset)
            .max();
        if let Some(earlier) = earlier.filter(|e| *e > found) {
            violations.push(Violation::new(
                Checker::CommittedOffsetMovedBack,
                format!(
                    "group {} on {}: read {:?} at {} ms after an earlier read returned {earlier}",
                    read.group, read.tp, read.offset, read.invoked_ms
                ),
            ));
        }
    }
}

fn log_starts(history: &History, violations: &mut Vec<Violation>) {
    let mut by_tp: BTreeMap<&Tp, Vec<&LogStartSeen>> = BTreeMap::new();
    for seen in &history.log_starts {
        by_tp.entry(&seen.tp).or_default().push(seen);
    }
    for (tp, seen) in by_tp {
        for later in &seen {
            let earlier = seen
                .iter()
                .filter(|e| e.completed_ms < later.invoked_ms && e.offset > later.offset)
                .max_by_key(|e| e.offset);
            if let Some(earlier) = earlier {
                violations.push(Violation::new(
                    Checker::LogStartMovedBack,
                    format!(
                        "{tp}: log start {} reported at {} ms, after {} was reported at {} ms",
                        later.offset, later.completed_ms, earlier.offset, earlier.completed_ms
                    ),
                ));
                break;
            }
        }
    }
}

/// Every record below a reported log start must have been old enough for retention to remove
/// it when the report came back.
fn retention_bound(history: &History, violations: &mut Vec<Violation>) {
    // When each partition's log start first passed each offset: reports sorted by time.
    let mut reports: BTreeMap<&Tp, Vec<&LogStartSeen>> = BTreeMap::new();
    for seen in history.log_starts.iter().filter(|s| s.offset > 0) {
        reports.entry(&seen.tp).or_default().push(seen);
    }
    if reports.is_empty() {
        return;
    }
    let read_at = read_offsets(history);
    let mut too_young: BTreeMap<&Tp, Vec<u64>> = BTreeMap::new();
    for send in &history.sends {
        let Some(seen) = reports.get(&send.tp) else {
            continue;
        };
        let offset = match send.outcome {
            SendOutcome::Acked(offset) if send.acks == AckLevel::All => offset,
            _ => match read_at.get(send.value.as_str()) {
                Some(offset) => *offset,
                None => continue,
            },
        };
        let removed_at = seen
            .iter()
            .filter(|s| s.offset > offset)
            .map(|s| s.completed_ms)
            .min();
        let Some(removed_at) = removed_at else {
            continue;
        };
        let deleted = history
            .topic(&send.tp)
            .and_then(|t| t.deleted_ms)
            .is_some_and(|deleted| deleted <= removed_at);
        // Removal lags eligibility by up to a retention check; it never precedes it.
        if !deleted && !removable_by(history, send, removed_at) {
            too_young.entry(&send.tp).or_default().push(offset);
        }
    }
    for (tp, offsets) in too_young {
        let retention = history.topic(tp).and_then(|t| t.retention_ms);
        violations.push(Violation::new(
            Checker::RetentionBound,
            format!(
                "{tp}: records at {} were removed before they were older than retention.ms {retention:?}",
                sample(&offsets)
            ),
        ));
    }
}

/// Where reads found each value (the first place, for a value read at several).
fn read_offsets(history: &History) -> BTreeMap<&str, u64> {
    let mut found = BTreeMap::new();
    let polls = history.polls.iter().flat_map(|p| p.records.iter());
    let finals = history.final_reads.iter().flat_map(|f| f.records.iter());
    for (offset, value) in polls.chain(finals) {
        found.entry(value.as_str()).or_insert(*offset);
    }
    found
}

#[cfg(test)]
mod tests {
    use crate::check::fixtures::*;
    use crate::check::Checker;
    use crate::history::{AckLevel, Commit, CommittedRead, LogStartSeen, SendOutcome};

    fn commit(offset: u64, completed_ms: u64) -> Commit {
        Commit {
            group: "g".into(),
            consumer: 1,
            session: 1,
            tp: tp(),
            offset,
            invoked_ms: completed_ms - 1,
            completed_ms,
            ok: true,
        }
    }

    fn read(offset: Option<u64>, invoked_ms: u64) -> CommittedRead {
        CommittedRead {
            group: "g".into(),
            tp: tp(),
            offset,
            invoked_ms,
            completed_ms: invoked_ms + 1,
        }
    }

    #[test]
    fn a_committed_offset_read_below_an_acknowledged_commit_moved_back() {
        let mut h = history();
        h.commits.push(commit(5, 10));
        h.committed_reads.push(read(Some(5), 20));
        assert_eq!(checkers(&h), vec![]);
        h.committed_reads.push(read(Some(3), 30));
        assert_eq!(checkers(&h), vec![Checker::CommittedOffsetMovedBack]);
        // A read that overlapped the commit may see the old value.
        let mut h = history();
        h.commits.push(commit(5, 10));
        h.committed_reads.push(read(None, 9));
        assert_eq!(checkers(&h), vec![]);
    }

    fn start(offset: u64, invoked_ms: u64) -> LogStartSeen {
        LogStartSeen {
            tp: tp(),
            offset,
            invoked_ms,
            completed_ms: invoked_ms + 1,
        }
    }

    #[test]
    fn a_log_start_reported_lower_than_before_moved_back() {
        let mut h = history();
        h.log_starts
            .extend([start(0, 1), start(4, 10), start(4, 20)]);
        assert_eq!(checkers(&h), vec![]);
        h.log_starts.push(start(2, 30));
        assert_eq!(checkers(&h), vec![Checker::LogStartMovedBack]);
    }

    #[test]
    fn removing_a_record_younger_than_retention_breaks_the_bound() {
        let mut h = history();
        h.topics[0].retention_ms = Some(10_000);
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(0));
        // The record was sent at virtual time 0; a log start past it at 11 s is fine...
        h.log_starts.push(start(1, 11_000));
        assert_eq!(checkers(&h), vec![]);
        // ...at 5 s it is not, unless a node's clock ran 5 s ahead.
        h.log_starts[0] = start(1, 5_000);
        assert_eq!(checkers(&h), vec![Checker::RetentionBound]);
        h.max_skew_ms = 5_000;
        assert_eq!(checkers(&h), vec![]);
    }
}
