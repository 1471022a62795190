//! Awaiting storage calls that can block for long (fetch reads, deletion steps): they run on
//! the store's storage threads (`Store::run_blocking`) while the actor thread serves others. In
//! the simulation the store runs them inline, so the answer is there before the first poll.

use gregor_storage::{StorageError, Store};
use tokio::sync::oneshot;

/// Runs `call` on a storage thread and awaits its result.
///
/// # Errors
/// Whatever `call` returns; `Poisoned` if the store's threads stopped before running it (the
/// store is being closed).
pub(crate) async fn off_thread<T, F>(store: &Store, call: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let handle = store.clone();
    store.run_blocking(Box::new(move || {
        // The caller may have gone (its request was cancelled): the result is then not needed.
        let _ = tx.send(call(&handle));
    }));
    rx.await.unwrap_or_else(|_| {
        Err(StorageError::Poisoned(
            "the store closed before the call ran".into(),
        ))
    })
}

/// Resolves once no storage-thread job is queued or running, so none holds a handle of the
/// store (also when the threads have stopped: nothing runs then either).
pub(crate) async fn storage_threads_idle(store: &Store) {
    let (tx, rx) = oneshot::channel();
    store.when_storage_threads_idle(Box::new(move || {
        let _ = tx.send(());
    }));
    let _ = rx.await;
}
