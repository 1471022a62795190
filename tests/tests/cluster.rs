//! Three `gregor serve` processes on loopback as one cluster: it forms, serves through any node,
//! survives kill -9 of a partition leader under acks=all load with no acknowledged record lost,
//! comes back after a restart of every node, and drains a node.

mod common;

use common::{lost, read_everything, Load};
use gregor::client::{ClientConfig, ConsumerConfig, ProducerConfig};
use gregor_actors::api::Acks;
use gregor_tests::{eventually, success, wall_clock, ProcessCluster};
use std::collections::BTreeMap;
use std::time::Duration;

/// Short Raft timeouts, so a failover fits well inside a test.
const SERVE_ARGS: &[&str] = &[
    "--election-timeout-ms",
    "500",
    "--heartbeat-interval-ms",
    "100",
];
const PARTITIONS: u32 = 3;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn create_topic(cluster: &ProcessCluster, topic: &str) {
    success(&cluster.cli(&[
        "topic",
        "create",
        topic,
        "--partitions",
        &PARTITIONS.to_string(),
        "--replication-factor",
        "3",
    ]));
    wait_for_leaders(cluster, topic, Duration::from_secs(30));
}

/// A client of the whole cluster that skips a broker it could not reach, as the CLI does.
fn client_config(bootstrap: &str) -> ClientConfig {
    ClientConfig::new(bootstrap)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
}

/// Leaders of `topic`'s partitions as the cluster describes them (None: no leader now).
fn leaders(cluster: &ProcessCluster, topic: &str) -> Vec<Option<u64>> {
    let output = cluster.cli(&["topic", "describe", topic, "--json"]);
    if !output.status.success() {
        return vec![None; PARTITIONS as usize];
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    json["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["leader"].as_u64())
        .collect()
}

/// A new topic's partition founds its group on one replica and its leader brings the others
/// in one at a time: until then losing a node can leave it without a majority. Each leader is
/// asked itself, since only it knows its group's voters (another node repeats a hint).
fn wait_for_full_replication(cluster: &ProcessCluster, topic: &str, within: Duration) {
    let settled_at = |leader: u64, p: usize| {
        let Some(node) = cluster.nodes.get(&leader) else {
            return false;
        };
        let output = node.cli(&["topic", "describe", topic, "--json"]);
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
            return false;
        };
        let partition = &json["partitions"][p];
        partition["leader"].as_u64() == Some(leader)
            && partition["lagging"]
                .as_array()
                .is_some_and(|lagging| lagging.is_empty())
    };
    eventually(
        &format!("every replica of {topic} is a voter"),
        within,
        || {
            let leaders = leaders(cluster, topic);
            leaders
                .iter()
                .enumerate()
                .all(|(p, leader)| leader.is_some_and(|leader| settled_at(leader, p)))
        },
    );
}

/// The metadata group starts as its founder alone and takes the next two nodes as voters once
/// both have caught up; until then losing the founder stops it. Tests that stop a node wait for
/// the three voters first.
fn wait_for_metadata_voters(cluster: &ProcessCluster, voters: usize, within: Duration) {
    eventually(&format!("{voters} metadata voters"), within, || {
        let output = cluster.cli(&["cluster", "status", "--json"]);
        let Ok(status) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
            return false;
        };
        let roles = status["nodes"].as_array().into_iter().flatten();
        roles.filter(|n| n["metadata_role"] == "voter").count() == voters
    });
}

fn wait_for_leaders(cluster: &ProcessCluster, topic: &str, within: Duration) -> Duration {
    eventually(
        &format!("every partition of {topic} has a leader"),
        within,
        || leaders(cluster, topic).iter().all(Option::is_some),
    )
}

