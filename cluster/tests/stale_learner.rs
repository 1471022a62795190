//! A voter removed while cut off comes back behind the group and still a voter by its own log,
//! with the shorter election timeout; the leader then brings it in as a learner (the metadata
//! leader does so for every registered node that is not a voter). The learner stands in term
//! after term and refuses the leader's entries, its term being higher; async-raft's leader
//! steps down into that term, and by the time the group has elected again the learner is past
//! the new leader's term too: it never catches up, and the group loses its leader every few
//! seconds (five-node simulation seed 521, the metadata group). The containment
//! (`Containment::outpace_stale_learners`) makes the leader step down further ahead.

mod common;

use common::{append, nodes, runtime, TestCluster};
use gregor_cluster::{Containment, RaftTuning, Start};
use gregor_storage::GroupId;
use std::time::Duration;
use tokio::time::Instant;

const GROUP: GroupId = GroupId(81);
const SECOND: Duration = Duration::from_secs(1);

fn timeouts(min_ms: u64, quiesce_after_heartbeats: u32) -> RaftTuning {
    RaftTuning {
        election_timeout_min_ms: min_ms,
        election_timeout_max_ms: min_ms + 1,
        quiesce_after_heartbeats,
        ..common::tuning()
    }
}

/// Whether the removed voter, brought back in as a learner, catches up with the group's log
/// within 20 s. `quiesce` as `RaftTuning::quiesce_after_heartbeats`.
async fn stale_learner_catches_up(containment: Containment, quiesce: u32) -> bool {
    let mut cluster = TestCluster::with(&[1, 2, 3, 4], timeouts(1_000, quiesce), containment).await;
    // Distinct timeouts: with equal ones the voters, losing their leader together, would split
    // every vote (async-raft draws in `min..min + 1`).
    for id in cluster.ids() {
        cluster.kill(id).await;
        cluster
            .start_node_tuned(id, timeouts(900 + 100 * id.0, quiesce), containment)
            .await;
    }
    cluster.form_group(GROUP, &[1, 2, 3, 4]).await;
    cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();
    let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    let stale = *cluster.ids().iter().find(|n| **n != leader).unwrap();
    let voters: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|n| *n != stale)
        .map(|n| n.0)
        .collect();

    cluster.net.isolate(stale, &cluster.ids());
    cluster.converge(GROUP, &nodes(&voters), 20 * SECOND).await;
    let (last, _) = cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();
    // It comes back with the shorter timeout, still cut off: it stands in term after term.
    cluster.kill(stale).await;
    cluster
        .start_node_tuned(stale, timeouts(300, quiesce), containment)
        .await;
    cluster
        .node(stale)
        .start_group(GROUP, Start::Restart)
        .await
        .unwrap();
    let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    let leader_term = cluster.group(leader, GROUP).term();
    let deadline = Instant::now() + 10 * SECOND;
    while cluster.group(stale, GROUP).term() <= leader_term + 2 {
        assert!(Instant::now() < deadline, "the stale voter never stood");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.net.heal();

    let deadline = Instant::now() + 20 * SECOND;
    let mut applied = cluster.group(stale, GROUP).applied();
    while applied.borrow_and_update().last_applied < last {
        if Instant::now() >= deadline {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(leader) = cluster.wait_leader(GROUP, left).await {
            // As the metadata leader does for every node that is not a voter.
            let _ = cluster.group(leader, GROUP).add_learner(stale).await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), applied.changed()).await;
    }
    true
}

#[test]
fn a_stale_voter_brought_back_as_a_learner_catches_up() {
    runtime().block_on(async {
        let quiesce = common::tuning().quiesce_after_heartbeats;
        assert!(stale_learner_catches_up(Containment::default(), quiesce).await);
        assert!(stale_learner_catches_up(Containment::default(), 0).await);
    });
}

#[test]
fn without_the_containment_the_stale_learner_deposes_every_leader() {
    runtime().block_on(async {
        let raw = Containment {
            outpace_stale_learners: false,
            ..Containment::default()
        };
        // Beating all along, as a busy group does: a quiet leader sends the learner nothing to
        // refuse, which hides the defect in this scenario without curing it.
        assert!(!stale_learner_catches_up(raw, 0).await);
    });
}
