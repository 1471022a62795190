//! The producer: records in, batches out.
//!
//! [`Producer::send`] picks the partition, appends the record to that partition's open batch
//! (copying its bytes once, into the batch) and returns a [`DeliveryHandle`] at once; a
//! background sender task turns full or lingered batches into `Produce` requests to each
//! partition's leader. Buffer memory is bounded: `send` waits when `buffer_memory` bytes of
//! batches are open or unacknowledged.
//!
//! Ordering: with retries on (the default), each partition has one request in flight, so a
//! retried request can never be overtaken and per-partition send order holds. Requests still
//! grow to `max_request_bytes` while one is in flight, which keeps throughput up. With
//! `retries == 0`, `max_in_flight_per_partition` requests may be in flight; each runs as its own
//! task, but takes a turn when it is drained and is written to its connection only after the
//! partition's earlier requests were (Kafka's single sender thread gives the same order), so
//! requests that waited together for metadata or a connection still go out in send order. When
//! the leader moves, a request for the new leader also waits until the earlier ones are
//! answered by the old one, which could otherwise still write them after it.
//!
//! Idempotence (the default, as in Kafka since 3.0): the producer takes a producer id
//! (`InitProducerId`) and stamps every batch with it and the partition's next sequence; a
//! request carries at most five batches and is retried with the same bytes, so a batch whose
//! reply was lost is recognised by the partition leader and written once, also across a leader
//! change. A request that fails for good leaves the sequence in doubt, so the next request takes
//! a fresh producer id. With idempotence off (`enable_idempotence(false)`) delivery is
//! at-least-once: a request whose reply is lost is sent again and may be stored twice.

mod accumulator;
mod delivery;
mod sticky;

pub use delivery::{DeliveryHandle, RecordMetadata};

use super::cluster::{
    expect_reply, ClientConfig, Cluster, Route, TopicIncarnation, Turn, WriteOrder,
};
use super::error::ClientError;
use crate::clock::{Clock, SystemClock};
use accumulator::{Accumulator, Append, Limits, ProduceJob};
use gregor_protocol::api::{Acks, ApiError, ErrorCode, InitProducerId, Produce, Request};
use gregor_protocol::batch::{set_producer, Compression, NewRecord};
use gregor_protocol::partitioner::partition_for_key;
use gregor_protocol::{Offset, PartitionId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use sticky::StickyPartitioner;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

/// Salt for the sticky partitioner's random stream.
const STICKY_SALT: u64 = 0x7374_6963_6b79_0000;
/// Batches an idempotent producer has in flight per partition at most: a partition remembers
/// the last five batches of each producer, so a retry of any of them is recognised.
const MAX_BATCHES_IN_FLIGHT: usize = 5;
/// Sequences are non-negative i32s that wrap from `i32::MAX` to 0.
const SEQUENCE_SPACE: i64 = 1 << 31;

/// A record header: name and optional value, as stored in the batch.
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// A record to send. It borrows its bytes: `send` copies them straight into the batch.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    /// The topic to send to.
    pub topic: &'a str,
    /// `None`: chosen by the partitioner.
    pub partition: Option<PartitionId>,
    /// The key: records with the same key go to the same partition.
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone (null value).
    pub value: Option<&'a [u8]>,
    /// Headers: name and optional value.
    pub headers: &'a [Header<'a>],
    /// Milliseconds since the epoch; `None`: the producer's clock at `send`.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    /// A record of `value` for `topic`, without key, headers or timestamp.
    pub fn new(topic: &'a str, value: &'a [u8]) -> Self {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends to this partition instead of asking the partitioner.
    pub fn partition(mut self, partition: PartitionId) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the headers.
    pub fn headers(mut self, headers: &'a [Header<'a>]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the timestamp, in milliseconds since the epoch.
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// A custom partition choice: `(topic, key, partition count)` → partition, or `None` to fall
/// back to the sticky partition.
pub type PartitionFn = Arc<dyn Fn(&str, Option<&[u8]>, u32) -> Option<u32> + Send + Sync>;

/// How records without an explicit partition are placed.
#[derive(Clone, Default)]
pub enum Partitioner {
    /// Kafka's default: murmur2 of the key; keyless records stick to one partition per batch.
    #[default]
    Default,
    /// Ignore keys; every record goes to the sticky partition (Kafka's `UniformStickyPartitioner`).
    Sticky,
    /// Your own choice: called with the topic, the key and the partition count.
    Custom(PartitionFn),
}

impl std::fmt::Debug for Partitioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Partitioner::Default => "Default",
            Partitioner::Sticky => "Sticky",
            Partitioner::Custom(_) => "Custom",
        })
    }
}

