//! A follower loses power in the middle of a snapshot stream and comes back (five-node
//! simulation seed 2863). async-raft 0.6.1 fails twice here: its leader resends the chunk that
//! failed at the same offset for ever, never from the start; and the restarted follower, with
//! no stream in progress, takes that chunk as a whole new snapshot, finds it truncated, and its
//! replica stops on the fatal storage error. With both containments the follower refuses the
//! chunk, the leader streams the snapshot again from offset 0, and the follower catches up.

mod common;

use common::{runtime, TestCluster};
use gregor_cluster::{Containment, GroupRole, RaftTuning, Start};
use gregor_storage::GroupId;
use std::time::Duration;
use tokio::time::Instant;

const GROUP: GroupId = GroupId(31);
const SECOND: Duration = Duration::from_secs(1);
/// Small enough that the leader's snapshot goes as many chunks.
const CHUNK_BYTES: u64 = 16;

/// What became of the follower restarted in the middle of a snapshot stream.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    CaughtUp,
    /// Its replica stopped (a fatal storage error).
    Stopped,
    /// Still behind when the test gave up.
    Behind,
}

async fn restarted_mid_stream(containment: Containment) -> Outcome {
    let tuning = RaftTuning {
        snapshot_chunk_bytes: CHUNK_BYTES,
        ..common::tuning()
    };
    let mut cluster = TestCluster::with(&[1, 2, 3], tuning, containment).await;
    cluster.form_group(GROUP, &[1, 2, 3]).await;
    let (leader, behind) = cluster.leave_a_follower_needing_a_snapshot(GROUP).await;

    cluster.net.cut_off_mid_snapshot(behind);
    cluster.net.heal();
    let cut = wait_for(20 * SECOND, || cluster.net.cut_mid_snapshot_done()).await;
    assert!(cut, "the leader streamed a snapshot of several chunks");
    cluster.kill(behind).await;
    cluster.start_node(behind).await;
    cluster
        .node(behind)
        .start_group(GROUP, Start::Restart)
        .await
        .unwrap();
    cluster.net.heal();

    let target = cluster
        .node(leader)
        .store()
        .partition_state(GROUP)
        .unwrap()
        .next_offset;
    let follower = cluster.group(behind, GROUP);
    let store = cluster.node(behind).store();
    let caught_up = wait_for(20 * SECOND, || {
        follower.role() == GroupRole::Stopped
            || store
                .partition_state(GROUP)
                .is_ok_and(|s| s.next_offset == target)
    })
    .await;
    if follower.role() == GroupRole::Stopped {
        return Outcome::Stopped;
    }
    if !caught_up {
        return Outcome::Behind;
    }
    common::assert_prefix_consistent(&cluster.logs(GROUP));
    Outcome::CaughtUp
}

/// Polls `done` until it holds or `within` has passed; whether it held.
async fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[test]
fn a_follower_restarted_mid_snapshot_refuses_the_rest_and_gets_the_snapshot_from_the_start() {
    runtime().block_on(async {
        assert_eq!(
            restarted_mid_stream(Containment::default()).await,
            Outcome::CaughtUp
        );
    });
}

#[test]
fn without_the_chunk_order_the_restarted_follower_installs_a_truncated_snapshot_and_stops() {
    runtime().block_on(async {
        let raw = Containment {
            snapshot_chunk_order: false,
            ..Containment::default()
        };
        assert_eq!(restarted_mid_stream(raw).await, Outcome::Stopped);
    });
}

#[test]
fn without_the_stream_restart_the_leader_resends_the_refused_chunk_for_ever() {
    runtime().block_on(async {
        let raw = Containment {
            snapshot_stream_restart: false,
            ..Containment::default()
        };
        assert_eq!(restarted_mid_stream(raw).await, Outcome::Behind);
    });
}
