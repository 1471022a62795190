//! [`Reconciler`]: carries out the reconciler's plans on this node. Whenever the applied
//! metadata changes (and on a slow timer, to retry what failed) it plans against what the node
//! runs and stores, starts and stops replicas one at a time, and hands deletions to a
//! background queue that removes data in bounded steps off the request path.

use super::local::{LocalRegistry, Registered};
use super::plan::{plan, Action, Local, StartMode};
use crate::directory::{Directory, ReplicaHandle};
use crate::metadata::{HostedPartition, MetadataView};
use crate::partition::{PartitionReplica, ReplicaSettings, StopReplica};
use crate::shards::{ShardPlace, Shards};
use crate::storage_io::off_thread;
use actix::prelude::*;
use gregor_cluster::{ClusterNode, Start};
use gregor_storage::{GroupId, NodeId, StorageError, Store};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Pause between two bounded steps of removing a group's data: each step runs on a storage
/// thread, but its writes share the journal and the disk with live traffic, which a large
/// deletion must not crowd out.
const DELETION_PAUSE: Duration = Duration::from_millis(1);
/// How often a plan runs without a metadata change, to retry what failed.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Starts between two progress lines while many partitions start.
const STARTUP_PROGRESS_EVERY: usize = 1_000;

/// What starting a replica needs; shared by every replica of the node.
#[derive(Clone)]
pub struct ReplicaFactory {
    pub cluster: Arc<ClusterNode>,
    pub settings: ReplicaSettings,
    /// The threads replicas run on; a replica's actor and its Raft group start on its shard.
    pub shards: Arc<Shards>,
}

impl ReplicaFactory {
    fn node(&self) -> NodeId {
        self.cluster.node()
    }

    fn store(&self) -> &Store {
        self.cluster.store()
    }

    /// Starts the replica on its shard: async-raft spawns its core and streams on the runtime
    /// it is started from, and the actor runs on the arbiter that starts it.
    async fn start(
        &self,
        replica: &HostedPartition,
        mode: &StartMode,
    ) -> Result<ReplicaHandle, String> {
        let shard = self.shards.of(replica.topic.record.id, replica.partition);
        let factory = self.clone();
        let replica = replica.clone();
        let mode = mode.clone();
        self.shards
            .run(shard, move || async move {
                factory
                    .start_here(&replica, &mode, ShardPlace::here(shard))
                    .await
            })
            .await
            .map_err(|e| e.to_string())?
    }

    async fn start_here(
        &self,
        replica: &HostedPartition,
        mode: &StartMode,
        shard: ShardPlace,
    ) -> Result<ReplicaHandle, String> {
        let group = replica.group();
        let founders = || replica.assignment().replicas.iter().copied().collect();
        let start = match mode {
            StartMode::Found => Start::Found {
                members: founders(),
            },
            StartMode::Seed { founder } => Start::Seeded {
                founder: *founder,
                members: founders(),
            },
            StartMode::Join => Start::Join,
            StartMode::Restart => Start::Restart,
        };
        let raft = self
            .cluster
            .start_group(group, start)
            .await
            .map_err(|e| format!("starting raft group {group}: {e}"))?;
        let topic = replica.topic.record.clone();
        let addr = PartitionReplica::new(
            topic.clone(),
            replica.partition,
            raft.clone(),
            self.settings.clone(),
        )
        .start();
        Ok(ReplicaHandle {
            topic,
            partition: replica.partition,
            addr,
            state: raft.applied(),
            group: raft,
            shard,
        })
    }

    /// Stops a replica's actor and its Raft group, from this thread: both are reached through
    /// channels, whichever shard they run on.
    async fn stop(&self, replica: ReplicaHandle) {
        let _ = replica.addr.send(StopReplica).await;
        self.cluster.stop_group(replica.group.id()).await;
    }
}

pub struct Reconciler {
    factory: ReplicaFactory,
    directory: Arc<Directory>,
    registry: LocalRegistry,
    registered: Registered,
    /// Deletions waiting for the deleter, and the one it works on.
    deletions: VecDeque<GroupId>,
    deleting_now: Option<GroupId>,
    /// A plan is being carried out; `dirty` asks for another when it ends.
    busy: bool,
    dirty: bool,
    /// The view of the last plan carried out to its end, with nothing left to do.
    settled: watch::Sender<u64>,
    /// The node is shutting down: no new work; these wait for every replica to stop.
    stopping: bool,
    stop_waiters: Vec<oneshot::Sender<()>>,
}

