//! The Raft seam on real storage: a single-member group leads at once, proposals commit and
//! apply with contiguous offsets, and after a restart everything committed is applied again
//! from our own log before new writes, whether or not async-raft calls the state machine.

use bytes::Bytes;
use gregor_cluster::{
    ApplyOutcome, ClusterNode, Command, Dispatcher, GroupRole, KvWrite, NoPeers, ProposeError,
    RaftGroup, RaftTuning, Start,
};
use gregor_storage::batch::{BatchBuilder, NewRecord};
use gregor_storage::{GroupId, NodeId, Offset, Store, StoreOptions, SyncMode};
use std::sync::Arc;
use std::time::Duration;

const GROUP: GroupId = GroupId(16_384);
const NODE: NodeId = NodeId(1);

fn batch(records: usize) -> Bytes {
    let mut b = BatchBuilder::with_capacity(64);
    for _ in 0..records {
        b.push(&NewRecord {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp: 1,
        });
    }
    b.finish()
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            sync_mode: SyncMode::Inline,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

async fn start(store: Store) -> Arc<RaftGroup> {
    let node = ClusterNode::new(
        NODE,
        store,
        Arc::new(NoPeers),
        Dispatcher::new(),
        RaftTuning::default(),
    );
    let group = node
        .start_group(
            GROUP,
            Start::Found {
                members: [NODE].into(),
            },
        )
        .await
        .unwrap();
    assert!(
        group.wait_for_leadership(Duration::from_secs(5)).await,
        "a lone member leads"
    );
    group
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn proposals_commit_with_contiguous_offsets_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let group = start(open(dir.path())).await;
        let timeout = Duration::from_secs(5);
        let (_, first) = group
            .propose(Command::append(vec![batch(3)]), timeout)
            .await
            .unwrap();
        assert_eq!(
            first,
            ApplyOutcome::Appended {
                base_offset: 0,
                record_count: 3
            }
        );
        let (_, second) = group
            .propose(Command::append(vec![batch(2), batch(1)]), timeout)
            .await
            .unwrap();
        assert_eq!(
            second,
            ApplyOutcome::Appended {
                base_offset: 3,
                record_count: 3
            }
        );
        let kv = KvWrite {
            puts: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))],
            deletes: vec![],
        };
        let (_, third) = group.propose(Command::Kv(kv), timeout).await.unwrap();
        assert_eq!(third, ApplyOutcome::KvApplied);
        assert_eq!(group.applied().borrow().next_offset, Offset(6));
        group.shutdown().await;
        drop(group);

        let store = open(dir.path());
        let before_restart = store.last_entry(GROUP).unwrap().unwrap().index;
        let group = start(store.clone()).await;
        // The restarted leader commits a blank entry, and async-raft marks it applied without
        // calling the state machine; only the watcher applies our log up to it.
        let mut applied = group.applied();
        let caught_up = tokio::time::timeout(Duration::from_secs(10), async {
            while applied.borrow_and_update().last_applied <= before_restart {
                applied.changed().await.unwrap();
            }
        })
        .await;
        assert!(
            caught_up.is_ok(),
            "the new leader's blank entry was never applied"
        );
        assert_eq!(applied.borrow().next_offset, Offset(6));
        assert_eq!(
            store.kv_get(GROUP, b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        let (_, fourth) = group
            .propose(Command::append(vec![batch(1)]), timeout)
            .await
            .unwrap();
        assert_eq!(
            fourth,
            ApplyOutcome::Appended {
                base_offset: 6,
                record_count: 1
            }
        );
        group.shutdown().await;
    });
}

#[test]
fn a_stopped_group_refuses_proposals_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let group = start(open(dir.path())).await;
        group.shutdown().await;
        let result = group
            .propose(Command::append(vec![batch(1)]), Duration::from_secs(1))
            .await;
        assert!(
            matches!(result, Err(ProposeError::ShuttingDown)),
            "{result:?}"
        );
    });
}

