//! The order in which one stream of requests (a producer's requests to one partition) must be
//! written: each request takes a [`Turn`] when it is formed, and waits for it before it is
//! queued on a connection, so requests that wait for metadata or a connection side by side
//! still go out in the order they were formed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Hands out turns and says whose turn it is.
#[derive(Default)]
pub(crate) struct WriteOrder {
    state: Mutex<OrderState>,
    /// The turn that may write now; changes only under `state`'s lock.
    current: watch::Sender<u64>,
}

#[derive(Default)]
struct OrderState {
    issued: u64,
    current: u64,
    /// Turns given up before they came (their request failed before it was queued).
    given_up: BTreeSet<u64>,
}

/// One request's place in its [`WriteOrder`]. Dropping it passes the turn on: once the request
/// is queued, or when it fails before it could be.
pub(crate) struct Turn {
    order: Arc<WriteOrder>,
    number: u64,
}

impl WriteOrder {
    fn lock(&self) -> MutexGuard<'_, OrderState> {
        // Each critical section is a few integer and set updates, complete or not begun.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next turn, after every turn taken before.
    pub(crate) fn take(self: &Arc<Self>) -> Turn {
        let mut state = self.lock();
        let number = state.issued;
        state.issued += 1;
        Turn {
            order: self.clone(),
            number,
        }
    }

    fn pass(&self, number: u64) {
        let mut state = self.lock();
        assert!(
            number >= state.current && number < state.issued,
            "turn {number} passed outside [{}, {})",
            state.current,
            state.issued
        );
        if number != state.current {
            state.given_up.insert(number);
            return;
        }
        let mut next = number + 1;
        while state.given_up.remove(&next) {
            next += 1;
        }
        state.current = next;
        self.current.send_replace(next);
    }
}

impl Turn {
    /// Waits until every earlier turn has passed.
    pub(crate) async fn wait(&self) {
        let mut current = self.order.current.subscribe();
        // The sender lives in the order this turn holds, so the channel cannot close.
        let _ = current.wait_for(|&current| current == self.number).await;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.pass(self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn comes(turn: &Turn) -> bool {
        tokio::time::timeout(Duration::ZERO, turn.wait())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_turn_comes_once_every_earlier_one_has_passed() {
        let order = Arc::new(WriteOrder::default());
        let (first, second, third) = (order.take(), order.take(), order.take());
        assert!(comes(&first).await);
        assert!(!comes(&second).await);
        drop(first);
        assert!(comes(&second).await);
        assert!(!comes(&third).await);
        drop(second);
        assert!(comes(&third).await);
    }

    #[tokio::test]
    async fn a_turn_given_up_early_is_skipped_when_its_time_comes() {
        let order = Arc::new(WriteOrder::default());
        let (first, second, third) = (order.take(), order.take(), order.take());
        drop(second);
        assert!(!comes(&third).await, "the first has not passed yet");
        drop(first);
        assert!(comes(&third).await);
        drop(third);
        assert!(comes(&order.take()).await);
    }
}
