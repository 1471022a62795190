//! Faults: their kinds and the swarm choice ([`kinds`]), plans of timed actions ([`plan`]),
//! scripts ([`script`]), and carrying actions out against a running cluster (here).

pub mod kinds;
pub mod plan;
pub mod script;

pub use kinds::{FaultChoice, FaultKind};
pub use plan::{Action, CrashSpec, Plan, Step};
pub use script::Script;

use crate::check::{Checker, Violation};
use crate::cluster::SimCluster;
use crate::node::{CrashKind, SimNode};
use gregor_actors::api::{DrainNode, Request};
use gregor_storage::NodeId;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What carrying out faults taught the run.
#[derive(Default)]
pub struct FaultLog {
    /// Nodes that could not restart from what their disk kept, and the like.
    pub violations: RefCell<Vec<Violation>>,
    /// The largest absolute clock skew set on any node.
    pub max_skew_ms: Cell<i64>,
    /// Actions carried out (skipped ones, such as a crash of a node that is down, excluded).
    pub struck: Cell<u64>,
    /// Nodes asked to drain.
    pub drained: RefCell<BTreeSet<NodeId>>,
}

/// Carries out `plan` against `cluster`, each step at its time after `origin`, until `stop`
/// turns true, and meanwhile takes down every node that stops itself. A step under way when
/// `stop` turns is finished first (a node half started would hold its disk).
pub async fn run_plan(
    plan: Plan,
    cluster: Rc<SimCluster>,
    origin: Instant,
    log: Rc<FaultLog>,
    mut stop: watch::Receiver<bool>,
) {
    for step in plan.steps {
        let at = origin + Duration::from_millis(step.at_ms);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                () = cluster.self_stops.notified() => take_down_stopped_nodes(&cluster),
                () = tokio::time::sleep_until(at) => break,
            }
        }
        apply(&step.action, &cluster, &log).await;
    }
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            () = cluster.self_stops.notified() => take_down_stopped_nodes(&cluster),
        }
    }
}

/// A node that stopped itself after its storage failed is a process that exited: it goes down
/// as a crashed one does (its page cache kept), and a restart by the plan or the heal brings
/// it back on what its disk kept.
pub fn take_down_stopped_nodes(cluster: &SimCluster) {
    for node in cluster.nodes() {
        if let Some(cause) = node.stopped_itself() {
            cluster.trace.event(format_args!(
                "node {} stopped itself: its storage failed ({cause})",
                node.id()
            ));
            crash(node, CrashSpec::Process, cluster);
        }
    }
}

