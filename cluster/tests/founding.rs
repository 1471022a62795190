//! A group founded with every member at once: the founder stands at once and leads with no
//! membership change (so no step-down after one), and a founding member that holds no
//! configuration entry yet votes for founding members only.

mod common;

use common::{append, nodes, runtime, TestCluster};
use gregor_cluster::rpc::VoteRequest;
use gregor_cluster::{PeerHandler, Start};
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;

const GROUP: GroupId = GroupId(41);
const SECOND: Duration = Duration::from_secs(1);

fn seeded() -> Start {
    Start::Seeded {
        founder: NodeId(1),
        members: nodes(&[1, 2, 3]),
    }
}

#[test]
fn a_group_founded_with_every_member_is_led_by_its_founder_with_no_step_down() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2, 3]).await;
        for id in [2, 3] {
            let node = cluster.node(NodeId(id));
            node.start_group(GROUP, seeded()).await.unwrap();
        }
        cluster
            .node(NodeId(1))
            .start_group(
                GROUP,
                Start::Found {
                    members: nodes(&[1, 2, 3]),
                },
            )
            .await
            .unwrap();
        // Well within async-raft's 30 s before a follower with a configuration first stands:
        // only the founder's own candidacy can have elected anyone.
        assert_eq!(
            cluster.wait_leader(GROUP, 5 * SECOND).await,
            Some(NodeId(1))
        );
        let (index, _) = cluster.propose(GROUP, append(1), 5 * SECOND).await.unwrap();
        cluster.wait_applied(GROUP, index, 5 * SECOND).await;
        for id in [1, 2, 3] {
            assert_eq!(cluster.group(NodeId(id), GROUP).voters(), nodes(&[1, 2, 3]));
            assert_eq!(cluster.node(NodeId(id)).dispatcher().step_downs(), 0);
        }
    });
}

#[test]
fn a_seeded_replica_votes_for_founding_members_only() {
    runtime().block_on(async {
        let cluster = TestCluster::new(&[1, 2, 3, 4]).await;
        cluster
            .node(NodeId(3))
            .start_group(GROUP, seeded())
            .await
            .unwrap();
        let dispatcher = cluster.node(NodeId(3)).dispatcher().clone();
        let stranger = dispatcher
            .vote(NodeId(4), GROUP, VoteRequest::new(1, 4, 0, 0))
            .await
            .unwrap();
        assert!(!stranger.vote_granted, "node 4 is no founding member");
        let member = dispatcher
            .vote(NodeId(2), GROUP, VoteRequest::new(1, 2, 0, 0))
            .await
            .unwrap();
        assert!(member.vote_granted);
    });
}
