//! The workload: real clients (gregor-client's `Producer`, `Consumer` and `Admin`) driving the
//! cluster through the simulated network, recording everything they do and see.
//!
//! Producers send unique values (`topic#incarnation/p<producer>/<seq>`) with acks all, 1 or 0;
//! consumers, each in a group of its own, poll every partition of the stable topics, commit
//! their positions and now and then restart from the committed offsets (a new session); members
//! of one shared group subscribe to the stable topics and are given partitions by the group's
//! coordinator (`groups`); a prober reads log starts; with topic churn on, topics are created
//! and deleted under load.

mod admin;
mod consume;
mod finish;
mod groups;
mod produce;
mod recorder;

pub use finish::{dump_replicas, final_reads, liveness};
pub use groups::GroupLog;
pub use recorder::Recorder;

use crate::clock::SimClock;
use crate::cluster::SimCluster;
use crate::history::{AckLevel, TopicLife};
use gregor_client::protocol::api::{Acks, TopicConfigOverrides};
use gregor_client::{Admin, ClientError, NewTopic};
use rand::rngs::SmallRng;
use rand::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A topic the workload keeps for the whole run and checks to the end.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub retention_ms: Option<i64>,
    /// Records larger than this are refused by the broker (the aborted-read material).
    pub max_message_bytes: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct ProducerSpec {
    pub acks: AckLevel,
    /// The producer deduplicates its retries.
    pub idempotent: bool,
    /// Retries of the client library; 0 makes its broker refusals definite failures.
    pub retries: u32,
}

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub topics: Vec<TopicSpec>,
    pub replication_factor: u16,
    pub producers: Vec<ProducerSpec>,
    pub consumers: u32,
    /// Members of the one shared group (`groups`).
    pub group_members: u32,
    /// Self-test only: the group members' record lies (see `Sabotage::misreport_groups`).
    pub misreport_groups: bool,
    /// Create and delete other topics while the workload runs.
    pub topic_churn: bool,
    /// Now and then send a record larger than its topic allows.
    pub oversized_records: bool,
    /// Pause between a producer's rounds of sends.
    pub send_pause_ms: (u64, u64),
    pub request_timeout: Duration,
    /// Self-test only: record every failed send as a definite failure.
    pub claim_failures_definite: bool,
}

impl AckLevel {
    fn acks(self) -> Acks {
        match self {
            AckLevel::None => Acks::None,
            AckLevel::Leader => Acks::Leader,
            AckLevel::All => Acks::All,
        }
    }
}

/// What the workload knows of one topic name now.
#[derive(Debug, Clone)]
pub(crate) struct TopicState {
    pub incarnation: u32,
    pub partitions: u32,
    /// Created and not deleted, as far as the workload knows.
    pub live: bool,
    pub stable: bool,
    pub max_message_bytes: Option<u32>,
}

/// What every workload task shares.
pub(crate) struct Ctx {
    pub cluster: Rc<SimCluster>,
    pub recorder: Recorder,
    pub topics: RefCell<BTreeMap<String, TopicState>>,
    /// The clients' clock (clients are not skewed; nodes may be).
    pub clock: Arc<SimClock>,
    pub config: WorkloadConfig,
    pub stop: watch::Receiver<bool>,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `duration`, or less if the workload stops meanwhile; `true` if it stopped.
    pub async fn pause(&self, duration: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => true,
            () = tokio::time::sleep(duration) => self.stopped(),
        }
    }

    /// A live topic to send to: a stable one mostly, a churning one now and then.
    pub fn pick_topic(&self, rng: &mut SmallRng) -> Option<(String, TopicState)> {
        let topics = self.topics.borrow();
        let live: Vec<(&String, &TopicState)> = topics.iter().filter(|(_, t)| t.live).collect();
        let stable: Vec<&(&String, &TopicState)> = live.iter().filter(|(_, t)| t.stable).collect();
        let pick = if !stable.is_empty() && (live.len() == stable.len() || rng.gen_bool(0.8)) {
            *stable[rng.gen_range(0..stable.len())]
        } else if !live.is_empty() {
            live[rng.gen_range(0..live.len())]
        } else {
            return None;
        };
        Some((pick.0.clone(), pick.1.clone()))
    }

    pub fn stable_topics(&self) -> Vec<(String, TopicState)> {
        self.topics
            .borrow()
            .iter()
            .filter(|(_, t)| t.stable)
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    pub fn admin_client(&self, seed: u64) -> gregor_client::ClientConfig {
        self.cluster
            .client_config(seed, self.config.request_timeout)
            .1
    }
}

