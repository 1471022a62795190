//! Failover: the leader's node is killed ten times in a row (and comes back each time); a new
//! leader must be ready within 2 s every time, with nothing committed lost. Prints the
//! distribution (virtual time: election timeouts 800-1200 ms, heartbeat 250 ms, 1 ms links).

mod common;

use common::{append, runtime, TestCluster};
use gregor_cluster::Start;
use gregor_storage::GroupId;
use std::time::Duration;
use tokio::time::Instant;

const GROUP: GroupId = GroupId(50);
const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_killed_leader_is_replaced_within_two_seconds_ten_times_in_a_row() {
    runtime().block_on(async {
        let mut cluster = TestCluster::new(&[1, 2, 3]).await;
        cluster.form_group(GROUP, &[1, 2, 3]).await;
        let mut took = Vec::new();
        let mut committed = 0;
        for _ in 0..10 {
            let (index, _) = cluster
                .propose(GROUP, append(1), 10 * SECOND)
                .await
                .unwrap();
            cluster.wait_applied(GROUP, index, 10 * SECOND).await;
            committed = index;
            let victim = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
            cluster.kill(victim).await;
            let killed = Instant::now();
            let next = cluster.wait_leader(GROUP, 10 * SECOND).await.unwrap();
            took.push(killed.elapsed());
            assert_ne!(next, victim);
            cluster.start_node(victim).await;
            cluster
                .node(victim)
                .start_group(GROUP, Start::Restart)
                .await
                .unwrap();
        }
        let (last, _) = cluster
            .propose(GROUP, append(1), 10 * SECOND)
            .await
            .unwrap();
        assert!(last > committed);
        cluster.wait_applied(GROUP, last, 10 * SECOND).await;
        common::assert_prefix_consistent(&cluster.logs(GROUP));
        took.sort();
        let ms: Vec<u128> = took.iter().map(Duration::as_millis).collect();
        eprintln!("failover over 10 kills (ms, sorted): {ms:?}");
        assert!(*took.last().unwrap() < 2 * SECOND, "failovers {ms:?} ms");
    });
}
