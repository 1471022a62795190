//! What the dispatcher does with an AppendEntries before async-raft sees it.
//!
//! async-raft 0.6.1, as a follower: takes `leader_commit` from any AppendEntries before checking
//! its log against the leader's (and after a restart applies its local log up to it
//! unchecked); answers every heartbeat "success" without checking `prev_log_index`; on a stale
//! or duplicate AppendEntries whose entries it already holds, deletes everything after them;
//! appends entries that do not start right after `prev_log_index` as they are; and its own
//! conflict hint can livelock after 50 conflicting entries. So the dispatcher checks the
//! message against our log first and hands async-raft only what is safe:
//!
//! - a malformed message (entries not contiguous from `prev_log_index + 1`, terms going
//!   backwards or past the message's term) is refused;
//! - when the previous entry matches, the leading entries we already hold are stripped (async-
//!   raft then truncates only from the first conflicting entry) and `leader_commit` is clamped
//!   to the last index this message verified, `prev_log_index + entries.len()`;
//! - when it does not match, async-raft gets a heartbeat with `leader_commit` 0 (so its election
//!   timer, term and leader are updated as they must be) and the leader gets our answer: no,
//!   with a hint below `prev_log_index`, at most our last index, before the first entry of our
//!   conflicting term, never below our floor. Each round trip skips a whole term of ours, so the
//!   leader finds the match point in as many round trips as we have conflicting terms.

use super::log::LogView;
use crate::command::Command;
use crate::containment::Containment;
use crate::rpc::AppendEntriesRequest;
use anyhow::Result;
use async_raft::raft::{ConflictOpt, Entry};

/// What to do with one AppendEntries.
#[derive(Debug)]
pub(crate) enum AppendPlan {
    /// The previous entry matches: hand `request` to async-raft. `verified` is the last index
    /// the original message proved we share with the leader; `request.leader_commit` is already
    /// clamped to it.
    Pass {
        request: AppendEntriesRequest<Command>,
        verified: u64,
    },
    /// The previous entry does not match: hand async-raft `heartbeat`, answer the leader `hint`.
    Mismatch {
        heartbeat: AppendEntriesRequest<Command>,
        hint: ConflictOpt,
    },
}

/// Why a message was refused without reaching async-raft.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("malformed AppendEntries: {0}")]
    Malformed(String),
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// Checks that the entries follow `prev_log_index` one by one, with terms that never go back,
/// never below `prev_log_term` and never above the message's term.
pub(crate) fn check_shape(rpc: &AppendEntriesRequest<Command>) -> Result<(), String> {
    let first_index = rpc.prev_log_index.checked_add(1).ok_or("index overflow")?;
    let mut least_term = if rpc.prev_log_index == 0 {
        0
    } else {
        rpc.prev_log_term
    };
    if least_term > rpc.term {
        return Err(format!(
            "previous entry of term {least_term} is newer than the message's term {}",
            rpc.term
        ));
    }
    for (expected_index, entry) in (first_index..).zip(&rpc.entries) {
        if entry.index != expected_index {
            return Err(format!(
                "entry {} where {expected_index} was expected",
                entry.index
            ));
        }
        if entry.term < least_term || entry.term > rpc.term {
            return Err(format!(
                "entry {} of term {} out of order (at least {least_term}, at most {})",
                entry.index, entry.term, rpc.term
            ));
        }
        least_term = entry.term;
    }
    Ok(())
}

