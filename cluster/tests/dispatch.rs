//! The inbound dispatcher's containments, one scenario each, run twice: with the containment
//! (the node behaves as Raft requires) and without it (async-raft 0.6.1's own behaviour, which
//! the test shows going wrong). One real node with real storage; the test plays the leaders
//! and candidates by handing crafted RPCs to the node's dispatcher.

mod common;

use async_raft::raft::{Entry, EntryConfigChange, EntryPayload, MembershipConfig};
use bytes::Bytes;
use common::{runtime, TestCluster};
use gregor_cluster::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use gregor_cluster::{Command, Containment, GroupRole, PeerHandler, RpcError, Start};
use gregor_storage::{GroupId, NodeId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const GROUP: GroupId = GroupId(77);
const ME: NodeId = NodeId(1);

fn config(index: u64, term: u64, members: &[u64]) -> Entry<Command> {
    Entry {
        index,
        term,
        payload: EntryPayload::ConfigChange(EntryConfigChange {
            membership: MembershipConfig {
                members: members.iter().copied().collect::<HashSet<_>>(),
                members_after_consensus: None,
            },
        }),
    }
}

fn blanks(first: u64, last: u64, term: u64) -> Vec<Entry<Command>> {
    (first..=last)
        .map(|index| Entry {
            index,
            term,
            payload: EntryPayload::Blank,
        })
        .collect()
}

fn append(
    term: u64,
    leader: u64,
    prev: (u64, u64),
    entries: Vec<Entry<Command>>,
    commit: u64,
) -> AppendEntriesRequest<Command> {
    AppendEntriesRequest {
        term,
        leader_id: leader,
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit: commit,
    }
}

/// Containment with `off` switched off.
fn without(off: impl FnOnce(&mut Containment)) -> Containment {
    let mut containment = Containment::default();
    off(&mut containment);
    containment
}

/// A one-node test cluster whose node 1 joins `GROUP` as a pristine replica.
async fn follower(containment: Containment) -> TestCluster {
    let cluster = TestCluster::with(&[1], common::tuning(), containment).await;
    cluster
        .node(ME)
        .start_group(GROUP, Start::Join)
        .await
        .unwrap();
    cluster
}

async fn send(
    cluster: &TestCluster,
    rpc: AppendEntriesRequest<Command>,
) -> Result<AppendEntriesResponse, RpcError> {
    let from = NodeId(rpc.leader_id);
    cluster
        .node(ME)
        .dispatcher()
        .append_entries(from, GROUP, rpc)
        .await
}

/// Leader 2, term 1, makes node 1 hold entries 1..=`last` (a configuration {1, 2, 3}, then
/// blanks), committing `commit` of them.
async fn give_log(cluster: &TestCluster, last: u64, commit: u64) {
    let mut entries = vec![config(1, 1, &[1, 2, 3])];
    entries.extend(blanks(2, last, 1));
    let response = send(cluster, append(1, 2, (0, 0), entries, commit))
        .await
        .unwrap();
    assert!(response.success);
}

fn stored(cluster: &TestCluster) -> Vec<u64> {
    cluster.logs(GROUP)[&ME].iter().map(|(i, _)| *i).collect()
}

fn applied(cluster: &TestCluster) -> u64 {
    cluster.group(ME, GROUP).applied().borrow().last_applied
}

#[test]
fn entries_that_do_not_follow_the_previous_entry_are_refused() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        give_log(&cluster, 3, 0).await;
        let misplaced = append(1, 2, (3, 1), blanks(6, 7, 1), 0);
        assert!(matches!(
            send(&cluster, misplaced).await,
            Err(RpcError::Protocol(_))
        ));
        assert_eq!(stored(&cluster), vec![1, 2, 3]);

        let raw = follower(without(|c| c.append_shape = false)).await;
        give_log(&raw, 3, 0).await;
        send(&raw, append(1, 2, (3, 1), blanks(6, 7, 1), 0))
            .await
            .unwrap();
        assert_eq!(stored(&raw), vec![1, 2, 3, 6, 7], "async-raft left a gap");
    });
}

#[test]
fn a_heartbeat_whose_previous_entry_we_lack_is_answered_no_with_a_hint() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        give_log(&cluster, 3, 0).await;
        let response = send(&cluster, append(2, 3, (5, 2), vec![], 5))
            .await
            .unwrap();
        assert!(!response.success);
        let hint = response.conflict_opt.expect("a hint");
        assert_eq!((hint.index, hint.term), (3, 1));
        assert_eq!(response.term, 2, "the term was still taken from the leader");
        assert_eq!(cluster.group(ME, GROUP).leader(), Some(NodeId(3)));

        let raw = follower(without(|c| c.prev_check = false)).await;
        give_log(&raw, 3, 0).await;
        let response = send(&raw, append(2, 3, (5, 2), vec![], 5)).await.unwrap();
        assert!(
            response.success,
            "async-raft claims a match it never checked"
        );
    });
}

