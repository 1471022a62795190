//! The producer's IO-free core: per-partition batches, when they close, and which go out next.
//!
//! Each partition has at most one open batch, built in place by [`BatchBuilder`] (the one copy
//! of each payload), a queue of sealed batches, and a count of requests in flight. A batch is
//! sealed when the next record does not fit, when it reaches `batch_size`, or when its linger
//! has passed and the partition may send. [`Accumulator::drain`] turns sealed batches into
//! requests of up to `max_request_bytes`, oldest first, at most `max_in_flight` per partition:
//! with one in flight, per-partition order survives retries.
//!
//! Time comes in as arguments, so tests drive it without a runtime.

use super::delivery::BatchShared;
use bytes::Bytes;
use gregor_protocol::batch::{BatchBuilder, Compression, NewRecord, HEADER_LEN};
use gregor_protocol::TopicId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub batch_size: usize,
    pub linger: Duration,
    pub max_request_bytes: usize,
    pub max_in_flight: usize,
    /// Most batches in one request (an idempotent producer keeps at most five in flight per
    /// partition: the partition remembers the last five batches of each producer).
    pub max_batches_per_request: usize,
    /// Codec batches are compressed with when sealed; sizes above are before compression.
    pub compression: Compression,
}

pub(crate) struct Accumulator {
    limits: Limits,
    topics: BTreeMap<String, TopicQueues>,
    /// Batches get increasing numbers, so "everything sent before a flush" is "every number
    /// below the one handed out next".
    next_seq: u64,
    incomplete: BTreeSet<u64>,
    /// Sizes a record against an empty batch without allocating a new builder each time.
    probe: BatchBuilder,
}

struct TopicQueues {
    name: Arc<str>,
    partitions: Vec<PartitionQueue>,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    sealed: VecDeque<SealedBatch>,
    in_flight: usize,
}

struct OpenBatch {
    /// The topic incarnation its records were sent under.
    topic_id: Option<TopicId>,
    builder: BatchBuilder,
    opened_at: Instant,
    seq: u64,
    shared: Arc<BatchShared>,
    reserved: usize,
}

/// A finished batch waiting to be sent or in flight.
pub(crate) struct SealedBatch {
    pub topic_id: Option<TopicId>,
    pub bytes: Bytes,
    pub records: u32,
    pub opened_at: Instant,
    pub seq: u64,
    pub shared: Arc<BatchShared>,
    /// Buffer memory to give back when the batch completes.
    pub reserved: usize,
}

/// One `Produce` request's worth of batches for one partition.
pub(crate) struct ProduceJob {
    pub topic: Arc<str>,
    /// The incarnation every batch of the job was sent under.
    pub topic_id: Option<TopicId>,
    pub partition: u32,
    pub batches: Vec<SealedBatch>,
}

#[derive(Debug)]
pub(crate) enum Append {
    /// The record is in a batch, at `index`. `sealed`: the batch filled up and was sealed.
    /// `reserved`: how much of the offered reservation the new batch took (0 or all of it).
    Added {
        batch: Arc<BatchShared>,
        index: u32,
        sealed: bool,
        reserved: usize,
    },
    /// The open batch was full and is now sealed; the record was not added. A keyless record
    /// picks its partition again (the sticky partition moves), others just retry.
    Sealed,
    /// A new batch is needed: reserve `bytes` of buffer memory and call again with them.
    NeedsBatch { bytes: usize },
}

/// What the sender should do after a [`Accumulator::drain`].
pub(crate) struct Drained {
    pub jobs: Vec<ProduceJob>,
    /// When the earliest open batch's linger ends, among partitions that may send.
    pub next_deadline: Option<Instant>,
    /// Partitions whose open batch was sealed by its linger (the sticky partitioner moves on).
    pub lingered: Vec<(Arc<str>, u32)>,
}

impl Accumulator {
    pub fn new(limits: Limits) -> Self {
        assert!(
            limits.batch_size > HEADER_LEN,
            "batch_size must exceed the batch header"
        );
        assert!(
            limits.max_request_bytes >= limits.batch_size,
            "a batch must fit in a request"
        );
        assert!(
            limits.max_in_flight > 0,
            "at least one request per partition must be allowed"
        );
        Accumulator {
            limits,
            topics: BTreeMap::new(),
            next_seq: 0,
            incomplete: BTreeSet::new(),
            probe: BatchBuilder::with_capacity(HEADER_LEN),
        }
    }

    /// Bytes a batch holding only `record` takes: what opening a batch for it needs at least.
    pub fn single_record_batch_len(&self, record: &NewRecord<'_>) -> usize {
        HEADER_LEN + self.probe.encoded_len(record)
    }

