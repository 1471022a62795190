//! Consumers that are members of one group (`shared`): they subscribe to the stable topics
//! through the real coordinator, which shares the partitions among them; they commit as they
//! go and on every revocation, and their sessions end by leaving (a clean close) or now and
//! then by vanishing (the consumer dropped without a word: a crash, whose partitions wait for
//! the end of its session). What they see goes to the group checker
//! ([`crate::group_check`]): who owned which partition when, and every committed offset
//! acknowledged or read back.
//!
//! Members use the broker's session timeout (45 s), longer than any fault the plans hold a
//! client off for, so a member the coordinator expels is one that is gone: a member cut off
//! for longer would be a zombie (as in Kafka, its commits are fenced but it may still read),
//! and the checker would report it.

use super::Ctx;
use crate::group_check::GroupEvent;
use gregor_client::protocol::api::CommittedOffset;
use gregor_client::{
    Admin, AutoOffsetReset, Consumer, ConsumerConfig, MembershipView, RebalanceListener,
    TopicPartition,
};
use rand::rngs::SmallRng;
use rand::Rng;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The group every member joins.
pub const GROUP: &str = "shared";
/// Share of sessions that end in a crash rather than a clean leave.
const CRASH_SHARE: f64 = 0.15;

/// What the members saw, in the order they saw it (shared with the listeners, which the
/// client wants `Send`).
#[derive(Clone, Default)]
pub struct GroupLog {
    events: Arc<Mutex<Vec<GroupEvent>>>,
    /// How many of the events are in the run's trace.
    traced: Arc<Mutex<usize>>,
    /// Breaks the record on purpose (see [`crate::Sabotage::misreport_groups`]).
    misreport: bool,
}

impl GroupLog {
    pub fn new(misreport: bool) -> GroupLog {
        GroupLog {
            events: Arc::default(),
            traced: Arc::default(),
            misreport,
        }
    }

    /// Puts the events not yet traced into the run's trace (the listeners cannot reach it).
    fn trace_new(&self, ctx: &Ctx) {
        let events = self.lock();
        let mut traced = self
            .traced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in events.iter().skip(*traced) {
            ctx.recorder.note(format_args!("group {event:?}"));
        }
        *traced = events.len();
    }

    fn push(&self, event: GroupEvent) {
        self.lock().push(event);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<GroupEvent>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the log stands: an observation beginning now says so in its events' `since`.
    fn mark(&self) -> usize {
        self.lock().len()
    }

    pub fn events(&self) -> Vec<GroupEvent> {
        self.lock().clone()
    }
}

/// Tells the log when this session's consumer gets and gives up partitions.
struct Listener {
    label: String,
    log: GroupLog,
    membership: Option<MembershipView>,
}

impl Listener {
    fn epoch(&self) -> i32 {
        self.membership
            .as_ref()
            .and_then(MembershipView::current)
            .map_or(-1, |(_, epoch)| epoch)
    }
}

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        let epoch = self.epoch();
        for tp in partitions {
            self.log.push(GroupEvent::Acquired {
                group: GROUP.into(),
                member: self.label.clone(),
                epoch,
                topic: tp.topic.to_string(),
                partition: tp.partition.0,
            });
        }
    }

    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        if self.log.misreport {
            return;
        }
        for tp in partitions {
            self.log.push(GroupEvent::Released {
                group: GROUP.into(),
                member: self.label.clone(),
                topic: tp.topic.to_string(),
                partition: tp.partition.0,
            });
        }
    }
}

pub(super) async fn run(ctx: Rc<Ctx>, id: u32, log: GroupLog, mut rng: SmallRng) {
    let mut session = 0u64;
    while !ctx.stopped() {
        session += 1;
        let length = Duration::from_millis(rng.gen_range(2_000..12_000));
        run_session(&ctx, &format!("m{id}.{session}"), length, &log, &mut rng).await;
        if ctx
            .pause(Duration::from_millis(rng.gen_range(10..1_000)))
            .await
        {
            break;
        }
    }
}

