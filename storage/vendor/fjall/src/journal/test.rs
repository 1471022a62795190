use super::*;
use crate::batch::item::Item as BatchItem;
use entry::Entry;
use lsm_tree::ValueType;
use std::io::Write;
use tempfile::tempdir;
use test_log::test;

impl PartialEq<BatchItem> for crate::journal::batch_reader::ReadBatchItem {
    fn eq(&self, other: &BatchItem) -> bool {
        self.keyspace_id == other.keyspace.id
            && self.key == other.key
            && self.value == other.value
            && self.value_type == other.value_type
    }
}

impl PartialEq<crate::journal::batch_reader::ReadBatchItem> for BatchItem {
    fn eq(&self, other: &crate::journal::batch_reader::ReadBatchItem) -> bool {
        other.eq(self)
    }
}

#[test]
#[expect(clippy::redundant_clone)]
fn journal_rotation() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace = db.keyspace("default", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");
    let next_path = dir2.path().join("1.jnl");

    {
        let journal = Journal::create_new(&path)?;
        let mut writer = journal.get_writer()?;

        writer.write_batch(
            [
                BatchItem::new(keyspace.clone(), *b"a", *b"a", ValueType::Value),
                BatchItem::new(keyspace.clone(), *b"b", *b"b", ValueType::Value),
            ]
            .iter(),
            2,
            0,
        )?;
        writer.rotate()?;
    }

    assert!(path.try_exists()?);
    assert!(next_path.try_exists()?);

    Ok(())
}

#[test]
#[expect(clippy::redundant_clone)]
fn journal_recovery_active() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace0 = db.keyspace("default", Default::default)?;
    let keyspace1 = db.keyspace("default1", Default::default)?;
    let keyspace2 = db.keyspace("default2", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");
    let next_path = dir2.path().join("1.jnl");
    let next_next_path = dir2.path().join("2.jnl");

    {
        let journal = Journal::create_new(&path)?;
        let mut writer = journal.get_writer()?;

        writer.write_batch(
            [
                BatchItem::new(keyspace0.clone(), *b"a", *b"a", ValueType::Value),
                BatchItem::new(keyspace0.clone(), *b"b", *b"b", ValueType::Value),
            ]
            .iter(),
            2,
            0,
        )?;
        writer.rotate()?;

        writer.write_batch(
            [
                BatchItem::new(keyspace1.clone(), *b"c", *b"c", ValueType::Value),
                BatchItem::new(keyspace1.clone(), *b"d", *b"d", ValueType::Value),
            ]
            .iter(),
            2,
            1,
        )?;
        writer.rotate()?;

        writer.write_batch(
            [
                BatchItem::new(keyspace2.clone(), *b"c", *b"c", ValueType::Value),
                BatchItem::new(keyspace2.clone(), *b"d", *b"d", ValueType::Value),
            ]
            .iter(),
            2,
            1,
        )?;
    }

    assert!(path.try_exists()?);
    assert!(next_path.try_exists()?);
    assert!(next_next_path.try_exists()?);

    let journal_recovered = Journal::recover(dir2, CompressionType::None, 0)?;
    assert_eq!(journal_recovered.active.path()?, next_next_path);
    assert_eq!(journal_recovered.sealed, &[(0, path), (1, next_path)]);

    Ok(())
}

#[test]
#[cfg(feature = "lz4")]
#[expect(clippy::redundant_clone)]
fn journal_recovery_active_lz4() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace0 = db.keyspace("default", Default::default)?;
    let keyspace1 = db.keyspace("default1", Default::default)?;
    let keyspace2 = db.keyspace("default2", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");
    let next_path = dir2.path().join("1.jnl");
    let next_next_path = dir2.path().join("2.jnl");

    {
        let journal = Journal::create_new(&path)?.with_compression(CompressionType::Lz4, 1);
        let mut writer = journal.get_writer()?;

        writer.write_batch(
            [
                BatchItem::new(keyspace0.clone(), *b"a", *b"a", ValueType::Value),
                BatchItem::new(keyspace0.clone(), *b"b", *b"b", ValueType::Value),
            ]
            .iter(),
            2,
            0,
        )?;
        writer.rotate()?;

        writer.write_batch(
            [
                BatchItem::new(keyspace1.clone(), *b"c", *b"c", ValueType::Value),
                BatchItem::new(keyspace1.clone(), *b"d", *b"d", ValueType::Value),
            ]
            .iter(),
            2,
            1,
        )?;
        writer.rotate()?;

        writer.write_batch(
            [
                BatchItem::new(keyspace2.clone(), *b"c", *b"c", ValueType::Value),
                BatchItem::new(keyspace2.clone(), *b"d", *b"d", ValueType::Value),
            ]
            .iter(),
            2,
            1,
        )?;
    }

    assert!(path.try_exists()?);
    assert!(next_path.try_exists()?);
    assert!(next_next_path.try_exists()?);

    let journal_recovered = Journal::recover(dir2, CompressionType::None, 0)?;
    assert_eq!(journal_recovered.active.path()?, next_next_path);
    assert_eq!(journal_recovered.sealed, &[(0, path), (1, next_path)]);

    Ok(())
}

