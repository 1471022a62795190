//! The leader's own account of what is committed, by Raft's rule, from the responses it has
//! seen in its current term.
//!
//! async-raft's leader cannot be trusted with this: a new leader assumes every follower
//! already matches its last log index in the current term (`spawn_replication_stream` sets
//! `match_term = current_term`), so the first conflict reply from one follower lets it "commit"
//! its predecessor's entries held by itself alone (a median over a phantom); and members added
//! by a membership change stay non-voters in its bookkeeping, so it commits without them. The
//! `leader_commit` the leader sends is clamped to [`CommitTracker::commit`], so no follower
//! applies an entry this tracker has not seen committed.
//!
//! A follower's match counts only once a response proved it: the inbound dispatcher answers
//! success only after checking the message's previous entry against its log, so a success to a
//! message with `prev_log_index` p and n entries proves the follower holds the leader's log up
//! to p + n.

use async_raft::raft::{Entry, EntryPayload, MembershipConfig};
use std::collections::{BTreeMap, BTreeSet};

/// The voters of a configuration: one set, or both sets of a joint configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Voters {
    sets: Vec<BTreeSet<u64>>,
}

impl Voters {
    pub(crate) fn of(config: &MembershipConfig) -> Voters {
        let mut sets = vec![config.members.iter().copied().collect()];
        if let Some(after) = &config.members_after_consensus {
            sets.push(after.iter().copied().collect());
        }
        Voters { sets }
    }

    /// No configuration known: nothing can be counted as committed.
    pub(crate) fn none() -> Voters {
        Voters { sets: Vec::new() }
    }
}

/// What one leader term has proven. Built when the term's first message is sent.
#[derive(Debug)]
pub(crate) struct CommitTracker {
    leader: u64,
    term: u64,
    /// The node's last applied index when the term began: committed before the term, so it
    /// never needs holding back.
    base: u64,
    /// The lowest index of an entry of this term the leader has sent. Raft commits by counting
    /// replicas only entries of the leader's own term; every entry at or above it is one.
    first_own: Option<u64>,
    /// The highest index the leader has sent: durable in its own log (async-raft appends and
    /// syncs an entry before replicating it).
    leader_last: u64,
    /// The newest configuration in the leader's log, with its index.
    config: (u64, Voters),
    /// Each follower's (and learner's) proven match in this term.
    matches: BTreeMap<u64, u64>,
    /// The highest commit index each follower acknowledged a message carrying.
    told: BTreeMap<u64, u64>,
    commit: u64,
}

impl CommitTracker {
    pub(crate) fn new(leader: u64, term: u64, base: u64, config: (u64, Voters)) -> CommitTracker {
        CommitTracker {
            leader,
            term,
            base,
            first_own: None,
            leader_last: 0,
            config,
            matches: BTreeMap::new(),
            told: BTreeMap::new(),
            commit: 0,
        }
    }

    pub(crate) fn term(&self) -> u64 {
        self.term
    }

    /// Notes entries the leader is about to send: its own durable log reaches their last
    /// index, and a configuration among them is the newest one in its log from now on.
    pub(crate) fn observe_sent(&mut self, entries: &[Entry<crate::Command>]) {
        for entry in entries {
            self.leader_last = self.leader_last.max(entry.index);
            if entry.term == self.term {
                self.first_own = Some(self.first_own.map_or(entry.index, |f| f.min(entry.index)));
            }
            let config = match &entry.payload {
                EntryPayload::ConfigChange(change) => Some(&change.membership),
                EntryPayload::SnapshotPointer(pointer) => Some(&pointer.membership),
                _ => None,
            };
            if let Some(config) = config {
                if entry.index >= self.config.0 {
                    self.config = (entry.index, Voters::of(config));
                }
            }
        }
        self.recompute();
    }

    /// A follower proved it holds the leader's log up to `index`.
    pub(crate) fn record_match(&mut self, follower: u64, index: u64) {
        let known = self.matches.entry(follower).or_insert(0);
        if index > *known {
            *known = index;
            self.recompute();
        }
    }

    /// A follower acknowledged a message telling it `commit`.
    pub(crate) fn record_told(&mut self, follower: u64, commit: u64) {
        let told = self.told.entry(follower).or_insert(0);
        *told = (*told).max(commit);
    }

    /// The index the leader's log ends at, when everything in it is committed and every voter
    /// `counted` holds all of it and has been told so: nothing is left to send them until a new
    /// entry. `None` while a configuration change is joint, or before this term sent anything.
    pub(crate) fn settled(&self, counted: impl Fn(u64) -> bool) -> Option<u64> {
        let [voters] = self.config.1.sets.as_slice() else {
            return None;
        };
        let last = self.leader_last;
        if last == 0 || self.commit() < last {
            return None;
        }
        let behind = |node: &u64| {
            self.matched(*node) < last || self.told.get(node).copied().unwrap_or(0) < last
        };
        let lagging = voters
            .iter()
            .filter(|node| **node != self.leader && counted(**node))
            .any(behind);
        (!lagging).then_some(last)
    }

    /// The highest index this term has sent (its log's end, once nothing is in flight).
    pub(crate) fn leader_last(&self) -> u64 {
        self.leader_last
    }

    pub(crate) fn matched(&self, follower: u64) -> u64 {
        self.matches.get(&follower).copied().unwrap_or(0)
    }

    /// The highest index committed by Raft's rule as far as this term has seen.
    pub(crate) fn commit(&self) -> u64 {
        self.commit.max(self.base)
    }

