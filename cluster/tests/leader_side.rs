//! The leader side's containments (the group's network), each shown on three nodes with and
//! without it: the commit clamp against async-raft's phantom majority, the byte bound of an
//! AppendEntries, a timeout of its own for slow followers, and no immediate errors.

mod common;

use common::{append, batch, runtime, TestCluster};
use gregor_cluster::{Command, Containment, ProposeError};
use gregor_storage::{GroupId, NodeId};
use std::sync::atomic::Ordering;
use std::time::Duration;

const GROUP: GroupId = GroupId(5);
const SECOND: Duration = Duration::from_secs(1);

fn without(off: impl FnOnce(&mut Containment)) -> Containment {
    let mut containment = Containment::default();
    off(&mut containment);
    containment
}

async fn formed(containment: Containment) -> (TestCluster, NodeId, Vec<NodeId>) {
    let cluster = TestCluster::with(&[1, 2, 3], common::tuning(), containment).await;
    cluster.form_group(GROUP, &[1, 2, 3]).await;
    let (index, _) = cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();
    cluster.wait_applied(GROUP, index, 10 * SECOND).await;
    let leader = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
    let followers = cluster.ids().into_iter().filter(|n| *n != leader).collect();
    (cluster, leader, followers)
}

/// Follower A misses a few committed entries; then the leader writes entry X alone, is cut off,
/// and wins again in a later term with A's vote while follower B stays cut off. async-raft's
/// new leader assumes every follower matches its last entry in the new term, so A's first
/// conflict reply makes X "committed" (a majority of the leader and B's phantom); A then
/// catches up to X and is told X is committed before any follower holds the new term's first
/// entry, which alone could commit X. Returns the largest `leader_commit` sent in the new term
/// before a follower acknowledged that entry, and X's index.
async fn phantom_scenario(containment: Containment) -> (u64, u64) {
    let (cluster, leader, followers) = formed(containment).await;
    let (a, b) = (followers[0], followers[1]);
    cluster.net.cut(leader, a);
    for _ in 0..3 {
        cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
    }
    cluster.net.isolate(leader, &followers);
    cluster.net.cut(a, b);
    let lonely = cluster
        .group(leader, GROUP)
        .propose(append(1), Duration::from_millis(300))
        .await;
    assert!(matches!(lonely, Err(ProposeError::Timeout { .. })));
    let x = cluster.logs(GROUP)[&leader].last().unwrap().0;
    let old_term = cluster.group(leader, GROUP).term();
    tokio::time::sleep(3 * SECOND).await;
    cluster.net.clear_appends();
    cluster.net.heal();
    cluster.net.isolate(b, &[leader, a]);
    // Only the leader can win: its log is more up to date than A's, and B is cut off.
    let deadline = tokio::time::Instant::now() + 30 * SECOND;
    let group = cluster.group(leader, GROUP);
    while !(group.is_ready() && group.term() > old_term) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader did not win again: {:?}",
            cluster.roles(GROUP)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(SECOND).await;
    let term = group.term();
    let sent: Vec<_> = cluster
        .net
        .appends()
        .into_iter()
        .filter(|s| s.from == leader && s.term == term)
        .collect();
    let first_ack = sent
        .iter()
        .position(|s| s.entries.is_some_and(|(_, last)| last > x) && s.success == Some(true))
        .unwrap_or(sent.len() - 1);
    let claimed = sent[..=first_ack]
        .iter()
        .map(|s| s.leader_commit)
        .max()
        .unwrap();
    (claimed, x)
}

#[test]
fn a_new_leader_claims_nothing_committed_before_a_majority_holds_its_own_entry() {
    runtime().block_on(async {
        let (claimed, x) = phantom_scenario(Containment::default()).await;
        assert!(claimed < x, "leader_commit {claimed} reached X = {x}");
        // The tail resend happens to close this window (it sends A everything up to the new
        // term's entry in one message): switched off too, so the stream's own catch-up shows.
        let raw = without(|c| {
            c.leader_commit_clamp = false;
            c.resend_tail = false;
        });
        let (claimed, x) = phantom_scenario(raw).await;
        assert!(
            claimed >= x,
            "async-raft's phantom commit of X = {x} should have reached a follower (sent {claimed})"
        );
    });
}

fn big(bytes: usize) -> Command {
    Command::append(vec![batch(1, bytes)])
}

