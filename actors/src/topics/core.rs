//! The topic table and its rules, free of I/O: the topic manager validates a request here,
//! turns it into a replicated key-value write, and applies the committed result back here.

use crate::api::{
    ApiError, CreateTopic, ErrorCode, TopicConfig, TopicConfigOverrides, TopicSummary,
    MAX_PARTITIONS, MAX_TOPIC_NAME_LEN,
};
use bytes::Bytes;
use gregor_cluster::KvWrite;
use gregor_storage::{GroupId, PartitionId, TopicId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the internal topic holding committed group offsets (Kafka's name and layout).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Largest batch a topic may accept; the frame limit must leave room for the envelope.
pub const MAX_MESSAGE_BYTES_LIMIT: u32 = 8 * 1024 * 1024;

const TOPIC_KEY_PREFIX: &[u8] = b"topic/";
const NEXT_TOPIC_ID_KEY: &[u8] = b"next_topic_id";

/// A topic as stored in the metadata group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: TopicId,
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub internal: bool,
    pub config: TopicConfig,
}

impl TopicRecord {
    pub fn group_of(&self, partition: PartitionId) -> GroupId {
        GroupId::for_partition(self.id, partition)
    }

    pub fn summary(&self) -> TopicSummary {
        TopicSummary {
            name: self.name.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            internal: self.internal,
        }
    }
}

/// The committed topic table.
#[derive(Debug, Default, Clone)]
pub struct TopicCore {
    topics: BTreeMap<String, TopicRecord>,
    /// Topic ids are never reused; 0 is reserved so no partition shares the metadata group.
    next_topic_id: u64,
}

impl TopicCore {
    /// Rebuilds the table from the metadata group's key-value state.
    ///
    /// # Errors
    /// A stored record that does not decode: metadata is corrupt and the node must not serve.
    pub fn load(kv: &[(Bytes, Bytes)]) -> Result<TopicCore, String> {
        let mut core = TopicCore {
            topics: BTreeMap::new(),
            next_topic_id: 1,
        };
        for (key, value) in kv {
            if key.as_ref() == NEXT_TOPIC_ID_KEY {
                let bytes: [u8; 8] = value
                    .as_ref()
                    .try_into()
                    .map_err(|_| "next topic id is not 8 bytes".to_string())?;
                core.next_topic_id = u64::from_be_bytes(bytes);
            } else if key.starts_with(TOPIC_KEY_PREFIX) {
                let record: TopicRecord = rmp_serde::from_slice(value)
                    .map_err(|e| format!("topic record {key:?} does not decode: {e}"))?;
                core.topics.insert(record.name.clone(), record);
            }
        }
        Ok(core)
    }

    pub fn get(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicRecord> {
        self.topics.values()
    }

    /// Validates a creation and returns the record it would create and the write that does it.
    ///
    /// # Errors
    /// A typed error when the name, partition count, replication factor or config is invalid,
    /// or the topic exists.
    pub fn plan_create(
        &self,
        request: &CreateTopic,
        live_nodes: usize,
        allow_internal: bool,
    ) -> Result<(TopicRecord, KvWrite), ApiError> {
        validate_topic_name(&request.name, allow_internal)?;
        if self.topics.contains_key(&request.name) {
            return Err(ApiError::new(
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!(
                    "topic '{}' already exists; see it with: gregor topic describe {}",
                    request.name, request.name
                ),
            ));
        }
        if request.partitions == 0 || request.partitions > MAX_PARTITIONS {
            return Err(ApiError::new(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "a topic has 1 to {MAX_PARTITIONS} partitions, not {}",
                    request.partitions
                ),
            ));
        }
        if request.replication_factor == 0 || usize::from(request.replication_factor) > live_nodes {
            return Err(ApiError::new(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} needs as many live nodes, and this cluster has {live_nodes}; \
                     use --replication-factor between 1 and {live_nodes}",
                    request.replication_factor
                ),
            ));
        }
        let config = resolve_config(&request.config)?;
        let record = TopicRecord {
            id: TopicId(self.next_topic_id),
            name: request.name.clone(),
            partitions: request.partitions,
            replication_factor: request.replication_factor,
            internal: request.name.starts_with("__"),
            config,
        };
        let write = KvWrite {
            puts: vec![
                (
                    topic_key(&record.name),
                    Bytes::from(rmp_serde::to_vec(&record).expect("records encode")),
                ),
                (
                    Bytes::from_static(NEXT_TOPIC_ID_KEY),
                    Bytes::copy_from_slice(&(record.id.0 + 1).to_be_bytes()),
                ),
            ],
            deletes: vec![],
        };
        Ok((record, write))
    }

    /// # Errors
    /// `UNKNOWN_TOPIC`, or `INTERNAL_TOPIC` for internal topics.
    pub fn plan_delete(&self, name: &str) -> Result<(TopicRecord, KvWrite), ApiError> {
        let record = self
            .topics
            .get(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        if record.internal {
            return Err(ApiError::new(
                ErrorCode::INTERNAL_TOPIC,
                format!("topic '{name}' is internal to Gregor and cannot be deleted"),
            ));
        }
        let write = KvWrite {
            puts: vec![],
            deletes: vec![topic_key(name)],
        };
        Ok((record.clone(), write))
    }

    pub fn apply_create(&mut self, record: TopicRecord) {
        self.next_topic_id = self.next_topic_id.max(record.id.0 + 1);
        self.topics.insert(record.name.clone(), record);
    }

    pub fn apply_delete(&mut self, name: &str) -> Option<TopicRecord> {
        self.topics.remove(name)
    }
}

