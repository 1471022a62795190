//! The consumer-group checker: a pure function from what a run observed of its groups to the
//! violations it shows. It judges two promises of the membership protocol:
//!
//! - **one owner**: within a group, a partition is owned by at most one member at a time, so no
//!   two members own it in one epoch (a member owns a partition from the poll that gave it to
//!   it until the poll that released it; a killed member until the harness says it is gone,
//!   which is when its session could have ended);
//! - **committed offsets never move back**: every committed offset read back (from a commit's
//!   acknowledgement, `FetchOffsets` or `DescribeGroup`) is at least every one read or
//!   acknowledged before it, unless an explicit reset came between.

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
    /// A committed offset acknowledged or read back.
    Committed {
        group: String,
        topic: String,
        partition: u32,
        offset: u64,
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

type Key = (String, String, u32);

/// Every violation `events` show, in the order they happened.
pub fn check(events: &[GroupEvent]) -> Vec<GroupViolation> {
    let mut owners: BTreeMap<Key, (String, i32)> = BTreeMap::new();
    let mut committed: BTreeMap<Key, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    for event in events {
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
            } => {
                let key = (group.clone(), topic.clone(), *partition);
                if let Some(&before) = committed.get(&key) {
                    if *offset < before {
                        violations.push(GroupViolation::CommittedMovedBack {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            before,
                            after: *offset,
                        });
                        continue;
                    }
                }
                committed.insert(key, *offset);
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

    fn committed(partition: u32, offset: u64) -> GroupEvent {
        GroupEvent::Committed {
            group: "g".into(),
            topic: "t".into(),
            partition,
            offset,
        }
    }

    #[test]
    fn a_clean_handover_passes() {
        let history = [
            acquired("a", 1, 0),
            acquired("a", 1, 1),
            committed(0, 10),
            released("a", 0),
            acquired("b", 2, 0),
            committed(0, 12),
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
        let history = [committed(0, 10), committed(0, 7)];
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
            committed(0, 10),
            GroupEvent::Reset {
                group: "g".into(),
                topic: "t".into(),
            },
            committed(0, 0),
        ];
        assert_eq!(check(&history), vec![]);
    }
}
