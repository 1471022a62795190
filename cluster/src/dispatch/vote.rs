//! What the dispatcher does with a vote request before async-raft sees it.
//!
//! async-raft 0.6.1 grants a vote to any candidate, member of the group or not (a pristine
//! replica that votes turns into a follower of a one-member configuration and then elects
//! itself: split brain), and decides up-to-dateness with `term >= && index >=`, stricter than
//! Raft's lexicographic rule, which can block elections. So: a candidate outside the group's
//! configuration is refused; a candidate that is up to date by Raft's rule but not by
//! async-raft's gets its `last_log_index` raised to ours (async-raft uses it for nothing else);
//! a candidate that is not up to date is refused without async-raft seeing it.

use crate::rpc::VoteRequest;
use std::collections::BTreeSet;

#[derive(Debug)]
pub(crate) enum VotePlan {
    Pass(VoteRequest),
    /// A member that is not up to date: async-raft gets this copy, whose empty log it refuses,
    /// only so that it adopts a higher term.
    RefuseTakingTerm(VoteRequest),
    Refuse,
}

/// `members`: every node of the group's newest configuration (both sets when joint); `None`
/// when the group has no configuration yet (a pristine replica, which never votes).
/// `ours`: our last log index and term.
pub(crate) fn plan_vote(
    members: Option<&BTreeSet<u64>>,
    ours: (u64, u64),
    mut rpc: VoteRequest,
) -> VotePlan {
    let Some(members) = members else {
        return VotePlan::Refuse;
    };
    if !members.contains(&rpc.candidate_id) {
        return VotePlan::Refuse;
    }
    let (our_index, our_term) = ours;
    let up_to_date = rpc.last_log_term > our_term
        || (rpc.last_log_term == our_term && rpc.last_log_index >= our_index);
    if !up_to_date {
        rpc.last_log_index = 0;
        rpc.last_log_term = 0;
        return VotePlan::RefuseTakingTerm(rpc);
    }
    if rpc.last_log_index < our_index {
        // Only possible with a newer last term: Raft grants, async-raft would not.
        rpc.last_log_index = our_index;
    }
    VotePlan::Pass(rpc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(nodes: &[u64]) -> BTreeSet<u64> {
        nodes.iter().copied().collect()
    }

    fn request(candidate: u64, last_index: u64, last_term: u64) -> VoteRequest {
        VoteRequest::new(9, candidate, last_index, last_term)
    }

    #[test]
    fn a_pristine_replica_never_votes() {
        assert!(matches!(
            plan_vote(None, (0, 0), request(1, 5, 1)),
            VotePlan::Refuse
        ));
    }

    #[test]
    fn a_candidate_outside_the_configuration_is_refused() {
        assert!(matches!(
            plan_vote(Some(&members(&[1, 2, 3])), (0, 0), request(4, 5, 1)),
            VotePlan::Refuse
        ));
    }

    #[test]
    fn a_newer_last_term_wins_over_a_longer_log() {
        let plan = plan_vote(Some(&members(&[1, 2, 3])), (20, 2), request(1, 10, 3));
        let VotePlan::Pass(rpc) = plan else {
            panic!("refused an up-to-date candidate");
        };
        assert_eq!(rpc.last_log_index, 20, "raised so async-raft agrees");
        assert_eq!(rpc.last_log_term, 3);
    }

    #[test]
    fn a_candidate_behind_us_is_refused_but_its_term_counts() {
        for (index, term) in [(19, 2), (30, 1)] {
            let plan = plan_vote(Some(&members(&[1, 2])), (20, 2), request(1, index, term));
            let VotePlan::RefuseTakingTerm(rpc) = plan else {
                panic!("{plan:?}");
            };
            assert_eq!((rpc.term, rpc.last_log_index, rpc.last_log_term), (9, 0, 0));
        }
        assert!(matches!(
            plan_vote(Some(&members(&[1, 2])), (20, 2), request(1, 20, 2)),
            VotePlan::Pass(_)
        ));
    }
}
