//! The metadata state machine, the reconciler and the metadata requests of one node, through
//! its public API, on a single-threaded actix System with paused time and real fjall storage.

use gregor_actors::api::*;
use gregor_actors::reconcile::{LocalRegistry, PendingDeletions};
use gregor_actors::{start_node_with, Broker, NodeConfig, NodeEnv};
use gregor_storage::batch::{BatchBuilder, NewRecord};
use gregor_storage::{FlushPolicy, GroupId, NodeId, PartitionId, Store, StoreOptions, SyncMode};
use std::path::Path;
use std::time::Duration;

fn run<F: std::future::Future<Output = ()>>(test: impl FnOnce(tempfile::TempDir) -> F) {
    let dir = tempfile::tempdir().unwrap();
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(test(dir));
}

async fn start(dir: &Path) -> Broker {
    let mut config = NodeConfig::single_node(dir);
    config.offsets_partitions = 3;
    config.flush = FlushPolicy::Always;
    let env = NodeEnv {
        sync_mode: SyncMode::Inline,
        ..NodeEnv::production()
    };
    start_node_with(config, env).await.unwrap()
}

fn open_store(dir: &Path) -> Store {
    let options = StoreOptions {
        sync_mode: SyncMode::Inline,
        ..StoreOptions::default()
    };
    Store::open(dir, options).unwrap()
}

async fn ok(node: &Broker, request: impl Into<Request>) -> Response {
    node.handle(request.into()).await.unwrap()
}

async fn create(node: &Broker, name: &str, partitions: u32) -> TopicDescription {
    let request = CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: 1,
        config: Default::default(),
        creation_id: None,
    };
    match ok(node, request).await {
        Response::CreateTopic(description) => description,
        other => panic!("{other:?}"),
    }
}

async fn producer_id(node: &Broker) -> i64 {
    match ok(node, InitProducerId {}).await {
        Response::InitProducerId(identity) => {
            assert_eq!(identity.producer_epoch, 0);
            identity.producer_id
        }
        other => panic!("{other:?}"),
    }
}

/// Waits, with a deadline, until the node has no deletion left to do.
async fn deletions_done(node: &Broker) {
    let done = async {
        loop {
            let pending = node.reconciler().send(PendingDeletions).await.unwrap();
            if pending.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the deletions finish");
}

#[test]
fn producer_ids_are_never_handed_out_twice_across_restarts() {
    run(|dir| async move {
        let node = start(dir.path()).await;
        let first: Vec<i64> = [
            producer_id(&node).await,
            producer_id(&node).await,
            producer_id(&node).await,
        ]
        .into();
        assert_eq!(first, vec![0, 1, 2], "one block, handed out in order");
        node.shutdown().await;
        let node = start(dir.path()).await;
        // The rest of the first block is lost with the node's memory, never reused.
        let after = producer_id(&node).await;
        assert!(after >= 1000, "{after} comes from a new block");
        node.shutdown().await;
    });
}

#[test]
fn cluster_status_shows_the_node_its_replicas_and_leaders() {
    run(|dir| async move {
        let node = start(dir.path()).await;
        create(&node, "orders", 4).await;
        let Response::ClusterStatus(status) = ok(&node, ClusterStatus {}).await else {
            panic!()
        };
        assert_eq!(status.node_id, NodeId(1));
        assert_eq!(status.metadata_leader, Some(NodeId(1)));
        let me = &status.nodes[0];
        assert_eq!(status.nodes.len(), 1);
        assert_eq!(
            (me.state.as_str(), me.live, me.metadata_role.as_str()),
            ("active", true, "voter")
        );
        assert_eq!(me.address, "127.0.0.1:9092");
        // Three offsets partitions and four of "orders", all led here.
        assert_eq!((me.replicas, me.leaders), (7, 7));
        node.shutdown().await;
    });
}

#[test]
fn a_drained_node_takes_no_new_replicas_and_an_unknown_node_is_refused() {
    run(|dir| async move {
        let node = start(dir.path()).await;
        let refused = node
            .handle(DrainNode { node_id: NodeId(9) }.into())
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::UNKNOWN_NODE);
        ok(&node, DrainNode { node_id: NodeId(1) }).await;
        let Response::ClusterStatus(status) = ok(&node, ClusterStatus {}).await else {
            panic!()
        };
        assert_eq!(status.nodes[0].state, "draining");
        let request = CreateTopic {
            name: "late".into(),
            partitions: 1,
            replication_factor: 1,
            config: Default::default(),
            creation_id: None,
        };
        let error = node.handle(request.into()).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::INVALID_REPLICATION_FACTOR);
        assert!(error.message.contains("0 live"), "{}", error.message);
        node.shutdown().await;
    });
}

