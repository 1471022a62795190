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
    let (leader, behind) = cluster.leave_a_follower_needing_a_snapshot(GROUP).await;
    let leader_store = cluster.node(leader).store();
    let floor = leader_store.log_floor(GROUP).unwrap();
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

/// A follower whose log floor is an entry of an older term meets a leader whose own floor is
/// past it. Returns whether the leader sent it a previous entry (index, term) that the
/// leader's log never held: the follower's floor index paired with another term, which
/// async-raft takes from the snapshot pointer when it reads the removed entry.
async fn floor_of_an_older_term(containment: Containment) -> bool {
    let cluster = TestCluster::with(&[1, 2, 3], common::tuning(), containment).await;
    cluster.form_group(GROUP, &[1, 2, 3]).await;
    let first = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    let behind = cluster.ids().into_iter().find(|n| *n != first).unwrap();
    let (trimmed, _) = write_then_trim(&cluster, 40).await;
    cluster.wait_applied(GROUP, trimmed, 10 * SECOND).await;
    let theirs = cluster.node(behind).store().log_floor(GROUP).unwrap();
    assert!(theirs.index > 0, "retention removed the follower's head");

    // The follower misses entries of the first leader's term too, so that the next leader's
    // last entry (where its stream starts) is one the follower does not hold.
    cluster.net.isolate(behind, &cluster.ids());
    for _ in 0..3 {
        cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
    }
    cluster.group(first, GROUP).step_down().await.unwrap();
    write_then_trim(&cluster, 80).await;
    let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    let ours = cluster.node(leader).store().log_floor(GROUP).unwrap();
    let their_last = cluster.logs(GROUP)[&behind].last().copied().unwrap();
    assert!(
        ours.index > their_last.0 && ours.term != theirs.term,
        "the leader's floor {ours:?} lies past the follower's log (floor {theirs:?}, last {their_last:?}), in a newer term"
    );
    let (last, _) = cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();

    cluster.net.clear_appends();
    cluster.net.heal();
    cluster.wait_applied(GROUP, last, 20 * SECOND).await;
    common::assert_prefix_consistent(&cluster.logs(GROUP));
    cluster
        .net
        .appends()
        .iter()
        .any(|s| s.to == behind && s.prev.0 == theirs.index && s.prev.1 != theirs.term)
}

/// Ten appends, then retention up to `offset`: returns the retention entry's index.
async fn write_then_trim(
    cluster: &TestCluster,
    offset: u64,
) -> (u64, gregor_cluster::ApplyOutcome) {
    for _ in 0..10 {
        cluster
            .propose(GROUP, append(4), 10 * SECOND)
            .await
            .unwrap();
    }
    let trimmed = cluster
        .propose(GROUP, Command::AdvanceLogStart { offset }, 10 * SECOND)
        .await
        .unwrap();
    let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    cluster
        .wait_applied_on(&[leader], GROUP, trimmed.0, 10 * SECOND)
        .await;
    trimmed
}

#[test]
fn a_follower_whose_floor_is_of_an_older_term_gets_a_snapshot_not_a_pair_the_leader_never_held() {
    runtime().block_on(async {
        assert!(
            !floor_of_an_older_term(Containment::default()).await,
            "the leader sent the follower's floor index with another term"
        );
        let raw = Containment {
            conflict_below_floor: false,
            ..Containment::default()
        };
        assert!(
            floor_of_an_older_term(raw).await,
            "async-raft paired the index with the snapshot pointer's term"
        );
    });
}
