//! Produce requests that reach a leader still becoming ready, kept in arrival order.
//!
//! A client may have several produce requests in flight on one connection, and a partition
//! must append them in the order they arrived (Kafka's per-connection order, which a producer
//! without idempotence relies on). A request that waited for readiness on its own and was then
//! handed back to the actor landed behind requests that came after it, once the leader was
//! ready. So every request that comes while this queue is not empty waits in it too, and the
//! queue is released in order, all at once.

use crate::api::{ApiError, Produce, ProduceReply};
use std::collections::VecDeque;
use tokio::sync::oneshot;

pub(super) type ProduceAnswer = oneshot::Sender<Result<ProduceReply, ApiError>>;

#[derive(Default)]
pub(super) struct ReadyQueue {
    waiting: VecDeque<(Produce, ProduceAnswer)>,
}

impl ReadyQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queues `request`; its answer arrives on the returned receiver. `true` when the queue
    /// was empty: the caller starts waiting for readiness on the queue's behalf.
    pub(super) fn push(
        &mut self,
        request: Produce,
    ) -> (oneshot::Receiver<Result<ProduceReply, ApiError>>, bool) {
        let (answer, receiver) = oneshot::channel();
        let first = self.waiting.is_empty();
        self.waiting.push_back((request, answer));
        (receiver, first)
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
        }
    }

    #[test]
    fn releases_in_arrival_order_and_skips_abandoned_requests() {
        let mut queue = ReadyQueue::default();
        let (_first, starts_watch) = queue.push(produce(1));
        assert!(starts_watch);
        let (abandoned, starts_watch) = queue.push(produce(2));
        assert!(!starts_watch);
        let (_third, _) = queue.push(produce(3));
        drop(abandoned);
        let released: Vec<u32> = queue.release().iter().map(|(r, _)| r.timeout_ms).collect();
        assert_eq!(released, vec![1, 3]);
        assert!(queue.is_empty());
        assert!(
            queue.push(produce(4)).1,
            "an emptied queue is watched again"
        );
    }
}
