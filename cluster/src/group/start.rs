//! How a group comes to be on a node: founded, joined, or restarted from its stored state.

use super::{driver, GroupEnv, GroupRole, GroupStatus, RaftGroup};
use crate::dispatch::{Dispatcher, GroupInbound, GroupSides};
use crate::group::GroupRaft;
use crate::network::{GroupNetwork, LogMarks};
use crate::raft_store::GroupStorage;
use anyhow::{bail, Context};
use async_raft::raft::MembershipConfig;
use async_raft::storage::HardState;
use async_raft::Raft;
use async_raft::State;
use gregor_storage::{GroupId, NodeId, StateMachine, Store};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How the group comes to be on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// This node founds the group with `members` (which must include it): the founding replica
    /// chosen at topic creation, or the node founding a cluster for the metadata group. A lone
    /// founder leads at once; a founder of several members stands for election as soon as the
    /// node has one of its few founding elections to spare, and votes for nobody before. Every other node in `members` starts the group with
    /// `Seeded` naming this node (a `Join` replica has no configuration and refuses votes). A
    /// group that already has log entries here restarts instead; pass `Found` again after a
    /// restart while the founder's group has no log entry (it may have crashed while founding).
    Found { members: BTreeSet<NodeId> },
    /// A founding member that is not the founder: the group's configuration is `members` (all
    /// founders start from the same one, as in Raft's usual bootstrap), so its first leader
    /// needs no membership change (and no step-down after one). The founder stands at once;
    /// this replica stands only after async-raft's first-election delay (30 s), which lets the
    /// group elect a leader even when the founder never comes back to found it (its partition
    /// moved away before it ran).
    Seeded {
        founder: NodeId,
        members: BTreeSet<NodeId>,
    },
    /// A replica placed after the group was founded: it starts empty as a learner, never
    /// initialises, and waits for the group's leader to bring it in.
    Join,
    /// The group has state on this node.
    Restart,
}

/// What storage says about the group before its Raft starts.
enum Found {
    /// Never ran here.
    Pristine,
    /// Ran, but only got as far as a founder's first vote for itself: see
    /// [`clear_unfinished_founding`].
    UnfinishedFounding,
    HasState,
}

impl RaftGroup {
    /// Starts this node's member of `group`.
    ///
    /// # Errors
    /// Reading the group's state from storage failed, the Raft config is invalid, the group is
    /// already running here, or `Found` does not include this node.
    pub async fn start(env: &GroupEnv, group: GroupId, start: Start) -> anyhow::Result<RaftGroup> {
        Self::start_with_machine(env, group, start, None).await
    }

