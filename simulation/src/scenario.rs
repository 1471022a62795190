//! The first scenario: one node crashed and restarted at seeded moments under a seeded
//! workload of acks=all producers and a consumer group, with retention running.
//!
//! Checks: no acknowledged record lost (each is found at its acknowledged offset, unless
//! retention legitimately removed it), offsets contiguous, committed group offsets never move
//! back, retention never removes a record younger than its bound and the log start never moves
//! back.

use crate::clock::VirtualClock;
use crate::trace::Trace;
use gregor_actors::api::{
    Acks, ApiError, CommitOffsets, CreateTopic, ErrorCode, Fetch, FetchOffsets, OffsetCommit,
    Produce, Request, Response, TopicConfigOverrides,
};
use gregor_actors::{start_node_with, Broker, NodeConfig, NodeEnv};
use gregor_cluster::{NoPeers, RaftTuning};
use gregor_storage::batch::{BatchBuilder, BatchView, NewRecord};
use gregor_storage::{Clock, FlushPolicy, NodeId, Offset, PartitionId, SyncMode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "sim";
const GROUP: &str = "sim-group";

#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub seed: u64,
    /// Virtual time the workload runs for.
    pub duration_ms: u64,
    pub partitions: u32,
    pub producers: u32,
    pub crashes: u32,
    pub retention_ms: i64,
    /// Print every event as it happens.
    pub verbose: bool,
    /// Harness self-test: before the final check, record one acknowledgement the node never
    /// gave, so a run proves its checker reports a lost record.
    pub inject_phantom_ack: bool,
}

impl ScenarioConfig {
    pub fn new(seed: u64) -> Self {
        ScenarioConfig {
            seed,
            duration_ms: 60_000,
            partitions: 3,
            producers: 3,
            crashes: 3,
            retention_ms: 20_000,
            verbose: false,
            inject_phantom_ack: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimReport {
    pub seed: u64,
    pub digest: u64,
    pub events: usize,
    pub acked_records: usize,
    pub restarts: u32,
    pub violations: Vec<String>,
}

impl SimReport {
    pub fn replay_command(&self) -> String {
        format!("cargo run -p gregor-simulation -- --seed {}", self.seed)
    }
}

/// Runs one seed on a fresh thread (std's hash seeds are per thread) and reports.
///
/// # Panics
/// If the simulation thread itself panics: that is a bug in Gregor or the harness, and the
/// panic message says which seed.
pub fn run(config: ScenarioConfig) -> SimReport {
    let seed = config.seed;
    std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .spawn(move || run_here(config))
        .expect("spawning the simulation thread")
        .join()
        .unwrap_or_else(|_| panic!("simulation of seed {seed} panicked"))
}

fn run_here(config: ScenarioConfig) -> SimReport {
    let dir = tempfile::tempdir().expect("temp dir for the simulated node");
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("current-thread runtime")
    });
    let path = dir.path().to_path_buf();
    system.block_on(async move { Sim::new(config, path).run().await })
}

/// What one acknowledged record was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AckedRecord {
    value: Vec<u8>,
    timestamp: i64,
}

struct Model {
    trace: Trace,
    start: tokio::time::Instant,
    verbose: bool,
    acked: BTreeMap<(u32, u64), AckedRecord>,
    /// Last acknowledged commit per partition.
    committed: BTreeMap<u32, Offset>,
    /// Highest log start seen per partition.
    log_start: BTreeMap<u32, Offset>,
    violations: Vec<String>,
}

impl Model {
    fn event(&mut self, event: String) {
        let at = self.start.elapsed().as_millis() as u64;
        if self.verbose {
            println!("{at:>9} {event}");
        }
        self.trace.record(at, event);
    }

    fn violation(&mut self, what: String) {
        self.event(format!("VIOLATION {what}"));
        self.violations.push(what);
    }
}

type Shared<T> = Rc<RefCell<T>>;

struct Sim {
    config: ScenarioConfig,
    data_dir: PathBuf,
    clock: Arc<VirtualClock>,
    broker: Shared<Option<Broker>>,
    model: Shared<Model>,
    done: Shared<bool>,
}

