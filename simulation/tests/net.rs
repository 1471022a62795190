//! The simulated network: determinism, partitions, loss and duplication rates, crashes, and
//! chitchat running over it.

use bytes::Bytes;
use gregor_cluster::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use gregor_cluster::{Command, PeerHandler, RpcError, Transport};
use gregor_simulation::net::{Delay, LinkFaults, NetEvent, NetOutcome, SimNetConfig, SimNetwork};
use gregor_storage::{GroupId, NodeId};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Answers every request at once and remembers who sent what, in arrival order.
#[derive(Default)]
struct Recorder {
    received: Mutex<Vec<(NodeId, Bytes)>>,
    fail: bool,
}

impl Recorder {
    fn received(&self) -> Vec<(NodeId, Bytes)> {
        self.received.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl PeerHandler for Recorder {
    async fn append_entries(
        &self,
        from: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        let tag = Bytes::from(format!("ae:{group}:{}", rpc.term));
        self.received.lock().unwrap().push((from, tag));
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
            vote_granted: false,
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
    async fn node_message(&self, from: NodeId, message: Bytes) -> Result<Bytes, RpcError> {
        self.received.lock().unwrap().push((from, message.clone()));
        if self.fail {
            return Err(RpcError::Remote("refused".into()));
        }
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

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn nodes(net: &SimNetwork, count: u64) -> Vec<Arc<Recorder>> {
    (1..=count)
        .map(|id| {
            let recorder = Arc::new(Recorder::default());
            net.register(NodeId(id), recorder.clone());
            recorder
        })
        .collect()
}

fn heartbeat(term: u64) -> AppendEntriesRequest<Command> {
    AppendEntriesRequest {
        term,
        leader_id: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new(),
        leader_commit: 0,
    }
}

/// Three nodes exchanging messages over lossy, duplicating, jittery links; returns the network
/// trace and each node's arrival order.
fn chatty_run(seed: u64) -> (Vec<NetEvent>, Vec<Vec<(NodeId, Bytes)>>) {
    paused_runtime().block_on(async move {
        let config = SimNetConfig {
            default_link: LinkFaults {
                loss: 0.1,
                duplicate: 0.1,
                delay: Delay {
                    base: Duration::from_millis(2),
                    jitter: Duration::from_millis(20),
                },
                ..LinkFaults::default()
            },
            ..SimNetConfig::default()
        };
        let net = SimNetwork::new(seed, config);
        let trace = Arc::new(Mutex::new(Vec::new()));
        let sink = trace.clone();
        net.set_event_hook(Box::new(move |event| sink.lock().unwrap().push(*event)));
        let recorders = nodes(&net, 3);
        let mut tasks = tokio::task::JoinSet::new();
        for from in 1..=3u64 {
            for to in (1..=3u64).filter(|to| *to != from) {
                let transport = net.transport(NodeId(from));
                for i in 0..30u64 {
                    let transport = transport.clone();
                    // Sends 1 ms apart, each in flight on its own, so jitter can reorder them.
                    tasks.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(i)).await;
                        let message = Bytes::from(format!("{from}->{to}#{i}"));
                        let _ = transport.node_message(NodeId(to), message).await;
                        let _ = transport
                            .append_entries(NodeId(to), GroupId(i % 4), heartbeat(i))
                            .await;
                    });
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        let trace = trace.lock().unwrap().clone();
        (trace, recorders.iter().map(|r| r.received()).collect())
    })
}

#[test]
fn the_same_seed_gives_the_same_delivery_order() {
    let (trace_a, arrivals_a) = chatty_run(7);
    let (trace_b, arrivals_b) = chatty_run(7);
    assert!(trace_a.len() > 500, "only {} events", trace_a.len());
    assert_eq!(trace_a, trace_b);
    assert_eq!(arrivals_a, arrivals_b);
    let outcomes = |outcome| trace_a.iter().filter(|e| e.outcome == outcome).count();
    assert!(outcomes(NetOutcome::Lost) > 0 && outcomes(NetOutcome::Duplicated) > 0);
    // Reordering: some node saw one sender's messages out of send order.
    let reordered = arrivals_a.iter().any(|arrivals| {
        let numbers: Vec<(NodeId, u64)> = arrivals
            .iter()
            .filter_map(|(from, message)| {
                let text = std::str::from_utf8(message).ok()?;
                Some((*from, text.split('#').nth(1)?.parse().ok()?))
            })
            .collect();
        numbers
            .windows(2)
            .any(|pair| pair[0].0 == pair[1].0 && pair[0].1 > pair[1].1)
    });
    assert!(reordered, "jitter above the send spacing should reorder");
    let (trace_c, _) = chatty_run(8);
    assert_ne!(trace_a, trace_c, "another seed should draw other fates");
}

#[test]
fn a_partition_blocks_exactly_the_cut_directions() {
    paused_runtime().block_on(async {
        let net = SimNetwork::new(1, SimNetConfig::default());
        let timeout = net.config().rpc_timeout;
        let recorders = nodes(&net, 3);
        let t1 = net.transport(NodeId(1));
        let t2 = net.transport(NodeId(2));
        let t3 = net.transport(NodeId(3));
        net.partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]]);
        assert!(t1.node_message(NodeId(2), Bytes::from("a")).await.is_ok());
        assert!(t2.node_message(NodeId(1), Bytes::from("b")).await.is_ok());
        for (transport, target) in [(&t1, 3), (&t3, 1), (&t2, 3), (&t3, 2)] {
            let started = Instant::now();
            let error = transport
                .node_message(NodeId(target), Bytes::from("x"))
                .await
                .unwrap_err();
            assert!(matches!(error, RpcError::Timeout { .. }));
            assert!(started.elapsed() >= timeout, "failed before its timeout");
        }
        assert!(recorders[2].received().is_empty());
        assert_eq!(recorders[0].received().len(), 1);

        net.heal();
        net.isolate_one_way(NodeId(1), NodeId(2));
        assert!(t1
            .node_message(NodeId(2), Bytes::from("lost"))
            .await
            .is_err());
        // 2 reaches 1, but the reply travels the cut direction.
        assert!(t2
            .node_message(NodeId(1), Bytes::from("half"))
            .await
            .is_err());
        assert!(t3.node_message(NodeId(2), Bytes::from("c")).await.is_ok());
        let at_2: Vec<Bytes> = recorders[1].received().into_iter().map(|r| r.1).collect();
        assert_eq!(at_2, vec![Bytes::from("a"), Bytes::from("c")]);
        assert_eq!(
            recorders[0].received().last().unwrap().1,
            Bytes::from("half")
        );

        net.heal();
        net.isolate(NodeId(3));
        assert!(t3.node_message(NodeId(1), Bytes::from("y")).await.is_err());
        assert!(t1.node_message(NodeId(2), Bytes::from("d")).await.is_ok());
    });
}

#[test]
fn loss_and_duplication_happen_at_about_their_rates() {
    paused_runtime().block_on(async {
        let net = SimNetwork::new(3, SimNetConfig::default());
        let recorders = nodes(&net, 2);
        net.set_link(
            NodeId(1),
            NodeId(2),
            LinkFaults {
                loss: 0.2,
                duplicate: 0.1,
                ..LinkFaults::default()
            },
        );
        let requests = 4000u64;
        let transport = net.transport(NodeId(1));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..requests {
            let transport = transport.clone();
            tasks.spawn(async move {
                transport
                    .node_message(NodeId(2), Bytes::from(i.to_string()))
                    .await
                    .is_ok()
            });
        }
        let mut answered = 0u64;
        while let Some(ok) = tasks.join_next().await {
            answered += u64::from(ok.unwrap());
        }
        let rate = |count: u64| count as f64 / requests as f64;
        let stats = net.stats().rpc;
        // Requests and replies both count as sent; only requests meet loss and duplication.
        assert_eq!(stats.sent, requests + answered);
        assert!((rate(answered) - 0.8).abs() < 0.03, "answered {answered}");
        assert!(
            (rate(stats.duplicated) - 0.08).abs() < 0.02,
            "dups {}",
            stats.duplicated
        );
        let arrivals = recorders[1].received().len() as u64;
        assert_eq!(arrivals, answered + stats.duplicated);
    });
}

#[test]
fn a_crashed_node_loses_its_in_flight_messages_and_its_transports() {
    paused_runtime().block_on(async {
        let config = SimNetConfig {
            default_link: LinkFaults {
                delay: Delay {
                    base: Duration::from_millis(50),
                    jitter: Duration::ZERO,
                },
                ..LinkFaults::default()
            },
            ..SimNetConfig::default()
        };
        let net = SimNetwork::new(4, config);
        let recorders = nodes(&net, 2);
        let t1 = net.transport(NodeId(1));
        let old_t2 = net.transport(NodeId(2));
        let in_flight = tokio::spawn({
            let t1 = t1.clone();
            async move { t1.node_message(NodeId(2), Bytes::from("doomed")).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        net.crash(NodeId(2));
        assert!(matches!(
            in_flight.await.unwrap(),
            Err(RpcError::Timeout { .. })
        ));
        assert!(recorders[1].received().is_empty());

        let started = Instant::now();
        let error = old_t2
            .node_message(NodeId(1), Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(error, RpcError::ShuttingDown);
        assert!(started.elapsed() >= config.failure_delay);

        let fresh = Arc::new(Recorder::default());
        net.restart(NodeId(2), fresh.clone());
        assert!(t1
            .node_message(NodeId(2), Bytes::from("back"))
            .await
            .is_ok());
        assert_eq!(fresh.received().len(), 1);
        assert!(old_t2.node_message(NodeId(1), Bytes::new()).await.is_err());
        let new_t2 = net.transport(NodeId(2));
        assert!(new_t2.node_message(NodeId(1), Bytes::new()).await.is_ok());
    });
}

#[test]
fn an_error_answered_at_once_still_reaches_the_caller_only_after_the_failure_delay() {
    paused_runtime().block_on(async {
        let config = SimNetConfig {
            default_link: LinkFaults {
                delay: Delay {
                    base: Duration::ZERO,
                    jitter: Duration::ZERO,
                },
                ..LinkFaults::default()
            },
            ..SimNetConfig::default()
        };
        let net = SimNetwork::new(5, config);
        net.register(NodeId(1), Arc::new(Recorder::default()));
        net.register(
            NodeId(2),
            Arc::new(Recorder {
                fail: true,
                ..Recorder::default()
            }),
        );
        let started = Instant::now();
        let error = net
            .transport(NodeId(1))
            .node_message(NodeId(2), Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(error, RpcError::Remote("refused".into()));
        assert!(started.elapsed() >= config.failure_delay);
    });
}

mod gossip {
    use super::*;
    use gregor_cluster::membership::{
        DiskUsage, GossipTuning, Membership, MembershipConfig, MembershipView, NodeInfo,
    };
    use std::net::SocketAddr;
    use tokio::sync::watch;

    fn addr(node: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + node as u16))
    }

    async fn start(net: &SimNetwork, node: u64, tuning: GossipTuning) -> Membership {
        let config = MembershipConfig {
            cluster_id: "sim".into(),
            generation: 1,
            listen_addr: addr(node),
            seeds: if node == 1 { vec![] } else { vec![addr(1)] },
            tuning,
        };
        let info = NodeInfo {
            node: NodeId(node),
            client_addr: format!("client-{node}"),
            peer_addr: addr(node),
            version: "sim".into(),
            rack: None,
            ready: true,
            replicas: 0,
            leaders: 0,
            disk: DiskUsage::default(),
        };
        let transport = net.gossip_transport(NodeId(node));
        Membership::start(config, info, &transport).await.unwrap()
    }

    async fn wait_until(
        view: &mut watch::Receiver<MembershipView>,
        within: Duration,
        condition: impl FnMut(&MembershipView) -> bool,
    ) -> Duration {
        let started = Instant::now();
        tokio::time::timeout(within, view.wait_for(condition))
            .await
            .expect("membership did not converge in time")
            .unwrap();
        started.elapsed()
    }

    #[test]
    fn chitchat_over_the_simulated_network_detects_an_isolated_node_and_its_return() {
        paused_runtime().block_on(async {
            let net = SimNetwork::new(11, SimNetConfig::default());
            nodes(&net, 3);
            let tuning = GossipTuning {
                gossip_interval: Duration::from_millis(100),
                initial_interval: Duration::from_millis(100),
                max_interval: Duration::from_millis(400),
                ..GossipTuning::default()
            };
            let members = [
                start(&net, 1, tuning).await,
                start(&net, 2, tuning).await,
                start(&net, 3, tuning).await,
            ];
            let mut view = members[0].watch();
            wait_until(&mut view, Duration::from_secs(5), |v| v.live.len() == 3).await;

            net.isolate(NodeId(3));
            let took = wait_until(&mut view, tuning.detection_bound(), |v| {
                v.dead.contains_key(&NodeId(3)) && v.live.len() == 2
            })
            .await;
            assert!(took <= tuning.detection_bound());
            assert!(net.stats().gossip.dropped > 0);

            net.heal();
            wait_until(&mut view, Duration::from_secs(5), |v| {
                v.live.len() == 3 && v.dead.is_empty()
            })
            .await;
            assert!(net.stats().gossip.delivered > 0);
        });
    }
}

// ------------------------------------------------------------------ client streams

const CLIENT: NodeId = NodeId(1001);

async fn echo_server(
    mut accepted: tokio::sync::mpsc::UnboundedReceiver<gregor_simulation::net::SimStream>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Some(mut stream) = accepted.recv().await {
        tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[test]
fn a_client_stream_carries_bytes_in_order_after_the_link_delay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    paused_runtime().block_on(async {
        let net = SimNetwork::new(1, SimNetConfig::default());
        nodes(&net, 1);
        tokio::spawn(echo_server(net.listen(NodeId(1))));
        let started = Instant::now();
        let mut stream = net.connect(CLIENT, NodeId(1)).await.expect("connects");
        assert!(
            started.elapsed() >= Duration::from_millis(2),
            "a handshake crosses the link twice"
        );
        for i in 0..50u8 {
            stream.write_all(&[i]).await.unwrap();
        }
        let mut echoed = vec![0u8; 50];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, (0..50).collect::<Vec<u8>>());
    });
}

#[test]
fn a_crash_resets_client_streams_and_refuses_new_ones() {
    use tokio::io::AsyncReadExt;
    paused_runtime().block_on(async {
        let net = SimNetwork::new(2, SimNetConfig::default());
        nodes(&net, 1);
        tokio::spawn(echo_server(net.listen(NodeId(1))));
        let mut stream = net.connect(CLIENT, NodeId(1)).await.expect("connects");
        net.crash(NodeId(1));
        let mut buffer = [0u8; 8];
        assert_eq!(
            stream.read(&mut buffer).await.unwrap(),
            0,
            "the connection closed"
        );
        let refused = net.connect(CLIENT, NodeId(1)).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn a_cut_client_link_times_connects_out_and_resets_a_stream_that_sends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    paused_runtime().block_on(async {
        let net = SimNetwork::new(3, SimNetConfig::default());
        nodes(&net, 1);
        tokio::spawn(echo_server(net.listen(NodeId(1))));
        let mut stream = net.connect(CLIENT, NodeId(1)).await.expect("connects");
        let mut down = net.link(CLIENT, NodeId(1));
        down.up = false;
        net.set_link(CLIENT, NodeId(1), down);
        stream.write_all(b"lost").await.unwrap();
        let mut buffer = [0u8; 8];
        assert_eq!(stream.read(&mut buffer).await.unwrap(), 0, "reset");
        let started = Instant::now();
        let error = net.connect(CLIENT, NodeId(1)).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= SimNetConfig::default().rpc_timeout);
    });
}
