//! Produce requests that reach a leader still becoming ready, kept in arrival order.
//!
//! A client may have several produce requests in flight on one connection, and a partition
//! must append them in the order they arrived (Kafka's per-connection order, which a producer
//! without idempotence relies on). A request that waited for readiness on its own and was then
//! handed back to the actor landed behind requests that came after it, once the leader was
//! ready. So every request that comes while this queue is not empty waits in it too, and the
//! queue is released in order, all at once.
//!
//! The queue belongs to one leadership: the term in which its first request came. A request is
//! for the leader it reached, as in Kafka, where it is bound to the leader epoch: released in a
//! later term of the same node (which lost leadership and won it back), it would be appended
//! after requests other leaders appended meanwhile, so that a producer's earlier send lands
//! after its later one. So the queue is released only if its own term became ready, and fails
//! with `NOT_LEADER` otherwise.

use crate::api::{ApiError, Produce, ProduceReply};
use std::collections::VecDeque;
use tokio::sync::oneshot;

pub(super) type ProduceAnswer = oneshot::Sender<Result<ProduceReply, ApiError>>;

/// What becomes of the queued requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Their leadership is still becoming ready.
    Wait,
    /// Their leadership is ready: write them, in order.
    Release,
    /// Their leadership ended (another term, or this node stopped leading): `NOT_LEADER`.
    Fail,
}

#[derive(Default)]
pub(super) struct ReadyQueue {
    waiting: VecDeque<(Produce, ProduceAnswer)>,
    /// The leader term the queued requests wait for; meaningful while the queue is not empty.
    term: u64,
}

impl ReadyQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The term the queued requests wait for, if any wait.
    pub(super) fn term(&self) -> Option<u64> {
        (!self.waiting.is_empty()).then_some(self.term)
    }

    /// Queues `request`, which reached this node as the not yet ready leader of `term`; its
    /// answer arrives on the returned receiver. `true` when the queue was empty: the caller
    /// starts waiting for readiness on the queue's behalf.
    pub(super) fn push(
        &mut self,
        request: Produce,
        term: u64,
    ) -> (oneshot::Receiver<Result<ProduceReply, ApiError>>, bool) {
        let first = self.waiting.is_empty();
        if first {
            self.term = term;
        }
        assert_eq!(
            self.term, term,
            "a produce request of term {term} queued behind those of term {}",
            self.term
        );
        let (answer, receiver) = oneshot::channel();
        self.waiting.push_back((request, answer));
        (receiver, first)
    }

    /// What to do with the queue now that this node is in `term`, leading it or not, ready
    /// or not; `None` when nothing waits.
    pub(super) fn fate(&self, term: u64, leading: bool, ready: bool) -> Option<Fate> {
        let queued = self.term()?;
        Some(if term != queued || !leading {
            Fate::Fail
        } else if ready {
            Fate::Release
        } else {
            Fate::Wait
        })
    }

    /// Answers every queued request with `error`.
    pub(super) fn fail(&mut self, error: &ApiError) {
        for (_, answer) in self.waiting.drain(..) {
            let _ = answer.send(Err(error.clone()));
        }
    }

    /// Everything queued, oldest first, without the requests whose client stopped waiting
    /// (their timeout passed): those were answered already and must not be written.
    pub(super) fn release(&mut self) -> Vec<(Produce, ProduceAnswer)> {
        self.waiting
            .drain(..)
            .filter(|(_, answer)| !answer.is_closed())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Acks;

    fn produce(timeout_ms: u32) -> Produce {
        Produce {
            topic: "t".into(),
            partition: gregor_storage::PartitionId(0),
            acks: Acks::All,
            timeout_ms,
            batches: Vec::new(),
            topic_id: None,
        }
    }

    #[test]
    fn releases_in_arrival_order_and_skips_abandoned_requests() {
        let mut queue = ReadyQueue::default();
        let (_first, starts_watch) = queue.push(produce(1), 7);
        assert!(starts_watch);
        let (abandoned, starts_watch) = queue.push(produce(2), 7);
        assert!(!starts_watch);
        let (_third, _) = queue.push(produce(3), 7);
        drop(abandoned);
        let released: Vec<u32> = queue.release().iter().map(|(r, _)| r.timeout_ms).collect();
        assert_eq!(released, vec![1, 3]);
        assert!(queue.is_empty());
        assert!(
            queue.push(produce(4), 7).1,
            "an emptied queue is watched again"
        );
    }

    #[test]
    fn a_queue_is_released_only_by_its_own_term_becoming_ready() {
        let mut queue = ReadyQueue::default();
        assert_eq!(queue.fate(3, true, true), None, "nothing waits");
        let _waiting = queue.push(produce(1), 3);
        assert_eq!(queue.fate(3, true, false), Some(Fate::Wait));
        assert_eq!(queue.fate(3, true, true), Some(Fate::Release));
        assert_eq!(
            queue.fate(3, false, false),
            Some(Fate::Fail),
            "stopped leading"
        );
        assert_eq!(
            queue.fate(4, false, false),
            Some(Fate::Fail),
            "deposed by a newer term"
        );
        assert_eq!(
            queue.fate(19, true, true),
            Some(Fate::Fail),
            "leading again, ready, but in a later term: other leaders appended in between"
        );
    }

    #[test]
    fn an_emptied_queue_waits_for_the_term_of_its_next_request() {
        let mut queue = ReadyQueue::default();
        assert_eq!(queue.term(), None);
        let _first = queue.push(produce(1), 3);
        assert_eq!(queue.term(), Some(3));
        let _ = queue.release();
        assert_eq!(queue.term(), None);
        let _second = queue.push(produce(2), 21);
        assert_eq!(queue.term(), Some(21));
    }
}
