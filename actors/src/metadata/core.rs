//! [`MetadataCore`]: the metadata group's rules, free of I/O. Every node applies the same
//! commands in the same order through it and so holds the same [`MetadataView`]; rows mirror
//! the view so a restarted node rebuilds it ([`MetadataCore::load`]).
//!
//! Apply decides only from the applied state and the command: ids and revisions come from the
//! log index and the stored counters, and every rejection is an outcome, never an error, so no
//! two nodes can decide differently. `Err` means the rows cannot be read or trusted.

use super::command::{MetadataCommand, MetadataOutcome, Rejection, MAX_PRODUCER_ID_BLOCK};
use super::records::{NodeRecord, NodeState, PartitionAssignment, TopicRecord, TopicView};
use super::rows::{self, Rows, RowsError, TopicRow};
use super::validate::{
    validate_config, validate_partitions, validate_topic_name, MAX_REPLICATION_FACTOR,
};
use super::view::MetadataView;
use crate::api::TopicConfig;
use gregor_storage::{NodeId, PartitionId, TopicId};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataCore {
    view: MetadataView,
}

/// A creation, as the command carries it.
struct NewTopic<'a> {
    name: &'a str,
    partitions: u32,
    replication_factor: u16,
    config: &'a TopicConfig,
    internal: bool,
    assignment: &'a [Vec<NodeId>],
    creation_id: Option<u64>,
}

impl MetadataCore {
    /// Rebuilds the view from the rows.
    ///
    /// # Errors
    /// A row cannot be read or does not decode, or the rows contradict each other.
    pub fn load(rows: &dyn Rows) -> Result<MetadataCore, RowsError> {
        let mut view = MetadataView::default();
        for (key, value) in rows.scan_prefix(rows::NODE_PREFIX)? {
            let node: NodeRecord = rows::decode(&key, &value)?;
            view.nodes.insert(node.id, node);
        }
        let mut assignments = rows
            .scan_prefix(rows::PARTITION_PREFIX)?
            .into_iter()
            .peekable();
        for (key, value) in rows.scan_prefix(rows::TOPIC_PREFIX)? {
            let row: TopicRow = rows::decode(&key, &value)?;
            let mut topic = TopicView {
                record: row.record,
                created_revision: row.created_revision,
                assignments: Vec::new(),
            };
            // Partition rows sort by topic id then partition, as topic rows sort by topic id.
            while let Some((key, value)) = assignments.next_if(|(k, _)| {
                rows::decode_partition_key(k).is_some_and(|(t, _)| t <= topic.record.id)
            }) {
                let (id, partition) = rows::decode_partition_key(&key).expect("checked above");
                if id != topic.record.id || partition.0 as usize != topic.assignments.len() {
                    return Err(RowsError(format!(
                        "partition row {id}/{partition} has no topic or is out of order"
                    )));
                }
                topic.assignments.push(rows::decode(&key, &value)?);
            }
            if topic.assignments.len() != topic.record.partitions as usize {
                return Err(RowsError(format!(
                    "topic {} has {} partition rows for {} partitions",
                    topic.record.name,
                    topic.assignments.len(),
                    topic.record.partitions
                )));
            }
            view.names
                .insert(topic.record.id, topic.record.name.clone());
            view.topics
                .insert(topic.record.name.clone(), Arc::new(topic));
        }
        if let Some((key, _)) = assignments.next() {
            return Err(RowsError(format!("partition row {key:?} has no topic")));
        }
        let counter = |key: &[u8], default: u64| -> Result<u64, RowsError> {
            rows.get(key)?
                .map_or(Ok(default), |v| rows::decode_u64(key, &v))
        };
        view.next_topic_id = counter(rows::NEXT_TOPIC_ID_KEY, 1)?;
        view.next_producer_id = counter(rows::NEXT_PRODUCER_ID_KEY, 0)?;
        view.last_index = counter(rows::LAST_INDEX_KEY, 0)?;
        Ok(MetadataCore { view })
    }

    pub fn view(&self) -> &MetadataView {
        &self.view
    }

