//! The replica-tampering self-test: one committed record of one partition replica is
//! rewritten on its node's disk, behind Raft's back, as a disk that silently changed data
//! would. The inconsistent-offsets checker must report it.

use crate::cluster::SimCluster;
use crate::node::CrashKind;
use crate::workload::Recorder;
use gregor_protocol::batch::{BatchBuilder, BatchView, NewRecord};
use gregor_storage::{EntryPayload, GroupId, LogEntry, PartitionId, Store, TopicId};

/// Stops the first node, rewrites the first records entry of the first partition group it
/// holds with records, and starts it again.
pub async fn tamper_one_record(cluster: &SimCluster, recorder: &Recorder) {
    let Some(node) = cluster.nodes().next().cloned() else {
        return;
    };
    node.crash(CrashKind::Process, &cluster.net);
    let tampered = match node.open_offline().await {
        Ok(store) => rewrite_first_records_entry(&store),
        Err(error) => Err(error),
    };
    recorder.note(format!("tamper node {}: {tampered:?}", node.id()));
    if let Err(error) = node.start(&cluster.net).await {
        recorder.note(format!(
            "tampered node {} did not restart: {error}",
            node.id()
        ));
    }
}

fn rewrite_first_records_entry(store: &Store) -> Result<u64, String> {
    for topic in 1..=8 {
        for partition in 0..4 {
            let group = GroupId::for_partition(TopicId(topic), PartitionId(partition));
            if let Some(index) = rewrite(store, group).map_err(|e| e.to_string())? {
                return Ok(group.0 * 1_000_000 + index);
            }
        }
    }
    Err("no partition with records to tamper with".into())
}

/// Rebuilds `group`'s log with the first records entry's values replaced; the index of that
/// entry, or `None` if the group has none (or lost its log prefix).
fn rewrite(store: &Store, group: GroupId) -> Result<Option<u64>, gregor_storage::StorageError> {
    let state = store.partition_state(group)?;
    if state.last_applied == 0 || store.log_floor(group)?.index > 0 {
        return Ok(None);
    }
    let mut entries = store.read_entries(group, 1, state.last_applied + 1)?;
    let Some(target) = entries
        .iter_mut()
        .find(|e| matches!(e.payload, EntryPayload::Records(_)))
    else {
        return Ok(None);
    };
    let EntryPayload::Records(batches) = &target.payload else {
        unreachable!("found as records");
    };
    let forged = batches.iter().map(|b| forge(b)).collect();
    target.payload = EntryPayload::Records(forged);
    let index = target.index;
    let tail: Vec<LogEntry> = store.read_entries(group, state.last_applied + 1, u64::MAX)?;
    let hard_state = store.hard_state(group)?;
    while !store.delete_group(group)? {}
    store.append_entries(group, &entries)?;
    store.append_entries(group, &tail)?;
    store.apply_up_to(group, state.last_applied)?;
    if let Some(hard_state) = hard_state {
        store.save_hard_state(group, &hard_state)?;
    }
    store.sync()?;
    Ok(Some(index))
}

/// A batch with as many records as `batch`, holding other values.
fn forge(batch: &[u8]) -> bytes::Bytes {
    let count = BatchView::validate(batch).map_or(1, |view| view.record_count());
    let mut builder = BatchBuilder::with_capacity(64 * count as usize);
    for n in 0..count {
        let value = format!("tampered/{n}");
        builder.push(&NewRecord {
            key: None,
            value: Some(value.as_bytes()),
            headers: &[],
            timestamp: 0,
        });
    }
    builder.finish()
}
