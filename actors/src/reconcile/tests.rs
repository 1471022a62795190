//! Table-driven reconciliation tests (`testdata/reconcile/*.txt`): metadata commands (see
//! `metadata::test_harness`), then `local running=G,.. stored=.. deleting=.. state=..` (groups
//! as `topic/partition`, or `#id` for a group whose topic is gone) and `plan N` (the actions for
//! node N).

use super::plan::{plan, Action, Local, StartMode};
use crate::metadata::test_harness::Harness;
use crate::testdata::{run_file, Args};
use gregor_storage::{GroupId, NodeId, PartitionId};
use std::collections::BTreeSet;

struct Reconcile {
    metadata: Harness,
    local: Local,
}

impl Reconcile {
    fn group(&self, name: &str) -> GroupId {
        if let Some(id) = name.strip_prefix('#') {
            return GroupId(id.parse().expect("group id"));
        }
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

    fn groups(&self, args: &Args, key: &str) -> BTreeSet<GroupId> {
        args.get(key)
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|g| self.group(g))
            .collect()
    }

    fn run(&mut self, line: &str) -> String {
        if let Some(out) = self.metadata.try_run(line) {
            return out;
        }
        let args = Args::parse(line);
        match args.word(0) {
            "local" => {
                self.local = Local {
                    running: self.groups(&args, "running"),
                    stored: self.groups(&args, "stored"),
                    deleting: self.groups(&args, "deleting"),
                    with_state: self
                        .groups(&args, "state")
                        .union(&self.groups(&args, "log"))
                        .copied()
                        .collect(),
                    with_log: self.groups(&args, "log"),
                };
                "ok".into()
            }
            "plan" => {
                let node = NodeId(args.word(1).parse().expect("node"));
                let actions = plan(self.metadata.core.view(), node, &self.local);
                if actions.is_empty() {
                    return "nothing".into();
                }
                actions
                    .iter()
                    .map(|action| match action {
                        Action::Stop { group } => format!("stop {}", self.name(*group)),
                        Action::Delete { group } => format!("delete {}", self.name(*group)),
                        Action::Start { replica, mode } => {
                            let name = self.name(replica.group());
                            match mode {
                                StartMode::Found => format!("start {name} found"),
                                StartMode::Seed { founder } => {
                                    format!("start {name} seeded by {founder}")
                                }
                                StartMode::Join => format!("start {name} join"),
                                StartMode::Restart => format!("start {name} restart"),
                            }
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            other => panic!("unknown command {other}"),
        }
    }
}

#[test]
fn reconcile() {
    let mut harness = Reconcile {
        metadata: Harness::new(),
        local: Local::default(),
    };
    run_file("testdata/reconcile/plans.txt", |input| {
        harness.run(&input[0])
    });
}
