//! Delivery results. A batch's outcome is stored once and shared by all its records, so a
//! record's handle costs one reference count, not a channel (Kafka's `ProduceRequestResult`).

use crate::error::ClientError;
use gregor_protocol::{Offset, PartitionId};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;

/// Where an acknowledged record landed. `offset` is `None` with `acks=0`, which gets no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition the record went to.
    pub partition: PartitionId,
    /// The record's offset; `None` with `acks = 0`, which gets no reply.
    pub offset: Option<Offset>,
}

/// The outcome of one batch: its base offset (none with `acks=0`) or the error.
pub(crate) type BatchResult = Result<Option<Offset>, ClientError>;

pub(crate) struct BatchShared {
    partition: u32,
    result: OnceLock<BatchResult>,
    done: Notify,
}

impl std::fmt::Debug for BatchShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchShared")
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl BatchShared {
    pub fn new(partition: u32) -> Self {
        BatchShared {
            partition,
            result: OnceLock::new(),
            done: Notify::new(),
        }
    }

    /// Records the outcome and wakes every waiter.
    ///
    /// # Panics
    /// If the batch already completed: a batch is answered once.
    pub fn complete(&self, result: BatchResult) {
        assert!(self.result.set(result).is_ok(), "batch completed twice");
        self.done.notify_waiters();
    }
}

/// A sent record's future outcome. Await it (or call [`DeliveryHandle::wait`]) for its
/// [`RecordMetadata`]; dropping it does not cancel the send.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    batch: Arc<BatchShared>,
    index: u32,
}

impl DeliveryHandle {
    pub(crate) fn new(batch: Arc<BatchShared>, index: u32) -> Self {
        DeliveryHandle { batch, index }
    }

    /// The partition the record was put in.
    pub fn partition(&self) -> PartitionId {
        PartitionId(self.batch.partition)
    }

    /// The outcome, if the record's batch has completed.
    pub fn try_result(&self) -> Option<Result<RecordMetadata, ClientError>> {
        self.batch.result.get().map(|result| self.metadata(result))
    }

    /// Waits for the broker's acknowledgement.
    ///
    /// # Errors
    /// The error that failed the record's batch, after the producer's retries.
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        loop {
            let done = self.batch.done.notified();
            tokio::pin!(done);
            // Register before checking, so a completion between the check and the await is
            // not missed.
            done.as_mut().enable();
            if let Some(result) = self.try_result() {
                return result;
            }
            done.await;
        }
    }

    fn metadata(&self, result: &BatchResult) -> Result<RecordMetadata, ClientError> {
        match result {
            Ok(base) => Ok(RecordMetadata {
                partition: self.partition(),
                offset: base.map(|b| Offset(b.0 + u64::from(self.index))),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl IntoFuture for DeliveryHandle {
    type Output = Result<RecordMetadata, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_of_a_batch_get_base_offset_plus_index() {
        let batch = Arc::new(BatchShared::new(3));
        let handles: Vec<_> = (0..3)
            .map(|i| DeliveryHandle::new(batch.clone(), i))
            .collect();
        assert!(handles[0].try_result().is_none());
        let waiter = tokio::spawn(handles[2].clone().wait());
        batch.complete(Ok(Some(Offset(100))));
        let md = waiter.await.expect("task").expect("delivered");
        assert_eq!(
            md,
            RecordMetadata {
                partition: PartitionId(3),
                offset: Some(Offset(102))
            }
        );
        assert_eq!(
            handles[0].clone().await.expect("delivered").offset,
            Some(Offset(100))
        );
    }

    #[tokio::test]
    async fn fire_and_forget_has_no_offset_and_errors_reach_every_record() {
        let acked = Arc::new(BatchShared::new(0));
        acked.complete(Ok(None));
        assert_eq!(
            DeliveryHandle::new(acked, 5).await.expect("sent").offset,
            None
        );

        let failed = Arc::new(BatchShared::new(0));
        failed.complete(Err(ClientError::Closed));
        for i in 0..2 {
            assert!(matches!(
                DeliveryHandle::new(failed.clone(), i).await,
                Err(ClientError::Closed)
            ));
        }
    }
}
