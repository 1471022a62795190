//! Consumer groups with members, end to end: real `gregor consume --group` processes joining,
//! leaving and being killed while records flow, against a real node.

use gregor::client::{
    Admin, ClientConfig, ClientError, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use gregor_protocol::api::{
    ConsumerGroupHeartbeat, ErrorCode, MemberRef, OffsetCommit, Subscription, TopicPartitions,
};
use gregor_storage::{Offset, PartitionId};
use gregor_tests::{eventually, failure, gregor_binary, success, Node};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Long enough for a loaded 2-core machine, short enough to fail a broken run quickly.
const DEADLINE: Duration = Duration::from_secs(60);
const PARTITIONS: u32 = 6;

/// What every member of every group printed: (group, partition, offset) -> times seen.
type Seen = Arc<Mutex<BTreeMap<(String, u32, u64), u32>>>;

/// One `gregor consume TOPIC --group G` process.
struct Member {
    child: Child,
    /// Its stderr lines (assignment changes), as they come.
    events: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(node: &Node, topic: &str, group: &str, instance: Option<&str>, seen: &Seen) -> Member {
        let mut command = Command::new(gregor_binary());
        command
            .args(["consume", topic, "--group", group, "--format", "%p %o\\n"])
            .args(["--session-timeout-ms", "3000"]);
        if let Some(instance) = instance {
            command.args(["--instance-id", instance]);
        }
        Member::spawn(command, node, group, seen)
    }

    fn spawn(mut command: Command, node: &Node, group: &str, seen: &Seen) -> Member {
        command
            .env("GREGOR_BOOTSTRAP", &node.address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting gregor consume");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (seen, group) = (seen.clone(), group.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.split(' ');
                let p: u32 = parts
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("partition");
                let o: u64 = parts.next().and_then(|o| o.parse().ok()).expect("offset");
                *seen
                    .lock()
                    .unwrap()
                    .entry((group.clone(), p, o))
                    .or_default() += 1;
            }
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Member { child, events }
    }

    /// Ctrl-C: the consumer commits and leaves (a static member leaves with epoch -2).
    fn interrupt(mut self) {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(rc, 0);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "consumer exited with {status}");
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn has_partitions(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("assigned:"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    eventually(what, DEADLINE, done);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Produces `count` records round-robin over the partitions, waiting for every
/// acknowledgement.
fn produce(runtime: &tokio::runtime::Runtime, node: &Node, topic: &str, count: u32) {
    let address = node.address.clone();
    let topic = topic.to_string();
    runtime.block_on(async move {
        let producer = Producer::connect(ProducerConfig::new(&address))
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..count {
            let value = format!("v{i}");
            let record = ProducerRecord::new(&topic, value.as_bytes())
                .partition(PartitionId(i % PARTITIONS));
            deliveries.push(producer.send(record).await.unwrap());
        }
        for delivery in deliveries {
            delivery.await.unwrap();
        }
    });
}

fn create_topic(runtime: &tokio::runtime::Runtime, node: &Node, topic: &str) {
    let admin = admin(runtime, node);
    runtime
        .block_on(admin.create_topic(NewTopic::new(topic).partitions(PARTITIONS)))
        .unwrap();
}

fn admin(runtime: &tokio::runtime::Runtime, node: &Node) -> Admin {
    runtime
        .block_on(Admin::connect(ClientConfig::new(&node.address)))
        .unwrap()
}

/// Every (partition, offset) below `per_partition` was seen by `group` at least once.
fn group_saw_all(seen: &Seen, group: &str, per_partition: u64) -> bool {
    let seen = seen.lock().unwrap();
    (0..PARTITIONS).all(|p| (0..per_partition).all(|o| seen.contains_key(&(group.into(), p, o))))
}

fn duplicates(seen: &Seen, group: &str) -> Vec<(u32, u64)> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|((g, _, _), n)| g == group && **n > 1)
        .map(|((_, p, o), _)| (*p, *o))
        .collect()
}

fn describe_json(node: &Node, group: &str) -> String {
    success(&node.cli(&["group", "describe", group, "--json"]))
}

#[test]
fn members_share_partitions_and_joins_and_clean_leaves_process_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let rt = runtime();
    create_topic(&rt, &node, "orders");
    let seen: Seen = Arc::default();

    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::start(&node, "orders", "billing", None, &seen))
        .collect();
    // A second group reads the same topic on its own.
    let audit = Member::start(&node, "orders", "audit", None, &seen);
    wait_for("three members with partitions", || {
        members.iter().all(Member::has_partitions)
    });
    produce(&rt, &node, "orders", 600);
    wait_for("the first 600 records", || {
        group_saw_all(&seen, "billing", 100)
    });

    // A member joins mid-stream, and one leaves cleanly, while records flow.
    members.push(Member::start(&node, "orders", "billing", None, &seen));
    produce(&rt, &node, "orders", 600);
    members.remove(0).interrupt();
    produce(&rt, &node, "orders", 600);
    wait_for("all 1800 records in billing", || {
        group_saw_all(&seen, "billing", 300)
    });
    wait_for("all 1800 records in audit", || {
        group_saw_all(&seen, "audit", 300)
    });
    assert_eq!(
        duplicates(&seen, "billing"),
        vec![],
        "commit on revoke: exactly once"
    );
    assert_eq!(duplicates(&seen, "audit"), vec![]);

    // Four joined, one left: describe lists the three that are still members.
    assert_eq!(
        members_of(&node, "billing"),
        3,
        "{}",
        describe_json(&node, "billing")
    );
    drop(audit);
    for member in members {
        member.interrupt();
    }
    let text = success(&node.cli(&["group", "describe", "billing"]));
    assert!(text.contains("State: empty"), "{text}");
}

