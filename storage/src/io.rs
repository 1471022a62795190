//! Storage threads: calls that can block for long (a fetch read of up to 32 MiB, a step of a
//! group's deletion) run here instead of on the caller's thread, which in the node is the one
//! thread that runs every actor.
//!
//! The caller hands in a job and awaits its answer however it likes (the actors use a oneshot
//! channel the job sends on). Under `SyncMode::Thread` the jobs go to the `gregor-io` threads;
//! under `Inline` and `External` (the simulation) a job runs on the calling thread before
//! [`Store::run_blocking`] returns, so a simulated run keeps one thread and one order.

use crate::worker::{Shared, WorkerState, Workers};
use crate::Store;
use std::collections::VecDeque;

/// A blocking storage call and what to do with its result.
pub type IoJob = Box<dyn FnOnce() + Send>;

/// Storage threads: two, one per core of the machines Gregor is measured on; a read waiting on
/// the disk then never holds up the other.
const IO_THREADS: usize = 2;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<IoJob>,
    stopping: bool,
}

impl WorkerState for Queue {
    /// Jobs still queued: their callers see their answer channel closed.
    type Leftover = VecDeque<IoJob>;

    fn stop(&mut self) -> VecDeque<IoJob> {
        self.stopping = true;
        std::mem::take(&mut self.jobs)
    }
}

/// The `gregor-io` threads. Dropping the pool drops the jobs still queued and joins the threads
/// after their current job.
pub(crate) struct IoPool {
    workers: Workers<Queue>,
}

impl IoPool {
    pub fn spawn() -> std::io::Result<IoPool> {
        let names = (0..IO_THREADS).map(|n| format!("gregor-io-{n}")).collect();
        let workers = Workers::spawn(names, Queue::default(), run)?;
        Ok(IoPool { workers })
    }

    fn submit(&self, job: IoJob) {
        let shared = self.workers.shared();
        shared.lock().jobs.push_back(job);
        shared.notify_one();
    }
}

fn run(shared: &Shared<Queue>) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if queue.stopping {
                    return;
                }
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                queue = shared.wait(queue);
            }
        };
        job();
    }
}

impl Store {
    /// Runs `job` on a storage thread (`SyncMode::Thread`) or on this thread before returning
    /// (`Inline`, `External`: the simulation's one thread). Use it for calls that can block for
    /// long, so an async caller's thread keeps serving others meanwhile.
    pub fn run_blocking(&self, job: IoJob) {
        // The pool exists under `SyncMode::Thread` only.
        match &self.inner.io {
            Some(pool) => pool.submit(job),
            None => job(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{FlushPolicy, ModelDisk, Store, StoreOptions, SyncMode};
    use std::sync::mpsc;

    fn store(sync_mode: SyncMode) -> Store {
        let options = StoreOptions {
            flush: FlushPolicy::Always,
            sync_mode,
            cache_bytes: 1 << 20,
        };
        Store::open_model(&ModelDisk::new(), options).expect("open")
    }

    fn thread_of_a_job(store: &Store) -> (Option<String>, bool) {
        let (tx, rx) = mpsc::channel();
        store.run_blocking(Box::new(move || {
            let name = std::thread::current().name().map(str::to_owned);
            tx.send(name).expect("send");
        }));
        // Inline jobs have answered before `run_blocking` returned.
        let inline = rx.try_recv();
        match inline {
            Ok(name) => (name, true),
            Err(_) => (rx.recv().expect("the job ran"), false),
        }
    }

    #[test]
    fn jobs_run_on_storage_threads_in_production_and_inline_in_the_simulation() {
        let (name, _) = thread_of_a_job(&store(SyncMode::Thread));
        assert!(
            name.as_deref().is_some_and(|n| n.starts_with("gregor-io-")),
            "{name:?}"
        );
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(thread_of_a_job(&store(SyncMode::Inline)), (here, true));
    }

    #[test]
    fn a_job_holding_the_last_store_handle_closes_it_without_hanging() {
        let store = store(SyncMode::Thread);
        let (done_tx, done_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let last = store.clone();
        store.run_blocking(Box::new(move || {
            // Waits until the test's own handle is gone, so this one is the last.
            go_rx.recv().expect("go");
            drop(last);
            done_tx.send(()).expect("send");
        }));
        drop(store);
        go_tx.send(()).expect("send");
        done_rx
            .recv()
            .expect("the job dropped the store on its own thread and went on");
    }
}
