//! `gregor group list|describe|reset`, like `kafka-consumer-groups`.

use super::args::{parse_datetime, parse_duration_ms};
use super::{table, ConnectArgs};
use clap::{ArgGroup, Args, Subcommand};
use gregor_client::Admin;
use gregor_protocol::api::{
    GroupDescription, MemberDescription, OffsetReset, ResetTarget, Subscription, TopicPartitions,
};
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
    /// Show a group's state, members and their partitions, committed offsets and lag
    Describe {
        /// Consumer group name
        group: String,
        /// Print the description as JSON
        #[arg(long)]
        json: bool,
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
        GroupCommand::Describe { group, json } => {
            let description = admin.describe_group(&group).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&description)?);
            } else {
                print!("{}", describe(&description));
            }
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
                owner_of(&group.members, &p.topic, p.partition.0),
            ]
        })
        .collect();
    let mut text = format!(
        "Group: {}\nState: {}\nEpoch: {}\n",
        group.group, group.state, group.group_epoch
    );
    if !group.members.is_empty() {
        text.push_str(&format!("Members: {}\n", group.members.len()));
        text.push_str(&members_table(&group.members));
    }
    text.push_str(&table::render(
        &[
            "TOPIC",
            "PARTITION",
            "COMMITTED-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER",
        ],
        &rows,
    ));
    text
}

fn members_table(members: &[MemberDescription]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.member_id.clone(),
                m.instance_id.clone().unwrap_or_else(|| "-".into()),
                m.client_id.clone(),
                m.host.clone().unwrap_or_else(|| "-".into()),
                m.member_epoch.to_string(),
                match &m.subscription {
                    Subscription::Topics(topics) => topics.join(","),
                    Subscription::Pattern(pattern) => format!("/{pattern}/"),
                },
                partitions(&m.assigned),
                partitions(&m.revoking),
            ]
        })
        .collect();
    table::render(
        &[
            "MEMBER",
            "INSTANCE",
            "CLIENT-ID",
            "HOST",
            "EPOCH",
            "SUBSCRIBED",
            "ASSIGNED",
            "REVOKING",
        ],
        &rows,
    )
}

/// `orders/0,1 refunds/2`, or `-` for none.
fn partitions(list: &[TopicPartitions]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = list
        .iter()
        .map(|t| {
            let numbers: Vec<String> = t.partitions.iter().map(ToString::to_string).collect();
            format!("{}/{}", t.topic, numbers.join(","))
        })
        .collect();
    parts.join(" ")
}

fn owner_of(members: &[MemberDescription], topic: &str, partition: u32) -> String {
    members
        .iter()
        .find(|m| {
            m.assigned
                .iter()
                .chain(&m.revoking)
                .any(|t| t.topic == topic && t.partitions.iter().any(|p| p.0 == partition))
        })
        .map_or_else(|| "-".into(), |m| m.member_id.clone())
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
            state: "stable".into(),
            group_epoch: 3,
            members: vec![MemberDescription {
                member_id: "c-1.1".into(),
                instance_id: None,
                client_id: "c".into(),
                host: None,
                member_epoch: 3,
                subscription: Subscription::Topics(vec!["orders".into()]),
                assigned: vec![TopicPartitions {
                    topic: "orders".into(),
                    partitions: vec![PartitionId(0), PartitionId(1)],
                }],
                revoking: vec![],
            }],
        });
        assert!(
            text.starts_with("Group: g\nState: stable\nEpoch: 3\nMembers: 1\n"),
            "{text}"
        );
        assert!(
            text.contains("c-1.1   -         c          -     3      orders      orders/0,1  -"),
            "{text}"
        );
        assert!(
            text.contains("orders  0          5                 12              7    c-1.1\n"),
            "{text}"
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
