//! Maps async-raft's `Entry<Command>` to the storage crate's `LogEntry` and back. Record batches
//! pass through as reference-counted `Bytes`, so no payload is copied here.

use crate::command::{Command, KvWrite};
use anyhow::{Context, Result};
use async_raft::raft::{
    Entry, EntryConfigChange, EntryNormal, EntryPayload, EntrySnapshotPointer, MembershipConfig,
};
use bytes::Bytes;
use gregor_storage::{EntryPayload as Stored, KvOps, LogEntry, Offset};

pub(crate) fn to_stored(entry: &Entry<Command>) -> Result<LogEntry> {
    let payload = match &entry.payload {
        EntryPayload::Blank => Stored::Blank,
        EntryPayload::Normal(EntryNormal {
            data: Command::Append { batches, .. },
        }) => Stored::Records(batches.clone()),
        EntryPayload::Normal(EntryNormal {
            data: Command::Kv(write),
        }) => Stored::Kv(KvOps {
            puts: write.puts.clone(),
            deletes: write.deletes.clone(),
        }),
        EntryPayload::Normal(EntryNormal {
            data: Command::Machine(command),
        }) => Stored::Command(command.clone()),
        EntryPayload::Normal(EntryNormal {
            data: Command::AdvanceLogStart { offset },
        }) => Stored::AdvanceLogStart(Offset(*offset)),
        EntryPayload::ConfigChange(change) => {
            Stored::Membership(encode_membership(&change.membership)?)
        }
        EntryPayload::SnapshotPointer(pointer) => {
            Stored::SnapshotPointer(Bytes::from(rmp_serde::to_vec(pointer)?))
        }
    };
    Ok(LogEntry {
        index: entry.index,
        term: entry.term,
        payload,
    })
}

/// An entry as a long scan of the log answers it (`GroupStorage::get_log_entries`): a record
/// entry without its records, as a blank one; every other kind as stored. The group's network
/// puts the records back before such an entry is sent (`hydrate` in `network`).
pub(crate) fn hollow_from_stored(entry: LogEntry) -> Result<Entry<Command>> {
    if matches!(entry.payload, Stored::Records(_)) {
        return Ok(Entry {
            index: entry.index,
            term: entry.term,
            payload: EntryPayload::Blank,
        });
    }
    from_stored(entry)
}

pub(crate) fn from_stored(entry: LogEntry) -> Result<Entry<Command>> {
    let payload = match entry.payload {
        Stored::Blank => EntryPayload::Blank,
        Stored::Records(batches) => EntryPayload::Normal(EntryNormal {
            data: Command::append(batches),
        }),
        Stored::Kv(ops) => EntryPayload::Normal(EntryNormal {
            data: Command::Kv(KvWrite {
                puts: ops.puts,
                deletes: ops.deletes,
            }),
        }),
        Stored::Command(command) => EntryPayload::Normal(EntryNormal {
            data: Command::Machine(command),
        }),
        Stored::AdvanceLogStart(offset) => EntryPayload::Normal(EntryNormal {
            data: Command::AdvanceLogStart { offset: offset.0 },
        }),
        Stored::Membership(bytes) => EntryPayload::ConfigChange(EntryConfigChange {
            membership: decode_membership(&bytes)?,
        }),
        Stored::SnapshotPointer(bytes) => EntryPayload::SnapshotPointer(
            rmp_serde::from_slice::<EntrySnapshotPointer>(&bytes)
                .context("decoding a stored snapshot pointer")?,
        ),
    };
    Ok(Entry {
        index: entry.index,
        term: entry.term,
        payload,
    })
}

pub(crate) fn encode_membership(membership: &MembershipConfig) -> Result<Bytes> {
    Ok(Bytes::from(rmp_serde::to_vec(membership)?))
}

pub(crate) fn decode_membership(bytes: &[u8]) -> Result<MembershipConfig> {
    rmp_serde::from_slice(bytes).context("decoding a stored membership config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_payload_kind_round_trips() {
        let membership = MembershipConfig {
            members: HashSet::from([1, 2]),
            members_after_consensus: None,
        };
        let payloads = vec![
            EntryPayload::Blank,
            EntryPayload::Normal(EntryNormal {
                data: Command::append(vec![Bytes::from_static(b"batch")]),
            }),
            EntryPayload::Normal(EntryNormal {
                data: Command::Kv(KvWrite {
                    puts: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))],
                    deletes: vec![Bytes::from_static(b"gone")],
                }),
            }),
            EntryPayload::Normal(EntryNormal {
                data: Command::Machine(Bytes::from_static(b"create")),
            }),
            EntryPayload::Normal(EntryNormal {
                data: Command::AdvanceLogStart { offset: 42 },
            }),
            EntryPayload::ConfigChange(EntryConfigChange {
                membership: membership.clone(),
            }),
            EntryPayload::SnapshotPointer(EntrySnapshotPointer {
                id: "s1".into(),
                membership,
            }),
        ];
        for (i, payload) in payloads.into_iter().enumerate() {
            let entry = Entry {
                index: i as u64 + 1,
                term: 3,
                payload,
            };
            let back = from_stored(to_stored(&entry).unwrap()).unwrap();
            assert_eq!(back, entry);
        }
    }
}