impl Sim {
    fn new(config: ScenarioConfig, data_dir: PathBuf) -> Self {
        let model = Model {
            trace: Trace::new(),
            start: tokio::time::Instant::now(),
            verbose: config.verbose,
            acked: BTreeMap::new(),
            committed: BTreeMap::new(),
            log_start: BTreeMap::new(),
            violations: Vec::new(),
        };
        Sim {
            config,
            data_dir,
            clock: Arc::new(VirtualClock::new()),
            broker: Rc::new(RefCell::new(None)),
            model: Rc::new(RefCell::new(model)),
            done: Rc::new(RefCell::new(false)),
        }
    }

    fn node_config(&self) -> NodeConfig {
        let mut config = NodeConfig::single_node(&self.data_dir);
        config.node_id = NodeId(1);
        // The simulation cannot observe fsyncs (a crash here keeps the page cache), so it
        // skips them and spends its wall time on the logic.
        config.flush = FlushPolicy::Never;
        config.offsets_partitions = 4;
        config.retention_check_interval_ms = 1_000;
        config
    }

    fn env(&self) -> NodeEnv {
        NodeEnv {
            clock: self.clock.clone(),
            transport: Arc::new(NoPeers),
            raft_tuning: RaftTuning::default(),
            sync_mode: SyncMode::Inline,
            cluster: None,
        }
    }

    async fn start_node(&self) -> Broker {
        start_node_with(self.node_config(), self.env())
            .await
            .expect("the simulated node starts")
    }

    async fn run(self) -> SimReport {
        let mut rng = SmallRng::seed_from_u64(self.config.seed);
        let broker = self.start_node().await;
        let created = broker
            .handle(Request::CreateTopic(CreateTopic {
                name: TOPIC.into(),
                partitions: self.config.partitions,
                replication_factor: 1,
                config: TopicConfigOverrides {
                    retention_ms: Some(self.config.retention_ms),
                    ..Default::default()
                },
            }))
            .await;
        assert!(
            created.is_ok(),
            "creating the simulation topic: {created:?}"
        );
        *self.broker.borrow_mut() = Some(broker);
        self.model.borrow_mut().event(format!(
            "start seed={} partitions={}",
            self.config.seed, self.config.partitions
        ));

        let mut tasks = Vec::new();
        for producer in 0..self.config.producers {
            let rng =
                SmallRng::seed_from_u64(self.config.seed ^ (0x9e37_79b9 * u64::from(producer + 1)));
            tasks.push(actix_rt::spawn(producer_loop(
                producer,
                rng,
                self.config.partitions,
                self.broker.clone(),
                self.model.clone(),
                self.clock.clone(),
                self.done.clone(),
            )));
        }
        tasks.push(actix_rt::spawn(consumer_loop(
            SmallRng::seed_from_u64(self.config.seed ^ 0xc0ff_ee00),
            self.config.partitions,
            self.broker.clone(),
            self.model.clone(),
            self.done.clone(),
        )));

        let mut crash_times: Vec<u64> = (0..self.config.crashes)
            .map(|_| rng.gen_range(1_000..self.config.duration_ms))
            .collect();
        crash_times.sort_unstable();
        let mut restarts = 0;
        let started = tokio::time::Instant::now();
        for at in crash_times {
            tokio::time::sleep_until(started + Duration::from_millis(at)).await;
            let broker = self.broker.borrow_mut().take().expect("node is up");
            self.model.borrow_mut().event("crash".into());
            broker.shutdown().await;
            let down_ms = rng.gen_range(10..2_000);
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
            let broker = self.start_node().await;
            restarts += 1;
            self.model
                .borrow_mut()
                .event(format!("restart after {down_ms} ms down"));
            self.verify_after_restart(&broker).await;
            *self.broker.borrow_mut() = Some(broker);
        }
        tokio::time::sleep_until(started + Duration::from_millis(self.config.duration_ms)).await;
        *self.done.borrow_mut() = true;
        for task in tasks {
            let _ = task.await;
        }
        let broker = self.broker.borrow_mut().take().expect("node is up");
        if self.config.inject_phantom_ack {
            let mut model = self.model.borrow_mut();
            let (&(partition, offset), _) = model
                .acked
                .iter()
                .next_back()
                .expect("the workload acked something");
            let phantom = AckedRecord {
                value: b"never-acked".to_vec(),
                timestamp: self.clock.now_ms(),
            };
            model.acked.insert((partition, offset + 1_000_000), phantom);
        }
        self.verify_logs(&broker).await;
        broker.shutdown().await;
        self.model.borrow_mut().event("end".into());

        let model = self.model.borrow();
        SimReport {
            seed: self.config.seed,
            digest: model.trace.digest(),
            events: model.trace.events().len(),
            acked_records: model.acked.len(),
            restarts,
            violations: model.violations.clone(),
        }
    }

