//! The storage's background threads (`gregor-io`, `gregor-sync`, `gregor-reclaim`): each waits
//! on a state behind a mutex for work, and the handle that owns the threads stops and joins
//! them when it is dropped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

/// What the workers wait on.
pub(crate) trait WorkerState: Send + 'static {
    /// What stopping takes out of the state, dropped after the lock is released (queued jobs,
    /// which may hold the last handle of the store that owns the workers).
    type Leftover;

    /// Tells the workers to return once they see it.
    fn stop(&mut self) -> Self::Leftover;
}

/// The state and the condition variable that announces changes to it.
pub(crate) struct Shared<S> {
    state: Mutex<S>,
    wake: Condvar,
}

impl<S> Shared<S> {
    /// Every state here is kept consistent between statements (work runs unlocked), so one a
    /// panicking thread left behind is still good to use.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn wait<'a>(&self, guard: MutexGuard<'a, S>) -> MutexGuard<'a, S> {
        self.wake
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a notification or `timeout`, whichever comes first (or a spurious wake-up).
    pub fn wait_timeout<'a>(
        &self,
        guard: MutexGuard<'a, S>,
        timeout: Duration,
    ) -> MutexGuard<'a, S> {
        self.wake
            .wait_timeout(guard, timeout)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
    }

    pub fn notify_one(&self) {
        self.wake.notify_one();
    }
}

/// Threads running one body over a shared state. Dropping this stops them (see
/// [`WorkerState::stop`]) and joins them after their current work.
pub(crate) struct Workers<S: WorkerState> {
    shared: Arc<Shared<S>>,
    threads: Vec<(ThreadId, JoinHandle<()>)>,
}

impl<S: WorkerState> Workers<S> {
    /// Starts one thread per name, each running `body` until it returns.
    ///
    /// # Errors
    /// The OS's error if a thread cannot start; those already started are stopped and joined.
    pub fn spawn<F>(names: Vec<String>, state: S, body: F) -> std::io::Result<Workers<S>>
    where
        F: Fn(&Shared<S>) + Send + Sync + 'static,
    {
        let mut workers = Workers {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                wake: Condvar::new(),
            }),
            threads: Vec::with_capacity(names.len()),
        };
        let body = Arc::new(body);
        for name in names {
            let shared = Arc::clone(&workers.shared);
            let body = Arc::clone(&body);
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || body(&shared))?;
            workers.threads.push((handle.thread().id(), handle));
        }
        Ok(workers)
    }

    pub fn shared(&self) -> &Shared<S> {
        &self.shared
    }
}

impl<S: WorkerState> Drop for Workers<S> {
    fn drop(&mut self) {
        let leftover = self.shared.lock().stop();
        self.shared.wake.notify_all();
        drop(leftover);
        // The workers' work may hold the last handle of the store that owns them, and so drop
        // this on a worker thread, which must not join itself: it returns once it sees the stop.
        let me = std::thread::current().id();
        for (id, handle) in self.threads.drain(..) {
            if id != me && handle.join().is_err() {
                tracing::error!("a storage worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter {
        woken: u32,
        stopping: bool,
    }

    impl WorkerState for Counter {
        type Leftover = ();
        fn stop(&mut self) {
            self.stopping = true;
        }
    }

    fn count_until_stopped(shared: &Shared<Counter>) {
        let mut state = shared.lock();
        loop {
            if state.stopping {
                return;
            }
            state = shared.wait(state);
            state.woken += 1;
        }
    }

    #[test]
    fn dropping_the_workers_stops_and_joins_every_thread() {
        let names = vec!["test-worker-0".to_owned(), "test-worker-1".to_owned()];
        let workers =
            Workers::spawn(names, Counter::default(), count_until_stopped).expect("spawn");
        let shared = Arc::clone(&workers.shared);
        drop(workers);
        // Joined: no thread holds the state any more.
        assert_eq!(Arc::strong_count(&shared), 1);
        assert!(shared.lock().stopping);
    }
}
