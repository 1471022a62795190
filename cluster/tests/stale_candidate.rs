//! Two voters left after the leader dies: one with the longer log, one behind it whose
//! election timeout is the shorter. async-raft resets a node's election timer whenever it
//! adopts a higher term, vote granted or not, so if the node that could win adopted the stale
//! candidate's term at each refusal (as Raft says) it would never stand, and the stale one,
//! standing every timeout, never wins: no leader, for ever (3-node simulation seeds 7, 11, 14).
//! The containment (`Containment::outpace_stale_candidates`) moves the refusing node past the
//! candidate's terms instead.

mod common;

use common::{append, runtime, TestCluster};
use gregor_cluster::{Containment, RaftTuning, Start};
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
