//! What the metadata leader does next, free of I/O: register nodes that gossip shows, grow the
//! metadata group, create the offsets topic, move replicas (drains, dead nodes, missing
//! replicas, then spreading), and even out partition leaders.
//!
//! Every planned change is a metadata command or a Raft membership step; nothing here changes
//! state itself, so a planner that runs on a deposed leader only proposes commands that fail.

use crate::metadata::command::MetadataCommand;
use crate::metadata::records::{NodeState, PartitionAssignment, TopicView};
use crate::metadata::validate::OFFSETS_TOPIC;
use crate::metadata::MetadataView;
use crate::placement::{place_topic, Candidate, Load, Placer};
use gregor_storage::{GroupId, NodeId, PartitionId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// A node gossip shows alive, with what it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    pub client_addr: String,
    pub peer_addr: String,
    pub rack: Option<String>,
}

/// How many voters the metadata group should have, or which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoterTarget {
    /// The first live `Active` members, up to this many (1, 3 or 5).
    Count(usize),
    /// These nodes, when registered and live.
    List(Vec<NodeId>),
}

/// The operations' knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSettings {
    /// How long a node may be dead before its replicas are moved elsewhere.
    pub dead_grace: Duration,
    /// Most partitions moving at once, across the cluster.
    pub max_moves: usize,
    /// Most leaderships handed over in one round.
    pub max_step_downs: usize,
    /// A node leads too many partitions only above its fair share by this many percent
    /// (Kafka's `leader.imbalance.per.broker.percentage`, 10): every hand-over refuses the
    /// partition's writes for a vote round, so a small imbalance is cheaper to keep.
    pub leader_imbalance_percent: u32,
    /// How often the metadata leader looks for an imbalance of leaders (Kafka's
    /// `leader.imbalance.check.interval.seconds`, 300 s). Partitions are founded on their
    /// preferred leaders, so only failures and restarts unbalance them.
    pub leader_balance_interval: Duration,
    pub voters: VoterTarget,
    pub offsets_partitions: u32,
    pub offsets_replication_factor: u16,
}

impl Default for OperationSettings {
    fn default() -> Self {
        OperationSettings {
            dead_grace: Duration::from_secs(600),
            max_moves: 8,
            max_step_downs: 32,
            leader_imbalance_percent: 10,
            leader_balance_interval: Duration::from_secs(300),
            voters: VoterTarget::Count(3),
            offsets_partitions: 50,
            offsets_replication_factor: 3,
        }
    }
}

/// What the leader knows besides the applied metadata.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Live members by gossip, this node included.
    pub live: BTreeMap<NodeId, LiveNode>,
    /// Registered nodes not live, and for how long the leader has seen them so.
    pub dead_for: BTreeMap<NodeId, Duration>,
    /// The metadata group's voters.
    pub voters: BTreeSet<NodeId>,
    /// Partition leaders as last reported (leadership hints).
    pub leaders: BTreeMap<GroupId, NodeId>,
    /// Partitions whose last leader transfer failed recently: left alone.
    pub muted: BTreeSet<GroupId>,
    /// Partitions no node is known to lead (no local leader, no hint): not moved until one
    /// does (see `movable_now`).
    pub leaderless: BTreeSet<GroupId>,
}

/// One round of decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Commands to propose, in order.
    pub commands: Vec<MetadataCommand>,
    /// The voter set the metadata group should converge to (one safe step at a time), when it
    /// differs from the current one.
    pub voters: Option<BTreeSet<NodeId>>,
    /// Live registered non-voters that should follow the metadata log as learners.
    pub learners: BTreeSet<NodeId>,
    /// Partition leaderships to hand over.
    pub step_downs: Vec<StepDown>,
}

/// `leader` is to hand its leadership of `group` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDown {
    pub group: GroupId,
    pub leader: NodeId,
    pub to: NodeId,
}