    /// Adds `record`, sent under incarnation `topic_id` of `topic`, to `partition`'s open batch.
    /// `open` carries a memory reservation (and the time) when the caller is answering
    /// [`Append::NeedsBatch`]. An open batch of another incarnation is sealed first: a batch,
    /// and so a request, is for one incarnation.
    pub fn append(
        &mut self,
        topic: &str,
        topic_id: Option<TopicId>,
        partitions: u32,
        partition: u32,
        record: &NewRecord<'_>,
        open: Option<(usize, Instant)>,
    ) -> Append {
        let limits = self.limits;
        let queue = self.queue(topic, partitions, partition);
        if let Some(batch) = &mut queue.open {
            let fits = batch.builder.len() + batch.builder.encoded_len(record) <= limits.batch_size;
            if batch.topic_id == topic_id && fits {
                let index = batch.builder.record_count() as u32;
                batch.builder.push(record);
                let shared = batch.shared.clone();
                let sealed = batch.builder.len() >= limits.batch_size;
                if sealed {
                    queue.seal_open();
                }
                return Append::Added {
                    batch: shared,
                    index,
                    sealed,
                    reserved: 0,
                };
            }
            queue.seal_open();
            return Append::Sealed;
        }
        let needed = (HEADER_LEN + self.probe.encoded_len(record)).max(limits.batch_size);
        let Some((reserved, now)) = open.filter(|(bytes, _)| *bytes >= needed) else {
            return Append::NeedsBatch { bytes: needed };
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.incomplete.insert(seq);
        let shared = Arc::new(BatchShared::new(partition));
        let mut builder = BatchBuilder::with_capacity(needed).compression(limits.compression);
        builder.push(record);
        let sealed = builder.len() >= limits.batch_size;
        let queue = self.queue(topic, partitions, partition);
        queue.open = Some(OpenBatch {
            topic_id,
            builder,
            opened_at: now,
            seq,
            shared: shared.clone(),
            reserved,
        });
        if sealed {
            queue.seal_open();
        }
        Append::Added {
            batch: shared,
            index: 0,
            sealed,
            reserved,
        }
    }

    fn queue(&mut self, topic: &str, partitions: u32, partition: u32) -> &mut PartitionQueue {
        if !self.topics.contains_key(topic) {
            let queues = TopicQueues {
                name: Arc::from(topic),
                partitions: Vec::new(),
            };
            self.topics.insert(topic.to_owned(), queues);
        }
        let queues = self.topics.get_mut(topic).expect("inserted above");
        let wanted = (partitions.max(partition + 1)) as usize;
        if queues.partitions.len() < wanted {
            queues
                .partitions
                .resize_with(wanted, PartitionQueue::default);
        }
        &mut queues.partitions[partition as usize]
    }

    /// Seals what must go out and forms requests for every partition that may send.
    /// `flush_below`: batches numbered below it go out without waiting for their linger;
    /// `closing`: everything does.
    pub fn drain(&mut self, now: Instant, flush_below: u64, closing: bool) -> Drained {
        let limits = self.limits;
        let mut drained = Drained {
            jobs: Vec::new(),
            next_deadline: None,
            lingered: Vec::new(),
        };
        for queues in self.topics.values_mut() {
            for (partition, queue) in queues.partitions.iter_mut().enumerate() {
                if queue.in_flight >= limits.max_in_flight {
                    // Its completion wakes the sender; until then the open batch keeps growing.
                    continue;
                }
                if let Some(open) = &queue.open {
                    if closing || open.seq < flush_below || now >= open.opened_at + limits.linger {
                        queue.seal_open();
                        drained
                            .lingered
                            .push((queues.name.clone(), partition as u32));
                    }
                }
                while queue.in_flight < limits.max_in_flight && !queue.sealed.is_empty() {
                    let mut batches = Vec::new();
                    let mut bytes = 0;
                    let topic_id = queue.sealed.front().expect("not empty").topic_id;
                    while let Some(next) = queue.sealed.front() {
                        if !batches.is_empty()
                            && (bytes + next.bytes.len() > limits.max_request_bytes
                                || batches.len() >= limits.max_batches_per_request
                                || next.topic_id != topic_id)
                        {
                            break;
                        }
                        bytes += next.bytes.len();
                        batches.push(queue.sealed.pop_front().expect("front exists"));
                    }
                    queue.in_flight += 1;
                    drained.jobs.push(ProduceJob {
                        topic: queues.name.clone(),
                        topic_id,
                        partition: partition as u32,
                        batches,
                    });
                }
                if queue.in_flight < limits.max_in_flight {
                    if let Some(open) = &queue.open {
                        let deadline = open.opened_at + limits.linger;
                        let earliest = drained.next_deadline.map_or(deadline, |d| d.min(deadline));
                        drained.next_deadline = Some(earliest);
                    }
                }
            }
        }
        drained
    }

    /// A request ended (acknowledged or failed for good). Returns the buffer memory its
    /// batches held.
    pub fn complete(&mut self, job: &ProduceJob) -> usize {
        let queue = self
            .topics
            .get_mut(&*job.topic)
            .and_then(|q| q.partitions.get_mut(job.partition as usize))
            .expect("a job's partition queue outlives the job");
        assert!(
            queue.in_flight > 0,
            "completing a request that was not in flight"
        );
        queue.in_flight -= 1;
        let mut released = 0;
        for batch in &job.batches {
            assert!(
                self.incomplete.remove(&batch.seq),
                "batch {} completed twice",
                batch.seq
            );
            released += batch.reserved;
        }
        released
    }

    /// The number the next batch will get: a flush waits for every batch below it.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every batch numbered below this has completed.
    pub fn completed_below(&self) -> u64 {
        self.incomplete.first().copied().unwrap_or(self.next_seq)
    }

    /// Nothing open, queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.incomplete.is_empty()
    }
}