    async fn verify_after_restart(&self, broker: &Broker) {
        let committed = broker
            .handle(Request::FetchOffsets(FetchOffsets {
                group: GROUP.into(),
                topic: Some(TOPIC.into()),
            }))
            .await;
        self.check_committed_offsets(committed);
        self.verify_logs(broker).await;
    }

    fn check_committed_offsets(&self, committed: Result<Response, ApiError>) {
        let mut model = self.model.borrow_mut();
        match committed {
            Ok(Response::FetchOffsets(offsets)) => {
                let found: BTreeMap<u32, Offset> =
                    offsets.iter().map(|c| (c.partition.0, c.offset)).collect();
                let expected = model.committed.clone();
                for (partition, offset) in expected {
                    match found.get(&partition) {
                        Some(now) if *now >= offset => {}
                        other => model.violation(format!(
                            "committed offset of partition {partition} moved back: acknowledged {offset}, after restart {other:?}"
                        )),
                    }
                }
                model.event(format!("offsets survive restart: {found:?}"));
            }
            other => model.violation(format!(
                "fetching committed offsets after restart failed: {other:?}"
            )),
        }
    }

    /// Reads every partition from its log start to its end and checks it against the model.
    async fn verify_logs(&self, broker: &Broker) {
        for partition in 0..self.config.partitions {
            let (records, log_start, high_watermark) = match read_all(broker, partition).await {
                Ok(read) => read,
                Err(error) => {
                    self.model
                        .borrow_mut()
                        .violation(format!("reading partition {partition} failed: {error}"));
                    continue;
                }
            };
            let now = self.clock.now_ms();
            let mut model = self.model.borrow_mut();
            check_log_start(
                &mut model,
                partition,
                log_start,
                now,
                self.config.retention_ms,
            );
            let mut expected = log_start.0;
            for (offset, value) in &records {
                if *offset != expected {
                    model.violation(format!(
                        "partition {partition}: offset {offset} follows {}",
                        expected.wrapping_sub(1)
                    ));
                }
                expected = offset + 1;
                if let Some(acked) = model.acked.get(&(partition, *offset)) {
                    if &acked.value != value {
                        let what = format!("partition {partition} offset {offset} holds another record than was acknowledged");
                        model.violation(what);
                    }
                }
            }
            if expected != high_watermark.0 {
                model.violation(format!("partition {partition}: read up to {expected}, high watermark is {high_watermark}"));
            }
            let lost: Vec<u64> = model
                .acked
                .range((partition, log_start.0)..(partition, u64::MAX))
                .filter(|((_, offset), _)| !records.contains_key(offset))
                .map(|((_, offset), _)| *offset)
                .collect();
            if !lost.is_empty() {
                model.violation(format!(
                    "partition {partition}: acknowledged offsets lost: {lost:?}"
                ));
            }
            model.event(format!(
                "verified partition {partition}: log [{log_start}, {high_watermark}) {} records",
                records.len()
            ));
        }
    }
}

/// Retention may only have removed records older than its bound, and the log start never
/// moves back.
fn check_log_start(
    model: &mut Model,
    partition: u32,
    log_start: Offset,
    now_ms: i64,
    retention_ms: i64,
) {
    let previous = model.log_start.get(&partition).copied().unwrap_or_default();
    if log_start < previous {
        model.violation(format!(
            "partition {partition}: log start moved back from {previous} to {log_start}"
        ));
        return;
    }
    if log_start > previous {
        let bound = now_ms - retention_ms;
        let too_young: Vec<u64> = model
            .acked
            .range((partition, previous.0)..(partition, log_start.0))
            .filter(|(_, r)| r.timestamp >= bound)
            .map(|((_, o), _)| *o)
            .collect();
        if !too_young.is_empty() {
            model.violation(format!(
                "partition {partition}: retention removed records younger than {retention_ms} ms: {too_young:?}"
            ));
        }
        model.log_start.insert(partition, log_start);
        model.event(format!("partition {partition}: log start now {log_start}"));
    }
}

