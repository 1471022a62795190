//! Leadership transfer (`RaftGroup::transfer_leadership`): the leader fences proposals, waits
//! until the chosen voter holds its whole log, and asks it to stand; the group is without a
//! leader for one vote round instead of an election timeout (virtual time, 1 ms links, the
//! production tuning: election timeout 800-1200 ms).

mod common;

use common::{append, assert_prefix_consistent, runtime, TestCluster};
use gregor_cluster::{AdminError, GroupRole, ProposeError, RaftTuning};
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;
use tokio::time::Instant;

const GROUP: GroupId = GroupId(70);
const SECOND: Duration = Duration::from_secs(1);
/// Far below the minimum election timeout (800 ms): a transfer costs round trips, not a
/// timeout.
const HANDOVER_BOUND: Duration = Duration::from_millis(100);

async fn formed(members: &[u64], tuning: RaftTuning) -> TestCluster {
    TestCluster::with_written_group(members, GROUP, tuning).await
}

fn busy() -> RaftTuning {
    RaftTuning {
        quiesce_after_heartbeats: 0,
        ..RaftTuning::default()
    }
}

/// Transfers leadership of a group of `members` to a follower and checks it led within a vote
/// round, in the next term, and took writes.
async fn transfers_within_a_vote_round(members: &[u64], tuning: RaftTuning) {
    let cluster = formed(members, tuning).await;
    let leader = cluster.wait_leader(GROUP, SECOND).await.unwrap();
    let term = cluster.group(leader, GROUP).term();
    let to = *cluster.ids().iter().rev().find(|n| **n != leader).unwrap();

    let started = Instant::now();
    cluster
        .group(leader, GROUP)
        .transfer_leadership(to)
        .await
        .unwrap();
    let new_leader = cluster.wait_leader(GROUP, SECOND).await;
    let took = started.elapsed();

    assert_eq!(new_leader, Some(to), "the chosen voter did not lead");
    assert!(took < HANDOVER_BOUND, "the hand-over took {took:?}");
    assert_eq!(
        cluster.group(to, GROUP).term(),
        term + 1,
        "more than one election"
    );
    let (index, _) = cluster
        .group(to, GROUP)
        .propose(append(1), SECOND)
        .await
        .unwrap();
    cluster.wait_applied(GROUP, index, 5 * SECOND).await;
    assert_prefix_consistent(&cluster.logs(GROUP));
}

#[test]
fn leadership_moves_to_the_chosen_voter_of_three_in_a_vote_round() {
    runtime().block_on(transfers_within_a_vote_round(&[1, 2, 3], busy()));
}

/// Five voters: the candidate needs a follower's vote that heard the leader moments ago;
/// without the transfer mark on its vote requests async-raft refuses it.
#[test]
fn leadership_moves_to_the_chosen_voter_of_five_in_a_vote_round() {
    runtime().block_on(transfers_within_a_vote_round(&[1, 2, 3, 4, 5], busy()));
}

/// A quiet group's followers arm no election timer; the hand-over needs none.
#[test]
fn a_quiet_group_hands_leadership_over_in_a_vote_round() {
    runtime().block_on(transfers_within_a_vote_round(
        &[1, 2, 3],
        RaftTuning::default(),
    ));
}

/// Writes racing a hand-over are either committed or refused (`LeadershipMoving`, naming the
/// successor): every log agrees, and every accepted write is in the new leader's log.
#[test]
fn writes_during_a_hand_over_commit_or_are_refused_naming_the_successor() {
    runtime().block_on(async {
        let cluster = formed(&[1, 2, 3], busy()).await;
        let leader = cluster.wait_leader(GROUP, SECOND).await.unwrap();
        let to = *cluster.ids().iter().find(|n| **n != leader).unwrap();
        let group = cluster.group(leader, GROUP);

        let first_accepted = tokio::sync::Notify::new();
        let writer = {
            let group = group.clone();
            let first_accepted = &first_accepted;
            async move {
                let mut accepted = Vec::new();
                let mut refused = 0;
                for _ in 0..200 {
                    match group.propose(append(1), SECOND).await {
                        Ok((index, _)) => {
                            accepted.push(index);
                            first_accepted.notify_one();
                        }
                        Err(ProposeError::LeadershipMoving { to: named }) => {
                            assert_eq!(named, to);
                            refused += 1;
                            tokio::task::yield_now().await;
                        }
                        Err(ProposeError::NotLeader { .. }) => break,
                        Err(other) => panic!("unexpected refusal: {other}"),
                    }
                }
                (accepted, refused)
            }
        };
        let handover = async {
            first_accepted.notified().await;
            group.transfer_leadership(to).await
        };
        let ((accepted, refused), handed) = tokio::join!(writer, handover);
        handed.unwrap();
        assert!(
            !accepted.is_empty(),
            "no write went through before the hand-over"
        );
        assert!(refused > 0, "no write met the hand-over");

        assert_eq!(cluster.wait_leader(GROUP, SECOND).await, Some(to));
        let last = *accepted.last().unwrap();
        cluster.wait_applied(GROUP, last, 5 * SECOND).await;
        let logs = cluster.logs(GROUP);
        assert_prefix_consistent(&logs);
        let successor: std::collections::BTreeMap<u64, u64> = logs[&to].iter().copied().collect();
        for index in accepted {
            assert!(
                successor.contains_key(&index),
                "accepted entry {index} lost"
            );
        }
    });
}

/// A successor that cannot be reached: the hand-over gives up after the minimum election
/// timeout, and the leader leads on and takes writes again.
#[test]
fn a_hand_over_to_an_unreachable_voter_gives_up_and_the_leader_writes_on() {
    runtime().block_on(async {
        let cluster = formed(&[1, 2, 3], busy()).await;
        let leader = cluster.wait_leader(GROUP, SECOND).await.unwrap();
        let to = *cluster.ids().iter().find(|n| **n != leader).unwrap();
        cluster.net.cut(leader, to);
        // Something the cut-off voter cannot hold.
        cluster
            .group(leader, GROUP)
            .propose(append(1), SECOND)
            .await
            .unwrap();

        let outcome = cluster.group(leader, GROUP).transfer_leadership(to).await;
        assert!(
            matches!(outcome, Err(AdminError::Timeout { .. })),
            "{outcome:?}"
        );
        assert_eq!(cluster.roles(GROUP)[&leader], GroupRole::Leader);
        cluster
            .group(leader, GROUP)
            .propose(append(1), SECOND)
            .await
            .expect("the leader takes writes again");
    });
}

#[test]
fn a_hand_over_to_itself_or_a_non_member_is_refused() {
    runtime().block_on(async {
        let cluster = formed(&[1, 2, 3], busy()).await;
        let leader = cluster.wait_leader(GROUP, SECOND).await.unwrap();
        let group = cluster.group(leader, GROUP);
        for to in [leader, NodeId(9)] {
            let outcome = group.transfer_leadership(to).await;
            assert!(
                matches!(outcome, Err(AdminError::InvalidTarget(_))),
                "{outcome:?}"
            );
        }
        group.propose(append(1), SECOND).await.unwrap();
    });
}
