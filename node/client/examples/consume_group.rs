//! Reads a topic as a member of a consumer group: the group's coordinator assigns this member
//! its share of the partitions (start several copies and they split the topic between them),
//! each from the group's committed offsets (or the earliest record for a new group). It prints
//! each record; positions are committed every 5 s by `poll`, and when a partition moves to
//! another member. It leaves the group once it has caught up.
//!
//! ```sh
//! cargo run -p gregor-client --example consume_group -- 127.0.0.1:9092 orders billing
//! ```

use gregor_client::{
    AutoOffsetReset, ClientError, Consumer, ConsumerConfig, RebalanceListener, TopicPartition,
};
use std::time::Duration;

/// Says which partitions the group gives and takes away.
struct Report;

impl RebalanceListener for Report {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        println!("assigned {partitions:?}");
    }

    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        println!("revoked {partitions:?} (positions committed)");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "orders".into());
    let group = args.next().unwrap_or_else(|| "billing".into());

    let config = ConsumerConfig::new(&bootstrap)
        .group(&group)
        .auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = Consumer::connect(config).await?;
    consumer.set_rebalance_listener(Report);
    consumer.subscribe(&[&topic])?;
    loop {
        let records = consumer.poll(Duration::from_secs(1)).await?;
        for record in &records {
            let value = record.value.as_deref().unwrap_or_default();
            println!(
                "{}/{} @{}: {}",
                record.topic,
                record.partition,
                record.offset,
                String::from_utf8_lossy(value)
            );
        }
        if records.is_empty() && !consumer.assignment().is_empty() && consumer.at_end() {
            // Commits what was read and leaves: the group moves the partitions at once.
            consumer.close().await?;
            println!("caught up; group {group} committed its position");
            return Ok(());
        }
    }
}
