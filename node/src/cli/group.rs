//! `gregor group list|describe|reset`, like `kafka-consumer-groups`.

use super::args::{parse_datetime, parse_duration_ms};
use super::{table, ConnectArgs};
use clap::{ArgGroup, Args, Subcommand};
use gregor_client::Admin;
use gregor_protocol::api::{GroupDescription, OffsetReset, ResetTarget};
use gregor_protocol::Offset;

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups
    List,
    /// Show a group's committed offsets and lag
    Describe {
        /// Consumer group name
        group: String,
    },
    /// Move a group's committed offsets on one topic
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "by_duration"])
))]
pub struct ResetArgs {
    /// Consumer group name
    pub group: String,
    /// Topic whose partitions are reset (all of them)
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// To the oldest record still kept
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end: skip everything not yet read
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (clamped into the log)
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
    /// To the first record at or after this RFC 3339 time
    #[arg(long, value_name = "TIME", value_parser = parse_datetime)]
    pub to_datetime: Option<i64>,
    /// To the first record of this long ago (5h, 2d): re-read that much
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub by_duration: Option<u64>,
    /// Show what would change without committing
    #[arg(long)]
    pub dry_run: bool,
}

impl ResetArgs {
    fn target(&self) -> ResetTarget {
        if self.to_earliest {
            ResetTarget::Earliest
        } else if self.to_latest {
            ResetTarget::Latest
        } else if let Some(offset) = self.to_offset {
            ResetTarget::Offset(Offset(offset))
        } else if let Some(ms) = self.to_datetime {
            ResetTarget::Timestamp(ms)
        } else if let Some(ms) = self.by_duration {
            ResetTarget::DurationAgo(ms)
        } else {
            unreachable!("clap requires one reset target")
        }
    }
}

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(args.connect.client_config("gregor-group")).await?;
    match args.command {
        GroupCommand::List => {
            for group in admin.list_groups().await? {
                println!("{group}");
            }
        }
        GroupCommand::Describe { group } => {
            print!("{}", describe(&admin.describe_group(&group).await?));
        }
        GroupCommand::Reset(reset) => {
            let changes = admin
                .reset_offsets(&reset.group, &reset.topic, reset.target(), reset.dry_run)
                .await?;
            print!("{}", reset_report(&reset.topic, &changes));
            if reset.dry_run {
                eprintln!("dry run: nothing was committed; run again without --dry-run to apply");
            } else {
                eprintln!("reset group {} on topic {}", reset.group, reset.topic);
            }
        }
    }
    Ok(())
}

pub fn describe(group: &GroupDescription) -> String {
    let rows: Vec<Vec<String>> = group
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.committed.to_string(),
                p.log_end.to_string(),
                p.lag.to_string(),
            ]
        })
        .collect();
    format!(
        "Group: {}\n{}",
        group.group,
        table::render(
            &[
                "TOPIC",
                "PARTITION",
                "COMMITTED-OFFSET",
                "LOG-END-OFFSET",
                "LAG"
            ],
            &rows
        )
    )
}

/// One line per partition: `TOPIC PARTITION: OLD -> NEW`.
pub fn reset_report(topic: &str, changes: &[OffsetReset]) -> String {
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                topic.to_owned(),
                c.partition.to_string(),
                c.previous
                    .map_or_else(|| "none".to_owned(), |p| p.to_string()),
                "->".to_owned(),
                c.offset.to_string(),
            ]
        })
        .collect();
    table::render(&["TOPIC", "PARTITION", "OLD", "", "NEW"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_protocol::api::GroupPartitionLag;
    use gregor_protocol::PartitionId;

    #[test]
    fn describe_has_a_row_per_partition_with_lag() {
        let text = describe(&GroupDescription {
            group: "g".into(),
            partitions: vec![GroupPartitionLag {
                topic: "orders".into(),
                partition: PartitionId(0),
                committed: Offset(5),
                log_end: Offset(12),
                lag: 7,
            }],
        });
        assert_eq!(
            text,
            "Group: g\nTOPIC   PARTITION  COMMITTED-OFFSET  LOG-END-OFFSET  LAG\norders  0          5                 12              7\n"
        );
    }

    #[test]
    fn reset_report_prints_old_and_new_offsets() {
        let text = reset_report(
            "orders",
            &[
                OffsetReset {
                    partition: PartitionId(0),
                    previous: Some(Offset(120)),
                    offset: Offset(0),
                },
                OffsetReset {
                    partition: PartitionId(1),
                    previous: None,
                    offset: Offset(3),
                },
            ],
        );
        assert!(text.contains("orders  0          120   ->  0\n"), "{text}");
        assert!(text.contains("orders  1          none  ->  3\n"), "{text}");
    }

    #[test]
    fn exactly_one_reset_target_is_required() {
        use super::super::Cli;
        use clap::Parser;
        assert!(Cli::try_parse_from(["gregor", "group", "reset", "g", "--topic", "t"]).is_err());
        assert!(Cli::try_parse_from([
            "gregor",
            "group",
            "reset",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest"
        ])
        .is_err());
        let cli = Cli::try_parse_from([
            "gregor",
            "group",
            "reset",
            "g",
            "--topic",
            "t",
            "--by-duration",
            "5h",
        ])
        .expect("valid");
        let super::super::Command::Group(GroupArgs {
            command: GroupCommand::Reset(reset),
            ..
        }) = cli.command
        else {
            panic!("not a reset")
        };
        assert_eq!(reset.target(), ResetTarget::DurationAgo(5 * 3600 * 1000));
    }
}
