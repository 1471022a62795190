//! The consumer-group checker: a pure function from what a run observed of its groups to the
//! violations it shows. It judges two promises of the membership protocol:
//!
//! - **one owner**: within a group, a partition is owned by at most one member at a time, so no
//!   two members own it in one generation (member epoch) or across one: a member owns a
//!   partition from the poll that gave it to it until the poll that released it (after
//!   committing), or until it is gone (it stopped reading: it left, or the harness crashed it,
//!   before the group heard of either);
//! - **committed offsets never move back**: every committed offset seen (a commit's
//!   acknowledgement, or a read of `FetchOffsets` or `DescribeGroup`) is at least every one
//!   seen by an observation that ended before it began, unless an explicit reset came between.
//!   Observations overlap (a read may return a commit acknowledged after the read began), so
//!   each is placed where it ended and says where it began.

use crate::check::{Checker, Violation};
use std::collections::BTreeMap;
use std::fmt;

/// One thing a run saw of a group, in the order it saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// `member` started owning `partition` of `topic` at member epoch `epoch`.
    Acquired {
        group: String,
        member: String,
        epoch: i32,
        topic: String,
        partition: u32,
    },
    /// `member` released it (after committing).
    Released {
        group: String,
        member: String,
        topic: String,
        partition: u32,
    },
    /// `member` is gone (left, or crashed and its session ended): it owns nothing any more.
    Gone { group: String, member: String },
    /// A committed offset acknowledged or read back, logged when the acknowledgement or the
    /// read came back.
    Committed {
        group: String,
        topic: String,
        partition: u32,
        offset: u64,
        /// How many events the log held when the commit was sent or the read asked: only
        /// what was seen before that bounds this.
        since: usize,
    },
    /// An explicit reset of the group's offsets on a topic: offsets may move back once.
    Reset { group: String, topic: String },
}

/// A broken promise, with the events that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupViolation {
    TwoOwners {
        group: String,
        topic: String,
        partition: u32,
        holder: (String, i32),
        newcomer: (String, i32),
    },
    CommittedMovedBack {
        group: String,
        topic: String,
        partition: u32,
        before: u64,
        after: u64,
    },
}

impl fmt::Display for GroupViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupViolation::TwoOwners {
                group,
                topic,
                partition,
                holder,
                newcomer,
            } => write!(
                f,
                "group {group}: {topic}/{partition} acquired by {} (epoch {}) while {} \
                 (epoch {}) still owned it",
                newcomer.0, newcomer.1, holder.0, holder.1
            ),
            GroupViolation::CommittedMovedBack {
                group,
                topic,
                partition,
                before,
                after,
            } => write!(
                f,
                "group {group}: committed offset of {topic}/{partition} moved back from \
                 {before} to {after} without a reset"
            ),
        }
    }
}

impl GroupViolation {
    pub fn checker(&self) -> Checker {
        match self {
            GroupViolation::TwoOwners { .. } => Checker::GroupTwoOwners,
            GroupViolation::CommittedMovedBack { .. } => Checker::CommittedOffsetMovedBack,
        }
    }
}

/// The violations `events` show, as the run's checkers report them.
pub fn judge(events: &[GroupEvent]) -> Vec<Violation> {
    check(events)
        .into_iter()
        .map(|v| Violation::new(v.checker(), v.to_string()))
        .collect()
}

type Key = (String, String, u32);

/// The committed offsets seen of one partition: (position in the log, the highest offset
/// seen up to there), in log order.
type Seen = Vec<(usize, u64)>;

/// The highest offset seen by observations that ended before position `since`.
fn bound(seen: &Seen, since: usize) -> Option<u64> {
    let ended = seen.partition_point(|(at, _)| *at < since);
    ended.checked_sub(1).map(|i| seen[i].1)
}

