//! A whole-cluster restart: every node stops and starts again. async-raft makes a restarted
//! multi-member group wait 30 s before its first election; the restart rescue brings a leader
//! back within a few election timeouts.

mod common;

use common::{append, nodes, runtime, TestCluster};
use gregor_cluster::{Containment, Start};
use gregor_storage::GroupId;
use std::time::Duration;
use tokio::time::Instant;

const GROUPS: [GroupId; 3] = [GroupId(20), GroupId(21), GroupId(22)];
const SECOND: Duration = Duration::from_secs(1);

/// Forms the groups, commits to each, restarts every node, and returns how long it took until
/// every group had a ready leader again (or `None` within 40 s), checking nothing committed
/// was lost.
async fn restart_scenario(containment: Containment) -> Option<Duration> {
    let mut cluster = TestCluster::with(&[1, 2, 3], common::tuning(), containment).await;
    let mut committed = Vec::new();
    for group in GROUPS {
        cluster.form_group(group, &[1, 2, 3]).await;
        let (index, _) = cluster
            .propose(group, append(1), 10 * SECOND)
            .await
            .unwrap();
        cluster.wait_applied(group, index, 10 * SECOND).await;
        committed.push(index);
    }
    for id in cluster.ids() {
        cluster.kill(id).await;
    }
    for id in cluster.ids() {
        cluster.start_node(id).await;
    }
    let restarted = Instant::now();
    for id in cluster.ids() {
        for group in GROUPS {
            cluster
                .node(id)
                .start_group(group, Start::Restart)
                .await
                .unwrap();
        }
    }
    for group in GROUPS {
        cluster.wait_leader(group, 40 * SECOND).await?;
    }
    let took = restarted.elapsed();
    for (group, index) in GROUPS.into_iter().zip(committed) {
        let leader = cluster.wait_leader(group, SECOND).await.unwrap();
        assert_eq!(cluster.group(leader, group).voters(), nodes(&[1, 2, 3]));
        cluster.wait_applied(group, index, 10 * SECOND).await;
        let (next, _) = cluster
            .propose(group, append(1), 10 * SECOND)
            .await
            .unwrap();
        assert!(next > index);
    }
    Some(took)
}

#[test]
fn a_restarted_cluster_elects_leaders_within_a_few_election_timeouts() {
    runtime().block_on(async {
        let took = restart_scenario(Containment::default()).await.unwrap();
        eprintln!("leaders back {took:?} after a whole-cluster restart (with the rescue)");
        assert!(took < 5 * SECOND, "leaders back after {took:?}");
        let raw = Containment {
            restart_rescue: false,
            ..Containment::default()
        };
        let took = restart_scenario(raw).await.unwrap();
        eprintln!("leaders back {took:?} after a whole-cluster restart (async-raft alone)");
        assert!(took > 30 * SECOND, "async-raft waited only {took:?}");
    });
}
