//! [`Controller`]: runs the operations planner on the metadata leader, round after round, and
//! carries each plan out: proposes its commands one at a time (each planned against the view
//! the previous one left), throttled by the planner's budget of moves at once.
//!
//! Every node runs one; only the metadata leader's acts. A node that loses the leadership
//! stops counting how long nodes have been dead, so a new leader waits a full grace period
//! from its own first observation before it moves a dead node's replicas.

use super::planner::{plan, Observed, OperationSettings};
use crate::directory::Directory;
use crate::liveness::Liveness;
use crate::metadata::command::MetadataCommand;
use crate::metadata::requests::accepted;
use crate::metadata::service::propose;
use actix::prelude::*;
use gregor_cluster::{GroupRole, RaftGroup};
use gregor_storage::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct Controller {
    node: NodeId,
    metadata: Arc<RaftGroup>,
    directory: Arc<Directory>,
    liveness: Liveness,
    settings: OperationSettings,
    interval: Duration,
    propose_timeout: Duration,
    /// When this leader first saw each registered node not live.
    dead_since: BTreeMap<NodeId, Instant>,
    busy: bool,
}

impl Controller {
    pub fn new(
        node: NodeId,
        metadata: Arc<RaftGroup>,
        directory: Arc<Directory>,
        liveness: Liveness,
        settings: OperationSettings,
        interval: Duration,
        propose_timeout: Duration,
    ) -> Self {
        Controller {
            node,
            metadata,
            directory,
            liveness,
            settings,
            interval,
            propose_timeout,
            dead_since: BTreeMap::new(),
            busy: false,
        }
    }

    fn observe(&mut self) -> Observed {
        let live = self.liveness.live();
        let now = Instant::now();
        let view = self.directory.view();
        let registered: BTreeSet<NodeId> = view.nodes().map(|n| n.id).collect();
        self.dead_since
            .retain(|node, _| registered.contains(node) && !live.contains_key(node));
        for node in registered.iter().filter(|n| !live.contains_key(n)) {
            self.dead_since.entry(*node).or_insert(now);
        }
        let dead_for = self
            .dead_since
            .iter()
            .map(|(node, since)| (*node, now.duration_since(*since)))
            .collect();
        let mut leaders = BTreeMap::new();
        for topic in view.topics() {
            for p in 0..topic.record.partitions {
                let group = topic.record.group_of(gregor_storage::PartitionId(p));
                if let Some(leader) = self.directory.leader(group) {
                    leaders.insert(group, leader);
                }
            }
        }
        Observed {
            live,
            dead_for,
            // This node runs the metadata group alone until the cluster layer can grow it.
            voters: BTreeSet::from([self.node]),
            leaders,
            muted: BTreeSet::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.metadata.role() != GroupRole::Leader {
            self.dead_since.clear();
            return;
        }
        let observed = self.observe();
        let plan = plan(&self.directory.view(), &observed, &self.settings);
        if plan.commands.is_empty() {
            return;
        }
        self.busy = true;
        let metadata = self.metadata.clone();
        let timeout = self.propose_timeout;
        let commands = plan.commands;
        let work = async move { run_commands(&metadata, commands, timeout).await };
        ctx.spawn(work.into_actor(self).map(|progressed, act, ctx| {
            act.busy = false;
            // A round that changed something may have unblocked the next (a registration
            // before placements): go again at once.
            if progressed {
                act.tick(ctx);
            }
        }));
    }
}

/// Proposes `commands` in order, stopping at the first that fails or is rejected (the plan
/// after it assumed it). Returns whether any was accepted.
async fn run_commands(
    metadata: &RaftGroup,
    commands: Vec<MetadataCommand>,
    timeout: Duration,
) -> bool {
    let mut progressed = false;
    for command in commands {
        let name = command.name();
        match propose(metadata, &command, timeout)
            .await
            .and_then(accepted)
        {
            Ok(outcome) => {
                tracing::info!(command = name, ?outcome, "metadata operation");
                progressed = true;
            }
            Err(error) => {
                tracing::info!(command = name, %error, "metadata operation not carried out; planning again");
                break;
            }
        }
    }
    progressed
}

impl Actor for Controller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
        self.tick(ctx);
    }
}

/// Run a round now (after a change the controller should not wait a tick for).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

impl Handler<Tick> for Controller {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        self.tick(ctx);
    }
}
