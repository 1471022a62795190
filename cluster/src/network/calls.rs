//! Calls that outlive async-raft's patience. async-raft cuts every AppendEntries (and snapshot
//! chunk) off at its heartbeat interval and then sends the very same request again. Here a call
//! runs in a task of its own, under a timeout of its own; the caller only waits for it, and a
//! retry with the same key joins the call already running instead of starting another. A result
//! that arrives after its caller gave up is kept for the retry.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// The outcome a waiter gets: `None` if the call was replaced by a different one before it
/// finished.
pub(crate) type Finished<T> = Option<T>;

struct Pending<K, T> {
    key: K,
    id: u64,
    done: watch::Receiver<Option<T>>,
    task: AbortHandle,
}

/// At most one call per target; a new key replaces (and aborts) the old call.
pub(crate) struct Calls<K, T> {
    pending: Mutex<BTreeMap<u64, Pending<K, T>>>,
    next_id: Mutex<u64>,
}

impl<K: PartialEq + Copy + Send + 'static, T: Clone + Send + Sync + 'static> Calls<K, T> {
    pub(crate) fn new() -> Self {
        Calls {
            pending: Mutex::new(BTreeMap::new()),
            next_id: Mutex::new(0),
        }
    }

    /// Waits for the call to `target` with `key`, starting it with `start` unless one is
    /// already running or finished unclaimed.
    pub(crate) async fn call<F>(
        &self,
        target: u64,
        key: K,
        start: impl FnOnce() -> F,
    ) -> Finished<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (id, mut done) = self.join_or_start(target, key, start);
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|value| value.clone());
        self.claim(target, id);
        outcome
    }

    fn join_or_start<F>(
        &self,
        target: u64,
        key: K,
        start: impl FnOnce() -> F,
    ) -> (u64, watch::Receiver<Option<T>>)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut pending = self.lock();
        if let Some(call) = pending.get(&target) {
            if call.key == key {
                return (call.id, call.done.clone());
            }
            call.task.abort();
        }
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let (tx, done) = watch::channel(None);
        let future = start();
        let task = tokio::spawn(async move {
            let value = future.await;
            tx.send_replace(Some(value));
        })
        .abort_handle();
        pending.insert(
            target,
            Pending {
                key,
                id,
                done: done.clone(),
                task,
            },
        );
        (id, done)
    }

    /// The caller got its outcome: the call is over unless it was already replaced.
    fn claim(&self, target: u64, id: u64) {
        let mut pending = self.lock();
        if pending.get(&target).is_some_and(|call| call.id == id) {
            pending.remove(&target);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Pending<K, T>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K, T> Drop for Calls<K, T> {
    fn drop(&mut self) {
        let pending = self.pending.get_mut().unwrap_or_else(|p| p.into_inner());
        for call in pending.values() {
            call.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_retry_joins_the_call_its_caller_abandoned() {
        let calls: Calls<u32, u32> = Calls::new();
        let started = Arc::new(AtomicU32::new(0));
        let slow = |started: Arc<AtomicU32>| {
            move || async move {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                7
            }
        };
        let first = tokio::time::timeout(
            Duration::from_millis(100),
            calls.call(2, 1, slow(started.clone())),
        )
        .await;
        assert!(first.is_err(), "the caller gave up");
        let second = calls.call(2, 1, slow(started.clone())).await;
        assert_eq!(second, Some(7));
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "the retry did not start a call"
        );
        // Claimed: the next call with that key starts afresh.
        assert_eq!(calls.call(2, 1, slow(started.clone())).await, Some(7));
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_different_request_replaces_the_running_call() {
        let calls: Arc<Calls<u32, u32>> = Arc::new(Calls::new());
        let waiter = {
            let calls = calls.clone();
            tokio::spawn(async move {
                calls
                    .call(2, 1, || async {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        1
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(calls.call(2, 2, || async { 2 }).await, Some(2));
        assert_eq!(
            waiter.await.unwrap(),
            None,
            "the replaced call reports nothing"
        );
    }
}
