//! Checkers over sends: lost-write, unseen, inconsistent-offsets, duplicate, nonmonotonic-send,
//! aborted-read.

use super::{sample, Checker, Notes, Observed, Violation};
use crate::history::{AckLevel, FinalRead, History, Send, SendOutcome, Tp};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(
    history: &History,
    observed: &Observed,
    violations: &mut Vec<Violation>,
    notes: &mut Notes,
) {
    lost_and_unseen(history, violations, notes);
    inconsistent_offsets(observed, violations);
    duplicates(history, observed, violations, notes);
    nonmonotonic_send(history, violations);
    aborted_reads(history, observed, violations);
}

/// An acknowledged record the final read of its partition should have returned: lost if its
/// offset is below the high watermark, unseen if the log never reached it. Records below the
/// final log start are retention's to have removed (the retention checker judges that). A
/// record read during the run and gone at the end is lost all the same.
fn lost_and_unseen(history: &History, violations: &mut Vec<Violation>, notes: &mut Notes) {
    let finals: BTreeMap<&Tp, &FinalRead> =
        history.final_reads.iter().map(|r| (&r.tp, r)).collect();
    let kept: BTreeSet<&str> = history
        .final_reads
        .iter()
        .flat_map(|r| r.records.iter().map(|(_, value)| value.as_str()))
        .collect();
    let mut lost: BTreeMap<&Tp, Vec<u64>> = BTreeMap::new();
    let mut unseen: BTreeMap<&Tp, Vec<u64>> = BTreeMap::new();
    for send in &history.sends {
        let SendOutcome::Acked(offset) = send.outcome else {
            continue;
        };
        let Some(read) = finals.get(&send.tp) else {
            continue;
        };
        if kept.contains(send.value.as_str()) || offset < read.log_start {
            continue;
        }
        match send.acks {
            AckLevel::All if offset < read.high_watermark => {
                lost.entry(&send.tp).or_default().push(offset)
            }
            AckLevel::All => unseen.entry(&send.tp).or_default().push(offset),
            AckLevel::Leader => notes.leader_acked_lost += 1,
            AckLevel::None => {}
        }
    }
    for (tp, offsets) in lost {
        let read = finals[tp];
        violations.push(Violation::new(
            Checker::LostWrite,
            format!(
                "{tp}: acks=all records at offsets {} were acknowledged but no read returned them (final read [{}, {}))",
                sample(&offsets),
                read.log_start,
                read.high_watermark
            ),
        ));
    }
    for (tp, offsets) in unseen {
        let read = finals[tp];
        violations.push(Violation::new(
            Checker::Unseen,
            format!(
                "{tp}: acks=all records acknowledged at offsets {} but the log ends at {}",
                sample(&offsets),
                read.high_watermark
            ),
        ));
    }
}

fn inconsistent_offsets(observed: &Observed, violations: &mut Vec<Violation>) {
    for (tp, offsets) in &observed.at {
        for (offset, values) in offsets {
            if values.len() > 1 {
                let seen: Vec<String> = values
                    .iter()
                    .map(|(value, sources)| format!("{value} ({sources:?})"))
                    .collect();
                violations.push(Violation::new(
                    Checker::InconsistentOffsets,
                    format!("{tp} offset {offset} holds {}", seen.join(" and ")),
                ));
            }
        }
    }
}

fn duplicates(
    history: &History,
    observed: &Observed,
    violations: &mut Vec<Violation>,
    notes: &mut Notes,
) {
    let sends = history.sends_by_value();
    for (value, positions) in &observed.read_at {
        if positions.len() < 2 {
            continue;
        }
        match sends.get(value.as_str()) {
            Some(send) if send.idempotent => {
                let at: Vec<String> = positions
                    .iter()
                    .map(|(tp, o)| format!("{tp}@{o}"))
                    .collect();
                violations.push(Violation::new(
                    Checker::Duplicate,
                    format!(
                        "producer {} sent {value} once (idempotently) and it is stored at {}",
                        send.producer,
                        at.join(", ")
                    ),
                ));
            }
            _ => notes.duplicates_allowed += 1,
        }
    }
}

/// A producer's acknowledged acks=all sends to one partition, in the order it sent them, must
/// have increasing offsets: judged for idempotent producers and those that never retry (a
/// retried send of a plain producer may land after a later one, as in Kafka).
fn nonmonotonic_send(history: &History, violations: &mut Vec<Violation>) {
    let mut by_producer: BTreeMap<(u32, &Tp), Vec<&Send>> = BTreeMap::new();
    let judged = history.sends.iter().filter(|s| s.idempotent || !s.retries);
    for send in judged {
        if let (AckLevel::All, SendOutcome::Acked(_)) = (send.acks, &send.outcome) {
            by_producer
                .entry((send.producer, &send.tp))
                .or_default()
                .push(send);
        }
    }
    for ((producer, tp), mut sends) in by_producer {
        sends.sort_by_key(|s| s.seq);
        for pair in sends.windows(2) {
            let (SendOutcome::Acked(first), SendOutcome::Acked(second)) =
                (&pair[0].outcome, &pair[1].outcome)
            else {
                unreachable!("only acknowledged sends are kept");
            };
            if second <= first {
                violations.push(Violation::new(
                    Checker::NonmonotonicSend,
                    format!(
                        "producer {producer} on {tp}: send {} acknowledged at {second}, after send {} at {first}",
                        pair[1].seq, pair[0].seq
                    ),
                ));
            }
        }
    }
}

