//! The simulation's own guarantees: a seed replays the same run, the invariants hold over a
//! sweep of seeds, and the checker does report a lost record.

use gregor_simulation::{run, ScenarioConfig};

fn short(seed: u64) -> ScenarioConfig {
    let mut config = ScenarioConfig::new(seed);
    config.duration_ms = 30_000;
    config.crashes = 3;
    config
}

#[test]
fn one_seed_gives_one_digest() {
    let first = run(short(42));
    let second = run(short(42));
    assert!(first.events > 100, "the run did something: {first:?}");
    assert_eq!(first.digest, second.digest, "seed 42 replayed differently");
    assert_eq!(first.acked_records, second.acked_records);
    let other = run(short(43));
    assert_ne!(
        first.digest, other.digest,
        "different seeds should give different runs"
    );
}

#[test]
fn crash_restart_sweep_keeps_every_invariant() {
    for seed in 1..=4 {
        let report = run(short(seed));
        assert_eq!(report.restarts, 3);
        assert!(
            report.acked_records > 1_000,
            "seed {seed} acked too little: {report:?}"
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed} broke an invariant: {:?}\nreplay with: {}",
            report.violations,
            report.replay_command()
        );
    }
}

#[test]
fn checker_reports_an_acknowledged_record_that_is_missing() {
    let mut config = short(7);
    config.inject_phantom_ack = true;
    let report = run(config);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("acknowledged offsets lost")),
        "the phantom acknowledgement went unnoticed: {:?}",
        report.violations
    );
}