/// Nodes 2 and 3 as the test plays them when node 1 campaigns and leads: they grant every
/// vote and take every AppendEntries.
struct Agreeable;

#[async_trait::async_trait]
impl PeerHandler for Agreeable {
    async fn append_entries(
        &self,
        _from: NodeId,
        _group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        Ok(AppendEntriesResponse {
            term: rpc.term,
            success: true,
            conflict_opt: None,
        })
    }
    async fn vote(
        &self,
        _from: NodeId,
        _group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        Ok(VoteResponse {
            term: rpc.term,
            vote_granted: true,
        })
    }
    async fn install_snapshot(
        &self,
        _from: NodeId,
        _group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        Ok(InstallSnapshotResponse { term: rpc.term })
    }
    async fn node_message(&self, _from: NodeId, message: Bytes) -> Result<Bytes, RpcError> {
        Ok(message)
    }
    async fn quiescence(
        &self,
        _from: NodeId,
        _request: gregor_cluster::rpc::QuiescenceRequest,
    ) -> Result<gregor_cluster::rpc::QuiescenceResponse, RpcError> {
        Ok(gregor_cluster::rpc::QuiescenceResponse::default())
    }
    async fn campaign(&self, _from: NodeId, _group: GroupId, _term: u64) -> Result<bool, RpcError> {
        Ok(false)
    }
}

/// Node 1 holds 1..=5 from leader 2 and acknowledged them; then a delayed copy of an earlier
/// message (entries 2 and 3) arrives, and later node 1 is elected. Returns its log once it
/// leads: (index, term).
async fn stale_append_scenario(containment: Containment) -> Vec<(u64, u64)> {
    let cluster = follower(containment).await;
    give_log(&cluster, 5, 0).await;
    let stale = append(1, 2, (1, 1), blanks(2, 3, 1), 0);
    assert!(send(&cluster, stale).await.unwrap().success);
    for peer in [2, 3] {
        cluster.net.attach(NodeId(peer), Arc::new(Agreeable));
    }
    let group = cluster.group(ME, GROUP);
    assert!(group.wait_until_ready(Duration::from_secs(10)).await);
    cluster.logs(GROUP)[&ME].clone()
}

#[test]
fn a_stale_append_never_makes_us_forget_entries_we_acknowledged() {
    runtime().block_on(async {
        let log = stale_append_scenario(Containment::default()).await;
        let indexes: Vec<u64> = log.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            indexes,
            vec![1, 2, 3, 4, 5, 6],
            "the new leader's entry follows 5"
        );
        assert_eq!(log[4], (5, 1));

        let log = stale_append_scenario(without(|c| c.strip_matching = false)).await;
        assert_eq!(
            log.last(),
            Some(&(4, 2)),
            "async-raft truncated its view to 3 and wrote its own entry over the acknowledged 4; \
             5 is gone: {log:?}"
        );
    });
}

/// After a restart, a leader whose log does not match ours sends a heartbeat claiming 5 is
/// committed. Our entries 2 and 3 (term 1) were never committed: they must not be applied.
#[test]
fn after_a_restart_a_mismatching_heartbeat_applies_nothing() {
    async fn scenario(containment: Containment) -> u64 {
        let mut cluster = follower(containment).await;
        give_log(&cluster, 3, 1).await;
        cluster.wait_applied(GROUP, 1, Duration::from_secs(5)).await;
        cluster.kill(ME).await;
        cluster.start_node(ME).await;
        cluster
            .node(ME)
            .start_group(GROUP, Start::Restart)
            .await
            .unwrap();
        let response = send(&cluster, append(2, 3, (5, 2), vec![], 5))
            .await
            .unwrap();
        assert_eq!(response.success, !containment.prev_check);
        // Let any apply that was started finish.
        tokio::time::sleep(Duration::from_millis(100)).await;
        applied(&cluster)
    }
    runtime().block_on(async {
        assert_eq!(scenario(Containment::default()).await, 1);
        let raw = without(|c| {
            c.prev_check = false;
            c.follower_commit_clamp = false;
        });
        assert_eq!(
            scenario(raw).await,
            3,
            "async-raft applied entries it never checked against the leader"
        );
    });
}

/// A leader whose message verified only up to 2 says 5 is committed: we apply up to 2.
#[test]
fn leader_commit_is_clamped_to_what_the_message_verified() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        give_log(&cluster, 5, 0).await;
        let response = send(&cluster, append(1, 2, (2, 1), vec![], 5))
            .await
            .unwrap();
        assert!(response.success);
        cluster.wait_applied(GROUP, 2, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(applied(&cluster), 2);
        let response = send(&cluster, append(1, 2, (5, 1), vec![], 5))
            .await
            .unwrap();
        assert!(response.success);
        cluster.wait_applied(GROUP, 5, Duration::from_secs(5)).await;
    });
}

