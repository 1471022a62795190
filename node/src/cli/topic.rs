//! `gregor topic create|list|describe|delete`.

use super::args::{parse_message_size, parse_retention, parse_size};
use super::{table, ConnectArgs};
use clap::{Args, Subcommand};
use gregor_client::{Admin, NewTopic};
use gregor_protocol::api::{TopicConfig, TopicConfigOverrides, TopicDescription};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic
    Create(CreateArgs),
    /// List topic names
    List {
        /// Include internal topics (names starting with __)
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions: leader, replicas, lagging replicas and offsets
    Describe {
        /// Topic name
        name: String,
        /// Print the description as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic and its records
    Delete {
        /// Topic name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name: letters, digits, '.', '_' and '-', up to 249 characters
    pub name: String,
    /// Number of partitions (the unit of order and parallelism)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub partitions: u32,
    /// Copies of each partition, on different nodes
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub replication_factor: u16,
    /// How long records are kept: 7d, 12h, 30min, or -1/forever [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = parse_retention, allow_hyphen_values = true)]
    pub retention: Option<i64>,
    /// Per-partition size bound: 1GiB, 500MB, or -1/unlimited [default: unlimited]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
    pub retention_bytes: Option<i64>,
    /// Largest record batch accepted [default: 1MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_message_size)]
    pub max_message_bytes: Option<u32>,
}

pub async fn run(args: TopicArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(args.connect.client_config("gregor-topic")).await?;
    match args.command {
        TopicCommand::Create(create) => {
            let topic = NewTopic::new(&create.name)
                .partitions(create.partitions)
                .replication_factor(create.replication_factor)
                .config(TopicConfigOverrides {
                    retention_ms: create.retention,
                    retention_bytes: create.retention_bytes,
                    max_message_bytes: create.max_message_bytes,
                });
            let created = admin.create_topic(topic).await?;
            println!(
                "created topic {} with {} partition{} (replication factor {})",
                created.name,
                created.partitions.len(),
                if created.partitions.len() == 1 {
                    ""
                } else {
                    "s"
                },
                created.replication_factor
            );
        }
        TopicCommand::List { internal } => {
            for topic in admin.list_topics(internal).await? {
                println!("{}", topic.name);
            }
        }
        TopicCommand::Describe { name, json } => {
            let topic = admin.describe_topic(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&topic)?);
            } else {
                print!("{}", describe(&topic));
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

/// The `describe` text: a summary line, then one row per partition.
pub fn describe(topic: &TopicDescription) -> String {
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.leader
                    .map_or_else(|| "none".to_owned(), |l| l.to_string()),
                p.replicas
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                if p.lagging.is_empty() {
                    "-".to_owned()
                } else {
                    p.lagging
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
                p.log_start_offset.to_string(),
                p.high_watermark.to_string(),
            ]
        })
        .collect();
    format!(
        "Topic: {}  Partitions: {}  ReplicationFactor: {}{}  Configs: {}\n{}",
        topic.name,
        topic.partitions.len(),
        topic.replication_factor,
        if topic.internal {
            "  Internal: true"
        } else {
            ""
        },
        configs(&topic.config),
        table::render(
            &[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "LAGGING",
                "LOG-START",
                "HIGH-WATERMARK"
            ],
            &rows
        )
    )
}

fn configs(config: &TopicConfig) -> String {
    let retention = match u64::try_from(config.retention_ms) {
        Ok(ms) => format!(
            "{ms} ({})",
            humantime::format_duration(Duration::from_millis(ms))
        ),
        Err(_) => "-1 (forever)".to_owned(),
    };
    let retention_bytes = if config.retention_bytes < 0 {
        "-1 (unlimited)".to_owned()
    } else {
        config.retention_bytes.to_string()
    };
    format!(
        "retention.ms={retention}, retention.bytes={retention_bytes}, max.message.bytes={}",
        config.max_message_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_protocol::api::PartitionDescription;
    use gregor_protocol::{NodeId, Offset, PartitionId};

    #[test]
    fn describe_shows_config_and_a_row_per_partition() {
        let topic = TopicDescription {
            name: "orders".into(),
            replication_factor: 1,
            internal: false,
            config: TopicConfig::default(),
            partitions: vec![
                PartitionDescription {
                    partition: PartitionId(0),
                    leader: Some(NodeId(1)),
                    replicas: vec![NodeId(1)],
                    log_start_offset: Offset(0),
                    high_watermark: Offset(42),
                    lagging: vec![],
                },
                PartitionDescription {
                    partition: PartitionId(1),
                    leader: None,
                    replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
                    log_start_offset: Offset(3),
                    high_watermark: Offset(7),
                    lagging: vec![NodeId(2), NodeId(3)],
                },
            ],
        };
        let text = describe(&topic);
        assert!(text.starts_with(
            "Topic: orders  Partitions: 2  ReplicationFactor: 1  Configs: retention.ms=604800000 (7days), retention.bytes=-1 (unlimited), max.message.bytes=1048576\n"
        ), "{text}");
        assert!(
            text.contains("PARTITION  LEADER  REPLICAS  LAGGING  LOG-START  HIGH-WATERMARK\n"),
            "{text}"
        );
        assert!(
            text.contains("\n1          none    1,2,3     2,3      3          7\n"),
            "{text}"
        );
    }
}
