//! Drives a [`MetadataCore`] with command lines, for the table-driven tests of the metadata
//! rules and of what builds on them (reconciliation, operations).
//!
//! Commands: `register N [rack=R]`, `state N active|draining|removed`,
//! `create NAME partitions=P rf=R assign=1,2;2,3 [internal] [creation=ID]`, `delete NAME [id=I]`,
//! `move NAME P target=1,2,3 [rev=N]`, `complete NAME P [rev=N]`, `alloc N`, `gap N` (entries
//! that are not commands: blank or membership), `show`. After every command the rows must
//! reload to the same view.

use super::command::{decode_command, encode_command, MetadataCommand};
use super::core::MetadataCore;
use super::records::NodeState;
use super::rows::MemRows;
use crate::api::TopicConfig;
use crate::testdata::{list, nodes, Args};
use gregor_storage::{NodeId, PartitionId, TopicId};
use std::fmt::Write as _;

pub(crate) struct Harness {
    pub core: MetadataCore,
    pub rows: MemRows,
    pub index: u64,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            core: MetadataCore::default(),
            rows: MemRows::default(),
            index: 0,
        }
    }

    fn topic_id(&self, name: &str) -> TopicId {
        self.core
            .view()
            .topic(name)
            .map_or(TopicId(999), |t| t.record.id)
    }

    fn revision(&self, name: &str, partition: PartitionId) -> u64 {
        self.core
            .view()
            .topic(name)
            .and_then(|t| t.assignment(partition))
            .map_or(0, |a| a.revision)
    }

    fn command(&self, args: &Args) -> Option<MetadataCommand> {
        let partition = || PartitionId(args.word(2).parse().expect("partition"));
        Some(match args.word(0) {
            "register" => {
                let node = args.word(1);
                MetadataCommand::RegisterNode {
                    node: NodeId(node.parse().expect("node")),
                    client_addr: format!("n{node}:9092"),
                    peer_addr: format!("n{node}:7000"),
                    rack: args.get("rack").map(str::to_string),
                }
            }
            "state" => MetadataCommand::SetNodeState {
                node: NodeId(args.word(1).parse().expect("node")),
                state: match args.word(2) {
                    "active" => NodeState::Active,
                    "draining" => NodeState::Draining,
                    "removed" => NodeState::Removed,
                    other => panic!("state {other}"),
                },
            },
            "create" => MetadataCommand::CreateTopic {
                name: args.word(1).to_string(),
                partitions: args.num("partitions"),
                replication_factor: args.num("rf"),
                config: TopicConfig::default(),
                internal: args.has("internal"),
                assignment: args
                    .get("assign")
                    .unwrap_or("")
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(nodes)
                    .collect(),
                creation_id: args
                    .get("creation")
                    .map(|id| id.parse().expect("creation id")),
            },
            "delete" => MetadataCommand::DeleteTopic {
                name: args.word(1).to_string(),
                id: TopicId(args.num_or("id", self.topic_id(args.word(1)).0)),
            },
            "move" => MetadataCommand::MovePartition {
                topic: self.topic_id(args.word(1)),
                partition: partition(),
                target: nodes(args.get("target").expect("target=")),
                expected_revision: args.num_or("rev", self.revision(args.word(1), partition())),
            },
            "complete" => MetadataCommand::CompleteMove {
                topic: self.topic_id(args.word(1)),
                partition: partition(),
                revision: args.num_or("rev", self.revision(args.word(1), partition())),
            },
            "alloc" => MetadataCommand::AllocateProducerIds {
                count: args.word(1).parse().expect("count"),
            },
            _ => return None,
        })
    }

    /// Runs one command line; `None` when it is not a metadata command.
    pub fn try_run(&mut self, line: &str) -> Option<String> {
        let args = Args::parse(line);
        match args.word(0) {
            "show" => return Some(self.show()),
            "gap" => {
                self.index += args.word(1).parse::<u64>().expect("gap");
                return Some("ok".into());
            }
            _ => {}
        }
        let command = self.command(&args)?;
        Some(self.apply(command))
    }

    /// Applies `command` as the next entry, through its log encoding, and checks that the
    /// rows reload to the same view.
    pub fn apply(&mut self, command: MetadataCommand) -> String {
        let command = decode_command(&encode_command(&command)).expect("round trip");
        self.index += 1;
        let outcome = self
            .core
            .apply(self.index, &command, &mut self.rows)
            .expect("apply");
        let reloaded = MetadataCore::load(&self.rows).expect("reload");
        assert_eq!(
            reloaded, self.core,
            "rows and view disagree after {command:?}"
        );
        format!("{outcome:?}")
    }

    pub fn show(&self) -> String {
        let view = self.core.view();
        let mut out = String::new();
        for node in view.nodes() {
            let _ = writeln!(
                out,
                "node {} {} rack={}",
                node.id,
                node.state.name(),
                node.rack.as_deref().unwrap_or("-")
            );
        }
        for topic in view.topics() {
            let r = &topic.record;
            let _ = writeln!(
                out,
                "topic {} id={} partitions={} rf={} internal={} created={}",
                r.name,
                r.id,
                r.partitions,
                r.replication_factor,
                r.internal,
                topic.created_revision
            );
            for (p, a) in topic.assignments.iter().enumerate() {
                let mut target = a
                    .target
                    .as_ref()
                    .map_or(String::new(), |t| format!(" target={}", list(t)));
                if !a.retiring.is_empty() {
                    target += &format!(" retiring={}", list(&a.retiring));
                }
                let _ = writeln!(
                    out,
                    "  p{p} replicas={}{target} rev={}",
                    list(&a.replicas),
                    a.revision
                );
            }
        }
        let _ = write!(
            out,
            "next_topic_id={} next_producer_id={} last_index={}",
            view.next_topic_id(),
            view.next_producer_id(),
            view.last_index()
        );
        out
    }
}
