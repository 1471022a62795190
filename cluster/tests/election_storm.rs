//! Hundreds of groups lose their leader at once (its node dies) on nodes whose every vote costs
//! time (a write and an fsync): unpaced, every candidate's requests wait behind the others'
//! past the vote timeout, each candidate stands again in a newer term before it can win, and
//! the stale requests it leaves still cost the voters: no group elects, for as long as that
//! lasts. Seen on real processes with 2,850 replicas per node on a loaded machine: no group
//! and not even the metadata group had a leader for minutes. The containment
//! (`Containment::pace_elections`) lets a node's candidacies send their votes a few at a time.

mod common;

use common::{nodes, runtime, TestCluster};
use gregor_cluster::{Containment, Start};
use gregor_storage::{GroupId, NodeId};
use std::time::Duration;

const GROUPS: u64 = 200;
const SECOND: Duration = Duration::from_secs(1);
/// A vote's cost at the voter: with 200 candidacies standing about once a second on each of
/// two nodes, several times more work arrives than a voter can do.
const VOTE_COST: Duration = Duration::from_millis(15);

/// How many of the groups the survivors lead within `within` of their leader's death.
async fn groups_led_after_their_leader_dies(containment: Containment, within: Duration) -> usize {
    let mut cluster = TestCluster::with(&[1, 2, 3], common::tuning(), containment).await;
    let members = nodes(&[1, 2, 3]);
    let groups: Vec<GroupId> = (0..GROUPS).map(|n| GroupId(1_000 + n)).collect();
    for group in &groups {
        for id in [2, 3] {
            let seeded = Start::Seeded {
                founder: NodeId(1),
                members: members.clone(),
            };
            cluster
                .node(NodeId(id))
                .start_group(*group, seeded)
                .await
                .unwrap();
        }
        let found = Start::Found {
            members: members.clone(),
        };
        cluster
            .node(NodeId(1))
            .start_group(*group, found)
            .await
            .unwrap();
    }
    for group in &groups {
        assert_eq!(
            cluster.wait_leader(*group, 60 * SECOND).await,
            Some(NodeId(1)),
            "{group}"
        );
    }
    cluster.net.set_vote_cost(VOTE_COST);
    cluster.kill(NodeId(1)).await;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let led = groups
            .iter()
            .filter(|g| {
                [2, 3]
                    .into_iter()
                    .any(|id| cluster.group(NodeId(id), **g).is_ready())
            })
            .count();
        if led == groups.len() || tokio::time::Instant::now() >= deadline {
            return led;
        }
        tokio::time::sleep(SECOND / 10).await;
    }
}

#[test]
fn every_group_elects_a_leader_when_hundreds_elect_at_once() {
    runtime().block_on(async {
        // 32-42 s in three runs: two candidates of a group race each other's terms.
        let led = groups_led_after_their_leader_dies(Containment::default(), 120 * SECOND).await;
        assert_eq!(led, GROUPS as usize);
    });
}

#[test]
fn without_pacing_hundreds_of_elections_at_once_leave_groups_leaderless() {
    runtime().block_on(async {
        let raw = Containment {
            pace_elections: false,
            ..Containment::default()
        };
        // 23-29 in three runs, no more after the first seconds.
        let led = groups_led_after_their_leader_dies(raw, 60 * SECOND).await;
        assert!(led < GROUPS as usize / 2, "{led} of {GROUPS} led");
    });
}
