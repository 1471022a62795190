//! Telling the node the moment its store poisons itself. A failed fsync or journal write leaves
//! the store refusing every call for good; a node that went on running would answer its peers
//! and clients with errors from a store it can no longer trust, so it waits on this and stops.
//! The signal fires on the thread that set the poison (the `gregor-sync` thread, a storage job,
//! an actor), so it wakes futures rather than calling back.

use crate::signal::{Settled, Signal};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Owned by the store's poison; dropped with it, when the store's last user is gone.
#[derive(Default)]
pub(crate) struct PoisonSignal(Signal<String>);

impl PoisonSignal {
    /// Only the first cause is kept, as the poison keeps only the first.
    pub fn fire(&self, cause: &str) {
        self.0.set(|| cause.to_owned());
    }

    pub fn watch(&self) -> StorePoisoned {
        StorePoisoned(self.0.watch())
    }
}

impl Drop for PoisonSignal {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Resolves with the cause once the store it came from is poisoned (or fenced), or with `None`
/// once the store is closed without having been poisoned (see [`crate::Store::when_poisoned`]).
/// It holds no handle of the store, so waiting on it never keeps the store open.
#[derive(Clone)]
pub struct StorePoisoned(Settled<String>);

impl StorePoisoned {
    /// The cause, if the store is poisoned now.
    pub fn cause(&self) -> Option<String> {
        self.0.value()
    }
}

impl Future for StorePoisoned {
    type Output = Option<String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        Pin::new(&mut self.0).poll(cx)
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