#[test]
fn three_nodes_form_a_cluster_and_serve_through_any_node() {
    let cluster = ProcessCluster::start(3, SERVE_ARGS);
    let status = success(&cluster.cli(&["cluster", "status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{status}");
    create_topic(&cluster, "orders");
    let lines: String = (0..30).map(|i| format!("k{i}:record-{i}\n")).collect();
    for id in 1..=3u64 {
        let produced = cluster.nodes[&id].cli_with_stdin(
            &["produce", "orders", "--key-separator", ":", "--acks", "all"],
            lines.as_bytes(),
        );
        success(&produced);
    }
    for id in 1..=3u64 {
        let consumed = success(&cluster.nodes[&id].cli(&[
            "consume",
            "orders",
            "--from",
            "earliest",
            "--exit-at-end",
        ]));
        assert_eq!(
            consumed.lines().count(),
            90,
            "through node {id}: {consumed}"
        );
    }
}

#[test]
fn kill_9_of_a_leader_under_load_loses_no_acknowledged_record() {
    let mut cluster = ProcessCluster::start(3, SERVE_ARGS);
    create_topic(&cluster, "load");
    wait_for_full_replication(&cluster, "load", Duration::from_secs(30));
    wait_for_metadata_voters(&cluster, 3, Duration::from_secs(30));
    let bootstrap = cluster.bootstrap();
    let runtime = runtime();
    let mut config = ProducerConfig::from_client(client_config(&bootstrap));
    assert!(config.idempotence, "idempotent by default");
    config.acks = Acks::All;
    config.linger = Duration::from_millis(2);
    let load = Load::start(&runtime, config, "load");
    eventually(
        "2,000 records acknowledged",
        Duration::from_secs(60),
        || load.acknowledged() >= 2_000,
    );
    let victim = leaders(&cluster, "load")[0].expect("partition 0 has a leader");
    cluster.kill9(victim);
    let killed_at = load.acknowledged();
    let before = load.last_acknowledged_on(0);
    // Failover as the producer sees it: acknowledgements resume on the victim's partition.
    let failover = eventually(
        "partition 0 acknowledges again after its leader's kill",
        Duration::from_secs(30),
        || load.last_acknowledged_on(0) > before,
    );
    eventually(
        "2,000 more records acknowledged after the kill",
        Duration::from_secs(60),
        || load.acknowledged() >= killed_at + 2_000,
    );
    let acked = load.stop(&runtime);
    let found = runtime.block_on(read_everything(
        ConsumerConfig::from_client(client_config(&bootstrap)),
        "load",
        PARTITIONS,
    ));

    let sequence = |value: &str| -> u64 { value["record-".len()..].parse().expect("record-N") };
    let mut last_of: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut disorder = Vec::new();
    for ((partition, offset), value) in &found {
        let n = sequence(value);
        if let Some((last_offset, last)) = last_of.insert(*partition, (*offset, n)) {
            if last >= n {
                disorder.push(format!(
                    "{partition}: record-{n} at {offset} after record-{last} at {last_offset}"
                ));
            }
        }
    }
    let lost = lost(&acked, &found);
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for value in found.values() {
        *copies.entry(value.as_str()).or_default() += 1;
    }
    let duplicates = copies.values().filter(|&&n| n > 1).count();
    eprintln!(
        "acked {}, read {}, failover {} ms, duplicates {duplicates}",
        acked.len(),
        found.len(),
        failover.as_millis()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost or changed, first: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(duplicates, 0, "the idempotent producer wrote records twice");
    assert!(
        failover < Duration::from_secs(2),
        "partition 0 took {} ms to acknowledge again",
        failover.as_millis()
    );
    assert!(
        disorder.is_empty(),
        "records out of send order within a partition: {:?}",
        &disorder[..disorder.len().min(5)]
    );
}

/// The leader of partition 0 as node `id` describes it (None: no leader, or no answer).
fn leader_of_0_via(cluster: &ProcessCluster, id: u64, topic: &str) -> Option<u64> {
    let output = cluster.nodes[&id].cli(&["topic", "describe", topic, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    json["partitions"][0]["leader"].as_u64()
}

/// A leader frozen by SIGSTOP (a long pause, a stalled VM) is replaced; what is acknowledged
/// meanwhile is all there; and once it runs again it follows the new leader and serves
/// every record through itself.
#[test]
fn a_paused_leader_is_replaced_and_catches_up_when_it_resumes() {
    let cluster = ProcessCluster::start(3, SERVE_ARGS);
    create_topic(&cluster, "orders");
    wait_for_full_replication(&cluster, "orders", Duration::from_secs(30));
    wait_for_metadata_voters(&cluster, 3, Duration::from_secs(30));
    let victim = leaders(&cluster, "orders")[0].expect("partition 0 has a leader");
    let other = (1..=3).find(|n| *n != victim).expect("three nodes");
    cluster.nodes[&victim].signal(libc::SIGSTOP);
    // Only live nodes are asked from here on: a stopped process accepts connections and never
    // answers, so a client would wait out its request timeout on it.
    let failover = eventually(
        "another node leads partition 0",
        Duration::from_secs(30),
        || leader_of_0_via(&cluster, other, "orders").is_some_and(|l| l != victim),
    );
    let lines: String = (0..30).map(|i| format!("paused-{i}\n")).collect();
    success(&cluster.nodes[&other].cli_with_stdin(
        &["produce", "orders", "--partition", "0", "--acks", "all"],
        lines.as_bytes(),
    ));
    cluster.nodes[&victim].signal(libc::SIGCONT);
    eventually(
        "the resumed node knows the new leader",
        Duration::from_secs(30),
        || leader_of_0_via(&cluster, victim, "orders").is_some_and(|l| l != victim),
    );
    let consumed = success(&cluster.nodes[&victim].cli(&[
        "consume",
        "orders",
        "--partition",
        "0",
        "--from",
        "earliest",
        "--exit-at-end",
    ]));
    let expected: Vec<String> = (0..30).map(|i| format!("paused-{i}")).collect();
    assert_eq!(consumed.lines().collect::<Vec<_>>(), expected);
    eprintln!(
        "paused leader: replaced {} ms after SIGSTOP",
        failover.as_millis()
    );
}

#[test]
fn after_every_node_restarts_every_partition_has_a_leader_and_the_data() {
    let mut cluster = ProcessCluster::start(3, SERVE_ARGS);
    create_topic(&cluster, "orders");
    let lines: String = (0..50).map(|i| format!("k{i}:record-{i}\n")).collect();
    success(&cluster.nodes[&1].cli_with_stdin(
        &["produce", "orders", "--key-separator", ":", "--acks", "all"],
        lines.as_bytes(),
    ));
    let started = wall_clock();
    cluster.restart_all();
    wait_for_leaders(&cluster, "orders", Duration::from_secs(45));
    eprintln!(
        "whole-cluster restart: every partition led again {} ms after the restart began",
        started.elapsed().as_millis()
    );
    let consumed =
        success(&cluster.cli(&["consume", "orders", "--from", "earliest", "--exit-at-end"]));
    assert_eq!(consumed.lines().count(), 50, "{consumed}");
}

/// A drain moves every replica off the node, the metadata group's seat included, while the
/// cluster is still growing the offsets topic onto the nodes that joined.
#[test]
fn a_drained_node_ends_with_no_replicas() {
    let mut cluster = ProcessCluster::start(3, SERVE_ARGS);
    // Three nodes hold RF 3 everywhere: a fourth gives the drained node's replicas a home.
    let fourth = cluster.add_node();
    create_topic(&cluster, "orders");
    success(&cluster.cli(&["cluster", "drain", "2", "--no-wait"]));
    // None while `cluster status` cannot answer (the metadata seat moves during a drain).
    let replicas_of = |node: u64| -> Option<u64> {
        let output = cluster.cli(&["cluster", "status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_id"].as_u64() == Some(node))
            .and_then(|n| n["replicas"].as_u64())
    };
    let drained = eventually("node 2 drained", Duration::from_secs(45), || {
        replicas_of(2) == Some(0)
    });
    eprintln!(
        "drain: node 2 held no replica {} ms after `cluster drain`",
        drained.as_millis()
    );
    assert!(
        replicas_of(fourth).is_some_and(|n| n > 0),
        "the new node took replicas"
    );
}