/// Plans one round.
pub fn plan(view: &MetadataView, observed: &Observed, settings: &OperationSettings) -> Plan {
    let mut plan = Plan {
        commands: registrations(view, observed),
        ..Plan::default()
    };
    // Until every live node is registered, placements would miss some: register first.
    if !plan.commands.is_empty() {
        return plan;
    }
    plan.learners = view
        .nodes()
        .filter(|n| n.state != NodeState::Removed)
        .filter(|n| observed.live.contains_key(&n.id) && !observed.voters.contains(&n.id))
        .map(|n| n.id)
        .collect();
    let voters = voter_target(view, observed, settings);
    plan.voters = (voters != observed.voters && !voters.is_empty()).then_some(voters);
    let candidates = candidates(view, observed);
    if view.topic(OFFSETS_TOPIC).is_none() {
        if let Some(create) = offsets_topic(view, &candidates, settings) {
            plan.commands.push(create);
        }
        return plan;
    }
    plan.commands
        .extend(moves(view, observed, settings, &candidates));
    // Leaders are balanced only while nothing moves: a step-down in the middle of a
    // membership change can leave the group in a joint configuration async-raft never
    // finishes (a new leader inherits it uncommitted and has no proposal to finish it with).
    if plan.commands.is_empty() && view.moves_in_progress() == 0 {
        plan.step_downs = step_downs(view, observed, settings);
    }
    plan
}

/// Live members not registered, or registered with other addresses or rack. Removed ids stay
/// removed.
fn registrations(view: &MetadataView, observed: &Observed) -> Vec<MetadataCommand> {
    observed
        .live
        .iter()
        .filter(|(id, live)| match view.node(**id) {
            None => true,
            Some(known) => {
                known.state != NodeState::Removed
                    && (known.client_addr != live.client_addr
                        || known.peer_addr != live.peer_addr
                        || known.rack != live.rack)
            }
        })
        .map(|(id, live)| MetadataCommand::RegisterNode {
            node: *id,
            client_addr: live.client_addr.clone(),
            peer_addr: live.peer_addr.clone(),
            rack: live.rack.clone(),
        })
        .collect()
}

/// Nodes that may take replicas: registered, `Active` and live, with their registered rack.
pub fn candidates(view: &MetadataView, observed: &Observed) -> Vec<Candidate> {
    view.nodes_in(NodeState::Active)
        .filter(|n| observed.live.contains_key(&n.id))
        .map(|n| Candidate {
            node: n.id,
            rack: n.rack.clone(),
        })
        .collect()
}

fn dead_past_grace(observed: &Observed, settings: &OperationSettings, node: NodeId) -> bool {
    !observed.live.contains_key(&node)
        && observed
            .dead_for
            .get(&node)
            .is_some_and(|d| *d >= settings.dead_grace)
}

/// The voter set to converge to. Voters that are live and `Active` stay; live `Active`
/// members fill the other seats, spreading over racks, lowest id first; draining and long-dead
/// voters keep their seats until such a member can take them (a seat left empty costs more
/// than one held by a node on its way out), removed ones lose them at once.
fn voter_target(
    view: &MetadataView,
    observed: &Observed,
    settings: &OperationSettings,
) -> BTreeSet<NodeId> {
    let state = |node: NodeId| view.node(node).map(|n| n.state);
    let eligible =
        |node: NodeId| state(node) == Some(NodeState::Active) && observed.live.contains_key(&node);
    let count = match &settings.voters {
        VoterTarget::List(list) => return list.iter().copied().filter(|n| eligible(*n)).collect(),
        VoterTarget::Count(count) => *count,
    };
    let (mut voters, leaving): (BTreeSet<NodeId>, BTreeSet<NodeId>) = observed
        .voters
        .iter()
        .copied()
        .filter(|n| !matches!(state(*n), Some(NodeState::Removed) | None))
        // A voter that is only briefly unreachable keeps its seat.
        .partition(|n| {
            state(*n) == Some(NodeState::Active) && !dead_past_grace(observed, settings, *n)
        });
    let rack = |node: &NodeId| view.node(*node).and_then(|n| n.rack.clone());
    let mut racks: BTreeSet<Option<String>> = voters.iter().map(rack).collect();
    let mut seated = Vec::new();
    while voters.len() < count {
        let next = view
            .nodes()
            .map(|n| n.id)
            .filter(|n| eligible(*n) && !voters.contains(n))
            .min_by_key(|n| (rack(n).is_some() && racks.contains(&rack(n)), *n));
        let Some(next) = next.or_else(|| leaving.iter().copied().find(|n| !voters.contains(n)))
        else {
            break;
        };
        racks.insert(rack(&next));
        voters.insert(next);
        seated.push(next);
    }
    // An even number of voters tolerates no more failures than one fewer, and needs one more
    // vote: grow only to odd sizes.
    if voters.len() % 2 == 0 {
        if let Some(last) = seated.pop() {
            voters.remove(&last);
        }
    }
    voters
}

