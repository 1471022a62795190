//! One run of the simulation: a cluster started from a seed, a workload and a fault plan in
//! the safety phase, then everything healed and the liveness phase, the final reads, and the
//! checkers' verdict.

use crate::check::{self, Checker, Notes, Violation};
use crate::clock::{SimClock, EPOCH_MS_AT_START};
use crate::cluster::SimCluster;
use crate::faults::{self, FaultChoice, FaultKind, FaultLog, Plan, Script};
use crate::history::{AckLevel, History, SendOutcome};
use crate::net::SimNetConfig;
use crate::node::{ClusterSetup, DiskKind, DiskLatency, NodeSetup, SimNode};
use crate::rng;
use crate::trace::{SharedTrace, Trace};
use crate::workload::{self, ProducerSpec, Recorder, TopicSpec, Workload, WorkloadConfig};
use gregor_storage::{FlushPolicy, NodeId};
use rand::rngs::SmallRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Share of runs (without faults that need the model disk) whose nodes store on real fjall.
const FJALL_SHARE: f64 = 0.2;
/// Members of the workload's shared consumer group.
const GROUP_MEMBERS: u32 = 3;
/// How long the cluster may take to accept the workload's topics.
const SETUP_BOUND: Duration = Duration::from_secs(60);

/// Breaks the system on purpose, so a run can show its checkers report what they must.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// Nodes acknowledge writes before they are durable (flush policy `Never`); with power
    /// loss, acknowledged records vanish.
    pub ack_before_fsync: bool,
    /// Every producer retries, and the workload claims they are idempotent, which they are
    /// not: a retried send may be stored twice.
    pub claim_idempotence: bool,
    /// No producer retries, and the workload takes every failed send for a definite failure,
    /// though a send whose reply was lost may have been stored.
    pub claim_failures_definite: bool,
    /// The checkers are told no clock was skewed, whatever the faults did.
    pub hide_clock_skew: bool,
    /// After the liveness phase, a committed record in one replica's log is rewritten.
    pub tamper_replica: bool,
    /// The shared group's members misreport to the group checker: they never say they
    /// released a partition or left, and claim commits 1,000 records past what they sent.
    pub misreport_groups: bool,
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub nodes: u32,
    pub faults: FaultChoice,
    /// Virtual length of the safety phase (faults strike).
    pub safety_ms: u64,
    /// After the heal, every stable partition must take a write within this, and be read to
    /// its end within it.
    pub liveness_bound_ms: u64,
    /// Print every event as it happens.
    pub trace: bool,
    /// A scripted scenario instead of the swarm's draw.
    pub script: Option<Script>,
    /// Force a disk kind (otherwise drawn).
    pub disk: Option<DiskKind>,
    /// Every producer sends with these acks (otherwise drawn per producer).
    pub acks: Option<AckLevel>,
    pub sabotage: Sabotage,
    /// The light workload, for measuring the harness's own speed: one producer sending every
    /// 200-400 ms, one consumer, one group member (the checkers judge it as any other).
    /// Otherwise the chaos workload: 1-3 producers sending every 5-80 ms, 1-2 consumers and a
    /// group of three members.
    pub light_workload: bool,
    /// Wall time the run's process may take before it is killed and the run reported as hung
    /// (none: as long as it takes).
    pub wall_limit: Option<Duration>,
}

