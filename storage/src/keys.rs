//! Key layouts. Every key starts with the group id, big-endian, so one group's keys are one
//! contiguous range and numeric order is byte order.
//!
//! | keyspace  | key                                   | value                          |
//! |-----------|---------------------------------------|--------------------------------|
//! | `log`     | group, raft index                     | an entry ([`crate::entry`])    |
//! | `meta`    | group, tag 0                          | Raft hard state (opaque)       |
//! | `meta`    | group, tag 1                          | group state ([`crate::state`]) |
//! | `meta`    | group, tag 2                          | log floor                      |
//! | `meta`    | group, tag 3, raft index              | membership at that index       |
//! | `meta`    | group, tag 4, producer id             | producer window ([`crate::producer`]) |
//! | `meta`    | group, tag 5, newest offset, producer | (empty): producers by age      |
//! | `offsets` | group, first offset of a Records entry| offset row                     |
//! | `times`   | group, running max timestamp (flipped)| first offset of its entry      |
//! | `kv`      | group, user key                       | user value                     |
//! | `info`    | `format`                              | store format version           |

use crate::{GroupId, Offset, StorageError};

pub(crate) const TAG_HARD_STATE: u8 = 0;
pub(crate) const TAG_GROUP_STATE: u8 = 1;
pub(crate) const TAG_FLOOR: u8 = 2;
pub(crate) const TAG_MEMBERSHIP: u8 = 3;
pub(crate) const TAG_PRODUCER: u8 = 4;
pub(crate) const TAG_PRODUCER_AGE: u8 = 5;

pub(crate) fn group_prefix(group: GroupId) -> [u8; 8] {
    group.0.to_be_bytes()
}

fn group_and_u64(group: GroupId, n: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8..].copy_from_slice(&n.to_be_bytes());
    key
}

pub(crate) fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    group_and_u64(group, index)
}

pub(crate) fn meta_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut key = [0; 9];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8] = tag;
    key
}

pub(crate) fn membership_key(group: GroupId, index: u64) -> [u8; 17] {
    let mut key = [0; 17];
    key[..9].copy_from_slice(&meta_key(group, TAG_MEMBERSHIP));
    key[9..].copy_from_slice(&index.to_be_bytes());
    key
}

pub(crate) fn producer_key(group: GroupId, producer_id: i64) -> [u8; 17] {
    let mut key = [0; 17];
    key[..9].copy_from_slice(&meta_key(group, TAG_PRODUCER));
    key[9..].copy_from_slice(&(producer_id as u64).to_be_bytes());
    key
}

pub(crate) fn producer_age_key(group: GroupId, newest: Offset, producer_id: i64) -> [u8; 25] {
    let mut key = [0; 25];
    key[..9].copy_from_slice(&meta_key(group, TAG_PRODUCER_AGE));
    key[9..17].copy_from_slice(&newest.0.to_be_bytes());
    key[17..].copy_from_slice(&(producer_id as u64).to_be_bytes());
    key
}

pub(crate) fn offsets_key(group: GroupId, first: Offset) -> [u8; 16] {
    group_and_u64(group, first.0)
}

/// Flipping the sign bit makes two's-complement timestamps sort as unsigned big-endian bytes.
pub(crate) fn times_key(group: GroupId, timestamp_ms: i64) -> [u8; 16] {
    group_and_u64(group, (timestamp_ms as u64) ^ (1 << 63))
}

pub(crate) fn kv_key(group: GroupId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&group.0.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The trailing u64 of a `log`, `offsets` or membership key.
pub(crate) fn trailing_u64(key: &[u8], keyspace: &str) -> Result<u64, StorageError> {
    let tail: [u8; 8] = key
        .len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .ok_or_else(|| StorageError::corrupt(format!("{keyspace} key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keys_sort_like_timestamps() {
        let group = GroupId(7);
        let stamps = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for pair in stamps.windows(2) {
            assert!(
                times_key(group, pair[0]) < times_key(group, pair[1]),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn group_keys_do_not_interleave() {
        assert!(log_key(GroupId(1), u64::MAX) < log_key(GroupId(2), 0));
        assert!(
            membership_key(GroupId(1), u64::MAX)[..] < meta_key(GroupId(2), TAG_HARD_STATE)[..]
        );
        assert_eq!(
            trailing_u64(&log_key(GroupId(3), 42), "log").expect("key"),
            42
        );
        assert!(trailing_u64(&[1, 2, 3], "log").is_err());
    }
}
