//! Telling the node the moment its store poisons itself. A failed fsync or journal write leaves
//! the store refusing every call for good; a node that went on running would answer its peers
//! and clients with errors from a store it can no longer trust, so it waits on this and stops.
//! The signal fires on the thread that set the poison (the `gregor-sync` thread, a storage job,
//! an actor), so it wakes futures rather than calling back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct State {
    cause: Option<String>,
    /// Every handle of the store is gone: it can no longer be poisoned.
    ended: bool,
    wakers: Vec<Waker>,
}

#[derive(Default)]
struct Shared(Mutex<State>);

impl Shared {
    /// The state is two flags and a list: any value a panicking holder left is consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake_all(&self, change: impl FnOnce(&mut State)) {
        let wakers = {
            let mut state = self.lock();
            change(&mut state);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Owned by the store's poison; dropped with it, when the store's last user is gone.
#[derive(Default)]
pub(crate) struct PoisonSignal(Arc<Shared>);

impl PoisonSignal {
    /// Only the first cause is kept, as the poison keeps only the first.
    pub fn fire(&self, cause: &str) {
        self.0.wake_all(|state| {
            state.cause.get_or_insert_with(|| cause.to_owned());
        });
    }

    pub fn watch(&self) -> StorePoisoned {
        StorePoisoned(Arc::clone(&self.0))
    }
}

impl Drop for PoisonSignal {
    fn drop(&mut self) {
        self.0.wake_all(|state| state.ended = true);
    }
}

/// Resolves with the cause once the store it came from is poisoned (or fenced), or with `None`
/// once the store is closed without having been poisoned (see [`crate::Store::when_poisoned`]).
/// It holds no handle of the store, so waiting on it never keeps the store open.
#[derive(Clone)]
pub struct StorePoisoned(Arc<Shared>);

impl StorePoisoned {
    /// The cause, if the store is poisoned now.
    pub fn cause(&self) -> Option<String> {
        self.0.lock().cause.clone()
    }
}

impl Future for StorePoisoned {
    type Output = Option<String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let mut state = self.0.lock();
        if state.cause.is_some() || state.ended {
            return Poll::Ready(state.cause.clone());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use crate::{GroupId, ModelDisk, Store, StoreOptions, SyncMode};
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future + Unpin>(future: &mut F, wakes: &Arc<Count>) -> Poll<F::Output> {
        let waker = Arc::clone(wakes).into();
        std::pin::Pin::new(future).poll(&mut Context::from_waker(&waker))
    }

    fn woken(wakes: &Count) -> usize {
        wakes.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn open(disk: &ModelDisk) -> Store {
        Store::open_model(disk, StoreOptions::for_tests(SyncMode::Inline)).expect("open")
    }

    #[test]
    fn a_failed_fsync_wakes_the_waiter_with_its_cause() {
        let disk = ModelDisk::new();
        let store = open(&disk);
        let mut poisoned = store.when_poisoned();
        let wakes = Arc::new(Count(0.into()));
        assert!(poll_once(&mut poisoned, &wakes).is_pending());
        store
            .save_hard_state(GroupId(1), b"x")
            .expect("healthy write");
        store.sync().expect("healthy fsync");
        assert!(poll_once(&mut poisoned, &wakes).is_pending());
        assert_eq!(woken(&wakes), 0);
        disk.fail_next_persist();
        assert!(store.sync().is_err());
        assert_eq!(
            woken(&wakes),
            1,
            "the waiter is woken by the failure itself"
        );
        match poll_once(&mut poisoned, &wakes) {
            Poll::Ready(Some(cause)) => assert!(cause.contains("journal persist failed")),
            other => panic!("expected the cause, got {other:?}"),
        }
        assert!(store.when_poisoned().cause().is_some());
    }

    #[test]
    fn a_store_closed_unpoisoned_ends_the_wait_without_a_cause() {
        let disk = ModelDisk::new();
        let store = open(&disk);
        let mut poisoned = store.when_poisoned();
        let wakes = Arc::new(Count(0.into()));
        assert!(poll_once(&mut poisoned, &wakes).is_pending());
        drop(store);
        assert_eq!(woken(&wakes), 1);
        assert_eq!(poll_once(&mut poisoned, &wakes), Poll::Ready(None));
    }
}
