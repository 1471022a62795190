//! Administers a broker: creates a topic with settings, lists and describes topics, and shows
//! the consumer groups with their lag.
//!
//! ```sh
//! cargo run -p gregor-client --example admin -- 127.0.0.1:9092
//! ```

use gregor_client::protocol::api::{ErrorCode, TopicConfigOverrides};
use gregor_client::{Admin, ClientConfig, ClientError, NewTopic};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let admin = Admin::connect(ClientConfig::new(&bootstrap)).await?;

    let audit = NewTopic::new("audit")
        .partitions(4)
        .config(TopicConfigOverrides {
            retention_ms: Some(24 * 60 * 60 * 1000),
            ..TopicConfigOverrides::default()
        });
    match admin.create_topic(audit).await {
        Ok(created) => println!(
            "created {} ({} partitions)",
            created.name,
            created.partitions.len()
        ),
        Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => println!("audit exists"),
        Err(e) => return Err(e),
    }

    for topic in admin.list_topics(false).await? {
        let description = admin.describe_topic(&topic.name).await?;
        println!(
            "topic {}: retention {} ms",
            description.name, description.config.retention_ms
        );
        for p in &description.partitions {
            println!(
                "  partition {}: leader {:?}, offsets {}..{}",
                p.partition, p.leader, p.log_start_offset, p.high_watermark
            );
        }
    }

    for group in admin.list_groups().await? {
        let description = admin.describe_group(&group).await?;
        let lag: u64 = description.partitions.iter().map(|p| p.lag).sum();
        println!("group {group}: {lag} records behind");
    }
    Ok(())
}