/// Carries out one action now.
pub async fn apply(action: &Action, cluster: &SimCluster, log: &FaultLog) {
    let trace = &cluster.trace;
    let net = &cluster.net;
    let known = |node: &NodeId| cluster.ids().contains(node);
    let done = match action {
        Action::Crash { node, how } if known(node) => crash(cluster.node(*node), *how, cluster),
        Action::Restart { node } if known(node) => {
            restart(cluster.node(*node), cluster, log, Phase::Safety).await
        }
        Action::FailFsync { node } if known(node) => {
            let node = cluster.node(*node);
            match node.model_disk().filter(|_| node.is_up()) {
                Some(disk) => {
                    disk.fail_next_persist();
                    node.fsync_fault_armed.set(true);
                    true
                }
                None => false,
            }
        }
        Action::Partition { sides } => {
            let sides: Vec<&[NodeId]> = sides.iter().map(Vec::as_slice).collect();
            net.partition(&sides);
            true
        }
        Action::OneWay { from, to } => {
            net.isolate_one_way(*from, *to);
            true
        }
        Action::Isolate { node } => {
            net.isolate(*node);
            true
        }
        Action::Heal => {
            net.heal();
            true
        }
        Action::Loss(p) => {
            net.update_all_links(|l| l.loss = *p);
            true
        }
        Action::Duplicate(p) => {
            net.update_all_links(|l| l.duplicate = *p);
            true
        }
        Action::Jitter(ms) => {
            net.update_all_links(|l| l.delay.jitter = Duration::from_millis(*ms));
            true
        }
        Action::Spikes(spike) => {
            let spike = spike.map(|(probability, ms)| crate::net::DelaySpike {
                probability,
                extra: Duration::from_millis(ms),
            });
            net.update_all_links(|l| l.spike = spike);
            true
        }
        Action::CutClients { node } if known(node) => {
            cut_clients(cluster, *node);
            true
        }
        Action::SlowDisk { node, slow } if known(node) => {
            cluster.node(*node).latency.set(*slow);
            true
        }
        Action::Skew { node, skew_ms } if known(node) => {
            cluster.node(*node).clock.set_skew_ms(*skew_ms);
            log.max_skew_ms
                .set(log.max_skew_ms.get().max(skew_ms.abs()));
            true
        }
        Action::IsolateMetadataLeader => match cluster.metadata_leader() {
            Some(leader) => {
                trace.event(format_args!("the metadata leader is node {leader}"));
                net.isolate(leader);
                true
            }
            None => false,
        },
        Action::StepDown => step_down(cluster).await,
        Action::Drain { node } if known(node) => drain(cluster, *node, log).await,
        _ => false,
    };
    if done {
        log.struck.set(log.struck.get() + 1);
        trace.event(format_args!("fault {action}"));
    } else {
        trace.event(format_args!("fault {action} (nothing to do)"));
    }
}

fn crash(node: &SimNode, how: CrashSpec, cluster: &SimCluster) -> bool {
    let unsynced = node.model_disk().map_or(0, |d| d.unsynced_batches());
    let keep = |permille: u32| unsynced * permille as usize / 1_000;
    let kind = match (how, node.model_disk()) {
        (_, None) | (CrashSpec::Process, _) => CrashKind::Process,
        (CrashSpec::PowerLoss { keep_permille }, Some(_)) => CrashKind::PowerLoss {
            keep: keep(keep_permille),
        },
        (
            CrashSpec::TornWrite {
                keep_permille,
                torn_bytes,
            },
            Some(_),
        ) => CrashKind::TornWrite {
            keep: keep(keep_permille),
            torn_bytes,
        },
    };
    let crashed = node.crash(kind, &cluster.net);
    if crashed {
        cluster.trace.event(format_args!(
            "node {} down: {kind} ({unsynced} batches were unsynced)",
            node.id()
        ));
    }
    crashed
}

/// When a node is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Under faults: a cluster member cut off from its peers may fail to catch up in time; it
    /// stays down until the heal.
    Safety,
    /// After the heal: every node must start.
    Heal,
}

/// Starts a node that is down. A start that fails on the injected fsync failure is expected
/// (the failure may strike while the node recovers) and is tried once more; a start that could
/// not catch up with the cluster under faults is left for the heal; any other failure is a
/// violation: what the disk kept must always be recoverable, and a healed cluster must take
/// its nodes back.
async fn restart(node: &SimNode, cluster: &SimCluster, log: &FaultLog, phase: Phase) -> bool {
    if node.is_up() {
        return false;
    }
    loop {
        match node.start(&cluster.net).await {
            Ok(()) => {
                node.fsync_fault_armed.set(false);
                cluster.trace.event(format_args!("node {} up", node.id()));
                return true;
            }
            Err(error) if node.fsync_fault_armed.replace(false) => {
                cluster
                    .trace
                    .event(format_args!("{error} (the injected fsync failure); again"));
            }
            Err(error) if error.catching_up && phase == Phase::Safety => {
                cluster
                    .trace
                    .event(format_args!("{error} (under faults); it stays down"));
                return false;
            }
            Err(error) => {
                let checker = if error.catching_up {
                    Checker::Liveness
                } else {
                    Checker::Recovery
                };
                log.violations
                    .borrow_mut()
                    .push(Violation::new(checker, error.message));
                return false;
            }
        }
    }
}

