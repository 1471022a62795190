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

/// Called once no job is queued or running (see [`Store::when_storage_threads_idle`]).
pub type IdleCallback = Box<dyn FnOnce() + Send>;

/// Storage threads: two, one per core of the machines Gregor is measured on; a read waiting on
/// the disk then never holds up the other.
const IO_THREADS: usize = 2;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<IoJob>,
    running: usize,
    idle_waiters: Vec<IdleCallback>,
    stopping: bool,
}

impl Queue {
    fn idle(&self) -> bool {
        self.jobs.is_empty() && self.running == 0
    }
}

impl WorkerState for Queue {
    /// Jobs still queued and idle waiters: dropped uncalled, so their callers see their answer
    /// channels closed (for a waiter that means the same as idle: the threads are stopping).
    type Leftover = (VecDeque<IoJob>, Vec<IdleCallback>);

    fn stop(&mut self) -> Self::Leftover {
        self.stopping = true;
        (
            std::mem::take(&mut self.jobs),
            std::mem::take(&mut self.idle_waiters),
        )
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

    fn when_idle(&self, callback: IdleCallback) {
        let mut queue = self.workers.shared().lock();
        if queue.idle() || queue.stopping {
            drop(queue);
            callback();
        } else {
            queue.idle_waiters.push(callback);
        }
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
                    queue.running += 1;
                    break job;
                }
                queue = shared.wait(queue);
            }
        };
        // Consumed by the call: whatever the job captured (a store handle) is gone on return.
        job();
        let waiters = {
            let mut queue = shared.lock();
            queue.running -= 1;
            if queue.idle() {
                std::mem::take(&mut queue.idle_waiters)
            } else {
                Vec::new()
            }
        };
        for waiter in waiters {
            waiter();
        }
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

    /// Calls `callback` once no job handed to [`Store::run_blocking`] is queued or running (at
    /// once if none is), so none holds a handle of this store any more. A node shutting down
    /// waits for this before it reports the store closed: a job still running would keep the
    /// database open, and a restart in the same process would find it locked.
    pub fn when_storage_threads_idle(&self, callback: IdleCallback) {
        match &self.inner.io {
            Some(pool) => pool.when_idle(callback),
            None => callback(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{ModelDisk, Store, StoreOptions, SyncMode};
    use std::sync::mpsc;

    fn store(sync_mode: SyncMode) -> Store {
        Store::open_model(&ModelDisk::new(), StoreOptions::for_tests(sync_mode)).expect("open")
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

    #[test]
    fn the_store_reopens_once_the_storage_threads_are_idle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = || StoreOptions::for_tests(SyncMode::Thread);
        let store = Store::open(dir.path(), options()).expect("open");
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let held = store.clone();
        store.run_blocking(Box::new(move || {
            go_rx.recv().expect("go");
            drop(held);
        }));
        let (idle_tx, idle_rx) = mpsc::channel();
        store.when_storage_threads_idle(Box::new(move || idle_tx.send(()).expect("send")));
        assert!(idle_rx.try_recv().is_err(), "a job is still running");
        go_tx.send(()).expect("send");
        idle_rx.recv().expect("idle once the job returned");
        // No job holds a handle now: dropping ours closes the database.
        drop(store);
        let reopened = Store::open(dir.path(), options()).expect("reopen once idle");
        drop(reopened);
    }
}