    fn recompute(&mut self) {
        let Some(first_own) = self.first_own else {
            return;
        };
        let sets = &self.config.1.sets;
        if sets.is_empty() {
            return;
        }
        let candidate = sets
            .iter()
            .map(|set| self.majority_index(set))
            .min()
            .unwrap_or(0);
        if candidate >= first_own && candidate > self.commit {
            self.commit = candidate;
        }
    }

    /// The largest index that a majority of `set` holds.
    fn majority_index(&self, set: &BTreeSet<u64>) -> u64 {
        let mut held: Vec<u64> = set
            .iter()
            .map(|node| {
                if *node == self.leader {
                    self.leader_last
                } else {
                    self.matched(*node)
                }
            })
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(set.len() / 2).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use async_raft::raft::EntryConfigChange;
    use std::collections::HashSet;

    fn blank(index: u64, term: u64) -> Entry<Command> {
        Entry {
            index,
            term,
            payload: EntryPayload::Blank,
        }
    }

    fn config(nodes: &[u64], after: Option<&[u64]>) -> MembershipConfig {
        MembershipConfig {
            members: nodes.iter().copied().collect::<HashSet<_>>(),
            members_after_consensus: after.map(|a| a.iter().copied().collect()),
        }
    }

    fn tracker(voters: &[u64]) -> CommitTracker {
        CommitTracker::new(1, 3, 0, (1, Voters::of(&config(voters, None))))
    }

    #[test]
    fn a_predecessors_entry_commits_only_with_an_entry_of_this_term() {
        let mut t = tracker(&[1, 2, 3]);
        // Entries 1..=10 are the predecessor's (term 2); 11 is this leader's blank entry.
        let old: Vec<_> = (1..=10).map(|i| blank(i, 2)).collect();
        t.observe_sent(&old);
        t.record_match(2, 10);
        assert_eq!(
            t.commit(),
            0,
            "term 2 entries are not committed by counting"
        );
        t.observe_sent(&[blank(11, 3)]);
        assert_eq!(t.commit(), 0, "10 is on a majority, no entry of term 3 is");
        t.record_match(3, 11);
        assert_eq!(t.commit(), 11);
    }

    #[test]
    fn an_unknown_follower_counts_for_nothing() {
        let mut t = tracker(&[1, 2, 3]);
        t.observe_sent(&[blank(1, 3), blank(2, 3)]);
        assert_eq!(t.commit(), 0, "the leader alone is no majority");
        t.record_match(9, 2);
        assert_eq!(t.commit(), 0, "a learner is no voter");
        t.record_match(3, 1);
        assert_eq!(t.commit(), 1);
    }

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let mut t = tracker(&[1, 2, 3]);
        let joint = Entry {
            index: 1,
            term: 3,
            payload: EntryPayload::ConfigChange(EntryConfigChange {
                membership: config(&[1, 2, 3], Some(&[1, 2, 3, 4])),
            }),
        };
        t.observe_sent(&[joint, blank(2, 3)]);
        t.record_match(2, 2);
        assert_eq!(t.commit(), 0, "1 and 2 are a majority of 3 but not of 4");
        t.record_match(4, 2);
        assert_eq!(t.commit(), 2);
    }

    #[test]
    fn the_base_is_never_held_back_and_matches_only_grow() {
        let mut t = CommitTracker::new(1, 3, 7, (1, Voters::of(&config(&[1, 2], None))));
        assert_eq!(t.commit(), 7);
        t.observe_sent(&[blank(8, 3)]);
        t.record_match(2, 8);
        t.record_match(2, 5);
        assert_eq!(t.matched(2), 8);
        assert_eq!(t.commit(), 8);
    }

    #[test]
    fn settled_once_every_counted_voter_holds_and_was_told_the_end() {
        let mut t = tracker(&[1, 2, 3]);
        assert_eq!(t.settled(|_| true), None, "nothing sent in this term");
        t.observe_sent(&[blank(1, 3), blank(2, 3)]);
        t.record_match(2, 2);
        t.record_match(3, 2);
        assert_eq!(t.commit(), 2);
        assert_eq!(t.settled(|_| true), None, "the commit was not told yet");
        t.record_told(2, 2);
        assert_eq!(t.settled(|_| true), None, "3 was not told");
        assert_eq!(t.settled(|n| n != 3), Some(2), "3 not counted");
        t.record_told(3, 2);
        assert_eq!(t.settled(|_| true), Some(2));
        t.observe_sent(&[blank(3, 3)]);
        assert_eq!(t.settled(|_| true), None, "a new entry unsettles");
    }

    #[test]
    fn a_joint_configuration_never_settles() {
        let mut t = tracker(&[1, 2]);
        let joint = Entry {
            index: 1,
            term: 3,
            payload: EntryPayload::ConfigChange(EntryConfigChange {
                membership: config(&[1, 2], Some(&[1, 2, 3])),
            }),
        };
        t.observe_sent(&[joint]);
        for node in [2, 3] {
            t.record_match(node, 1);
            t.record_told(node, 1);
        }
        assert_eq!(t.commit(), 1);
        assert_eq!(t.settled(|_| true), None);
    }

    #[test]
    fn no_configuration_commits_nothing() {
        let mut t = CommitTracker::new(1, 3, 0, (0, Voters::none()));
        t.observe_sent(&[blank(1, 3)]);
        t.record_match(2, 1);
        assert_eq!(t.commit(), 0);
    }
}
