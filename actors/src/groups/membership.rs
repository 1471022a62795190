//! A consumer group's members, free of I/O: Kafka's KIP-848 protocol on the coordinator side.
//!
//! Every change of membership, of subscriptions or of the subscribed topics' partitions bumps
//! the group epoch and recomputes the target assignment. Each member then converges to its
//! target one heartbeat at a time, revoking first: it is told to release the partitions it
//! owns outside its target, and only a heartbeat whose owned partitions no longer include them
//! (or the end of its session) frees them for their next owner. A partition is therefore in at
//! most one member's `assigned` or `revoking` set at any time, which [`ConsumerGroup::check`]
//! asserts after every change.

use super::assignor::{Assignment, Assignor, MemberId, Tp};
use crate::api::{
    ApiError, ConsumerGroupHeartbeat, ConsumerGroupHeartbeatReply, ErrorCode, MemberDescription,
    Subscription, TopicPartitions, JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use regex_automata::meta::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Broker bounds and defaults of group timing (Kafka's defaults, but for the session timeout
/// bounds, which are the classic protocol's wider ones so that a group can be configured for
/// quick failover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    pub session_timeout_ms: u32,
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    /// How often a member that is converging heartbeats, so that partitions released by
    /// others reach it quickly.
    pub reconciling_heartbeat_interval_ms: u32,
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms: 45_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 1_800_000,
            heartbeat_interval_ms: 5_000,
            reconciling_heartbeat_interval_ms: 250,
            max_size: 1_000,
        }
    }
}

/// What a heartbeat or a timer sees of the world.
pub struct Env<'a> {
    pub now_ms: i64,
    /// Every non-internal topic and its partition count.
    pub topics: &'a BTreeMap<String, u32>,
    pub config: &'a GroupConfig,
}

/// One member, as stored (the timing fields are not: a new coordinator gives every member a
/// fresh session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub client_id: String,
    pub host: Option<String>,
    pub subscription: Subscription,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: u32,
    /// The timeout the member asked for, if it did; else the group's applies (see
    /// [`ConsumerGroup::session_timeout_ms`]).
    pub session_timeout_ms: Option<u32>,
    pub epoch: i32,
    pub previous_epoch: i32,
    /// Partitions it owns.
    pub assigned: BTreeSet<Tp>,
    /// Partitions it was told to release and has not yet released; nobody else gets them.
    pub revoking: BTreeSet<Tp>,
    /// A static member that left with epoch -2: its partitions wait for it until its session
    /// ends.
    pub static_left: bool,
    #[serde(skip)]
    pub last_heartbeat_ms: i64,
    #[serde(skip)]
    pub revoke_deadline_ms: Option<i64>,
    /// The heartbeat interval its last reply gave it: its session lasts at least two of them,
    /// so that a group's timeout lowered below that interval does not expel it before its
    /// next heartbeat tells it the shorter one.
    #[serde(skip)]
    pub heartbeat_interval_ms: u32,
}

impl Member {
    fn owns(&self, tp: &Tp) -> bool {
        self.assigned.contains(tp) || self.revoking.contains(tp)
    }

    fn expires_at_ms(&self, session_timeout_ms: u32) -> i64 {
        let session_ms = session_timeout_ms.max(self.heartbeat_interval_ms.saturating_mul(2));
        let session = self.last_heartbeat_ms + i64::from(session_ms);
        self.revoke_deadline_ms.map_or(session, |d| d.min(session))
    }
}

/// The group-wide part of the state, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    pub epoch: i32,
    pub target_epoch: i32,
    /// The subscribed topics' partition counts the target was computed from.
    pub partitions: BTreeMap<String, u32>,
    /// The group's configured session timeout (Kafka's `group.consumer.session.timeout.ms`);
    /// `None`: the broker's default.
    #[serde(default)]
    pub session_timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub meta: GroupMeta,
    pub members: BTreeMap<MemberId, Member>,
    pub target: Assignment,
    /// Member ids are `{client id}-{term}.{n}`: unique across coordinators, since each lives for
    /// one term of the offsets partition's leadership.
    term: u64,
    joined: u64,
    patterns: BTreeMap<String, Regex>,
}

