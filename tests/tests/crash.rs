//! kill -9 under load: every record acknowledged with acks=all is back after a restart, at the
//! offset it was acknowledged with, and offsets stay contiguous.

use gregor::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, SeekTo, TopicPartition,
};
use gregor_actors::api::Acks;
use gregor_storage::{Offset, PartitionId};
use gregor_tests::Node;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARTITIONS: u32 = 4;

type Acked = Arc<Mutex<BTreeMap<(u32, u64), String>>>;

#[test]
fn kill_9_under_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let address = node.address.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let acked: Acked = Arc::default();
    let (enough_tx, enough_rx) = std::sync::mpsc::channel::<()>();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let acked = acked.clone();
        let address = address.clone();
        let stop = stop.clone();
        runtime.spawn(async move {
            let admin = Admin::connect(ClientConfig::new(&address)).await.unwrap();
            admin
                .create_topic(NewTopic::new("load").partitions(PARTITIONS))
                .await
                .unwrap();
            let mut config = ProducerConfig::new(&address);
            // No retries: once the node is gone, every outstanding send resolves at once.
            config.client = ClientConfig::new(&address).retries(0);
            config.acks = Acks::All;
            config.linger = Duration::from_millis(2);
            let producer = Producer::connect(config).await.unwrap();
            let mut deliveries = tokio::task::JoinSet::new();
            let mut signalled = false;
            for i in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let value = format!("record-{i}");
                let key = format!("key-{}", i % 16);
                let Ok(delivery) = producer
                    .send(ProducerRecord::new("load", value.as_bytes()).key(key.as_bytes()))
                    .await
                else {
                    break;
                };
                let acked_by_task = acked.clone();
                deliveries.spawn(async move {
                    if let Ok(meta) = delivery.await {
                        let offset = meta.offset.expect("acks=all reports offsets");
                        acked_by_task
                            .lock()
                            .unwrap()
                            .insert((meta.partition.0, offset.0), value);
                    }
                });
                while deliveries.try_join_next().is_some() {}
                if !signalled && acked.lock().unwrap().len() >= 20_000 {
                    signalled = true;
                    let _ = enough_tx.send(());
                }
            }
            while deliveries.join_next().await.is_some() {}
        })
    };
    enough_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("20,000 records acknowledged before the kill");
    node.kill9();
    stop.store(true, Ordering::SeqCst);
    // Every outstanding send fails once the node is gone; what was acknowledged is final.
    runtime.block_on(producing).unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 20_000);

    let node = Node::start(dir.path(), &address);
    let found = runtime.block_on(read_everything(&node.address));
    let mut lost = Vec::new();
    for ((partition, offset), value) in &acked {
        match found.get(&(*partition, *offset)) {
            Some(v) if v == value => {}
            other => lost.push(format!(
                "{partition}/{offset}: acknowledged {value}, found {other:?}"
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost or changed, first: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

async fn read_everything(address: &str) -> BTreeMap<(u32, u64), String> {
    let mut consumer = Consumer::connect(ConsumerConfig::new(address))
        .await
        .unwrap();
    consumer.assign("load", None).await.unwrap();
    let mut found = BTreeMap::new();
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new("load", PartitionId(p));
        let start = consumer.seek(&tp, SeekTo::Earliest).await.unwrap();
        assert_eq!(start, Offset(0));
    }
    while !consumer.at_end() {
        for record in consumer.poll(Duration::from_secs(5)).await.unwrap() {
            let p = record.partition.0;
            let expected = next.entry(p).or_insert(0);
            assert_eq!(
                record.offset.0, *expected,
                "offsets of partition {p} are contiguous"
            );
            *expected += 1;
            let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
            found.insert((p, record.offset.0), value);
        }
    }
    found
}