/// Decides what async-raft gets and what the leader is told.
/// `prev_known`: the previous entry was verified by an earlier message and the log has not
/// changed since (the dispatcher's cache), so it needs no read.
pub(crate) fn plan(
    log: &dyn LogView,
    rpc: AppendEntriesRequest<Command>,
    containment: &Containment,
    prev_known: bool,
) -> Result<AppendPlan, PlanError> {
    if containment.prev_check
        && !prev_known
        && !prev_matches(log, rpc.prev_log_index, rpc.prev_log_term)?
    {
        let hint = conflict_hint(log, rpc.prev_log_index)?;
        let heartbeat = AppendEntriesRequest {
            term: rpc.term,
            leader_id: rpc.leader_id,
            prev_log_index: rpc.prev_log_index,
            prev_log_term: rpc.prev_log_term,
            entries: Vec::new(),
            leader_commit: 0,
        };
        return Ok(AppendPlan::Mismatch { heartbeat, hint });
    }
    let verified = rpc.prev_log_index + rpc.entries.len() as u64;
    let mut request = if containment.strip_matching {
        strip_held_entries(log, rpc)?
    } else {
        rpc
    };
    if containment.follower_commit_clamp {
        request.leader_commit = request.leader_commit.min(verified);
    }
    Ok(AppendPlan::Pass { request, verified })
}

/// A message whose previous entry is already known to match (see the dispatcher's cache):
/// only the commit clamp applies.
pub(crate) fn pass_checked(
    mut rpc: AppendEntriesRequest<Command>,
    containment: &Containment,
) -> AppendPlan {
    let verified = rpc.prev_log_index + rpc.entries.len() as u64;
    if containment.follower_commit_clamp {
        rpc.leader_commit = rpc.leader_commit.min(verified);
    }
    AppendPlan::Pass {
        request: rpc,
        verified,
    }
}

/// Raft's log-matching check, with the floor: entries at or below it were committed and
/// applied, so every later leader holds them.
fn prev_matches(log: &dyn LogView, prev_index: u64, prev_term: u64) -> Result<bool, PlanError> {
    if prev_index == 0 {
        return Ok(true);
    }
    let (floor, floor_term) = log.floor()?;
    if prev_index < floor {
        return Ok(true);
    }
    if prev_index == floor {
        if prev_term == floor_term {
            return Ok(true);
        }
        // A committed entry with another term: this leader's log is not Raft's.
        return Err(PlanError::Malformed(format!(
            "previous entry {prev_index} of term {prev_term} contradicts our committed entry of term {floor_term}"
        )));
    }
    Ok(log.term_at(prev_index)? == Some(prev_term))
}

/// Drops the leading entries we already hold with the same term (or that lie at or below our
/// floor); the request's previous entry becomes the last one dropped. By log matching, once one
/// entry differs every later one may, so the scan stops at the first difference.
fn strip_held_entries(
    log: &dyn LogView,
    mut rpc: AppendEntriesRequest<Command>,
) -> Result<AppendEntriesRequest<Command>> {
    if rpc.entries.is_empty() {
        return Ok(rpc);
    }
    let (floor, _) = log.floor()?;
    let entries = &rpc.entries;
    let mut held = entries.iter().take_while(|e| e.index <= floor).count();
    if let (Some(first), Some(final_entry)) = (entries.get(held), entries.last()) {
        // Usually nothing is stored there (the entries are new): one seek finds that out.
        for (index, term) in log.terms(first.index, final_entry.index + 1)? {
            match entries.get(held) {
                Some(entry) if entry.index == index && entry.term == term => held += 1,
                _ => break,
            }
        }
    }
    if held > 0 {
        let new_prev: &Entry<Command> = &rpc.entries[held - 1];
        rpc.prev_log_index = new_prev.index;
        rpc.prev_log_term = new_prev.term;
        rpc.entries.drain(..held);
    }
    Ok(rpc)
}