async fn run_session(ctx: &Ctx, label: &str, length: Duration, log: &GroupLog, rng: &mut SmallRng) {
    let client = ctx.admin_client(rng.gen());
    let mut config = ConsumerConfig::from_client(client)
        .group(GROUP)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .auto_commit(None);
    config.fetch_max_wait = Duration::from_millis(rng.gen_range(0..300));
    config.max_poll_records = rng.gen_range(1..200);
    let mut consumer = match Consumer::connect(config).await {
        Ok(consumer) => consumer,
        Err(error) => {
            ctx.recorder
                .note(format!("group member {label} cannot connect: {error}"));
            return;
        }
    };
    let topics: Vec<String> = ctx.stable_topics().into_iter().map(|(t, _)| t).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(error) = consumer.subscribe(&names) {
        ctx.recorder
            .note(format!("group member {label} cannot subscribe: {error}"));
        return;
    }
    consumer.set_rebalance_listener(Listener {
        label: label.to_owned(),
        log: log.clone(),
        membership: consumer.membership(),
    });
    let admin = Admin::from_cluster(consumer.cluster().clone());
    let end = tokio::time::Instant::now() + length;
    while tokio::time::Instant::now() < end && !ctx.stopped() {
        let timeout = Duration::from_millis(rng.gen_range(10..400));
        let polled = consumer.poll(timeout).await;
        log.trace_new(ctx);
        if let Err(error) = polled {
            ctx.recorder
                .note(format!("group member {label} poll failed: {error}"));
            break;
        }
        match rng.gen_range(0..8) {
            0..=1 => commit(ctx, label, &mut consumer, log).await,
            2 => read_committed(&admin, log).await,
            _ => {}
        }
    }
    // From here the member reads nothing: it is gone before the group hears of it (so its
    // partitions' next owners come after it in the log).
    if !log.misreport {
        log.push(GroupEvent::Gone {
            group: GROUP.into(),
            member: label.to_owned(),
        });
    }
    if rng.gen_bool(CRASH_SHARE) {
        // Dropped without a word: the group gives its partitions away once its session ends.
        drop(consumer);
        return;
    }
    // Commits what it read and leaves: the group moves its partitions at once.
    if let Err(error) = consumer.close().await {
        ctx.recorder.note(format!(
            "group member {label} did not close cleanly: {error}"
        ));
    }
}

/// Commits every position that moved; an acknowledged commit is a committed offset.
async fn commit(ctx: &Ctx, label: &str, consumer: &mut Consumer, log: &GroupLog) {
    let since = log.mark();
    let positions: Vec<(TopicPartition, u64)> = consumer
        .assignment()
        .into_iter()
        .filter_map(|tp| consumer.position(&tp).map(|o| (tp, o.0)))
        .collect();
    match consumer.commit().await {
        Ok(()) => {
            for (tp, offset) in positions {
                log.push(GroupEvent::Committed {
                    group: GROUP.into(),
                    topic: tp.topic.to_string(),
                    partition: tp.partition.0,
                    // Misreported: a commit claimed beyond what was sent.
                    offset: if log.misreport {
                        offset + 1_000
                    } else {
                        offset
                    },
                    since,
                });
            }
        }
        // Refused (the partition moved on meanwhile) or unanswered: nothing is claimed.
        Err(error) => ctx
            .recorder
            .note(format!("group member {label} commit failed: {error}")),
    }
}

/// Reads the group's committed offsets back.
async fn read_committed(admin: &Admin, log: &GroupLog) {
    let since = log.mark();
    let Ok(offsets) = admin.fetch_offsets(GROUP, None).await else {
        return;
    };
    for CommittedOffset {
        topic,
        partition,
        offset,
        ..
    } in offsets
    {
        log.push(GroupEvent::Committed {
            group: GROUP.into(),
            topic,
            partition: partition.0,
            offset: offset.0,
            since,
        });
    }
}
