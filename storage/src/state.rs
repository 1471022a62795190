//! The small per-group records beside the log: state-machine state, the log floor and index rows.
//!
//! Every value starts with a format byte and then fixed big-endian fields:
//!
//! ```text
//! group state (meta, tag 1) := 2 last_applied:u64 log_start:u64 next_offset:u64 size_bytes:u64
//!                              max_timestamp:i64 removed_max_timestamp:i64
//!                              producer_count:u32 producers_through:u64
//!                           |  1 (the same without the last two fields, which read as 0)
//! log floor   (meta, tag 2) := 1 index:u64 term:u64 has_membership:u8 [len:u32 membership]
//! membership  (meta, tag 3) := 1 payload (to the end)
//! offset row  (offsets)     := 1 raft_index:u64 record_count:u64 max_timestamp:i64 bytes:u64
//! time row    (times)       := 1 first_offset:u64
//! ```

use crate::entry::{Reader, FORMAT_V1};

/// Version 2 of the group state adds the producer fields.
const GROUP_STATE_V2: u8 = 2;
use crate::{Offset, StorageError};
use bytes::Bytes;

/// The state machine of one group, as of its last applied entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionState {
    pub last_applied: u64,
    pub log_start_offset: Offset,
    /// One past the last committed record: the high watermark and log end offset.
    pub next_offset: Offset,
    /// Batch bytes between the log start and the end.
    pub size_bytes: u64,
}

/// The log prefix removed so far: async-raft needs the last removed index and term, and the
/// membership in force there, once the entries are gone.
///
/// When the log of a group is empty (every entry was removed), `last_entry` returns `None` and
/// the caller must take the last log index and term from here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogFloor {
    pub index: u64,
    pub term: u64,
    pub membership: Option<Bytes>,
}

/// [`PartitionState`] plus what only the store needs to keep the time index exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupState {
    pub public: PartitionState,
    /// Newest batch timestamp applied so far: the time index gets a row whenever it grows.
    pub max_timestamp: i64,
    /// Newest batch timestamp removed by retention. Time rows at or below it pointed into the
    /// removed prefix and are gone, so lookups for such times scan the offset rows instead.
    pub removed_max_timestamp: i64,
    /// Producers with a row (see `producer.rs`), kept to bound them without counting rows.
    pub producer_count: u32,
    /// The producer rows already include every batch below this offset: an installed snapshot
    /// carries producer state newer than its index, and re-applying the entries after it must
    /// not record their batches again.
    pub producers_through: Offset,
}

impl Default for GroupState {
    fn default() -> Self {
        GroupState {
            public: PartitionState::default(),
            max_timestamp: i64::MIN,
            removed_max_timestamp: i64::MIN,
            producer_count: 0,
            producers_through: Offset(0),
        }
    }
}

/// One applied `Records` entry, keyed by its first offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetRow {
    pub raft_index: u64,
    pub record_count: u64,
    pub max_timestamp: i64,
    pub bytes: u64,
}

fn corrupt(what: &str, why: &str) -> StorageError {
    StorageError::corrupt(format!("{what}: {why}"))
}

fn versioned<'a>(value: &'a [u8], what: &str) -> Result<Reader<'a>, StorageError> {
    let mut reader = Reader { rest: value };
    match reader.u8() {
        Ok(FORMAT_V1) => Ok(reader),
        Ok(_) => Err(corrupt(what, "unknown format version")),
        Err(why) => Err(corrupt(what, why)),
    }
}

fn finished(reader: &Reader<'_>, what: &str) -> Result<(), StorageError> {
    if reader.rest.is_empty() {
        Ok(())
    } else {
        Err(corrupt(what, "trailing bytes"))
    }
}