fn aborted_reads(history: &History, observed: &Observed, violations: &mut Vec<Violation>) {
    for send in &history.sends {
        let SendOutcome::Failed {
            definite: true,
            error,
        } = &send.outcome
        else {
            continue;
        };
        if let Some(positions) = observed.read_at.get(&send.value) {
            let at: Vec<String> = positions
                .iter()
                .map(|(tp, o)| format!("{tp}@{o}"))
                .collect();
            violations.push(Violation::new(
                Checker::AbortedRead,
                format!(
                    "{} failed definitely ({error}) but was read at {}",
                    send.value,
                    at.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::fixtures::*;
    use crate::check::{check, Checker};
    use crate::history::{AckLevel, SendOutcome};

    #[test]
    fn a_consistent_history_has_no_violation() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(0));
        send(&mut h, 0, 1, "b", AckLevel::All, SendOutcome::Acked(1));
        poll(&mut h, 1, 1, &[(0, "a"), (1, "b")]);
        final_read(&mut h, 0, 2, &[(0, "a"), (1, "b")]);
        assert_eq!(check(&h).0, vec![]);
    }

    #[test]
    fn an_acknowledged_record_below_the_high_watermark_never_read_is_a_lost_write() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(0));
        send(&mut h, 0, 1, "b", AckLevel::All, SendOutcome::Acked(1));
        final_read(&mut h, 0, 2, &[(0, "a")]);
        assert_eq!(checkers(&h), vec![Checker::LostWrite]);
    }

    #[test]
    fn a_record_read_during_the_run_and_gone_at_the_end_is_lost() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(0));
        send(&mut h, 0, 1, "b", AckLevel::All, SendOutcome::Acked(1));
        poll(&mut h, 1, 1, &[(0, "a"), (1, "b")]);
        final_read(&mut h, 0, 2, &[(0, "a")]);
        assert_eq!(checkers(&h), vec![Checker::LostWrite]);
    }

    #[test]
    fn an_acknowledged_offset_beyond_the_log_end_is_unseen() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(0));
        send(&mut h, 0, 1, "b", AckLevel::All, SendOutcome::Acked(1));
        final_read(&mut h, 0, 1, &[(0, "a")]);
        assert_eq!(checkers(&h), vec![Checker::Unseen]);
    }

    #[test]
    fn a_lost_leader_ack_is_a_note_not_a_violation() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::Leader, SendOutcome::Acked(0));
        final_read(&mut h, 0, 0, &[]);
        let (violations, notes) = check(&h);
        assert_eq!(violations, vec![]);
        assert_eq!(notes.leader_acked_lost, 1);
    }

    #[test]
    fn two_values_at_one_offset_are_inconsistent() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(0));
        send(
            &mut h,
            0,
            1,
            "b",
            AckLevel::All,
            SendOutcome::Failed {
                definite: false,
                error: "timeout".into(),
            },
        );
        poll(&mut h, 1, 1, &[(0, "b")]);
        final_read(&mut h, 0, 1, &[(0, "b")]);
        assert!(checkers(&h).contains(&Checker::InconsistentOffsets));
    }

    #[test]
    fn an_idempotent_send_at_two_offsets_is_a_duplicate_and_a_plain_one_is_a_note() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(1));
        final_read(&mut h, 0, 2, &[(0, "a"), (1, "a")]);
        let (_, notes) = check(&h);
        assert_eq!(notes.duplicates_allowed, 1);
        h.sends[0].idempotent = true;
        assert_eq!(checkers(&h), vec![Checker::Duplicate]);
    }

    #[test]
    fn acknowledgements_out_of_send_order_are_nonmonotonic() {
        let mut h = history();
        send(&mut h, 0, 0, "a", AckLevel::All, SendOutcome::Acked(1));
        send(&mut h, 0, 1, "b", AckLevel::All, SendOutcome::Acked(0));
        final_read(&mut h, 0, 2, &[(0, "b"), (1, "a")]);
        assert_eq!(checkers(&h), vec![Checker::NonmonotonicSend]);
        for send in &mut h.sends {
            send.retries = true;
        }
        assert_eq!(
            checkers(&h),
            vec![],
            "a plain producer's retry may land after a later send"
        );
        for send in &mut h.sends {
            send.idempotent = true;
        }
        assert_eq!(checkers(&h), vec![Checker::NonmonotonicSend]);
    }

    #[test]
    fn reading_a_definitely_failed_send_is_an_aborted_read() {
        let mut h = history();
        let refused = SendOutcome::Failed {
            definite: true,
            error: "RECORD_TOO_LARGE".into(),
        };
        send(&mut h, 0, 0, "a", AckLevel::All, refused);
        final_read(&mut h, 0, 1, &[(0, "a")]);
        assert_eq!(checkers(&h), vec![Checker::AbortedRead]);
    }
}
