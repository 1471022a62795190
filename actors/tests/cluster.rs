//! Several nodes in one process (see `common`): joining, the metadata group's growth, topic
//! placement and agreement, deletion on every node, re-placement after a node's death and
//! draining.

mod common;

use common::{eventually, run, TestCluster};
use gregor_actors::api::*;
use gregor_storage::batch::{BatchBuilder, NewRecord};
use gregor_storage::{NodeId, Offset, PartitionId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

fn nodes(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().map(|n| NodeId(*n)).collect()
}

fn voters_everywhere(cluster: &TestCluster, expected: &BTreeSet<NodeId>) -> bool {
    cluster
        .nodes
        .values()
        .all(|n| n.metadata_group().voters() == *expected)
}

async fn create(cluster: &TestCluster, via: u64, name: &str, partitions: u32, factor: u16) {
    let request = CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: factor,
        config: Default::default(),
        creation_id: None,
    };
    retry(cluster, via, request).await;
}

/// Sends `request` through node `via` until it succeeds, retrying what a client retries
/// (the metadata group electing a leader, say).
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

/// Every node has applied the same assignment of `topic`.
fn agreed(cluster: &TestCluster, topic: &str) -> Option<Vec<Vec<NodeId>>> {
    let mut views = cluster.nodes.values().map(|n| {
        n.view().topic(topic).map(|t| {
            t.assignments
                .iter()
                .map(|a| a.replicas.clone())
                .collect::<Vec<_>>()
        })
    });
    let first = views.next()??;
    views.all(|v| v.as_ref() == Some(&first)).then_some(first)
}

/// Every partition of `topic` has a leader that every node knows, and whose Raft voters are
/// the partition's replicas.
async fn converged(cluster: &TestCluster, topic: &str) -> bool {
    let view = cluster.nodes.values().next().unwrap().view();
    let Some(topic) = view.topic(topic) else {
        return false;
    };
    for (p, assignment) in topic.assignments.iter().enumerate() {
        if assignment.target.is_some() {
            return false;
        }
        let describe = DescribeTopic {
            name: topic.record.name.clone(),
        };
        let mut leaders = BTreeSet::new();
        for id in cluster.nodes.keys() {
            let Ok(Response::DescribeTopic(d)) = cluster.request(id.0, describe.clone()).await
            else {
                return false;
            };
            leaders.insert(d.partitions[p].leader);
        }
        let [Some(leader)] = leaders.into_iter().collect::<Vec<_>>()[..] else {
            return false;
        };
        let Some(node) = cluster.nodes.get(&leader) else {
            return false;
        };
        let group = topic.record.group_of(PartitionId(p as u32));
        let voters = node
            .replica_group(group)
            .map(|g| g.voters())
            .unwrap_or_default();
        let replicas: BTreeSet<NodeId> = assignment.replicas.iter().copied().collect();
        if voters != replicas {
            return false;
        }
    }
    true
}

async fn wait_converged(cluster: &TestCluster, topic: &str) {
    let deadline = tokio::time::Instant::now() + LONG;
    while !converged(cluster, topic).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions of {topic} did not converge"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn batch(value: &str) -> bytes::Bytes {
    let mut batch = BatchBuilder::with_capacity(64);
    batch.push(&NewRecord {
        key: None,
        value: Some(value.as_bytes()),
        headers: &[],
        timestamp: 0,
    });
    batch.finish()
}