/// What a commit names; checked by [`ConsumerGroup::check_commit`].
pub struct CommitBy<'a> {
    pub member: Option<(&'a str, i32)>,
}

impl ConsumerGroup {
    /// A group rebuilt from its stored parts in the leadership term `term`, every member's
    /// session starting now.
    pub fn restore(
        meta: GroupMeta,
        members: Vec<Member>,
        target: Assignment,
        term: u64,
        now_ms: i64,
    ) -> ConsumerGroup {
        let mut group = ConsumerGroup {
            meta,
            target,
            term,
            ..ConsumerGroup::default()
        };
        for mut member in members {
            member.last_heartbeat_ms = now_ms;
            if !member.revoking.is_empty() {
                member.revoke_deadline_ms = Some(now_ms + i64::from(member.rebalance_timeout_ms));
            }
            group.members.insert(member.id.clone(), member);
        }
        group.check();
        group
    }

    pub fn new(term: u64) -> ConsumerGroup {
        ConsumerGroup {
            term,
            ..ConsumerGroup::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Serves one heartbeat.
    ///
    /// # Errors
    /// `UNKNOWN_MEMBER_ID`, `FENCED_MEMBER_EPOCH`, `UNRELEASED_INSTANCE_ID`,
    /// `GROUP_MAX_SIZE_REACHED`, `INVALID_REGEX`, `UNSUPPORTED_ASSIGNOR`,
    /// `INVALID_SESSION_TIMEOUT`, `MALFORMED_REQUEST`; the group is then unchanged.
    pub fn heartbeat(
        &mut self,
        hb: ConsumerGroupHeartbeat,
        env: &Env,
    ) -> Result<ConsumerGroupHeartbeatReply, ApiError> {
        self.validate(&hb, env.config)?;
        let owned = hb.owned.as_ref().map(|o| tp_set(o));
        let id = match hb.member_epoch {
            LEAVE_EPOCH => return self.leave(&hb, env),
            STATIC_LEAVE_EPOCH => return self.static_leave(&hb, env),
            JOIN_EPOCH => self.join(&hb, env)?,
            _ => self.stay(&hb, owned.as_ref())?,
        };
        let member = self.members.get_mut(&id).expect("joined or known");
        member.last_heartbeat_ms = env.now_ms;
        self.refresh(env);
        self.reconcile(&id, owned.as_ref(), env.now_ms);
        self.check();
        let reply = self.reply(&id, owned.as_ref(), env.config);
        let member = self.members.get_mut(&id).expect("joined or known");
        member.heartbeat_interval_ms = reply.heartbeat_interval_ms;
        Ok(reply)
    }

    fn validate(
        &mut self,
        hb: &ConsumerGroupHeartbeat,
        config: &GroupConfig,
    ) -> Result<(), ApiError> {
        if let Some(name) = &hb.server_assignor {
            Assignor::from_name(name)?;
        }
        if let Some(ms) = hb.session_timeout_ms {
            check_session_timeout(ms, config)?;
        }
        match &hb.subscription {
            None if hb.member_epoch == JOIN_EPOCH => Err(ApiError::new(
                ErrorCode::MALFORMED_REQUEST,
                "a member joins with a subscription (topics or a pattern)",
            )),
            Some(Subscription::Pattern(pattern)) => self.compile(pattern).map(|_| ()),
            Some(Subscription::Topics(topics)) if topics.iter().any(|t| t.starts_with("__")) => {
                Err(ApiError::new(
                    ErrorCode::INTERNAL_TOPIC,
                    "internal topics cannot be subscribed to",
                ))
            }
            _ => Ok(()),
        }
    }

    fn compile(&mut self, pattern: &str) -> Result<&Regex, ApiError> {
        if !self.patterns.contains_key(pattern) {
            let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                ApiError::new(
                    ErrorCode::INVALID_REGEX,
                    format!("subscription pattern {pattern:?} is not a valid regex: {e}"),
                )
            })?;
            self.patterns.insert(pattern.to_string(), regex);
        }
        Ok(&self.patterns[pattern])
    }

