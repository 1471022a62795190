//! Who leads which partition, as nodes tell each other ([`LeadershipHint`]) and this node's own
//! groups show. Hints, not truth: a partition's Raft group decides its leader, and a client that
//! follows a stale hint gets `NOT_LEADER` with a better one. Each node sends its peers what
//! changed when it gains or loses a leadership, and periodically everything it leads, which
//! bounds how long a lost message can leave a hint stale.

use gregor_storage::{GroupId, NodeId, Offset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A group the sender leads, in which term, which of its replicas are behind, and its log's
/// bounds when it said so (for nodes that describe a partition they hold no replica of).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Led {
    pub group: GroupId,
    pub term: u64,
    /// Replicas of the assignment that are not (yet) caught-up voters.
    #[serde(default)]
    pub lagging: Vec<NodeId>,
    #[serde(default)]
    pub log_start_offset: Offset,
    #[serde(default)]
    pub high_watermark: Offset,
}

/// What a node says about the partitions it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipHint {
    /// `led` is everything the sender leads: forget what it is not listed for.
    pub full: bool,
    pub led: Vec<Led>,
    /// Groups the sender no longer leads.
    #[serde(default)]
    pub lost: Vec<GroupId>,
}

/// One group's leader as known here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub leader: NodeId,
    pub term: u64,
    pub lagging: Vec<NodeId>,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
}

/// The hints this node has received, newest term winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderHints {
    leaders: BTreeMap<GroupId, Leadership>,
}

impl LeaderHints {
    pub fn get(&self, group: GroupId) -> Option<&Leadership> {
        self.leaders.get(&group)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&GroupId, &Leadership)> {
        self.leaders.iter()
    }

    /// Takes in a hint from `from`. A hint of an older term than the one known is ignored, so
    /// messages that arrive out of order cannot bring back a deposed leader.
    pub fn receive(&mut self, from: NodeId, hint: &LeadershipHint) {
        if hint.full {
            let listed: std::collections::BTreeSet<GroupId> =
                hint.led.iter().map(|l| l.group).collect();
            self.leaders
                .retain(|group, known| known.leader != from || listed.contains(group));
        }
        for gone in &hint.lost {
            if self.leaders.get(gone).is_some_and(|l| l.leader == from) {
                self.leaders.remove(gone);
            }
        }
        for led in &hint.led {
            self.observe(
                led.group,
                Leadership {
                    leader: from,
                    term: led.term,
                    lagging: led.lagging.clone(),
                    log_start_offset: led.log_start_offset,
                    high_watermark: led.high_watermark,
                },
            );
        }
    }

    /// What a local group shows about its leader (it may know a newer term than any hint).
    pub fn observe(&mut self, group: GroupId, leadership: Leadership) {
        let newer = self
            .leaders
            .get(&group)
            .is_none_or(|known| known.term <= leadership.term);
        if newer {
            self.leaders.insert(group, leadership);
        }
    }

    /// A group this node no longer hosts or that no longer exists.
    pub fn forget(&mut self, group: GroupId) {
        self.leaders.remove(&group);
    }

    /// Drops the hints of every leader `is_live` says is gone. A partition whose leader died
    /// and that cannot elect another (no live majority) would otherwise name the dead node for
    /// ever: no newer term ever comes to replace its hint.
    pub fn forget_dead(&mut self, is_live: impl Fn(NodeId) -> bool) {
        self.leaders.retain(|_, known| is_live(known.leader));
    }

    /// Leaders per node.
    pub fn counts(&self) -> BTreeMap<NodeId, u32> {
        let mut counts = BTreeMap::new();
        for leadership in self.leaders.values() {
            *counts.entry(leadership.leader).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(group: u64, term: u64) -> Led {
        Led {
            group: GroupId(group),
            term,
            lagging: vec![],
            log_start_offset: Offset(0),
            high_watermark: Offset(0),
        }
    }

    fn leader(hints: &LeaderHints, group: u64) -> Option<(u64, u64)> {
        hints.get(GroupId(group)).map(|l| (l.leader.0, l.term))
    }

    #[test]
    fn newer_terms_win_whatever_the_order_of_arrival() {
        let mut hints = LeaderHints::default();
        let change = |led: Vec<Led>, lost: Vec<u64>| LeadershipHint {
            full: false,
            led,
            lost: lost.into_iter().map(GroupId).collect(),
        };
        hints.receive(NodeId(1), &change(vec![led(10, 3), led(11, 1)], vec![]));
        // Node 2 won group 10 in term 4; node 1's late message from term 3 changes nothing.
        hints.receive(NodeId(2), &change(vec![led(10, 4)], vec![]));
        hints.receive(NodeId(1), &change(vec![led(10, 3)], vec![]));
        assert_eq!(leader(&hints, 10), Some((2, 4)));
        // Node 1 says it lost group 10, which it no longer holds here: node 2 stays.
        hints.receive(NodeId(1), &change(vec![], vec![10, 11]));
        assert_eq!(leader(&hints, 10), Some((2, 4)));
        assert_eq!(leader(&hints, 11), None);
    }

    #[test]
    fn a_full_hint_replaces_everything_its_sender_said() {
        let mut hints = LeaderHints::default();
        let full = |led: Vec<Led>| LeadershipHint {
            full: true,
            led,
            lost: vec![],
        };
        hints.receive(NodeId(1), &full(vec![led(1, 1), led(2, 1), led(3, 1)]));
        hints.receive(NodeId(2), &full(vec![led(4, 2)]));
        hints.receive(NodeId(1), &full(vec![led(2, 1)]));
        assert_eq!(leader(&hints, 1), None);
        assert_eq!(leader(&hints, 2), Some((1, 1)));
        assert_eq!(leader(&hints, 4), Some((2, 2)));
        assert_eq!(
            hints.counts(),
            BTreeMap::from([(NodeId(1), 1), (NodeId(2), 1)])
        );
        hints.forget_dead(|n| n != NodeId(2));
        assert_eq!(leader(&hints, 4), None);
    }

    #[test]
    fn a_dead_leaders_hints_are_dropped_and_a_live_ones_kept() {
        let mut hints = LeaderHints::default();
        let full = |led: Vec<Led>| LeadershipHint {
            full: true,
            led,
            lost: vec![],
        };
        hints.receive(NodeId(1), &full(vec![led(1, 1)]));
        hints.receive(NodeId(2), &full(vec![led(2, 5), led(3, 5)]));
        hints.forget_dead(|n| n != NodeId(2));
        assert_eq!(leader(&hints, 1), Some((1, 1)));
        assert_eq!(leader(&hints, 2), None);
        assert_eq!(leader(&hints, 3), None);
        // The group's next leader is taken whatever term it won in.
        hints.receive(NodeId(3), &full(vec![led(2, 6)]));
        assert_eq!(leader(&hints, 2), Some((3, 6)));
    }
}
