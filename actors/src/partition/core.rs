//! A partition leader's produce batching, free of I/O: produce requests gathered while a Raft
//! entry is in flight become the next entry, so one consensus round and one fsync carry many
//! producers' batches. Offsets are handed back once the entry is applied.

use bytes::Bytes;
use gregor_storage::batch::BatchView;
use gregor_storage::Offset;

/// One produce request waiting for its entry. `R` is how to answer it.
#[derive(Debug)]
pub struct PendingWrite<R> {
    pub batches: Vec<Bytes>,
    pub record_count: u64,
    pub bytes: usize,
    pub reply: R,
}

/// Requests in arrival order; their order is the order of their offsets.
#[derive(Debug)]
pub struct ProduceBuffer<R> {
    pending: std::collections::VecDeque<PendingWrite<R>>,
    pending_bytes: usize,
    /// Most bytes waiting before new requests are refused (backpressure on the producers).
    max_pending_bytes: usize,
    /// Most bytes in one Raft entry.
    max_entry_bytes: usize,
}

/// The requests that went into one entry, in offset order.
#[derive(Debug)]
pub struct EntryPlan<R> {
    pub batches: Vec<Bytes>,
    pub writes: Vec<(R, u64)>,
}

impl<R> ProduceBuffer<R> {
    pub fn new(max_pending_bytes: usize, max_entry_bytes: usize) -> Self {
        ProduceBuffer {
            pending: Default::default(),
            pending_bytes: 0,
            max_pending_bytes,
            max_entry_bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Queues validated batches; `Err(reply)` hands the reply back when the buffer is full.
    pub fn push(&mut self, batches: Vec<Bytes>, reply: R) -> Result<(), R> {
        let bytes: usize = batches.iter().map(Bytes::len).sum();
        if self.pending_bytes + bytes > self.max_pending_bytes && !self.pending.is_empty() {
            return Err(reply);
        }
        let record_count = batches
            .iter()
            .map(|b| u64::from(BatchView::trusted(b).record_count()))
            .sum();
        self.pending_bytes += bytes;
        self.pending.push_back(PendingWrite {
            batches,
            record_count,
            bytes,
            reply,
        });
        Ok(())
    }

    /// Takes whole requests, oldest first, up to the entry size (at least one request).
    pub fn take_entry(&mut self) -> Option<EntryPlan<R>> {
        let mut plan = EntryPlan {
            batches: Vec::new(),
            writes: Vec::new(),
        };
        let mut bytes = 0;
        while let Some(next) = self.pending.front() {
            if !plan.writes.is_empty() && bytes + next.bytes > self.max_entry_bytes {
                break;
            }
            let write = self.pending.pop_front().expect("front exists");
            bytes += write.bytes;
            self.pending_bytes -= write.bytes;
            plan.batches.extend(write.batches);
            plan.writes.push((write.reply, write.record_count));
        }
        (!plan.writes.is_empty()).then_some(plan)
    }

    /// Drains every waiting request (the leader is stepping down or stopping).
    pub fn drain(&mut self) -> Vec<R> {
        self.pending_bytes = 0;
        self.pending.drain(..).map(|w| w.reply).collect()
    }
}

/// Splits an applied entry's offsets among its requests: each gets the offset of its first
/// record, in order.
pub fn distribute<R>(base_offset: Offset, writes: Vec<(R, u64)>) -> Vec<(R, Offset)> {
    let mut next = base_offset.0;
    writes
        .into_iter()
        .map(|(reply, count)| {
            let first = Offset(next);
            next += count;
            (reply, first)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_storage::batch::{BatchBuilder, NewRecord};

    fn batch(records: usize, value_len: usize) -> Bytes {
        let mut b = BatchBuilder::with_capacity(64);
        let value = vec![1u8; value_len];
        for _ in 0..records {
            b.push(&NewRecord {
                key: None,
                value: Some(&value),
                headers: &[],
                timestamp: 1,
            });
        }
        b.finish()
    }

    #[test]
    fn requests_in_one_entry_get_consecutive_offsets_in_arrival_order() {
        let mut buffer = ProduceBuffer::new(1 << 20, 1 << 20);
        buffer.push(vec![batch(3, 10)], "a").unwrap();
        buffer.push(vec![batch(1, 10), batch(2, 10)], "b").unwrap();
        buffer.push(vec![batch(5, 10)], "c").unwrap();
        let plan = buffer.take_entry().unwrap();
        assert_eq!(plan.batches.len(), 4);
        let offsets = distribute(Offset(100), plan.writes);
        assert_eq!(
            offsets,
            vec![("a", Offset(100)), ("b", Offset(103)), ("c", Offset(106))]
        );
        assert!(buffer.is_empty());
        assert!(buffer.take_entry().is_none());
    }

    #[test]
    fn entries_are_bounded_but_never_split_a_request() {
        let one = batch(10, 100);
        let size = one.len();
        let mut buffer = ProduceBuffer::new(1 << 20, size * 2);
        for name in ["a", "b", "c"] {
            buffer.push(vec![one.clone()], name).unwrap();
        }
        assert_eq!(buffer.take_entry().unwrap().writes.len(), 2);
        assert_eq!(buffer.take_entry().unwrap().writes.len(), 1);
        // A request bigger than the entry bound still goes, alone.
        let mut small = ProduceBuffer::new(1 << 20, 10);
        small.push(vec![one.clone(), one], "big").unwrap();
        assert_eq!(small.take_entry().unwrap().writes.len(), 1);
    }

    #[test]
    fn full_buffer_pushes_back() {
        let one = batch(10, 100);
        let mut buffer = ProduceBuffer::new(one.len(), 1 << 20);
        buffer.push(vec![one.clone()], 1).unwrap();
        assert_eq!(buffer.push(vec![one], 2), Err(2));
        assert_eq!(buffer.drain(), vec![1]);
        assert_eq!(buffer.pending_bytes(), 0);
    }
}
