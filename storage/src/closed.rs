//! Knowing when a store is closed: its database released, so the directory can be opened again
//! in this process. The last handle can go on any thread (a storage job's, an actor's), so a
//! caller that must reopen waits on this rather than on its own handle's drop.

use crate::signal::{Settled, Signal};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Held by the store as its last field, so it drops after the database and the threads.
#[derive(Default)]
pub(crate) struct CloseGuard(Signal<()>);

impl CloseGuard {
    pub fn watch(&self) -> StoreClosed {
        StoreClosed(self.0.watch())
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.set(|| ());
    }
}

/// Resolves once the store it came from is closed (see [`crate::Store::when_closed`]).
#[derive(Clone)]
pub struct StoreClosed(Settled<()>);

impl StoreClosed {
    pub fn is_closed(&self) -> bool {
        self.0.value().is_some()
    }
}

impl Future for StoreClosed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
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
