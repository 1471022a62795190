//! [`Converger`]: brings the Raft membership of every partition this node leads to what its
//! assignment says, one safe step at a time (the group's `change_membership_step`: removals
//! first, a newcomer added as a learner and promoted once caught up), and reports a move whose
//! membership has reached its target with `CompleteMove`, which the metadata leader proposes.
//!
//! A founding replica starts its group alone; this is also what brings the other replicas of a
//! new partition in. Steps run on whichever node leads the partition, so a leader change only
//! hands the work on.

use crate::directory::{Directory, LocalSnapshot};
use crate::metadata::command::MetadataCommand;
use crate::metadata::requests::accepted;
use crate::metadata::service::Propose;
use crate::metadata::MetadataService;
use actix::prelude::*;
use gregor_cluster::StepOutcome;
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Membership steps in flight at once on one node.
const STEPS_IN_FLIGHT: usize = 8;

pub struct Converger {
    directory: Arc<Directory>,
    metadata: Addr<MetadataService>,
    interval: Duration,
    /// Groups with a step or a report in flight.
    in_flight: BTreeSet<GroupId>,
    /// The revision whose completion each group last reported successfully.
    reported: BTreeMap<GroupId, u64>,
    /// The inputs of the last pass, when it found nothing to do: until they change, another
    /// pass would find nothing either, so an idle node skips its walk over every replica.
    idle: Option<LocalSnapshot>,
}

impl Converger {
    pub fn new(
        directory: Arc<Directory>,
        metadata: Addr<MetadataService>,
        interval: Duration,
    ) -> Self {
        Converger {
            directory,
            metadata,
            interval,
            in_flight: BTreeSet::new(),
            reported: BTreeMap::new(),
            idle: None,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let snapshot = self.directory.snapshot();
        if self.in_flight.is_empty() && self.idle.as_ref() == Some(&snapshot) {
            return;
        }
        let found_work = self.pass(ctx);
        self.idle = (!found_work).then_some(snapshot);
    }

    /// One walk over the replicas this node leads; returns whether any needed a step or a
    /// report (or was left for the next pass).
    fn pass(&mut self, ctx: &mut Context<Self>) -> bool {
        let view = self.directory.view();
        let mut found_work = false;
        for replica in self.directory.locals() {
            if self.in_flight.len() >= STEPS_IN_FLIGHT {
                return true;
            }
            let group = replica.group.id();
            if self.in_flight.contains(&group) {
                // Its outcome (a learner still catching up) may change nothing we watch.
                found_work = true;
                continue;
            }
            if !replica.group.is_ready() {
                continue;
            }
            let Some(partition) = view.partition_of_group(group) else {
                continue;
            };
            let assignment = partition.assignment().clone();
            let destination: BTreeSet<NodeId> = assignment.destination().iter().copied().collect();
            let voters = replica.group.voters();
            if voters != destination {
                found_work = true;
                self.in_flight.insert(group);
                let raft = replica.group.clone();
                let step = async move { raft.change_membership_step(&destination).await };
                ctx.spawn(step.into_actor(self).map(move |outcome, act, _| {
                    act.in_flight.remove(&group);
                    match outcome {
                        Ok(StepOutcome::Done) | Ok(StepOutcome::CatchingUp(_)) => {}
                        Ok(step) => tracing::info!(%group, ?step, "partition membership step"),
                        Err(error) => tracing::debug!(%group, %error, "membership step not taken"),
                    }
                }));
            } else if assignment.target.is_some()
                && self.reported.get(&group) != Some(&assignment.revision)
            {
                found_work = true;
                self.in_flight.insert(group);
                let command = MetadataCommand::CompleteMove {
                    topic: partition.topic.record.id,
                    partition: partition.partition,
                    revision: assignment.revision,
                };
                let report = self.metadata.send(Propose(command));
                let revision = assignment.revision;
                ctx.spawn(report.into_actor(self).map(move |outcome, act, _| {
                    act.in_flight.remove(&group);
                    match outcome.map(|r| r.and_then(accepted)) {
                        Ok(Ok(_)) => {
                            act.reported.insert(group, revision);
                            tracing::info!(%group, revision, "move completed");
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%group, %error, "move completion not recorded")
                        }
                        Err(_) => {}
                    }
                }));
            }
        }
        self.reported
            .retain(|group, _| self.directory.local(*group).is_some());
        found_work
    }
}

impl Actor for Converger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}
