//! Membership changes one node at a time while clients write: a node joins as a learner, is
//! promoted, and a member is removed; every acknowledged write survives with its offset, and
//! proposals are fenced only while the leader that added a member has not stepped down.

mod common;

use common::{append, nodes, runtime, TestCluster};
use gregor_cluster::{ApplyOutcome, GroupRole, ProposeError, Start, StepOutcome};
use gregor_storage::{GroupId, NodeId};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GROUP: GroupId = GroupId(40);
const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_learner_is_promoted_and_a_member_removed_while_writes_go_on() {
    runtime().block_on(async {
        let cluster = Arc::new(TestCluster::new(&[1, 2, 3, 4]).await);
        cluster.form_group(GROUP, &[1, 2, 3]).await;
        cluster
            .node(NodeId(4))
            .start_group(GROUP, Start::Join)
            .await
            .unwrap();

        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        cluster
            .group(leader, GROUP)
            .add_learner(NodeId(4))
            .await
            .unwrap();
        assert_eq!(cluster.group(NodeId(4), GROUP).role(), GroupRole::Learner);

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (cluster, stop, acked) = (cluster.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut fenced = 0;
                while !stop.load(Ordering::SeqCst) {
                    let Some(leader) = cluster.wait_leader(GROUP, SECOND).await else {
                        continue;
                    };
                    let group = cluster.group(leader, GROUP);
                    match group.propose(append(1), 2 * SECOND).await {
                        Ok((_, ApplyOutcome::Appended { base_offset, .. })) => {
                            acked.lock().unwrap().push(base_offset);
                        }
                        Ok(other) => panic!("unexpected outcome {other:?}"),
                        Err(ProposeError::MembershipChanging) => fenced += 1,
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                fenced
            })
        };

        cluster
            .converge(GROUP, &nodes(&[1, 2, 3, 4]), 60 * SECOND)
            .await;
        cluster
            .converge(GROUP, &nodes(&[2, 3, 4]), 60 * SECOND)
            .await;
        tokio::time::sleep(SECOND).await;
        stop.store(true, Ordering::SeqCst);
        let fenced = writer.await.unwrap();

        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        assert_ne!(leader, NodeId(1));
        assert_eq!(cluster.group(leader, GROUP).voters(), nodes(&[2, 3, 4]));
        let (last, _) = cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
        cluster
            .wait_applied_on(&[NodeId(2), NodeId(3), NodeId(4)], GROUP, last, 10 * SECOND)
            .await;

        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() > 10, "only {} writes went through", acked.len());
        let distinct: BTreeSet<u64> = acked.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            acked.len(),
            "an offset was acknowledged twice"
        );
        let next = cluster
            .node(NodeId(4))
            .store()
            .partition_state(GROUP)
            .unwrap()
            .next_offset
            .0;
        assert!(acked.iter().all(|offset| *offset < next));
        let mut logs = cluster.logs(GROUP);
        logs.remove(&NodeId(1));
        common::assert_prefix_consistent(&logs);
        let _ = fenced;
    });
}

#[test]
fn a_step_toward_an_empty_target_is_refused_and_a_follower_cannot_step() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2]).await;
        cluster.form_group(GROUP, &[1, 2]).await;
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        let follower = if leader == NodeId(1) {
            NodeId(2)
        } else {
            NodeId(1)
        };
        assert!(cluster
            .group(leader, GROUP)
            .change_membership_step(&BTreeSet::new())
            .await
            .is_err());
        assert!(matches!(
            cluster
                .group(follower, GROUP)
                .change_membership_step(&nodes(&[1]))
                .await,
            Err(gregor_cluster::AdminError::NotLeader { .. })
        ));
        assert_eq!(
            cluster
                .group(leader, GROUP)
                .change_membership_step(&nodes(&[1, 2]))
                .await
                .unwrap(),
            StepOutcome::Done
        );
    });
}