#[test]
fn a_crashed_member_s_partitions_are_consumed_again_after_its_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let rt = runtime();
    create_topic(&rt, &node, "orders");
    let seen: Seen = Arc::default();
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::start(&node, "orders", "billing", None, &seen))
        .collect();
    wait_for("three members with partitions", || {
        members.iter().all(Member::has_partitions)
    });
    produce(&rt, &node, "orders", 600);
    members.remove(1).kill9();
    produce(&rt, &node, "orders", 600);
    // At least once: the dead member's partitions resume from its last commit.
    wait_for("all 1200 records after a kill -9", || {
        group_saw_all(&seen, "billing", 200)
    });
    let reset = node.cli(&[
        "group",
        "reset",
        "billing",
        "--topic",
        "orders",
        "--to-earliest",
    ]);
    assert!(
        failure(&reset).contains("active members"),
        "reset must be refused while the group has members"
    );
}

#[test]
fn a_static_member_that_restarts_in_time_causes_no_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let rt = runtime();
    create_topic(&rt, &node, "orders");
    let seen: Seen = Arc::default();
    let a = Member::start(&node, "orders", "billing", Some("a"), &seen);
    let b = Member::start(&node, "orders", "billing", Some("b"), &seen);
    wait_for("both members with partitions", || {
        a.has_partitions() && b.has_partitions()
    });
    let stable = || {
        let json = describe_json(&node, "billing");
        json.contains("\"state\": \"stable\"").then_some(json)
    };
    let mut before = None;
    wait_for("a stable group", || {
        before = stable();
        before.is_some()
    });
    let before = before.unwrap();
    let b_events_before = b.events.lock().unwrap().len();
    a.interrupt();
    let a = Member::start(&node, "orders", "billing", Some("a"), &seen);
    wait_for("the restarted member to get its partitions", || {
        a.has_partitions()
    });
    let mut after = None;
    wait_for("a stable group again", || {
        after = stable();
        after.is_some()
    });
    let epoch = |json: &str| {
        json.lines()
            .find(|l| l.contains("\"group_epoch\""))
            .map(str::to_string)
    };
    assert_eq!(epoch(&before), epoch(&after.unwrap()), "no rebalance");
    let b_events = b.events.lock().unwrap();
    assert!(
        !b_events[b_events_before..]
            .iter()
            .any(|l| l.starts_with("revoked") || l.starts_with("assigned")),
        "the other member kept its partitions: {b_events:?}"
    );
}

