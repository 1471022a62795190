//! Two voters left after the leader dies: one with the longer log, one behind it whose
//! election timeout is the shorter. async-raft resets a node's election timer whenever it
//! adopts a higher term, vote granted or not, so if the node that could win adopted the stale
//! candidate's term at each refusal (as Raft says) it would never stand, and the stale one,
//! standing every timeout, never wins: no leader, for ever (3-node simulation seeds 7, 11, 14).
//! The containment (`Containment::outpace_stale_candidates`) moves the refusing node past the
//! candidate's terms instead.

mod common;

use common::{append, runtime, TestCluster};
use gregor_cluster::rpc::VoteRequest;
use gregor_cluster::{Containment, PeerHandler, RaftTuning, Start};
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;

const GROUP: GroupId = GroupId(80);
const SECOND: Duration = Duration::from_secs(1);

fn timeouts(min_ms: u64) -> RaftTuning {
    RaftTuning {
        election_timeout_min_ms: min_ms,
        election_timeout_max_ms: min_ms + 1,
        ..common::tuning()
    }
}

/// Whether the two remaining voters elect a leader within 20 s.
async fn elects_after_the_leader_dies(containment: Containment) -> bool {
    let mut cluster = TestCluster::with(&[1, 2, 3], timeouts(1_000), containment).await;
    cluster.form_group(GROUP, &[1, 2, 3]).await;
    cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();
    let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    let others: Vec<NodeId> = cluster.ids().into_iter().filter(|n| *n != leader).collect();
    let (stale, up_to_date) = (others[0], others[1]);

    cluster.net.isolate(stale, &cluster.ids());
    let (last, _) = cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();
    cluster
        .wait_applied_on(&[up_to_date], GROUP, last, 10 * SECOND)
        .await;
    // The stale node comes back with the shorter election timeout: it stands first, every time.
    cluster.kill(stale).await;
    cluster
        .start_node_tuned(stale, timeouts(300), containment)
        .await;
    cluster
        .node(stale)
        .start_group(GROUP, Start::Restart)
        .await
        .unwrap();
    cluster.kill(leader).await;
    cluster.net.heal();
    cluster.wait_leader(GROUP, 20 * SECOND).await.is_some()
}

#[test]
fn the_voter_with_the_longer_log_is_elected_though_a_stale_one_stands_first() {
    runtime().block_on(async {
        assert!(elects_after_the_leader_dies(Containment::default()).await);
    });
}

#[test]
fn without_the_containment_the_stale_candidate_keeps_the_group_leaderless() {
    runtime().block_on(async {
        let raw = Containment {
            outpace_stale_candidates: false,
            ..Containment::default()
        };
        assert!(!elects_after_the_leader_dies(raw).await);
    });
}

/// A stale candidate is refused in its own term, never told a higher one of ours: learning it,
/// it would take that term at the same moment as the voters that could win (each refused by
/// an outpacing voter), and standing first again it would push that voter past their next
/// term every time. Three-node simulation seed 14918: two voters with equal logs refused each
/// other for 130 s behind a stale third whose timeout was 5 ms shorter.
#[test]
fn a_stale_candidate_is_refused_in_its_own_term() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2, 3]).await;
        cluster.form_group(GROUP, &[1, 2, 3]).await;
        cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
        let first = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        // A second election, so that a term below the group's exists for the candidate.
        cluster.group(first, GROUP).step_down().await.unwrap();
        let (last, _) = cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
        cluster.wait_applied(GROUP, last, 10 * SECOND).await;
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        let followers: Vec<NodeId> = cluster.ids().into_iter().filter(|n| *n != leader).collect();
        let (voter, candidate) = (followers[0], followers[1]);
        let term = cluster.group(voter, GROUP).term();
        assert!(term >= 2, "the step-down elected again");

        let stale = VoteRequest::new(term - 1, candidate.0, 0, 0);
        let answer = cluster
            .node(voter)
            .dispatcher()
            .vote(candidate, GROUP, stale)
            .await
            .unwrap();
        assert!(!answer.vote_granted);
        assert_eq!(
            answer.term,
            term - 1,
            "the refusal carries the candidate's term"
        );
        assert_eq!(cluster.group(voter, GROUP).term(), term);
    });
}
