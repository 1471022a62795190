//! A voter stopped between the joint and the final configuration of its own addition, then
//! restarted. async-raft 0.6.1 restarts a node as leader of its stored term, without an
//! election, when its newest configuration's first set has one member and the node is in
//! either set: here the newcomer, holding `{1} -> {1, 2}`, would lead a term the founder leads
//! and append its own entry where the founder put the final configuration. The containment
//! (`Containment::restart_leadership`) restarts it as a follower.

mod common;

use common::{append, nodes, runtime, TestCluster};
use gregor_cluster::{Containment, GroupRole, RaftGroup, Start, StepOutcome};
use gregor_storage::{EntryPayload, GroupId, LogEntry, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const GROUP: GroupId = GroupId(60);
const SECOND: Duration = Duration::from_secs(1);
const FOUNDER: NodeId = NodeId(1);
const NEWCOMER: NodeId = NodeId(2);

/// Every (term, node) leadership each replica reported, in order.
type Leaderships = Arc<Mutex<BTreeSet<(u64, NodeId)>>>;

fn follow_leadership(group: &RaftGroup, node: NodeId, seen: Leaderships) {
    let mut status = group.status();
    tokio::spawn(async move {
        loop {
            let now = *status.borrow_and_update();
            if now.role == GroupRole::Leader {
                seen.lock().unwrap().insert((now.term, node));
            }
            if now.role == GroupRole::Stopped || status.changed().await.is_err() {
                return;
            }
        }
    });
}

/// What happened: the leaderships seen, and both nodes' entries at the index where the
/// founder put the final configuration.
struct Outcome {
    leaderships: BTreeSet<(u64, NodeId)>,
    founder_final: LogEntry,
    newcomer_there: LogEntry,
    cluster: TestCluster,
}

async fn newcomer_restarted_between_joint_and_final(containment: Containment) -> Outcome {
    let mut cluster = TestCluster::with(&[1, 2], common::tuning(), containment).await;
    let seen = Leaderships::default();
    cluster.form_group(GROUP, &[1]).await;
    follow_leadership(&cluster.group(FOUNDER, GROUP), FOUNDER, seen.clone());
    cluster
        .propose(GROUP, append(1), 10 * SECOND)
        .await
        .unwrap();
    cluster
        .node(NEWCOMER)
        .start_group(GROUP, Start::Join)
        .await
        .unwrap();

    // The newcomer gets the joint configuration, never the final one.
    cluster.net.hold_final_configs(NEWCOMER);
    let group = cluster.group(FOUNDER, GROUP);
    tokio::spawn(async move {
        // Steps until the learner is caught up and the change itself begins.
        while let Ok(StepOutcome::CatchingUp(_)) =
            group.change_membership_step(&nodes(&[1, 2])).await
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let deadline = Instant::now() + 30 * SECOND;
    while !holds_joint_config(&cluster, NEWCOMER) {
        if Instant::now() > deadline {
            let g = cluster.group(NEWCOMER, GROUP);
            panic!(
                "voters {:?} settled {:?} logs {:?} roles {:?}",
                g.voters(),
                g.settled_voters(),
                cluster.logs(GROUP),
                cluster.roles(GROUP)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let joint = last_entry(&cluster, NEWCOMER);
    cluster.kill(NEWCOMER).await;
    let final_index = joint.index + 1;
    wait_until(
        || entry_at(&cluster, FOUNDER, final_index).is_some(),
        "the founder appends the final configuration",
    )
    .await;
    cluster.net.heal();

    cluster.start_node(NEWCOMER).await;
    let restarted = cluster
        .node(NEWCOMER)
        .start_group(GROUP, Start::Restart)
        .await
        .unwrap();
    follow_leadership(&restarted, NEWCOMER, seen.clone());
    wait_until(
        || entry_at(&cluster, NEWCOMER, final_index).is_some(),
        "the newcomer holds an entry where the final configuration is",
    )
    .await;
    let founder_final = entry_at(&cluster, FOUNDER, final_index).unwrap();
    let newcomer_there = entry_at(&cluster, NEWCOMER, final_index).unwrap();
    let leaderships = seen.lock().unwrap().clone();
    Outcome {
        leaderships,
        founder_final,
        newcomer_there,
        cluster,
    }
}

async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + 30 * SECOND;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn entry_at(cluster: &TestCluster, node: NodeId, index: u64) -> Option<LogEntry> {
    let store = cluster.node(node).store();
    store.read_entries(GROUP, index, index + 1).unwrap().pop()
}

fn last_entry(cluster: &TestCluster, node: NodeId) -> LogEntry {
    let store = cluster.node(node).store();
    store
        .read_entries(GROUP, 0, u64::MAX)
        .unwrap()
        .pop()
        .unwrap()
}

fn holds_joint_config(cluster: &TestCluster, node: NodeId) -> bool {
    let Some(group) = cluster.node(node).group(GROUP) else {
        return false;
    };
    let voters = group.voters();
    voters.len() == 2 && group.settled_voters() == nodes(&[1])
}

/// Terms in which two nodes reported themselves leader.
fn shared_terms(leaderships: &BTreeSet<(u64, NodeId)>) -> Vec<u64> {
    let mut leaders: BTreeMap<u64, BTreeSet<NodeId>> = BTreeMap::new();
    for (term, node) in leaderships {
        leaders.entry(*term).or_default().insert(*node);
    }
    leaders
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(term, _)| term)
        .collect()
}

#[test]
fn a_newcomer_restarted_holding_the_joint_configuration_never_leads_the_old_leaders_term() {
    runtime().block_on(async {
        let outcome = newcomer_restarted_between_joint_and_final(Containment::default()).await;
        let leaderships = &outcome.leaderships;
        assert!(
            shared_terms(leaderships).is_empty(),
            "two leaders in one term: {leaderships:?}"
        );
        assert_eq!(outcome.newcomer_there.term, outcome.founder_final.term);
        assert!(
            matches!(outcome.newcomer_there.payload, EntryPayload::Membership(_)),
            "the newcomer holds {:?} where the founder holds the final configuration",
            outcome.newcomer_there
        );
        // And the group goes on: the change completes and takes writes.
        let cluster = outcome.cluster;
        cluster.converge(GROUP, &nodes(&[1, 2]), 60 * SECOND).await;
        let (last, _) = cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
        cluster.wait_applied(GROUP, last, 10 * SECOND).await;
        common::assert_prefix_consistent(&cluster.logs(GROUP));
    });
}

#[test]
fn without_the_containment_the_newcomer_leads_a_term_the_founder_leads() {
    runtime().block_on(async {
        let raw = Containment {
            restart_leadership: false,
            ..Containment::default()
        };
        let outcome = newcomer_restarted_between_joint_and_final(raw).await;
        let leaderships = &outcome.leaderships;
        let shared = shared_terms(leaderships);
        assert!(
            shared
                .iter()
                .any(|term| leaderships.contains(&(*term, NEWCOMER))),
            "async-raft did not restart the newcomer as leader of the founder's term: {leaderships:?}"
        );
    });
}
