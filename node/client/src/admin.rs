//! Cluster administration: topics, metadata, offsets and consumer groups. Each method is one
//! API request, routed and retried by [`Cluster`].

use super::cluster::{expect_reply, ClientConfig, Cluster, Route};
use super::error::ClientError;
use gregor_protocol::api::{
    AlterGroupConfig, ClusterMetadata, ClusterStatus, ClusterStatusReply, CommitOffsets,
    CommittedOffset, ConsumerGroupHeartbeat, ConsumerGroupHeartbeatReply, CreateTopic, DeleteTopic,
    DescribeGroup, DescribeGroupConfig, DescribeTopic, DrainNode, FetchOffsets,
    GroupConfigDescription, GroupDescription, ListGroups, ListOffsets, ListOffsetsReply,
    ListTopics, MemberRef, OffsetCommit, OffsetReset, OffsetSpec, Request, ResetOffsets,
    ResetTarget, TopicConfigOverrides, TopicDescription, TopicSummary,
};
use gregor_protocol::{NodeId, PartitionId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};

/// Salt for the creation-id random stream, so that it differs from the client's others.
const CREATION_ID_SALT: u64 = 0x6372_6561_7465_0000;

/// Administrative requests. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    cluster: Cluster,
    /// Draws one id per topic creation (see [`Admin::create_topic`]).
    creation_ids: Arc<Mutex<SmallRng>>,
}

/// A topic to create; `NewTopic::new("orders").partitions(6)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic's name.
    pub name: String,
    /// Partitions (1 to 10000).
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Settings; `None` fields take the broker's defaults.
    pub config: TopicConfigOverrides,
}

impl NewTopic {
    /// One partition, one replica, default configuration.
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            config: TopicConfigOverrides::default(),
        }
    }

    /// Sets the number of partitions.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets the number of replicas per partition.
    pub fn replication_factor(mut self, replication_factor: u16) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Sets retention and size settings.
    pub fn config(mut self, config: TopicConfigOverrides) -> Self {
        self.config = config;
        self
    }
}

impl Admin {
    /// Connects to the cluster.
    ///
    /// # Errors
    /// As [`Cluster::connect`].
    pub async fn connect(config: ClientConfig) -> Result<Admin, ClientError> {
        Ok(Admin::from_cluster(Cluster::connect(config).await?))
    }

    /// Shares an existing cluster handle (and its connections).
    pub fn from_cluster(cluster: Cluster) -> Admin {
        let seed = cluster.config().seed ^ CREATION_ID_SALT;
        Admin {
            cluster,
            creation_ids: Arc::new(Mutex::new(SmallRng::seed_from_u64(seed))),
        }
    }