impl Reconciler {
    /// # Errors
    /// The node-local registry cannot be read.
    pub fn new(factory: ReplicaFactory, directory: Arc<Directory>) -> Result<Self, StorageError> {
        let registry = LocalRegistry::new(factory.store().clone());
        let registered = registry.load()?;
        let (settled, _) = watch::channel(0);
        Ok(Reconciler {
            factory,
            directory,
            registry,
            registered,
            deletions: VecDeque::new(),
            deleting_now: None,
            busy: false,
            dirty: false,
            settled,
            stopping: false,
            stop_waiters: Vec::new(),
        })
    }

    /// The metadata index of the last view this node fully carried out (0: none yet).
    pub fn settled(&self) -> watch::Receiver<u64> {
        self.settled.subscribe()
    }

    fn local(&self, view: &MetadataView) -> Local {
        let running = self.directory.running();
        let store = self.factory.store();
        let stopped: Vec<GroupId> = view
            .hosted_by(self.factory.node())
            .iter()
            .map(HostedPartition::group)
            .filter(|g| !running.contains(g))
            .collect();
        let with_log = stopped
            .iter()
            .copied()
            .filter(|g| has_log(store, *g))
            .collect();
        let with_state = stopped
            .into_iter()
            .filter(|g| has_log(store, *g) || has_hard_state(store, *g))
            .collect();
        let mut deleting = self.registered.deleting.clone();
        deleting.extend(self.deletions.iter().copied());
        deleting.extend(self.deleting_now);
        Local {
            running,
            stored: self.registered.hosted.clone(),
            deleting,
            with_state,
            with_log,
        }
    }

    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        if self.busy {
            self.dirty = true;
            return;
        }
        let view = self.directory.view();
        let actions = plan(&view, self.factory.node(), &self.local(&view));
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        // A replica's data goes only once it has stopped: a running group must never see its
        // state vanish under it.
        let mut after_stops = Vec::new();
        for action in actions {
            match action {
                Action::Stop { group } => stops.extend(self.directory.remove(group)),
                Action::Delete { group } if stops.iter().any(|s| s.group.id() == group) => {
                    after_stops.push(group)
                }
                Action::Delete { group } => self.queue_deletion(group),
                Action::Start { replica, mode } => starts.push((replica, mode)),
            }
        }
        self.kick_deleter(ctx);
        if starts.is_empty() && stops.is_empty() {
            // Deletions report back when they finish, and plan again then.
            if self.deletions.is_empty() && self.deleting_now.is_none() {
                self.settled.send_replace(view.last_index());
            }
            return;
        }
        self.busy = true;
        let factory = self.factory.clone();
        let registry = self.registry.clone();
        let work = async move {
            for replica in stops {
                factory.stop(replica).await;
            }
            let mut started = Vec::new();
            let mut failed = false;
            let total = starts.len();
            for (i, (replica, mode)) in starts.into_iter().enumerate() {
                let group = replica.group();
                tracing::debug!(node = %factory.node(), %group, ?mode, assignment = ?replica.assignment(), "starting a replica");
                if let Err(error) = registry.hosted(group) {
                    tracing::error!(%group, %error, "recording a hosted replica failed");
                    failed = true;
                    break;
                }
                match factory.start(&replica, &mode).await {
                    Ok(handle) => started.push(handle),
                    Err(error) => {
                        tracing::warn!(%group, %error, "a replica did not start");
                        failed = true;
                    }
                }
                if (i + 1) % STARTUP_PROGRESS_EVERY == 0 {
                    tracing::info!(started = i + 1, of = total, "starting replicas");
                }
            }
            (started, failed)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |(started, failed), act, ctx| {
                    for handle in started {
                        act.registered.hosted.insert(handle.group.id());
                        act.directory.insert(handle);
                    }
                    for group in after_stops {
                        act.queue_deletion(group);
                    }
                    act.busy = false;
                    if act.stopping {
                        act.stop_everything(ctx);
                        return;
                    }
                    // Whatever changed meanwhile, and whatever this pass could not finish. A pass that
                    // failed is retried by the periodic plan, not at once: a failure that does not go
                    // away (a store poisoned by a failed fsync) would otherwise loop without yielding.
                    let changed = std::mem::take(&mut act.dirty);
                    if failed && !changed {
                        return;
                    }
                    act.reconcile(ctx);
                }),
        );
    }

    fn queue_deletion(&mut self, group: GroupId) {
        if self.deleting_now != Some(group) && !self.deletions.contains(&group) {
            self.deletions.push_back(group);
        }
    }

    /// Deletes one group at a time: the durable marker first, then the data in bounded steps,
    /// then the registry rows.
    fn kick_deleter(&mut self, ctx: &mut Context<Self>) {
        if self.deleting_now.is_some() || self.stopping {
            return;
        }
        let Some(group) = self.deletions.pop_front() else {
            return;
        };
        self.deleting_now = Some(group);
        let registry = self.registry.clone();
        let store = self.factory.store().clone();
        let work = async move {
            registry.deleting(group).await?;
            // Each step removes thousands of keys: on a storage thread, not the actors' one.
            while !off_thread(&store, move |store| store.delete_group(group)).await? {
                tokio::time::sleep(DELETION_PAUSE).await;
            }
            registry.deleted(group)
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            act.deleting_now = None;
            match result {
                Ok(()) => {
                    act.registered.hosted.remove(&group);
                    act.registered.deleting.remove(&group);
                    tracing::info!(%group, "replica data deleted");
                }
                // The marker (if written) stays: the next plan, or the next start, resumes it.
                // Not at once: a failure that does not go away (a store poisoned by a failed
                // fsync) would plan, queue and fail the deletion again without ever yielding
                // (five-node simulation seed 993 froze so after its final reads).
                Err(error) => {
                    tracing::error!(%group, %error, "deleting replica data failed");
                    return;
                }
            }
            act.reconcile(ctx);
        }));
    }
}

