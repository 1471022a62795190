//! Knowing when a store is closed: its database released, so the directory can be opened again
//! in this process. The last handle can go on any thread (a storage job's, an actor's), so a
//! caller that must reopen waits on this rather than on its own handle's drop.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct State {
    closed: bool,
    wakers: Vec<Waker>,
}

#[derive(Default)]
struct Shared(Mutex<State>);

impl Shared {
    /// The state is a flag and a list: any value a panicking holder left is still consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Held by the store as its last field, so it drops after the database and the threads.
#[derive(Default)]
pub(crate) struct CloseGuard(Arc<Shared>);

impl CloseGuard {
    pub fn watch(&self) -> StoreClosed {
        StoreClosed(Arc::clone(&self.0))
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let wakers = {
            let mut state = self.0.lock();
            state.closed = true;
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Resolves once the store it came from is closed (see [`crate::Store::when_closed`]).
#[derive(Clone)]
pub struct StoreClosed(Arc<Shared>);

impl StoreClosed {
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl Future for StoreClosed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0.lock();
        if state.closed {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use crate::{StorageError, Store, StoreOptions, SyncMode};
    use std::future::Future;
    use std::sync::{mpsc, Arc};
    use std::task::{Context, Poll, Wake};
    use std::thread::Thread;

    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        let waker = Arc::new(Unpark(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            std::thread::park();
        }
    }

    fn options() -> StoreOptions {
        StoreOptions::for_tests(SyncMode::Thread)
    }

    #[test]
    fn a_store_whose_last_handle_a_storage_job_holds_closes_when_that_job_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), options()).expect("open");
        let closed = store.when_closed();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let held = store.clone();
        store.run_blocking(Box::new(move || {
            go_rx.recv().expect("go");
            drop(held);
        }));
        drop(store);
        assert!(!closed.is_closed());
        assert!(matches!(
            Store::open(dir.path(), options()),
            Err(StorageError::Fjall(fjall::Error::Locked))
        ));
        go_tx.send(()).expect("send");
        block_on(closed.clone());
        assert!(closed.is_closed());
        drop(Store::open(dir.path(), options()).expect("reopen once closed"));
    }
}