async fn read_all(
    broker: &Broker,
    partition: u32,
) -> Result<(BTreeMap<u64, Vec<u8>>, Offset, Offset), ApiError> {
    let mut records = BTreeMap::new();
    let mut position = None;
    loop {
        let offset = position.unwrap_or(Offset(0));
        let fetched = broker
            .handle(Request::Fetch(Fetch {
                topic: TOPIC.into(),
                partition: PartitionId(partition),
                offset,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 0,
            }))
            .await;
        let reply = match fetched {
            Ok(Response::Fetch(reply)) => reply,
            Err(e) if e.code == ErrorCode::OFFSET_OUT_OF_RANGE && position.is_none() => {
                // The log no longer starts at 0: begin at its start.
                let start = match e.detail {
                    Some(gregor_actors::api::ErrorDetail::OffsetRange {
                        log_start_offset, ..
                    }) => log_start_offset,
                    _ => return Err(e),
                };
                position = Some(start);
                continue;
            }
            Err(e) => return Err(e),
            Ok(other) => return Err(ApiError::internal(format!("unexpected reply {other:?}"))),
        };
        let start = position
            .unwrap_or(reply.log_start_offset)
            .max(reply.log_start_offset);
        let mut next = start.0;
        for batch in &reply.batches {
            let view = BatchView::validate(batch).map_err(|e| ApiError::internal(e.to_string()))?;
            for record in view.records() {
                let record = record.map_err(|e| ApiError::internal(e.to_string()))?;
                if record.offset >= next {
                    records.insert(record.offset, record.value.unwrap_or_default().to_vec());
                    next = record.offset + 1;
                }
            }
        }
        if next >= reply.high_watermark.0 || reply.batches.is_empty() {
            let first = records
                .keys()
                .next()
                .copied()
                .map_or(reply.high_watermark, Offset);
            return Ok((records, first.min(start), reply.high_watermark));
        }
        position = Some(Offset(next));
    }
}

async fn producer_loop(
    producer: u32,
    mut rng: SmallRng,
    partitions: u32,
    broker: Shared<Option<Broker>>,
    model: Shared<Model>,
    clock: Arc<VirtualClock>,
    done: Shared<bool>,
) {
    let mut seq = 0u64;
    // Invariant 2: one producer's acknowledged batches to a partition get increasing offsets in
    // the order it sent them.
    let mut last_acked: BTreeMap<u32, u64> = BTreeMap::new();
    while !*done.borrow() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..80))).await;
        let Some(node) = broker.borrow().clone() else {
            continue;
        };
        let partition = rng.gen_range(0..partitions);
        let count = rng.gen_range(1..=20);
        let timestamp = clock.now_ms();
        let values: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("p{producer}-s{}", seq + i).into_bytes())
            .collect();
        seq += count;
        let mut batch = BatchBuilder::with_capacity(64 * values.len());
        for value in &values {
            batch.push(&NewRecord {
                key: Some(&producer.to_be_bytes()),
                value: Some(value),
                headers: &[],
                timestamp,
            });
        }
        let request = Request::Produce(Produce {
            topic: TOPIC.into(),
            partition: PartitionId(partition),
            acks: Acks::All,
            timeout_ms: 10_000,
            batches: vec![batch.finish()],
        });
        let result = node.handle(request).await;
        let mut model = model.borrow_mut();
        match result {
            Ok(Response::Produce(reply)) => {
                let last = last_acked.insert(partition, reply.base_offset.0 + count - 1);
                if last.is_some_and(|last| reply.base_offset.0 <= last) {
                    model.violation(format!(
                        "producer {producer}: batch at {} on partition {partition} is not after its previous one at {last:?}",
                        reply.base_offset
                    ));
                }
                model.event(format!(
                    "produce p{producer} part={partition} n={count} -> offset {}",
                    reply.base_offset
                ));
                for (i, value) in values.into_iter().enumerate() {
                    let offset = reply.base_offset.0 + i as u64;
                    let record = AckedRecord { value, timestamp };
                    if let Some(previous) = model.acked.insert((partition, offset), record.clone())
                    {
                        if previous != record {
                            model.violation(format!(
                                "partition {partition} offset {offset} acknowledged twice"
                            ));
                        }
                    }
                }
            }
            Ok(other) => model.violation(format!("produce got {other:?}")),
            Err(error) => model.event(format!(
                "produce p{producer} part={partition} n={count} -> {}",
                error.code.name()
            )),
        }
    }
}

