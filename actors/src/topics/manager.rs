//! The topic manager: the state machine owner of the metadata Raft group (group 0). It
//! validates topic changes against the committed table, replicates them, and starts or stops
//! the partition replicas they imply. One member here; in a cluster this is the controller
//! quorum and every node keeps a read copy.

use super::core::{TopicCore, TopicRecord, OFFSETS_TOPIC};
use crate::api::{
    ApiError, BrokerInfo, ClusterMetadata, CreateTopic, DeleteTopic, DescribeTopic, ErrorCode,
    ListTopics, Metadata, PartitionDescription, PartitionMetadata, TopicConfigOverrides,
    TopicDescription, TopicMetadata, TopicSummary,
};
use crate::directory::{Directory, ReplicaHandle, TopicEntry};
use crate::groups::{GroupRouter, TopicDeleted};
use crate::partition::{
    compact_applied_log, propose_error_pub, PartitionReplica, ReplicaSettings, StopReplica,
};
use actix::prelude::*;
use gregor_cluster::{ClusterNode, Command, RaftGroup, Start};
use gregor_storage::{GroupId, NodeId, PartitionId, Store};
use std::sync::Arc;
use std::time::Duration;

/// How long a new partition's single-member group may take to become leader.
const LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two bounded steps of removing a deleted topic's data.
const DELETION_PAUSE: Duration = Duration::from_millis(1);
/// Partitions between two progress lines while a large topic starts.
const STARTUP_PROGRESS_EVERY: u32 = 1_000;

/// What starting a replica needs; shared by every replica of the node.
#[derive(Clone)]
pub(crate) struct ReplicaFactory {
    pub store: Store,
    pub node: NodeId,
    pub cluster: Arc<ClusterNode>,
    pub settings: ReplicaSettings,
}

impl ReplicaFactory {
    async fn start_replica(
        &self,
        topic: &TopicRecord,
        partition: PartitionId,
    ) -> Result<ReplicaHandle, String> {
        let group = topic.group_of(partition);
        let raft = self
            .cluster
            .start_group(group, self.founding())
            .await
            .map_err(|e| format!("starting raft group {group}: {e}"))?;
        if !raft.wait_for_leadership(LEADERSHIP_TIMEOUT).await {
            return Err(format!(
                "group {group} of {}/{partition} did not elect this node",
                topic.name
            ));
        }
        let state = raft.applied();
        let addr = PartitionReplica::new(
            topic.clone(),
            partition,
            raft.clone(),
            self.settings.clone(),
        )
        .start();
        Ok(ReplicaHandle {
            addr,
            group: raft,
            state,
        })
    }

    /// A single-node group: this node founds it alone (a group with state here restarts).
    fn founding(&self) -> Start {
        Start::Found {
            members: [self.node].into(),
        }
    }

    pub(crate) async fn start_topic(&self, topic: &TopicRecord) -> Result<TopicEntry, String> {
        let mut replicas = Vec::with_capacity(topic.partitions as usize);
        for partition in 0..topic.partitions {
            replicas.push(self.start_replica(topic, PartitionId(partition)).await?);
            // Thousands of partitions take seconds to start: say how far along it is.
            let started = partition + 1;
            if started % STARTUP_PROGRESS_EVERY == 0 && started < topic.partitions {
                tracing::info!(topic = %topic.name, started, of = topic.partitions, "starting partitions");
            }
        }
        Ok(TopicEntry {
            record: topic.clone(),
            replicas,
        })
    }
}

pub(crate) async fn stop_topic(cluster: &ClusterNode, entry: TopicEntry) {
    for replica in entry.replicas {
        let _ = replica.addr.send(StopReplica).await;
        cluster.stop_group(replica.group.id()).await;
    }
}

pub struct TopicManager {
    node: NodeId,
    /// Told about deleted topics, so groups forget their offsets. Set once the router exists.
    groups: Option<Addr<GroupRouter>>,
    advertised_address: String,
    metadata: Arc<RaftGroup>,
    core: TopicCore,
    directory: Arc<Directory>,
    factory: ReplicaFactory,
    propose_timeout: Duration,
}