    /// Applies the command of metadata log entry `index`, writing what changes into `rows`.
    ///
    /// # Errors
    /// The rows cannot be read or trusted.
    pub fn apply(
        &mut self,
        index: u64,
        command: &MetadataCommand,
        rows: &mut dyn Rows,
    ) -> Result<MetadataOutcome, RowsError> {
        // The copy in memory always matches the rows as of the previous command, except when
        // the rows were replaced under it (a snapshot installed: rows newer) or an apply batch
        // failed to commit after this copy had applied part of it (rows older, and the entries
        // come again). Either way the rows are the truth.
        if rows::last_index(rows)? != self.view.last_index {
            *self = MetadataCore::load(rows)?;
        }
        assert!(
            index > self.view.last_index,
            "metadata entry {index} applied after entry {}",
            self.view.last_index
        );
        let outcome = match command {
            MetadataCommand::RegisterNode {
                node,
                client_addr,
                peer_addr,
                rack,
            } => self.register_node(
                NodeRecord {
                    id: *node,
                    client_addr: client_addr.clone(),
                    peer_addr: peer_addr.clone(),
                    rack: rack.clone(),
                    state: NodeState::Active,
                },
                rows,
            ),
            MetadataCommand::SetNodeState { node, state } => {
                self.set_node_state(*node, *state, rows)
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
                internal,
                assignment,
                creation_id,
            } => self.create_topic(
                index,
                &NewTopic {
                    name,
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                    config,
                    internal: *internal,
                    assignment,
                    creation_id: *creation_id,
                },
                rows,
            ),
            MetadataCommand::DeleteTopic { name, id } => self.delete_topic(name, *id, rows),
            MetadataCommand::MovePartition {
                topic,
                partition,
                target,
                expected_revision,
            } => self.move_partition(index, *topic, *partition, target, *expected_revision, rows),
            MetadataCommand::CompleteMove {
                topic,
                partition,
                revision,
            } => self.complete_move(index, *topic, *partition, *revision, rows),
            MetadataCommand::AllocateProducerIds { count } => {
                self.allocate_producer_ids(*count, rows)
            }
        };
        self.view.last_index = index;
        rows.put(rows::LAST_INDEX_KEY, rows::encode_u64(index));
        Ok(outcome)
    }

    fn register_node(&mut self, mut record: NodeRecord, rows: &mut dyn Rows) -> MetadataOutcome {
        if let Some(known) = self.view.nodes.get(&record.id) {
            if known.state == NodeState::Removed {
                return rejected(Rejection::NodeRemoved { node: record.id });
            }
            // A restarted node may come back with new addresses; its standing stays.
            record.state = known.state;
        }
        rows::put_node(rows, &record);
        self.view.nodes.insert(record.id, record);
        MetadataOutcome::NodeRegistered
    }

    fn set_node_state(
        &mut self,
        node: NodeId,
        state: NodeState,
        rows: &mut dyn Rows,
    ) -> MetadataOutcome {
        let Some(record) = self.view.nodes.get_mut(&node) else {
            return rejected(Rejection::UnknownNode { node });
        };
        if record.state == NodeState::Removed {
            return rejected(Rejection::NodeRemoved { node });
        }
        record.state = state;
        rows::put_node(rows, record);
        MetadataOutcome::NodeStateSet
    }

