//! The production wiring: three `ClusterNode`s over `PeerTransport` on loopback form a group,
//! replicate, and apply a retention entry alike.

mod common;

use common::{append, nodes, open_store};
use gregor_cluster::peer::PeerConfig;
use gregor_cluster::{ClusterNode, Command, Start, StepOutcome};
use gregor_storage::{GroupId, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const GROUP: GroupId = GroupId(60);

async fn leader_of(cluster: &[Arc<ClusterNode>]) -> Arc<ClusterNode> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for node in cluster {
            if node.group(GROUP).is_some_and(|g| g.is_ready()) {
                return node.clone();
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn three_nodes_over_tcp_form_a_group_and_replicate() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Vec::new();
        let mut transports = Vec::new();
        for id in 1..=3u64 {
            let store = open_store(&dir.path().join(format!("node-{id}"))).await;
            let config = PeerConfig::new(NodeId(id), "test");
            let (node, transport) = ClusterNode::bind(
                store,
                config,
                "127.0.0.1:0".parse().unwrap(),
                common::tuning(),
            )
            .await
            .unwrap();
            cluster.push(node);
            transports.push(transport);
        }
        for transport in &transports {
            for (i, other) in transports.iter().enumerate() {
                transport
                    .address_book()
                    .set(NodeId(i as u64 + 1), other.local_addr());
            }
        }
        cluster[0]
            .start_group(
                GROUP,
                Start::Found {
                    members: nodes(&[1]),
                },
            )
            .await
            .unwrap();
        for node in &cluster[1..] {
            node.start_group(GROUP, Start::Join).await.unwrap();
        }
        let target = nodes(&[1, 2, 3]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "membership did not converge");
            let leader = leader_of(&cluster).await;
            match leader
                .group(GROUP)
                .unwrap()
                .change_membership_step(&target)
                .await
            {
                Ok(StepOutcome::Done) => break,
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let mut last = 0;
        for _ in 0..20 {
            let leader = leader_of(&cluster).await;
            last = leader
                .group(GROUP)
                .unwrap()
                .propose(append(3), Duration::from_secs(5))
                .await
                .unwrap()
                .0;
        }
        let leader = leader_of(&cluster).await;
        let trimmed = leader
            .group(GROUP)
            .unwrap()
            .propose(
                Command::AdvanceLogStart { offset: 30 },
                Duration::from_secs(5),
            )
            .await
            .unwrap()
            .0;
        assert!(trimmed > last);
        for node in &cluster {
            let mut applied = node.group(GROUP).unwrap().applied();
            let reached = tokio::time::timeout(Duration::from_secs(10), async {
                while applied.borrow_and_update().last_applied < trimmed {
                    applied.changed().await.unwrap();
                }
            })
            .await;
            assert!(
                reached.is_ok(),
                "node {} did not apply everything",
                node.node()
            );
            assert_eq!(
                node.store().partition_state(GROUP).unwrap().next_offset.0,
                60
            );
        }
        for node in &cluster {
            node.shutdown().await;
        }
        for transport in &transports {
            transport.shutdown().await;
        }
    });
}
