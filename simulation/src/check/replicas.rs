//! Raft-level checks: at most one leader per term in each group, and replicas that agree on
//! every committed entry and record they both still hold.

use super::{Checker, Observed, Violation};
use crate::history::{History, ReplicaDump};
use gregor_storage::NodeId;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(history: &History, observed: &Observed, violations: &mut Vec<Violation>) {
    leaders_per_term(history, violations);
    prefix_consistency(history, observed, violations);
}

fn leaders_per_term(history: &History, violations: &mut Vec<Violation>) {
    let mut leaders: BTreeMap<(u64, u64), BTreeSet<NodeId>> = BTreeMap::new();
    for seen in &history.leaders {
        leaders
            .entry((seen.group, seen.term))
            .or_default()
            .insert(seen.node);
    }
    for ((group, term), nodes) in leaders {
        if nodes.len() > 1 {
            violations.push(Violation::new(
                Checker::TwoLeadersInTerm,
                format!("group {group} term {term} was led by nodes {nodes:?}"),
            ));
        }
    }
}

fn prefix_consistency(history: &History, observed: &Observed, violations: &mut Vec<Violation>) {
    let mut by_group: BTreeMap<u64, Vec<&ReplicaDump>> = BTreeMap::new();
    for dump in &history.replicas {
        by_group.entry(dump.group).or_default().push(dump);
    }
    for (group, dumps) in by_group {
        let name = observed.group_tp.get(&group).map_or_else(
            || format!("group {group}"),
            |tp| format!("group {group} ({tp})"),
        );
        for (i, a) in dumps.iter().enumerate() {
            for b in &dumps[i + 1..] {
                if let Some(difference) = first_difference(a, b) {
                    violations.push(Violation::new(
                        Checker::ReplicaDivergence,
                        format!("{name}: nodes {} and {} {difference}", a.node, b.node),
                    ));
                }
            }
        }
    }
}

/// Where two replicas of one group disagree on something both hold as committed.
fn first_difference(a: &ReplicaDump, b: &ReplicaDump) -> Option<String> {
    let committed = a.last_applied.min(b.last_applied);
    let b_entries: BTreeMap<u64, (u64, u64)> = b
        .entries
        .iter()
        .map(|(index, term, digest)| (*index, (*term, *digest)))
        .collect();
    for (index, term, digest) in a.entries.iter().filter(|e| e.0 <= committed) {
        if let Some((other_term, other_digest)) = b_entries.get(index) {
            if (term, digest) != (other_term, other_digest) {
                return Some(format!(
                    "disagree on committed entry {index}: term {term} vs {other_term}, payload {digest:016x} vs {other_digest:016x}"
                ));
            }
        }
    }
    for (offset, value) in &a.records {
        if let Some(other) = b.records.get(offset) {
            if other != value {
                return Some(format!("hold {value} and {other} at offset {offset}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::check::fixtures::*;
    use crate::check::Checker;
    use crate::history::{LeaderSeen, ReplicaDump};
    use gregor_storage::NodeId;

    #[test]
    fn two_leaders_in_one_term_are_reported() {
        let mut h = history();
        let seen = |node, term| LeaderSeen {
            group: 7,
            term,
            node: NodeId(node),
            at_ms: 0,
        };
        h.leaders.extend([seen(1, 1), seen(2, 2), seen(1, 1)]);
        assert_eq!(checkers(&h), vec![]);
        h.leaders.push(seen(3, 2));
        assert_eq!(checkers(&h), vec![Checker::TwoLeadersInTerm]);
    }

    fn dump(node: u64, entries: &[(u64, u64, u64)], last_applied: u64) -> ReplicaDump {
        ReplicaDump {
            node: NodeId(node),
            group: 7,
            last_applied,
            entries: entries.to_vec(),
            ..ReplicaDump::default()
        }
    }

    #[test]
    fn replicas_may_differ_only_past_what_both_applied() {
        let mut h = history();
        h.replicas
            .push(dump(1, &[(1, 1, 10), (2, 1, 20), (3, 2, 30)], 3));
        h.replicas
            .push(dump(2, &[(1, 1, 10), (2, 1, 20), (3, 1, 99)], 2));
        assert_eq!(checkers(&h), vec![]);
        h.replicas[1].last_applied = 3;
        assert_eq!(checkers(&h), vec![Checker::ReplicaDivergence]);
    }

    #[test]
    fn replicas_holding_different_records_diverge() {
        let mut h = history();
        let mut a = dump(1, &[], 0);
        let mut b = dump(2, &[], 0);
        a.records.insert(0, "x".into());
        b.records.insert(0, "y".into());
        h.replicas.extend([a, b]);
        assert_eq!(checkers(&h), vec![Checker::ReplicaDivergence]);
    }
}
