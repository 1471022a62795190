//! The TCP peer transport on loopback: RPCs of many groups both ways over one connection,
//! heartbeats sharing frames, reconnection after a restart, timeouts, size limits, the
//! handshake's cluster check, and the per-group order of inbound requests.

use bytes::Bytes;
use gregor_cluster::peer::{PeerConfig, PeerTransport};
use gregor_cluster::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use gregor_cluster::{Command, PeerHandler, RpcError, Transport};
use gregor_storage::{GroupId, NodeId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Answers with what it was asked (the term, plus the group in `conflict_opt`'s place: the
/// caller checks the answer belongs to its request) and records arrivals per group.
#[derive(Default)]
struct Echo {
    arrivals: Mutex<BTreeMap<GroupId, Vec<u64>>>,
    /// Requests of this group wait for `release` (shows groups are served concurrently).
    blocked_group: Option<GroupId>,
    release: Notify,
    /// Node messages are answered with this many bytes when set.
    reply_bytes: Option<usize>,
}

#[async_trait::async_trait]
impl PeerHandler for Echo {
    async fn append_entries(
        &self,
        _from: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        // Work of uneven length before taking the request in: a later request overtakes an
        // earlier one here unless the transport hands one group's requests over in order.
        for _ in 0..(rpc.term * 7 % 5) {
            tokio::task::yield_now().await;
        }
        self.arrivals
            .lock()
            .unwrap()
            .entry(group)
            .or_default()
            .push(rpc.term);
        if self.blocked_group == Some(group) {
            self.release.notified().await;
        }
        Ok(AppendEntriesResponse {
            term: rpc.term,
            success: rpc.leader_commit == group.0,
            conflict_opt: None,
        })
    }
    async fn vote(
        &self,
        _from: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        Ok(VoteResponse {
            term: rpc.term,
            vote_granted: rpc.last_log_index == group.0,
        })
    }
    async fn install_snapshot(
        &self,
        _from: NodeId,
        _group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        Ok(InstallSnapshotResponse {
            term: rpc.data.len() as u64,
        })
    }
    async fn node_message(&self, from: NodeId, message: Bytes) -> Result<Bytes, RpcError> {
        if let Some(bytes) = self.reply_bytes {
            return Ok(Bytes::from(vec![1u8; bytes]));
        }
        let mut reply = format!("{from}:").into_bytes();
        reply.extend_from_slice(&message);
        Ok(Bytes::from(reply))
    }
    async fn quiescence(
        &self,
        _from: NodeId,
        request: gregor_cluster::rpc::QuiescenceRequest,
    ) -> Result<gregor_cluster::rpc::QuiescenceResponse, RpcError> {
        Ok(gregor_cluster::rpc::QuiescenceResponse {
            quieted: request.quiet.iter().map(|n| n.group).collect(),
        })
    }
    async fn campaign(&self, _from: NodeId, _group: GroupId, _term: u64) -> Result<bool, RpcError> {
        Ok(false)
    }
}

const CLUSTER: &str = "peer-test";

fn config(node: u64) -> PeerConfig {
    PeerConfig {
        request_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..PeerConfig::new(NodeId(node), CLUSTER)
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(config: PeerConfig, handler: Arc<Echo>) -> Arc<PeerTransport> {
    PeerTransport::bind(config, loopback(), handler)
        .await
        .unwrap()
}

/// Tells every transport where every other one listens.
fn introduce(transports: &[&Arc<PeerTransport>]) {
    for a in transports {
        for b in transports {
            if a.node() != b.node() {
                a.address_book().set(b.node(), b.local_addr());
            }
        }
    }
}

fn heartbeat(term: u64, group: GroupId) -> AppendEntriesRequest<Command> {
    AppendEntriesRequest {
        term,
        leader_id: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new(),
        leader_commit: group.0,
    }
}

fn vote(term: u64, group: GroupId) -> VoteRequest {
    VoteRequest::new(term, 2, group.0, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_rpcs_of_many_groups_both_ways_over_one_connection() {
    let t1 = start(config(1), Arc::new(Echo::default())).await;
    let t2 = start(config(2), Arc::new(Echo::default())).await;
    introduce(&[&t1, &t2]);
    let mut calls = tokio::task::JoinSet::new();
    for g in 0..500u64 {
        let (t1, t2) = (t1.clone(), t2.clone());
        calls.spawn(async move {
            let group = GroupId(g);
            let answer = t1
                .append_entries(NodeId(2), group, heartbeat(g + 7, group))
                .await
                .unwrap();
            assert_eq!((answer.term, answer.success), (g + 7, true));
            let answer = t2.vote(NodeId(1), group, vote(g + 9, group)).await.unwrap();
            assert_eq!((answer.term, answer.vote_granted), (g + 9, true));
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    let chunk = InstallSnapshotRequest {
        term: 1,
        leader_id: 1,
        last_included_index: 5,
        last_included_term: 1,
        offset: 0,
        data: vec![3u8; 100_000],
        done: true,
    };
    let answer = t1
        .install_snapshot(NodeId(2), GroupId(1), chunk)
        .await
        .unwrap();
    assert_eq!(answer.term, 100_000);
    let reply = t2.node_message(NodeId(1), Bytes::from("hi")).await.unwrap();
    assert_eq!(reply, Bytes::from("2:hi"));
    assert_eq!(t1.stats().connections, 1);
    assert_eq!(t2.stats().connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_all_reach_each_other() {
    let nodes = [
        start(config(1), Arc::new(Echo::default())).await,
        start(config(2), Arc::new(Echo::default())).await,
        start(config(3), Arc::new(Echo::default())).await,
    ];
    introduce(&[&nodes[0], &nodes[1], &nodes[2]]);
    for from in &nodes {
        for to in &nodes {
            if from.node() == to.node() {
                continue;
            }
            for g in 0..50u64 {
                let group = GroupId(g);
                let answer = from
                    .append_entries(to.node(), group, heartbeat(g, group))
                    .await
                    .unwrap();
                assert!(answer.success);
            }
        }
    }
    for node in &nodes {
        // One connection per pair: two pairs per node.
        assert_eq!(node.stats().connections, 2, "node {}", node.node());
    }
}

async fn pair_with_linger(linger: Duration) -> (Arc<PeerTransport>, Arc<PeerTransport>) {
    let with_linger = |node| PeerConfig {
        heartbeat_linger: linger,
        ..config(node)
    };
    let t1 = start(with_linger(1), Arc::new(Echo::default())).await;
    let t2 = start(with_linger(2), Arc::new(Echo::default())).await;
    introduce(&[&t1, &t2]);
    t1.node_message(NodeId(2), Bytes::new()).await.unwrap();
    (t1, t2)
}

/// Sends one heartbeat per group to node 2, the i-th after `i * spacing`; returns the frames
/// each side sent meanwhile.
async fn heartbeat_round(
    t1: &Arc<PeerTransport>,
    t2: &Arc<PeerTransport>,
    groups: u64,
    spacing: Duration,
) -> (u64, u64) {
    let (before_1, before_2) = (t1.stats(), t2.stats());
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for g in 0..groups {
        let t1 = t1.clone();
        calls.spawn(async move {
            tokio::time::sleep_until(start + spacing * g as u32).await;
            let group = GroupId(g);
            t1.append_entries(NodeId(2), group, heartbeat(1, group))
                .await
                .unwrap()
        });
    }
    while let Some(done) = calls.join_next().await {
        assert!(done.unwrap().success);
    }
    let (after_1, after_2) = (t1.stats(), t2.stats());
    assert_eq!(after_1.messages_out - before_1.messages_out, groups);
    assert_eq!(after_2.messages_in - before_2.messages_in, groups);
    (
        after_1.frames_out - before_1.frames_out,
        after_2.frames_out - before_2.frames_out,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_heartbeats_of_thousands_of_groups_travels_in_one_frame_each_way() {
    // Long enough for a loaded debug build to queue all 3,000 before the first deadline.
    let (t1, t2) = pair_with_linger(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let (frames, reply_frames) = heartbeat_round(&t1, &t2, 3000, Duration::ZERO).await;
        assert!(frames <= 2, "{frames} frames for one burst");
        assert!(
            reply_frames <= 2,
            "{reply_frames} reply frames for one burst"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_spread_over_an_interval_take_about_interval_over_linger_frames() {
    // 3,000 groups whose heartbeat timers are spread evenly over a 100 ms interval, as
    // async-raft's per-group timers are.
    let linger = Duration::from_millis(10);
    let (t1, t2) = pair_with_linger(linger).await;
    let (frames, reply_frames) = heartbeat_round(&t1, &t2, 3000, Duration::from_micros(33)).await;
    eprintln!("3000 heartbeats over 100 ms, linger {linger:?}: {frames} frames, {reply_frames} reply frames");
    // A frame leaves when its oldest heartbeat has waited `linger`: about 100/10 of them, more
    // if timers fire late on a loaded machine.
    assert!(frames <= 30, "{frames} frames");
    assert!(reply_frames <= 30, "{reply_frames} reply frames");
}

/// Retries until the call succeeds or `within` passes; each failure takes at least the failure
/// delay, so this does not spin.
async fn eventually_reaches(from: &PeerTransport, to: NodeId, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match from.node_message(to, Bytes::from("ping")).await {
            Ok(_) => return,
            Err(error) if Instant::now() < deadline => {
                assert!(matches!(
                    error,
                    RpcError::Unreachable { .. } | RpcError::Timeout { .. }
                ));
            }
            Err(error) => panic!("node {to} still unreachable: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_come_back_after_either_peer_restarts() {
    let t1 = start(config(1), Arc::new(Echo::default())).await;
    let t2 = start(config(2), Arc::new(Echo::default())).await;
    introduce(&[&t1, &t2]);
    eventually_reaches(&t1, NodeId(2), Duration::from_secs(5)).await;

    // The acceptor restarts on the same port: the dialer redials.
    let addr2 = t2.local_addr();
    t2.shutdown().await;
    drop(t2);
    assert!(t1.node_message(NodeId(2), Bytes::new()).await.is_err());
    let t2 = PeerTransport::bind(config(2), addr2, Arc::new(Echo::default()))
        .await
        .unwrap();
    t2.address_book().set(NodeId(1), t1.local_addr());
    eventually_reaches(&t1, NodeId(2), Duration::from_secs(5)).await;
    eventually_reaches(&t2, NodeId(1), Duration::from_secs(5)).await;

    // The dialer restarts: the acceptor takes its new connection in place of the dead one.
    let addr1 = t1.local_addr();
    t1.shutdown().await;
    drop(t1);
    let t1 = PeerTransport::bind(config(1), addr1, Arc::new(Echo::default()))
        .await
        .unwrap();
    t1.address_book().set(NodeId(2), t2.local_addr());
    eventually_reaches(&t2, NodeId(1), Duration::from_secs(5)).await;
    eventually_reaches(&t1, NodeId(2), Duration::from_secs(5)).await;
    assert!(t2.stats().connections >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_dead_peer_fails_after_its_timeout_not_before() {
    let nobody = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let timeout = config(1).request_timeout;
    for (node, dead) in [(1, 2), (3, 2)] {
        // Node 1 dials the dead node 2; node 3 waits for node 2 to dial it.
        let transport = start(config(node), Arc::new(Echo::default())).await;
        transport.address_book().set(NodeId(dead), nobody);
        let started = Instant::now();
        let error = transport
            .vote(NodeId(dead), GroupId(1), vote(1, GroupId(1)))
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Timeout { .. }), "{error}");
        assert!(
            started.elapsed() >= timeout,
            "failed after {:?}",
            started.elapsed()
        );
        assert_eq!(transport.stats().requests_timed_out, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_with_a_typed_error_and_the_link_keeps_working() {
    let small = |node| PeerConfig {
        max_frame_bytes: 64 * 1024,
        ..config(node)
    };
    let t1 = start(small(1), Arc::new(Echo::default())).await;
    let big_replies = Echo {
        reply_bytes: Some(100 * 1024),
        ..Echo::default()
    };
    let t2 = start(small(2), Arc::new(big_replies)).await;
    introduce(&[&t1, &t2]);
    let failure_delay = small(1).failure_delay;
    let started = Instant::now();
    let error = t1
        .node_message(NodeId(2), Bytes::from(vec![0u8; 100 * 1024]))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::TooLarge { .. }), "{error}");
    assert!(started.elapsed() >= failure_delay);
    // The handler's answer is too large: the responder sends the error instead.
    let error = t1
        .node_message(NodeId(2), Bytes::from("small"))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::TooLarge { .. }), "{error}");
    let answer = t2.node_message(NodeId(1), Bytes::from("ok")).await.unwrap();
    assert_eq!(answer, Bytes::from("2:ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_from_another_cluster_is_refused() {
    let t1 = start(
        PeerConfig {
            cluster_id: "other".into(),
            ..config(1)
        },
        Arc::new(Echo::default()),
    )
    .await;
    let t2 = start(config(2), Arc::new(Echo::default())).await;
    introduce(&[&t1, &t2]);
    let error = t1.node_message(NodeId(2), Bytes::new()).await.unwrap_err();
    assert!(matches!(error, RpcError::Timeout { .. }), "{error}");
    assert!(t2.stats().handshakes_refused >= 1);
    assert!(t1.stats().handshakes_refused >= 1);
    assert_eq!(t2.stats().connections, 0);
}

#[tokio::test]
async fn one_groups_requests_are_served_in_arrival_order_while_groups_run_concurrently() {
    let blocked = GroupId(99);
    let receiver = Arc::new(Echo {
        blocked_group: Some(blocked),
        ..Echo::default()
    });
    let t1 = start(config(1), Arc::new(Echo::default())).await;
    let t2 = start(config(2), receiver.clone()).await;
    introduce(&[&t1, &t2]);
    t1.node_message(NodeId(2), Bytes::new()).await.unwrap();

    let stuck = tokio::spawn({
        let t1 = t1.clone();
        async move {
            t1.append_entries(NodeId(2), blocked, heartbeat(1, blocked))
                .await
        }
    });
    let mut calls = tokio::task::JoinSet::new();
    for term in 0..200u64 {
        let t1 = t1.clone();
        let group = GroupId(term % 4);
        calls.spawn(async move {
            t1.append_entries(NodeId(2), group, heartbeat(term, group))
                .await
        });
    }
    // Every other group is served while group 99 waits.
    while let Some(done) = calls.join_next().await {
        assert!(done.unwrap().unwrap().success);
    }
    receiver.release.notify_one();
    assert!(stuck.await.unwrap().unwrap().success);
    let arrivals = receiver.arrivals.lock().unwrap().clone();
    for g in 0..4u64 {
        let terms = &arrivals[&GroupId(g)];
        assert_eq!(terms.len(), 50);
        assert!(
            terms.windows(2).all(|w| w[0] < w[1]),
            "group {g}: {terms:?}"
        );
    }
}
