//! The metadata group's rows: how the applied metadata is laid out in its key-value state.
//!
//! | key | value |
//! |---|---|
//! | `n/` + node id (u64 BE) | [`NodeRecord`], msgpack with field names |
//! | `t/` + topic id (u64 BE) | [`TopicRow`]: the topic and its creation revision |
//! | `p/` + topic id (u64 BE) + partition (u32 BE) | [`PartitionAssignment`] |
//! | `c/next_topic_id` | u64 BE: the id the next topic gets (ids start at 1; 0 is the metadata group's) |
//! | `c/next_producer_id` | u64 BE: the first producer id not yet handed out |
//! | `c/last_index` | u64 BE: the index of the last command applied |
//!
//! A partition's assignment has a row of its own so a move rewrites a few dozen bytes, not its
//! topic. `c/last_index` tells a node whose in-memory copy is older than its rows (a snapshot
//! replaced them) to reload.

use super::records::{NodeRecord, PartitionAssignment, TopicRecord};
use bytes::Bytes;
use gregor_storage::{NodeId, PartitionId, TopicId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;

pub const NODE_PREFIX: &[u8] = b"n/";
pub const TOPIC_PREFIX: &[u8] = b"t/";
pub const PARTITION_PREFIX: &[u8] = b"p/";
pub const NEXT_TOPIC_ID_KEY: &[u8] = b"c/next_topic_id";
pub const NEXT_PRODUCER_ID_KEY: &[u8] = b"c/next_producer_id";
pub const LAST_INDEX_KEY: &[u8] = b"c/last_index";

/// A topic row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRow {
    pub record: TopicRecord,
    pub created_revision: u64,
}

/// Reading a row failed, or a row does not decode: the metadata cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata rows: {0}")]
pub struct RowsError(pub String);

/// The key-value rows the metadata lives in: the metadata group's rows as of an apply (writes
/// commit atomically with the applied index), or a map in tests.
pub trait Rows {
    /// # Errors
    /// The read failed.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, RowsError>;
    fn put(&mut self, key: &[u8], value: Bytes);
    fn delete(&mut self, key: &[u8]);
    /// # Errors
    /// The read failed.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, RowsError>;
}

/// Rows in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemRows(pub BTreeMap<Bytes, Bytes>);

impl Rows for MemRows {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, RowsError> {
        Ok(self.0.get(key).cloned())
    }
    fn put(&mut self, key: &[u8], value: Bytes) {
        self.0.insert(Bytes::copy_from_slice(key), value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.remove(key);
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>, RowsError> {
        Ok(self
            .0
            .range(Bytes::copy_from_slice(prefix)..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

pub fn node_key(node: NodeId) -> Vec<u8> {
    [NODE_PREFIX, &node.0.to_be_bytes()].concat()
}

pub fn topic_key(topic: TopicId) -> Vec<u8> {
    [TOPIC_PREFIX, &topic.0.to_be_bytes()].concat()
}

pub fn partition_key(topic: TopicId, partition: PartitionId) -> Vec<u8> {
    [
        PARTITION_PREFIX,
        &topic.0.to_be_bytes(),
        &partition.0.to_be_bytes(),
    ]
    .concat()
}

/// The (topic, partition) a partition key names.
pub fn decode_partition_key(key: &[u8]) -> Option<(TopicId, PartitionId)> {
    let rest = key.strip_prefix(PARTITION_PREFIX)?;
    let topic = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let partition = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
    (rest.len() == 12).then_some((TopicId(topic), PartitionId(partition)))
}

pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(value).expect("metadata rows encode"))
}

/// # Errors
/// The row does not decode.
pub fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, RowsError> {
    rmp_serde::from_slice(value).map_err(|e| {
        RowsError(format!(
            "row {:?} does not decode: {e}",
            Bytes::copy_from_slice(key)
        ))
    })
}

pub fn encode_u64(value: u64) -> Bytes {
    Bytes::copy_from_slice(&value.to_be_bytes())
}

/// # Errors
/// The row is not 8 bytes.
pub fn decode_u64(key: &[u8], value: &[u8]) -> Result<u64, RowsError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        RowsError(format!(
            "row {:?} is not a u64",
            Bytes::copy_from_slice(key)
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// The index of the last command applied into `rows` (0: none).
///
/// # Errors
/// The read failed or the row is malformed.
pub fn last_index(rows: &dyn Rows) -> Result<u64, RowsError> {
    rows.get(LAST_INDEX_KEY)?
        .map_or(Ok(0), |v| decode_u64(LAST_INDEX_KEY, &v))
}

/// Writes an assignment's row.
pub fn put_assignment(
    rows: &mut dyn Rows,
    topic: TopicId,
    partition: PartitionId,
    assignment: &PartitionAssignment,
) {
    rows.put(&partition_key(topic, partition), encode(assignment));
}

pub fn put_node(rows: &mut dyn Rows, node: &NodeRecord) {
    rows.put(&node_key(node.id), encode(node));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_id_and_partition_keys_decode() {
        assert!(node_key(NodeId(2)) < node_key(NodeId(256)));
        assert!(
            partition_key(TopicId(1), PartitionId(9)) < partition_key(TopicId(2), PartitionId(0))
        );
        let key = partition_key(TopicId(7), PartitionId(3));
        assert_eq!(
            decode_partition_key(&key),
            Some((TopicId(7), PartitionId(3)))
        );
        assert_eq!(decode_partition_key(&key[..10]), None);
        assert_eq!(decode_partition_key(&topic_key(TopicId(7))), None);
    }

    #[test]
    fn mem_rows_scan_only_their_prefix() {
        let mut rows = MemRows::default();
        rows.put(b"n/a", Bytes::from_static(b"1"));
        rows.put(b"n/b", Bytes::from_static(b"2"));
        rows.put(b"o", Bytes::from_static(b"3"));
        rows.put(b"m", Bytes::from_static(b"4"));
        let scanned = rows.scan_prefix(b"n/").unwrap();
        assert_eq!(scanned.len(), 2);
        rows.delete(b"n/a");
        assert_eq!(rows.scan_prefix(b"n/").unwrap().len(), 1);
    }
}
