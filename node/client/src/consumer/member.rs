//! The consumer's side of group membership: a task that heartbeats to the group's coordinator
//! in the background (so a consumer busy between polls keeps its session) and hands the
//! assignments it is given to the consumer, which applies them inside `poll` (revoking first)
//! and reports what it owns for the next heartbeat.

use super::TopicPartition;
use crate::admin::Admin;
use crate::error::ClientError;
use gregor_protocol::api::{
    ConsumerGroupHeartbeat, ErrorCode, Subscription, TopicPartitions, JOIN_EPOCH, LEAVE_EPOCH,
    STATIC_LEAVE_EPOCH,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How a member presents itself to its group.
#[derive(Debug, Clone)]
pub(crate) struct MemberSettings {
    pub group: String,
    pub client_id: String,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub server_assignor: Option<String>,
    pub session_timeout: Option<Duration>,
    pub rebalance_timeout: Duration,
    pub max_poll_interval: Duration,
}

/// What the heartbeat task and the consumer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub member_id: String,
    pub epoch: i32,
    pub subscription: Subscription,
    /// The subscription changed since the last heartbeat that carried it.
    subscription_changed: bool,
    /// The partitions the coordinator last asked this member to own, until the consumer
    /// applies them.
    pub target: Option<BTreeSet<TopicPartition>>,
    /// The partitions the consumer owns (set by the consumer once it applied a target).
    pub owned: BTreeSet<TopicPartition>,
    /// The membership ended (fenced, unknown, or the consumer stopped polling): the consumer
    /// drops every partition without committing.
    pub lost: bool,
    /// A failure no retry can mend (an invalid pattern, an unsupported assignor).
    pub fatal: Option<ClientError>,
    pub last_poll: Instant,
    /// Left the group for not polling within the max poll interval; the next poll rejoins.
    pub left_idle: bool,
}

/// The running heartbeat task.
pub(crate) struct Member {
    pub shared: Arc<Mutex<Shared>>,
    /// Heartbeat now (a revocation was applied, or the subscription changed).
    pub wake: Arc<Notify>,
    /// Something for the consumer to apply.
    pub changed: Arc<Notify>,
    settings: MemberSettings,
    admin: Admin,
    task: JoinHandle<()>,
}

/// Pause after a failed heartbeat that can be retried.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Member {
    pub fn start(admin: Admin, settings: MemberSettings, subscription: Subscription) -> Member {
        let shared = Arc::new(Mutex::new(Shared {
            member_id: String::new(),
            epoch: JOIN_EPOCH,
            subscription,
            subscription_changed: true,
            target: None,
            owned: BTreeSet::new(),
            lost: false,
            fatal: None,
            last_poll: Instant::now(),
            left_idle: false,
        }));
        let wake = Arc::new(Notify::new());
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(heartbeat_loop(
            admin.clone(),
            settings.clone(),
            shared.clone(),
            wake.clone(),
            changed.clone(),
        ));
        Member {
            shared,
            wake,
            changed,
            settings,
            admin,
            task,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    pub fn resubscribe(&self, subscription: Subscription) {
        let mut shared = self.lock();
        shared.subscription = subscription;
        shared.subscription_changed = true;
        drop(shared);
        self.wake.notify_one();
    }

    /// Called by every poll: a member that left for not polling comes back.
    pub fn polled(&self) {
        let mut shared = self.lock();
        shared.last_poll = Instant::now();
        if shared.left_idle {
            shared.left_idle = false;
            drop(shared);
            self.wake.notify_one();
        }
    }

    /// Stops heartbeating and leaves the group (a static member keeps its partitions for its
    /// session timeout, so that its restart does not rebalance the group).
    pub async fn leave(self) -> Result<(), ClientError> {
        self.task.abort();
        let (member_id, epoch) = {
            let shared = self.lock();
            (shared.member_id.clone(), shared.epoch)
        };
        if member_id.is_empty() || epoch <= 0 {
            return Ok(());
        }
        let leave_epoch = if self.settings.instance_id.is_some() {
            STATIC_LEAVE_EPOCH
        } else {
            LEAVE_EPOCH
        };
        let mut hb = heartbeat(&self.settings, &self.shared);
        hb.member_epoch = leave_epoch;
        self.admin.consumer_group_heartbeat(hb).await.map(|_| ())
    }
}

/// A consumer dropped without `close` stops heartbeating, as a crashed process would: its
/// session ends and the group moves its partitions. (Left running, the task would keep the
/// partitions in the group's name for as long as the runtime lives, and nobody would read them.)
impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The lock is never held across a panic that matters: recover the data.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The next heartbeat, from the shared state.
fn heartbeat(settings: &MemberSettings, shared: &Mutex<Shared>) -> ConsumerGroupHeartbeat {
    let mut shared = lock(shared);
    let joining = shared.member_id.is_empty();
    let send_subscription = joining || shared.subscription_changed;
    shared.subscription_changed = false;
    ConsumerGroupHeartbeat {
        group: settings.group.clone(),
        member_id: shared.member_id.clone(),
        member_epoch: shared.epoch,
        instance_id: settings.instance_id.clone(),
        rack: settings.rack.clone(),
        client_id: settings.client_id.clone(),
        subscription: send_subscription.then(|| shared.subscription.clone()),
        server_assignor: settings.server_assignor.clone(),
        owned: Some(by_topic(&shared.owned)),
        rebalance_timeout_ms: millis(settings.rebalance_timeout),
        session_timeout_ms: settings.session_timeout.map(millis),
        host: None,
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().try_into().unwrap_or(u32::MAX)
}

pub(crate) fn by_topic(set: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut topics: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for tp in set {
        topics.entry(&tp.topic).or_default().push(tp.partition);
    }
    topics
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}

fn tp_set(list: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    list.iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(&t.topic, *p))
        })
        .collect()
}