/// A deleted topic's data goes from the disk; a node stopped in the middle of a deletion
/// resumes it from its durable marker when it starts again, and data of a group that is
/// recorded as hosted but no longer assigned goes too.
#[test]
fn a_deleted_topic_data_is_removed_and_an_interrupted_deletion_resumes() {
    run(|dir| async move {
        let node = start(dir.path()).await;
        create(&node, "doomed", 1).await;
        let id = node.view().topic("doomed").unwrap().record.id;
        let group = GroupId::for_partition(id, PartitionId(0));
        for _ in 0..100 {
            let mut batch = BatchBuilder::with_capacity(64);
            batch.push(&NewRecord {
                key: None,
                value: Some(b"x"),
                headers: &[],
                timestamp: 0,
            });
            let produce = Produce {
                topic: "doomed".into(),
                partition: PartitionId(0),
                acks: Acks::All,
                timeout_ms: 5_000,
                batches: vec![batch.finish()],
                topic_id: None,
            };
            ok(&node, produce).await;
        }
        ok(
            &node,
            DeleteTopic {
                name: "doomed".into(),
            },
        )
        .await;
        deletions_done(&node).await;
        node.shutdown().await;
        let store = open_store(dir.path());
        assert!(store.last_entry(group).unwrap().is_none());
        assert_eq!(store.hard_state(group).unwrap(), None);
        let registry = LocalRegistry::new(store.clone());
        let registered = registry.load().unwrap();
        assert!(!registered.hosted.contains(&group) && registered.deleting.is_empty());

        // A deletion interrupted by a crash: its marker is durable, some data is left; and a
        // group recorded as hosted whose assignment is gone (the crash came before its
        // deletion began).
        let interrupted = GroupId::for_partition(gregor_storage::TopicId(900), PartitionId(0));
        let orphan = GroupId::for_partition(gregor_storage::TopicId(901), PartitionId(3));
        for leftover in [interrupted, orphan] {
            let entry = gregor_storage::LogEntry {
                index: 1,
                term: 1,
                payload: gregor_storage::EntryPayload::Blank,
            };
            store.append_entries(leftover, &[entry]).unwrap();
            registry.hosted(leftover).unwrap();
        }
        registry.deleting(interrupted).await.unwrap();
        drop((registry, store));

        let node = start(dir.path()).await;
        deletions_done(&node).await;
        node.shutdown().await;
        let store = open_store(dir.path());
        for leftover in [interrupted, orphan] {
            assert!(store.last_entry(leftover).unwrap().is_none(), "{leftover}");
        }
        let registered = LocalRegistry::new(store).load().unwrap();
        assert!(registered.deleting.is_empty());
        assert!(!registered.hosted.contains(&interrupted) && !registered.hosted.contains(&orphan));
    });
}

#[test]
fn the_view_is_rebuilt_after_a_restart_and_ids_keep_growing() {
    run(|dir| async move {
        let node = start(dir.path()).await;
        create(&node, "a", 2).await;
        ok(&node, DeleteTopic { name: "a".into() }).await;
        create(&node, "a", 1).await;
        let before = node.view();
        node.shutdown().await;
        let node = start(dir.path()).await;
        let after = node.view();
        assert_eq!(after.topic("a"), before.topic("a"));
        assert_eq!(after.next_topic_id(), before.next_topic_id());
        create(&node, "b", 1).await;
        let b = node.view().topic("b").unwrap().record.id;
        assert_eq!(b.0, before.next_topic_id(), "no id is ever reused");
        node.shutdown().await;
    });
}

/// A create sent again with its creation id (its first answer was lost) is answered with the
/// topic it made, also after a restart (the id is in the topic's row); a create with another
/// id, or without one, is refused as before.
#[test]
fn a_create_retried_with_its_creation_id_gets_its_topic_and_a_foreign_one_is_refused() {
    run(|dir| async move {
        let node = start(dir.path()).await;
        let ours = CreateTopic {
            name: "orders".into(),
            partitions: 2,
            replication_factor: 1,
            config: Default::default(),
            creation_id: Some(41),
        };
        let Response::CreateTopic(made) = ok(&node, ours.clone()).await else {
            panic!()
        };
        let id = node.view().topic("orders").unwrap().record.id;
        node.shutdown().await;

        let node = start(dir.path()).await;
        let Response::CreateTopic(again) = ok(&node, ours.clone()).await else {
            panic!()
        };
        assert_eq!(
            (again.name.as_str(), again.partitions.len()),
            (made.name.as_str(), made.partitions.len())
        );
        assert_eq!(node.view().topic("orders").unwrap().record.id, id);
        for foreign in [Some(42), None] {
            let other = CreateTopic {
                creation_id: foreign,
                ..ours.clone()
            };
            let refused = node.handle(other.into()).await.unwrap_err();
            assert_eq!(refused.code, ErrorCode::TOPIC_ALREADY_EXISTS, "{foreign:?}");
        }
        node.shutdown().await;
    });
}
