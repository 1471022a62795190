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
//!
//! That bounds what one sync waits for, not how often: chunks written back to back keep the
//! disk busy for the whole flush, and on a disk shared with other writers (three replicas on
//! one disk, each flushing the same writes at about the same time) every journal sync of the
//! window waited for a chunk. A [`Pace`] spaces the chunks out to a rate, and lifts itself
//! whenever the writer falls behind, so it costs no throughput: a flush only ever goes slower
//! while it has time to spare.

use std::{
    fs::File,
    io::{Seek, SeekFrom, Write},
    sync::Arc,
    time::{Duration, Instant},
};

/// How much is written before it is handed to the disk: a journal sync issued meanwhile waits
/// for at most this much (about half a millisecond on a disk writing 500 MB/s).
pub const BYTES_PER_SYNC: u64 = 256 * 1024;

/// The most a paced writer sleeps at once, so a wrong clock or rate cannot park a flush.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// How fast a [`PacedFile`] may be written, unless `behind` says the writer is falling behind
/// (for a flush: another memtable was sealed meanwhile), when it is written at full speed.
#[derive(Clone)]
pub struct Pace {
    bytes_per_sec: u64,
    behind: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl Pace {
    /// `bytes_per_sec` of zero is treated as one byte per second.
    pub fn new(bytes_per_sec: u64, behind: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            behind,
        }
    }

    /// How long to wait before writing past `written` bytes, `elapsed` after the first.
    fn pause(&self, written: u64, elapsed: Duration) -> Duration {
        if (self.behind)() {
            return Duration::ZERO;
        }
        #[expect(clippy::cast_precision_loss, reason = "a rate, not an exact count")]
        let due = Duration::from_secs_f64(written as f64 / self.bytes_per_sec as f64);
        due.saturating_sub(elapsed).min(MAX_PAUSE)
    }
}

/// A [`File`] that writes back every [`BYTES_PER_SYNC`] bytes as they are written, and, given a
/// [`Pace`], no faster than it allows.
pub struct PacedFile {
    file: File,
    written: u64,
    handed_over: u64,
    pace: Option<Pace>,
    started: Instant,
}

impl PacedFile {
    #[must_use]
    pub fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            handed_over: 0,
            pace: None,
            started: Instant::now(),
        }
    }

    /// Paces the writes from now on (counted from the file's creation).
    pub fn set_pace(&mut self, pace: Option<Pace>) {
        self.pace = pace;
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
        if let Some(pace) = &self.pace {
            let pause = pace.pause(self.written, self.started.elapsed());
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
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

        let chunk = vec![7u8; 100 * 1024];
        for _ in 0..10 {
            file.write_all(&chunk)?;
        }
        // Handed over at 300, 600 and 900 KiB; the last 100 KiB wait for the final sync.
        assert_eq!(1_000 * 1024, file.written);
        assert_eq!(900 * 1024, file.handed_over);
        file.sync_all()?;

        let mut read = Vec::new();
        File::open(&path)?.read_to_end(&mut read)?;
        assert_eq!(1_000 * 1024, read.len());
        assert!(read.iter().all(|byte| *byte == 7));
        Ok(())
    }

    #[test]
    fn a_pace_waits_for_the_rate_unless_the_writer_is_behind() {
        let behind = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = behind.clone();
        let pace = Pace::new(
            1024 * 1024,
            Arc::new(move || probe.load(std::sync::atomic::Ordering::Relaxed)),
        );
        // 64 KiB at 1 MiB/s are due 62.5 ms after the start.
        assert_eq!(
            Duration::from_micros(62_500 - 20_000),
            pace.pause(64 * 1024, Duration::from_millis(20))
        );
        assert_eq!(Duration::ZERO, pace.pause(64 * 1024, Duration::from_millis(80)));
        assert_eq!(MAX_PAUSE, pace.pause(10 * 1024 * 1024, Duration::ZERO));
        behind.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(Duration::ZERO, pace.pause(64 * 1024, Duration::ZERO));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_paced_file_is_written_no_faster_than_its_pace() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let chunk = vec![1u8; BYTES_PER_SYNC as usize];
        // The pace counts from the file's creation.
        let start = Instant::now();
        let mut file = PacedFile::new(File::create(dir.path().join("paced"))?);
        // 4 MiB/s: each 256 KiB chunk is due 62.5 ms after the one before.
        file.set_pace(Some(Pace::new(4 * 1024 * 1024, Arc::new(|| false))));
        for _ in 0..4 {
            file.write_all(&chunk)?;
        }
        assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pace_is_lifted_while_the_writer_is_behind() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut file = PacedFile::new(File::create(dir.path().join("paced"))?);
        // At 1 KiB/s each of the 16 chunks would wait the longest pause (1.6 s in all); behind,
        // none waits.
        file.set_pace(Some(Pace::new(1024, Arc::new(|| true))));
        let chunk = vec![1u8; BYTES_PER_SYNC as usize];
        let start = Instant::now();
        for _ in 0..16 {
            file.write_all(&chunk)?;
        }
        assert!(start.elapsed() < 12 * MAX_PAUSE, "{:?}", start.elapsed());
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