/// What the producer reports about each batch once it completes (for metrics and `perf`).
#[derive(Debug)]
pub struct BatchOutcome<'a> {
    /// The batch's topic.
    pub topic: &'a str,
    /// The batch's partition.
    pub partition: PartitionId,
    /// Records in the batch.
    pub records: u32,
    /// Bytes of the batch as sent (compressed, when the producer compresses).
    pub bytes: usize,
    /// When the batch's first record was sent: `ack time - opened_at` is the batch's latency.
    pub opened_at: Instant,
    /// The base offset (none with `acks=0`), or the error.
    pub result: Result<Option<Offset>, &'a ClientError>,
}

/// Called once per completed batch, on the task that completed it; keep it quick.
pub type BatchObserver = Arc<dyn Fn(&BatchOutcome<'_>) + Send + Sync>;

/// Producer settings. `ProducerConfig::new("host:9092").acks(Acks::Leader).linger_ms(10)`.
#[derive(Clone)]
pub struct ProducerConfig {
    /// How to reach the cluster.
    pub client: ClientConfig,
    /// How much durability a send waits for.
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent anyway.
    pub linger: Duration,
    /// Target batch size in bytes. The default, 128 KiB, is about 1,000 records of 100 bytes:
    /// the broker stores a batch as one blob, and batches of that size are where its storage
    /// engine is fastest (Kafka's 16 KiB default leaves most of that on the table). A low-rate
    /// producer does not wait for a full batch: `linger` sends it sooner.
    pub batch_size: usize,
    /// Largest `Produce` request (Kafka's `max.request.size`); also the largest record.
    pub max_request_bytes: usize,
    /// Bytes of batches that may be open or awaiting acknowledgement; `send` waits beyond.
    pub buffer_memory: usize,
    /// Requests in flight per partition when `client.retries == 0`; with retries it is 1.
    pub max_in_flight_per_partition: usize,
    /// How records without an explicit partition are placed.
    pub partitioner: Partitioner,
    /// Stamp batches with a producer id and sequences so that retries are written once (on by
    /// default). It keeps one request of at most five batches in flight per partition.
    pub idempotence: bool,
    /// Codec for the batches (Kafka's `compression.type`); none by default. The broker stores
    /// batches as they are sent and consumers decompress them, so this trades producer CPU
    /// for bytes on the wire and on disk.
    pub compression: Compression,
    /// Stamps records sent without a timestamp.
    pub clock: Arc<dyn Clock>,
    /// Called once for every batch that completes (for metrics).
    pub on_batch_complete: Option<BatchObserver>,
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("client", &self.client)
            .field("acks", &self.acks)
            .field("linger", &self.linger)
            .field("batch_size", &self.batch_size)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("buffer_memory", &self.buffer_memory)
            .field(
                "max_in_flight_per_partition",
                &self.max_in_flight_per_partition,
            )
            .field("partitioner", &self.partitioner)
            .field("idempotence", &self.idempotence)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl ProducerConfig {
    /// Default settings, bootstrapping from `bootstrap`.
    pub fn new(bootstrap: &str) -> Self {
        ProducerConfig::from_client(ClientConfig::new(bootstrap))
    }

    /// Default settings over `client`: acks all, 5 ms linger, 128 KiB batches, no compression.
    pub fn from_client(client: ClientConfig) -> Self {
        ProducerConfig {
            client,
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 128 * 1024,
            max_request_bytes: 1024 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            max_in_flight_per_partition: 5,
            partitioner: Partitioner::Default,
            idempotence: true,
            compression: Compression::None,
            clock: Arc::new(SystemClock),
            on_batch_complete: None,
        }
    }

    /// Sets the acknowledgement level.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Sets the linger, in milliseconds.
    pub fn linger_ms(mut self, ms: u64) -> Self {
        self.linger = Duration::from_millis(ms);
        self
    }

    /// Sets the target batch size, in bytes.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }

    /// Compresses batches with `codec`.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// Turns idempotence on (the default) or off.
    pub fn enable_idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }

    /// Sets the partitioner.
    pub fn partitioner(mut self, partitioner: Partitioner) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// Calls `observer` for every completed batch.
    pub fn on_batch_complete(mut self, observer: BatchObserver) -> Self {
        self.on_batch_complete = Some(observer);
        self
    }

    fn limits(&self) -> Limits {
        let max_request_bytes = self.max_request_bytes.max(self.batch_size);
        Limits {
            batch_size: self.batch_size,
            linger: self.linger,
            max_request_bytes,
            max_in_flight: if self.client.retries > 0 || self.idempotence {
                1
            } else {
                self.max_in_flight_per_partition.max(1)
            },
            max_batches_per_request: if self.idempotence {
                MAX_BATCHES_IN_FLIGHT
            } else {
                usize::MAX
            },
            compression: self.compression,
        }
    }
}

/// Sends records. Clones share one producer; it shuts down (sending what it holds) when the
/// last clone is dropped. Call [`Producer::flush`] to wait for delivery.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<LastHandle>,
}

