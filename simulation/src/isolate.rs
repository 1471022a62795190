//! Runs a simulation in a forked child process and brings its report back over a pipe.
//!
//! tokio seeds the generator of every new runtime (which `select!` draws from to pick among
//! ready branches) from a process-wide counter hashed with the thread's hash keys. The keys
//! follow the run's seed (see [`crate::determinism`]); the counter follows how many runtimes the
//! process made before. A child forked from a process that made none starts every run from the
//! same counter, so the n-th seed of a sweep replays exactly as when it runs alone.

use crate::check::Checker;
use crate::run::Report;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

/// A report with the fields its JSON form leaves out.
#[derive(Serialize, Deserialize)]
struct Wire {
    report: Report,
    trace_tail: Vec<String>,
    plan: String,
    checkers: Vec<String>,
}

/// Runs `work` in a child process and returns its report; `Err` says how the child died
/// without one.
///
/// # Panics
/// If no pipe or child process can be made.
pub fn in_child(work: impl FnOnce() -> Report) -> Result<Report, String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2) failed");
    let [read_fd, write_fd] = fds;
    // SAFETY: the child only runs `work` (on a thread of its own) and writes to the pipe, then
    // leaves with _exit, running no destructor or handler of the parent's.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork(2) failed");
    if pid == 0 {
        // SAFETY: the child owns its copy of the read end, which it does not use.
        unsafe { libc::close(read_fd) };
        let report = work();
        let wire = Wire {
            trace_tail: report.trace_tail.clone(),
            plan: report.plan.clone(),
            checkers: report
                .checkers
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            report,
        };
        // SAFETY: the write end belongs to this child alone from here.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(write_fd) };
        let written = serde_json::to_vec(&wire)
            .map_err(std::io::Error::other)
            .and_then(|bytes| pipe.write_all(&bytes));
        // SAFETY: ends the child at once, as fork(2) children must.
        unsafe { libc::_exit(i32::from(written.is_err())) };
    }
    // SAFETY: the parent owns its copy of the write end, which it does not use.
    unsafe { libc::close(write_fd) };
    // SAFETY: the read end belongs to the parent alone.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
    let mut bytes = Vec::new();
    let read = pipe.read_to_end(&mut bytes);
    let mut status = 0;
    // SAFETY: waits for the child made above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read.map_err(|e| format!("reading the run's report failed: {e}"))?;
    let wire: Wire = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the run's process died without a report (status {status}): {e}"))?;
    let mut report = wire.report;
    report.trace_tail = wire.trace_tail;
    report.plan = wire.plan;
    report.checkers = wire
        .checkers
        .iter()
        .filter_map(|name| Checker::ALL.into_iter().find(|c| c.name() == name))
        .collect();
    Ok(report)
}