impl RunConfig {
    pub fn new(seed: u64) -> RunConfig {
        RunConfig {
            seed,
            nodes: 3,
            faults: FaultChoice::Swarm,
            safety_ms: 20_000,
            liveness_bound_ms: 60_000,
            trace: false,
            script: None,
            disk: None,
            acks: None,
            sabotage: Sabotage::default(),
            light_workload: false,
            wall_limit: None,
        }
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let faults = match &self.faults {
            FaultChoice::Swarm => String::new(),
            FaultChoice::All => " --faults all".into(),
            FaultChoice::Only(kinds) if kinds.is_empty() => " --faults none".into(),
            FaultChoice::Only(kinds) => {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                format!(" --faults {}", names.join(","))
            }
        };
        let light = if self.light_workload {
            " --light-workload"
        } else {
            ""
        };
        format!(
            "cargo run --release -p gregor-simulation -- --seed {} --nodes {}{faults} --safety-ms {}{light}",
            self.seed, self.nodes, self.safety_ms
        )
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub seed: u64,
    /// The trace digest, in hex: the same seed must give the same digest.
    pub digest: String,
    pub events: u64,
    pub nodes: u32,
    pub disk: String,
    pub faults: Vec<String>,
    /// Fault actions carried out.
    pub faults_struck: u64,
    pub sends: usize,
    /// Records acknowledged (acks 1 or all).
    pub acknowledged: usize,
    /// Records handed to consumers.
    pub polled: usize,
    pub violations: Vec<String>,
    pub leader_acked_lost: usize,
    pub duplicates_allowed: usize,
    pub virtual_ms: u64,
    pub wall_ms: u64,
    /// The longest a crashed node's teardown took (virtual ms); its restart waited for it.
    pub slowest_teardown_ms: u64,
    /// The last events of the trace, for a failure report.
    #[serde(skip)]
    pub trace_tail: Vec<String>,
    /// The fault plan as a script (`--print-plan`).
    #[serde(skip)]
    pub plan: String,
    #[serde(skip)]
    pub checkers: Vec<Checker>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Simulated time over wall time.
    pub fn speedup(&self) -> f64 {
        self.virtual_ms as f64 / self.wall_ms.max(1) as f64
    }
}

/// Runs one seed in a child process of its own, on a fresh thread (see
/// [`crate::determinism`]), and reports. A process of its own because tokio seeds each new
/// runtime's generator (which `select!` draws from) from a process-wide counter: the n-th run
/// of a process would otherwise differ from the first.
///
/// # Panics
/// If the binary lacks `deterministic_getrandom!()`, or the child cannot be forked.
pub fn run(config: RunConfig) -> Report {
    let fallback = config.clone();
    let limit = config.wall_limit;
    crate::isolate::in_child(move || run_in_this_process(config), limit)
        .unwrap_or_else(|died| harness_failure(&fallback, &died))
}

/// Runs one seed on a fresh thread of this process: a replay only while this process has made
/// no tokio runtime before (see [`run`]).
///
/// # Panics
/// If the binary lacks `deterministic_getrandom!()`.
pub fn run_in_this_process(config: RunConfig) -> Report {
    let seed = config.seed;
    crate::panics::install_hook();
    crate::determinism::on_fresh_thread(seed, format!("sim-{seed}"), move || {
        let started = wall_clock();
        let system = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("a current-thread runtime")
        });
        crate::panics::capture();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            system.block_on(run_here(config.clone()))
        }));
        let mut report = outcome.unwrap_or_else(|payload| harness_panic(&config, &*payload));
        report.wall_ms = started.elapsed().as_millis() as u64;
        report
    })
}

/// The report of a run whose harness panicked: a violation with every panic message.
fn harness_panic(config: &RunConfig, payload: &(dyn std::any::Any + Send)) -> Report {
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into());
    harness_failure(config, &format!("the run panicked: {message}"))
}

/// The report of a run the harness could not finish.
fn harness_failure(config: &RunConfig, what: &str) -> Report {
    let mut violations = vec![format!("harness: {what}")];
    violations.extend(
        crate::panics::take()
            .into_iter()
            .map(|p| format!("panic: {p}")),
    );
    Report {
        seed: config.seed,
        digest: "-".into(),
        events: 0,
        nodes: config.nodes,
        disk: "-".into(),
        faults: Vec::new(),
        faults_struck: 0,
        sends: 0,
        acknowledged: 0,
        polled: 0,
        violations,
        leader_acked_lost: 0,
        duplicates_allowed: 0,
        virtual_ms: 0,
        wall_ms: 0,
        slowest_teardown_ms: 0,
        trace_tail: Vec::new(),
        plan: String::new(),
        checkers: vec![Checker::Harness],
    }
}

/// The one reading of the wall clock: how long a run took, for the speed report.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// What a run is made of, drawn from the seed (or taken from the script).
struct Shape {
    nodes: u32,
    kinds: BTreeSet<FaultKind>,
    disk: DiskKind,
    safety_ms: u64,
}

fn shape(config: &RunConfig, rng: &mut SmallRng) -> Shape {
    let script = config.script.as_ref();
    let nodes = script.and_then(|s| s.nodes).unwrap_or(config.nodes).max(1);
    // Drawn even for a script, so that a script printed from a run (`--print-plan`) replays
    // that run exactly with the same seed.
    let drawn = config.faults.draw(nodes, rng);
    let mut kinds = match script {
        Some(script) => script.faults.clone(),
        None => drawn,
    };
    let fjall_draw = rng.gen_bool(FJALL_SHARE);
    let disk = config.disk.or(script.and_then(|s| s.disk)).unwrap_or(
        if fjall_draw && !kinds.iter().any(|k| k.needs_model_disk()) {
            DiskKind::Fjall
        } else {
            DiskKind::Model
        },
    );
    if disk == DiskKind::Fjall {
        kinds.retain(|k| !k.needs_model_disk());
    }
    let safety_ms = script.and_then(|s| s.safety_ms).unwrap_or(config.safety_ms);
    Shape {
        nodes,
        kinds,
        disk,
        safety_ms,
    }
}

