use crate::{version::BEFORE_PERSIST, AbstractTree, AnyTree, Config, SequenceNumberCounter};
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
