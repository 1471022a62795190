//! Scenarios of the membership protocol, driven through heartbeats as clients send them.

use super::*;
use crate::api::{ConsumerGroupHeartbeat, ErrorCode, Subscription, TopicPartitions};
use gregor_storage::PartitionId;

/// A group and the clients heartbeating to it. A client releases and takes partitions as
/// soon as a reply tells it to, unless it is `stuck`.
struct Harness {
    group: ConsumerGroup,
    topics: BTreeMap<String, u32>,
    config: GroupConfig,
    now_ms: i64,
    clients: BTreeMap<&'static str, Client>,
}

#[derive(Default, Clone)]
struct Client {
    member_id: String,
    epoch: i32,
    owned: BTreeSet<Tp>,
    instance_id: Option<String>,
    subscription: Option<Subscription>,
    stuck: bool,
    /// Asks for no session timeout of its own (the others ask for 3 s).
    group_timeout: bool,
}

fn topics(spec: &[(&str, u32)]) -> BTreeMap<String, u32> {
    spec.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn heartbeat(group: &str, client: &Client, epoch: i32) -> ConsumerGroupHeartbeat {
    ConsumerGroupHeartbeat {
        group: group.into(),
        member_id: client.member_id.clone(),
        member_epoch: epoch,
        instance_id: client.instance_id.clone(),
        rack: None,
        client_id: "c".into(),
        subscription: client.subscription.clone(),
        server_assignor: None,
        owned: Some(by_topic(&client.owned)),
        rebalance_timeout_ms: 10_000,
        session_timeout_ms: (!client.group_timeout).then_some(3_000),
        host: None,
    }
}

impl Harness {
    fn new(spec: &[(&str, u32)]) -> Harness {
        Harness {
            group: ConsumerGroup::new(7),
            topics: topics(spec),
            config: GroupConfig::default(),
            now_ms: 1_000,
            clients: BTreeMap::new(),
        }
    }

    fn expire(&mut self) -> Vec<MemberId> {
        let env = Env {
            now_ms: self.now_ms,
            topics: &self.topics,
            config: &self.config,
        };
        self.group.expire(&env)
    }

    fn env(&self) -> Env<'_> {
        Env {
            now_ms: self.now_ms,
            topics: &self.topics,
            config: &self.config,
        }
    }

    fn send(&mut self, name: &'static str, epoch: i32) -> Result<(), ApiError> {
        let client = self.clients.get(name).cloned().unwrap_or_default();
        let hb = heartbeat("g", &client, epoch);
        let env = Env {
            now_ms: self.now_ms,
            topics: &self.topics,
            config: &self.config,
        };
        let reply = self.group.heartbeat(hb, &env)?;
        let client = self.clients.entry(name).or_default();
        client.member_id = reply.member_id;
        client.epoch = reply.member_epoch;
        if let (Some(assignment), false) = (reply.assignment, client.stuck) {
            client.owned = tp_set(&assignment);
        }
        Ok(())
    }

    fn join(&mut self, name: &'static str, subscription: Subscription, instance: Option<&str>) {
        let client = Client {
            instance_id: instance.map(str::to_string),
            subscription: Some(subscription),
            ..Client::default()
        };
        self.clients.insert(name, client);
        self.send(name, JOIN_EPOCH).unwrap();
    }

    fn beat(&mut self, name: &'static str) {
        let epoch = self.clients[name].epoch;
        self.send(name, epoch).unwrap();
    }

    /// Heartbeats every client in turn until nothing changes.
    fn settle(&mut self) {
        for _ in 0..10 {
            let names: Vec<&'static str> = self.clients.keys().copied().collect();
            for name in names {
                self.beat(name);
            }
        }
    }

    fn owned(&self, name: &str) -> Vec<String> {
        self.clients[name]
            .owned
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// No partition is owned by two clients (what consumers actually hold).
    fn assert_single_owners(&self) {
        let mut seen = BTreeSet::new();
        for client in self.clients.values() {
            for tp in &client.owned {
                assert!(seen.insert(tp.clone()), "{tp} held by two clients");
            }
        }
    }
}

fn topics_sub(names: &[&str]) -> Subscription {
    Subscription::Topics(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn three_members_over_six_partitions_converge_to_two_each() {
    let mut h = Harness::new(&[("t", 6)]);
    for name in ["a", "b", "c"] {
        h.join(name, topics_sub(&["t"]), None);
        h.assert_single_owners();
    }
    h.settle();
    for name in ["a", "b", "c"] {
        assert_eq!(h.owned(name).len(), 2, "{name}");
        assert_eq!(h.clients[name].epoch, h.group.meta.epoch);
    }
    assert_eq!(h.group.state(), "stable");
    assert_eq!(h.group.meta.epoch, 3, "one bump per join");
}

#[test]
fn a_partition_moves_only_after_its_owner_releases_it() {
    let mut h = Harness::new(&[("t", 4)]);
    h.join("a", topics_sub(&["t"]), None);
    assert_eq!(h.owned("a"), ["t/0", "t/1", "t/2", "t/3"]);
    h.clients.get_mut("a").unwrap().stuck = true;
    h.join("b", topics_sub(&["t"]), None);
    assert!(h.owned("b").is_empty(), "a still owns everything");
    h.beat("a");
    // a was told to release two partitions but has not yet: b still gets nothing.
    assert_eq!(h.group.members[&h.clients["a"].member_id].revoking.len(), 2);
    h.beat("b");
    h.beat("b");
    assert!(h.owned("b").is_empty());
    assert_eq!(h.group.state(), "reconciling");
    // a releases (its next heartbeat reports owning only its target), then b gets them.
    h.clients.get_mut("a").unwrap().stuck = false;
    h.beat("a");
    h.beat("a");
    h.beat("b");
    h.assert_single_owners();
    assert_eq!(h.owned("a").len(), 2);
    assert_eq!(h.owned("b").len(), 2);
    assert_eq!(h.group.state(), "stable");
}

#[test]
fn a_member_commits_while_it_releases_and_not_after() {
    let mut h = Harness::new(&[("t", 2)]);
    h.join("a", topics_sub(&["t"]), None);
    let a = h.clients["a"].clone();
    h.join("b", topics_sub(&["t"]), None);
    h.clients.get_mut("a").unwrap().stuck = true;
    h.beat("a");
    let t1 = Tp::new("t", 1);
    let as_a = CommitBy {
        member: Some((&a.member_id, a.epoch)),
    };
    // t/1 is being revoked from a: a may still commit it (commit on revoke).
    h.group.check_commit(&as_a, &t1).unwrap();
    h.clients.get_mut("a").unwrap().stuck = false;
    h.beat("a");
    h.beat("a");
    h.beat("b");
    let error = h.group.check_commit(&as_a, &t1).unwrap_err();
    assert_eq!(error.code, ErrorCode::STALE_MEMBER_EPOCH);
    let b = &h.clients["b"];
    let as_b = CommitBy {
        member: Some((&b.member_id, b.epoch)),
    };
    h.group.check_commit(&as_b, &t1).unwrap();
    let stale = CommitBy {
        member: Some((&b.member_id, b.epoch - 5)),
    };
    assert_eq!(
        h.group.check_commit(&stale, &t1).unwrap_err().code,
        ErrorCode::STALE_MEMBER_EPOCH
    );
    let unknown = CommitBy {
        member: Some(("nobody", 1)),
    };
    assert_eq!(
        h.group.check_commit(&unknown, &t1).unwrap_err().code,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    // Outside the protocol: refused with members, allowed once the group is empty.
    let admin = CommitBy { member: None };
    assert_eq!(
        h.group.check_commit(&admin, &t1).unwrap_err().code,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    h.send("a", LEAVE_EPOCH).unwrap();
    h.send("b", LEAVE_EPOCH).unwrap();
    h.group.check_commit(&admin, &t1).unwrap();
}

#[test]
fn an_expired_session_frees_its_partitions_for_the_others() {
    let mut h = Harness::new(&[("t", 6)]);
    for name in ["a", "b", "c"] {
        h.join(name, topics_sub(&["t"]), None);
    }
    h.settle();
    let epoch = h.group.meta.epoch;
    h.now_ms += 2_000;
    h.beat("a");
    h.beat("b");
    assert_eq!(
        h.group.next_expiry_ms(&h.config),
        Some(h.now_ms - 2_000 + 3_000)
    );
    h.now_ms += 1_500;
    let expired = h.expire();
    assert_eq!(expired, vec![h.clients["c"].member_id.clone()]);
    assert_eq!(h.group.meta.epoch, epoch + 1);
    h.clients.remove("c");
    h.settle();
    assert_eq!(h.owned("a").len() + h.owned("b").len(), 6);
    h.assert_single_owners();
}

/// A harness whose one member, `quiet`, asks for no session timeout of its own.
fn group_timed_member(session_timeout_ms: Option<u32>) -> Harness {
    let mut h = Harness::new(&[("t", 2)]);
    let config = h.config;
    h.group
        .set_session_timeout(session_timeout_ms, &config)
        .unwrap();
    let client = Client {
        subscription: Some(topics_sub(&["t"])),
        group_timeout: true,
        ..Client::default()
    };
    h.clients.insert("quiet", client);
    h.send("quiet", JOIN_EPOCH).unwrap();
    h.settle();
    h
}

#[test]
fn a_group_s_session_timeout_expels_its_quiet_member_and_the_default_does_not() {
    let mut short = group_timed_member(Some(2_000));
    let mut default = group_timed_member(None);
    assert_eq!(short.group.group_session_timeout_ms(&short.config), 2_000);
    assert_eq!(
        default.group.group_session_timeout_ms(&default.config),
        45_000
    );
    // The heartbeat interval follows the group's timeout: a third of it when shorter than 5 s.
    let quiet = heartbeat("g", &short.clients["quiet"], short.clients["quiet"].epoch);
    let env = Env {
        now_ms: short.now_ms,
        topics: &short.topics,
        config: &short.config,
    };
    let reply = short.group.heartbeat(quiet, &env).unwrap();
    assert_eq!(reply.heartbeat_interval_ms, 666);
    for h in [&mut short, &mut default] {
        h.now_ms += 1_999;
        assert!(h.expire().is_empty());
    }
    short.now_ms += 1;
    default.now_ms += 1;
    assert_eq!(short.expire().len(), 1, "expelled after the group's 2 s");
    assert!(short.group.is_empty());
    assert!(
        default.expire().is_empty(),
        "the broker's 45 s are not over"
    );
    default.now_ms += 45_000 - 2_000 - 1;
    assert!(default.expire().is_empty());
    default.now_ms += 1;
    assert_eq!(default.expire().len(), 1);
}

#[test]
fn a_lowered_group_timeout_waits_for_the_member_to_learn_its_shorter_interval() {
    let mut h = group_timed_member(None);
    let config = h.config;
    // The member was told to heartbeat every 5 s; the group's timeout drops to 2 s.
    h.group.set_session_timeout(Some(2_000), &config).unwrap();
    h.now_ms += 4_999;
    assert!(h.expire().is_empty(), "its next heartbeat is not due yet");
    h.beat("quiet");
    h.now_ms += 1_999;
    assert!(h.expire().is_empty());
    h.now_ms += 1;
    assert_eq!(
        h.expire().len(),
        1,
        "told 666 ms, it is held to the group's 2 s"
    );
}

#[test]
fn a_group_s_session_timeout_keeps_within_the_broker_s_bounds() {
    let mut h = group_timed_member(Some(2_000));
    let config = h.config;
    let error = h.group.set_session_timeout(Some(500), &config).unwrap_err();
    assert_eq!(error.code, ErrorCode::INVALID_SESSION_TIMEOUT);
    assert!(
        error.message.contains("1000 to 1800000 ms"),
        "{}",
        error.message
    );
    assert_eq!(h.group.meta.session_timeout_ms, Some(2_000), "unchanged");
    // Bounds narrowed since the group set its value: the value is clamped into them.
    h.config.min_session_timeout_ms = 5_000;
    assert_eq!(h.group.group_session_timeout_ms(&h.config), 5_000);
    h.config = GroupConfig::default();
    // A member's own request takes precedence over the group's value.
    h.join("own", topics_sub(&["t"]), None);
    let own = h.group.members[&h.clients["own"].member_id].clone();
    assert_eq!(h.group.session_timeout_ms(&own, &h.config), 3_000);
    // And the value is a field of the stored group row.
    let rows = super::super::records::rows("g", &h.group);
    let reloaded = super::super::records::load("g", &rows.into_iter().collect::<Vec<_>>(), 8, 0);
    assert_eq!(reloaded.unwrap().meta.session_timeout_ms, Some(2_000));
}

#[test]
fn a_member_that_never_releases_is_removed_after_its_rebalance_timeout() {
    let mut h = Harness::new(&[("t", 2)]);
    h.join("a", topics_sub(&["t"]), None);
    h.clients.get_mut("a").unwrap().stuck = true;
    h.join("b", topics_sub(&["t"]), None);
    for _ in 0..12 {
        h.now_ms += 1_000;
        h.beat("a");
        h.beat("b");
        h.expire();
        if !h.group.members.contains_key(&h.clients["a"].member_id) {
            break;
        }
    }
    assert!(!h.group.members.contains_key(&h.clients["a"].member_id));
    h.beat("b");
    assert_eq!(h.owned("b"), ["t/0", "t/1"]);
    let error = h.send("a", h.clients["a"].epoch).unwrap_err();
    assert_eq!(error.code, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_static_member_that_comes_back_in_time_gets_its_partitions_without_a_rebalance() {
    let mut h = Harness::new(&[("t", 4)]);
    h.join("a", topics_sub(&["t"]), Some("a-host"));
    h.join("b", topics_sub(&["t"]), None);
    h.settle();
    let before = h.owned("a");
    let epoch = h.group.meta.epoch;
    h.send("a", STATIC_LEAVE_EPOCH).unwrap();
    h.settle_without("a");
    assert_eq!(h.owned("b").len(), 2, "a's partitions wait for it");
    // The restarted process: a new member id, same instance id.
    h.now_ms += 2_000;
    h.join("a", topics_sub(&["t"]), Some("a-host"));
    h.settle();
    assert_eq!(h.owned("a"), before);
    assert_eq!(h.group.meta.epoch, epoch, "no rebalance");
    assert_eq!(h.group.members.len(), 2);
}

#[test]
fn a_static_member_that_does_not_come_back_is_rebalanced_away() {
    let mut h = Harness::new(&[("t", 4)]);
    h.join("a", topics_sub(&["t"]), Some("a-host"));
    h.join("b", topics_sub(&["t"]), None);
    h.settle();
    h.send("a", STATIC_LEAVE_EPOCH).unwrap();
    let a = h.clients.remove("a").unwrap();
    h.now_ms += 2_000;
    h.settle();
    assert!(h.expire().is_empty());
    h.now_ms += 1_500;
    assert_eq!(h.expire(), vec![a.member_id]);
    h.settle();
    assert_eq!(h.owned("b").len(), 4);
}

#[test]
fn an_instance_id_in_use_is_not_taken_over() {
    let mut h = Harness::new(&[("t", 4)]);
    h.join("a", topics_sub(&["t"]), Some("x"));
    let twin = Client {
        instance_id: Some("x".into()),
        subscription: Some(topics_sub(&["t"])),
        ..Client::default()
    };
    h.clients.insert("twin", twin);
    let error = h.send("twin", JOIN_EPOCH).unwrap_err();
    assert_eq!(error.code, ErrorCode::UNRELEASED_INSTANCE_ID);
    assert_eq!(h.group.members.len(), 1);
}

#[test]
fn stale_epochs_and_unknown_members_are_fenced() {
    let mut h = Harness::new(&[("t", 2)]);
    h.join("a", topics_sub(&["t"]), None);
    h.join("b", topics_sub(&["t"]), None);
    h.settle();
    let epoch = h.clients["a"].epoch;
    let error = h.send("a", epoch + 1).unwrap_err();
    assert_eq!(error.code, ErrorCode::FENCED_MEMBER_EPOCH);
    let mut ghost = h.clients["a"].clone();
    ghost.member_id = "ghost".into();
    h.clients.insert("ghost", ghost);
    let error = h.send("ghost", epoch).unwrap_err();
    assert_eq!(error.code, ErrorCode::UNKNOWN_MEMBER_ID);
    // A known member id with epoch 0 must rejoin with an empty id.
    let error = h.send("a", JOIN_EPOCH).unwrap_err();
    assert_eq!(error.code, ErrorCode::FENCED_MEMBER_EPOCH);
}

#[test]
fn a_pattern_picks_up_new_topics_and_new_partitions() {
    let mut h = Harness::new(&[("orders", 2), ("refunds", 1), ("other", 3)]);
    h.join("a", Subscription::Pattern("orders|refunds.*".into()), None);
    assert_eq!(h.owned("a"), ["orders/0", "orders/1", "refunds/0"]);
    h.topics.insert("refunds-eu".into(), 1);
    h.topics.insert("orders".into(), 3);
    let epoch = h.group.meta.epoch;
    assert!(h.expire().is_empty());
    assert_eq!(h.group.meta.epoch, epoch + 1);
    h.beat("a");
    assert_eq!(
        h.owned("a"),
        [
            "orders/0",
            "orders/1",
            "orders/2",
            "refunds/0",
            "refunds-eu/0"
        ]
    );
}

#[test]
fn bad_heartbeats_are_refused_and_change_nothing() {
    let mut h = Harness::new(&[("t", 2)]);
    let cases: Vec<(ConsumerGroupHeartbeat, ErrorCode)> = vec![
        (
            ConsumerGroupHeartbeat {
                subscription: Some(Subscription::Pattern("(".into())),
                ..heartbeat("g", &Client::default(), JOIN_EPOCH)
            },
            ErrorCode::INVALID_REGEX,
        ),
        (
            ConsumerGroupHeartbeat {
                subscription: Some(topics_sub(&["t"])),
                server_assignor: Some("roundrobin".into()),
                ..heartbeat("g", &Client::default(), JOIN_EPOCH)
            },
            ErrorCode::UNSUPPORTED_ASSIGNOR,
        ),
        (
            ConsumerGroupHeartbeat {
                subscription: Some(topics_sub(&["t"])),
                session_timeout_ms: Some(10),
                ..heartbeat("g", &Client::default(), JOIN_EPOCH)
            },
            ErrorCode::INVALID_SESSION_TIMEOUT,
        ),
        (
            heartbeat("g", &Client::default(), JOIN_EPOCH),
            ErrorCode::MALFORMED_REQUEST,
        ),
        (
            ConsumerGroupHeartbeat {
                subscription: Some(topics_sub(&["__consumer_offsets"])),
                ..heartbeat("g", &Client::default(), JOIN_EPOCH)
            },
            ErrorCode::INTERNAL_TOPIC,
        ),
    ];
    for (hb, code) in cases {
        let env = h.env();
        let error = h.group.clone().heartbeat(hb, &env).unwrap_err();
        assert_eq!(error.code, code, "{error}");
    }
    h.config.max_size = 1;
    h.join("a", topics_sub(&["t"]), None);
    let client = Client {
        subscription: Some(topics_sub(&["t"])),
        ..Client::default()
    };
    h.clients.insert("b", client);
    assert_eq!(
        h.send("b", JOIN_EPOCH).unwrap_err().code,
        ErrorCode::GROUP_MAX_SIZE_REACHED
    );
    assert_eq!(h.group.members.len(), 1);
    assert_eq!(h.group.meta.epoch, 1);
}

#[test]
fn a_lost_reply_is_repaired_by_the_next_heartbeat() {
    let mut h = Harness::new(&[("t", 2)]);
    h.join("a", topics_sub(&["t"]), None);
    // The client never saw its assignment: it reports owning nothing, and is told again.
    h.clients.get_mut("a").unwrap().owned.clear();
    h.beat("a");
    assert_eq!(h.owned("a"), ["t/0", "t/1"]);
    let list = vec![TopicPartitions {
        topic: "t".into(),
        partitions: vec![PartitionId(1), PartitionId(0)],
    }];
    assert_eq!(tp_set(&list).len(), 2);
}

impl Harness {
    fn settle_without(&mut self, skip: &str) {
        for _ in 0..5 {
            let names: Vec<&'static str> = self
                .clients
                .keys()
                .copied()
                .filter(|n| *n != skip)
                .collect();
            for name in names {
                self.beat(name);
            }
        }
    }
}
