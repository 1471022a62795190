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
    /// A task waits for readiness on the queue's behalf.
    pub(super) watched: bool,
}

impl ReadyQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queues `request`; its answer arrives on the returned receiver.
    pub(super) fn push(
        &mut self,
        request: Produce,
    ) -> oneshot::Receiver<Result<ProduceReply, ApiError>> {
        let (answer, receiver) = oneshot::channel();
        self.waiting.push_back((request, answer));
        receiver
    }

    /// Everything queued, oldest first, without the requests whose client stopped waiting
    /// (their timeout passed): those were answered already and must not be written.
    pub(super) fn release(&mut self) -> Vec<(Produce, ProduceAnswer)> {
        self.watched = false;
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
        let _first = queue.push(produce(1));
        let abandoned = queue.push(produce(2));
        let _third = queue.push(produce(3));
        drop(abandoned);
        queue.watched = true;
        let released: Vec<u32> = queue.release().iter().map(|(r, _)| r.timeout_ms).collect();
        assert_eq!(released, vec![1, 3]);
        assert!(queue.is_empty());
        assert!(!queue.watched);
    }
}