async fn vote(cluster: &TestCluster, term: u64, candidate: u64, last: (u64, u64)) -> (bool, u64) {
    let response = cluster
        .node(ME)
        .dispatcher()
        .vote(
            NodeId(candidate),
            GROUP,
            VoteRequest::new(term, candidate, last.0, last.1),
        )
        .await
        .unwrap();
    (response.vote_granted, response.term)
}

#[test]
fn a_candidate_outside_the_configuration_gets_no_vote() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        give_log(&cluster, 3, 0).await;
        assert_eq!(vote(&cluster, 5, 9, (10, 4)).await, (false, 1));

        let raw = follower(without(|c| c.vote_rules = false)).await;
        give_log(&raw, 3, 0).await;
        // async-raft refuses votes for an election timeout after hearing its leader.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let term = raw.group(ME, GROUP).term() + 5;
        assert!(
            vote(&raw, term, 9, (10, 4)).await.0,
            "async-raft voted for a stranger"
        );
    });
}

#[test]
fn a_pristine_replica_never_votes_and_so_never_campaigns_alone() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        assert!(!vote(&cluster, 1, 2, (0, 0)).await.0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(cluster.group(ME, GROUP).role(), GroupRole::Learner);

        let raw = follower(without(|c| c.vote_rules = false)).await;
        assert!(vote(&raw, 1, 2, (0, 0)).await.0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let replica = raw.group(ME, GROUP);
        assert_eq!(
            replica.role(),
            GroupRole::Candidate,
            "async-raft's pristine replica voted, turned follower of a configuration of itself \
             alone, and now campaigns on its own"
        );
        assert!(
            replica.term() > 2,
            "its term keeps rising, so the leader that later brings it in is deposed"
        );
    });
}

#[test]
fn a_candidate_with_a_newer_last_term_but_a_shorter_log_gets_the_vote() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        give_log(&cluster, 5, 0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Meanwhile node 1 may have campaigned: ask in a later term than any it reached.
        let term = cluster.group(ME, GROUP).term() + 5;
        assert_eq!(vote(&cluster, term, 3, (4, 2)).await, (true, term));

        let raw = follower(without(|c| c.vote_rules = false)).await;
        give_log(&raw, 5, 0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let term = raw.group(ME, GROUP).term() + 5;
        assert!(
            !vote(&raw, term, 3, (4, 2)).await.0,
            "async-raft compares indexes even when the candidate's last term is newer"
        );
    });
}

#[test]
fn a_candidate_behind_us_is_refused_but_its_newer_term_is_taken() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        give_log(&cluster, 5, 0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let term = cluster.group(ME, GROUP).term() + 5;
        assert_eq!(vote(&cluster, term, 3, (4, 1)).await, (false, term));
        assert_eq!(cluster.group(ME, GROUP).role(), GroupRole::Follower);
    });
}

/// A whole snapshot in one chunk, from leader 2 of term 1, for entry 10 of term 1.
fn snapshot_chunk(data: &[u8]) -> InstallSnapshotRequest {
    InstallSnapshotRequest {
        term: 1,
        leader_id: 2,
        last_included_index: 10,
        last_included_term: 1,
        offset: 0,
        data: data.to_vec(),
        done: true,
    }
}

/// Waits up to `within` for node 1's replica to stop; whether it did.
async fn stops_within(cluster: &TestCluster, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let replica = cluster.group(ME, GROUP);
    while tokio::time::Instant::now() < deadline {
        if replica.role() == GroupRole::Stopped {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replica.role() == GroupRole::Stopped
}

#[test]
fn a_snapshot_that_does_not_decode_is_refused_not_installed() {
    runtime().block_on(async {
        let cluster = follower(Containment::default()).await;
        give_log(&cluster, 3, 0).await;
        let refused = cluster
            .node(ME)
            .dispatcher()
            .install_snapshot(NodeId(2), GROUP, snapshot_chunk(b"not a snapshot"))
            .await;
        assert!(matches!(refused, Err(RpcError::Protocol(_))), "{refused:?}");
        assert!(!stops_within(&cluster, Duration::from_secs(2)).await);
        assert_eq!(stored(&cluster), vec![1, 2, 3]);

        let raw = follower(without(|c| c.snapshot_chunk_order = false)).await;
        give_log(&raw, 3, 0).await;
        let _ = raw
            .node(ME)
            .dispatcher()
            .install_snapshot(NodeId(2), GROUP, snapshot_chunk(b"not a snapshot"))
            .await;
        assert!(
            stops_within(&raw, Duration::from_secs(2)).await,
            "async-raft installs whatever bytes came, and a failure to is fatal"
        );
    });
}