async fn heartbeat_loop(
    admin: Admin,
    settings: MemberSettings,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    changed: Arc<Notify>,
) {
    let mut interval = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        if idle_too_long(&settings, &shared) {
            leave_idle(&admin, &settings, &shared, &changed).await;
            interval = settings.max_poll_interval;
            continue;
        }
        if lock(&shared).left_idle {
            interval = settings.max_poll_interval;
            continue;
        }
        let hb = heartbeat(&settings, &shared);
        match admin.consumer_group_heartbeat(hb).await {
            Ok(reply) => {
                let mut state = lock(&shared);
                state.member_id = reply.member_id;
                state.epoch = reply.member_epoch;
                interval = Duration::from_millis(u64::from(reply.heartbeat_interval_ms.max(10)));
                if let Some(assignment) = reply.assignment {
                    state.target = Some(tp_set(&assignment));
                    changed.notify_one();
                }
            }
            Err(e) if lost_membership(&e) => {
                tracing::info!(group = %settings.group, error = %e, "membership lost; rejoining");
                let mut state = lock(&shared);
                state.member_id.clear();
                state.epoch = JOIN_EPOCH;
                state.lost = true;
                state.target = None;
                changed.notify_one();
                interval = Duration::ZERO;
            }
            Err(e) if e.is_retriable() || e.code() == Some(ErrorCode::UNRELEASED_INSTANCE_ID) => {
                tracing::debug!(group = %settings.group, error = %e, "heartbeat failed; retrying");
                interval = RETRY_PAUSE;
            }
            Err(e) => {
                lock(&shared).fatal = Some(e);
                changed.notify_one();
                return;
            }
        }
    }
}

fn lost_membership(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::FENCED_MEMBER_EPOCH)
    )
}

fn idle_too_long(settings: &MemberSettings, shared: &Mutex<Shared>) -> bool {
    let state = lock(shared);
    !state.left_idle
        && !state.member_id.is_empty()
        && state.last_poll.elapsed() > settings.max_poll_interval
}

/// Kafka's rule for a consumer that stops polling: it leaves, so its partitions go to
/// members that make progress; the next poll rejoins.
async fn leave_idle(
    admin: &Admin,
    settings: &MemberSettings,
    shared: &Mutex<Shared>,
    changed: &Notify,
) {
    tracing::warn!(group = %settings.group, "no poll within the max poll interval; leaving the group");
    let mut hb = heartbeat(settings, shared);
    hb.member_epoch = LEAVE_EPOCH;
    if let Err(e) = admin.consumer_group_heartbeat(hb).await {
        tracing::debug!(error = %e, "leave heartbeat failed; the session will end instead");
    }
    let mut state = lock(shared);
    state.member_id.clear();
    state.epoch = JOIN_EPOCH;
    state.lost = true;
    state.target = None;
    state.left_idle = true;
    changed.notify_one();
}
