//! The group checker over the real coordinator: seeded members join, heartbeat, release late,
//! crash (stop heartbeating) and leave, on one in-process node on virtual time. What the
//! members observe must show one owner per partition at a time and committed offsets that
//! never move back; once the faults stop, every partition has an owner.

gregor_simulation::deterministic_getrandom!();

use gregor_actors::api::*;
use gregor_actors::{start_node_with, Broker, NodeConfig, NodeEnv};
use gregor_simulation::check::Checker;
use gregor_simulation::faults::Script;
use gregor_simulation::group_check::{check, GroupEvent};
use gregor_simulation::history::AckLevel;
use gregor_simulation::{run, Report, RunConfig, Sabotage};
use gregor_storage::{Clock, Offset, PartitionId, SyncMode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const PARTITIONS: u32 = 6;
const SESSION_MS: u32 = 3_000;
const STEP: Duration = Duration::from_millis(100);

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        1_767_225_600_000
    }
}

/// A simulated consumer: what it believes it owns and where it is in each partition.
struct SimMember {
    name: String,
    member_id: String,
    epoch: i32,
    owned: BTreeMap<u32, u64>,
    /// Partitions the coordinator took away that this member has not released yet, and the
    /// step at which it will.
    releasing: BTreeMap<u32, u64>,
    next_heartbeat: Instant,
    last_heartbeat: Instant,
    crashed: bool,
    slow: bool,
}

struct Sim {
    node: Broker,
    rng: SmallRng,
    members: Vec<SimMember>,
    history: Vec<GroupEvent>,
    step: u64,
    joined: u32,
}

async fn start(dir: &std::path::Path) -> Broker {
    let mut config = NodeConfig::single_node(dir);
    config.offsets_partitions = 1;
    let env = NodeEnv {
        clock: Arc::new(FixedClock),
        sync_mode: SyncMode::Inline,
        ..NodeEnv::production()
    };
    start_node_with(config, env).await.unwrap()
}

impl Sim {
    async fn heartbeat(
        &mut self,
        i: usize,
        epoch: i32,
    ) -> Result<ConsumerGroupHeartbeatReply, ApiError> {
        let m = &self.members[i];
        let owned: Vec<PartitionId> = m
            .owned
            .keys()
            .chain(m.releasing.keys())
            .map(|p| PartitionId(*p))
            .collect();
        let hb = ConsumerGroupHeartbeat {
            group: "g".into(),
            member_id: m.member_id.clone(),
            member_epoch: epoch,
            instance_id: None,
            rack: None,
            client_id: m.name.clone(),
            subscription: Some(Subscription::Topics(vec!["t".into()])),
            server_assignor: None,
            owned: Some(vec![TopicPartitions {
                topic: "t".into(),
                partitions: owned,
            }]),
            rebalance_timeout_ms: 60_000,
            session_timeout_ms: Some(SESSION_MS),
            host: None,
        };
        match self
            .node
            .handle(Request::ConsumerGroupHeartbeat(hb))
            .await?
        {
            Response::ConsumerGroupHeartbeat(reply) => Ok(reply),
            other => panic!("heartbeat answered with {}", other.kind()),
        }
    }

    async fn committed(&mut self) -> BTreeMap<u32, u64> {
        let request = Request::FetchOffsets(FetchOffsets {
            group: "g".into(),
            topic: Some("t".into()),
        });
        let Response::FetchOffsets(offsets) = self.node.handle(request).await.unwrap() else {
            panic!("not offsets")
        };
        let read: BTreeMap<u32, u64> = offsets
            .iter()
            .map(|c| (c.partition.0, c.offset.0))
            .collect();
        for (p, o) in &read {
            let since = self.history.len();
            self.history.push(committed_event(*p, *o, since));
        }
        read
    }

    async fn commit(&mut self, i: usize, partitions: &[u32]) {
        let m = &self.members[i];
        let offsets: Vec<OffsetCommit> = partitions
            .iter()
            .filter_map(|p| m.owned.get(p).or(m.releasing.get(p)).map(|o| (p, o)))
            .map(|(p, o)| OffsetCommit {
                topic: "t".into(),
                partition: PartitionId(*p),
                offset: Offset(*o),
                metadata: None,
            })
            .collect();
        if offsets.is_empty() {
            return;
        }
        let request = Request::CommitOffsets(CommitOffsets {
            group: "g".into(),
            offsets: offsets.clone(),
            member: Some(MemberRef {
                member_id: m.member_id.clone(),
                member_epoch: m.epoch,
            }),
        });
        if self.node.handle(request).await.is_ok() {
            for c in offsets {
                let since = self.history.len();
                self.history
                    .push(committed_event(c.partition.0, c.offset.0, since));
            }
        }
    }

