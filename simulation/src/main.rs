//! `gregor-simulation --seed N`: replays one seed and prints its digest and verdict.

use clap::Parser;
use gregor_simulation::{run, ScenarioConfig};
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Run Gregor's deterministic simulation for one seed (or a range of seeds)")]
struct Args {
    /// The seed to run (replays exactly the same run every time).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run this many consecutive seeds starting at --seed.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Virtual milliseconds of workload.
    #[arg(long, default_value_t = 60_000)]
    duration_ms: u64,
    /// Crash-and-restart events per run.
    #[arg(long, default_value_t = 3)]
    crashes: u32,
    /// Print every event of the trace.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut failed = false;
    for seed in args.seed..args.seed + args.seeds {
        let mut config = ScenarioConfig::new(seed);
        config.duration_ms = args.duration_ms;
        config.crashes = args.crashes;
        config.verbose = args.verbose;
        let report = run(config);
        println!(
            "seed {} digest {:016x} events {} acked {} restarts {} violations {}",
            report.seed,
            report.digest,
            report.events,
            report.acked_records,
            report.restarts,
            report.violations.len()
        );
        for violation in &report.violations {
            println!("  violation: {violation}");
        }
        if !report.violations.is_empty() {
            println!("  replay with: {}", report.replay_command());
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