#[test]
fn commits_are_checked_against_the_member_and_its_epoch_and_membership_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let rt = runtime();
    create_topic(&rt, &node, "orders");
    let admin = admin(&rt, &node);
    let join = |client: &str| ConsumerGroupHeartbeat {
        group: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        instance_id: None,
        rack: None,
        client_id: client.into(),
        subscription: Some(Subscription::Topics(vec!["orders".into()])),
        server_assignor: Some("range".into()),
        owned: Some(vec![]),
        rebalance_timeout_ms: 60_000,
        session_timeout_ms: Some(60_000),
        host: None,
    };
    let a = rt
        .block_on(admin.consumer_group_heartbeat(join("a")))
        .unwrap();
    let owned: Vec<TopicPartitions> = a.assignment.clone().unwrap();
    assert_eq!(owned[0].partitions.len(), PARTITIONS as usize);
    let commit = |partition: u32, epoch: i32, offset: u64| {
        rt.block_on(admin.commit_offsets_as(
            "g",
            vec![OffsetCommit {
                topic: "orders".into(),
                partition: PartitionId(partition),
                offset: Offset(offset),
                metadata: None,
            }],
            Some(MemberRef {
                member_id: a.member_id.clone(),
                member_epoch: epoch,
            }),
        ))
    };
    commit(0, a.member_epoch, 5).unwrap();
    let code = |r: Result<(), ClientError>| r.unwrap_err().code();
    assert_eq!(
        code(commit(0, a.member_epoch + 7, 6)),
        Some(ErrorCode::STALE_MEMBER_EPOCH)
    );
    assert_eq!(
        code(commit(0, a.member_epoch, 4)),
        Some(ErrorCode::OFFSET_MOVES_BACK)
    );
    // Without a member id while the group has members.
    let anonymous = rt.block_on(admin.commit_offsets(
        "g",
        vec![OffsetCommit {
            topic: "orders".into(),
            partition: PartitionId(1),
            offset: Offset(1),
            metadata: None,
        }],
    ));
    assert_eq!(code(anonymous), Some(ErrorCode::UNKNOWN_MEMBER_ID));

    // The membership is durable: after a restart the coordinator knows the member.
    let address = node.address.clone();
    let (status, _) = node.terminate();
    assert!(status.success());
    let node = Node::start(dir.path(), &address);
    let admin = admin_after_restart(&rt, &node);
    let description = rt.block_on(admin.describe_group("g")).unwrap();
    assert_eq!(description.members.len(), 1);
    assert_eq!(description.members[0].member_id, a.member_id);
    assert_eq!(description.members[0].member_epoch, a.member_epoch);
    let again = ConsumerGroupHeartbeat {
        member_id: a.member_id.clone(),
        member_epoch: a.member_epoch,
        subscription: None,
        owned: Some(owned),
        ..join("a")
    };
    let reply = rt.block_on(admin.consumer_group_heartbeat(again)).unwrap();
    assert_eq!(reply.member_epoch, a.member_epoch);
    assert_eq!(reply.assignment, None, "nothing changed");
}

/// A member that asks for no session timeout of its own: its group's applies.
fn start_without_own_timeout(node: &Node, topic: &str, group: &str, seen: &Seen) -> Member {
    let mut command = Command::new(gregor_binary());
    command.args(["consume", topic, "--group", group, "--format", "%p %o\\n"]);
    Member::spawn(command, node, group, seen)
}

fn members_of(node: &Node, group: &str) -> usize {
    describe_json(node, group).matches("\"member_id\"").count()
}

#[test]
fn describe_shows_the_member_s_host_and_a_group_s_session_timeout_expels_it_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let rt = runtime();
    create_topic(&rt, &node, "orders");
    let seen: Seen = Arc::default();

    let set = success(&node.cli(&["group", "config", "quick", "--session-timeout", "2s"]));
    assert!(
        set.contains("Session timeout: 2000 ms (group config)"),
        "{set}"
    );
    let refused = failure(&node.cli(&["group", "config", "quick", "--session-timeout", "100ms"]));
    assert!(refused.contains("INVALID_SESSION_TIMEOUT"), "{refused}");
    assert!(refused.contains("1000 to 1800000 ms"), "{refused}");
    let shown = success(&node.cli(&["group", "config", "quick"]));
    assert!(
        shown.contains("Session timeout: 2000 ms (group config)"),
        "{shown}"
    );
    let default = success(&node.cli(&["group", "config", "patient"]));
    assert!(
        default.contains("Session timeout: 45000 ms (broker default"),
        "{default}"
    );

    let quick = start_without_own_timeout(&node, "orders", "quick", &seen);
    let patient = start_without_own_timeout(&node, "orders", "patient", &seen);
    wait_for("both members with partitions", || {
        quick.has_partitions() && patient.has_partitions()
    });
    let json = describe_json(&node, "quick");
    assert!(json.contains("\"host\": \"127.0.0.1\""), "{json}");
    assert!(json.contains("\"session_timeout_ms\": 2000"), "{json}");
    let text = success(&node.cli(&["group", "describe", "patient"]));
    assert!(text.contains("127.0.0.1"), "{text}");

    quick.kill9();
    patient.kill9();
    let killed = Instant::now();
    wait_for("the quick group's member expelled", || {
        members_of(&node, "quick") == 0
    });
    let expelled_after = killed.elapsed();
    // Expelled by its group's 2 s, not by the broker's 45 s; the other group's member, dead
    // just as long, still has its session.
    assert!(
        expelled_after < Duration::from_secs(20),
        "{expelled_after:?}"
    );
    assert_eq!(
        members_of(&node, "patient"),
        1,
        "the default 45 s are not over"
    );

    // The group's configuration is in its rows: it outlives a restart.
    let address = node.address.clone();
    let _ = node.terminate();
    let node = Node::start(dir.path(), &address);
    wait_for("the group's configuration after a restart", || {
        let output = node.cli(&["group", "config", "quick"]);
        String::from_utf8_lossy(&output.stdout).contains("Session timeout: 2000 ms (group config)")
    });
}

