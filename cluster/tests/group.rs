//! The Raft seam on real storage: a single-member group leads at once, proposals commit and
//! apply with contiguous offsets, and after a restart everything committed is applied again
//! from our own log before new writes, whether or not async-raft calls the state machine.

use bytes::Bytes;
use gregor_cluster::{
    ApplyOutcome, ClusterNode, Command, Dispatcher, KvWrite, NoPeers, ProposeError, RaftGroup,
    RaftTuning, Start,
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
