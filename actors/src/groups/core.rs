//! A consumer group's committed offsets, free of I/O, and their encoding in the
//! `__consumer_offsets` key-value state.
//!
//! Offsets are keyed by topic id, not name: a topic deleted and created again under the same
//! name has a new id, so it starts with no committed positions, whatever rows of the old one
//! remain. Key (version 2): version u16, group (u16 length + UTF-8), topic id u64, partition
//! u32, all big-endian. Value (version 1, Kafka's OffsetCommitValue v1 layout): version u16,
//! offset i64, metadata (u16 length + UTF-8, or -1 for none), commit timestamp i64, expiry i64.
//! Rows of key version 1 (topic names, before topic ids) are not read.

use crate::api::{ApiError, ErrorCode};
use bytes::{BufMut, Bytes, BytesMut};
use gregor_cluster::KvWrite;
use gregor_storage::{Offset, PartitionId, TopicId};
use std::collections::BTreeMap;

const KEY_VERSION: u16 = 2;
/// Keys of topic names, written before topic ids; skipped.
const KEY_VERSION_NAMES: u16 = 1;
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

pub fn offset_key(group: &str, topic: TopicId, partition: PartitionId) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + group.len());
    buf.put_u16(KEY_VERSION);
    put_str(&mut buf, group);
    buf.put_u64(topic.0);
    buf.put_u32(partition.0);
    buf.freeze()
}

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetKey {
    Offset {
        group: String,
        topic: TopicId,
        partition: PartitionId,
    },
    /// A row keyed by topic name, from before topic ids: not read.
    ByName,
}

/// Decodes a key; `None` when it is malformed.
pub fn decode_offset_key(key: &[u8]) -> Option<OffsetKey> {
    let mut input = key;
    match u16::from_be_bytes(input.get(..2)?.try_into().ok()?) {
        KEY_VERSION => {}
        KEY_VERSION_NAMES => return Some(OffsetKey::ByName),
        _ => return None,
    }
    input = &input[2..];
    let group = take_str(&mut input)?.to_string();
    let topic = u64::from_be_bytes(input.get(..8)?.try_into().ok()?);
    let partition = u32::from_be_bytes(input.get(8..12)?.try_into().ok()?);
    (input.len() == 12).then_some(OffsetKey::Offset {
        group,
        topic: TopicId(topic),
        partition: PartitionId(partition),
    })
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

/// An offset to commit, its topic named by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffset {
    pub topic: TopicId,
    pub partition: PartitionId,
    pub offset: Offset,
    pub metadata: Option<String>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: Offset,
    pub metadata: Option<String>,
    /// Broker time of the commit, ms since the epoch.
    pub commit_timestamp: i64,
}

