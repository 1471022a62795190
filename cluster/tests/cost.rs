//! Measurements, not checks (run with `--ignored --nocapture`): the idle CPU of three nodes
//! hosting many groups of three replicas, in one process over the in-process network (every
//! message through the codec, delivered at once), with real storage and the production tuning.

mod common;

use common::TestCluster;
use gregor_cluster::{Containment, Start};
use gregor_storage::GroupId;
use std::time::Duration;
use tokio::time::Instant;

/// CPU seconds this process has used (user + system), from /proc/self/stat (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn resident_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

/// The production tuning, with `HEARTBEAT_MS` (and an election timeout four to six times it)
/// when set.
fn tuning() -> gregor_cluster::RaftTuning {
    let mut tuning = common::tuning();
    if let Some(ms) = std::env::var("HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tuning.heartbeat_interval_ms = ms;
        tuning.election_timeout_min_ms = tuning.election_timeout_min_ms.max(4 * ms);
        tuning.election_timeout_max_ms = tuning.election_timeout_max_ms.max(6 * ms);
    }
    tuning
}

fn idle_cost(groups: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let cluster = TestCluster::on(
            common::net::TestNet::bare(),
            &[1, 2, 3],
            tuning(),
            Containment::default(),
        )
        .await;
        let members = common::nodes(&[1, 2, 3]);
        let began = Instant::now();
        for g in 0..groups {
            for node in cluster.ids() {
                cluster
                    .node(node)
                    .start_group(GroupId(1000 + g), Start::Found { members: members.clone() })
                    .await
                    .unwrap();
            }
        }
        for g in 0..groups {
            assert!(
                cluster.wait_leader(GroupId(1000 + g), Duration::from_secs(120)).await.is_some(),
                "group {g} elected no leader"
            );
        }
        eprintln!("{groups} groups x 3 replicas: leaders after {:?}", began.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let wall = Duration::from_secs(20);
        let cpu_before = cpu_seconds();
        tokio::time::sleep(wall).await;
        let cpu = cpu_seconds() - cpu_before;
        let per_node = 100.0 * cpu / wall.as_secs_f64() / 3.0;
        eprintln!(
            "{groups} groups x 3 replicas, heartbeat {} ms: {cpu:.2} s CPU in {wall:?} = {per_node:.1}% of a core per node; RSS {:.0} MB",
            tuning().heartbeat_interval_ms,
            resident_mb()
        );
        for node in cluster.ids() {
            cluster.node(node).shutdown().await;
        }
    });
}

#[test]
#[ignore = "a measurement: 25 s of wall time"]
fn idle_cpu_of_1000_groups() {
    idle_cost(1000);
}

#[test]
#[ignore = "a measurement: 25 s of wall time"]
fn idle_cpu_of_3000_groups() {
    idle_cost(3000);
}