#[test]
#[expect(clippy::redundant_clone)]
fn journal_recovery_no_active() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace = db.keyspace("default", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");
    let next_path = dir2.path().join("1.jnl");

    {
        let journal = Journal::create_new(&path)?;

        {
            let mut writer = journal.get_writer()?;

            writer.write_batch(
                [
                    BatchItem::new(keyspace.clone(), *b"a", *b"a", ValueType::Value),
                    BatchItem::new(keyspace.clone(), *b"b", *b"b", ValueType::Value),
                ]
                .iter(),
                2,
                0,
            )?;
            writer.rotate()?;
        }

        // NOTE: Delete the new, active journal -> old journal will be
        // reused as active on next recovery
        std::fs::remove_file(&next_path)?;
    }

    assert!(path.try_exists()?);
    assert!(!next_path.try_exists()?);

    let journal_recovered = Journal::recover(dir2, CompressionType::None, 0)?;
    assert_eq!(journal_recovered.active.path()?, path);
    assert_eq!(journal_recovered.sealed, &[]);

    Ok(())
}

#[test]
#[expect(clippy::unwrap_used, clippy::redundant_clone)]
fn journal_truncation_corrupt_bytes() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace = db.keyspace("default", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");

    let values = [
        BatchItem::new(keyspace.clone(), *b"abc", *b"def", ValueType::Value),
        BatchItem::new(keyspace.clone(), *b"yxc", *b"ghj", ValueType::Value),
    ];

    {
        let journal = Journal::create_new(&path)?;
        journal
            .get_writer()?
            .write_batch(values.iter(), values.len(), 0)?;
    }

    {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"09pmu35w3a9mp53bao9upw3ab5up")?;
        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    for _ in 0..5 {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"09pmu35w3a9mp53bao9upw3ab5up")?;
        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    Ok(())
}

