//! Table-driven tests of the metadata rules (`testdata/metadata/*.txt`).
//!
//! Commands: `register N [rack=R]`, `state N active|draining|removed`,
//! `create NAME partitions=P rf=R assign=1,2;2,3 [internal]`, `delete NAME [id=I]`,
//! `move NAME P target=1,2,3 [rev=N]`, `complete NAME P [rev=N]`, `alloc N`, `gap N` (entries
//! that are not commands: blank or membership), `show`. After every command the rows must
//! reload to the same view.

use super::command::{decode_command, encode_command, MetadataCommand};
use super::core::MetadataCore;
use super::records::NodeState;
use super::rows::{MemRows, Rows};
use crate::api::TopicConfig;
use crate::testdata::{list, nodes, run_file, Args};
use gregor_storage::{NodeId, PartitionId, TopicId};
use std::fmt::Write as _;

struct Harness {
    core: MetadataCore,
    rows: MemRows,
    index: u64,
}

impl Harness {
    fn new() -> Harness {
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

    fn run(&mut self, input: &[String]) -> String {
        let args = Args::parse(&input[0]);
        match args.word(0) {
            "show" => return self.show(),
            "gap" => {
                self.index += args.word(1).parse::<u64>().expect("gap");
                return "ok".into();
            }
            _ => {}
        }
        let command = self
            .command(&args)
            .unwrap_or_else(|| panic!("unknown: {}", input[0]));
        // Through the encoding, as the log carries it.
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

    fn show(&self) -> String {
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
                let target = a
                    .target
                    .as_ref()
                    .map_or(String::new(), |t| format!(" target={}", list(t)));
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

#[test]
fn topics() {
    let mut harness = Harness::new();
    run_file("testdata/metadata/topics.txt", |input| harness.run(input));
}

#[test]
fn nodes_and_moves() {
    let mut harness = Harness::new();
    run_file("testdata/metadata/moves.txt", |input| harness.run(input));
}

#[test]
fn producer_ids() {
    let mut harness = Harness::new();
    run_file("testdata/metadata/producer_ids.txt", |input| {
        harness.run(input)
    });
}

/// A node whose rows were replaced by a snapshot (newer than its copy) reloads before it
/// applies the next command, so it decides as the nodes that applied every entry.
#[test]
fn rows_newer_than_the_view_are_reloaded_before_applying() {
    let mut leader = Harness::new();
    for line in [
        "register 1",
        "register 2",
        "create a partitions=1 rf=1 assign=1",
        "create b partitions=2 rf=2 assign=1,2;2,1",
    ] {
        leader.run(&[line.to_string()]);
    }
    let mut learner = Harness::new();
    learner.run(&["register 1".to_string()]);
    // The snapshot: the leader's rows replace the learner's.
    learner.rows = leader.rows.clone();
    learner.index = leader.index;
    let next = "create c partitions=1 rf=1 assign=2".to_string();
    assert_eq!(
        leader.run(std::slice::from_ref(&next)),
        learner.run(&[next])
    );
    assert_eq!(leader.core, learner.core);
    assert_eq!(
        learner.core.view().topic("c").unwrap().record.id,
        TopicId(3)
    );
}

#[test]
fn corrupt_rows_are_an_error_not_a_guess() {
    let mut harness = Harness::new();
    harness.run(&["register 1".to_string()]);
    harness.run(&["create a partitions=2 rf=1 assign=1;1".to_string()]);
    let mut rows = harness.rows.clone();
    rows.delete(&super::rows::partition_key(TopicId(1), PartitionId(1)));
    assert!(MetadataCore::load(&rows).is_err());
    let mut rows = harness.rows.clone();
    rows.put(
        &super::rows::node_key(NodeId(1)),
        bytes::Bytes::from_static(b"\xc1"),
    );
    assert!(MetadataCore::load(&rows).is_err());
}
