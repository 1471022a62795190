//! `gregor group list|describe|config|reset`, like `kafka-consumer-groups` (and `kafka-configs
//! --entity-type groups` for `config`).

use super::args::{parse_datetime, parse_duration_ms};
use super::{table, ConnectArgs};
use clap::{ArgGroup, Args, Subcommand};
use gregor_client::Admin;
use gregor_protocol::api::{
    GroupConfigDescription, GroupDescription, MemberDescription, OffsetReset, ResetTarget,
    Subscription, TopicPartitions,
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
    /// Show or set a group's configuration (its members' session timeout)
    Config(ConfigArgs),
    /// Move a group's committed offsets on one topic
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Consumer group name
    pub group: String,
    /// Expel a member after this long without a heartbeat (10s, 2min; Kafka's
    /// group.consumer.session.timeout.ms), within the broker's bounds; `default` goes back to
    /// the broker's. Applies to members that ask for no timeout of their own.
    #[arg(long, value_name = "DURATION|default", value_parser = parse_session_timeout)]
    pub session_timeout: Option<SessionTimeout>,
    /// Print the configuration as JSON
    #[arg(long)]
    pub json: bool,
}

/// A value for `--session-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimeout {
    Ms(u32),
    BrokerDefault,
}

fn parse_session_timeout(s: &str) -> Result<SessionTimeout, String> {
    if s.trim() == "default" {
        return Ok(SessionTimeout::BrokerDefault);
    }
    let ms = parse_duration_ms(s)?;
    u32::try_from(ms)
        .map(SessionTimeout::Ms)
        .map_err(|_| format!("'{s}' is too long a session timeout"))
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
        GroupCommand::Config(config) => {
            let description = match config.session_timeout {
                None => admin.describe_group_config(&config.group).await?,
                Some(timeout) => {
                    let ms = match timeout {
                        SessionTimeout::Ms(ms) => Some(ms),
                        SessionTimeout::BrokerDefault => None,
                    };
                    admin.alter_group_config(&config.group, ms).await?
                }
            };
            if config.json {
                println!("{}", serde_json::to_string_pretty(&description)?);
            } else {
                print!("{}", config_report(&description));
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
    if group.session_timeout_ms > 0 {
        text.push_str(&format!(
            "Session timeout: {} ms\n",
            group.session_timeout_ms
        ));
    }
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

/// `gregor group config`'s text: the value, where it comes from, and the broker's bounds.
pub fn config_report(config: &GroupConfigDescription) -> String {
    let origin = match config.session_timeout_ms {
        Some(_) => "group config".to_owned(),
        None => format!(
            "broker default; the group sets none (gregor group config {} --session-timeout \
             DURATION)",
            config.group
        ),
    };
    format!(
        "Group: {}\nSession timeout: {} ms ({origin})\nBroker bounds: {} to {} ms, default {} ms\n",
        config.group,
        config.effective_session_timeout_ms,
        config.min_session_timeout_ms,
        config.max_session_timeout_ms,
        config.default_session_timeout_ms
    )
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
            session_timeout_ms: 0,
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
    fn config_takes_a_duration_or_default_and_says_where_the_value_comes_from() {
        use super::super::Cli;
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut all = vec!["gregor", "group", "config", "g"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).map(|cli| cli.command) {
                Ok(super::super::Command::Group(GroupArgs {
                    command: GroupCommand::Config(config),
                    ..
                })) => Ok(config.session_timeout),
                Ok(_) => panic!("not a group config"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(
            parse(&["--session-timeout", "10s"]),
            Ok(Some(SessionTimeout::Ms(10_000)))
        );
        assert_eq!(
            parse(&["--session-timeout", "default"]),
            Ok(Some(SessionTimeout::BrokerDefault))
        );
        assert!(parse(&["--session-timeout", "soon"]).is_err());
        let mut config = GroupConfigDescription {
            group: "g".into(),
            session_timeout_ms: Some(10_000),
            effective_session_timeout_ms: 10_000,
            default_session_timeout_ms: 45_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 1_800_000,
        };
        let text = config_report(&config);
        assert!(
            text.contains("Session timeout: 10000 ms (group config)\n"),
            "{text}"
        );
        assert!(
            text.contains("Broker bounds: 1000 to 1800000 ms, default 45000 ms"),
            "{text}"
        );
        config.session_timeout_ms = None;
        config.effective_session_timeout_ms = 45_000;
        assert!(config_report(&config).contains("45000 ms (broker default"));
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