fn topic_key(name: &str) -> Bytes {
    let mut key = TOPIC_KEY_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    Bytes::from(key)
}

/// Kafka's rules: `[A-Za-z0-9._-]`, 1..=249 characters, not `.` or `..`; `__` is reserved.
///
/// # Errors
/// `INVALID_TOPIC_NAME` saying which rule failed, or `INTERNAL_TOPIC` for a valid name that
/// starts with `__` when internal names are not allowed.
pub fn validate_topic_name(name: &str, allow_internal: bool) -> Result<(), ApiError> {
    let invalid = |why: String| {
        Err(ApiError::new(
            ErrorCode::INVALID_TOPIC_NAME,
            format!("invalid topic name '{name}': {why}"),
        ))
    };
    if name.is_empty() || name.len() > MAX_TOPIC_NAME_LEN {
        return invalid(format!(
            "a name has 1 to {MAX_TOPIC_NAME_LEN} characters, not {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(format!(
            "character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"
        ));
    }
    if name.starts_with("__") && !allow_internal {
        return Err(ApiError::new(
            ErrorCode::INTERNAL_TOPIC,
            format!("topic name '{name}' starts with '__', which is reserved for internal topics"),
        ));
    }
    Ok(())
}

/// Fills in defaults and checks ranges.
///
/// # Errors
/// `INVALID_CONFIG` naming the setting.
pub fn resolve_config(overrides: &TopicConfigOverrides) -> Result<TopicConfig, ApiError> {
    let defaults = TopicConfig::default();
    let config = TopicConfig {
        retention_ms: overrides.retention_ms.unwrap_or(defaults.retention_ms),
        retention_bytes: overrides
            .retention_bytes
            .unwrap_or(defaults.retention_bytes),
        max_message_bytes: overrides
            .max_message_bytes
            .unwrap_or(defaults.max_message_bytes),
    };
    let invalid = |message: String| Err(ApiError::new(ErrorCode::INVALID_CONFIG, message));
    if config.retention_ms < -1 {
        return invalid(format!(
            "retention.ms must be -1 (forever) or >= 0, not {}",
            config.retention_ms
        ));
    }
    if config.retention_bytes < -1 {
        return invalid(format!(
            "retention.bytes must be -1 (unlimited) or >= 0, not {}",
            config.retention_bytes
        ));
    }
    if config.max_message_bytes == 0 || config.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
        return invalid(format!(
            "max.message.bytes must be between 1 and {MAX_MESSAGE_BYTES_LIMIT}, not {}",
            config.max_message_bytes
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: u32, rf: u16) -> CreateTopic {
        CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            config: Default::default(),
        }
    }

    #[test]
    fn names_follow_kafka_rules() {
        for ok in ["orders", "a", "a.b_c-D9", &"x".repeat(249)] {
            assert!(
                validate_topic_name(ok, false).is_ok(),
                "{ok} should be valid"
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/",
            "é",
            &"x".repeat(250),
            "__bad name",
        ] {
            let err = validate_topic_name(bad, false).unwrap_err();
            assert_eq!(err.code, ErrorCode::INVALID_TOPIC_NAME, "{bad}");
        }
        let err = validate_topic_name("__private", false).unwrap_err();
        assert_eq!(err.code, ErrorCode::INTERNAL_TOPIC);
        assert!(validate_topic_name("__consumer_offsets", true).is_ok());
    }

    #[test]
    fn create_rejects_bad_counts_and_configs() {
        let core = TopicCore::load(&[]).unwrap();
        assert_eq!(
            core.plan_create(&create("t", 0, 1), 1, false)
                .unwrap_err()
                .code,
            ErrorCode::INVALID_PARTITIONS
        );
        assert_eq!(
            core.plan_create(&create("t", 10_001, 1), 1, false)
                .unwrap_err()
                .code,
            ErrorCode::INVALID_PARTITIONS
        );
        assert_eq!(
            core.plan_create(&create("t", 1, 3), 1, false)
                .unwrap_err()
                .code,
            ErrorCode::INVALID_REPLICATION_FACTOR
        );
        let mut bad = create("t", 1, 1);
        bad.config.retention_ms = Some(-2);
        assert_eq!(
            core.plan_create(&bad, 1, false).unwrap_err().code,
            ErrorCode::INVALID_CONFIG
        );
        bad.config = TopicConfigOverrides {
            max_message_bytes: Some(0),
            ..Default::default()
        };
        assert_eq!(
            core.plan_create(&bad, 1, false).unwrap_err().code,
            ErrorCode::INVALID_CONFIG
        );
        assert!(core.plan_create(&create("t", 10_000, 1), 1, false).is_ok());
    }

    #[test]
    fn committed_writes_reload_to_the_same_table_and_ids_are_not_reused() {
        let mut core = TopicCore::load(&[]).unwrap();
        let mut kv: BTreeMap<Bytes, Bytes> = BTreeMap::new();
        let mut apply = |core: &mut TopicCore, write: KvWrite| {
            for (k, v) in write.puts {
                kv.insert(k, v);
            }
            for k in write.deletes {
                kv.remove(&k);
            }
            let _ = core;
        };
        let (a, write) = core.plan_create(&create("a", 3, 1), 1, false).unwrap();
        apply(&mut core, write);
        core.apply_create(a.clone());
        assert_eq!(
            core.plan_create(&create("a", 1, 1), 1, false)
                .unwrap_err()
                .code,
            ErrorCode::TOPIC_ALREADY_EXISTS
        );
        let (_, write) = core.plan_delete("a").unwrap();
        apply(&mut core, write);
        core.apply_delete("a");
        let (b, write) = core.plan_create(&create("a", 1, 1), 1, false).unwrap();
        apply(&mut core, write);
        core.apply_create(b.clone());
        assert_ne!(a.id, b.id, "a re-created topic must not reuse the old id");

        let stored: Vec<(Bytes, Bytes)> = kv.into_iter().collect();
        let reloaded = TopicCore::load(&stored).unwrap();
        assert_eq!(reloaded.get("a"), Some(&b));
        assert_eq!(reloaded.next_topic_id, core.next_topic_id);
    }

    #[test]
    fn internal_topics_cannot_be_deleted() {
        let mut core = TopicCore::load(&[]).unwrap();
        let (rec, _) = core
            .plan_create(&create(OFFSETS_TOPIC, 4, 1), 1, true)
            .unwrap();
        assert!(rec.internal);
        core.apply_create(rec);
        assert_eq!(
            core.plan_delete(OFFSETS_TOPIC).unwrap_err().code,
            ErrorCode::INTERNAL_TOPIC
        );
        assert_eq!(
            core.plan_delete("nope").unwrap_err().code,
            ErrorCode::UNKNOWN_TOPIC
        );
    }
}
