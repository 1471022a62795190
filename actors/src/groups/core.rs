//! A consumer group's committed offsets, free of I/O, and their encoding in the
//! `__consumer_offsets` key-value state (Kafka's OffsetCommitKey / OffsetCommitValue v1 layout:
//! big-endian, strings as int16 length + UTF-8).

use crate::api::{ApiError, CommittedOffset, ErrorCode, OffsetCommit};
use bytes::{BufMut, Bytes, BytesMut};
use gregor_cluster::KvWrite;
use gregor_storage::{Offset, PartitionId};
use std::collections::BTreeMap;

const KEY_VERSION: u16 = 1;
const VALUE_VERSION: u16 = 1;
pub const MAX_GROUP_NAME_LEN: usize = 255;
pub const MAX_METADATA_LEN: usize = 4096;

/// The `__consumer_offsets` partition a group lives in: Kafka's
/// `abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16.
pub fn offsets_partition_for(group: &str, partitions: u32) -> PartitionId {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    PartitionId(positive as u32 % partitions)
}

/// # Errors
/// `INVALID_GROUP` when the name is empty, too long, or has control characters.
pub fn validate_group_name(group: &str) -> Result<(), ApiError> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME_LEN || group.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::INVALID_GROUP,
            format!(
                "invalid group name {group:?}: use 1 to {MAX_GROUP_NAME_LEN} printable characters"
            ),
        ));
    }
    Ok(())
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

fn take_str<'a>(input: &mut &'a [u8]) -> Option<&'a str> {
    let len = usize::from(u16::from_be_bytes(input.get(..2)?.try_into().ok()?));
    let s = std::str::from_utf8(input.get(2..2 + len)?).ok()?;
    *input = &input[2 + len..];
    Some(s)
}

/// Every key of `group` starts with this.
pub fn group_key_prefix(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + group.len());
    buf.put_u16(KEY_VERSION);
    put_str(&mut buf, group);
    buf.freeze()
}

pub fn offset_key(group: &str, topic: &str, partition: PartitionId) -> Bytes {
    let mut buf = BytesMut::with_capacity(10 + group.len() + topic.len());
    buf.put_u16(KEY_VERSION);
    put_str(&mut buf, group);
    put_str(&mut buf, topic);
    buf.put_u32(partition.0);
    buf.freeze()
}

/// Decodes a key into (group, topic, partition).
pub fn decode_offset_key(key: &[u8]) -> Option<(String, String, PartitionId)> {
    let mut input = key;
    if u16::from_be_bytes(input.get(..2)?.try_into().ok()?) != KEY_VERSION {
        return None;
    }
    input = &input[2..];
    let group = take_str(&mut input)?.to_string();
    let topic = take_str(&mut input)?.to_string();
    let partition = u32::from_be_bytes(input.get(..4)?.try_into().ok()?);
    (input.len() == 4).then_some((group, topic, PartitionId(partition)))
}

fn encode_value(offset: Offset, metadata: Option<&str>, commit_timestamp: i64) -> Bytes {
    let mut buf = BytesMut::with_capacity(32);
    buf.put_u16(VALUE_VERSION);
    buf.put_i64(offset.0 as i64);
    match metadata {
        Some(m) => put_str(&mut buf, m),
        None => buf.put_i16(-1),
    }
    buf.put_i64(commit_timestamp);
    buf.put_i64(-1);
    buf.freeze()
}

fn decode_value(value: &[u8]) -> Option<(Offset, Option<String>, i64)> {
    let mut input = value;
    if u16::from_be_bytes(input.get(..2)?.try_into().ok()?) != VALUE_VERSION {
        return None;
    }
    let offset = i64::from_be_bytes(input.get(2..10)?.try_into().ok()?);
    input = &input[10..];
    let metadata = if input.get(..2)? == [0xff, 0xff] {
        input = &input[2..];
        None
    } else {
        Some(take_str(&mut input)?.to_string())
    };
    let commit_timestamp = i64::from_be_bytes(input.get(..8)?.try_into().ok()?);
    (offset >= 0).then_some((Offset(offset as u64), metadata, commit_timestamp))
}

/// One group's committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCore {
    name: String,
    offsets: BTreeMap<(String, PartitionId), CommittedOffset>,
}

