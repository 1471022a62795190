//! Where every hosted partition replica is, shared by the topic manager (which writes it) and
//! every [`crate::Broker`] handle (which reads it to route requests without an extra hop).

use crate::api::ApiError;
use crate::partition::PartitionReplica;
use crate::topics::TopicRecord;
use actix::Addr;
use gregor_cluster::RaftGroup;
use gregor_storage::{PartitionId, PartitionState};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

#[derive(Clone)]
pub struct ReplicaHandle {
    pub addr: Addr<PartitionReplica>,
    pub group: Arc<RaftGroup>,
    pub state: watch::Receiver<PartitionState>,
}

#[derive(Clone)]
pub struct TopicEntry {
    pub record: TopicRecord,
    pub replicas: Vec<ReplicaHandle>,
}

#[derive(Default)]
pub struct Directory {
    topics: RwLock<BTreeMap<String, TopicEntry>>,
}

impl Directory {
    pub fn insert(&self, entry: TopicEntry) {
        self.topics
            .write()
            .expect("directory poisoned")
            .insert(entry.record.name.clone(), entry);
    }

    pub fn remove(&self, topic: &str) -> Option<TopicEntry> {
        self.topics
            .write()
            .expect("directory poisoned")
            .remove(topic)
    }

    pub fn drain(&self) -> Vec<TopicEntry> {
        std::mem::take(&mut *self.topics.write().expect("directory poisoned"))
            .into_values()
            .collect()
    }

    pub fn topic(&self, topic: &str) -> Option<TopicEntry> {
        self.topics
            .read()
            .expect("directory poisoned")
            .get(topic)
            .cloned()
    }

    /// The name of the topic with id `id`, if it exists.
    pub fn name_of(&self, id: gregor_storage::TopicId) -> Option<String> {
        self.topics
            .read()
            .expect("directory poisoned")
            .values()
            .find(|entry| entry.record.id == id)
            .map(|entry| entry.record.name.clone())
    }

    /// # Errors
    /// `UNKNOWN_TOPIC` / `UNKNOWN_PARTITION` with what to do.
    pub fn replica(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<(TopicRecord, ReplicaHandle), ApiError> {
        let topics = self.topics.read().expect("directory poisoned");
        let entry = topics
            .get(topic)
            .ok_or_else(|| ApiError::unknown_topic(topic))?;
        let replica = entry.replicas.get(partition.0 as usize).ok_or_else(|| {
            ApiError::unknown_partition(topic, partition, entry.record.partitions)
        })?;
        Ok((entry.record.clone(), replica.clone()))
    }
}