    /// As [`RaftGroup::start`], with `machine` applying the group's `Command::Machine` entries
    /// (the metadata group's).
    ///
    /// # Errors
    /// As [`RaftGroup::start`].
    pub async fn start_with_machine(
        env: &GroupEnv,
        group: GroupId,
        start: Start,
        machine: Option<Box<dyn StateMachine>>,
    ) -> anyhow::Result<RaftGroup> {
        if env.dispatcher.hosts(group) {
            bail!("group {group} already runs on this node");
        }
        let config = env.tuning.raft_config(group)?;
        check_start(&start, env.node, group)?;
        let found = found_state(&env.store, group, env.node)?;
        let founding = initialising(&env.store, group, &start, &found).await?;
        let restarted = founding.is_none() && !matches!(found, Found::Pristine);
        let mut storage = GroupStorage::new(
            env.store.clone(),
            group,
            env.node,
            machine,
            env.containment.restart_leadership,
        )?;
        let (configured, electable) = founding_configuration(&start, founding.is_some());
        if let Some(members) = configured {
            storage = storage.with_founding(MembershipConfig {
                members: members.iter().map(|n| n.0).collect(),
                members_after_consensus: None,
            });
        }
        let storage = Arc::new(storage);
        let network = Arc::new(GroupNetwork::new(
            group,
            env.node,
            env.transport.clone(),
            env.store.clone(),
            LogMarks {
                leader_tail: storage.leader_tail(),
                hollow_below: storage.hollow_below(),
                snapshot_restarts: storage.snapshot_restarts(),
            },
            env.tuning.network(env.containment),
            env.dispatcher.elections(),
        ));
        let raft = Raft::new(
            env.node.0,
            Arc::new(config),
            network.clone(),
            storage.clone(),
        );
        // A founder of several members initialises later, in turn (see `found_in_turn`); until
        // then it votes for nobody.
        let deferred = founding.clone().filter(|members| members.len() > 1);
        if let Some(members) = founding.as_ref().filter(|_| deferred.is_none()) {
            let members: HashSet<u64> = members.iter().map(|n| n.0).collect();
            // Registered with the dispatcher only afterwards: a vote that reached a replica
            // before it initialised would make async-raft a follower of a one-member group.
            if let Err(error) = raft.initialize(members).await {
                tracing::warn!(%group, %error, "initialising the group was refused");
            }
        }
        let (apply_target, apply_rx) = watch::channel(0);
        let inbound = Arc::new(
            GroupInbound::new(
                group,
                raft.clone(),
                apply_target,
                electable
                    .filter(|_| deferred.is_none())
                    .map(|m| m.iter().map(|n| n.0).collect()),
                env.containment,
                GroupSides {
                    store: env.store.clone(),
                    log_version: storage.log_version(),
                    network: network.clone(),
                },
            )
            .counting_step_downs_in(env.dispatcher.step_down_counter()),
        );
        env.dispatcher.register(inbound.clone());
        if let Some(members) = deferred {
            tokio::spawn(found_in_turn(
                env.dispatcher.clone(),
                Arc::downgrade(&inbound),
                raft.clone(),
                members,
                Duration::from_millis(2 * env.tuning.election_timeout_max_ms),
            ));
        }

        let metrics = raft.metrics();
        let (status_tx, status) = watch::channel(GroupStatus {
            role: GroupRole::Learner,
            leader: None,
            term: 0,
            ready: false,
        });
        let driver = tokio::spawn(driver::drive(
            env.node,
            group,
            storage.clone(),
            metrics.clone(),
            apply_rx,
            status_tx,
            env.dispatcher.changes(),
        ));
        if restarted && env.containment.restart_rescue {
            // Weak: a group stopped meanwhile must not be kept alive (nor its store open).
            let inbound = Arc::downgrade(&inbound);
            let wait = Duration::from_millis(env.tuning.election_timeout_max_ms);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let Some(inbound) = inbound.upgrade() else {
                    return;
                };
                if inbound.rescue_restart().await {
                    tracing::debug!(%group, "no leader within an election timeout of the restart: election timer re-armed");
                }
            });
        }
        Ok(RaftGroup {
            id: group,
            node: env.node,
            raft,
            storage,
            network,
            inbound,
            dispatcher: env.dispatcher.clone(),
            metrics,
            status,
            driver,
            fenced_term: AtomicU64::new(0),
            handover_term: AtomicU64::new(0),
            handover_to: AtomicU64::new(0),
            next_proposal: AtomicU64::new(0),
            tuning: env.tuning,
        })
    }
}

/// Initialises a founder of several members once the node has a founding election to spare,
/// and holds it until the group has a leader (or `patience` passes: a member may be down).
async fn found_in_turn(
    dispatcher: Arc<Dispatcher>,
    inbound: Weak<GroupInbound>,
    raft: GroupRaft,
    members: BTreeSet<NodeId>,
    patience: Duration,
) {
    let Some(_permit) = dispatcher.founding_permit().await else {
        return;
    };
    // A group stopped meanwhile is not initialised.
    let Some(inbound) = inbound.upgrade() else {
        return;
    };
    let ids: BTreeSet<u64> = members.iter().map(|n| n.0).collect();
    if let Err(error) = raft.initialize(ids.iter().copied().collect()).await {
        tracing::warn!(group = %inbound.group, %error, "initialising the group was refused");
        return;
    }
    inbound.allow_votes_for(ids);
    drop(inbound);
    let mut metrics = raft.metrics();
    let _ = tokio::time::timeout(
        patience,
        metrics.wait_for(|m| m.current_leader.is_some() || m.state == State::Shutdown),
    )
    .await;
}