impl PartitionQueue {
    fn seal_open(&mut self) {
        if let Some(open) = self.open.take() {
            let records = open.builder.record_count() as u32;
            self.sealed.push_back(SealedBatch {
                topic_id: open.topic_id,
                bytes: open.builder.finish(),
                records,
                opened_at: open.opened_at,
                seq: open.seq,
                shared: open.shared,
                reserved: open.reserved,
            });
        }
    }
}

impl std::fmt::Debug for SealedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBatch")
            .field("seq", &self.seq)
            .field("records", &self.records)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_protocol::batch::BatchView;

    const LINGER: Duration = Duration::from_millis(5);
    const INCARNATION: Option<TopicId> = Some(TopicId(1));

    fn limits(batch_size: usize) -> Limits {
        Limits {
            batch_size,
            linger: LINGER,
            max_request_bytes: 4 * batch_size,
            max_in_flight: 1,
            max_batches_per_request: usize::MAX,
            compression: Compression::None,
        }
    }

    fn record(value: &[u8]) -> NewRecord<'_> {
        NewRecord {
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: 1_000,
        }
    }

    /// Appends the way the producer does: reserve when asked, retry after a seal.
    fn add(acc: &mut Accumulator, partition: u32, value: &[u8], now: Instant) -> (u32, bool) {
        let mut open = None;
        loop {
            match acc.append("t", INCARNATION, 2, partition, &record(value), open.take()) {
                Append::Added { index, sealed, .. } => return (index, sealed),
                Append::Sealed => {}
                Append::NeedsBatch { bytes } => open = Some((bytes, now)),
            }
        }
    }

    #[test]
    fn records_fill_a_batch_up_to_its_size_then_a_new_one_opens() {
        let mut acc = Accumulator::new(limits(1_000));
        let t0 = Instant::now();
        let value = [7u8; 90];
        let mut indexes = Vec::new();
        for _ in 0..20 {
            indexes.push(add(&mut acc, 0, &value, t0).0);
        }
        // 61-byte header + ~94 bytes per record: 9 records fit in 1,000 bytes.
        assert_eq!(&indexes[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
        // Sealed batches go out at once, one request per partition in flight.
        let drained = acc.drain(t0, 0, false);
        assert_eq!(drained.jobs.len(), 1);
        let job = &drained.jobs[0];
        assert_eq!(job.batches.len(), 2, "both full batches share one request");
        for batch in &job.batches {
            let view = BatchView::validate(&batch.bytes).expect("valid batch");
            assert_eq!(view.record_count(), 9);
            assert!(batch.bytes.len() <= 1_000);
        }
        // The third batch is still open and lingering.
        assert_eq!(
            drained.next_deadline, None,
            "the partition is busy: no linger timer"
        );
    }

    #[test]
    fn an_open_batch_goes_out_when_its_linger_ends() {
        let mut acc = Accumulator::new(limits(10_000));
        let t0 = Instant::now();
        add(&mut acc, 1, b"hello", t0);
        let early = acc.drain(t0 + LINGER - Duration::from_millis(1), 0, false);
        assert!(early.jobs.is_empty());
        assert_eq!(early.next_deadline, Some(t0 + LINGER));
        let due = acc.drain(t0 + LINGER, 0, false);
        assert_eq!(due.jobs.len(), 1);
        assert_eq!(due.jobs[0].partition, 1);
        assert_eq!(due.lingered, vec![(Arc::from("t"), 1)]);
    }

    #[test]
    fn flush_sends_open_batches_without_waiting_for_linger() {
        let mut acc = Accumulator::new(limits(10_000));
        let t0 = Instant::now();
        add(&mut acc, 0, b"a", t0);
        add(&mut acc, 1, b"b", t0);
        let drained = acc.drain(t0, acc.next_seq(), false);
        assert_eq!(drained.jobs.len(), 2);
        assert_eq!(acc.completed_below(), 0);
        for job in &drained.jobs {
            acc.complete(job);
        }
        assert_eq!(acc.completed_below(), 2);
        assert!(acc.is_idle());
    }

    #[test]
    fn one_request_in_flight_per_partition_keeps_later_batches_queued_in_order() {
        let mut acc = Accumulator::new(limits(200));
        let t0 = Instant::now();
        for _ in 0..12 {
            add(&mut acc, 0, &[1u8; 100], t0);
        }
        let first = acc.drain(t0, 0, false);
        assert_eq!(first.jobs.len(), 1);
        assert!(
            acc.drain(t0, 0, false).jobs.is_empty(),
            "second request waits for the first"
        );
        let released = acc.complete(&first.jobs[0]);
        assert_eq!(released, 200 * first.jobs[0].batches.len());
        let second = acc.drain(t0, 0, false);
        let first_seqs: Vec<u64> = first.jobs[0].batches.iter().map(|b| b.seq).collect();
        let second_seqs: Vec<u64> = second.jobs[0].batches.iter().map(|b| b.seq).collect();
        assert!(first_seqs.iter().max() < second_seqs.iter().min());
    }

    #[test]
    fn requests_are_cut_at_max_request_bytes() {
        let mut acc = Accumulator::new(Limits {
            max_request_bytes: 400,
            ..limits(200)
        });
        let t0 = Instant::now();
        for _ in 0..10 {
            add(&mut acc, 0, &[1u8; 100], t0);
        }
        let drained = acc.drain(t0, 0, false);
        let bytes: usize = drained.jobs[0].batches.iter().map(|b| b.bytes.len()).sum();
        assert!(bytes <= 400);
        assert_eq!(drained.jobs[0].batches.len(), 2);
    }

    #[test]
    fn requests_are_cut_at_max_batches_per_request() {
        let mut acc = Accumulator::new(Limits {
            max_request_bytes: 1 << 20,
            max_batches_per_request: 5,
            ..limits(200)
        });
        let t0 = Instant::now();
        for _ in 0..14 {
            add(&mut acc, 0, &[1u8; 150], t0);
        }
        let drained = acc.drain(t0, acc.next_seq(), false);
        assert_eq!(drained.jobs[0].batches.len(), 5);
    }

    /// Appends to partition 0 of `t` the way the producer does, under `topic_id`.
    fn add_under(acc: &mut Accumulator, topic_id: Option<TopicId>, value: &[u8], t0: Instant) {
        let mut open = None;
        loop {
            match acc.append("t", topic_id, 1, 0, &record(value), open.take()) {
                Append::Added { .. } => return,
                Append::Sealed => {}
                Append::NeedsBatch { bytes } => open = Some((bytes, t0)),
            }
        }
    }

    #[test]
    fn records_of_two_incarnations_never_share_a_batch_or_a_request() {
        let mut acc = Accumulator::new(limits(10_000));
        let t0 = Instant::now();
        add_under(&mut acc, Some(TopicId(1)), b"old", t0);
        add_under(&mut acc, Some(TopicId(1)), b"old", t0);
        add_under(&mut acc, Some(TopicId(2)), b"new", t0);
        let first = acc.drain(t0, acc.next_seq(), false);
        assert_eq!(first.jobs.len(), 1);
        let job = &first.jobs[0];
        assert_eq!(job.topic_id, Some(TopicId(1)));
        assert_eq!(
            job.batches.len(),
            1,
            "the new incarnation's record opened a batch"
        );
        assert_eq!(job.batches[0].records, 2);
        acc.complete(job);
        let second = acc.drain(t0, acc.next_seq(), false);
        assert_eq!(second.jobs[0].topic_id, Some(TopicId(2)));
        assert_eq!(second.jobs[0].batches[0].records, 1);
    }

    #[test]
    fn a_record_larger_than_batch_size_gets_a_batch_of_its_own() {
        let mut acc = Accumulator::new(limits(200));
        let t0 = Instant::now();
        let big = [0u8; 500];
        let (index, sealed) = add(&mut acc, 0, &big, t0);
        assert_eq!((index, sealed), (0, true));
    }

    #[test]
    fn a_reservation_that_arrives_after_another_task_opened_the_batch_is_returned() {
        let mut acc = Accumulator::new(limits(1_000));
        let t0 = Instant::now();
        add(&mut acc, 0, b"first", t0);
        match acc.append(
            "t",
            INCARNATION,
            2,
            0,
            &record(b"second"),
            Some((1_000, t0)),
        ) {
            Append::Added {
                index: 1,
                reserved: 0,
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
