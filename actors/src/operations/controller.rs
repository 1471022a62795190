//! [`Controller`]: runs the operations planner on the metadata leader, round after round, and
//! carries each plan out: proposes its commands one at a time (each planned against the view
//! the previous one left), throttled by the planner's budget of moves at once.
//!
//! Every node runs one; only the metadata leader's acts. A node that loses the leadership
//! stops counting how long nodes have been dead, so a new leader waits a full grace period
//! from its own first observation before it moves a dead node's replicas.

use super::planner::{plan, LiveNode, Observed, OperationSettings, Plan, StepDown};
use crate::directory::Directory;
use crate::liveness::Liveness;
use crate::messages::NodeMessage;
use crate::metadata::command::MetadataCommand;
use crate::metadata::requests::accepted;
use crate::metadata::service::propose;
use crate::metadata::MetadataView;
use crate::peers::ask;
use actix::prelude::*;
use gregor_cluster::{GroupRole, RaftGroup, Transport};
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a partition asked to give up its leader is left alone: async-raft has no
/// leadership transfer, so a step-down may bring the same leader back, and asking again at
/// once would only churn.
const STEP_DOWN_MUTE: Duration = Duration::from_secs(300);
/// After asking for step-downs, how long the next look at the leaders waits: the elections
/// and the leadership hints that report them take a few seconds, and a look before then would
/// see the old leaders and ask for more.
const BALANCE_SETTLE: Duration = Duration::from_secs(5);

/// What a round is planned from, besides the leaders: a round with the same inputs as one that
/// planned nothing would plan nothing again, so it is skipped (a round walks every partition).
struct RoundInputs {
    view: Arc<MetadataView>,
    live: BTreeMap<NodeId, LiveNode>,
    voters: BTreeSet<NodeId>,
    term: u64,
}

impl PartialEq for RoundInputs {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.view, &other.view)
            && (&self.live, &self.voters, self.term) == (&other.live, &other.voters, other.term)
    }
}

pub struct Controller {
    metadata: Arc<RaftGroup>,
    directory: Arc<Directory>,
    transport: Arc<dyn Transport>,
    liveness: Liveness,
    settings: OperationSettings,
    interval: Duration,
    propose_timeout: Duration,
    /// When this leader first saw each registered node not live.
    dead_since: BTreeMap<NodeId, Instant>,
    /// Commands are being proposed.
    busy: bool,
    /// A membership step of the metadata group is in flight.
    changing_voters: bool,
    /// Learners added (or being added) in this leadership term: async-raft forgets them when
    /// the leader changes, so a new term starts empty.
    learners: (u64, BTreeSet<NodeId>),
    /// Partitions recently asked to change leader.
    muted: BTreeMap<GroupId, Instant>,
    /// When the leaders are next looked at for an imbalance.
    next_balance: Option<Instant>,
    /// The inputs of the last round, when it planned nothing.
    quiet: Option<RoundInputs>,
}

impl Controller {
    pub fn new(
        metadata: Arc<RaftGroup>,
        directory: Arc<Directory>,
        transport: Arc<dyn Transport>,
        liveness: Liveness,
        settings: OperationSettings,
        interval: Duration,
        propose_timeout: Duration,
    ) -> Self {
        Controller {
            metadata,
            directory,
            transport,
            liveness,
            settings,
            interval,
            propose_timeout,
            dead_since: BTreeMap::new(),
            busy: false,
            changing_voters: false,
            learners: (0, BTreeSet::new()),
            muted: BTreeMap::new(),
            next_balance: None,
            quiet: None,
        }
    }

    /// Whether this round looks at the leaders (see [`OperationSettings::leader_balance_interval`]).
    fn balance_due(&mut self, now: Instant) -> bool {
        let next = *self
            .next_balance
            .get_or_insert(now + self.settings.leader_balance_interval);
        now >= next
    }