/// The offsets topic, as soon as a node can take it: as many replicas as its factor asks and
/// the live nodes allow (moves add the rest as nodes join).
fn offsets_topic(
    view: &MetadataView,
    candidates: &[Candidate],
    settings: &OperationSettings,
) -> Option<MetadataCommand> {
    let factor = settings
        .offsets_replication_factor
        .min(candidates.len() as u16);
    if factor == 0 {
        return None;
    }
    let assignment = place_topic(
        OFFSETS_TOPIC,
        settings.offsets_partitions,
        factor,
        candidates,
        &Load::of_cluster(view),
    )
    .ok()?;
    Some(MetadataCommand::CreateTopic {
        name: OFFSETS_TOPIC.into(),
        partitions: settings.offsets_partitions,
        replication_factor: settings.offsets_replication_factor,
        config: crate::api::TopicConfig {
            retention_ms: -1,
            retention_bytes: -1,
            ..Default::default()
        },
        internal: true,
        assignment,
        creation_id: None,
    })
}

/// Why a replica must move, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Urgency {
    Drain,
    Dead,
    Missing,
}

/// Replica moves, within the budget of moves at once: drains first, then replicas of nodes
/// dead past the grace period, then missing replicas, then spreading onto lightly loaded
/// nodes.
fn moves(
    view: &MetadataView,
    observed: &Observed,
    settings: &OperationSettings,
    candidates: &[Candidate],
) -> Vec<MetadataCommand> {
    let mut budget = settings.max_moves.saturating_sub(view.moves_in_progress());
    let mut load = Load::of_cluster(view);
    let mut commands = Vec::new();
    let mut urgent: Vec<(Urgency, Arc<TopicView>, PartitionId)> = Vec::new();
    for topic in view.topics() {
        for (p, assignment) in topic.assignments.iter().enumerate() {
            if let Some(urgency) = urgency(view, observed, settings, topic, assignment) {
                urgent.push((urgency, topic.clone(), PartitionId(p as u32)));
            }
        }
    }
    urgent.sort_by_key(|(urgency, _, _)| *urgency);
    for (urgency, topic, partition) in urgent {
        let assignment = &topic.assignments[partition.0 as usize];
        // A move in progress is redirected only when its destination has a node that must
        // go (it may never complete otherwise); it already holds a slot of the budget.
        let redirect = assignment.target.is_some();
        if (redirect && urgency == Urgency::Missing) || (!redirect && budget == 0) {
            continue;
        }
        if !movable_now(&topic, partition, observed) {
            continue;
        }
        let Some(target) = repaired(
            view, observed, settings, &topic, partition, candidates, &load,
        ) else {
            continue;
        };
        for node in assignment.destination() {
            load.remove_replica(*node);
        }
        for node in &target {
            load.add_replica(*node);
        }
        commands.push(move_command(&topic, partition, assignment, target));
        if !redirect {
            budget -= 1;
        }
    }
    if commands.is_empty() {
        commands.extend(spread(view, observed, candidates, &mut load, budget));
    }
    commands
}

fn urgency(
    view: &MetadataView,
    observed: &Observed,
    settings: &OperationSettings,
    topic: &TopicView,
    assignment: &PartitionAssignment,
) -> Option<Urgency> {
    let destination = assignment.destination();
    let state = |node: &NodeId| view.node(*node).map(|n| n.state);
    if destination.iter().any(|n| {
        matches!(
            state(n),
            Some(NodeState::Draining | NodeState::Removed) | None
        )
    }) {
        Some(Urgency::Drain)
    } else if destination
        .iter()
        .any(|n| dead_past_grace(observed, settings, *n))
    {
        Some(Urgency::Dead)
    } else if destination.len() < usize::from(topic.record.replication_factor) {
        Some(Urgency::Missing)
    } else {
        None
    }
}

