//! Server-side assignors: from the members' subscriptions and the subscribed topics'
//! partition counts to a target assignment. Free of I/O and deterministic (ordered maps, ties
//! broken by member id), so every coordinator computes the same target from the same state.

use crate::api::{ApiError, ErrorCode};
use gregor_storage::PartitionId;
use std::collections::{BTreeMap, BTreeSet};

/// One partition of one topic, ordered by topic name then partition.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Tp {
    pub topic: String,
    pub partition: PartitionId,
}

impl Tp {
    pub fn new(topic: &str, partition: u32) -> Tp {
        Tp {
            topic: topic.to_string(),
            partition: PartitionId(partition),
        }
    }
}

impl std::fmt::Display for Tp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

pub type MemberId = String;
pub type Assignment = BTreeMap<MemberId, BTreeSet<Tp>>;

/// How a group spreads partitions over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions in member order (Kafka's `range`).
    Range,
    /// Every partition of every topic in turn to the next subscribed member (round-robin).
    Uniform,
    /// Balanced like `uniform`, moving as few partitions as possible from their current owners.
    #[default]
    CooperativeSticky,
}

impl Assignor {
    pub const NAMES: [&'static str; 3] = ["range", "uniform", "cooperative-sticky"];

    /// # Errors
    /// `UNSUPPORTED_ASSIGNOR` for a name that is none of [`Assignor::NAMES`].
    pub fn from_name(name: &str) -> Result<Assignor, ApiError> {
        match name {
            "range" => Ok(Assignor::Range),
            "uniform" => Ok(Assignor::Uniform),
            "cooperative-sticky" => Ok(Assignor::CooperativeSticky),
            other => Err(ApiError::new(
                ErrorCode::UNSUPPORTED_ASSIGNOR,
                format!(
                    "server assignor {other:?} is not supported; use one of {}",
                    Assignor::NAMES.join(", ")
                ),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::Uniform => "uniform",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The target assignment. `subscriptions` holds every member's resolved topic set (topics
    /// that exist); `partitions` every topic's partition count; `current` who owns what now
    /// (used by the sticky assignor only). Every subscribed partition goes to exactly one
    /// member subscribed to its topic.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<MemberId, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
        current: &Assignment,
    ) -> Assignment {
        let mut target: Assignment = subscriptions
            .keys()
            .map(|m| (m.clone(), BTreeSet::new()))
            .collect();
        let by_topic = members_by_topic(subscriptions, partitions);
        match self {
            Assignor::Range => range(&by_topic, partitions, &mut target),
            Assignor::Uniform => uniform(&by_topic, partitions, &mut target),
            Assignor::CooperativeSticky => sticky(&by_topic, partitions, current, &mut target),
        }
        check_complete(&target, &by_topic, partitions);
        target
    }
}

/// For every existing topic someone subscribes to, its subscribers in member-id order.
fn members_by_topic(
    subscriptions: &BTreeMap<MemberId, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<MemberId>> {
    let mut by_topic: BTreeMap<String, Vec<MemberId>> = BTreeMap::new();
    for (member, topics) in subscriptions {
        for topic in topics.iter().filter(|t| partitions.contains_key(*t)) {
            by_topic
                .entry(topic.clone())
                .or_default()
                .push(member.clone());
        }
    }
    by_topic
}

fn range(
    by_topic: &BTreeMap<String, Vec<MemberId>>,
    partitions: &BTreeMap<String, u32>,
    target: &mut Assignment,
) {
    for (topic, members) in by_topic {
        let count = partitions[topic];
        let n = members.len() as u32;
        let (share, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in members.iter().enumerate() {
            let take = share + u32::from((i as u32) < extra);
            let owned = target
                .get_mut(member)
                .expect("every subscriber has an entry");
            owned.extend((next..next + take).map(|p| Tp::new(topic, p)));
            next += take;
        }
    }
}

fn uniform(
    by_topic: &BTreeMap<String, Vec<MemberId>>,
    partitions: &BTreeMap<String, u32>,
    target: &mut Assignment,
) {
    for (topic, members) in by_topic {
        for p in 0..partitions[topic] {
            let member = least_loaded(members, target);
            target
                .get_mut(&member)
                .expect("every subscriber has an entry")
                .insert(Tp::new(topic, p));
        }
    }
}

/// The member among `candidates` owning the fewest partitions; the first in id order on a tie.
fn least_loaded(candidates: &[MemberId], target: &Assignment) -> MemberId {
    candidates
        .iter()
        .min_by_key(|m| target[*m].len())
        .expect("a topic with subscribers has at least one")
        .clone()
}

fn sticky(
    by_topic: &BTreeMap<String, Vec<MemberId>>,
    partitions: &BTreeMap<String, u32>,
    current: &Assignment,
    target: &mut Assignment,
) {
    let eligible = |tp: &Tp, member: &MemberId| {
        by_topic
            .get(&tp.topic)
            .is_some_and(|members| members.contains(member))
    };
    // Keep what each member owns and may still own.
    let mut kept = BTreeSet::new();
    for (member, owned) in current {
        for tp in owned {
            let exists = partitions
                .get(&tp.topic)
                .is_some_and(|&n| tp.partition.0 < n);
            if exists
                && eligible(tp, member)
                && target.contains_key(member)
                && kept.insert(tp.clone())
            {
                target.get_mut(member).expect("checked").insert(tp.clone());
            }
        }
    }
    // Then every partition nobody kept goes to its least loaded subscriber.
    for (topic, members) in by_topic {
        for p in 0..partitions[topic] {
            let tp = Tp::new(topic, p);
            if !kept.contains(&tp) {
                let member = least_loaded(members, target);
                target.get_mut(&member).expect("checked").insert(tp);
            }
        }
    }
    // Then move one partition at a time from a member with at least two more than an eligible
    // one; every move lowers the sum of squared loads, so this ends.
    while let Some((from, to, tp)) = an_unbalancing_partition(target, &eligible) {
        target.get_mut(&from).expect("checked").remove(&tp);
        target.get_mut(&to).expect("checked").insert(tp);
    }
}

/// A partition whose move from the most loaded member that has one to spare to the least
/// loaded eligible member evens the load.
fn an_unbalancing_partition(
    target: &Assignment,
    eligible: &impl Fn(&Tp, &MemberId) -> bool,
) -> Option<(MemberId, MemberId, Tp)> {
    let mut by_load: Vec<(&MemberId, usize)> = target.iter().map(|(m, s)| (m, s.len())).collect();
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for &(from, load) in &by_load {
        // The highest-numbered partitions move first, so the low ones stay put.
        for tp in target[from].iter().rev() {
            let to = by_load
                .iter()
                .rev()
                .find(|(m, l)| *m != from && *l + 1 < load && eligible(tp, m));
            if let Some((to, _)) = to {
                return Some((from.clone(), (*to).clone(), tp.clone()));
            }
        }
    }
    None
}

/// What every assignor must produce: each subscribed partition exactly once, to a subscriber.
fn check_complete(
    target: &Assignment,
    by_topic: &BTreeMap<String, Vec<MemberId>>,
    partitions: &BTreeMap<String, u32>,
) {
    let mut seen = BTreeSet::new();
    for (member, owned) in target {
        for tp in owned {
            assert!(seen.insert(tp.clone()), "{tp} assigned twice");
            assert!(
                by_topic[&tp.topic].contains(member),
                "{tp} assigned to {member}, which does not subscribe to it"
            );
        }
    }
    let expected: usize = by_topic.keys().map(|t| partitions[t] as usize).sum();
    assert_eq!(
        seen.len(),
        expected,
        "every subscribed partition is assigned"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `"a:t,u b:t"`: member a subscribes to t and u, b to t.
    fn subs(spec: &str) -> BTreeMap<MemberId, BTreeSet<String>> {
        spec.split_whitespace()
            .map(|m| {
                let (member, topics) = m.split_once(':').unwrap();
                (
                    member.to_string(),
                    topics.split(',').map(str::to_string).collect(),
                )
            })
            .collect()
    }

    /// `"t:6 u:2"`.
    fn topics(spec: &str) -> BTreeMap<String, u32> {
        spec.split_whitespace()
            .map(|t| {
                let (name, n) = t.split_once(':').unwrap();
                (name.to_string(), n.parse().unwrap())
            })
            .collect()
    }

    /// `"a=t0,t1 b=t2"`, the form results are written in; a member with nothing is `"a="`.
    fn assignment(spec: &str) -> Assignment {
        spec.split_whitespace()
            .map(|m| {
                let (member, tps) = m.split_once('=').unwrap();
                let set = tps
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|tp| {
                        let split = tp.find(|c: char| c.is_ascii_digit()).unwrap();
                        Tp::new(&tp[..split], tp[split..].parse().unwrap())
                    })
                    .collect();
                (member.to_string(), set)
            })
            .collect()
    }

    fn show(a: &Assignment) -> String {
        a.iter()
            .map(|(m, s)| {
                let tps: Vec<String> = s
                    .iter()
                    .map(|tp| format!("{}{}", tp.topic, tp.partition.0))
                    .collect();
                format!("{m}={}", tps.join(","))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn assignors_by_table() {
        // assignor, subscriptions, topics, current owners, expected target.
        let cases = [
            ("range", "a:t b:t c:t", "t:6", "", "a=t0,t1 b=t2,t3 c=t4,t5"),
            ("range", "a:t b:t", "t:5", "", "a=t0,t1,t2 b=t3,t4"),
            ("range", "a:t,u b:t", "t:2 u:2", "", "a=t0,u0,u1 b=t1"),
            ("range", "a:t b:t c:t", "t:2", "", "a=t0 b=t1 c="),
            ("uniform", "a:t b:t", "t:3", "", "a=t0,t2 b=t1"),
            ("uniform", "a:t,u b:u", "t:2 u:2", "", "a=t0,t1 b=u0,u1"),
            ("uniform", "a:t b:t", "nothing:1", "", "a= b="),
            // Sticky: a joins a group where b and c own everything; two move, four stay.
            (
                "cooperative-sticky",
                "a:t b:t c:t",
                "t:6",
                "b=t0,t1,t2 c=t3,t4,t5",
                "a=t2,t5 b=t0,t1 c=t3,t4",
            ),
            // c leaves: only its partitions move.
            (
                "cooperative-sticky",
                "a:t b:t",
                "t:6",
                "a=t0,t1 b=t2,t3 c=t4,t5",
                "a=t0,t1,t4 b=t2,t3,t5",
            ),
            // Partitions added to the topic go to the least loaded.
            (
                "cooperative-sticky",
                "a:t b:t",
                "t:4",
                "a=t0 b=t1",
                "a=t0,t2 b=t1,t3",
            ),
            // Unsubscribing from u gives u away; a partition that no longer exists is dropped.
            (
                "cooperative-sticky",
                "a:t b:t,u",
                "t:2 u:1",
                "a=t0,t1,t7,u0 b=",
                "a=t0,t1 b=u0",
            ),
            // Heterogeneous: only b can take u, so a keeps all of t.
            (
                "cooperative-sticky",
                "a:t b:u",
                "t:3 u:1",
                "",
                "a=t0,t1,t2 b=u0",
            ),
        ];
        for (name, s, t, current, expected) in cases {
            let assignor = Assignor::from_name(name).unwrap();
            let got = assignor.assign(&subs(s), &topics(t), &assignment(current));
            assert_eq!(show(&got), expected, "{name} {s} over {t} from {current:?}");
        }
    }

    #[test]
    fn sticky_stays_balanced_and_moves_little_over_joins_and_leaves() {
        let partitions = topics("t:12");
        let mut current = Assignment::new();
        let mut members: Vec<String> = Vec::new();
        for step in 0..8 {
            if step < 5 {
                members.push(format!("m{step}"));
            } else {
                members.remove(0);
            }
            let s: BTreeMap<_, _> = members
                .iter()
                .map(|m| (m.clone(), BTreeSet::from(["t".to_string()])))
                .collect();
            let next = Assignor::CooperativeSticky.assign(&s, &partitions, &current);
            let loads: Vec<usize> = next.values().map(BTreeSet::len).collect();
            assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1);
            // A partition moves only if its owner left or had more than its share.
            let share = 12usize.div_ceil(members.len());
            for (m, owned) in &current {
                let kept = next.get(m).map_or(0, |n| n.intersection(owned).count());
                if next.contains_key(m) {
                    assert!(
                        kept >= owned.len().min(share).saturating_sub(1),
                        "{m} lost too much"
                    );
                }
            }
            current = next;
        }
    }

    #[test]
    fn unknown_assignors_are_refused() {
        assert_eq!(
            Assignor::from_name("roundrobin").unwrap_err().code,
            ErrorCode::UNSUPPORTED_ASSIGNOR
        );
        for name in Assignor::NAMES {
            assert_eq!(Assignor::from_name(name).unwrap().name(), name);
        }
    }
}