fn node_setups(shape: &Shape, config: &RunConfig, rng: &mut SmallRng) -> Vec<NodeSetup> {
    let members: Vec<NodeId> = (1..=u64::from(shape.nodes)).map(NodeId).collect();
    // A stream of its own, so that the cluster's shape does not shift the run's other draws.
    let mut cluster_rng = rng::stream(config.seed, "cluster");
    let voters = if cluster_rng.gen_bool(0.5) { 3 } else { 5 };
    let short_grace = cluster_rng.gen_range(2_000..8_000);
    let leader_balance_ms = cluster_rng.gen_range(2_000..10_000);
    let cluster = (shape.nodes > 1).then(|| ClusterSetup {
        members: members.clone(),
        voters: voters.min(shape.nodes as usize),
        // With membership faults a dead node's replicas move away while the run goes on.
        dead_grace_ms: if shape.kinds.contains(&FaultKind::Membership) {
            short_grace
        } else {
            600_000
        },
        leader_balance_ms,
    });
    let drawn: Vec<u64> = members.iter().map(|_| rng.gen_range(300..700)).collect();
    let election_timeouts = spread_election_timeouts(drawn);
    members
        .iter()
        .zip(election_timeouts)
        .map(|(id, election_timeout_ms)| NodeSetup {
            id: *id,
            disk: shape.disk,
            election_timeout_ms,
            heartbeat_ms: 100,
            offsets_partitions: 2,
            retention_check_ms: 500,
            flush: if config.sabotage.ack_before_fsync {
                FlushPolicy::Never
            } else {
                FlushPolicy::Always
            },
            cluster: cluster.clone(),
        })
        .collect()
}

/// Two nodes' election timeouts are never closer than this.
const ELECTION_TIMEOUT_GAP_MS: u64 = 5;

/// Moves apart the drawn election timeouts that are closer than [`ELECTION_TIMEOUT_GAP_MS`],
/// keeping the others as drawn. async-raft draws a fresh timeout for every election, so two
/// candidates that split a vote rarely split the next one; here each node's timeout is fixed,
/// and two voters of one group with the same timeout that lose their leader at the same instant
/// stand together in term after term, each refusing the other (seed 370, five nodes: a
/// partition left with two voters by a drain never elected again). Distinct timeouts drift
/// apart until one candidate's request arrives before the other stands.
fn spread_election_timeouts(drawn: Vec<u64>) -> Vec<u64> {
    let mut order: Vec<usize> = (0..drawn.len()).collect();
    order.sort_by_key(|&i| (drawn[i], i));
    let mut spread = drawn;
    let mut previous: Option<u64> = None;
    for i in order {
        if let Some(previous) = previous {
            spread[i] = spread[i].max(previous + ELECTION_TIMEOUT_GAP_MS);
        }
        previous = Some(spread[i]);
    }
    spread
}

/// The workload of a run. The light one is the chaos one cut down after the same draws, so a
/// seed's topics, fault plan and first producer are the same either way.
fn workload_config(
    shape: &Shape,
    sabotage: Sabotage,
    light: bool,
    rng: &mut SmallRng,
) -> WorkloadConfig {
    let chaos = chaos_workload_config(shape, sabotage, rng);
    if !light {
        return chaos;
    }
    WorkloadConfig {
        producers: chaos.producers.into_iter().take(1).collect(),
        consumers: 1,
        group_members: 1,
        send_pause_ms: (200, 400),
        ..chaos
    }
}