/// Dropping the last [`Producer`] tells the sender to drain and stop.
struct LastHandle {
    shared: Arc<Shared>,
}

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

struct Shared {
    cluster: Cluster,
    config: ProducerConfig,
    state: Mutex<State>,
    memory: Semaphore,
    /// Wakes the sender task: a batch sealed, a request completed, a flush or close.
    wake: Notify,
    /// Every batch numbered below this value has completed.
    completed_below: watch::Sender<u64>,
    /// The producer id and per-partition sequences (idempotence), taken at the first request.
    identity: tokio::sync::Mutex<Option<Identity>>,
}

/// An idempotent producer's id and the next sequence of each partition it wrote to.
struct Identity {
    producer_id: i64,
    epoch: i16,
    next: BTreeMap<(Arc<str>, u32), i32>,
}

/// What `send` must do next.
enum Step {
    Done(Result<DeliveryHandle, ClientError>),
    NeedPartitionCount,
    /// Wait for this much buffer memory, then try again.
    NeedMemory(u32),
}

struct State {
    batches: Accumulator,
    sticky: StickyPartitioner,
    /// What each topic's name resolved to when it was last needed: a record is bound to the
    /// incarnation it was sent under.
    incarnations: BTreeMap<String, TopicIncarnation>,
    /// Each partition's requests are written in the order they were drained, though each
    /// runs as its own task (several may be in flight without retries).
    write_orders: BTreeMap<(Arc<str>, u32), Arc<WriteOrder>>,
    flush_below: u64,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only the sender's bookkeeping runs under this lock, and it asserts rather than
        // leaving half-done work: a poisoned state is still consistent enough to drain.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The synchronous part of `send`: everything under the lock, no waiting.
    fn try_append(
        &self,
        record: &ProducerRecord<'_>,
        new: &NewRecord<'_>,
        reservation: &mut usize,
    ) -> Step {
        let mut state = self.lock();
        loop {
            if state.closing {
                return Step::Done(Err(ClientError::Closed));
            }
            let Some(&TopicIncarnation {
                id: topic_id,
                partitions,
            }) = state.incarnations.get(record.topic)
            else {
                return Step::NeedPartitionCount;
            };
            let partition =
                match choose_partition(&mut state, &self.config.partitioner, record, partitions) {
                    Ok(p) => p,
                    Err(e) => return Step::Done(Err(e)),
                };
            let open = (*reservation > 0).then(|| (*reservation, Instant::now()));
            match state
                .batches
                .append(record.topic, topic_id, partitions, partition, new, open)
            {
                Append::Added {
                    batch,
                    index,
                    sealed,
                    reserved,
                } => {
                    *reservation -= reserved;
                    if sealed {
                        state
                            .sticky
                            .batch_closed(record.topic, partition, partitions);
                    }
                    // A new batch needs its linger timer, a full one needs sending: either
                    // way the sender has work.
                    if sealed || index == 0 {
                        self.wake.notify_one();
                    }
                    return Step::Done(Ok(DeliveryHandle::new(batch, index)));
                }
                Append::Sealed => {
                    // A keyless record moves to the next sticky partition on the next round.
                    state
                        .sticky
                        .batch_closed(record.topic, partition, partitions);
                    self.wake.notify_one();
                }
                Append::NeedsBatch { bytes } => {
                    let max = self.config.limits().max_request_bytes;
                    let size = state.batches.single_record_batch_len(new);
                    if size > max {
                        return Step::Done(Err(ClientError::RecordTooLarge { size, max }));
                    }
                    let wanted = bytes.saturating_sub(*reservation);
                    match self.memory.try_acquire_many(wanted as u32) {
                        Ok(permit) => {
                            permit.forget();
                            *reservation += wanted;
                        }
                        Err(_) => return Step::NeedMemory(wanted as u32),
                    }
                }
            }
        }
    }
}