    /// Applies a reply: new partitions are acquired at once (from the committed offsets),
    /// taken ones are released now or, for a slow member, some steps later.
    async fn apply(&mut self, i: usize, reply: ConsumerGroupHeartbeatReply) {
        self.members[i].member_id = reply.member_id;
        self.members[i].epoch = reply.member_epoch;
        self.members[i].next_heartbeat =
            Instant::now() + Duration::from_millis(u64::from(reply.heartbeat_interval_ms));
        let Some(assignment) = reply.assignment else {
            return;
        };
        let target: BTreeSet<u32> = assignment
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.0))
            .collect();
        let taken: Vec<u32> = self.members[i]
            .owned
            .keys()
            .filter(|p| !target.contains(p))
            .copied()
            .collect();
        for p in taken {
            let delay: u32 = if self.members[i].slow {
                self.rng.gen_range(1..20)
            } else {
                0
            };
            let position = self.members[i].owned.remove(&p).expect("owned");
            self.members[i].releasing.insert(p, position);
            if delay == 0 {
                self.release(i, p).await;
            } else {
                self.members[i].next_heartbeat = Instant::now() + STEP * delay;
            }
        }
        let new: Vec<u32> = target
            .iter()
            .filter(|p| {
                !self.members[i].owned.contains_key(p) && !self.members[i].releasing.contains_key(p)
            })
            .copied()
            .collect();
        if new.is_empty() {
            return;
        }
        let committed = self.committed().await;
        self.sessions_ended();
        for p in new {
            let m = &mut self.members[i];
            m.owned.insert(p, committed.get(&p).copied().unwrap_or(0));
            self.history.push(GroupEvent::Acquired {
                group: "g".into(),
                member: m.name.clone(),
                epoch: m.epoch,
                topic: "t".into(),
                partition: p,
            });
        }
    }

    /// Commits a partition's position and lets it go.
    async fn release(&mut self, i: usize, p: u32) {
        self.commit(i, &[p]).await;
        self.members[i].releasing.remove(&p);
        self.history.push(GroupEvent::Released {
            group: "g".into(),
            member: self.members[i].name.clone(),
            topic: "t".into(),
            partition: p,
        });
    }

    async fn join(&mut self) {
        self.joined += 1;
        let slow = self.rng.gen_bool(0.3);
        self.members.push(SimMember {
            name: format!("m{}", self.joined),
            member_id: String::new(),
            epoch: 0,
            owned: BTreeMap::new(),
            releasing: BTreeMap::new(),
            next_heartbeat: Instant::now(),
            last_heartbeat: Instant::now(),
            crashed: false,
            slow,
        });
    }

    async fn step(&mut self, faults: bool) {
        self.step += 1;
        let alive = self.members.iter().filter(|m| !m.crashed).count();
        if faults {
            let roll: f64 = self.rng.gen();
            if roll < 0.03 && alive < 5 {
                self.join().await;
            } else if roll < 0.045 && alive > 1 {
                let i = self.pick_alive();
                self.leave(i).await;
            } else if roll < 0.06 && alive > 1 {
                let i = self.pick_alive();
                self.members[i].crashed = true;
            }
        }
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if m.crashed {
                continue;
            }
            for position in m.owned.values_mut() {
                *position += 1;
            }
            // A slow member's delayed releases fall due.
            if m.next_heartbeat > Instant::now() {
                continue;
            }
            let releasing: Vec<u32> = m.releasing.keys().copied().collect();
            for p in releasing {
                self.release(i, p).await;
            }
            if self.step.is_multiple_of(5) {
                let owned: Vec<u32> = self.members[i].owned.keys().copied().collect();
                self.commit(i, &owned).await;
            }
            let epoch = self.members[i].epoch;
            self.members[i].last_heartbeat = Instant::now();
            match self.heartbeat(i, epoch).await {
                Ok(reply) => self.apply(i, reply).await,
                Err(e) => {
                    // Fenced or unknown: drop everything without committing and rejoin.
                    assert!(
                        matches!(
                            e.code,
                            ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::FENCED_MEMBER_EPOCH
                        ),
                        "{e}"
                    );
                    let m = &mut self.members[i];
                    let name = m.name.clone();
                    m.owned.clear();
                    m.releasing.clear();
                    m.member_id.clear();
                    m.epoch = 0;
                    self.history.push(GroupEvent::Gone {
                        group: "g".into(),
                        member: name,
                    });
                }
            }
        }
        self.sessions_ended();
        if self.step.is_multiple_of(7) {
            self.committed().await;
        }
        tokio::time::sleep(STEP).await;
    }

    /// A crashed member's partitions are free once its session could have ended: recorded
    /// before anything is acquired, so the checker sees the order the coordinator allows.
    fn sessions_ended(&mut self) {
        let now = Instant::now();
        for m in &mut self.members {
            if m.crashed
                && !(m.owned.is_empty() && m.releasing.is_empty())
                && now >= m.last_heartbeat + Duration::from_millis(u64::from(SESSION_MS))
            {
                m.owned.clear();
                m.releasing.clear();
                self.history.push(GroupEvent::Gone {
                    group: "g".into(),
                    member: m.name.clone(),
                });
            }
        }
    }

    fn pick_alive(&mut self) -> usize {
        let alive: Vec<usize> = (0..self.members.len())
            .filter(|i| !self.members[*i].crashed)
            .collect();
        alive[self.rng.gen_range(0..alive.len())]
    }

    async fn leave(&mut self, i: usize) {
        let owned: Vec<u32> = self.members[i]
            .owned
            .keys()
            .chain(self.members[i].releasing.keys())
            .copied()
            .collect();
        self.commit(i, &owned).await;
        if !self.members[i].member_id.is_empty() {
            let _ = self.heartbeat(i, LEAVE_EPOCH).await;
        }
        let m = &mut self.members[i];
        m.crashed = true;
        m.owned.clear();
        m.releasing.clear();
        self.history.push(GroupEvent::Gone {
            group: "g".into(),
            member: m.name.clone(),
        });
    }
}

