//! `gregor-simulation`: runs Gregor's deterministic simulation.
//!
//! `--seed N` replays one seed (`--trace` prints its events, `--print-plan` its fault plan as a
//! script); `--seeds A..B` sweeps a range on `--jobs` threads with a progress bar and prints
//! every failing seed with the command that replays it (a seed still running after
//! `--seed-timeout` seconds is killed and reported as hung); `--json` prints one summary object per
//! seed; `--script FILE` runs a scripted scenario.

gregor_simulation::deterministic_getrandom!();

use clap::Parser;
use gregor_simulation::faults::{FaultChoice, Script};
use gregor_simulation::node::DiskKind;
use gregor_simulation::{run, Report, RunConfig};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Run Gregor's deterministic simulation: one seed, a sweep of seeds, or a script")]
struct Args {
    /// The seed to run (default 1, or the script's); the same seed replays the same run.
    #[arg(long)]
    seed: Option<u64>,
    /// Sweep a range of seeds, `A..B` (B excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// Nodes in the cluster.
    #[arg(long)]
    nodes: Option<u32>,
    /// Faults: `swarm` (each seed enables a random subset), `all`, `none`, or a list such as
    /// `crash,power-loss,partition`.
    #[arg(long, default_value = "swarm")]
    faults: String,
    /// Virtual milliseconds of the safety phase.
    #[arg(long, default_value_t = 20_000)]
    safety_ms: u64,
    /// Bound on the liveness phase: every partition must take a write and be read within it.
    #[arg(long, default_value_t = 60_000)]
    liveness_ms: u64,
    /// Force the disk: `model` or `fjall`.
    #[arg(long)]
    disk: Option<String>,
    /// A scripted scenario to run (see `faults::script` for the format).
    #[arg(long)]
    script: Option<std::path::PathBuf>,
    /// A light workload (one producer sending every 200-400 ms, one consumer), for measuring
    /// the harness's own speed; the default is the chaos workload.
    #[arg(long)]
    light_workload: bool,
    /// Print every event of the run.
    #[arg(long)]
    trace: bool,
    /// Print the run's fault plan as a script.
    #[arg(long)]
    print_plan: bool,
    /// One JSON summary per seed.
    #[arg(long)]
    json: bool,
    /// Threads for a sweep.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Seeds a sweep leaves out (comma separated): those of bugs still open, which their
    /// scenarios in simulation/scenarios/ cover.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<u64>,
    /// Wall-clock seconds a sweep gives each seed before it kills the seed's process and
    /// reports the seed as hung.
    #[arg(long, default_value_t = 300)]
    seed_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The code under test's own logs, for diagnosis (RUST_LOG=gregor_actors=debug, say). They
    // carry no time: the wall clock means nothing here, and the trace has virtual times.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .with_writer(std::io::stderr)
            .try_init();
    }
    let base = match base_config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gregor-simulation: {error}");
            return ExitCode::from(2);
        }
    };
    let failed = match &args.seeds {
        Some(range) => match parse_range(range) {
            Ok((from, to)) => sweep(&args, &base, from, to),
            Err(error) => {
                eprintln!("gregor-simulation: {error}");
                return ExitCode::from(2);
            }
        },
        None => {
            let report = run(base.clone());
            print_report(&args, &base, &report);
            !report.passed()
        }
    };
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Network ids above this are clients'; more nodes than a handful only slow a run down.
const MAX_NODES: u32 = 9;

