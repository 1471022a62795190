//! Group commit: one fsync for every write made before it, shared by every waiting caller.
//!
//! fjall writes each batch to the journal with `write(2)` only; a request for durability is a
//! callback that runs once a later `persist` has covered it. The `gregor-sync` thread takes *all*
//! callbacks that queued up while the previous fsync ran, so the number of fsyncs follows the
//! disk's speed, not the request rate. The queue therefore holds at most the requests that
//! arrive during one fsync, each of which stands for a write its caller already made.

use crate::backend::{Backend, Durability};
use crate::poisoned::{PoisonSignal, StorePoisoned};
use crate::worker::{Shared, WorkerState, Workers};
use crate::StorageError;
use std::sync::{Arc, OnceLock};

/// Called once the writes before the request are durable, or with the reason they never will be.
pub type SyncCallback = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// Set once, on the first failed write or fsync, and never cleared: after a failed fsync the
/// kernel may have dropped dirty pages, so retrying could report durability that is not there.
#[derive(Default)]
pub(crate) struct Poison {
    cause: OnceLock<String>,
    signal: PoisonSignal,
}

impl std::fmt::Debug for Poison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poison")
            .field("cause", &self.cause.get())
            .finish_non_exhaustive()
    }
}

impl Poison {
    pub fn check(&self) -> Result<(), StorageError> {
        match self.cause.get() {
            None => Ok(()),
            Some(cause) => Err(StorageError::Poisoned(cause.clone())),
        }
    }

    /// Records the first fatal failure and returns the error to hand the caller.
    pub fn poison(&self, cause: &dyn std::fmt::Display) -> StorageError {
        let cause = self.cause.get_or_init(|| cause.to_string());
        tracing::error!(%cause, "storage poisoned; the node must restart");
        self.signal.fire(cause);
        StorageError::Poisoned(cause.clone())
    }

    pub fn watch(&self) -> StorePoisoned {
        self.signal.watch()
    }
}

/// Persists the journal per `mode`, poisoning the store if that fails.
pub(crate) fn persist(
    backend: &dyn Backend,
    mode: Durability,
    poison: &Poison,
) -> Result<(), StorageError> {
    poison.check()?;
    backend
        .persist(mode)
        .map_err(|e| poison.poison(&format_args!("journal persist failed: {e}")))
}

/// The persist behind one `request_sync` under `SyncMode::External`: running it makes every
/// write committed so far durable (or poisons the store) and calls the requester back.
pub struct SyncJob {
    backend: Arc<dyn Backend>,
    poison: Arc<Poison>,
    mode: Durability,
    done: SyncCallback,
}

impl SyncJob {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        poison: Arc<Poison>,
        mode: Durability,
        done: SyncCallback,
    ) -> SyncJob {
        SyncJob {
            backend,
            poison,
            mode,
            done,
        }
    }

    /// Persists and calls back. Dropping the job instead never calls back (the requester sees
    /// its callback dropped), as when a node dies with an fsync in flight.
    pub fn run(self) {
        let outcome = persist(&*self.backend, self.mode, &self.poison);
        (self.done)(outcome);
    }
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    pending: Vec<SyncCallback>,
    stopping: bool,
}

impl WorkerState for Queue {
    /// Nothing: the thread runs a last fsync for the callbacks still queued.
    type Leftover = ();

    fn stop(&mut self) {
        self.stopping = true;
    }
}

/// The `gregor-sync` thread. Dropping it runs a last fsync for whatever is queued, then joins
/// (unless a callback dropped the last `Store` handle on the thread itself, which then returns
/// after that fsync).
pub(crate) struct SyncThread {
    workers: Workers<Queue>,
}

impl SyncThread {
    pub fn spawn(
        backend: Arc<dyn Backend>,
        mode: Durability,
        poison: Arc<Poison>,
    ) -> std::io::Result<Self> {
        let names = vec!["gregor-sync".to_owned()];
        let workers = Workers::spawn(names, Queue::default(), move |shared| {
            run(shared, &*backend, mode, &poison);
        })?;
        Ok(SyncThread { workers })
    }

    pub fn request(&self, done: SyncCallback) {
        let shared = self.workers.shared();
        shared.lock().pending.push(done);
        shared.notify_one();
    }
}

fn run(shared: &Shared<Queue>, backend: &dyn Backend, mode: Durability, poison: &Poison) {
    loop {
        let (batch, stopping) = {
            let mut queue = shared.lock();
            while queue.pending.is_empty() && !queue.stopping {
                queue = shared.wait(queue);
            }
            (std::mem::take(&mut queue.pending), queue.stopping)
        };
        if !batch.is_empty() {
            let outcome = persist(backend, mode, poison);
            for done in batch {
                done(match &outcome {
                    Ok(()) => Ok(()),
                    Err(StorageError::Poisoned(cause)) => {
                        Err(StorageError::Poisoned(cause.clone()))
                    }
                    Err(other) => Err(StorageError::Poisoned(other.to_string())),
                });
            }
        }
        if stopping {
            return;
        }
    }
}
