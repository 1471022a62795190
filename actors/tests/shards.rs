//! Shard-per-core: a node with two shards runs its partitions' replicas on two threads of their
//! own, and serves them as a node with one does. Real time and real threads (paused time on the
//! main thread would race ahead of the shards' clocks), fjall in a temporary directory.

use gregor_actors::api::*;
use gregor_actors::{start_node, Broker, NodeConfig};
use gregor_storage::batch::{BatchBuilder, BatchView, NewRecord};
use gregor_storage::{Offset, PartitionId};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const PARTITIONS: u32 = 4;

async fn start(dir: &Path, shards: usize) -> Broker {
    let mut config = NodeConfig::single_node(dir);
    config.offsets_partitions = 2;
    config.shards = shards;
    start_node(config).await.unwrap()
}

fn batch(value: &str) -> bytes::Bytes {
    let mut b = BatchBuilder::with_capacity(128);
    b.push(&NewRecord {
        key: None,
        value: Some(value.as_bytes()),
        headers: &[],
        timestamp: 0,
    });
    b.finish()
}

async fn produce(node: &Broker, partition: u32, value: &str) -> Offset {
    let request = Produce {
        topic: "spread".into(),
        partition: PartitionId(partition),
        acks: Acks::All,
        timeout_ms: 5_000,
        batches: vec![batch(value)],
        topic_id: None,
    };
    match node.handle(Request::Produce(request)).await.unwrap() {
        Response::Produce(reply) => reply.base_offset,
        other => panic!("unexpected {other:?}"),
    }
}

async fn values(node: &Broker, partition: u32) -> Vec<String> {
    let request = Fetch {
        topic: "spread".into(),
        partition: PartitionId(partition),
        offset: Offset(0),
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        min_bytes: 1,
    };
    let Response::Fetch(reply) = node.handle(Request::Fetch(request)).await.unwrap() else {
        panic!("not a fetch reply")
    };
    let mut out = Vec::new();
    for b in &reply.batches {
        for r in BatchView::validate(b).unwrap().records() {
            out.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

#[test]
fn two_shards_run_a_topics_partitions_on_two_threads_and_serve_them() {
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let main = std::thread::current().id();
        let node = start(dir.path(), 2).await;
        let request = CreateTopic {
            name: "spread".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            config: Default::default(),
            creation_id: None,
        };
        node.handle(Request::CreateTopic(request)).await.unwrap();

        let mut per_shard = BTreeMap::new();
        let mut threads = BTreeSet::new();
        for p in 0..PARTITIONS {
            let place = node.replica_shard("spread", PartitionId(p)).unwrap();
            *per_shard.entry(place.index).or_insert(0) += 1;
            threads.insert(format!("{:?}", place.thread));
            assert_ne!(place.thread, main, "partition {p} runs on the main thread");
        }
        assert_eq!(per_shard, BTreeMap::from([(0, 2), (1, 2)]));
        assert_eq!(threads.len(), 2, "{threads:?}");

        for p in 0..PARTITIONS {
            assert_eq!(produce(&node, p, &format!("first-{p}")).await, Offset(0));
            assert_eq!(produce(&node, p, &format!("second-{p}")).await, Offset(1));
        }
        for p in 0..PARTITIONS {
            assert_eq!(
                values(&node, p).await,
                [format!("first-{p}"), format!("second-{p}")]
            );
        }
        node.shutdown().await;

        // The store closed with the shards stopped: it opens again, and what was acknowledged
        // is there whatever the shard count.
        let node = start(dir.path(), 1).await;
        for p in 0..PARTITIONS {
            assert_eq!(
                values(&node, p).await,
                [format!("first-{p}"), format!("second-{p}")]
            );
            assert_eq!(
                node.replica_shard("spread", PartitionId(p)).unwrap().thread,
                main
            );
        }
        node.shutdown().await;
    });
}
