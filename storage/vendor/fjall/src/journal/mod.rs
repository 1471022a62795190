// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

pub mod batch_reader;
pub mod entry;
pub mod error;
pub mod manager;
pub mod reader;
mod recovery;
pub mod writer;

#[cfg(test)]
mod test;

use self::writer::PersistMode;
use crate::file::fsync_directory;
use batch_reader::JournalBatchReader;
use lsm_tree::CompressionType;
use reader::JournalReader;
use recovery::{recover_journals, RecoveryResult};
use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};
use writer::Writer;

pub struct Journal {
    writer: Mutex<Writer>,

    /// Held from preparing the next journal until it replaces the current one, so that two
    /// workers never prepare the same file.
    rotation: Mutex<()>,
}

/// The next journal, ready before the journal lock is taken to rotate (see
/// [`Journal::prepare_rotation`]).
pub struct PreparedRotation<'a> {
    /// Keep it until the rotation is done.
    pub(crate) rotating: MutexGuard<'a, ()>,
    pub(crate) next: Writer,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            self.path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| String::from("<failed to read path>"))
        )
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        log::trace!("Dropping journal, trying to flush");

        match self.persist(PersistMode::SyncAll) {
            Ok(()) => {
                log::trace!("Flushed journal successfully");
            }
            Err(e) => {
                log::error!("Flush error on drop: {e:?}");
            }
        }

        #[cfg(feature = "__internal_whitebox")]
        crate::drop::decrement_drop_counter();
    }
}

impl Journal {
    pub fn with_compression(self, comp: CompressionType, threshold: usize) -> Self {
        {
            let mut writer = self.writer.lock().expect("lock is poisoned");
            writer.set_compression(comp, threshold);
        }
        self
    }

    fn from_file<P: AsRef<Path>>(path: P) -> crate::Result<Self> {
        Ok(Self {
            writer: Mutex::new(Writer::from_file(path)?),
            rotation: Mutex::new(()),
        })
    }

    pub fn create_new<P: AsRef<Path>>(path: P) -> crate::Result<Self> {
        let path = path.as_ref();
        log::trace!("Creating new journal at {}", path.display());

        let folder = path.parent().expect("parent should exist");

        std::fs::create_dir_all(folder).inspect_err(|e| {
            log::error!(
                "Failed to create journal folder at {}: {e:?}",
                path.display(),
            );
        })?;

        let writer = Writer::create_new(path)?;

        // IMPORTANT: fsync folder on Unix
        fsync_directory(folder)?;

        #[cfg(feature = "__internal_whitebox")]
        crate::drop::increment_drop_counter();

        Ok(Self {
            writer: Mutex::new(writer),
            rotation: Mutex::new(()),
        })
    }

    /// Hands out write access to the journal.
    ///
    /// # Errors
    ///
    /// Returns an error if the journal writer is poisoned.
    pub(crate) fn get_writer(&self) -> crate::Result<MutexGuard<'_, Writer>> {
        self.writer.lock().map_err(|_| crate::Error::Poisoned)
    }

    pub fn path(&self) -> crate::Result<PathBuf> {
        Ok(self.get_writer()?.path.clone())
    }

    pub fn get_reader(&self) -> crate::Result<JournalBatchReader> {
        let raw_reader = JournalReader::new(self.path()?)?;
        Ok(JournalBatchReader::new(raw_reader))
    }

    /// Creates the journal that will follow the current one once it holds `threshold` bytes,
    /// and syncs the current one, without holding the journal lock: creating, preallocating and
    /// syncing a file and its directory, then syncing the old journal, took four fsyncs, which
    /// writers used to wait for at every rotation. The
    /// file is empty until the rotation switches to it; a crash before that leaves the same
    /// state as a crash just after a rotation.
    pub(crate) fn prepare_rotation(
        &self,
        threshold: u64,
    ) -> crate::Result<Option<PreparedRotation<'_>>> {
        let rotating = self.rotation.lock().map_err(|_| crate::Error::Poisoned)?;

        let next_path = {
            let mut writer = self.get_writer()?;
            if writer.pos()? <= threshold {
                return Ok(None);
            }
            writer.next_path()?
        };

        // Only a preparation whose rotation did not happen leaves this file (after a crash,
        // recovery makes it the active journal): it was never written.
        if next_path.try_exists()? {
            std::fs::remove_file(&next_path)?;
        }
        let next = Writer::create_new(&next_path)?;
        fsync_directory(next_path.parent().expect("journal should have a folder"))?;

        // The rotation syncs the old journal under the lock: synced here first, that sync has
        // only what is written from now on left to do.
        self.persist(PersistMode::SyncData)?;

        Ok(Some(PreparedRotation { rotating, next }))
    }

    /// Persists the journal.
    ///
    /// Only the buffer flush holds the journal lock: the sync itself runs on a shared handle of
    /// the file with the lock released, so writers keep appending while the disk syncs (an
    /// `fdatasync` can take tens of milliseconds while a memtable flush writes its files, and
    /// every writer used to wait that long). The sync covers everything flushed before it, which
    /// is all this call must make durable. A journal rotated meanwhile was synced by `rotate`,
    /// under the lock, before the new journal took any write.
    pub fn persist(&self, mode: PersistMode) -> crate::Result<()> {
        self.persist_then_sync(mode, || {})
    }

    /// [`Journal::persist`], calling `before_sync` once the lock is released (a test's probe).
    pub(crate) fn persist_then_sync(
        &self,
        mode: PersistMode,
        before_sync: impl FnOnce(),
    ) -> crate::Result<()> {
        let (file, path) = {
            let mut journal_writer = self.get_writer()?;
            let file = journal_writer.flush_for_sync()?;
            (file, journal_writer.path.clone())
        };

        before_sync();

        let synced = match mode {
            PersistMode::Buffer => return Ok(()),
            PersistMode::SyncData => file.sync_data(),
            PersistMode::SyncAll => file.sync_all(),
        };

        synced.map_err(|e| {
            log::error!(
                "Failed to sync journal file at {} with mode={mode:?}: {e:?}",
                path.display(),
            );
            e.into()
        })
    }

    pub fn recover<P: AsRef<Path>>(
        path: P,
        compression: CompressionType,
        compression_threshold: usize,
    ) -> crate::Result<RecoveryResult> {
        recover_journals(path, compression, compression_threshold)
    }
}