    fn observe(&mut self, with_leaders: bool) -> Observed {
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
        let mut leaderless = BTreeSet::new();
        for topic in view.topics() {
            for p in 0..topic.record.partitions {
                let group = topic.record.group_of(gregor_storage::PartitionId(p));
                match self.directory.leader(group) {
                    Some(leader) if with_leaders => {
                        leaders.insert(group, leader);
                    }
                    Some(_) => {}
                    None => {
                        leaderless.insert(group);
                    }
                }
            }
        }
        self.muted
            .retain(|_, since| now.duration_since(*since) < STEP_DOWN_MUTE);
        Observed {
            live,
            dead_for,
            voters: self.metadata.voters(),
            leaders,
            muted: self.muted.keys().copied().collect(),
            leaderless,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.metadata.role() != GroupRole::Leader {
            self.dead_since.clear();
            self.learners = (0, BTreeSet::new());
            self.next_balance = None;
            self.quiet = None;
            return;
        }
        let now = Instant::now();
        let balancing = self.balance_due(now);
        let inputs = RoundInputs {
            view: self.directory.view(),
            live: self.liveness.live(),
            voters: self.metadata.voters(),
            term: self.metadata.term(),
        };
        // A dead node's grace period runs with time, not with the inputs.
        if !balancing
            && !self.busy
            && self.dead_since.is_empty()
            && self.quiet.as_ref() == Some(&inputs)
        {
            return;
        }
        let observed = self.observe(balancing);
        let plan = plan(&inputs.view, &observed, &self.settings);
        if balancing {
            let wait = if plan.step_downs.is_empty() {
                self.settings.leader_balance_interval
            } else {
                BALANCE_SETTLE
            };
            self.next_balance = Some(now + wait);
        }
        // A partition without a leader is not moved until it has one, which no input above
        // shows (leadership hints): look again next round.
        self.quiet =
            (self.plans_nothing(&plan) && observed.leaderless.is_empty()).then_some(inputs);
        self.add_learners(&plan.learners, ctx);
        if let Some(voters) = plan.voters {
            self.change_voters(voters, ctx);
        }
        self.step_downs(plan.step_downs);
        if self.busy || plan.commands.is_empty() {
            return;
        }
        self.busy = true;
        let metadata = self.metadata.clone();
        let timeout = self.propose_timeout;
        let commands = plan.commands;
        let work = async move { run_commands(&metadata, commands, timeout).await };
        ctx.spawn(work.into_actor(self).map(|progressed, act, ctx| {
            act.busy = false;
            act.quiet = None;
            // A round that changed something may have unblocked the next (a registration
            // before placements): go again at once.
            if progressed {
                act.tick(ctx);
            }
        }));
    }

    /// Whether carrying `plan` out would do nothing: no command, no voter step, no learner not
    /// already added, no step-down.
    fn plans_nothing(&self, plan: &Plan) -> bool {
        plan.commands.is_empty()
            && plan.voters.is_none()
            && plan.step_downs.is_empty()
            && self.learners.0 == self.metadata.term()
            && plan.learners.is_subset(&self.learners.1)
    }

    /// Has the metadata log replicated to every live registered non-voter.
    fn add_learners(&mut self, learners: &BTreeSet<NodeId>, ctx: &mut Context<Self>) {
        let term = self.metadata.term();
        if self.learners.0 != term {
            self.learners = (term, BTreeSet::new());
        }
        for node in learners.difference(&self.learners.1.clone()) {
            self.learners.1.insert(*node);
            let (metadata, node) = (self.metadata.clone(), *node);
            let add = async move { metadata.add_learner(node).await };
            ctx.spawn(add.into_actor(self).map(move |added, act, _| match added {
                Ok(()) => tracing::info!(%node, "metadata learner caught up"),
                Err(error) => {
                    tracing::debug!(%node, %error, "metadata learner not added yet");
                    act.learners.1.remove(&node);
                    act.quiet = None;
                }
            }));
        }
    }

    /// One safe step of the metadata group's voters toward `voters`.
    fn change_voters(&mut self, voters: BTreeSet<NodeId>, ctx: &mut Context<Self>) {
        if self.changing_voters {
            return;
        }
        self.changing_voters = true;
        let metadata = self.metadata.clone();
        let step = async move { metadata.change_membership_step(&voters).await };
        ctx.spawn(step.into_actor(self).map(|outcome, act, _| {
            act.changing_voters = false;
            act.quiet = None;
            match outcome {
                Ok(step) => tracing::info!(?step, "metadata voters step"),
                Err(error) => tracing::debug!(%error, "metadata voters step not taken"),
            }
        }));
    }

    /// Asks leaders to hand their leadership over (the metadata leader's own partitions hand
    /// over here).
    fn step_downs(&mut self, step_downs: Vec<StepDown>) {
        let now = Instant::now();
        for StepDown { group, leader, to } in step_downs {
            self.muted.insert(group, now);
            let transport = self.transport.clone();
            let local = self
                .directory
                .local(group)
                .filter(|_| self.directory.may_step_down(group));
            let me = self.metadata.node();
            actix::spawn(async move {
                let asked = match local {
                    Some(replica) if leader == me => replica
                        .group
                        .transfer_leadership(to)
                        .await
                        .map_err(|e| e.to_string()),
                    None if leader == me => Err("its replicas are changing".into()),
                    _ => ask(&*transport, leader, &NodeMessage::HandOver { group, to })
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                };
                match asked {
                    Ok(()) => tracing::info!(%group, %leader, %to, "leadership handed over"),
                    Err(error) => {
                        tracing::debug!(%group, %leader, %to, %error, "leadership not handed over")
                    }
                }
            });
        }
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