    fn create_topic(
        &mut self,
        index: u64,
        new: &NewTopic<'_>,
        rows: &mut dyn Rows,
    ) -> MetadataOutcome {
        if let Some(existing) = self.view.topics.get(new.name) {
            let record = &existing.record;
            if record.created_by(new.creation_id, new.partitions, new.replication_factor) {
                // A retry of the creation that made this topic, planned before that one was
                // applied: its client is answered with the topic its first attempt made.
                return MetadataOutcome::TopicCreated {
                    id: record.id,
                    revision: existing.created_revision,
                };
            }
            return rejected(Rejection::TopicExists {
                name: new.name.to_string(),
            });
        }
        if let Err(rejection) = self.check_new_topic(new) {
            return rejected(rejection);
        }
        let id = TopicId(self.view.next_topic_id);
        let record = TopicRecord {
            id,
            name: new.name.to_string(),
            partitions: new.partitions,
            replication_factor: new.replication_factor,
            internal: new.internal,
            config: new.config.clone(),
            creation_id: new.creation_id,
        };
        let topic = TopicView {
            record,
            created_revision: index,
            assignments: new
                .assignment
                .iter()
                .map(|replicas| PartitionAssignment {
                    replicas: replicas.clone(),
                    target: None,
                    retiring: Vec::new(),
                    revision: index,
                    in_force_since: Some(index),
                })
                .collect(),
        };
        rows.put(
            &rows::topic_key(id),
            rows::encode(&TopicRow {
                record: topic.record.clone(),
                created_revision: index,
            }),
        );
        for (p, assignment) in topic.assignments.iter().enumerate() {
            rows::put_assignment(rows, id, PartitionId(p as u32), assignment);
        }
        self.view.next_topic_id += 1;
        rows.put(
            rows::NEXT_TOPIC_ID_KEY,
            rows::encode_u64(self.view.next_topic_id),
        );
        self.view.names.insert(id, new.name.to_string());
        self.view
            .topics
            .insert(new.name.to_string(), Arc::new(topic));
        MetadataOutcome::TopicCreated {
            id,
            revision: index,
        }
    }

    fn check_new_topic(&self, new: &NewTopic<'_>) -> Result<(), Rejection> {
        let invalid = |reason: String| Rejection::Invalid { reason };
        validate_topic_name(new.name, new.internal).map_err(|e| invalid(e.message))?;
        if new.internal != new.name.starts_with("__") {
            return Err(invalid(format!(
                "topic '{}' is internal exactly when its name starts with '__'",
                new.name
            )));
        }
        validate_partitions(new.partitions).map_err(|e| invalid(e.message))?;
        validate_config(new.config).map_err(|e| invalid(e.message))?;
        if new.replication_factor == 0 || new.replication_factor > MAX_REPLICATION_FACTOR {
            return Err(invalid(format!(
                "replication factor must be 1 to {MAX_REPLICATION_FACTOR}, not {}",
                new.replication_factor
            )));
        }
        if new.assignment.len() != new.partitions as usize {
            return Err(Rejection::InvalidAssignment {
                reason: format!(
                    "{} replica sets for {} partitions",
                    new.assignment.len(),
                    new.partitions
                ),
            });
        }
        // An internal topic may start with fewer replicas than its factor while the cluster is
        // small; the metadata leader adds the rest as nodes join.
        let sizes = if new.internal {
            1..=usize::from(new.replication_factor)
        } else {
            usize::from(new.replication_factor)..=usize::from(new.replication_factor)
        };
        for replicas in new.assignment {
            if !sizes.contains(&replicas.len()) {
                return Err(Rejection::InvalidAssignment {
                    reason: format!(
                        "a replica set of {} for replication factor {}",
                        replicas.len(),
                        new.replication_factor
                    ),
                });
            }
            self.check_replica_set(replicas)?;
        }
        Ok(())
    }

