//! The scripted scenarios in `simulation/scenarios/`: each bug a sweep found, as a script that
//! replays it. A scenario of a fixed bug must run clean; one of a bug still open says which
//! checkers it makes fire (`expect ...`), so that its fix shows up as a change here.

gregor_simulation::deterministic_getrandom!();

use gregor_simulation::check::Checker;
use gregor_simulation::faults::Script;
use gregor_simulation::{run, RunConfig};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn scenarios() -> Vec<(String, Script)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut found: Vec<(String, Script)> = std::fs::read_dir(&dir)
        .expect("the scenarios directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable scenario");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let script = Script::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, script)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Runs every scenario (each in its own forked child, see `run`), two at a time so that the
/// test takes half the wall time on a two-core machine; returns what each one should have
/// shown and did not.
fn mismatches(all: Vec<(String, Script)>) -> Vec<String> {
    let queue = std::sync::Mutex::new(all.into_iter());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let next = queue.lock().expect("the queue").next();
                let Some((name, script)) = next else { break };
                if let Some(failure) = mismatch(&name, script) {
                    failures.lock().expect("the failures").push(failure);
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("the failures");
    failures.sort();
    failures
}

fn mismatch(name: &str, script: Script) -> Option<String> {
    let expected = script.expect.clone();
    let mut config = RunConfig::new(script.seed.unwrap_or(1));
    config.script = Some(script);
    let report = run(config);
    let fired: BTreeSet<Checker> = report.checkers.iter().copied().collect();
    (fired != expected).then(|| {
        format!(
            "{name} (seed {}): expected {expected:?}, fired {fired:?}\n  {}",
            report.seed,
            report.violations.join("\n  ")
        )
    })
}

#[test]
fn every_scenario_shows_what_it_expects() {
    let all = scenarios();
    assert!(!all.is_empty(), "no scenarios found");
    let failures = mismatches(all);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