impl Producer {
    /// Connects to the cluster and starts the sender task.
    ///
    /// # Errors
    /// As [`Cluster::connect`].
    pub async fn connect(config: ProducerConfig) -> Result<Producer, ClientError> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        Ok(Producer::with_cluster(cluster, config))
    }

    /// A producer over an existing cluster handle (sharing its connections).
    ///
    /// # Panics
    /// If `batch_size` is not larger than a batch header (61 bytes).
    pub fn with_cluster(cluster: Cluster, config: ProducerConfig) -> Producer {
        let state = State {
            batches: Accumulator::new(config.limits()),
            sticky: StickyPartitioner::new(config.client.seed ^ STICKY_SALT),
            incarnations: BTreeMap::new(),
            write_orders: BTreeMap::new(),
            flush_below: 0,
            closing: false,
        };
        let shared = Arc::new(Shared {
            cluster,
            // Never less than one request, or a record of max_request_bytes could wait forever.
            memory: Semaphore::new(
                config
                    .buffer_memory
                    .max(config.limits().max_request_bytes)
                    .min(u32::MAX as usize),
            ),
            config,
            state: Mutex::new(state),
            wake: Notify::new(),
            completed_below: watch::Sender::new(0),
            identity: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(run_sender(shared.clone()));
        Producer {
            handle: Arc::new(LastHandle { shared }),
        }
    }

    /// The settings this producer was made with.
    pub fn config(&self) -> &ProducerConfig {
        &self.handle.shared.config
    }

    /// Queues `record` for its partition and returns a handle on its delivery. Returns at once
    /// unless the topic's metadata must be fetched or the buffer memory is exhausted.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`/`UNKNOWN_PARTITION` for a missing topic or partition,
    /// [`ClientError::RecordTooLarge`], [`ClientError::Closed`] after [`Producer::close`].
    pub async fn send(&self, record: ProducerRecord<'_>) -> Result<DeliveryHandle, ClientError> {
        let shared = &self.handle.shared;
        let new = NewRecord {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: record
                .timestamp
                .unwrap_or_else(|| shared.config.clock.now_ms()),
        };
        // Buffer memory this call holds for a batch it has not opened yet.
        let mut reservation = 0usize;
        let outcome = loop {
            match shared.try_append(&record, &new, &mut reservation) {
                Step::Done(outcome) => break outcome,
                Step::NeedPartitionCount => match shared.cluster.incarnation(record.topic).await {
                    Ok(incarnation) => {
                        shared
                            .lock()
                            .incarnations
                            .insert(record.topic.to_owned(), incarnation);
                    }
                    Err(e) => break Err(e),
                },
                Step::NeedMemory(wanted) => {
                    // Memory comes back as batches complete, so waiting here is the
                    // producer's backpressure.
                    match shared.memory.acquire_many(wanted).await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break Err(ClientError::Closed),
                    }
                    reservation += wanted as usize;
                }
            }
        };
        if reservation > 0 {
            shared.memory.add_permits(reservation);
        }
        outcome
    }

    /// Waits until every record sent before this call has completed (acknowledged, or failed
    /// after retries). Lingering batches go out at once. Outcomes are on the handles.
    pub async fn flush(&self) {
        let shared = &self.handle.shared;
        let target = {
            let mut state = shared.lock();
            state.flush_below = state.flush_below.max(state.batches.next_seq());
            state.flush_below
        };
        shared.wake.notify_one();
        let mut completed = shared.completed_below.subscribe();
        // The sender is the only writer and lives until every batch completes, so the
        // channel cannot close before the target is reached.
        let _ = completed.wait_for(|&below| below >= target).await;
    }

    /// Flushes, then refuses further sends.
    pub async fn close(&self) {
        self.flush().await;
        self.handle.shared.lock().closing = true;
        self.handle.shared.wake.notify_one();
    }

    /// The cluster handle (connections and metadata) this producer uses.
    pub fn cluster(&self) -> &Cluster {
        &self.handle.shared.cluster
    }
}