fn admin_after_restart(runtime: &tokio::runtime::Runtime, node: &Node) -> Admin {
    let address = node.address.clone();
    runtime.block_on(async move {
        let start = Instant::now();
        loop {
            let admin = Admin::connect(ClientConfig::new(&address)).await.unwrap();
            // The offsets partitions elect their leaders after the restart.
            match admin.describe_group("g").await {
                Ok(_) => return admin,
                Err(e) if start.elapsed() < DEADLINE && e.is_retriable() => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("describe after restart: {e}"),
            }
        }
    })
}

/// BENCHMARKS.md's rebalance figures: the time from a member joining, and from a member being
/// killed, until every partition has been consumed past the point where that happened, while
/// a producer writes to every partition every 10 ms. Run with
/// `cargo test --release -p gregor-tests --test groups -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn rebalance_timing() {
    let session_ms = std::env::var("SESSION_MS").unwrap_or_else(|_| "10000".into());
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let rt = runtime();
    create_topic(&rt, &node, "orders");
    let seen: Seen = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = {
        let (address, stop) = (node.address.clone(), stop.clone());
        rt.spawn(async move {
            let producer = Producer::connect(ProducerConfig::new(&address))
                .await
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for p in 0..PARTITIONS {
                    let record = ProducerRecord::new("orders", b"x").partition(PartitionId(p));
                    let _ = producer.send(record).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Each member's records are kept under its own label, to tell who consumed what.
    let start = |label: &str, seen: &Seen| {
        let mut command = Command::new(gregor_binary());
        command
            .args([
                "consume", "orders", "--group", "bench", "--format", "%p %o\n",
            ])
            .args(["--session-timeout-ms", &session_ms]);
        Member::spawn(command, &node, label, seen)
    };
    let mut members = vec![start("m0", &seen), start("m1", &seen)];
    wait_for("two members with partitions", || {
        members.iter().all(Member::has_partitions)
    });
    let admin = admin(&rt, &node);
    let ends = || -> Vec<u64> {
        (0..PARTITIONS)
            .map(|p| {
                rt.block_on(admin.list_offsets(
                    "orders",
                    PartitionId(p),
                    gregor_protocol::api::OffsetSpec::Latest,
                ))
                .unwrap()
                .offset
                .0
            })
            .collect()
    };
    // How many partitions `labels` consumed past `ends`.
    let consumed_past_by = |labels: &[&str], ends: &[u64]| {
        let seen = seen.lock().unwrap();
        let partition_past = |p: usize, end: u64| {
            labels.iter().any(|l| {
                let from = (l.to_string(), p as u32, end);
                seen.range(from..(l.to_string(), p as u32, u64::MAX))
                    .next()
                    .is_some()
            })
        };
        ends.iter()
            .enumerate()
            .filter(|(p, end)| partition_past(*p, **end))
            .count()
    };
    let all = ["m0", "m1", "m2"];
    let consumed_past = |ends: &[u64]| consumed_past_by(&all, ends) == PARTITIONS as usize;
    // Let the group settle and catch up.
    std::thread::sleep(Duration::from_secs(2));
    let settled = ends();
    wait_for("caught up", || consumed_past(&settled));

    // A join: until the newcomer consumes its share (2 of 6), taken from the others.
    let joined_at = Instant::now();
    let at_join = ends();
    members.push(start("m2", &seen));
    wait_for("the newcomer consuming its share", || {
        consumed_past_by(&["m2"], &at_join) >= 2
    });
    let join = joined_at.elapsed();
    wait_for("the third member with partitions", || {
        members[2].has_partitions()
    });
    std::thread::sleep(Duration::from_secs(2));

    let killed_at = Instant::now();
    let at_kill = ends();
    members.remove(0).kill9();
    // By the survivors only: the killed member's last records may still be in its pipe.
    wait_for("every partition consumed after a kill -9", || {
        consumed_past_by(&["m1", "m2"], &at_kill) == PARTITIONS as usize
    });
    let crash = killed_at.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    rt.block_on(producing).unwrap();
    println!(
        "rebalance: join -> newcomer consuming its share {:.0} ms; kill -9 -> every partition \
         consumed again {:.0} ms (session timeout {session_ms} ms)",
        join.as_secs_f64() * 1000.0,
        crash.as_secs_f64() * 1000.0
    );
}
