// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

//! A file written so that its data reaches the disk while it is being written, not all at its
//! final `fsync` (`bytes_per_sync` in RocksDB's terms).
//!
//! A flush writes a whole memtable (megabytes) into the page cache in a few milliseconds and
//! then syncs it: the disk then has all of it queued at once, and an `fdatasync` of the journal
//! issued meanwhile (a writer's commit) waits behind all of it. Handing the file to the disk a
//! chunk at a time, and waiting for each chunk before writing past it, keeps at most one chunk
//! queued, so such a sync waits for one chunk at most; the final `fsync` has little left to do.

use std::{
    fs::File,
    io::{Seek, SeekFrom, Write},
};

/// How much is written before it is handed to the disk.
pub const BYTES_PER_SYNC: u64 = 1024 * 1024;

/// A [`File`] that writes back every [`BYTES_PER_SYNC`] bytes as they are written.
pub struct PacedFile {
    file: File,
    written: u64,
    handed_over: u64,
}

impl PacedFile {
    #[must_use]
    pub fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            handed_over: 0,
        }
    }

    /// Syncs the file (data and metadata).
    ///
    /// # Errors
    ///
    /// Will return `Err` if an IO error occurs.
    pub fn sync_all(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }

    /// Writes back the bytes written since the last call and waits until they are on their
    /// way. An error is returned, not swallowed: on Linux, an error seen here is no longer
    /// reported by the final `fsync` of the same descriptor.
    fn hand_over(&mut self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;

            let offset = i64::try_from(self.handed_over).unwrap_or(i64::MAX);
            let len = i64::try_from(self.written - self.handed_over).unwrap_or(i64::MAX);

            // SAFETY: a plain syscall on a descriptor this struct owns; no memory is shared.
            #[expect(unsafe_code, reason = "see safety")]
            let result = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    offset,
                    len,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                )
            };
            if result != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }

        self.handed_over = self.written;
        Ok(())
    }
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.handed_over >= BYTES_PER_SYNC {
            self.hand_over()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for PacedFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn hands_over_each_chunk_and_keeps_every_byte() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("paced");
        let mut file = PacedFile::new(File::create(&path)?);

        let chunk = vec![7u8; 300 * 1024];
        for _ in 0..10 {
            file.write_all(&chunk)?;
        }
        // Handed over at 1,200 and 2,400 KiB; the last 600 KiB wait for the final sync.
        assert_eq!(3_000 * 1024, file.written);
        assert_eq!(2_400 * 1024, file.handed_over);
        file.sync_all()?;

        let mut read = Vec::new();
        File::open(&path)?.read_to_end(&mut read)?;
        assert_eq!(3_000 * 1024, read.len());
        assert!(read.iter().all(|byte| *byte == 7));
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_hand_over_is_an_error() -> std::io::Result<()> {
        // A pipe cannot be synced: `sync_file_range` answers ESPIPE.
        let (reader, writer) = std::io::pipe()?;
        let mut file = PacedFile::new(File::from(std::os::fd::OwnedFd::from(writer)));
        let drain = std::thread::spawn(move || std::io::copy(&mut { reader }, &mut std::io::sink()));
        let err = file
            .write_all(&vec![0u8; BYTES_PER_SYNC as usize])
            .expect_err("a pipe cannot be written back");
        assert_eq!(Some(libc::ESPIPE), err.raw_os_error());
        drop(file);
        drain.join().expect("drain does not panic")?;
        Ok(())
    }
}
