//! Consumer group membership in a cluster: heartbeats reach the coordinator through any node,
//! and when the node leading the group's `__consumer_offsets` partition stops, the next leader
//! rebuilds the group from that partition (members, epochs, assignments, hosts), so members
//! carry on without a rebalance.

mod common;

use common::{eventually, run, TestCluster};
use gregor_actors::api::*;
use gregor_actors::groups::core::offsets_partition_for;
use gregor_actors::metadata::OFFSETS_TOPIC;
use gregor_cluster::GroupRole;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);
/// The client's address as the server session of the node it connected to wrote it.
const CLIENT_HOST: &str = "198.51.100.7";

async fn retry(cluster: &TestCluster, via: u64, request: impl Into<Request> + Clone) -> Response {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        match cluster.request(via, request.clone()).await {
            Ok(response) => return response,
            Err(error) if error.code.is_retriable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("{error:?}"),
        }
    }
}

/// The node leading group `g`'s offsets partition with three voters.
fn replicated_coordinator(cluster: &TestCluster) -> Option<u64> {
    let leader = coordinator_node(cluster, &[1, 2, 3])?;
    let view = cluster.node(leader).view();
    let offsets = view.topic(OFFSETS_TOPIC)?;
    let group = offsets
        .record
        .group_of(offsets_partition_for("g", offsets.record.partitions));
    let voters = cluster.node(leader).replica_group(group)?.voters();
    (voters.len() == 3).then_some(leader)
}

/// The node leading group `g`'s offsets partition, as the nodes in `alive` see it.
fn coordinator_node(cluster: &TestCluster, alive: &[u64]) -> Option<u64> {
    let view = cluster.node(alive[0]).view();
    let offsets = view.topic(OFFSETS_TOPIC)?;
    let partition = offsets_partition_for("g", offsets.record.partitions);
    let group = offsets.record.group_of(partition);
    alive.iter().copied().find(|id| {
        cluster
            .node(*id)
            .replica_group(group)
            .is_some_and(|g| g.role() == GroupRole::Leader)
    })
}

fn heartbeat(
    member_id: &str,
    epoch: i32,
    owned: Option<Vec<TopicPartitions>>,
) -> ConsumerGroupHeartbeat {
    ConsumerGroupHeartbeat {
        group: "g".into(),
        member_id: member_id.into(),
        member_epoch: epoch,
        instance_id: None,
        rack: None,
        client_id: "c".into(),
        subscription: (epoch == 0).then(|| Subscription::Topics(vec!["orders".into()])),
        server_assignor: None,
        owned,
        rebalance_timeout_ms: 60_000,
        session_timeout_ms: Some(60_000),
        host: Some(CLIENT_HOST.into()),
    }
}

#[test]
fn a_group_survives_the_loss_of_its_coordinator_s_node_without_a_rebalance() {
    run(|| async {
        let mut cluster = TestCluster::new(Duration::from_secs(600));
        for id in 1..=3 {
            cluster.start(id).await.unwrap();
        }
        let create = CreateTopic {
            name: "orders".into(),
            partitions: 6,
            replication_factor: 3,
            config: Default::default(),
            creation_id: None,
        };
        retry(&cluster, 1, create).await;
        // The offsets topic is created with the nodes alive then and grows to three replicas.
        eventually("the offsets partition has three voters", LONG, || {
            replicated_coordinator(&cluster).is_some()
        })
        .await;
        let leader = replicated_coordinator(&cluster).unwrap();
        // Join through a node that is not the coordinator's: the request is forwarded.
        let via = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
        let Response::ConsumerGroupHeartbeat(joined) =
            retry(&cluster, via, heartbeat("", 0, Some(vec![]))).await
        else {
            panic!("not a heartbeat reply")
        };
        let owned = joined.assignment.clone().expect("an assignment");
        assert_eq!(owned[0].partitions.len(), 6);

        cluster.stop(leader).await;
        let alive: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
        eventually("another node leads the offsets partition", LONG, || {
            coordinator_node(&cluster, &alive).is_some()
        })
        .await;
        let again = heartbeat(&joined.member_id, joined.member_epoch, Some(owned));
        let Response::ConsumerGroupHeartbeat(reply) = retry(&cluster, alive[0], again).await else {
            panic!("not a heartbeat reply")
        };
        assert_eq!(reply.member_id, joined.member_id);
        assert_eq!(reply.member_epoch, joined.member_epoch, "no rebalance");
        assert_eq!(reply.assignment, None, "it keeps what it owns");
        let Response::DescribeGroup(description) =
            retry(&cluster, alive[1], DescribeGroup { group: "g".into() }).await
        else {
            panic!("not a description")
        };
        assert_eq!(description.members.len(), 1);
        // The host is the client's, carried by the forwarded heartbeat (not the forwarding
        // node's), and kept in the group's rows through the failover.
        assert_eq!(description.members[0].host.as_deref(), Some(CLIENT_HOST));
        assert_eq!(description.state, "stable");
        assert_ne!(coordinator_node(&cluster, &alive), Some(leader));
        cluster.shutdown().await;
    });
}
