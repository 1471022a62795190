//! How a group comes to be on a node: founded, joined, or restarted from its stored state.

use super::{driver, GroupEnv, GroupRole, GroupStatus, RaftGroup};
use crate::dispatch::GroupInbound;
use crate::network::GroupNetwork;
use crate::raft_store::GroupStorage;
use anyhow::{bail, Context};
use async_raft::storage::HardState;
use async_raft::Raft;
use gregor_storage::{GroupId, NodeId, StateMachine, Store};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How the group comes to be on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// This node founds the group with `members` (which must include it): the founding replica
    /// chosen at topic creation, or the node founding a cluster for the metadata group. Every
    /// other node in `members` must start the group with the same `Found` (a `Join` replica has
    /// no configuration and refuses votes), so in practice a group is founded by one node alone
    /// and the others are brought in with [`RaftGroup::change_membership_step`]. A group that
    /// already has log entries here restarts instead; pass `Found` again after a restart while
    /// the founder's group has no log entry (it may have crashed while founding).
    Found { members: BTreeSet<NodeId> },
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
        let found = found_state(&env.store, group, env.node)?;
        let restarted = matches!(found, Found::HasState);
        let founding = match (&start, found) {
            (Start::Found { members }, _) if !members.contains(&env.node) => {
                bail!(
                    "node {} founds group {group} without being one of its members",
                    env.node
                )
            }
            (Start::Found { members }, Found::Pristine) => Some(members.clone()),
            (Start::Found { members }, Found::UnfinishedFounding) => {
                clear_unfinished_founding(&env.store, group).await?;
                Some(members.clone())
            }
            (Start::Found { .. }, Found::HasState) => {
                tracing::info!(%group, "the group has state here: restarting it instead of founding it");
                None
            }
            _ => None,
        };

        let storage = Arc::new(GroupStorage::new(
            env.store.clone(),
            group,
            env.node,
            machine,
            env.containment.restart_leadership,
        )?);
        let network = Arc::new(GroupNetwork::new(
            group,
            env.node,
            env.transport.clone(),
            env.store.clone(),
            storage.leader_tail(),
            env.tuning.network(env.containment),
        ));
        let raft = Raft::new(
            env.node.0,
            Arc::new(config),
            network.clone(),
            storage.clone(),
        );
        if let Some(members) = &founding {
            let members: HashSet<u64> = members.iter().map(|n| n.0).collect();
            // Registered with the dispatcher only afterwards: a vote that reached a replica
            // before it initialised would make async-raft a follower of a one-member group.
            if let Err(error) = raft.initialize(members).await {
                tracing::warn!(%group, %error, "initialising the group was refused");
            }
        }
        let (apply_target, apply_rx) = watch::channel(0);
        let inbound = Arc::new(GroupInbound::new(
            group,
            raft.clone(),
            env.store.clone(),
            apply_target,
            founding.map(|m| m.iter().map(|n| n.0).collect()),
            env.containment,
            storage.log_version(),
        ));
        env.dispatcher.register(inbound.clone());

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
            next_proposal: AtomicU64::new(0),
            tuning: env.tuning,
        })
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