/// async-raft shuts a group down on a fatal storage error without publishing its state again:
/// the group must then say it is stopped, not go on reporting the leadership it had, or a
/// coordinator on a node whose disk failed would keep answering from memory.
#[test]
fn a_group_whose_storage_failed_says_it_stopped_leading() {
    let disk = gregor_storage::ModelDisk::new();
    runtime().block_on(async {
        let store = Store::open_model(
            &disk,
            StoreOptions {
                sync_mode: SyncMode::Inline,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let group = start(store).await;
        assert_eq!(group.role(), GroupRole::Leader);
        disk.fail_next_persist();
        let result = group
            .propose(Command::append(vec![batch(1)]), Duration::from_secs(1))
            .await;
        assert!(
            result.is_err(),
            "a write whose fsync failed is refused: {result:?}"
        );
        let mut status = group.status();
        let stopped = tokio::time::timeout(Duration::from_secs(10), async {
            while status.borrow_and_update().role != GroupRole::Stopped {
                if status.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(stopped.is_ok(), "the group's status never said it stopped");
        assert_eq!(group.role(), GroupRole::Stopped);
        assert_eq!(group.leader(), None);
        assert!(!group.is_ready());
    });
}

/// Counts commands: each outcome is how many it has seen, kept in the group's rows.
struct Counter;

impl gregor_storage::StateMachine for Counter {
    fn apply(
        &mut self,
        _index: u64,
        _command: &[u8],
        rows: &mut gregor_storage::RowTxn<'_>,
    ) -> Result<Bytes, gregor_storage::StorageError> {
        let seen = rows.get(b"seen")?.map_or(0, |v| v[0]) + 1;
        rows.put(b"seen", Bytes::copy_from_slice(&[seen]));
        Ok(Bytes::copy_from_slice(&[seen]))
    }
}

#[test]
fn machine_commands_and_retention_are_applied_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let node = ClusterNode::new(
            NODE,
            open(dir.path()),
            Arc::new(NoPeers),
            Dispatcher::new(),
            RaftTuning::default(),
        );
        let group = node
            .start_group_with_machine(
                GROUP,
                Start::Found {
                    members: [NODE].into(),
                },
                Some(Box::new(Counter)),
            )
            .await
            .unwrap();
        assert!(group.wait_for_leadership(Duration::from_secs(5)).await);
        let timeout = Duration::from_secs(5);
        for expected in 1..=2u8 {
            let (_, outcome) = group
                .propose(Command::Machine(Bytes::from_static(b"tick")), timeout)
                .await
                .unwrap();
            assert_eq!(
                outcome,
                ApplyOutcome::Machine(Bytes::copy_from_slice(&[expected]))
            );
        }
        for _ in 0..3 {
            let append = Command::append(vec![batch(2)]);
            group.propose(append, timeout).await.unwrap();
        }
        let (_, outcome) = group
            .propose(Command::AdvanceLogStart { offset: 3 }, timeout)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            ApplyOutcome::LogStartAdvanced {
                log_start_offset: 2
            }
        );
        assert_eq!(group.applied().borrow().log_start_offset, Offset(2));
        group.shutdown().await;
    });
}

/// A founder that crashed after voting for itself in term 1, before its first entry, founds
/// the group again; one that crashed later (a log entry exists) restarts it instead.
#[test]
fn an_unfinished_founding_is_finished_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open(dir.path());
        let vote = async_raft::storage::HardState {
            current_term: 1,
            voted_for: Some(NODE.0),
        };
        store
            .save_hard_state(GROUP, &rmp_serde::to_vec(&vote).unwrap())
            .unwrap();
        store.sync().unwrap();
        let group = start(store).await;
        let (index, _) = group
            .propose(Command::append(vec![batch(1)]), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(index >= 2, "the initial configuration came first");
        group.shutdown().await;
    });
}

/// Sync jobs held until the test lets them run: a disk whose fsyncs have not completed yet.
#[derive(Clone, Default)]
struct HeldSyncs(Arc<std::sync::Mutex<(bool, Vec<gregor_storage::SyncJob>)>>);

impl HeldSyncs {
    fn runner(&self) -> gregor_storage::SyncRunner {
        let held = self.clone();
        gregor_storage::SyncRunner::new(move |job| {
            let mut state = held.0.lock().unwrap();
            if state.0 {
                drop(state);
                job.run();
            } else {
                state.1.push(job);
            }
        })
    }

    /// Completes every held fsync and every later one at once.
    fn release(&self) {
        let jobs = {
            let mut state = self.0.lock().unwrap();
            state.0 = true;
            std::mem::take(&mut state.1)
        };
        for job in jobs {
            job.run();
        }
    }
}

/// async-raft restarts a lone member as leader in its stored term, without an election, so
/// the entry its applied state ends on is already "of its own term". After a power cut took
/// the unsynced apply of committed entries, that leader must not count as ready (and serve
/// reads) before it re-applied its committed log.
#[test]
fn a_lone_member_restarted_in_its_old_term_is_ready_only_once_it_reapplied_its_log() {
    runtime().block_on(async {
        let disk = gregor_storage::ModelDisk::new();
        let options = |sync_mode| StoreOptions {
            sync_mode,
            ..StoreOptions::default()
        };
        let group = start(Store::open_model(&disk, options(SyncMode::Inline)).unwrap()).await;
        let timeout = Duration::from_secs(5);
        for _ in 0..3 {
            group
                .propose(Command::append(vec![batch(2)]), timeout)
                .await
                .unwrap();
        }
        let term = group.term();
        // The last apply is not fsynced; the log is.
        disk.crash(gregor_storage::Crash::PowerLoss { keep: 0 });
        group.shutdown().await;
        drop(group);

        let syncs = HeldSyncs::default();
        let store = Store::open_model(&disk, options(SyncMode::External(syncs.runner()))).unwrap();
        let committed = store.last_entry(GROUP).unwrap().unwrap().index;
        assert_eq!(store.partition_state(GROUP).unwrap().next_offset, Offset(4));
        assert!(store.partition_state(GROUP).unwrap().last_applied < committed);
        let group = start(store).await;
        assert_eq!(
            group.term(),
            term,
            "a lone member leads again in its old term"
        );
        assert!(
            !group.wait_until_ready(Duration::from_secs(2)).await,
            "ready with applied state {:?} behind its committed log (index {committed})",
            *group.applied().borrow()
        );

        syncs.release();
        assert!(group.wait_until_ready(timeout).await);
        assert_eq!(group.applied().borrow().next_offset, Offset(6));
        group.shutdown().await;
    });
}