    fn leave(
        &mut self,
        hb: &ConsumerGroupHeartbeat,
        env: &Env,
    ) -> Result<ConsumerGroupHeartbeatReply, ApiError> {
        self.known(&hb.member_id)?;
        self.remove(&hb.member_id, env);
        Ok(ConsumerGroupHeartbeatReply {
            member_id: hb.member_id.clone(),
            member_epoch: LEAVE_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn static_leave(
        &mut self,
        hb: &ConsumerGroupHeartbeat,
        env: &Env,
    ) -> Result<ConsumerGroupHeartbeatReply, ApiError> {
        let member = self.known(&hb.member_id)?;
        if member.instance_id.is_none() {
            return self.leave(hb, env);
        }
        let member = self.members.get_mut(&hb.member_id).expect("known");
        member.static_left = true;
        member.last_heartbeat_ms = env.now_ms;
        Ok(ConsumerGroupHeartbeatReply {
            member_id: hb.member_id.clone(),
            member_epoch: STATIC_LEAVE_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn known(&self, member_id: &str) -> Result<&Member, ApiError> {
        self.members.get(member_id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UNKNOWN_MEMBER_ID,
                format!(
                    "member {member_id:?} is not in the group (its session may have expired); \
                     rejoin with an empty member id and epoch 0"
                ),
            )
        })
    }

    /// A new member, or the next incarnation of a static member that left with epoch -2.
    fn join(&mut self, hb: &ConsumerGroupHeartbeat, env: &Env) -> Result<MemberId, ApiError> {
        if !hb.member_id.is_empty() {
            return Err(fenced(
                &hb.member_id,
                "a member joins with an empty member id",
            ));
        }
        let previous = hb.instance_id.as_ref().and_then(|instance| {
            self.members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
                .cloned()
        });
        if let Some(previous) = &previous {
            if !previous.static_left {
                return Err(ApiError::new(
                    ErrorCode::UNRELEASED_INSTANCE_ID,
                    format!(
                        "instance id {:?} is held by member {:?}, which has not left; retry \
                         after it leaves or its session ends",
                        previous.instance_id.as_deref().unwrap_or_default(),
                        previous.id
                    ),
                ));
            }
        } else if self.members.len() >= env.config.max_size {
            return Err(ApiError::new(
                ErrorCode::GROUP_MAX_SIZE_REACHED,
                format!(
                    "the group has its maximum of {} members",
                    env.config.max_size
                ),
            ));
        }
        self.joined += 1;
        let id = format!("{}-{}.{}", hb.client_id, self.term, self.joined);
        let subscription = hb.subscription.clone().expect("validated");
        let mut member = Member {
            id: id.clone(),
            instance_id: hb.instance_id.clone(),
            rack: hb.rack.clone(),
            client_id: hb.client_id.clone(),
            host: hb.host.clone(),
            subscription: subscription.clone(),
            assignor: hb.server_assignor.clone(),
            rebalance_timeout_ms: hb.rebalance_timeout_ms,
            session_timeout_ms: hb.session_timeout_ms,
            epoch: 0,
            previous_epoch: 0,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            static_left: false,
            last_heartbeat_ms: env.now_ms,
            revoke_deadline_ms: None,
            heartbeat_interval_ms: 0,
        };
        match previous {
            // The static member is back: it takes over its predecessor's partitions and
            // target, and the group does not rebalance unless its subscription changed.
            Some(previous) => {
                member.epoch = previous.epoch;
                member.previous_epoch = previous.previous_epoch;
                member.assigned = previous.assigned.clone();
                member.revoking = previous.revoking.clone();
                member.revoke_deadline_ms = previous.revoke_deadline_ms;
                self.members.remove(&previous.id);
                if let Some(target) = self.target.remove(&previous.id) {
                    self.target.insert(id.clone(), target);
                }
                self.members.insert(id.clone(), member);
                if previous.subscription != subscription {
                    self.bump(env);
                }
            }
            None => {
                self.members.insert(id.clone(), member);
                self.bump(env);
            }
        }
        Ok(id)
    }

    /// A heartbeat of a member in the group.
    fn stay(
        &mut self,
        hb: &ConsumerGroupHeartbeat,
        owned: Option<&BTreeSet<Tp>>,
    ) -> Result<MemberId, ApiError> {
        let member = self.known(&hb.member_id)?;
        if member.static_left {
            return Err(fenced(
                &hb.member_id,
                "this static member left the group; rejoin with epoch 0",
            ));
        }
        let at_previous = hb.member_epoch == member.previous_epoch
            && owned.is_some_and(|o| o.iter().all(|tp| member.owns(tp)));
        if hb.member_epoch != member.epoch && !at_previous {
            return Err(fenced(
                &hb.member_id,
                &format!(
                    "its epoch is {}, not {}; release every partition and rejoin with epoch 0",
                    member.epoch, hb.member_epoch
                ),
            ));
        }
        let member = self.members.get_mut(&hb.member_id).expect("known");
        let mut changed = false;
        if let Some(subscription) = &hb.subscription {
            changed |= *subscription != member.subscription;
            member.subscription = subscription.clone();
        }
        if hb.server_assignor.is_some() && hb.server_assignor != member.assignor {
            member.assignor = hb.server_assignor.clone();
            changed = true;
        }
        member.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        if changed {
            // The caller refreshes the target before reconciling.
            self.meta.epoch += 1;
        }
        Ok(hb.member_id.clone())
    }

    fn remove(&mut self, member_id: &str, env: &Env) {
        self.members.remove(member_id);
        self.target.remove(member_id);
        self.bump(env);
    }

    /// Bumps the group epoch and recomputes the target.
    fn bump(&mut self, env: &Env) {
        self.meta.epoch += 1;
        self.refresh(env);
    }

    /// Recomputes the target when the group epoch moved or the subscribed topics changed.
    fn refresh(&mut self, env: &Env) {
        let subscriptions = self.resolved_subscriptions(env.topics);
        let partitions: BTreeMap<String, u32> = subscriptions
            .values()
            .flatten()
            .map(|t| (t.clone(), env.topics[t]))
            .collect();
        if partitions != self.meta.partitions {
            self.meta.partitions = partitions;
            if self.meta.epoch == self.meta.target_epoch {
                self.meta.epoch += 1;
            }
        }
        if self.meta.epoch == self.meta.target_epoch {
            return;
        }
        self.target = self
            .assignor()
            .assign(&subscriptions, &self.meta.partitions, &self.target);
        self.meta.target_epoch = self.meta.epoch;
    }

    /// Every member's subscribed topics that exist.
    fn resolved_subscriptions(
        &mut self,
        topics: &BTreeMap<String, u32>,
    ) -> BTreeMap<MemberId, BTreeSet<String>> {
        let mut resolved = BTreeMap::new();
        let subscriptions: Vec<(MemberId, Subscription)> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.subscription.clone()))
            .collect();
        for (id, subscription) in subscriptions {
            let set: BTreeSet<String> = match &subscription {
                Subscription::Topics(names) => names
                    .iter()
                    .filter(|t| topics.contains_key(*t))
                    .cloned()
                    .collect(),
                Subscription::Pattern(pattern) => match self.compile(pattern) {
                    Ok(regex) => topics
                        .keys()
                        .filter(|t| regex.is_match(t.as_str()))
                        .cloned()
                        .collect(),
                    // Checked when it was subscribed; a pattern stored by an older version
                    // that no longer compiles matches nothing.
                    Err(_) => BTreeSet::new(),
                },
            };
            resolved.insert(id, set);
        }
        resolved
    }

    /// The assignor most members ask for (ties by name), else cooperative-sticky.
    fn assignor(&self) -> Assignor {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for name in self.members.values().filter_map(|m| m.assignor.as_deref()) {
            *votes.entry(name).or_default() += 1;
        }
        let best = votes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
        best.and_then(|(name, _)| Assignor::from_name(name).ok())
            .unwrap_or_default()
    }

    /// One step of a member toward its target: first release what it must, then take what
    /// is free.
    fn reconcile(&mut self, id: &str, owned: Option<&BTreeSet<Tp>>, now_ms: i64) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let target_epoch = self.meta.target_epoch;
        let member = self.members.get_mut(id).expect("reconciled members exist");
        if !member.revoking.is_empty() {
            if !owned.is_some_and(|o| o.is_disjoint(&member.revoking)) {
                return;
            }
            member.revoking.clear();
            member.revoke_deadline_ms = None;
        }
        let to_revoke: BTreeSet<Tp> = member.assigned.difference(&target).cloned().collect();
        if !to_revoke.is_empty() {
            member.assigned.retain(|tp| target.contains(tp));
            member.revoking = to_revoke;
            member.revoke_deadline_ms = Some(now_ms + i64::from(member.rebalance_timeout_ms));
            return;
        }
        if member.epoch != target_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = target_epoch;
        }
        let wanted: Vec<Tp> = target.difference(&member.assigned).cloned().collect();
        let free: Vec<Tp> = wanted
            .into_iter()
            .filter(|tp| !self.members.values().any(|m| m.id != id && m.owns(tp)))
            .collect();
        let member = self.members.get_mut(id).expect("reconciled members exist");
        member.assigned.extend(free);
    }