/// Where the leader should try next after `prev_index` did not match: our last index if we do
/// not hold `prev_index`, else the entry before the first one of our term at `prev_index`.
fn conflict_hint(log: &dyn LogView, prev_index: u64) -> Result<ConflictOpt, PlanError> {
    let (floor, floor_term) = log.floor()?;
    let (last, last_term) = log.last()?;
    if prev_index > last {
        return Ok(ConflictOpt {
            term: last_term,
            index: last,
        });
    }
    let conflicting = log.term_at(prev_index)?.ok_or_else(|| {
        PlanError::Storage(anyhow::anyhow!(
            "entry {prev_index} is neither stored nor removed (floor {floor}, last {last})"
        ))
    })?;
    // Terms never decrease along the log: binary search for the first entry of `conflicting`.
    let (mut low, mut high) = (floor + 1, prev_index);
    while low < high {
        let middle = low + (high - low) / 2;
        match log.term_at(middle)? {
            Some(term) if term >= conflicting => high = middle,
            Some(_) => low = middle + 1,
            None => {
                return Err(PlanError::Storage(anyhow::anyhow!(
                    "entry {middle} is missing between the floor {floor} and {prev_index}"
                )))
            }
        }
    }
    let index = low - 1;
    let term = if index == floor {
        floor_term
    } else {
        log.term_at(index)?.unwrap_or(0)
    };
    assert!(index < prev_index && index >= floor && index <= last);
    Ok(ConflictOpt { term, index })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::log::MemoryLog;
    use async_raft::raft::EntryPayload;

    fn entries(first: u64, terms: &[u64]) -> Vec<Entry<Command>> {
        terms
            .iter()
            .enumerate()
            .map(|(i, term)| Entry {
                index: first + i as u64,
                term: *term,
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    fn append(
        term: u64,
        prev: (u64, u64),
        entries: Vec<Entry<Command>>,
        commit: u64,
    ) -> AppendEntriesRequest<Command> {
        AppendEntriesRequest {
            term,
            leader_id: 1,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
        }
    }

    fn log(floor: (u64, u64), terms: &[u64]) -> MemoryLog {
        MemoryLog {
            floor,
            terms: terms.to_vec(),
        }
    }

    fn pass(plan: AppendPlan) -> (AppendEntriesRequest<Command>, u64) {
        match plan {
            AppendPlan::Pass { request, verified } => (request, verified),
            other => panic!("expected Pass, got {other:?}"),
        }
    }

    fn hint(plan: AppendPlan) -> (u64, u64) {
        match plan {
            AppendPlan::Mismatch { heartbeat, hint } => {
                assert!(heartbeat.entries.is_empty());
                assert_eq!(heartbeat.leader_commit, 0);
                (hint.index, hint.term)
            }
            other => panic!("expected Mismatch, got {other:?}"),
        }
    }

    fn plan_(
        log: &dyn LogView,
        rpc: AppendEntriesRequest<Command>,
        containment: &Containment,
    ) -> Result<AppendPlan, PlanError> {
        plan(log, rpc, containment, false)
    }

    const ALL: Containment = Containment::ALL;

    #[test]
    fn entries_must_follow_the_previous_entry_in_order() {
        assert!(check_shape(&append(2, (3, 1), entries(4, &[1, 2]), 0)).is_ok());
        assert!(check_shape(&append(2, (3, 1), entries(5, &[2]), 0)).is_err());
        assert!(check_shape(&append(2, (3, 2), entries(4, &[1]), 0)).is_err());
        assert!(check_shape(&append(2, (3, 1), entries(4, &[3]), 0)).is_err());
        let mut gap = entries(4, &[1, 1]);
        gap[1].index = 6;
        assert!(check_shape(&append(2, (3, 1), gap, 0)).is_err());
        assert!(check_shape(&append(1, (0, 7), entries(1, &[1]), 0)).is_ok());
    }

    #[test]
    fn a_duplicate_append_is_passed_as_a_heartbeat_that_truncates_nothing() {
        let ours = log((0, 0), &[1, 1, 1, 2, 2]);
        let (request, verified) =
            pass(plan_(&ours, append(2, (1, 1), entries(2, &[1, 1]), 9), &ALL).unwrap());
        assert!(request.entries.is_empty());
        assert_eq!((request.prev_log_index, request.prev_log_term), (3, 1));
        assert_eq!(verified, 3);
        assert_eq!(
            request.leader_commit, 3,
            "clamped to what the message verified"
        );
    }

    #[test]
    fn only_entries_from_the_first_conflict_reach_raft() {
        let ours = log((0, 0), &[1, 1, 1, 1]);
        let (request, verified) =
            pass(plan_(&ours, append(2, (1, 1), entries(2, &[1, 2, 2, 2]), 2), &ALL).unwrap());
        assert_eq!((request.prev_log_index, request.prev_log_term), (2, 1));
        assert_eq!(
            request.entries.first().map(|e| (e.index, e.term)),
            Some((3, 2))
        );
        assert_eq!(request.entries.len(), 3);
        assert_eq!(verified, 5);
        assert_eq!(request.leader_commit, 2);
    }

    #[test]
    fn entries_at_or_below_the_floor_count_as_held() {
        let ours = log((10, 3), &[3, 4]);
        let (request, _) = pass(
            plan_(
                &ours,
                append(4, (8, 3), entries(9, &[3, 3, 3, 4, 4]), 0),
                &ALL,
            )
            .unwrap(),
        );
        assert_eq!((request.prev_log_index, request.prev_log_term), (12, 4));
        assert_eq!(request.entries.len(), 1);
    }

    #[test]
    fn a_heartbeat_with_a_previous_entry_we_do_not_hold_gets_our_last_index() {
        let ours = log((0, 0), &[1, 1, 2]);
        assert_eq!(
            hint(plan_(&ours, append(3, (7, 3), vec![], 7), &ALL).unwrap()),
            (3, 2)
        );
    }

    #[test]
    fn a_conflict_jumps_before_our_conflicting_term() {
        let mut terms = vec![1; 5];
        terms.extend(vec![2; 100]);
        let ours = log((0, 0), &terms);
        // Leader holds term 3 entries from index 6 on; it probes at 105 first.
        assert_eq!(
            hint(plan_(&ours, append(3, (105, 3), vec![], 0), &ALL).unwrap()),
            (5, 1)
        );
    }

    #[test]
    fn a_conflict_hint_never_goes_below_the_floor() {
        let ours = log((50, 2), &[4, 4, 4]);
        assert_eq!(
            hint(plan_(&ours, append(5, (53, 5), vec![], 0), &ALL).unwrap()),
            (50, 2)
        );
    }

    #[test]
    fn a_previous_entry_below_the_floor_matches() {
        let ours = log((50, 2), &[4]);
        let (request, verified) = pass(plan_(&ours, append(5, (40, 2), vec![], 99), &ALL).unwrap());
        assert_eq!(verified, 40);
        assert_eq!(request.leader_commit, 40);
    }

    #[test]
    fn a_floor_with_another_term_is_refused() {
        let ours = log((50, 2), &[4]);
        assert!(matches!(
            plan_(&ours, append(5, (50, 3), vec![], 0), &ALL),
            Err(PlanError::Malformed(_))
        ));
    }

    #[test]
    fn without_containment_the_message_passes_untouched() {
        let ours = log((0, 0), &[1, 1, 1]);
        let off = Containment {
            prev_check: false,
            strip_matching: false,
            follower_commit_clamp: false,
            ..ALL
        };
        let (request, _) = pass(plan_(&ours, append(2, (9, 2), vec![], 9), &off).unwrap());
        assert_eq!(request.leader_commit, 9);
        assert_eq!(request.prev_log_index, 9);
    }

    #[test]
    fn hints_converge_in_as_many_round_trips_as_we_have_terms() {
        // Ours: 40 entries of term 1, then terms 2..=6 with 100 entries each. The leader's log
        // shares only the term 1 prefix, and holds term 7 beyond it.
        let mut terms = vec![1; 40];
        for term in 2..=6 {
            terms.extend(vec![term; 100]);
        }
        let ours = log((0, 0), &terms);
        let mut probe = 1_000u64;
        let mut round_trips = 0;
        loop {
            round_trips += 1;
            let leader_term = if probe <= 40 { 1 } else { 7 };
            match plan_(&ours, append(7, (probe, leader_term), vec![], 0), &ALL).unwrap() {
                AppendPlan::Pass { .. } => break,
                AppendPlan::Mismatch { hint, .. } => {
                    assert!(hint.index < probe, "the hint strictly decreases");
                    probe = hint.index;
                }
            }
        }
        assert_eq!(probe, 40);
        assert!(round_trips <= 7, "{round_trips} round trips");
    }
}