    /// Distinct nodes, each registered and not removed. Draining nodes are allowed: a move
    /// that starts before a drain commits keeps them until the drain moves them off.
    fn check_replica_set(&self, replicas: &[NodeId]) -> Result<(), Rejection> {
        let distinct: BTreeSet<NodeId> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() || replicas.is_empty() {
            return Err(Rejection::InvalidAssignment {
                reason: format!("replica set {replicas:?} is empty or repeats a node"),
            });
        }
        if replicas.len() > usize::from(MAX_REPLICATION_FACTOR) {
            return Err(Rejection::InvalidAssignment {
                reason: format!(
                    "replica set {replicas:?} has more than {MAX_REPLICATION_FACTOR} nodes"
                ),
            });
        }
        for node in replicas {
            match self.view.nodes.get(node) {
                None => return Err(Rejection::UnknownNode { node: *node }),
                Some(record) if record.state == NodeState::Removed => {
                    return Err(Rejection::NodeRemoved { node: *node })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn delete_topic(&mut self, name: &str, id: TopicId, rows: &mut dyn Rows) -> MetadataOutcome {
        let Some(topic) = self.view.topics.get(name).filter(|t| t.record.id == id) else {
            return rejected(Rejection::UnknownTopic {
                name: name.to_string(),
            });
        };
        if topic.record.internal {
            return rejected(Rejection::InternalTopic {
                name: name.to_string(),
            });
        }
        rows.delete(&rows::topic_key(id));
        for p in 0..topic.record.partitions {
            rows.delete(&rows::partition_key(id, PartitionId(p)));
        }
        self.view.topics.remove(name);
        self.view.names.remove(&id);
        MetadataOutcome::TopicDeleted
    }

    /// The assignment of (topic, partition) for a change planned against `revision`.
    fn assignment_mut(
        &mut self,
        topic: TopicId,
        partition: PartitionId,
        revision: u64,
    ) -> Result<&mut PartitionAssignment, Rejection> {
        let name = self
            .view
            .names
            .get(&topic)
            .ok_or(Rejection::UnknownTopicId { id: topic })?;
        let view = Arc::make_mut(self.view.topics.get_mut(name).expect("names index topics"));
        let assignment = view
            .assignments
            .get_mut(partition.0 as usize)
            .ok_or(Rejection::UnknownPartition { partition })?;
        if assignment.revision != revision {
            return Err(Rejection::StaleRevision {
                current: assignment.revision,
            });
        }
        Ok(assignment)
    }

    fn move_partition(
        &mut self,
        index: u64,
        topic: TopicId,
        partition: PartitionId,
        target: &[NodeId],
        expected_revision: u64,
        rows: &mut dyn Rows,
    ) -> MetadataOutcome {
        if let Err(rejection) = self.check_replica_set(target) {
            return rejected(rejection);
        }
        let assignment = match self.assignment_mut(topic, partition, expected_revision) {
            Ok(assignment) => assignment,
            Err(rejection) => return rejected(rejection),
        };
        match &assignment.target {
            None if assignment.replicas == target => {
                return rejected(Rejection::Invalid {
                    reason: format!("partition {partition} already has replicas {target:?}"),
                })
            }
            None => {}
            Some(previous) => {
                for node in previous {
                    let dropped = !target.contains(node) && !assignment.replicas.contains(node);
                    if dropped && !assignment.retiring.contains(node) {
                        assignment.retiring.push(*node);
                    }
                }
            }
        }
        assignment.retiring.retain(|node| !target.contains(node));
        assignment.target = Some(target.to_vec());
        assignment.revision = index;
        rows::put_assignment(rows, topic, partition, assignment);
        MetadataOutcome::MoveStarted { revision: index }
    }

    fn complete_move(
        &mut self,
        index: u64,
        topic: TopicId,
        partition: PartitionId,
        revision: u64,
        rows: &mut dyn Rows,
    ) -> MetadataOutcome {
        let assignment = match self.assignment_mut(topic, partition, revision) {
            Ok(assignment) => assignment,
            Err(rejection) => return rejected(rejection),
        };
        let Some(target) = assignment.target.take() else {
            return rejected(Rejection::NoMoveInProgress);
        };
        assignment.replicas = target;
        assignment.retiring.clear();
        assignment.revision = index;
        assignment.in_force_since = Some(index);
        rows::put_assignment(rows, topic, partition, assignment);
        MetadataOutcome::MoveCompleted { revision: index }
    }

    fn allocate_producer_ids(&mut self, count: u64, rows: &mut dyn Rows) -> MetadataOutcome {
        if count == 0 || count > MAX_PRODUCER_ID_BLOCK {
            return rejected(Rejection::Invalid {
                reason: format!(
                    "producer ids come in blocks of 1 to {MAX_PRODUCER_ID_BLOCK}, not {count}"
                ),
            });
        }
        let first = self.view.next_producer_id;
        // Kafka's producer ids are non-negative i64s.
        let end = match first.checked_add(count) {
            Some(end) if end <= i64::MAX as u64 => end,
            _ => return rejected(Rejection::ProducerIdsExhausted),
        };
        self.view.next_producer_id = end;
        rows.put(rows::NEXT_PRODUCER_ID_KEY, rows::encode_u64(end));
        MetadataOutcome::ProducerIds {
            first: first as i64,
            count,
        }
    }
}

fn rejected(rejection: Rejection) -> MetadataOutcome {
    MetadataOutcome::Rejected(rejection)
}