    /// The cluster connection this admin client uses.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Creates a topic. The request carries an id drawn once for this call and is retried
    /// like any other request, also after a timeout or a dropped connection: an attempt that
    /// finds the topic made by an earlier attempt of this call (whose answer was lost) is told
    /// it succeeded, while a topic another creation made is `TOPIC_ALREADY_EXISTS`.
    ///
    /// # Errors
    /// `TOPIC_ALREADY_EXISTS`, `INVALID_TOPIC_NAME`, `INVALID_PARTITIONS`, ... from the broker.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicDescription, ClientError> {
        let creation_id = self
            .creation_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .gen();
        let request = Request::CreateTopic(CreateTopic {
            name: topic.name,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            config: topic.config,
            creation_id: Some(creation_id),
        });
        expect_reply::<CreateTopic>(self.cluster.request(Route::Any, request).await?)
    }

    /// # Errors
    /// `UNKNOWN_TOPIC`, `INTERNAL_TOPIC`, ... from the broker.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = Request::DeleteTopic(DeleteTopic {
            name: name.to_owned(),
        });
        let reply = self.cluster.request(Route::Any, request).await;
        self.cluster.invalidate(name);
        expect_reply::<DeleteTopic>(reply?)
    }

    /// # Errors
    /// The request's failure.
    pub async fn list_topics(
        &self,
        include_internal: bool,
    ) -> Result<Vec<TopicSummary>, ClientError> {
        let request = Request::ListTopics(ListTopics { include_internal });
        expect_reply::<ListTopics>(self.cluster.request(Route::Any, request).await?)
    }

    /// # Errors
    /// `UNKNOWN_TOPIC` from the broker.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let request = Request::DescribeTopic(DescribeTopic {
            name: name.to_owned(),
        });
        expect_reply::<DescribeTopic>(self.cluster.request(Route::Any, request).await?)
    }

    /// Brokers and partition leaders; `None` for every non-internal topic.
    ///
    /// # Errors
    /// The request's failure.
    pub async fn metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<ClusterMetadata, ClientError> {
        self.cluster.fetch_metadata(topics).await
    }

    /// The earliest or latest offset of a partition, or the first at or after a timestamp.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, ... from the broker.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: PartitionId,
        spec: OffsetSpec,
    ) -> Result<ListOffsetsReply, ClientError> {
        let request = Request::ListOffsets(ListOffsets {
            topic: topic.to_owned(),
            partition,
            spec,
        });
        let route = Route::Leader {
            topic: topic.to_owned(),
            partition,
        };
        expect_reply::<ListOffsets>(self.cluster.request(route, request).await?)
    }

    /// Commits `offsets` for `group` (each the next offset the group will read).
    ///
    /// # Errors
    /// `INVALID_GROUP`, `UNKNOWN_TOPIC`, ... from the broker.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<OffsetCommit>,
    ) -> Result<(), ClientError> {
        self.commit_offsets_as(group, offsets, None).await
    }

    /// Commits `offsets` for `group` as `member` (a member of the group commits only
    /// partitions it owns, at its current epoch); `None` as [`Admin::commit_offsets`].
    ///
    /// # Errors
    /// `STALE_MEMBER_EPOCH`, `UNKNOWN_MEMBER_ID`, `OFFSET_MOVES_BACK`, ... from the broker.
    pub async fn commit_offsets_as(
        &self,
        group: &str,
        offsets: Vec<OffsetCommit>,
        member: Option<MemberRef>,
    ) -> Result<(), ClientError> {
        let request = Request::CommitOffsets(CommitOffsets {
            group: group.to_owned(),
            offsets,
            member,
        });
        expect_reply::<CommitOffsets>(self.cluster.request(Route::Any, request).await?)
    }

    /// One heartbeat of a consumer group member (the consumer sends these itself).
    ///
    /// # Errors
    /// `UNKNOWN_MEMBER_ID`, `FENCED_MEMBER_EPOCH`, ... from the broker.
    pub async fn consumer_group_heartbeat(
        &self,
        heartbeat: ConsumerGroupHeartbeat,
    ) -> Result<ConsumerGroupHeartbeatReply, ClientError> {
        let request = Request::ConsumerGroupHeartbeat(heartbeat);
        expect_reply::<ConsumerGroupHeartbeat>(self.cluster.request(Route::Any, request).await?)
    }

    /// The group's committed offsets, for one topic or all.
    ///
    /// # Errors
    /// `INVALID_GROUP`, ... from the broker.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let request = Request::FetchOffsets(FetchOffsets {
            group: group.to_owned(),
            topic: topic.map(str::to_owned),
        });
        expect_reply::<FetchOffsets>(self.cluster.request(Route::Any, request).await?)
    }

    /// # Errors
    /// The request's failure.
    pub async fn list_groups(&self) -> Result<Vec<String>, ClientError> {
        expect_reply::<ListGroups>(
            self.cluster
                .request(Route::Any, Request::ListGroups(ListGroups {}))
                .await?,
        )
    }

    /// The cluster's members as the node answering sees them: liveness, addresses, replica and
    /// leader counts, metadata roles and leader.
    ///
    /// # Errors
    /// The request's failure.
    pub async fn cluster_status(&self) -> Result<ClusterStatusReply, ClientError> {
        expect_reply::<ClusterStatus>(
            self.cluster
                .request(Route::Any, Request::ClusterStatus(ClusterStatus {}))
                .await?,
        )
    }

    /// Starts moving every replica off `node`; [`Admin::cluster_status`] shows the progress
    /// (the node's replica count falls to 0).
    ///
    /// # Errors
    /// `UNKNOWN_NODE`, or the request's failure.
    pub async fn drain_node(&self, node: NodeId) -> Result<(), ClientError> {
        expect_reply::<DrainNode>(
            self.cluster
                .request(Route::Any, Request::DrainNode(DrainNode { node_id: node }))
                .await?,
        )
    }

    /// Committed offsets with log end and lag per partition.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`, ... from the broker.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = Request::DescribeGroup(DescribeGroup {
            group: group.to_owned(),
        });
        expect_reply::<DescribeGroup>(self.cluster.request(Route::Any, request).await?)
    }

    /// `group`'s configuration and the broker's bounds for it.
    ///
    /// # Errors
    /// `INVALID_GROUP`, ... from the broker.
    pub async fn describe_group_config(
        &self,
        group: &str,
    ) -> Result<GroupConfigDescription, ClientError> {
        let request = Request::DescribeGroupConfig(DescribeGroupConfig {
            group: group.to_owned(),
        });
        expect_reply::<DescribeGroupConfig>(self.cluster.request(Route::Any, request).await?)
    }

    /// Sets `group`'s session timeout in ms (Kafka's `group.consumer.session.timeout.ms`);
    /// `None` goes back to the broker's default. Members that do not ask for a timeout of their
    /// own get it from their next heartbeat.
    ///
    /// # Errors
    /// `INVALID_SESSION_TIMEOUT` outside the broker's bounds (the message says them),
    /// `INVALID_GROUP`, ... from the broker.
    pub async fn alter_group_config(
        &self,
        group: &str,
        session_timeout_ms: Option<u32>,
    ) -> Result<GroupConfigDescription, ClientError> {
        let request = Request::AlterGroupConfig(AlterGroupConfig {
            group: group.to_owned(),
            session_timeout_ms,
        });
        expect_reply::<AlterGroupConfig>(self.cluster.request(Route::Any, request).await?)
    }

    /// Moves `group`'s committed offsets on every partition of `topic`; with `dry_run`, only
    /// reports what would change.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`, `INVALID_GROUP`, ... from the broker.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTarget,
        dry_run: bool,
    ) -> Result<Vec<OffsetReset>, ClientError> {
        let request = Request::ResetOffsets(ResetOffsets {
            group: group.to_owned(),
            topic: topic.to_owned(),
            to,
            dry_run,
        });
        expect_reply::<ResetOffsets>(self.cluster.request(Route::Any, request).await?)
    }
}