fn base_config(args: &Args) -> Result<RunConfig, String> {
    let mut config = RunConfig::new(args.seed.unwrap_or(1));
    if let Some(nodes) = args.nodes {
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(format!("--nodes {nodes}: a run has 1 to {MAX_NODES} nodes"));
        }
        config.nodes = nodes.max(1);
    }
    config.faults = args.faults.parse::<FaultChoice>()?;
    config.safety_ms = args.safety_ms;
    config.liveness_bound_ms = args.liveness_ms;
    config.trace = args.trace;
    config.light_workload = args.light_workload;
    config.disk = match args.disk.as_deref() {
        None => None,
        Some("model") => Some(DiskKind::Model),
        Some("fjall") => Some(DiskKind::Fjall),
        Some(other) => return Err(format!("unknown disk '{other}' (model or fjall)")),
    };
    if let Some(path) = &args.script {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let script = Script::parse(&text)?;
        if let (Some(seed), None) = (script.seed, args.seed) {
            config.seed = seed;
        }
        config.script = Some(script);
    }
    Ok(config)
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (from, to) = text
        .split_once("..")
        .ok_or_else(|| format!("'{text}' is not a range A..B"))?;
    let number = |s: &str| s.parse::<u64>().map_err(|_| format!("'{s}' is not a seed"));
    let (from, to) = (number(from)?, number(to)?);
    if from >= to {
        return Err(format!("the range {text} is empty"));
    }
    Ok((from, to))
}

fn print_report(args: &Args, base: &RunConfig, report: &Report) {
    if args.print_plan {
        print!("{}", report.plan);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(report).expect("a report serializes")
        );
    } else {
        println!(
            "seed {} digest {} events {} nodes {} disk {} faults [{}] struck {} sends {} acked {} polled {} \
             virtual {} ms wall {} ms ({:.0}x) violations {}",
            report.seed,
            report.digest,
            report.events,
            report.nodes,
            report.disk,
            report.faults.join(","),
            report.faults_struck,
            report.sends,
            report.acknowledged,
            report.polled,
            report.virtual_ms,
            report.wall_ms,
            report.speedup(),
            report.violations.len()
        );
        for violation in &report.violations {
            println!("  violation: {violation}");
        }
    }
    if !report.passed() && !args.json {
        if !args.trace && !report.trace_tail.is_empty() {
            println!("  last events:");
            for line in report.trace_tail.iter().rev().take(30).rev() {
                println!("    {line}");
            }
        }
        let replay = RunConfig {
            seed: report.seed,
            ..base.clone()
        };
        println!("  replay with: {}", replay.replay_command());
    }
}

/// Runs seeds `from..to` on `args.jobs` threads; whether any failed.
fn sweep(args: &Args, base: &RunConfig, from: u64, to: u64) -> bool {
    let next = AtomicU64::new(from);
    let (done, reports) = mpsc::channel::<Report>();
    let total = (from..to).filter(|s| !args.skip.contains(s)).count() as u64;
    let mut failing = Vec::new();
    let started = wall_clock();
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            let done = done.clone();
            let next = &next;
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= to {
                    return;
                }
                if args.skip.contains(&seed) {
                    continue;
                }
                let report = run(RunConfig {
                    seed,
                    trace: false,
                    wall_limit: Some(Duration::from_secs(args.seed_timeout.max(1))),
                    ..base.clone()
                });
                if done.send(report).is_err() {
                    return;
                }
            });
        }
        drop(done);
        let mut finished = 0u64;
        let mut virtual_ms = 0u64;
        for report in reports {
            finished += 1;
            virtual_ms += report.virtual_ms;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("a report serializes")
                );
            } else if !report.passed() {
                eprint!("\r\x1b[K");
                print_report(args, base, &report);
            }
            if !report.passed() {
                failing.push(report.seed);
            }
            progress(
                finished,
                total,
                failing.len(),
                virtual_ms,
                started.elapsed(),
            );
        }
    });
    eprintln!();
    let wall = started.elapsed();
    eprintln!(
        "{total} seeds in {:.1} s, {} failing{}",
        wall.as_secs_f64(),
        failing.len(),
        if failing.is_empty() {
            String::new()
        } else {
            format!(": {failing:?}")
        }
    );
    !failing.is_empty()
}

fn progress(done: u64, total: u64, failing: usize, virtual_ms: u64, wall: Duration) {
    const WIDTH: u64 = 30;
    let filled = done * WIDTH / total.max(1);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let speed = virtual_ms as f64 / wall.as_millis().max(1) as f64;
    eprint!(
        "\r[{bar}] {done}/{total} seeds, {failing} failing, {:.0} s, {speed:.0}x simulated/wall",
        wall.as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

/// The tool's own wall clock, for its progress and speed figures.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}