fn chaos_workload_config(shape: &Shape, sabotage: Sabotage, rng: &mut SmallRng) -> WorkloadConfig {
    let retention = shape.kinds.contains(&FaultKind::Retention);
    let mut retention_ms = || retention.then(|| rng.gen_range(3_000..15_000));
    let topics = vec![
        TopicSpec {
            name: "orders".into(),
            partitions: 0,
            retention_ms: retention_ms(),
            max_message_bytes: None,
        },
        TopicSpec {
            name: "events".into(),
            partitions: 0,
            retention_ms: retention_ms(),
            max_message_bytes: Some(2_048),
        },
    ];
    let topics = topics
        .into_iter()
        .map(|t| TopicSpec {
            partitions: rng.gen_range(1..=3),
            ..t
        })
        .collect();
    let producers = (0..rng.gen_range(1..=3))
        .map(|_| ProducerSpec {
            acks: match rng.gen_range(0..10) {
                0..=5 => AckLevel::All,
                6..=7 => AckLevel::Leader,
                _ => AckLevel::None,
            },
            idempotent: false,
            retries: if rng.gen_bool(0.3) { 0 } else { 10 },
        })
        .map(|spec| ProducerSpec {
            idempotent: sabotage.claim_idempotence,
            retries: if sabotage.claim_idempotence {
                10
            } else if sabotage.claim_failures_definite {
                0
            } else {
                spec.retries
            },
            ..spec
        })
        .collect();
    WorkloadConfig {
        topics,
        replication_factor: shape.nodes.min(3) as u16,
        producers,
        consumers: rng.gen_range(1..=2),
        group_members: GROUP_MEMBERS,
        misreport_groups: sabotage.misreport_groups,
        topic_churn: shape.kinds.contains(&FaultKind::TopicChurn),
        oversized_records: true,
        send_pause_ms: (5, 80),
        request_timeout: Duration::from_secs(5),
        claim_failures_definite: sabotage.claim_failures_definite,
    }
}

async fn run_here(config: RunConfig) -> Report {
    let origin = Instant::now();
    let trace = SharedTrace::new(Trace::new(origin, config.trace));
    let mut rng = rng::stream(config.seed, "run");
    let shape = shape(&config, &mut rng);
    let setups = node_setups(&shape, &config, &mut rng);
    let nodes = setups
        .into_iter()
        .map(|setup| {
            let latency = DiskLatency::new(rng::stream(config.seed ^ setup.id.0, "disk"));
            SimNode::new(setup, Arc::new(SimClock::new(origin)), latency)
        })
        .collect();
    let cluster = Rc::new(SimCluster::new(
        config.seed,
        nodes,
        SimNetConfig::default(),
        trace.clone(),
    ));
    let kinds: Vec<String> = shape.kinds.iter().map(|k| k.name().to_owned()).collect();
    trace.event(format_args!(
        "run seed={} nodes={} disk={:?} faults=[{}]",
        config.seed,
        shape.nodes,
        shape.disk,
        kinds.join(",")
    ));
    let plan = match &config.script {
        Some(script) => script.plan.clone(),
        None => Plan::draw(
            &shape.kinds,
            &cluster.ids(),
            shape.safety_ms,
            &mut rng::stream(config.seed, "plan"),
        ),
    };
    let mut violations: Vec<Violation> = cluster
        .start_all()
        .await
        .into_iter()
        .map(|e| Violation::new(Checker::Recovery, e))
        .collect();
    let recorder = Recorder::new(
        History {
            epoch_ms: EPOCH_MS_AT_START,
            retention_check_ms: 500,
            ..History::default()
        },
        trace.clone(),
    );
    let observer = crate::leaders::observe(cluster.clone(), recorder.clone());
    let log = Rc::new(FaultLog::default());
    let mut workload_config =
        workload_config(&shape, config.sabotage, config.light_workload, &mut rng);
    if let Some(acks) = config.acks {
        for producer in &mut workload_config.producers {
            producer.acks = acks;
        }
    }
    let client_clock = Arc::new(SimClock::new(origin));
    let started = Workload::start(
        cluster.clone(),
        recorder.clone(),
        client_clock,
        workload_config,
        &mut rng,
        SETUP_BOUND,
    )
    .await;
    let notes = match started {
        Ok(mut workload) => {
            // The plan's times count from the start of the run: steps due while the cluster
            // was still forming (a few virtual seconds with several nodes) strike as soon as
            // the workload runs.
            trace.event("safety phase");
            let safety = origin + Duration::from_millis(shape.safety_ms);
            let (stop_plan, plan_stopping) = tokio::sync::watch::channel(false);
            let plan_task = actix_rt::spawn(faults::run_plan(
                plan.clone(),
                cluster.clone(),
                origin,
                log.clone(),
                plan_stopping,
            ));
            tokio::time::sleep_until(safety).await;
            let _ = stop_plan.send(true);
            let _ = plan_task.await;
            faults::heal_all(&cluster, &log).await;
            let bound = Duration::from_millis(config.liveness_bound_ms);
            violations.extend(workload::liveness(&workload, bound, &mut rng).await);
            workload.stop().await;
            violations.extend(crate::group_check::judge(&workload.group_events()));
            if config.sabotage.tamper_replica {
                crate::tamper::tamper_one_record(&cluster, &recorder).await;
            }
            violations.extend(workload::final_reads(&workload, bound, &mut rng).await);
            observer.abort();
            let (found, notes) = check_history(&cluster, &recorder, &log, config.sabotage);
            violations.extend(found);
            notes
        }
        Err(error) => {
            observer.abort();
            violations.push(Violation::new(Checker::Liveness, error));
            Notes::default()
        }
    };
    violations.extend(log.violations.borrow().iter().cloned());
    shut_down(&cluster).await;
    violations.extend(
        crate::panics::take()
            .into_iter()
            .map(|p| Violation::new(Checker::Panic, p)),
    );
    let mut report = report(
        &config, &shape, &trace, &recorder, &log, violations, notes, &plan,
    );
    report.slowest_teardown_ms = cluster
        .nodes()
        .map(|node| node.slowest_teardown().as_millis() as u64)
        .max()
        .unwrap_or(0);
    report
}

