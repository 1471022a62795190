//! A replica that fell behind a leader whose retention removed the entries it needs receives
//! a snapshot over the dispatcher, then the entries that remain, and ends with the leader's
//! state.

mod common;

use common::{append, runtime, TestCluster};
use gregor_cluster::{Command, Containment};
use gregor_storage::GroupId;
use std::time::Duration;

const GROUP: GroupId = GroupId(30);
const SECOND: Duration = Duration::from_secs(1);

/// Returns whether the leader sent the follower entries it had already removed from its log
/// (out of async-raft's in-memory buffer for the unreachable follower).
async fn scenario(containment: Containment) -> bool {
    let cluster = TestCluster::with(&[1, 2, 3], common::tuning(), containment).await;
    cluster.form_group(GROUP, &[1, 2, 3]).await;
    let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    let behind = cluster.ids().into_iter().find(|n| *n != leader).unwrap();
    cluster.net.isolate(behind, &cluster.ids());
    for _ in 0..20 {
        cluster
            .propose(GROUP, append(2), 10 * SECOND)
            .await
            .unwrap();
    }
    let (trimmed, _) = cluster
        .propose(GROUP, Command::AdvanceLogStart { offset: 30 }, 10 * SECOND)
        .await
        .unwrap();
    let others: Vec<_> = cluster.ids().into_iter().filter(|n| *n != behind).collect();
    cluster
        .wait_applied_on(&others, GROUP, trimmed, 10 * SECOND)
        .await;
    let leader_store = cluster.node(leader).store();
    let floor = leader_store.log_floor(GROUP).unwrap();
    assert!(
        floor.index > 0,
        "retention removed the head of the leader's log"
    );
    for _ in 0..5 {
        cluster
            .propose(GROUP, append(2), 10 * SECOND)
            .await
            .unwrap();
    }
    let (last, _) = cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();

    cluster.net.clear_appends();
    cluster.net.heal();
    cluster.wait_applied(GROUP, last, 20 * SECOND).await;
    let resent_removed = cluster
        .net
        .appends()
        .iter()
        .filter(|s| s.to == behind)
        .any(|s| s.entries.is_some_and(|(first, _)| first <= floor.index));
    let caught_up = cluster.node(behind).store();
    let theirs = caught_up.partition_state(GROUP).unwrap();
    let ours = leader_store.partition_state(GROUP).unwrap();
    assert_eq!(theirs.log_start_offset, ours.log_start_offset);
    assert_eq!(theirs.next_offset, ours.next_offset);
    assert!(
        caught_up.log_floor(GROUP).unwrap().index >= floor.index,
        "the follower's log starts where the snapshot ended"
    );
    let logs = cluster.logs(GROUP);
    assert_eq!(logs[&behind].last(), logs[&leader].last());
    common::assert_prefix_consistent(&logs);
    resent_removed
}

#[test]
fn a_follower_behind_the_leaders_log_start_catches_up_by_snapshot() {
    runtime().block_on(async {
        assert!(
            !scenario(Containment::default()).await,
            "entries the leader removed came from memory, not from its log"
        );
        let raw = Containment {
            bounded_buffers: false,
            ..Containment::default()
        };
        assert!(
            scenario(raw).await,
            "async-raft kept every entry for the unreachable follower in memory"
        );
    });
}
