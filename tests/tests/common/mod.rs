//! What the kill -9 tests share: a producer load whose every acknowledgement is noted with the
//! partition and offset it names, a reader of a whole topic, and the comparison of the two.

use gregor::client::TopicPartition;
use gregor::client::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo};
use gregor_storage::PartitionId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Acknowledged records by (partition, offset): the value the producer sent there.
pub type Acked = BTreeMap<(u32, u64), String>;

/// Distinct values `record-N` over 16 keys, sent as fast as the producer takes them until
/// stopped or until a send is refused (the node is gone and the producer does not retry).
pub struct Load {
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Load {
    pub fn start(runtime: &Runtime, config: ProducerConfig, topic: &str) -> Load {
        let acked: Arc<Mutex<Acked>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = runtime.spawn(produce(
            config,
            topic.to_owned(),
            acked.clone(),
            stop.clone(),
        ));
        Load { acked, stop, task }
    }

    pub fn acknowledged(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// The highest offset acknowledged on `partition` so far.
    // Each test binary compiles this module for itself; the one-node test has no use for it.
    #[allow(dead_code)]
    pub fn last_acknowledged_on(&self, partition: u32) -> Option<u64> {
        let acked = self.acked.lock().unwrap();
        let last = acked
            .range((partition, 0)..=(partition, u64::MAX))
            .next_back();
        last.map(|((_, offset), _)| *offset)
    }

    /// Stops sending, waits for every outstanding send to resolve, and returns what was
    /// acknowledged: from then on that set is final.
    pub fn stop(self, runtime: &Runtime) -> Acked {
        self.stop.store(true, Ordering::SeqCst);
        runtime.block_on(self.task).expect("the producing task");
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

async fn produce(
    config: ProducerConfig,
    topic: String,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) {
    let producer = Producer::connect(config).await.unwrap();
    let mut deliveries = tokio::task::JoinSet::new();
    for i in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let value = format!("record-{i}");
        let key = format!("key-{}", i % 16);
        let record = ProducerRecord::new(&topic, value.as_bytes()).key(key.as_bytes());
        let Ok(delivery) = producer.send(record).await else {
            break;
        };
        let acked = acked.clone();
        deliveries.spawn(async move {
            if let Ok(meta) = delivery.await {
                let offset = meta.offset.expect("acks=all reports offsets");
                acked
                    .lock()
                    .unwrap()
                    .insert((meta.partition.0, offset.0), value);
            }
        });
        while deliveries.try_join_next().is_some() {}
        if i % 64 == 0 {
            // Lets the acknowledgements (and the test's polls of them) in under a fast loop.
            tokio::task::yield_now().await;
        }
    }
    while deliveries.join_next().await.is_some() {}
}

/// Every record of `topic`'s `partitions` from offset 0 to the end, by (partition, offset);
/// asserts that each partition's offsets are contiguous from 0.
pub async fn read_everything(config: ConsumerConfig, topic: &str, partitions: u32) -> Acked {
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.assign(topic, None).await.unwrap();
    for p in 0..partitions {
        let tp = TopicPartition::new(topic, PartitionId(p));
        let start = consumer.seek(&tp, SeekTo::Earliest).await.unwrap();
        assert_eq!(start.0, 0, "partition {p} starts at offset 0");
    }
    let mut found = BTreeMap::new();
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    while !consumer.at_end() {
        for record in consumer.poll(Duration::from_secs(5)).await.unwrap() {
            let p = record.partition.0;
            let expected = next.entry(p).or_insert(0);
            assert_eq!(record.offset.0, *expected, "offsets of {p} are contiguous");
            *expected += 1;
            let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
            found.insert((p, record.offset.0), value);
        }
    }
    found
}

/// Acknowledged records not found at their offset with their value, described.
pub fn lost(acked: &Acked, found: &Acked) -> Vec<String> {
    let mut lost = Vec::new();
    for ((partition, offset), value) in acked {
        match found.get(&(*partition, *offset)) {
            Some(v) if v == value => {}
            other => lost.push(format!(
                "{partition}/{offset}: acknowledged {value}, found {other:?}"
            )),
        }
    }
    lost
}
