//! [`ClusterNode`]: this node's part of the cluster. It owns the node's store, its outbound
//! [`Transport`], the inbound [`Dispatcher`] and every Raft group it hosts, so the actors
//! start, stop and delete groups in one place. Production binds a [`PeerTransport`]; the
//! simulation hands in its network.

use crate::containment::Containment;
use crate::dispatch::Dispatcher;
use crate::group::{GroupEnv, RaftGroup, RaftTuning, Start};
use crate::peer::{PeerConfig, PeerTransport};
use crate::quiescence;
use crate::transport::Transport;
use anyhow::Context;
use gregor_storage::{GroupId, NodeId, StateMachine, Store};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause between bounded steps of deleting a group's data, so a large deletion does not
/// crowd out live traffic.
const DELETE_PAUSE: Duration = Duration::from_millis(1);

pub struct ClusterNode {
    env: GroupEnv,
    groups: Mutex<BTreeMap<GroupId, Arc<RaftGroup>>>,
    /// Serialises starts and stops, so a group id is never started twice at once.
    lifecycle: tokio::sync::Mutex<()>,
    /// The node's quiescence loop (see `crate::quiescence`), when groups may go quiet.
    quiescence: Option<tokio::task::JoinHandle<()>>,
}

impl ClusterNode {
    /// A node whose requests leave through `transport` and whose peers' requests arrive through
    /// `dispatcher` (which the transport was given as its handler).
    pub fn new(
        node: NodeId,
        store: Store,
        transport: Arc<dyn Transport>,
        dispatcher: Arc<Dispatcher>,
        tuning: RaftTuning,
    ) -> Arc<ClusterNode> {
        Self::with_containment(
            node,
            store,
            transport,
            dispatcher,
            tuning,
            Containment::default(),
        )
    }

    /// As [`ClusterNode::new`], with some of async-raft's containments switched off: only
    /// tests that show what a containment prevents do that.
    pub fn with_containment(
        node: NodeId,
        store: Store,
        transport: Arc<dyn Transport>,
        dispatcher: Arc<Dispatcher>,
        tuning: RaftTuning,
        containment: Containment,
    ) -> Arc<ClusterNode> {
        let settings = tuning.quiescence();
        let quiescence = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if settings.rounds > 0 => Some(runtime.spawn(quiescence::run(
                node,
                Arc::downgrade(&dispatcher),
                transport.clone(),
                settings,
            ))),
            _ => None,
        };
        Arc::new(ClusterNode {
            env: GroupEnv {
                node,
                store,
                transport,
                dispatcher,
                tuning,
                containment,
            },
            groups: Mutex::new(BTreeMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            quiescence,
        })
    }

    /// Production: binds the peer transport on `listen` with a new dispatcher as its handler.
    ///
    /// # Errors
    /// The address cannot be bound, or the peer config is inconsistent.
    pub async fn bind(
        store: Store,
        peer: PeerConfig,
        listen: SocketAddr,
        tuning: RaftTuning,
    ) -> std::io::Result<(Arc<ClusterNode>, Arc<PeerTransport>)> {
        let node = peer.node;
        let dispatcher = Dispatcher::new();
        let transport = PeerTransport::bind(peer, listen, dispatcher.clone()).await?;
        let cluster = ClusterNode::new(node, store, transport.clone(), dispatcher, tuning);
        Ok((cluster, transport))
    }

    pub fn node(&self) -> NodeId {
        self.env.node
    }

    pub fn store(&self) -> &Store {
        &self.env.store
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.env.dispatcher
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.env.transport
    }

    pub fn tuning(&self) -> RaftTuning {
        self.env.tuning
    }

    /// Starts the group (see [`Start`]), or returns it if it already runs here.
    ///
    /// # Errors
    /// As [`RaftGroup::start`].
    pub async fn start_group(
        &self,
        group: GroupId,
        start: Start,
    ) -> anyhow::Result<Arc<RaftGroup>> {
        self.start_group_with_machine(group, start, None).await
    }

    /// As [`ClusterNode::start_group`], with `machine` applying the group's `Command::Machine`
    /// entries (the metadata group's). A group already running keeps its machine.
    ///
    /// # Errors
    /// As [`RaftGroup::start`].
    pub async fn start_group_with_machine(
        &self,
        group: GroupId,
        start: Start,
        machine: Option<Box<dyn StateMachine>>,
    ) -> anyhow::Result<Arc<RaftGroup>> {
        let _turn = self.lifecycle.lock().await;
        if let Some(running) = self.group(group) {
            return Ok(running);
        }
        let started =
            Arc::new(RaftGroup::start_with_machine(&self.env, group, start, machine).await?);
        self.lock().insert(group, started.clone());
        Ok(started)
    }

    pub fn group(&self, group: GroupId) -> Option<Arc<RaftGroup>> {
        self.lock().get(&group).cloned()
    }

    pub fn groups(&self) -> Vec<Arc<RaftGroup>> {
        self.lock().values().cloned().collect()
    }

    /// Stops the group's Raft; its data stays. Returns whether it was running.
    pub async fn stop_group(&self, group: GroupId) -> bool {
        let _turn = self.lifecycle.lock().await;
        let Some(running) = self.lock().remove(&group) else {
            return false;
        };
        running.shutdown().await;
        true
    }

    /// Stops the group and removes its data, in bounded steps.
    ///
    /// # Errors
    /// The store failed.
    pub async fn delete_group(&self, group: GroupId) -> anyhow::Result<()> {
        self.stop_group(group).await;
        let _turn = self.lifecycle.lock().await;
        while !self
            .env
            .store
            .delete_group(group)
            .with_context(|| format!("deleting the data of group {group}"))?
        {
            tokio::time::sleep(DELETE_PAUSE).await;
        }
        Ok(())
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        if let Some(quiescence) = &self.quiescence {
            quiescence.abort();
        }
        let groups: Vec<GroupId> = self.lock().keys().copied().collect();
        self.stop_groups(groups).await;
    }

    /// Stops these groups' Rafts together (their data stays): a node holding thousands of
    /// groups took a minute or two to stop them one after another.
    pub async fn stop_groups(&self, groups: impl IntoIterator<Item = GroupId>) {
        let _turn = self.lifecycle.lock().await;
        let running: Vec<Arc<RaftGroup>> = {
            let mut map = self.lock();
            groups.into_iter().filter_map(|g| map.remove(&g)).collect()
        };
        futures::future::join_all(running.iter().map(|group| group.shutdown())).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GroupId, Arc<RaftGroup>>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(quiescence) = &self.quiescence {
            quiescence.abort();
        }
    }
}