/// One group's committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCore {
    name: String,
    offsets: BTreeMap<(TopicId, PartitionId), Committed>,
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
            let (topic, partition) = match decode_offset_key(key) {
                None => return Err(format!("offset key {key:?} does not decode")),
                Some(OffsetKey::ByName) => continue,
                Some(OffsetKey::Offset { group, .. }) if group != name => continue,
                Some(OffsetKey::Offset {
                    topic, partition, ..
                }) => (topic, partition),
            };
            let (offset, metadata, commit_timestamp) = decode_value(value).ok_or_else(|| {
                format!("offset value for topic {topic} partition {partition} does not decode")
            })?;
            core.offsets.insert(
                (topic, partition),
                Committed {
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

    pub fn committed(&self, topic: TopicId, partition: PartitionId) -> Option<&Committed> {
        self.offsets.get(&(topic, partition))
    }

    /// Every committed offset, by topic id and partition.
    pub fn all(&self) -> impl Iterator<Item = (TopicId, PartitionId, &Committed)> {
        self.offsets.iter().map(|((t, p), c)| (*t, *p, c))
    }

    /// The write that commits `offsets` at `now_ms`, and what to apply with
    /// [`GroupCore::apply`] once it is committed.
    ///
    /// # Errors
    /// `OFFSET_METADATA_TOO_LARGE` for metadata over [`MAX_METADATA_LEN`].
    pub fn plan_commit(
        &self,
        offsets: &[NewOffset],
        now_ms: i64,
    ) -> Result<(KvWrite, Vec<NewOffset>), ApiError> {
        let mut write = KvWrite::default();
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
                offset_key(&self.name, c.topic, c.partition),
                encode_value(c.offset, c.metadata.as_deref(), now_ms),
            ));
        }
        Ok((write, offsets.to_vec()))
    }

    /// Records offsets whose write committed at `now_ms`.
    pub fn apply(&mut self, committed: Vec<NewOffset>, now_ms: i64) {
        for c in committed {
            self.offsets.insert(
                (c.topic, c.partition),
                Committed {
                    offset: c.offset,
                    metadata: c.metadata,
                    commit_timestamp: now_ms,
                },
            );
        }
    }

    /// The write that removes a deleted topic's offsets (tidying only: a new topic of the same
    /// name has another id and never sees them).
    pub fn plan_forget_topic(&self, topic: TopicId) -> KvWrite {
        KvWrite {
            puts: vec![],
            deletes: self
                .offsets
                .keys()
                .filter(|(t, _)| *t == topic)
                .map(|(t, p)| offset_key(&self.name, *t, *p))
                .collect(),
        }
    }

    pub fn forget_topic(&mut self, topic: TopicId) {
        self.offsets.retain(|(t, _), _| *t != topic);
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
        let key = offset_key("g", TopicId(7), PartitionId(3));
        assert_eq!(
            decode_offset_key(&key),
            Some(OffsetKey::Offset {
                group: "g".into(),
                topic: TopicId(7),
                partition: PartitionId(3)
            })
        );
        assert!(key.starts_with(&group_key_prefix("g")));
        // "g" must not match the rows of group "gg".
        assert!(!offset_key("gg", TopicId(7), PartitionId(3)).starts_with(&group_key_prefix("g")));
        assert_eq!(decode_offset_key(&key[..key.len() - 1]), None);
        let value = encode_value(Offset(42), Some("meta"), 1000);
        assert_eq!(
            decode_value(&value),
            Some((Offset(42), Some("meta".into()), 1000))
        );
        let value = encode_value(Offset(7), None, 5);
        assert_eq!(decode_value(&value), Some((Offset(7), None, 5)));
        assert_eq!(decode_value(&value[..5]), None);
    }

    fn commit(topic: u64, offset: u64) -> NewOffset {
        NewOffset {
            topic: TopicId(topic),
            partition: PartitionId(1),
            offset: Offset(offset),
            metadata: None,
        }
    }

    #[test]
    fn commits_reload_from_rows_and_rows_keyed_by_name_are_skipped() {
        let core = GroupCore::load("g", &[]).unwrap();
        let (write, committed) = core.plan_commit(&[commit(4, 10)], 99).unwrap();
        let mut applied = core.clone();
        applied.apply(committed, 99);
        let mut rows = write.puts.clone();
        // A row from before topic ids: version 1, group "g", topic "t", partition 1.
        let mut by_name = BytesMut::new();
        by_name.put_u16(KEY_VERSION_NAMES);
        put_str(&mut by_name, "g");
        put_str(&mut by_name, "t");
        by_name.put_u32(1);
        rows.push((by_name.freeze(), encode_value(Offset(3), None, 1)));
        let reloaded = GroupCore::load("g", &rows).unwrap();
        assert_eq!(reloaded, applied);
        assert_eq!(
            reloaded
                .committed(TopicId(4), PartitionId(1))
                .unwrap()
                .offset,
            Offset(10)
        );
    }

    #[test]
    fn a_recreated_topic_does_not_inherit_the_old_positions() {
        let mut core = GroupCore::load("g", &[]).unwrap();
        let (write, committed) = core.plan_commit(&[commit(4, 10)], 1).unwrap();
        core.apply(committed, 1);
        // Topic 4 was deleted and a topic of the same name created: id 5. Even with the old
        // rows still there, the new topic has no position.
        let reloaded = GroupCore::load("g", &write.puts).unwrap();
        assert_eq!(reloaded.committed(TopicId(5), PartitionId(1)), None);
        assert_eq!(
            core.plan_forget_topic(TopicId(4)).deletes,
            vec![offset_key("g", TopicId(4), PartitionId(1))]
        );
        core.forget_topic(TopicId(4));
        assert_eq!(core.all().count(), 0);
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
