//! The order in which one stream of requests (a producer's requests to one partition) must be
//! written: each request takes a [`Turn`] when it is formed, and waits for it before it is
//! queued on a connection, so requests that wait for metadata or a connection side by side
//! still go out in the order they were formed.
//!
//! Order on one connection is not enough when the partition's leader moves: a request still
//! unanswered at the old leader may be written there later (the node can lead again, and its
//! connection reads requests only as fast as it answers them), after a later request the new
//! leader acknowledged. So a turn bound for one node also waits until no earlier request of
//! the stream is unanswered at another node: a producer's sends then land in send order across
//! leader changes too, at the cost of one round trip of waiting when the leader moves.

use gregor_protocol::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Hands out turns and says whose turn it is.
#[derive(Default)]
pub(crate) struct WriteOrder {
    state: Mutex<OrderState>,
    /// Bumped under `state`'s lock whenever a turn passes or a request is answered.
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct OrderState {
    issued: u64,
    current: u64,
    /// Turns given up before they came (their request failed before it was queued).
    given_up: BTreeSet<u64>,
    /// Requests queued and not yet answered, per node they were queued for.
    unanswered: BTreeMap<NodeId, usize>,
}

impl OrderState {
    fn may_write(&self, number: u64, node: NodeId) -> bool {
        self.current == number && self.unanswered.keys().all(|&at| at == node)
    }
}

/// One request's place in its [`WriteOrder`]. Dropping it passes the turn on: once the request
/// is queued, or when it fails before it could be.
pub(crate) struct Turn {
    order: Arc<WriteOrder>,
    number: u64,
}

/// A request queued for a node and not yet answered; dropping it says it was answered (or
/// given up on).
pub(crate) struct Unanswered {
    order: Arc<WriteOrder>,
    node: NodeId,
}

impl WriteOrder {
    fn lock(&self) -> MutexGuard<'_, OrderState> {
        // Each critical section is a few integer and map updates, complete or not begun.
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

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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
        self.changed();
    }

    fn answered(&self, node: NodeId) {
        let mut state = self.lock();
        let count = state
            .unanswered
            .get_mut(&node)
            .expect("an unanswered request is counted until it is answered");
        *count -= 1;
        if *count == 0 {
            state.unanswered.remove(&node);
        }
        self.changed();
    }
}

impl Turn {
    /// Waits until every earlier turn has passed and no earlier request is unanswered at a
    /// node other than `node`, where this turn's request is to be queued.
    pub(crate) async fn wait_for(&self, node: NodeId) {
        let mut changes = self.order.changes.subscribe();
        loop {
            if self.order.lock().may_write(self.number, node) {
                return;
            }
            // The sender lives in the order this turn holds, so the channel cannot close.
            let _ = changes.changed().await;
        }
    }

    /// The turn's request was queued for `node`: passes the turn on, and counts the request
    /// as unanswered there until the returned guard is dropped.
    pub(crate) fn queued_for(self, node: NodeId) -> Unanswered {
        let order = self.order.clone();
        *order.lock().unanswered.entry(node).or_insert(0) += 1;
        drop(self);
        Unanswered { order, node }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.pass(self.number);
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.order.answered(self.node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    async fn comes(turn: &Turn, node: NodeId) -> bool {
        tokio::time::timeout(Duration::ZERO, turn.wait_for(node))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_turn_comes_once_every_earlier_one_has_passed() {
        let order = Arc::new(WriteOrder::default());
        let (first, second, third) = (order.take(), order.take(), order.take());
        assert!(comes(&first, A).await);
        assert!(!comes(&second, A).await);
        drop(first);
        assert!(comes(&second, A).await);
        assert!(!comes(&third, A).await);
        drop(second);
        assert!(comes(&third, A).await);
    }

    #[tokio::test]
    async fn a_turn_given_up_early_is_skipped_when_its_time_comes() {
        let order = Arc::new(WriteOrder::default());
        let (first, second, third) = (order.take(), order.take(), order.take());
        drop(second);
        assert!(!comes(&third, A).await, "the first has not passed yet");
        drop(first);
        assert!(comes(&third, A).await);
        drop(third);
        assert!(comes(&order.take(), A).await);
    }

    #[tokio::test]
    async fn requests_pipeline_to_one_node_without_waiting_for_answers() {
        let order = Arc::new(WriteOrder::default());
        let (first, second) = (order.take(), order.take());
        let _first_unanswered = first.queued_for(A);
        assert!(comes(&second, A).await);
        let _second_unanswered = second.queued_for(A);
        assert!(comes(&order.take(), A).await);
    }

    #[tokio::test]
    async fn a_turn_for_another_node_waits_until_the_old_one_has_answered() {
        let order = Arc::new(WriteOrder::default());
        let (first, second, third) = (order.take(), order.take(), order.take());
        let first_unanswered = first.queued_for(A);
        let second_unanswered = second.queued_for(A);
        assert!(!comes(&third, B).await, "two requests unanswered at A");
        drop(first_unanswered);
        assert!(!comes(&third, B).await, "one request unanswered at A");
        let waiting = tokio::spawn(async move {
            third.wait_for(B).await;
            third
        });
        drop(second_unanswered);
        let third = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the turn comes once A has answered")
            .expect("task");
        let _third_unanswered = third.queued_for(B);
        assert!(
            !comes(&order.take(), A).await,
            "and back again: A waits for B"
        );
    }
}
