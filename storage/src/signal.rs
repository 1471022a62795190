//! A one-time event futures can wait for from any thread: settled once, with a value, or ended
//! without one. The store's close and its poisoning are such events; they can happen on any
//! thread (a storage job's, the sync thread, an actor), so they wake futures rather than call
//! back, and a waiter holds only the event, never the store.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    value: Option<T>,
    /// Settled without a value: the value can no longer come.
    ended: bool,
    wakers: Vec<Waker>,
}

struct Shared<T>(Mutex<State<T>>);

impl<T> Shared<T> {
    /// The state is a value, a flag and a list: any value a panicking holder left is consistent.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The side that settles the event.
pub(crate) struct Signal<T>(Arc<Shared<T>>);

impl<T> Default for Signal<T> {
    fn default() -> Self {
        Signal(Arc::new(Shared(Mutex::new(State {
            value: None,
            ended: false,
            wakers: Vec::new(),
        }))))
    }
}

impl<T: Clone> Signal<T> {
    /// Settles with `value`, unless settled already (the first value is kept).
    pub fn set(&self, value: impl FnOnce() -> T) {
        self.wake_all(|state| {
            if !state.ended {
                state.value.get_or_insert_with(value);
            }
        });
    }

    /// Settles without a value, unless settled already.
    pub fn end(&self) {
        self.wake_all(|state| state.ended = true);
    }

    pub fn watch(&self) -> Settled<T> {
        Settled(Arc::clone(&self.0))
    }

    fn wake_all(&self, change: impl FnOnce(&mut State<T>)) {
        let wakers = {
            let mut state = self.0.lock();
            change(&mut state);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Resolves once the event is settled: with its value, or `None` if it ended without one.
pub(crate) struct Settled<T>(Arc<Shared<T>>);

impl<T> Clone for Settled<T> {
    fn clone(&self) -> Self {
        Settled(Arc::clone(&self.0))
    }
}

impl<T: Clone> Settled<T> {
    /// The value, if the event settled with one.
    pub fn value(&self) -> Option<T> {
        self.0.lock().value.clone()
    }
}

impl<T: Clone> Future for Settled<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.0.lock();
        if state.value.is_some() || state.ended {
            return Poll::Ready(state.value.clone());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