impl GroupCore {
    /// Rebuilds a group from its key-value rows.
    ///
    /// # Errors
    /// A row that does not decode: the offsets state is corrupt.
    pub fn load(name: &str, rows: &[(Bytes, Bytes)]) -> Result<GroupCore, String> {
        let mut core = GroupCore {
            name: name.to_string(),
            offsets: BTreeMap::new(),
        };
        for (key, value) in rows {
            let (group, topic, partition) = decode_offset_key(key)
                .ok_or_else(|| format!("offset key {key:?} does not decode"))?;
            if group != name {
                continue;
            }
            let (offset, metadata, commit_timestamp) = decode_value(value)
                .ok_or_else(|| format!("offset value for {topic}/{partition} does not decode"))?;
            core.offsets.insert(
                (topic.clone(), partition),
                CommittedOffset {
                    topic,
                    partition,
                    offset,
                    metadata,
                    commit_timestamp,
                },
            );
        }
        Ok(core)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn committed(&self, topic: &str, partition: PartitionId) -> Option<&CommittedOffset> {
        self.offsets.get(&(topic.to_string(), partition))
    }

    pub fn all(&self, topic: Option<&str>) -> Vec<CommittedOffset> {
        self.offsets
            .values()
            .filter(|c| topic.is_none_or(|t| c.topic == t))
            .cloned()
            .collect()
    }

    /// The write that commits `offsets` at `now_ms`; apply it with [`GroupCore::apply`] once
    /// committed.
    ///
    /// # Errors
    /// `OFFSET_METADATA_TOO_LARGE` for metadata over [`MAX_METADATA_LEN`].
    pub fn plan_commit(
        &self,
        offsets: &[OffsetCommit],
        now_ms: i64,
    ) -> Result<(KvWrite, Vec<CommittedOffset>), ApiError> {
        let mut write = KvWrite::default();
        let mut committed = Vec::with_capacity(offsets.len());
        for c in offsets {
            if c.metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_METADATA_LEN)
            {
                return Err(ApiError::new(
                    ErrorCode::OFFSET_METADATA_TOO_LARGE,
                    format!(
                        "offset metadata is limited to {MAX_METADATA_LEN} bytes; nothing was \
                         committed"
                    ),
                ));
            }
            write.puts.push((
                offset_key(&self.name, &c.topic, c.partition),
                encode_value(c.offset, c.metadata.as_deref(), now_ms),
            ));
            committed.push(CommittedOffset {
                topic: c.topic.clone(),
                partition: c.partition,
                offset: c.offset,
                metadata: c.metadata.clone(),
                commit_timestamp: now_ms,
            });
        }
        Ok((write, committed))
    }

    pub fn apply(&mut self, committed: Vec<CommittedOffset>) {
        for c in committed {
            self.offsets.insert((c.topic.clone(), c.partition), c);
        }
    }

    /// Forget a deleted topic's offsets; returns the write that removes them.
    pub fn plan_forget_topic(&self, topic: &str) -> KvWrite {
        KvWrite {
            puts: vec![],
            deletes: self
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .map(|(t, p)| offset_key(&self.name, t, *p))
                .collect(),
        }
    }

    pub fn forget_topic(&mut self, topic: &str) {
        self.offsets.retain(|(t, _), _| t != topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_choice_matches_kafka() {
        // Java: "my-group".hashCode() == 1_507_001_862 (computed with Java's algorithm);
        // Kafka places it in 1507001862 % 50 == 12.
        let hash = "my-group"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
        assert_eq!(
            offsets_partition_for("my-group", 50),
            PartitionId(hash.unsigned_abs() % 50)
        );
        assert_eq!(offsets_partition_for("", 50), PartitionId(0));
        for g in ["a", "orders-service", "ünïcødé", "x".repeat(255).as_str()] {
            assert!(offsets_partition_for(g, 7).0 < 7);
        }
    }

    #[test]
    fn keys_and_values_round_trip_and_group_prefix_is_exact() {
        let key = offset_key("g", "orders", PartitionId(3));
        assert_eq!(
            decode_offset_key(&key),
            Some(("g".into(), "orders".into(), PartitionId(3)))
        );
        assert!(key.starts_with(&group_key_prefix("g")));
        // "g" must not match the rows of group "gg".
        assert!(!offset_key("gg", "orders", PartitionId(3)).starts_with(&group_key_prefix("g")));
        let value = encode_value(Offset(42), Some("meta"), 1000);
        assert_eq!(
            decode_value(&value),
            Some((Offset(42), Some("meta".into()), 1000))
        );
        let value = encode_value(Offset(7), None, 5);
        assert_eq!(decode_value(&value), Some((Offset(7), None, 5)));
        assert_eq!(decode_value(&value[..5]), None);
    }

    #[test]
    fn commits_reload_from_rows() {
        let core = GroupCore::load("g", &[]).unwrap();
        let (write, committed) = core
            .plan_commit(
                &[OffsetCommit {
                    topic: "t".into(),
                    partition: PartitionId(1),
                    offset: Offset(10),
                    metadata: None,
                }],
                99,
            )
            .unwrap();
        let mut applied = core.clone();
        applied.apply(committed);
        let reloaded = GroupCore::load("g", &write.puts).unwrap();
        assert_eq!(reloaded, applied);
        assert_eq!(
            reloaded.committed("t", PartitionId(1)).unwrap().offset,
            Offset(10)
        );
    }

    #[test]
    fn group_names_are_checked() {
        assert!(validate_group_name("billing").is_ok());
        assert_eq!(
            validate_group_name("").unwrap_err().code,
            ErrorCode::INVALID_GROUP
        );
        assert_eq!(
            validate_group_name("a\nb").unwrap_err().code,
            ErrorCode::INVALID_GROUP
        );
    }
}
