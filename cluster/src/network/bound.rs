//! The byte bound of one AppendEntries. async-raft hands the network up to
//! `max_payload_entries` entries whatever their size (300 entries of up to 8 MiB each); the
//! network sends them as several messages of at most `max_bytes` each (at least one entry per
//! message, so a single larger entry still goes).

use crate::command::Command;
use async_raft::raft::{Entry, EntryPayload};

/// Bytes an entry adds to a message, near enough: its payload plus a fixed allowance for the
/// index, term and msgpack framing.
pub(crate) fn entry_bytes(entry: &Entry<Command>) -> usize {
    const FRAMING: usize = 32;
    let payload = match &entry.payload {
        EntryPayload::Normal(normal) => match &normal.data {
            Command::Append { batches, .. } => batches.iter().map(|b| b.len() + 8).sum(),
            Command::Kv(write) => {
                let puts: usize = write.puts.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
                puts + write.deletes.iter().map(|k| k.len() + 4).sum::<usize>()
            }
            Command::Machine(command) => command.len(),
            Command::AdvanceLogStart { .. } => 8,
        },
        EntryPayload::ConfigChange(change) => {
            let after = change
                .membership
                .members_after_consensus
                .as_ref()
                .map_or(0, |m| m.len());
            (change.membership.members.len() + after) * 9
        }
        EntryPayload::SnapshotPointer(pointer) => {
            pointer.id.len() + pointer.membership.members.len() * 9
        }
        EntryPayload::Blank => 0,
    };
    payload + FRAMING
}

/// Splits `entries` into runs of at most `max_bytes` each (a run of one entry may exceed it).
/// No entries give one empty run: a heartbeat is still one message.
pub(crate) fn split(entries: Vec<Entry<Command>>, max_bytes: usize) -> Vec<Vec<Entry<Command>>> {
    let mut runs = vec![Vec::new()];
    let mut run_bytes = 0;
    for entry in entries {
        let bytes = entry_bytes(&entry);
        let current = runs.last_mut().expect("runs start non-empty");
        if !current.is_empty() && run_bytes + bytes > max_bytes {
            runs.push(vec![entry]);
            run_bytes = bytes;
        } else {
            current.push(entry);
            run_bytes += bytes;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_raft::raft::EntryNormal;
    use bytes::Bytes;

    fn records(index: u64, bytes: usize) -> Entry<Command> {
        Entry {
            index,
            term: 1,
            payload: EntryPayload::Normal(EntryNormal {
                data: Command::append(vec![Bytes::from(vec![0u8; bytes])]),
            }),
        }
    }

    #[test]
    fn runs_stay_under_the_bound_and_keep_every_entry_in_order() {
        let entries: Vec<_> = (1..=10).map(|i| records(i, 300_000)).collect();
        let runs = split(entries, 1 << 20);
        assert_eq!(runs.len(), 4);
        let indexes: Vec<u64> = runs.iter().flatten().map(|e| e.index).collect();
        assert_eq!(indexes, (1..=10).collect::<Vec<_>>());
        for run in &runs {
            assert!(run.iter().map(entry_bytes).sum::<usize>() <= 1 << 20);
        }
    }

    #[test]
    fn an_entry_larger_than_the_bound_travels_alone() {
        let runs = split(
            vec![records(1, 10), records(2, 2 << 20), records(3, 10)],
            1 << 20,
        );
        let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn a_heartbeat_is_one_empty_run() {
        assert_eq!(
            split(Vec::new(), 1 << 20),
            vec![Vec::<Entry<Command>>::new()]
        );
    }
}