impl TopicManager {
    /// Starts the metadata group, loads the committed topic table, creates the internal offsets
    /// topic on first start, and starts a replica for every partition.
    pub(crate) async fn start(
        factory: ReplicaFactory,
        directory: Arc<Directory>,
        advertised_address: String,
        offsets_partitions: u32,
    ) -> Result<Addr<TopicManager>, String> {
        let node = factory.node;
        let metadata = factory
            .cluster
            .start_group(GroupId::METADATA, factory.founding())
            .await
            .map_err(|e| format!("starting the metadata group: {e}"))?;
        if !metadata.wait_for_leadership(LEADERSHIP_TIMEOUT).await {
            return Err("the metadata group did not elect this node".into());
        }
        // Everything committed before a restart is applied before the table is read.
        wait_until_applied(&metadata).await;
        let kv = factory
            .store
            .kv_scan_prefix(GroupId::METADATA, b"")
            .map_err(|e| format!("reading topic metadata: {e}"))?;
        let mut core = TopicCore::load(&kv)?;
        let propose_timeout = factory.settings.propose_timeout;
        if core.get(OFFSETS_TOPIC).is_none() {
            let request = CreateTopic {
                name: OFFSETS_TOPIC.into(),
                partitions: offsets_partitions,
                replication_factor: 1,
                config: TopicConfigOverrides {
                    retention_ms: Some(-1),
                    retention_bytes: Some(-1),
                    max_message_bytes: None,
                },
            };
            let (record, write) = core.plan_create(&request, 1, true).map_err(|e| e.message)?;
            metadata
                .propose(Command::Kv(write), propose_timeout)
                .await
                .map_err(|e| format!("creating {OFFSETS_TOPIC}: {e}"))?;
            core.apply_create(record);
        }
        for record in core.topics() {
            let entry = factory.start_topic(record).await?;
            directory.insert(entry);
        }
        tracing::info!(topics = core.topics().count(), "topic metadata loaded");
        Ok(TopicManager {
            node,
            groups: None,
            advertised_address,
            metadata,
            core,
            directory,
            factory,
            propose_timeout,
        }
        .start())
    }

    fn describe(&self, record: &TopicRecord) -> TopicDescription {
        let entry = self.directory.topic(&record.name);
        let partitions = (0..record.partitions)
            .map(|p| {
                let replica = entry.as_ref().and_then(|e| e.replicas.get(p as usize));
                let state = replica.map(|r| *r.state.borrow()).unwrap_or_default();
                PartitionDescription {
                    partition: PartitionId(p),
                    leader: replica.and_then(|r| r.group.leader()),
                    replicas: vec![self.node],
                    log_start_offset: state.log_start_offset,
                    high_watermark: state.next_offset,
                }
            })
            .collect();
        TopicDescription {
            name: record.name.clone(),
            replication_factor: record.replication_factor,
            internal: record.internal,
            config: record.config.clone(),
            partitions,
        }
    }
}

async fn wait_until_applied(group: &RaftGroup) {
    let mut applied = group.applied();
    let target = group
        .store()
        .last_entry(group.id())
        .ok()
        .flatten()
        .map_or(0, |e| e.index);
    let _ = tokio::time::timeout(LEADERSHIP_TIMEOUT, async {
        while applied.borrow_and_update().last_applied < target {
            if applied.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}

impl Actor for TopicManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The topic table lives in the key-value state; applied metadata entries are history.
        ctx.run_interval(self.factory.settings.retention_check_interval, |act, _| {
            let last_applied = act.metadata.applied().borrow().last_applied;
            compact_applied_log(&act.factory.store, GroupId::METADATA, last_applied);
        });
    }
}

impl Handler<CreateTopic> for TopicManager {
    type Result = AtomicResponse<Self, Result<TopicDescription, ApiError>>;

    fn handle(&mut self, request: CreateTopic, _: &mut Self::Context) -> Self::Result {
        let plan = self.core.plan_create(&request, 1, false);
        let metadata = self.metadata.clone();
        let timeout = self.propose_timeout;
        let factory = self.factory.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let (record, write) = plan?;
                metadata.propose(Command::Kv(write), timeout).await.map_err(propose_error_pub)?;
                let entry = factory.start_topic(&record).await;
                Ok((record, entry))
            }
            .into_actor(self)
            .map(|result: Result<(TopicRecord, Result<TopicEntry, String>), ApiError>, act, _| {
                let (record, entry) = result?;
                act.core.apply_create(record.clone());
                match entry {
                    Ok(entry) => act.directory.insert(entry),
                    Err(error) => {
                        tracing::error!(topic = %record.name, %error, "topic created but its replicas did not start");
                        return Err(ApiError::new(
                            ErrorCode::UNAVAILABLE,
                            format!("topic '{}' was created but is not available yet: {error}", record.name),
                        ));
                    }
                }
                Ok(act.describe(&record))
            }),
        ))
    }
}