/// Whether a move of the partition can be carried out now: only its leader carries one out, so
/// it needs a live majority of the replicas in force, and a leader.
///
/// A partition that has never elected (its founder died as the topic was created; the other
/// founding replicas stand only after async-raft's first-election delay) must not be moved
/// before it does: replicas start from the founding configuration only while the assignment is
/// the one the topic was created with, so every founding replica that starts after a move
/// began (a restart of one that had not voted yet is a start) starts empty, waiting for a
/// leader that can then never be elected (five-node simulation seeds 536 and 724: the founder
/// crashed at the creation and was drained, and no replica of the partition ever led).
fn movable_now(topic: &TopicView, partition: PartitionId, observed: &Observed) -> bool {
    let assignment = &topic.assignments[partition.0 as usize];
    has_live_majority(assignment, observed)
        && !observed
            .leaderless
            .contains(&topic.record.group_of(partition))
}

/// A majority of the replicas in force is live, so the partition has (or can elect) a leader.
fn has_live_majority(assignment: &PartitionAssignment, observed: &Observed) -> bool {
    let live = assignment
        .replicas
        .iter()
        .filter(|n| observed.live.contains_key(n))
        .count();
    live * 2 > assignment.replicas.len()
}

/// The destination with every replica that must go replaced and missing ones added; `None`
/// when no candidate can take one.
fn repaired(
    view: &MetadataView,
    observed: &Observed,
    settings: &OperationSettings,
    topic: &TopicView,
    partition: PartitionId,
    candidates: &[Candidate],
    load: &Load,
) -> Option<Vec<NodeId>> {
    let assignment = &topic.assignments[partition.0 as usize];
    let stays = |node: &NodeId| {
        view.node(*node)
            .is_some_and(|n| n.state == NodeState::Active)
            && !dead_past_grace(observed, settings, *node)
    };
    let mut target: Vec<NodeId> = assignment
        .destination()
        .iter()
        .copied()
        .filter(stays)
        .collect();
    let leaving: Vec<NodeId> = assignment
        .destination()
        .iter()
        .copied()
        .filter(|n| !stays(n))
        .collect();
    let placer = Placer::new(
        &topic.record.name,
        candidates,
        load.clone(),
        Load::of_topic(view, &topic.record.name),
    );
    let mut added = false;
    while target.len() < usize::from(topic.record.replication_factor) {
        let Some(node) = placer.choose(partition, &target, &leaving, target.is_empty()) else {
            break;
        };
        target.push(node);
        added = true;
    }
    // Nothing to add: a drained replica with no node to take it stays where it is.
    (added && !target.is_empty()).then_some(target)
}

fn move_command(
    topic: &TopicView,
    partition: PartitionId,
    assignment: &PartitionAssignment,
    target: Vec<NodeId>,
) -> MetadataCommand {
    MetadataCommand::MovePartition {
        topic: topic.record.id,
        partition,
        target,
        expected_revision: assignment.revision,
    }
}

/// Moves single replicas from the most loaded candidate to the least loaded until their
/// replica counts differ by at most one, or the budget is spent.
fn spread(
    view: &MetadataView,
    observed: &Observed,
    candidates: &[Candidate],
    load: &mut Load,
    mut budget: usize,
) -> Vec<MetadataCommand> {
    let mut commands = Vec::new();
    let mut moved: BTreeSet<GroupId> = BTreeSet::new();
    while budget > 0 {
        let by_load = |c: &&Candidate| (load.replicas_on(c.node), c.node);
        let (Some(most), Some(least)) = (
            candidates.iter().max_by_key(by_load),
            candidates.iter().min_by_key(by_load),
        ) else {
            break;
        };
        if load.replicas_on(most.node) <= load.replicas_on(least.node) + 1 {
            break;
        }
        let Some((topic, partition)) = movable(view, observed, candidates, (most, least), &moved)
        else {
            break;
        };
        let assignment = &topic.assignments[partition.0 as usize];
        let mut target: Vec<NodeId> = assignment
            .replicas
            .iter()
            .copied()
            .filter(|n| *n != most.node)
            .collect();
        target.push(least.node);
        load.remove_replica(most.node);
        load.add_replica(least.node);
        moved.insert(topic.record.group_of(partition));
        commands.push(move_command(&topic, partition, assignment, target));
        budget -= 1;
    }
    commands
}