    fn reply(
        &self,
        id: &str,
        owned: Option<&BTreeSet<Tp>>,
        config: &GroupConfig,
    ) -> ConsumerGroupHeartbeatReply {
        let member = &self.members[id];
        let interval = config
            .heartbeat_interval_ms
            .min(self.session_timeout_ms(member, config) / 3);
        let converging = !member.revoking.is_empty()
            || member.epoch != self.meta.target_epoch
            || self.target.get(id) != Some(&member.assigned);
        ConsumerGroupHeartbeatReply {
            member_id: id.to_string(),
            member_epoch: member.epoch,
            heartbeat_interval_ms: if converging {
                interval.min(config.reconciling_heartbeat_interval_ms)
            } else {
                interval
            },
            assignment: (owned != Some(&member.assigned)).then(|| by_topic(&member.assigned)),
        }
    }

    /// Ends the sessions that ran out (and the members that took longer than their rebalance
    /// timeout to release partitions); whether anything changed.
    pub fn expire(&mut self, env: &Env) -> Vec<MemberId> {
        let expired: Vec<MemberId> = self
            .members
            .values()
            .filter(|m| env.now_ms >= m.expires_at_ms(self.session_timeout_ms(m, env.config)))
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove(id, env);
        }
        if expired.is_empty() {
            self.refresh(env);
        }
        self.check();
        expired
    }

    /// The earliest time a member can expire.
    pub fn next_expiry_ms(&self, config: &GroupConfig) -> Option<i64> {
        self.members
            .values()
            .map(|m| m.expires_at_ms(self.session_timeout_ms(m, config)))
            .min()
    }

    /// The session timeout of members that do not ask for one: the group's, kept within the
    /// broker's bounds (which may have narrowed since it was set), else the broker's default.
    pub fn group_session_timeout_ms(&self, config: &GroupConfig) -> u32 {
        self.meta
            .session_timeout_ms
            .map_or(config.session_timeout_ms, |ms| {
                ms.clamp(config.min_session_timeout_ms, config.max_session_timeout_ms)
            })
    }

    /// `member`'s session timeout: its own request, else the group's.
    pub fn session_timeout_ms(&self, member: &Member, config: &GroupConfig) -> u32 {
        member
            .session_timeout_ms
            .unwrap_or_else(|| self.group_session_timeout_ms(config))
    }

    /// Sets the group's session timeout (`None`: back to the broker's default); it applies to
    /// its members from their next heartbeat or session check.
    ///
    /// # Errors
    /// `INVALID_SESSION_TIMEOUT` outside the broker's bounds; the group is then unchanged.
    pub fn set_session_timeout(
        &mut self,
        session_timeout_ms: Option<u32>,
        config: &GroupConfig,
    ) -> Result<(), ApiError> {
        if let Some(ms) = session_timeout_ms {
            check_session_timeout(ms, config)?;
        }
        self.meta.session_timeout_ms = session_timeout_ms;
        Ok(())
    }

    /// Whether a commit of `tp` may be stored: a member commits only partitions it owns, at
    /// its current (or previous) epoch; a commit outside the protocol only while the group
    /// has no members.
    ///
    /// # Errors
    /// `UNKNOWN_MEMBER_ID` or `STALE_MEMBER_EPOCH`, saying why.
    pub fn check_commit(&self, by: &CommitBy, tp: &Tp) -> Result<(), ApiError> {
        let Some((member_id, epoch)) = by.member else {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(ApiError::new(
                ErrorCode::UNKNOWN_MEMBER_ID,
                format!(
                    "the group has {} active members, so commits must come from a member of it \
                     (with its member id and epoch)",
                    self.members.len()
                ),
            ));
        };
        let member = self.known(member_id)?;
        if epoch != member.epoch && epoch != member.previous_epoch {
            return Err(ApiError::new(
                ErrorCode::STALE_MEMBER_EPOCH,
                format!(
                    "member {member_id:?} committed at epoch {epoch}, but its epoch is {}; \
                     nothing was committed",
                    member.epoch
                ),
            ));
        }
        if !member.owns(tp) {
            return Err(ApiError::new(
                ErrorCode::STALE_MEMBER_EPOCH,
                format!(
                    "member {member_id:?} does not own {tp} at epoch {epoch} (it was assigned \
                     elsewhere); nothing was committed"
                ),
            ));
        }
        Ok(())
    }

    /// `"empty"`, `"reconciling"` or `"stable"`.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "empty"
        } else if self.members.values().all(|m| {
            m.revoking.is_empty()
                && m.epoch == self.meta.target_epoch
                && self.target.get(&m.id).is_some_and(|t| *t == m.assigned)
        }) {
            "stable"
        } else {
            "reconciling"
        }
    }

    pub fn describe_members(&self) -> Vec<MemberDescription> {
        self.members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                member_epoch: if m.static_left {
                    STATIC_LEAVE_EPOCH
                } else {
                    m.epoch
                },
                subscription: m.subscription.clone(),
                assigned: by_topic(&m.assigned),
                revoking: by_topic(&m.revoking),
            })
            .collect()
    }

    /// A partition has at most one owner; a member owns only partitions of its target or ones
    /// it is releasing.
    pub fn check(&self) {
        let mut owners: BTreeMap<&Tp, &str> = BTreeMap::new();
        for member in self.members.values() {
            assert!(member.assigned.is_disjoint(&member.revoking));
            for tp in member.assigned.iter().chain(&member.revoking) {
                if let Some(other) = owners.insert(tp, &member.id) {
                    panic!("{tp} is owned by both {other} and {}", member.id);
                }
            }
        }
        assert!(self.target.keys().all(|m| self.members.contains_key(m)));
    }
}

fn check_session_timeout(ms: u32, config: &GroupConfig) -> Result<(), ApiError> {
    if (config.min_session_timeout_ms..=config.max_session_timeout_ms).contains(&ms) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::INVALID_SESSION_TIMEOUT,
        format!(
            "session timeout {ms} ms is outside the broker's bounds {} to {} ms \
             (group_min_session_timeout_ms, group_max_session_timeout_ms)",
            config.min_session_timeout_ms, config.max_session_timeout_ms
        ),
    ))
}

fn fenced(member_id: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::FENCED_MEMBER_EPOCH,
        format!("member {member_id:?} is fenced: {why}"),
    )
}

pub fn tp_set(list: &[TopicPartitions]) -> BTreeSet<Tp> {
    list.iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Tp {
                topic: t.topic.clone(),
                partition: *p,
            })
        })
        .collect()
}

pub fn by_topic(set: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for tp in set {
        match out.last_mut() {
            Some(last) if last.topic == tp.topic => last.partitions.push(tp.partition),
            _ => out.push(TopicPartitions {
                topic: tp.topic.clone(),
                partitions: vec![tp.partition],
            }),
        }
    }
    out
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
