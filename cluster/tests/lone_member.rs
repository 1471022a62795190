//! A group whose only voter is its leader, asked to step down (leader balancing, or the
//! simulation's leadership churn). async-raft's candidate counts votes only as replies come
//! in, and a lone member asks no one: once it stepped down it would stand for election in term
//! after term and never lead again (the simulation's "leaderless after step-down" scenario).

mod common;

use common::{append, runtime, TestCluster};
use gregor_cluster::{AdminError, Containment, Start};
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;

const GROUP: GroupId = GroupId(70);
const SECOND: Duration = Duration::from_secs(1);

/// Whether the lone member leads (and takes a write) again within a few seconds of being
/// asked to step down.
async fn leads_after_step_down(containment: Containment) -> (bool, Result<(), AdminError>) {
    let cluster = TestCluster::with(&[1], common::tuning(), containment).await;
    cluster
        .node(NodeId(1))
        .start_group(
            GROUP,
            Start::Found {
                members: [NodeId(1)].into(),
            },
        )
        .await
        .unwrap();
    cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();
    let asked = cluster.group(NodeId(1), GROUP).step_down().await;
    let wrote = cluster.propose(GROUP, append(1), 5 * SECOND).await;
    (wrote.is_ok(), asked)
}

#[test]
fn a_lone_leader_is_not_stepped_down_and_keeps_leading() {
    runtime().block_on(async {
        let (leads, asked) = leads_after_step_down(Containment::default()).await;
        assert!(matches!(asked, Err(AdminError::OnlyVoter)), "{asked:?}");
        assert!(leads, "the lone member stopped leading");
    });
}

#[test]
fn without_the_containment_a_lone_member_never_leads_again() {
    runtime().block_on(async {
        let raw = Containment {
            keep_lone_leader: false,
            ..Containment::default()
        };
        let (leads, asked) = leads_after_step_down(raw).await;
        assert!(asked.is_ok(), "{asked:?}");
        assert!(!leads, "async-raft elected a lone candidate");
    });
}
