//! kill -9 under load: every record acknowledged with acks=all is back after a restart, at the
//! offset it was acknowledged with, and offsets stay contiguous.

mod common;

use common::{lost, read_everything, Load};
use gregor::client::{Admin, ClientConfig, ConsumerConfig, NewTopic, ProducerConfig};
use gregor_actors::api::Acks;
use gregor_tests::{eventually, Node};
use std::time::Duration;

const PARTITIONS: u32 = 4;

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
    runtime.block_on(async {
        let admin = Admin::connect(ClientConfig::new(&address)).await.unwrap();
        admin
            .create_topic(NewTopic::new("load").partitions(PARTITIONS))
            .await
            .unwrap();
    });
    let mut config = ProducerConfig::new(&address);
    // No retries: once the node is gone, every outstanding send resolves at once.
    config.client = ClientConfig::new(&address).retries(0);
    config.acks = Acks::All;
    config.linger = Duration::from_millis(2);
    let load = Load::start(&runtime, config, "load");
    eventually(
        "20,000 records acknowledged before the kill",
        Duration::from_secs(120),
        || load.acknowledged() >= 20_000,
    );
    node.kill9();
    // Every outstanding send fails once the node is gone; what was acknowledged is final.
    let acked = load.stop(&runtime);
    assert!(acked.len() >= 20_000);

    let node = Node::start(dir.path(), &address);
    let found = runtime.block_on(read_everything(
        ConsumerConfig::new(&node.address),
        "load",
        PARTITIONS,
    ));
    let lost = lost(&acked, &found);
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost or changed, first: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