/// Every violation `events` show, in the order they happened.
pub fn check(events: &[GroupEvent]) -> Vec<GroupViolation> {
    let mut owners: BTreeMap<Key, (String, i32)> = BTreeMap::new();
    let mut committed: BTreeMap<Key, Seen> = BTreeMap::new();
    let mut violations = Vec::new();
    for (at, event) in events.iter().enumerate() {
        match event {
            GroupEvent::Acquired {
                group,
                member,
                epoch,
                topic,
                partition,
            } => {
                let key = (group.clone(), topic.clone(), *partition);
                let newcomer = (member.clone(), *epoch);
                match owners.get(&key) {
                    Some(holder) if holder.0 != *member => {
                        violations.push(GroupViolation::TwoOwners {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            holder: holder.clone(),
                            newcomer: newcomer.clone(),
                        });
                    }
                    _ => {}
                }
                owners.insert(key, newcomer);
            }
            GroupEvent::Released {
                group,
                member,
                topic,
                partition,
            } => {
                let key = (group.clone(), topic.clone(), *partition);
                if owners.get(&key).is_some_and(|(m, _)| m == member) {
                    owners.remove(&key);
                }
            }
            GroupEvent::Gone { group, member } => {
                owners.retain(|(g, _, _), (m, _)| !(g == group && m == member));
            }
            GroupEvent::Committed {
                group,
                topic,
                partition,
                offset,
                since,
            } => {
                let key = (group.clone(), topic.clone(), *partition);
                let seen = committed.entry(key).or_default();
                match bound(seen, *since) {
                    Some(before) if *offset < before => {
                        violations.push(GroupViolation::CommittedMovedBack {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            before,
                            after: *offset,
                        });
                    }
                    _ => {
                        let highest = seen.last().map_or(*offset, |(_, h)| (*h).max(*offset));
                        seen.push((at, highest));
                    }
                }
            }
            GroupEvent::Reset { group, topic } => {
                committed.retain(|(g, t, _), _| !(g == group && t == topic));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquired(member: &str, epoch: i32, partition: u32) -> GroupEvent {
        GroupEvent::Acquired {
            group: "g".into(),
            member: member.into(),
            epoch,
            topic: "t".into(),
            partition,
        }
    }

    fn released(member: &str, partition: u32) -> GroupEvent {
        GroupEvent::Released {
            group: "g".into(),
            member: member.into(),
            topic: "t".into(),
            partition,
        }
    }

    /// A committed offset seen at once (by an observation that began right where it ended).
    fn committed(partition: u32, offset: u64, at: usize) -> GroupEvent {
        GroupEvent::Committed {
            group: "g".into(),
            topic: "t".into(),
            partition,
            offset,
            since: at,
        }
    }

    #[test]
    fn a_clean_handover_passes() {
        let history = [
            acquired("a", 1, 0),
            acquired("a", 1, 1),
            committed(0, 10, 2),
            released("a", 0),
            acquired("b", 2, 0),
            committed(0, 12, 5),
            GroupEvent::Gone {
                group: "g".into(),
                member: "a".into(),
            },
            acquired("b", 3, 1),
            // Another group owns the same partition on its own.
            GroupEvent::Acquired {
                group: "h".into(),
                member: "c".into(),
                epoch: 1,
                topic: "t".into(),
                partition: 0,
            },
        ];
        assert_eq!(check(&history), vec![]);
    }

    #[test]
    fn a_partition_taken_before_it_was_released_is_two_owners() {
        let history = [acquired("a", 1, 0), acquired("b", 2, 0)];
        let violations = check(&history);
        assert_eq!(
            violations,
            vec![GroupViolation::TwoOwners {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                holder: ("a".into(), 1),
                newcomer: ("b".into(), 2),
            }]
        );
        assert!(violations[0].to_string().contains("still owned it"));
        // A release by someone else does not free it.
        let history = [acquired("a", 1, 0), released("b", 0), acquired("b", 2, 0)];
        assert_eq!(check(&history).len(), 1);
    }

    #[test]
    fn a_committed_offset_that_moves_back_is_caught_unless_reset() {
        let history = [committed(0, 10, 0), committed(0, 7, 1)];
        assert_eq!(
            check(&history),
            vec![GroupViolation::CommittedMovedBack {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                before: 10,
                after: 7,
            }]
        );
        let history = [
            committed(0, 10, 0),
            GroupEvent::Reset {
                group: "g".into(),
                topic: "t".into(),
            },
            committed(0, 0, 2),
        ];
        assert_eq!(check(&history), vec![]);
    }

    #[test]
    fn only_what_was_seen_before_an_observation_began_bounds_it() {
        // A read asked before the commit of 12 was acknowledged may return 12, and the
        // acknowledgement of the earlier commit of 10 may come back after both.
        let history = [
            committed(0, 12, 0),
            committed(0, 10, 0),
            committed(0, 11, 0),
        ];
        assert_eq!(check(&history), vec![]);
        // A read that began after 12 was seen must not return less.
        let history = [committed(0, 12, 0), committed(0, 11, 1)];
        assert_eq!(check(&history).len(), 1);
        // Nor one that began after the highest of several was seen.
        let history = [
            committed(0, 12, 0),
            committed(0, 10, 0),
            committed(0, 11, 2),
        ];
        assert_eq!(
            check(&history),
            vec![GroupViolation::CommittedMovedBack {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                before: 12,
                after: 11,
            }]
        );
    }
}
