//! Reads a topic as a member of a consumer group, from the group's committed offsets (or the
//! earliest record for a new group), prints each record, and commits what it has read.
//!
//! ```sh
//! cargo run -p gregor-client --example consume_group -- 127.0.0.1:9092 orders billing
//! ```

use gregor_client::{AutoOffsetReset, ClientError, Consumer, ConsumerConfig};
use std::time::Duration;

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
    // Every partition of the topic; a group member that shares the work would name its own.
    consumer.assign(&topic, None).await?;
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
        // Commits the position of every assigned partition: the next record to read.
        consumer.commit().await?;
        if records.is_empty() && consumer.at_end() {
            println!("caught up; group {group} committed its position");
            return Ok(());
        }
    }
}
