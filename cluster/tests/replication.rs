//! Raft groups of three nodes over the in-process network with real storage: they elect,
//! replicate and apply, survive the loss of a leader with nothing committed lost, and keep
//! their logs consistent.

mod common;

use common::{append, assert_prefix_consistent, nodes, runtime, TestCluster};
use gregor_cluster::ApplyOutcome;
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn three_groups_of_three_elect_replicate_and_survive_a_killed_leader() {
    runtime().block_on(async {
        let mut cluster = TestCluster::new(&[1, 2, 3]).await;
        let groups = [GroupId(10), GroupId(11), GroupId(12)];
        for (i, group) in groups.iter().enumerate() {
            let members: Vec<u64> = (0..3).map(|k| 1 + ((i as u64 + k) % 3)).collect();
            cluster.form_group(*group, &members).await;
            let leader = cluster.wait_leader(*group, SECOND).await.unwrap();
            assert_eq!(cluster.group(leader, *group).voters(), nodes(&members));
        }
        let mut committed = Vec::new();
        for group in groups {
            for n in 0..20 {
                let (index, outcome) = cluster
                    .propose(group, append(2), 10 * SECOND)
                    .await
                    .unwrap();
                assert_eq!(
                    outcome,
                    ApplyOutcome::Appended {
                        base_offset: 2 * n,
                        record_count: 2
                    }
                );
                committed.push((group, index));
            }
        }
        let victim = cluster.wait_leader(groups[0], SECOND).await.unwrap();
        cluster.kill(victim).await;
        let next = cluster.wait_leader(groups[0], 10 * SECOND).await.unwrap();
        assert_ne!(next, victim);
        for group in groups {
            let (index, outcome) = cluster
                .propose(group, append(1), 10 * SECOND)
                .await
                .unwrap();
            assert_eq!(
                outcome,
                ApplyOutcome::Appended {
                    base_offset: 40,
                    record_count: 1
                },
                "every committed record kept its offset"
            );
            cluster.wait_applied(group, index, 10 * SECOND).await;
            assert_prefix_consistent(&cluster.logs(group));
        }
        cluster.start_node(victim).await;
        for group in groups {
            cluster
                .node(victim)
                .start_group(group, gregor_cluster::Start::Restart)
                .await
                .unwrap();
            let (index, _) = cluster
                .propose(group, append(1), 10 * SECOND)
                .await
                .unwrap();
            cluster.wait_applied(group, index, 10 * SECOND).await;
            let logs = cluster.logs(group);
            assert_prefix_consistent(&logs);
            assert!(logs[&victim].iter().any(|(i, _)| *i == index));
        }
    });
}

/// acks=1: the leader says when its own log holds a proposal durably, before (and without) a
/// majority: with both followers cut off, the notice comes and the commit never does.
#[test]
fn the_leader_tells_when_its_own_log_holds_a_proposal_before_it_commits() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2, 3]).await;
        let group = GroupId(13);
        cluster.form_group(group, &[1, 2, 3]).await;
        let leader = cluster.wait_leader(group, 10 * SECOND).await.unwrap();
        let followers: Vec<NodeId> = cluster.ids().into_iter().filter(|n| *n != leader).collect();
        cluster.net.isolate(leader, &followers);
        let (durable, notice) = tokio::sync::oneshot::channel();
        let outcome = cluster
            .group(leader, group)
            .propose_notifying(append(1), durable, SECOND)
            .await;
        assert!(matches!(
            outcome,
            Err(gregor_cluster::ProposeError::Timeout { .. })
        ));
        let index = notice.await.expect("the leader's own log holds it");
        let logs = cluster.logs(group);
        let entry = *logs[&leader].last().unwrap();
        assert_eq!(entry.0, index);
        assert!(
            followers.iter().all(|f| !logs[f].contains(&entry)),
            "no follower holds the entry"
        );

        // Only appends carry the notice: any other command drops it unanswered.
        let (durable, notice) = tokio::sync::oneshot::channel();
        let other = gregor_cluster::Command::AdvanceLogStart { offset: 0 };
        let _ = cluster
            .group(leader, group)
            .propose_notifying(other, durable, SECOND)
            .await;
        assert!(notice.await.is_err());
    });
}
