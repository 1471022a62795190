//! Table-driven tests of the metadata rules (`testdata/metadata/*.txt`); the commands are
//! those of [`super::test_harness`].

use super::core::MetadataCore;
use super::rows::Rows;
use super::test_harness::Harness;
use crate::testdata::run_file;
use gregor_storage::{NodeId, PartitionId, TopicId};

#[test]
fn topics() {
    let mut harness = Harness::new();
    run_file("testdata/metadata/topics.txt", |input| {
        harness.try_run(&input[0]).expect("a metadata command")
    });
}

#[test]
fn nodes_and_moves() {
    let mut harness = Harness::new();
    run_file("testdata/metadata/moves.txt", |input| {
        harness.try_run(&input[0]).expect("a metadata command")
    });
}

#[test]
fn producer_ids() {
    let mut harness = Harness::new();
    run_file("testdata/metadata/producer_ids.txt", |input| {
        harness.try_run(&input[0]).expect("a metadata command")
    });
}

/// A node whose rows were replaced by a snapshot (newer than its copy) reloads before it
/// applies the next command, so it decides as the nodes that applied every entry.
#[test]
fn rows_newer_than_the_view_are_reloaded_before_applying() {
    let mut leader = Harness::new();
    for line in [
        "register 1",
        "register 2",
        "create a partitions=1 rf=1 assign=1",
        "create b partitions=2 rf=2 assign=1,2;2,1",
    ] {
        leader.try_run(line);
    }
    let mut learner = Harness::new();
    learner.try_run("register 1");
    // The snapshot: the leader's rows replace the learner's.
    learner.rows = leader.rows.clone();
    learner.index = leader.index;
    let next = "create c partitions=1 rf=1 assign=2";
    assert_eq!(leader.try_run(next), learner.try_run(next));
    assert_eq!(leader.core, learner.core);
    assert_eq!(
        learner.core.view().topic("c").unwrap().record.id,
        TopicId(3)
    );
}

#[test]
fn corrupt_rows_are_an_error_not_a_guess() {
    let mut harness = Harness::new();
    harness.try_run("register 1");
    harness.try_run("create a partitions=2 rf=1 assign=1;1");
    let mut rows = harness.rows.clone();
    rows.delete(&super::rows::partition_key(TopicId(1), PartitionId(1)));
    assert!(MetadataCore::load(&rows).is_err());
    let mut rows = harness.rows.clone();
    rows.put(
        &super::rows::node_key(NodeId(1)),
        bytes::Bytes::from_static(b"\xc1"),
    );
    assert!(MetadataCore::load(&rows).is_err());
}

/// An apply batch that failed to commit leaves the copy in memory ahead of the rows; the
/// entries come again and are applied from the rows, not from the copy.
#[test]
fn a_batch_that_did_not_commit_is_applied_again_from_the_rows() {
    let mut harness = Harness::new();
    harness.try_run("register 1");
    let committed = harness.rows.clone();
    let index = harness.index;
    harness.try_run("create a partitions=1 rf=1 assign=1");
    // The batch holding the create is lost: rows as before it, the same entry again.
    harness.rows = committed;
    harness.index = index;
    assert_eq!(
        harness
            .try_run("create a partitions=1 rf=1 assign=1")
            .unwrap(),
        "TopicCreated { id: TopicId(1), revision: 2 }"
    );
}
