//! Table-driven tests of the metadata leader's planner (`testdata/operations/*.txt`).
//!
//! Metadata commands as in `metadata::test_harness`, then: `live 1,2,3 [racks=1:a,2:b]`
//! (gossip's live nodes, publishing the harness's registered addresses), `dead 4=700` (seconds
//! a node has been seen dead), `voters 1,2,3`, `leaders t/0=1 t/1=2`, `muted t/0`,
//! `leaderless t/0` (partitions no node is known to lead),
//! `settings [moves=N] [grace=S] [voters=N|list:1,2] [offsets=P/R] [step_downs=N]
//! [imbalance=PERCENT]`, `plan`
//! (prints the plan) and `apply` (plans, then applies the plan's commands and voters).

use super::planner::{plan, LiveNode, Observed, OperationSettings, Plan, VoterTarget};
use crate::metadata::command::MetadataCommand;
use crate::metadata::test_harness::Harness;
use crate::testdata::{list, nodes, run_file, Args};
use gregor_storage::{GroupId, NodeId, PartitionId};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

struct Operations {
    metadata: Harness,
    observed: Observed,
    settings: OperationSettings,
}

impl Operations {
    fn group(&self, name: &str) -> GroupId {
        let (topic, partition) = name.split_once('/').expect("topic/partition");
        let topic = self.metadata.core.view().topic(topic).expect("topic");
        topic
            .record
            .group_of(PartitionId(partition.parse().expect("partition")))
    }

    fn name(&self, group: GroupId) -> String {
        match self.metadata.core.view().partition_of_group(group) {
            Some(p) => format!("{}/{}", p.topic.record.name, p.partition),
            None => format!("#{}", group.0),
        }
    }

    fn describe(&self, plan: &Plan) -> String {
        let mut out = String::new();
        for command in &plan.commands {
            let _ = writeln!(out, "{}", self.command(command));
        }
        if let Some(voters) = &plan.voters {
            let voters: Vec<NodeId> = voters.iter().copied().collect();
            let _ = writeln!(out, "voters -> {}", list(&voters));
        }
        let learners: Vec<NodeId> = plan.learners.iter().copied().collect();
        let _ = writeln!(out, "learners {}", list(&learners));
        for step in &plan.step_downs {
            let _ = writeln!(
                out,
                "hand {} from {} to {}",
                self.name(step.group),
                step.leader,
                step.to
            );
        }
        out.trim_end().to_string()
    }

    fn command(&self, command: &MetadataCommand) -> String {
        match command {
            MetadataCommand::RegisterNode { node, rack, .. } => {
                format!("register {node} rack={}", rack.as_deref().unwrap_or("-"))
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                assignment,
                ..
            } => format!(
                "create {name} partitions={partitions} rf={replication_factor} assign={}",
                assignment
                    .iter()
                    .map(|a| list(a))
                    .collect::<Vec<_>>()
                    .join(";")
            ),
            MetadataCommand::MovePartition {
                topic,
                partition,
                target,
                expected_revision,
            } => {
                let group = self
                    .metadata
                    .core
                    .view()
                    .topic_by_id(*topic)
                    .expect("topic")
                    .record
                    .group_of(*partition);
                format!(
                    "move {} target={} rev={expected_revision}",
                    self.name(group),
                    list(target)
                )
            }
            other => format!("{other:?}"),
        }
    }

