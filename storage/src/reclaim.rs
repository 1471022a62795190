//! Returning the disk space of removed entries to the file system.
//!
//! Removing keys (retention, a deleted group, an installed snapshot) only writes tombstones: the
//! bytes stay in fjall's blob files until a compaction drops every pointer into a blob file, and
//! fjall compacts only when flushes come, so with no further writes the space never came back.
//! The `gregor-reclaim` thread closes that gap: told that something was removed, it waits
//! [`RECLAIM_DELAY`] (a burst of retention rounds or deletion steps becomes one pass, and
//! steady retention costs at most one pass per delay), then asks the backend to flush its write
//! buffers when no write has flushed them meanwhile and to compact what the tombstones cover
//! (see `FjallBackend::reclaim`). A store opened on existing data runs one pass too, so
//! tombstones written before a crash or a shutdown are reclaimed after the restart.
//!
//! Reclaiming changes only where bytes lie on disk, never what any read returns, so it runs
//! outside the simulation's deterministic order without changing a run's outcome.

use crate::backend::Backend;
use crate::sync::Poison;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

/// How long after a removal its space is reclaimed (plus the pass itself: a flush of at most a
/// memtable and a compaction of the log's tables, which hold keys and blob pointers only).
pub(crate) const RECLAIM_DELAY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    /// Something was removed since the last pass began: the write-buffer mark at the newest
    /// such removal.
    pending: Option<u64>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `gregor-reclaim` thread. Dropping it stops the thread: an ongoing pass ends at its next
/// wait for a flush, or after its compaction.
pub(crate) struct Reclaimer {
    shared: Arc<Shared>,
    backend: Arc<dyn Backend>,
    handle: Option<JoinHandle<()>>,
    thread: ThreadId,
}

impl Reclaimer {
    /// Starts the thread with one pass pending, for what an earlier run removed.
    pub fn spawn(backend: Arc<dyn Backend>, poison: Arc<Poison>) -> std::io::Result<Reclaimer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Some(backend.write_buffer_mark()),
                stopping: false,
            }),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let worker_backend = Arc::clone(&backend);
        let handle = std::thread::Builder::new()
            .name("gregor-reclaim".into())
            .spawn(move || run(&worker, &*worker_backend, &poison))?;
        let thread = handle.thread().id();
        Ok(Reclaimer {
            shared,
            backend,
            handle: Some(handle),
            thread,
        })
    }

    /// Entries were removed (their batch is committed): reclaim their space soon.
    pub fn removed(&self) {
        let mut state = self.shared.lock();
        // The newest removal's mark: its tombstones are in the newest buffers, and a pass that
        // flushes those flushes every earlier removal's too.
        let was_pending = state.pending.replace(self.backend.write_buffer_mark());
        if was_pending.is_none() {
            self.shared.wake.notify_one();
        }
    }
}

fn run(shared: &Shared, backend: &dyn Backend, poison: &Poison) {
    loop {
        let mark = {
            let mut state = shared.lock();
            while state.pending.is_none() && !state.stopping {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if !state.stopping {
                // Only `Drop` notifies during the delay; a spurious wake-up just shortens it.
                state = shared
                    .wake
                    .wait_timeout(state, RECLAIM_DELAY)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            if state.stopping {
                return;
            }
            state.pending.take().expect("a pass is pending")
        };
        if poison.check().is_err() {
            // A poisoned or fenced store writes nothing more, flushes included.
            return;
        }
        // Writes that filled the buffers since the removal have flushed its tombstones already;
        // flushing again would only add a small file and an fsync beside the produce path's.
        let flush = backend.write_buffer_mark() == mark;
        // A store fenced or poisoned meanwhile gets no more writes from a pass either.
        let stop = || shared.lock().stopping || poison.check().is_err();
        if let Err(error) = backend.reclaim(flush, &stop) {
            // Nothing is lost: the space stays taken until a later pass or fjall's own
            // compactions return it.
            tracing::warn!(%error, "reclaiming disk space failed");
        }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        // The thread holds a backend handle, so the last `Store` handle is never dropped there;
        // the check only guards against joining ourselves.
        if std::thread::current().id() != self.thread {
            if let Some(handle) = self.handle.take() {
                if handle.join().is_err() {
                    tracing::error!("gregor-reclaim thread panicked");
                }
            }
        }
    }
}
