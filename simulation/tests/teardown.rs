//! A crashed node's teardown lets go of its store at once, so its restart comes when the fault
//! plan says. A replication stream that async-raft left behind its stopped core used to hold
//! the store open, and the restart waited the 10 s `Broker::shutdown` gives a store to close.

gregor_simulation::deterministic_getrandom!();

use gregor_simulation::faults::Script;
use gregor_simulation::{run, RunConfig};

/// Seed 3's plan of process crashes and power cuts under load; before the fix one of its
/// crashes left the store held for the whole wait.
const CRASHES_UNDER_LOAD: &str = "\
seed 3
nodes 3
disk model
safety 8000ms
faults crash power-loss
at 1521ms power-loss 2 keep=378
at 5439ms crash 1
at 6215ms restart 2
at 6992ms power-loss 3 keep=915
at 7738ms restart 1
at 10411ms restart 3
";

/// Far below the 10 s a held store costs, and well above what stopping a node's actors takes.
const TEARDOWN_BOUND_MS: u64 = 2_000;

#[test]
fn crashed_nodes_let_go_of_their_store_before_their_restart() {
    let script = Script::parse(CRASHES_UNDER_LOAD).expect("a valid script");
    let mut config = RunConfig::new(3);
    config.script = Some(script);
    let report = run(config);
    assert!(report.passed(), "{}", report.violations.join("\n"));
    // The three crashes and the two restarts due within the safety phase (the last node comes
    // back with the final heal, after waiting for its teardown as well).
    assert!(
        report.faults_struck >= 5,
        "the plan's crashes and restarts did not all strike: {}",
        report.faults_struck
    );
    assert!(
        report.slowest_teardown_ms < TEARDOWN_BOUND_MS,
        "a crashed node took {} ms of virtual time to stop: something held its store",
        report.slowest_teardown_ms
    );
}