// A read that fails counts as state: restarting is safe where founding might not be.
fn has_hard_state(store: &Store, group: GroupId) -> bool {
    store.hard_state(group).map_or(true, |h| h.is_some())
}

fn has_log(store: &Store, group: GroupId) -> bool {
    let log = store.last_entry(group).map_or(true, |e| e.is_some());
    let floor = store.log_floor(group).map_or(true, |f| f.index > 0);
    log || floor
}

impl Actor for Reconciler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let changes = futures::stream::unfold(self.directory.watch_view(), |mut rx| async move {
            rx.changed().await.ok()?;
            rx.borrow_and_update();
            Some(((), rx))
        });
        ctx.add_stream(changes);
        ctx.run_interval(RETRY_INTERVAL, |act, ctx| act.reconcile(ctx));
        self.reconcile(ctx);
    }
}

impl StreamHandler<()> for Reconciler {
    fn handle(&mut self, (): (), ctx: &mut Self::Context) {
        self.reconcile(ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Stop every replica (the node is shutting down); their data stays. Answered once every
/// replica has stopped, including those a plan in progress was starting.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

impl Reconciler {
    fn stop_everything(&mut self, ctx: &mut Context<Self>) {
        let replicas = self.directory.drain();
        let waiters = std::mem::take(&mut self.stop_waiters);
        let factory = self.factory.clone();
        ctx.wait(
            async move {
                // All at once: a node holding thousands of replicas took a minute or two to
                // stop them one after another.
                let groups: Vec<GroupId> = replicas.iter().map(|r| r.group.id()).collect();
                let actors = replicas.iter().map(|r| r.addr.send(StopReplica));
                futures::future::join_all(actors).await;
                factory.cluster.stop_groups(groups).await;
            }
            .into_actor(self)
            .map(|(), _, ctx| {
                for waiter in waiters {
                    let _ = waiter.send(());
                }
                ctx.stop();
            }),
        );
    }
}

impl Handler<StopAll> for Reconciler {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopAll, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        let first = !self.stopping;
        self.stopping = true;
        if first && !self.busy {
            self.stop_everything(ctx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// The replicas this node is deleting or about to (for status and tests).
#[derive(Message)]
#[rtype(result = "BTreeSet<GroupId>")]
pub struct PendingDeletions;

impl Handler<PendingDeletions> for Reconciler {
    type Result = MessageResult<PendingDeletions>;

    fn handle(&mut self, _: PendingDeletions, _: &mut Self::Context) -> Self::Result {
        let mut pending: BTreeSet<GroupId> = self.deletions.iter().copied().collect();
        pending.extend(self.deleting_now);
        pending.extend(self.registered.deleting.iter().copied());
        MessageResult(pending)
    }
}