fn check_start(start: &Start, node: NodeId, group: GroupId) -> anyhow::Result<()> {
    match start {
        Start::Found { members } | Start::Seeded { members, .. } if !members.contains(&node) => {
            bail!("node {node} founds group {group} without being one of its members")
        }
        Start::Seeded { founder, members } if *founder == node || !members.contains(founder) => {
            bail!("group {group}: founder {founder} of {members:?} cannot seed it on node {node}")
        }
        _ => Ok(()),
    }
}

/// The members this node initialises the group with, if it does: a founder whose group never
/// ran here. A lone founder that only got as far as its first vote may forget it and initialise
/// again (see [`clear_unfinished_founding`]); a founder of several members may not, since
/// another member may hold entries of that first term, so it restarts from the founding
/// configuration instead and stands in a later term.
async fn initialising(
    store: &Store,
    group: GroupId,
    start: &Start,
    found: &Found,
) -> anyhow::Result<Option<BTreeSet<NodeId>>> {
    let Start::Found { members } = start else {
        return Ok(None);
    };
    Ok(match found {
        Found::Pristine => Some(members.clone()),
        Found::UnfinishedFounding if members.len() == 1 => {
            clear_unfinished_founding(store, group).await?;
            Some(members.clone())
        }
        Found::UnfinishedFounding | Found::HasState => {
            tracing::info!(%group, "the group has state here: restarting it instead of founding it");
            None
        }
    })
}

/// The configuration storage shows async-raft while none is stored (`None`: a lone member's,
/// async-raft's default), and the candidates a replica with no stored configuration may vote
/// for (`None`: nobody).
fn founding_configuration(
    start: &Start,
    initialising: bool,
) -> (Option<BTreeSet<NodeId>>, Option<BTreeSet<NodeId>>) {
    match start {
        // Initialising gives async-raft the configuration itself (and it initialises only a
        // replica that shows none).
        Start::Found { members } if initialising => (None, Some(members.clone())),
        Start::Found { members } if members.len() > 1 => {
            (Some(members.clone()), Some(members.clone()))
        }
        Start::Seeded { members, .. } => (Some(members.clone()), Some(members.clone())),
        _ => (None, None),
    }
}

fn found_state(store: &Store, group: GroupId, node: NodeId) -> anyhow::Result<Found> {
    let hard_state = match store.hard_state(group)? {
        Some(bytes) => Some(
            rmp_serde::from_slice::<HardState>(&bytes).context("decoding the stored hard state")?,
        ),
        None => None,
    };
    let has_log = store.last_entry(group)?.is_some() || store.log_floor(group)?.index > 0;
    Ok(match hard_state {
        _ if has_log => Found::HasState,
        None => Found::Pristine,
        Some(HardState {
            current_term: 0, ..
        }) => Found::Pristine,
        Some(HardState {
            current_term: 1,
            voted_for: Some(voted),
        }) if voted == node.0 => Found::UnfinishedFounding,
        Some(_) => Found::HasState,
    })
}

/// A founder that crashed after saving its first vote (term 1, for itself) but before any log
/// entry may forget that vote and initialise again. Safe: initialising makes it a candidate of
/// term 1 voting for itself again, the very vote it had cast; it cannot have voted for anyone
/// else in term 1 (the vote for itself came first and is kept per term), it saw no later term
/// (the stored term would be higher), and with an empty log it acknowledged nothing. If it had
/// won term 1 with a single member, it crashed before its first entry (the initial
/// configuration) was durable, so nothing of that leadership survives to conflict with.
async fn clear_unfinished_founding(store: &Store, group: GroupId) -> anyhow::Result<()> {
    let cleared = HardState {
        current_term: 0,
        voted_for: None,
    };
    store.save_hard_state(group, &rmp_serde::to_vec(&cleared)?)?;
    let (tx, rx) = oneshot::channel();
    store.request_sync(Box::new(move |result| {
        let _ = tx.send(result);
    }));
    rx.await
        .context("the sync thread went away")?
        .context("making the cleared hard state durable")?;
    tracing::info!(%group, "cleared an unfinished founding vote");
    Ok(())
}