/// A committed offset read or acknowledged by a request the harness awaited alone: it began
/// where it ended.
fn committed_event(partition: u32, offset: u64, since: usize) -> GroupEvent {
    GroupEvent::Committed {
        group: "g".into(),
        topic: "t".into(),
        partition,
        offset,
        since,
    }
}

fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(async move {
        let node = start(dir.path()).await;
        let create = CreateTopic {
            name: "t".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            config: Default::default(),
            creation_id: None,
        };
        node.handle(Request::CreateTopic(create)).await.unwrap();
        let mut sim = Sim {
            node,
            rng: SmallRng::seed_from_u64(seed),
            members: Vec::new(),
            history: Vec::new(),
            step: 0,
            joined: 0,
        };
        for _ in 0..3 {
            sim.join().await;
        }
        for _ in 0..400 {
            sim.step(true).await;
        }
        // Liveness: the faults stop; every partition must find an owner among the living.
        for _ in 0..150 {
            sim.step(false).await;
        }
        let violations = check(&sim.history);
        assert!(
            violations.is_empty(),
            "seed {seed}: {}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        let owned: BTreeSet<u32> = sim
            .members
            .iter()
            .filter(|m| !m.crashed)
            .flat_map(|m| m.owned.keys().copied())
            .collect();
        assert_eq!(
            owned.len(),
            PARTITIONS as usize,
            "seed {seed}: partitions left unowned"
        );
        let acquired = sim
            .history
            .iter()
            .filter(|e| matches!(e, GroupEvent::Acquired { .. }))
            .count();
        assert!(
            acquired > PARTITIONS as usize,
            "seed {seed}: the run moved nothing"
        );
        sim.node.shutdown().await;
    });
}

#[test]
fn members_joining_crashing_and_leaving_never_share_a_partition() {
    for seed in 0..8 {
        run_seed(seed);
    }
}

fn whole_run(seed: u64, script: &str, sabotage: Sabotage) -> Report {
    let mut config = RunConfig::new(seed);
    config.script = Some(Script::parse(script).expect("the test's script parses"));
    config.sabotage = sabotage;
    config.acks = Some(AckLevel::All);
    config.liveness_bound_ms = 20_000;
    run(config)
}

/// The whole-run simulation's shared group: members join, commit, leave and crash through the
/// real coordinator while a node crashes and restarts under them. Judged as they truly report,
/// the run keeps the group's promises; the same run (misreporting changes nothing in the
/// system) judged from members that never report a release and claim commits they did not
/// make shows two owners and committed offsets moving back.
#[test]
fn the_whole_run_group_checker_passes_true_reports_and_catches_misreports() {
    let script = "
nodes 1
disk model
safety 10s
at 5s crash 1
at 5.5s restart 1
";
    let control = whole_run(4, script, Sabotage::default());
    let fired = |r: &Report| format!("{:?}\n{}", r.checkers, r.violations.join("\n"));
    assert!(control.passed(), "control run: {}", fired(&control));
    let sabotage = Sabotage {
        misreport_groups: true,
        ..Sabotage::default()
    };
    let broken = whole_run(4, script, sabotage);
    // The same run (its digest differs only by the violations it traces).
    assert_eq!(
        (broken.sends, broken.acknowledged, broken.polled),
        (control.sends, control.acknowledged, control.polled),
        "the same run, reported otherwise"
    );
    assert!(
        broken.checkers.contains(&Checker::GroupTwoOwners),
        "{}",
        fired(&broken)
    );
    assert!(
        broken.checkers.contains(&Checker::CommittedOffsetMovedBack),
        "{}",
        fired(&broken)
    );
}
