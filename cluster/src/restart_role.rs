//! What a restarted node may be: async-raft 0.6.1 decides a node's first role from its stored
//! configuration alone (`RaftCore::main`): a node with a log whose newest configuration's first
//! set has one member, and that appears in either set, starts as leader of its stored term,
//! without an election. For a lone member that won its term (or founded the group) that is
//! right; for anyone else it is a second leader in a term another node may lead:
//!
//! - a newcomer stopped between the joint configuration `{x} -> {x, us}` and the final one
//!   restarts as leader of its stored term, which `x` may lead too, and appends its own entry
//!   where `x` put the final configuration (in the same term, the two logs then agree on
//!   (index, term) and differ in content, which no later message repairs);
//! - a lone member that voted for another candidate in its stored term restarts as leader of
//!   the term that candidate may have won.
//!
//! The containment works on the state async-raft reads at start ([`contain`]): a node that did
//! not win its stored term is shown a first set that async-raft cannot take for a lone member,
//! chosen so that every quorum it would count is still a quorum of the real configuration; a
//! lone member of a settled configuration instead votes for itself in the next term, which its
//! single vote wins, so the leadership it starts with is one it won.

use async_raft::raft::MembershipConfig;
use async_raft::storage::HardState;
use std::collections::HashSet;

/// What async-raft is to be told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestartRole {
    /// The stored state as it is: async-raft will not lead without an election, or may.
    AsStored,
    /// Start as a follower of this configuration (the stored one with a larger first set).
    Follower(MembershipConfig),
    /// Save this hard state (the next term, voted for ourselves) first: a lone member wins it.
    NextTerm(HardState),
}

/// Decides what node `node` is to be told, given what it stored.
pub(crate) fn contain(
    node: u64,
    hard_state: &HardState,
    has_log: bool,
    membership: &MembershipConfig,
) -> RestartRole {
    let would_lead = has_log && membership.members.len() == 1 && membership.contains(&node);
    if !would_lead {
        return RestartRole::AsStored;
    }
    let first_set_is_us = membership.members.contains(&node);
    let won = hard_state.voted_for == Some(node);
    match (&membership.members_after_consensus, first_set_is_us) {
        // Only we could have won the stored term (the first set's majority is our vote), and we
        // voted for ourselves: this is the leadership we had.
        (_, true) if won => RestartRole::AsStored,
        (None, true) => RestartRole::NextTerm(HardState {
            current_term: hard_state.current_term + 1,
            voted_for: Some(node),
        }),
        // Joint, with us the whole first set: adding the second set to the first changes no
        // quorum we would count (our vote is in every majority of both), and makes us one of
        // several.
        (Some(after), true) => RestartRole::Follower(MembershipConfig {
            members: membership.members.union(after).copied().collect(),
            members_after_consensus: Some(after.clone()),
        }),
        // We are only in the second set: `{x, us}` has one majority, both of us, so every quorum
        // we would count still holds `x`, as the real first set `{x}` demands.
        (_, false) => {
            let mut members: HashSet<u64> = membership.members.clone();
            members.insert(node);
            RestartRole::Follower(MembershipConfig {
                members,
                members_after_consensus: membership.members_after_consensus.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(members: &[u64], after: Option<&[u64]>) -> MembershipConfig {
        MembershipConfig {
            members: members.iter().copied().collect(),
            members_after_consensus: after.map(|a| a.iter().copied().collect()),
        }
    }

    fn hard(term: u64, voted_for: Option<u64>) -> HardState {
        HardState {
            current_term: term,
            voted_for,
        }
    }

    #[test]
    fn a_newcomer_holding_the_joint_configuration_restarts_as_a_follower_that_needs_the_old_leader()
    {
        let joint = config(&[1], Some(&[1, 2]));
        let role = contain(2, &hard(1, Some(1)), true, &joint);
        assert_eq!(
            role,
            RestartRole::Follower(config(&[1, 2], Some(&[1, 2]))),
            "the first set {{1, 2}} has one majority, which holds node 1"
        );
    }

    #[test]
    fn a_lone_member_that_won_its_term_keeps_leading_it() {
        assert_eq!(
            contain(1, &hard(3, Some(1)), true, &config(&[1], None)),
            RestartRole::AsStored
        );
        assert_eq!(
            contain(1, &hard(3, Some(1)), true, &config(&[1], Some(&[1, 2]))),
            RestartRole::AsStored
        );
    }

    #[test]
    fn a_lone_member_that_did_not_vote_for_itself_wins_the_next_term_first() {
        assert_eq!(
            contain(1, &hard(3, None), true, &config(&[1], None)),
            RestartRole::NextTerm(hard(4, Some(1)))
        );
    }

    #[test]
    fn a_lone_first_set_that_voted_for_another_candidate_restarts_as_a_follower() {
        assert_eq!(
            contain(1, &hard(3, Some(2)), true, &config(&[1], Some(&[1, 2, 3]))),
            RestartRole::Follower(config(&[1, 2, 3], Some(&[1, 2, 3])))
        );
    }

    #[test]
    fn nothing_changes_where_async_raft_would_not_lead() {
        let cases = [
            (config(&[1, 2, 3], None), true),
            (config(&[1, 2], Some(&[1])), true),
            (config(&[2], None), true),
            (config(&[1], None), false),
        ];
        for (membership, has_log) in cases {
            assert_eq!(
                contain(1, &hard(2, Some(2)), has_log, &membership),
                RestartRole::AsStored,
                "{membership:?}"
            );
        }
    }
}
