use crate::{
    table::writer::BEFORE_TABLE_SYNC, version::BEFORE_PERSIST,
    AbstractTree, AnyTree, Config, SequenceNumberCounter,
};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use test_log::test;

fn open(path: &std::path::Path) -> crate::Result<AnyTree> {
    Config::new(
        path,
        SequenceNumberCounter::default(),
        SequenceNumberCounter::default(),
    )
    .open()
}

#[test]
fn a_flush_writes_its_version_without_locking_out_writers() -> crate::Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = open(dir.path())?;
    let AnyTree::Standard(standard) = &tree else {
        unreachable!("the default config opens a standard tree");
    };

    tree.insert("key", "value", 0);

    let history = standard.version_history.clone();
    let writers_free = Arc::new(AtomicBool::new(false));
    let seen = writers_free.clone();
    BEFORE_PERSIST.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move || {
            // A memtable insert needs the history read-locked; a write lock held here would
            // keep every writer out while the version file and its directory are synced.
            seen.store(history.try_write().is_ok(), Ordering::SeqCst);
        }));
    });
    let flushed = tree.flush_active_memtable(0);
    BEFORE_PERSIST.with(|hook| *hook.borrow_mut() = None);
    flushed?;

    assert!(
        writers_free.load(Ordering::SeqCst),
        "the version history was locked while the flush wrote its version",
    );
    assert_eq!(1, tree.table_count());
    assert_eq!(0, tree.sealed_memtable_count());

    drop(tree);
    let tree = open(dir.path())?;
    assert_eq!(1, tree.table_count());
    assert_eq!(Some("value".as_bytes().into()), tree.get("key", 1)?);

    Ok(())
}

#[test]
fn a_compaction_syncs_its_tables_and_writes_its_version_without_locking_out_writers() -> crate::Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = open(dir.path())?;
    let AnyTree::Standard(standard) = &tree else {
        unreachable!("the default config opens a standard tree");
    };

    for round in 0..4u8 {
        tree.insert([b'k', round], "value", u64::from(round));
        tree.flush_active_memtable(0)?;
    }
    assert_eq!(4, tree.table_count());

    let history = standard.version_history.clone();
    let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let locked = Arc::new(AtomicBool::new(false));
    let (seen_syncs, seen_locked) = (syncs.clone(), locked.clone());
    BEFORE_TABLE_SYNC.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move || {
            seen_syncs.fetch_add(1, Ordering::SeqCst);
            if history.try_write().is_err() {
                seen_locked.store(true, Ordering::SeqCst);
            }
        }));
    });
    let history = standard.version_history.clone();
    let versions_written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let version_locked = Arc::new(AtomicBool::new(false));
    let (seen_versions, seen_version_locked) = (versions_written.clone(), version_locked.clone());
    BEFORE_PERSIST.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move || {
            seen_versions.fetch_add(1, Ordering::SeqCst);
            if history.try_write().is_err() {
                seen_version_locked.store(true, Ordering::SeqCst);
            }
        }));
    });
    let compacted = tree.major_compact(u64::MAX, 0);
    BEFORE_TABLE_SYNC.with(|hook| *hook.borrow_mut() = None);
    BEFORE_PERSIST.with(|hook| *hook.borrow_mut() = None);
    compacted?;

    assert!(syncs.load(Ordering::SeqCst) > 0, "the compaction wrote no table");
    assert!(
        !locked.load(Ordering::SeqCst),
        "the version history was locked while the compaction synced its tables",
    );
    assert_eq!(1, versions_written.load(Ordering::SeqCst));
    assert!(
        !version_locked.load(Ordering::SeqCst),
        "the version history was locked while the compaction wrote its version",
    );
    assert_eq!(1, tree.table_count());

    drop(tree);
    let tree = open(dir.path())?;
    for round in 0..4u8 {
        assert_eq!(Some("value".as_bytes().into()), tree.get([b'k', round], 10)?);
    }

    Ok(())
}

#[test]
fn a_move_writes_its_version_without_locking_out_writers() -> crate::Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = open(dir.path())?;
    let AnyTree::Standard(standard) = &tree else {
        unreachable!("the default config opens a standard tree");
    };

    tree.insert("key", "value", 0);
    tree.flush_active_memtable(0)?;

    let history = standard.version_history.clone();
    let versions_written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let locked = Arc::new(AtomicBool::new(false));
    let (seen_versions, seen_locked) = (versions_written.clone(), locked.clone());
    BEFORE_PERSIST.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move || {
            seen_versions.fetch_add(1, Ordering::SeqCst);
            if history.try_write().is_err() {
                seen_locked.store(true, Ordering::SeqCst);
            }
        }));
    });
    let moved = tree.compact(Arc::new(crate::compaction::MoveDown(0, 1)), 0);
    BEFORE_PERSIST.with(|hook| *hook.borrow_mut() = None);
    moved?;

    assert_eq!(1, versions_written.load(Ordering::SeqCst));
    assert!(
        !locked.load(Ordering::SeqCst),
        "the version history was locked while the move wrote its version",
    );
    assert_eq!(1, tree.table_count());

    drop(tree);
    let tree = open(dir.path())?;
    assert_eq!(Some("value".as_bytes().into()), tree.get("key", 1)?);

    Ok(())
}

#[test]
fn a_flushed_memtable_is_freed_after_the_version_history_is_unlocked() -> crate::Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = open(dir.path())?;
    let AnyTree::Standard(standard) = &tree else {
        unreachable!("the default config opens a standard tree");
    };

    tree.insert("key", "value", 0);
    let sealed = tree.rotate_memtable().expect("the memtable holds a write");
    let memtable = Arc::downgrade(&sealed);
    drop(sealed);
    tree.flush(&tree.get_flush_lock(), 0)?;
    assert!(
        memtable.upgrade().is_some(),
        "the version before the flush still holds the flushed memtable",
    );

    #[expect(clippy::expect_used)]
    let stale = standard
        .version_history
        .write()
        .expect("lock is not poisoned")
        .take_stale_version_files(dir.path(), crate::SeqNo::MAX);
    // Freeing a memtable's entries takes tens of milliseconds for a large one; under the
    // write lock, every memtable insert would wait for it.
    assert!(
        memtable.upgrade().is_some(),
        "the retired version was dropped while the version history was locked",
    );
    stale.remove()?;
    assert!(memtable.upgrade().is_none(), "the retired version was kept");

    assert_eq!(Some("value".as_bytes().into()), tree.get("key", 1)?);
    Ok(())
}
