//! A group's membership as key-value rows of its `__consumer_offsets` partition, beside its
//! committed offsets: one row for the group (epochs and the partitions its target was computed
//! from), one per member (subscription, epoch, owned and revoking partitions) and one per
//! member's target. The coordinator writes the rows that changed (the difference of
//! [`rows`] before and after a heartbeat) and a new coordinator rebuilds the group from them.
//!
//! Keys: kind u16 (3 group, 4 member, 5 target) then the group (u16 length + UTF-8), then for
//! members and targets the member id (the same). Values: version u16 (1), then the record as
//! msgpack with field names.

use super::assignor::{Assignment, Tp};
use super::membership::{ConsumerGroup, GroupMeta, Member};
use bytes::{BufMut, Bytes, BytesMut};
use gregor_cluster::KvWrite;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

const KIND_GROUP: u16 = 3;
const KIND_MEMBER: u16 = 4;
const KIND_TARGET: u16 = 5;
const VALUE_VERSION: u16 = 1;

pub type Rows = BTreeMap<Bytes, Bytes>;

fn key(kind: u16, group: &str, member: Option<&str>) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + group.len());
    buf.put_u16(kind);
    buf.put_u16(group.len() as u16);
    buf.put_slice(group.as_bytes());
    if let Some(member) = member {
        buf.put_u16(member.len() as u16);
        buf.put_slice(member.as_bytes());
    }
    buf.freeze()
}

/// Every membership key of `group` starts with one of these.
pub fn prefixes(group: &str) -> [Bytes; 3] {
    [
        key(KIND_GROUP, group, None),
        key(KIND_MEMBER, group, None),
        key(KIND_TARGET, group, None),
    ]
}

/// The group a membership key belongs to, for listing groups.
pub fn group_of(key: &[u8]) -> Option<String> {
    let kind = u16::from_be_bytes(key.get(..2)?.try_into().ok()?);
    if ![KIND_GROUP, KIND_MEMBER, KIND_TARGET].contains(&kind) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes(key.get(2..4)?.try_into().ok()?));
    let group = std::str::from_utf8(key.get(4..4 + len)?).ok()?;
    Some(group.to_string())
}

fn value<T: Serialize>(record: &T) -> Bytes {
    let mut buf = VALUE_VERSION.to_be_bytes().to_vec();
    rmp_serde::encode::write_named(&mut buf, record).expect("records encode");
    Bytes::from(buf)
}

fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    match value.get(..2) {
        Some([0, 1]) => rmp_serde::from_slice(&value[2..]).map_err(|e| e.to_string()),
        _ => Err("unknown record version".into()),
    }
}

/// The rows that hold `group`'s membership.
pub fn rows(name: &str, group: &ConsumerGroup) -> Rows {
    let mut rows = Rows::new();
    rows.insert(key(KIND_GROUP, name, None), value(&group.meta));
    for member in group.members.values() {
        rows.insert(key(KIND_MEMBER, name, Some(&member.id)), value(member));
    }
    for (member, target) in &group.target {
        rows.insert(key(KIND_TARGET, name, Some(member)), value(target));
    }
    rows
}

/// The write that turns rows `before` into rows `after`; empty when nothing changed.
pub fn diff(before: &Rows, after: &Rows) -> KvWrite {
    KvWrite {
        puts: after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deletes: before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .cloned()
            .collect(),
    }
}