/// Produces to partition `p` of `topic` through its leader, as a client following
/// `NOT_LEADER` would.
async fn produce(cluster: &TestCluster, topic: &str, p: u32, value: &str) -> Offset {
    let request = Produce {
        topic: topic.into(),
        partition: PartitionId(p),
        acks: Acks::All,
        timeout_ms: 10_000,
        batches: vec![batch(value)],
        topic_id: None,
    };
    let deadline = tokio::time::Instant::now() + LONG;
    let mut via = *cluster.nodes.keys().next().unwrap();
    loop {
        match cluster.request(via.0, request.clone()).await {
            Ok(Response::Produce(reply)) => return reply.base_offset,
            Ok(other) => panic!("{other:?}"),
            Err(error) => {
                assert!(error.code.is_retriable(), "{error:?}");
                assert!(tokio::time::Instant::now() < deadline, "{error:?}");
                if let Some(ErrorDetail::Leader {
                    leader: Some(leader),
                    ..
                }) = error.detail
                {
                    if cluster.nodes.contains_key(&leader) {
                        via = leader;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn counts(assignment: &[Vec<NodeId>]) -> (BTreeMap<NodeId, usize>, BTreeMap<NodeId, usize>) {
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for set in assignment {
        for node in set {
            *replicas.entry(*node).or_default() += 1;
        }
        *leaders.entry(set[0]).or_default() += 1;
    }
    (replicas, leaders)
}

#[test]
fn nodes_join_the_metadata_group_grows_to_three_voters_and_a_topic_is_spread_and_agreed() {
    run(|| async {
        let mut cluster = TestCluster::new(Duration::from_secs(600));
        cluster.start(1).await.unwrap();
        cluster.start(2).await.unwrap();
        eventually("node 2 is registered on both nodes", LONG, || {
            cluster
                .nodes
                .values()
                .all(|n| n.view().node(NodeId(2)).is_some())
        })
        .await;
        // Two voters would tolerate no more failures than one: node 2 follows as a learner.
        assert_eq!(cluster.node(1).metadata_group().voters(), nodes(&[1]));
        cluster.start(3).await.unwrap();
        eventually("three metadata voters", LONG, || {
            // Grown in one change: two voters could lose neither.
            assert!(cluster
                .nodes
                .values()
                .all(|n| n.metadata_group().voters() != nodes(&[1, 2])));
            voters_everywhere(&cluster, &nodes(&[1, 2, 3]))
        })
        .await;
        // A fourth node follows the metadata as a learner; the voters stay three.
        cluster.start(4).await.unwrap();
        eventually("node 4 registered and caught up", LONG, || {
            let last = cluster.node(1).view().last_index();
            cluster.node(4).view().node(NodeId(4)).is_some()
                && cluster.node(4).view().last_index() >= last
        })
        .await;
        assert!(voters_everywhere(&cluster, &nodes(&[1, 2, 3])));

        // Created through a node that does not lead the metadata group: forwarded.
        let via = (1..=4)
            .find(|id| cluster.node(*id).metadata_group().leader() != Some(NodeId(*id)))
            .unwrap();
        create(&cluster, via, "orders", 8, 3).await;
        eventually("every node applied the same placement", LONG, || {
            agreed(&cluster, "orders").is_some()
        })
        .await;
        let assignment = agreed(&cluster, "orders").unwrap();
        let (replicas, leaders) = counts(&assignment);
        assert_eq!(
            replicas.values().copied().collect::<Vec<_>>(),
            vec![6, 6, 6, 6]
        );
        assert_eq!(
            leaders.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2, 2]
        );
        wait_converged(&cluster, "orders").await;
        assert_eq!(produce(&cluster, "orders", 0, "a").await, Offset(0));
        assert_eq!(produce(&cluster, "orders", 0, "b").await, Offset(1));
        cluster.shutdown().await;
    });
}

/// Step-downs of `topic`'s partitions, on every node.
fn step_downs(cluster: &TestCluster, topic: &str) -> u64 {
    let view = cluster.nodes.values().next().unwrap().view();
    let topic = view.topic(topic).unwrap();
    let groups = (0..topic.record.partitions).map(|p| topic.record.group_of(PartitionId(p)));
    groups
        .flat_map(|g| {
            cluster
                .nodes
                .values()
                .filter_map(move |n| n.replica_group(g))
        })
        .map(|g| g.step_downs())
        .sum()
}

/// Creates `name` (replication factor 3, through node 1) and waits until every partition has a
/// ready leader and every node agrees on its replicas.
async fn create_led(cluster: &TestCluster, name: &str, partitions: u32) {
    create(cluster, 1, name, partitions, 3).await;
    eventually(
        "every partition of the new topic has a ready leader",
        LONG,
        || leaders_of(cluster, name).is_some(),
    )
    .await;
    wait_converged(cluster, name).await;
}

/// Each partition's leader as the node leading it sees itself, when every partition has one.
fn leaders_of(cluster: &TestCluster, topic: &str) -> Option<Vec<NodeId>> {
    let view = cluster.nodes.values().next()?.view();
    let topic = view.topic(topic)?;
    (0..topic.record.partitions)
        .map(|p| {
            let group = topic.record.group_of(PartitionId(p));
            cluster.nodes.values().find_map(|n| {
                let g = n.replica_group(group)?;
                (g.leader() == Some(n.node_id()) && g.is_ready()).then(|| n.node_id())
            })
        })
        .collect()
}

#[test]
fn a_topic_created_on_a_settled_cluster_is_led_by_its_preferred_leaders_without_step_downs() {
    run(|| async {
        let mut cluster = TestCluster::new(Duration::from_secs(600));
        start_nodes(&mut cluster, 3).await;
        wait_converged(&cluster, "__consumer_offsets").await;

        create_led(&cluster, "even", 6).await;
        let assignment = agreed(&cluster, "even").unwrap();
        let preferred: Vec<NodeId> = assignment.iter().map(|replicas| replicas[0]).collect();
        assert_eq!(leaders_of(&cluster, "even").unwrap(), preferred);
        let (_, leaders) = counts(&assignment);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(
            step_downs(&cluster, "even"),
            0,
            "founding with every replica needs no membership change, so no step-down"
        );
        assert_eq!(produce(&cluster, "even", 5, "a").await, Offset(0));
        cluster.shutdown().await;
    });
}

/// Leader balancing evens out the leaderships (of every partition, the offsets topic's too),
/// each move a leadership transfer: one term per move, so no partition waited out an election
/// timeout.
#[test]
fn leader_balancing_evens_leaderships_out_in_one_term_per_move() {
    run(|| async {
        let mut cluster = TestCluster::new(Duration::from_secs(600));
        cluster.settings.operations.leader_balance_interval = Duration::from_secs(5);
        cluster.settings.operations.max_step_downs = 8;
        start_nodes(&mut cluster, 3).await;
        wait_converged(&cluster, "__consumer_offsets").await;
        create_led(&cluster, "even", 6).await;

        // Unbalance it: node 1 takes every leadership of the topic (by the same transfer).
        let view = cluster.node(1).view();
        let topic = view.topic("even").unwrap();
        let groups: Vec<_> = (0..topic.record.partitions)
            .map(|p| topic.record.group_of(PartitionId(p)))
            .collect();
        for (group, leader) in groups.iter().zip(leaders_of(&cluster, "even").unwrap()) {
            if leader != NodeId(1) {
                let raft = cluster.node(leader.0).replica_group(*group).unwrap();
                raft.transfer_leadership(NodeId(1)).await.unwrap();
            }
        }
        eventually("node 1 leads every partition of the topic", LONG, || {
            leaders_of(&cluster, "even") == Some(vec![NodeId(1); groups.len()])
        })
        .await;
        let terms: Vec<u64> = groups
            .iter()
            .map(|g| cluster.node(1).replica_group(*g).unwrap().term())
            .collect();

        // 9 partitions (6 + the offsets topic's 3) over 3 nodes: 3 each.
        let led_per_node = || {
            let mut counts = BTreeMap::new();
            for topic in ["even", "__consumer_offsets"] {
                for leader in leaders_of(&cluster, topic).unwrap_or_default() {
                    *counts.entry(leader).or_insert(0) += 1;
                }
            }
            counts
        };
        eventually("every node leads its share", LONG, || {
            led_per_node().values().copied().collect::<Vec<_>>() == vec![3, 3, 3]
        })
        .await;
        let leaders = leaders_of(&cluster, "even").unwrap();
        assert!(leaders.iter().any(|l| *l != NodeId(1)), "nothing moved");
        for ((group, before), leader) in groups.iter().zip(terms).zip(&leaders) {
            let after = cluster.node(leader.0).replica_group(*group).unwrap().term();
            let moved = u64::from(*leader != NodeId(1));
            assert_eq!(
                after,
                before + moved,
                "partition {group}: more than one election"
            );
        }
        cluster.shutdown().await;
    });
}

async fn start_nodes(cluster: &mut TestCluster, count: u64) {
    for id in 1..=count {
        cluster.start(id).await.unwrap();
    }
    let voters = nodes(&[1, 2, 3]);
    eventually("three metadata voters", LONG, || {
        voters_everywhere(cluster, &voters)
    })
    .await;
}

/// Waits until no node has a deletion left to do.
async fn deletions_done(cluster: &TestCluster) {
    use gregor_actors::reconcile::PendingDeletions;
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let mut pending = 0;
        for node in cluster.nodes.values() {
            pending += node
                .reconciler()
                .send(PendingDeletions)
                .await
                .unwrap()
                .len();
        }
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} deletions left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hosts(cluster: &TestCluster, node: NodeId) -> usize {
    let view = cluster.nodes.values().next().unwrap().view();
    view.hosted_by(node).len()
}

#[test]
fn a_deleted_topic_leaves_no_data_on_any_node() {
    use gregor_storage::{GroupId, Store, StoreOptions, SyncMode};
    run(|| async {
        let mut cluster = TestCluster::new(Duration::from_secs(600));
        start_nodes(&mut cluster, 3).await;
        create(&cluster, 1, "doomed", 3, 3).await;
        wait_converged(&cluster, "doomed").await;
        for p in 0..3 {
            produce(&cluster, "doomed", p, "x").await;
        }
        let id = cluster.node(1).view().topic("doomed").unwrap().record.id;
        let groups: Vec<GroupId> = (0..3)
            .map(|p| GroupId::for_partition(id, PartitionId(p)))
            .collect();
        cluster
            .request(
                2,
                DeleteTopic {
                    name: "doomed".into(),
                },
            )
            .await
            .unwrap();
        // Node 3 stops right away and finishes its part after it starts again.
        cluster.stop(3).await;
        cluster.start(3).await.unwrap();
        eventually("every node applied the delete", LONG, || {
            cluster
                .nodes
                .values()
                .all(|n| n.view().topic("doomed").is_none())
        })
        .await;
        deletions_done(&cluster).await;
        let dirs: Vec<std::path::PathBuf> =
            (1..=3).map(|id| cluster.dir(id).to_path_buf()).collect();
        cluster.shutdown().await;
        for dir in dirs {
            let options = StoreOptions {
                sync_mode: SyncMode::Inline,
                ..StoreOptions::default()
            };
            let store = Store::open(&dir, options).unwrap();
            for group in &groups {
                assert!(
                    store.last_entry(*group).unwrap().is_none(),
                    "{dir:?} {group}"
                );
                assert!(
                    store.hard_state(*group).unwrap().is_none(),
                    "{dir:?} {group}"
                );
            }
        }
    });
}

#[test]
fn replicas_of_a_node_dead_past_the_grace_period_move_to_live_nodes() {
    run(|| async {
        let grace = Duration::from_secs(20);
        let mut cluster = TestCluster::new(grace);
        start_nodes(&mut cluster, 4).await;
        create(&cluster, 1, "orders", 2, 3).await;
        wait_converged(&cluster, "orders").await;
        // The offsets partitions too: one still moving onto node 4 would count as hosted there
        // once its move completes, node 4 dead or not (seen once on a loaded machine).
        wait_converged(&cluster, "__consumer_offsets").await;
        let on_four = hosts(&cluster, NodeId(4));
        assert!(on_four > 0, "node 4 hosts replicas");
        cluster.stop(4).await;
        // Dead, but within the grace period: nothing moves yet.
        tokio::time::sleep(grace / 2).await;
        assert_eq!(hosts(&cluster, NodeId(4)), on_four);
        eventually("node 4's replicas moved", LONG, || {
            hosts(&cluster, NodeId(4)) == 0
        })
        .await;
        wait_converged(&cluster, "orders").await;
        wait_converged(&cluster, "__consumer_offsets").await;
        for p in 0..2 {
            produce(&cluster, "orders", p, "after").await;
        }
        cluster.shutdown().await;
    });
}

#[test]
fn a_drained_node_ends_with_no_replicas_and_loses_its_voter_seat() {
    run(|| async {
        let mut cluster = TestCluster::new(Duration::from_secs(600));
        start_nodes(&mut cluster, 4).await;
        create(&cluster, 1, "orders", 6, 3).await;
        wait_converged(&cluster, "orders").await;
        assert!(hosts(&cluster, NodeId(3)) > 0);
        retry(&cluster, 4, DrainNode { node_id: NodeId(3) }).await;
        eventually("node 3 holds nothing", LONG, || {
            hosts(&cluster, NodeId(3)) == 0
        })
        .await;
        eventually("node 4 took node 3's voter seat", LONG, || {
            voters_everywhere(&cluster, &nodes(&[1, 2, 4]))
        })
        .await;
        wait_converged(&cluster, "orders").await;
        let Response::ClusterStatus(status) = retry(&cluster, 1, ClusterStatus {}).await else {
            panic!()
        };
        let three = status
            .nodes
            .iter()
            .find(|n| n.node_id == NodeId(3))
            .unwrap();
        assert_eq!((three.state.as_str(), three.replicas), ("draining", 0));
        assert_eq!(three.metadata_role, "learner");
        cluster.shutdown().await;
    });
}