/// async-raft counts a new configuration's quorum without its leader, so a configuration of
/// the leader alone never commits and the group would accept nothing again. A two-voter group
/// whose leader keeps its seat while the other voter is replaced (a drain of an RF 2 partition,
/// or of the metadata group while it has two voters) must add the newcomer first.
#[test]
fn replacing_the_other_voter_of_a_two_voter_group_keeps_it_writable() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2, 3]).await;
        cluster.form_group(GROUP, &[1, 2]).await;
        cluster
            .node(NodeId(3))
            .start_group(GROUP, Start::Join)
            .await
            .unwrap();
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        let other = if leader == NodeId(1) { 2 } else { 1 };
        let target = nodes(&[leader.0, 3]);
        cluster.converge(GROUP, &target, 60 * SECOND).await;
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        assert_eq!(cluster.group(leader, GROUP).voters(), target);
        let (last, _) = cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .expect("the group commits after the change");
        let voters: Vec<NodeId> = target.iter().copied().collect();
        cluster
            .wait_applied_on(&voters, GROUP, last, 10 * SECOND)
            .await;
        assert!(!cluster
            .group(NodeId(other), GROUP)
            .voters()
            .contains(&NodeId(other)));
    });
}

/// Shrinking a group to one voter is refused: async-raft could neither commit that
/// configuration from the leader alone nor elect the lone voter if another led. The group keeps
/// its voters and stays writable.
#[test]
fn shrinking_a_two_voter_group_to_one_is_refused_and_it_stays_writable() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2]).await;
        cluster.form_group(GROUP, &[1, 2]).await;
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        for target in [nodes(&[leader.0]), nodes(&[3 - leader.0])] {
            assert!(matches!(
                cluster
                    .group(leader, GROUP)
                    .change_membership_step(&target)
                    .await,
                Err(gregor_cluster::AdminError::InvalidTarget(_))
            ));
        }
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        assert_eq!(cluster.group(leader, GROUP).voters(), nodes(&[1, 2]));
        cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .expect("the group still commits");
    });
}

/// A target of one voter is refused before any step: a three-voter group keeps its three.
#[test]
fn a_one_voter_target_takes_no_voter_away_first() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2, 3]).await;
        cluster.form_group(GROUP, &[1, 2, 3]).await;
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        assert!(matches!(
            cluster
                .group(leader, GROUP)
                .change_membership_step(&nodes(&[leader.0]))
                .await,
            Err(gregor_cluster::AdminError::InvalidTarget(_))
        ));
        assert_eq!(cluster.group(leader, GROUP).voters(), nodes(&[1, 2, 3]));
    });
}

/// A group of one voter growing to three takes both newcomers in one change: a group of two
/// voters could lose neither (the metadata group's window right after a cluster forms). What
/// it committed alone before survives, and it commits with the three afterwards.
#[test]
fn a_lone_voter_grows_to_three_in_one_change_never_through_two() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2, 3]).await;
        cluster.form_group(GROUP, &[1]).await;
        let (before, _) = cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
        for id in [2, 3] {
            let node = cluster.node(NodeId(id));
            node.start_group(GROUP, Start::Join).await.unwrap();
        }
        let target = nodes(&[1, 2, 3]);
        let mut outcomes = Vec::new();
        loop {
            let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
            match cluster
                .group(leader, GROUP)
                .change_membership_step(&target)
                .await
            {
                Ok(StepOutcome::Done) => break,
                Ok(StepOutcome::CatchingUp(_)) => {}
                Ok(step) => outcomes.push(step),
                Err(_) => {}
            }
            assert!(outcomes.len() <= 1, "more than one change: {outcomes:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            outcomes,
            vec![StepOutcome::Grown(2)],
            "both newcomers came in together"
        );
        let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
        assert_eq!(cluster.group(leader, GROUP).voters(), target);
        let (last, _) = cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .expect("the group commits with three voters");
        assert!(last > before);
        cluster.wait_applied(GROUP, last, 10 * SECOND).await;
        common::assert_prefix_consistent(&cluster.logs(GROUP));
    });
}
