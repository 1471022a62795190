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

#[test]
fn every_scenario_shows_what_it_expects() {
    let all = scenarios();
    assert!(!all.is_empty(), "no scenarios found");
    let mut failures = Vec::new();
    for (name, script) in all {
        let expected = script.expect.clone();
        let mut config = RunConfig::new(script.seed.unwrap_or(1));
        config.script = Some(script);
        let report = run(config);
        let fired: BTreeSet<Checker> = report.checkers.iter().copied().collect();
        if fired != expected {
            failures.push(format!(
                "{name} (seed {}): expected {expected:?}, fired {fired:?}\n  {}",
                report.seed,
                report.violations.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