async fn consumer_loop(
    mut rng: SmallRng,
    partitions: u32,
    broker: Shared<Option<Broker>>,
    model: Shared<Model>,
    done: Shared<bool>,
) {
    let mut positions: BTreeMap<u32, Offset> = BTreeMap::new();
    let mut fetches_since_commit = 0;
    while !*done.borrow() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..50))).await;
        let Some(node) = broker.borrow().clone() else {
            continue;
        };
        if positions.is_empty() {
            // (Re)start from the group's committed offsets, like a consumer joining its group.
            let committed = node
                .handle(Request::FetchOffsets(FetchOffsets {
                    group: GROUP.into(),
                    topic: Some(TOPIC.into()),
                }))
                .await;
            if let Ok(Response::FetchOffsets(offsets)) = committed {
                positions = (0..partitions).map(|p| (p, Offset(0))).collect();
                for c in offsets {
                    positions.insert(c.partition.0, c.offset);
                }
            } else {
                continue;
            }
        }
        let partition = rng.gen_range(0..partitions);
        let position = positions[&partition];
        let fetched = node
            .handle(Request::Fetch(Fetch {
                topic: TOPIC.into(),
                partition: PartitionId(partition),
                offset: position,
                max_bytes: rng.gen_range(1..64 * 1024),
                max_wait_ms: rng.gen_range(0..200),
                min_bytes: 1,
            }))
            .await;
        match fetched {
            Ok(Response::Fetch(reply)) => {
                let mut next = position.0;
                let mut m = model.borrow_mut();
                for batch in &reply.batches {
                    let Ok(view) = BatchView::validate(batch) else {
                        m.violation(format!(
                            "partition {partition}: fetched a batch that does not validate"
                        ));
                        continue;
                    };
                    for record in view.records().flatten() {
                        if record.offset < next {
                            continue;
                        }
                        if record.offset != next {
                            m.violation(format!(
                                "partition {partition}: consumer saw offset {} after {}",
                                record.offset, next
                            ));
                        }
                        if let Some(acked) = m.acked.get(&(partition, record.offset)) {
                            if Some(acked.value.as_slice()) != record.value {
                                m.violation(format!(
                                    "partition {partition} offset {} differs from its ack",
                                    record.offset
                                ));
                            }
                        }
                        next = record.offset + 1;
                    }
                }
                m.event(format!(
                    "fetch part={partition} from {position} -> to {next} hw={}",
                    reply.high_watermark
                ));
                positions.insert(partition, Offset(next));
            }
            Err(error) if error.code == ErrorCode::OFFSET_OUT_OF_RANGE => {
                if let Some(gregor_actors::api::ErrorDetail::OffsetRange {
                    log_start_offset, ..
                }) = error.detail
                {
                    model.borrow_mut().event(format!("fetch part={partition} from {position} -> out of range, to {log_start_offset}"));
                    positions.insert(partition, log_start_offset);
                }
            }
            Err(error) => {
                model
                    .borrow_mut()
                    .event(format!("fetch part={partition} -> {}", error.code.name()));
                positions.clear();
                continue;
            }
            Ok(other) => model.borrow_mut().violation(format!("fetch got {other:?}")),
        }
        fetches_since_commit += 1;
        if fetches_since_commit >= 5 {
            fetches_since_commit = 0;
            let offsets: Vec<OffsetCommit> = positions
                .iter()
                .map(|(p, o)| OffsetCommit {
                    topic: TOPIC.into(),
                    partition: PartitionId(*p),
                    offset: *o,
                    metadata: None,
                })
                .collect();
            let result = node
                .handle(Request::CommitOffsets(CommitOffsets {
                    group: GROUP.into(),
                    offsets,
                    member: None,
                }))
                .await;
            let mut m = model.borrow_mut();
            match result {
                Ok(_) => {
                    for (p, o) in &positions {
                        let previous = m.committed.insert(*p, *o);
                        if previous.is_some_and(|prev| prev > *o) {
                            let what = format!("consumer committed {o} below its earlier {previous:?} on partition {p}");
                            m.violation(what);
                        }
                    }
                    m.event(format!("commit {positions:?}"));
                }
                Err(error) => m.event(format!("commit -> {}", error.code.name())),
            }
        }
    }
}