/// A partition with a replica on `from` and none on `to`, not moving, with a live majority,
/// and no other replica in `to`'s rack (spreading must not undo the rack spread): the first in
/// topic order.
fn movable(
    view: &MetadataView,
    observed: &Observed,
    candidates: &[Candidate],
    (from, to): (&Candidate, &Candidate),
    moved: &BTreeSet<GroupId>,
) -> Option<(Arc<TopicView>, PartitionId)> {
    let rack = |node: &NodeId| {
        candidates.iter().find(|c| c.node == *node).map_or_else(
            || view.node(*node).and_then(|n| n.rack.clone()),
            |c| c.rack.clone(),
        )
    };
    let rack_taken = |replicas: &[NodeId]| {
        to.rack.is_some()
            && replicas
                .iter()
                .filter(|n| **n != from.node)
                .any(|n| rack(n) == to.rack)
    };
    for topic in view.topics() {
        for (p, assignment) in topic.assignments.iter().enumerate() {
            let partition = PartitionId(p as u32);
            if assignment.target.is_none()
                && assignment.replicas.contains(&from.node)
                && !assignment.replicas.contains(&to.node)
                && !moved.contains(&topic.record.group_of(partition))
                && movable_now(topic, partition, observed)
                && !rack_taken(&assignment.replicas)
            {
                return Some((topic.clone(), partition));
            }
        }
    }
    None
}

/// Leaderships to hand over: a node leading more than its share (the average over live nodes
/// that host replicas, rounded up) by more than `leader_imbalance_percent` hands its leaders
/// beyond the share to other replicas, preferring partitions whose preferred leader is another
/// live node. Each goes to its preferred leader when that node leads less than its share,
/// else to the replica leading the fewest (counting the hand-overs planned before it); a
/// partition with no replica below its share stays. A hand-over is a leadership transfer
/// (`RaftGroup::transfer_leadership`): the group is without a leader for one vote round.
fn step_downs(
    view: &MetadataView,
    observed: &Observed,
    settings: &OperationSettings,
) -> Vec<StepDown> {
    let mut counts: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
    for (group, leader) in &observed.leaders {
        if observed.live.contains_key(leader) {
            counts.entry(*leader).or_default().push(*group);
        }
    }
    let hosts = view
        .replica_counts()
        .into_iter()
        .filter(|(node, count)| *count > 0 && observed.live.contains_key(node))
        .count()
        .max(1);
    let total: usize = counts.values().map(Vec::len).sum();
    let share = total.div_ceil(hosts);
    let mut leading: BTreeMap<NodeId, usize> = counts
        .iter()
        .map(|(node, groups)| (*node, groups.len()))
        .collect();
    let mut step_downs = Vec::new();
    let tolerated = share * (100 + settings.leader_imbalance_percent as usize) / 100;
    for (node, groups) in &counts {
        if groups.len() <= tolerated {
            continue;
        }
        let mut excess = groups.len() - share;
        let mut candidates: Vec<(bool, GroupId)> = groups
            .iter()
            .filter(|g| !observed.muted.contains(g))
            .filter_map(|g| {
                let partition = view.partition_of_group(*g)?;
                let assignment = partition.assignment();
                if assignment.target.is_some() || assignment.replicas.len() < 2 {
                    return None;
                }
                let preferred = assignment.preferred_leader();
                let elsewhere = preferred != *node && observed.live.contains_key(&preferred);
                Some((!elsewhere, *g))
            })
            .collect();
        candidates.sort();
        for (_, group) in candidates {
            if excess == 0 {
                break;
            }
            let Some(partition) = view.partition_of_group(group) else {
                continue;
            };
            let assignment = partition.assignment();
            let preferred = assignment.preferred_leader();
            let successor = assignment
                .replicas
                .iter()
                .copied()
                .filter(|r| r != node && observed.live.contains_key(r))
                .map(|r| (leading.get(&r).copied().unwrap_or(0), r))
                .filter(|(led, _)| *led < share)
                .min_by_key(|(led, r)| (*r != preferred, *led, *r));
            if let Some((_, to)) = successor {
                *leading.entry(to).or_default() += 1;
                excess -= 1;
                step_downs.push(StepDown {
                    group,
                    leader: *node,
                    to,
                });
            }
        }
    }
    step_downs.truncate(settings.max_step_downs);
    step_downs
}