/// The running workload.
pub struct Workload {
    ctx: Rc<Ctx>,
    group_log: GroupLog,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Creates the stable topics (retrying until `deadline`), then starts every task.
    ///
    /// # Errors
    /// A stable topic could not be created in time.
    pub async fn start(
        cluster: Rc<SimCluster>,
        recorder: Recorder,
        clock: Arc<SimClock>,
        config: WorkloadConfig,
        rng: &mut SmallRng,
        setup_bound: Duration,
    ) -> Result<Workload, String> {
        let (stop, stopping) = watch::channel(false);
        let ctx = Rc::new(Ctx {
            cluster,
            recorder,
            topics: RefCell::new(BTreeMap::new()),
            clock,
            config,
            stop: stopping,
        });
        create_stable_topics(&ctx, rng.gen(), setup_bound).await?;
        let mut tasks = Vec::new();
        for (id, spec) in ctx.config.producers.clone().into_iter().enumerate() {
            let task = produce::run(
                ctx.clone(),
                id as u32,
                spec,
                crate::rng::stream(rng.gen(), "producer"),
            );
            tasks.push(actix_rt::spawn(task));
        }
        for id in 0..ctx.config.consumers {
            let task = consume::run(ctx.clone(), id, crate::rng::stream(rng.gen(), "consumer"));
            tasks.push(actix_rt::spawn(task));
        }
        tasks.push(actix_rt::spawn(admin::probe_log_starts(
            ctx.clone(),
            crate::rng::stream(rng.gen(), "prober"),
        )));
        if ctx.config.topic_churn {
            tasks.push(actix_rt::spawn(admin::churn_topics(
                ctx.clone(),
                crate::rng::stream(rng.gen(), "churn"),
            )));
        }
        let group_log = GroupLog::new(ctx.config.misreport_groups);
        for id in 0..ctx.config.group_members {
            let rng = crate::rng::stream(rng.gen(), "group-member");
            let task = groups::run(ctx.clone(), id, group_log.clone(), rng);
            tasks.push(actix_rt::spawn(task));
        }
        Ok(Workload {
            ctx,
            group_log,
            stop,
            tasks,
        })
    }

    pub(crate) fn ctx(&self) -> &Rc<Ctx> {
        &self.ctx
    }

    /// What the shared group's members saw, for the group checker.
    pub fn group_events(&self) -> Vec<crate::group_check::GroupEvent> {
        self.group_log.events()
    }

    /// Stops every task and waits for them (each drains its in-flight operations, bounded).
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

async fn create_stable_topics(ctx: &Ctx, seed: u64, bound: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + bound;
    let admin = loop {
        match Admin::connect(ctx.admin_client(seed)).await {
            Ok(admin) => break admin,
            Err(e) if tokio::time::Instant::now() < deadline => {
                ctx.recorder.note(format!("admin connect failed: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("no node accepted the admin client: {e}")),
        }
    };
    for spec in &ctx.config.topics {
        let topic = NewTopic::new(&spec.name)
            .partitions(spec.partitions)
            .replication_factor(ctx.config.replication_factor)
            .config(TopicConfigOverrides {
                retention_ms: spec.retention_ms,
                retention_bytes: None,
                max_message_bytes: spec.max_message_bytes,
            });
        loop {
            match admin.create_topic(topic.clone()).await {
                Ok(_) => break,
                Err(ClientError::Api(e))
                    if e.code == gregor_client::protocol::api::ErrorCode::TOPIC_ALREADY_EXISTS =>
                {
                    break
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    ctx.recorder
                        .note(format!("creating {} failed: {e}", spec.name));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("topic {} could not be created: {e}", spec.name)),
            }
        }
        ctx.recorder.topic_created(TopicLife {
            topic: spec.name.clone(),
            incarnation: 0,
            partitions: spec.partitions,
            retention_ms: spec.retention_ms,
            created_ms: ctx.recorder.now_ms(),
            deleted_ms: None,
            stable: true,
        });
        ctx.topics.borrow_mut().insert(
            spec.name.clone(),
            TopicState {
                incarnation: 0,
                partitions: spec.partitions,
                live: true,
                stable: true,
                max_message_bytes: spec.max_message_bytes,
            },
        );
    }
    Ok(())
}

/// The part of a record value that names its send (values may carry padding after a `|`).
pub fn value_key(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.split_once('|') {
        Some((key, _)) => key.to_owned(),
        None => text.into_owned(),
    }
}