/// The leader of a group chosen at random among those led by running nodes steps down, or
/// (half the time) hands its leadership to another voter chosen at random.
async fn step_down(cluster: &SimCluster) -> bool {
    let led = cluster.leaderships();
    if led.is_empty() {
        return false;
    }
    let (pick, hand_to) = {
        let mut rng = cluster.fault_rng.borrow_mut();
        let pick = rng.gen_range(0..led.len());
        let others: Vec<NodeId> = led[pick]
            .1
            .voters()
            .into_iter()
            .filter(|n| *n != led[pick].0)
            .collect();
        let hand_to = (!others.is_empty() && rng.gen_bool(0.5))
            .then(|| others[rng.gen_range(0..others.len())]);
        (pick, hand_to)
    };
    let (node, group) = &led[pick];
    let term = group.term();
    let outcome = match hand_to {
        Some(to) => group.transfer_leadership(to).await,
        None => group.step_down().await,
    };
    let what = match hand_to {
        Some(to) => format!("hands group {} term {term} to node {to}", group.id()),
        None => format!("steps down from group {} term {term}", group.id()),
    };
    cluster
        .trace
        .event(format_args!("node {node} {what}: {outcome:?}"));
    outcome.is_ok()
}

/// Asks the cluster (through any running node, which forwards it to the metadata leader) to
/// drain `node`, while at least three nodes would stay undrained (or one node of a cluster of
/// three is drained).
async fn drain(cluster: &SimCluster, node: NodeId, log: &FaultLog) -> bool {
    let may_drain = (cluster.ids().len().saturating_sub(3)).max(1);
    {
        let drained = log.drained.borrow();
        if drained.contains(&node) || drained.len() >= may_drain {
            return false;
        }
    }
    let Some(via) = cluster
        .up_ids()
        .first()
        .and_then(|id| cluster.node(*id).broker())
    else {
        return false;
    };
    let request = Request::DrainNode(DrainNode { node_id: node });
    let outcome = tokio::time::timeout(Duration::from_secs(5), via.handle(request)).await;
    cluster
        .trace
        .event(format_args!("drain node {node}: {outcome:?}"));
    // Whether or not the answer came, the drain may have been applied.
    log.drained.borrow_mut().insert(node);
    matches!(outcome, Ok(Ok(_)))
}

/// Every client's links to `node` go down, both ways.
fn cut_clients(cluster: &SimCluster, node: NodeId) {
    for client in cluster.issued_client_ids() {
        let mut down = cluster.net.link(NodeId(client), node);
        down.up = false;
        cluster.net.set_link(NodeId(client), node, down);
        cluster.net.set_link(node, NodeId(client), down);
    }
}

/// Ends every fault: links up and clean, disks fast, every node running again.
pub async fn heal_all(cluster: &SimCluster, log: &FaultLog) {
    cluster.trace.event("heal everything");
    cluster.net.heal();
    cluster.net.update_all_links(|l| {
        l.loss = 0.0;
        l.duplicate = 0.0;
        l.delay.jitter = Duration::from_millis(plan::DEFAULT_JITTER_MS);
        l.spike = None;
    });
    for node in cluster.nodes() {
        node.latency.set(None);
        if node.fsync_fault_armed.get() {
            // The injected failure has not struck yet: it strikes now, not in the liveness
            // phase.
            if let Some(store) = node.store() {
                let _ = store.sync();
                node.fsync_fault_armed.set(false);
            }
        }
        // A node whose storage failed stops serving and waits for a restart, which is what an
        // operator (or a supervisor) gives it.
        if node.stopped_itself().is_some() || node.is_poisoned() {
            crash(node, CrashSpec::PowerLoss { keep_permille: 0 }, cluster);
        }
        if !node.is_up() {
            restart(node, cluster, log, Phase::Heal).await;
        }
    }
}
