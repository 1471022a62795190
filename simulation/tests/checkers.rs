//! Each checker shown to report what it must, by runs that break the system on purpose, each
//! next to a control run of the same scenario that keeps every promise.

gregor_simulation::deterministic_getrandom!();

use gregor_simulation::check::Checker;
use gregor_simulation::faults::{FaultChoice, Script};
use gregor_simulation::history::AckLevel;
use gregor_simulation::{run, Report, RunConfig, Sabotage};

fn scripted(seed: u64, script: &str, sabotage: Sabotage) -> Report {
    let mut config = RunConfig::new(seed);
    config.script = Some(Script::parse(script).expect("the test's script parses"));
    config.sabotage = sabotage;
    config.acks = Some(AckLevel::All);
    config.liveness_bound_ms = 20_000;
    run(config)
}

fn fired(report: &Report) -> String {
    format!("{:?}\n{}", report.checkers, report.violations.join("\n"))
}

/// A process crash early on (which keeps everything written, topics included), then a power
/// cut that keeps nothing unsynced, under load.
const POWER_CUT: &str = "
nodes 1
disk model
safety 9s
at 1.5s crash 1
at 1.6s restart 1
at 6s power-loss 1 keep=0
at 6.5s restart 1
";

#[test]
fn acknowledging_before_fsync_loses_acknowledged_records_in_a_power_cut() {
    let control = scripted(15, POWER_CUT, Sabotage::default());
    assert!(control.passed(), "control run: {}", fired(&control));
    assert!(
        control.acknowledged > 100,
        "the control run did work: {control:?}"
    );
    let sabotage = Sabotage {
        ack_before_fsync: true,
        ..Sabotage::default()
    };
    let broken = scripted(15, POWER_CUT, sabotage);
    assert!(
        broken.checkers.contains(&Checker::LostWrite) || broken.checkers.contains(&Checker::Unseen),
        "acknowledged records vanished unnoticed: {}",
        fired(&broken)
    );
    assert!(
        broken.checkers.contains(&Checker::CommittedOffsetMovedBack),
        "acknowledged commits vanished unnoticed: {}",
        fired(&broken)
    );
}

/// Client links cut again and again: replies get lost and producers retry.
const FLAKY_CLIENTS: &str = "
nodes 1
disk model
safety 10s
at 2s cut-clients 1
at 2.3s heal
at 3s cut-clients 1
at 3.1s heal
at 4s cut-clients 1
at 4.5s heal
at 5s cut-clients 1
at 5.05s heal
at 6s cut-clients 1
at 6.4s heal
at 7s cut-clients 1
at 7.2s heal
at 8s cut-clients 1
at 8.1s heal
";

#[test]
fn producers_claiming_idempotence_without_it_are_caught_duplicating() {
    let sabotage = Sabotage {
        claim_idempotence: true,
        ..Sabotage::default()
    };
    let duplicated = (1..=6)
        .map(|seed| scripted(seed, FLAKY_CLIENTS, sabotage))
        .find(|report| !report.passed());
    let report = duplicated.expect("no run duplicated a retried send");
    assert_eq!(
        report.checkers,
        vec![Checker::Duplicate],
        "{}",
        fired(&report)
    );
}

#[test]
fn reading_sends_wrongly_taken_for_definite_failures_is_an_aborted_read() {
    let control = scripted(3, FLAKY_CLIENTS, Sabotage::default());
    assert!(control.passed(), "control run: {}", fired(&control));
    let sabotage = Sabotage {
        claim_failures_definite: true,
        ..Sabotage::default()
    };
    let caught = (1..=6)
        .map(|seed| scripted(seed, FLAKY_CLIENTS, sabotage))
        .find(|report| report.checkers.contains(&Checker::AbortedRead));
    assert!(caught.is_some(), "no run read a send taken for failed");
}

#[test]
fn a_tampered_replica_shows_inconsistent_offsets() {
    let quiet = "nodes 1\ndisk model\nsafety 5s\n";
    let sabotage = Sabotage {
        tamper_replica: true,
        ..Sabotage::default()
    };
    let report = scripted(5, quiet, sabotage);
    assert!(
        report.checkers.contains(&Checker::InconsistentOffsets),
        "{}",
        fired(&report)
    );
}

/// A clock far ahead makes retention trim records that are young by true time.
const SKEWED_RETENTION: &str = "
nodes 1
disk model
safety 10s
faults retention clock-skew
at 4s skew 1 +60000
";

#[test]
fn retention_on_a_clock_the_checker_is_not_told_about_breaks_the_bound() {
    let control = scripted(2, SKEWED_RETENTION, Sabotage::default());
    assert!(control.passed(), "control run: {}", fired(&control));
    let sabotage = Sabotage {
        hide_clock_skew: true,
        ..Sabotage::default()
    };
    let report = scripted(2, SKEWED_RETENTION, sabotage);
    assert!(
        report.checkers.contains(&Checker::RetentionBound),
        "{}",
        fired(&report)
    );
}

#[test]
fn a_swarm_sweep_of_one_node_keeps_every_promise() {
    for seed in 100..104 {
        let mut config = RunConfig::new(seed);
        config.nodes = 1;
        config.faults = FaultChoice::All;
        config.safety_ms = 10_000;
        let report = run(config);
        assert!(report.passed(), "seed {seed}: {}", fired(&report));
    }
}