/// Rebuilds a group from its rows (those under [`prefixes`]).
///
/// # Errors
/// A row that does not decode.
pub fn load(
    name: &str,
    rows: &[(Bytes, Bytes)],
    term: u64,
    now_ms: i64,
) -> Result<ConsumerGroup, String> {
    let mut meta = GroupMeta::default();
    let mut members = Vec::new();
    let mut target = Assignment::new();
    let [group_key, member_prefix, target_prefix] = prefixes(name);
    for (k, v) in rows {
        let fail = |e: String| format!("group {name:?} row {k:?} does not decode: {e}");
        if *k == group_key {
            meta = decode(v).map_err(fail)?;
        } else if let Some(member) = k.strip_prefix(&member_prefix[..]) {
            if member.len() >= 2 {
                members.push(decode::<Member>(v).map_err(fail)?);
            }
        } else if let Some(rest) = k.strip_prefix(&target_prefix[..]) {
            let id = std::str::from_utf8(rest.get(2..).unwrap_or_default())
                .map_err(|e| fail(e.to_string()))?;
            target.insert(id.to_string(), decode::<BTreeSet<Tp>>(v).map_err(fail)?);
        }
    }
    // A target whose member is gone (a write that removed both is atomic, so only a bug
    // leaves one) is dropped rather than trusted.
    target.retain(|m, _| members.iter().any(|x| &x.id == m));
    Ok(ConsumerGroup::restore(meta, members, target, term, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerGroupHeartbeat, Subscription, JOIN_EPOCH};
    use crate::groups::membership::{Env, GroupConfig};

    fn join(group: &mut ConsumerGroup, topics: &BTreeMap<String, u32>, instance: Option<&str>) {
        let config = GroupConfig::default();
        let env = Env {
            now_ms: 5,
            topics,
            config: &config,
        };
        let hb = ConsumerGroupHeartbeat {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: JOIN_EPOCH,
            instance_id: instance.map(str::to_string),
            rack: None,
            client_id: "c".into(),
            subscription: Some(Subscription::Pattern("t.*".into())),
            server_assignor: None,
            owned: None,
            rebalance_timeout_ms: 1_000,
            session_timeout_ms: None,
            host: Some("10.0.0.1".into()),
        };
        group.heartbeat(hb, &env).unwrap();
    }

    #[test]
    fn a_group_reloads_from_its_rows_and_a_quiet_heartbeat_writes_nothing() {
        let topics = BTreeMap::from([("t1".to_string(), 3), ("t2".to_string(), 1)]);
        let mut group = ConsumerGroup::new(1);
        join(&mut group, &topics, Some("i"));
        join(&mut group, &topics, None);
        let stored = rows("g", &group);
        assert_eq!(stored.len(), 1 + 2 + 2);
        let listed: Vec<(Bytes, Bytes)> = stored.clone().into_iter().collect();
        let reloaded = load("g", &listed, 2, 99).unwrap();
        assert_eq!(reloaded.meta, group.meta);
        assert_eq!(reloaded.target, group.target);
        assert_eq!(reloaded.members.len(), 2);
        for (id, member) in &reloaded.members {
            assert_eq!(member.last_heartbeat_ms, 99, "a fresh session");
            let mut original = group.members[id].clone();
            original.last_heartbeat_ms = 99;
            // Timing is not stored: the next reply tells the member its interval again.
            original.heartbeat_interval_ms = 0;
            assert_eq!(*member, original);
        }
        assert!(diff(&stored, &rows("g", &reloaded)).puts.is_empty());
        // Rows of another group sharing a prefix are not read.
        assert!(load("gg", &listed, 2, 99).unwrap().members.is_empty());
        assert_eq!(group_of(&listed[0].0).as_deref(), Some("g"));
    }

    #[test]
    fn the_difference_of_rows_puts_changes_and_deletes_what_went() {
        let before = Rows::from([
            (Bytes::from("a"), Bytes::from("1")),
            (Bytes::from("b"), Bytes::from("2")),
        ]);
        let after = Rows::from([
            (Bytes::from("a"), Bytes::from("1")),
            (Bytes::from("c"), Bytes::from("3")),
        ]);
        let write = diff(&before, &after);
        assert_eq!(write.puts, vec![(Bytes::from("c"), Bytes::from("3"))]);
        assert_eq!(write.deletes, vec![Bytes::from("b")]);
        assert!(load("g", &[(key(KIND_GROUP, "g", None), Bytes::from("x"))], 1, 0).is_err());
    }
}