impl GroupState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(61);
        out.push(GROUP_STATE_V2);
        for n in [
            self.public.last_applied,
            self.public.log_start_offset.0,
            self.public.next_offset.0,
            self.public.size_bytes,
            self.max_timestamp as u64,
            self.removed_max_timestamp as u64,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&self.producer_count.to_be_bytes());
        out.extend_from_slice(&self.producers_through.0.to_be_bytes());
        out
    }

    pub fn decode(value: &[u8]) -> Result<GroupState, StorageError> {
        const WHAT: &str = "group state";
        let mut r = Reader { rest: value };
        let mut fields = || -> Result<GroupState, &'static str> {
            let version = r.u8()?;
            if version != FORMAT_V1 && version != GROUP_STATE_V2 {
                return Err("unknown format version");
            }
            let mut state = GroupState {
                public: PartitionState {
                    last_applied: r.u64()?,
                    log_start_offset: Offset(r.u64()?),
                    next_offset: Offset(r.u64()?),
                    size_bytes: r.u64()?,
                },
                max_timestamp: r.i64()?,
                removed_max_timestamp: r.i64()?,
                ..GroupState::default()
            };
            if version == GROUP_STATE_V2 {
                state.producer_count = r.u32()?;
                state.producers_through = Offset(r.u64()?);
            }
            Ok(state)
        };
        let state = fields().map_err(|why| corrupt(WHAT, why))?;
        finished(&r, WHAT)?;
        if state.public.log_start_offset > state.public.next_offset {
            return Err(corrupt(WHAT, "log start beyond log end"));
        }
        Ok(state)
    }
}

pub(crate) fn encode_floor(floor: &LogFloor) -> Vec<u8> {
    let membership_len = floor.membership.as_ref().map_or(0, |m| 4 + m.len());
    let mut out = Vec::with_capacity(18 + membership_len);
    out.push(FORMAT_V1);
    out.extend_from_slice(&floor.index.to_be_bytes());
    out.extend_from_slice(&floor.term.to_be_bytes());
    match &floor.membership {
        None => out.push(0),
        Some(membership) => {
            out.push(1);
            // Membership configs are a few node ids: far below 4 GiB.
            let len = u32::try_from(membership.len()).expect("membership config under 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(membership);
        }
    }
    out
}

pub(crate) fn decode_floor(value: &[u8]) -> Result<LogFloor, StorageError> {
    const WHAT: &str = "log floor";
    let mut r = versioned(value, WHAT)?;
    let mut fields = || -> Result<LogFloor, &'static str> {
        let index = r.u64()?;
        let term = r.u64()?;
        let membership = match r.u8()? {
            0 => None,
            1 => Some(Bytes::copy_from_slice(r.sized()?)),
            _ => return Err("bad membership flag"),
        };
        Ok(LogFloor {
            index,
            term,
            membership,
        })
    };
    let floor = fields().map_err(|why| corrupt(WHAT, why))?;
    finished(&r, WHAT)?;
    Ok(floor)
}

pub(crate) fn encode_membership(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(payload);
    out
}

pub(crate) fn decode_membership(value: &[u8]) -> Result<Bytes, StorageError> {
    let r = versioned(value, "membership row")?;
    Ok(Bytes::copy_from_slice(r.rest))
}

impl OffsetRow {
    pub fn encode(&self) -> [u8; 33] {
        let mut out = [0; 33];
        out[0] = FORMAT_V1;
        out[1..9].copy_from_slice(&self.raft_index.to_be_bytes());
        out[9..17].copy_from_slice(&self.record_count.to_be_bytes());
        out[17..25].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[25..33].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }

    pub fn decode(value: &[u8]) -> Result<OffsetRow, StorageError> {
        const WHAT: &str = "offset row";
        let mut r = versioned(value, WHAT)?;
        let mut fields = || -> Result<OffsetRow, &'static str> {
            Ok(OffsetRow {
                raft_index: r.u64()?,
                record_count: r.u64()?,
                max_timestamp: r.i64()?,
                bytes: r.u64()?,
            })
        };
        let row = fields().map_err(|why| corrupt(WHAT, why))?;
        finished(&r, WHAT)?;
        if row.record_count == 0 {
            return Err(corrupt(WHAT, "entry without records"));
        }
        Ok(row)
    }
}