fn choose_partition(
    state: &mut State,
    partitioner: &Partitioner,
    record: &ProducerRecord<'_>,
    partitions: u32,
) -> Result<u32, ClientError> {
    if let Some(PartitionId(p)) = record.partition {
        if p >= partitions {
            return Err(ClientError::Api(ApiError::unknown_partition(
                record.topic,
                PartitionId(p),
                partitions,
            )));
        }
        return Ok(p);
    }
    let chosen = match (partitioner, record.key) {
        (Partitioner::Default, Some(key)) => Some(partition_for_key(key, partitions)),
        (Partitioner::Custom(f), key) => f(record.topic, key, partitions).map(|p| p % partitions),
        _ => None,
    };
    Ok(chosen.unwrap_or_else(|| state.sticky.partition(record.topic, partitions)))
}

/// The background sender: seals lingered batches and starts requests, then sleeps until the
/// next linger deadline or a wake-up.
async fn run_sender(shared: Arc<Shared>) {
    loop {
        let (jobs, deadline, finished) = {
            let mut guard = shared.lock();
            let state = &mut *guard;
            let drained = state
                .batches
                .drain(Instant::now(), state.flush_below, state.closing);
            for (topic, partition) in &drained.lingered {
                let partitions = state.incarnations.get(&**topic).map_or(1, |i| i.partitions);
                state.sticky.batch_closed(topic, *partition, partitions);
            }
            let finished = state.closing && state.batches.is_idle();
            // Turns are taken here, under the lock and in drain order, which is the order
            // of the partition's batches.
            let jobs: Vec<(ProduceJob, Turn)> = drained
                .jobs
                .into_iter()
                .map(|job| {
                    let order = state
                        .write_orders
                        .entry((job.topic.clone(), job.partition))
                        .or_default();
                    let turn = order.take();
                    (job, turn)
                })
                .collect();
            (jobs, drained.next_deadline, finished)
        };
        for (job, turn) in jobs {
            tokio::spawn(run_job(shared.clone(), job, turn));
        }
        if finished {
            return;
        }
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    biased;
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Stamps the job's batches with the producer id and the partition's next sequences, taking a
/// producer id first if there is none. Returns the id used.
async fn stamp_job(shared: &Shared, job: &mut ProduceJob) -> Result<i64, ClientError> {
    let mut identity = shared.identity.lock().await;
    if identity.is_none() {
        let reply = shared
            .cluster
            .request(Route::Any, Request::InitProducerId(InitProducerId {}))
            .await?;
        let given = expect_reply::<InitProducerId>(reply)?;
        *identity = Some(Identity {
            producer_id: given.producer_id,
            epoch: given.producer_epoch,
            next: BTreeMap::new(),
        });
    }
    let identity = identity.as_mut().expect("set above");
    let next = identity
        .next
        .entry((job.topic.clone(), job.partition))
        .or_insert(0);
    for batch in &mut job.batches {
        let mut bytes = bytes::BytesMut::from(&batch.bytes[..]);
        set_producer(&mut bytes, identity.producer_id, identity.epoch, *next);
        batch.bytes = bytes.freeze();
        *next = ((i64::from(*next) + i64::from(batch.records)) % SEQUENCE_SPACE) as i32;
    }
    Ok(identity.producer_id)
}

/// A request of producer `producer_id` failed for good: whether its batches were written is
/// not known, so the partition's sequence is in doubt. The next request takes a new id.
async fn forget_identity(shared: &Shared, producer_id: i64) {
    let mut identity = shared.identity.lock().await;
    if identity
        .as_ref()
        .is_some_and(|i| i.producer_id == producer_id)
    {
        *identity = None;
    }
}

/// Sends one request (retried by the cluster handle) and completes its batches.
async fn run_job(shared: Arc<Shared>, mut job: ProduceJob, turn: Turn) {
    let config = &shared.config;
    let stamped = if config.idempotence && config.acks != Acks::None {
        Some(stamp_job(&shared, &mut job).await)
    } else {
        None
    };
    let result = match stamped {
        Some(Err(e)) => Err(e),
        Some(Ok(producer_id)) => {
            let result = send_job(&shared, &job, turn).await;
            match result {
                // Written before, at an offset the partition no longer remembers.
                Err(e) if e.code() == Some(ErrorCode::DUPLICATE_SEQUENCE) => Ok(None),
                Err(e) => {
                    forget_identity(&shared, producer_id).await;
                    Err(e)
                }
                ok => ok,
            }
        }
        None => send_job(&shared, &job, turn).await,
    };
    complete_job(&shared, job, result);
}

/// Sends the job's request, retried by the cluster handle, written in `turn`; the base offset
/// when there is one.
async fn send_job(
    shared: &Shared,
    job: &ProduceJob,
    turn: Turn,
) -> Result<Option<Offset>, ClientError> {
    let config = &shared.config;
    let partition = PartitionId(job.partition);
    let request = Request::Produce(Produce {
        topic: job.topic.to_string(),
        partition,
        acks: config.acks,
        timeout_ms: config
            .client
            .connection
            .request_timeout
            .as_millis()
            .try_into()
            .unwrap_or(u32::MAX),
        batches: job.batches.iter().map(|b| b.bytes.clone()).collect(),
        // Kept on every retry: the records go to the incarnation they were sent under or
        // fail, never to a topic re-created under the same name.
        topic_id: job.topic_id,
    });
    let route = Route::Leader {
        topic: job.topic.to_string(),
        partition,
    };
    let result = if config.acks == Acks::None {
        shared
            .cluster
            .send_no_reply_in_turn(route, request, turn)
            .await
            .map(|()| None)
    } else {
        match shared.cluster.request_in_turn(route, request, turn).await {
            Ok(reply) => expect_reply::<Produce>(reply).map(|r| Some(r.base_offset)),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = &result {
        tracing::debug!(topic = %job.topic, %partition, error = %e, "produce failed");
    }
    result
}

/// Drops a partition's write order once no request holds a turn in it or is unanswered under
/// it: the next request starts a fresh one, and a producer that wrote to many partitions (or
/// topics since deleted) keeps no order for each of them for ever.
fn forget_idle_order(
    orders: &mut BTreeMap<(Arc<str>, u32), Arc<WriteOrder>>,
    topic: &Arc<str>,
    partition: u32,
) {
    let key = (topic.clone(), partition);
    // Turns are only taken from the map, under the same lock as this check: held by the map
    // alone, the order can gain no holder before it is removed.
    if orders
        .get(&key)
        .is_some_and(|order| Arc::strong_count(order) == 1)
    {
        orders.remove(&key);
    }
}

/// Completes the job's batches with `result` and gives back their memory.
fn complete_job(shared: &Shared, job: ProduceJob, result: Result<Option<Offset>, ClientError>) {
    let config = &shared.config;
    let partition = PartitionId(job.partition);
    // The batches got contiguous offsets, in request order.
    let mut next_base = result.as_ref().ok().copied().flatten();
    for batch in &job.batches {
        let outcome = match &result {
            Ok(_) => Ok(next_base),
            Err(e) => Err(e.clone()),
        };
        if let Some(observer) = &config.on_batch_complete {
            observer(&BatchOutcome {
                topic: &job.topic,
                partition,
                records: batch.records,
                bytes: batch.bytes.len(),
                opened_at: batch.opened_at,
                result: outcome.as_ref().map(|o| *o),
            });
        }
        batch.shared.complete(outcome);
        next_base = next_base.map(|b| Offset(b.0 + u64::from(batch.records)));
    }

    let released = {
        let mut state = shared.lock();
        if matches!(
            result.as_ref().err().and_then(ClientError::code),
            Some(
                ErrorCode::UNKNOWN_PARTITION
                    | ErrorCode::UNKNOWN_TOPIC
                    | ErrorCode::UNKNOWN_TOPIC_ID
            )
        ) {
            // The topic changed (deleted, re-created): resolve it again before the next send.
            state.incarnations.remove(&*job.topic);
            state.sticky.forget(&job.topic);
        }
        let released = state.batches.complete(&job);
        forget_idle_order(&mut state.write_orders, &job.topic, job.partition);
        // Under the lock, so the published value only grows.
        shared
            .completed_below
            .send_replace(state.batches.completed_below());
        released
    };
    shared.memory.add_permits(released);
    shared.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_s_write_order_is_forgotten_once_nothing_holds_it() {
        let topic: Arc<str> = Arc::from("orders");
        let mut orders: BTreeMap<(Arc<str>, u32), Arc<WriteOrder>> = BTreeMap::new();
        let turn = orders.entry((topic.clone(), 0)).or_default().take();
        forget_idle_order(&mut orders, &topic, 0);
        assert_eq!(orders.len(), 1, "a turn is held");
        let unanswered = turn.queued_for(gregor_protocol::NodeId(1));
        forget_idle_order(&mut orders, &topic, 0);
        assert_eq!(orders.len(), 1, "a request is unanswered");
        drop(unanswered);
        forget_idle_order(&mut orders, &topic, 1);
        assert_eq!(orders.len(), 1, "another partition's order is not this one");
        forget_idle_order(&mut orders, &topic, 0);
        assert!(orders.is_empty());
    }
}