/// A follower that missed 8 entries of 300 KB catches up; returns the largest AppendEntries
/// it was sent.
async fn catch_up_scenario(containment: Containment) -> usize {
    let (cluster, leader, followers) = formed(containment).await;
    let lagging = followers[1];
    cluster.net.cut(leader, lagging);
    let mut last = 0;
    for _ in 0..8 {
        last = cluster
            .propose(GROUP, big(300_000), 10 * SECOND)
            .await
            .unwrap()
            .0;
    }
    cluster.net.clear_appends();
    cluster.net.heal();
    cluster.wait_applied(GROUP, last, 20 * SECOND).await;
    cluster
        .net
        .appends()
        .iter()
        .filter(|s| s.to == lagging)
        .map(|s| s.encoded_bytes)
        .max()
        .unwrap()
}

#[test]
fn appends_to_a_lagging_follower_stay_within_the_byte_bound() {
    runtime().block_on(async {
        let bound = common::tuning().max_append_bytes;
        let largest = catch_up_scenario(Containment::default()).await;
        assert!(largest <= bound + 4096, "sent {largest} bytes");
        let largest = catch_up_scenario(without(|c| c.append_byte_bound = false)).await;
        assert!(
            largest > 2 * bound,
            "async-raft sent only {largest} bytes at once"
        );
    });
}

/// The only reachable follower answers after 400 ms, longer than async-raft's heartbeat
/// interval (250 ms), which is also its timeout for an AppendEntries. Returns whether a
/// proposal commits.
async fn slow_follower_scenario(containment: Containment) -> bool {
    let (mut cluster, leader, followers) = formed(containment).await;
    cluster.kill(followers[0]).await;
    let slow = followers[1];
    cluster
        .net
        .slow_down(leader, slow, Duration::from_millis(200));
    cluster
        .net
        .slow_down(slow, leader, Duration::from_millis(200));
    cluster
        .group(leader, GROUP)
        .propose(append(1), 10 * SECOND)
        .await
        .is_ok()
}

#[test]
fn a_follower_slower_than_a_heartbeat_interval_still_acknowledges() {
    runtime().block_on(async {
        assert!(slow_follower_scenario(Containment::default()).await);
        assert!(
            !slow_follower_scenario(without(|c| c.append_own_timeout = false)).await,
            "async-raft cuts every call off before the answer comes"
        );
    });
}

/// The link to one follower fails at once. Returns how many calls failed in one second.
async fn failing_link_scenario(containment: Containment) -> u64 {
    let (cluster, leader, followers) = formed(containment).await;
    cluster.net.fail_at_once(leader, followers[1]);
    let before = cluster.net.immediate_failures.load(Ordering::SeqCst);
    for _ in 0..3 {
        cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
    }
    tokio::time::sleep(SECOND).await;
    cluster.net.immediate_failures.load(Ordering::SeqCst) - before
}

#[test]
fn a_link_that_fails_at_once_does_not_make_the_leader_spin() {
    runtime().block_on(async {
        let calls = failing_link_scenario(Containment::default()).await;
        assert!(calls < 100, "{calls} calls in a second");
        let calls = failing_link_scenario(without(|c| c.failure_delay = false)).await;
        assert!(
            calls >= common::net::IMMEDIATE_FAILURE_LIMIT,
            "async-raft retried only {calls} times: it should spin"
        );
    });
}

/// The only follower a commit depends on misses the entry (the link is down while it is
/// sent); async-raft's stream then forgets it and would send it again only with a newer
/// entry. Returns whether the proposal commits anyway.
async fn dropped_tail_scenario(containment: Containment) -> bool {
    let (mut cluster, leader, followers) = formed(containment).await;
    cluster.kill(followers[0]).await;
    let only = followers[1];
    cluster.net.cut(leader, only);
    let group = cluster.group(leader, GROUP);
    let proposal = tokio::spawn(async move { group.propose(append(1), 5 * SECOND).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.net.heal();
    proposal.await.unwrap().is_ok()
}

#[test]
fn an_entry_a_follower_missed_is_sent_again_without_waiting_for_a_newer_one() {
    runtime().block_on(async {
        assert!(dropped_tail_scenario(Containment::default()).await);
        assert!(
            !dropped_tail_scenario(without(|c| c.resend_tail = false)).await,
            "async-raft's stream dropped the entry and never sent it again"
        );
    });
}
