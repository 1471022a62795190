//! poll-skip and nonmonotonic-poll: within one consumer session, the records handed out for a
//! partition must follow each other offset by offset, except over records retention may have
//! removed.

use super::{removable_by, sample, Checker, Observed, Violation};
use crate::history::{History, Tp};
use std::collections::BTreeMap;

pub(super) fn check(history: &History, observed: &Observed, violations: &mut Vec<Violation>) {
    let sends = history.sends_by_value();
    // Highest log start seen by each time, per partition: offsets below it were removed.
    let mut sessions: BTreeMap<(u32, u64, &Tp), Option<u64>> = BTreeMap::new();
    for poll in &history.polls {
        let last = sessions
            .entry((poll.consumer, poll.session, &poll.tp))
            .or_default();
        for (offset, _) in &poll.records {
            let Some(previous) = *last else {
                *last = Some(*offset);
                continue;
            };
            if *offset <= previous {
                violations.push(Violation::new(
                    Checker::NonmonotonicPoll,
                    format!(
                        "consumer {} on {}: offset {offset} handed out after {previous} (session {})",
                        poll.consumer, poll.tp, poll.session
                    ),
                ));
            } else if *offset > previous + 1 {
                let skipped: Vec<u64> = (previous + 1..*offset)
                    .filter(|o| {
                        let removed = log_start_before(history, &poll.tp, poll.at_ms) > *o;
                        let present = observed.value_at(&poll.tp, *o).and_then(|v| sends.get(v));
                        match present {
                            Some(send) => !removed && !removable_by(history, send, poll.at_ms),
                            None => false,
                        }
                    })
                    .collect();
                if !skipped.is_empty() {
                    violations.push(Violation::new(
                        Checker::PollSkip,
                        format!(
                            "consumer {} on {}: went from {previous} to {offset}, skipping {} (session {})",
                            poll.consumer,
                            poll.tp,
                            sample(&skipped),
                            poll.session
                        ),
                    ));
                }
            }
            *last = Some(*offset);
        }
    }
}

/// The highest log start of `tp` reported by a reply that completed by `at_ms`.
fn log_start_before(history: &History, tp: &Tp, at_ms: u64) -> u64 {
    history
        .log_starts
        .iter()
        .filter(|seen| &seen.tp == tp && seen.completed_ms <= at_ms)
        .map(|seen| seen.offset)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::check::fixtures::*;
    use crate::check::Checker;
    use crate::history::{AckLevel, SendOutcome};

    fn three_records() -> crate::history::History {
        let mut h = history();
        for (seq, value) in ["a", "b", "c"].into_iter().enumerate() {
            send(
                &mut h,
                0,
                seq as u64,
                value,
                AckLevel::All,
                SendOutcome::Acked(seq as u64),
            );
        }
        final_read(&mut h, 0, 3, &[(0, "a"), (1, "b"), (2, "c")]);
        h
    }

    #[test]
    fn a_consumer_that_skips_a_present_record_is_reported() {
        let mut h = three_records();
        poll(&mut h, 1, 1, &[(0, "a")]);
        poll(&mut h, 1, 1, &[(2, "c")]);
        assert_eq!(checkers(&h), vec![Checker::PollSkip]);
    }

    #[test]
    fn a_skip_in_a_new_session_or_over_removable_records_is_allowed() {
        let mut h = three_records();
        poll(&mut h, 1, 1, &[(0, "a")]);
        poll(&mut h, 1, 2, &[(2, "c")]);
        assert_eq!(checkers(&h), vec![]);
        let mut h = three_records();
        h.topics[0].retention_ms = Some(1_000);
        poll(&mut h, 1, 1, &[(0, "a")]);
        let late = poll(&mut h, 1, 1, &[(2, "c")]);
        h.polls[late].at_ms = 5_000;
        assert_eq!(checkers(&h), vec![]);
    }

    #[test]
    fn a_consumer_that_goes_back_is_reported() {
        let mut h = three_records();
        poll(&mut h, 1, 1, &[(0, "a"), (1, "b")]);
        poll(&mut h, 1, 1, &[(1, "b"), (2, "c")]);
        assert_eq!(checkers(&h), vec![Checker::NonmonotonicPoll]);
    }
}