#[test]
#[expect(clippy::unwrap_used, clippy::redundant_clone)]
fn journal_truncation_repeating_start_marker() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace = db.keyspace("default", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");

    let values = [
        BatchItem::new(keyspace.clone(), *b"abc", *b"def", ValueType::Value),
        BatchItem::new(keyspace.clone(), *b"yxc", *b"ghj", ValueType::Value),
    ];

    {
        let journal = Journal::create_new(&path)?;
        journal
            .get_writer()?
            .write_batch(values.iter(), values.len(), 0)?;
    }

    {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Entry::Start {
            item_count: 2,
            seqno: 64,
        }
        .encode_into(&mut file)?;
        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    for _ in 0..5 {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Entry::Start {
            item_count: 2,
            seqno: 64,
        }
        .encode_into(&mut file)?;
        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    Ok(())
}

#[test]
#[expect(clippy::unwrap_used, clippy::redundant_clone)]
fn journal_truncation_repeating_end_marker() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace = db.keyspace("default", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");

    let values = [
        BatchItem::new(keyspace.clone(), *b"abc", *b"def", ValueType::Value),
        BatchItem::new(keyspace.clone(), *b"yxc", *b"ghj", ValueType::Value),
    ];

    {
        let journal = Journal::create_new(&path)?;
        journal
            .get_writer()?
            .write_batch(values.iter(), values.len(), 0)?;
    }

    {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Entry::End(5432).encode_into(&mut file)?;
        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    for _ in 0..5 {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Entry::End(5432).encode_into(&mut file)?;
        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    Ok(())
}

#[test]
#[expect(clippy::unwrap_used, clippy::redundant_clone)]
fn journal_truncation_repeating_item_marker() -> crate::Result<()> {
    let dir1 = tempdir()?;
    let db = crate::Database::builder(&dir1).open()?;
    let keyspace = db.keyspace("default", Default::default)?;

    let dir2 = tempdir()?;
    let path = dir2.path().join("0.jnl");

    let values = [
        BatchItem::new(keyspace.clone(), *b"abc", *b"def", ValueType::Value),
        BatchItem::new(keyspace.clone(), *b"yxc", *b"ghj", ValueType::Value),
    ];

    {
        let journal = Journal::create_new(&path)?;
        journal
            .get_writer()?
            .write_batch(values.iter(), values.len(), 0)?;
    }

    {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Entry::Item {
            keyspace_id: 0,
            key: (*b"zzz").into(),
            value: (*b"").into(),
            value_type: ValueType::Tombstone,
            compression: lsm_tree::CompressionType::None,
        }
        .encode_into(&mut file)?;

        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    // Mangle journal
    for _ in 0..5 {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Entry::Item {
            keyspace_id: 0,
            key: (*b"zzz").into(),
            value: (*b"").into(),
            value_type: ValueType::Tombstone,
            compression: lsm_tree::CompressionType::None,
        }
        .encode_into(&mut file)?;

        file.sync_all()?;
    }

    for _ in 0..10 {
        let journal = Journal::from_file(&path)?;
        let reader = journal.get_reader()?;
        let collected = reader.flatten().collect::<Vec<_>>();
        assert_eq!(values.to_vec(), collected.first().unwrap().items);
    }

    Ok(())
}

#[test]
fn persist_syncs_without_holding_the_writer() -> crate::Result<()> {
    let dir = tempdir()?;
    let path = dir.path().join("0.jnl");
    let journal = Journal::create_new(&path)?;
    let keyspace_id = 0;
    journal
        .get_writer()?
        .write_raw(keyspace_id, b"before", b"sync", ValueType::Value, 0)?;

    let (syncing_tx, syncing_rx) = std::sync::mpsc::channel();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();

    std::thread::scope(|scope| -> crate::Result<()> {
        // Owned here, so that a failed assertion drops it and the sync resumes instead of hanging.
        let resume_tx = resume_tx;
        let persisting = scope.spawn(|| {
            journal.persist_then_sync(PersistMode::SyncData, move || {
                syncing_tx.send(()).expect("the test waits for the sync");
                resume_rx.recv().expect("the test resumes the sync");
            })
        });

        syncing_rx.recv().expect("persist reaches its sync");

        // The sync has not run yet, so a writer that needed the lock would wait for it.
        assert!(
            journal.writer.try_lock().is_ok(),
            "the journal lock is held while syncing",
        );
        journal
            .get_writer()?
            .write_raw(keyspace_id, b"during", b"sync", ValueType::Value, 1)?;

        resume_tx.send(()).expect("persist waits to resume");
        persisting.join().expect("persist does not panic")
    })?;

    journal.persist(PersistMode::SyncData)?;
    drop(journal);

    let mut reader = JournalReader::new(&path)?;
    let mut entries = 0;
    while let Some(entry) = reader.next() {
        entry?;
        entries += 1;
    }
    // Start, item and end of each of the two writes.
    assert_eq!(6, entries);

    Ok(())
}

fn journal_entries(path: &std::path::Path) -> crate::Result<usize> {
    let mut entries = 0;
    for entry in JournalReader::new(path)? {
        entry?;
        entries += 1;
    }
    Ok(entries)
}

#[test]
fn rotation_continues_in_the_journal_prepared_without_the_lock() -> crate::Result<()> {
    let dir = tempdir()?;
    let path = dir.path().join("0.jnl");
    let next_path = dir.path().join("1.jnl");
    let journal = Journal::create_new(&path)?;
    let keyspace_id = 0;

    assert!(journal.prepare_rotation(0)?.is_none(), "nothing written yet");
    assert!(!next_path.try_exists()?);

    journal
        .get_writer()?
        .write_raw(keyspace_id, b"first", b"journal", ValueType::Value, 0)?;

    // A preparation whose rotation never happened leaves its file behind: preparing again
    // replaces it.
    drop(journal.prepare_rotation(0)?.expect("past the threshold"));
    assert!(next_path.try_exists()?);

    let PreparedRotation { rotating, next } =
        journal.prepare_rotation(0)?.expect("past the threshold");
    assert!(
        journal.writer.try_lock().is_ok(),
        "the journal lock is free once the next journal is prepared",
    );
    {
        let mut writer = journal.get_writer()?;
        let (sealed, active) = writer.rotate_into(Some(next))?;
        assert_eq!(path, sealed);
        assert_eq!(next_path, active);
        writer.write_raw(keyspace_id, b"second", b"journal", ValueType::Value, 1)?;
    }
    drop(rotating);
    journal.persist(PersistMode::SyncAll)?;
    drop(journal);

    // Start, item and end in each.
    assert_eq!(3, journal_entries(&path)?);
    assert_eq!(3, journal_entries(&next_path)?);

    Ok(())
}

/// A stand-in for a sealed journal holding `keyspace`'s writes up to `lsn`, in a manager of its
/// own (the database's manager keeps its real journals).
fn sealed_journal(
    dir: &std::path::Path,
    keyspace: &crate::Keyspace,
    lsn: lsm_tree::SeqNo,
) -> crate::Result<(manager::JournalManager, std::path::PathBuf)> {
    let path = dir.join("sealed.jnl");
    std::fs::write(&path, b"sealed")?;
    let mut journals = manager::JournalManager::new();
    journals.enqueue(manager::Item {
        path: path.clone(),
        size_in_bytes: 6,
        watermarks: vec![manager::EvictionWatermark {
            keyspace: keyspace.clone(),
            lsn,
        }],
    });
    Ok((journals, path))
}

/// Writes a key and removes it, flushes both and compacts them away: the keyspace is left
/// with no table at all. Returns the removal's seqno.
fn flush_and_compact_away(keyspace: &crate::Keyspace) -> crate::Result<lsm_tree::SeqNo> {
    use crate::AbstractTree;

    keyspace.insert("a", "1")?;
    keyspace.remove("a")?;
    let lsn = keyspace
        .tree
        .get_highest_memtable_seqno()
        .expect("just written");
    keyspace.rotate_memtable_and_wait()?;
    assert_eq!(keyspace.tree.get_highest_persisted_seqno(), Some(lsn));
    keyspace.major_compact()?;
    assert_eq!(
        keyspace.tree.table_count(),
        0,
        "the tombstone went with its value"
    );
    assert_eq!(keyspace.tree.get_highest_persisted_seqno(), None);
    Ok(lsn)
}

#[test]
fn journal_is_evicted_when_its_flushed_writes_were_compacted_away() -> crate::Result<()> {
    let dir = tempdir()?;
    let db = crate::Database::builder(dir.path().join("db")).open()?;
    let keyspace = db.keyspace("default", Default::default)?;
    let lsn = flush_and_compact_away(&keyspace)?;

    let (mut journals, path) = sealed_journal(dir.path(), &keyspace, lsn)?;
    journals.maintenance().remove()?;
    assert!(
        !path.try_exists()?,
        "every write in the journal was persisted"
    );
    assert_eq!(journals.sealed_journal_count(), 0);
    assert!(journals
        .get_keyspaces_to_flush_for_oldest_journal_eviction()
        .is_empty());
    Ok(())
}

#[test]
fn journal_with_unflushed_writes_stays_when_older_tables_were_compacted_away() -> crate::Result<()>
{
    use crate::AbstractTree;

    let dir = tempdir()?;
    let db = crate::Database::builder(dir.path().join("db")).open()?;
    let keyspace = db.keyspace("default", Default::default)?;
    flush_and_compact_away(&keyspace)?;
    keyspace.insert("b", "2")?;
    let lsn = keyspace
        .tree
        .get_highest_memtable_seqno()
        .expect("just written");

    let (mut journals, path) = sealed_journal(dir.path(), &keyspace, lsn)?;
    journals.maintenance().remove()?;
    assert!(
        path.try_exists()?,
        "the journal holds the only durable copy of b"
    );
    assert_eq!(
        journals
            .get_keyspaces_to_flush_for_oldest_journal_eviction()
            .len(),
        1
    );

    keyspace.rotate_memtable_and_wait()?;
    journals.maintenance().remove()?;
    assert!(!path.try_exists()?, "b is in a table now");
    Ok(())
}