/// The history with the replicas' stored logs added, judged.
fn check_history(
    cluster: &SimCluster,
    recorder: &Recorder,
    log: &FaultLog,
    sabotage: Sabotage,
) -> (Vec<Violation>, Notes) {
    let (max_topic_id, max_partitions) = {
        let history = recorder.history();
        let topics = history.topics.len() as u64;
        let partitions = history
            .topics
            .iter()
            .map(|t| t.partitions)
            .max()
            .unwrap_or(1);
        // Topic ids count every topic ever created, the internal offsets topic included.
        (
            topics + 2,
            partitions.max(cluster_offsets_partitions(cluster)),
        )
    };
    let replicas = workload::dump_replicas(cluster, max_topic_id, max_partitions);
    let mut history = recorder.history().clone();
    history.replicas = replicas;
    history.max_skew_ms = if sabotage.hide_clock_skew {
        0
    } else {
        log.max_skew_ms.get()
    };
    check::check(&history)
}

fn cluster_offsets_partitions(cluster: &SimCluster) -> u32 {
    cluster
        .nodes()
        .map(|n| n.setup.offsets_partitions)
        .max()
        .unwrap_or(1)
}

/// Crashes every node (a process crash) and waits for their teardown, so that nothing of the
/// run outlives it.
async fn shut_down(cluster: &SimCluster) {
    for node in cluster.nodes() {
        node.crash(crate::node::CrashKind::Process, &cluster.net);
    }
    for node in cluster.nodes() {
        node.wait_for_teardown().await;
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    config: &RunConfig,
    shape: &Shape,
    trace: &SharedTrace,
    recorder: &Recorder,
    log: &FaultLog,
    violations: Vec<Violation>,
    notes: Notes,
    plan: &Plan,
) -> Report {
    let history = recorder.history();
    let acknowledged = history
        .sends
        .iter()
        .filter(|s| matches!(s.outcome, SendOutcome::Acked(_)))
        .count();
    let polled = history.polls.iter().map(|p| p.records.len()).sum();
    for violation in &violations {
        trace.event(format_args!("VIOLATION {violation}"));
    }
    let trace = trace.lock();
    let mut checkers: Vec<Checker> = violations.iter().map(|v| v.checker).collect();
    checkers.sort();
    checkers.dedup();
    Report {
        seed: config.seed,
        digest: format!("{:016x}", trace.digest()),
        events: trace.events(),
        nodes: shape.nodes,
        disk: match shape.disk {
            DiskKind::Model => "model".into(),
            DiskKind::Fjall => "fjall".into(),
        },
        faults: shape.kinds.iter().map(|k| k.name().to_owned()).collect(),
        faults_struck: log.struck.get(),
        sends: history.sends.len(),
        acknowledged,
        polled,
        violations: violations.iter().map(ToString::to_string).collect(),
        leader_acked_lost: notes.leader_acked_lost,
        duplicates_allowed: notes.duplicates_allowed,
        virtual_ms: trace.now_ms(),
        wall_ms: 0,
        slowest_teardown_ms: 0,
        trace_tail: trace.tail(),
        plan: Script::render(
            config.seed,
            shape.nodes,
            shape.disk,
            shape.safety_ms,
            &shape.kinds,
            plan,
        ),
        checkers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_timeouts_close_together_are_moved_apart_and_the_others_kept() {
        let spread = spread_election_timeouts(vec![553, 420, 553, 699, 551]);
        assert_eq!(spread, vec![556, 420, 561, 699, 551]);
        let distinct = vec![300, 350, 400];
        assert_eq!(spread_election_timeouts(distinct.clone()), distinct);
    }
}
