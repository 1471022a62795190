//! Returning the disk space of removed entries to the file system.
//!
//! Removing keys (retention, a deleted group, an installed snapshot) only writes tombstones: the
//! bytes stay in fjall's blob files and tables until a compaction merges the tombstones with
//! what they cover, and fjall compacts only when flushes come, so with no further writes the
//! space never came back. The `gregor-reclaim` thread closes that gap: told that something was
//! removed, it waits [`RECLAIM_DELAY`] (a burst of retention rounds or deletion steps becomes one
//! pass), then asks the backend to flush its write buffers when no write has flushed them
//! meanwhile and to compact the log once the removals make up enough of it to pay for the
//! rewrite (see `FjallBackend::reclaim`). A store opened on existing data runs one pass when
//! the backend may hold unreclaimed removals (`Backend::reclaim_pending`), so tombstones written
//! before a crash or a shutdown are reclaimed after the restart.
//!
//! Reclaiming changes only where bytes lie on disk, never what any read returns, so it runs
//! outside the simulation's deterministic order without changing a run's outcome.

use crate::backend::Backend;
use crate::sync::Poison;
use crate::worker::{Shared, WorkerState, Workers};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long after a removal its pass runs (plus the pass itself: a flush of at most a memtable,
/// and a compaction of the log's tables when the removals justify one).
pub(crate) const RECLAIM_DELAY: Duration = Duration::from_secs(2);

/// What the `gregor-reclaim` thread has done since the store opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimCounts {
    /// Passes that ran: each flushed (unless writes had) and weighed what was removed.
    pub passes: u64,
    /// Passes that found enough removed to compact the log's tables.
    pub compactions: u64,
    /// A pass is waiting for its delay or running.
    pub busy: bool,
}

#[derive(Default)]
struct Counters {
    passes: AtomicU64,
    compactions: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Something was removed since the last pass began: the write-buffer mark at the newest
    /// such removal.
    pending: Option<u64>,
    running: bool,
    stopping: bool,
}

impl WorkerState for State {
    type Leftover = ();

    fn stop(&mut self) {
        self.stopping = true;
    }
}

/// The `gregor-reclaim` thread. Dropping it stops the thread: an ongoing pass ends at its next
/// wait for a flush, or after its compaction.
pub(crate) struct Reclaimer {
    workers: Workers<State>,
    backend: Arc<dyn Backend>,
    counters: Arc<Counters>,
}

impl Reclaimer {
    /// Starts the thread, with one pass pending if an earlier run may have left removals
    /// unreclaimed (see `Backend::reclaim_pending`).
    pub fn spawn(backend: Arc<dyn Backend>, poison: Arc<Poison>) -> std::io::Result<Reclaimer> {
        let state = State {
            pending: backend
                .reclaim_pending()
                .then(|| backend.write_buffer_mark()),
            running: false,
            stopping: false,
        };
        let counters = Arc::new(Counters::default());
        let worker_backend = Arc::clone(&backend);
        let worker_counters = Arc::clone(&counters);
        let names = vec!["gregor-reclaim".to_owned()];
        let workers = Workers::spawn(names, state, move |shared| {
            run(shared, &*worker_backend, &poison, &worker_counters);
        })?;
        Ok(Reclaimer {
            workers,
            backend,
            counters,
        })
    }

    /// Entries were removed (their batch is committed): reclaim their space soon.
    pub fn removed(&self) {
        let shared = self.workers.shared();
        let mut state = shared.lock();
        // The newest removal's mark: its tombstones are in the newest buffers, and a pass that
        // flushes those flushes every earlier removal's too.
        let was_pending = state.pending.replace(self.backend.write_buffer_mark());
        if was_pending.is_none() {
            shared.notify_one();
        }
    }

    pub fn counts(&self) -> ReclaimCounts {
        let state = self.workers.shared().lock();
        // Read under the lock: a pass's counts change before it clears `running`.
        ReclaimCounts {
            passes: self.counters.passes.load(Ordering::Relaxed),
            compactions: self.counters.compactions.load(Ordering::Relaxed),
            busy: state.pending.is_some() || state.running,
        }
    }
}

fn run(shared: &Shared<State>, backend: &dyn Backend, poison: &Poison, counters: &Counters) {
    loop {
        let mark = {
            let mut state = shared.lock();
            while state.pending.is_none() && !state.stopping {
                state = shared.wait(state);
            }
            if !state.stopping {
                // Only `Drop` notifies during the delay; a spurious wake-up just shortens it.
                state = shared.wait_timeout(state, RECLAIM_DELAY);
            }
            if state.stopping {
                return;
            }
            state.running = true;
            state.pending.take().expect("a pass is pending")
        };
        if poison.check().is_err() {
            // A poisoned or fenced store writes nothing more, flushes included.
            return;
        }
        pass(shared, backend, poison, counters, mark);
        shared.lock().running = false;
    }
}

/// One pass for the removals up to write-buffer `mark`.
fn pass(
    shared: &Shared<State>,
    backend: &dyn Backend,
    poison: &Poison,
    counters: &Counters,
    mark: u64,
) {
    // Writes that filled the buffers since the removal have flushed its tombstones already;
    // flushing again would only add a small file and an fsync beside the produce path's.
    let flush = backend.write_buffer_mark() == mark;
    // A store fenced or poisoned meanwhile gets no more writes from a pass either.
    let stop = || shared.lock().stopping || poison.check().is_err();
    match backend.reclaim(flush, &stop) {
        Ok(compacted) => {
            counters.passes.fetch_add(1, Ordering::Relaxed);
            if compacted {
                counters.compactions.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Nothing is lost: the space stays taken until a later pass or fjall's own
        // compactions return it.
        Err(error) => tracing::warn!(%error, "reclaiming disk space failed"),
    }
}