impl Handler<DeleteTopic> for TopicManager {
    type Result = AtomicResponse<Self, Result<(), ApiError>>;

    fn handle(&mut self, request: DeleteTopic, _: &mut Self::Context) -> Self::Result {
        let plan = self.core.plan_delete(&request.name);
        let metadata = self.metadata.clone();
        let timeout = self.propose_timeout;
        let directory = self.directory.clone();
        let store = self.factory.store.clone();
        let groups = self.groups.clone();
        let cluster = self.factory.cluster.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let (record, write) = plan?;
                metadata
                    .propose(Command::Kv(write), timeout)
                    .await
                    .map_err(propose_error_pub)?;
                if let Some(entry) = directory.remove(&record.name) {
                    stop_topic(&cluster, entry).await;
                }
                if let Some(groups) = groups {
                    let forgotten = groups.send(TopicDeleted(record.name.clone())).await;
                    if !matches!(forgotten, Ok(Ok(()))) {
                        // The topic is gone either way; stale offsets only matter if it is
                        // re-created, and the next delete of that name retries this.
                        tracing::warn!(topic = %record.name, "groups could not forget the deleted topic's offsets");
                    }
                }
                Ok(record)
            }
            .into_actor(self)
            .map(move |result: Result<TopicRecord, ApiError>, act, ctx| {
                let record = result?;
                act.core.apply_delete(&record.name);
                let groups: Vec<GroupId> = (0..record.partitions)
                    .map(|p| record.group_of(PartitionId(p)))
                    .collect();
                ctx.spawn(delete_groups(store, groups).into_actor(act));
                Ok(())
            }),
        ))
    }
}

/// Removes a deleted topic's data in bounded steps, yielding between them.
async fn delete_groups(store: Store, groups: Vec<GroupId>) {
    for group in groups {
        loop {
            let done = store.delete_group(group);
            // Background work shares the thread that serves every partition: a pause between
            // steps (not just a yield) keeps a large deletion from crowding out live traffic.
            tokio::time::sleep(DELETION_PAUSE).await;
            match done {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%group, %error, "removing a deleted topic's data failed");
                    break;
                }
            }
        }
    }
}

impl Handler<ListTopics> for TopicManager {
    type Result = Result<Vec<TopicSummary>, ApiError>;

    fn handle(&mut self, request: ListTopics, _: &mut Self::Context) -> Self::Result {
        Ok(self
            .core
            .topics()
            .filter(|t| request.include_internal || !t.internal)
            .map(TopicRecord::summary)
            .collect())
    }
}

impl Handler<DescribeTopic> for TopicManager {
    type Result = Result<TopicDescription, ApiError>;

    fn handle(&mut self, request: DescribeTopic, _: &mut Self::Context) -> Self::Result {
        let record = self
            .core
            .get(&request.name)
            .ok_or_else(|| ApiError::unknown_topic(&request.name))?;
        Ok(self.describe(record))
    }
}

impl Handler<Metadata> for TopicManager {
    type Result = Result<ClusterMetadata, ApiError>;

    fn handle(&mut self, request: Metadata, _: &mut Self::Context) -> Self::Result {
        let records: Vec<&TopicRecord> = match &request.topics {
            None => self.core.topics().filter(|t| !t.internal).collect(),
            Some(names) => names
                .iter()
                .map(|n| self.core.get(n).ok_or_else(|| ApiError::unknown_topic(n)))
                .collect::<Result<_, _>>()?,
        };
        let topics = records
            .into_iter()
            .map(|record| {
                let description = self.describe(record);
                TopicMetadata {
                    name: description.name,
                    partitions: description
                        .partitions
                        .into_iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition,
                            leader: p.leader,
                            replicas: p.replicas,
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(ClusterMetadata {
            brokers: vec![BrokerInfo {
                node_id: self.node,
                address: self.advertised_address.clone(),
            }],
            topics,
        })
    }
}

/// Stop every replica and the metadata group, so the store can be closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for TopicManager {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        let directory = self.directory.clone();
        let cluster = self.factory.cluster.clone();
        AtomicResponse::new(Box::pin(
            async move {
                for entry in directory.drain() {
                    stop_topic(&cluster, entry).await;
                }
                cluster.shutdown().await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        ))
    }
}

/// Connects the group router, which exists only once the offsets topic is loaded.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AttachGroups(pub Addr<GroupRouter>);

impl Handler<AttachGroups> for TopicManager {
    type Result = ();

    fn handle(&mut self, AttachGroups(groups): AttachGroups, _: &mut Self::Context) {
        self.groups = Some(groups);
    }
}
