//! Membership over real UDP on loopback: nodes find each other and each other's info, a
//! stopped node is declared dead within the bound its tuning implies, and a restarted one
//! comes back under its new generation.

use gregor_cluster::membership::{
    DiskUsage, GossipTuning, Membership, MembershipConfig, MembershipView, NodeInfo, UdpTransport,
};
use gregor_storage::NodeId;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

fn tuning() -> GossipTuning {
    let gossip_interval = Duration::from_millis(100);
    GossipTuning {
        gossip_interval,
        initial_interval: gossip_interval,
        max_interval: gossip_interval * 4,
        ..GossipTuning::default()
    }
}

/// Reserves a peer port the way a node does: the TCP listener takes it, gossip binds the same
/// port number for UDP.
async fn peer_port() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn info(node: u64, peer_addr: SocketAddr) -> NodeInfo {
    NodeInfo {
        node: NodeId(node),
        client_addr: format!("127.0.0.1:{}", 9000 + node),
        peer_addr,
        version: "test".into(),
        rack: Some(format!("rack-{node}")),
        ready: false,
        replicas: 0,
        leaders: 0,
        disk: DiskUsage::default(),
    }
}

async fn start(node: u64, generation: u64, addr: SocketAddr, seeds: Vec<SocketAddr>) -> Membership {
    let config = MembershipConfig {
        cluster_id: "membership-test".into(),
        generation,
        listen_addr: addr,
        seeds,
        tuning: tuning(),
    };
    Membership::start(config, info(node, addr), &UdpTransport)
        .await
        .unwrap()
}

async fn wait_until(
    view: &mut watch::Receiver<MembershipView>,
    within: Duration,
    what: &str,
    condition: impl FnMut(&MembershipView) -> bool,
) {
    if tokio::time::timeout(within, view.wait_for(condition))
        .await
        .is_err()
    {
        panic!(
            "{what} did not happen within {within:?}: {:?}",
            *view.borrow()
        );
    }
}

fn live_ids(view: &MembershipView) -> Vec<u64> {
    view.live.keys().map(|node| node.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_other_and_a_stopped_one_is_dead_within_the_bound() {
    let (_l1, a1) = peer_port().await;
    let (_l2, a2) = peer_port().await;
    let (_l3, a3) = peer_port().await;
    let m1 = start(1, 1, a1, vec![]).await;
    let m2 = start(2, 1, a2, vec![a1]).await;
    let m3 = start(3, 1, a3, vec![a1]).await;
    let join_within = Duration::from_secs(10);
    for membership in [&m1, &m2, &m3] {
        let mut view = membership.watch();
        wait_until(&mut view, join_within, "all three live", |v| {
            live_ids(v) == [1, 2, 3]
        })
        .await;
        let seen = view.borrow().clone();
        assert_eq!(seen.live[&NodeId(3)].info, info(3, a3));
        assert!(seen.dead.is_empty());
    }

    m2.set_load(1200, 400).await;
    m2.set_ready(true).await;
    let mut view_at_1 = m1.watch();
    wait_until(
        &mut view_at_1,
        join_within,
        "node 2's load reaches node 1",
        |v| {
            v.live
                .get(&NodeId(2))
                .is_some_and(|m| m.info.replicas == 1200 && m.info.leaders == 400 && m.info.ready)
        },
    )
    .await;

    let bound = tuning().detection_bound();
    // Slack for a loaded 2-core machine scheduling real timers late.
    let slack = Duration::from_secs(1);
    let stopped_at = Instant::now();
    m3.shutdown().await.unwrap();
    wait_until(
        &mut view_at_1,
        bound + slack,
        "node 3 dead at node 1",
        |v| v.dead.contains_key(&NodeId(3)) && !v.live.contains_key(&NodeId(3)),
    )
    .await;
    let detected_after = stopped_at.elapsed();
    let mut view_at_2 = m2.watch();
    wait_until(
        &mut view_at_2,
        bound + slack,
        "node 3 dead at node 2",
        |v| v.dead.contains_key(&NodeId(3)),
    )
    .await;
    eprintln!("node 3 declared dead {detected_after:?} after it stopped (bound {bound:?})");

    let m3 = start(3, 2, a3, vec![a1]).await;
    wait_until(&mut view_at_1, join_within, "node 3 back", |v| {
        v.live.get(&NodeId(3)).is_some_and(|m| m.generation == 2) && v.dead.is_empty()
    })
    .await;
    for membership in [m1, m2, m3] {
        membership.shutdown().await.unwrap();
    }
}

#[test]
fn the_detection_bound_follows_the_tuning() {
    let tuning = tuning();
    // phi 8 times the largest possible mean (max_interval 400 ms), plus one gossip round.
    assert_eq!(tuning.detection_bound(), Duration::from_millis(3300));
    let default = GossipTuning::default();
    assert_eq!(default.detection_bound(), Duration::from_millis(16_500));
}