    fn run(&mut self, line: &str) -> String {
        if let Some(out) = self.metadata.try_run(line) {
            return out;
        }
        let args = Args::parse(line);
        match args.word(0) {
            "live" => {
                let racks: BTreeMap<NodeId, String> = args
                    .get("racks")
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|s| s.split_once(':'))
                    .map(|(n, r)| (NodeId(n.parse().expect("node")), r.to_string()))
                    .collect();
                self.observed.live = nodes(args.word(1))
                    .into_iter()
                    .map(|n| {
                        let live = LiveNode {
                            client_addr: format!("n{n}:9092"),
                            peer_addr: format!("n{n}:7000"),
                            rack: racks.get(&n).cloned(),
                        };
                        (n, live)
                    })
                    .collect();
                "ok".into()
            }
            "dead" => {
                self.observed.dead_for = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|s| s.split_once('='))
                    .map(|(n, secs)| {
                        let secs: u64 = secs.parse().expect("seconds");
                        (NodeId(n.parse().expect("node")), Duration::from_secs(secs))
                    })
                    .collect();
                "ok".into()
            }
            "voters" => {
                self.observed.voters = nodes(args.word(1)).into_iter().collect();
                "ok".into()
            }
            "leaders" => {
                let pairs: Vec<(GroupId, NodeId)> = line
                    .split_whitespace()
                    .skip(1)
                    .map(|spec| {
                        let (group, node) = spec.split_once('=').expect("t/p=N");
                        (self.group(group), NodeId(node.parse().expect("node")))
                    })
                    .collect();
                self.observed.leaders = pairs.into_iter().collect();
                "ok".into()
            }
            "leaderless" => {
                let groups: Vec<GroupId> = line
                    .split_whitespace()
                    .skip(1)
                    .map(|g| self.group(g))
                    .collect();
                self.observed.leaderless = groups.into_iter().collect();
                "ok".into()
            }
            "muted" => {
                let groups: Vec<GroupId> = line
                    .split_whitespace()
                    .skip(1)
                    .map(|g| self.group(g))
                    .collect();
                self.observed.muted = groups.into_iter().collect();
                "ok".into()
            }
            "settings" => {
                let defaults = OperationSettings::default();
                let voters = match args.get("voters") {
                    None => defaults.voters.clone(),
                    Some(v) => match v.strip_prefix("list:") {
                        Some(list) => VoterTarget::List(nodes(list)),
                        None => VoterTarget::Count(v.parse().expect("voters")),
                    },
                };
                let (offsets_partitions, offsets_replication_factor) = args.get("offsets").map_or(
                    (
                        defaults.offsets_partitions,
                        defaults.offsets_replication_factor,
                    ),
                    |o| {
                        let (p, r) = o.split_once('/').expect("P/R");
                        (p.parse().expect("partitions"), r.parse().expect("factor"))
                    },
                );
                self.settings = OperationSettings {
                    dead_grace: Duration::from_secs(args.num_or("grace", 600)),
                    max_moves: args.num_or("moves", defaults.max_moves),
                    max_step_downs: args.num_or("step_downs", defaults.max_step_downs),
                    leader_imbalance_percent: args
                        .num_or("imbalance", defaults.leader_imbalance_percent),
                    leader_balance_interval: defaults.leader_balance_interval,
                    voters,
                    offsets_partitions,
                    offsets_replication_factor,
                };
                "ok".into()
            }
            "plan" => {
                let plan = plan(self.metadata.core.view(), &self.observed, &self.settings);
                self.describe(&plan)
            }
            "apply" => {
                let plan = plan(self.metadata.core.view(), &self.observed, &self.settings);
                let mut out = String::new();
                for command in &plan.commands {
                    let described = self.command(command);
                    let outcome = self.metadata.apply(command.clone());
                    let _ = writeln!(out, "{described}: {outcome}");
                }
                if let Some(voters) = plan.voters {
                    self.observed.voters = voters;
                    let voters: Vec<NodeId> = self.observed.voters.iter().copied().collect();
                    let _ = writeln!(out, "voters now {}", list(&voters));
                }
                if out.is_empty() {
                    return "nothing".into();
                }
                out.trim_end().to_string()
            }
            other => panic!("unknown command {other}"),
        }
    }
}

fn run(path: &str) {
    let mut harness = Operations {
        metadata: Harness::new(),
        observed: Observed::default(),
        settings: OperationSettings::default(),
    };
    run_file(path, |input| harness.run(&input[0]));
}

#[test]
fn bootstrap_and_metadata_voters() {
    run("testdata/operations/bootstrap.txt");
}

#[test]
fn dead_nodes_and_drains() {
    run("testdata/operations/moves.txt");
}

#[test]
fn a_drain_with_nowhere_to_go() {
    run("testdata/operations/nowhere.txt");
}

#[test]
fn spreading() {
    run("testdata/operations/balance.txt");
}

#[test]
fn a_partition_without_a_leader_is_not_moved() {
    run("testdata/operations/leaderless.txt");
}

#[test]
fn leader_balancing() {
    run("testdata/operations/leaders.txt");
}

#[test]
fn leader_balancing_waits_for_the_imbalance_threshold() {
    run("testdata/operations/leader_threshold.txt");
}