pub(crate) fn encode_time_row(first_offset: Offset) -> [u8; 9] {
    let mut out = [0; 9];
    out[0] = FORMAT_V1;
    out[1..].copy_from_slice(&first_offset.0.to_be_bytes());
    out
}

pub(crate) fn decode_time_row(value: &[u8]) -> Result<Offset, StorageError> {
    const WHAT: &str = "time row";
    let mut r = versioned(value, WHAT)?;
    let offset = r.u64().map_err(|why| corrupt(WHAT, why))?;
    finished(&r, WHAT)?;
    Ok(Offset(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixture_hex::{hex, unhex};

    // Format version 1 as committed: a failure here means the on-disk format changed.
    const GROUP_STATE_V1: &str = "01 0000000000000009 0000000000000002 000000000000000c
        00000000000001f4 00000000000003e8 8000000000000000";
    const GROUP_STATE_V2: &str = "02 0000000000000009 0000000000000002 000000000000000c
        00000000000001f4 00000000000003e8 8000000000000000 00000003 000000000000000b";
    const FLOOR_V1: &str = "01 0000000000000004 0000000000000003 01 00000002 6d31";
    const OFFSET_ROW_V1: &str =
        "01 0000000000000005 000000000000000a fffffffffffffffe 0000000000000100";
    const TIME_ROW_V1: &str = "01 0000000000000011";

    #[test]
    fn v1_fixtures_decode_and_reencode() {
        let state = GroupState {
            public: PartitionState {
                last_applied: 9,
                log_start_offset: Offset(2),
                next_offset: Offset(12),
                size_bytes: 500,
            },
            max_timestamp: 1000,
            removed_max_timestamp: i64::MIN,
            producer_count: 0,
            producers_through: Offset(0),
        };
        assert_eq!(
            GroupState::decode(&unhex(GROUP_STATE_V1)).expect("state"),
            state
        );
        let state = GroupState {
            producer_count: 3,
            producers_through: Offset(11),
            ..state
        };
        assert_eq!(
            GroupState::decode(&unhex(GROUP_STATE_V2)).expect("state"),
            state
        );
        assert_eq!(hex(&state.encode()), hex(&unhex(GROUP_STATE_V2)));

        let floor = LogFloor {
            index: 4,
            term: 3,
            membership: Some(Bytes::from_static(b"m1")),
        };
        assert_eq!(decode_floor(&unhex(FLOOR_V1)).expect("floor"), floor);
        assert_eq!(hex(&encode_floor(&floor)), hex(&unhex(FLOOR_V1)));

        let row = OffsetRow {
            raft_index: 5,
            record_count: 10,
            max_timestamp: -2,
            bytes: 256,
        };
        assert_eq!(OffsetRow::decode(&unhex(OFFSET_ROW_V1)).expect("row"), row);
        assert_eq!(hex(&row.encode()), hex(&unhex(OFFSET_ROW_V1)));

        assert_eq!(
            decode_time_row(&unhex(TIME_ROW_V1)).expect("time row"),
            Offset(17)
        );
        assert_eq!(hex(&encode_time_row(Offset(17))), hex(&unhex(TIME_ROW_V1)));
    }

    #[test]
    fn damaged_rows_are_corrupt() {
        assert!(GroupState::decode(&GroupState::default().encode()[..48]).is_err());
        assert!(GroupState::decode(&GroupState::default().encode()[..52]).is_err());
        assert!(decode_floor(&[1, 0]).is_err());
        assert!(OffsetRow::decode(&[2; 33]).is_err());
        assert!(decode_time_row(&[1; 10]).is_err());
        let empty = LogFloor::default();
        assert_eq!(decode_floor(&encode_floor(&empty)).expect("floor"), empty);
    }
}
